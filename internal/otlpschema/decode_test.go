package otlpschema

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/quanyu/quanyu/sdk"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 5, time.UTC)

func kvStr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func kvInt(k string, v int64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
}

func kvBool(k string, v bool) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v}}}
}

func kvStrs(k string, vs ...string) *commonpb.KeyValue {
	arr := &commonpb.ArrayValue{}
	for _, v := range vs {
		arr.Values = append(arr.Values, &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}})
	}
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: arr}}}
}

func resource(host, agent string) *resourcepb.Resource {
	return &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
		kvStr(ResourceServiceName, ServiceAgent), kvStr(ResourceHostName, host), kvStr(AttrAgentID, agent)}}
}

func logsReq(res *resourcepb.Resource, recs ...*logspb.LogRecord) *collogspb.ExportLogsServiceRequest {
	return &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: res, ScopeLogs: []*logspb.ScopeLogs{{LogRecords: recs}}}}}
}

func flowRecord(extra ...*commonpb.KeyValue) *logspb.LogRecord {
	attrs := []*commonpb.KeyValue{
		kvStr(AttrSourceAddress, "10.0.0.1"), kvInt(AttrSourcePort, 40000),
		kvStr(AttrDestinationAddress, "10.0.0.2"), kvInt(AttrDestinationPort, 443),
		kvStr(AttrNetworkTransport, "tcp"), kvInt(AttrPacketsToServer, 3), kvInt(AttrBytesToServer, 180),
		kvInt(AttrPacketsToClient, 2), kvInt(AttrBytesToClient, 120), kvBool(AttrFinal, true),
		kvInt(AttrTCPFlags, int64(sdk.FlagSYN|sdk.FlagACK)), kvStr(AttrSourceMAC, "02:42:ac:11:00:02"),
		{Key: AttrVLAN, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
			Values: []*commonpb.AnyValue{{Value: &commonpb.AnyValue_IntValue{IntValue: 10}}}}}}},
		kvInt(AttrFlowStart, t0.Add(-time.Second).UnixNano()), kvStrs(AttrSubscriptions, "a", "b"),
	}
	return &logspb.LogRecord{EventName: EventFlow, TimeUnixNano: uint64(t0.UnixNano()), Attributes: append(attrs, extra...)}
}

func TestDecodeFlow(t *testing.T) {
	out, rej, err := DecodeLogs(logsReq(resource("h1", "a1"), flowRecord()))
	if err != nil || rej != 0 || len(out) != 1 || len(out[0].Flows) != 1 {
		t.Fatalf("out %+v rejected %d err %v", out, rej, err)
	}
	f := out[0].Flows[0]
	if out[0].Host != "h1" || out[0].Agent != "a1" || f.Host != "h1" {
		t.Errorf("resource not read: %+v", out[0])
	}
	want := sdk.Flow{Host: "h1", Start: t0.Add(-time.Second), End: t0, Transport: sdk.TransportTCP,
		Client:         sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 40000},
		Server:         sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 443},
		ClientToServer: sdk.Counts{Packets: 3, IPBytes: 180}, ServerToClient: sdk.Counts{Packets: 2, IPBytes: 120},
		TCPFlags: sdk.FlagSYN | sdk.FlagACK, VLAN: []uint16{10}, ClientMAC: f.ClientMAC, Final: true,
		Subscriptions: []string{"a", "b"}}
	if f.ClientMAC.String() != "02:42:ac:11:00:02" || !reflect.DeepEqual(f, want) {
		t.Errorf("got  %+v\nwant %+v", f, want)
	}
}

// Records whose event name comes from the attribute (older senders) are read; other log
// records are skipped without being rejected.
func TestDecodeLogsEventNames(t *testing.T) {
	old := flowRecord(kvStr(AttrEventName, EventFlow))
	old.EventName = ""
	foreign := &logspb.LogRecord{Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "hello"}}}
	other := &logspb.LogRecord{EventName: "browser.click", Attributes: []*commonpb.KeyValue{kvInt(AttrSourceAddress, 1)}}
	out, rej, err := DecodeLogs(logsReq(nil, old, foreign, other, nil))
	if err != nil || rej != 0 || len(out) != 1 || len(out[0].Flows) != 1 {
		t.Fatalf("out %+v rejected %d err %v", out, rej, err)
	}
	// A resource with nothing of Quanyu's yields no batch.
	out, _, _ = DecodeLogs(logsReq(resource("h", "a"), foreign))
	if len(out) != 0 {
		t.Errorf("batches for foreign records: %+v", out)
	}
}

// A bad record is rejected with the reason, and the rest of the request is still read.
func TestDecodeLogsRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  *logspb.LogRecord
		want string
	}{
		{"port as string", flowRecord(kvStr(AttrSourcePort, "80")), "source.port: want an int, got a string"},
		{"port out of range", flowRecord(kvInt(AttrDestinationPort, 70000)), "destination.port: 70000: out of range"},
		{"bad address", flowRecord(kvStr(AttrSourceAddress, "10.0.0.300")), `client address "10.0.0.300"`},
		{"address as int", flowRecord(kvInt(AttrDestinationAddress, 7)), "destination.address: want a string, got an int"},
		{"negative count", flowRecord(kvInt(AttrBytesToServer, -1)), "-1: out of range"},
		{"flags too big", flowRecord(kvInt(AttrTCPFlags, 256)), "quanyu.flow.tcp_flags"},
		{"bad mac", flowRecord(kvStr(AttrDestinationMAC, "zz")), `MAC "zz"`},
		{"bad transport", flowRecord(kvStr(AttrNetworkTransport, "carrier-pigeon")), "carrier-pigeon"},
		{"final as string", flowRecord(kvStr(AttrFinal, "true")), "want a bool, got a string"},
		{"subscriptions not strings", flowRecord(&commonpb.KeyValue{Key: AttrSubscriptions, Value: &commonpb.AnyValue{
			Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{{}}}}}}),
			"[0]: want a string, got no value"},
		{"time overflow", &logspb.LogRecord{EventName: EventFlow, TimeUnixNano: 1 << 63}, "out of range"},
		{"event frame as string", &logspb.LogRecord{EventName: EventFlowEvent, Attributes: []*commonpb.KeyValue{
			kvStr(AttrL3Frame, "RQ==")}}, "want bytes, got a string"},
		{"inventory without body", &logspb.LogRecord{EventName: EventInventory}, "body: want a JSON string, got no value"},
		{"inventory bad JSON", &logspb.LogRecord{EventName: EventInventory, Body: &commonpb.AnyValue{
			Value: &commonpb.AnyValue_StringValue{StringValue: `{"interfaces":[{"addresses":["x"]}]}`}}}, "body:"},
		{"l7 status as string", &logspb.LogRecord{EventName: EventL7, Attributes: []*commonpb.KeyValue{
			kvStr(AttrHTTPStatus, "200")}}, "http.response.status_code: want an int"},
		{"l7 attribute not a string", &logspb.LogRecord{EventName: EventL7, Attributes: []*commonpb.KeyValue{
			kvInt(AttrL7Attributes+".k", 1)}}, "quanyu.l7.attributes.k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := flowRecord()
			out, rej, err := DecodeLogs(logsReq(resource("h", "a"), tc.rec, good))
			if rej != 1 || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("rejected %d, err %v; want one rejection mentioning %q", rej, err, tc.want)
			}
			if len(out) != 1 || len(out[0].Flows) != 1 {
				t.Errorf("the good record was not read: %+v", out)
			}
		})
	}
}

func span(kind tracepb.Span_SpanKind, start, end time.Time, attrs ...*commonpb.KeyValue) *tracepb.Span {
	return &tracepb.Span{Name: "GET", Kind: kind, StartTimeUnixNano: uint64(start.UnixNano()),
		EndTimeUnixNano: uint64(end.UnixNano()), Attributes: attrs}
}

func tracesReq(res *resourcepb.Resource, spans ...*tracepb.Span) *coltracepb.ExportTraceServiceRequest {
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: res, ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}}
}

// Server spans of any instrumented HTTP server (semantic conventions) become L7 records; client
// spans and spans without http.request.method are skipped.
func TestDecodeForeignServerSpans(t *testing.T) {
	otelRes := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kvStr(ResourceServiceName, "checkout"),
		kvStr(ResourceHostName, "web-1"), kvInt(AttrAgentID, 5)}} // a wrong-typed resource attribute is ignored
	req := tracesReq(otelRes,
		span(tracepb.Span_SPAN_KIND_SERVER, t0, t0.Add(20*time.Millisecond),
			kvStr(AttrHTTPMethod, "GET"), kvStr(AttrURLPath, "/cart"), kvInt(AttrHTTPStatus, 500),
			kvStr(AttrServerAddress, "shop.example"), kvInt(AttrServerPort, 443),
			kvStr(AttrClientAddress, "203.0.113.9"), kvInt(AttrClientPort, 51000),
			kvStr(AttrNetworkLocalAddress, "10.0.0.8"), kvStr(AttrL7Error, "500"),
			kvStr(AttrProtocolVersion, "2"), kvStr(AttrUserAgent, "Mozilla")),
		span(tracepb.Span_SPAN_KIND_SERVER, t0, t0.Add(time.Millisecond),
			kvStr(AttrHTTPMethod, "_OTHER"), kvStr(AttrHTTPMethodOriginal, "PURGE"),
			kvStr(AttrServerAddress, "10.0.0.9"), kvStr(AttrClientAddress, "client.example"),
			kvStr(AttrNetworkPeerAddress, "10.0.0.1"), kvInt(AttrNetworkPeerPort, 999), kvStr(AttrNetworkTransport, "quic")),
		span(tracepb.Span_SPAN_KIND_CLIENT, t0, t0, kvStr(AttrHTTPMethod, "GET")),
		span(tracepb.Span_SPAN_KIND_SERVER, t0, t0, kvStr("rpc.system", "grpc")),
		nil,
	)
	out, rej, err := DecodeTraces(req)
	if err != nil || rej != 0 || len(out) != 1 || len(out[0].L7) != 2 {
		t.Fatalf("out %+v rejected %d err %v", out, rej, err)
	}
	if out[0].Agent != "" || out[0].Host != "web-1" {
		t.Errorf("resource: %+v", out[0])
	}
	want := []sdk.L7{
		{Protocol: "HTTP", Method: "GET", Host: "shop.example", Path: "/cart", Status: 500, Latency: 20 * time.Millisecond,
			Time: t0, Transport: sdk.TransportTCP, Version: "2", UserAgent: "Mozilla",
			Client: sdk.Endpoint{Addr: netip.MustParseAddr("203.0.113.9"), Port: 51000},
			Server: sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.8"), Port: 443}},
		{Protocol: "HTTP", Method: "PURGE", Latency: time.Millisecond, Time: t0, Transport: sdk.TransportUDP,
			Client: sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 999},
			Server: sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.9")}},
	}
	for i := range want {
		if !reflect.DeepEqual(out[0].L7[i], want[i]) {
			t.Errorf("span %d:\n got %+v\nwant %+v", i, out[0].L7[i], want[i])
		}
	}
}

func TestDecodeTracesRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		sp   *tracepb.Span
		want string
	}{
		{"method not a string", span(tracepb.Span_SPAN_KIND_SERVER, t0, t0, kvInt(AttrHTTPMethod, 1)), "want a string"},
		{"status as string", span(tracepb.Span_SPAN_KIND_SERVER, t0, t0, kvStr(AttrHTTPMethod, "GET"), kvStr(AttrHTTPStatus, "200")), "status_code"},
		{"bad peer address", span(tracepb.Span_SPAN_KIND_SERVER, t0, t0, kvStr(AttrHTTPMethod, "GET"), kvStr(AttrNetworkPeerAddress, "nope")), `client address "nope"`},
		{"bad destination", span(tracepb.Span_SPAN_KIND_SERVER, t0, t0, kvStr(AttrHTTPMethod, "GET"), kvStr(AttrDestinationAddress, "::g")), "server address"},
		{"port out of range", span(tracepb.Span_SPAN_KIND_SERVER, t0, t0, kvStr(AttrHTTPMethod, "GET"), kvInt(AttrServerPort, -1)), "server.port"},
		{"partial as int", span(tracepb.Span_SPAN_KIND_SERVER, t0, t0, kvStr(AttrHTTPMethod, "GET"), kvInt(AttrL7Partial, 1)), "want a bool"},
		{"end overflow", &tracepb.Span{Kind: tracepb.Span_SPAN_KIND_SERVER, EndTimeUnixNano: 1<<64 - 1,
			Attributes: []*commonpb.KeyValue{kvStr(AttrHTTPMethod, "GET")}}, "end_time_unix_nano"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := span(tracepb.Span_SPAN_KIND_SERVER, t0, t0, kvStr(AttrHTTPMethod, "GET"))
			out, rej, err := DecodeTraces(tracesReq(nil, tc.sp, good))
			if rej != 1 || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("rejected %d, err %v; want one rejection mentioning %q", rej, err, tc.want)
			}
			if len(out) != 1 || len(out[0].L7) != 1 {
				t.Errorf("the good span was not read: %+v", out)
			}
		})
	}
}

func TestDecodeNil(t *testing.T) {
	if out, rej, err := DecodeLogs(nil); out != nil || rej != 0 || err != nil {
		t.Error("nil logs request")
	}
	if out, rej, err := DecodeTraces(nil); out != nil || rej != 0 || err != nil {
		t.Error("nil traces request")
	}
}

func TestTransportNames(t *testing.T) {
	for _, tr := range []sdk.Transport{sdk.TransportTCP, sdk.TransportUDP, sdk.TransportICMP, sdk.TransportICMPv6, sdk.TransportSCTP, 0, 47, 255} {
		got, err := transport(&commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: TransportName(tr)}})
		if err != nil || got != tr {
			t.Errorf("%d → %q → %d, %v", tr, TransportName(tr), got, err)
		}
	}
}

// Fuzzing: no input makes the decoders panic, and their answer is consistent (a rejection has
// a reason; no reason, no rejection).
func FuzzDecodeLogs(f *testing.F) {
	seed, _ := proto.Marshal(logsReq(resource("h", "a"), flowRecord(),
		&logspb.LogRecord{EventName: EventInventory, Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: `{"host":"h"}`}}},
		&logspb.LogRecord{EventName: EventL7, Attributes: []*commonpb.KeyValue{kvStr(AttrL7Protocol, "DNS"), kvStrs(AttrDNSAnswers, "1.2.3.4")}},
		&logspb.LogRecord{EventName: EventFlowEvent, Attributes: []*commonpb.KeyValue{kvStr(AttrEventKind, "start")}}))
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req collogspb.ExportLogsServiceRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		_, rej, err := DecodeLogs(&req)
		if (rej > 0) != (err != nil) {
			t.Fatalf("rejected %d with error %v", rej, err)
		}
	})
}

func FuzzDecodeTraces(f *testing.F) {
	seed, _ := proto.Marshal(tracesReq(resource("h", "a"), span(tracepb.Span_SPAN_KIND_SERVER, t0, t0.Add(time.Second),
		kvStr(AttrHTTPMethod, "GET"), kvStr(AttrServerAddress, "x"), kvStr(AttrSourceAddress, "10.0.0.1"),
		kvInt(AttrSourcePort, 1), kvStr(AttrL7Attributes+".k", "v"), kvStr(AttrNetworkTransport, "tcp"))))
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req coltracepb.ExportTraceServiceRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		_, rej, err := DecodeTraces(&req)
		if (rej > 0) != (err != nil) {
			t.Fatalf("rejected %d with error %v", rej, err)
		}
	})
}
