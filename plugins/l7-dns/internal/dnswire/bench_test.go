package dnswire

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// typicalResponse is an A response with two answers, compressed, with an OPT record: most of
// what a resolver sends.
func typicalResponse(tb testing.TB) []byte {
	m := response("www.example.com.", dnsmessage.TypeA,
		dnsmessage.Resource{Header: rh("www.example.com.", dnsmessage.TypeA), Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}},
		dnsmessage.Resource{Header: rh("www.example.com.", dnsmessage.TypeA), Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 2}}})
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(1232, dnsmessage.RCodeSuccess, false); err != nil {
		tb.Fatal(err)
	}
	m.Additionals = []dnsmessage.Resource{{Header: opt, Body: &dnsmessage.OPTResource{}}}
	return build(tb, m)
}

func BenchmarkParseResponse(b *testing.B) {
	msg := typicalResponse(b)
	var p Parser
	var m Message
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Parse(msg, &m); err != nil || len(m.Answers) != 2 {
			b.Fatalf("%v %+v", err, m)
		}
	}
}

// BenchmarkParseResponseDNSMessage is the same message through dnsmessage, for scale.
func BenchmarkParseResponseDNSMessage(b *testing.B) {
	msg := typicalResponse(b)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, as, ok := oracle(msg); !ok || len(as) != 2 {
			b.Fatal("dnsmessage failed")
		}
	}
}
