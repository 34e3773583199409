package decoder

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

const (
	benchRequest = "GET /search?q=network+monitoring&hl=en HTTP/1.1\r\n" +
		"Host: www.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
		"Accept-Language: en-US,en;q=0.5\r\n" +
		"Accept-Encoding: gzip, deflate\r\n" +
		"Connection: keep-alive\r\n\r\n"
	benchResponse = "HTTP/1.1 200 OK\r\n" +
		"Date: Wed, 01 May 2024 12:00:00 GMT\r\n" +
		"Server: nginx/1.25.4\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n" +
		"Content-Length: 128\r\n" +
		"Cache-Control: private, max-age=0\r\n" +
		"Connection: keep-alive\r\n\r\n" +
		"<!doctype html><html><head><title>results</title></head><body><p>one hundred and twenty-eight bytes of body</p></body></html>..\n" // 128 bytes
)

// BenchmarkDecode is a keep-alive connection: one request sample and one response sample per
// transaction, through Decode in batches of 128 samples as the agent sends them, records and
// all. One operation is one transaction.
func BenchmarkDecode(b *testing.B) {
	d := New()
	ctx := context.Background()
	req, resp := []byte(benchRequest), []byte(benchResponse)
	base := sdk.Sample{CommunityID: "1:bench", NIC: "eth0", Transport: sdk.TransportTCP,
		Client:        sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 40000},
		Server:        sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 80},
		Subscriptions: []string{"web"}}
	var cseq, sseq uint32
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	batch := make([]sdk.Sample, 0, 128)
	records := 0
	flush := func() {
		recs, err := d.Decode(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		for i := range recs {
			if recs[i].Status != 200 || recs[i].ResponseBytes != 128 || recs[i].Partial {
				b.Fatalf("record %+v", recs[i])
			}
		}
		records += len(recs)
		batch = batch[:0]
	}
	b.SetBytes(int64(len(req) + len(resp)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := base
		now = now.Add(100 * time.Microsecond)
		s.FromClient, s.Time, s.Seq, s.Data, s.WireLen = true, now, cseq, req, len(req)
		batch = append(batch, s)
		cseq += uint32(len(req))
		now = now.Add(100 * time.Microsecond)
		s.FromClient, s.Time, s.Seq, s.Data, s.WireLen = false, now, sseq, resp, len(resp)
		batch = append(batch, s)
		sseq += uint32(len(resp))
		if len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "transactions/s")
	if records != b.N {
		b.Fatalf("%d records for %d transactions", records, b.N)
	}
	if h, _ := d.Health(ctx); h.Counters["desyncs"] != 0 || h.Counters["resyncs"] != 2 {
		b.Fatalf("the connection lost its place: %v", h.Counters)
	}
}
