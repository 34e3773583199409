package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// The db and the cache speak one line protocol over TCP, a request and its answer per line:
//
//	GET key        → VALUE value | NOTFOUND
//	SET key value  → OK            (the value is the rest of the line, spaces and all)
//	DEL key        → OK | NOTFOUND
//	anything else  → ERR reason
//
// It is as simple as a protocol can be while still showing on the map as a request/response
// conversation over long-lived connections, the way a real database's does.

// maxKVLine bounds a request line.
const maxKVLine = 64 << 10

// kvStore is the data of a db or a cache; with a ttl, keys expire (a cache).
type kvStore struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[string]kvEntry
}

type kvEntry struct {
	value   string
	expires time.Time // zero: never
}

func newKVStore(ttl time.Duration) *kvStore {
	return &kvStore{ttl: ttl, now: time.Now, m: map[string]kvEntry{}}
}

// exec runs one request line and returns the answer line (without the newline).
func (s *kvStore) exec(line string) string {
	cmd, rest, _ := strings.Cut(strings.TrimRight(line, "\r"), " ")
	key, value, hasValue := strings.Cut(rest, " ")
	if key == "" {
		return "ERR want GET key, SET key value or DEL key"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	e, ok := s.m[key]
	if ok && !e.expires.IsZero() && !now.Before(e.expires) {
		delete(s.m, key)
		ok = false
	}
	switch strings.ToUpper(cmd) {
	case "GET":
		if hasValue {
			return "ERR GET takes one key"
		}
		if !ok {
			return "NOTFOUND"
		}
		return "VALUE " + e.value
	case "SET":
		if !hasValue {
			return "ERR SET takes a key and a value"
		}
		e := kvEntry{value: value}
		if s.ttl > 0 {
			e.expires = now.Add(s.ttl)
		}
		s.m[key] = e
		return "OK"
	case "DEL":
		if hasValue {
			return "ERR DEL takes one key"
		}
		if !ok {
			return "NOTFOUND"
		}
		delete(s.m, key)
		return "OK"
	}
	return fmt.Sprintf("ERR unknown command %q", cmd)
}

// runKV serves the db or the cache.
func runKV(ctx context.Context, c serveConfig, log *slog.Logger) error {
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.listen, err)
	}
	log.Info("serving", "addr", ln.Addr().String(), "ttl", c.ttl)
	return serveKV(ctx, ln, newKVStore(c.ttl), c.latency, log)
}

// serveKV answers connections on ln until ctx ends.
func serveKV(ctx context.Context, ln net.Listener, s *kvStore, latency time.Duration, log *slog.Logger) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	defer func() {
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("accepting: %w", err)
		}
		mu.Lock()
		conns[conn] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, conn)
				mu.Unlock()
				_ = conn.Close()
			}()
			sc := bufio.NewScanner(conn)
			sc.Buffer(make([]byte, 4096), maxKVLine)
			w := bufio.NewWriter(conn)
			for {
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
				if !sc.Scan() {
					if err := sc.Err(); err != nil && !errors.Is(err, net.ErrClosed) {
						log.Debug("connection ended", "remote", conn.RemoteAddr().String(), "err", err)
					}
					return
				}
				sleepJitter(ctx, latency)
				_, _ = w.WriteString(s.exec(sc.Text()) + "\n")
				if err := w.Flush(); err != nil {
					return
				}
			}
		}()
	}
}

// errKVNotFound is a key that is not there (or a DEL of one).
var errKVNotFound = errors.New("not found")

// kvClient talks to a db or cache over a small pool of kept connections, as a database
// driver does: steady traffic rides a few long connections, bursts open more.
type kvClient struct {
	addr    string
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle int

	mu   sync.Mutex
	idle []*kvConn
}

type kvConn struct {
	c net.Conn
	r *bufio.Reader
}

func newKVClient(addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *kvClient {
	return &kvClient{addr: addr, dial: dial, maxIdle: 4}
}

// do sends one request line and reads the answer line. A kept connection the server has
// closed meanwhile fails the first try; the request is then sent once more on a new one.
func (k *kvClient) do(ctx context.Context, req string) (string, error) {
	if strings.ContainsAny(req, "\r\n") {
		return "", fmt.Errorf("a request to %s holds a line break", k.addr)
	}
	for {
		k.mu.Lock()
		var c *kvConn
		if n := len(k.idle); n > 0 {
			c, k.idle = k.idle[n-1], k.idle[:n-1]
		}
		k.mu.Unlock()
		kept := c != nil
		if c == nil {
			conn, err := k.dial(ctx, "tcp", k.addr)
			if err != nil {
				return "", fmt.Errorf("connecting to %s: %w", k.addr, err)
			}
			c = &kvConn{c: conn, r: bufio.NewReader(conn)}
		}
		line, err := c.roundTrip(ctx, req)
		if err != nil {
			_ = c.c.Close()
			if kept && ctx.Err() == nil {
				continue
			}
			return "", fmt.Errorf("asking %s: %w", k.addr, err)
		}
		k.mu.Lock()
		if len(k.idle) < k.maxIdle {
			k.idle = append(k.idle, c)
			c = nil
		}
		k.mu.Unlock()
		if c != nil {
			_ = c.c.Close()
		}
		if reason, ok := strings.CutPrefix(line, "ERR "); ok {
			return "", fmt.Errorf("%s answered: %s", k.addr, reason)
		}
		return line, nil
	}
}

func (c *kvConn) roundTrip(ctx context.Context, req string) (string, error) {
	deadline := time.Now().Add(3 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.c.SetDeadline(deadline)
	if _, err := c.c.Write([]byte(req + "\n")); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// Get returns the key's value, or errKVNotFound.
func (k *kvClient) Get(ctx context.Context, key string) (string, error) {
	ans, err := k.do(ctx, "GET "+key)
	if err != nil {
		return "", err
	}
	if ans == "NOTFOUND" {
		return "", errKVNotFound
	}
	if v, ok := strings.CutPrefix(ans, "VALUE "); ok {
		return v, nil
	}
	return "", fmt.Errorf("%s answered GET with %q", k.addr, ans)
}

// Set stores a value.
func (k *kvClient) Set(ctx context.Context, key, value string) error {
	ans, err := k.do(ctx, "SET "+key+" "+value)
	if err != nil {
		return err
	}
	if ans != "OK" {
		return fmt.Errorf("%s answered SET with %q", k.addr, ans)
	}
	return nil
}

// Del removes a key, or returns errKVNotFound.
func (k *kvClient) Del(ctx context.Context, key string) error {
	ans, err := k.do(ctx, "DEL "+key)
	switch {
	case err != nil:
		return err
	case ans == "NOTFOUND":
		return errKVNotFound
	case ans != "OK":
		return fmt.Errorf("%s answered DEL with %q", k.addr, ans)
	}
	return nil
}

// close drops the kept connections.
func (k *kvClient) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.idle {
		_ = c.c.Close()
	}
	k.idle = nil
}
