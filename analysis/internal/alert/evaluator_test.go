package alert

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/engine"
	"github.com/quanyu/quanyu/analysis/internal/notify"
	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// fakeSource is the engine as the evaluator sees it, holding rows per bucket and level.
type fakeSource struct {
	mu    sync.Mutex
	rows  map[int64]map[store.Level][]store.Rollup
	socks []engine.Socket
	hosts []string
	conv  map[string]engine.Conversation
	hook  func(string, *sdk.Event)
}

func newFakeSource() *fakeSource {
	return &fakeSource{rows: map[int64]map[store.Level][]store.Rollup{}, conv: map[string]engine.Conversation{}}
}

func (f *fakeSource) add(bucket time.Time, l store.Level, k store.RollupKey, fg store.Figures) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.rows[bucket.UnixNano()]
	if m == nil {
		m = map[store.Level][]store.Rollup{}
		f.rows[bucket.UnixNano()] = m
	}
	m[l] = append(m[l], store.Rollup{Bucket: bucket, Key: k, Figures: fg})
}

func (f *fakeSource) Bucket(_ context.Context, start time.Time, l store.Level, fn func(*store.RollupKey, *store.Figures)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rows[start.UnixNano()][l] {
		fn(&r.Key, &r.Figures)
	}
	return nil
}

func (f *fakeSource) EdgeSockets(context.Context, time.Time, time.Time, string, string, int) ([]engine.Socket, error) {
	return f.socks, nil
}

func (f *fakeSource) EdgeHosts(context.Context, netip.Addr, uint16, time.Time) ([]string, error) {
	return f.hosts, nil
}

func (f *fakeSource) Edges(_ context.Context, from, to time.Time, fn func(string, string)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for b, m := range f.rows {
		if b >= from.UnixNano() && b < to.UnixNano() {
			for _, r := range m[store.LevelApp] {
				fn(r.Key.Source, r.Key.Target)
			}
		}
	}
	return nil
}

func (f *fakeSource) Conversation(cid string) (engine.Conversation, error) {
	c, ok := f.conv[cid]
	if !ok {
		return c, engine.ErrNotFound
	}
	return c, nil
}

func (f *fakeSource) SetEventHook(fn func(string, *sdk.Event)) { f.hook = fn }

type sink struct {
	mu     sync.Mutex
	alerts []notify.Alert
}

func (s *sink) Send(a ...notify.Alert) {
	s.mu.Lock()
	s.alerts = append(s.alerts, a...)
	s.mu.Unlock()
}

func (s *sink) take() []notify.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.alerts
	s.alerts = nil
	return out
}

type subscriber struct {
	mu   sync.Mutex
	subs []sdk.Subscription
}

func (s *subscriber) Subscribe(_ context.Context, sub sdk.Subscription) error {
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	return nil
}

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func catalog(t *testing.T) *api.Catalog {
	t.Helper()
	entries, err := api.ParseCatalog([]byte(`[
	 {"app":"web","owner":{"name":"Web team","team":"front","contact":"web@example.com"},"match":[{"cidr":"10.9.0.10/32"}]},
	 {"app":"api","owner":{"name":"API team","team":"back","contact":"api@example.com"},"match":[{"cidr":"10.9.0.20/32"}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewCatalog(entries)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rule(t *testing.T, doc string) api.Rule {
	t.Helper()
	r, err := api.ParseRule([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type harness struct {
	src   *fakeSource
	ev    *Evaluator
	sent  *sink
	subs  *subscriber
	st    store.Store
	clock time.Time
}

func newHarness(t *testing.T, grace time.Duration) *harness {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &harness{src: newFakeSource(), sent: &sink{}, subs: &subscriber{}, st: st, clock: t0}
	h.ev, err = New(context.Background(), Options{Source: h.src, Store: st, Notifier: h.sent, Evidence: h.subs,
		NewEdgeGrace: grace, Now: func() time.Time { return h.clock }, ExternalURL: "http://ui.example"})
	if err != nil {
		t.Fatal(err)
	}
	h.ev.SetCatalog(catalog(t))
	return h
}

// eval evaluates the bucket at t0 + i×10 s, as Run would a few seconds after it ends.
func (h *harness) eval(i int) {
	b := t0.Add(time.Duration(i) * step)
	h.clock = b.Add(step + 3*time.Second)
	h.ev.Evaluate(context.Background(), b)
	h.ev.WaitWarmUps()
}

var webAPI = store.RollupKey{Source: "app:web", Target: "app:api", Transport: sdk.TransportTCP, Port: 8080}

func TestThresholdLifecycle(t *testing.T) {
	h := newHarness(t, time.Hour)
	h.ev.SetRules([]api.Rule{rule(t, `{"id":"api-errors","kind":"threshold","metric":"error_ratio","level":"edge",
		"selector":{"server_app":"api"},"op":">","value":0.2,"for":"30s","severity":"critical",
		"labels":{"page":"yes"},"annotations":{"runbook":"https://runbooks.example/api"}}`)})
	// GIVEN 3 healthy buckets, 5 with half the requests failing, then 3 healthy again
	for i := 0; i < 11; i++ {
		errs := uint64(0)
		if i >= 3 && i < 8 {
			errs = 10
		}
		h.src.add(t0.Add(time.Duration(i)*step), store.LevelApp, webAPI, store.Figures{Requests: 20, Errors: errs})
	}
	states := []string{}
	for i := 0; i < 11; i++ {
		h.eval(i)
		act := h.ev.Active()
		switch len(act) {
		case 0:
			states = append(states, "-")
		case 1:
			states = append(states, act[0].State)
		default:
			t.Fatalf("bucket %d: %d active alerts", i, len(act))
		}
	}
	// THEN pending from the first bad bucket, firing once 30 s of buckets held, resolved after
	want := []string{"-", "-", "-", "pending", "pending", "firing", "firing", "firing", "-", "-", "-"}
	if !slices.Equal(states, want) {
		t.Fatalf("states %v, want %v", states, want)
	}
	sent := h.sent.take()
	if len(sent) != 2 || sent[0].Status != "firing" || sent[1].Status != "resolved" {
		t.Fatalf("sent %+v", sent)
	}
	f := sent[0]
	for k, v := range map[string]string{"alertname": "api-errors", "severity": "critical", "client": "web", "server": "api",
		"client_owner": "Web team", "server_owner": "API team", "client_team": "front", "server_team": "back", "page": "yes"} {
		if f.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, f.Labels[k], v)
		}
	}
	if f.Annotations["client_contact"] != "web@example.com" || f.Annotations["server_contact"] != "api@example.com" ||
		f.Annotations["runbook"] != "https://runbooks.example/api" || !strings.Contains(f.Annotations["summary"], "50.0% > 20.0%") {
		t.Errorf("annotations %v", f.Annotations)
	}
	if !f.StartsAt.Equal(t0.Add(6*step)) || !sent[1].EndsAt.Equal(t0.Add(9*step)) || !strings.HasPrefix(f.GeneratorURL, "http://ui.example/#/alerts/") {
		t.Errorf("startsAt %v endsAt %v url %q", f.StartsAt, sent[1].EndsAt, f.GeneratorURL)
	}
	// The history has the alert once, resolved, with both ends' owners.
	hist, err := h.ev.History(context.Background(), "", time.Time{}, 10)
	if err != nil || len(hist) != 1 {
		t.Fatalf("history %+v, %v", hist, err)
	}
	a := hist[0]
	if a.State != StateResolved || a.Client.Owner != "Web team" || a.Server.Contact != "api@example.com" ||
		a.Value != 0 || *a.Threshold != 0.2 || a.FiredAt == nil || a.ResolvedAt == nil || a.Series.Name != "web → api" {
		t.Errorf("history entry %+v", a)
	}
	got, ok, err := h.ev.Get(context.Background(), a.ID)
	if err != nil || !ok || got.ID != a.ID {
		t.Errorf("Get(%q) = %+v, %v, %v", a.ID, got, ok, err)
	}
	// No socket of the edge is known here (TestEvidence has them), so no subscription could be
	// narrowed to it, and the alert says so rather than widening it.
	if len(h.subs.subs) != 0 || a.Evidence == nil || a.Evidence.State != EvidenceFailed {
		t.Errorf("evidence %+v, subscriptions %+v", a.Evidence, h.subs.subs)
	}
}

func TestSelectorsAndLevels(t *testing.T) {
	cases := []struct {
		name string
		rule string
		want []string // series names that fire
	}{
		{"owner of either end", `"level":"edge","selector":{"owner":"front"}`, []string{"web → api"}},
		{"owner of neither", `"level":"edge","selector":{"owner":"nobody"}`, nil},
		{"cidr of the server app", `"level":"edge","selector":{"cidr":"10.9.0.0/24"}`, []string{"web → api"}},
		{"other cidr", `"level":"edge","selector":{"cidr":"192.168.0.0/16"}`, nil},
		{"port", `"level":"edge","selector":{"port":"8000-8999"}`, []string{"web → api"}},
		{"other port", `"level":"edge","selector":{"port":"9999"}`, nil},
		{"node", `"level":"node"`, []string{"10.1.1.2", "api"}},
		{"method on the edge", `"level":"edge","selector":{"method":"POST"}`, []string{"web → api"}},
		{"endpoint", `"level":"endpoint"`, []string{"api POST /orders"}},
		{"address", `"level":"address","selector":{"transport":"TCP"}`, []string{"10.9.0.20"}},
		{"port level", `"level":"port"`, []string{"TCP/8080"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, time.Hour)
			h.ev.SetRules([]api.Rule{rule(t, `{"id":"r","kind":"threshold","metric":"request_rate","op":">","value":0.5,"severity":"info",`+c.rule+`}`)})
			b := t0
			h.src.add(b, store.LevelApp, webAPI, store.Figures{Requests: 10})
			h.src.add(b, store.LevelApp, store.RollupKey{Source: "ip:10.1.1.1", Target: "ip:10.1.1.2", Transport: sdk.TransportUDP, Port: 53}, store.Figures{Requests: 10})
			h.src.add(b, store.LevelL7, store.RollupKey{Source: "app:web", Target: "app:api", Transport: sdk.TransportTCP, Port: 8080, Protocol: "HTTP", Method: "POST", Path: "/orders"}, store.Figures{Requests: 10})
			h.src.add(b, store.LevelL4, store.RollupKey{Source: "10.9.0.10", Target: "10.9.0.20", Transport: sdk.TransportTCP, Port: 8080}, store.Figures{Requests: 10})
			h.eval(0)
			var got []string
			for _, a := range h.ev.Active() {
				got = append(got, a.Series.Name)
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("firing on %v, want %v", got, c.want)
			}
		})
	}
}

func TestForecastDrop(t *testing.T) {
	h := newHarness(t, time.Hour)
	s := api.DefaultPredictionSettings()
	s.Season, s.MinHistory = time.Minute, time.Minute
	h.ev.SetSettings(s)
	h.ev.SetRules([]api.Rule{rule(t, `{"id":"traffic","kind":"forecast","metric":"request_rate","level":"edge","severity":"warning","direction":"below"}`)})
	// GIVEN 5 minutes of 9 to 11 requests a second, then nothing (the client stopped)
	n := 0
	for i := 0; i < 36; i++ {
		h.src.add(t0.Add(time.Duration(i)*step), store.LevelApp, webAPI, store.Figures{Requests: uint64(90 + (i*7)%21)})
	}
	for i := 0; i < 40; i++ {
		h.eval(i)
		for _, a := range h.ev.Active() {
			if a.State == StateFiring {
				n = i
			}
		}
		if n > 0 {
			break
		}
	}
	// THEN the forecast alert fires within a few buckets of the drop, naming its band
	if n < 36 || n > 38 {
		t.Fatalf("fired at bucket %d, want 36 to 38", n)
	}
	a := h.ev.Active()[0]
	if a.Band == nil || a.Band.Lower <= 0 || a.Value != 0 || a.Kind != api.KindForecast {
		t.Errorf("alert %+v band %+v", a, a.Band)
	}
	fc := h.ev.Forecasts("app:web", "app:api")
	if len(fc) != 1 || len(fc[0].Points) == 0 || fc[0].StepMs != 10000 {
		t.Fatalf("forecasts %+v", fc)
	}
	last := fc[0].Points[len(fc[0].Points)-1]
	if last.Value != 0 || !last.Ready || last.Lower <= 0 {
		t.Errorf("last forecast point %+v", last)
	}
}

// A forecast rule learns the history the source still holds before its first evaluation, so a
// restarted analysis (or a new rule) alerts on a drop at once instead of after min_history.
func TestForecastWarmUp(t *testing.T) {
	h := newHarness(t, time.Hour)
	s := api.DefaultPredictionSettings()
	s.Season, s.MinHistory = time.Minute, 5*time.Minute
	h.ev.SetSettings(s)
	// GIVEN 6 minutes of history before the first evaluation, 9 to 11 requests a second, with a
	// minute in it when analysis received nothing at all (it was down)
	gap := func(i int) bool { return i >= -24 && i < -18 }
	for i := -36; i <= 0; i++ {
		if !gap(i) {
			h.src.add(t0.Add(time.Duration(i)*step), store.LevelApp, webAPI, store.Figures{Requests: uint64(90 + ((i+36)*7)%21)})
		}
	}
	h.ev.SetRules([]api.Rule{rule(t, `{"id":"traffic","kind":"forecast","metric":"request_rate","level":"edge","severity":"warning","direction":"below"}`)})
	// WHEN the rule is first evaluated, and the client stops right after
	fired := -1
	for i := 0; i < 5 && fired < 0; i++ {
		h.eval(i)
		for _, a := range h.ev.Active() {
			if a.State == StateFiring {
				fired = i
			}
		}
	}
	// THEN the alert fires two buckets into the drop, the history counting towards min_history
	if fired != 2 {
		t.Fatalf("fired at bucket %d, want 2 (without the history the forecast would not be ready for 5 minutes)", fired)
	}
	if n := h.ev.Counters()["forecast_warm_ups"]; n != 1 {
		t.Errorf("%d warm-ups counted, want 1", n)
	}
	// AND the chart shows the history, without the buckets of the gap, which were not learned
	fc := h.ev.Forecasts("app:web", "app:api")
	if len(fc) != 1 || len(fc[0].Points) < 25 {
		t.Fatalf("forecasts %+v, want the history's points", fc)
	}
	for _, p := range fc[0].Points {
		i := int(time.UnixMilli(p.T).Sub(t0) / step)
		if gap(i) {
			t.Errorf("a forecast point at bucket %d, in the gap: %+v", i, p)
		}
	}
}

func TestNewEdgeEvents(t *testing.T) {
	h := newHarness(t, 30*time.Second)
	// An edge seen within the grace is known, not new; one seen after it is an event, once.
	h.src.add(t0, store.LevelApp, webAPI, store.Figures{Flows: 1})
	other := store.RollupKey{Source: "app:web", Target: "ip:10.9.0.99", Transport: sdk.TransportTCP, Port: 5432}
	h.src.add(t0.Add(5*step), store.LevelApp, other, store.Figures{Flows: 1})
	h.src.add(t0.Add(6*step), store.LevelApp, other, store.Figures{Flows: 1})
	h.src.add(t0.Add(6*step), store.LevelApp, webAPI, store.Figures{Flows: 1})
	for i := 0; i < 7; i++ {
		h.eval(i)
	}
	evs, err := h.ev.Events(context.Background(), time.Time{}, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("events %+v, %v", evs, err)
	}
	e := evs[0]
	if e.Kind != EventNewEdge || e.Series.Name != "web → 10.9.0.99" || !e.Time.Equal(t0.Add(5*step)) || e.Client.Owner != "Web team" {
		t.Errorf("event %+v", e)
	}
	// A restart reads the known edges back: nothing is new again.
	h2 := &harness{src: h.src, sent: &sink{}, st: h.st, clock: t0.Add(time.Hour)}
	ev2, err := New(context.Background(), Options{Source: h.src, Store: h.st, NewEdgeGrace: -1, Now: func() time.Time { return h2.clock }})
	if err != nil {
		t.Fatal(err)
	}
	ev2.Evaluate(context.Background(), t0.Add(6*step))
	if c := ev2.Counters()["events"]; c != 0 {
		t.Errorf("%d events after a restart", c)
	}
}

// A new_edge rule: a new edge it selects fires an alert at once, naming both ends and their
// owners, which resolves by itself after api.NewEdgeHold; a new edge it does not select is
// only an event, and an edge seen within the grace is neither.
func TestNewEdgeRule(t *testing.T) {
	h := newHarness(t, 30*time.Second)
	h.ev.SetRules([]api.Rule{rule(t, `{"id":"new-db-clients","kind":"new_edge","selector":{"port":"5432","transport":"TCP"},"severity":"warning","labels":{"page":"db"}}`)})
	h.src.add(t0, store.LevelApp, webAPI, store.Figures{Flows: 1})
	db := store.RollupKey{Source: "app:web", Target: "ip:10.9.0.99", Transport: sdk.TransportTCP, Port: 5432}
	other := store.RollupKey{Source: "app:api", Target: "ip:10.9.0.98", Transport: sdk.TransportTCP, Port: 443}
	h.src.add(t0.Add(5*step), store.LevelApp, db, store.Figures{Flows: 1})
	h.src.add(t0.Add(5*step), store.LevelApp, other, store.Figures{Flows: 1})
	h.src.add(t0.Add(6*step), store.LevelApp, db, store.Figures{Flows: 1})
	for i := 0; i <= 5; i++ {
		h.eval(i)
	}
	sent := h.sent.take()
	if len(sent) != 1 || sent[0].Status != StateFiring {
		t.Fatalf("sent %+v, want one firing alert", sent)
	}
	a := sent[0]
	for k, v := range map[string]string{"alertname": "new-db-clients", "severity": "warning", "client": "web",
		"client_owner": "Web team", "series": "web → 10.9.0.99", "page": "db"} {
		if a.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, a.Labels[k], v, a.Labels)
		}
	}
	if _, ok := a.Labels["metric"]; ok {
		t.Errorf("a metric label on a new-edge alert: %v", a.Labels)
	}
	if got := a.Annotations["summary"]; !strings.HasPrefix(got, "new edge web → 10.9.0.99: never seen before") || !strings.Contains(got, "Web team") {
		t.Errorf("summary %q", got)
	}
	if evs, _ := h.ev.Events(context.Background(), time.Time{}, 10); len(evs) != 2 {
		t.Errorf("%d events, want 2 (both new edges): %+v", len(evs), evs)
	}
	active := h.ev.Active()
	if len(active) != 1 || active[0].Kind != api.KindNewEdge || active[0].State != StateFiring {
		t.Fatalf("active %+v", active)
	}
	// Still firing until the hold is over, then resolved, once.
	last := 5 + int(api.NewEdgeHold/step)
	for i := 6; i < last; i++ {
		h.eval(i)
	}
	if sent := h.sent.take(); len(sent) != 0 || len(h.ev.Active()) != 1 {
		t.Fatalf("before the hold is over: sent %+v, active %+v", sent, h.ev.Active())
	}
	h.eval(last)
	if sent := h.sent.take(); len(sent) != 1 || sent[0].Status != StateResolved || sent[0].Fingerprint != a.Fingerprint {
		t.Fatalf("at the hold's end: sent %+v, want the alert resolved", sent)
	}
	if len(h.ev.Active()) != 0 || h.ev.Counters()["series"] != 0 {
		t.Errorf("after the hold: active %+v, counters %v", h.ev.Active(), h.ev.Counters())
	}
}

// A new-edge alert read back after a restart goes on firing until its hold is over, rather than
// being resolved as a series that never came back.
func TestNewEdgeAlertSurvivesRestart(t *testing.T) {
	h := newHarness(t, 30*time.Second)
	r := rule(t, `{"id":"new-db-clients","kind":"new_edge","selector":{"port":"5432"},"severity":"warning"}`)
	h.ev.SetRules([]api.Rule{r})
	h.src.add(t0.Add(5*step), store.LevelApp, store.RollupKey{Source: "app:web", Target: "ip:10.9.0.99", Transport: sdk.TransportTCP, Port: 5432}, store.Figures{Flows: 1})
	for i := 0; i <= 5; i++ {
		h.eval(i)
	}
	if a := h.ev.Active(); len(a) != 1 {
		t.Fatalf("before the restart: %+v", a)
	}
	sent := &sink{}
	clock := t0.Add(6 * step)
	ev2, err := New(context.Background(), Options{Source: h.src, Store: h.st, Notifier: sent, NewEdgeGrace: -1, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	ev2.SetRules([]api.Rule{r})
	last := 5 + int(api.NewEdgeHold/step)
	for i := 6; i < last; i++ {
		clock = t0.Add(time.Duration(i+1) * step)
		ev2.Evaluate(context.Background(), t0.Add(time.Duration(i)*step))
	}
	if got := sent.take(); len(got) != 0 || len(ev2.Active()) != 1 {
		t.Fatalf("before the hold is over: sent %+v, active %+v", got, ev2.Active())
	}
	ev2.Evaluate(context.Background(), t0.Add(time.Duration(last)*step))
	if got := sent.take(); len(got) != 1 || got[0].Status != StateResolved || got[0].Annotations["resolved_because"] != "" {
		t.Fatalf("at the hold's end: sent %+v, want it resolved by its hold", got)
	}
}

// An analysis started inside a bucket: an edge first seen after the grace, in the bucket that
// straddles the grace's end, is new; one whose bucket ended within the grace is not.
func TestNewEdgeGraceOffBoundary(t *testing.T) {
	h := newHarness(t, 30*time.Second)
	start := t0.Add(5 * time.Second)
	ev, err := New(context.Background(), Options{Source: h.src, Store: h.st, NewEdgeGrace: 30 * time.Second,
		Now: func() time.Time { return start }})
	if err != nil {
		t.Fatal(err)
	}
	early := store.RollupKey{Source: "app:web", Target: "ip:10.9.0.98", Transport: sdk.TransportTCP, Port: 5432}
	late := store.RollupKey{Source: "app:web", Target: "ip:10.9.0.99", Transport: sdk.TransportTCP, Port: 5432}
	h.src.add(t0.Add(2*step), store.LevelApp, early, store.Figures{Flows: 1}) // ends at start + 25 s
	h.src.add(t0.Add(3*step), store.LevelApp, late, store.Figures{Flows: 1})  // ends at start + 35 s
	for i := 0; i < 5; i++ {
		ev.Evaluate(context.Background(), t0.Add(time.Duration(i)*step))
	}
	evs, err := ev.Events(context.Background(), time.Time{}, 10)
	if err != nil || len(evs) != 1 || !strings.HasSuffix(evs[0].Series.Name, "10.9.0.99") {
		t.Fatalf("events %+v, %v; want one, for the edge to 10.9.0.99", evs, err)
	}
}

func TestEvidence(t *testing.T) {
	h := newHarness(t, time.Hour)
	h.src.socks = []engine.Socket{{Client: netip.MustParseAddr("10.9.0.10"), Server: netip.MustParseAddr("10.9.0.20"), Transport: sdk.TransportTCP, Port: 8080}}
	h.src.hosts = []string{"node-7"}
	h.ev.SetRules([]api.Rule{rule(t, `{"id":"busy","kind":"threshold","metric":"request_rate","level":"edge","op":">","value":1,"severity":"info"}`)})
	for i := 0; i < 4; i++ {
		h.src.add(t0.Add(time.Duration(i)*step), store.LevelApp, webAPI, store.Figures{Requests: 100})
	}
	h.eval(0)
	a := h.ev.Active()[0]
	if a.State != StateFiring || a.Evidence == nil || a.Evidence.State != EvidenceRequested {
		t.Fatalf("alert %+v", a)
	}
	// The subscription asked of mix is the edge's server socket with frames, expiring, for the
	// agents that reported the edge.
	waitFor(t, func() bool { h.subs.mu.Lock(); defer h.subs.mu.Unlock(); return len(h.subs.subs) == 1 })
	sub := h.subs.subs[0]
	if sub.ID != a.Evidence.Subscription || !sub.Options.Frames || sub.Expires.IsZero() ||
		!slices.Equal(sub.Spec.L3, []netip.Addr{netip.MustParseAddr("10.9.0.20")}) || !slices.Equal(sub.Spec.L4, []uint16{8080}) ||
		!slices.Equal(sub.Spec.L4Class, []sdk.Transport{sdk.TransportTCP}) || !slices.Equal(sub.Selector.Hosts, []string{"node-7"}) {
		t.Fatalf("subscription %+v", sub)
	}
	if err := sub.Validate(); err != nil {
		t.Errorf("the evidence subscription does not validate: %v", err)
	}
	// An event from before the alert fired is not evidence, nor one without frames; one after
	// it with frames is.
	frame := []byte{0x45, 0, 0, 40}
	h.src.hook("agent-1", &sdk.Event{CommunityID: "1:old", Time: t0, Subscriptions: []string{sub.ID}, L3Frame: frame})
	h.src.hook("agent-1", &sdk.Event{CommunityID: "1:noframe", Time: h.clock, Subscriptions: []string{sub.ID}})
	h.src.hook("agent-1", &sdk.Event{CommunityID: "1:new", Time: h.clock, Subscriptions: []string{"other", sub.ID}, L3Frame: frame})
	h.src.conv["1:new"] = engine.Conversation{CommunityID: "1:new", Items: []engine.TraceItem{{Kind: "event"}}}
	h.eval(1)
	// Listings leave the trace out; the alert itself has it.
	if l := h.ev.Active()[0]; l.Evidence.State != EvidenceCaptured || l.Evidence.Trace != nil {
		t.Fatalf("listed evidence %+v", l.Evidence)
	}
	a, _, _ = h.ev.Get(context.Background(), a.ID)
	if a.Evidence.State != EvidenceCaptured || a.Evidence.CommunityID != "1:new" || a.Evidence.Agent != "agent-1" ||
		a.Evidence.Trace == nil || len(a.Evidence.Trace.Items) != 1 {
		t.Fatalf("evidence %+v", a.Evidence)
	}
	// The history has it too.
	got, _, _ := h.ev.Get(context.Background(), a.ID)
	if got.Evidence == nil || got.Evidence.State != EvidenceCaptured {
		t.Errorf("stored evidence %+v", got.Evidence)
	}
}

func TestRuleRemovedResolves(t *testing.T) {
	h := newHarness(t, time.Hour)
	h.ev.SetRules([]api.Rule{rule(t, `{"id":"busy","kind":"threshold","metric":"request_rate","level":"edge","op":">","value":1,"severity":"info"}`)})
	h.src.add(t0, store.LevelApp, webAPI, store.Figures{Requests: 100})
	h.eval(0)
	h.ev.SetRules(nil)
	sent := h.sent.take()
	if len(sent) != 2 || sent[1].Status != "resolved" || len(h.ev.Active()) != 0 {
		t.Fatalf("sent %+v", sent)
	}
	if c := h.ev.Counters(); c["series"] != 0 || c["rules"] != 0 {
		t.Errorf("counters %v", c)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if ok() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("timed out")
}

// An alert firing when analysis stops is firing again after the restart, the same alert: it is
// said again to the receivers once its series is back, and resolves as any other.
func TestRestartKeepsFiringAlerts(t *testing.T) {
	h := newHarness(t, time.Hour)
	busy := rule(t, `{"id":"busy","kind":"threshold","metric":"request_rate","level":"edge","op":">","value":1,"severity":"info"}`)
	h.ev.SetRules([]api.Rule{busy})
	for i := 0; i < 3; i++ {
		h.src.add(t0.Add(time.Duration(i)*step), store.LevelApp, webAPI, store.Figures{Requests: 100})
	}
	h.eval(0)
	before := h.ev.Active()
	if len(before) != 1 || before[0].State != StateFiring {
		t.Fatalf("before the restart: %+v", before)
	}
	// GIVEN a new evaluator on the same store, with the same rule
	sent := &sink{}
	ev2, err := New(context.Background(), Options{Source: h.src, Store: h.st, Notifier: sent, NewEdgeGrace: -1,
		Now: func() time.Time { return h.clock }})
	if err != nil {
		t.Fatal(err)
	}
	ev2.SetRules([]api.Rule{busy})
	if a := ev2.Active(); len(a) != 1 || a[0].ID != before[0].ID {
		t.Fatalf("restored: %+v", a)
	}
	// WHEN its series is back and still over the threshold, then quiet
	ev2.Evaluate(context.Background(), t0.Add(step))
	got := sent.take()
	if len(got) != 1 || got[0].Status != "firing" || got[0].Labels["alertname"] != "busy" {
		t.Fatalf("after the restart, sent %+v", got)
	}
	if a := ev2.Active(); len(a) != 1 || a[0].ID != before[0].ID || a[0].State != StateFiring {
		t.Fatalf("after the restart: %+v", a)
	}
	ev2.Evaluate(context.Background(), t0.Add(5*step))
	// THEN it resolves, once
	if got := sent.take(); len(got) != 1 || got[0].Status != "resolved" {
		t.Fatalf("sent %+v", got)
	}
	hist, _ := ev2.History(context.Background(), "", time.Time{}, 10)
	if len(hist) != 1 || hist[0].ID != before[0].ID || hist[0].State != StateResolved {
		t.Errorf("history %+v", hist)
	}
}

// The warm-up through the real engine and SQLite store: history older than what the engine
// keeps in memory is read back from the store, and the restarted evaluator alerts on a drop at
// once.
func TestForecastWarmUpFromStore(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// GIVEN 20 minutes of stored rollups of web → api, 9 to 11 requests a second, ending at t0
	var rows []store.Rollup
	for i := -120; i < 0; i++ {
		k := webAPI
		k.Level = store.LevelApp
		rows = append(rows, store.Rollup{Bucket: t0.Add(time.Duration(i) * step), Key: k,
			Figures: store.Figures{Flows: 1, Requests: uint64(90 + ((i+120)*7)%21)}})
	}
	if err := st.WriteRollups(ctx, store.Res10s, rows); err != nil {
		t.Fatal(err)
	}
	// WHEN analysis starts at t0 with a forecast rule (a season of 5 minutes, 10 of history)
	clock := t0.Add(3 * time.Second)
	eng, err := engine.New(ctx, engine.Options{Store: st, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ev, err := New(ctx, Options{Source: eng, Store: st, NewEdgeGrace: -1, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	s := api.DefaultPredictionSettings()
	s.Season, s.MinHistory = 5*time.Minute, 10*time.Minute
	ev.SetSettings(s)
	ev.SetRules([]api.Rule{rule(t, `{"id":"traffic","kind":"forecast","metric":"request_rate","level":"edge","severity":"warning","direction":"below"}`)})
	// AND the client has stopped: the buckets from t0 on are empty
	fired := -1
	for i := 0; i < 5 && fired < 0; i++ {
		b := t0.Add(time.Duration(i) * step)
		clock = b.Add(step + 3*time.Second)
		ev.Evaluate(ctx, b)
		ev.WaitWarmUps()
		for _, a := range ev.Active() {
			if a.State == StateFiring {
				fired = i
			}
		}
	}
	// THEN the forecast, learned from the 15 minutes of history the warm-up reads, is ready,
	// and alerts two buckets into the drop
	if fired != 2 {
		t.Fatalf("fired at bucket %d, want 2; forecasts %+v", fired, ev.Forecasts("app:web", "app:api"))
	}
	fc := ev.Forecasts("app:web", "app:api")
	if len(fc) != 1 || len(fc[0].Points) < 80 {
		t.Fatalf("forecasts %+v, want the history's points", fc)
	}
	if oldest := time.UnixMilli(fc[0].Points[0].T); oldest.After(t0.Add(-10 * time.Minute)) {
		t.Errorf("the oldest point charted is at %s: the history past the engine's memory was not read", oldest)
	}
}
