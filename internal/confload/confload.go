// Package confload loads a configuration in layers, each overriding the one before: defaults in
// code, a YAML file, environment variables with a prefix, then command-line flags. Every key is
// checked against the defaults, so a misspelt key in the file or the environment is an error that
// names it, not a setting silently ignored. The agent and mix load their configurations with it.
package confload

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// Error names the key that is wrong and why.
type Error struct {
	Key    string
	Reason string
}

func (e *Error) Error() string { return "config: " + e.Key + ": " + e.Reason }

// Spec describes a configuration.
type Spec struct {
	// Defaults are the keys (dotted) and their default values: the set of known keys.
	Defaults map[string]any
	// OpenSections are key prefixes ("plugins.") under which any key is allowed.
	OpenSections []string
	// EnvPrefix starts the environment variables read (QUANYU_).
	EnvPrefix string
	// IgnoreEnv are variables with the prefix that belong to something else.
	IgnoreEnv []string
}

// Options are the layers above the defaults.
type Options struct {
	// File is a YAML file; empty for none.
	File string
	// Environ is the environment (os.Environ() when nil).
	Environ []string
	// Flags are the values of flags the user set, by key.
	Flags map[string]any
}

// Load reads the layers into out (a struct with koanf tags).
func Load(spec Spec, opts Options, out any) error {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(spec.Defaults, "."), nil); err != nil {
		return fmt.Errorf("loading defaults: %w", err)
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
			return fmt.Errorf("reading config file %s: %w", opts.File, err)
		}
		if err := checkKeys(fk.Keys(), known, spec.OpenSections, opts.File); err != nil {
			return err
		}
		if err := k.Merge(fk); err != nil {
			return fmt.Errorf("merging config file %s: %w", opts.File, err)
		}
	}
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	envKeys, err := envMap(spec, environ, known, lists)
	if err != nil {
		return err
	}
	if err := k.Load(confmap.Provider(envKeys, "."), nil); err != nil {
		return fmt.Errorf("loading environment: %w", err)
	}
	if len(opts.Flags) > 0 {
		if err := k.Load(confmap.Provider(opts.Flags, "."), nil); err != nil {
			return fmt.Errorf("loading flags: %w", err)
		}
	}
	if err := k.UnmarshalWithConf("", out, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return fmt.Errorf("decoding configuration: %w", err)
	}
	return nil
}

func checkKeys(keys, known, open []string, source string) error {
	for _, key := range keys {
		if slices.Contains(known, key) {
			continue
		}
		allowed := false
		for _, s := range open {
			if strings.HasPrefix(key, s) {
				allowed = true
			}
		}
		if !allowed {
			return &Error{Key: key, Reason: "unknown key in " + source + " (see the configuration reference in the README)"}
		}
	}
	return nil
}

// envMap maps PREFIX_CAPTURE_IDLE_TIMEOUT to capture.idle_timeout by matching against the known
// keys: the key names themselves contain underscores, so the mapping cannot be a plain replace.
// Lists are comma-separated.
func envMap(spec Spec, environ, known []string, lists map[string]bool) (map[string]any, error) {
	byEnv := map[string]string{}
	for _, key := range known {
		byEnv[spec.EnvPrefix+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = key
	}
	out := map[string]any{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || spec.EnvPrefix == "" || !strings.HasPrefix(name, spec.EnvPrefix) || slices.Contains(spec.IgnoreEnv, name) {
			continue
		}
		key, ok := byEnv[name]
		if !ok {
			names := make([]string, 0, len(byEnv))
			for n := range byEnv {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, &Error{Key: name, Reason: "unknown environment variable; the known ones are " + strings.Join(names, ", ")}
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

// Loopback reports whether addr (host:port) listens on this host only.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// StateDir is where a program keeps its data when its configuration names no directory:
// /var/lib/quanyu/<program> as root, else the user's state directory ($XDG_STATE_HOME or
// ~/.local/state) under quanyu/<program>.
func StateDir(program string) (string, error) {
	if os.Geteuid() == 0 {
		return filepath.Join("/var/lib/quanyu", program), nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "quanyu", program), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding a data directory (set data_dir): %w", err)
	}
	return filepath.Join(home, ".local", "state", "quanyu", program), nil
}
