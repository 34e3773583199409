package testbin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Chromium is the browser the web UI's tests drive: Debian's package, which .ci/run installs.
// playwright-core is used without its own browser download so that the tests need no network
// beyond the npm registry and the browser is the one the distribution patches.
const Chromium = "/usr/bin/chromium"

var (
	uiOnce sync.Once
	uiDir  string
	uiErr  error
)

// UINodeModules installs test/ui's npm dependencies (npm ci, exactly the versions in its
// package-lock.json) once per test process and returns test/ui's path. It fails the test, with
// npm's output, when node or npm is missing or the install fails, and when chromium is missing:
// CI installs all three, so a missing one is a broken machine, not a reason to skip.
func UINodeModules(t testing.TB) string {
	t.Helper()
	uiOnce.Do(func() {
		var root string
		if root, uiErr = Root(); uiErr != nil {
			return
		}
		uiDir = filepath.Join(root, "test", "ui")
		for _, bin := range []string{"node", "npm"} {
			if _, err := exec.LookPath(bin); err != nil {
				uiErr = fmt.Errorf("%s is not installed (.ci/run installs Debian's nodejs and npm): %w", bin, err)
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = uiDir
		if out, err := cmd.CombinedOutput(); err != nil {
			uiErr = fmt.Errorf("npm ci in test/ui: %v\n%s", err, out)
		}
	})
	if uiErr != nil {
		t.Fatalf("installing the browser tests' dependencies: %v", uiErr)
	}
	if _, err := os.Stat(Chromium); err != nil {
		t.Fatalf("the browser tests need Debian's chromium (.ci/run installs it: apt-get install chromium): %v", err)
	}
	return uiDir
}

// UIArtifacts is test-artifacts/ui/<name> under the repository root, emptied: where the browser
// tests write their screenshots. CI keeps test-artifacts/; git ignores it.
func UIArtifacts(t testing.TB, name string) string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "test-artifacts", "ui", name)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatalf("emptying the screenshot directory: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating the screenshot directory: %v", err)
	}
	return dir
}

// RunUIScript runs `node SCRIPT` in test/ui with env added to the test's environment, and
// returns its stdout. Its stderr (the scenarios' report) is logged. The test fails with both when
// the script exits non-zero or runs longer than timeout.
func RunUIScript(t testing.TB, script string, env map[string]string, timeout time.Duration) string {
	t.Helper()
	dir := UINodeModules(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// node:test reports on stdout; chromium's children inherit the pipes, so an abandoned
	// browser must not hold Wait forever.
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("node %s (stderr):\n%s", script, s)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timed out after %s)", err, timeout)
		}
		t.Fatalf("node %s: %v after %s\nstdout:\n%s", script, err, time.Since(start).Round(time.Millisecond), stdout.String())
	}
	return stdout.String()
}
