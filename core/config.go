package core

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// Config is the agent's configuration. It is built in layers, each overriding the one before:
// Default(), then a YAML file, then QUANYU_* environment variables, then command-line flags. The
// reference with every key and its default is testdata/config.yaml, kept equal to Default() by a
// test.
type Config struct {
	// Host is the name records carry; empty means the machine's host name.
	Host string `koanf:"host"`
	// PluginDir holds the quanyu-* plugin binaries; empty means "plugins" beside the quanyu binary.
	PluginDir string `koanf:"plugin_dir"`
	// Subscription is a file with the subscription set (the seed's JSON, wrapped, or a list); empty
	// means one subscription, "default", that matches everything.
	Subscription string         `koanf:"subscription"`
	Log          LogConfig      `koanf:"log"`
	Capture      CaptureConfig  `koanf:"capture"`
	Pipeline     PipelineConfig `koanf:"pipeline"`
	// Decoders are the L7 decoder plugins to run (quanyu-l7-<name>).
	Decoders []string `koanf:"decoders"`
	// Sinks are the sink plugins records go to (quanyu-sink-<name>).
	Sinks []string `koanf:"sinks"`
	// Plugins holds each plugin's own settings, by plugin name (plugins.sink-stdout.format: seed).
	Plugins map[string]map[string]any `koanf:"plugins"`
	// PluginChecksums pins plugin binaries by SHA-256 (hex), by plugin name.
	PluginChecksums map[string]string `koanf:"plugin_checksums"`
}

// LogConfig is the agent's own log.
type LogConfig struct {
	Level  string `koanf:"level"`  // debug, info, warn, error
	Format string `koanf:"format"` // text or json
}

// CaptureConfig is handed to the capture plugin.
type CaptureConfig struct {
	// Backend picks the capture plugin (quanyu-capture-<backend>).
	Backend string `koanf:"backend"`
	// Fallback is the backend to use when Backend cannot run on this host (the kernel or the
	// capabilities do not allow it); empty, or the backend itself, for none.
	Fallback string `koanf:"fallback"`
	// Interfaces are the names or globs watched by subscriptions that name no NIC.
	Interfaces []string `koanf:"interfaces"`
	// ExcludeInterfaces are never watched unless a subscription names them exactly. The agent's
	// own traffic to analysis crosses lo, so watching lo by default would watch itself.
	ExcludeInterfaces []string      `koanf:"exclude_interfaces"`
	SnapLen           int           `koanf:"snaplen"`
	IdleTimeout       time.Duration `koanf:"idle_timeout"`
	ActiveTimeout     time.Duration `koanf:"active_timeout"`
	FlushInterval     time.Duration `koanf:"flush_interval"`
	BatchSize         int           `koanf:"batch_size"`
	MaxFlows          int           `koanf:"max_flows"`
}

// PipelineConfig sizes the queues between stages and the agent's own reporting.
type PipelineConfig struct {
	// QueueBatches bounds each sink's queue, in batches; a full queue drops (and counts) the batch.
	QueueBatches int `koanf:"queue_batches"`
	// StatsInterval is how often the agent sends its counters as a stats record.
	StatsInterval time.Duration `koanf:"stats_interval"`
	// InventoryInterval is how often the host inventory is re-read; it is sent when it changed.
	InventoryInterval time.Duration `koanf:"inventory_interval"`
}

// Default is the configuration before any file, environment or flag.
func Default() Config {
	return Config{
		Log: LogConfig{Level: "info", Format: "text"},
		Capture: CaptureConfig{
			Backend:           "ebpf",
			Fallback:          "mmap",
			Interfaces:        []string{"*"},
			ExcludeInterfaces: []string{"lo"},
			SnapLen:           256,
			IdleTimeout:       60 * time.Second,
			ActiveTimeout:     60 * time.Second,
			FlushInterval:     time.Second,
			BatchSize:         512,
			MaxFlows:          65536,
		},
		Pipeline: PipelineConfig{
			QueueBatches:      256,
			StatsInterval:     10 * time.Second,
			InventoryInterval: 30 * time.Second,
		},
		Decoders:        []string{},
		Sinks:           []string{"stdout"},
		Plugins:         map[string]map[string]any{},
		PluginChecksums: map[string]string{},
	}
}

// EnvPrefix starts every environment variable the agent reads.
const EnvPrefix = "QUANYU_"

// envIgnored are QUANYU_ variables that belong to something else than the config.
var envIgnored = []string{"QUANYU_PLUGIN_LOG_LEVEL", "QUANYU_STDOUT_FD"}

// LoadOptions are the layers above the defaults.
type LoadOptions struct {
	// File is a YAML file; empty for none.
	File string
	// Environ is the environment (os.Environ() when nil).
	Environ []string
	// Flags are the values of flags the user set, by config key (capture.interfaces → []string{…}).
	Flags map[string]any
}

// ConfigError names the key that is wrong and why.
type ConfigError struct {
	Key    string
	Reason string
}

func (e *ConfigError) Error() string { return "config: " + e.Key + ": " + e.Reason }

// Load builds the configuration from its layers and validates it.
func Load(opts LoadOptions) (Config, error) {
	k := koanf.New(".")
	def := Default()
	if err := k.Load(confmap.Provider(defaultsMap(def), "."), nil); err != nil {
		return Config{}, fmt.Errorf("loading defaults: %w", err)
	}
	known := k.Keys()
	lists := map[string]bool{}
	for _, key := range known {
		if _, ok := k.Get(key).([]string); ok {
			lists[key] = true
		}
	}
	if opts.File != "" {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(opts.File), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("reading config file %s: %w", opts.File, err)
		}
		if err := checkKeys(fk.Keys(), known, opts.File); err != nil {
			return Config{}, err
		}
		if err := k.Merge(fk); err != nil {
			return Config{}, fmt.Errorf("merging config file %s: %w", opts.File, err)
		}
	}
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	envKeys, err := envMap(environ, known, lists)
	if err != nil {
		return Config{}, err
	}
	if err := k.Load(confmap.Provider(envKeys, "."), nil); err != nil {
		return Config{}, fmt.Errorf("loading environment: %w", err)
	}
	if len(opts.Flags) > 0 {
		if err := k.Load(confmap.Provider(opts.Flags, "."), nil); err != nil {
			return Config{}, fmt.Errorf("loading flags: %w", err)
		}
	}
	var cfg Config
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return Config{}, fmt.Errorf("decoding configuration: %w", err)
	}
	// A list set to empty in a file or flag decodes as nil; keep the documented empty values.
	if cfg.Plugins == nil {
		cfg.Plugins = map[string]map[string]any{}
	}
	if cfg.PluginChecksums == nil {
		cfg.PluginChecksums = map[string]string{}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// defaultsMap flattens the defaults into koanf keys, so the set of known keys is the struct's.
func defaultsMap(c Config) map[string]any {
	return map[string]any{
		"host":                        c.Host,
		"plugin_dir":                  c.PluginDir,
		"subscription":                c.Subscription,
		"log.level":                   c.Log.Level,
		"log.format":                  c.Log.Format,
		"capture.backend":             c.Capture.Backend,
		"capture.fallback":            c.Capture.Fallback,
		"capture.interfaces":          c.Capture.Interfaces,
		"capture.exclude_interfaces":  c.Capture.ExcludeInterfaces,
		"capture.snaplen":             c.Capture.SnapLen,
		"capture.idle_timeout":        c.Capture.IdleTimeout.String(),
		"capture.active_timeout":      c.Capture.ActiveTimeout.String(),
		"capture.flush_interval":      c.Capture.FlushInterval.String(),
		"capture.batch_size":          c.Capture.BatchSize,
		"capture.max_flows":           c.Capture.MaxFlows,
		"pipeline.queue_batches":      c.Pipeline.QueueBatches,
		"pipeline.stats_interval":     c.Pipeline.StatsInterval.String(),
		"pipeline.inventory_interval": c.Pipeline.InventoryInterval.String(),
		"decoders":                    c.Decoders,
		"sinks":                       c.Sinks,
		"plugins":                     map[string]any{},
		"plugin_checksums":            map[string]any{},
	}
}

// openSections are keys under which any sub-key is allowed (per-plugin settings).
var openSections = []string{"plugins.", "plugin_checksums."}

func checkKeys(keys, known []string, source string) error {
	for _, key := range keys {
		if slices.Contains(known, key) {
			continue
		}
		open := false
		for _, s := range openSections {
			if strings.HasPrefix(key, s) {
				open = true
			}
		}
		if !open {
			return &ConfigError{Key: key, Reason: "unknown key in " + source + " (see the configuration reference in the README)"}
		}
	}
	return nil
}

// envMap maps QUANYU_CAPTURE_IDLE_TIMEOUT to capture.idle_timeout by matching against the known
// keys: the key names themselves contain underscores, so the mapping cannot be a plain replace.
// Lists are comma-separated.
func envMap(environ []string, known []string, lists map[string]bool) (map[string]any, error) {
	byEnv := map[string]string{}
	for _, key := range known {
		byEnv[EnvPrefix+strings.ToUpper(strings.NewReplacer(".", "_").Replace(key))] = key
	}
	out := map[string]any{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || slices.Contains(envIgnored, name) {
			continue
		}
		key, ok := byEnv[name]
		if !ok {
			return nil, &ConfigError{Key: name, Reason: "unknown environment variable; the known ones are " + strings.Join(sortedKeys(byEnv), ", ")}
		}
		if lists[key] {
			var items []string
			for _, item := range strings.Split(value, ",") {
				if item = strings.TrimSpace(item); item != "" {
					items = append(items, item)
				}
			}
			out[key] = items
			continue
		}
		out[key] = value
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var pluginName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}$`)

// Validate checks every key and names the first that is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Reason: fmt.Sprintf(format, args...)})
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if !pluginName.MatchString(c.Capture.Backend) {
		bad("capture.backend", "%q is not a plugin name (such as mmap)", c.Capture.Backend)
	}
	if c.Capture.Fallback != "" && !pluginName.MatchString(c.Capture.Fallback) {
		bad("capture.fallback", "%q is not a backend's name (such as mmap), nor empty", c.Capture.Fallback)
	}
	if len(c.Capture.Interfaces) == 0 {
		bad("capture.interfaces", "empty: give interface names or globs, such as \"*\"")
	}
	if c.Capture.SnapLen < 64 || c.Capture.SnapLen > 65535 {
		bad("capture.snaplen", "%d is outside 64-65535", c.Capture.SnapLen)
	}
	if c.Capture.IdleTimeout < time.Second {
		bad("capture.idle_timeout", "%s is under 1s", c.Capture.IdleTimeout)
	}
	if c.Capture.ActiveTimeout < time.Second {
		bad("capture.active_timeout", "%s is under 1s", c.Capture.ActiveTimeout)
	}
	if c.Capture.FlushInterval < 10*time.Millisecond || c.Capture.FlushInterval > time.Minute {
		bad("capture.flush_interval", "%s is outside 10ms-1m", c.Capture.FlushInterval)
	}
	if c.Capture.BatchSize < 1 || c.Capture.BatchSize > 65536 {
		bad("capture.batch_size", "%d is outside 1-65536", c.Capture.BatchSize)
	}
	if c.Capture.MaxFlows < 1024 || c.Capture.MaxFlows > 1<<26 {
		bad("capture.max_flows", "%d is outside 1024-%d", c.Capture.MaxFlows, 1<<26)
	}
	if c.Pipeline.QueueBatches < 1 || c.Pipeline.QueueBatches > 1<<16 {
		bad("pipeline.queue_batches", "%d is outside 1-65536", c.Pipeline.QueueBatches)
	}
	if c.Pipeline.StatsInterval < time.Second {
		bad("pipeline.stats_interval", "%s is under 1s", c.Pipeline.StatsInterval)
	}
	if c.Pipeline.InventoryInterval < time.Second {
		bad("pipeline.inventory_interval", "%s is under 1s", c.Pipeline.InventoryInterval)
	}
	if len(c.Sinks) == 0 {
		bad("sinks", "empty: records would go nowhere (use stdout)")
	}
	for i, s := range c.Sinks {
		if !pluginName.MatchString(s) {
			bad(fmt.Sprintf("sinks[%d]", i), "%q is not a plugin name (such as stdout)", s)
		}
	}
	for i, d := range c.Decoders {
		if !pluginName.MatchString(d) {
			bad(fmt.Sprintf("decoders[%d]", i), "%q is not a plugin name (such as http)", d)
		}
	}
	for name, sum := range c.PluginChecksums {
		if len(sum) != 64 || strings.Trim(strings.ToLower(sum), "0123456789abcdef") != "" {
			bad("plugin_checksums."+name, "want a SHA-256 in hex (64 characters)")
		}
	}
	return errors.Join(errs...)
}
