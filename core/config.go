package core

import (
	"errors"
	"fmt"
	"github.com/quanyu/quanyu/internal/confload"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Config is the agent's configuration. It is built in layers, each overriding the one before:
// Default(), then a YAML file, then QUANYU_AGENT_* environment variables, then command-line flags. The
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
	Identity        IdentityConfig    `koanf:"identity"`
	Mix             MixConfig         `koanf:"mix"`
}

// IdentityConfig is how the agent introduces itself to mix.
type IdentityConfig struct {
	// ID names the agent to mix; empty means the host name.
	ID string `koanf:"id"`
	// Labels are matched by subscription selectors.
	Labels map[string]string `koanf:"labels"`
}

// MixConfig points the agent at mix, which then pushes its subscriptions.
type MixConfig struct {
	// Address is mix's gRPC address (host:port); empty for none (the agent runs on its
	// subscription file alone).
	Address string `koanf:"address"`
	// Token is the bearer token the agent presents (a token with the agent role).
	Token string `koanf:"token"`
	// CA, when set, turns on TLS: the CA file mix's certificate must chain to.
	CA string `koanf:"ca"`
	// Cert and Key are the agent's client certificate for mTLS.
	Cert       string `koanf:"cert"`
	Key        string `koanf:"key"`
	ServerName string `koanf:"server_name"`
	// StatusInterval is how often the agent sends its counters to mix.
	StatusInterval time.Duration `koanf:"status_interval"`
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
		Decoders:        []string{"http", "dns"},
		Sinks:           []string{"stdout"},
		Plugins:         map[string]map[string]any{},
		PluginChecksums: map[string]string{},
		Identity:        IdentityConfig{Labels: map[string]string{}},
		Mix:             MixConfig{StatusInterval: 30 * time.Second},
	}
}

// EnvPrefix starts every environment variable the agent reads (mix reads QUANYU_MIX_, the CLI
// QUANYU_CLI_: each its own, so a typo in one is caught, not taken for another's).
const EnvPrefix = "QUANYU_AGENT_"

// envIgnored are QUANYU_AGENT_ variables that belong to something else than the config (none
// yet: plugins are told their settings as QUANYU_PLUGIN_*).
var envIgnored = []string{}

// LoadOptions are the layers above the defaults.
type LoadOptions = confload.Options

// ConfigError names the key that is wrong and why.
type ConfigError = confload.Error

// Load builds the configuration from its layers and validates it.
func Load(opts LoadOptions) (Config, error) {
	spec := confload.Spec{Defaults: defaultsMap(Default()), OpenSections: openSections,
		EnvPrefix: EnvPrefix, IgnoreEnv: envIgnored}
	var cfg Config
	if err := confload.Load(spec, opts, &cfg); err != nil {
		return Config{}, err
	}
	// A map set to empty in a file decodes as nil; keep the documented empty values.
	if cfg.Plugins == nil {
		cfg.Plugins = map[string]map[string]any{}
	}
	if cfg.PluginChecksums == nil {
		cfg.PluginChecksums = map[string]string{}
	}
	if cfg.Identity.Labels == nil {
		cfg.Identity.Labels = map[string]string{}
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
		"identity.id":                 c.Identity.ID,
		"identity.labels":             map[string]any{},
		"mix.address":                 c.Mix.Address,
		"mix.token":                   c.Mix.Token,
		"mix.ca":                      c.Mix.CA,
		"mix.cert":                    c.Mix.Cert,
		"mix.key":                     c.Mix.Key,
		"mix.server_name":             c.Mix.ServerName,
		"mix.status_interval":         c.Mix.StatusInterval.String(),
	}
}

// openSections are keys under which any sub-key is allowed (per-plugin settings).
var openSections = []string{"plugins.", "plugin_checksums.", "identity.labels."}

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
	if c.Mix.Address != "" {
		if _, _, err := net.SplitHostPort(c.Mix.Address); err != nil {
			bad("mix.address", "%q is not host:port", c.Mix.Address)
		}
	}
	if (c.Mix.Cert == "") != (c.Mix.Key == "") {
		bad("mix.cert", "a client certificate needs both mix.cert and mix.key")
	}
	if c.Mix.StatusInterval < time.Second {
		bad("mix.status_interval", "%s is under 1s", c.Mix.StatusInterval)
	}
	for k, v := range c.Identity.Labels {
		if k == "" || len(k) > 63 || len(v) > 63 {
			bad("identity.labels."+k, "label names are 1 to 63 characters and values at most 63")
		}
	}
	for name, sum := range c.PluginChecksums {
		if len(sum) != 64 || strings.Trim(strings.ToLower(sum), "0123456789abcdef") != "" {
			bad("plugin_checksums."+name, "want a SHA-256 in hex (64 characters)")
		}
	}
	return errors.Join(errs...)
}
