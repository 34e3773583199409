package decoder

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/quanyu/quanyu/sdk"
)

// The TCP tests follow one connection: the client's stream starts at sequence number 1000, the
// server's at 5000.

const (
	cseq uint32 = 1000
	sseq uint32 = 5000
)

// Two queries in one segment and their two responses in one segment.
func TestTCPTwoMessagesInOneSegment(t *testing.T) {
	d := New()
	qs := framed(dnsQuery(t, 1, "one.example", dnsmessage.TypeA), dnsQuery(t, 2, "two.example", dnsmessage.TypeAAAA))
	rs := framed(dnsResp(t, 2, "two.example", dnsmessage.TypeAAAA, 3), dnsResp(t, 1, "one.example", dnsmessage.TypeA, 0, a("192.0.2.1")))
	recs := decode(t, d, tcp(true, 0, cseq, qs), tcp(false, 8, sseq, rs))
	if len(recs) != 2 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "two.example", qtype: "AAAA", rcode: "NXDOMAIN", latencyMS: 8})
	check(t, recs[1], want{query: "one.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1"}, latencyMS: 8})
	if recs[0].Transport != sdk.TransportTCP || recs[1].RequestBytes != uint64(len(dnsQuery(t, 1, "one.example", dnsmessage.TypeA))) {
		t.Errorf("record %+v", recs[1])
	}
	if c := countersOf(t, d); c["state.buffered_bytes"] != 0 || c["state.flows"] != 1 {
		t.Errorf("counters %v", c)
	}
}

// One response over three segments, the first holding a single byte of the length prefix;
// the record is timed from the segment its first byte came in.
func TestTCPMessageOverThreeSegments(t *testing.T) {
	d := New()
	q := framed(dnsQuery(t, 3, "split.example", dnsmessage.TypeA))
	r := framed(dnsResp(t, 3, "split.example", dnsmessage.TypeA, 0, a("192.0.2.1"), a("192.0.2.2"), a("192.0.2.3")))
	recs := decode(t, d,
		tcp(true, 0, cseq, q),
		tcp(false, 10, sseq, r[:1]),
		tcp(false, 11, sseq+1, r[1:20]),
	)
	if len(recs) != 0 {
		t.Fatalf("records before the message is whole: %+v", recs)
	}
	if c := countersOf(t, d); c["state.buffered_bytes"] != 20 {
		t.Errorf("buffered %v", c["state.buffered_bytes"])
	}
	recs = decode(t, d, tcp(false, 12, sseq+20, r[20:]))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "split.example", qtype: "A", rcode: "NOERROR",
		answers: []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}, latencyMS: 10})
}

// Retransmitted bytes are skipped, whether a whole segment comes again or a later one
// overlaps what was seen.
func TestTCPRetransmission(t *testing.T) {
	d := New()
	q1, q2 := framed(dnsQuery(t, 1, "a.example", dnsmessage.TypeA)), framed(dnsQuery(t, 2, "b.example", dnsmessage.TypeA))
	both := append(append([]byte{}, q1...), q2...)
	r := framed(dnsResp(t, 1, "a.example", dnsmessage.TypeA, 0, a("192.0.2.1")), dnsResp(t, 2, "b.example", dnsmessage.TypeA, 0))
	recs := decode(t, d,
		tcp(true, 0, cseq, q1),
		tcp(true, 1, cseq, q1),                                 // the same segment again
		tcp(true, 2, cseq+uint32(len(q1))-5, both[len(q1)-5:]), // overlaps q1's last 5 bytes
		tcp(false, 9, sseq, r),
		tcp(false, 10, sseq, r),
	)
	if len(recs) != 2 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "a.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1"}, latencyMS: 9})
	check(t, recs[1], want{query: "b.example", qtype: "A", rcode: "NOERROR", latencyMS: 7})
	c := countersOf(t, d)
	if c["tcp.retransmitted_segments"] != 2 || c["tcp.retransmitted_bytes"] != uint64(len(q1)+5+len(r)) ||
		c["queries.duplicate"] != 0 || c["tcp.gaps"] != 0 {
		t.Errorf("counters %v", c)
	}
}

// A gap inside a message whose length is known: that message is reported from the bytes
// before the gap, Partial, and the next message still starts where the length said.
func TestTCPGapInsideMessage(t *testing.T) {
	d := New()
	r1 := framed(dnsResp(t, 1, "gap.example", dnsmessage.TypeA, 0, a("192.0.2.1"), a("192.0.2.2"), a("192.0.2.3")))
	r2 := framed(dnsResp(t, 2, "next.example", dnsmessage.TypeA, 0, a("198.51.100.2")))
	stream := append(append([]byte{}, r1...), r2...)
	lost := len(r1) - 20 // the third answer and some of the second are never captured
	recs := decode(t, d,
		tcp(true, 0, cseq, framed(dnsQuery(t, 1, "gap.example", dnsmessage.TypeA), dnsQuery(t, 2, "next.example", dnsmessage.TypeA))),
		tcp(false, 5, sseq, stream[:lost]),
		tcp(false, 6, sseq+uint32(len(r1)-4), stream[len(r1)-4:]), // resumes 4 bytes before r2
	)
	if len(recs) != 2 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "gap.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1"},
		latencyMS: 5, partial: true})
	check(t, recs[1], want{query: "next.example", qtype: "A", rcode: "NOERROR", answers: []string{"198.51.100.2"}, latencyMS: 6})
	if c := countersOf(t, d); c["tcp.gaps"] != 1 || c["tcp.missing_bytes"] != 16 || c["tcp.desync"] != 0 {
		t.Errorf("counters %v", c)
	}
}

// A gap over a length prefix loses the boundary: samples are skipped until one starts with a
// plausible message, and decoding resumes there.
func TestTCPGapOverLengthResynchronises(t *testing.T) {
	d := New()
	q := framed(dnsQuery(t, 1, "a.example", dnsmessage.TypeA), dnsQuery(t, 2, "b.example", dnsmessage.TypeA), dnsQuery(t, 3, "c.example", dnsmessage.TypeA))
	r1 := framed(dnsResp(t, 1, "a.example", dnsmessage.TypeA, 0))
	r2 := framed(dnsResp(t, 2, "b.example", dnsmessage.TypeA, 0, a("192.0.2.2"), a("192.0.2.22")))
	r3 := framed(dnsResp(t, 3, "c.example", dnsmessage.TypeA, 0, a("192.0.2.3")))
	s2 := sseq + uint32(len(r1))
	s3 := s2 + uint32(len(r2))
	recs := decode(t, d,
		tcp(true, 0, cseq, q),
		tcp(false, 1, sseq, r1),
		// r2's first 10 bytes are lost; the segment holding the rest starts mid-message.
		tcp(false, 2, s2+10, r2[10:]),
		tcp(false, 3, s3, r3),
		flowEnd(sdk.TransportTCP, 4),
	)
	if len(recs) != 3 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "a.example", qtype: "A", rcode: "NOERROR", latencyMS: 1})
	check(t, recs[1], want{query: "c.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.3"}, latencyMS: 3})
	check(t, recs[2], want{query: "b.example", qtype: "A", partial: true, flags: []string{"no_response"}})
	if c := countersOf(t, d); c["tcp.desync"] != 1 || c["tcp.resync_skipped_samples"] != 1 || c["state.flows"] != 0 {
		t.Errorf("counters %v", c)
	}
}

// A sample cut by the capture inside a message: that message is partial from its prefix, and
// the stream carries on at the next message.
func TestTCPCutSample(t *testing.T) {
	d := New()
	r1 := framed(dnsResp(t, 1, "cut.example", dnsmessage.TypeA, 0, a("192.0.2.1"), a("192.0.2.2")))
	r2 := framed(dnsResp(t, 2, "after.example", dnsmessage.TypeA, 0))
	cut := tcp(false, 5, sseq, r1[:len(r1)-6])
	cut.WireLen = len(r1)
	recs := decode(t, d,
		tcp(true, 0, cseq, framed(dnsQuery(t, 1, "cut.example", dnsmessage.TypeA), dnsQuery(t, 2, "after.example", dnsmessage.TypeA))),
		cut,
		tcp(false, 6, sseq+uint32(len(r1)), r2),
	)
	if len(recs) != 2 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "cut.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1"}, latencyMS: 5, partial: true})
	if recs[0].ResponseBytes != uint64(len(r1)-2) {
		t.Errorf("response bytes %d, want the message's %d", recs[0].ResponseBytes, len(r1)-2)
	}
	check(t, recs[1], want{query: "after.example", qtype: "A", rcode: "NOERROR", latencyMS: 6})
}

// A flow picked up mid-message skips to the first plausible message; a response in progress at
// FlowEnd is reported from what came.
func TestTCPPickedUpMidStreamAndEndedMidMessage(t *testing.T) {
	d := New()
	q1 := framed(dnsQuery(t, 1, "first.example", dnsmessage.TypeA))
	q2 := framed(dnsQuery(t, 2, "second.example", dnsmessage.TypeA))
	r2 := framed(dnsResp(t, 2, "second.example", dnsmessage.TypeA, 0, a("192.0.2.1"), a("192.0.2.2")))
	recs := decode(t, d,
		tcp(true, 0, cseq+7, q1[7:]), // the tail of a message: its "header" has five questions
		tcp(true, 1, cseq+uint32(len(q1)), q2),
		tcp(false, 2, sseq, r2[:len(r2)-3]), // the last answer's address is never seen
		flowEnd(sdk.TransportTCP, 3),
	)
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "second.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1"},
		latencyMS: 1, partial: true})
	if c := countersOf(t, d); c["tcp.resync_skipped_samples"] != 1 || c["state.buffered_bytes"] != 0 || c["state.flows"] != 0 {
		t.Errorf("counters %v", c)
	}
}

// A whole TCP message whose counts run past its length is malformed: the length prefix leaves
// no doubt that nothing is missing.
func TestTCPCountsPastLengthIsAnError(t *testing.T) {
	d := New()
	r := dnsResp(t, 1, "short.example", dnsmessage.TypeA, 0, a("192.0.2.1"))
	r[7] = 2 // two answers claimed, one present
	recs := decode(t, d, tcp(false, 0, sseq, framed(r)))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "short.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1"},
		partial: true, errPrefix: "response: parsing DNS answer 1: message ends early", flags: []string{"no_query"}})
}

// A length prefix below a header's size is not DNS: the boundary is lost, not guessed.
func TestTCPBadLength(t *testing.T) {
	d := New()
	first := append(framed(dnsQuery(t, 1, "ok.example", dnsmessage.TypeA)), 0, 3, 1, 2, 3)
	recs := decode(t, d,
		tcp(true, 0, cseq, first),
		tcp(true, 1, cseq+uint32(len(first)), framed(dnsQuery(t, 2, "again.example", dnsmessage.TypeA))),
		flowEnd(sdk.TransportTCP, 2),
	)
	if len(recs) != 2 || recs[0].Query != "ok.example" || recs[1].Query != "again.example" {
		t.Fatalf("records %+v", recs)
	}
	if c := countersOf(t, d); c["tcp.bad_length"] != 1 || c["tcp.desync"] != 1 || c["tcp.resync_skipped_samples"] != 0 {
		t.Errorf("counters %v", c)
	}
}
