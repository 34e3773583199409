package lab

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func TestKVStore(t *testing.T) {
	now := time.Unix(1000, 0)
	s := newKVStore(0)
	s.now = func() time.Time { return now }
	for _, step := range []struct{ req, want string }{
		{"GET k", "NOTFOUND"},
		{"SET k hello world", "OK"},
		{"GET k", "VALUE hello world"},
		{"get k", "VALUE hello world"},
		{"SET k ", "OK"},
		{"GET k", "VALUE "},
		{"DEL k", "OK"},
		{"DEL k", "NOTFOUND"},
		{"GET k", "NOTFOUND"},
		{"SET k", "ERR SET takes a key and a value"},
		{"GET a b", "ERR GET takes one key"},
		{"", "ERR want GET key, SET key value or DEL key"},
		{"PUT k v", `ERR unknown command "PUT"`},
		{"SET crlf v\r", "OK"},
		{"GET crlf", "VALUE v"},
	} {
		if got := s.exec(step.req); got != step.want {
			t.Errorf("%q: got %q, want %q", step.req, got, step.want)
		}
	}

	// A cache's keys expire.
	c := newKVStore(20 * time.Second)
	c.now = func() time.Time { return now }
	c.exec("SET k v")
	now = now.Add(19 * time.Second)
	if got := c.exec("GET k"); got != "VALUE v" {
		t.Errorf("before the ttl: %q", got)
	}
	now = now.Add(time.Second)
	if got := c.exec("GET k"); got != "NOTFOUND" {
		t.Errorf("at the ttl: %q, want NOTFOUND", got)
	}
}

// startKV serves a store on a loopback port and returns its address and the count of
// connections it accepted.
func startKV(t *testing.T, s *kvStore) (string, *atomic.Int64, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepts := &atomic.Int64{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serveKV(ctx, countingListener{ln, accepts}, s, 0, slog.New(slog.DiscardHandler))
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return ln.Addr().String(), accepts, stop
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func dialDirect(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// TestKVClientServer: a roundtrip over TCP, the connection kept between requests, and a kept
// connection the server dropped replaced without the caller seeing an error.
func TestKVClientServer(t *testing.T) {
	addr, accepts, stop := startKV(t, newKVStore(0))
	ctx := context.Background()
	k := newKVClient(addr, dialDirect)
	defer k.close()
	if err := k.Set(ctx, "user:1", `{"name": "Ada Lovelace"}`); err != nil {
		t.Fatal(err)
	}
	if v, err := k.Get(ctx, "user:1"); err != nil || v != `{"name": "Ada Lovelace"}` {
		t.Fatalf("Get: %q %v", v, err)
	}
	if _, err := k.Get(ctx, "user:2"); !errors.Is(err, errKVNotFound) {
		t.Errorf("Get of a missing key: %v, want errKVNotFound", err)
	}
	if err := k.Del(ctx, "user:1"); err != nil {
		t.Errorf("Del: %v", err)
	}
	if err := k.Del(ctx, "user:1"); !errors.Is(err, errKVNotFound) {
		t.Errorf("Del of a missing key: %v, want errKVNotFound", err)
	}
	if _, err := k.do(ctx, "NOPE x"); err == nil {
		t.Error("an unknown command answered without error")
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("%d connections for sequential requests, want 1 kept", n)
	}
	if err := k.Set(ctx, "bad", "line\nbreak"); err == nil {
		t.Error("a value with a line break was sent")
	}

	// The server goes away and comes back on the same port: the kept connection is dead.
	stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	ctx2, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = serveKV(ctx2, ln, newKVStore(0), 0, slog.New(slog.DiscardHandler)) }()
	if err := k.Set(ctx, "k", "v"); err != nil {
		t.Errorf("Set after the server restarted: %v", err)
	}
}
