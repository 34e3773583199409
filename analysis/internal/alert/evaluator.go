// Package alert evaluates the alert rules mix pushes: every 10 s it reads the bucket that just
// ended from the engine, makes the series each rule covers (per edge, node, L7 endpoint, address
// or port, narrowed by the rule's selector), compares each series with the rule's threshold or
// with its seasonal forecast (package forecast), and moves the series' alert through pending,
// firing and resolved. Firing and resolved alerts go to the receivers (package notify) naming
// both ends' owners, and to the history in the store; an edge never seen before is an event.
// When an alert fires, it can ask mix for a narrow subscription with frames, and attaches the
// first flow trace that subscription captures.
package alert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/engine"
	"github.com/quanyu/quanyu/analysis/internal/forecast"
	"github.com/quanyu/quanyu/analysis/internal/notify"
	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// Source is what the evaluator reads; the engine is one.
type Source interface {
	Bucket(ctx context.Context, start time.Time, level store.Level, fn func(k *store.RollupKey, f *store.Figures)) error
	EdgeSockets(ctx context.Context, from, to time.Time, source, target string, limit int) ([]engine.Socket, error)
	Edges(ctx context.Context, from, to time.Time, fn func(source, target string)) error
	EdgeHosts(ctx context.Context, server netip.Addr, port uint16, since time.Time) ([]string, error)
	Conversation(communityID string) (engine.Conversation, error)
	SetEventHook(fn func(agent string, ev *sdk.Event))
}

// Notifier takes alerts to deliver; notify.Notifier is one.
type Notifier interface{ Send(alerts ...notify.Alert) }

// EvidenceRequester has mix push a subscription to the agents.
type EvidenceRequester interface {
	Subscribe(ctx context.Context, sub sdk.Subscription) error
}

// Options configure an Evaluator; zero fields take the defaults.
type Options struct {
	Log      *slog.Logger
	Source   Source
	Store    store.Store
	Notifier Notifier          // nil: alerts are kept, not sent
	Evidence EvidenceRequester // nil: no evidence is captured
	// EvidenceFor is how long an evidence subscription lives (mix withdraws it then).
	EvidenceFor time.Duration // default 2m
	// Delay is how long after a bucket ends it is evaluated: records of the bucket's last
	// seconds are still on their way from the agents.
	Delay time.Duration // default 2s
	// NewEdgeGrace: edges first seen this soon after the start are not events, since an
	// analysis with an empty store would otherwise call every edge new.
	NewEdgeGrace time.Duration // default 2m
	// KnownEdges is how far back the store is read at the start for edges already seen.
	KnownEdges time.Duration // default 30 days
	// WarmUp bounds how much history a forecast rule learns from before its first evaluation
	// (after a start, a new or changed rule, new prediction settings): a season plus
	// min_history, at most this. Keep it within the 10 s rollups' retention.
	WarmUp      time.Duration // default 1h; negative: none
	MaxSeries   int           // series kept over all rules; default 50,000
	MaxEdges    int           // known edges kept; default 200,000
	ExternalURL string        // the UI, for links in alerts
	Now         func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Log = o.Log.With("component", "alert")
	if o.EvidenceFor <= 0 {
		o.EvidenceFor = 2 * time.Minute
	}
	if o.Delay <= 0 {
		o.Delay = 2 * time.Second
	}
	if o.NewEdgeGrace < 0 {
		o.NewEdgeGrace = 0
	} else if o.NewEdgeGrace == 0 {
		o.NewEdgeGrace = 2 * time.Minute
	}
	if o.WarmUp == 0 {
		o.WarmUp = time.Hour
	}
	if o.KnownEdges <= 0 {
		o.KnownEdges = 30 * 24 * time.Hour
	}
	if o.MaxSeries <= 0 {
		o.MaxSeries = 50000
	}
	if o.MaxEdges <= 0 {
		o.MaxEdges = 200000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

const (
	step = stepSeconds * time.Second
	// seriesIdle: a series without data this long is forgotten (unless its alert is active).
	seriesIdle = time.Hour
	// forecastPoints is how much of each forecast series the API can chart: 15 minutes.
	forecastPoints = 90
	// historyLimit bounds one history read.
	historyLimit = 1000
)

// Evaluator is the alert evaluator. Its lifecycle: New; SetRules, SetSettings and SetCatalog at
// any time (mix pushes them); Run until its context ends. Evaluate may be called directly
// instead of Run (tests do).
type Evaluator struct {
	o   Options
	log *slog.Logger

	mu       sync.Mutex
	rules    []*ruleState
	settings api.PredictionSettings
	catalog  *api.Catalog
	nseries  int
	edges    map[[2]string]bool
	started  time.Time
	last     time.Time         // the last bucket evaluated
	events   []Event           // the latest, newest last, bounded
	restored map[string]*Alert // firing alerts read back at the start, by fingerprint
	rulesSet bool

	warming sync.WaitGroup // forecast warm-ups under way

	evMu    sync.Mutex
	watches map[string]*watch // evidence subscriptions by id
	pending atomic.Int32      // watches waiting for an event

	c counters
}

type counters struct {
	evaluations, evalErrors, evalNs                   atomic.Uint64
	seriesDropped, edgesDropped                       atomic.Uint64
	fired, resolved, events                           atomic.Uint64
	evidenceRequested, evidenceCaptured, evidenceNone atomic.Uint64
	evidenceFailed, historyErrors, warmUps            atomic.Uint64
}

type ruleState struct {
	rule   api.Rule
	def    string // the rule as JSON, to tell a changed rule from the same one
	src    store.Level
	params *forecast.Params // forecast rules
	series map[seriesKey]*seriesState
	// warm: the forecasts start afresh and learn the stored history first (see warmUp).
	warm bool
}

type seriesState struct {
	key       seriesKey
	fp        string // fingerprint(rule, key), made once
	model     *forecast.Model
	lastData  time.Time
	alert     *Alert // pending or firing; nil otherwise
	topClient string // the busiest client in the last bucket (node-like levels)
	started   bool   // the first (partial) bucket was seen; forecasting starts with the next
	ring      []ForecastPoint
	ringNext  int
}

type watch struct {
	fingerprint string
	alertID     string
	firedAt     time.Time
	expires     time.Time
	seenAt      time.Time
	cid, agent  string
}

// New makes an evaluator: it reads the edges already known and the alerts still firing from
// the store, and hooks the engine's flow events for evidence.
func New(ctx context.Context, o Options) (*Evaluator, error) {
	o = o.withDefaults()
	if o.Source == nil || o.Store == nil {
		return nil, errors.New("alert evaluator: a source and a store are required")
	}
	now := o.Now()
	ev := &Evaluator{o: o, log: o.Log, settings: api.DefaultPredictionSettings(), edges: map[[2]string]bool{},
		started: now, restored: map[string]*Alert{}, watches: map[string]*watch{}}
	err := o.Source.Edges(ctx, now.Add(-o.KnownEdges), now, func(s, t string) {
		if len(ev.edges) < o.MaxEdges {
			ev.edges[[2]string{s, t}] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading the edges already seen: %w", err)
	}
	recs, err := o.Store.ReadAlerts(ctx, store.AlertQuery{Kind: store.KindAlert, State: StateFiring, Limit: historyLimit})
	if err != nil {
		return nil, fmt.Errorf("reading the alerts still firing: %w", err)
	}
	for _, r := range recs {
		var a Alert
		if err := json.Unmarshal(r.Body, &a); err == nil {
			ev.restored[a.Fingerprint] = &a
		}
	}
	o.Source.SetEventHook(ev.onEvent)
	return ev, nil
}

// SetRules replaces the rules. A rule that is unchanged keeps its series, forecasts and
// alerts; the alerts of a rule removed or changed are resolved.
func (ev *Evaluator) SetRules(rules []api.Rule) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	old := map[string]*ruleState{}
	for _, rs := range ev.rules {
		old[rs.rule.ID] = rs
	}
	var next []*ruleState
	var out []notify.Alert
	now := ev.o.Now()
	for _, r := range rules {
		def, _ := json.Marshal(r)
		if rs, ok := old[r.ID]; ok && rs.def == string(def) {
			next = append(next, rs)
			delete(old, r.ID)
			continue
		}
		rs := &ruleState{rule: r, def: string(def), src: rowSource(&r), series: map[seriesKey]*seriesState{}}
		if r.Kind == api.KindForecast {
			rs.params = forecast.NewParams(ev.settings, step, r.Band, minDev(r.Metric))
			rs.warm = true
		}
		next = append(next, rs)
	}
	for _, rs := range old {
		out = append(out, ev.dropRule(rs, now, "the rule was changed or removed")...)
	}
	ev.rules = next
	ev.rulesSet = true
	ev.send(out)
}

// SetSettings replaces the prediction settings; forecasts start learning again when they
// change, since a season of another length makes the old seasonal profile meaningless.
func (ev *Evaluator) SetSettings(s api.PredictionSettings) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if s == ev.settings {
		return
	}
	ev.settings = s
	for _, rs := range ev.rules {
		if rs.params == nil {
			continue
		}
		rs.params = forecast.NewParams(s, step, rs.rule.Band, minDev(rs.rule.Metric))
		rs.warm = true
		for _, ss := range rs.series {
			ss.model = nil
			ss.ring = ss.ring[:0]
			ss.ringNext = 0
		}
	}
}

// SetCatalog replaces the application catalog used for selectors and owners.
func (ev *Evaluator) SetCatalog(c *api.Catalog) {
	ev.mu.Lock()
	ev.catalog = c
	ev.mu.Unlock()
}

// Run evaluates each 10 s bucket Delay after it ends, until ctx ends.
func (ev *Evaluator) Run(ctx context.Context) {
	for {
		now := ev.o.Now()
		bucket := now.Add(-ev.o.Delay).Truncate(step).Add(-step)
		next := bucket.Add(2 * step).Add(ev.o.Delay)
		ev.mu.Lock()
		due := bucket.After(ev.last)
		ev.mu.Unlock()
		if due {
			ev.Evaluate(ctx, bucket)
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Evaluate evaluates every rule on the 10 s bucket starting at bucket.
func (ev *Evaluator) Evaluate(ctx context.Context, bucket time.Time) {
	began := time.Now()
	defer func() {
		ev.c.evaluations.Add(1)
		ev.c.evalNs.Add(uint64(time.Since(began)))
	}()
	bucket = bucket.Truncate(step)
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.last = bucket

	// Read each rollup level the rules need, once, adding up the deltas of each key.
	need := map[store.Level]bool{store.LevelApp: true}
	for _, rs := range ev.rules {
		need[rs.src] = true
	}
	rows := map[store.Level]map[store.RollupKey]*store.Figures{}
	for l := range need {
		m := map[store.RollupKey]*store.Figures{}
		if err := ev.readBucket(ctx, bucket, l, m); err != nil {
			ev.c.evalErrors.Add(1)
			ev.log.Warn("reading a bucket for the alert rules failed", "bucket", bucket, "level", l, "err", err)
			return
		}
		rows[l] = m
	}
	res := newResolver(ev.catalog)
	var hist []store.AlertRecord
	var out []notify.Alert
	h, fresh := ev.newEdges(bucket, rows[store.LevelApp], res)
	hist = append(hist, h...)

	for _, rs := range ev.rules {
		if rs.rule.Kind == api.KindNewEdge {
			h, o := ev.newEdgeAlerts(rs, bucket, fresh, res)
			hist = append(hist, h...)
			out = append(out, o...)
			continue
		}
		if rs.warm {
			rs.warm = false
			ev.warmUp(ctx, rs, bucket)
		}
		h, o := ev.evaluateRule(ctx, rs, bucket, rows[rs.src], res)
		hist = append(hist, h...)
		out = append(out, o...)
	}
	// Restored alerts whose rule never came back, or whose series is gone, are resolved once
	// the rules have been pushed and a little time has passed for their series to show up.
	if ev.rulesSet && bucket.Sub(ev.started) > 2*time.Minute && len(ev.restored) > 0 {
		for fp, a := range ev.restored {
			delete(ev.restored, fp)
			ev.resolve(a, bucket.Add(step), "its rule or series no longer exists")
			hist = append(hist, record(a))
			out = append(out, ev.toNotify(a))
		}
	}
	hist = append(hist, ev.progressEvidence(bucket)...)
	ev.send(out)
	ev.writeHistory(ctx, hist)
}

// evaluateRule moves every series of one rule by one bucket.
func (ev *Evaluator) evaluateRule(ctx context.Context, rs *ruleState, bucket time.Time, rows map[store.RollupKey]*store.Figures,
	res *resolver) (hist []store.AlertRecord, out []notify.Alert) {
	r := &rs.rule
	series := ev.collect(rs, bucket, rows, res)
	for sk, ss := range rs.series {
		v, ok := seriesValue(r.Metric, series[sk])
		held, band := false, (*Band)(nil)
		switch r.Kind {
		case api.KindThreshold:
			held = ok && r.Op.Holds(v, r.Value)
		case api.KindForecast:
			p, has := observe(rs, ss, bucket, v, ok)
			if !has {
				break
			}
			band = &Band{Forecast: finite(p.Forecast), Lower: finite(p.Lower), Upper: finite(p.Upper), Deviations: rs.params.Band}
			// Confirmed: a run of points out of band on one side (which a point back in the band
			// but still far out on that side does not end) long or far enough; the side is the
			// value's.
			side := v > p.Forecast && r.Direction != api.DirectionBelow || v < p.Forecast && r.Direction != api.DirectionAbove
			held = p.Ready && side && ss.model.Confirmed()
		}
		h, o := ev.step(rs, ss, bucket, held, v, ok, band, res)
		hist = append(hist, h...)
		out = append(out, o...)
		ev.forgetIdle(rs, ss, bucket)
	}
	return hist, out
}

// readBucket adds the rows of a bucket at a level into rows, summing the deltas of each key.
func (ev *Evaluator) readBucket(ctx context.Context, bucket time.Time, l store.Level, rows map[store.RollupKey]*store.Figures) error {
	return ev.o.Source.Bucket(ctx, bucket, l, func(k *store.RollupKey, f *store.Figures) {
		if cur := rows[*k]; cur != nil {
			cur.Add(f)
			return
		}
		c := &store.Figures{}
		c.Add(f)
		rows[*k] = c
	})
}

// seriesAgg is one series' figures in one bucket, with its busiest client (node-like levels).
type seriesAgg struct {
	f       store.Figures
	top     string
	topW    uint64
	clients map[string]uint64
}

// collect adds the bucket's rows up into the rule's series, and starts tracking series seen
// for the first time (as many as ev admits).
func (ev *Evaluator) collect(rs *ruleState, bucket time.Time, rows map[store.RollupKey]*store.Figures, res *resolver) map[seriesKey]*seriesAgg {
	return collectInto(rs, bucket, rows, res, func() bool {
		if ev.nseries >= ev.o.MaxSeries {
			ev.c.seriesDropped.Add(1)
			return false
		}
		ev.nseries++
		return true
	})
}

// collectInto is collect with the admission of new series decided by admit.
func collectInto(rs *ruleState, bucket time.Time, rows map[store.RollupKey]*store.Figures, res *resolver, admit func() bool) map[seriesKey]*seriesAgg {
	r := &rs.rule
	series := map[seriesKey]*seriesAgg{}
	for k, f := range rows {
		if !selects(&r.Selector, rs.src, &k, res) {
			continue
		}
		sk := keyOf(r.Level, &k)
		a := series[sk]
		if a == nil {
			a = &seriesAgg{}
			series[sk] = a
		}
		a.f.Add(f)
		if r.Level != api.LevelEdge {
			if a.clients == nil {
				a.clients = map[string]uint64{}
			}
			a.clients[k.Source] += weight(r.Metric, f)
			if w := a.clients[k.Source]; w > a.topW {
				a.top, a.topW = k.Source, w
			}
		}
	}
	for sk, a := range series {
		ss := rs.series[sk]
		if ss == nil {
			if !admit() {
				continue
			}
			ss = &seriesState{key: sk, fp: fingerprint(r.ID, sk)}
			rs.series[sk] = ss
		}
		ss.lastData = bucket
		if a.top != "" {
			ss.topClient = a.top
		}
	}
	return series
}

// seriesValue is the metric's value for a series in a bucket (a nil: no rows there). A rate
// series without rows is 0 — it had traffic and has none now; a ratio or a latency is unknown.
func seriesValue(m api.Metric, a *seriesAgg) (float64, bool) {
	if a != nil {
		return value(m, &a.f)
	}
	if isRate(m) {
		return 0, true
	}
	return 0, false
}

// observe has a series' forecast learn its value in the bucket (ok false: unknown there) and
// gives the forecast for the bucket; false when there is none yet or the value is unknown.
func observe(rs *ruleState, ss *seriesState, bucket time.Time, v float64, ok bool) (forecast.Point, bool) {
	if ss.model == nil {
		// A series' first bucket is partial (its traffic began somewhere in it, or the
		// evaluator did): learning it would start the level, the first season and the
		// deviation on a value the series never really had.
		if !ss.started {
			ss.started = true
			return forecast.Point{}, false
		}
		ss.model = forecast.NewModel(rs.params, bucket)
	}
	if !ok {
		ss.model.Skip(bucket)
		return forecast.Point{}, false
	}
	p := ss.model.Observe(bucket, v)
	ss.remember(ForecastPoint{T: bucket.UnixMilli(), Value: v, Forecast: finite(p.Forecast), Lower: finite(p.Lower), Upper: finite(p.Upper), Ready: p.Ready})
	return p, true
}

// forgetIdle drops a series without data for seriesIdle, unless it has an alert.
func (ev *Evaluator) forgetIdle(rs *ruleState, ss *seriesState, bucket time.Time) {
	if ss.alert == nil && bucket.Sub(ss.lastData) > seriesIdle {
		delete(rs.series, ss.key)
		ev.nseries--
	}
}

// warmUp has a forecast rule whose forecasts start afresh learn from the history the source
// still holds — a season plus min_history, at most Options.WarmUp, before the first bucket it
// evaluates — so that a restart or a changed rule does not leave it blind until min_history
// has passed again. Reading hours of history for thousands of series takes seconds (see
// BenchmarkWarmUpFromStore), so it is learned apart, without the evaluator's lock: models of
// their own, brought up to the buckets evaluated meanwhile, then put in place of the models
// the live evaluation started (which, without history, could not alert yet). A bucket without
// any row at the rule's level is a gap in what analysis received (it was down), not a quiet
// network: the forecasts skip it. Nothing is alerted on history.
func (ev *Evaluator) warmUp(ctx context.Context, rs *ruleState, first time.Time) {
	if ev.o.WarmUp <= 0 {
		return
	}
	ev.warming.Add(1)
	go func() {
		defer ev.warming.Done()
		ev.mu.Lock()
		res := newResolver(ev.catalog)
		ev.mu.Unlock()
		// The rule as it is now; rs.params is replaced (and a new warm-up begun) when the
		// prediction settings change, which makes this one moot.
		own := &ruleState{rule: rs.rule, src: rs.src, params: rs.params, series: map[seriesKey]*seriesState{}}
		span := min(own.params.Season+own.params.MinHistory, ev.o.WarmUp).Truncate(step)
		began := time.Now()
		learned := 0
		from, to := first.Add(-span), first
		for {
			n, err := ev.learn(ctx, own, from, to, res)
			learned += n
			if err != nil {
				if ctx.Err() == nil { // not the evaluator stopping
					ev.c.evalErrors.Add(1)
					ev.log.Warn("reading history for a forecast rule failed; it learns from now on", "rule", own.rule.ID, "err", err)
				}
				return
			}
			ev.mu.Lock()
			if !ev.last.Before(to) { // buckets were evaluated meanwhile: learn them too
				from, to = to, ev.last.Add(step)
				ev.mu.Unlock()
				continue
			}
			installed := ev.install(rs, own)
			ev.mu.Unlock()
			if installed {
				ev.c.warmUps.Add(1)
				ev.log.Info("forecast rule learned from history", "rule", own.rule.ID, "buckets", learned,
					"series", len(own.series), "took", time.Since(began).Round(time.Millisecond))
			}
			return
		}
	}()
}

// learn has own's forecasts learn the buckets in [from, to), giving how many had rows.
func (ev *Evaluator) learn(ctx context.Context, own *ruleState, from, to time.Time, res *resolver) (int, error) {
	learned := 0
	rows := map[store.RollupKey]*store.Figures{}
	for b := from; b.Before(to); b = b.Add(step) {
		if err := ctx.Err(); err != nil {
			return learned, err
		}
		clear(rows)
		if err := ev.readBucket(ctx, b, own.src, rows); err != nil {
			return learned, fmt.Errorf("reading the bucket at %s: %w", b.Format(time.RFC3339), err)
		}
		if len(rows) == 0 {
			for _, ss := range own.series {
				if ss.model != nil {
					ss.model.Skip(b)
				}
			}
			continue
		}
		learned++
		series := collectInto(own, b, rows, res, func() bool { return len(own.series) < ev.o.MaxSeries })
		for sk, ss := range own.series {
			v, ok := seriesValue(own.rule.Metric, series[sk])
			observe(own, ss, b, v, ok)
			if b.Sub(ss.lastData) > seriesIdle {
				delete(own.series, sk)
			}
		}
	}
	return learned, nil
}

// install puts the forecasts own learned in place of rs's, if rs is still the rule evaluated
// with the same parameters. Called with ev.mu held.
func (ev *Evaluator) install(rs *ruleState, own *ruleState) bool {
	if rs.params != own.params || !slices.Contains(ev.rules, rs) {
		return false
	}
	for sk, w := range own.series {
		ss := rs.series[sk]
		if ss == nil {
			if ev.nseries >= ev.o.MaxSeries {
				ev.c.seriesDropped.Add(1)
				continue
			}
			ss = &seriesState{key: sk, fp: w.fp, lastData: w.lastData, topClient: w.topClient}
			rs.series[sk] = ss
			ev.nseries++
		}
		ss.model, ss.started, ss.ring, ss.ringNext = w.model, w.started, w.ring, w.ringNext
	}
	return true
}

// WaitWarmUps waits for the forecast warm-ups under way (tests use it).
func (ev *Evaluator) WaitWarmUps() { ev.warming.Wait() }

func (ss *seriesState) remember(p ForecastPoint) {
	if len(ss.ring) < forecastPoints {
		ss.ring = append(ss.ring, p)
		return
	}
	ss.ring[ss.ringNext] = p
	ss.ringNext = (ss.ringNext + 1) % forecastPoints
}

// step moves one series' alert: inactive → pending → firing → resolved.
func (ev *Evaluator) step(rs *ruleState, ss *seriesState, bucket time.Time, held bool, v float64, ok bool, band *Band,
	res *resolver) (hist []store.AlertRecord, out []notify.Alert) {
	r := &rs.rule
	end := bucket.Add(step)
	fp := ss.fp
	a := ss.alert
	if a == nil {
		if restored := ev.restored[fp]; restored != nil {
			delete(ev.restored, fp)
			a, ss.alert = restored, restored
			// Said again once its series is back: receivers that re-post firing alerts
			// (Alertmanager's) track it again, instead of letting it time out.
			if held {
				out = append(out, ev.toNotify(a))
			}
		}
	}
	if a != nil && ok {
		a.Value, a.Band, a.UpdatedAt = v, band, end
	}
	switch {
	case a == nil && held:
		a = ev.newAlert(rs, ss, bucket, v, band, res)
		ss.alert = a
		if end.Sub(a.ActiveAt) >= r.For {
			ev.fire(a, end)
			hist, out = append(hist, record(a)), append(out, ev.toNotify(a))
			ev.requestEvidence(ss, a, bucket)
		}
	case a != nil && held && a.State == StatePending:
		if end.Sub(a.ActiveAt) >= r.For {
			ev.fire(a, end)
			hist, out = append(hist, record(a)), append(out, ev.toNotify(a))
			ev.requestEvidence(ss, a, bucket)
		}
	case a != nil && !held:
		if a.State == StateFiring {
			ev.resolve(a, end, "")
			hist, out = append(hist, record(a)), append(out, ev.toNotify(a))
		}
		ss.alert = nil
	}
	return hist, out
}

func fingerprint(rule string, k seriesKey) string {
	h := sha256.Sum256([]byte(rule + "\x00" + k.String()))
	return hex.EncodeToString(h[:8])
}

// end describes one end of a series: a graph node id, or an address with a port (0 for a
// client).
func end(res *resolver, node string, addr string, port uint16) *End {
	if node == "" && addr == "" {
		return nil
	}
	var e *api.CatalogEntry
	if node != "" {
		e = res.node(node)
	} else {
		e = res.addr(addr, port)
		node = "ip:" + addr
		if e != nil {
			node = "app:" + e.App
		}
	}
	out := &End{Node: node}
	if e != nil {
		out.App, out.Owner, out.Team, out.Contact = e.App, e.Owner.Name, e.Owner.Team, e.Owner.Contact
	}
	return out
}

func nodeName(id string) string {
	if len(id) > 4 && (id[:4] == "app:") {
		return id[4:]
	}
	if len(id) > 3 && id[:3] == "ip:" {
		return id[3:]
	}
	return id
}

// describe names a series and its ends.
func describe(l api.Level, k seriesKey, top string, res *resolver) (Series, *End, *End) {
	s := Series{Source: k.source, Target: k.target, Method: k.method, Path: k.path, Port: k.port}
	if k.transport != 0 {
		s.Transport = k.transport.String()
	}
	switch l {
	case api.LevelEdge:
		s.Name = nodeName(k.source) + " → " + nodeName(k.target)
		return s, end(res, k.source, "", 0), end(res, k.target, "", 0)
	case api.LevelNode:
		s.Name = nodeName(k.target)
		return s, end(res, top, "", 0), end(res, k.target, "", 0)
	case api.LevelEndpoint:
		s.Name = nodeName(k.target) + " " + k.method + " " + k.path
		return s, end(res, top, "", 0), end(res, k.target, "", 0)
	case api.LevelAddress:
		s.Target, s.Address = "", k.target
		s.Name = k.target
		return s, end(res, "", top, 0), end(res, "", k.target, 0)
	}
	s.Name = s.Transport + "/" + strconv.Itoa(int(k.port))
	return s, end(res, "", top, 0), nil
}

func (ev *Evaluator) newAlert(rs *ruleState, ss *seriesState, bucket time.Time, v float64, band *Band, res *resolver) *Alert {
	r := &rs.rule
	s, client, server := describe(r.Level, ss.key, ss.topClient, res)
	fp := ss.fp
	a := &Alert{ID: fp + "-" + strconv.FormatInt(bucket.UnixMilli(), 10), Fingerprint: fp, Rule: r.ID, Kind: r.Kind,
		Metric: r.Metric, Level: r.Level, Severity: r.Severity, State: StatePending, Series: s, Value: v, Band: band,
		For: r.For.String(), ActiveAt: bucket, UpdatedAt: bucket.Add(step), Client: client, Server: server}
	if r.Kind == api.KindThreshold {
		t := r.Value
		a.Op, a.Threshold = r.Op, &t
	}
	a.Labels = map[string]string{"alertname": r.ID, "severity": string(r.Severity), "level": string(r.Level), "series": s.Name}
	if r.Metric != "" { // new_edge rules have none
		a.Labels["metric"] = string(r.Metric)
	}
	a.Annotations = map[string]string{}
	for _, e := range []struct {
		side string
		e    *End
	}{{"client", client}, {"server", server}} {
		if e.e == nil {
			continue
		}
		a.Labels[e.side] = nodeName(e.e.Node)
		if e.e.Owner != "" {
			a.Labels[e.side+"_owner"] = e.e.Owner
			a.Annotations[e.side+"_contact"] = e.e.Contact
		}
		if e.e.Team != "" {
			a.Labels[e.side+"_team"] = e.e.Team
		}
	}
	maps.Copy(a.Labels, r.Labels)
	a.Summary = summary(a)
	a.Annotations["summary"] = a.Summary
	maps.Copy(a.Annotations, r.Annotations)
	return a
}

// summary says in one line what is wrong and who answers for both ends.
func summary(a *Alert) string {
	var cond string
	if a.Threshold != nil {
		cond = fmt.Sprintf("%s %s %s", formatValue(a.Metric, a.Value), a.Op, formatValue(a.Metric, *a.Threshold))
	} else if a.Band != nil {
		cond = fmt.Sprintf("%s outside the forecast band %s–%s", formatValue(a.Metric, a.Value),
			formatValue(a.Metric, a.Band.Lower), formatValue(a.Metric, a.Band.Upper))
	}
	s := fmt.Sprintf("%s of %s: %s", a.Metric, a.Series.Name, cond)
	if a.Kind == api.KindNewEdge {
		s = "new edge " + a.Series.Name + ": never seen before"
	}
	owners := ""
	for _, e := range []*End{a.Client, a.Server} {
		if e == nil || e.Owner == "" {
			continue
		}
		if owners != "" {
			owners += ", "
		}
		owners += nodeName(e.Node) + ": " + e.Owner
		if e.Contact != "" {
			owners += " <" + e.Contact + ">"
		}
	}
	if owners != "" {
		s += " (owners " + owners + ")"
	}
	return s
}

func formatValue(m api.Metric, v float64) string {
	switch {
	case m.IsRatio():
		return strconv.FormatFloat(v*100, 'f', 1, 64) + "%"
	case m == api.MetricLatencyP50 || m == api.MetricLatencyP95 || m == api.MetricLatencyP99 || m == api.MetricRTTP95:
		return strconv.FormatFloat(v*1000, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'g', 4, 64) + "/s"
}

func (ev *Evaluator) fire(a *Alert, at time.Time) {
	a.State = StateFiring
	a.FiredAt, a.UpdatedAt = &at, at
	a.Summary = summary(a)
	a.Annotations["summary"] = a.Summary
	ev.c.fired.Add(1)
	ev.log.Info("alert firing", "rule", a.Rule, "series", a.Series.Name, "value", a.Value)
}

func (ev *Evaluator) resolve(a *Alert, at time.Time, why string) {
	a.State = StateResolved
	a.ResolvedAt, a.UpdatedAt = &at, at
	if why != "" {
		a.Annotations["resolved_because"] = why
	}
	ev.c.resolved.Add(1)
	ev.log.Info("alert resolved", "rule", a.Rule, "series", a.Series.Name, "why", why)
}

// dropRule resolves the firing alerts of a rule that is going away.
func (ev *Evaluator) dropRule(rs *ruleState, now time.Time, why string) []notify.Alert {
	var out []notify.Alert
	var hist []store.AlertRecord
	for _, ss := range rs.series {
		ev.nseries--
		if a := ss.alert; a != nil && a.State == StateFiring {
			ev.resolve(a, now, why)
			out = append(out, ev.toNotify(a))
			hist = append(hist, record(a))
		}
	}
	ev.writeHistory(context.Background(), hist)
	return out
}

func (ev *Evaluator) toNotify(a *Alert) notify.Alert {
	n := notify.Alert{Fingerprint: a.Fingerprint, Status: a.State, Labels: a.Labels, Annotations: a.Annotations,
		StartsAt: a.ActiveAt}
	if a.FiredAt != nil {
		n.StartsAt = *a.FiredAt
	}
	if a.ResolvedAt != nil {
		n.EndsAt = *a.ResolvedAt
	}
	if ev.o.ExternalURL != "" {
		n.GeneratorURL = ev.o.ExternalURL + "/#/alerts/" + a.ID
	}
	return n
}

func (ev *Evaluator) send(out []notify.Alert) {
	if len(out) > 0 && ev.o.Notifier != nil {
		ev.o.Notifier.Send(out...)
	}
}

func record(a *Alert) store.AlertRecord {
	body, _ := json.Marshal(a)
	return store.AlertRecord{ID: a.ID, Kind: store.KindAlert, Fingerprint: a.Fingerprint, Rule: a.Rule, State: a.State,
		Started: a.ActiveAt, Updated: a.UpdatedAt, Body: body}
}

func (ev *Evaluator) writeHistory(ctx context.Context, hist []store.AlertRecord) {
	if len(hist) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := ev.o.Store.WriteAlerts(ctx, hist); err != nil {
		ev.c.historyErrors.Add(1)
		ev.log.Warn("writing the alert history failed", "entries", len(hist), "err", err)
	}
}

// newEdges records an event for each edge of the bucket never seen before, and gives the rows
// of those edges (past the start-up grace) for the new_edge rules.
func (ev *Evaluator) newEdges(bucket time.Time, rows map[store.RollupKey]*store.Figures, res *resolver) ([]store.AlertRecord, map[[2]string][]store.RollupKey) {
	var fresh map[[2]string][]store.RollupKey
	for k := range rows {
		e := [2]string{k.Source, k.Target}
		if ev.edges[e] {
			continue
		}
		if fresh == nil {
			fresh = map[[2]string][]store.RollupKey{}
		}
		fresh[e] = append(fresh[e], k)
	}
	var hist []store.AlertRecord
	for e := range fresh {
		if len(ev.edges) >= ev.o.MaxEdges {
			ev.c.edgesDropped.Add(1)
			delete(fresh, e)
			continue
		}
		ev.edges[e] = true
		// The bucket's end, not its start: a start that falls inside a bucket would otherwise
		// hide an edge first seen after the grace, in the bucket that straddles its end.
		if bucket.Add(step).Sub(ev.started) <= ev.o.NewEdgeGrace {
			delete(fresh, e)
			continue
		}
		sk := seriesKey{source: e[0], target: e[1]}
		s, client, server := describe(api.LevelEdge, sk, "", res)
		id := fingerprint("new_edge", sk)
		evt := Event{ID: id + "-" + strconv.FormatInt(bucket.UnixMilli(), 10), Kind: EventNewEdge, Time: bucket, Series: s,
			Client: client, Server: server, Summary: "new edge " + s.Name + ": never seen before"}
		ev.events = append(ev.events, evt)
		if len(ev.events) > historyLimit {
			ev.events = slices.Delete(ev.events, 0, len(ev.events)-historyLimit)
		}
		ev.c.events.Add(1)
		ev.log.Info("new edge", "edge", s.Name)
		body, _ := json.Marshal(evt)
		hist = append(hist, store.AlertRecord{ID: evt.ID, Kind: store.KindEvent, Fingerprint: id, State: EventNewEdge,
			Started: bucket, Updated: bucket, Body: body})
	}
	return hist, fresh
}

// newEdgeAlerts fires a new_edge rule's alert for each new edge of the bucket with a row the
// rule selects (fresh: the rows of the new edges, by edge), and resolves its alerts that have
// fired NewEdgeHold ago.
func (ev *Evaluator) newEdgeAlerts(rs *ruleState, bucket time.Time, fresh map[[2]string][]store.RollupKey,
	res *resolver) (hist []store.AlertRecord, out []notify.Alert) {
	end := bucket.Add(step)
	// Alerts read back at a start go on until their hold is over.
	for fp, a := range ev.restored {
		if a.Rule == rs.rule.ID && a.Kind == api.KindNewEdge && ev.nseries < ev.o.MaxSeries {
			delete(ev.restored, fp)
			sk := seriesKey{source: a.Series.Source, target: a.Series.Target}
			rs.series[sk] = &seriesState{key: sk, fp: fp, alert: a, lastData: bucket}
			ev.nseries++
		}
	}
	for sk, ss := range rs.series {
		a := ss.alert
		if a == nil || a.FiredAt == nil || end.Before(a.FiredAt.Add(api.NewEdgeHold)) {
			continue
		}
		ev.resolve(a, end, "")
		hist, out = append(hist, record(a)), append(out, ev.toNotify(a))
		delete(rs.series, sk)
		ev.nseries--
	}
	for e, keys := range fresh {
		if !slices.ContainsFunc(keys, func(k store.RollupKey) bool { return selects(&rs.rule.Selector, rs.src, &k, res) }) {
			continue
		}
		sk := seriesKey{source: e[0], target: e[1]}
		if rs.series[sk] != nil {
			continue
		}
		if ev.nseries >= ev.o.MaxSeries {
			ev.c.seriesDropped.Add(1)
			continue
		}
		ss := &seriesState{key: sk, fp: fingerprint(rs.rule.ID, sk), lastData: bucket}
		rs.series[sk] = ss
		ev.nseries++
		ss.alert = ev.newAlert(rs, ss, bucket, 0, nil, res)
		ev.fire(ss.alert, end)
		hist, out = append(hist, record(ss.alert)), append(out, ev.toNotify(ss.alert))
		ev.requestEvidence(ss, ss.alert, bucket)
	}
	return hist, out
}

// finite keeps NaN and infinities out of JSON, which cannot carry them.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
