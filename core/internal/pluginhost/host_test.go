package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/sdk"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func newHost(t *testing.T) *Host {
	t.Helper()
	dir := filepath.Join(testbin.Build(t), "plugins")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &Host{Dir: dir, Log: log, PluginLog: log}
	t.Cleanup(func() { _ = h.StopAll(context.Background()) })
	return h
}

func TestDiscoverAndMissingPlugin(t *testing.T) {
	h := newHost(t)
	found, err := h.Discover()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"capture-mmap", "sink-stdout"} {
		if _, ok := found[name]; !ok {
			t.Errorf("%s not discovered in %s: %v", name, h.Dir, found)
		}
	}
	_, err = h.Start(context.Background(), "sink-nowhere", sdk.KindSink, Options{})
	if err == nil || !strings.Contains(err.Error(), "quanyu-sink-nowhere") || !strings.Contains(err.Error(), "sink-stdout") {
		t.Fatalf("a missing plugin should be named along with the ones there are: %v", err)
	}
	// A plugin of another kind than asked for is refused.
	_, err = h.Start(context.Background(), "sink-stdout", sdk.KindCapture, Options{})
	if err == nil {
		t.Fatal("a sink started as a capture plugin")
	}
}

func TestPinnedChecksum(t *testing.T) {
	h := newHost(t)
	raw, err := os.ReadFile(filepath.Join(h.Dir, "quanyu-sink-stdout"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	h.Checksums = map[string]string{"sink-stdout": strings.Repeat("0", 64)}
	if _, err := h.Start(context.Background(), "sink-stdout", sdk.KindSink, Options{}); err == nil ||
		!strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a plugin whose checksum differs from the pinned one started: %v", err)
	}
	h.Checksums["sink-stdout"] = hex.EncodeToString(sum[:])
	p, err := h.Start(context.Background(), "sink-stdout", sdk.KindSink, Options{})
	if err != nil {
		t.Fatalf("the plugin with the pinned checksum: %v", err)
	}
	if p.Info().Name != "stdout" {
		t.Fatalf("info %+v", p.Info())
	}
}

// A plugin killed from outside is restarted with backoff, configured again before anyone sees it,
// and the restart is counted.
func TestRestartAfterCrash(t *testing.T) {
	h := newHost(t)
	var configured atomic.Int32
	p, err := h.Start(context.Background(), "sink-stdout", sdk.KindSink, Options{
		Restart: true,
		Configure: func(ctx context.Context, impl any) error {
			configured.Add(1)
			return impl.(sdk.Sink).Configure(ctx, sdk.SinkConfig{Options: []byte(`{"format":"seed"}`)})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	changed := p.Changed()
	old := p.Pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(30 * time.Second): // generous: CI runs packages side by side on two cores
		t.Fatal("no restart within 30 s")
	}
	if _, gen := p.Current(); gen != 2 || p.Restarts() != 1 || configured.Load() != 2 || p.Pid() == old {
		t.Fatalf("generation %d, restarts %d, configured %d times, pid %d (was %d)", gen, p.Restarts(), configured.Load(), p.Pid(), old)
	}
	impl, _ := p.Current()
	if err := impl.(sdk.Sink).Write(context.Background(), &sdk.Batch{}); err != nil {
		t.Fatalf("the restarted plugin does not work: %v", err)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatalf("a second Stop: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if p.Restarts() != 1 {
		t.Fatalf("a stopped plugin was restarted")
	}
}
