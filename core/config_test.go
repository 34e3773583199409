package core

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The reference file documents every key with its default; loading it must give Default().
func TestReferenceConfigIsDefault(t *testing.T) {
	got, err := Load(LoadOptions{File: "testdata/config.yaml", Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("testdata/config.yaml drifted from Default():\n got %+v\nwant %+v", got, want)
	}
}

func TestLayersOverrideInOrder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	yaml := "capture:\n  snaplen: 512\n  idle_timeout: 20s\n  interfaces: [eth*]\nsinks: [stdout, otlp]\nplugins:\n  sink-stdout:\n    format: seed\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"QUANYU_AGENT_CAPTURE_IDLE_TIMEOUT=30s", "QUANYU_AGENT_CAPTURE_INTERFACES=veth0,veth1", "PATH=/bin"}
	flags := map[string]any{"capture.interfaces": []string{"br0"}}
	cfg, err := Load(LoadOptions{File: path, Environ: env, Flags: flags})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Capture.SnapLen != 512 {
		t.Errorf("file layer: snaplen %d, want 512", cfg.Capture.SnapLen)
	}
	if cfg.Capture.IdleTimeout != 30*time.Second {
		t.Errorf("environment over file: idle_timeout %s, want 30s", cfg.Capture.IdleTimeout)
	}
	if !reflect.DeepEqual(cfg.Capture.Interfaces, []string{"br0"}) {
		t.Errorf("flags over environment: interfaces %v, want [br0]", cfg.Capture.Interfaces)
	}
	if !reflect.DeepEqual(cfg.Sinks, []string{"stdout", "otlp"}) {
		t.Errorf("sinks %v", cfg.Sinks)
	}
	if cfg.Plugins["sink-stdout"]["format"] != "seed" {
		t.Errorf("plugin options %v", cfg.Plugins)
	}
	// Untouched keys keep their defaults.
	if cfg.Capture.MaxFlows != Default().Capture.MaxFlows {
		t.Errorf("max_flows %d changed", cfg.Capture.MaxFlows)
	}
	envOnly, err := Load(LoadOptions{Environ: env})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(envOnly.Capture.Interfaces, []string{"veth0", "veth1"}) {
		t.Errorf("comma-separated list from the environment: %v", envOnly.Capture.Interfaces)
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	cases := []struct {
		name    string
		yaml    string
		env     []string
		flags   map[string]any
		wantKey string
	}{
		{name: "snaplen too small", yaml: "capture:\n  snaplen: 10\n", wantKey: "capture.snaplen"},
		{name: "unknown key", yaml: "capture:\n  snaplenn: 10\n", wantKey: "capture.snaplenn"},
		{name: "unknown top key", yaml: "sink: [stdout]\n", wantKey: "sink"},
		{name: "bad level", yaml: "log:\n  level: loud\n", wantKey: "log.level"},
		{name: "bad format", flags: map[string]any{"log.format": "xml"}, wantKey: "log.format"},
		{name: "idle timeout", env: []string{"QUANYU_AGENT_CAPTURE_IDLE_TIMEOUT=10ms"}, wantKey: "capture.idle_timeout"},
		{name: "unknown env", env: []string{"QUANYU_AGENT_CAPTUR_SNAPLEN=100"}, wantKey: "QUANYU_AGENT_CAPTUR_SNAPLEN"},
		{name: "no sinks", yaml: "sinks: []\n", wantKey: "sinks"},
		{name: "bad sink name", yaml: "sinks: [\"Std Out\"]\n", wantKey: "sinks[0]"},
		{name: "bad backend", flags: map[string]any{"capture.backend": "../x"}, wantKey: "capture.backend"},
		{name: "batch size", yaml: "capture:\n  batch_size: 0\n", wantKey: "capture.batch_size"},
		{name: "max flows", yaml: "capture:\n  max_flows: 10\n", wantKey: "capture.max_flows"},
		{name: "queue", yaml: "pipeline:\n  queue_batches: 0\n", wantKey: "pipeline.queue_batches"},
		{name: "checksum", yaml: "plugin_checksums:\n  sink-stdout: abc\n", wantKey: "plugin_checksums.sink-stdout"},
		{name: "flush interval", yaml: "capture:\n  flush_interval: 2m\n", wantKey: "capture.flush_interval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := LoadOptions{Environ: tc.env, Flags: tc.flags}
			if opts.Environ == nil {
				opts.Environ = []string{}
			}
			if tc.yaml != "" {
				opts.File = filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(opts.File, []byte(tc.yaml), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(opts)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want a *ConfigError, got %v", err)
			}
			if ce.Key != tc.wantKey {
				t.Fatalf("error names %q, want %q (%v)", ce.Key, tc.wantKey, err)
			}
			if !strings.Contains(err.Error(), tc.wantKey) {
				t.Fatalf("message %q does not name the key", err)
			}
		})
	}
}
