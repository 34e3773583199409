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
// agents, mix holding the catalog and alert rules), analysis serving the UI and proxying mix's
// admin API, and chromium driving the UI (test/ui/ui.test.mjs) with the figures analysis computed
// as the expectation. Screenshots of every view land in test-artifacts/ui/TestWebUI/.
//
// For the alerts page, api then calls db steadily (see steadyTraffic): traffic that keeps a
// threshold rule firing on api → db while the browser looks, leaving the client → api figures
// the map scenario counts, and the map's shape, untouched. The client's one burst fires the same
// rule on client → api, which resolves once the burst is over, so the history has a resolved
// alert too; and the burst comes late enough for its edges to be new-edge events.
func TestWebUI(t *testing.T) {
	testbin.UINodeModules(t) // before the lab: a broken npm install should fail in seconds
	l := newThreeTier(t)
	m := startMixHTTP(t)
	applyCatalog(t, m)
	applyUIAlertRules(t, m) // before analysis starts: the burst below is evaluated under them
	a := startAnalysisUI(t, m)
	started := time.Now() // no earlier than the evaluator's start, which new_edge_grace counts from
	startOTLPAgent(t, "agent-client", l.clientPort, a.grpc)
	startOTLPAgent(t, "agent-api", l.apiPort, a.grpc)

	// An edge is new only if the 10 s bucket it first shows in starts after new_edge_grace (1 s
	// past the start): the first bucket's edges count as already known. So the burst waits for
	// the next bucket.
	newFrom := started.Add(time.Second)
	if b := newFrom.Truncate(10 * time.Second); b.Before(newFrom) {
		newFrom = b.Add(10 * time.Second)
	}
	time.Sleep(time.Until(newFrom))
	const n = 25
	l.send(t, n)
	g := a.waitGraph(t, 45*time.Second, func(g graphJSON) bool { return complete(g, n) })
	requireUI(t, a)
	steadyTraffic(t, l)
	alerts := waitUIAlerts(t, a, 90*time.Second)

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
			SourceApp     string `json:"sourceApp"`
			TargetApp     string `json:"targetApp"`
			Requests      uint64 `json:"requests"`
			ClientOwner   string `json:"clientOwner"`
			ServerOwner   string `json:"serverOwner"`
			ClientContact string `json:"clientContact"`
			ServerContact string `json:"serverContact"`
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
		Alerts uiAlertsWant `json:"alerts"`
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
	want.Click.ClientContact, want.Click.ServerContact = "web@example.com", "api@example.com" // threeTierCatalog's
	// The table lists the client → api conversation too; filtering on the db's port must drop it.
	want.Flows.Port = l.dbHTTP
	want.Agents = []string{"agent-client", "agent-api"}
	// 99999 is no port: mix refuses the document and names spec.L4[0].
	want.Subscription.Bad, want.Subscription.BadID, want.Subscription.BadPath = `{"id":"bad","spec":{"L4":["99999"]}}`, "bad", "spec.L4[0]"
	want.Subscription.Good, want.Subscription.GoodID = `{"id":"ui-web","spec":{"L4":["8080"]}}`, "ui-web"
	want.Alerts = alerts
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
// for the UI, with an admin token: the UI edits subscriptions, and firing alerts ask mix for
// evidence subscriptions. Edges are "new" from a second after the start (not two minutes), so
// the lab's edges, first seen after the start, are events; evidence subscriptions live ten
// minutes, so an alert's evidence stays "requested" while the browser looks (the lab's agents
// take their subscriptions from files, so none is ever captured).
func startAnalysisUI(t *testing.T, m *mixProc) *analysisProc {
	t.Helper()
	if m.http == "" {
		t.Fatal("the UI needs mix's HTTP admin API: start mix with startMixHTTP")
	}
	a := &analysisProc{grpc: freePort(t), otlpHTTP: freePort(t), api: freePort(t), dir: t.TempDir(), mix: m.addr}
	cfg := filepath.Join(t.TempDir(), "analysis.yaml")
	if err := writeFile(cfg, "alerts:\n  new_edge_grace: 1s\n  evidence_for: 10m\n"); err != nil {
		t.Fatal(err)
	}
	a.cmd = quanyu(t, "analysis", "--config", cfg, "--otlp-grpc", a.grpc, "--otlp-http", a.otlpHTTP, "--http-listen", a.api,
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

// applyUIAlertRules gives mix short prediction settings (a one-minute season, so forecasts get
// going within the test), a threshold rule that fires on any request on an edge of api's (client
// → api and api → db), a forecast rule on the client → api edge the map scenario opens, and a
// new_edge rule on api's new clients (client → api is new: its alert fires at once).
func applyUIAlertRules(t *testing.T, m *mixProc) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []struct{ kind, doc string }{
		{"settings", `{"season":"1m","min_history":"1m"}`},
		{"rule", `[
 {"id":"busy-api","kind":"threshold","metric":"request_rate","level":"edge","selector":{"owner":"API team"},
  "op":">","value":0,"severity":"warning","annotations":{"runbook":"https://runbooks.example/orders-api"}},
 {"id":"api-traffic","kind":"forecast","metric":"request_rate","level":"edge",
  "selector":{"client_app":"shop-client","server_app":"orders-api"},"severity":"info"},
 {"id":"new-api-clients","kind":"new_edge","selector":{"server_app":"orders-api"},"severity":"info"}]`},
	} {
		f := filepath.Join(dir, d.kind+".json")
		if err := writeFile(f, d.doc); err != nil {
			t.Fatal(err)
		}
		if out, err := m.cli(t, opsToken, d.kind, "apply", "-f", f); err != nil {
			t.Fatalf("%s apply: %v\n%s", d.kind, err, out)
		}
	}
}

// steadyTraffic has api call db five times a second until the test ends, and adds no edge to
// the map: a map with another edge is laid out differently, and the map scenario clicks an edge
// where the layout puts it. The calls are api's own: a client inside api's namespace asks api's
// /orders over loopback (which no agent watches), and api asks db on the connection it kept from
// the client's burst. That connection must stay busy: left idle, its TCP keepalive probes would
// start a flow the agent cannot orient, an edge db → api on api's ephemeral port.
func steadyTraffic(t *testing.T, l *threeTier) {
	t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	c := &http.Client{Transport: &http.Transport{DialContext: l.dialer(l.api)}, Timeout: 10 * time.Second}
	go func() {
		defer close(done)
		defer c.CloseIdleConnections()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			resp, err := c.Get(fmt.Sprintf("http://%s:%d/orders", l.apiIP, l.apiHTTP))
			if err != nil {
				continue // the browser checks the alert, whose wait below says if traffic never got through
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// uiAlertsWant is what the alerts scenarios expect, read from analysis's API once it holds it.
type uiAlertsWant struct {
	Firing struct {
		ID            string `json:"id"`
		Rule          string `json:"rule"`
		Series        string `json:"series"`
		ClientOwner   string `json:"clientOwner"`
		ClientContact string `json:"clientContact"`
		ServerOwner   string `json:"serverOwner"`
		ServerContact string `json:"serverContact"`
		Runbook       string `json:"runbook"`
		EvidenceState string `json:"evidenceState"`
		EvidenceSub   string `json:"evidenceSubscription"`
	} `json:"firing"`
	Resolved struct {
		ID     string `json:"id"`
		Series string `json:"series"`
	} `json:"resolved"`
	Event   string `json:"event"` // the series name of the new-edge event
	NewEdge struct {
		ID     string `json:"id"`
		Series string `json:"series"`
	} `json:"newEdge"` // new-api-clients' alert
	Forecast struct {
		Rule   string `json:"rule"`
		Metric string `json:"metric"`
		Series string `json:"series"`
	} `json:"forecast"`
}

// waitUIAlerts polls analysis until everything the alerts scenarios look at is there: busy-api
// firing on api → db (with its evidence requested) and resolved on client → api, the new-edge
// event for client → api and new-api-clients' alert on it, and at least two points of
// api-traffic's forecast on client → api.
func waitUIAlerts(t *testing.T, a *analysisProc, timeout time.Duration) uiAlertsWant {
	t.Helper()
	type end struct{ App, Owner, Contact string }
	type alert struct {
		ID          string `json:"id"`
		Rule        string `json:"rule"`
		State       string `json:"state"`
		Series      struct{ Name string }
		Client      *end              `json:"client"`
		Server      *end              `json:"server"`
		Annotations map[string]string `json:"annotations"`
		Evidence    *struct {
			Subscription string `json:"subscription"`
			State        string `json:"state"`
			Error        string `json:"error"`
		} `json:"evidence"`
	}
	const rule, back, front = "busy-api", "orders-api → orders-db", "shop-client → orders-api"
	var w uiAlertsWant
	var evidenceErr string
	deadline := time.Now().Add(timeout)
	for {
		var al struct{ Active, History []alert }
		var ev struct {
			Events []struct {
				Kind   string `json:"kind"`
				Series struct{ Name string }
			} `json:"events"`
		}
		var fc struct {
			Forecasts []struct {
				Rule   string `json:"rule"`
				Metric string `json:"metric"`
				Series struct{ Name string }
				Points []json.RawMessage `json:"points"`
			} `json:"forecasts"`
		}
		rawAlerts := a.get(t, "/api/v1/alerts")
		rawForecasts := a.get(t, "/api/v1/forecasts?source=app:shop-client&target=app:orders-api")
		if err := json.Unmarshal(rawAlerts, &al); err != nil {
			t.Fatalf("reading /api/v1/alerts: %v", err)
		}
		if err := json.Unmarshal(a.get(t, "/api/v1/events"), &ev); err != nil {
			t.Fatalf("reading /api/v1/events: %v", err)
		}
		if err := json.Unmarshal(rawForecasts, &fc); err != nil {
			t.Fatalf("reading /api/v1/forecasts: %v", err)
		}
		var missing []string
		var firing *alert
		for i, x := range al.Active {
			if x.Rule == rule && x.State == "firing" && x.Series.Name == back {
				firing = &al.Active[i]
			}
		}
		switch {
		case firing == nil:
			missing = append(missing, rule+" firing on "+back)
		case firing.Client == nil || firing.Server == nil || firing.Evidence == nil:
			missing = append(missing, rule+"'s owners and evidence")
		default:
			f := &w.Firing
			f.ID, f.Rule, f.Series = firing.ID, firing.Rule, firing.Series.Name
			f.ClientOwner, f.ClientContact = firing.Client.Owner, firing.Client.Contact
			f.ServerOwner, f.ServerContact = firing.Server.Owner, firing.Server.Contact
			f.Runbook = firing.Annotations["runbook"]
			f.EvidenceState, f.EvidenceSub = firing.Evidence.State, firing.Evidence.Subscription
			evidenceErr = firing.Evidence.Error
		}
		w.Resolved.ID = ""
		for _, x := range al.History {
			if x.Rule == rule && x.State == "resolved" && x.Series.Name == front {
				w.Resolved.ID, w.Resolved.Series = x.ID, x.Series.Name
			}
		}
		if w.Resolved.ID == "" {
			missing = append(missing, rule+" resolved on "+front+" in the history")
		}
		w.Event = ""
		for _, x := range ev.Events {
			if x.Kind == "new_edge" && x.Series.Name == front {
				w.Event = x.Series.Name
			}
		}
		if w.Event == "" {
			missing = append(missing, "a new-edge event for "+front)
		}
		w.NewEdge.ID = ""
		for _, x := range al.Active {
			if x.Rule == "new-api-clients" && x.State == "firing" && x.Series.Name == front {
				w.NewEdge.ID, w.NewEdge.Series = x.ID, x.Series.Name
			}
		}
		if w.NewEdge.ID == "" {
			missing = append(missing, "new-api-clients firing on "+front)
		}
		w.Forecast.Rule = ""
		for _, x := range fc.Forecasts {
			if x.Rule == "api-traffic" && len(x.Points) >= 2 {
				w.Forecast.Rule, w.Forecast.Metric, w.Forecast.Series = x.Rule, x.Metric, x.Series.Name
			}
		}
		if w.Forecast.Rule == "" {
			missing = append(missing, "two points of api-traffic's forecast on "+front)
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s analysis still lacks %s\nalerts: %s\nforecasts: %s", timeout, strings.Join(missing, ", "), rawAlerts, rawForecasts)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The owners come from mix's catalog: checked here so a wrong catalog is not blamed on the UI.
	f := w.Firing
	if f.ClientOwner != "API team" || f.ServerOwner != "DB team" || f.ClientContact != "api@example.com" || f.ServerContact != "db@example.com" {
		t.Fatalf("analysis names the owners of %s %+v, want API team <api@example.com> and DB team <db@example.com>", f.Series, f)
	}
	if f.EvidenceState != "requested" || f.EvidenceSub == "" {
		t.Fatalf("busy-api's evidence is %q (subscription %q, error %q), want requested: analysis could not ask mix for it", f.EvidenceState, f.EvidenceSub, evidenceErr)
	}
	t.Logf("alerts ready: %+v", w)
	return w
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
