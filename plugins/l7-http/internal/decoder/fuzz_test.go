package decoder

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// A fuzz program is four bytes per sample:
//
//	op:    bits 0-1 the flow (of 4), bit 2 from the client, bit 3 FlowEnd, bit 4 UDP,
//	       bit 5 cut the sample short, bit 6 move Seq back, bit 7 move Seq forward
//	n:     bytes of payload taken, in order, from the payload input
//	extra: bytes on the wire beyond the data when cut short
//	step:  how far Seq moves; also seconds of capture time that pass
func program(payload []byte, ops []byte) []sdk.Sample {
	type dir struct{ seq uint32 }
	var seqs [4][2]dir
	now := t0
	var out []sdk.Sample
	for i := 0; i+4 <= len(ops); i += 4 {
		op, n, extra, step := ops[i], int(ops[i+1]), int(ops[i+2]), ops[i+3]
		flow := int(op & 3)
		fromClient := op&4 != 0
		now = now.Add(time.Duration(step) * time.Second / 4)
		s := sdk.Sample{
			CommunityID: fmt.Sprintf("1:fuzz-%d", flow), NIC: "eth0", Transport: sdk.TransportTCP,
			Client:     sdk.Endpoint{Addr: netip.MustParseAddr("10.1.1.1"), Port: uint16(1000 + flow)},
			Server:     sdk.Endpoint{Addr: netip.MustParseAddr("10.1.1.2"), Port: 80},
			FromClient: fromClient, Time: now, Subscriptions: []string{"f"},
		}
		if op&16 != 0 {
			s.Transport = sdk.TransportUDP
		}
		d := &seqs[flow][0]
		if fromClient {
			d = &seqs[flow][1]
		}
		if op&64 != 0 {
			d.seq -= uint32(step)
		}
		if op&128 != 0 {
			d.seq += uint32(step) * 97
		}
		n = min(n, len(payload))
		s.Data, payload = payload[:n], payload[n:]
		s.WireLen = n
		if op&32 != 0 {
			s.WireLen += extra
		}
		s.Seq = d.seq
		d.seq += uint32(s.WireLen)
		if op&8 != 0 {
			s.FlowEnd = true
			if op&32 == 0 {
				s.Data, s.WireLen = nil, 0
			}
		}
		out = append(out, s)
	}
	return out
}

// FuzzDecode runs arbitrary sample sequences (sequence numbers, cuts, gaps, flow ends, several
// flows) through the decoder with small limits, then ends every flow.
func FuzzDecode(f *testing.F) {
	seeds := []struct{ client, server string }{
		{get, ok5},
		{pipe, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\n\r\n",
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"GET http://u:p@h/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0 200 OK\r\n\r\nbody"},
	}
	for _, s := range seeds {
		payload := []byte(s.client + s.server)
		c, sv := byte(len(s.client)), byte(len(s.server))
		f.Add(payload, []byte{4, c, 0, 1, 0, sv, 0, 1, 8, 0, 0, 1})                         // whole
		f.Add(payload, []byte{4, c / 2, 0, 1, 4, c - c/2, 0, 1, 0, sv, 0, 1})               // request in two
		f.Add(payload, []byte{4 | 32, c / 2, c - c/2, 1, 0, sv, 0, 1})                      // request cut short
		f.Add(payload, []byte{4, c, 0, 1, 4 | 64, c, 0, 1, 0 | 128, sv, 0, 3, 1, sv, 0, 1}) // retransmission, gap, second flow
		f.Add(payload, []byte{4, c, 0, 0, 0, sv, 0, 250, 5, 10, 0, 250, 6, 10, 0, 250})     // idle expiry, eviction
	}
	f.Fuzz(func(t *testing.T, payload, ops []byte) {
		d := New()
		err := d.Configure(context.Background(), sdk.DecoderConfig{Options: json.RawMessage(
			`{"max_flows": 2, "max_pending": 4, "max_header_bytes": 256, "idle_timeout": "30s"}`)})
		if err != nil {
			t.Fatal(err)
		}
		samples := program(payload, ops)
		for i := 0; i < 4; i++ {
			samples = append(samples, sdk.Sample{CommunityID: fmt.Sprintf("1:fuzz-%d", i), NIC: "eth0",
				Transport: sdk.TransportTCP, Time: t0, FlowEnd: true})
		}
		var recs []sdk.L7
		for i := 0; i < len(samples); i += 3 {
			got, err := d.Decode(context.Background(), samples[i:min(i+3, len(samples))])
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, got...)
		}
		h, _ := d.Health(context.Background())
		if uint64(len(recs)) > h.Counters["requests"] || uint64(len(recs)) != h.Counters["transactions"] {
			t.Fatalf("%d records, %d transactions counted, %d requests", len(recs), h.Counters["transactions"],
				h.Counters["requests"])
		}
		if h.Counters["flows"] != 0 {
			t.Fatalf("%d flows held after every FlowEnd", h.Counters["flows"])
		}
		for _, r := range recs {
			switch {
			case r.Protocol != "HTTP" || r.Transport != sdk.TransportTCP || !strings.HasPrefix(r.CommunityID, "1:fuzz-"):
				t.Fatalf("record %+v", r)
			case r.Latency < 0:
				t.Fatalf("negative latency %v", r.Latency)
			case r.Status == 0 && !r.Partial:
				t.Fatalf("no response but not partial: %+v", r)
			case strings.Contains(r.Host, "@"):
				t.Fatalf("user-info in host %q", r.Host)
			case len(r.Flags) > 0 && !r.Partial && !(len(r.Flags) == 1 && r.Flags[0] == "multiple_host"):
				t.Fatalf("flags %v on a complete record", r.Flags)
			}
		}
	})
}
