package decoder

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/quanyu/quanyu/sdk"
)

// FuzzDecoder feeds arbitrary sample sequences: the input is cut into samples by a small
// header per sample (flags, sequence offset, data length, cut length), so the fuzzer explores
// transports, directions, flows, retransmissions, gaps, cuts and flow ends together. Nothing
// may panic, and the decoder's books must balance: every query taken in is reported, waiting,
// or merged as a retransmission, and nothing stays buffered once every flow has ended.
func FuzzDecoder(f *testing.F) {
	q := dnsQuery(f, 1, "fuzz.example", dnsmessage.TypeA)
	r := dnsResp(f, 1, "fuzz.example", dnsmessage.TypeA, 0, a("192.0.2.1"), cname("x.example"))
	add := func(parts ...[]byte) {
		var in []byte
		for _, p := range parts {
			in = append(in, p...)
		}
		f.Add(in)
	}
	// sample header: flags (bit 0 client, bit 1 TCP, bit 2 FlowEnd, bits 3-4 flow), seq delta,
	// data length (2 bytes), bytes cut by the capture.
	hdr := func(flags, seq byte, n int, cut byte) []byte {
		return []byte{flags, seq, byte(n >> 8), byte(n), cut}
	}
	add(hdr(1, 0, len(q), 0), q, hdr(0, 0, len(r), 0), r)
	tq, tr := framed(q), framed(r)
	add(hdr(3, 0, len(tq), 0), tq, hdr(2, 0, 5, 0), tr[:5], hdr(2, 5, len(tr)-5, 3), tr[5:], hdr(6, 0, 0, 0))
	add(hdr(3, 0, len(tq), 0), tq, hdr(3, 0, len(tq), 0), tq, hdr(3, 9, 4, 0), tq[:4])
	add(hdr(1, 0, len(q), 0), q, hdr(9, 0, len(q), 0), q, hdr(4, 0, 0, 0), hdr(12, 0, 0, 0))
	add(hdr(0, 0, 20, 40), r[:20])

	f.Fuzz(func(t *testing.T, in []byte) {
		d := configured(t, `{"max_flows":2,"max_pending":2,"query_timeout":"50ms","max_answers":1}`)
		var samples []sdk.Sample
		seq := [4][2]uint32{}
		for i := 0; len(in) >= 5; i++ {
			flags, delta, n, cut := in[0], uint32(in[1]), int(binary.BigEndian.Uint16(in[2:])), int(in[4])
			in = in[5:]
			n = min(n, len(in))
			data := in[:n]
			in = in[n:]
			flowN, dir := int(flags>>3)&3, int(flags&1)
			s := sdk.Sample{CommunityID: string(rune('a' + flowN)), NIC: "eth0", Transport: sdk.TransportUDP,
				Client: client, Server: server, FromClient: dir == 1, Time: t0.Add(time.Duration(i) * 20 * time.Millisecond),
				Data: data, WireLen: n + cut, FlowEnd: flags&4 != 0}
			if flags&2 != 0 {
				s.Transport = sdk.TransportTCP
				// A small delta goes backwards (a retransmission), a larger one forwards (a gap).
				seq[flowN][dir] += delta - 8
				s.Seq = seq[flowN][dir]
				seq[flowN][dir] += uint32(s.WireLen)
			}
			if s.FlowEnd {
				s.Data, s.WireLen = nil, 0
			}
			samples = append(samples, s)
		}
		// Whatever the samples, a decode in one call and one sample at a time agree.
		one := configured(t, `{"max_flows":2,"max_pending":2,"query_timeout":"50ms","max_answers":1}`)
		var byOne int
		for i := range samples {
			byOne += len(decode(t, one, samples[i]))
		}
		recs := decode(t, d, samples...)
		if len(recs) != byOne {
			t.Fatalf("%d records in one call, %d one sample at a time", len(recs), byOne)
		}
		for _, r := range recs {
			if r.Protocol != "DNS" || len(r.Answers) > 1 || (r.RCode == "" && !r.Partial) {
				t.Fatalf("record %+v", r)
			}
		}
		// End every flow: nothing may stay waiting or buffered.
		var ends []sdk.Sample
		for n := range 4 {
			for _, tr := range []sdk.Transport{sdk.TransportUDP, sdk.TransportTCP} {
				ends = append(ends, sdk.Sample{CommunityID: string(rune('a' + n)), NIC: "eth0", Transport: tr, FlowEnd: true})
			}
		}
		decode(t, d, ends...)
		c := countersOf(t, d)
		if c["state.flows"] != 0 || c["state.waiting_queries"] != 0 || c["state.buffered_bytes"] != 0 {
			t.Fatalf("state left after every flow ended: %v", c)
		}
		if err := d.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
