package decoder

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/quanyu/quanyu/sdk"
)

// The tests' conversations: one client and one server, messages built by dnsmessage.

var (
	t0     = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	client = sdk.Endpoint{Addr: netip.MustParseAddr("192.0.2.10"), Port: 40000}
	server = sdk.Endpoint{Addr: netip.MustParseAddr("192.0.2.53"), Port: 53}
)

const cid = "1:test-flow"

type answer struct {
	typ  dnsmessage.Type
	body dnsmessage.ResourceBody
}

func a(ip string) answer {
	return answer{dnsmessage.TypeA, &dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()}}
}

func cname(target string) answer {
	return answer{dnsmessage.TypeCNAME, &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target + ".")}}
}

// msg builds a query (rcode < 0) or a response with dnsmessage's Builder.
func msg(tb testing.TB, id uint16, op dnsmessage.OpCode, name string, typ dnsmessage.Type, rcode int, answers ...answer) []byte {
	tb.Helper()
	h := dnsmessage.Header{ID: id, OpCode: op, RecursionDesired: true}
	if rcode >= 0 {
		h.Response, h.RecursionAvailable, h.RCode = true, true, dnsmessage.RCode(rcode)
	}
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	must(tb, b.StartQuestions())
	must(tb, b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name + "."), Type: typ, Class: dnsmessage.ClassINET}))
	must(tb, b.StartAnswers())
	for _, an := range answers {
		rh := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name + "."), Type: an.typ, Class: dnsmessage.ClassINET, TTL: 60}
		switch body := an.body.(type) {
		case *dnsmessage.AResource:
			must(tb, b.AResource(rh, *body))
		case *dnsmessage.CNAMEResource:
			must(tb, b.CNAMEResource(rh, *body))
		default:
			tb.Fatalf("no builder for %T", body)
		}
	}
	out, err := b.Finish()
	must(tb, err)
	return out
}

func dnsQuery(tb testing.TB, id uint16, name string, typ dnsmessage.Type) []byte {
	return msg(tb, id, dnsmessage.OpCode(0), name, typ, -1)
}

func dnsResp(tb testing.TB, id uint16, name string, typ dnsmessage.Type, rcode int, answers ...answer) []byte {
	return msg(tb, id, dnsmessage.OpCode(0), name, typ, rcode, answers...)
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// udp is a whole UDP payload sample at t0+ms milliseconds.
func udp(fromClient bool, ms int, payload []byte) sdk.Sample {
	return sdk.Sample{CommunityID: cid, NIC: "eth0", Transport: sdk.TransportUDP, Client: client, Server: server,
		FromClient: fromClient, Time: t0.Add(time.Duration(ms) * time.Millisecond), Data: payload,
		WireLen: len(payload), Subscriptions: []string{"dns"}}
}

// tcp is a TCP sample of the conversation's TCP flow.
func tcp(fromClient bool, ms int, seq uint32, data []byte) sdk.Sample {
	s := udp(fromClient, ms, data)
	s.Transport, s.Seq, s.CommunityID = sdk.TransportTCP, seq, cid+"-tcp"
	return s
}

func flowEnd(transport sdk.Transport, ms int) sdk.Sample {
	s := sdk.Sample{CommunityID: cid, NIC: "eth0", Transport: transport, Client: client, Server: server,
		Time: t0.Add(time.Duration(ms) * time.Millisecond), FlowEnd: true}
	if transport == sdk.TransportTCP {
		s.CommunityID = cid + "-tcp"
	}
	return s
}

// framed puts the two-byte length of TCP in front of each message.
func framed(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(m)))
		out = append(out, m...)
	}
	return out
}

func decode(tb testing.TB, d *Decoder, samples ...sdk.Sample) []sdk.L7 {
	tb.Helper()
	recs, err := d.Decode(context.Background(), samples)
	if err != nil {
		tb.Fatalf("Decode: %v", err)
	}
	return recs
}

func configured(tb testing.TB, opts string) *Decoder {
	tb.Helper()
	d := New()
	if err := d.Configure(context.Background(), sdk.DecoderConfig{Options: []byte(opts)}); err != nil {
		tb.Fatalf("Configure(%s): %v", opts, err)
	}
	return d
}

func countersOf(tb testing.TB, d interface {
	Health(context.Context) (sdk.Health, error)
}) map[string]uint64 {
	tb.Helper()
	h, err := d.Health(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return h.Counters
}

// want is the part of a record a test checks; empty strings and nil slices are checked too.
type want struct {
	query, qtype, rcode string
	answers             []string
	latencyMS           int
	partial             bool
	errPrefix           string
	flags               []string
}

func check(tb testing.TB, got sdk.L7, w want) {
	tb.Helper()
	var problems []string
	if got.Protocol != "DNS" || got.Query != w.query || got.QType != w.qtype || got.RCode != w.rcode {
		problems = append(problems, "protocol/query/qtype/rcode")
	}
	if strings.Join(got.Answers, "|") != strings.Join(w.answers, "|") {
		problems = append(problems, "answers")
	}
	if got.Latency != time.Duration(w.latencyMS)*time.Millisecond {
		problems = append(problems, "latency")
	}
	if got.Partial != w.partial {
		problems = append(problems, "partial")
	}
	if (w.errPrefix == "") != (got.Error == "") || !strings.HasPrefix(got.Error, w.errPrefix) {
		problems = append(problems, "error")
	}
	if strings.Join(got.Flags, ",") != strings.Join(w.flags, ",") {
		problems = append(problems, "flags")
	}
	if len(problems) > 0 {
		tb.Errorf("record wrong in %v:\n got %+v\nwant %+v", problems, got, w)
	}
}
