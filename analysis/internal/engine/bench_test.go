package engine

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// benchCatalog gives 200 applications, each with a /28 of addresses.
func benchCatalog(b *testing.B) *api.Catalog {
	var entries []api.CatalogEntry
	for i := 0; i < 200; i++ {
		entries = append(entries, api.CatalogEntry{App: fmt.Sprintf("app%03d", i),
			Owner: api.Owner{Name: "owner", Contact: "o@example.com"},
			Match: []api.MatchItem{{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i), 0}), 28)}}})
	}
	c, err := api.NewCatalog(entries)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// discardRecords is a store whose record writes cost nothing, to measure Ingest alone.
type discardRecords struct{ store.Store }

func (discardRecords) WriteRecords(context.Context, store.Records) error { return nil }

// BenchmarkIngestFlows measures flow records per second through Ingest, on the goroutine that
// calls it: batches of 512 records over 50,000 live conversations between 2,000 addresses (all
// of them catalogued), each conversation reported by two agents. "sqlite" runs the store writer
// beside it (on the other core); "engine" discards records at the store, to show Ingest's own
// cost.
func BenchmarkIngestFlows(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchIngest(b, false) })
	b.Run("engine", func(b *testing.B) { benchIngest(b, true) })
}

func benchIngest(b *testing.B, discard bool) {
	clk := &clock{t: t0}
	var st store.Store = openStore(b, b.TempDir())
	if discard {
		st = discardRecords{st}
	}
	e := newEngine(b, st, clk, func(o *Options) { o.FlushInterval = time.Second })
	e.SetCatalog(benchCatalog(b))
	const convs = 50000
	flows := make([]sdk.Flow, convs)
	for i := range flows {
		c := netip.AddrFrom4([4]byte{10, 1, byte(i % 200), byte(i % 7)})
		s := netip.AddrFrom4([4]byte{10, 1, byte((i / 7) % 200), byte(8 + i%5)})
		flows[i] = tcpFlow("h", fmt.Sprintf("1:%08d", i), sdk.Endpoint{Addr: c, Port: uint16(30000 + i%30000)},
			sdk.Endpoint{Addr: s, Port: uint16(80 + i%20)}, t0, sdk.Counts{Packets: 10, IPBytes: 1500}, sdk.Counts{Packets: 8, IPBytes: 9000}, false)
	}
	const batch = 512
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for n := 0; n < b.N; n += batch {
		i := (n / batch * batch) % convs
		end := min(i+batch, convs)
		agent := "a1"
		if (n/convs)%2 == 1 {
			agent = "a2"
		}
		clk.Set(t0.Add(time.Duration(n/convs) * time.Second))
		e.Ingest([]otlpschema.Batch{{Agent: agent, Flows: flows[i:end]}})
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
	c := e.Counters()
	b.ReportMetric(float64(c["records.dropped.queue_full"])/float64(b.N), "store-dropped/record")
}

// BenchmarkGraphQuery asks for the app graph of the last hour with 1,000 nodes and 10,000
// edges, every edge active (flows and L7 latencies) in every minute of the hour.
func BenchmarkGraphQuery(b *testing.B) {
	clk := &clock{t: t0}
	st := openStore(b, b.TempDir())
	e := newEngine(b, st, clk)
	nodes := make([]netip.Addr, 1000)
	for i := range nodes {
		nodes[i] = netip.AddrFrom4([4]byte{10, 2, byte(i / 250), byte(i % 250)})
	}
	// Write an hour of 1 m rows straight to the store, then start a new engine that loads them,
	// as after a restart; the current minute comes through Ingest.
	ctx := context.Background()
	for m := 60; m >= 1; m-- {
		rows := make([]store.Rollup, 0, 10000)
		for j := 0; j < 10000; j++ {
			var f store.Figures
			f.Flows, f.BytesToServer, f.PacketsToServer, f.Requests = 3, 1000, 10, 20
			f.RTTSumNs, f.RTTCount, f.Protocols = 3e6, 3, store.ProtoHTTP
			for k := 0; k < 20; k++ {
				f.Latency.Add(time.Duration(500+(j*7+k*131)%20000) * time.Microsecond)
			}
			src, dst := nodes[j%1000], nodes[(j*7+j/1000+1)%1000]
			rows = append(rows, store.Rollup{Bucket: t0.Add(-time.Duration(m) * time.Minute), Figures: f,
				Key: store.RollupKey{Level: store.LevelApp, Source: "ip:" + src.String(), Target: "ip:" + dst.String(), Transport: sdk.TransportTCP, Port: 8080}})
		}
		if err := st.WriteRollups(ctx, store.Res1m, rows); err != nil {
			b.Fatal(err)
		}
	}
	e.Close()
	e = newEngine(b, st, clk)
	var fl []sdk.Flow
	for j := 0; j < 10000; j++ {
		src, dst := nodes[j%1000], nodes[(j*7+j/1000+1)%1000]
		fl = append(fl, tcpFlow("h", fmt.Sprintf("1:%d", j), sdk.Endpoint{Addr: src, Port: 40000}, sdk.Endpoint{Addr: dst, Port: 8080},
			t0, sdk.Counts{Packets: 1, IPBytes: 100}, sdk.Counts{}, true))
	}
	e.Ingest([]otlpschema.Batch{{Agent: "a", Flows: fl}})
	g := e.Graph(GraphQuery{Since: time.Hour})
	if len(g.Edges) < 9000 || len(g.Nodes) != 1000 {
		b.Fatalf("graph of %d nodes, %d edges", len(g.Nodes), len(g.Edges))
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := time.Now()
		e.Graph(GraphQuery{Since: time.Hour})
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[(len(lat)*99+99)/100-1].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(g.Edges)), "edges")
}
