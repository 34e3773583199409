package sdk

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/quanyu/quanyu/internal/gctune"
	"google.golang.org/grpc"
)

// Serve runs a plugin: it sets up logging so that slog output reaches the agent's log under the
// plugin's name, serves impl for every plugin kind it implements, and returns when the agent
// closes the connection. A plugin's main is one call:
//
//	func main() { sdk.Serve(httpdecoder.New()) }
func Serve(impl any) {
	gctune.Apply()
	level := levelFromEnv()
	set, err := NewPluginSet(impl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "quanyu plugin:", err)
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         set,
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes),
				grpc.InitialWindowSize(StreamWindowBytes), grpc.InitialConnWindowSize(ConnWindowBytes))
			return grpc.NewServer(opts...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Output:     os.Stderr,
			JSONFormat: true,
			Level:      hclog.LevelFromString(level.String()),
		}),
	})
}

// init sets up a plugin's logging before anything in its main runs, so that a logger taken from
// slog.Default() while building the plugin (as in sdk.Serve(mypkg.New())) already writes what the
// agent parses.
func init() {
	if os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue {
		slog.SetDefault(slog.New(NewPluginLogHandler(os.Stderr, levelFromEnv())))
	}
}

// LogLevelEnv carries the agent's log level to its plugins.
const LogLevelEnv = "QUANYU_PLUGIN_LOG_LEVEL"

func levelFromEnv() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv(LogLevelEnv))); err != nil {
		return slog.LevelInfo
	}
	return l
}
