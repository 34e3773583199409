package alert

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
)

func decodeAlert(body []byte) *Alert {
	var a Alert
	if json.Unmarshal(body, &a) != nil {
		return nil
	}
	return &a
}

// copyAlert gives a copy the caller may keep: alerts in memory change under mu.
func copyAlert(a *Alert) Alert {
	body, _ := json.Marshal(a)
	var c Alert
	_ = json.Unmarshal(body, &c)
	return c
}

// withoutTrace is an alert for a listing: the evidence's flow trace (up to thousands of records)
// is left out; Get gives it.
func withoutTrace(a Alert) Alert {
	if a.Evidence != nil && a.Evidence.Trace != nil {
		e := *a.Evidence
		e.Trace = nil
		a.Evidence = &e
	}
	return a
}

// Active gives the pending and firing alerts, firing first, then by severity and time, without
// their evidence traces.
func (ev *Evaluator) Active() []Alert {
	ev.mu.Lock()
	out := []Alert{}
	for _, rs := range ev.rules {
		for _, ss := range rs.series {
			if ss.alert != nil {
				out = append(out, withoutTrace(copyAlert(ss.alert)))
			}
		}
	}
	for _, a := range ev.restored {
		out = append(out, withoutTrace(copyAlert(a)))
	}
	ev.mu.Unlock()
	rank := map[string]int{StateFiring: 0, StatePending: 1}
	sev := map[string]int{"critical": 0, "warning": 1, "info": 2}
	slices.SortFunc(out, func(a, b Alert) int {
		return cmp.Or(cmp.Compare(rank[a.State], rank[b.State]), cmp.Compare(sev[string(a.Severity)], sev[string(b.Severity)]),
			a.ActiveAt.Compare(b.ActiveAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// History gives the alerts that fired, newest change first: firing ones and resolved ones,
// without their evidence traces.
func (ev *Evaluator) History(ctx context.Context, state string, since time.Time, limit int) ([]Alert, error) {
	if limit <= 0 || limit > historyLimit {
		limit = historyLimit
	}
	recs, err := ev.o.Store.ReadAlerts(ctx, store.AlertQuery{Kind: store.KindAlert, State: state, Since: since, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("reading the alert history: %w", err)
	}
	out := []Alert{}
	for _, r := range recs {
		if a := decodeAlert(r.Body); a != nil {
			out = append(out, withoutTrace(*a))
		}
	}
	return out, nil
}

// Get gives one alert by id: the active one in memory, else from the history.
func (ev *Evaluator) Get(ctx context.Context, id string) (Alert, bool, error) {
	ev.mu.Lock()
	for _, rs := range ev.rules {
		for _, ss := range rs.series {
			if ss.alert != nil && ss.alert.ID == id {
				a := copyAlert(ss.alert)
				ev.mu.Unlock()
				return a, true, nil
			}
		}
	}
	ev.mu.Unlock()
	// The id starts with the fingerprint, which the history is indexed by in spirit.
	fp, _, _ := cutLast(id, '-')
	recs, err := ev.o.Store.ReadAlerts(ctx, store.AlertQuery{Kind: store.KindAlert, Fingerprint: fp, Limit: historyLimit})
	if err != nil {
		return Alert{}, false, fmt.Errorf("reading alert %q: %w", id, err)
	}
	for _, r := range recs {
		if r.ID == id {
			if a := decodeAlert(r.Body); a != nil {
				return *a, true, nil
			}
		}
	}
	return Alert{}, false, nil
}

func cutLast(s string, sep byte) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Events gives the events (new edges), newest first, from the store.
func (ev *Evaluator) Events(ctx context.Context, since time.Time, limit int) ([]Event, error) {
	if limit <= 0 || limit > historyLimit {
		limit = historyLimit
	}
	recs, err := ev.o.Store.ReadAlerts(ctx, store.AlertQuery{Kind: store.KindEvent, Since: since, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("reading events: %w", err)
	}
	out := []Event{}
	for _, r := range recs {
		var e Event
		if json.Unmarshal(r.Body, &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// Forecasts gives the recent forecast points of the forecast rules' series about a node or an
// edge: edge series between source and target, and node and endpoint series of the target
// (source empty: of the target only).
func (ev *Evaluator) Forecasts(source, target string) []ForecastSeries {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	res := newResolver(ev.catalog)
	out := []ForecastSeries{}
	for _, rs := range ev.rules {
		if rs.params == nil {
			continue
		}
		for _, ss := range rs.series {
			k := ss.key
			if k.target != target || k.source != "" && k.source != source || len(ss.ring) == 0 {
				continue
			}
			s, _, _ := describe(rs.rule.Level, k, "", res)
			fs := ForecastSeries{Rule: rs.rule.ID, Metric: rs.rule.Metric, Level: rs.rule.Level, Series: s,
				StepMs: step.Milliseconds(), Points: make([]ForecastPoint, 0, len(ss.ring))}
			fs.Points = append(fs.Points, ss.ring[ss.ringNext:]...)
			fs.Points = append(fs.Points, ss.ring[:ss.ringNext]...)
			out = append(out, fs)
		}
	}
	slices.SortFunc(out, func(a, b ForecastSeries) int {
		return cmp.Or(cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Series.Name, b.Series.Name))
	})
	return out
}

// Counters gives the evaluator's counters by name.
func (ev *Evaluator) Counters() map[string]uint64 {
	ev.mu.Lock()
	series := ev.nseries
	rules := len(ev.rules)
	edges := len(ev.edges)
	ev.mu.Unlock()
	c := &ev.c
	return map[string]uint64{
		"rules":                     uint64(rules),
		"series":                    uint64(series),
		"edges_known":               uint64(edges),
		"evaluations":               c.evaluations.Load(),
		"evaluation_errors":         c.evalErrors.Load(),
		"evaluation_ns":             c.evalNs.Load(),
		"series_dropped.max_series": c.seriesDropped.Load(),
		"edges_dropped.max_edges":   c.edgesDropped.Load(),
		"alerts_fired":              c.fired.Load(),
		"alerts_resolved":           c.resolved.Load(),
		"events":                    c.events.Load(),
		"evidence_requested":        c.evidenceRequested.Load(),
		"evidence_captured":         c.evidenceCaptured.Load(),
		"evidence_none":             c.evidenceNone.Load(),
		"evidence_failed":           c.evidenceFailed.Load(),
		"history_write_errors":      c.historyErrors.Load(),
		"forecast_warm_ups":         c.warmUps.Load(),
	}
}
