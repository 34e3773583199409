package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

// alertmanagerBinary is the name Debian's prometheus-alertmanager package installs.
const alertmanagerBinary = "prometheus-alertmanager"

// TestRealAlertmanager holds the notifier to a real Alertmanager, the oracle for both of its
// wire formats: alerts the notifier posts must be accepted and listed by Alertmanager's API,
// and the webhook payload Alertmanager itself then sends must have the fields, and for the same
// alert the values, of the payload the notifier writes for its own webhook receivers.
func TestRealAlertmanager(t *testing.T) {
	bin, err := exec.LookPath(alertmanagerBinary)
	if err != nil {
		t.Skipf("%s not installed (Debian package prometheus-alertmanager; .ci/deps installs it): %v",
			alertmanagerBinary, err)
	}

	// The webhook receiver Alertmanager delivers to.
	payloads := make(chan []byte, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case payloads <- body:
		default:
		}
	}))
	t.Cleanup(hook.Close)

	am := startAlertmanager(t, bin, hook.URL+"/am-hook")

	n, _ := newNotifier(t, Options{ExternalURL: "https://analysis.example.com/ui"},
		api.Receiver{ID: "am", Kind: api.ReceiverAlertmanager, URL: am + "/"})
	start := time.Now().Add(-time.Minute).Truncate(time.Millisecond).UTC()
	a := Alert{
		Fingerprint: "quanyu-integration",
		Status:      StatusFiring,
		Labels: map[string]string{"alertname": "QuanyuIntegration", "severity": "warning",
			"src_app": "web", "dst_app": "db", "dst_owner": "team_data"},
		Annotations:  map[string]string{"summary": "p99 latency above 300 ms"},
		StartsAt:     start,
		GeneratorURL: "https://analysis.example.com/ui/rules/latency",
	}
	n.Send(a)

	// Alertmanager's API lists the alert with its labels, annotations and start.
	var listed gettableAlert
	waitFor(t, "Alertmanager to list the alert", func() bool {
		for _, g := range getAlerts(t, am) {
			if reflect.DeepEqual(g.Labels, a.Labels) {
				listed = g
				return true
			}
		}
		return false
	})
	if !reflect.DeepEqual(listed.Annotations, a.Annotations) || !listed.StartsAt.Equal(start) ||
		listed.GeneratorURL != a.GeneratorURL || listed.Status.State != "active" {
		t.Errorf("Alertmanager lists %+v", listed)
	}

	// Alertmanager's own webhook delivery carries the alert, in the shape the notifier writes.
	got := waitPayload(t, payloads, "firing")
	if m := decodeWebhook(t, got); len(m.Alerts) != 1 || !reflect.DeepEqual(map[string]string(m.Alerts[0].Labels), a.Labels) {
		t.Errorf("Alertmanager's webhook carries %+v, want the labels %v", m.Alerts, a.Labels)
	}
	compareWithOurs(t, got, a, "test")

	// Resolved: Alertmanager stops listing it and sends the resolution.
	r := a
	r.Status = StatusResolved
	r.EndsAt = time.Now().Truncate(time.Millisecond).UTC()
	n.Send(r)
	waitFor(t, "Alertmanager to stop listing the alert", func() bool {
		for _, g := range getAlerts(t, am) {
			if reflect.DeepEqual(g.Labels, a.Labels) {
				return false
			}
		}
		return true
	})
	got = waitPayload(t, payloads, "resolved")
	compareWithOurs(t, got, r, "test")
	// Alertmanager may act on the resolution before the notifier has counted its answer. The
	// firing state may have been superseded in the queue (it reached Alertmanager by the
	// re-post a new receiver makes at once), so the two states are delivered or superseded.
	waitFor(t, "both states counted", func() bool {
		c := n.Counters()
		return c["delivered"]+c["superseded"] == 2
	})
	checkCounters(t, n, map[string]uint64{"failed": 0, "dropped.invalid": 0})
}

// startAlertmanager runs Alertmanager with one route to a webhook and gives its base URL.
func startAlertmanager(t *testing.T, bin, hookURL string) string {
	t.Helper()
	dir := t.TempDir()
	config := fmt.Sprintf(`route:
  receiver: test
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: %q
        send_resolved: true
`, hookURL)
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	logs := &logBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--cluster.listen-address=",
	)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("Alertmanager's log:\n%s", logs)
		}
	})

	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("Alertmanager exited before it was ready:\n%s", logs)
		default:
		}
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Alertmanager not ready after 30 s:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr gives a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// gettableAlert is the part of Alertmanager's API v2 GettableAlert the test reads.
type gettableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
	Status       struct {
		State string `json:"state"`
	} `json:"status"`
}

func getAlerts(t *testing.T, base string) []gettableAlert {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v2/alerts", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("listing Alertmanager's alerts: %v", err)
	}
	defer resp.Body.Close()
	var out []gettableAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("listing Alertmanager's alerts: status %d, %v", resp.StatusCode, err)
	}
	return out
}

// waitPayload waits for a webhook payload from Alertmanager with the given status.
func waitPayload(t *testing.T, payloads <-chan []byte, status string) []byte {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case body := <-payloads:
			var m struct {
				Status string `json:"status"`
			}
			t.Logf("webhook from Alertmanager: %s", body)
			if json.Unmarshal(body, &m) == nil && m.Status == status {
				return body
			}
		case <-timeout:
			t.Fatalf("no %s webhook from Alertmanager within 30 s", status)
		}
	}
}

// compareWithOurs checks Alertmanager's webhook payload for one alert against the payload the
// notifier writes for the same alert: the same keys everywhere, and the same values except
// those that name the sender (receiver, groupKey, externalURL, groupLabels, fingerprint).
func compareWithOurs(t *testing.T, theirs []byte, a Alert, receiver string) {
	t.Helper()
	ours, err := webhookBody(receiver, "", []Alert{a})
	if err != nil {
		t.Fatal(err)
	}
	keys := func(body []byte) (top, alert []string) {
		var m map[string]json.RawMessage
		var as struct {
			Alerts []map[string]json.RawMessage `json:"alerts"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("decoding %s: %v", body, err)
		}
		if err := json.Unmarshal(body, &as); err != nil || len(as.Alerts) != 1 {
			t.Fatalf("want one alert in %s (%v)", body, err)
		}
		return slices.Sorted(maps.Keys(m)), slices.Sorted(maps.Keys(as.Alerts[0]))
	}
	theirTop, theirAlert := keys(theirs)
	ourTop, ourAlert := keys(ours)
	if !slices.Equal(theirTop, ourTop) || !slices.Equal(theirAlert, ourAlert) {
		t.Errorf("keys differ:\nAlertmanager %v %v\nnotifier     %v %v", theirTop, theirAlert, ourTop, ourAlert)
	}

	theirMsg, ourMsg := decodeWebhook(t, theirs), decodeWebhook(t, ours)
	if theirMsg.Version != ourMsg.Version || theirMsg.Status != ourMsg.Status ||
		theirMsg.TruncatedAlerts != ourMsg.TruncatedAlerts || theirMsg.Receiver != receiver {
		t.Errorf("Alertmanager: version %q status %q truncated %d receiver %q; notifier: %q %q %d",
			theirMsg.Version, theirMsg.Status, theirMsg.TruncatedAlerts, theirMsg.Receiver,
			ourMsg.Version, ourMsg.Status, ourMsg.TruncatedAlerts)
	}
	if !reflect.DeepEqual(theirMsg.CommonLabels, ourMsg.CommonLabels) ||
		!reflect.DeepEqual(theirMsg.CommonAnnotations, ourMsg.CommonAnnotations) {
		t.Errorf("common labels, annotations: Alertmanager %v %v, notifier %v %v", theirMsg.CommonLabels,
			theirMsg.CommonAnnotations, ourMsg.CommonLabels, ourMsg.CommonAnnotations)
	}
	th, ou := theirMsg.Alerts[0], ourMsg.Alerts[0]
	th.Fingerprint, ou.Fingerprint = "", "" // Alertmanager hashes the labels itself
	if !th.StartsAt.Equal(ou.StartsAt) || !th.EndsAt.Equal(ou.EndsAt) {
		t.Errorf("times: Alertmanager %v to %v, notifier %v to %v", th.StartsAt, th.EndsAt, ou.StartsAt, ou.EndsAt)
	}
	th.StartsAt, th.EndsAt, ou.StartsAt, ou.EndsAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(th, ou) {
		t.Errorf("alert:\nAlertmanager %+v\nnotifier     %+v", th, ou)
	}
}
