package analysis

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/quanyu/quanyu/internal/confload"
)

func TestReferenceConfigIsDefault(t *testing.T) {
	got, err := Load(LoadOptions{File: "testdata/analysis.yaml", Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("testdata/analysis.yaml drifted from Default():\n got %+v\nwant %+v", got, want)
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"http_listen: nowhere\n", "http_listen"},
		{"otlp:\n  grpc_listen: 0.0.0.0:4317\n", "otlp.grpc_listen"},
		{"otlp:\n  max_request_bytes: 10\n", "otlp.max_request_bytes"},
		{"mix:\n  address: mix\n", "mix.address"},
		{"mix:\n  cert: c.pem\n", "mix.cert"},
		{"log:\n  level: loud\n", "log.level"},
		{"otlp:\n  grcp_listen: 127.0.0.1:1\n", "otlp.grcp_listen"},
	} {
		path := filepath.Join(t.TempDir(), "analysis.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(LoadOptions{File: path, Environ: []string{}})
		var ce *confload.Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%q: want an error naming %s, got %v", tc.yaml, tc.key, err)
		}
	}
	// The environment layer: QUANYU_ANALYSIS_OTLP_GRPC_LISTEN sets otlp.grpc_listen.
	cfg, err := Load(LoadOptions{Environ: []string{"QUANYU_ANALYSIS_OTLP_GRPC_LISTEN=127.0.0.1:14317"}})
	if err != nil || cfg.OTLP.GRPCListen != "127.0.0.1:14317" {
		t.Fatalf("environment: %+v %v", cfg.OTLP, err)
	}
}
