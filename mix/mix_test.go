package mix

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quanyu/quanyu/mix/mixpb"
	"github.com/quanyu/quanyu/sdk"
)

// testServer runs a mix on loopback ports with its data in a temporary directory.
type testServer struct {
	*Server
	cancel context.CancelFunc
	done   chan error
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.HTTPListen == "" {
		cfg.HTTPListen = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ts := &testServer{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	ts.cancel()
	select {
	case <-ts.done:
	case <-time.After(10 * time.Second):
	}
}

func defaultConfig() Config {
	cfg := Default()
	cfg.Push.Debounce = 20 * time.Millisecond
	cfg.Push.MaxDelay = 200 * time.Millisecond
	return cfg
}

func dialTest(t *testing.T, addr string, opts DialOptions) mixpb.MixClient {
	t.Helper()
	opts.Address = addr
	conn, err := Dial(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return mixpb.NewMixClient(conn)
}

// listAll is every stored object, kind by kind, for before/after comparisons.
func listAll(t *testing.T, c mixpb.MixClient) string {
	t.Helper()
	var b strings.Builder
	for _, k := range []string{"subscription", "catalog", "rule", "receiver", "settings"} {
		resp, err := c.List(context.Background(), &mixpb.ListRequest{Kind: k})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range resp.Objects {
			fmt.Fprintf(&b, "%s %s %d %s\n", k, o.Id, o.Revision, o.Json)
		}
	}
	return b.String()
}

// Acceptance: bad subscriptions are rejected with their field paths (gRPC InvalidArgument, HTTP
// 400 with the fields), and the stored state is the same afterwards.
func TestBadInputChangesNothing(t *testing.T) {
	ts := startServer(t, defaultConfig())
	c := dialTest(t, ts.GRPCAddr(), DialOptions{})
	ctx := context.Background()
	if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(`[{"id":"a","spec":{"L4":["80"]}},{"id":"b","spec":{}}]`)}); err != nil {
		t.Fatal(err)
	}
	before := listAll(t, c)
	bad := []struct{ doc, path string }{
		{`{"L4Range":"6000-5000"}`, "L4Range"},
		{`{"L3":["10.0.0.300"]}`, "L3[0]"},
		{`{"L3":["10.0.0.0/8"]}`, "L3[0]"},
		{`{"L3Match":["10.0.0.0/33"]}`, "L3Match[0]"},
		{`{"L3Miss":["nope"]}`, "L3Miss[0]"},
		{`{"L3MissRange":["fe80::/200"]}`, "L3MissRange[0]"},
		{`{"L4":["70000"]}`, "L4[0]"},
		{`{"L4":["http"]}`, "L4[0]"},
		{`{"L4":["80-90"]}`, "L4[0]"},
		{`{"L4Miss":["-1"]}`, "L4Miss[0]"},
		{`{"L4MissRange":["1-2-3"]}`, "L4MissRange[0]"},
		{`{"L4CLASS":["TPC"]}`, "L4CLASS[0]"},
		{`{"L7":["GOPHER"]}`, "L7[0]"},
		{`{"L7Miss":["FETCH"]}`, "L7Miss[0]"},
		{`{"NIC":["eth[0"]}`, "NIC[0]"},
		{`{"NIC":[""]}`, "NIC[0]"},
		{`{"Nic":["eth0"]}`, "Nic"},
		{`{"L3":"10.0.0.1","Port":80}`, "Port"},
		{`{"id":"x y","spec":{}}`, "id"},
		{`{"id":"ok","spec":{"L4":[80]},"expires":"tomorrow"}`, "expires"},
		{`{"id":"ok","spec":{},"selector":{"labels":{"":"x"}}}`, "selector.labels"},
		{`{"id":"ok","spec":{},"selector":{"hosts":["["]}}`, "selector.hosts[0]"},
		{`{"id":"ok","spec":{},"selector":{"zones":["a"]}}`, "selector.zones"},
		{`{"id":"ok","spec":{},"options":{"payload_bytes":999999}}`, "options.payload_bytes"},
		{`{"id":"ok","spec":{},"options":{"frames":"yes"}}`, "options.frames"},
		{`{"id":"ok","spec":{},"options":{"sample":true}}`, "options.sample"},
		{`{"id":"ok","spec":{"L4":80,"L4Range":["5-1"]}}`, "spec.L4Range[0]"},
		{`{"id":"ok"}`, "spec"},
		{`[{"id":"dup","spec":{}},{"id":"dup","spec":{}}]`, "[1].id"},
		{`[{"spec":{}},{"spec":{}}]`, "[0].id"},
		{`{"id":"ok","spec":{"L3":["1.2.3.4"],"L3Match":["1.2.3.0/24"],"L4":["99999"]}}`, "spec.L4[0]"},
		{`"just a string"`, ""},
	}
	for _, tc := range bad {
		_, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(tc.doc)})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.path) {
			t.Errorf("%s: want InvalidArgument naming %q, got %v", tc.doc, tc.path, err)
		}
	}
	// Catalog entries, and one that claims what a stored application already claims.
	if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "catalog", Json: []byte(`{"app":"web",
		"owner":{"name":"Web team","contact":"web@example.com"},"match":[{"cidr":"10.1.0.0/24","ports":["80"]}]}`)}); err != nil {
		t.Fatal(err)
	}
	before = listAll(t, c)
	badCatalog := []struct{ doc, path string }{
		{`{"app":"","owner":{"name":"x","contact":"y"},"match":[{"process":"p"}]}`, "app"},
		{`{"app":"a b","owner":{"name":"x","contact":"y"},"match":[{"process":"p"}]}`, "app"},
		{`{"app":"api","owner":{"contact":"y"},"match":[{"process":"p"}]}`, "owner.name"},
		{`{"app":"api","owner":{"name":"x"},"match":[{"process":"p"}]}`, "owner.contact"},
		{`{"app":"api","owner":{"name":"x","contact":"y","phone":"1"},"match":[{"process":"p"}]}`, "owner.phone"},
		{`{"app":"api","owner":{"name":"x","contact":"y"},"match":[]}`, "match"},
		{`{"app":"api","owner":{"name":"x","contact":"y"},"match":[{}]}`, "match[0]"},
		{`{"app":"api","owner":{"name":"x","contact":"y"},"match":[{"cidr":"10.0.0.0/40"}]}`, "match[0].cidr"},
		{`{"app":"api","owner":{"name":"x","contact":"y"},"match":[{"address":"10.0.0.999"}]}`, "match[0].address"},
		{`{"app":"api","owner":{"name":"x","contact":"y"},"match":[{"cidr":"10.2.0.0/24","ports":["70000"]}]}`, "match[0].ports[0]"},
		{`{"app":"api","owner":{"name":"x","contact":"y"},"match":[{"cidr":"10.2.0.0/24","ports":["9-1"]}]}`, "match[0].ports[0]"},
		{`{"app":"api","owner":{"name":"x","contact":"y"},"match":[{"cidr":"10.2.0.0/24"}],"tier":"1"}`, "tier"},
		// The same range and ports as the stored "web": no one could say which application it is.
		{`{"app":"api","owner":{"name":"x","contact":"y"},"match":[{"cidr":"10.1.0.0/24","ports":["80"]}]}`, "match[0]"},
	}
	for _, tc := range badCatalog {
		_, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "catalog", Json: []byte(tc.doc)})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.path) {
			t.Errorf("catalog %s: want InvalidArgument naming %q, got %v", tc.doc, tc.path, err)
		}
	}
	// The same over HTTP: 400, and the fields listed one by one.
	resp, err := http.Post("http://"+ts.HTTPAddr()+"/api/v1/subscriptions", "application/json",
		strings.NewReader(`{"L4Range":"6000-5000","L3":["10.0.0.300"]}`))
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error  string `json:"error"`
		Fields []struct{ Path, Reason string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || len(body.Fields) != 2 || body.Fields[0].Path != "L3[0]" || body.Fields[1].Path != "L4Range" {
		t.Errorf("HTTP: %d %+v", resp.StatusCode, body)
	}
	if after := listAll(t, c); after != before {
		t.Fatalf("rejected input changed the store:\nbefore %s\nafter  %s", before, after)
	}
	hist, err := c.History(ctx, &mixpb.HistoryRequest{Kind: "subscription"})
	if err != nil || len(hist.Revisions) != 2 {
		t.Fatalf("history has %d revisions, want the 2 applies: %v", len(hist.Revisions), err)
	}
	if n := len(bad) + len(badCatalog); n < 30 {
		t.Fatalf("only %d bad inputs", n)
	}
}

// fakeAgent is a Watch client that answers every push, recording what it got.
type fakeAgent struct {
	id       string
	mu       sync.Mutex
	versions []string
	subs     [][]sdk.Subscription
	refuse   func([]sdk.Subscription) error
}

// watch runs one Watch session until ctx ends or the stream breaks; it returns the time the
// stream broke and the error.
func (f *fakeAgent) watch(ctx context.Context, c mixpb.MixClient, applied string) error {
	stream, err := c.Watch(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Hello{Hello: &mixpb.Hello{Role: "agent", Id: f.id,
		Host: f.id, Labels: map[string]string{"zone": "a"}, AppliedVersion: applied}}}); err != nil {
		return err
	}
	for {
		push, err := stream.Recv()
		if err != nil {
			return err
		}
		subs, err := sdk.ParseSubscriptions(push.SubscriptionsJson)
		if err == nil && f.refuse != nil {
			err = f.refuse(subs)
		}
		if err != nil {
			_ = stream.Send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Nack{Nack: &mixpb.Nack{Nonce: push.Nonce, Error: err.Error()}}})
			continue
		}
		f.mu.Lock()
		f.versions = append(f.versions, push.Version)
		f.subs = append(f.subs, subs)
		f.mu.Unlock()
		_ = stream.Send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Ack{Ack: &mixpb.Ack{Version: push.Version, Nonce: push.Nonce}}})
	}
}

func (f *fakeAgent) last() (string, []sdk.Subscription) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.versions) == 0 {
		return "", nil
	}
	return f.versions[len(f.versions)-1], f.subs[len(f.subs)-1]
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Selectors target agents; an expired subscription is withdrawn by itself; a burst of edits
// reaches an agent as few pushes; a NACK leaves the agent NACKED on its previous version.
func TestPushesFollowSelectorsExpiryAndBursts(t *testing.T) {
	ts := startServer(t, defaultConfig())
	c := dialTest(t, ts.GRPCAddr(), DialOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := &fakeAgent{id: "a"}, &fakeAgent{id: "b"}
	go func() { _ = a.watch(ctx, c, "") }()
	go func() { _ = b.watch(ctx, c, "") }()
	waitFor(t, "first pushes", 5*time.Second, func() bool { va, _ := a.last(); vb, _ := b.last(); return va != "" && vb != "" })
	expires := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	doc := fmt.Sprintf(`[{"id":"all","spec":{}},{"id":"only-a","selector":{"hosts":["a"]},"spec":{"L4":["80"]}},`+
		`{"id":"zone-b","selector":{"labels":{"zone":"b"}},"spec":{}},{"id":"brief","expires":%q,"spec":{"L4":["53"]}}]`, expires)
	if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(doc)}); err != nil {
		t.Fatal(err)
	}
	ids := func(subs []sdk.Subscription) string {
		var out []string
		for _, s := range subs {
			out = append(out, s.ID)
		}
		return strings.Join(out, ",")
	}
	waitFor(t, "a's set", 5*time.Second, func() bool { _, s := a.last(); return ids(s) == "all,brief,only-a" })
	waitFor(t, "b's set", 5*time.Second, func() bool { _, s := b.last(); return ids(s) == "all,brief" })
	waitFor(t, "the expired subscription withdrawn", 5*time.Second, func() bool { _, s := a.last(); return ids(s) == "all,only-a" })

	// A burst of 50 edits within a few milliseconds: the debounce makes it a handful of pushes.
	a.mu.Lock()
	pushesBefore := len(a.versions)
	a.mu.Unlock()
	for i := 0; i < 50; i++ {
		if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(fmt.Sprintf(`{"id":"burst","spec":{"L4":["%d"]}}`, 1000+i))}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the burst's last edit", 5*time.Second, func() bool {
		_, s := a.last()
		for _, sub := range s {
			if sub.ID == "burst" && len(sub.Spec.L4) == 1 && sub.Spec.L4[0] == 1049 {
				return true
			}
		}
		return false
	})
	a.mu.Lock()
	pushes := len(a.versions) - pushesBefore
	a.mu.Unlock()
	if pushes > 10 {
		t.Errorf("50 edits in a burst made %d pushes; the debounce should coalesce them", pushes)
	}

	// A NACK: b refuses sets holding "poison"; it stays on its version, NACKED, with the reason.
	b.mu.Lock()
	b.refuse = func(subs []sdk.Subscription) error {
		for _, s := range subs {
			if s.ID == "poison" {
				return fmt.Errorf("no interface for poison")
			}
		}
		return nil
	}
	b.mu.Unlock()
	vb, _ := b.last()
	if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(`{"id":"poison","spec":{}}`)}); err != nil {
		t.Fatal(err)
	}
	var agent *mixpb.Agent
	waitFor(t, "b NACKED", 5*time.Second, func() bool {
		resp, err := c.Agents(ctx, &mixpb.AgentsRequest{})
		if err != nil {
			return false
		}
		for _, ag := range resp.Agents {
			if ag.Id == "b" && ag.Status == StatusNacked {
				agent = ag
				return true
			}
		}
		return false
	})
	if !strings.Contains(agent.LastError, "no interface for poison") {
		t.Errorf("b's last error %q", agent.LastError)
	}
	if now, _ := b.last(); now != vb {
		t.Errorf("b's applied version moved from %s to %s after a NACK", vb, now)
	}
}

// Acceptance: 100 agents all receive a push; when mix restarts they all reconnect, spread out in
// time by the jitter of their backoff rather than in lockstep.
func TestHundredAgentsReconnectWithJitter(t *testing.T) {
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	ts := startServer(t, cfg)
	addr := ts.GRPCAddr()
	c := dialTest(t, addr, DialOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 100
	agents := make([]*fakeAgent, n)
	reconnected := make([]time.Time, n)
	var mu sync.Mutex
	for i := range agents {
		agents[i] = &fakeAgent{id: fmt.Sprintf("agent-%03d", i)}
		go func(i int) {
			// The production backoff, shortened tenfold so the test runs in seconds: about
			// 100 ms, ×1.6, ±20%.
			delay := 100 * time.Millisecond
			conn := dialTest(t, addr, DialOptions{})
			for ctx.Err() == nil {
				v, _ := agents[i].last()
				started := time.Now()
				_ = agents[i].watch(ctx, conn, v)
				if time.Since(started) > time.Second {
					delay = 100 * time.Millisecond
				}
				wait := time.Duration(float64(delay) * (0.8 + 0.4*randFloat()))
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				delay = min(time.Duration(float64(delay)*1.6), 6*time.Second)
				mu.Lock()
				reconnected[i] = time.Now()
				mu.Unlock()
			}
		}(i)
	}
	if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(`{"id":"all","spec":{}}`)}); err != nil {
		t.Fatal(err)
	}
	synced := func() int {
		resp, err := c.Agents(ctx, &mixpb.AgentsRequest{})
		if err != nil {
			return 0
		}
		k := 0
		for _, a := range resp.Agents {
			if a.Status == StatusSynced && a.AppliedVersion != "" {
				k++
			}
		}
		return k
	}
	waitFor(t, "100 agents synced", 20*time.Second, func() bool { return synced() == n })
	for _, a := range agents {
		if _, subs := a.last(); len(subs) != 1 || subs[0].ID != "all" {
			t.Fatalf("%s got %v", a.id, subs)
		}
	}

	before := make([]int, n)
	for i, a := range agents {
		a.mu.Lock()
		before[i] = len(a.versions)
		a.mu.Unlock()
	}
	// Restart mix on the same address and data.
	ts.stop()
	cfg.Listen = addr
	time.Sleep(300 * time.Millisecond)
	ts2 := startServer(t, cfg)
	c2 := dialTest(t, ts2.GRPCAddr(), DialOptions{})
	c = c2
	waitFor(t, "100 agents back and synced", 30*time.Second, func() bool { return synced() == n })
	mu.Lock()
	first, last := reconnected[0], reconnected[0]
	distinct := map[int64]bool{}
	for _, at := range reconnected {
		if at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
		distinct[at.UnixMilli()/10] = true
	}
	mu.Unlock()
	spread := last.Sub(first)
	t.Logf("100 agents reconnected over %s, in %d distinct 10 ms slots", spread, len(distinct))
	if spread < 20*time.Millisecond || len(distinct) < 10 {
		t.Errorf("reconnections in lockstep: all within %s, %d distinct 10 ms slots", spread, len(distinct))
	}
	// Reconnecting with the version they run, they get nothing new.
	for i, a := range agents {
		a.mu.Lock()
		pushes := len(a.versions) - before[i]
		a.mu.Unlock()
		if pushes != 0 {
			t.Errorf("%s received %d pushes after the restart; a reconnection with the current version needs none", a.id, pushes)
		}
	}
}

func randFloat() float64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return float64(new(big.Int).SetBytes(b[:7]).Uint64()) / float64(uint64(1)<<56)
}

// Acceptance: without a token or with a wrong one, requests are refused; a viewer reads but
// cannot change anything; an agent token may only watch; the author of a change is the token's
// name.
func TestTokensAndRoles(t *testing.T) {
	cfg := defaultConfig()
	cfg.Tokens = []Token{
		{Name: "ops", Token: "admin-token-0123456789", Role: RoleAdmin},
		{Name: "dash", Token: "viewer-token-0123456789", Role: RoleViewer},
		{Name: "host1", Token: "agent-token-0123456789", Role: RoleAgent},
	}
	ts := startServer(t, cfg)
	ctx := context.Background()
	apply := &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(`{"id":"x","spec":{}}`)}
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{{"", codes.Unauthenticated}, {"wrong-token-0123456789", codes.Unauthenticated},
		{"viewer-token-0123456789", codes.PermissionDenied}, {"agent-token-0123456789", codes.PermissionDenied}} {
		_, err := dialTest(t, ts.GRPCAddr(), DialOptions{Token: tc.token}).Apply(ctx, apply)
		if status.Code(err) != tc.want {
			t.Errorf("token %q: %v, want %s", tc.token, err, tc.want)
		}
	}
	if _, err := dialTest(t, ts.GRPCAddr(), DialOptions{Token: "viewer-token-0123456789"}).List(ctx, &mixpb.ListRequest{Kind: "subscription"}); err != nil {
		t.Errorf("a viewer cannot read: %v", err)
	}
	admin := dialTest(t, ts.GRPCAddr(), DialOptions{Token: "admin-token-0123456789"})
	if _, err := admin.Apply(ctx, apply); err != nil {
		t.Fatal(err)
	}
	if o, err := admin.Get(ctx, &mixpb.GetRequest{Kind: "subscription", Id: "x"}); err != nil || o.Author != "ops" {
		t.Errorf("author %q, want the token's name ops (%v)", o.GetAuthor(), err)
	}
	if _, err := dialTest(t, ts.GRPCAddr(), DialOptions{Token: "viewer-token-0123456789"}).Delete(ctx, &mixpb.DeleteRequest{Kind: "subscription", Id: "x"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a viewer deleted: %v", err)
	}
	// HTTP follows the same rules.
	for _, tc := range []struct {
		token string
		want  int
	}{{"", 401}, {"viewer-token-0123456789", 403}, {"admin-token-0123456789", 200}} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+ts.HTTPAddr()+"/api/v1/subscriptions", strings.NewReader(`{"id":"y","spec":{}}`))
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("HTTP with token %q: %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
	}
}

// Listening beyond loopback needs tokens or client certificates.
func TestNoOpenListenerBeyondLoopback(t *testing.T) {
	cfg := defaultConfig()
	cfg.Listen = "0.0.0.0:7070"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("an unauthenticated listener on every address was accepted: %v", err)
	}
}

// pki makes a CA and certificates signed by it, written as PEM files.
type pki struct {
	dir  string
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	n    int64
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), key: key, cert: cert, n: 1}
	writePEM(t, filepath.Join(p.dir, "ca.pem"), "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes a certificate for name (server or client) and returns its cert and key files.
func (p *pki) issue(t *testing.T, name string, server bool) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.n++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.n), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cert, keyFile := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	writePEM(t, cert, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return cert, keyFile
}

// Acceptance: with mTLS, a client certificate from another CA is refused; one from the right CA
// is accepted; a renewed server certificate is served without a restart.
func TestMutualTLS(t *testing.T) {
	ours, theirs := newPKI(t, "quanyu-ca"), newPKI(t, "other-ca")
	srvCert, srvKey := ours.issue(t, "mix", true)
	cfg := defaultConfig()
	cfg.TLS = TLSConfig{Cert: srvCert, Key: srvKey, ClientCA: filepath.Join(ours.dir, "ca.pem")}
	ts := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	goodCert, goodKey := ours.issue(t, "agent1", false)
	badCert, badKey := theirs.issue(t, "intruder", false)
	ca := filepath.Join(ours.dir, "ca.pem")

	good := dialTest(t, ts.GRPCAddr(), DialOptions{CA: ca, Cert: goodCert, Key: goodKey})
	if _, err := good.Apply(ctx, &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(`{"id":"m","spec":{}}`)}); err != nil {
		t.Fatalf("a certificate from mix's CA: %v", err)
	}
	if o, err := good.Get(ctx, &mixpb.GetRequest{Kind: "subscription", Id: "m"}); err != nil || o.Author != "cert:agent1" {
		t.Errorf("author %q (%v), want cert:agent1", o.GetAuthor(), err)
	}
	bad := dialTest(t, ts.GRPCAddr(), DialOptions{CA: ca, Cert: badCert, Key: badKey})
	if _, err := bad.List(ctx, &mixpb.ListRequest{Kind: "subscription"}); status.Code(err) != codes.Unavailable {
		t.Errorf("a certificate from another CA: %v, want the handshake refused (Unavailable)", err)
	}
	none := dialTest(t, ts.GRPCAddr(), DialOptions{CA: ca})
	if _, err := none.List(ctx, &mixpb.ListRequest{Kind: "subscription"}); err == nil {
		t.Errorf("no client certificate was accepted")
	}

	// Renew the server certificate in place; a new connection gets the new one.
	time.Sleep(1100 * time.Millisecond) // file times have a one-second grain on some filesystems
	renewedCert, renewedKey := ours.issue(t, "mix-renewed", true)
	raw, _ := os.ReadFile(renewedCert)
	rawKey, _ := os.ReadFile(renewedKey)
	if err := os.WriteFile(srvKey, rawKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(srvCert, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	fresh := dialTest(t, ts.GRPCAddr(), DialOptions{CA: ca, Cert: goodCert, Key: goodKey})
	if _, err := fresh.List(ctx, &mixpb.ListRequest{Kind: "subscription"}); err != nil {
		t.Fatalf("after renewal: %v", err)
	}
	served := peerCertCN(t, ts.GRPCAddr(), ca, goodCert, goodKey)
	if served != "mix-renewed" {
		t.Errorf("mix serves %q after the renewal, want mix-renewed", served)
	}
}

// peerCertCN connects with TLS and returns the common name of the certificate mix serves.
func peerCertCN(t *testing.T, addr, caFile, certFile, keyFile string) string {
	t.Helper()
	raw, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(raw)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// analysis watches mix the same way for the catalog, rules, receivers and prediction settings:
// each change is a new version, pushed, and answered.
func TestAnalysisWatchesCatalogAndRules(t *testing.T) {
	ts := startServer(t, defaultConfig())
	c := dialTest(t, ts.GRPCAddr(), DialOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Hello{Hello: &mixpb.Hello{Role: "analysis", Id: "analysis-1"}}}); err != nil {
		t.Fatal(err)
	}
	pushes := make(chan *mixpb.WatchResponse, 16)
	go func() {
		for {
			p, err := stream.Recv()
			if err != nil {
				close(pushes)
				return
			}
			_ = stream.Send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Ack{Ack: &mixpb.Ack{Version: p.Version, Nonce: p.Nonce}}})
			pushes <- p
		}
	}()
	next := func() *mixpb.WatchResponse {
		t.Helper()
		select {
		case p := <-pushes:
			return p
		case <-time.After(5 * time.Second):
			t.Fatal("no push within 5 s")
			return nil
		}
	}
	first := next()
	if string(first.CatalogJson) != "[]" || string(first.RulesJson) != "[]" {
		t.Fatalf("first push: catalog %s rules %s", first.CatalogJson, first.RulesJson)
	}
	if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "catalog", Json: []byte(`{"app":"api",
		"owner":{"name":"API team","contact":"api@example.com"},"match":[{"cidr":"10.3.0.0/24"}]}`)}); err != nil {
		t.Fatal(err)
	}
	withCatalog := next()
	if !strings.Contains(string(withCatalog.CatalogJson), `"app":"api"`) || withCatalog.Version == first.Version {
		t.Fatalf("after a catalog change: %s (version %s)", withCatalog.CatalogJson, withCatalog.Version)
	}
	if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "rule", Json: []byte(`{"id":"api-errors","kind":"threshold",
		"metric":"error_ratio","level":"edge","selector":{"server_app":"api"},"op":">","value":0.05,"for":"1m","severity":"critical"}`)}); err != nil {
		t.Fatal(err)
	}
	withRule := next()
	if !strings.Contains(string(withRule.RulesJson), `"id":"api-errors"`) {
		t.Fatalf("after a rule change: %s", withRule.RulesJson)
	}
	// Subscriptions are not analysis's business: a change to them pushes nothing here.
	if _, err := c.Apply(ctx, &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(`{"id":"s","spec":{}}`)}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-pushes:
		t.Fatalf("a subscription change was pushed to analysis: %v", p)
	case <-time.After(300 * time.Millisecond):
	}
	// analysis is not an agent: `quanyu agents` does not list it.
	resp, err := c.Agents(ctx, &mixpb.AgentsRequest{})
	if err != nil || len(resp.Agents) != 0 {
		t.Fatalf("agents %v %v", resp, err)
	}
}

// A receiver's credentials (header values, URL password) are for admins: a viewer sees them
// redacted.
func TestReceiverSecretsHiddenFromViewers(t *testing.T) {
	cfg := defaultConfig()
	cfg.Tokens = []Token{{Name: "ops", Token: "admin-token-0123456789", Role: RoleAdmin},
		{Name: "dash", Token: "viewer-token-0123456789", Role: RoleViewer}}
	ts := startServer(t, cfg)
	ctx := context.Background()
	admin := dialTest(t, ts.GRPCAddr(), DialOptions{Token: "admin-token-0123456789"})
	if _, err := admin.Apply(ctx, &mixpb.ApplyRequest{Kind: "receiver", Json: []byte(`{"id":"ops","kind":"webhook",
		"url":"https://bot:s3cret@hooks.example.com/alert","headers":{"X-Api-Key":"k3y"}}`)}); err != nil {
		t.Fatal(err)
	}
	viewer := dialTest(t, ts.GRPCAddr(), DialOptions{Token: "viewer-token-0123456789"})
	o, err := viewer.Get(ctx, &mixpb.GetRequest{Kind: "receiver", Id: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(o.Json), "s3cret") || strings.Contains(string(o.Json), "k3y") {
		t.Errorf("a viewer reads the receiver's secrets: %s", o.Json)
	}
	o, err = admin.Get(ctx, &mixpb.GetRequest{Kind: "receiver", Id: "ops"})
	if err != nil || !strings.Contains(string(o.Json), "k3y") {
		t.Errorf("an admin should read the receiver as stored: %s %v", o.GetJson(), err)
	}
}

// One mix per data directory: a second one says who holds it.
func TestDataDirectoryIsExclusive(t *testing.T) {
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	startServer(t, cfg)
	cfg.Listen, cfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	_, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "in use by another mix") {
		t.Fatalf("a second mix on the same data directory: %v", err)
	}
}
