package analysis

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync/atomic"

	"github.com/quanyu/quanyu/internal/otlpschema"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // OTLP senders (the OpenTelemetry Collector by default) compress with gzip
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// receiver takes OTLP requests over gRPC and HTTP, decodes Quanyu's records out of them and hands
// them to ingest. A request that does not parse is refused whole with a status that says why; a
// record in it that does not decode is rejected alone, and the sender is told how many through
// OTLP's partial success. Metrics are accepted and counted: the graph is built from the flow
// records, which carry more than the agents' edge counters.
type receiver struct {
	ingest   func([]otlpschema.Batch)
	maxBytes int

	requests, malformed, tooLarge, rejected, records atomic.Uint64
	metricPoints                                     atomic.Uint64
}

func (r *receiver) counters() map[string]uint64 {
	return map[string]uint64{
		"otlp.requests":           r.requests.Load(),
		"otlp.refused.malformed":  r.malformed.Load(),
		"otlp.refused.too_large":  r.tooLarge.Load(),
		"otlp.rejected_records":   r.rejected.Load(),
		"otlp.records":            r.records.Load(),
		"otlp.metric_data_points": r.metricPoints.Load(),
	}
}

func (r *receiver) logs(req *collogspb.ExportLogsServiceRequest) *collogspb.ExportLogsServiceResponse {
	r.requests.Add(1)
	batches, rejected, err := otlpschema.DecodeLogs(req)
	r.take(batches, rejected)
	resp := &collogspb.ExportLogsServiceResponse{}
	if rejected > 0 {
		resp.PartialSuccess = &collogspb.ExportLogsPartialSuccess{RejectedLogRecords: rejected, ErrorMessage: errText(err)}
	}
	return resp
}

func (r *receiver) traces(req *coltracepb.ExportTraceServiceRequest) *coltracepb.ExportTraceServiceResponse {
	r.requests.Add(1)
	batches, rejected, err := otlpschema.DecodeTraces(req)
	r.take(batches, rejected)
	resp := &coltracepb.ExportTraceServiceResponse{}
	if rejected > 0 {
		resp.PartialSuccess = &coltracepb.ExportTracePartialSuccess{RejectedSpans: rejected, ErrorMessage: errText(err)}
	}
	return resp
}

func (r *receiver) metrics(req *colmetricspb.ExportMetricsServiceRequest) *colmetricspb.ExportMetricsServiceResponse {
	r.requests.Add(1)
	var points uint64
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				points += uint64(len(m.GetSum().GetDataPoints()) + len(m.GetGauge().GetDataPoints()) +
					len(m.GetHistogram().GetDataPoints()) + len(m.GetExponentialHistogram().GetDataPoints()) +
					len(m.GetSummary().GetDataPoints()))
			}
		}
	}
	r.metricPoints.Add(points)
	return &colmetricspb.ExportMetricsServiceResponse{}
}

func (r *receiver) take(batches []otlpschema.Batch, rejected int64) {
	r.rejected.Add(uint64(rejected))
	n := 0
	for i := range batches {
		b := &batches[i]
		n += len(b.Flows) + len(b.Events) + len(b.L7) + len(b.Inventory)
	}
	r.records.Add(uint64(n))
	if len(batches) > 0 {
		r.ingest(batches)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ---- gRPC ----

type grpcLogs struct {
	collogspb.UnimplementedLogsServiceServer
	r *receiver
}

func (s grpcLogs) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	return s.r.logs(req), nil
}

type grpcTraces struct {
	coltracepb.UnimplementedTraceServiceServer
	r *receiver
}

func (s grpcTraces) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	return s.r.traces(req), nil
}

type grpcMetrics struct {
	colmetricspb.UnimplementedMetricsServiceServer
	r *receiver
}

func (s grpcMetrics) Export(_ context.Context, req *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	return s.r.metrics(req), nil
}

// grpcServer serves OTLP/gRPC. gRPC itself refuses a message over the limit with
// ResourceExhausted and one that does not parse with Internal, both with the reason, before a
// handler sees them.
func (r *receiver) grpcServer() *grpc.Server {
	s := grpc.NewServer(grpc.MaxRecvMsgSize(r.maxBytes))
	collogspb.RegisterLogsServiceServer(s, grpcLogs{r: r})
	coltracepb.RegisterTraceServiceServer(s, grpcTraces{r: r})
	colmetricspb.RegisterMetricsServiceServer(s, grpcMetrics{r: r})
	return s
}

// ---- HTTP ----

// httpHandler serves OTLP/HTTP: POST /v1/logs, /v1/traces, /v1/metrics with a protobuf or JSON
// body, gzip-compressed or not, answered in the request's encoding.
func (r *receiver) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/logs", func(w http.ResponseWriter, req *http.Request) {
		in := &collogspb.ExportLogsServiceRequest{}
		if enc, ok := r.read(w, req, in); ok {
			r.reply(w, enc, r.logs(in))
		}
	})
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		in := &coltracepb.ExportTraceServiceRequest{}
		if enc, ok := r.read(w, req, in); ok {
			r.reply(w, enc, r.traces(in))
		}
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, req *http.Request) {
		in := &colmetricspb.ExportMetricsServiceRequest{}
		if enc, ok := r.read(w, req, in); ok {
			r.reply(w, enc, r.metrics(in))
		}
	})
	return mux
}

const (
	encProto = "application/x-protobuf"
	encJSON  = "application/json"
)

// read decodes a request body into msg, answering the error itself when it cannot.
func (r *receiver) read(w http.ResponseWriter, req *http.Request, msg proto.Message) (string, bool) {
	ct, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || (ct != encProto && ct != encJSON) {
		r.malformed.Add(1)
		r.fail(w, encProto, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: want %s or %s", req.Header.Get("Content-Type"), encProto, encJSON))
		return "", false
	}
	if req.ContentLength > int64(r.maxBytes) {
		// Said up front: refuse before reading any of it.
		r.tooLarge.Add(1)
		r.fail(w, ct, http.StatusRequestEntityTooLarge, fmt.Sprintf("request of %d bytes, larger than %d", req.ContentLength, r.maxBytes))
		return "", false
	}
	body := io.Reader(http.MaxBytesReader(w, req.Body, int64(r.maxBytes)))
	switch req.Header.Get("Content-Encoding") {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			r.malformed.Add(1)
			r.fail(w, ct, http.StatusBadRequest, "reading the gzip body: "+err.Error())
			return "", false
		}
		defer zr.Close()
		// The limit holds after decompression too: a small bomb must not grow into memory.
		body = io.LimitReader(zr, int64(r.maxBytes)+1)
	default:
		r.malformed.Add(1)
		r.fail(w, ct, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q: want gzip or none", req.Header.Get("Content-Encoding")))
		return "", false
	}
	raw, err := io.ReadAll(body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || len(raw) > r.maxBytes {
		r.tooLarge.Add(1)
		r.fail(w, ct, http.StatusRequestEntityTooLarge, fmt.Sprintf("request larger than %d bytes", r.maxBytes))
		return "", false
	}
	if err != nil {
		r.malformed.Add(1)
		r.fail(w, ct, http.StatusBadRequest, "reading the body: "+err.Error())
		return "", false
	}
	if ct == encJSON {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(raw, msg)
	} else {
		err = proto.Unmarshal(raw, msg)
	}
	if err != nil {
		r.malformed.Add(1)
		r.fail(w, ct, http.StatusBadRequest, "the body is not an OTLP request: "+err.Error())
		return "", false
	}
	return ct, true
}

func (r *receiver) reply(w http.ResponseWriter, enc string, msg proto.Message) {
	raw, err := marshal(enc, msg)
	if err != nil {
		r.fail(w, enc, http.StatusInternalServerError, "encoding the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", enc)
	_, _ = w.Write(raw)
}

// fail answers with an OTLP Status message, as the OTLP/HTTP specification asks.
func (r *receiver) fail(w http.ResponseWriter, enc string, code int, msg string) {
	raw, err := marshal(enc, status.New(httpToGRPC(code), msg).Proto())
	if err != nil {
		raw = []byte(msg)
	}
	w.Header().Set("Content-Type", enc)
	w.WriteHeader(code)
	_, _ = w.Write(raw)
}

func marshal(enc string, msg proto.Message) ([]byte, error) {
	if enc == encJSON {
		return protojson.Marshal(msg)
	}
	return proto.Marshal(msg)
}

func httpToGRPC(code int) codes.Code {
	switch code {
	case http.StatusRequestEntityTooLarge:
		return codes.ResourceExhausted
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return codes.InvalidArgument
	default:
		return codes.Internal
	}
}
