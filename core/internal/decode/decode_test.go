package decode

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// fakeDecoder records what it is given and answers with what answer makes of each sample.
type fakeDecoder struct {
	mu     sync.Mutex // the stage calls a decoder concurrently for a large batch
	calls  [][]sdk.Sample
	answer func(sdk.Sample) []sdk.L7
}

func (f *fakeDecoder) Info(context.Context) (sdk.Info, error)             { return sdk.Info{}, nil }
func (f *fakeDecoder) Configure(context.Context, sdk.DecoderConfig) error { return nil }
func (f *fakeDecoder) Health(context.Context) (sdk.Health, error)         { return sdk.Health{}, nil }
func (f *fakeDecoder) Shutdown(context.Context) error                     { return nil }
func (f *fakeDecoder) Decode(_ context.Context, s []sdk.Sample) ([]sdk.L7, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, slices.Clone(s))
	var out []sdk.L7
	for _, sm := range s {
		if f.answer != nil {
			out = append(out, f.answer(sm)...)
		}
	}
	return out, nil
}

func (f *fakeDecoder) samples() []sdk.Sample {
	var out []sdk.Sample
	for _, c := range f.calls {
		out = append(out, c...)
	}
	return out
}

var (
	httpInfo = sdk.Info{Protocols: []string{"HTTP"}, Detect: []sdk.Detect{{Protocol: "HTTP",
		ClientPattern: `[A-Z]{1,16} [^\r\n]*HTTP/1\.[0-9]\r?\n`, ServerPattern: `HTTP/1\.[0-9] [0-9]{3}`,
		Ports: []uint16{80}, Transports: []sdk.Transport{sdk.TransportTCP}}}}
	dnsInfo = sdk.Info{Protocols: []string{"DNS"}, Detect: []sdk.Detect{{Protocol: "DNS", Ports: []uint16{53}}}}
)

func newStage(t *testing.T, subs string, opts Options) (*Stage, *fakeDecoder, *fakeDecoder) {
	t.Helper()
	h, d := &fakeDecoder{}, &fakeDecoder{}
	s, err := New(opts, []Decoder{
		{Name: "l7-http", Info: httpInfo, Current: func() sdk.Decoder { return h }},
		{Name: "l7-dns", Info: dnsInfo, Current: func() sdk.Decoder { return d }},
	})
	if err != nil {
		t.Fatal(err)
	}
	set, err := sdk.ParseSubscriptions([]byte(subs))
	if err != nil {
		t.Fatal(err)
	}
	s.SetSubscriptions(set)
	return s, h, d
}

func ep(s string) sdk.Endpoint {
	ap := netip.MustParseAddrPort(s)
	return sdk.Endpoint{Addr: ap.Addr(), Port: ap.Port()}
}

func sample(cid string, server string, fromClient bool, data string, subs ...string) sdk.Sample {
	tr := sdk.TransportTCP
	if strings.HasSuffix(server, ":53") {
		tr = sdk.TransportUDP
	}
	return sdk.Sample{CommunityID: cid, NIC: "eth0", Transport: tr, Client: ep("10.0.0.1:40000"),
		Server: ep(server), FromClient: fromClient, Data: []byte(data), WireLen: len(data), Subscriptions: subs}
}

func TestRoutesByContentThenPort(t *testing.T) {
	s, h, d := newStage(t, `[{"id":"web","spec":{"L7":["HTTP","DNS"]}}]`, Options{DetectSamples: 3})
	b := &sdk.Batch{Samples: []sdk.Sample{
		// HTTP on an odd port is found by its request line.
		sample("a", "10.0.0.2:9999", true, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "web"),
		// DNS has no content rule: its port claims it.
		sample("b", "10.0.0.3:53", true, "\x12\x34\x01\x00", "web"),
		// Picked up mid-response on port 80: the port claims it, the decoder resynchronises.
		sample("c", "10.0.0.4:80", false, "...body bytes...", "web"),
		// Neither content nor port: looked at DetectSamples times, then given up.
		sample("d", "10.0.0.5:7000", true, "hello", "web"),
		sample("d", "10.0.0.5:7000", true, "hello", "web"),
		sample("d", "10.0.0.5:7000", true, "hello", "web"),
		sample("d", "10.0.0.5:7000", true, "GET / HTTP/1.1\r\n", "web"), // too late
		// The request line arrives on the second sample: claimed then, first sample lost.
		sample("e", "10.0.0.6:7000", true, "junk", "web"),
		sample("e", "10.0.0.6:7000", true, "POST /x HTTP/1.0\r\n", "web"),
		sample("e", "10.0.0.6:7000", false, "HTTP/1.0 200 OK\r\n", "web"),
	}}
	s.Process(context.Background(), b)
	var got []string
	for _, sm := range h.samples() {
		got = append(got, sm.CommunityID)
	}
	if want := []string{"a", "c", "e", "e"}; !slices.Equal(got, want) {
		t.Errorf("HTTP decoder got flows %v, want %v", got, want)
	}
	if n := len(d.samples()); n != 1 || d.samples()[0].CommunityID != "b" {
		t.Errorf("DNS decoder got %d samples, want flow b's one", n)
	}
	c := s.Counters()
	if c["decode.flows_undetected"] != 1 || c["decode.drop.samples_unclaimed"] != 5 {
		t.Errorf("undetected %d (want 1), unclaimed samples %d (want 3 of d, 1 late of d, 1 of e)",
			c["decode.flows_undetected"], c["decode.drop.samples_unclaimed"])
	}
	if b.Samples != nil {
		t.Error("samples left in the batch: they must not reach the sinks")
	}
}

// A large batch reaches a decoder as two calls that split it by flow: each flow's samples are
// in one call, in capture order, and every record comes back.
func TestLargeBatchSplitByFlow(t *testing.T) {
	s, h, _ := newStage(t, `{"id":"web","spec":{"L7":["HTTP"]}}`, Options{})
	h.answer = func(sm sdk.Sample) []sdk.L7 {
		if !sm.FromClient {
			return nil
		}
		return []sdk.L7{{Protocol: "HTTP", Method: "GET", Path: string(sm.Data[4:]), CommunityID: sm.CommunityID, NIC: sm.NIC,
			Subscriptions: sm.Subscriptions}}
	}
	const flows, perFlow = 40, 10 // 800 samples: well over two calls' minimum
	b := &sdk.Batch{}
	for i := range perFlow {
		for f := range flows {
			cid := fmt.Sprintf("c%d", f)
			b.Samples = append(b.Samples,
				sample(cid, "10.0.0.2:8080", true, fmt.Sprintf("GET /%d/%d HTTP/1.1\r\n\r\n", f, i), "web"),
				sample(cid, "10.0.0.2:8080", false, "HTTP/1.1 200 OK\r\n\r\n", "web"))
		}
	}
	s.Process(context.Background(), b)
	if len(h.calls) != shards {
		t.Fatalf("%d calls, want %d", len(h.calls), shards)
	}
	callOf := map[string]int{}
	for c, call := range h.calls {
		next := map[string]int{}
		for _, sm := range call {
			if prev, ok := callOf[sm.CommunityID]; ok && prev != c {
				t.Fatalf("flow %s in calls %d and %d", sm.CommunityID, prev, c)
			}
			callOf[sm.CommunityID] = c
			if !sm.FromClient {
				continue
			}
			var f, i int
			if _, err := fmt.Sscanf(string(sm.Data), "GET /%d/%d", &f, &i); err != nil || i != next[sm.CommunityID] {
				t.Fatalf("flow %s: request %d where %d was next (%v)", sm.CommunityID, i, next[sm.CommunityID], err)
			}
			next[sm.CommunityID]++
		}
	}
	if len(b.L7) != flows*perFlow {
		t.Fatalf("%d records, want %d", len(b.L7), flows*perFlow)
	}
}

func TestOnlySubscribedProtocols(t *testing.T) {
	s, h, d := newStage(t, `[{"id":"dns-only","spec":{"L7":["DNS"]}},{"id":"none","spec":{"L4":[80]}},
		{"id":"http-not-dns","spec":{"L7":["HTTP"],"L7Miss":["DNS"]}}]`, Options{})
	s.Process(context.Background(), &sdk.Batch{Samples: []sdk.Sample{
		sample("a", "10.0.0.2:80", true, "GET / HTTP/1.1\r\n", "dns-only"), // HTTP not asked for
		sample("b", "10.0.0.2:80", true, "GET / HTTP/1.1\r\n", "none"),     // no L7 at all
		sample("c", "10.0.0.3:53", true, "\x00\x01", "http-not-dns"),
		sample("d", "10.0.0.3:53", true, "\x00\x01", "dns-only"),
	}})
	if len(h.samples()) != 0 || len(d.samples()) != 1 {
		t.Errorf("http got %d samples (want 0), dns %d (want 1: flow d)", len(h.samples()), len(d.samples()))
	}
	c := s.Counters()
	if c["decode.drop.samples_no_l7_protocol"] != 1 || c["decode.drop.samples_unclaimed"] != 2 {
		t.Errorf("counters %v", c)
	}
}

func TestFlowEndAndSummary(t *testing.T) {
	s, h, _ := newStage(t, `[{"id":"web","spec":{"L7":["HTTP"]}}]`, Options{})
	h.answer = func(sm sdk.Sample) []sdk.L7 {
		if !sm.FromClient || sm.FlowEnd {
			return nil
		}
		status := 200
		if strings.Contains(string(sm.Data), "/fail") {
			status = 503
		}
		return []sdk.L7{{Protocol: "HTTP", Method: "GET", Path: "/p", Status: status, NIC: sm.NIC,
			CommunityID: sm.CommunityID, Subscriptions: sm.Subscriptions, Partial: status == 503}}
	}
	flow := sdk.Flow{NIC: "eth0", CommunityID: "a", Transport: sdk.TransportTCP, Client: ep("10.0.0.1:40000"), Server: ep("10.0.0.2:80")}
	b1 := &sdk.Batch{Samples: []sdk.Sample{
		sample("a", "10.0.0.2:80", true, "GET /ok HTTP/1.1\r\n", "web"),
		sample("a", "10.0.0.2:80", true, "GET /fail HTTP/1.1\r\n", "web"),
	}, Flows: []sdk.Flow{flow}}
	s.Process(context.Background(), b1)
	if len(b1.L7) != 2 || b1.Flows[0].L7 == nil {
		t.Fatalf("first window: %d L7 records, summary %v", len(b1.L7), b1.Flows[0].L7)
	}
	if got, want := *b1.Flows[0].L7, (sdk.L7Summary{Protocol: "HTTP", Transactions: 2, Errors: 1, Partial: 1}); got != want {
		t.Errorf("first window summary %+v, want %+v", got, want)
	}
	final := flow
	final.Final = true
	b2 := &sdk.Batch{Samples: []sdk.Sample{sample("a", "10.0.0.2:80", true, "GET /ok HTTP/1.1\r\n", "web")},
		Flows: []sdk.Flow{final}}
	s.Process(context.Background(), b2)
	if got, want := *b2.Flows[0].L7, (sdk.L7Summary{Protocol: "HTTP", Transactions: 1}); got != want {
		t.Errorf("second window summary %+v, want %+v (counts are per window)", got, want)
	}
	last := h.calls[len(h.calls)-1]
	if end := last[len(last)-1]; !end.FlowEnd || end.CommunityID != "a" || len(end.Data) != 0 {
		t.Errorf("the decoder was not told the flow ended: last sample %+v", end)
	}
	if c := s.Counters(); c["decode.routes"] != 0 {
		t.Errorf("%d routes left after the final record", c["decode.routes"])
	}
}

func TestRecordFiltering(t *testing.T) {
	s, h, d := newStage(t, `[
		{"id":"all","spec":{"L7":["HTTP","DNS"],"L7Miss":["DELETE"]}},
		{"id":"gets","spec":{"L7":["HTTP","GET"]},"options":{"query_strings":true}},
		{"id":"dns","spec":{"L7":["DNS","GET"]}}]`, Options{})
	answer := func(sm sdk.Sample) []sdk.L7 {
		if sm.FlowEnd {
			return nil
		}
		method, path, _ := strings.Cut(string(sm.Data), " ")
		proto := "HTTP"
		if sm.Transport == sdk.TransportUDP {
			proto = "DNS"
		}
		return []sdk.L7{{Protocol: proto, Method: method, Path: path, NIC: sm.NIC, CommunityID: sm.CommunityID,
			Subscriptions: sm.Subscriptions}}
	}
	h.answer, d.answer = answer, answer
	b := &sdk.Batch{Samples: []sdk.Sample{
		sample("a", "10.0.0.2:80", true, "GET /a?user=x&token=SECRET HTTP/1.1\r\n", "all", "gets"),
		sample("a", "10.0.0.2:80", true, "DELETE /d?x=1 HTTP/1.1\r\n", "all", "gets"),
		sample("a", "10.0.0.2:80", true, "POST /p HTTP/1.1\r\n", "all", "gets"),
		sample("b", "10.0.0.2:80", true, "DELETE /only HTTP/1.1\r\n", "all"),
		sample("c", "10.0.0.3:53", true, "QUERY", "dns", "all"),
	}}
	s.Process(context.Background(), b)
	var got []string
	for _, r := range b.L7 {
		got = append(got, r.Method+" "+strings.TrimSuffix(r.Path, " HTTP/1.1\r\n")+" "+strings.Join(r.Subscriptions, ","))
	}
	want := []string{
		// gets keeps query strings, with credentials' values replaced; all does not ask for them,
		// but one subscription keeping them is enough.
		"GET /a?user=x&token=REDACTED all,gets",
		"DELETE /d gets", // all leaves DELETE out; gets wants GET only... see below
		"POST /p all",
		"QUERY  dns,all", // method tokens do not apply to DNS
	}
	// gets has L7 method GET: DELETE is not among its methods, so flow a's DELETE goes nowhere.
	want = slices.Delete(want, 1, 2)
	if !slices.Equal(got, want) {
		t.Errorf("records:\n got %q\nwant %q", got, want)
	}
	if c := s.Counters(); c["decode.drop.l7_not_subscribed"] != 2 {
		t.Errorf("l7_not_subscribed = %d, want 2 (both DELETEs)", c["decode.drop.l7_not_subscribed"])
	}
}

func TestRouteTableBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	s, h, _ := newStage(t, `[{"id":"web","spec":{"L7":["HTTP"]}}]`,
		Options{MaxFlows: 2, RouteIdle: time.Minute, Now: func() time.Time { return now }})
	req := func(cid string) *sdk.Batch {
		return &sdk.Batch{Samples: []sdk.Sample{sample(cid, "10.0.0.2:80", true, "GET / HTTP/1.1\r\n", "web")}}
	}
	s.Process(context.Background(), req("a"))
	s.Process(context.Background(), req("b"))
	s.Process(context.Background(), req("c")) // full, nothing idle: dropped
	if c := s.Counters(); c["decode.drop.samples_route_table_full"] != 1 || len(h.samples()) != 2 {
		t.Fatalf("full table: %v, decoder saw %d samples", c, len(h.samples()))
	}
	now = now.Add(2 * time.Minute)
	s.Process(context.Background(), req("c")) // a and b are idle: swept
	if c := s.Counters(); c["decode.routes"] != 1 || len(h.samples()) != 3 {
		t.Errorf("after the sweep: %v, decoder saw %d samples", c, len(h.samples()))
	}
}

func TestBadDetectPattern(t *testing.T) {
	_, err := New(Options{}, []Decoder{{Name: "l7-x", Info: sdk.Info{Protocols: []string{"HTTP"},
		Detect: []sdk.Detect{{Protocol: "HTTP", ClientPattern: "("}}}}})
	if err == nil || !strings.Contains(err.Error(), "l7-x") || !strings.Contains(err.Error(), "client pattern") {
		t.Errorf("err = %v, want one naming the decoder and the pattern", err)
	}
	_, err = New(Options{}, []Decoder{{Name: "l7-x", Info: sdk.Info{Protocols: []string{"HTTP"},
		Detect: []sdk.Detect{{Protocol: "DNS"}}}}})
	if err == nil || !strings.Contains(err.Error(), `"DNS"`) {
		t.Errorf("err = %v, want one naming the protocol the decoder does not have", err)
	}
}

func TestCutQuery(t *testing.T) {
	for _, c := range []struct {
		in   string
		keep bool
		want string
	}{
		{"/a?b=c", false, "/a"},
		{"/a", true, "/a"},
		{"/a?b=c&Password=hunter2&api_key=k&x", true, "/a?b=c&Password=REDACTED&api_key=REDACTED&x"},
		{"/a#frag?x", true, "/a"},
		{"*", false, "*"},
	} {
		if got := CutQuery(c.in, c.keep); got != c.want {
			t.Errorf("CutQuery(%q, %v) = %q, want %q", c.in, c.keep, got, c.want)
		}
	}
}

func TestScrubFrame(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"GET http://user:CANARY@h/p?token=CANARY HTTP/1.1\r\nAuthorization: Basic CANARY\r\n", "GET http://h/p HTTP/1.1"},
		{"HTTP/1.1 200 OK\r\nSet-Cookie: s=CANARY\r\n", "HTTP/1.1 200 OK"},
		{"\x16\x03\x01binary", "\x16\x03\x01binary"},
	} {
		if got := string(ScrubFrame([]byte(c.in))); got != c.want {
			t.Errorf("ScrubFrame(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
