package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/internal/testnet"
)

// analysisProc is a running `quanyu analysis`.
type analysisProc struct {
	cmd                      *exec.Cmd
	grpc, otlpHTTP, api, dir string
	mix                      string
	log                      syncBuffer
}

// startAnalysis runs analysis on free ports with its store in dir, watching mix for the catalog
// when mixAddr is set.
func startAnalysis(t testing.TB, dir, mixAddr string) *analysisProc {
	t.Helper()
	a := &analysisProc{grpc: freePort(t), otlpHTTP: freePort(t), api: freePort(t), dir: dir, mix: mixAddr}
	a.start(t)
	return a
}

func (a *analysisProc) start(t testing.TB) {
	t.Helper()
	args := []string{"analysis", "--otlp-grpc", a.grpc, "--otlp-http", a.otlpHTTP, "--http-listen", a.api, "--data-dir", a.dir}
	if a.mix != "" {
		args = append(args, "--mix", a.mix, "--mix-token", agentToken)
	}
	a.log = syncBuffer{}
	a.cmd = quanyu(t, args...)
	a.cmd.Stderr = &a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := a.cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(a.log.String(), "analysis running") {
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("analysis did not start:\n%s", a.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends analysis as an operator does (SIGTERM) and waits for it.
func (a *analysisProc) stop(t testing.TB) {
	t.Helper()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("analysis exited with %v:\n%s", err, a.log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("analysis did not stop within 20 s:\n%s", a.log.String())
	}
}

func (a *analysisProc) get(t testing.TB, path string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + a.api + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
	}
	return body
}

type graphJSON struct {
	Nodes []struct {
		ID        string   `json:"id"`
		App       string   `json:"app"`
		Owner     string   `json:"owner"`
		Team      string   `json:"team"`
		Kind      string   `json:"kind"`
		Addresses []string `json:"addresses"`
	} `json:"nodes"`
	Edges []edgeJSON `json:"edges"`
}

type edgeJSON struct {
	Source      string  `json:"source"`
	Target      string  `json:"target"`
	Transport   string  `json:"transport"`
	Port        int     `json:"port"`
	Protocol    string  `json:"protocol"`
	Flows       uint64  `json:"flows"`
	Bytes       uint64  `json:"bytes"`
	Packets     uint64  `json:"packets"`
	Requests    uint64  `json:"requests"`
	Errors      uint64  `json:"errors"`
	LatencyP50  float64 `json:"latency_p50_ms"`
	LatencyP95  float64 `json:"latency_p95_ms"`
	RTT         float64 `json:"rtt_ms"`
	Retransmits uint64  `json:"retransmits"`
}

func (a *analysisProc) graph(t testing.TB) graphJSON {
	t.Helper()
	var g graphJSON
	if err := json.Unmarshal(a.get(t, "/api/v1/graph?since=1h"), &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// edge finds the edge between two nodes named by application.
func (g graphJSON) edge(client, server string) (edgeJSON, bool) {
	app := map[string]string{}
	for _, n := range g.Nodes {
		app[n.ID] = n.App
	}
	for _, e := range g.Edges {
		if app[e.Source] == client && app[e.Target] == server {
			return e, true
		}
	}
	return edgeJSON{}, false
}

// waitGraph polls the graph until ok accepts it.
func (a *analysisProc) waitGraph(t testing.TB, timeout time.Duration, ok func(graphJSON) bool) graphJSON {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		g := a.graph(t)
		if ok(g) {
			return g
		}
		if time.Now().After(deadline) {
			raw, _ := json.MarshalIndent(g, "", "  ")
			t.Fatalf("graph not as expected after %s:\n%s\nanalysis log:\n%s", timeout, raw, a.log.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// threeTier is the end-to-end lab: namespaces client, api and db on one bridge in this
// namespace, so that an agent here watching a namespace's bridge port sees that namespace's
// traffic. A bridge rather than routing through this namespace: forwarding here would be copied
// into every namespace other tests create meanwhile (new namespaces inherit IPv4's settings).
// api serves /orders and calls db's /rows for each.
type threeTier struct {
	client, api, db             *testnet.NS
	clientPort, apiPort, dbPort string // this namespace's bridge ports
	clientIP, apiIP, dbIP       string
	apiHTTP, dbHTTP             int
	dbCalls, clientCalls        int // requests answered: what the graph must count
	mu                          sync.Mutex
	// failEvery > 0 makes api answer every failEvery-th /orders with a 500 (2: half of them).
	failEvery, orders atomic.Int64
}

func newThreeTier(t *testing.T) *threeTier {
	t.Helper()
	testnet.RequireRoot(t)
	l := &threeTier{client: testnet.NewNS(t, "cli"), api: testnet.NewNS(t, "api"), db: testnet.NewNS(t, "db"),
		clientIP: "10.81.0.2", apiIP: "10.81.0.3", dbIP: "10.81.0.4", apiHTTP: 8080, dbHTTP: 5480}
	br := testnet.Name("qbr")
	testnet.Run(t, "ip", "link", "add", br, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", br).Run() })
	testnet.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf."+br+".disable_ipv6=1")
	testnet.Run(t, "ip", "link", "set", br, "up")
	port := func(ns *testnet.NS, ip string) string {
		host, peer := testnet.Name("qvh"), testnet.Name("qvp")
		testnet.Run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns.Name)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", host).Run() })
		testnet.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf."+host+".disable_ipv6=1")
		testnet.Run(t, "ip", "link", "set", host, "master", br)
		testnet.Run(t, "ip", "link", "set", host, "up")
		ns.Exec(t, "ip", "addr", "add", ip+"/24", "dev", peer)
		ns.Exec(t, "ip", "link", "set", peer, "up")
		return host
	}
	l.clientPort, l.apiPort, l.dbPort = port(l.client, l.clientIP), port(l.api, l.apiIP), port(l.db, l.dbIP)
	l.serve(t)
	return l
}

func (l *threeTier) dialer(ns *testnet.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

func (l *threeTier) listen(t *testing.T, ns *testnet.NS, addr string, h http.Handler) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

func (l *threeTier) serve(t *testing.T) {
	dbMux := http.NewServeMux()
	dbMux.HandleFunc("GET /rows", func(w http.ResponseWriter, _ *http.Request) {
		l.mu.Lock()
		l.dbCalls++
		l.mu.Unlock()
		_, _ = io.WriteString(w, `[{"id":1}]`)
	})
	l.listen(t, l.db, fmt.Sprintf("%s:%d", l.dbIP, l.dbHTTP), dbMux)
	toDB := &http.Client{Transport: &http.Transport{DialContext: l.dialer(l.api)}, Timeout: 10 * time.Second}
	apiMux := http.NewServeMux()
	apiMux.HandleFunc("GET /orders", func(w http.ResponseWriter, r *http.Request) {
		if n := l.failEvery.Load(); n > 0 && l.orders.Add(1)%n == 0 {
			http.Error(w, "injected failure", http.StatusInternalServerError)
			return
		}
		resp, err := toDB.Get(fmt.Sprintf("http://%s:%d/rows", l.dbIP, l.dbHTTP))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_, _ = w.Write(body)
	})
	l.listen(t, l.api, fmt.Sprintf("%s:%d", l.apiIP, l.apiHTTP), apiMux)
}

// send makes n requests from client to api on a keep-alive connection.
func (l *threeTier) send(t *testing.T, n int) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: l.dialer(l.client)}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	for i := range n {
		resp, err := c.Get(fmt.Sprintf("http://%s:%d/orders", l.apiIP, l.apiHTTP))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
		l.mu.Lock()
		l.clientCalls++
		l.mu.Unlock()
	}
}

// startOTLPAgent runs an agent in this namespace on one interface, decoding HTTP and sending to an
// OTLP endpoint with sink-otlp.
func startOTLPAgent(t *testing.T, id, nic, endpoint string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub.json")
	if err := writeFile(sub, `{"id":"web","spec":{"L7":["HTTP"]}}`); err != nil {
		t.Fatal(err)
	}
	cfg := otlpAgentConfig(t, dir, id, "mmap", endpoint)
	cmd := quanyu(t, "agent", "--config", cfg, "--nic", nic, "--subscription", sub, "--sink", "otlp")
	p := runAgentCmd(t, cmd, nic)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent %s log:\n%s", id, p.logText())
		}
	})
	return p
}

// otlpAgentConfig writes, in dir, the configuration of a test agent named id that captures with
// backend, reports quickly (flows idle after 5 s, batches every 500 ms) and sends OTLP over gRPC
// to endpoint; it gives the file's path.
func otlpAgentConfig(t *testing.T, dir, id, backend, endpoint string) string {
	t.Helper()
	cfg := filepath.Join(dir, "agent.yaml")
	if err := writeFile(cfg, fmt.Sprintf(`identity:
  id: %s
capture:
  backend: %s
  flush_interval: 500ms
  idle_timeout: 5s
plugins:
  sink-otlp:
    protocol: grpc
    endpoint: %s
    insecure: true
`, id, backend, endpoint)); err != nil {
		t.Fatal(err)
	}
	return cfg
}

const threeTierCatalog = `[
 {"app":"shop-client","owner":{"name":"Web team","team":"web","contact":"web@example.com"},"match":[{"cidr":"10.81.0.2/32"}]},
 {"app":"orders-api","owner":{"name":"API team","team":"api","contact":"api@example.com"},"match":[{"cidr":"10.81.0.3/32"}]},
 {"app":"orders-db","owner":{"name":"DB team","team":"db","contact":"db@example.com"},"match":[{"cidr":"10.81.0.4/32"}]}
]`

// startMixWithCatalog runs mix holding the three-tier lab's applications and owners.
func startMixWithCatalog(t *testing.T) *mixProc {
	t.Helper()
	m := startMix(t)
	cat := filepath.Join(t.TempDir(), "catalog.json")
	if err := writeFile(cat, threeTierCatalog); err != nil {
		t.Fatal(err)
	}
	if out, err := m.cli(t, opsToken, "catalog", "apply", "-f", cat); err != nil {
		t.Fatalf("catalog apply: %v\n%s", err, out)
	}
	return m
}

// Acceptance 1, 2, 4, 5 and 6: client → api → db with HTTP between namespaces; one agent watches
// the client's link and one the api's, so client → api is seen twice and must count once; the
// graph names the applications and owners from mix's catalog, with the request counts that were
// sent; /metrics passes promtool; bad OTLP is refused without touching the graph; a restarted
// analysis shows the last hour again.
func TestAnalysisServiceGraph(t *testing.T) {
	l := newThreeTier(t)
	m := startMixWithCatalog(t)
	a := startAnalysis(t, t.TempDir(), m.addr)
	startOTLPAgent(t, "agent-client", l.clientPort, a.grpc)
	startOTLPAgent(t, "agent-api", l.apiPort, a.grpc)

	const n = 25
	l.send(t, n)
	sent := time.Now()
	// From the last request to all of them in the graph: what an operator waits for.
	a.waitGraph(t, 30*time.Second, func(g graphJSON) bool {
		front, ok1 := g.edge("shop-client", "orders-api")
		back, ok2 := g.edge("orders-api", "orders-db")
		return ok1 && ok2 && front.Requests == n && back.Requests == n
	})
	visible := time.Since(sent)
	want := func(g graphJSON) bool { return complete(g, n) }
	g := a.waitGraph(t, 30*time.Second, want)
	t.Logf("requests visible in the graph %s after the last was answered; flow figures %s after (idle timeout 5 s)",
		visible.Round(time.Millisecond), time.Since(sent).Round(time.Millisecond))

	front, _ := g.edge("shop-client", "orders-api")
	back, _ := g.edge("orders-api", "orders-db")
	l.mu.Lock()
	sentFront, sentBack := l.clientCalls, l.dbCalls
	l.mu.Unlock()
	if front.Requests != uint64(sentFront) || back.Requests != uint64(sentBack) {
		t.Errorf("requests: client → api %d, api → db %d; the client made %d, the api %d", front.Requests, back.Requests, sentFront, sentBack)
	}
	if front.Flows != 1 || front.Port != l.apiHTTP || front.Protocol != "HTTP" || front.Errors != 0 {
		t.Errorf("client → api: %+v; want 1 conversation (one keep-alive connection, seen by both agents) on port %d, HTTP, no errors", front, l.apiHTTP)
	}
	if back.Port != l.dbHTTP || back.Flows == 0 || back.LatencyP95 <= 0 {
		t.Errorf("api → db: %+v", back)
	}
	owners := map[string]string{}
	for _, n := range g.Nodes {
		owners[n.App] = n.Owner
	}
	for app, owner := range map[string]string{"shop-client": "Web team", "orders-api": "API team", "orders-db": "DB team"} {
		if owners[app] != owner {
			t.Errorf("node %s: owner %q, want %q", app, owners[app], owner)
		}
	}
	t.Logf("client → api %+v", front)
	t.Logf("api → db %+v", back)

	// 4: promtool accepts /metrics, and the service graph family is there.
	metrics := a.get(t, "/metrics")
	if !bytes.Contains(metrics, []byte(`traces_service_graph_request_total{client="orders-api",server="orders-db"`)) {
		t.Errorf("/metrics has no service-graph series for orders-api → orders-db:\n%s", metrics)
	}
	if path, err := exec.LookPath("promtool"); err != nil {
		t.Errorf("promtool not installed (.ci/run installs Debian's prometheus package): %v", err)
	} else {
		cmd := exec.Command(path, "check", "metrics")
		cmd.Stdin = bytes.NewReader(metrics)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	var frames struct {
		Frames []struct {
			Schema struct{ Name string } `json:"schema"`
		} `json:"frames"`
	}
	if err := json.Unmarshal(a.get(t, "/api/v1/nodegraph?since=1h"), &frames); err != nil || len(frames.Frames) != 2 {
		t.Errorf("nodegraph: %v %+v", err, frames)
	}

	// 5: malformed and oversized OTLP get clear errors and change nothing.
	before := a.graph(t)
	for _, c := range []struct {
		name, ctype string
		body        []byte
		code        int
	}{
		{"not protobuf", "application/x-protobuf", []byte{0xff, 0xff, 0xff, 0x01, 0x02}, http.StatusBadRequest},
		{"not JSON", "application/json", []byte(`{"resourceLogs": [`), http.StatusBadRequest},
		{"oversized", "application/x-protobuf", make([]byte, 17<<20), http.StatusRequestEntityTooLarge},
		{"wrong type", "text/plain", []byte("hello"), http.StatusUnsupportedMediaType},
	} {
		resp, err := http.Post("http://"+a.otlpHTTP+"/v1/logs", c.ctype, bytes.NewReader(c.body))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: %s, want %d: %q", c.name, resp.Status, c.code, body)
		}
	}
	after := a.graph(t)
	if !sameGraph(before, after) {
		t.Errorf("bad OTLP changed the graph:\nbefore %+v\nafter  %+v", before, after)
	}

	// 6: a restarted analysis shows the last hour from its store.
	a.stop(t)
	a.start(t)
	restarted := a.waitGraph(t, 10*time.Second, want)
	if !sameGraph(after, restarted) {
		t.Errorf("after a restart:\nbefore %+v\nafter  %+v", after, restarted)
	}
}

// complete reports whether the graph holds both edges with n requests each and their flow
// records (which come when the connections end or idle out, after the requests).
func complete(g graphJSON, n uint64) bool {
	front, ok1 := g.edge("shop-client", "orders-api")
	back, ok2 := g.edge("orders-api", "orders-db")
	return ok1 && ok2 && front.Requests == n && back.Requests == n && front.Flows > 0 && back.Flows > 0 &&
		front.Bytes > 0 && back.Bytes > 0
}

// sameGraph compares the figures that do not depend on when the graph was asked for.
func sameGraph(a, b graphJSON) bool {
	key := func(g graphJSON) map[string]edgeJSON {
		out := map[string]edgeJSON{}
		for _, e := range g.Edges {
			out[fmt.Sprintf("%s>%s/%s/%d", e.Source, e.Target, e.Transport, e.Port)] = e
		}
		return out
	}
	ka, kb := key(a), key(b)
	if len(ka) != len(kb) {
		return false
	}
	for k, e := range ka {
		f, ok := kb[k]
		if !ok || e.Requests != f.Requests || e.Flows != f.Flows || e.Bytes != f.Bytes || e.Packets != f.Packets || e.Errors != f.Errors {
			return false
		}
	}
	return true
}

// Acceptance 3: a stock OpenTelemetry Collector between the agents and analysis forwards their
// data, and the graph comes out as without it.
func TestAnalysisThroughCollector(t *testing.T) {
	l := newThreeTier(t)
	m := startMixWithCatalog(t)
	direct := startAnalysis(t, t.TempDir(), m.addr)
	viaCollector := startAnalysis(t, t.TempDir(), m.addr)
	col := testbin.StartOtelCol(t, testbin.OtelColConfig{ExportTo: viaCollector.grpc}) // gzip, the collector's default
	startOTLPAgent(t, "agent-client", l.clientPort, direct.grpc)
	startOTLPAgent(t, "agent-api", l.apiPort, direct.grpc)
	startOTLPAgent(t, "agent-client-2", l.clientPort, col.GRPC)
	startOTLPAgent(t, "agent-api-2", l.apiPort, col.GRPC)
	const n = 15
	l.send(t, n)
	want := func(g graphJSON) bool { return complete(g, n) }
	g1 := direct.waitGraph(t, 30*time.Second, want)
	g2 := viaCollector.waitGraph(t, 30*time.Second, want)
	// The lab's two edges must be the same. Other traffic (an IGMP report as an interface comes
	// up) may be seen by the agents started first only.
	for _, e := range [][2]string{{"shop-client", "orders-api"}, {"orders-api", "orders-db"}} {
		a, _ := g1.edge(e[0], e[1])
		b, _ := g2.edge(e[0], e[1])
		if a.Requests != b.Requests || a.Flows != b.Flows || a.Bytes != b.Bytes || a.Packets != b.Packets || a.Errors != b.Errors {
			t.Errorf("%s → %s through the collector differs:\ndirect %+v\nvia    %+v", e[0], e[1], a, b)
		}
	}
}
