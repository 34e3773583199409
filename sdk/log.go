package sdk

import (
	"io"
	"log/slog"
	"strings"
)

// hclogTimeFormat is the timestamp layout go-plugin's host parses; a line with any other layout is
// demoted to a debug line.
const hclogTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// NewPluginLogHandler writes slog records as the JSON lines go-plugin's host understands
// (@level, @message, @timestamp, then the attributes), so a plugin's logs arrive in the agent's
// log with their level and the plugin's name.
func NewPluginLogHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format(hclogTimeFormat))
			case slog.LevelKey:
				lvl := strings.ToLower(a.Value.String())
				if strings.HasPrefix(lvl, "warn") {
					lvl = "warn"
				}
				return slog.String("@level", lvl)
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	})
}
