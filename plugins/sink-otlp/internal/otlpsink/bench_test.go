package otlpsink

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/quanyu/quanyu/sdk"
)

// BenchmarkWriteFlows measures flow records end to end: Write → queue → OTLP log records →
// OTLP/gRPC or OTLP/HTTP → a real collector on the loopback, which unmarshals every request.
// It reports ns/record; ARCHITECTURE §1.5 asks for a few µs.
func BenchmarkWriteFlows(b *testing.B) {
	for _, bc := range []struct{ protocol, compression string }{
		{"grpc", "none"}, {"grpc", "gzip"}, {"http", "none"}, {"http", "gzip"},
	} {
		b.Run(bc.protocol+"/compression="+bc.compression, func(b *testing.B) {
			newCollector := newGRPCCollector
			if bc.protocol == "http" {
				newCollector = newHTTPCollector
			}
			c := newCollector(b)
			c.discard = true
			sink := New()
			ctx := context.Background()
			// Metrics on, as deployed: the edge sums are part of each flow's cost.
			if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", Options: options(b, c, bc.protocol,
				map[string]any{"compression": bc.compression, "queue_size": 1 << 20})}); err != nil {
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
		})
	}
}

// BenchmarkEmitFlows is the building share of BenchmarkWriteFlows: the log records (and, with
// metrics on, the SDK's edge sums) of flow records, without marshalling or exporting them.
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
				p.logBuf.consume(p.logBuf.len())
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch.Flows)), "ns/record")
		})
	}
}

// BenchmarkMarshalFlows is the protobuf encoding's share: marshalling a request of flow
// records already built (what the gRPC codec and the HTTP exporter do before sending).
func BenchmarkMarshalFlows(b *testing.B) {
	flows := benchFlows(1024)
	l := &logBuffer{host: "h1"}
	for i := range flows {
		l.addFlow(&flows[i])
	}
	req := logRequest(nil)
	req.ResourceLogs[0].ScopeLogs[0].LogRecords = l.recs
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(flows)), "ns/record")
	b.ReportMetric(float64(len(buf))/float64(len(flows)), "bytes/record")
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
