package decoder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/version"
	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/plugintest"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// flowGen makes the samples of one connection, numbering sequence numbers and times the way the
// capture would.
type flowGen struct {
	cid, nic       string
	client, server sdk.Endpoint
	cseq, sseq     uint32
	now            time.Time
}

func newFlow(n int) *flowGen {
	return &flowGen{
		cid: fmt.Sprintf("1:flow-%d", n), nic: "eth0",
		client: sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: uint16(40000 + n)},
		server: sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 80},
		cseq:   100, sseq: 9000, now: t0,
	}
}

func (f *flowGen) sample(fromClient bool, data string) sdk.Sample {
	f.now = f.now.Add(time.Millisecond)
	seq := &f.sseq
	if fromClient {
		seq = &f.cseq
	}
	s := sdk.Sample{CommunityID: f.cid, NIC: f.nic, Transport: sdk.TransportTCP, Client: f.client,
		Server: f.server, FromClient: fromClient, Time: f.now, Seq: *seq, Data: []byte(data),
		WireLen: len(data), Subscriptions: []string{"web"}}
	*seq += uint32(len(data))
	return s
}

func (f *flowGen) req(data string) sdk.Sample  { return f.sample(true, data) }
func (f *flowGen) resp(data string) sdk.Sample { return f.sample(false, data) }
func (f *flowGen) end() sdk.Sample {
	return sdk.Sample{CommunityID: f.cid, NIC: f.nic, Transport: sdk.TransportTCP, Client: f.client,
		Server: f.server, Time: f.now, FlowEnd: true}
}

func decode(t *testing.T, d sdk.Decoder, samples ...sdk.Sample) []sdk.L7 {
	t.Helper()
	recs, err := d.Decode(context.Background(), samples)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return recs
}

func health(t *testing.T, d sdk.Decoder) sdk.Health {
	t.Helper()
	h, err := d.Health(context.Background())
	if err != nil {
		t.Fatalf("Health: %v", err)
	}
	return h
}

const (
	get  = "GET /a HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n"
	ok5  = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	pipe = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: h\r\n\r\n"
)

func TestInfo(t *testing.T) {
	info, err := New().Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != sdk.KindDecoder || info.Name != "l7-http" || info.Version != version.Version ||
		!slices.Equal(info.Protocols, []string{"HTTP"}) || len(info.Detect) != 1 {
		t.Fatalf("info %+v", info)
	}
	det := info.Detect[0]
	if det.Protocol != "HTTP" || !slices.Equal(det.Ports, []uint16{80, 8080}) ||
		!slices.Equal(det.Transports, []sdk.Transport{sdk.TransportTCP}) {
		t.Fatalf("detect %+v", det)
	}
}

// The detection patterns claim every request and status line of the captures with an HTTP/1.x
// version, and nothing of other protocols.
func TestDetectPatterns(t *testing.T) {
	client := regexp.MustCompile(ClientPattern)
	server := regexp.MustCompile(ServerPattern)
	testdata := sharedTestdata(t)
	// Request lines without HTTP/1.x and a digit: the parser reads them (tshark does too) but
	// the pattern does not claim them; on ports 80 and 8080 the port rule does.
	unversioned := map[string]bool{"OPTIONS": true}
	for _, m := range []string{"GET", "CCM_POST", "CONNECT", "TRACE", "DELETE", "PUT", "POST", "HEAD"} {
		unversioned[m+" / HTTP/1."] = true
	}
	var claimed, requests int
	for _, tc := range pcapCases {
		capt := readCapture(t, filepath.Join(testdata, "pcaps", "zeek", tc.pcap))
		for _, s := range capt.samples {
			line, _, _ := strings.Cut(string(s.Data), "\n")
			line = strings.TrimSuffix(line, "\r")
			isRequest := s.FromClient && regexp.MustCompile(`^[A-Z_]+( |$)`).MatchString(line) &&
				strings.Contains(line, "HTTP/1.")
			isStatus := !s.FromClient && strings.HasPrefix(line, "HTTP/1.")
			switch {
			case isRequest:
				requests++
				if got, want := client.Match(s.Data), !unversioned[line]; got != want {
					t.Errorf("%s: client pattern on %q: %v, want %v", tc.pcap, line, got, want)
				}
				if client.Match(s.Data) {
					claimed++
				}
			case isStatus:
				if !server.Match(s.Data) {
					t.Errorf("%s: server pattern does not match %q", tc.pcap, line)
				}
			case s.FromClient && client.Match(s.Data), !s.FromClient && server.Match(s.Data):
				t.Errorf("%s: a pattern matches a sample that begins no message: %q", tc.pcap, line)
			}
		}
	}
	if claimed < 30 || requests < claimed {
		t.Fatalf("only %d of %d request lines seen", claimed, requests)
	}
	for name, data := range map[string][]byte{
		"SMTP EHLO":       []byte("EHLO x\r\n"),
		"SMTP MAIL":       []byte("MAIL FROM:<a@example.com>\r\n"),
		"TLS ClientHello": {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 'G', 'E', 'T', ' '},
		"DNS query": {0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 7, 'e', 'x', 'a',
			'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1},
		"request line over two lines": []byte("GET /\r\nHost: HTTP/1.1\r\n"),
		"long method":                 []byte(strings.Repeat("A", 33) + " / HTTP/1.1\r\n"),
		"RTSP":                        []byte("OPTIONS * RTSP/1.0\r\n"),
		"RTSP reply":                  []byte("RTSP/1.0 200 OK\r\n"),
	} {
		if client.Match(data) || server.Match(data) {
			t.Errorf("a pattern matches %s", name)
		}
	}
}

// Credentials never leave: canaries in every sensitive header and in user-info, in every form
// the decoder might copy them from, appear in no field of any record.
func TestCredentialsNeverLeave(t *testing.T) {
	canaries := []string{"CanaryAuthz", "CanaryProxyAuthz", "CanaryCookie", "CanarySetCookie", "CanaryXApiKey",
		"CanaryApiKey", "CanaryAuthToken", "CanaryCustom", "CanaryUser", "CanaryPass", "CanaryHostUser",
		"CanaryHostPass", "CanarySlashPass", "CanaryCutUser", "CanaryFoldUser", "CanaryReferer", "CanaryTrailer",
		"CanaryConnectUser"}
	secretHeaders := "Authorization: Basic CanaryAuthz\r\nProxy-Authorization: Bearer CanaryProxyAuthz\r\n" +
		"Cookie: session=CanaryCookie\r\nX-Api-Key: CanaryXApiKey\r\nApi-Key: CanaryApiKey\r\n" +
		"X-Auth-Token: CanaryAuthToken\r\nX-Custom-Secret: CanaryCustom\r\nReferer: http://CanaryReferer@x/\r\n"
	f := newFlow(1)
	samples := []sdk.Sample{
		f.req("GET http://CanaryUser:CanaryPass@example.com:8080/p?q=1 HTTP/1.1\r\n" + secretHeaders + "\r\n"),
		f.resp("HTTP/1.1 200 OK\r\nSet-Cookie: id=CanarySetCookie; HttpOnly\r\nWWW-Authenticate: CanaryAuthz\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Secret: CanaryTrailer\r\n\r\n"),
		f.req("GET / HTTP/1.1\r\nHost: CanaryHostUser:CanaryHostPass@example.com\r\n" + secretHeaders + "\r\n"),
		f.resp("HTTP/1.1 204 No Content\r\n\r\n"),
		f.req("GET http://CanaryUser:Canary/SlashPass@example.com/p HTTP/1.1\r\n\r\n"),
		f.resp("HTTP/1.1 204 No Content\r\n\r\n"),
		f.req("GET / HTTP/1.1\r\nHost: CanaryFoldUser\r\n :pw@example.com\r\n\r\n"),
		f.resp("HTTP/1.1 204 No Content\r\n\r\n"),
		f.req("CONNECT CanaryConnectUser:pw@example.com:443 HTTP/1.1\r\n\r\n"),
		f.resp("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
	}
	// A request line cut inside the authority: the '@' that would show the user-info was not
	// captured.
	cut := "GET http://CanaryCutUser:secret@example.com/ HTTP/1.1\r\n\r\n"
	s := f.req(cut)
	s.Data = s.Data[:len("GET http://CanaryCutUser:se")]
	samples = append(samples, s, f.resp("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"), f.end())

	d := New()
	recs := decode(t, d, samples...)
	if len(recs) != 6 {
		t.Fatalf("%d records, want 6: %+v", len(recs), recs)
	}
	raw, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range canaries {
		if strings.Contains(strings.ToLower(string(raw)), strings.ToLower(c)) {
			t.Errorf("canary %s leaked into a record: %s", c, raw)
		}
	}
	if recs[0].Host != "example.com:8080" || recs[0].Path != "/p?q=1" || recs[1].Host != "example.com" ||
		recs[2].Host != "example.com" || recs[2].Path != "/p" {
		t.Errorf("hosts and paths: %+v", recs[:3])
	}
}

func TestEviction(t *testing.T) {
	d := New()
	if err := d.Configure(context.Background(), sdk.DecoderConfig{Options: json.RawMessage(`{"max_flows": 2}`)}); err != nil {
		t.Fatal(err)
	}
	a, b, c := newFlow(1), newFlow(2), newFlow(3)
	// GIVEN two flows, a with a request waiting and b active after it,
	recs := decode(t, d, a.req(get), b.req(get), b.resp(ok5))
	if len(recs) != 1 || recs[0].CommunityID != b.cid {
		t.Fatalf("records %+v", recs)
	}
	// WHEN a third flow starts,
	recs = decode(t, d, c.req(get))
	// THEN the least recently active (a) is evicted, its request reported partial,
	if len(recs) != 1 || recs[0].CommunityID != a.cid || !recs[0].Partial || recs[0].Status != 0 || recs[0].Path != "/a" {
		t.Fatalf("records %+v", recs)
	}
	h := health(t, d)
	if h.Status != sdk.HealthDegraded || h.Counters["evicted"] != 1 || h.Counters["flows"] != 2 ||
		!strings.Contains(h.Message, "max_flows 2") {
		t.Fatalf("health %+v", h)
	}
	// and the health is back to ok once evictions stop.
	if h := health(t, d); h.Status != sdk.HealthOK {
		t.Fatalf("health %+v", h)
	}
	// b and c are still followed.
	recs = decode(t, d, c.resp(ok5), b.req(get), b.resp(ok5))
	if len(recs) != 2 || recs[0].CommunityID != c.cid || recs[1].CommunityID != b.cid || recs[0].Partial {
		t.Fatalf("records %+v", recs)
	}
	// A lower max_flows evicts down to it at the next Decode.
	if err := d.Configure(context.Background(), sdk.DecoderConfig{Options: json.RawMessage(`{"max_flows": 1}`)}); err != nil {
		t.Fatal(err)
	}
	decode(t, d)
	if h := health(t, d); h.Counters["flows"] != 1 || h.Counters["evicted"] != 2 {
		t.Fatalf("health %+v", h)
	}
}

func TestIdleExpiry(t *testing.T) {
	d := New()
	if err := d.Configure(context.Background(), sdk.DecoderConfig{Options: json.RawMessage(`{"idle_timeout": "30s"}`)}); err != nil {
		t.Fatal(err)
	}
	a, b := newFlow(1), newFlow(2)
	recs := decode(t, d, a.req("GET / HTTP/1.0\r\n\r\n"), a.resp("HTTP/1.0 200 OK\r\n\r\nuntil close"),
		a.req(get))
	if len(recs) != 0 {
		t.Fatalf("records %+v", recs)
	}
	b.now = t0.Add(20 * time.Second)
	if recs := decode(t, d, b.req(get)); len(recs) != 0 {
		t.Fatalf("expired too early: %+v", recs)
	}
	b.now = t0.Add(25 * time.Second)
	if recs := decode(t, d, b.resp(ok5)); len(recs) != 1 || recs[0].CommunityID != b.cid {
		t.Fatalf("records %+v", recs)
	}
	// Capture time, not the wall clock, moves past the timeout.
	b.now = t0.Add(31 * time.Second)
	recs = decode(t, d, b.req(get))
	// a's first exchange ends as at FlowEnd: the response delimited by the close is complete;
	// its second request never got an answer.
	if len(recs) != 2 || recs[0].CommunityID != a.cid || recs[0].Partial || recs[0].ResponseBytes != 11 ||
		!recs[1].Partial || recs[1].Status != 0 {
		t.Fatalf("records %+v", recs)
	}
	if h := health(t, d); h.Counters["idle_expired"] != 1 || h.Counters["flows"] != 1 || h.Status != sdk.HealthOK {
		t.Fatalf("health %+v", h)
	}
}

func TestSamplesIgnored(t *testing.T) {
	d := New()
	f := newFlow(1)
	udp := f.req(get)
	udp.Transport = sdk.TransportUDP
	sctp := f.req(get)
	sctp.Transport = sdk.TransportSCTP
	recs := decode(t, d, udp, sctp, newFlow(2).end())
	if len(recs) != 0 {
		t.Fatalf("records %+v", recs)
	}
	h := health(t, d)
	if h.Counters["udp_ignored"] != 1 || h.Counters["other_ignored"] != 1 || h.Counters["flow_ends_unknown"] != 1 ||
		h.Counters["samples"] != 3 || h.Counters["flows"] != 0 {
		t.Fatalf("counters %+v", h.Counters)
	}
}

func TestFlowsKeyedByNIC(t *testing.T) {
	d := New()
	a, b := newFlow(1), newFlow(1)
	b.nic = "eth1" // the same connection seen on a second interface
	recs := decode(t, d, a.req(get), b.req(get), b.resp(ok5), a.resp(ok5))
	if len(recs) != 2 || recs[0].NIC != "eth1" || recs[1].NIC != "eth0" {
		t.Fatalf("records %+v", recs)
	}
}

func TestConfigure(t *testing.T) {
	for _, tc := range []struct {
		options string
		keys    []string // named in the error; none: accepted
	}{
		{``, nil},
		{`null`, nil},
		{`{}`, nil},
		{`{"max_flows": 10, "max_pending": 8, "idle_timeout": "90s", "max_header_bytes": 4096}`, nil},
		{`{"max_flow": 10}`, []string{"plugins.l7-http.max_flow"}},
		{`{"max_flows": 0}`, []string{"plugins.l7-http.max_flows"}},
		{`{"max_flows": "many"}`, []string{"plugins.l7-http.max_flows"}},
		{`{"max_pending": -1, "max_header_bytes": 10}`, []string{"plugins.l7-http.max_pending", "plugins.l7-http.max_header_bytes"}},
		{`{"idle_timeout": "soon"}`, []string{"plugins.l7-http.idle_timeout"}},
		{`{"idle_timeout": 120}`, []string{"plugins.l7-http.idle_timeout"}},
		{`{"idle_timeout": "-1s"}`, []string{"plugins.l7-http.idle_timeout"}},
		{`[1]`, []string{"plugins.l7-http"}},
	} {
		d := New()
		err := d.Configure(context.Background(), sdk.DecoderConfig{Options: json.RawMessage(tc.options)})
		if len(tc.keys) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.options, err)
			}
			continue
		}
		var ve *sdk.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: error %v, want a ValidationError", tc.options, err)
			continue
		}
		var paths []string
		for _, f := range ve.Fields {
			paths = append(paths, f.Path)
		}
		if !slices.Equal(paths, tc.keys) {
			t.Errorf("%s: error names %v, want %v (%v)", tc.options, paths, tc.keys, err)
		}
	}

	// A rejected configuration leaves the previous one in force, and a new one keeps the flows.
	d := New()
	f := newFlow(1)
	decode(t, d, f.req(get))
	if err := d.Configure(context.Background(), sdk.DecoderConfig{Options: json.RawMessage(`{"max_pending": 0}`)}); err == nil {
		t.Fatal("max_pending 0 accepted")
	}
	if err := d.Configure(context.Background(), sdk.DecoderConfig{Options: json.RawMessage(`{"max_pending": 2}`)}); err != nil {
		t.Fatal(err)
	}
	if recs := decode(t, d, f.resp(ok5)); len(recs) != 1 || recs[0].Partial || recs[0].Status != 200 {
		t.Fatalf("records after reconfiguring: %+v", recs)
	}
}

func TestShutdown(t *testing.T) {
	d := New()
	ctx := context.Background()
	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	d = New()
	f := newFlow(1)
	decode(t, d, f.req(get))
	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Decode(ctx, []sdk.Sample{f.resp(ok5)}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Decode after Shutdown: %v", err)
	}
	if h := health(t, d); h.Counters["shutdown_discarded"] != 1 {
		t.Fatalf("counters %+v", h.Counters)
	}
}

// Through the real go-plugin gRPC transport, as the agent sees the plugin.
func TestThroughPluginTransport(t *testing.T) {
	ctx := context.Background()
	d := plugintest.Decoder(t, New())
	info, err := d.Info(ctx)
	if err != nil || info.Name != "l7-http" || len(info.Detect) != 1 || info.Detect[0].ClientPattern != ClientPattern {
		t.Fatalf("info %+v, %v", info, err)
	}
	err = d.Configure(ctx, sdk.DecoderConfig{Options: json.RawMessage(`{"max_flows": 0, "colour": "blue"}`)})
	if !errors.Is(err, sdk.ErrRejected) || !strings.Contains(err.Error(), "plugins.l7-http.max_flows") ||
		!strings.Contains(err.Error(), "plugins.l7-http.colour") {
		t.Fatalf("bad options: %v", err)
	}
	if err := d.Configure(ctx, sdk.DecoderConfig{Options: json.RawMessage(`{"max_pending": 16, "idle_timeout": "1m"}`)}); err != nil {
		t.Fatal(err)
	}

	f := newFlow(7)
	recs, err := d.Decode(ctx, []sdk.Sample{
		f.req(pipe),
		f.resp("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nContent-"),
		f.resp("Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\nContent-Type: text/html\r\n\r\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		method, path string
		status       int
		resp         uint64
	}
	var got []row
	for _, r := range recs {
		got = append(got, row{r.Method, r.Path, r.Status, r.ResponseBytes})
		if r.Protocol != "HTTP" || r.Host != "h" || r.Version != "1.1" || r.CommunityID != f.cid || r.NIC != "eth0" ||
			r.Client != f.client || r.Server != f.server || r.Transport != sdk.TransportTCP || r.Partial ||
			!slices.Equal(r.Subscriptions, []string{"web"}) || !r.Time.Equal(t0.Add(time.Millisecond)) || r.Latency <= 0 {
			t.Errorf("record %+v", r)
		}
	}
	want := []row{{"GET", "/1", 200, 2}, {"GET", "/2", 404, 0}, {"HEAD", "/3", 200, 0}}
	if !slices.Equal(got, want) {
		t.Fatalf("records %+v, want %+v", got, want)
	}
	if recs[2].Latency != 2*time.Millisecond || recs[2].ContentType != "text/html" {
		t.Fatalf("HEAD record %+v", recs[2])
	}
	h, err := d.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint64{"samples": 3, "transactions": 3, "requests": 3, "responses": 3,
		"partial": 0, "flows": 1, "orphan_responses": 0, "desyncs": 0} {
		if h.Counters[name] != want {
			t.Errorf("counter %s = %d, want %d", name, h.Counters[name], want)
		}
	}
	if h.Status != sdk.HealthOK {
		t.Errorf("health %+v", h)
	}
	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
