package decoder

import (
	"context"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/quanyu/quanyu/sdk"
)

// BenchmarkDecode measures UDP query and response pairs through Decode, in batches of 512
// samples as the agent sends them, over 256 client flows; it reports pairs per second.
func BenchmarkDecode(b *testing.B) {
	const flows, batch = 256, 512
	q := dnsQuery(b, 1, "www.example.com", dnsmessage.TypeA)
	r := dnsResp(b, 1, "www.example.com", dnsmessage.TypeA, 0, a("192.0.2.1"), a("192.0.2.2"))
	samples := make([]sdk.Sample, batch)
	for i := range samples {
		s := udp(i%2 == 0, 0, q)
		if i%2 == 1 {
			s = udp(false, 0, r)
		}
		s.CommunityID = string(rune('A' + i/2%flows))
		samples[i] = s
	}
	d := New()
	ctx := context.Background()
	now := t0
	b.ReportAllocs()
	var pairs int
	for b.Loop() {
		for i := range samples {
			samples[i].Time = now
			now = now.Add(time.Microsecond)
		}
		recs, err := d.Decode(ctx, samples)
		if err != nil || len(recs) != batch/2 || recs[0].Partial {
			b.Fatalf("%d records, %v", len(recs), err)
		}
		pairs += len(recs)
	}
	b.ReportMetric(float64(pairs)/b.Elapsed().Seconds(), "pairs/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pairs), "ns/pair")
}
