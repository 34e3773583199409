// Package analysis receives what the agents see as OTLP, turns it into the live service graph —
// applications and their owners from mix's catalog, edges with L4 and L7 figures, rollups — and
// serves it: a JSON API, Prometheus /metrics (with the traces_service_graph_* family that Grafana's
// service-graph views read) and a Grafana Node Graph frame.
package analysis

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/quanyu/quanyu/internal/confload"
)

// Config is analysis's configuration: Default(), then a YAML file, then QUANYU_ANALYSIS_*
// environment variables, then flags. The reference is testdata/analysis.yaml, kept equal to
// Default() by a test.
type Config struct {
	// ID is the name mix knows this instance by; empty: "analysis@HOST/HTTP_LISTEN".
	ID   string     `koanf:"id"`
	OTLP OTLPConfig `koanf:"otlp"`
	// HTTPListen is the address of the API, /metrics and the UI.
	HTTPListen string `koanf:"http_listen"`
	// DataDir holds the store; empty means the user's state directory (quanyu/analysis in it).
	DataDir string       `koanf:"data_dir"`
	Mix     MixConfig    `koanf:"mix"`
	Alerts  AlertsConfig `koanf:"alerts"`
	Log     LogConfig    `koanf:"log"`
}

// AlertsConfig is how analysis evaluates mix's alert rules and delivers alerts. The rules,
// receivers and prediction settings themselves are mix's, pushed over its watch.
type AlertsConfig struct {
	// EvaluationDelay is how long after a 10 s bucket ends it is evaluated: the agents' records
	// of its last seconds are still on their way.
	EvaluationDelay time.Duration `koanf:"evaluation_delay"`
	// NewEdgeGrace: edges first seen this soon after a start are not "new edge" events.
	NewEdgeGrace time.Duration `koanf:"new_edge_grace"`
	// Evidence has a firing alert ask mix (mix.http_address with an admin token) for a narrow
	// subscription with frames, and attaches the flow trace it captures.
	Evidence    bool          `koanf:"evidence"`
	EvidenceFor time.Duration `koanf:"evidence_for"` // how long that subscription lives
	// ExternalURL is the UI's address as receivers should link to it; empty: http://HTTP_LISTEN.
	ExternalURL      string        `koanf:"external_url"`
	DeliveryTimeout  time.Duration `koanf:"delivery_timeout"`  // one request to a receiver
	DeliveryAttempts int           `koanf:"delivery_attempts"` // tries per request before giving up
}

// OTLPConfig is the OTLP receiver.
type OTLPConfig struct {
	GRPCListen string `koanf:"grpc_listen"` // empty: no gRPC receiver
	HTTPListen string `koanf:"http_listen"` // empty: no HTTP receiver
	// MaxRequestBytes bounds one request, after decompression: a larger one is refused whole.
	MaxRequestBytes int `koanf:"max_request_bytes"`
}

// MixConfig is how analysis reaches mix: over gRPC for the application catalog (without an
// address the graph has no applications or owners: endpoints are shown as addresses), and over
// mix's HTTP admin API for the UI's agents and subscriptions pages.
type MixConfig struct {
	Address string `koanf:"address"`
	Token   string `koanf:"token"`
	// HTTPAddress is mix's HTTP admin API, host:port; the UI reaches it through analysis at
	// /api/v1/mix/. Empty: those pages say mix is not configured.
	HTTPAddress string `koanf:"http_address"`
	// AdminToken is sent to the admin API: a viewer token shows agents and subscriptions, an
	// admin token also lets the UI edit subscriptions.
	AdminToken string `koanf:"admin_token"`
	CA         string `koanf:"ca"`
	Cert       string `koanf:"cert"`
	Key        string `koanf:"key"`
	ServerName string `koanf:"server_name"`
}

// LogConfig is analysis's log.
type LogConfig struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}

// Default is the configuration before any file, environment or flag.
func Default() Config {
	return Config{
		OTLP:       OTLPConfig{GRPCListen: "127.0.0.1:4317", HTTPListen: "127.0.0.1:4318", MaxRequestBytes: 16 << 20},
		HTTPListen: "127.0.0.1:8080",
		Alerts: AlertsConfig{EvaluationDelay: 2 * time.Second, NewEdgeGrace: 2 * time.Minute, Evidence: true,
			EvidenceFor: 2 * time.Minute, DeliveryTimeout: 10 * time.Second, DeliveryAttempts: 6},
		Log: LogConfig{Level: "info", Format: "text"},
	}
}

func defaultsMap(c Config) map[string]any {
	return map[string]any{
		"id":                       c.ID,
		"otlp.grpc_listen":         c.OTLP.GRPCListen,
		"otlp.http_listen":         c.OTLP.HTTPListen,
		"otlp.max_request_bytes":   c.OTLP.MaxRequestBytes,
		"http_listen":              c.HTTPListen,
		"data_dir":                 c.DataDir,
		"mix.address":              c.Mix.Address,
		"mix.token":                c.Mix.Token,
		"mix.http_address":         c.Mix.HTTPAddress,
		"mix.admin_token":          c.Mix.AdminToken,
		"mix.ca":                   c.Mix.CA,
		"mix.cert":                 c.Mix.Cert,
		"mix.key":                  c.Mix.Key,
		"mix.server_name":          c.Mix.ServerName,
		"alerts.evaluation_delay":  c.Alerts.EvaluationDelay.String(),
		"alerts.new_edge_grace":    c.Alerts.NewEdgeGrace.String(),
		"alerts.evidence":          c.Alerts.Evidence,
		"alerts.evidence_for":      c.Alerts.EvidenceFor.String(),
		"alerts.external_url":      c.Alerts.ExternalURL,
		"alerts.delivery_timeout":  c.Alerts.DeliveryTimeout.String(),
		"alerts.delivery_attempts": c.Alerts.DeliveryAttempts,
		"log.level":                c.Log.Level,
		"log.format":               c.Log.Format,
	}
}

// EnvPrefix starts every environment variable analysis reads.
const EnvPrefix = "QUANYU_ANALYSIS_"

// LoadOptions are the layers above the defaults.
type LoadOptions = confload.Options

// Load builds analysis's configuration from its layers and validates it.
func Load(opts LoadOptions) (Config, error) {
	var cfg Config
	spec := confload.Spec{Defaults: defaultsMap(Default()), EnvPrefix: EnvPrefix}
	if err := confload.Load(spec, opts, &cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate names the first key that is wrong.
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return &confload.Error{Key: key, Reason: fmt.Sprintf(format, args...)}
	}
	for key, addr := range map[string]string{"otlp.grpc_listen": c.OTLP.GRPCListen,
		"otlp.http_listen": c.OTLP.HTTPListen, "http_listen": c.HTTPListen} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return bad(key, "%q is not host:port", addr)
		}
		// Analysis has no authentication of its own yet: it listens on this host only
		// (ARCHITECTURE §10). An OpenTelemetry Collector in front is the way to take in
		// data from other hosts.
		if !confload.Loopback(addr) {
			return bad(key, "%q listens beyond this host, and analysis has no tokens or mTLS yet: use a loopback address", addr)
		}
	}
	if c.HTTPListen == "" {
		return bad("http_listen", "empty: the API needs an address")
	}
	if c.OTLP.MaxRequestBytes < 64<<10 || c.OTLP.MaxRequestBytes > 1<<30 {
		return bad("otlp.max_request_bytes", "%d is outside 64 KiB to 1 GiB", c.OTLP.MaxRequestBytes)
	}
	if c.Mix.Address != "" {
		if _, _, err := net.SplitHostPort(c.Mix.Address); err != nil {
			return bad("mix.address", "%q is not host:port", c.Mix.Address)
		}
	}
	if c.Mix.HTTPAddress != "" {
		if _, _, err := net.SplitHostPort(c.Mix.HTTPAddress); err != nil {
			return bad("mix.http_address", "%q is not host:port", c.Mix.HTTPAddress)
		}
	}
	if (c.Mix.Cert == "") != (c.Mix.Key == "") {
		return bad("mix.cert", "a client certificate needs both mix.cert and mix.key")
	}
	a := &c.Alerts
	switch {
	case a.EvaluationDelay < 0 || a.EvaluationDelay > time.Minute:
		return bad("alerts.evaluation_delay", "%v is outside 0 to 1m", a.EvaluationDelay)
	case a.NewEdgeGrace < 0:
		return bad("alerts.new_edge_grace", "%v is negative", a.NewEdgeGrace)
	case a.EvidenceFor < 10*time.Second || a.EvidenceFor > time.Hour:
		return bad("alerts.evidence_for", "%v is outside 10s to 1h", a.EvidenceFor)
	case a.DeliveryTimeout < time.Second || a.DeliveryTimeout > 5*time.Minute:
		return bad("alerts.delivery_timeout", "%v is outside 1s to 5m", a.DeliveryTimeout)
	case a.DeliveryAttempts < 1 || a.DeliveryAttempts > 100:
		return bad("alerts.delivery_attempts", "%d is outside 1 to 100", a.DeliveryAttempts)
	}
	if a.ExternalURL != "" {
		if u, err := url.Parse(a.ExternalURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("alerts.external_url", "%q is not an http or https URL with a host", a.ExternalURL)
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		return bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		return bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	return nil
}

// id is the name mix knows this instance by: the configured one, else the host name and the API
// address, which no two instances on one host share.
func (c *Config) id() string {
	if c.ID != "" {
		return c.ID
	}
	host, _ := os.Hostname()
	return "analysis@" + host + "/" + c.HTTPListen
}

// dataDir is where the store lives: the configured directory, else confload.StateDir's.
func (c *Config) dataDir() (string, error) {
	if c.DataDir != "" {
		return c.DataDir, nil
	}
	return confload.StateDir("analysis")
}

// shutdownGrace bounds how long a stopping analysis waits for requests in flight.
const shutdownGrace = 5 * time.Second
