package notify

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

// userAgent names the sender to receivers; a receiver's own User-Agent header replaces it.
const userAgent = "quanyu-analysis"

// Limits of one request.
const (
	// maxResendPerRequest keeps a re-post of many firing alerts in requests of a size every
	// Alertmanager accepts.
	maxResendPerRequest = 500
	// maxLoggedBody is how much of a refusal's body is logged: enough for the error message.
	maxLoggedBody = 256
	// maxDrainedBody is how much of an answer is read to let the connection be reused; a
	// receiver that answers at greater length has its connection closed instead.
	maxDrainedBody = 64 << 10
)

// Causes of a receiver's stop; the alerts it still had are counted by cause.
var (
	errRemoved  = errors.New("receiver removed")
	errChanged  = errors.New("receiver configuration changed")
	errShutdown = errors.New("notifier closed before delivery ended")
)

type queued struct {
	a       Alert
	arrived time.Time // on the monotonic clock, for GroupWait
	repeat  bool      // queued again by repeat_interval, not handed to Send: counted apart
}

// receiver owns the queue and the goroutine of one receiver configuration.
type receiver struct {
	n    *Notifier
	cfg  api.Receiver
	rc   *receiverCounters
	log  *slog.Logger
	url  string // where requests go
	host string // for logs: the URL may hold credentials in its path or query

	ctx    context.Context // ends requests and waits when the receiver stops
	cancel context.CancelCauseFunc
	wake   chan struct{} // holds one token when the queue may have something
	flush  chan struct{} // closed by Close: deliver what is queued, then return

	mu sync.Mutex
	// queue is bounded by QueueSize. Dropping the oldest reslices it, so its array is
	// reallocated now and then by append; it never holds more than QueueSize alerts.
	queue []queued

	// lastSent is when each firing alert was last delivered here, by fingerprint, for a
	// webhook's repeat_interval. Only the receiver's goroutine uses it.
	lastSent map[string]time.Time
}

func newReceiver(n *Notifier, cfg api.Receiver, rc *receiverCounters) *receiver {
	ctx, cancel := context.WithCancelCause(context.Background())
	r := &receiver{
		n: n, cfg: cfg, rc: rc,
		url:    cfg.URL,
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		flush:  make(chan struct{}),

		lastSent: map[string]time.Time{},
	}
	if cfg.Kind == api.ReceiverAlertmanager {
		r.url = strings.TrimRight(cfg.URL, "/") + "/api/v2/alerts"
	}
	if u, err := url.Parse(cfg.URL); err == nil {
		r.host = u.Host
	}
	r.log = n.log.With("receiver", cfg.ID, "kind", string(cfg.Kind), "host", r.host)
	return r
}

// enqueue queues an alert; it never blocks for longer than the queue's lock.
func (r *receiver) enqueue(a Alert, arrived time.Time) {
	if r.skips(a) {
		return
	}
	r.push(queued{a: a, arrived: arrived})
}

// push queues an entry, pushing the oldest out of a full queue, and wakes the goroutine.
func (r *receiver) push(e queued) {
	r.mu.Lock()
	if len(r.queue) >= r.n.o.QueueSize {
		if !r.queue[0].repeat {
			r.n.c.droppedQueueFull.Add(1)
			r.rc.droppedQueueFull.Add(1)
		}
		r.queue[0] = queued{}
		r.queue = r.queue[1:]
	}
	r.queue = append(r.queue, e)
	r.mu.Unlock()
	r.signal()
}

// skips says whether the receiver does not want an alert at all: a webhook without
// send_resolved. An Alertmanager always gets resolved alerts, as without them it would keep an
// alert firing until its endsAt.
func (r *receiver) skips(a Alert) bool {
	if a.Status == StatusResolved && r.cfg.Kind == api.ReceiverWebhook && !r.cfg.SendResolved {
		r.n.c.skippedResolved.Add(1)
		return true
	}
	return false
}

func (r *receiver) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// stop ends the receiver's goroutine and gives back its queue; a request under way is
// abandoned and counted by cause.
func (r *receiver) stop(cause error) []queued {
	r.mu.Lock()
	q := r.queue
	r.queue = nil
	r.mu.Unlock()
	r.cancel(cause)
	return q
}

// adopt takes over the queue of the receiver this one replaces.
// Repeats are left out: they were the old configuration's, and this one repeats on its own.
func (r *receiver) adopt(q []queued) {
	q = slices.DeleteFunc(q, func(e queued) bool { return e.repeat || r.skips(e.a) })
	if len(q) == 0 {
		return
	}
	r.mu.Lock()
	r.queue = append(q, r.queue...)
	if over := len(r.queue) - r.n.o.QueueSize; over > 0 {
		r.queue = r.queue[over:]
		r.n.c.droppedQueueFull.Add(uint64(over))
		r.rc.droppedQueueFull.Add(uint64(over))
	}
	r.mu.Unlock()
	r.signal()
}

// run is the receiver's goroutine.
func (r *receiver) run() {
	var resend, repeat <-chan time.Time
	if r.cfg.Kind == api.ReceiverAlertmanager {
		t := time.NewTicker(r.n.o.ResendInterval)
		defer t.Stop()
		resend = t.C
		// A new Alertmanager, or one whose address changed, learns at once what is firing.
		r.resend()
	}
	if r.cfg.Kind == api.ReceiverWebhook && r.cfg.RepeatInterval > 0 {
		// Checked a few times an interval (at most a minute apart): a repeat comes at most
		// that much after it is due.
		t := time.NewTicker(min(max(r.cfg.RepeatInterval/4, 100*time.Millisecond), time.Minute))
		defer t.Stop()
		repeat = t.C
	}
	for {
		select {
		case <-r.ctx.Done():
			r.abandon()
			return
		case <-r.flush:
			r.deliver()
			r.abandon()
			return
		case <-r.wake:
			r.groupWait()
			r.deliver()
		case <-resend:
			r.resend()
		case <-repeat:
			r.repeat()
		}
	}
}

// repeat queues again, for a webhook, the firing alerts delivered here repeat_interval ago or
// more, as Alertmanager repeats a notification, and forgets those no longer firing.
func (r *receiver) repeat() {
	now := r.n.o.Now()
	firing := r.n.firingAlerts()
	still := make(map[string]bool, len(firing))
	for _, a := range firing {
		still[a.Fingerprint] = true
		if last, ok := r.lastSent[a.Fingerprint]; ok && now.Sub(last) >= r.cfg.RepeatInterval {
			// Due again an interval from now, whether this delivery succeeds or not.
			r.lastSent[a.Fingerprint] = now
			r.push(queued{a: a, arrived: time.Now(), repeat: true})
		}
	}
	for fp := range r.lastSent {
		if !still[fp] {
			delete(r.lastSent, fp)
		}
	}
}

// groupWait waits until GroupWait has passed since the oldest queued alert arrived, or until
// Close asks for delivery now.
func (r *receiver) groupWait() {
	r.mu.Lock()
	var first time.Time
	if len(r.queue) > 0 {
		first = r.queue[0].arrived
	}
	r.mu.Unlock()
	if first.IsZero() {
		return
	}
	wait := r.n.o.GroupWait - time.Since(first)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.flush:
	case <-r.ctx.Done():
	}
}

// take empties the queue.
func (r *receiver) take() []queued {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue
	r.queue = nil
	return q
}

// abandon counts what is left when the receiver stops.
func (r *receiver) abandon() {
	fresh := 0
	for _, e := range r.take() {
		if !e.repeat {
			fresh++
		}
	}
	if fresh > 0 {
		r.dropped(fresh)
	}
}

// dropped counts alerts lost to the receiver's stop, by its cause.
func (r *receiver) dropped(n int) {
	switch context.Cause(r.ctx) {
	case errRemoved:
		r.n.c.droppedRemoved.Add(uint64(n))
	case errChanged:
		r.n.c.droppedChanged.Add(uint64(n))
	default:
		r.n.c.droppedShutdown.Add(uint64(n))
	}
}

// deliver sends everything queued in one request.
func (r *receiver) deliver() {
	q := r.take()
	if len(q) == 0 {
		return
	}
	alerts, repeats := r.coalesce(q)
	fresh := len(alerts) - repeats // the alerts handed to Send, which the counters account for
	var body []byte
	var err error
	if r.cfg.Kind == api.ReceiverWebhook {
		body, err = webhookBody(r.cfg.ID, r.n.o.ExternalURL, alerts)
	} else {
		body, err = alertmanagerBody(alerts, r.n.o.Now(), r.validFor())
	}
	if err != nil {
		// Alerts are maps of strings; encoding them cannot fail, but should it, it is counted.
		r.log.Error("alerts dropped", "reason", "encoding", "alerts", len(alerts), "err", err)
		r.n.c.droppedFailed.Add(uint64(fresh))
		return
	}
	switch r.post(body, len(alerts)) {
	case posted:
		r.n.c.delivered.Add(uint64(fresh))
		r.rc.delivered.Add(uint64(fresh))
		r.n.c.repeated.Add(uint64(repeats))
		if r.cfg.Kind == api.ReceiverWebhook && r.cfg.RepeatInterval > 0 {
			now := r.n.o.Now()
			for _, a := range alerts {
				if a.Status == StatusFiring {
					r.lastSent[a.Fingerprint] = now
				} else {
					delete(r.lastSent, a.Fingerprint)
				}
			}
		}
	case refused:
		r.n.c.droppedFailed.Add(uint64(fresh))
	case stopped:
		r.dropped(fresh)
	}
}

// coalesce keeps the latest state of each series, in the order of those states' arrival: a
// series that fired and resolved within one GroupWait is delivered resolved, once. It also
// gives how many of those kept are repeats (see repeat).
func (r *receiver) coalesce(q []queued) ([]Alert, int) {
	seen := make(map[string]bool, len(q))
	out := make([]Alert, 0, len(q))
	repeats := 0
	for i := len(q) - 1; i >= 0; i-- {
		fp := q[i].a.Fingerprint
		if seen[fp] {
			if !q[i].repeat {
				r.n.c.superseded.Add(1)
			}
			continue
		}
		seen[fp] = true
		out = append(out, q[i].a)
		if q[i].repeat {
			repeats++
		}
	}
	slices.Reverse(out)
	return out, repeats
}

// validFor is how long an Alertmanager keeps a posted firing alert firing without hearing of
// it again. Prometheus uses four resend intervals, so that three lost re-posts in a row do not
// resolve an alert.
func (r *receiver) validFor() time.Duration { return 4 * r.n.o.ResendInterval }

// resend re-posts every firing alert to an Alertmanager.
func (r *receiver) resend() {
	alerts := r.n.firingAlerts()
	if len(alerts) == 0 {
		return
	}
	slices.SortFunc(alerts, func(a, b Alert) int { return cmp.Compare(a.Fingerprint, b.Fingerprint) })
	for chunk := range slices.Chunk(alerts, maxResendPerRequest) {
		body, err := alertmanagerBody(chunk, r.n.o.Now(), r.validFor())
		if err != nil {
			r.log.Error("re-post skipped", "reason", "encoding", "alerts", len(chunk), "err", err)
			r.n.c.droppedFailed.Add(uint64(len(chunk)))
			continue
		}
		switch r.post(body, len(chunk)) {
		case posted:
			r.n.c.resent.Add(uint64(len(chunk)))
		case refused:
			// The alerts stay firing here and are re-posted next time; Alertmanager resolves
			// them only if that goes on for validFor.
			r.n.c.droppedFailed.Add(uint64(len(chunk)))
		case stopped:
			// Nothing is lost: a re-post carries no new state.
			return
		}
	}
}

// outcome is how a request ended.
type outcome int

const (
	posted  outcome = iota // a 2xx answer
	refused                // given up: another 4xx, or MaxAttempts reached
	stopped                // the receiver stopped first
)

// answer is what one attempt got.
type answer struct {
	status     int
	body       string        // the first bytes, for the log
	retryAfter time.Duration // from a Retry-After header in seconds
	err        error
	retry      bool
}

// post sends one request body, retrying network errors, 429 and 5xx with exponential backoff.
func (r *receiver) post(body []byte, alerts int) outcome {
	for attempt := 1; ; attempt++ {
		if r.ctx.Err() != nil {
			return stopped
		}
		r.n.c.requests.Add(1)
		a := r.attempt(body)
		if a.err == nil && a.status >= 200 && a.status < 300 {
			return posted
		}
		if r.ctx.Err() != nil {
			return stopped
		}
		if !a.retry || attempt >= r.n.o.MaxAttempts {
			r.n.c.failed.Add(1)
			r.rc.failed.Add(1)
			args := []any{"alerts", alerts, "attempts", attempt}
			if a.err != nil {
				args = append(args, "err", a.err)
			} else {
				args = append(args, "status", a.status, "body", a.body)
			}
			r.log.Warn("delivery failed; alerts dropped", args...)
			return refused
		}
		r.n.c.retried.Add(1)
		wait := r.n.backoff(attempt)
		if a.retryAfter > wait {
			wait = min(a.retryAfter, r.n.o.MaxBackoff)
		}
		r.log.Debug("delivery will be retried", "attempt", attempt, "status", a.status, "err", a.err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return stopped
		}
	}
}

// attempt makes one request.
func (r *receiver) attempt(body []byte) answer {
	ctx, cancel := context.WithTimeout(r.ctx, r.n.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		// The URL is wrong; trying again will not mend it.
		return answer{err: fmt.Errorf("building the request: %w", err)}
	}
	req.Header.Set("User-Agent", userAgent)
	for k, v := range r.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.n.o.Client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may hold a token; the host is logged instead.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return answer{err: fmt.Errorf("posting to %s: %w", r.host, err), retry: true}
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxLoggedBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainedBody))
	a := answer{
		status: resp.StatusCode,
		body:   strings.ToValidUTF8(string(head), "?"),
		retry:  resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500,
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		a.retryAfter = time.Duration(s) * time.Second
	}
	return a
}

// backoff is the wait before retry number attempt: Backoff doubled per retry up to MaxBackoff,
// of which the upper half is random ("equal jitter"), so that the wait still grows but
// receivers that failed together do not retry together.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.o.Backoff
	for i := 1; i < attempt && d < n.o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, n.o.MaxBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}
