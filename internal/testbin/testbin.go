// Package testbin builds the quanyu binary and every plugin once per test process, so end-to-end
// tests run the real programs, exactly as a user does. It also builds and runs a stock
// OpenTelemetry Collector (test/otelcol) for tests that put one between the agent and analysis.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once sync.Once
	dir  string
	err  error
)

// Root is the repository's root directory (the one holding go.mod).
func Root() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// SharedTestdata is ../shared/testdata beside the repository. It fails the test, saying where it
// looked, when the folder is missing: CI always has it.
func SharedTestdata(t testing.TB) string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(root), "shared", "testdata")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared test data not found at %s (it sits beside the repository: ../shared/testdata): %v", p, err)
	}
	return p
}

// Build builds bin/quanyu and bin/plugins/quanyu-* into a directory shared by the test process
// and returns it: <dir>/quanyu, <dir>/plugins/.
func Build(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		var root string
		root, err = Root()
		if err != nil {
			return
		}
		dir, err = os.MkdirTemp("", "quanyu-testbin-")
		if err != nil {
			return
		}
		if err = goBuild(root, filepath.Join(dir, "quanyu"), "./cmd/quanyu"); err != nil {
			return
		}
		var entries []os.DirEntry
		entries, err = os.ReadDir(filepath.Join(root, "plugins"))
		if err != nil {
			return
		}
		for _, e := range entries {
			if !e.IsDir() || e.Name() == "internal" {
				continue
			}
			out := filepath.Join(dir, "plugins", "quanyu-"+e.Name())
			if err = goBuild(root, out, "./plugins/"+e.Name()); err != nil {
				return
			}
		}
	})
	if err != nil {
		t.Fatalf("building binaries: %v", err)
	}
	return dir
}

func goBuild(root, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Cleanup removes the built binaries, the collector's too; call it from TestMain after m.Run.
func Cleanup() {
	for _, d := range []string{dir, otelDir} {
		if d != "" {
			_ = os.RemoveAll(d)
		}
	}
}
