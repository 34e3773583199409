package otlpsink

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	s "github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/sdk"
)

// The reference the wire encoding is checked against: the same records built as logspb messages
// (as the sink built them before it wrote the wire format itself) and marshalled by protobuf-go.

// pbAttrs is the attrWriter that builds commonpb messages.
type pbAttrs struct{ kvs []*commonpb.KeyValue }

func (w *pbAttrs) put(key string, v *commonpb.AnyValue) {
	w.kvs = append(w.kvs, &commonpb.KeyValue{Key: key, Value: v})
}

func pbStr(v string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}
}

func pbInt(v int64) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}
}

func pbArray(items []*commonpb.AnyValue) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: items}}}
}

func (w *pbAttrs) putStr(key, v string)       { w.put(key, pbStr(v)) }
func (w *pbAttrs) putInt(key string, v int64) { w.put(key, pbInt(v)) }
func (w *pbAttrs) putBool(key string, v bool) {
	w.put(key, &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v}})
}

func (w *pbAttrs) putAddr(key string, v netip.Addr)      { w.putStr(key, v.String()) }
func (w *pbAttrs) putMAC(key string, v net.HardwareAddr) { w.putStr(key, v.String()) }

func (w *pbAttrs) putBytes(key string, v []byte) {
	w.put(key, &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: v}})
}

func (w *pbAttrs) putStrs(key string, v []string) {
	items := make([]*commonpb.AnyValue, len(v))
	for i, x := range v {
		items[i] = pbStr(x)
	}
	w.put(key, pbArray(items))
}

func (w *pbAttrs) putUint16s(key string, v []uint16) {
	items := make([]*commonpb.AnyValue, len(v))
	for i, x := range v {
		items[i] = pbInt(int64(x))
	}
	w.put(key, pbArray(items))
}

// pbRecord is a log record as the sink built it: the event name as the field and as the first
// attribute, then the mapping's attributes.
func pbRecord(event string, t time.Time, observed uint64, body *commonpb.AnyValue, mapping func(attrBuilder)) *logspb.LogRecord {
	w := &pbAttrs{}
	w.putStr(s.AttrEventName, event)
	if mapping != nil {
		mapping(attrBuilder{w})
	}
	return &logspb.LogRecord{TimeUnixNano: timeUnixNano(t), ObservedTimeUnixNano: observed, EventName: event,
		Attributes: w.kvs, Body: body}
}

// pbRequest is the request of records, for the resource of host and agent.
func pbRequest(resAttrs []attribute.KeyValue, recs []*logspb.LogRecord) *collogspb.ExportLogsServiceRequest {
	res := &resourcepb.Resource{}
	for _, kv := range resAttrs {
		res.Attributes = append(res.Attributes, &commonpb.KeyValue{Key: string(kv.Key), Value: pbStr(kv.Value.AsString())})
	}
	return &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource:  res,
		ScopeLogs: []*logspb.ScopeLogs{{Scope: &commonpb.InstrumentationScope{Name: s.ScopeName}, LogRecords: recs}},
	}}}
}

// wireCase is one record, written both ways.
type wireCase struct {
	name string
	wire func(e *logEncoder, r *logRequest)
	pb   func(observed uint64) *logspb.LogRecord
}

func flowCase(name string, f sdk.Flow) wireCase {
	return wireCase{name,
		func(e *logEncoder, r *logRequest) { e.addFlow(r, &f) },
		func(obs uint64) *logspb.LogRecord {
			return pbRecord(s.EventFlow, f.End, obs, nil, func(b attrBuilder) { b.flow(&f, "h1") })
		}}
}

func eventCase(name string, ev sdk.Event) wireCase {
	return wireCase{name,
		func(e *logEncoder, r *logRequest) { e.addEvent(r, &ev) },
		func(obs uint64) *logspb.LogRecord {
			return pbRecord(s.EventFlowEvent, ev.Time, obs, nil, func(b attrBuilder) { b.event(&ev, "h1") })
		}}
}

func l7Case(name string, l7 sdk.L7) wireCase {
	return wireCase{name,
		func(e *logEncoder, r *logRequest) { e.addL7(r, &l7) },
		func(obs uint64) *logspb.LogRecord {
			return pbRecord(s.EventL7, l7.Time, obs, nil, func(b attrBuilder) { b.l7(&l7, false) })
		}}
}

func inventoryCase(name string, inv sdk.Inventory) wireCase {
	raw := inventoryJSON(&inv, slog.Default())
	return wireCase{name,
		func(e *logEncoder, r *logRequest) { e.addInventory(r, &inv, raw) },
		func(obs uint64) *logspb.LogRecord {
			return pbRecord(s.EventInventory, inv.Time, obs, pbStr(string(raw)), nil)
		}}
}

func wireCases() []wireCase {
	tb := testBatch()
	long := strings.Repeat("ü", 100) // 200 bytes: two-byte lengths
	big := bytes.Repeat([]byte{0xab}, 20000)
	full := tb.Flows[0]
	huge := full
	huge.ClientToServer = sdk.Counts{Packets: 1<<64 - 1, IPBytes: 1 << 63} // negative as int64: ten-byte varints
	huge.IfIndex, huge.RTT = 1<<31-1, time.Duration(1<<62)
	vlans := full
	vlans.VLAN = []uint16{0, 1, 127, 128, 4095}
	longStrs := full
	longStrs.NIC, longStrs.Subscriptions, longStrs.CommunityID = long, []string{"", long, "x"}, long
	v4in6 := tb.Flows[1]
	v4in6.Client, v4in6.Server = ep("::ffff:10.0.0.1", 1), ep("::ffff:10.0.0.2", 2)
	before1970 := full
	before1970.Start, before1970.End = time.Unix(-5, 0), time.Unix(-1, 0)
	notFinal := full
	notFinal.Final, notFinal.L7 = false, &sdk.L7Summary{Protocol: "DNS"}
	bigEvent := tb.Events[0]
	bigEvent.L7Frame = big // a record over 16 KiB: a three-byte length
	cases := []wireCase{
		flowCase("flow with every field", full),
		flowCase("flow of zero values", sdk.Flow{}),
		flowCase("flow over IPv6", tb.Flows[1]),
		flowCase("flow of another host, empty L7 summary", tb.Flows[2]),
		flowCase("flow of an unnamed transport", tb.Flows[3]),
		flowCase("flow of IPv4-mapped IPv6 addresses", v4in6),
		flowCase("flow with VLANs at the varint edges", vlans),
		flowCase("flow with counts past int64", huge),
		flowCase("flow with long strings", longStrs),
		flowCase("flow before 1970", before1970),
		flowCase("flow not final", notFinal),
		eventCase("event with frames", tb.Events[0]),
		eventCase("event without frames", tb.Events[1]),
		eventCase("event over 16 KiB", bigEvent),
		eventCase("event of zero values", sdk.Event{}),
		l7Case("DNS L7", tb.L7[3]),
		l7Case("HTTP L7 as a log record", tb.L7[0]),
		l7Case("partial L7 with flags", tb.L7[1]),
		l7Case("L7 of zero values", sdk.L7{}),
		inventoryCase("inventory", *tb.Inventory),
		inventoryCase("empty inventory", sdk.Inventory{}),
		// No record the mapping makes is under 128 bytes; this one is.
		{"bare record", func(e *logEncoder, r *logRequest) { e.begin(r, "x", 0); e.end(r, kindFlow) },
			func(obs uint64) *logspb.LogRecord { return pbRecord("x", time.Time{}, obs, nil, nil) }},
	}
	return cases
}

// The wire encoding decodes to what protobuf-go's marshalling of the same messages decodes to,
// and has its size: record by record, and all records in one request.
func TestWireEncodingMatchesProtoMarshal(t *testing.T) {
	resAttrs := []attribute.KeyValue{attribute.String(s.ResourceServiceName, s.ServiceAgent),
		attribute.String(s.ResourceHostName, "h1"), attribute.String(s.AttrAgentID, "agent-7")}
	hdr, err := newRequestHeader(resAttrs)
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, cases []wireCase, e *logEncoder, r *logRequest) {
		observed := e.observed
		t.Helper()
		r.reset(hdr.room)
		var recs []*logspb.LogRecord
		for _, c := range cases {
			c.wire(e, r)
			recs = append(recs, c.pb(observed))
		}
		r.seal(&hdr)
		var got collogspb.ExportLogsServiceRequest
		if err := proto.Unmarshal(r.wire, &got); err != nil {
			t.Fatalf("the wire encoding does not decode: %v", err)
		}
		raw, err := proto.Marshal(pbRequest(resAttrs, recs))
		if err != nil {
			t.Fatal(err)
		}
		var want collogspb.ExportLogsServiceRequest
		if err := proto.Unmarshal(raw, &want); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, &want) {
			t.Errorf("decoded wire encoding differs from protobuf-go's:\n got %s\nwant %s",
				prototext.Format(&got), prototext.Format(&want))
		}
		if len(r.wire) != len(raw) {
			t.Errorf("wire encoding is %d bytes, protobuf-go's %d", len(r.wire), len(raw))
		}
		if len(r.kinds) != len(cases) {
			t.Errorf("%d kinds for %d records", len(r.kinds), len(cases))
		}
	}
	// One encoder and one request for every case, as the pipeline reuses them.
	e := &logEncoder{host: "h1", observed: 1_790_000_000_123_456_789, hdr: hdr}
	r := &logRequest{}
	cases := wireCases()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { check(t, []wireCase{c}, e, r) })
	}
	t.Run("all in one request", func(t *testing.T) { check(t, cases, e, r) })
	// And without an observed time, which the bare record needs to be under 128 bytes long.
	e0 := &logEncoder{host: "h1", hdr: hdr}
	for _, c := range cases {
		t.Run(c.name+", no observed time", func(t *testing.T) { check(t, []wireCase{c}, e0, r) })
	}
}

// Once an export is over and the transport has let go of its bytes (gRPC frees its buffers,
// net/http closes the body), the request comes back for reuse: none is held for good.
func TestRequestsComeBack(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		for _, compression := range []string{"none", "gzip"} {
			t.Run(protocol+"/"+compression, func(t *testing.T) {
				srv := newCountingServer(t, protocol)
				sink := New()
				ctx := context.Background()
				if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: optionsAt(t, srv.addr, protocol,
					map[string]any{"compression": compression, "metrics_interval": "0s"})}); err != nil {
					t.Fatal(err)
				}
				defer sink.Shutdown(ctx)
				p := sink.cur
				for i := 1; i <= 3; i++ {
					if err := sink.Write(ctx, &sdk.Batch{Flows: benchFlows(100)}); err != nil {
						t.Fatal(err)
					}
					waitFor(t, "the request to come back", 5*time.Second, func() bool {
						h, _ := sink.Health(ctx)
						return h.Counters["sent.flows"] == uint64(100*i) && len(p.free) == 1
					})
				}
				if srv.requests.Load() != 3 {
					t.Errorf("%d requests, want 3", srv.requests.Load())
				}
			})
		}
	}
}

// The edge sums are bounded: past maxEdges edges, a new edge's flows are counted, not summed,
// and the edges already there go on adding up.
func TestEdgeSumsBounded(t *testing.T) {
	c := newCounters()
	e := newEdgeSums(c)
	flows := make([]sdk.Flow, maxEdges+3)
	for i := range flows {
		flows[i] = sdk.Flow{Transport: sdk.TransportTCP, Final: true,
			Client: sdk.Endpoint{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})},
			Server: ep("10.255.0.1", 443), ClientToServer: sdk.Counts{Packets: 1, IPBytes: 100}}
	}
	e.add(flows)
	e.add(flows[:1])
	if got := c.snapshot()["metrics.edges_full"]; got != 3 {
		t.Errorf("metrics.edges_full = %d, want 3", got)
	}
	sm, err := e.Produce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sm[0].Metrics {
		points := m.Data.(metricdata.Sum[int64]).DataPoints
		want := maxEdges
		if m.Name != s.MetricEdgeFlows {
			want *= 2 // transmit and receive
		}
		if len(points) != want {
			t.Errorf("%s: %d points, want %d", m.Name, len(points), want)
		}
		if m.Name == s.MetricEdgeFlows {
			for _, p := range points {
				if a, _ := p.Attributes.Value(s.AttrSourceAddress); a.AsString() == "10.0.0.0" && p.Value != 2 {
					t.Errorf("the first edge's flows = %d, want 2", p.Value)
				}
			}
		}
	}
}
