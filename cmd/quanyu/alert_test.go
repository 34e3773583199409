package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// webhookPayload is Alertmanager's webhook payload (version 4), as a receiver decodes it.
type webhookPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []struct {
		Status       string            `json:"status"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt"`
		GeneratorURL string            `json:"generatorURL"`
		Fingerprint  string            `json:"fingerprint"`
	} `json:"alerts"`
}

// webhookRecorder is an owner's alert endpoint: a real HTTP server keeping every delivery.
type webhookRecorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []webhookPayload
	at  []time.Time
}

func newWebhookRecorder(t *testing.T) *webhookRecorder {
	w := &webhookRecorder{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p webhookPayload
		if err := json.Unmarshal(body, &p); err != nil || r.Method != http.MethodPost ||
			r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Owner-Key") != "k1" {
			t.Errorf("webhook got %s %q (%v), headers %v", r.Method, body, err, r.Header)
			http.Error(rw, "bad", http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.got = append(w.got, p)
		w.at = append(w.at, time.Now())
		w.mu.Unlock()
	}))
	t.Cleanup(w.srv.Close)
	return w
}

// find gives the first delivery of an alert of a rule in a status, and when it came.
func (w *webhookRecorder) find(rule, status string) (webhookPayload, int, time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, p := range w.got {
		for j, a := range p.Alerts {
			if a.Labels["alertname"] == rule && a.Status == status {
				return p, j, w.at[i], true
			}
		}
	}
	return webhookPayload{}, 0, time.Time{}, false
}

func (w *webhookRecorder) wait(t *testing.T, rule, status string, timeout time.Duration) (webhookPayload, int, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if p, i, at, ok := w.find(rule, status); ok {
			return p, i, at
		}
		if time.Now().After(deadline) {
			w.mu.Lock()
			raw, _ := json.MarshalIndent(w.got, "", "  ")
			w.mu.Unlock()
			t.Fatalf("no %s alert %q reached the webhook within %s; it got:\n%s", status, rule, timeout, raw)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// trafficLoop is the lab's client: about 20 requests a second to api, on a new connection every
// 10 requests, until stopped.
type trafficLoop struct {
	stop chan struct{}
	done chan struct{}
	sent atomic.Int64
}

func startTraffic(t *testing.T, l *threeTier) *trafficLoop {
	tl := &trafficLoop{stop: make(chan struct{}), done: make(chan struct{})}
	c := &http.Client{Transport: &http.Transport{DialContext: l.dialer(l.client)}, Timeout: 10 * time.Second}
	go func() {
		defer close(tl.done)
		defer c.CloseIdleConnections()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-tl.stop:
				return
			case <-tick.C:
			}
			if i%10 == 0 {
				c.CloseIdleConnections()
			}
			resp, err := c.Get(fmt.Sprintf("http://%s:%d/orders", l.apiIP, l.apiHTTP))
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			tl.sent.Add(1)
		}
	}()
	t.Cleanup(tl.halt)
	return tl
}

func (tl *trafficLoop) halt() {
	select {
	case <-tl.stop:
	default:
		close(tl.stop)
	}
	<-tl.done
}

type alertJSON struct {
	ID       string     `json:"id"`
	Rule     string     `json:"rule"`
	State    string     `json:"state"`
	FiredAt  *time.Time `json:"fired_at"`
	Client   *struct{ Owner, Contact string }
	Server   *struct{ Owner, Contact string }
	Evidence *struct {
		Subscription string    `json:"subscription"`
		Expires      time.Time `json:"expires"`
		State        string    `json:"state"`
		Error        string    `json:"error"`
		CommunityID  string    `json:"community_id"`
		Trace        *struct {
			Items []struct {
				Time  time.Time `json:"time"`
				Kind  string    `json:"kind"`
				Event *struct {
					Subscriptions []string `json:"subscriptions"`
					L3Frame       []byte   `json:"l3_frame"`
				} `json:"event"`
			} `json:"items"`
		} `json:"trace"`
	} `json:"evidence"`
}

// Acceptance (alerts 2, 3 and 4), live on the three-tier lab with an eBPF agent driven by mix:
// api answers half its requests with 500 → the error-ratio rule fires within its "for" plus 15 s
// and the owners' webhook gets Alertmanager's payload naming both owners; the alert carries a flow
// trace captured after it fired by a narrow subscription that then expires by itself; the alert
// resolves when api recovers; db calling api, which it never did, is a new-edge event and the
// new_edge rule's alert reaches the webhook; the client stopping raises the forecast rule's alert.
func TestAlertsLive(t *testing.T) {
	l := newThreeTier(t)
	m := startMixHTTP(t)
	hook := newWebhookRecorder(t)
	dir := t.TempDir()
	apply := func(kind, doc string) {
		t.Helper()
		f := filepath.Join(dir, kind+".json")
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := m.cli(t, opsToken, kind, "apply", "-f", f); err != nil {
			t.Fatalf("%s apply: %v\n%s", kind, err, out)
		}
	}
	apply("catalog", threeTierCatalog)
	apply("receiver", `{"id":"owners","kind":"webhook","url":"`+hook.srv.URL+`/alerts","headers":{"X-Owner-Key":"k1"}}`)
	apply("settings", `{"season":"1m","min_history":"1m"}`)
	const forErrors = 20 * time.Second
	apply("rule", `[
	 {"id":"api-errors","kind":"threshold","metric":"error_ratio","level":"edge","selector":{"server_app":"orders-api"},
	  "op":">","value":0.2,"for":"20s","severity":"critical","annotations":{"runbook":"https://runbooks.example/orders"}},
	 {"id":"shop-traffic","kind":"forecast","metric":"request_rate","level":"edge",
	  "selector":{"client_app":"shop-client","server_app":"orders-api"},"direction":"below","severity":"warning"},
	 {"id":"new-api-clients","kind":"new_edge","selector":{"server_app":"orders-api"},"severity":"info"}]`)
	apply("sub", `{"id":"lab","spec":{"L7":["HTTP"]}}`)

	cfg := filepath.Join(dir, "analysis.yaml")
	if err := writeFile(cfg, "alerts:\n  new_edge_grace: 15s\n  evidence_for: 30s\n"); err != nil {
		t.Fatal(err)
	}
	a := &analysisProc{grpc: freePort(t), otlpHTTP: freePort(t), api: freePort(t), dir: t.TempDir(), mix: m.addr}
	a.cmd = quanyu(t, "analysis", "--config", cfg, "--otlp-grpc", a.grpc, "--otlp-http", a.otlpHTTP,
		"--http-listen", a.api, "--data-dir", a.dir, "--mix", m.addr, "--mix-token", agentToken,
		"--mix-http", m.http, "--mix-admin-token", opsToken)
	a.cmd.Stderr = &a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		_ = a.cmd.Wait()
		if t.Failed() {
			t.Logf("analysis log:\n%s", a.log.String())
		}
	})
	waitUntil(t, 20*time.Second, "analysis to start", func() bool { return strings.Contains(a.log.String(), "analysis running") })

	// The agent watches api's link with eBPF (frames come from the eBPF capture), takes its
	// subscriptions from mix, and sends OTLP to analysis.
	agentCfg := otlpAgentConfig(t, dir, "lab-agent", "ebpf", a.grpc)
	agent := runAgentCmd(t, quanyu(t, "agent", "--config", agentCfg, "--nic", l.apiPort, "--mix", m.addr,
		"--token", agentToken, "--sink", "otlp"), l.apiPort)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", agent.logText())
		}
	})
	began := time.Now()
	traffic := startTraffic(t, l)

	alerts := func() (active, history []alertJSON) {
		var out struct{ Active, History []alertJSON }
		if err := json.Unmarshal(a.get(t, "/api/v1/alerts"), &out); err != nil {
			t.Fatal(err)
		}
		return out.Active, out.History
	}

	// A new edge: after the grace, db calls api, which it never did (the agent on api's link sees
	// every edge of api's).
	waitUntil(t, 30*time.Second, "the new-edge grace to pass", func() bool { return time.Since(began) > 20*time.Second })
	direct := &http.Client{Transport: &http.Transport{DialContext: l.dialer(l.db)}, Timeout: 10 * time.Second}
	for range 3 {
		resp, err := direct.Get(fmt.Sprintf("http://%s:%d/orders", l.apiIP, l.apiHTTP))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	direct.CloseIdleConnections()
	dbCalled := time.Now()

	// Errors: half of api's answers fail from now.
	l.failEvery.Store(2)
	errorsFrom := time.Now()
	p, i, firedAt := hook.wait(t, "api-errors", "firing", forErrors+40*time.Second)
	if took := firedAt.Sub(errorsFrom); took > forErrors+15*time.Second {
		t.Errorf("api-errors reached the webhook %s after the errors began; want within for (%s) + 15 s", took, forErrors)
	}
	t.Logf("api-errors fired %s after the errors began", firedAt.Sub(errorsFrom).Round(time.Second))
	fa := p.Alerts[i]
	if p.Version != "4" || p.Receiver != "owners" || p.Status != "firing" || !strings.HasPrefix(p.ExternalURL, "http://") {
		t.Errorf("payload %+v", p)
	}
	for k, v := range map[string]string{"alertname": "api-errors", "severity": "critical", "client": "shop-client",
		"server": "orders-api", "client_owner": "Web team", "server_owner": "API team"} {
		if fa.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, fa.Labels[k], v, fa.Labels)
		}
	}
	if fa.Annotations["client_contact"] != "web@example.com" || fa.Annotations["server_contact"] != "api@example.com" ||
		fa.Annotations["runbook"] != "https://runbooks.example/orders" || !strings.Contains(fa.Annotations["summary"], "API team") {
		t.Errorf("annotations %v", fa.Annotations)
	}

	// The new edge was also an alert of the new_edge rule, sent to the owners when first seen
	// (within a bucket, the evaluation delay and the grouping).
	np, ni, newAt := hook.wait(t, "new-api-clients", "firing", 5*time.Second)
	if took := newAt.Sub(dbCalled); took > 20*time.Second {
		t.Errorf("new-api-clients reached the webhook %s after db first called api; want within 20 s", took)
	}
	t.Logf("new-api-clients reached the webhook %s after db first called api", newAt.Sub(dbCalled).Round(time.Second))
	if na := np.Alerts[ni]; na.Labels["client"] != "orders-db" || na.Labels["server"] != "orders-api" ||
		na.Labels["client_owner"] != "DB team" || na.Labels["server_owner"] != "API team" ||
		!strings.HasPrefix(na.Annotations["summary"], "new edge orders-db → orders-api: never seen before") {
		t.Errorf("new-edge alert %+v", na)
	}

	// Evidence: a flow trace captured after the alert fired, through the narrow subscription.
	var ev alertJSON
	waitUntil(t, 60*time.Second, "the alert's evidence", func() bool {
		active, _ := alerts()
		for _, x := range active {
			if x.Rule == "api-errors" && x.Evidence != nil && (x.Evidence.State == "captured" || x.Evidence.State == "failed" || x.Evidence.State == "none") {
				ev = x
				return true
			}
		}
		return false
	})
	// The listing leaves traces out; the alert itself carries it.
	if err := json.Unmarshal(a.get(t, "/api/v1/alerts/"+ev.ID), &ev); err != nil {
		t.Fatal(err)
	}
	e := ev.Evidence
	if e.State != "captured" || e.Trace == nil || len(e.Trace.Items) == 0 {
		t.Fatalf("evidence %+v", e)
	}
	framed := false
	for _, it := range e.Trace.Items {
		if it.Kind == "event" && it.Event != nil && len(it.Event.L3Frame) > 0 && !it.Time.Before(*ev.FiredAt) {
			for _, s := range it.Event.Subscriptions {
				framed = framed || s == e.Subscription
			}
		}
	}
	if !framed {
		raw, _ := json.MarshalIndent(e, "", "  ")
		t.Errorf("the trace has no event with frames from the evidence subscription after the alert fired (%v):\n%s", ev.FiredAt, raw)
	}
	// It went to the agents that reported the edge: this host's.
	host, _ := os.Hostname()
	req, _ := http.NewRequest(http.MethodGet, "http://"+m.http+"/api/v1/subscriptions/"+e.Subscription, nil)
	req.Header.Set("Authorization", "Bearer "+viewToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"hosts":["`+host+`"]`) ||
		!strings.Contains(string(body), `"frames":true`) {
		t.Errorf("the evidence subscription in mix: %s %s; want frames, for host %q", resp.Status, body, host)
	}
	// The evidence subscription reached the agent, and is withdrawn by itself when it expires.
	agent.waitLog(t, 1, 20*time.Second, "subscriptions applied", e.Subscription)
	waitUntil(t, time.Until(e.Expires)+20*time.Second, "the evidence subscription to expire", func() bool {
		last := ""
		for _, line := range strings.Split(agent.logText(), "\n") {
			if strings.Contains(line, "subscriptions applied") && strings.Contains(line, "component=agent") {
				last = line
			}
		}
		return strings.Contains(last, "ids=lab") && !strings.Contains(last, "evidence-")
	})

	// Recovery resolves it.
	l.failEvery.Store(0)
	recovered := time.Now()
	_, _, resolvedAt := hook.wait(t, "api-errors", "resolved", 45*time.Second)
	t.Logf("api-errors resolved %s after api recovered", resolvedAt.Sub(recovered).Round(time.Second))

	// No forecast alert so far: the traffic has been steady.
	if _, _, _, ok := hook.find("shop-traffic", "firing"); ok {
		t.Fatalf("the forecast alert fired while traffic was steady")
	}
	// The forecast has learned the steady rate: its band no longer reaches 0. (With a season of
	// a minute it has only a few minutes of history here; a model with more would be there.)
	type fcPoint struct {
		Value, Lower float64
		Ready        bool
	}
	var fc struct {
		Forecasts []struct {
			Rule   string    `json:"rule"`
			Points []fcPoint `json:"points"`
		} `json:"forecasts"`
	}
	forecasts := func() []fcPoint {
		if err := json.Unmarshal(a.get(t, "/api/v1/forecasts?source=app:shop-client&target=app:orders-api"), &fc); err != nil || len(fc.Forecasts) != 1 {
			t.Fatalf("forecasts %+v, %v", fc, err)
		}
		return fc.Forecasts[0].Points
	}
	waitUntil(t, 90*time.Second, "the forecast band to exclude 0", func() bool {
		pts := forecasts()
		last := pts[len(pts)-1]
		return last.Ready && last.Lower > 0
	})
	// The client stops: the forecast rule sees the rate leave its band.
	stopped := time.Now()
	traffic.halt()
	waitUntil(t, 60*time.Second, "the forecast alert after the client stopped", func() bool {
		_, _, _, ok := hook.find("shop-traffic", "firing")
		if !ok && time.Since(stopped) > 59*time.Second {
			t.Logf("forecasts:\n%s", a.get(t, "/api/v1/forecasts?source=app:shop-client&target=app:orders-api"))
		}
		return ok
	})
	p, i, at := hook.wait(t, "shop-traffic", "firing", time.Second)
	t.Logf("shop-traffic fired %s after the client stopped (%d requests sent before)", at.Sub(stopped).Round(time.Second), traffic.sent.Load())
	if fa := p.Alerts[i]; fa.Labels["client_owner"] != "Web team" || fa.Labels["server_owner"] != "API team" || fa.Labels["severity"] != "warning" {
		t.Errorf("forecast alert labels %v", fa.Labels)
	}
	pts := forecasts()
	if len(pts) < 6 {
		t.Fatalf("forecast points %+v", pts)
	}
	last := pts[len(pts)-1]
	if !last.Ready || last.Value != 0 || last.Lower <= 0 {
		t.Errorf("last forecast point %+v", last)
	}

	// The new edge shows as an event.
	var evs struct {
		Events []struct {
			Kind   string `json:"kind"`
			Series struct{ Name string }
		} `json:"events"`
	}
	if err := json.Unmarshal(a.get(t, "/api/v1/events"), &evs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range evs.Events {
		found = found || x.Kind == "new_edge" && x.Series.Name == "orders-db → orders-api"
	}
	if !found {
		t.Errorf("no new-edge event for orders-db → orders-api: %+v", evs)
	}
	_, history := alerts()
	if len(history) == 0 {
		t.Error("the history is empty")
	}
}

// waitUntil polls ok every 200 ms until it holds, or fails the test naming what it waited for.
func waitUntil(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
