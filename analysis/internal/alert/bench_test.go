package alert

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/engine"
	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// BenchmarkEvaluate10kForecastSeries is the performance target of the alerting work: one
// evaluation of a forecast rule covering 10,000 edge series (reading the bucket's rows, making
// the series, forecasting each, moving each alert), which happens every 10 s. cpu_%_of_a_core
// is the share of one core that takes: the target is under 10.
func BenchmarkEvaluate10kForecastSeries(b *testing.B) {
	const edges = 10000
	st, err := store.OpenSQLite(filepath.Join(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	src := newFakeSource()
	clock := t0
	ev, err := New(context.Background(), Options{Source: src, Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NewEdgeGrace: -1, Now: func() time.Time { return clock }})
	if err != nil {
		b.Fatal(err)
	}
	s := api.DefaultPredictionSettings()
	s.Season, s.MinHistory = 10*time.Minute, 5*time.Minute
	ev.SetSettings(s)
	ev.SetRules([]api.Rule{{ID: "traffic", Kind: api.KindForecast, Metric: api.MetricRequestRate, Level: api.LevelEdge,
		Severity: api.SeverityWarning, Direction: api.DirectionBoth}})
	// The same rows in every bucket: the source hands them out by bucket start.
	rows := make([]store.Rollup, edges)
	for i := range rows {
		rows[i] = store.Rollup{Key: store.RollupKey{Source: fmt.Sprintf("app:client-%d", i), Target: fmt.Sprintf("app:server-%d", i%500),
			Transport: sdk.TransportTCP, Port: 8080}, Figures: store.Figures{Requests: uint64(100 + i%50), Errors: 1}}
	}
	// A source whose every bucket has the rows.
	bench := &benchSource{fakeSource: src, rows: rows}
	ev.o.Source = bench
	ctx := context.Background()
	// Warm up past the forecasts' first season of learning, as in a long-running analysis.
	for i := 0; i < 80; i++ {
		ev.Evaluate(ctx, t0.Add(time.Duration(i)*step))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.Evaluate(ctx, t0.Add(time.Duration(80+i)*step))
	}
	b.StopTimer()
	if n := ev.Counters()["series"]; n != edges {
		b.Fatalf("%d series, want %d", n, edges)
	}
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(per/float64(10*time.Second)*100, "cpu_%_of_a_core")
	b.ReportMetric(per/edges, "ns/series")
}

type benchSource struct {
	*fakeSource
	rows []store.Rollup
}

func (s *benchSource) Bucket(_ context.Context, _ time.Time, l store.Level, fn func(*store.RollupKey, *store.Figures)) error {
	if l != store.LevelApp {
		return nil
	}
	for i := range s.rows {
		fn(&s.rows[i].Key, &s.rows[i].Figures)
	}
	return nil
}

// BenchmarkWarmUpFromStore is what a forecast rule's warm-up costs after a restart: learning
// 10 minutes of stored history (60 buckets of 10 s) of 10,000 edge series, read from SQLite
// through the real engine. It runs apart from the evaluations, which go on meanwhile.
// ms_per_hour_of_history scales it to an hour, Options.WarmUp's default bound.
func BenchmarkWarmUpFromStore(b *testing.B) {
	const edges, buckets = 10000, 60
	ctx := context.Background()
	st, err := store.OpenSQLite(filepath.Join(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	rows := make([]store.Rollup, 0, edges)
	for j := -buckets; j < 0; j++ {
		rows = rows[:0]
		for i := range edges {
			rows = append(rows, store.Rollup{Bucket: t0.Add(time.Duration(j) * step),
				Key: store.RollupKey{Level: store.LevelApp, Source: fmt.Sprintf("app:client-%d", i), Target: fmt.Sprintf("app:server-%d", i%500),
					Transport: sdk.TransportTCP, Port: 8080}, Figures: store.Figures{Flows: 1, Requests: uint64(100 + (i+j)%50), Errors: 1}})
		}
		if err := st.WriteRollups(ctx, store.Res10s, rows); err != nil {
			b.Fatal(err)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The engine starts 11 minutes later, so that the history is past the 10 minutes it keeps in
	// memory and is read from SQLite, as most of a longer warm-up is.
	eng, err := engine.New(ctx, engine.Options{Store: st, Log: quiet, Now: func() time.Time { return t0.Add(11 * time.Minute) }})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	ev, err := New(ctx, Options{Source: eng, Store: st, Log: quiet, NewEdgeGrace: -1, Now: func() time.Time { return t0 }})
	if err != nil {
		b.Fatal(err)
	}
	s := api.DefaultPredictionSettings()
	s.Season, s.MinHistory = 5*time.Minute, 5*time.Minute
	ev.SetSettings(s)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A rule new each time: each learns the history afresh.
		ev.SetRules([]api.Rule{{ID: fmt.Sprintf("traffic-%d", i), Kind: api.KindForecast, Metric: api.MetricRequestRate,
			Level: api.LevelEdge, Severity: api.SeverityWarning, Direction: api.DirectionBoth}})
		ev.Evaluate(ctx, t0)
		ev.WaitWarmUps()
	}
	b.StopTimer()
	if n := ev.Counters()["series"]; n != edges {
		b.Fatalf("%d series, want %d", n, edges)
	}
	if fc := ev.Forecasts("app:client-7", "app:server-7"); len(fc) != 1 || len(fc[0].Points) < buckets-2 {
		b.Fatalf("forecasts %+v: the history was not learned", fc)
	}
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(per/1e6/float64(buckets)*360, "ms_per_hour_of_history")
	b.ReportMetric(per/float64(edges*buckets), "ns/series-bucket")
}
