package otlpsink

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	"github.com/quanyu/quanyu/sdk"
)

// BenchmarkWriteFlows measures flow records through the whole sink: Write → queue → OTLP log
// records → OTLP/gRPC or OTLP/HTTP → a server on the loopback. It reports ns/record;
// ARCHITECTURE §1.5 asks for a few µs of the sink's own CPU. Two servers:
//   - sink: a counting server that decodes nothing (see countingServer), so the figure is the
//     sink's cost (and the loopback's);
//   - e2e: the test collector, which unmarshals every request as a real collector does; in
//     this process and on this machine its work competes with the sink's, so the figure is
//     end to end.
func BenchmarkWriteFlows(b *testing.B) {
	for _, server := range []string{"sink", "e2e"} {
		for _, bc := range []struct{ protocol, compression string }{
			{"grpc", "none"}, {"grpc", "gzip"}, {"http", "none"}, {"http", "gzip"},
		} {
			b.Run(server+"/"+bc.protocol+"/compression="+bc.compression, func(b *testing.B) {
				var addr string
				switch {
				case server == "sink":
					addr = newCountingServer(b, bc.protocol).addr
				case bc.protocol == "grpc":
					c := newGRPCCollector(b)
					c.discard = true
					addr = c.addr
				default:
					c := newHTTPCollector(b)
					c.discard = true
					addr = c.addr
				}
				benchWriteFlows(b, addr, bc.protocol, bc.compression)
			})
		}
	}
}

func benchWriteFlows(b *testing.B, addr, protocol, compression string) {
	sink := New()
	ctx := context.Background()
	// Metrics on, as deployed: the edge sums are part of each flow's cost.
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: optionsAt(b, addr, protocol,
		map[string]any{"compression": compression, "queue_size": 1 << 20})}); err != nil {
		b.Fatal(err)
	}
	const perBatch = 1024
	batches := make([]*sdk.Batch, 64)
	base := testBatch().Flows[0]
	for i := range batches {
		flows := make([]sdk.Flow, perBatch)
		for j := range flows {
			f := base
			f.Client = sdk.Endpoint{Addr: netip.AddrFrom4([4]byte{10, byte(i), byte(j >> 8), byte(j)}), Port: uint16(30000 + j)}
			f.CommunityID = fmt.Sprintf("1:%08d", i*perBatch+j)
			flows[j] = f
		}
		batches[i] = &sdk.Batch{Flows: flows}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for i := 0; i < b.N; i++ {
		// While the queue is full, wait for the worker: the benchmark measures the
		// exporter's pace, not how fast batches are dropped.
		for sink.cur.queued.Load()+perBatch > int64(sink.cur.opts.QueueSize) {
			time.Sleep(50 * time.Microsecond)
		}
		if err := sink.Write(ctx, batches[i%len(batches)]); err != nil {
			b.Fatal(err)
		}
		sent += perBatch
	}
	for {
		h, _ := sink.Health(ctx)
		if h.Counters["sent.flows"]+h.Counters["dropped.export_failed"] >= uint64(sent) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(sent), "ns/record")
	h, _ := sink.Health(ctx)
	if h.Counters["sent.flows"] != uint64(sent) {
		b.Fatalf("sent %d of %d: %v", h.Counters["sent.flows"], sent, h.Counters)
	}
	_ = sink.Shutdown(ctx)
}

// countingServer accepts OTLP/gRPC and OTLP/HTTP exports of any signal and only counts their
// requests and bytes: it unmarshals nothing, so that a benchmark against it measures the sink
// rather than the collector (whose decoding costs more than the sink's encoding, and which
// shares the CPUs in a benchmark). gzip bodies are decompressed over gRPC (the transport does
// it before the codec) but only counted over HTTP.
type countingServer struct {
	addr            string
	requests, bytes atomic.Int64
}

// countingCodec is the server's codec for every method: requests are counted, not decoded;
// responses are empty, which is every OTLP Export response that reports full success.
type countingCodec struct{ s *countingServer }

func (countingCodec) Name() string                         { return "proto" }
func (countingCodec) Marshal(any) (mem.BufferSlice, error) { return nil, nil }
func (c countingCodec) Unmarshal(data mem.BufferSlice, _ any) error {
	c.s.bytes.Add(int64(data.Len()))
	return nil
}

func newCountingServer(t testing.TB, protocol string) *countingServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &countingServer{addr: lis.Addr().String()}
	if protocol == "grpc" {
		// No service is registered: every method is unknown and answered here.
		srv := grpc.NewServer(grpc.ForceServerCodecV2(countingCodec{c}),
			grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
				var m struct{}
				if err := stream.RecvMsg(&m); err != nil {
					return err
				}
				c.requests.Add(1)
				return stream.SendMsg(&m)
			}))
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		return c
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		c.bytes.Add(n)
		c.requests.Add(1)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

// BenchmarkEmitFlows is the worker's share of BenchmarkWriteFlows: the log records encoded
// into a request (and, with metrics on, the edge sums) of flow records, without exporting them.
func BenchmarkEmitFlows(b *testing.B) {
	for _, metrics := range []string{"on", "off"} {
		b.Run("metrics="+metrics, func(b *testing.B) {
			c := newGRPCCollector(b)
			extra := map[string]any{}
			if metrics == "off" {
				extra["metrics_interval"] = "0s"
			}
			o, err := parseOptions(options(b, c, "grpc", extra))
			if err != nil {
				b.Fatal(err)
			}
			p, err := newPipeline(o, "h1", newCounters(), New().log)
			if err != nil {
				b.Fatal(err)
			}
			defer p.close(context.Background())
			batch := &sdk.Batch{Flows: benchFlows(1024)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.emit(batch)
				p.cur.reset(p.enc.hdr.room)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch.Flows)), "ns/record")
		})
	}
}

// BenchmarkMarshalFlows is the protobuf encoding's share: flow records encoded into the wire
// format of a request (wire.go), what used to be building messages and marshalling them.
func BenchmarkMarshalFlows(b *testing.B) {
	flows := benchFlows(1024)
	hdr, err := newRequestHeader(nil)
	if err != nil {
		b.Fatal(err)
	}
	e := logEncoder{host: "h1", hdr: hdr}
	r := &logRequest{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.reset(hdr.room)
		for j := range flows {
			e.addFlow(r, &flows[j])
		}
		r.seal(&hdr)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(flows)), "ns/record")
	b.ReportMetric(float64(len(r.wire))/float64(len(flows)), "bytes/record")
}

// BenchmarkEmitHTTPL7 is the SDK span path's building cost for HTTP L7 records (their spans,
// ended and collected, not exported), for comparison with BenchmarkEmitFlows.
func BenchmarkEmitHTTPL7(b *testing.B) {
	c := newGRPCCollector(b)
	o, err := parseOptions(options(b, c, "grpc", map[string]any{"metrics_interval": "0s"}))
	if err != nil {
		b.Fatal(err)
	}
	p, err := newPipeline(o, "h1", newCounters(), New().log)
	if err != nil {
		b.Fatal(err)
	}
	defer p.close(context.Background())
	l7 := make([]sdk.L7, 1024)
	for i := range l7 {
		l7[i] = testBatch().L7[0]
		l7[i].Client.Port = uint16(i)
	}
	batch := &sdk.Batch{L7: l7}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.emit(batch)
		clear(p.spans.spans)
		p.spans.spans = p.spans.spans[:0]
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(l7)), "ns/record")
}

// benchFlows are n copies of the test batch's fullest flow record, each its own conversation.
func benchFlows(n int) []sdk.Flow {
	flows := make([]sdk.Flow, n)
	for i := range flows {
		flows[i] = testBatch().Flows[0]
		flows[i].Client.Port = uint16(i)
	}
	return flows
}
