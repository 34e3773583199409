package main

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/quanyu/quanyu/internal/testbin"
)

// The web UI's acceptance test: the lab of TestAnalysisServiceGraph (client → api → db, two
// agents, mix holding the catalog), analysis serving the UI and proxying mix's admin API, and
// chromium driving the UI (test/ui/ui.test.mjs) with the figures analysis computed as the
// expectation. Screenshots of every view land in test-artifacts/ui/TestWebUI/.
func TestWebUI(t *testing.T) {
	testbin.UINodeModules(t) // before the lab: a broken npm install should fail in seconds
	l := newThreeTier(t)
	m := startMixHTTP(t)
	applyCatalog(t, m)
	a := startAnalysisUI(t, m)
	startOTLPAgent(t, "agent-client", l.clientPort, a.grpc)
	startOTLPAgent(t, "agent-api", l.apiPort, a.grpc)

	const n = 25
	l.send(t, n)
	g := a.waitGraph(t, 45*time.Second, func(g graphJSON) bool { return complete(g, n) })
	requireUI(t, a)

	type node struct {
		ID    string `json:"id"`
		App   string `json:"app"`
		Owner string `json:"owner"`
	}
	type edge struct {
		Source    string `json:"source"`
		Target    string `json:"target"`
		SourceApp string `json:"sourceApp"`
		TargetApp string `json:"targetApp"`
		Requests  uint64 `json:"requests"`
		Port      int    `json:"port"`
	}
	var want struct {
		Nodes []node `json:"nodes"`
		Edges []edge `json:"edges"`
		Click struct {
			SourceApp   string `json:"sourceApp"`
			TargetApp   string `json:"targetApp"`
			Requests    uint64 `json:"requests"`
			ClientOwner string `json:"clientOwner"`
			ServerOwner string `json:"serverOwner"`
		} `json:"click"`
		Flows struct {
			Port int `json:"port"`
		} `json:"flows"`
		Agents       []string `json:"agents"`
		Subscription struct {
			Bad     string `json:"bad"`
			BadID   string `json:"badId"`
			BadPath string `json:"badPath"`
			Good    string `json:"good"`
			GoodID  string `json:"goodId"`
		} `json:"subscription"`
	}
	owners := map[string]string{"shop-client": "Web team", "orders-api": "API team", "orders-db": "DB team"}
	for _, gn := range g.Nodes {
		if owner, ok := owners[gn.App]; ok {
			if gn.Owner != owner {
				t.Fatalf("analysis names %s's owner %q, want %q: the UI cannot be right if the API is not", gn.App, gn.Owner, owner)
			}
			want.Nodes = append(want.Nodes, node{gn.ID, gn.App, gn.Owner})
		}
	}
	for _, pair := range [][2]string{{"shop-client", "orders-api"}, {"orders-api", "orders-db"}} {
		e, _ := g.edge(pair[0], pair[1])
		want.Edges = append(want.Edges, edge{e.Source, e.Target, pair[0], pair[1], e.Requests, e.Port})
	}
	// The expectation is what the client sent, which complete() has already checked the API shows.
	want.Click.SourceApp, want.Click.TargetApp, want.Click.Requests = "shop-client", "orders-api", n
	want.Click.ClientOwner, want.Click.ServerOwner = owners["shop-client"], owners["orders-api"]
	// The table lists the client → api conversation too; filtering on the db's port must drop it.
	want.Flows.Port = l.dbHTTP
	want.Agents = []string{"agent-client", "agent-api"}
	// 99999 is no port: mix refuses the document and names spec.L4[0].
	want.Subscription.Bad, want.Subscription.BadID, want.Subscription.BadPath = `{"id":"bad","spec":{"L4":["99999"]}}`, "bad", "spec.L4[0]"
	want.Subscription.Good, want.Subscription.GoodID = `{"id":"ui-web","spec":{"L4":["8080"]}}`, "ui-web"
	raw, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}

	out := testbin.RunUIScript(t, "ui.test.mjs", map[string]string{
		"QUANYU_UI_URL":         "http://" + a.api + "/",
		"QUANYU_UI_SCREENSHOTS": testbin.UIArtifacts(t, t.Name()),
		"QUANYU_UI_EXPECT":      string(raw),
	}, 3*time.Minute)
	t.Logf("browser scenarios:\n%s", out)

	// The save went through analysis's proxy to mix: mix holds the valid subscription, not the
	// refused one.
	for id, code := range map[string]int{"ui-web": http.StatusOK, "bad": http.StatusNotFound} {
		if got := mixGet(t, m, "/api/v1/subscriptions/"+id); got != code {
			t.Errorf("mix GET subscription %q: %d, want %d", id, got, code)
		}
	}
}

// The map with 500 applications' worth of addresses: `quanyu replay` of a generated capture of
// 2,000 TCP conversations between 500 addresses sends real records to analysis over OTLP, and
// test/ui/scale.mjs times the L3 map's first render and a click and a pan on it.
func TestWebUIScale(t *testing.T) {
	const hosts, convs = 500, 2000
	testbin.UINodeModules(t)
	a := startAnalysis(t, t.TempDir(), "")

	dir := t.TempDir()
	pcap := filepath.Join(dir, "scale.pcap")
	if err := writeScaleCapture(pcap, hosts, convs, time.Now().Add(-time.Minute)); err != nil {
		t.Fatalf("writing the capture: %v", err)
	}
	cfg := filepath.Join(dir, "replay.yaml")
	if err := writeFile(cfg, fmt.Sprintf(`identity:
  id: replay-scale
plugins:
  sink-otlp:
    protocol: grpc
    endpoint: %s
    insecure: true
`, a.grpc)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out, err := quanyu(t, "replay", "--config", cfg, "--sink", "otlp", pcap).CombinedOutput(); err != nil {
		t.Fatalf("quanyu replay --sink otlp: %v\n%s", err, out)
	}
	var g graphJSON
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := json.Unmarshal(a.get(t, "/api/v1/graph?since=1h&level=l3"), &g); err != nil {
			t.Fatalf("reading the L3 graph: %v", err)
		}
		if len(g.Nodes) >= hosts && len(g.Edges) >= convs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the L3 graph has %d nodes and %d edges 60 s after the replay, want %d and %d\nanalysis log:\n%s",
				len(g.Nodes), len(g.Edges), hosts, convs, a.log.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("L3 graph: %d nodes, %d edges, %s after the replay started", len(g.Nodes), len(g.Edges), time.Since(start).Round(time.Millisecond))
	requireUI(t, a)

	out := testbin.RunUIScript(t, "scale.mjs", map[string]string{
		"QUANYU_UI_URL":         "http://" + a.api + "/",
		"QUANYU_UI_SCREENSHOTS": testbin.UIArtifacts(t, t.Name()),
		// The L3 level names nodes by address: labelPattern tells them from another level's.
		"QUANYU_UI_EXPECT": fmt.Sprintf(`{"nodes":%d,"edges":%d,"route":"#/map?level=l3","level":"l3","labelPattern":"^10\\.92\\."}`, hosts, convs),
	}, 2*time.Minute)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var numbers map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &numbers); err != nil {
		t.Fatalf("scale.mjs printed no JSON on its last line (%v):\n%s", err, out)
	}
	t.Logf("map at scale (ms): %s", lines[len(lines)-1])
}

// applyCatalog gives mix the three-tier lab's applications and owners.
func applyCatalog(t *testing.T, m *mixProc) {
	t.Helper()
	cat := filepath.Join(t.TempDir(), "catalog.json")
	if err := writeFile(cat, threeTierCatalog); err != nil {
		t.Fatal(err)
	}
	if out, err := m.cli(t, opsToken, "catalog", "apply", "-f", cat); err != nil {
		t.Fatalf("catalog apply: %v\n%s", err, out)
	}
}

// startAnalysisUI is startAnalysis watching mix for the catalog and proxying mix's HTTP admin API
// for the UI, with an admin token: the UI edits subscriptions.
func startAnalysisUI(t *testing.T, m *mixProc) *analysisProc {
	t.Helper()
	if m.http == "" {
		t.Fatal("the UI needs mix's HTTP admin API: start mix with startMixHTTP")
	}
	a := &analysisProc{grpc: freePort(t), otlpHTTP: freePort(t), api: freePort(t), dir: t.TempDir(), mix: m.addr}
	a.cmd = quanyu(t, "analysis", "--otlp-grpc", a.grpc, "--otlp-http", a.otlpHTTP, "--http-listen", a.api,
		"--data-dir", a.dir, "--mix", m.addr, "--mix-token", agentToken,
		"--mix-http", m.http, "--mix-admin-token", opsToken)
	a.cmd.Stderr = &a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := a.cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("analysis log:\n%s", a.log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(a.log.String(), "analysis running") {
		select {
		case <-exited:
			t.Fatalf("analysis exited while starting (%s):\n%s", cmd.ProcessState, a.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("analysis did not start within 20 s:\n%s", a.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return a
}

// requireUI fails unless analysis serves an HTML page at /: without it every browser step would
// fail with a less helpful message.
func requireUI(t *testing.T, a *analysisProc) {
	t.Helper()
	resp, err := http.Get("http://" + a.api + "/")
	if err != nil {
		t.Fatalf("GET / from analysis: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	ctype, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || ctype != "text/html" {
		t.Fatalf("analysis serves no UI at /: %s, Content-Type %q:\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
}

// mixGet asks mix's HTTP admin API directly (not through analysis) and returns the status.
func mixGet(t *testing.T, m *mixProc, path string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+m.http+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+opsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s from mix: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// writeScaleCapture writes convs short TCP conversations (handshake, one request and one answer,
// FINs) between hosts addresses in 10.92.0.0/16. Conversation k goes from address k%hosts to one
// 1, 38, 75 or 112 places further on (by k/hosts), so for convs ≤ 4*hosts every pair is distinct
// and the L3 graph has exactly hosts nodes and convs edges. Timestamps start at base so that
// analysis, which windows by the records' times, shows them in the last hour.
func writeScaleCapture(path string, hosts, convs int, base time.Time) error {
	if convs > 4*hosts {
		return fmt.Errorf("%d conversations between %d hosts would repeat pairs", convs, hosts)
	}
	w, err := newTCPCapture(path, base, 20*time.Microsecond)
	if err != nil {
		return err
	}
	addr := func(i int) net.IP { return net.IPv4(10, 92, byte(i/250), byte(i%250+1)).To4() }
	mac := func(i int) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)} }
	ports := []layers.TCPPort{5432, 6379, 8080, 9090}
	for k := range convs {
		c, s := k%hosts, (k%hosts+1+(k/hosts)*37)%hosts
		conv := &tcpConv{clientMAC: mac(c), serverMAC: mac(s), clientIP: addr(c), serverIP: addr(s),
			clientPort: layers.TCPPort(30000 + k), server: ports[k/hosts],
			seq: [2]uint32{uint32(k) * 7919, uint32(k) * 104729}}
		for _, p := range []struct {
			fromClient bool
			set        func(*layers.TCP)
			payload    []byte
		}{
			{true, tcpSYN, nil}, {false, tcpSYNACK, nil}, {true, tcpACK, nil},
			{true, tcpPSH, []byte("ping\n")}, {false, tcpPSH, []byte("pong\n")},
			{true, tcpFIN, nil}, {false, tcpFIN, nil}, {true, tcpACK, nil},
		} {
			if err := w.packet(conv, p.fromClient, p.set, p.payload); err != nil {
				return fmt.Errorf("conversation %d: %w", k, err)
			}
		}
	}
	return w.close()
}
