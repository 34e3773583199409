package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

// The tests deliver to real HTTP servers (httptest listens on loopback sockets) and use the
// real clock with short waits; Options.Now is fixed where a payload's timestamps are checked.

// hit is one request a test server received.
type hit struct {
	method, path string
	header       http.Header
	body         []byte
	at           time.Time
}

// recorder is a receiver: it records requests, answers with the status answer gives for the
// n-th request (from 1), and holds requests while held.
type recorder struct {
	srv    *httptest.Server
	answer func(n int) (status int, body string)

	mu      sync.Mutex
	hits    []hit
	gate    chan struct{} // non-nil while held; closed to release
	entered chan struct{} // one token per request that reached the handler
	stop    chan struct{}
}

func newRecorder(t *testing.T, answer func(n int) (int, string)) *recorder {
	t.Helper()
	if answer == nil {
		answer = func(int) (int, string) { return http.StatusOK, "" }
	}
	rc := &recorder{answer: answer, entered: make(chan struct{}, 1000), stop: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		close(rc.stop)
		rc.srv.Close()
	})
	return rc
}

func (rc *recorder) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	gate := rc.gate
	rc.mu.Unlock()
	rc.entered <- struct{}{}
	if gate != nil {
		select {
		case <-gate:
		case <-rc.stop:
		case <-r.Context().Done():
			return // the sender gave up; not a request that was answered
		}
	}
	rc.mu.Lock()
	rc.hits = append(rc.hits, hit{r.Method, r.URL.Path, r.Header.Clone(), body, time.Now()})
	n := len(rc.hits)
	rc.mu.Unlock()
	status, text := rc.answer(n)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, text)
}

// hold makes requests wait until release. Tokens of requests that entered earlier are
// discarded, so that waitEntered waits for a request made from now on.
func (rc *recorder) hold() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.gate = make(chan struct{})
	for len(rc.entered) > 0 {
		<-rc.entered
	}
}

func (rc *recorder) release() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.gate != nil {
		close(rc.gate)
		rc.gate = nil
	}
}

// waitEntered waits for a request to reach the handler.
func (rc *recorder) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-rc.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the receiver")
	}
}

func (rc *recorder) Hits() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.hits)
}

// waitHits waits until the receiver has answered n requests and gives them.
func (rc *recorder) waitHits(t *testing.T, n int) []hit {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d requests", n), func() bool { return len(rc.Hits()) >= n })
	return rc.Hits()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logBuffer collects the notifier's log; it is printed when a test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newNotifier makes a notifier with short waits, closed at the end of the test.
func newNotifier(t *testing.T, o Options, rs ...api.Receiver) (*Notifier, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.GroupWait == 0 {
		o.GroupWait = 20 * time.Millisecond
	}
	if o.Backoff == 0 {
		o.Backoff, o.MaxBackoff = time.Millisecond, 4*time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	n := New(o)
	n.SetReceivers(rs)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			t.Logf("notifier log:\n%s", logs)
		}
	})
	return n, logs
}

func webhook(id, url string) api.Receiver {
	return api.Receiver{ID: id, Kind: api.ReceiverWebhook, URL: url, SendResolved: true}
}

func firing(fp string, labels ...string) Alert {
	a := Alert{Fingerprint: fp, Status: StatusFiring, Labels: map[string]string{"alertname": fp}}
	for i := 0; i+1 < len(labels); i += 2 {
		a.Labels[labels[i]] = labels[i+1]
	}
	return a
}

func resolved(fp string, labels ...string) Alert {
	a := firing(fp, labels...)
	a.Status = StatusResolved
	return a
}

// checkCounters compares the named counters only. A receiver's answer reaches the test server
// a moment before the notifier counts it, so the counters are given a while to get there.
func checkCounters(t *testing.T, n *Notifier, want map[string]uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := n.Counters()
		var wrong []string
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if got[k] != want[k] {
				wrong = append(wrong, fmt.Sprintf("%s = %d, want %d", k, got[k], want[k]))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("counters: %s", strings.Join(wrong, "; "))
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Mirrors of Alertmanager's notify/webhook.Message and template.Data and template.Alert, as
// written in prometheus/alertmanager, to decode what the notifier sends.
type amMessage struct {
	*amData
	Version         string `json:"version"`
	GroupKey        string `json:"groupKey"`
	TruncatedAlerts uint64 `json:"truncatedAlerts"`
}

type amKV map[string]string

type amData struct {
	Receiver          string    `json:"receiver"`
	Status            string    `json:"status"`
	Alerts            []amAlert `json:"alerts"`
	GroupLabels       amKV      `json:"groupLabels"`
	CommonLabels      amKV      `json:"commonLabels"`
	CommonAnnotations amKV      `json:"commonAnnotations"`
	ExternalURL       string    `json:"externalURL"`
}

type amAlert struct {
	Status       string    `json:"status"`
	Labels       amKV      `json:"labels"`
	Annotations  amKV      `json:"annotations"`
	StartsAt     time.Time `json:"startsAt"`
	EndsAt       time.Time `json:"endsAt"`
	GeneratorURL string    `json:"generatorURL"`
	Fingerprint  string    `json:"fingerprint"`
}

// Key sets of Alertmanager's webhook payload and of one of its alerts.
var (
	webhookKeys = []string{"alerts", "commonAnnotations", "commonLabels", "externalURL", "groupKey",
		"groupLabels", "receiver", "status", "truncatedAlerts", "version"}
	webhookAlertKeys = []string{"annotations", "endsAt", "fingerprint", "generatorURL", "labels",
		"startsAt", "status"}
)

// decodeWebhook decodes a payload strictly: a field Alertmanager does not write fails, and so
// does one it writes that is missing or null.
func decodeWebhook(t *testing.T, body []byte) amMessage {
	t.Helper()
	m := amMessage{amData: &amData{}}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding webhook payload: %v\n%s", err, body)
	}
	var raw struct {
		Alerts []map[string]json.RawMessage `json:"alerts"`
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	checkKeys(t, "payload", top, webhookKeys)
	for i, a := range raw.Alerts {
		checkKeys(t, fmt.Sprintf("alerts[%d]", i), a, webhookAlertKeys)
	}
	return m
}

func checkKeys(t *testing.T, what string, m map[string]json.RawMessage, want []string) {
	t.Helper()
	if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
	for k, v := range m {
		if string(v) == "null" {
			t.Errorf("%s.%s is null; Alertmanager writes an empty value", what, k)
		}
	}
}

// GIVEN a webhook receiver with headers, WHEN two alerts of one rule are sent, THEN one request
// carries Alertmanager's webhook payload, version 4, with every field as Alertmanager fills it.
func TestWebhookPayload(t *testing.T) {
	rc := newRecorder(t, nil)
	rcv := webhook("ops", rc.srv.URL+"/hook")
	rcv.Headers = map[string]string{"Authorization": "Bearer s3cret", "X-Team": "net"}
	n, _ := newNotifier(t, Options{ExternalURL: "https://analysis.example.com/ui"}, rcv)

	t0 := time.Date(2025, 3, 1, 10, 0, 0, 250_000_000, time.UTC)
	a1 := Alert{
		Fingerprint: "0f1e2d3c4b5a6978", Status: StatusFiring,
		Labels: map[string]string{"alertname": "HighErrorRate", "severity": "critical",
			"src_app": "web", "dst_app": "db"},
		Annotations:  map[string]string{"summary": "errors above 5%", "runbook": "r1", "description": ""},
		StartsAt:     t0,
		GeneratorURL: "https://analysis.example.com/ui/graph?edge=web-db",
	}
	a2 := Alert{
		Fingerprint: "1122334455667788", Status: StatusResolved,
		Labels: map[string]string{"alertname": "HighErrorRate", "severity": "critical",
			"src_app": "api", "dst_app": "db", "dst_owner": ""}, // an empty value is no label
		Annotations: map[string]string{"summary": "errors above 5%", "runbook": "r2"},
		StartsAt:    t0.Add(-time.Hour),
		EndsAt:      t0.Add(-time.Minute),
	}
	n.Send(a1, a2)
	a1.Labels["src_app"] = "changed after Send" // Send copies, so this is not delivered

	h := rc.waitHits(t, 1)[0]
	if h.method != http.MethodPost || h.path != "/hook" {
		t.Errorf("request %s %s, want POST /hook", h.method, h.path)
	}
	for k, want := range map[string]string{"Authorization": "Bearer s3cret", "X-Team": "net",
		"Content-Type": "application/json", "User-Agent": "quanyu-analysis"} {
		if got := h.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}

	m := decodeWebhook(t, h.body)
	if m.Version != "4" || m.GroupKey != `{}/{receiver="ops"}:{}` || m.TruncatedAlerts != 0 {
		t.Errorf("version %q, groupKey %q, truncatedAlerts %d", m.Version, m.GroupKey, m.TruncatedAlerts)
	}
	if m.Receiver != "ops" || m.Status != "firing" || m.ExternalURL != "https://analysis.example.com/ui" {
		t.Errorf("receiver %q, status %q, externalURL %q", m.Receiver, m.Status, m.ExternalURL)
	}
	if len(m.GroupLabels) != 0 {
		t.Errorf("groupLabels = %v, want {}", m.GroupLabels)
	}
	if want := (amKV{"alertname": "HighErrorRate", "severity": "critical", "dst_app": "db"}); !reflect.DeepEqual(m.CommonLabels, want) {
		t.Errorf("commonLabels = %v, want %v", m.CommonLabels, want)
	}
	if want := (amKV{"summary": "errors above 5%"}); !reflect.DeepEqual(m.CommonAnnotations, want) {
		t.Errorf("commonAnnotations = %v, want %v", m.CommonAnnotations, want)
	}
	want := []amAlert{
		{Status: "firing", Labels: amKV{"alertname": "HighErrorRate", "severity": "critical", "src_app": "web", "dst_app": "db"},
			Annotations: amKV{"summary": "errors above 5%", "runbook": "r1"}, StartsAt: t0,
			GeneratorURL: "https://analysis.example.com/ui/graph?edge=web-db", Fingerprint: "0f1e2d3c4b5a6978"},
		{Status: "resolved", Labels: amKV{"alertname": "HighErrorRate", "severity": "critical", "src_app": "api", "dst_app": "db"},
			Annotations: amKV{"summary": "errors above 5%", "runbook": "r2"}, StartsAt: t0.Add(-time.Hour),
			EndsAt: t0.Add(-time.Minute), Fingerprint: "1122334455667788"},
	}
	if !reflect.DeepEqual(m.Alerts, want) {
		t.Errorf("alerts:\n got %+v\nwant %+v", m.Alerts, want)
	}
	// The times as written: RFC 3339, UTC, and a firing alert's end as Alertmanager writes it.
	for _, s := range []string{`"startsAt":"2025-03-01T10:00:00.25Z"`, `"endsAt":"0001-01-01T00:00:00Z"`,
		`"endsAt":"2025-03-01T09:59:00.25Z"`} {
		if !bytes.Contains(h.body, []byte(s)) {
			t.Errorf("payload lacks %s:\n%s", s, h.body)
		}
	}
	checkCounters(t, n, map[string]uint64{"sent": 2, "delivered": 2, "requests": 1, "retried": 0,
		"failed": 0, "receiver.ops.delivered": 2})
}

// GIVEN a GroupWait, WHEN alerts arrive within it, THEN they travel in one request sent when
// GroupWait has passed since the first; an alert after that goes in a request of its own.
func TestWebhookGroupsWithinGroupWait(t *testing.T) {
	rc := newRecorder(t, nil)
	const groupWait = 300 * time.Millisecond
	n, _ := newNotifier(t, Options{GroupWait: groupWait}, webhook("ops", rc.srv.URL))

	start := time.Now()
	for _, fp := range []string{"a", "b", "c"} {
		n.Send(firing(fp))
		time.Sleep(groupWait / 5)
	}
	h := rc.waitHits(t, 1)[0]
	if d := h.at.Sub(start); d < groupWait-10*time.Millisecond {
		t.Errorf("request %v after the first alert, before GroupWait %v", d, groupWait)
	}
	if got := fingerprints(decodeWebhook(t, h.body)); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("first request has %v, want [a b c]", got)
	}
	time.Sleep(2 * groupWait)
	if len(rc.Hits()) != 1 {
		t.Fatalf("%d requests, want 1", len(rc.Hits()))
	}
	n.Send(firing("d"))
	if got := fingerprints(decodeWebhook(t, rc.waitHits(t, 2)[1].body)); !slices.Equal(got, []string{"d"}) {
		t.Errorf("second request has %v, want [d]", got)
	}
	checkCounters(t, n, map[string]uint64{"sent": 4, "delivered": 4, "requests": 2})
}

func fingerprints(m amMessage) []string {
	var out []string
	for _, a := range m.Alerts {
		out = append(out, a.Fingerprint)
	}
	return out
}

// WHEN a series fires and resolves within one GroupWait, THEN it is delivered once, resolved.
func TestLaterStateSupersedes(t *testing.T) {
	rc := newRecorder(t, nil)
	n, _ := newNotifier(t, Options{GroupWait: 200 * time.Millisecond}, webhook("ops", rc.srv.URL))
	n.Send(firing("x"), firing("y"))
	n.Send(resolved("x"))
	m := decodeWebhook(t, rc.waitHits(t, 1)[0].body)
	if len(m.Alerts) != 2 || m.Alerts[0].Fingerprint != "y" || m.Alerts[1].Fingerprint != "x" ||
		m.Alerts[1].Status != "resolved" {
		t.Errorf("alerts %+v, want y firing then x resolved", m.Alerts)
	}
	checkCounters(t, n, map[string]uint64{"sent": 3, "superseded": 1, "delivered": 2})
}

// GIVEN two webhooks, one without send_resolved, WHEN firing and resolved alerts are sent,
// THEN that one gets only the firing ones, and no request when only resolved ones come.
func TestSendResolvedFalse(t *testing.T) {
	quiet, loud := newRecorder(t, nil), newRecorder(t, nil)
	q := webhook("quiet", quiet.srv.URL)
	q.SendResolved = false
	n, _ := newNotifier(t, Options{}, q, webhook("loud", loud.srv.URL))

	n.Send(firing("f1"), resolved("r1"))
	if got := fingerprints(decodeWebhook(t, quiet.waitHits(t, 1)[0].body)); !slices.Equal(got, []string{"f1"}) {
		t.Errorf("quiet got %v, want [f1]", got)
	}
	if got := fingerprints(decodeWebhook(t, loud.waitHits(t, 1)[0].body)); !slices.Equal(got, []string{"f1", "r1"}) {
		t.Errorf("loud got %v, want [f1 r1]", got)
	}
	n.Send(resolved("r2"))
	loud.waitHits(t, 2)
	time.Sleep(100 * time.Millisecond) // five GroupWaits
	if len(quiet.Hits()) != 1 {
		t.Errorf("quiet got %d requests, want 1", len(quiet.Hits()))
	}
	checkCounters(t, n, map[string]uint64{"skipped.resolved": 2, "delivered": 4,
		"receiver.quiet.delivered": 1, "receiver.loud.delivered": 3})
}

// A webhook with a repeat_interval is sent its firing alerts again every interval, as
// Alertmanager repeats a notification, until they resolve; a webhook without one is not, and
// repeats are counted apart from the alerts handed to Send.
func TestWebhookRepeatInterval(t *testing.T) {
	rep, once := newRecorder(t, nil), newRecorder(t, nil)
	r := webhook("rep", rep.srv.URL)
	r.RepeatInterval = time.Second
	n, _ := newNotifier(t, Options{}, r, webhook("once", once.srv.URL))

	n.Send(firing("f1"))
	first := rep.waitHits(t, 1)[0]
	hits := rep.waitHits(t, 2)
	if gap := hits[1].at.Sub(first.at); gap < time.Second || gap > 2*time.Second {
		t.Errorf("the repeat came %s after the first delivery, want 1 s to 1.25 s or so", gap)
	}
	m := decodeWebhook(t, hits[1].body)
	if got := fingerprints(m); !slices.Equal(got, []string{"f1"}) || m.Status != StatusFiring {
		t.Errorf("the repeat holds %v (%s), want f1 firing", got, m.Status)
	}
	rep.waitHits(t, 3) // and again

	n.Send(resolved("f1"))
	waitFor(t, "the resolved alert at rep", func() bool {
		h := rep.Hits()
		return decodeWebhook(t, h[len(h)-1].body).Status == StatusResolved
	})
	after := len(rep.Hits())
	time.Sleep(1500 * time.Millisecond)
	if got := len(rep.Hits()); got != after {
		t.Errorf("%d more requests after the alert resolved", got-after)
	}
	if got := len(once.Hits()); got != 2 {
		t.Errorf("the webhook without a repeat interval got %d requests, want 2 (firing, resolved)", got)
	}
	c := n.Counters()
	if c["repeated"] < 2 || c["receiver.rep.delivered"] != 2 || c["delivered"] != 4 {
		t.Errorf("counters: repeated %d, rep delivered %d, delivered %d; want 2 or more, 2 and 4",
			c["repeated"], c["receiver.rep.delivered"], c["delivered"])
	}
}

// Network errors, 429 and 5xx are retried up to MaxAttempts; other 4xx are not.
func TestRetries(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close() // nothing listens there now: connections are refused

	cases := []struct {
		name     string
		answers  []int  // per request; the last repeats
		url      string // instead of a recorder
		counters map[string]uint64
		log      []string
	}{
		{name: "503 twice then 200", answers: []int{503, 503, 200},
			counters: map[string]uint64{"delivered": 1, "requests": 3, "retried": 2, "failed": 0}},
		{name: "429 then 200", answers: []int{429, 200},
			counters: map[string]uint64{"delivered": 1, "requests": 2, "retried": 1, "failed": 0}},
		{name: "400 is not retried", answers: []int{400},
			counters: map[string]uint64{"delivered": 0, "requests": 1, "retried": 0, "failed": 1,
				"dropped.delivery_failed": 1, "receiver.r.failed": 1},
			log: []string{"status=400", "bad payload: labels missing"}},
		{name: "500 every time", answers: []int{500},
			counters: map[string]uint64{"delivered": 0, "requests": 4, "retried": 3, "failed": 1,
				"dropped.delivery_failed": 1},
			log: []string{"status=500", "attempts=4"}},
		{name: "server down", url: downURL,
			counters: map[string]uint64{"delivered": 0, "requests": 4, "retried": 3, "failed": 1,
				"dropped.delivery_failed": 1},
			log: []string{"posting to " + strings.TrimPrefix(downURL, "http://"), "attempts=4"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url
			if url == "" {
				rc := newRecorder(t, func(i int) (int, string) {
					s := tc.answers[min(i, len(tc.answers))-1]
					return s, "bad payload: labels missing"
				})
				url = rc.srv.URL
			}
			n, logs := newNotifier(t, Options{MaxAttempts: 4}, webhook("r", url))
			n.Send(firing("a"))
			checkCounters(t, n, tc.counters)
			for _, s := range tc.log {
				if !strings.Contains(logs.String(), s) {
					t.Errorf("log lacks %q:\n%s", s, logs)
				}
			}
		})
	}
}

// The wait before a retry doubles up to MaxBackoff, its upper half random.
func TestBackoff(t *testing.T) {
	n := New(Options{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	for attempt, full := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		for range 200 {
			if d := n.backoff(attempt); d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %v, want %v to %v", attempt, d, full/2, full)
			}
		}
	}
}

// GIVEN a receiver that does not answer, WHEN many alerts are sent, THEN Send returns at once,
// the queue keeps the newest QueueSize alerts and the rest are counted as dropped.
func TestQueueBound(t *testing.T) {
	rc := newRecorder(t, nil)
	rc.hold()
	n, _ := newNotifier(t, Options{QueueSize: 10}, webhook("stuck", rc.srv.URL))
	n.Send(firing("first"))
	rc.waitEntered(t) // the receiver's goroutine is now waiting for an answer

	start := time.Now()
	for i := range 100 {
		n.Send(firing(fmt.Sprintf("q%02d", i)))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("100 sends to a stuck receiver took %v", d)
	}
	checkCounters(t, n, map[string]uint64{"dropped.queue_full": 90, "receiver.stuck.dropped.queue_full": 90})

	rc.release()
	hits := rc.waitHits(t, 2)
	var want []string
	for i := 90; i < 100; i++ {
		want = append(want, fmt.Sprintf("q%02d", i))
	}
	if got := fingerprints(decodeWebhook(t, hits[1].body)); !slices.Equal(got, want) {
		t.Errorf("after release got %v, want the newest %v", got, want)
	}
	checkCounters(t, n, map[string]uint64{"sent": 101, "delivered": 11})
}

// SetReceivers keeps an unchanged receiver as it is, hands a changed one's queue to its new
// configuration, and drops a removed one's queue.
func TestSetReceivers(t *testing.T) {
	a, b := newRecorder(t, nil), newRecorder(t, nil)
	ra, rb := webhook("a", a.srv.URL), webhook("b", b.srv.URL)
	ra.Headers = map[string]string{"X-Version": "1"}
	n, _ := newNotifier(t, Options{}, ra, rb)

	// Unchanged: a request under way and the queue behind it survive.
	a.hold()
	n.Send(firing("a0"))
	a.waitEntered(t)
	n.Send(firing("a1"), firing("a2"))
	same := ra
	same.Headers = map[string]string{"X-Version": "1"} // an equal map, not the same one
	n.SetReceivers([]api.Receiver{rb, same})
	a.release()
	hits := a.waitHits(t, 2)
	if got := fingerprints(decodeWebhook(t, hits[1].body)); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("kept receiver delivered %v, want [a1 a2]", got)
	}
	checkCounters(t, n, map[string]uint64{"receiver.a.delivered": 3, "dropped.receiver_changed": 0,
		"dropped.receiver_removed": 0})

	// Changed: the request under way is abandoned, the queue goes to the new configuration.
	a.hold()
	n.Send(firing("a3"))
	a.waitEntered(t)
	n.Send(firing("a4"))
	changed := ra
	changed.Headers = map[string]string{"X-Version": "2"}
	n.SetReceivers([]api.Receiver{rb, changed})
	waitFor(t, "the abandoned request counted", func() bool { return n.Counters()["dropped.receiver_changed"] == 1 })
	a.release()
	waitFor(t, "the changed receiver's delivery", func() bool { return n.Counters()["receiver.a.delivered"] == 4 })
	// The abandoned request may still be answered if the server had not noticed the sender
	// leave; the delivery that counts is the new configuration's.
	var fromNew []hit
	for _, h := range a.Hits()[2:] {
		if h.header.Get("X-Version") == "2" {
			fromNew = append(fromNew, h)
		}
	}
	if len(fromNew) != 1 {
		t.Fatalf("the changed receiver made %d requests, want 1", len(fromNew))
	}
	if got := fingerprints(decodeWebhook(t, fromNew[0].body)); !slices.Equal(got, []string{"a4"}) {
		t.Errorf("changed receiver delivered %v, want [a4]", got)
	}

	// Removed: the request under way and the queue are dropped, and so are its counters.
	a.hold()
	n.Send(firing("a5"))
	a.waitEntered(t)
	n.Send(firing("a6"), firing("a7"))
	n.SetReceivers([]api.Receiver{rb})
	waitFor(t, "the removed receiver's alerts counted", func() bool { return n.Counters()["dropped.receiver_removed"] == 3 })
	a.release()
	if _, ok := n.Counters()["receiver.a.delivered"]; ok {
		t.Error("a removed receiver's counters are still reported")
	}

	// b saw everything, never disturbed.
	waitFor(t, "b to get every alert", func() bool { return n.Counters()["receiver.b.delivered"] == 8 })
	var got []string
	for _, h := range b.Hits() {
		got = append(got, fingerprints(decodeWebhook(t, h.body))...)
	}
	if want := []string{"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"}; !slices.Equal(got, want) {
		t.Errorf("b got %v, want %v", got, want)
	}
}

// decodePosted decodes a POST to /api/v2/alerts strictly: only the fields of a PostableAlert.
func decodePosted(t *testing.T, body []byte) []postedAlert {
	t.Helper()
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	for i, a := range raw {
		for k := range a {
			if !slices.Contains([]string{"labels", "annotations", "startsAt", "endsAt", "generatorURL"}, k) {
				t.Errorf("alerts[%d] has %q, not a field of Alertmanager's PostableAlert", i, k)
			}
		}
	}
	var out []postedAlert
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

type postedAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
}

// GIVEN an Alertmanager receiver, WHEN an alert fires, THEN it is posted to /api/v2/alerts with
// an end 4 ResendIntervals ahead and re-posted every ResendInterval; WHEN it resolves, THEN it
// is posted with its end, even with send_resolved off, and re-posting stops.
func TestAlertmanagerReceiver(t *testing.T) {
	am := newRecorder(t, nil)
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	const resend = 200 * time.Millisecond
	rcv := api.Receiver{ID: "am", Kind: api.ReceiverAlertmanager, URL: am.srv.URL + "/", SendResolved: false,
		Headers: map[string]string{"Authorization": "Basic dTpw"}}
	n, _ := newNotifier(t, Options{ResendInterval: resend, Now: func() time.Time { return now }}, rcv)

	a := firing("fp1", "severity", "warning", "src_app", "web")
	a.Annotations = map[string]string{"summary": "latency high"}
	a.StartsAt = now.Add(-time.Minute)
	a.GeneratorURL = "https://analysis.example.com/ui/rules/latency"
	n.Send(a)

	h := am.waitHits(t, 1)[0]
	if h.method != http.MethodPost || h.path != "/api/v2/alerts" {
		t.Errorf("request %s %s, want POST /api/v2/alerts", h.method, h.path)
	}
	if h.header.Get("Content-Type") != "application/json" || h.header.Get("Authorization") != "Basic dTpw" {
		t.Errorf("headers %v", h.header)
	}
	want := postedAlert{Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.StartsAt,
		EndsAt: now.Add(4 * resend), GeneratorURL: a.GeneratorURL}
	if got := decodePosted(t, h.body); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Errorf("posted %+v, want [%+v]", got, want)
	}

	// Re-posted while firing, about once per ResendInterval.
	hits := am.waitHits(t, 4)
	for _, h := range hits[1:] {
		if got := decodePosted(t, h.body); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Errorf("re-posted %+v, want [%+v]", got, want)
		}
	}
	if gap := hits[3].at.Sub(hits[1].at); gap < resend/2 || gap > 10*resend {
		t.Errorf("two re-posts %v apart, want about %v", gap, 2*resend)
	}

	r := a
	r.Status, r.EndsAt = StatusResolved, now
	n.Send(r)
	waitFor(t, "the resolved alert", func() bool {
		for _, h := range am.Hits() {
			if got := decodePosted(t, h.body); len(got) == 1 && got[0].EndsAt.Equal(now) {
				return true
			}
		}
		return false
	})
	count := len(am.Hits())
	time.Sleep(3 * resend)
	if extra := len(am.Hits()) - count; extra != 0 {
		t.Errorf("%d posts after the alert resolved", extra)
	}
	checkCounters(t, n, map[string]uint64{"delivered": 2, "skipped.resolved": 0, "failed": 0})
	if c := n.Counters(); c["resent"] < 2 {
		t.Errorf("%d alerts re-posted, want 2 or more", c["resent"])
	}
}

// An Alertmanager receiver added while alerts fire is told of them at once; firing alerts
// beyond MaxFiring are delivered but not remembered.
func TestAlertmanagerLearnsWhatFires(t *testing.T) {
	am := newRecorder(t, nil)
	n, _ := newNotifier(t, Options{ResendInterval: time.Hour, MaxFiring: 2})
	n.Send(firing("f1"), firing("f2"), firing("f3"))
	checkCounters(t, n, map[string]uint64{"dropped.no_receivers": 3, "dropped.firing_full": 1})

	n.SetReceivers([]api.Receiver{{ID: "am", Kind: api.ReceiverAlertmanager, URL: am.srv.URL}})
	got := decodePosted(t, am.waitHits(t, 1)[0].body)
	var names []string
	for _, a := range got {
		names = append(names, a.Labels["alertname"])
	}
	if !slices.Equal(names, []string{"f1", "f2"}) {
		t.Errorf("posted %v, want [f1 f2]", names)
	}
	checkCounters(t, n, map[string]uint64{"resent": 2})
}

// Alerts Alertmanager would refuse are dropped at Send, without spoiling the others.
func TestInvalidAlertsDropped(t *testing.T) {
	rc := newRecorder(t, nil)
	n, logs := newNotifier(t, Options{}, webhook("ops", rc.srv.URL))
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	bad := []Alert{
		{Fingerprint: "", Status: StatusFiring, Labels: map[string]string{"alertname": "x"}},
		{Fingerprint: "b", Status: "pending", Labels: map[string]string{"alertname": "x"}},
		{Fingerprint: "c", Status: StatusFiring},
		{Fingerprint: "d", Status: StatusFiring, Labels: map[string]string{"alertname": ""}},
		{Fingerprint: "e", Status: StatusFiring, Labels: map[string]string{"src-app": "web"}},
		{Fingerprint: "f", Status: StatusFiring, Labels: map[string]string{"1st": "web"}},
		{Fingerprint: "g", Status: StatusFiring, Labels: map[string]string{"a": "\xff"}},
		{Fingerprint: "h", Status: StatusFiring, Labels: map[string]string{"a": "b"},
			Annotations: map[string]string{"run book": "x"}},
		{Fingerprint: "i", Status: StatusResolved, Labels: map[string]string{"a": "b"},
			StartsAt: start, EndsAt: start.Add(-time.Second)},
	}
	n.Send(append(bad, firing("good"))...)
	if got := fingerprints(decodeWebhook(t, rc.waitHits(t, 1)[0].body)); !slices.Equal(got, []string{"good"}) {
		t.Errorf("delivered %v, want [good]", got)
	}
	checkCounters(t, n, map[string]uint64{"sent": 10, "dropped.invalid": 9, "delivered": 1})
	if !strings.Contains(logs.String(), "reason=invalid") {
		t.Errorf("log lacks the reason:\n%s", logs)
	}
}

func TestNoReceivers(t *testing.T) {
	n, _ := newNotifier(t, Options{})
	n.Send(firing("a"), resolved("b"))
	checkCounters(t, n, map[string]uint64{"sent": 2, "dropped.no_receivers": 2})
}

// Close delivers what is queued without waiting for GroupWait, is safe twice, and refuses
// alerts after it.
func TestClose(t *testing.T) {
	rc := newRecorder(t, nil)
	n := New(Options{GroupWait: time.Hour, Log: slog.New(slog.DiscardHandler)})
	n.SetReceivers([]api.Receiver{webhook("ops", rc.srv.URL)})
	n.Send(firing("a"), firing("b"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if hits := rc.Hits(); len(hits) != 1 || !slices.Equal(fingerprints(decodeWebhook(t, hits[0].body)), []string{"a", "b"}) {
		t.Errorf("close delivered %d requests, want one with [a b]", len(hits))
	}
	if err := n.Close(ctx); err != nil {
		t.Errorf("second close: %v", err)
	}
	n.Send(firing("late"))
	n.SetReceivers(nil)
	checkCounters(t, n, map[string]uint64{"sent": 3, "delivered": 2, "dropped.closed": 1})
}

// GIVEN a receiver that does not answer, WHEN Close's context ends, THEN the request under way
// and the queue are dropped and counted, and Close says so.
func TestCloseCutShort(t *testing.T) {
	rc := newRecorder(t, nil)
	rc.hold()
	n := New(Options{GroupWait: time.Millisecond, Log: slog.New(slog.DiscardHandler)})
	n.SetReceivers([]api.Receiver{webhook("stuck", rc.srv.URL)})
	n.Send(firing("a"))
	rc.waitEntered(t)
	n.Send(firing("b"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := n.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("close = %v, want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("close took %v", d)
	}
	checkCounters(t, n, map[string]uint64{"dropped.shutdown": 2, "delivered": 0})
	if err := n.Close(context.Background()); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// Close without receivers, and with a context that has already ended, loses nothing.
func TestCloseIdle(t *testing.T) {
	n := New(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}
