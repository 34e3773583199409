package otlpsink

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/quanyu/quanyu/sdk"
)

// exportOutcome writes two flow records to a sink configured with raw options and returns its
// counters once both are accounted for.
func exportOutcome(t *testing.T, raw json.RawMessage) map[string]uint64 {
	t.Helper()
	sink := New()
	ctx := context.Background()
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: raw}); err != nil {
		t.Fatal(err)
	}
	defer sink.Shutdown(ctx)
	_ = sink.Write(ctx, &sdk.Batch{Flows: testBatch().Flows[:2]})
	var h sdk.Health
	waitFor(t, "both records to be accounted for", 10*time.Second, func() bool {
		h, _ = sink.Health(ctx)
		return h.Counters["sent.flows"]+h.Counters["dropped.export_failed"]+h.Counters["dropped.rejected"] == 2
	})
	return h.Counters
}

// OTLP/HTTP answers: 429, 502, 503 and 504 are retried (honouring Retry-After), anything else
// is final; a partial success counts its rejected records.
func TestHTTPAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answers []int // status of each request; the last repeats
		partial int64
		want    map[string]uint64
	}{
		{"503 then 200", []int{503, 200}, 0, map[string]uint64{"sent.flows": 2, "retried": 1, "export.errors": 0}},
		{"429 then 200", []int{429, 200}, 0, map[string]uint64{"sent.flows": 2, "retried": 1}},
		{"400", []int{400}, 0, map[string]uint64{"dropped.export_failed": 2, "retried": 0, "export.errors": 1}},
		{"504 throughout", []int{504}, 0, map[string]uint64{"dropped.export_failed": 2, "export.errors": 1}},
		{"partial success", []int{200}, 1, map[string]uint64{"sent.flows": 1, "dropped.rejected": 1, "retried": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				n := int(requests.Add(1))
				code := tc.answers[min(n, len(tc.answers))-1]
				if code != http.StatusOK {
					w.Header().Set("Retry-After", "0")
					http.Error(w, "test answers "+http.StatusText(code), code)
					return
				}
				resp := &collogspb.ExportLogsServiceResponse{}
				if tc.partial > 0 {
					resp.PartialSuccess = &collogspb.ExportLogsPartialSuccess{RejectedLogRecords: tc.partial, ErrorMessage: "test rejects"}
				}
				raw, _ := proto.Marshal(resp)
				w.Header().Set("Content-Type", "application/x-protobuf")
				_, _ = w.Write(raw)
			}))
			defer srv.Close()
			raw, _ := json.Marshal(map[string]any{"protocol": "http", "endpoint": strings.TrimPrefix(srv.URL, "http://"),
				"timeout": "1s", "metrics_interval": "0s"})
			got := exportOutcome(t, raw)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
				}
			}
			if tc.name == "504 throughout" && got["retried"] == 0 {
				t.Errorf("a 504 was not retried: %v", got)
			}
		})
	}
}

// scriptedLogs answers OTLP/gRPC exports with err until it has failed fails times.
type scriptedLogs struct {
	collogspb.UnimplementedLogsServiceServer
	err   error
	fails int64
	calls atomic.Int64
}

func (s *scriptedLogs) Export(context.Context, *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	if s.calls.Add(1) <= s.fails {
		return nil, s.err
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

// OTLP/gRPC codes: ResourceExhausted is retried only with RetryInfo; InvalidArgument never.
func TestGRPCCodes(t *testing.T) {
	withRetryInfo, _ := status.New(codes.ResourceExhausted, "slow down").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(10 * time.Millisecond)})
	for _, tc := range []struct {
		name string
		err  error
		want map[string]uint64
	}{
		{"unavailable", status.Error(codes.Unavailable, "restarting"), map[string]uint64{"sent.flows": 2, "retried": 1}},
		{"resource exhausted with RetryInfo", withRetryInfo.Err(), map[string]uint64{"sent.flows": 2, "retried": 1}},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "full"), map[string]uint64{"dropped.export_failed": 2, "retried": 0}},
		{"invalid argument", status.Error(codes.InvalidArgument, "bad"), map[string]uint64{"dropped.export_failed": 2, "retried": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer()
			collogspb.RegisterLogsServiceServer(srv, &scriptedLogs{err: tc.err, fails: 1})
			go func() { _ = srv.Serve(lis) }()
			defer srv.Stop()
			raw, _ := json.Marshal(map[string]any{"endpoint": lis.Addr().String(), "timeout": "2s", "metrics_interval": "0s"})
			got := exportOutcome(t, raw)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}
