package otlpsink

import (
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // the collector accepts gzip, as real ones do
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/sdk"
)

// collector is a real OTLP receiver (gRPC or HTTP) on a loopback port that keeps every request.
type collector struct {
	collogspb.UnimplementedLogsServiceServer

	addr string

	mu       sync.Mutex
	logs     []*collogspb.ExportLogsServiceRequest
	traces   []*coltracepb.ExportTraceServiceRequest
	metrics  []*colmetricspb.ExportMetricsServiceRequest
	gzipped  int               // HTTP requests that came gzip-compressed
	headers  map[string]string // the last request's headers of interest
	rejectN  int64             // answer logs with a partial success rejecting this many
	unavail  bool              // answer everything with Unavailable
	requests int
	// discard counts log records instead of keeping the requests (benchmarks: a copy of every
	// request would be the test's cost, not the sink's).
	discard   bool
	discarded int
}

func (c *collector) note(h func(string) string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	c.headers = map[string]string{"x-tenant": h("x-tenant")}
}

func grpcHeader(ctx context.Context) func(string) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

func (c *collector) Export(ctx context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	c.note(grpcHeader(ctx))
	resp, err := c.takeLogs(req)
	return resp, err
}

func (c *collector) takeLogs(req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unavail {
		return nil, status.Error(codes.Unavailable, "collector is unavailable")
	}
	if c.discard {
		for _, rl := range req.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				c.discarded += len(sl.GetLogRecords())
			}
		}
	} else {
		c.logs = append(c.logs, proto.Clone(req).(*collogspb.ExportLogsServiceRequest))
	}
	resp := &collogspb.ExportLogsServiceResponse{}
	if c.rejectN > 0 {
		resp.PartialSuccess = &collogspb.ExportLogsPartialSuccess{RejectedLogRecords: c.rejectN, ErrorMessage: "test rejects"}
	}
	return resp, nil
}

func (c *collector) takeTraces(req *coltracepb.ExportTraceServiceRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unavail {
		return status.Error(codes.Unavailable, "collector is unavailable")
	}
	c.traces = append(c.traces, proto.Clone(req).(*coltracepb.ExportTraceServiceRequest))
	return nil
}

func (c *collector) takeMetrics(req *colmetricspb.ExportMetricsServiceRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unavail {
		return status.Error(codes.Unavailable, "collector is unavailable")
	}
	c.metrics = append(c.metrics, proto.Clone(req).(*colmetricspb.ExportMetricsServiceRequest))
	return nil
}

// The trace and metric services have a method named Export too; they are registered through
// these adapters.
type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	c *collector
}

func (t traceService) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	t.c.note(grpcHeader(ctx))
	return &coltracepb.ExportTraceServiceResponse{}, t.c.takeTraces(req)
}

type metricService struct {
	colmetricspb.UnimplementedMetricsServiceServer
	c *collector
}

func (m metricService) Export(ctx context.Context, req *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	m.c.note(grpcHeader(ctx))
	return &colmetricspb.ExportMetricsServiceResponse{}, m.c.takeMetrics(req)
}

// newGRPCCollector serves OTLP/gRPC on 127.0.0.1 until the test ends.
func newGRPCCollector(t testing.TB) *collector {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{addr: lis.Addr().String()}
	srv := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(srv, c)
	coltracepb.RegisterTraceServiceServer(srv, traceService{c: c})
	colmetricspb.RegisterMetricsServiceServer(srv, metricService{c: c})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return c
}

// newHTTPCollector serves OTLP/HTTP (protobuf bodies, gzip honoured) on 127.0.0.1.
func newHTTPCollector(t testing.TB) *collector {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{addr: lis.Addr().String()}
	read := func(w http.ResponseWriter, r *http.Request, m proto.Message) bool {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want a POST of application/x-protobuf", http.StatusUnsupportedMediaType)
			return false
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return false
			}
			body = zr
			c.mu.Lock()
			c.gzipped++
			c.mu.Unlock()
		}
		raw, err := io.ReadAll(body)
		if err == nil {
			err = proto.Unmarshal(raw, m)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return false
		}
		c.note(r.Header.Get)
		return true
	}
	reply := func(w http.ResponseWriter, err error, m proto.Message) {
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		raw, _ := proto.Marshal(m)
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(raw)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/logs", func(w http.ResponseWriter, r *http.Request) {
		var req collogspb.ExportLogsServiceRequest
		if read(w, r, &req) {
			resp, err := c.takeLogs(&req)
			reply(w, err, resp)
		}
	})
	mux.HandleFunc("/v1/traces", func(w http.ResponseWriter, r *http.Request) {
		var req coltracepb.ExportTraceServiceRequest
		if read(w, r, &req) {
			reply(w, c.takeTraces(&req), &coltracepb.ExportTraceServiceResponse{})
		}
	})
	mux.HandleFunc("/v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		var req colmetricspb.ExportMetricsServiceRequest
		if read(w, r, &req) {
			reply(w, c.takeMetrics(&req), &colmetricspb.ExportMetricsServiceResponse{})
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

// received decodes everything the collector holds with otlpschema, as analysis would.
type received struct {
	agents, hosts map[string]bool
	flows         []sdk.Flow
	events        []sdk.Event
	l7Logs        []sdk.L7 // from log records (DNS)
	l7Spans       []sdk.L7 // from spans (HTTP)
	inventory     []sdk.Inventory
	rejected      int64
}

func (c *collector) decode(t testing.TB) received {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	r := received{agents: map[string]bool{}, hosts: map[string]bool{}}
	for _, req := range c.logs {
		out, rej, err := otlpschema.DecodeLogs(req)
		if err != nil {
			t.Errorf("decoding logs: %v", err)
		}
		r.rejected += rej
		for _, b := range out {
			r.agents[b.Agent], r.hosts[b.Host] = true, true
			r.flows = append(r.flows, b.Flows...)
			r.events = append(r.events, b.Events...)
			r.l7Logs = append(r.l7Logs, b.L7...)
			r.inventory = append(r.inventory, b.Inventory...)
		}
	}
	for _, req := range c.traces {
		out, rej, err := otlpschema.DecodeTraces(req)
		if err != nil {
			t.Errorf("decoding traces: %v", err)
		}
		r.rejected += rej
		for _, b := range out {
			r.agents[b.Agent], r.hosts[b.Host] = true, true
			r.l7Spans = append(r.l7Spans, b.L7...)
		}
	}
	return r
}

func (c *collector) counts() (logs, spans int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	logs = c.discarded
	for _, req := range c.logs {
		for _, rl := range req.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				logs += len(sl.GetLogRecords())
			}
		}
	}
	for _, req := range c.traces {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				spans += len(ss.GetSpans())
			}
		}
	}
	return logs, spans
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
