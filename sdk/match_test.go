package sdk_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/quanyu/quanyu/sdk"
)

func mustParse(t testing.TB, doc string) sdk.Subscription {
	t.Helper()
	s, err := sdk.ParseSubscription([]byte(doc))
	if err != nil {
		t.Fatalf("ParseSubscription(%s): %v", doc, err)
	}
	return s
}

// pkt builds a packet from "addr:port" strings ("[v6]:port" for IPv6).
func pkt(nic string, tr sdk.Transport, src, dst string) sdk.PacketMeta {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	return sdk.PacketMeta{NIC: nic, Src: s.Addr(), Dst: d.Addr(), Transport: tr, SrcPort: s.Port(), DstPort: d.Port()}
}

func tcp(src, dst string) sdk.PacketMeta  { return pkt("eth0", sdk.TransportTCP, src, dst) }
func udp(src, dst string) sdk.PacketMeta  { return pkt("eth0", sdk.TransportUDP, src, dst) }
func icmp(src, dst string) sdk.PacketMeta { return pkt("eth0", sdk.TransportICMP, src+":0", dst+":0") }
func onNIC(nic string, p sdk.PacketMeta) sdk.PacketMeta {
	p.NIC = nic
	return p
}
func fragment(p sdk.PacketMeta) sdk.PacketMeta {
	p.SrcPort, p.DstPort, p.PortsUnknown = 0, 0, true
	return p
}

type matchCase struct {
	name string
	p    sdk.PacketMeta
	want bool
}

func TestMatchFields(t *testing.T) {
	tests := []struct {
		spec  string
		cases []matchCase
	}{
		{`{}`, []matchCase{
			{"TCP IPv4", tcp("1.2.3.4:1", "5.6.7.8:2"), true},
			{"UDP IPv6", udp("[2001:db8::1]:53", "[2001:db8::2]:5353"), true},
			{"ICMP", icmp("1.2.3.4", "5.6.7.8"), true},
			{"unknown transport", pkt("any0", 47, "1.2.3.4:0", "5.6.7.8:0"), true},
			{"fragment", fragment(tcp("1.2.3.4:1", "5.6.7.8:2")), true},
		}},
		// NIC: names and globs; "" (a replayed file) is accepted by every pattern.
		{`{"NIC":["eth0"]}`, []matchCase{
			{"named", onNIC("eth0", tcp("1.1.1.1:1", "2.2.2.2:2")), true},
			{"other", onNIC("eth1", tcp("1.1.1.1:1", "2.2.2.2:2")), false},
			{"prefix of the name", onNIC("eth", tcp("1.1.1.1:1", "2.2.2.2:2")), false},
			{"replay", onNIC("", tcp("1.1.1.1:1", "2.2.2.2:2")), true},
		}},
		{`{"NIC":["veth*","ens?3","eth[0-1]"]}`, []matchCase{
			{"star glob", onNIC("veth12ab34", tcp("1.1.1.1:1", "2.2.2.2:2")), true},
			{"star glob empty rest", onNIC("veth", tcp("1.1.1.1:1", "2.2.2.2:2")), true},
			{"question glob", onNIC("ens33", tcp("1.1.1.1:1", "2.2.2.2:2")), true},
			{"question glob too long", onNIC("ens333", tcp("1.1.1.1:1", "2.2.2.2:2")), false},
			{"class glob", onNIC("eth1", tcp("1.1.1.1:1", "2.2.2.2:2")), true},
			{"class glob outside", onNIC("eth2", tcp("1.1.1.1:1", "2.2.2.2:2")), false},
			{"no pattern", onNIC("lo", tcp("1.1.1.1:1", "2.2.2.2:2")), false},
			{"replay", onNIC("", tcp("1.1.1.1:1", "2.2.2.2:2")), true},
		}},
		// L3 ∪ L3Match: source or destination.
		{`{"L3":["10.0.0.1"]}`, []matchCase{
			{"source", tcp("10.0.0.1:1000", "8.8.8.8:53"), true},
			{"destination", tcp("8.8.8.8:53", "10.0.0.1:1000"), true},
			{"neither", tcp("10.0.0.2:1000", "8.8.8.8:53"), false},
			{"IPv6", tcp("[2001:db8::1]:1", "[2001:db8::2]:2"), false},
		}},
		{`{"L3Match":["172.10.2.33/24"]}`, []matchCase{
			{"destination in", tcp("1.1.1.1:1", "172.10.2.200:80"), true},
			{"source in", tcp("172.10.2.0:1", "1.1.1.1:80"), true},
			{"both in", tcp("172.10.2.1:1", "172.10.2.255:80"), true},
			{"next network", tcp("172.10.3.1:1", "1.1.1.1:80"), false},
		}},
		{`{"L3":["10.0.0.1"],"L3Match":["192.168.0.0/16"]}`, []matchCase{
			{"address", udp("10.0.0.1:1", "1.1.1.1:2"), true},
			{"range", udp("1.1.1.1:1", "192.168.44.3:2"), true},
			{"neither", udp("10.0.0.2:1", "192.169.0.1:2"), false},
		}},
		// L3Miss ∪ L3MissRange: either address excludes; empty include is any.
		{`{"L3Miss":["10.10.0.4"]}`, []matchCase{
			{"source excluded", tcp("10.10.0.4:1", "1.1.1.1:2"), false},
			{"destination excluded", tcp("1.1.1.1:2", "10.10.0.4:1"), false},
			{"other", tcp("10.10.0.5:1", "1.1.1.1:2"), true},
		}},
		{`{"L3MissRange":["10.10.2.33/24"]}`, []matchCase{
			{"inside", tcp("10.10.2.99:1", "1.1.1.1:2"), false},
			{"outside", tcp("10.10.3.99:1", "1.1.1.1:2"), true},
		}},
		// Exclusion wins over inclusion.
		{`{"L3Match":["10.0.0.0/8"],"L3Miss":["10.0.0.5"]}`, []matchCase{
			{"included and excluded", tcp("10.0.0.5:1", "10.0.0.6:2"), false},
			{"included other side excluded", tcp("10.0.0.6:1", "10.0.0.5:2"), false},
			{"included", tcp("10.0.0.6:1", "10.0.0.7:2"), true},
		}},
		{`{"L3":["10.0.0.5"],"L3MissRange":["10.0.0.0/24"]}`, []matchCase{
			{"address inside excluded range", tcp("10.0.0.5:1", "1.1.1.1:2"), false},
			{"excluded only by the other side", tcp("10.0.0.5:1", "10.0.0.9:2"), false},
		}},
		{`{"L3Match":["0.0.0.0/0"],"L3MissRange":["0.0.0.0/0"]}`, []matchCase{
			{"everything excluded", tcp("1.1.1.1:1", "2.2.2.2:2"), false},
		}},
		// IPv6.
		{`{"L3Match":["2001:db8::/32"],"L3Miss":["2001:db8::bad"]}`, []matchCase{
			{"inside", tcp("[2001:db8:1::1]:1", "[2001:db9::1]:2"), true},
			{"outside", tcp("[2001:db9::1]:1", "[2001:dba::1]:2"), false},
			{"excluded address", tcp("[2001:db8::1]:1", "[2001:db8::bad]:2"), false},
			{"IPv4", tcp("1.1.1.1:1", "2.2.2.2:2"), false},
		}},
		{`{"L3":["2001:db8::1"]}`, []matchCase{
			{"address", udp("[2001:db8::1]:1", "[::1]:2"), true},
			{"neighbour", udp("[2001:db8::2]:1", "[::1]:2"), false},
		}},
		// Families are separate: ::/0 is all IPv6, 0.0.0.0/0 all IPv4.
		{`{"L3Match":["::/0"]}`, []matchCase{
			{"IPv6", tcp("[fe80::1]:1", "[fe80::2]:2"), true},
			{"IPv4", tcp("1.1.1.1:1", "2.2.2.2:2"), false},
		}},
		{`{"L3Match":["0.0.0.0/0"]}`, []matchCase{
			{"IPv4", tcp("1.1.1.1:1", "2.2.2.2:2"), true},
			{"IPv6", tcp("[fe80::1]:1", "[fe80::2]:2"), false},
			{"IPv4-mapped IPv6", tcp("[::ffff:1.1.1.1]:1", "[fe80::2]:2"), true},
		}},
		// IPv4-mapped IPv6 is IPv4, in the subscription and in the packet.
		{`{"L3":["::ffff:10.0.0.1"]}`, []matchCase{
			{"plain IPv4 packet", tcp("10.0.0.1:1", "1.1.1.1:2"), true},
			{"mapped packet", tcp("[::ffff:10.0.0.1]:1", "[::ffff:1.1.1.1]:2"), true},
		}},
		{`{"L3":["10.0.0.1"],"L3MissRange":["::ffff:192.168.0.0/112"]}`, []matchCase{
			{"mapped packet included", tcp("[::ffff:10.0.0.1]:1", "1.1.1.1:2"), true},
			{"mapped packet excluded", tcp("10.0.0.1:1", "[::ffff:192.168.3.4]:2"), false},
		}},
		// L4CLASS.
		{`{"L4CLASS":["TCP"]}`, []matchCase{
			{"TCP", tcp("1.1.1.1:1", "2.2.2.2:2"), true},
			{"UDP", udp("1.1.1.1:1", "2.2.2.2:2"), false},
			{"ICMP", icmp("1.1.1.1", "2.2.2.2"), false},
		}},
		{`{"L4CLASS":["icmp","ICMPv6","sctp"]}`, []matchCase{
			{"ICMP", icmp("1.1.1.1", "2.2.2.2"), true},
			{"ICMPv6", pkt("eth0", sdk.TransportICMPv6, "[::1]:0", "[::2]:0"), true},
			{"SCTP", pkt("eth0", sdk.TransportSCTP, "1.1.1.1:36412", "2.2.2.2:36412"), true},
			{"TCP", tcp("1.1.1.1:1", "2.2.2.2:2"), false},
		}},
		// L4 ∪ L4Range: source or destination port.
		{`{"L4":["8080"]}`, []matchCase{
			{"destination", tcp("1.1.1.1:40000", "2.2.2.2:8080"), true},
			{"source", tcp("2.2.2.2:8080", "1.1.1.1:40000"), true},
			{"neither", tcp("1.1.1.1:40000", "2.2.2.2:8081"), false},
		}},
		{`{"L4Range":"5000-6000"}`, []matchCase{
			{"first", udp("1.1.1.1:5000", "2.2.2.2:1"), true},
			{"last", udp("1.1.1.1:1", "2.2.2.2:6000"), true},
			{"before", udp("1.1.1.1:4999", "2.2.2.2:1"), false},
			{"after", udp("1.1.1.1:1", "2.2.2.2:6001"), false},
		}},
		{`{"L4Range":["1-10","100-200"]}`, []matchCase{
			{"second range", udp("1.1.1.1:150", "2.2.2.2:50"), true},
			{"between", udp("1.1.1.1:50", "2.2.2.2:99"), false},
		}},
		{`{"L4":[80],"L4Range":"5000-6000"}`, []matchCase{
			{"port", tcp("1.1.1.1:80", "2.2.2.2:1"), true},
			{"range", tcp("1.1.1.1:1", "2.2.2.2:5500"), true},
			{"neither", tcp("1.1.1.1:81", "2.2.2.2:4999"), false},
		}},
		{`{"L4":["65535"],"L4Range":"0-0"}`, []matchCase{
			{"top port", tcp("1.1.1.1:65535", "2.2.2.2:1"), true},
			{"port zero", tcp("1.1.1.1:0", "2.2.2.2:1"), true},
			{"neither", tcp("1.1.1.1:65534", "2.2.2.2:1"), false},
		}},
		// L4Miss ∪ L4MissRange: either port excludes.
		{`{"L4Miss":["6666"]}`, []matchCase{
			{"source excluded", tcp("1.1.1.1:6666", "2.2.2.2:1"), false},
			{"destination excluded", tcp("1.1.1.1:1", "2.2.2.2:6666"), false},
			{"other", tcp("1.1.1.1:6667", "2.2.2.2:1"), true},
		}},
		{`{"L4MissRange":"6666-7777"}`, []matchCase{
			{"inside", tcp("1.1.1.1:7000", "2.2.2.2:1"), false},
			{"edge", tcp("1.1.1.1:1", "2.2.2.2:7777"), false},
			{"outside", tcp("1.1.1.1:7778", "2.2.2.2:6665"), true},
		}},
		// Exclusion wins over inclusion for ports too.
		{`{"L4Range":"5000-8000","L4Miss":["6666"]}`, []matchCase{
			{"included and excluded", tcp("1.1.1.1:6666", "2.2.2.2:1"), false},
			{"included", tcp("1.1.1.1:6667", "2.2.2.2:1"), true},
		}},
		{`{"L4":["7000"],"L4MissRange":"6666-7777"}`, []matchCase{
			{"port inside excluded range", tcp("1.1.1.1:1", "2.2.2.2:7000"), false},
		}},
		{`{"L4Range":"6000-7000","L4MissRange":"6500-6600"}`, []matchCase{
			{"one side included the other excluded", tcp("1.1.1.1:6000", "2.2.2.2:6550"), false},
		}},
		// ICMP has no ports: it is port 0 to the port conditions.
		{`{"L4":["80"]}`, []matchCase{
			{"ICMP against a port list", icmp("1.1.1.1", "2.2.2.2"), false},
		}},
		{`{"L4":["0"]}`, []matchCase{
			{"ICMP against port 0", icmp("1.1.1.1", "2.2.2.2"), true},
		}},
		{`{"L4Miss":["0"]}`, []matchCase{
			{"ICMP against excluded port 0", icmp("1.1.1.1", "2.2.2.2"), false},
		}},
		{`{"L4Miss":["80"],"L4CLASS":["ICMP"]}`, []matchCase{
			{"ICMP not excluded", icmp("1.1.1.1", "2.2.2.2"), true},
		}},
		// Non-first fragments carry no ports: port conditions are skipped, the rest still hold.
		{`{"L4":["80"],"L4Miss":["0"]}`, []matchCase{
			{"fragment", fragment(tcp("1.1.1.1:1", "2.2.2.2:2")), true},
			{"first fragment", tcp("1.1.1.1:1", "2.2.2.2:2"), false},
		}},
		{`{"L3":["10.0.0.1"],"L4CLASS":["UDP"],"L4":["53"]}`, []matchCase{
			{"fragment from the address", fragment(udp("10.0.0.1:1", "2.2.2.2:2")), true},
			{"fragment from another address", fragment(udp("10.0.0.2:1", "2.2.2.2:2")), false},
			{"fragment of another transport", fragment(tcp("10.0.0.1:1", "2.2.2.2:2")), false},
		}},
		// L7 and L7Miss choose decoding and reporting, not which packets match (§3).
		{`{"L7":["HTTP","GET"],"L7Miss":["PUT"],"L4":["80"]}`, []matchCase{
			{"port 80", tcp("1.1.1.1:40000", "2.2.2.2:80"), true},
			{"other port", tcp("1.1.1.1:40000", "2.2.2.2:81"), false},
			{"UDP on port 80", udp("1.1.1.1:40000", "2.2.2.2:80"), true},
		}},
	}
	for _, tt := range tests {
		m := sdk.NewMatcher([]sdk.Subscription{mustParse(t, tt.spec)})
		for _, c := range tt.cases {
			t.Run(tt.spec+"/"+c.name, func(t *testing.T) {
				got := m.Match(&c.p)
				if got != 0 && got != 1 {
					t.Fatalf("Match = %#x, want a mask of one subscription", got)
				}
				if (got == 1) != c.want {
					t.Errorf("Match(%+v) = %v, want %v", c.p, got == 1, c.want)
				}
			})
		}
	}
}

func TestMatchSeedExample(t *testing.T) {
	m := sdk.NewMatcher([]sdk.Subscription{mustParse(t, string(readSeed(t)))})
	cases := []matchCase{
		{"listed address to a listed port", tcp("172.101.2.33:40000", "10.1.1.1:8080"), true},
		{"range address from a port in the range", onNIC("ens33", udp("10.1.1.1:5500", "172.10.2.7:1234")), true},
		{"second address, second port", tcp("1.1.1.1:443", "19.66.44.8:9090"), true},
		{"replayed", onNIC("", tcp("172.101.2.33:40000", "10.1.1.1:8080")), true},
		{"interface not listed", onNIC("eth1", tcp("172.101.2.33:40000", "10.1.1.1:8080")), false},
		{"address not listed", tcp("1.1.1.1:40000", "2.2.2.2:8080"), false},
		{"port not listed", tcp("172.101.2.33:40000", "10.1.1.1:80"), false},
		{"excluded address", tcp("172.101.2.33:40000", "10.10.0.4:8080"), false},
		{"excluded range", tcp("10.10.2.200:8080", "172.101.2.33:40000"), false},
		{"excluded port", tcp("172.101.2.33:8080", "8.8.8.8:6666"), false},
		{"excluded port range", tcp("172.101.2.33:8080", "8.8.8.8:7000"), false},
		{"transport not listed", icmp("172.101.2.33", "10.1.1.1"), false},
		{"fragment of a listed address", fragment(udp("172.101.2.33:1", "9.9.9.9:2")), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := m.Match(&c.p) == 1; got != c.want {
				t.Errorf("Match(%+v) = %v, want %v", c.p, got, c.want)
			}
		})
	}
}

func TestMatchSeveralSubscriptions(t *testing.T) {
	subs, err := sdk.ParseSubscriptions([]byte(`[
		{"id":"web","spec":{"L4":[80,443]}},
		{"id":"dns","spec":{"L4CLASS":["UDP"],"L4":[53]}},
		{"id":"lan","spec":{"L3Match":["10.0.0.0/8"],"L3Miss":["10.0.0.53"]}},
		{"id":"eth1-only","spec":{"NIC":["eth1"]}}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	m := sdk.NewMatcher(subs)
	if m.Len() != 4 {
		t.Fatalf("Len = %d, want 4", m.Len())
	}
	tests := []struct {
		name string
		p    sdk.PacketMeta
		mask uint64
		ids  []string
	}{
		{"web from the LAN", tcp("10.1.1.1:40000", "1.1.1.1:443"), 0b0101, []string{"web", "lan"}},
		{"DNS to the excluded LAN server", udp("10.1.1.1:40000", "10.0.0.53:53"), 0b0010, []string{"dns"}},
		{"DNS over TCP from outside", tcp("1.1.1.1:40000", "8.8.8.8:53"), 0, nil},
		{"web on eth1", onNIC("eth1", tcp("1.1.1.1:40000", "8.8.8.8:80")), 0b1001, []string{"web", "eth1-only"}},
		{"replayed LAN DNS", onNIC("", udp("10.1.1.1:40000", "10.2.2.2:53")), 0b1110, []string{"dns", "lan", "eth1-only"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mask := m.Match(&tt.p)
			if mask != tt.mask {
				t.Errorf("Match = %04b, want %04b", mask, tt.mask)
			}
			if ids := m.IDs(mask); !reflect.DeepEqual(ids, tt.ids) {
				t.Errorf("IDs(%04b) = %q, want %q", mask, ids, tt.ids)
			}
		})
	}
	for i, nic := range []string{"eth0", "eth0", "eth0", "eth1"} {
		if !m.MatchNIC(i, nic) || (i == 3 && m.MatchNIC(i, "eth0")) {
			t.Errorf("MatchNIC(%d) wrong for %s", i, nic)
		}
	}

	// All 64 bits of the mask are usable, and nothing beyond.
	full := make([]sdk.Subscription, sdk.MaxSubscriptions+1)
	for i := range full {
		full[i] = sdk.Subscription{ID: fmt.Sprint("s", i)}
	}
	m = sdk.NewMatcher(full)
	p := tcp("1.1.1.1:1", "2.2.2.2:2")
	if got := m.Match(&p); got != ^uint64(0) || m.Len() != sdk.MaxSubscriptions {
		t.Errorf("64 match-all subscriptions: mask %#x, Len %d", got, m.Len())
	}
	if ids := m.IDs(1 << 63); !reflect.DeepEqual(ids, []string{"s63"}) {
		t.Errorf("IDs(1<<63) = %q", ids)
	}
	if ids := m.IDs(0); ids != nil {
		t.Errorf("IDs(0) = %q, want nil", ids)
	}
}

// TestMatchSpecBuiltInCode checks that a Spec written in Go, not normalised by the parser, still
// matches as its values say: a prefix with host bits set or written as IPv4-mapped IPv6.
func TestMatchSpecBuiltInCode(t *testing.T) {
	m := sdk.NewMatcher([]sdk.Subscription{{ID: "code", Spec: sdk.Spec{
		L3Match:     []netip.Prefix{netip.MustParsePrefix("10.1.2.3/16")},
		L3MissRange: []netip.Prefix{netip.MustParsePrefix("::ffff:10.1.9.0/120")},
		L3:          []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.1")},
	}}})
	for _, c := range []matchCase{
		{"inside the unmasked prefix", tcp("10.1.200.1:1", "8.8.8.8:2"), true},
		{"inside the mapped exclusion", tcp("10.1.9.7:1", "8.8.8.8:2"), false},
		{"mapped address", tcp("192.0.2.1:1", "8.8.8.8:2"), true},
		{"outside", tcp("10.2.0.1:1", "8.8.8.8:2"), false},
	} {
		if got := m.Match(&c.p) == 1; got != c.want {
			t.Errorf("%s: Match = %v, want %v", c.name, got, c.want)
		}
	}
}

// naiveMatch is §3 written out as plainly as possible, with linear scans and
// netip.Prefix.Contains, to check the matcher's map and bitmap lookups against.
func naiveMatch(s *sdk.Spec, p *sdk.PacketMeta) bool {
	inAddrs := func(a netip.Addr, list []netip.Addr, ranges []netip.Prefix) bool {
		a = a.Unmap()
		if slices.Contains(list, a) {
			return true
		}
		for _, r := range ranges {
			if r.Contains(a) {
				return true
			}
		}
		return false
	}
	inPorts := func(q uint16, list []uint16, ranges []sdk.PortRange) bool {
		if slices.Contains(list, q) {
			return true
		}
		for _, r := range ranges {
			if r.First <= q && q <= r.Last {
				return true
			}
		}
		return false
	}
	if len(s.NIC) > 0 && p.NIC != "" && !slices.ContainsFunc(s.NIC, func(g string) bool {
		ok, _ := path.Match(g, p.NIC)
		return ok
	}) {
		return false
	}
	if len(s.L3)+len(s.L3Match) > 0 && !inAddrs(p.Src, s.L3, s.L3Match) && !inAddrs(p.Dst, s.L3, s.L3Match) {
		return false
	}
	if inAddrs(p.Src, s.L3Miss, s.L3MissRange) || inAddrs(p.Dst, s.L3Miss, s.L3MissRange) {
		return false
	}
	if len(s.L4Class) > 0 && !slices.Contains(s.L4Class, p.Transport) {
		return false
	}
	if p.PortsUnknown {
		return true
	}
	if len(s.L4)+len(s.L4Range) > 0 && !inPorts(p.SrcPort, s.L4, s.L4Range) && !inPorts(p.DstPort, s.L4, s.L4Range) {
		return false
	}
	return !inPorts(p.SrcPort, s.L4Miss, s.L4MissRange) && !inPorts(p.DstPort, s.L4Miss, s.L4MissRange)
}

// TestMatchAgreesWithNaive draws random subscriptions and packets from small pools, so that
// matches and near misses are common, and compares the matcher with naiveMatch.
func TestMatchAgreesWithNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	v4Pool := func() string { return fmt.Sprintf("10.0.%d.%d", rng.IntN(4), rng.IntN(8)) }
	v6Pool := func() string { return fmt.Sprintf("2001:db8::%x:%x", rng.IntN(4), rng.IntN(8)) }
	addr := func() string {
		switch rng.IntN(5) {
		case 0:
			return v6Pool()
		case 1:
			return "::ffff:" + v4Pool()
		default:
			return v4Pool()
		}
	}
	cidr := func() string {
		if rng.IntN(3) == 0 {
			return fmt.Sprintf("%s/%d", v6Pool(), 100+rng.IntN(29))
		}
		return fmt.Sprintf("%s/%d", v4Pool(), 20+rng.IntN(13))
	}
	portN := func() int { return rng.IntN(24) }
	strs := func(n int, f func() string) string {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf("%q", f())
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	rangeS := func() string { a := portN(); return fmt.Sprintf("%d-%d", a, a+rng.IntN(4)) }
	portS := func() string { return fmt.Sprint(portN()) }
	classes := []string{"TCP", "UDP", "ICMP", "ICMPv6", "SCTP"}
	transports := []sdk.Transport{sdk.TransportTCP, sdk.TransportUDP, sdk.TransportICMP, sdk.TransportICMPv6, sdk.TransportSCTP, 47}
	nics := []string{"eth0", "eth1", "veth9", "lo", ""}

	for i := 0; i < 300; i++ {
		fields := []string{}
		maybe := func(name string, n int, f func() string) {
			if rng.IntN(2) == 0 {
				fields = append(fields, fmt.Sprintf("%q:%s", name, strs(1+rng.IntN(n), f)))
			}
		}
		maybe("NIC", 2, func() string { return []string{"eth0", "veth*", "eth[1-2]"}[rng.IntN(3)] })
		maybe("L3", 3, addr)
		maybe("L3Match", 2, cidr)
		maybe("L3Miss", 2, addr)
		maybe("L3MissRange", 2, cidr)
		maybe("L4CLASS", 2, func() string { return classes[rng.IntN(len(classes))] })
		maybe("L4", 3, portS)
		maybe("L4Range", 2, rangeS)
		maybe("L4Miss", 2, portS)
		maybe("L4MissRange", 2, rangeS)
		doc := "{" + strings.Join(fields, ",") + "}"
		sub := mustParse(t, doc)
		m := sdk.NewMatcher([]sdk.Subscription{sub})
		for j := 0; j < 200; j++ {
			p := sdk.PacketMeta{
				NIC:       nics[rng.IntN(len(nics))],
				Src:       netip.MustParseAddr(addr()),
				Dst:       netip.MustParseAddr(addr()),
				Transport: transports[rng.IntN(len(transports))],
				SrcPort:   uint16(portN()),
				DstPort:   uint16(portN()),
			}
			if rng.IntN(10) == 0 {
				p.PortsUnknown = true
			}
			if got, want := m.Match(&p) == 1, naiveMatch(&sub.Spec, &p); got != want {
				t.Fatalf("subscription %s, packet %+v: Match = %v, naive = %v", doc, p, got, want)
			}
		}
	}
}

// benchMatcher is a subscription of 1,000 CIDRs (of mixed lengths, so that every length is
// probed) and 100 port ranges, with exclusions and an interface glob.
func benchMatcher(tb testing.TB) *sdk.Matcher {
	rng := rand.New(rand.NewPCG(3, 4))
	cidrs := make([]string, 1000)
	for i := range cidrs {
		a := netip.AddrFrom4([4]byte{byte(rng.IntN(224)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
		if i%10 == 0 {
			cidrs[i] = fmt.Sprintf("%q", fmt.Sprintf("2001:db8:%x::/%d", i, 48+rng.IntN(81)))
			continue
		}
		cidrs[i] = fmt.Sprintf("%q", fmt.Sprintf("%s/%d", a, 8+rng.IntN(25)))
	}
	ranges := make([]string, 100)
	for i := range ranges {
		ranges[i] = fmt.Sprintf(`"%d-%d"`, 1000+i*500, 1000+i*500+100)
	}
	doc := fmt.Sprintf(`{"NIC":["veth*","eth0"],"L3Match":[%s],"L3MissRange":["192.168.0.0/16","fd00::/8"],`+
		`"L4CLASS":["TCP","UDP"],"L4Range":[%s],"L4MissRange":["60000-60010"]}`,
		strings.Join(cidrs, ","), strings.Join(ranges, ","))
	return sdk.NewMatcher([]sdk.Subscription{mustParse(tb, doc)})
}

var benchPackets = []sdk.PacketMeta{
	// Misses every CIDR: every prefix length is probed for both addresses.
	{NIC: "veth3a", Src: netip.MustParseAddr("230.1.2.3"), Dst: netip.MustParseAddr("231.4.5.6"), Transport: sdk.TransportTCP, SrcPort: 40000, DstPort: 1050},
	{NIC: "eth0", Src: netip.MustParseAddr("2001:db9::1"), Dst: netip.MustParseAddr("2001:db9::2"), Transport: sdk.TransportUDP, SrcPort: 5353, DstPort: 53},
	{NIC: "eth0", Src: netip.MustParseAddr("::ffff:230.1.2.3"), Dst: netip.MustParseAddr("10.0.0.1"), Transport: sdk.TransportTCP, SrcPort: 1, DstPort: 2},
}

func TestMatchAllocatesNothing(t *testing.T) {
	m := benchMatcher(t)
	for _, p := range benchPackets {
		if n := testing.AllocsPerRun(1000, func() { m.Match(&p) }); n != 0 {
			t.Errorf("Match(%+v) allocates %v times per call", p, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	m := benchMatcher(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.Match(&benchPackets[i%len(benchPackets)])
	}
}
