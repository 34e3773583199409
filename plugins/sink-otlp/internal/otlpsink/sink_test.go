package otlpsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	s "github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/plugintest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)

func ep(addr string, port uint16) sdk.Endpoint {
	return sdk.Endpoint{Addr: netip.MustParseAddr(addr), Port: port}
}

// testBatch has every kind of record the sink maps, each with every field set somewhere.
func testBatch() *sdk.Batch {
	mac1, _ := net.ParseMAC("02:42:ac:11:00:02")
	mac2, _ := net.ParseMAC("02:42:ac:11:00:03")
	return &sdk.Batch{
		Flows: []sdk.Flow{
			{Host: "h1", NIC: "eth0", IfIndex: 2, Netns: "net:[4026531840]", Start: t0, End: t0.Add(300 * time.Millisecond),
				Transport: sdk.TransportTCP, Client: ep("141.142.228.5", 59856), Server: ep("192.150.187.43", 80),
				ClientToServer: sdk.Counts{Packets: 7, IPBytes: 512}, ServerToClient: sdk.Counts{Packets: 8, IPBytes: 5379},
				TCPFlags: sdk.FlagSYN | sdk.FlagACK | sdk.FlagFIN, RTT: 1234567 * time.Nanosecond, Retransmits: 3,
				VLAN: []uint16{100, 4000}, ClientMAC: mac1, ServerMAC: mac2, CommunityID: "1:yvyB8h+3dnggTZW0UEITWCst97w=",
				Subscriptions: []string{"default", "web"}, Final: true, EndReason: sdk.EndFIN,
				L7: &sdk.L7Summary{Protocol: "HTTP", Transactions: 4, Errors: 1, Partial: 2}},
			{Host: "h1", NIC: "eth1", Start: t0, End: t0.Add(time.Second), Transport: sdk.TransportUDP,
				Client: ep("2001:db8::1", 5353), Server: ep("2001:db8::53", 53),
				ClientToServer: sdk.Counts{Packets: 1, IPBytes: 80}},
			// Seen in another namespace's view and reported under another host name.
			{Host: "other-host", Start: t0, End: t0, Transport: sdk.TransportICMP,
				Client: ep("10.0.0.1", 0), Server: ep("10.0.0.2", 0), ClientToServer: sdk.Counts{Packets: 1, IPBytes: 84},
				L7: &sdk.L7Summary{}},
			{Host: "h1", End: t0, Transport: 47, Client: ep("10.0.0.1", 0), Server: ep("10.0.0.3", 0)},
		},
		Events: []sdk.Event{
			{Kind: sdk.EventStart, Time: t0, Host: "h1", NIC: "eth0", Transport: sdk.TransportTCP,
				Client: ep("141.142.228.5", 59856), Server: ep("192.150.187.43", 80), CommunityID: "1:abc",
				Subscriptions: []string{"default"}, L3Frame: []byte{0x45, 0, 0, 60}, L4Frame: []byte{0xe9, 0xd0, 0, 80},
				L7Frame: []byte("GET / HTTP/1.1")},
			{Kind: sdk.EventReset, Time: t0.Add(time.Second), Host: "h1", Transport: sdk.TransportTCP,
				Client: ep("10.1.1.1", 40000), Server: ep("10.1.1.2", 443)},
		},
		L7: []sdk.L7{
			{Protocol: "HTTP", Method: "GET", Host: "example.com", Path: "/api/v1/items", Status: 200, RequestBytes: 0,
				ResponseBytes: 1234, Latency: 15*time.Millisecond + 7, Time: t0, Transport: sdk.TransportTCP, NIC: "eth0",
				Client: ep("141.142.228.5", 59856), Server: ep("192.150.187.43", 80), CommunityID: "1:abc",
				Version: "1.1", UserAgent: "curl/8.0", ContentType: "application/json",
				Attributes: map[string]string{"x-request-id": "r1", "a": "b"}, Subscriptions: []string{"web"}},
			{Protocol: "HTTP", Method: "POST", Host: "10.1.1.2", Path: "/submit", Status: 503, RequestBytes: 10,
				Latency: time.Second, Time: t0.Add(time.Second), Transport: sdk.TransportTCP,
				Client: ep("10.1.1.1", 40001), Server: ep("10.1.1.2", 8080), Partial: true, Flags: []string{"content_length_and_chunked"}},
			{Protocol: "HTTP", Method: "BREW", Path: "/pot", Time: t0.Add(2 * time.Second), Transport: sdk.TransportTCP,
				Client: ep("10.1.1.1", 40002), Server: ep("10.1.1.2", 8080), Error: "malformed_request"},
			{Protocol: "DNS", Method: "QUERY", Query: "example.com", QType: "A", RCode: "NOERROR",
				Answers: []string{"93.184.216.34", "93.184.216.35"}, RequestBytes: 29, ResponseBytes: 61,
				Latency: 3 * time.Millisecond, Time: t0, Transport: sdk.TransportUDP, NIC: "eth0",
				Client: ep("10.0.0.5", 41000), Server: ep("10.0.0.53", 53), CommunityID: "1:dns", Subscriptions: []string{"dns"}},
		},
		Stats: []sdk.Stats{{Source: "agent", Time: t0, Counters: map[string]uint64{"x": 1}}},
		Inventory: &sdk.Inventory{Host: "h1", Time: t0, Interfaces: []sdk.Interface{{Index: 1, Name: "lo",
			Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}, MTU: 65536, State: "up"}},
			Namespaces: []sdk.Namespace{{Name: "blue", Inode: 4026532000, PIDs: []int{42},
				Interfaces: []sdk.Interface{{Index: 3, Name: "veth0", MAC: "aa:bb:cc:dd:ee:ff", MTU: 1500, State: "down", Kind: "veth", Master: "br0"}}}}},
	}
}

func options(t testing.TB, c *collector, protocol string, extra map[string]any) json.RawMessage {
	return optionsAt(t, c.addr, protocol, extra)
}

func optionsAt(t testing.TB, addr, protocol string, extra map[string]any) json.RawMessage {
	o := map[string]any{"protocol": protocol, "endpoint": addr, "agent_id": "agent-7", "timeout": "5s"}
	for k, v := range extra {
		o[k] = v
	}
	raw, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// assertRoundTrip checks that what the collector received decodes to exactly what was sent.
func assertRoundTrip(t *testing.T, c *collector, want *sdk.Batch) {
	t.Helper()
	nLogs := len(want.Flows) + len(want.Events) + 1 // + the inventory
	nSpans := 0
	for _, r := range want.L7 {
		if r.Protocol == "HTTP" {
			nSpans++
		} else {
			nLogs++
		}
	}
	waitFor(t, "the collector to receive every record", 10*time.Second, func() bool {
		l, sp := c.counts()
		return l >= nLogs && sp >= nSpans
	})
	got := c.decode(t)
	if got.rejected != 0 {
		t.Fatalf("%d records rejected", got.rejected)
	}
	if !reflect.DeepEqual(got.agents, map[string]bool{"agent-7": true}) || !reflect.DeepEqual(got.hosts, map[string]bool{"h1": true}) {
		t.Errorf("resources: agents %v hosts %v", got.agents, got.hosts)
	}
	diff(t, "flows", got.flows, want.Flows)
	diff(t, "events", got.events, want.Events)
	var http, other []sdk.L7
	for _, r := range want.L7 {
		if r.Protocol == "HTTP" {
			http = append(http, r)
		} else {
			other = append(other, r)
		}
	}
	diff(t, "HTTP spans", got.l7Spans, http)
	diff(t, "L7 log records", got.l7Logs, other)
	diff(t, "inventory", got.inventory, []sdk.Inventory{*want.Inventory})
}

func diff[T any](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d, want %d", what, len(got), len(want))
		return
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("%s[%d]:\n got %+v\nwant %+v", what, i, got[i], want[i])
		}
	}
}

func TestRoundTripGRPC(t *testing.T) {
	c := newGRPCCollector(t)
	sink := New()
	ctx := context.Background()
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, c, "grpc",
		map[string]any{"headers": map[string]string{"x-tenant": "blue"}})}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Shutdown(ctx) })
	if err := sink.Write(ctx, testBatch()); err != nil {
		t.Fatal(err)
	}
	assertRoundTrip(t, c, testBatch())
	c.mu.Lock()
	if c.headers["x-tenant"] != "blue" {
		t.Errorf("headers not sent: %v", c.headers)
	}
	c.mu.Unlock()
	waitFor(t, "the sent counters", 5*time.Second, func() bool {
		h, _ := sink.Health(ctx)
		return h.Counters["sent.flows"] == 4 && h.Counters["sent.events"] == 2 && h.Counters["sent.l7"] == 4 &&
			h.Counters["sent.inventory"] == 1
	})
	h, _ := sink.Health(ctx)
	if h.Status != sdk.HealthOK || h.Counters["skipped"] != 1 {
		t.Errorf("health %+v", h)
	}
}

// Over OTLP/HTTP with gzip, and through the plugin's gRPC transport as the agent uses it.
func TestRoundTripHTTPThroughPlugin(t *testing.T) {
	c := newHTTPCollector(t)
	sink := plugintest.Sink(t, New())
	ctx := context.Background()
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, c, "http", nil)}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Write(ctx, testBatch()); err != nil {
		t.Fatal(err)
	}
	assertRoundTrip(t, c, testBatch())
	c.mu.Lock()
	if c.gzipped == 0 {
		t.Error("no request came gzip-compressed")
	}
	c.mu.Unlock()
	if err := sink.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// compression none: the HTTP collector sees plain bodies.
func TestHTTPWithoutCompression(t *testing.T) {
	c := newHTTPCollector(t)
	sink := New()
	ctx := context.Background()
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, c, "http",
		map[string]any{"compression": "none"})}); err != nil {
		t.Fatal(err)
	}
	defer sink.Shutdown(ctx)
	_ = sink.Write(ctx, &sdk.Batch{Flows: testBatch().Flows[:1]})
	waitFor(t, "a flow", 5*time.Second, func() bool { l, _ := c.counts(); return l == 1 })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gzipped != 0 {
		t.Errorf("%d requests gzip-compressed with compression none", c.gzipped)
	}
}

// The per-edge sums: cumulative, keyed by client, server, port and transport only.
func TestEdgeMetrics(t *testing.T) {
	c := newGRPCCollector(t)
	sink := New()
	ctx := context.Background()
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, c, "grpc",
		map[string]any{"metrics_interval": "100ms"})}); err != nil {
		t.Fatal(err)
	}
	f := testBatch().Flows[0]
	g := f
	g.Final, g.Client.Port, g.CommunityID = false, 1111, "1:other" // same edge, another conversation
	_ = sink.Write(ctx, &sdk.Batch{Flows: []sdk.Flow{f, g}})
	if err := sink.Shutdown(ctx); err != nil { // the last export carries the final sums
		t.Fatal(err)
	}
	type point struct {
		attrs map[string]string
		value int64
	}
	var last map[string][]point
	c.mu.Lock()
	for _, req := range c.metrics {
		got := map[string][]point{}
		for _, rm := range req.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					sum := m.GetSum()
					if sum == nil || !sum.GetIsMonotonic() || sum.GetAggregationTemporality().String() != "AGGREGATION_TEMPORALITY_CUMULATIVE" {
						t.Errorf("%s is not a cumulative monotonic sum: %v", m.GetName(), m)
						continue
					}
					for _, dp := range sum.GetDataPoints() {
						p := point{attrs: map[string]string{}, value: dp.GetAsInt()}
						for _, kv := range dp.GetAttributes() {
							p.attrs[kv.GetKey()] = anyString(kv.GetValue())
						}
						got[m.GetName()] = append(got[m.GetName()], p)
					}
				}
			}
		}
		if len(got) > 0 {
			last = got
		}
	}
	c.mu.Unlock()
	edge := map[string]string{s.AttrSourceAddress: "141.142.228.5", s.AttrDestinationAddress: "192.150.187.43",
		s.AttrDestinationPort: "80", s.AttrNetworkTransport: "tcp"}
	with := func(dir string) map[string]string {
		m := map[string]string{s.AttrIODirection: dir}
		for k, v := range edge {
			m[k] = v
		}
		return m
	}
	want := map[string][]point{
		s.MetricEdgeFlows:   {{edge, 1}},
		s.MetricEdgeBytes:   {{with("transmit"), 1024}, {with("receive"), 10758}},
		s.MetricEdgePackets: {{with("transmit"), 14}, {with("receive"), 16}},
	}
	for name, pts := range want {
		if len(last[name]) != len(pts) {
			t.Errorf("%s: got %+v, want %+v", name, last[name], pts)
			continue
		}
		for _, wp := range pts {
			found := false
			for _, gp := range last[name] {
				found = found || (reflect.DeepEqual(gp.attrs, wp.attrs) && gp.value == wp.value)
			}
			if !found {
				t.Errorf("%s: no point %+v in %+v", name, wp, last[name])
			}
		}
	}
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	}
	return fmt.Sprintf("%v", v)
}

// A collector that is down: Write never waits, the queue fills, and every record ends in a
// counter (dropped.queue_full while the queue is full, dropped.export_failed after retries).
func TestCollectorDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close() // nothing listens there now
	sink := New()
	ctx := context.Background()
	raw, _ := json.Marshal(map[string]any{"endpoint": dead, "timeout": "1s", "queue_size": 100, "batch_size": 20, "metrics_interval": "0s"})
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: raw}); err != nil {
		t.Fatal(err)
	}
	flows := testBatch().Flows[:2]
	var slowest time.Duration
	const writes = 200
	for i := 0; i < writes; i++ {
		start := time.Now()
		if err := sink.Write(ctx, &sdk.Batch{Flows: flows}); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	if slowest > 5*time.Millisecond {
		t.Errorf("a Write took %s with the collector down", slowest)
	}
	h, _ := sink.Health(ctx)
	if h.Counters["dropped.queue_full"] == 0 || h.Status != sdk.HealthDegraded {
		t.Errorf("a full queue should drop and say so: %+v", h)
	}
	waitFor(t, "an export to fail", 10*time.Second, func() bool {
		h, _ := sink.Health(ctx)
		return h.Counters["dropped.export_failed"] > 0
	})
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_ = sink.Shutdown(sctx)
	h, _ = sink.Health(ctx)
	var dropped uint64
	for k, v := range h.Counters {
		if strings.HasPrefix(k, "dropped.") {
			dropped += v
		}
	}
	if total := uint64(writes * len(flows)); dropped != total || h.Counters["sent.flows"] != 0 {
		t.Errorf("%d records written, %d dropped, %d sent: %v", total, dropped, h.Counters["sent.flows"], h.Counters)
	}
	if h.Counters["export.errors"] == 0 || h.Counters["retried"] == 0 || h.Status != sdk.HealthFailing {
		t.Errorf("failed exports and their retries should be counted: %+v", h)
	}
	if err := sink.Write(ctx, &sdk.Batch{Flows: flows}); !errors.Is(err, ErrShutdown) {
		t.Errorf("Write after Shutdown: %v", err)
	}
}

// A collector that refuses some records: they are counted as rejected, not sent.
func TestPartialSuccess(t *testing.T) {
	c := newGRPCCollector(t)
	c.rejectN = 1
	sink := New()
	ctx := context.Background()
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, c, "grpc", nil)}); err != nil {
		t.Fatal(err)
	}
	defer sink.Shutdown(ctx)
	_ = sink.Write(ctx, &sdk.Batch{Flows: testBatch().Flows[:3]})
	waitFor(t, "the rejection to be counted", 5*time.Second, func() bool {
		h, _ := sink.Health(ctx)
		return h.Counters["dropped.rejected"] == 1 && h.Counters["sent.flows"] == 2
	})
}

// Configure again with another endpoint: later records go to the new collector, and the
// previous configuration's are not lost.
func TestReconfigure(t *testing.T) {
	a, b := newGRPCCollector(t), newHTTPCollector(t)
	sink := New()
	ctx := context.Background()
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, a, "grpc", nil)}); err != nil {
		t.Fatal(err)
	}
	defer sink.Shutdown(ctx)
	flows := testBatch().Flows
	_ = sink.Write(ctx, &sdk.Batch{Flows: flows[:1]})
	// The same options again change nothing.
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, a, "grpc", nil)}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(t, b, "http", nil)}); err != nil {
		t.Fatal(err)
	}
	_ = sink.Write(ctx, &sdk.Batch{Flows: flows[1:2]})
	waitFor(t, "both collectors to get their flow", 5*time.Second, func() bool {
		la, _ := a.counts()
		lb, _ := b.counts()
		return la == 1 && lb == 1
	})
	if got := a.decode(t).flows; len(got) != 1 || !reflect.DeepEqual(got[0], flows[0]) {
		t.Errorf("first collector got %+v", got)
	}
	if got := b.decode(t).flows; len(got) != 1 || !reflect.DeepEqual(got[0], flows[1]) {
		t.Errorf("second collector got %+v", got)
	}
	// A rejected configuration leaves the running one in place.
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: []byte(`{"protocol":"smtp"}`)}); err == nil {
		t.Fatal("a bad protocol was accepted")
	}
	_ = sink.Write(ctx, &sdk.Batch{Flows: flows[2:3]})
	waitFor(t, "the second collector to keep receiving", 5*time.Second, func() bool { l, _ := b.counts(); return l == 2 })
}

func TestBadOptionsNameTheKey(t *testing.T) {
	for opts, key := range map[string]string{
		`{"protocol":"smtp"}`:                                   "plugins.sink-otlp.protocol",
		`{"endpoint":"localhost"}`:                              "plugins.sink-otlp.endpoint",
		`{"endpoint":"localhost:0"}`:                            "plugins.sink-otlp.endpoint",
		`{"timeout":"soon"}`:                                    "plugins.sink-otlp.timeout",
		`{"timeout":"1ns"}`:                                     "plugins.sink-otlp.timeout",
		`{"queue_size":0}`:                                      "plugins.sink-otlp.queue_size",
		`{"queue_size":"big"}`:                                  "plugins.sink-otlp.queue_size",
		`{"batch_size":-1}`:                                     "plugins.sink-otlp.batch_size",
		`{"compression":"zstd"}`:                                "plugins.sink-otlp.compression",
		`{"metrics_interval":"1us"}`:                            "plugins.sink-otlp.metrics_interval",
		`{"colour":"blue"}`:                                     "plugins.sink-otlp.colour",
		`{"ca_file":"/ca.pem"}`:                                 "plugins.sink-otlp.insecure",
		`{"insecure":false,"ca_file":"/nonexistent/ca.pem"}`:    "plugins.sink-otlp.ca_file",
		`{"insecure":false,"cert_file":"/nonexistent/c.pem"}`:   "plugins.sink-otlp.key_file",
		`{"headers":{"":"x"}}`:                                  "plugins.sink-otlp.headers",
		`{"retry":"yes"}`:                                       "plugins.sink-otlp.retry",
		`[1,2]`:                                                 "plugins.sink-otlp",
		`{"protocol":"grpc","endpoint":"127.0.0.1:4317","x":1}`: "plugins.sink-otlp.x",
	} {
		_, err := parseOptions([]byte(opts))
		var ve *sdk.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), key+":") {
			t.Errorf("%s: want an error naming %s, got %v", opts, key, err)
		}
	}
	// Through the plugin transport, a rejection is an sdk.ErrRejected naming the key.
	sink := plugintest.Sink(t, New())
	err := sink.Configure(context.Background(), sdk.SinkConfig{Options: []byte(`{"protocol":"smtp"}`)})
	if !errors.Is(err, sdk.ErrRejected) || !strings.Contains(err.Error(), "plugins.sink-otlp.protocol") {
		t.Errorf("want a rejection naming plugins.sink-otlp.protocol, got %v", err)
	}
}

func TestDefaults(t *testing.T) {
	o, err := parseOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.endpoint() != "127.0.0.1:4317" || !o.Insecure || o.Compression != "gzip" || !o.Retry {
		t.Errorf("defaults %+v", o)
	}
	o, err = parseOptions([]byte(`{"protocol":"http"}`))
	if err != nil || o.endpoint() != "127.0.0.1:4318" {
		t.Errorf("http default endpoint %q, %v", o.endpoint(), err)
	}
}

func TestWriteBeforeConfigure(t *testing.T) {
	sink := New()
	if err := sink.Write(context.Background(), testBatch()); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("got %v", err)
	}
	h, _ := sink.Health(context.Background())
	if h.Counters["dropped.not_configured"] != 11 {
		t.Errorf("counters %v", h.Counters)
	}
	if err := sink.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := sink.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
