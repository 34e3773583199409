package mix

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/quanyu/quanyu/internal/confload"
)

func TestReferenceConfigIsDefault(t *testing.T) {
	got, err := Load(LoadOptions{File: "testdata/mix.yaml", Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("testdata/mix.yaml drifted from Default():\n got %+v\nwant %+v", got, want)
	}
}

func TestBadMixConfigNamesTheKey(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"listen: nowhere\n", "listen"},
		{"listen: 0.0.0.0:7070\n", "listen"},
		{"tokens:\n  - {name: a, token: short, role: admin}\n", "tokens[0].token"},
		{"tokens:\n  - {name: a, token: 0123456789abcdef0, role: root}\n", "tokens[0].role"},
		{"tokens:\n  - {name: a, token: 0123456789abcdef0, role: admin}\n  - {name: a, token: 0123456789abcdef1, role: admin}\n", "tokens[1].name"},
		{"tls:\n  cert: c.pem\n", "tls.cert"},
		{"tls:\n  client_ca: ca.pem\n", "tls.client_ca"},
		{"push:\n  debounce: 20s\n", "push.debounce"},
		{"lisen: 127.0.0.1:1\n", "lisen"},
	} {
		path := filepath.Join(t.TempDir(), "mix.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(LoadOptions{File: path, Environ: []string{}})
		var ce *confload.Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%q: want an error naming %s, got %v", tc.yaml, tc.key, err)
		}
	}
}
