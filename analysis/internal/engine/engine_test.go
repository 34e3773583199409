package engine

import (
	"context"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func openStore(t testing.TB, dir string) *store.SQLite {
	s, err := store.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newEngine(t testing.TB, st store.Store, clk *clock, mod ...func(*Options)) *Engine {
	opts := Options{Store: st, Now: clk.Now, FlushInterval: 10 * time.Second}
	for _, m := range mod {
		m(&opts)
	}
	e, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func testCatalog(t testing.TB) *api.Catalog {
	entries, err := api.ParseCatalog([]byte(`[
		{"app": "web", "owner": {"name": "Web team lead", "team": "web", "contact": "web@example.com"},
		 "match": [{"cidr": "10.0.1.0/24"}]},
		{"app": "api", "owner": {"name": "API team lead", "team": "api", "contact": "api@example.com"},
		 "match": [{"address": "10.0.2.5", "ports": ["8080"]}, {"address": "10.0.2.6", "ports": ["8080"]}]}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewCatalog(entries)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ep(addr string, port uint16) sdk.Endpoint {
	return sdk.Endpoint{Addr: netip.MustParseAddr(addr), Port: port}
}

func tcpFlow(host, cid string, client, server sdk.Endpoint, end time.Time, c2s, s2c sdk.Counts, final bool) sdk.Flow {
	return sdk.Flow{Host: host, NIC: "eth0", Start: end.Add(-2 * time.Second), End: end, Transport: sdk.TransportTCP,
		Client: client, Server: server, ClientToServer: c2s, ServerToClient: s2c, RTT: 2 * time.Millisecond,
		CommunityID: cid, Final: final}
}

func edgeOf(g Graph, src, dst string) *Edge {
	for i := range g.Edges {
		if g.Edges[i].Source == src && g.Edges[i].Target == dst {
			return &g.Edges[i]
		}
	}
	return nil
}

func TestMergeCountsAConversationOnce(t *testing.T) {
	clk := &clock{t: t0}
	e := newEngine(t, openStore(t, t.TempDir()), clk)
	e.SetCatalog(testCatalog(t))
	web, api1 := ep("10.0.1.7", 40001), ep("10.0.2.5", 8080)
	// GIVEN one conversation seen on the client's host in two windows and on the server's host
	// in one (which missed a packet), and a second conversation seen by the client only
	e.Ingest([]otlpschema.Batch{{Agent: "client-host", Host: "h1", Flows: []sdk.Flow{
		tcpFlow("h1", "1:A", web, api1, t0.Add(-20*time.Second), sdk.Counts{Packets: 5, IPBytes: 500}, sdk.Counts{Packets: 4, IPBytes: 4000}, false),
		tcpFlow("h1", "1:A", web, api1, t0.Add(-10*time.Second), sdk.Counts{Packets: 5, IPBytes: 500}, sdk.Counts{Packets: 4, IPBytes: 4000}, true),
		tcpFlow("h1", "1:B", ep("10.0.1.7", 40002), api1, t0.Add(-5*time.Second), sdk.Counts{Packets: 1, IPBytes: 60}, sdk.Counts{Packets: 1, IPBytes: 60}, true),
	}}})
	e.Ingest([]otlpschema.Batch{{Agent: "server-host", Host: "h2", Flows: []sdk.Flow{
		tcpFlow("h2", "1:A", web, api1, t0.Add(-9*time.Second), sdk.Counts{Packets: 9, IPBytes: 900}, sdk.Counts{Packets: 8, IPBytes: 8000}, true),
	}}})
	// WHEN the graph is asked
	g := e.Graph(GraphQuery{Since: 5 * time.Minute})
	// THEN the edge counts conversation A once with the larger view per direction, and B
	ed := edgeOf(g, "app:web", "app:api")
	if ed == nil {
		t.Fatalf("no web → api edge in %+v", g)
	}
	want := Edge{Source: "app:web", Target: "app:api", Transport: "TCP", Port: 8080, Flows: 2,
		Bytes: 1000 + 8000 + 120, Packets: 10 + 8 + 2, RTTMs: 2}
	if *ed != want {
		t.Errorf("edge\n got %+v\nwant %+v", *ed, want)
	}
	if len(g.Edges) != 1 {
		t.Errorf("%d edges, want 1", len(g.Edges))
	}
	// A third report of A that adds nothing changes nothing (like the server's, which saw less).
	e.Ingest([]otlpschema.Batch{{Agent: "server-host", Flows: []sdk.Flow{
		tcpFlow("h2", "1:A", web, api1, t0.Add(-8*time.Second), sdk.Counts{}, sdk.Counts{}, true)}}})
	if g2 := e.Graph(GraphQuery{Since: 5 * time.Minute}); *edgeOf(g2, "app:web", "app:api") != want {
		t.Errorf("after an empty report: %+v", *edgeOf(g2, "app:web", "app:api"))
	}
	if c := e.Counters(); c["merge.conversations"] != 2 || c["merge.second_observation_points"] != 1 || c["merge.records_already_counted"] != 2 {
		t.Errorf("counters %v", c)
	}
}

// One agent watching both ends' interfaces (the lab's veths, a host's containers) sees each
// conversation and each request twice, on two interfaces: they count once, as with two agents.
func TestOneAgentTwoInterfacesCountsOnce(t *testing.T) {
	clk := &clock{t: t0}
	e := newEngine(t, openStore(t, t.TempDir()), clk)
	e.SetCatalog(testCatalog(t))
	web, api1 := ep("10.0.1.7", 40001), ep("10.0.2.5", 8080)
	onWeb := tcpFlow("h1", "1:A", web, api1, t0.Add(-9*time.Second), sdk.Counts{Packets: 5, IPBytes: 500}, sdk.Counts{Packets: 4, IPBytes: 4000}, true)
	onAPI := onWeb
	onAPI.NIC = "veth-api"
	req := func(nic string) sdk.L7 {
		return sdk.L7{Protocol: "HTTP", Time: t0.Add(-9 * time.Second), NIC: nic, Method: "GET", Path: "/x", Status: 200,
			Transport: sdk.TransportTCP, Client: web, Server: api1, CommunityID: "1:A", Latency: time.Millisecond}
	}
	e.Ingest([]otlpschema.Batch{{Agent: "h1", Flows: []sdk.Flow{onWeb, onAPI}, L7: []sdk.L7{req("eth0"), req("veth-api")}}})
	ed := edgeOf(e.Graph(GraphQuery{Since: 5 * time.Minute}), "app:web", "app:api")
	if ed == nil || ed.Flows != 1 || ed.Bytes != 4500 || ed.Packets != 9 || ed.Requests != 1 {
		t.Errorf("edge %+v, want 1 conversation, 4500 bytes, 9 packets, 1 request", ed)
	}
}

func TestNodesFromCatalog(t *testing.T) {
	clk := &clock{t: t0}
	e := newEngine(t, openStore(t, t.TempDir()), clk)
	e.SetCatalog(testCatalog(t))
	e.Ingest([]otlpschema.Batch{{Agent: "a", Flows: []sdk.Flow{
		tcpFlow("h", "1:1", ep("10.0.1.7", 40001), ep("10.0.2.5", 8080), t0.Add(-time.Second), sdk.Counts{Packets: 1, IPBytes: 60}, sdk.Counts{}, true),
		tcpFlow("h", "1:2", ep("10.0.1.8", 40001), ep("10.0.2.6", 8080), t0.Add(-time.Second), sdk.Counts{Packets: 1, IPBytes: 60}, sdk.Counts{}, true),
		// api's address on a port the catalog does not give it is just an address.
		tcpFlow("h", "1:3", ep("10.0.1.7", 40002), ep("10.0.2.5", 22), t0.Add(-time.Second), sdk.Counts{Packets: 1, IPBytes: 60}, sdk.Counts{}, true),
		tcpFlow("h", "1:4", ep("10.9.9.9", 40002), ep("10.0.2.5", 8080), t0.Add(-time.Second), sdk.Counts{Packets: 1, IPBytes: 60}, sdk.Counts{}, true),
	}}})
	g := e.Graph(GraphQuery{})
	want := []Node{
		{ID: "app:api", App: "api", Owner: "API team lead", Team: "api", Kind: "app", Addresses: []string{"10.0.2.5", "10.0.2.6"}},
		{ID: "app:web", App: "web", Owner: "Web team lead", Team: "web", Kind: "app", Addresses: []string{"10.0.1.7", "10.0.1.8"}},
		{ID: "ip:10.0.2.5", Kind: "address", Addresses: []string{"10.0.2.5"}},
		{ID: "ip:10.9.9.9", Kind: "address", Addresses: []string{"10.9.9.9"}},
	}
	if !reflect.DeepEqual(g.Nodes, want) {
		t.Errorf("nodes\n got %+v\nwant %+v", g.Nodes, want)
	}
	if len(g.Edges) != 3 || edgeOf(g, "app:web", "ip:10.0.2.5") == nil || edgeOf(g, "ip:10.9.9.9", "app:api") == nil {
		t.Errorf("edges %+v", g.Edges)
	}
	if g := e.Graph(GraphQuery{Owner: "web"}); len(g.Edges) != 2 {
		t.Errorf("owner filter: %+v", g.Edges)
	}
	if g := e.Graph(GraphQuery{App: "api"}); len(g.Edges) != 2 {
		t.Errorf("app filter: %+v", g.Edges)
	}
	// At L3 the two conversations between 10.0.1.7 and 10.0.2.5 are one edge.
	if g := e.Graph(GraphQuery{Level: "l3"}); len(g.Edges) != 3 || g.Nodes[0].ID != "ip:10.0.1.7" || g.Nodes[0].App != "web" {
		t.Errorf("l3: %+v", g)
	}
}

func TestL7MergeAndPercentiles(t *testing.T) {
	clk := &clock{t: t0}
	e := newEngine(t, openStore(t, t.TempDir()), clk)
	e.SetCatalog(testCatalog(t))
	r := rand.New(rand.NewPCG(3, 4))
	var a, b []sdk.L7
	var lat []time.Duration
	errors := 0
	for i := 0; i < 3000; i++ {
		d := time.Duration(math.Exp(r.NormFloat64()+9)) * time.Microsecond
		lat = append(lat, d)
		status := 200
		if i%50 == 0 {
			status = 503
			errors++
		}
		rec := sdk.L7{Protocol: "HTTP", Method: "GET", Path: "/items", Status: status, Latency: d,
			Time: t0.Add(-50*time.Second + time.Duration(i)*time.Millisecond), Transport: sdk.TransportTCP,
			Client: ep("10.0.1.7", uint16(30000+i%100)), Server: ep("10.0.2.5", 8080), CommunityID: "1:c" + string(rune('a'+i%100))}
		a = append(a, rec)
		// The server's host sees the same request a little later, with its own latency.
		rec.Time = rec.Time.Add(300 * time.Microsecond)
		b = append(b, rec)
	}
	e.Ingest([]otlpschema.Batch{{Agent: "client-host", L7: a}})
	e.Ingest([]otlpschema.Batch{{Agent: "server-host", L7: b}})
	ed := edgeOf(e.Graph(GraphQuery{}), "app:web", "app:api")
	if ed == nil || ed.Requests != 3000 || ed.Errors != uint64(errors) || ed.Protocol != "HTTP" {
		t.Fatalf("edge %+v, want 3000 requests, %d errors", ed, errors)
	}
	slices.Sort(lat)
	for _, c := range []struct {
		q   float64
		got float64
	}{{0.5, ed.LatencyP50Ms}, {0.95, ed.LatencyP95Ms}} {
		want := float64(lat[int(math.Ceil(c.q*float64(len(lat))))-1].Microseconds()) / 1000
		if math.Abs(c.got-want)/want > 0.035 {
			t.Errorf("p%v: %.3f ms, brute force %.3f ms", c.q*100, c.got, want)
		}
	}
	eps, err := e.L7Endpoints(L7Query{Target: "app:api"})
	if err != nil || len(eps) != 1 || eps[0].Requests != 3000 || eps[0].Path != "/items" {
		t.Errorf("endpoints %+v, %v", eps, err)
	}
	sg := e.ServiceGraph()
	if len(sg) != 1 || sg[0].Client != "web" || sg[0].Server != "api" || sg[0].Requests != 3000 || sg[0].Failed != uint64(errors) || sg[0].Count != 3000 {
		t.Errorf("service graph %+v", sg)
	}
	var sum uint64
	for _, c := range sg[0].Counts {
		sum += c
	}
	if sum > 3000 {
		t.Errorf("bucket counts add to %d", sum)
	}
}

func TestL7Errors(t *testing.T) {
	for _, c := range []struct {
		r    sdk.L7
		want bool
	}{
		{sdk.L7{Protocol: "HTTP", Status: 200}, false},
		{sdk.L7{Protocol: "HTTP", Status: 404}, false},
		{sdk.L7{Protocol: "HTTP", Status: 500}, true},
		{sdk.L7{Protocol: "DNS", RCode: "NOERROR"}, false},
		{sdk.L7{Protocol: "DNS", RCode: "NXDOMAIN"}, false},
		{sdk.L7{Protocol: "DNS", RCode: "SERVFAIL"}, true},
		{sdk.L7{Protocol: "HTTP", Status: 200, Error: "malformed"}, true},
	} {
		if got := l7Failed(&c.r); got != c.want {
			t.Errorf("%+v: %v, want %v", c.r, got, c.want)
		}
	}
}

// TestRollupsAcrossResolutions feeds records on both sides of a minute boundary and reads them
// back at each resolution as buckets close.
func TestRollupsAcrossResolutions(t *testing.T) {
	clk := &clock{t: t0.Add(-30 * time.Second)}
	st := openStore(t, t.TempDir())
	e := newEngine(t, st, clk)
	// 10:59:35, 10:59:55 and 10:00:05 (the boundary is 10:00:00).
	for i, at := range []time.Duration{-25 * time.Second, -5 * time.Second, 5 * time.Second} {
		clk.Set(t0.Add(at + time.Second))
		e.Ingest([]otlpschema.Batch{{Agent: "a", Flows: []sdk.Flow{tcpFlow("h", "1:"+string(rune('a'+i)), ep("10.0.0.1", 40000),
			ep("10.0.0.2", 80), t0.Add(at), sdk.Counts{Packets: 1, IPBytes: 100 * uint64(i+1)}, sdk.Counts{}, true)}}})
	}
	// WHEN the clock passes the end of the minute after the boundary and its lateness
	clk.Set(t0.Add(time.Minute + e.opts.Lateness + time.Second))
	e.flush(context.Background(), false)
	// THEN the 10 s buckets are in the store, each alone
	ctx := context.Background()
	rows, err := st.ReadRollups(ctx, store.RollupQuery{Resolution: store.Res10s, Level: store.LevelL3})
	if err != nil {
		t.Fatal(err)
	}
	got := map[time.Time]uint64{}
	for _, r := range rows {
		got[r.Bucket] += r.BytesToServer
	}
	want := map[time.Time]uint64{t0.Add(-30 * time.Second): 100, t0.Add(-10 * time.Second): 200, t0: 300}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("10s rows %v, want %v", got, want)
	}
	// and the two minutes at 1 m, each with its records
	rows, _ = st.ReadRollups(ctx, store.RollupQuery{Resolution: store.Res1m, Level: store.LevelApp})
	got = map[time.Time]uint64{}
	for _, r := range rows {
		got[r.Bucket] += r.BytesToServer
	}
	if want := (map[time.Time]uint64{t0.Add(-time.Minute): 300, t0: 300}); !reflect.DeepEqual(got, want) {
		t.Errorf("1m rows %v, want %v", got, want)
	}
	// The hour is still open: a series at 1 h sees it from memory.
	s, err := e.Series(SeriesQuery{Metric: "bytes", Source: "ip:10.0.0.1", Target: "ip:10.0.0.2", Resolution: "1h", From: t0.Add(-time.Hour)})
	if err != nil || len(s.Points) != 2 || s.Points[0].Value != 300 || s.Points[1].Value != 300 {
		t.Errorf("1h series %+v, %v", s, err)
	}
	s, err = e.Series(SeriesQuery{Metric: "bytes", Source: "ip:10.0.0.1", Target: "ip:10.0.0.2", Resolution: "10s", From: t0.Add(-30 * time.Second), To: t0.Add(10 * time.Second)})
	if err != nil || len(s.Points) != 4 || s.Points[0].Value != 100 || s.Points[1].Value != 0 || s.Points[2].Value != 200 || s.Points[3].Value != 300 {
		t.Errorf("10s series %+v, %v", s, err)
	}
	s, err = e.Series(SeriesQuery{Metric: "flows", Source: "ip:10.0.0.1", Target: "ip:10.0.0.2", From: t0.Add(-time.Minute), To: t0.Add(time.Minute)})
	if err != nil || s.Resolution != "10s" || len(s.Points) != 12 {
		t.Errorf("auto series %+v, %v", s, err)
	}
	// A record older than the open buckets counts in the oldest open one.
	e.Ingest([]otlpschema.Batch{{Agent: "a", Flows: []sdk.Flow{tcpFlow("h", "1:z", ep("10.0.0.1", 40000), ep("10.0.0.2", 80), t0.Add(-time.Hour), sdk.Counts{Packets: 1, IPBytes: 1}, sdk.Counts{}, true)}}})
	if e.Counters()["rollup.late_clamped"] != 1 {
		t.Errorf("late record not counted: %v", e.Counters())
	}
}

func TestRetention(t *testing.T) {
	clk := &clock{t: t0}
	st := openStore(t, t.TempDir())
	e := newEngine(t, st, clk, func(o *Options) { o.Retention10s = 10 * time.Minute; o.RecordRetention = 30 * time.Minute })
	e.Ingest([]otlpschema.Batch{{Agent: "a", Flows: []sdk.Flow{tcpFlow("h", "1:a", ep("10.0.0.1", 40000), ep("10.0.0.2", 80), t0, sdk.Counts{Packets: 1, IPBytes: 1}, sdk.Counts{}, true)}}})
	ctx := context.Background()
	count := func(r store.Resolution) int {
		rows, err := st.ReadRollups(ctx, store.RollupQuery{Resolution: r, Level: store.LevelL3})
		if err != nil {
			t.Fatal(err)
		}
		return len(rows)
	}
	clk.Set(t0.Add(5 * time.Minute))
	e.flush(ctx, false)
	e.writeRecords(ctx)
	if count(store.Res10s) != 1 || count(store.Res1m) != 1 {
		t.Fatalf("before retention: %d, %d rows", count(store.Res10s), count(store.Res1m))
	}
	// Past the 10 s retention only the 10 s rows go; past the records' retention the records.
	clk.Set(t0.Add(11 * time.Minute))
	e.flush(ctx, false)
	if count(store.Res10s) != 0 || count(store.Res1m) != 1 {
		t.Errorf("after 10s retention: %d, %d rows", count(store.Res10s), count(store.Res1m))
	}
	if p, _ := e.Flows(FlowQuery{}); len(p.Flows) != 1 {
		t.Errorf("records pruned too early: %d", len(p.Flows))
	}
	clk.Set(t0.Add(31 * time.Minute))
	e.flush(ctx, false)
	if p, _ := e.Flows(FlowQuery{}); len(p.Flows) != 0 {
		t.Errorf("records kept past retention: %d", len(p.Flows))
	}
	if e.Counters()["store.pruned_rows"] < 2 {
		t.Errorf("counters %v", e.Counters())
	}
}

func TestRestartKeepsTheLastHour(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: t0}
	st := openStore(t, dir)
	e := newEngine(t, st, clk)
	e.SetCatalog(testCatalog(t))
	r := rand.New(rand.NewPCG(5, 6))
	// Traffic over the last 70 minutes, flushed as time goes on.
	for m := -70; m <= 0; m++ {
		clk.Set(t0.Add(time.Duration(m) * time.Minute))
		var fl []sdk.Flow
		var l7 []sdk.L7
		for i := 0; i < 5; i++ {
			at := clk.Now().Add(-time.Duration(r.IntN(50)) * time.Second)
			cid := "1:" + at.String() + string(rune('a'+i))
			fl = append(fl, tcpFlow("h", cid, ep("10.0.1.7", 40000), ep("10.0.2.5", 8080), at, sdk.Counts{Packets: 3, IPBytes: uint64(r.IntN(1000))}, sdk.Counts{Packets: 1, IPBytes: 99}, true))
			l7 = append(l7, sdk.L7{Protocol: "HTTP", Method: "GET", Path: "/", Status: 200, Latency: time.Duration(r.IntN(9000)) * time.Microsecond,
				Time: at, Transport: sdk.TransportTCP, Client: ep("10.0.1.7", 40000), Server: ep("10.0.2.5", 8080), CommunityID: cid})
		}
		e.Ingest([]otlpschema.Batch{{Agent: "a", Flows: fl, L7: l7}})
		e.flush(context.Background(), false)
		// The sliding window cache agrees with a sum of the buckets made afresh.
		cached := e.Graph(GraphQuery{Since: 30 * time.Minute})
		for ri := range e.windows {
			for li := range e.windows[ri] {
				w := &e.windows[ri][li]
				w.mu.Lock()
				w.valid = false
				w.mu.Unlock()
			}
		}
		if fresh := e.Graph(GraphQuery{Since: 30 * time.Minute}); !reflect.DeepEqual(cached, fresh) {
			t.Fatalf("at %v the window cache gave\n%+v\nand a fresh sum\n%+v", clk.Now(), cached, fresh)
		}
	}
	before := e.Graph(GraphQuery{Since: time.Hour})
	before4 := e.Graph(GraphQuery{Since: time.Hour, Level: "l4"})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	e2 := newEngine(t, openStore(t, dir), clk)
	e2.SetCatalog(testCatalog(t))
	after := e2.Graph(GraphQuery{Since: time.Hour})
	if len(before.Edges) == 0 || !reflect.DeepEqual(before, after) {
		t.Errorf("graph changed over a restart\nbefore %+v\n after %+v", before, after)
	}
	if after4 := e2.Graph(GraphQuery{Since: time.Hour, Level: "l4"}); !reflect.DeepEqual(before4, after4) {
		t.Errorf("l4 graph changed over a restart\nbefore %+v\n after %+v", before4, after4)
	}
	// New traffic after the restart adds to the same buckets.
	e2.Ingest([]otlpschema.Batch{{Agent: "a", Flows: []sdk.Flow{tcpFlow("h", "1:new", ep("10.0.1.7", 40000), ep("10.0.2.5", 8080), t0, sdk.Counts{Packets: 1, IPBytes: 1}, sdk.Counts{}, true)}}})
	if len(before.Edges) != 1 {
		t.Fatalf("edges %+v", before.Edges)
	}
	if g := e2.Graph(GraphQuery{Since: time.Hour}); g.Edges[0].Bytes != before.Edges[0].Bytes+1 {
		t.Errorf("after new traffic: %d bytes, want %d", g.Edges[0].Bytes, before.Edges[0].Bytes+1)
	}
}

func TestFlowsAndConversation(t *testing.T) {
	clk := &clock{t: t0}
	e := newEngine(t, openStore(t, t.TempDir()), clk)
	var fl []sdk.Flow
	for i := 0; i < 30; i++ {
		f := tcpFlow("h", "1:f"+string(rune('a'+i)), ep("10.0.1.7", uint16(40000+i)), ep("10.0.2.5", 8080), t0.Add(-time.Duration(i)*time.Second),
			sdk.Counts{Packets: 1, IPBytes: 60}, sdk.Counts{}, true)
		if i%3 == 0 {
			f.Server = ep("192.168.7.7", 53)
			f.Transport = sdk.TransportUDP
			f.NIC = "eth1"
		}
		fl = append(fl, f)
	}
	cid := fl[1].CommunityID
	e.Ingest([]otlpschema.Batch{{Agent: "a", Flows: fl,
		Events: []sdk.Event{{Kind: sdk.EventStart, Time: t0.Add(-5 * time.Second), CommunityID: cid}},
		L7:     []sdk.L7{{Protocol: "HTTP", Method: "PUT", Path: "/x", Time: t0.Add(-2 * time.Second), CommunityID: cid}}}})
	e.writeRecords(context.Background())
	cases := []struct {
		name string
		q    FlowQuery
		want int
	}{
		{"all", FlowQuery{Limit: 1000}, 30},
		{"nic", FlowQuery{NIC: "eth1"}, 10},
		{"transport", FlowQuery{Transport: "udp"}, 10},
		{"cidr", FlowQuery{CIDR: netip.MustParsePrefix("192.168.0.0/16")}, 10},
		{"address", FlowQuery{Addr: netip.MustParseAddr("10.0.2.5")}, 20},
		{"port", FlowQuery{Port: 53}, 10},
		{"l7 method", FlowQuery{L7Method: "PUT"}, 1},
		{"time", FlowQuery{From: t0.Add(-9 * time.Second), To: t0.Add(-4 * time.Second)}, 5},
	}
	for _, c := range cases {
		p, err := e.Flows(c.q)
		if err != nil || len(p.Flows) != c.want {
			t.Errorf("%s: %d flows, %v; want %d", c.name, len(p.Flows), err, c.want)
		}
	}
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		p, err := e.Flows(FlowQuery{Limit: 7, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range p.Flows {
			ids = append(ids, f.ID)
		}
		if p.Next == "" {
			if pages != 4 {
				t.Errorf("%d pages, want 5", pages+1)
			}
			break
		}
		cursor = p.Next
	}
	if len(ids) != 30 || len(slices.Compact(slices.Clone(ids))) != 30 {
		t.Errorf("paging gave %d ids", len(ids))
	}
	if _, err := e.Flows(FlowQuery{Cursor: "nonsense"}); !IsInvalid(err) {
		t.Errorf("bad cursor: %v", err)
	}
	if _, err := e.Flows(FlowQuery{Transport: "carrier-pigeon"}); !IsInvalid(err) {
		t.Errorf("bad transport: %v", err)
	}
	conv, err := e.Conversation(cid)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for i, it := range conv.Items {
		kinds = append(kinds, it.Kind)
		if i > 0 && it.Time.Before(conv.Items[i-1].Time) {
			t.Errorf("item %d out of order", i)
		}
	}
	if !slices.Equal(kinds, []string{"event", "flow", "l7"}) {
		t.Errorf("trace kinds %v", kinds)
	}
	if _, err := e.Conversation("1:none"); !IsNotFound(err) {
		t.Errorf("unknown conversation: %v", err)
	}
	if a := e.Agents(); len(a) != 1 || a[0].ID != "a" || a[0].Records != 32 || !a[0].LastSeen.Equal(t0) {
		t.Errorf("agents %+v", a)
	}
}

func TestOptionsValidate(t *testing.T) {
	st := openStore(t, t.TempDir())
	for _, c := range []struct {
		mod  func(*Options)
		want string
	}{
		{func(o *Options) { o.Store = nil }, "engine option store: required"},
		{func(o *Options) { o.Retention1m = time.Hour * 3; o.Retention10s = 4 * time.Hour }, "engine option retention_1m"},
		{func(o *Options) { o.MaxConversations = -1 }, "engine option max_conversations"},
		{func(o *Options) { o.FlushInterval = time.Minute }, "engine option flush_interval"},
	} {
		o := Options{Store: st}
		c.mod(&o)
		_, err := New(context.Background(), o)
		if err == nil || len(err.Error()) < len(c.want) || err.Error()[:len(c.want)] != c.want {
			t.Errorf("got %v, want %q…", err, c.want)
		}
	}
}

func TestConcurrentGraphs(t *testing.T) {
	clk := &clock{t: t0}
	e := newEngine(t, openStore(t, t.TempDir()), clk)
	e.SetCatalog(testCatalog(t))
	// GIVEN traffic in closed buckets of the window cache and in open ones
	for m := -20; m <= 0; m++ {
		clk.Set(t0.Add(time.Duration(m) * time.Minute))
		at := clk.Now().Add(-time.Second)
		cid := "1:" + at.String()
		e.Ingest([]otlpschema.Batch{{Agent: "a", Flows: []sdk.Flow{tcpFlow("h", cid, ep("10.0.1.7", 40000), ep("10.0.2.5", 8080), at,
			sdk.Counts{Packets: 3, IPBytes: 300}, sdk.Counts{Packets: 1, IPBytes: 99}, true)},
			L7: []sdk.L7{{Protocol: "HTTP", Method: "GET", Path: "/", Status: 200, Latency: time.Duration(m+21) * time.Millisecond,
				Time: at, Transport: sdk.TransportTCP, Client: ep("10.0.1.7", 40000), Server: ep("10.0.2.5", 8080), CommunityID: cid}}}})
		e.flush(context.Background(), false)
	}
	queries := []GraphQuery{{Since: time.Hour}, {Since: time.Hour, Level: "l4"}, {Since: 10 * time.Minute}}
	want := make([]Graph, len(queries))
	for i, q := range queries {
		if want[i] = e.Graph(q); len(want[i].Edges) == 0 {
			t.Fatalf("no edges in the graph of %+v", q)
		}
	}
	// WHEN the same graphs are asked from several goroutines at once
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				qi := (g + i) % len(queries)
				// THEN each gets what a query on its own gets
				if got := e.Graph(queries[qi]); !reflect.DeepEqual(got, want[qi]) {
					t.Errorf("concurrent graph %+v\n got %+v\nwant %+v", queries[qi], got, want[qi])
					return
				}
			}
		}()
	}
	wg.Wait()
}
