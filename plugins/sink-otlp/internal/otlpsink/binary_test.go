package otlpsink

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/sdk"
)

// The real plugin binary, started the way the agent's plugin host starts it (go-plugin over
// gRPC with AutoMTLS, the sdk's handshake and message limits), sends a batch that round-trips.
// Only this plugin is built, so the test does not depend on the rest of the tree building.
func TestPluginBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin binary")
	}
	root, err := testbin.Root()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "quanyu-sink-otlp")
	build := exec.Command("go", "build", "-o", bin, "./plugins/sink-otlp")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, out)
	}

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), sdk.LogLevelEnv+"=DEBUG")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          sdk.PluginSet(),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     15 * time.Second,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes), grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes))},
	})
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("starting the plugin: %v", err)
	}
	raw, err := rpc.Dispense(string(sdk.KindSink))
	if err != nil {
		t.Fatal(err)
	}
	sink, ok := raw.(sdk.Sink)
	if !ok {
		t.Fatalf("dispensed %T, not a sink", raw)
	}
	ctx := context.Background()
	info, err := sink.Info(ctx)
	if err != nil || info.Kind != sdk.KindSink || info.Name != "otlp" {
		t.Fatalf("info %+v, %v", info, err)
	}
	c := newGRPCCollector(t)
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, c, "grpc", nil)}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Write(ctx, testBatch()); err != nil {
		t.Fatal(err)
	}
	assertRoundTrip(t, c, testBatch())
	waitFor(t, "the plugin to count what it sent", 5*time.Second, func() bool {
		h, err := sink.Health(ctx)
		return err == nil && h.Counters["sent.flows"] == 4 && h.Counters["sent.l7"] == 4
	})
	if err := sink.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
