// Package mix is Quanyu's control plane: it holds the subscriptions, the application catalog, the
// alert rules, receivers and prediction settings, with every change kept as a revision, and
// pushes to each agent (and to analysis) what concerns it, over a gRPC Watch stream, as soon as it
// changes. Operators use the same operations over gRPC (the quanyu CLI) or HTTP/JSON (/api/v1/).
package mix

import (
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/quanyu/quanyu/internal/confload"
)

// Config is mix's configuration: Default(), then a YAML file, then QUANYU_MIX_* environment
// variables, then flags. The reference is testdata/mix.yaml, kept equal to Default() by a test.
type Config struct {
	// Listen is the gRPC address (agents, analysis, the CLI).
	Listen string `koanf:"listen"`
	// HTTPListen is the HTTP/JSON admin API's address; empty for none.
	HTTPListen string `koanf:"http_listen"`
	// DataDir holds the database; empty means the user's state directory (quanyu/mix in it).
	DataDir string `koanf:"data_dir"`
	// Tokens are the bearer tokens mix accepts. Without any, mix accepts every request, and then
	// only listens on loopback addresses.
	Tokens []Token    `koanf:"tokens"`
	TLS    TLSConfig  `koanf:"tls"`
	Log    LogConfig  `koanf:"log"`
	Push   PushConfig `koanf:"push"`
}

// Token is one bearer token and what it may do.
type Token struct {
	// Name is who holds it; revisions record it as their author.
	Name  string `koanf:"name"`
	Token string `koanf:"token"`
	// Role is agent (watch its subscriptions), viewer (read everything) or admin (everything).
	Role string `koanf:"role"`
}

// TLSConfig turns on TLS for both listeners; with ClientCA, clients must present a certificate
// signed by it (mTLS). The files are read again when they change.
type TLSConfig struct {
	Cert     string `koanf:"cert"`
	Key      string `koanf:"key"`
	ClientCA string `koanf:"client_ca"`
}

// LogConfig is mix's log.
type LogConfig struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}

// PushConfig tunes pushes to agents.
type PushConfig struct {
	// Debounce gathers a burst of edits into one push: a push waits this long after the last edit.
	Debounce time.Duration `koanf:"debounce"`
	// MaxDelay bounds how long a continuous burst of edits can hold a push back.
	MaxDelay time.Duration `koanf:"max_delay"`
}

// Roles.
const (
	RoleAgent  = "agent"
	RoleViewer = "viewer"
	RoleAdmin  = "admin"
)

// Default is the configuration before any file, environment or flag.
func Default() Config {
	return Config{
		Listen:     "127.0.0.1:7070",
		HTTPListen: "127.0.0.1:7071",
		Tokens:     []Token{},
		Log:        LogConfig{Level: "info", Format: "text"},
		Push:       PushConfig{Debounce: 100 * time.Millisecond, MaxDelay: time.Second},
	}
}

func defaultsMap(c Config) map[string]any {
	return map[string]any{
		"listen":         c.Listen,
		"http_listen":    c.HTTPListen,
		"data_dir":       c.DataDir,
		"tokens":         []any{},
		"tls.cert":       c.TLS.Cert,
		"tls.key":        c.TLS.Key,
		"tls.client_ca":  c.TLS.ClientCA,
		"log.level":      c.Log.Level,
		"log.format":     c.Log.Format,
		"push.debounce":  c.Push.Debounce.String(),
		"push.max_delay": c.Push.MaxDelay.String(),
	}
}

// EnvPrefix starts every environment variable mix reads.
const EnvPrefix = "QUANYU_MIX_"

// LoadOptions are the layers above the defaults.
type LoadOptions = confload.Options

// Load builds mix's configuration from its layers and validates it.
func Load(opts LoadOptions) (Config, error) {
	var cfg Config
	spec := confload.Spec{Defaults: defaultsMap(Default()), OpenSections: []string{"tokens"}, EnvPrefix: EnvPrefix}
	if err := confload.Load(spec, opts, &cfg); err != nil {
		return Config{}, err
	}
	if cfg.Tokens == nil {
		cfg.Tokens = []Token{}
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
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "%q is not host:port", c.Listen)
	}
	if c.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(c.HTTPListen); err != nil {
			return bad("http_listen", "%q is not host:port", c.HTTPListen)
		}
	}
	names := map[string]bool{}
	secrets := map[string]bool{}
	for i, t := range c.Tokens {
		key := fmt.Sprintf("tokens[%d]", i)
		switch {
		case t.Name == "" || len(t.Name) > 64:
			return bad(key+".name", "want a name of 1 to 64 characters (revisions record it as the author)")
		case len(t.Token) < 16:
			return bad(key+".token", "shorter than 16 characters: too easy to guess")
		case !slices.Contains([]string{RoleAgent, RoleViewer, RoleAdmin}, t.Role):
			return bad(key+".role", "%q is not agent, viewer or admin", t.Role)
		case names[t.Name]:
			return bad(key+".name", "%q is used twice", t.Name)
		case secrets[t.Token]:
			return bad(key+".token", "the same token is given twice")
		}
		names[t.Name], secrets[t.Token] = true, true
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return bad("tls.cert", "TLS needs both tls.cert and tls.key")
	}
	if c.TLS.ClientCA != "" && c.TLS.Cert == "" {
		return bad("tls.client_ca", "client certificates (mTLS) need tls.cert and tls.key too")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		return bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		return bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if c.Push.Debounce < 0 || c.Push.Debounce > 10*time.Second {
		return bad("push.debounce", "%s is outside 0-10s", c.Push.Debounce)
	}
	if c.Push.MaxDelay < c.Push.Debounce {
		return bad("push.max_delay", "%s is shorter than push.debounce", c.Push.MaxDelay)
	}
	// Anything listening beyond this host needs a token or mTLS (ARCHITECTURE §10).
	if len(c.Tokens) == 0 && c.TLS.ClientCA == "" {
		for key, addr := range map[string]string{"listen": c.Listen, "http_listen": c.HTTPListen} {
			if addr != "" && !confload.Loopback(addr) {
				return bad(key, "%q listens beyond this host without tokens or client certificates: add tokens or tls.client_ca", addr)
			}
		}
	}
	return nil
}

// dataDir is where the store lives: the configured directory, else confload.StateDir's.
func (c *Config) dataDir() (string, error) {
	if c.DataDir != "" {
		return c.DataDir, nil
	}
	return confload.StateDir("mix")
}
