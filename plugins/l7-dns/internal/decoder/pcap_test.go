package decoder

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip6defrag"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/communityid"
)

// pcapDir is the shared test data, a sibling of the repository.
var pcapDir = filepath.Join("..", "..", "..", "..", "..", "shared", "testdata", "pcaps", "zeek")

// captured is one DNS payload as the agent would sample it, with the whole datagram's payload
// (reassembled from its fragments when it was fragmented) for the oracle.
type captured struct {
	sample sdk.Sample
	whole  []byte // nil while the datagram's fragments are incomplete
}

// readCapture turns a pcap into the samples the agent's capture would give the decoder: one
// per UDP payload, and for a fragmented datagram only the first fragment's part of it, with
// WireLen that part's length (later fragments carry no UDP header, so the capture cannot tie
// them to the flow). The client of a flow is the side not on port 53, else the first sender.
func readCapture(t *testing.T, name string) []*captured {
	t.Helper()
	path := filepath.Join(pcapDir, name)
	f, err := os.Open(path)
	if err != nil {
		abs, _ := filepath.Abs(path)
		t.Fatalf("opening the test capture %s (the shared test data must sit next to the repository): %v", abs, err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("reading the pcap header of %s: %v", path, err)
	}
	defrag := ip6defrag.NewIPv6Defragmenter()
	firstFragment := map[uint32]*captured{}
	clients := map[string]sdk.Endpoint{}
	var out []*captured
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		var src, dst netip.Addr
		var payload []byte // the UDP header and what follows, as far as this packet has it
		var whole bool
		switch {
		case pkt.Layer(layers.LayerTypeIPv4) != nil:
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip.Protocol != layers.IPProtocolUDP || ip.FragOffset != 0 || ip.Flags&layers.IPv4MoreFragments != 0 {
				t.Fatalf("%s: an IPv4 packet this test does not handle: %v", name, ip)
			}
			src, _ = netip.AddrFromSlice(ip.SrcIP)
			dst, _ = netip.AddrFromSlice(ip.DstIP)
			payload, whole = ip.Payload, true
		case pkt.Layer(layers.LayerTypeIPv6) != nil:
			ip := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			src, _ = netip.AddrFromSlice(ip.SrcIP)
			dst, _ = netip.AddrFromSlice(ip.DstIP)
			frag, _ := pkt.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment)
			if frag == nil {
				payload, whole = ip.Payload, true
				break
			}
			if frag.FragmentOffset == 0 {
				payload = frag.Payload
			}
			if full := defrag.DefragIPv6(ip, frag); full != nil && firstFragment[frag.Identification] != nil {
				firstFragment[frag.Identification].whole = full.Payload[8:]
			}
		}
		if payload == nil {
			continue // a later fragment: the agent has no flow for it
		}
		if len(payload) < 8 {
			t.Fatalf("%s: a UDP header cut short", name)
		}
		sport, dport := binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:])
		s := sdk.Sample{
			CommunityID: communityid.String(communityid.Hash(0, src, dst, 17, sport, dport)),
			NIC:         "pcap0", Transport: sdk.TransportUDP, Time: ci.Timestamp,
			Data: payload[8:], WireLen: len(payload) - 8, Subscriptions: []string{"dns"},
		}
		from, to := sdk.Endpoint{Addr: src, Port: sport}, sdk.Endpoint{Addr: dst, Port: dport}
		c, ok := clients[s.CommunityID]
		if !ok {
			c = from
			if sport == 53 && dport != 53 {
				c = to
			}
			clients[s.CommunityID] = c
		}
		s.FromClient = from == c
		if s.FromClient {
			s.Client, s.Server = from, to
		} else {
			s.Client, s.Server = to, from
		}
		cp := &captured{sample: s}
		if whole {
			cp.whole = s.Data
		} else {
			frag := pkt.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment)
			firstFragment[frag.Identification] = cp
		}
		out = append(out, cp)
	}
}

// truth is what dnsmessage says about a whole message, in the decoder's terms.
type truth struct {
	response bool
	id       uint16
	query    string
	qtype    string
	rcode    string
	answers  []string
}

// dnsmessageRCodes are the response codes by their presentation names, for the oracle.
var dnsmessageRCodes = map[dnsmessage.RCode]string{0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

func oracle(t *testing.T, msg []byte) truth {
	t.Helper()
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		t.Fatalf("dnsmessage: %v", err)
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		t.Fatalf("dnsmessage questions %v: %v", qs, err)
	}
	as, err := p.AllAnswers()
	if err != nil {
		t.Fatalf("dnsmessage answers: %v", err)
	}
	tr := truth{response: h.Response, id: h.ID, query: strings.TrimSuffix(qs[0].Name.String(), "."),
		qtype: strings.TrimPrefix(qs[0].Type.String(), "Type"), rcode: dnsmessageRCodes[h.RCode]}
	for _, a := range as {
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			tr.answers = append(tr.answers, netip.AddrFrom4(b.A).String())
		case *dnsmessage.AAAAResource:
			tr.answers = append(tr.answers, netip.AddrFrom16(b.AAAA).String())
		case *dnsmessage.TXTResource:
			parts := make([]string, len(b.TXT))
			for i, s := range b.TXT {
				parts[i] = fmt.Sprintf("%q", s) // the capture's strings are printable ASCII
			}
			tr.answers = append(tr.answers, strings.Join(parts, " "))
		default:
			t.Fatalf("the oracle does not print %T", b)
		}
	}
	return tr
}

// runCapture decodes a capture's samples the way the agent would send them: in capture order,
// then a FlowEnd for every flow.
func runCapture(t *testing.T, d *Decoder, caps []*captured) []sdk.L7 {
	t.Helper()
	var samples []sdk.Sample
	ended := map[string]bool{}
	for _, c := range caps {
		samples = append(samples, c.sample)
	}
	last := samples[len(samples)-1].Time
	for _, c := range caps {
		if !ended[c.sample.CommunityID] {
			ended[c.sample.CommunityID] = true
			end := c.sample
			end.Data, end.WireLen, end.FlowEnd, end.Time = nil, 0, true, last
			samples = append(samples, end)
		}
	}
	recs, err := d.Decode(context.Background(), samples)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		t.Logf("%s %d %s %s rcode=%q answers=%d latency=%v partial=%v flags=%v req=%d resp=%d",
			r.Time.UTC().Format("15:04:05.000000"), r.Client.Port, r.Query, r.QType, r.RCode, len(r.Answers), r.Latency,
			r.Partial, r.Flags, r.RequestBytes, r.ResponseBytes)
	}
	return recs
}

// dns53.pcap is one UDP datagram, 207.158.192.40:53 to 10.20.1.31:53, a response whose query
// was not captured. Its facts were read with dnsmessage (an independent parser) when this test
// was written, and tshark (../shared/testdata/expected/dns53.json) agrees on the addresses,
// ports and the single packet: ID 25701, authoritative, NOERROR, us.v27.distributed.net A,
// eight A answers.
func TestPcapDNS53(t *testing.T) {
	caps := readCapture(t, "dns53.pcap")
	if len(caps) != 1 || caps[0].sample.WireLen != 433 || caps[0].sample.Client.Port != 53 || caps[0].sample.Server.Port != 53 {
		t.Fatalf("capture read as %d samples", len(caps))
	}
	tr := oracle(t, caps[0].whole)
	recs := runCapture(t, New(), caps)
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	r := recs[0]
	// What dnsmessage says.
	if !tr.response || r.Query != tr.query || r.QType != tr.qtype || r.RCode != tr.rcode ||
		strings.Join(r.Answers, ",") != strings.Join(tr.answers, ",") {
		t.Errorf("record %+v\ndnsmessage %+v", r, tr)
	}
	// The capture's facts.
	wantAnswers := "206.109.64.186,216.1.205.81,205.149.163.211,134.53.131.135,134.53.131.192,128.104.18.148,204.152.186.139,63.77.33.226"
	if tr.id != 25701 || r.Query != "us.v27.distributed.net" || r.QType != "A" || r.RCode != "NOERROR" ||
		strings.Join(r.Answers, ",") != wantAnswers || r.ResponseBytes != 433 || r.RequestBytes != 0 {
		t.Errorf("record %+v", r)
	}
	if !r.Partial || r.Latency != 0 || strings.Join(r.Flags, ",") != "no_query" || r.Error != "" ||
		r.Client.Addr.String() != "207.158.192.40" || r.Server.Addr.String() != "10.20.1.31" {
		t.Errorf("record %+v", r)
	}
}

// ipv6-fragmented-dns.pcap: a client at 2001:470:1f11:81f:d138:5f55:6d4:1fe2 asks the server
// 2607:f740:b::f93 for TXT records padded to a given size. These facts were read with
// dnsmessage (an independent parser) and gopacket's IPv6 reassembly when this test was written,
// and tshark (../shared/testdata/expected/ipv6-fragmented-dns.json) agrees on the flows and
// packet counts:
//
//   - port 51850: ID 3903 txtpadding_323.n1.netalyzr.icsi.berkeley.edu TXT, answered in 79.3 ms
//     by one unfragmented 323-byte response (NOERROR, one TXT record of three strings);
//   - port 51851: ID 40849 txtpadding_3230.n1.netalyzr.icsi.berkeley.edu TXT at 01:38:13.592245.
//     Only the last fragment of its response was captured, so the agent sees nothing of it.
//     At 01:38:18.593081 (5.000836 s later) the client sends the same query again, and its
//     response comes in three fragments: a 3230-byte datagram, of which the agent sees the
//     first fragment's 1424 bytes.
//
// With the default 5 s timeout the first query of 51851 has waited longer than the timeout when
// the second arrives, so it is reported unanswered and the response pairs with the second.
func TestPcapIPv6FragmentedDNS(t *testing.T) {
	caps := readCapture(t, "ipv6-fragmented-dns.pcap")
	if len(caps) != 5 {
		t.Fatalf("capture read as %d samples, want 5 (3 queries, 2 responses)", len(caps))
	}
	frag := caps[4]
	if frag.sample.WireLen != 1424 || len(frag.whole) != 3230 {
		t.Fatalf("fragmented response: sample of %d bytes, datagram of %d", frag.sample.WireLen, len(frag.whole))
	}
	recs := runCapture(t, New(), caps)
	if len(recs) != 3 {
		t.Fatalf("records %+v", recs)
	}
	const padded323, padded3230 = "txtpadding_323.n1.netalyzr.icsi.berkeley.edu", "txtpadding_3230.n1.netalyzr.icsi.berkeley.edu"

	// 51850: a whole transaction, as dnsmessage reads it.
	q, r := oracle(t, caps[0].whole), oracle(t, caps[1].whole)
	got := recs[0]
	if got.Query != q.query || got.QType != q.qtype || got.RCode != r.rcode || strings.Join(got.Answers, "|") != strings.Join(r.answers, "|") {
		t.Errorf("51850: %+v\ndnsmessage: %+v %+v", got, q, r)
	}
	if got.Query != padded323 || got.QType != "TXT" || got.RCode != "NOERROR" || len(got.Answers) != 1 ||
		!strings.HasPrefix(got.Answers[0], `"This TXT record should be ignored" "As it is just padding" "XXXX`) ||
		got.Latency != 79300*time.Microsecond || got.Partial || got.RequestBytes != 73 || got.ResponseBytes != 323 ||
		got.Client.Port != 51850 || got.Server.Port != 53 || q.id != 3903 {
		t.Errorf("51850: %+v", got)
	}

	// 51851, first query: no response within the timeout.
	got = recs[1]
	if got.Query != padded3230 || got.QType != "TXT" || got.RCode != "" || !got.Partial ||
		strings.Join(got.Flags, ",") != "no_response" || got.Time != caps[2].sample.Time || oracle(t, caps[2].whole).id != 40849 {
		t.Errorf("51851 first query: %+v", got)
	}

	// 51851, second query and the first fragment of its response: what the decoder reports is
	// a prefix of what dnsmessage reads in the reassembled datagram, flagged Partial.
	full := oracle(t, frag.whole)
	got = recs[2]
	if got.Query != full.query || got.QType != full.qtype || got.RCode != full.rcode || !got.Partial ||
		len(got.Answers) > len(full.answers) {
		t.Errorf("51851: %+v\ndnsmessage on the reassembled datagram: %+v", got, full)
	}
	for i := range got.Answers {
		if got.Answers[i] != full.answers[i] {
			t.Errorf("51851 answer %d: %q, dnsmessage %q", i, got.Answers[i], full.answers[i])
		}
	}
	// The reassembled response holds one TXT record of some 3100 bytes, which the first
	// fragment's 1424 bytes do not cover: the prefix the decoder can give is empty.
	if len(full.answers) != 1 || len(got.Answers) != 0 {
		t.Errorf("51851: %d answers from the first fragment, %d in the datagram; want 0 and 1", len(got.Answers), len(full.answers))
	}
	if got.Query != padded3230 || got.RCode != "NOERROR" || got.Latency != 82502*time.Microsecond ||
		got.ResponseBytes != 1424 || strings.Join(got.Flags, ",") != "counts_exceed_data" || got.Time != caps[3].sample.Time {
		t.Errorf("51851: %+v", got)
	}
	t.Logf("reassembled response: %d answers of %d bytes of text; the first fragment gave %d",
		len(full.answers), len(strings.Join(full.answers, "")), len(got.Answers))
}
