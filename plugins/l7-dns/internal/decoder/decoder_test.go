package decoder

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/quanyu/quanyu/sdk"
)

// One client port carries several transactions, with IDs interleaved and a question's letter
// case changed by the server (as 0x20 randomisation does): each response pairs with its own
// query, an ID can be used again once answered, and the records keep every field.
func TestUDPPairingWithPortReuseAndInterleavedIDs(t *testing.T) {
	d := New()
	recs := decode(t, d,
		udp(true, 0, dnsQuery(t, 1, "a.example.com", dnsmessage.TypeA)),
		udp(true, 1, dnsQuery(t, 2, "B.Example.com", dnsmessage.TypeAAAA)),
		udp(false, 5, dnsResp(t, 2, "b.EXAMPLE.com", dnsmessage.TypeAAAA, 3)),
		udp(false, 9, dnsResp(t, 1, "a.example.com", dnsmessage.TypeA, 0, cname("web.example.com"), a("192.0.2.1"), a("192.0.2.2"))),
		udp(true, 20, dnsQuery(t, 1, "c.example.com", dnsmessage.TypeTXT)),
		udp(false, 27, dnsResp(t, 1, "c.example.com", dnsmessage.TypeTXT, 2)),
	)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3: %+v", len(recs), recs)
	}
	check(t, recs[0], want{query: "B.Example.com", qtype: "AAAA", rcode: "NXDOMAIN", latencyMS: 4})
	check(t, recs[1], want{query: "a.example.com", qtype: "A", rcode: "NOERROR", latencyMS: 9,
		answers: []string{"web.example.com", "192.0.2.1", "192.0.2.2"}})
	check(t, recs[2], want{query: "c.example.com", qtype: "TXT", rcode: "SERVFAIL", latencyMS: 7})

	r := recs[1]
	if r.Method != "QUERY" || r.Time != t0 || r.Transport != sdk.TransportUDP || r.NIC != "eth0" ||
		r.Client != client || r.Server != server || r.CommunityID != cid || len(r.Subscriptions) != 1 ||
		r.RequestBytes != uint64(len(dnsQuery(t, 1, "a.example.com", dnsmessage.TypeA))) || r.ResponseBytes == 0 {
		t.Errorf("record fields: %+v", r)
	}
	c := countersOf(t, d)
	if c["records"] != 3 || c["responses.unmatched"] != 0 || c["state.flows"] != 0 || c["state.waiting_queries"] != 0 {
		t.Errorf("counters %v", c)
	}
}

// A response pairs only with a query of the same ID and question sent the other way.
func TestResponseMustMatchIDQuestionAndDirection(t *testing.T) {
	d := New()
	recs := decode(t, d,
		udp(true, 0, dnsQuery(t, 7, "a.example.com", dnsmessage.TypeA)),
		udp(false, 1, dnsResp(t, 7, "a.example.com", dnsmessage.TypeAAAA, 0)), // other type
		udp(false, 2, dnsResp(t, 8, "a.example.com", dnsmessage.TypeA, 0)),    // other ID
		udp(true, 3, dnsResp(t, 7, "a.example.com", dnsmessage.TypeA, 0)),     // same direction
	)
	if len(recs) != 3 {
		t.Fatalf("%d records: %+v", len(recs), recs)
	}
	for _, r := range recs {
		if !r.Partial || r.Flags[len(r.Flags)-1] != "no_query" || r.RCode != "NOERROR" {
			t.Errorf("an unrelated response paired or lost: %+v", r)
		}
	}
	recs = decode(t, d, udp(false, 4, dnsResp(t, 7, "A.EXAMPLE.COM", dnsmessage.TypeA, 0, a("192.0.2.7"))))
	if len(recs) != 1 || recs[0].Partial || recs[0].Latency != 4*time.Millisecond || recs[0].Answers[0] != "192.0.2.7" {
		t.Fatalf("the right response did not pair: %+v", recs)
	}
}

// A response whose query was not seen is reported from its own question, Partial.
func TestResponseWithoutQuery(t *testing.T) {
	d := New()
	recs := decode(t, d, udp(false, 3, dnsResp(t, 99, "orphan.example.org", dnsmessage.TypeA, 0, a("198.51.100.1"))))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "orphan.example.org", qtype: "A", rcode: "NOERROR", answers: []string{"198.51.100.1"},
		partial: true, flags: []string{"no_query"}})
	if recs[0].Time != t0.Add(3*time.Millisecond) || recs[0].RequestBytes != 0 || recs[0].Method != "QUERY" {
		t.Errorf("record %+v", recs[0])
	}
	if c := countersOf(t, d); c["responses.unmatched"] != 1 || c["records.partial"] != 1 {
		t.Errorf("counters %v", c)
	}
}

// At FlowEnd the queries still waiting are reported without a response, and the flow is gone.
func TestQueryWithoutResponseAtFlowEnd(t *testing.T) {
	d := New()
	if recs := decode(t, d, udp(true, 0, dnsQuery(t, 1, "x.example", dnsmessage.TypeMX))); len(recs) != 0 {
		t.Fatalf("a query alone made records: %+v", recs)
	}
	if c := countersOf(t, d); c["state.flows"] != 1 || c["state.waiting_queries"] != 1 {
		t.Fatalf("the query is not waiting: %v", c)
	}
	recs := decode(t, d, flowEnd(sdk.TransportUDP, 100))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "x.example", qtype: "MX", partial: true, flags: []string{"no_response"}})
	c := countersOf(t, d)
	if c["queries.flow_end"] != 1 || c["state.flows"] != 0 || c["state.waiting_queries"] != 0 || c["samples.flow_end"] != 1 {
		t.Errorf("counters %v", c)
	}
	// The flow is forgotten: a late response is on its own.
	recs = decode(t, d, udp(false, 200, dnsResp(t, 1, "x.example", dnsmessage.TypeMX, 0)))
	if len(recs) != 1 || !recs[0].Partial || recs[0].Latency != 0 {
		t.Fatalf("late response %+v", recs)
	}
}

// The timeout runs on sample time: a query is reported once a sample newer than its time plus
// the timeout is seen (from any flow), and a sample from the past does not turn the clock back.
func TestQueryTimeoutOnSampleClock(t *testing.T) {
	d := configured(t, `{"query_timeout":"2s"}`)
	other := udp(true, 0, dnsQuery(t, 50, "other.example", dnsmessage.TypeA))
	other.CommunityID = "1:other"
	decode(t, d, udp(true, 0, dnsQuery(t, 1, "slow.example", dnsmessage.TypeA)))

	at := func(ms int) sdk.Sample { s := other; s.Time = t0.Add(time.Duration(ms) * time.Millisecond); return s }
	if recs := decode(t, d, at(2000)); len(recs) != 0 {
		t.Fatalf("reported at exactly the timeout: %+v", recs)
	}
	if recs := decode(t, d, at(1000)); len(recs) != 0 {
		t.Fatalf("an older sample expired something: %+v", recs)
	}
	recs := decode(t, d, at(2001))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "slow.example", qtype: "A", partial: true, flags: []string{"no_response"}})
	if recs[0].Time != t0 {
		t.Errorf("time %v", recs[0].Time)
	}
	// The late response is then unmatched.
	recs = decode(t, d, udp(false, 2500, dnsResp(t, 1, "slow.example", dnsmessage.TypeA, 0)))
	if len(recs) != 1 || recs[0].Flags[0] != "no_query" {
		t.Fatalf("late response %+v", recs)
	}
	if c := countersOf(t, d); c["queries.timeout"] != 1 || c["responses.unmatched"] != 1 || c["queries.duplicate"] != 2 {
		t.Errorf("counters %v", c)
	}
}

// A query sent again with the same ID and question is one transaction, timed from the first.
func TestRetransmittedQuery(t *testing.T) {
	d := New()
	q := dnsQuery(t, 4, "again.example", dnsmessage.TypeA)
	recs := decode(t, d, udp(true, 0, q), udp(true, 1000, q), udp(false, 1010, dnsResp(t, 4, "again.example", dnsmessage.TypeA, 0, a("192.0.2.4"))))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "again.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.4"},
		latencyMS: 1010, flags: []string{"query_retransmitted"}})
	if c := countersOf(t, d); c["queries.duplicate"] != 1 {
		t.Errorf("counters %v", c)
	}
}

// A flow holds at most max_pending queries; the oldest goes first, reported.
func TestPendingBound(t *testing.T) {
	d := configured(t, `{"max_pending":2}`)
	recs := decode(t, d,
		udp(true, 0, dnsQuery(t, 1, "one.example", dnsmessage.TypeA)),
		udp(true, 1, dnsQuery(t, 2, "two.example", dnsmessage.TypeA)),
		udp(true, 2, dnsQuery(t, 3, "three.example", dnsmessage.TypeA)),
		udp(false, 3, dnsResp(t, 2, "two.example", dnsmessage.TypeA, 0)),
	)
	if len(recs) != 2 || recs[0].Query != "one.example" || !recs[0].Partial || recs[1].Query != "two.example" || recs[1].Partial {
		t.Fatalf("records %+v", recs)
	}
	c := countersOf(t, d)
	if c["queries.pending_full"] != 1 || c["state.waiting_queries"] != 1 {
		t.Errorf("counters %v", c)
	}
	if h, _ := d.Health(context.Background()); h.Status != sdk.HealthOK {
		t.Errorf("health after the loss was reported once: %+v", h)
	}
}

// Past max_flows the least recently used flow is ended: its queries are reported, counted.
func TestFlowEviction(t *testing.T) {
	d := configured(t, `{"max_flows":2}`)
	sample := func(flow string, ms int, fromClient bool, payload []byte) sdk.Sample {
		s := udp(fromClient, ms, payload)
		s.CommunityID = flow
		return s
	}
	recs := decode(t, d,
		sample("f1", 0, true, dnsQuery(t, 1, "f1.example", dnsmessage.TypeA)),
		sample("f2", 1, true, dnsQuery(t, 2, "f2.example", dnsmessage.TypeA)),
		sample("f1", 2, true, dnsQuery(t, 3, "f1b.example", dnsmessage.TypeA)), // f1 is now the most recent
		sample("f3", 3, true, dnsQuery(t, 4, "f3.example", dnsmessage.TypeA)),  // evicts f2
	)
	if len(recs) != 1 || recs[0].Query != "f2.example" || !recs[0].Partial || recs[0].CommunityID != "f2" {
		t.Fatalf("records %+v", recs)
	}
	// Health says degraded once per new loss: the first call after the eviction, not the next.
	h, _ := d.Health(context.Background())
	if h.Status != sdk.HealthDegraded || !strings.Contains(h.Message, "max_flows") {
		t.Errorf("health after an eviction %+v", h)
	}
	if h, _ = d.Health(context.Background()); h.Status != sdk.HealthOK {
		t.Errorf("health with no new loss %+v", h)
	}
	c := countersOf(t, d)
	if c["flows.evicted"] != 1 || c["queries.evicted"] != 1 || c["state.flows"] != 2 {
		t.Errorf("counters %v", c)
	}
	// f1 still pairs.
	recs = decode(t, d, sample("f1", 4, false, dnsResp(t, 3, "f1b.example", dnsmessage.TypeA, 0)))
	if len(recs) != 1 || recs[0].Partial {
		t.Fatalf("f1 lost: %+v", recs)
	}
	// Shrinking max_flows evicts at once; the records come with the next Decode.
	if err := d.Configure(context.Background(), sdk.DecoderConfig{Options: []byte(`{"max_flows":1}`)}); err != nil {
		t.Fatal(err)
	}
	recs = decode(t, d)
	if len(recs) != 1 || !recs[0].Partial {
		t.Fatalf("records after shrinking: %+v", recs)
	}
	if c := countersOf(t, d); c["state.flows"] != 1 || c["flows.evicted"] != 2 {
		t.Errorf("counters %v", c)
	}
}

// A sample cut by the capture gives a Partial record with the answers that fit; the message
// sizes are the wire's.
func TestCutUDPSample(t *testing.T) {
	d := New()
	full := dnsResp(t, 5, "big.example", dnsmessage.TypeA, 0, a("192.0.2.1"), a("192.0.2.2"), a("192.0.2.3"))
	cut := udp(false, 2, full[:len(full)-8]) // the last answer loses its address
	cut.WireLen = len(full)
	recs := decode(t, d, udp(true, 0, dnsQuery(t, 5, "big.example", dnsmessage.TypeA)), cut)
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "big.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1", "192.0.2.2"},
		latencyMS: 2, partial: true})
	if recs[0].ResponseBytes != uint64(len(full)) {
		t.Errorf("response bytes %d, want the wire's %d", recs[0].ResponseBytes, len(full))
	}
	if c := countersOf(t, d); c["messages.truncated"] != 1 || c["messages.malformed"] != 0 {
		t.Errorf("counters %v", c)
	}
}

// A whole UDP payload that ends before its counts may be a first fragment: Partial, flagged,
// not an error.
func TestUDPPayloadShorterThanCounts(t *testing.T) {
	d := New()
	full := dnsResp(t, 6, "frag.example", dnsmessage.TypeA, 0, a("192.0.2.1"), a("192.0.2.2"))
	recs := decode(t, d, udp(false, 0, full[:len(full)-10]))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "frag.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1"},
		partial: true, flags: []string{"no_query", "counts_exceed_data"}})
}

// Malformed messages never panic and are reported with what was read and an error saying
// what was wrong; a message shorter than a header is counted and skipped.
func TestMalformedMessages(t *testing.T) {
	d := New()
	q := dnsQuery(t, 9, "loop.example", dnsmessage.TypeA)
	r := dnsResp(t, 9, "loop.example", dnsmessage.TypeA, 0, a("192.0.2.9"))
	// The answer's owner is a pointer (0xC0 0x0C) to the question; point it at itself instead.
	owner := len(r) - 16
	if r[owner] != 0xC0 {
		t.Fatalf("unexpected layout % x", r)
	}
	r[owner+1] = byte(owner)
	recs := decode(t, d, udp(true, 0, q), udp(false, 1, r), udp(false, 2, []byte{1, 2, 3}))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "loop.example", qtype: "A", rcode: "NOERROR", latencyMS: 1,
		errPrefix: "response: parsing DNS answer 0: too many compression pointers"})
	c := countersOf(t, d)
	if c["messages.malformed"] != 1 || c["records.error"] != 1 || c["skip.short_message"] != 1 {
		t.Errorf("counters %v", c)
	}
}

// Answers past max_answers are counted, and the record says so.
func TestAnswersBound(t *testing.T) {
	d := configured(t, `{"max_answers":2}`)
	recs := decode(t, d, udp(false, 0, dnsResp(t, 1, "many.example", dnsmessage.TypeA, 0,
		a("192.0.2.1"), a("192.0.2.2"), a("192.0.2.3"), a("192.0.2.4"), a("192.0.2.5"))))
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[0], want{query: "many.example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1", "192.0.2.2"},
		partial: true, flags: []string{"no_query", "answers_cut"}})
	if c := countersOf(t, d); c["answers.cut"] != 3 {
		t.Errorf("counters %v", c)
	}
}

// The opcode names the method; the TC bit is a flag.
func TestOpcodeAndTruncationFlag(t *testing.T) {
	d := New()
	notify := msg(t, 1, dnsmessage.OpCode(4), "zone.example", dnsmessage.TypeSOA, -1)
	ack := msg(t, 1, dnsmessage.OpCode(4), "zone.example", dnsmessage.TypeSOA, 0)
	tc := dnsResp(t, 2, "big.example", dnsmessage.TypeTXT, 0)
	tc[2] |= 0x02 // TC
	recs := decode(t, d, udp(true, 0, notify), udp(false, 1, ack), udp(true, 2, dnsQuery(t, 2, "big.example", dnsmessage.TypeTXT)), udp(false, 3, tc))
	if len(recs) != 2 || recs[0].Method != "NOTIFY" || recs[0].QType != "SOA" || recs[0].Partial {
		t.Fatalf("records %+v", recs)
	}
	check(t, recs[1], want{query: "big.example", qtype: "TXT", rcode: "NOERROR", latencyMS: 1, flags: []string{"truncated"}})
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		opts    string
		want    Options
		badKeys []string
	}{
		{opts: ``, want: DefaultOptions()},
		{opts: `null`, want: DefaultOptions()},
		{opts: `{}`, want: DefaultOptions()},
		{opts: `{"max_flows":10,"max_pending":3,"query_timeout":"250ms","max_answers":4}`,
			want: Options{MaxFlows: 10, MaxPending: 3, QueryTimeout: 250 * time.Millisecond, MaxAnswers: 4}},
		{opts: `{"max_flow":10}`, badKeys: []string{"plugins.l7-dns.max_flow"}},
		{opts: `{"max_flows":"10"}`, badKeys: []string{"plugins.l7-dns.max_flows"}},
		{opts: `{"max_flows":0}`, badKeys: []string{"plugins.l7-dns.max_flows"}},
		{opts: `{"max_pending":1.5,"max_answers":-1}`, badKeys: []string{"plugins.l7-dns.max_answers", "plugins.l7-dns.max_pending"}},
		{opts: `{"query_timeout":5}`, badKeys: []string{"plugins.l7-dns.query_timeout"}},
		{opts: `{"query_timeout":"soon"}`, badKeys: []string{"plugins.l7-dns.query_timeout"}},
		{opts: `{"query_timeout":"0s"}`, badKeys: []string{"plugins.l7-dns.query_timeout"}},
		{opts: `[1]`, badKeys: []string{"plugins.l7-dns"}},
	} {
		got, err := ParseOptions([]byte(tc.opts))
		if tc.badKeys == nil {
			if err != nil || got != tc.want {
				t.Errorf("%s: %+v, %v", tc.opts, got, err)
			}
			continue
		}
		var ve *sdk.ValidationError
		if !errors.As(err, &ve) || len(ve.Fields) != len(tc.badKeys) {
			t.Errorf("%s: error %v, want one naming %v", tc.opts, err, tc.badKeys)
			continue
		}
		for i, f := range ve.Fields {
			if f.Path != tc.badKeys[i] || f.Reason == "" {
				t.Errorf("%s: field error %+v, want path %s", tc.opts, f, tc.badKeys[i])
			}
		}
	}

	// A rejected configuration leaves the previous one in force.
	d := configured(t, `{"max_pending":1}`)
	if err := d.Configure(context.Background(), sdk.DecoderConfig{Options: []byte(`{"max_pending":-4}`)}); err == nil {
		t.Fatal("bad options accepted")
	}
	if d.opts.MaxPending != 1 {
		t.Errorf("options after a rejection: %+v", d.opts)
	}
}

func TestInfoAndShutdown(t *testing.T) {
	d := New()
	info, err := d.Info(context.Background())
	if err != nil || info.Kind != sdk.KindDecoder || info.Name != "l7-dns" || info.Version == "" ||
		len(info.Protocols) != 1 || info.Protocols[0] != "DNS" || len(info.Detect) != 1 {
		t.Fatalf("info %+v %v", info, err)
	}
	det := info.Detect[0]
	if det.Protocol != "DNS" || len(det.Ports) != 1 || det.Ports[0] != 53 || len(det.Transports) != 2 ||
		det.ClientPattern != "" || det.ServerPattern != "" {
		t.Fatalf("detect %+v", det)
	}
	// Without Configure, twice, and with a query still waiting (which is counted as lost).
	decode(t, d, udp(true, 0, dnsQuery(t, 1, "x.example", dnsmessage.TypeA)))
	for range 2 {
		if err := d.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if c := countersOf(t, d); c["queries.lost_at_shutdown"] != 1 || c["state.flows"] != 0 {
		t.Errorf("counters %v", c)
	}
	if err := New().Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Decode(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Decode with a cancelled context: %v", err)
	}
}

// Samples the decoder cannot use are counted, never silently dropped.
func TestSkippedSamples(t *testing.T) {
	d := New()
	sctp := udp(true, 0, dnsQuery(t, 1, "x.example", dnsmessage.TypeA))
	sctp.Transport = sdk.TransportSCTP
	empty := udp(true, 0, nil)
	recs := decode(t, d, sctp, empty, flowEnd(sdk.TransportUDP, 1))
	c := countersOf(t, d)
	if len(recs) != 0 || c["skip.transport"] != 1 || c["skip.empty_sample"] != 1 || c["samples"] != 3 || c["samples.flow_end"] != 1 {
		t.Errorf("records %+v, counters %v", recs, c)
	}
}
