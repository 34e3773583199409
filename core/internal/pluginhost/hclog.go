package pluginhost

import (
	"context"
	"io"
	"log"
	"log/slog"
	"math"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// slogAdapter is the hclog.Logger go-plugin wants, writing to the agent's slog logger. go-plugin
// parses each plugin's stderr and calls it with the plugin's level, message and attributes, so a
// plugin's log lines arrive under plugin=<name>.
type slogAdapter struct {
	l       *slog.Logger
	plugins *slog.Logger // base of the loggers for plugins' own lines
	name    string
	args    []any
	// plugin is set on the loggers go-plugin makes for a plugin's own output; the root logger
	// carries go-plugin's lifecycle messages ("starting plugin", "plugin process exited"), which
	// the agent logs itself where they matter, so they are demoted to debug.
	plugin bool
}

var _ hclog.Logger = (*slogAdapter)(nil)

func newSlogAdapter(host, plugins *slog.Logger) *slogAdapter {
	if plugins == nil {
		plugins = host
	}
	return &slogAdapter{l: host, plugins: plugins}
}

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *slogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lvl := toSlog(level)
	if !a.plugin && lvl == slog.LevelInfo {
		lvl = slog.LevelDebug
	}
	if !a.l.Enabled(context.Background(), lvl) {
		return
	}
	// go-plugin appends the plugin's own "timestamp"; the agent's log has its own time.
	kept := make([]any, 0, len(a.args)+len(args))
	kept = append(kept, a.args...)
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == "timestamp" {
			continue
		}
		kept = append(kept, args[i], wholeNumber(args[i+1]))
	}
	a.l.Log(context.Background(), lvl, msg, kept...)
}

func (a *slogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *slogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *slogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *slogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *slogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *slogAdapter) IsTrace() bool { return a.l.Enabled(context.Background(), slog.LevelDebug) }
func (a *slogAdapter) IsDebug() bool { return a.l.Enabled(context.Background(), slog.LevelDebug) }
func (a *slogAdapter) IsInfo() bool  { return a.l.Enabled(context.Background(), slog.LevelInfo) }
func (a *slogAdapter) IsWarn() bool  { return a.l.Enabled(context.Background(), slog.LevelWarn) }
func (a *slogAdapter) IsError() bool { return a.l.Enabled(context.Background(), slog.LevelError) }

func (a *slogAdapter) ImpliedArgs() []any { return a.args }

func (a *slogAdapter) With(args ...any) hclog.Logger {
	return &slogAdapter{l: a.l, plugins: a.plugins, name: a.name, args: append(append([]any{}, a.args...), args...), plugin: a.plugin}
}

func (a *slogAdapter) Name() string { return a.name }

// Named is how go-plugin tags a plugin's lines (with the binary's base name); the agent's
// attribute is the plugin's name without the quanyu- prefix.
func (a *slogAdapter) Named(name string) hclog.Logger {
	return a.ResetNamed(name)
}

func (a *slogAdapter) ResetNamed(name string) hclog.Logger {
	plugin := strings.TrimPrefix(name, "quanyu-")
	return &slogAdapter{l: a.plugins.With("plugin", plugin), plugins: a.plugins, name: name, args: a.args, plugin: true}
}

func (a *slogAdapter) SetLevel(hclog.Level) {}

func (a *slogAdapter) GetLevel() hclog.Level {
	switch {
	case a.IsDebug():
		return hclog.Debug
	case a.IsInfo():
		return hclog.Info
	case a.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (a *slogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}

func (a *slogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(nil).Writer()
}

// wholeNumber undoes what the JSON hop from the plugin did to integers (they arrive as float64).
func wholeNumber(v any) any {
	if f, ok := v.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f)
	}
	return v
}
