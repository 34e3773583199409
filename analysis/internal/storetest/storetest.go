// Package storetest is the conformance test every analysis store passes: the embedded SQLite
// store now, a column store later.
package storetest

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/sdk"
)

// Run runs the conformance tests; open gives a new, empty store for each test.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("RollupsAreDeltas", func(t *testing.T) { rollupsAreDeltas(t, open(t)) })
	t.Run("FlowFiltersAndPaging", func(t *testing.T) { flowFiltersAndPaging(t, open(t)) })
	t.Run("Conversation", func(t *testing.T) { conversation(t, open(t)) })
	t.Run("Prune", func(t *testing.T) { prune(t, open(t)) })
	t.Run("NodeAddresses", func(t *testing.T) { nodeAddresses(t, open(t)) })
	t.Run("Alerts", func(t *testing.T) { alerts(t, open(t)) })
	t.Run("Closed", func(t *testing.T) { closed(t, open(t)) })
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func rollupsAreDeltas(t *testing.T, s store.Store) {
	ctx := context.Background()
	key := store.RollupKey{Level: store.LevelApp, Source: "app:web", Target: "app:api", Transport: sdk.TransportTCP, Port: 8080}
	row := store.Rollup{Bucket: t0, Key: key, Figures: store.Figures{Flows: 1, BytesToServer: 100, Requests: 2, Protocols: store.ProtoHTTP}}
	row.Latency.Add(3 * time.Millisecond)
	row.Latency.Add(5 * time.Millisecond)
	row.RTT.Add(700 * time.Microsecond)
	// GIVEN the same key and bucket written twice, and a row in the next minute
	later := row
	later.Bucket = t0.Add(time.Minute)
	if err := s.WriteRollups(ctx, store.Res1m, []store.Rollup{row, row, later}); err != nil {
		t.Fatal(err)
	}
	// WHEN read over the first minute
	rows, err := s.ReadRollups(ctx, store.RollupQuery{Resolution: store.Res1m, Level: store.LevelApp, From: t0, To: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// THEN both deltas come back, and they add up
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want 2", len(rows))
	}
	var sum store.Figures
	for _, r := range rows {
		if r.Key != key || !r.Bucket.Equal(t0) {
			t.Errorf("row %+v at %v, want key %+v at %v", r.Key, r.Bucket, key, t0)
		}
		sum.Add(&r.Figures)
	}
	if sum.Flows != 2 || sum.BytesToServer != 200 || sum.Requests != 4 || sum.Latency.Count() != 4 || sum.RTT.Count() != 2 || sum.Protocols != store.ProtoHTTP {
		t.Errorf("summed %+v", sum)
	}
	// Other resolutions, levels and filters select nothing of it.
	for _, q := range []store.RollupQuery{
		{Resolution: store.Res10s, Level: store.LevelApp},
		{Resolution: store.Res1m, Level: store.LevelL3},
		{Resolution: store.Res1m, Level: store.LevelApp, Source: "app:other"},
	} {
		rows, err := s.ReadRollups(ctx, q)
		if err != nil || len(rows) != 0 {
			t.Errorf("%+v: %d rows, %v; want none", q, len(rows), err)
		}
	}
}

func flow(i int, end time.Time, client, server string, port uint16, cid string) store.FlowRecord {
	return store.FlowRecord{ID: uint64(i), Agent: "a1", Flow: sdk.Flow{
		Host: "h1", NIC: "eth0", Start: end.Add(-time.Second), End: end, Transport: sdk.TransportTCP,
		Client:         sdk.Endpoint{Addr: netip.MustParseAddr(client), Port: 40000 + uint16(i)},
		Server:         sdk.Endpoint{Addr: netip.MustParseAddr(server), Port: port},
		ClientToServer: sdk.Counts{Packets: 3, IPBytes: 180}, ServerToClient: sdk.Counts{Packets: 2, IPBytes: 1200},
		TCPFlags: sdk.FlagSYN | sdk.FlagACK, RTT: time.Millisecond, CommunityID: cid, Subscriptions: []string{"default"},
		Final: true, EndReason: sdk.EndFIN,
	}}
}

func flowFiltersAndPaging(t *testing.T, s store.Store) {
	ctx := context.Background()
	var recs store.Records
	for i := 1; i <= 25; i++ {
		server := "10.0.0.5"
		if i%5 == 0 {
			server = "192.168.1.9"
		}
		recs.Flows = append(recs.Flows, flow(i, t0.Add(time.Duration(i)*time.Second), "10.0.1.1", server, 443, "1:c"+string(rune('a'+i))))
	}
	recs.Flows[3].NIC = "eth1"
	recs.Flows[4].Transport = sdk.TransportUDP
	recs.L7 = []store.L7Record{{ID: 1000, Agent: "a1", L7: sdk.L7{Protocol: "HTTP", Method: "POST", Time: t0.Add(7 * time.Second), CommunityID: recs.Flows[6].CommunityID}}}
	if err := s.WriteRecords(ctx, recs); err != nil {
		t.Fatal(err)
	}
	got, err := s.QueryFlows(ctx, store.FlowFilter{Limit: 100})
	if err != nil || len(got) != 25 {
		t.Fatalf("all: %d, %v", len(got), err)
	}
	if got[0].ID != 25 || got[24].ID != 1 {
		t.Errorf("order: first %d, last %d; want newest first", got[0].ID, got[24].ID)
	}
	if w := recs.Flows[24]; got[0].Flow.Client != w.Client || got[0].ClientToServer != w.ClientToServer || got[0].RTT != w.RTT ||
		got[0].Subscriptions[0] != "default" || !got[0].Final || got[0].EndReason != sdk.EndFIN {
		t.Errorf("round trip: %+v", got[0])
	}
	cases := []struct {
		name string
		f    store.FlowFilter
		want int
	}{
		{"nic", store.FlowFilter{NIC: "eth1"}, 1},
		{"addr", store.FlowFilter{Addr: netip.MustParseAddr("192.168.1.9")}, 5},
		{"cidr", store.FlowFilter{Prefix: netip.MustParsePrefix("192.168.0.0/16")}, 5},
		{"cidr client", store.FlowFilter{Prefix: netip.MustParsePrefix("10.0.1.0/24")}, 25},
		{"transport", store.FlowFilter{Transport: sdk.TransportUDP}, 1},
		{"port", store.FlowFilter{Port: 443}, 25},
		{"client port", store.FlowFilter{Port: 40003}, 1},
		{"time", store.FlowFilter{From: t0.Add(10 * time.Second), To: t0.Add(20 * time.Second)}, 10},
		{"l7 method", store.FlowFilter{L7Method: "POST"}, 1},
		{"community id", store.FlowFilter{CommunityID: recs.Flows[0].CommunityID}, 1},
		{"agent", store.FlowFilter{Agent: "nobody"}, 0},
	}
	for _, c := range cases {
		c.f.Limit = 100
		got, err := s.QueryFlows(ctx, c.f)
		if err != nil || len(got) != c.want {
			t.Errorf("%s: %d records, %v; want %d", c.name, len(got), err, c.want)
		}
	}
	// Pages of 10 cover everything once, in order.
	var seen []uint64
	var after *store.Cursor
	for {
		page, err := s.QueryFlows(ctx, store.FlowFilter{Limit: 10, After: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			seen = append(seen, r.ID)
		}
		if len(page) < 10 {
			break
		}
		last := page[len(page)-1]
		after = &store.Cursor{Time: last.End, ID: last.ID}
	}
	if len(seen) != 25 || seen[0] != 25 || seen[24] != 1 {
		t.Errorf("paged: %v", seen)
	}
}

func conversation(t *testing.T, s store.Store) {
	ctx := context.Background()
	cid := "1:conv"
	f1 := flow(1, t0.Add(60*time.Second), "10.0.0.1", "10.0.0.2", 80, cid)
	f1.Final = false
	f2 := flow(2, t0.Add(90*time.Second), "10.0.0.1", "10.0.0.2", 80, cid)
	other := flow(3, t0.Add(70*time.Second), "10.0.0.1", "10.0.0.3", 80, "1:other")
	recs := store.Records{
		Flows:  []store.FlowRecord{f2, other, f1},
		Events: []store.EventRecord{{ID: 10, Agent: "a1", Event: sdk.Event{Kind: sdk.EventStart, Time: t0, CommunityID: cid, L4Frame: []byte{1, 2}}}},
		L7: []store.L7Record{
			{ID: 12, Agent: "a2", L7: sdk.L7{Protocol: "HTTP", Method: "GET", Path: "/b", Time: t0.Add(20 * time.Second), CommunityID: cid, Status: 200}},
			{ID: 11, Agent: "a1", L7: sdk.L7{Protocol: "HTTP", Method: "GET", Path: "/a", Time: t0.Add(10 * time.Second), CommunityID: cid, Latency: time.Millisecond}},
		},
	}
	if err := s.WriteRecords(ctx, recs); err != nil {
		t.Fatal(err)
	}
	got, err := s.Conversation(ctx, cid, time.Time{}, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Flows) != 2 || got.Flows[0].ID != 1 || got.Flows[1].ID != 2 {
		t.Errorf("flows: %+v", got.Flows)
	}
	if len(got.Events) != 1 || got.Events[0].Kind != sdk.EventStart || string(got.Events[0].L4Frame) != "\x01\x02" || got.Events[0].Agent != "a1" {
		t.Errorf("events: %+v", got.Events)
	}
	if len(got.L7) != 2 || got.L7[0].Path != "/a" || got.L7[1].Path != "/b" || got.L7[0].Latency != time.Millisecond || got.L7[1].Agent != "a2" {
		t.Errorf("L7: %+v", got.L7)
	}
}

func prune(t *testing.T, s store.Store) {
	ctx := context.Background()
	old := store.Rollup{Bucket: t0, Key: store.RollupKey{Level: store.LevelL3, Source: "a", Target: "b"}, Figures: store.Figures{Flows: 1}}
	recent := old
	recent.Bucket = t0.Add(time.Hour)
	for _, r := range store.Resolutions {
		if err := s.WriteRollups(ctx, r, []store.Rollup{old, recent}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteRecords(ctx, store.Records{Flows: []store.FlowRecord{flow(1, t0, "10.0.0.1", "10.0.0.2", 80, "1:x"), flow(2, t0.Add(time.Hour), "10.0.0.1", "10.0.0.2", 80, "1:x")}}); err != nil {
		t.Fatal(err)
	}
	// Only the 10 s rollups and the records are old enough.
	n, err := s.Prune(ctx, store.Cutoffs{Rollups: map[store.Resolution]time.Time{store.Res10s: t0.Add(time.Minute), store.Res1m: t0}, Records: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("pruned %d rows, want 2", n)
	}
	for _, c := range []struct {
		res  store.Resolution
		want int
	}{{store.Res10s, 1}, {store.Res1m, 2}, {store.Res1h, 2}} {
		rows, _ := s.ReadRollups(ctx, store.RollupQuery{Resolution: c.res, Level: store.LevelL3})
		if len(rows) != c.want {
			t.Errorf("%s: %d rows left, want %d", c.res, len(rows), c.want)
		}
	}
	flows, _ := s.QueryFlows(ctx, store.FlowFilter{Limit: 10})
	if len(flows) != 1 || flows[0].ID != 2 {
		t.Errorf("records left: %+v", flows)
	}
}

func nodeAddresses(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := netip.MustParseAddr("10.0.0.5")
	if err := s.WriteNodeAddresses(ctx, []store.NodeAddress{{Node: "app:api", Addr: a, LastSeen: t0.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	// An older sighting does not move LastSeen back.
	if err := s.WriteNodeAddresses(ctx, []store.NodeAddress{{Node: "app:api", Addr: a, LastSeen: t0}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadNodeAddresses(ctx, t0.Add(30*time.Second))
	if err != nil || len(got) != 1 || got[0].Addr != a || !got[0].LastSeen.Equal(t0.Add(time.Minute)) {
		t.Errorf("got %+v, %v", got, err)
	}
}

func alerts(t *testing.T, s store.Store) {
	ctx := context.Background()
	pending := store.AlertRecord{ID: "a1", Kind: store.KindAlert, Fingerprint: "f1", Rule: "errors", State: "pending",
		Started: t0, Updated: t0, Body: []byte(`{"state":"pending"}`)}
	event := store.AlertRecord{ID: "e1", Kind: store.KindEvent, Fingerprint: "f2", State: "new_edge",
		Started: t0.Add(time.Minute), Updated: t0.Add(time.Minute), Body: []byte(`{}`)}
	// GIVEN an alert written pending, then again firing, and an event
	firing := pending
	firing.State, firing.Updated, firing.Body = "firing", t0.Add(2*time.Minute), []byte(`{"state":"firing"}`)
	if err := s.WriteAlerts(ctx, []store.AlertRecord{pending, event}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAlerts(ctx, []store.AlertRecord{firing}); err != nil {
		t.Fatal(err)
	}
	// THEN the alert is there once, as last written, newest update first
	got, err := s.ReadAlerts(ctx, store.AlertQuery{Limit: 10})
	if err != nil || len(got) != 2 {
		t.Fatalf("got %+v, %v; want 2 entries", got, err)
	}
	if g := got[0]; g.ID != "a1" || g.State != "firing" || string(g.Body) != `{"state":"firing"}` ||
		!g.Started.Equal(t0) || !g.Updated.Equal(t0.Add(2*time.Minute)) || g.Rule != "errors" || g.Fingerprint != "f1" {
		t.Errorf("first entry %+v", g)
	}
	for _, c := range []struct {
		q    store.AlertQuery
		want []string
	}{
		{store.AlertQuery{Kind: store.KindEvent, Limit: 10}, []string{"e1"}},
		{store.AlertQuery{State: "pending", Limit: 10}, nil},
		{store.AlertQuery{Fingerprint: "f1", Limit: 10}, []string{"a1"}},
		{store.AlertQuery{Since: t0.Add(90 * time.Second), Limit: 10}, []string{"a1"}},
		{store.AlertQuery{Limit: 1}, []string{"a1"}},
	} {
		got, err := s.ReadAlerts(ctx, c.q)
		var ids []string
		for _, a := range got {
			ids = append(ids, a.ID)
		}
		if err != nil || !slices.Equal(ids, c.want) {
			t.Errorf("%+v: %v, %v; want %v", c.q, ids, err, c.want)
		}
	}
	if _, err := s.ReadAlerts(ctx, store.AlertQuery{}); err == nil {
		t.Error("a query without a limit was accepted")
	}
	// Prune goes by the last update.
	if _, err := s.Prune(ctx, store.Cutoffs{Alerts: t0.Add(90 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ReadAlerts(ctx, store.AlertQuery{Limit: 10}); len(got) != 1 || got[0].ID != "a1" {
		t.Errorf("after pruning: %+v", got)
	}
}

func closed(t *testing.T, s store.Store) {
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.QueryFlows(context.Background(), store.FlowFilter{Limit: 1}); err == nil {
		t.Error("query after Close succeeded")
	}
	if err := s.WriteRollups(context.Background(), store.Res10s, []store.Rollup{{Bucket: t0}}); err == nil {
		t.Error("write after Close succeeded")
	}
}
