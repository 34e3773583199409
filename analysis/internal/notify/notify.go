// Package notify delivers the alerts analysis raises to the receivers the control plane holds:
// a webhook gets Alertmanager's webhook payload (version 4), an Alertmanager gets the alerts
// posted to its API (/api/v2/alerts) and does its own routing, grouping and silencing.
//
// Each receiver has one goroutine and one bounded queue. Send puts an alert on the queue of
// every receiver and returns at once. The receiver's goroutine waits until GroupWait has passed
// since the oldest queued alert arrived, so that alerts raised together travel in one request,
// then posts everything queued, retrying network errors, 429 and 5xx with exponential backoff.
// A full queue drops its oldest alert, because the newest state of an alert is the one worth
// delivering.
//
// Alertmanager resolves an alert by itself once its endsAt has passed. Firing alerts are
// therefore posted with an endsAt a few ResendIntervals ahead and re-posted every
// ResendInterval, as Prometheus does: while analysis runs they stay firing, and if it stops they
// resolve on their own instead of firing forever.
package notify

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

// Alert statuses, as Alertmanager writes them.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Alert is one alerting series in one state.
type Alert struct {
	// Fingerprint is the stable id of the alerting series (a hash of its labels), given by the
	// caller. Alerts with the same fingerprint are states of one series: a later one replaces an
	// earlier one still queued, and a resolved one ends the re-posting of a firing one.
	Fingerprint string
	Status      string            // StatusFiring or StatusResolved
	Labels      map[string]string // includes alertname, severity, and the ends' apps and owners
	Annotations map[string]string
	StartsAt    time.Time
	// EndsAt is zero while firing. A resolved alert without one is given the time Send was
	// called.
	EndsAt       time.Time
	GeneratorURL string
}

// Options configure a Notifier. Zero fields take the defaults of Default.
type Options struct {
	// Log receives the notifier's warnings. nil: slog.Default() with component=notify; a logger
	// given here is used as it is, as the caller names the component.
	Log *slog.Logger
	// ExternalURL is analysis's UI, written in the webhook payload's externalURL.
	ExternalURL string
	// QueueSize is the number of alerts queued per receiver; beyond it the oldest are dropped
	// and counted (dropped.queue_full).
	QueueSize int // default 1024
	// GroupWait is how long the first alert of a request waits for others to join it.
	GroupWait time.Duration // default 1s
	// Timeout bounds one HTTP request, including reading the answer.
	Timeout     time.Duration // default 10s
	MaxAttempts int           // attempts per request, default 6
	// Backoff is the wait before the first retry; it doubles per retry up to MaxBackoff, and a
	// random part of up to half of it keeps receivers that failed together from retrying
	// together.
	Backoff, MaxBackoff time.Duration // default 1s, 30s
	// ResendInterval is how often firing alerts are re-posted to Alertmanager receivers. Each
	// post says the alert ends 4 intervals later unless heard of again (Prometheus's rule), so
	// an Alertmanager resolves the alerts of an analysis that has stopped.
	ResendInterval time.Duration // default 1m
	// MaxFiring is how many firing alerts are remembered for re-posting. A firing alert beyond
	// it is still delivered once but not re-posted (dropped.firing_full), so an Alertmanager
	// resolves it after 4 ResendIntervals. It bounds the memory a flood of alerts can take.
	MaxFiring int // default 10000
	// Client sends the requests; nil: a client whose timeout is Timeout. Timeout applies to
	// every request either way.
	Client *http.Client
	// Now gives the timestamps written into payloads (endsAt); nil: time.Now. Waiting
	// (GroupWait, backoff, ResendInterval) uses the real clock.
	Now func() time.Time
}

// Default gives the default options.
func Default() Options {
	return Options{
		QueueSize:      1024,
		GroupWait:      time.Second,
		Timeout:        10 * time.Second,
		MaxAttempts:    6,
		Backoff:        time.Second,
		MaxBackoff:     30 * time.Second,
		ResendInterval: time.Minute,
		MaxFiring:      10000,
	}
}

// withDefaults fills zero and negative fields from Default: none of them has a meaning at zero
// that a caller could want (a zero GroupWait is the one exception, and 1 ns gives it).
func (o Options) withDefaults() Options {
	d := Default()
	setd := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	seti := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	seti(&o.QueueSize, d.QueueSize)
	setd(&o.GroupWait, d.GroupWait)
	setd(&o.Timeout, d.Timeout)
	seti(&o.MaxAttempts, d.MaxAttempts)
	setd(&o.Backoff, d.Backoff)
	setd(&o.MaxBackoff, d.MaxBackoff)
	if o.MaxBackoff < o.Backoff {
		o.MaxBackoff = o.Backoff
	}
	setd(&o.ResendInterval, d.ResendInterval)
	seti(&o.MaxFiring, d.MaxFiring)
	if o.Log == nil {
		o.Log = slog.Default().With("component", "notify")
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.Timeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

type counter = atomic.Uint64

// counters are the notifier's; Counters gives them by name. Every alert handed to Send is
// either queued for no receiver (dropped.invalid, dropped.closed, dropped.no_receivers), or, for
// each receiver it was meant for, skipped (skipped.resolved), superseded, delivered or dropped
// for one of the other reasons. Re-posts and repeats are counted apart (resent, repeated), as they
// are not new alerts.
type counters struct {
	sent, delivered, requests, retried, failed, resent, repeated        counter
	skippedResolved, superseded                                         counter
	droppedInvalid, droppedClosed, droppedNoReceivers, droppedQueueFull counter
	droppedRemoved, droppedChanged, droppedShutdown, droppedFailed      counter
	droppedFiringFull                                                   counter
}

// receiverCounters outlive a change of a receiver's configuration: they belong to its id.
type receiverCounters struct {
	delivered, failed, droppedQueueFull counter
}

// Notifier delivers alerts to a set of receivers.
//
// Lifecycle:
//  1. New creates it; it has no receivers and starts no goroutine yet.
//  2. SetReceivers sets the receivers, starting a goroutine for each new one, and may be called
//     again at any time.
//  3. Send, from any goroutine, never blocks.
//  4. Close delivers what is queued until its context ends, then stops every goroutine. It is
//     safe twice and without step 2; after it, Send drops and SetReceivers does nothing.
type Notifier struct {
	o   Options
	log *slog.Logger
	c   counters

	mu        sync.RWMutex // guards receivers, perID, closed; held for reading by Send
	receivers map[string]*receiver
	perID     map[string]*receiverCounters
	closed    bool

	// firing is every firing alert by fingerprint, re-posted to Alertmanager receivers. It
	// belongs to the notifier rather than to a receiver so that an Alertmanager added later, or
	// whose configuration changed, learns what is firing at once.
	fmu    sync.Mutex
	firing map[string]Alert

	wg        sync.WaitGroup // receiver goroutines
	closeOnce sync.Once
	allDone   chan struct{} // closed when Close has started and every goroutine has returned
}

// New creates a notifier without receivers.
func New(o Options) *Notifier {
	o = o.withDefaults()
	return &Notifier{
		o:         o,
		log:       o.Log,
		receivers: map[string]*receiver{},
		perID:     map[string]*receiverCounters{},
		firing:    map[string]Alert{},
		allDone:   make(chan struct{}),
	}
}

// SetReceivers replaces the set of receivers. A receiver whose id and configuration are
// unchanged keeps its queue and whatever it is sending. A receiver whose configuration changed
// is restarted with the new one and takes over the old queue, since its alerts are still meant
// for it; a request the old one had under way is abandoned (dropped.receiver_changed). A
// receiver that is gone has its queue dropped (dropped.receiver_removed). Ids are expected to be
// unique, as api.ParseReceivers makes them; a repeated id or an unknown kind is logged and left
// out.
func (n *Notifier) SetReceivers(rs []api.Receiver) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		n.log.Warn("receivers set after close; ignored")
		return
	}
	next := make(map[string]*receiver, len(rs))
	for _, cfg := range rs {
		if _, dup := next[cfg.ID]; dup {
			n.log.Error("receiver id given twice; the first is used", "receiver", cfg.ID)
			continue
		}
		if cfg.Kind != api.ReceiverWebhook && cfg.Kind != api.ReceiverAlertmanager {
			n.log.Error("receiver of an unknown kind; left out", "receiver", cfg.ID, "kind", cfg.Kind)
			continue
		}
		old := n.receivers[cfg.ID]
		switch {
		case old != nil && sameConfig(old.cfg, cfg):
			next[cfg.ID] = old
		case old != nil:
			queue := old.stop(errChanged)
			r := n.start(cfg)
			r.adopt(queue)
			next[cfg.ID] = r
		default:
			next[cfg.ID] = n.start(cfg)
		}
	}
	for id, old := range n.receivers {
		if _, kept := next[id]; !kept {
			queue := old.stop(errRemoved)
			n.c.droppedRemoved.Add(uint64(len(queue)))
			delete(n.perID, id)
		}
	}
	n.receivers = next
}

// start creates a receiver and its goroutine; n.mu is held.
func (n *Notifier) start(cfg api.Receiver) *receiver {
	cfg.Headers = maps.Clone(cfg.Headers)
	rc := n.perID[cfg.ID]
	if rc == nil {
		rc = &receiverCounters{}
		n.perID[cfg.ID] = rc
	}
	r := newReceiver(n, cfg, rc)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		r.run()
	}()
	return r
}

func sameConfig(a, b api.Receiver) bool {
	return a.ID == b.ID && a.Kind == b.Kind && a.URL == b.URL && a.SendResolved == b.SendResolved &&
		maps.Equal(a.Headers, b.Headers)
}

// Send hands alerts over for delivery to every receiver and returns at once. The alerts are
// copied, so the caller may reuse their maps. An alert that Alertmanager would refuse is
// dropped here (dropped.invalid), since in a request with others it would make the whole
// request fail. A firing alert is re-posted to Alertmanager receivers until an alert with the
// same fingerprint resolves it: the caller sends a resolved alert for every firing one it stops
// tracking.
func (n *Notifier) Send(alerts ...Alert) {
	if len(alerts) == 0 {
		return
	}
	now, arrived := n.o.Now(), time.Now()
	n.mu.RLock()
	defer n.mu.RUnlock()
	var invalid error
	for _, a := range alerts {
		n.c.sent.Add(1)
		if n.closed {
			n.c.droppedClosed.Add(1)
			continue
		}
		a, err := normalise(a, now)
		if err != nil {
			n.c.droppedInvalid.Add(1)
			if invalid == nil {
				invalid = err
			}
			continue
		}
		n.track(a)
		if len(n.receivers) == 0 {
			n.c.droppedNoReceivers.Add(1)
			continue
		}
		for _, r := range n.receivers {
			r.enqueue(a, arrived)
		}
	}
	if invalid != nil {
		// One line per call, not per alert, so that a caller with a bug does not flood the log.
		n.log.Warn("alert dropped", "reason", "invalid", "err", invalid)
	}
	if n.closed {
		n.log.Warn("alerts sent after close; dropped", "alerts", len(alerts))
	}
}

// track keeps the set of firing alerts up to date for re-posting.
func (n *Notifier) track(a Alert) {
	n.fmu.Lock()
	defer n.fmu.Unlock()
	if a.Status == StatusResolved {
		delete(n.firing, a.Fingerprint)
		return
	}
	if _, known := n.firing[a.Fingerprint]; !known && len(n.firing) >= n.o.MaxFiring {
		n.c.droppedFiringFull.Add(1)
		return
	}
	n.firing[a.Fingerprint] = a
}

// firingAlerts gives the firing alerts, in no particular order.
func (n *Notifier) firingAlerts() []Alert {
	n.fmu.Lock()
	defer n.fmu.Unlock()
	return slices.Collect(maps.Values(n.firing))
}

// Counters gives the notifier's counters by name:
//
//	sent                      alerts handed to Send
//	delivered                 alerts in requests a receiver accepted (2xx), per receiver
//	resent                    firing alerts re-posted to Alertmanager receivers
//	repeated                  firing alerts delivered again to webhooks (their repeat_interval)
//	requests                  HTTP requests made, retries included
//	retried                   requests made again after a network error, 429 or 5xx
//	failed                    requests given up: after MaxAttempts, or on another 4xx
//	skipped.resolved          resolved alerts not queued for a webhook without send_resolved
//	superseded                queued alerts replaced by a later state of the same series
//	dropped.invalid           alerts Alertmanager would refuse (no labels, bad names, …)
//	dropped.closed            alerts sent after Close
//	dropped.no_receivers      alerts sent while there was no receiver
//	dropped.queue_full        oldest alerts pushed out of a full queue
//	dropped.receiver_removed  queued alerts of a removed receiver, and its request under way
//	dropped.receiver_changed  alerts in a request abandoned when the receiver's config changed
//	dropped.shutdown          alerts still queued or under way when Close's context ended
//	dropped.delivery_failed   alerts in failed requests
//	dropped.firing_full       firing alerts not remembered for re-posting (MaxFiring)
//	receiver.<id>.delivered, receiver.<id>.failed, receiver.<id>.dropped.queue_full
func (n *Notifier) Counters() map[string]uint64 {
	m := map[string]uint64{
		"sent":                     n.c.sent.Load(),
		"delivered":                n.c.delivered.Load(),
		"resent":                   n.c.resent.Load(),
		"repeated":                 n.c.repeated.Load(),
		"requests":                 n.c.requests.Load(),
		"retried":                  n.c.retried.Load(),
		"failed":                   n.c.failed.Load(),
		"skipped.resolved":         n.c.skippedResolved.Load(),
		"superseded":               n.c.superseded.Load(),
		"dropped.invalid":          n.c.droppedInvalid.Load(),
		"dropped.closed":           n.c.droppedClosed.Load(),
		"dropped.no_receivers":     n.c.droppedNoReceivers.Load(),
		"dropped.queue_full":       n.c.droppedQueueFull.Load(),
		"dropped.receiver_removed": n.c.droppedRemoved.Load(),
		"dropped.receiver_changed": n.c.droppedChanged.Load(),
		"dropped.shutdown":         n.c.droppedShutdown.Load(),
		"dropped.delivery_failed":  n.c.droppedFailed.Load(),
		"dropped.firing_full":      n.c.droppedFiringFull.Load(),
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for id, rc := range n.perID {
		p := "receiver." + id + "."
		m[p+"delivered"] = rc.delivered.Load()
		m[p+"failed"] = rc.failed.Load()
		m[p+"dropped.queue_full"] = rc.droppedQueueFull.Load()
	}
	return m
}

// Close delivers what is queued, without waiting for GroupWait, and stops. When ctx ends first,
// requests under way are abandoned, what is left is counted (dropped.shutdown) and the error
// says so. It is safe to call twice, and from several goroutines.
func (n *Notifier) Close(ctx context.Context) error {
	before := n.c.droppedShutdown.Load()
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		for _, r := range n.receivers {
			close(r.flush)
		}
		n.mu.Unlock()
		go func() {
			n.wg.Wait()
			close(n.allDone)
		}()
	})
	select {
	case <-n.allDone:
		return nil
	case <-ctx.Done():
	}
	n.mu.RLock()
	for _, r := range n.receivers {
		r.cancel(errShutdown)
	}
	n.mu.RUnlock()
	<-n.allDone
	lost := n.c.droppedShutdown.Load() - before
	if lost == 0 {
		// The context ended as the last request finished; nothing was cut short.
		return nil
	}
	return fmt.Errorf("closing notifier: delivery cut short, %d alerts dropped: %w", lost, context.Cause(ctx))
}
