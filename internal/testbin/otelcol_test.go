package testbin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	// The stock collector's OTLP exporter compresses with gzip unless told otherwise; the server
	// standing in for analysis must be able to read that.
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// logsSink is an OTLP/gRPC logs server that hands every request it receives to the test.
type logsSink struct {
	collogspb.UnimplementedLogsServiceServer
	got chan *collogspb.ExportLogsServiceRequest
}

func (s *logsSink) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	s.got <- req
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func startLogsSink(t *testing.T) (*logsSink, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening for the collector's exports: %v", err)
	}
	sink := &logsSink{got: make(chan *collogspb.ExportLogsServiceRequest, 16)}
	srv := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(srv, sink)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return sink, ln.Addr().String()
}

// logsRequest is a request with the shapes Quanyu's records use: resource and scope attributes,
// a map body, and attributes of every OTLP value type.
func logsRequest() *collogspb.ExportLogsServiceRequest {
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	i64 := func(i int64) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: i}}
	}
	kv := func(k string, v *commonpb.AnyValue) *commonpb.KeyValue { return &commonpb.KeyValue{Key: k, Value: v} }
	now := uint64(time.Date(2026, 11, 25, 10, 0, 0, 400_000_000, time.UTC).UnixNano())
	record := func(id int64) *logspb.LogRecord {
		return &logspb.LogRecord{
			TimeUnixNano:         now + uint64(id),
			ObservedTimeUnixNano: now + uint64(id) + 1000,
			SeverityNumber:       logspb.SeverityNumber_SEVERITY_NUMBER_INFO,
			SeverityText:         "INFO",
			EventName:            "quanyu.flow",
			Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{
				kv("transport", str("TCP")),
				kv("packets", i64(7)),
			}}}},
			Attributes: []*commonpb.KeyValue{
				kv("quanyu.record.type", str("flow")),
				kv("quanyu.seq", i64(id)),
				kv("network.transport", str("tcp")),
				kv("quanyu.final", &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}),
				kv("quanyu.rtt_ms", &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 1.25}}),
				kv("quanyu.l3_frame", &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0x45, 0, 0, 0x3c}}}),
				kv("quanyu.subscriptions", &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
					Values: []*commonpb.AnyValue{str("default"), str("web")},
				}}}),
			},
		}
	}
	return &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			kv("service.name", str("quanyu-agent")),
			kv("host.name", str("h1")),
		}},
		SchemaUrl: "https://opentelemetry.io/schemas/1.26.0",
		ScopeLogs: []*logspb.ScopeLogs{{
			Scope:      &commonpb.InstrumentationScope{Name: "github.com/quanyu/quanyu", Version: "test"},
			LogRecords: []*logspb.LogRecord{record(1), record(2), record(3)},
		}},
	}}}
}

// TestOtelColForwardsLogs proves the stock collector and StartOtelCol work end to end: a logs
// request sent to the collector's receiver, over gRPC or over HTTP, arrives unchanged at the
// OTLP/gRPC server it exports to, with the exporter's default (gzip) and with no compression.
func TestOtelColForwardsLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the OpenTelemetry Collector, which takes minutes on a cold build cache")
	}
	start := time.Now()
	OtelCol(t)
	t.Logf("building the collector took %s", time.Since(start).Round(time.Millisecond))

	send := map[string]func(t *testing.T, col *OtelColProc, req *collogspb.ExportLogsServiceRequest){
		"grpc": func(t *testing.T, col *OtelColProc, req *collogspb.ExportLogsServiceRequest) {
			conn, err := grpc.NewClient(col.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatalf("dialling the collector: %v", err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := collogspb.NewLogsServiceClient(conn).Export(ctx, req)
			if err != nil {
				t.Fatalf("exporting logs to the collector: %v", err)
			}
			if ps := resp.GetPartialSuccess(); ps.GetRejectedLogRecords() != 0 {
				t.Fatalf("the collector rejected %d records: %s", ps.GetRejectedLogRecords(), ps.GetErrorMessage())
			}
		},
		"http": func(t *testing.T, col *OtelColProc, req *collogspb.ExportLogsServiceRequest) {
			body, err := proto.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.Post(fmt.Sprintf("http://%s/v1/logs", col.HTTP), "application/x-protobuf", bytes.NewReader(body))
			if err != nil {
				t.Fatalf("posting logs to the collector: %v", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("posting logs to the collector: %s: %s", resp.Status, b)
			}
		},
	}
	for _, tc := range []struct {
		name, via, compression string
	}{
		{"grpc in, gzip out", "grpc", ""},
		{"http in, uncompressed out", "http", "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// GIVEN a collector forwarding to an OTLP/gRPC server.
			sink, addr := startLogsSink(t)
			began := time.Now()
			col := StartOtelCol(t, OtelColConfig{ExportTo: addr, Compression: tc.compression})
			t.Logf("collector ready in %s", time.Since(began).Round(time.Millisecond))

			// WHEN a client sends it a logs request.
			want := logsRequest()
			send[tc.via](t, col, want)

			// THEN the server receives the same resource, scope and records, attributes intact.
			select {
			case got := <-sink.got:
				if !proto.Equal(want, got) {
					t.Errorf("forwarded request differs\nsent:\n%s\nreceived:\n%s", prototext.Format(want), prototext.Format(got))
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the collector forwarded nothing within 15s")
			}
		})
	}
}
