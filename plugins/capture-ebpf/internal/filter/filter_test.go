package filter

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testframes"
	"github.com/quanyu/quanyu/sdk"
)

var seedFlag = flag.Uint64("seed", 0, "seed for the random tests (0: from the clock)")

func testSeed(t testing.TB) uint64 {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random seed: %d (rerun with -seed=%d)", seed, seed)
		}
	})
	return seed
}

func setJSON(subs []sdk.Subscription) string {
	b, err := json.Marshal(subs)
	if err != nil {
		return fmt.Sprintf("%+v", subs)
	}
	return string(b)
}

func mustParse(t testing.TB, doc string) []sdk.Subscription {
	t.Helper()
	subs, err := sdk.ParseSubscriptions([]byte(doc))
	if err != nil {
		t.Fatalf("parsing %s: %v", doc, err)
	}
	return subs
}

// kernelSet is a random set for the kernel: one to four subscriptions, now and then an address
// condition of a whole family and an interface pattern that names the loopback.
func kernelSet(g *testframes.Gen) []sdk.Subscription {
	subs := g.Set()
	if g.P(0.3) {
		subs = append(subs, g.Subscription(fmt.Sprintf("s%d", len(subs))))
	}
	all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	for i := range subs {
		s := &subs[i].Spec
		if g.P(0.1) {
			s.L3Match = append(s.L3Match, testframes.Pick(g, all))
		}
		if g.P(0.05) {
			s.L3MissRange = append(s.L3MissRange, testframes.Pick(g, all))
		}
		if g.P(0.1) {
			s.NIC = testframes.Pick(g, [][]string{{"l?"}, {"*"}, {"eth0"}, {"lo"}, {"[a-m]*"}, {"n*", "x"}})
		}
	}
	return subs
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestCloseUnder checks that every prefix gets the union of its own mask and those of the
// prefixes containing it, and that the families land in their own maps.
func TestCloseUnder(t *testing.T) {
	cases := []struct {
		name   string
		in     map[string]uint64
		v4, v6 map[string]uint64
	}{
		{"nothing", map[string]uint64{}, map[string]uint64{}, map[string]uint64{}},
		{"nested IPv4 prefixes, siblings and an unrelated one",
			map[string]uint64{"10.0.0.0/8": 1, "10.1.0.0/16": 2, "10.1.2.0/24": 4, "10.1.2.3/32": 8, "10.2.0.0/16": 16, "11.0.0.0/8": 32},
			map[string]uint64{"10.0.0.0/8": 1, "10.1.0.0/16": 3, "10.1.2.0/24": 7, "10.1.2.3/32": 15, "10.2.0.0/16": 17, "11.0.0.0/8": 32},
			map[string]uint64{}},
		{"a prefix after a sibling's subtree still finds its container",
			map[string]uint64{"10.0.0.0/8": 1, "10.0.0.0/16": 2, "10.0.0.0/24": 4, "10.0.1.0/24": 8, "10.128.0.0/9": 16},
			map[string]uint64{"10.0.0.0/8": 1, "10.0.0.0/16": 3, "10.0.0.0/24": 7, "10.0.1.0/24": 11, "10.128.0.0/9": 17},
			map[string]uint64{}},
		{"the same bit on container and contained",
			map[string]uint64{"10.0.0.0/8": 1, "10.0.0.0/9": 1},
			map[string]uint64{"10.0.0.0/8": 1, "10.0.0.0/9": 1},
			map[string]uint64{}},
		{"/0 contains its family and nothing of the other",
			map[string]uint64{"0.0.0.0/0": 1, "::/0": 2, "192.0.2.0/24": 4, "2001:db8::/32": 8, "2001:db8::1/128": 16},
			map[string]uint64{"0.0.0.0/0": 1, "192.0.2.0/24": 5},
			map[string]uint64{"::/0": 2, "2001:db8::/32": 10, "2001:db8::1/128": 26}},
		{"IPv6 space that holds the IPv4-mapped addresses stays IPv6",
			map[string]uint64{"::/80": 1, "10.0.0.0/8": 2},
			map[string]uint64{"10.0.0.0/8": 2},
			map[string]uint64{"::/80": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := map[netip.Prefix]uint64{}
			for p, m := range c.in {
				in[pfx(p)] = m
			}
			v4, v6 := map[netip.Prefix]uint64{}, map[netip.Prefix]uint64{}
			closeUnder(in, v4, v6)
			for _, fam := range []struct {
				name  string
				got   map[netip.Prefix]uint64
				wantS map[string]uint64
			}{{"IPv4", v4, c.v4}, {"IPv6", v6, c.v6}} {
				if len(fam.got) != len(fam.wantS) {
					t.Errorf("%s: %d prefixes %v, want %d %v", fam.name, len(fam.got), fam.got, len(fam.wantS), fam.wantS)
				}
				for p, m := range fam.wantS {
					if got, ok := fam.got[pfx(p)]; !ok || got != m {
						t.Errorf("%s: %s has %#b (present: %v), want %#b", fam.name, p, got, ok, m)
					}
				}
			}
		})
	}
}

// longest is what an LPM trie answers for a: the value of the longest prefix in m containing
// it, or 0.
func longest(m map[netip.Prefix]uint64, a netip.Addr) uint64 {
	for bits := a.BitLen(); bits >= 0; bits-- {
		p, _ := a.Prefix(bits)
		if v, ok := m[p]; ok {
			return v
		}
	}
	return 0
}

// TestCloseUnderRandom checks closeUnder on random prefix sets against the definition: the mask
// of a prefix, and the longest match for an address, are the union over every containing prefix.
func TestCloseUnderRandom(t *testing.T) {
	seed := testSeed(t)
	g := testframes.NewGen(seed)
	for round := range 300 {
		in := map[netip.Prefix]uint64{}
		for range g.N(0, 40) {
			in[g.Prefix(g.P(0.4))] |= 1 << g.N(0, 63)
		}
		v4, v6 := map[netip.Prefix]uint64{}, map[netip.Prefix]uint64{}
		closeUnder(in, v4, v6)
		if len(v4)+len(v6) != len(in) {
			t.Fatalf("round %d: %d prefixes in, %d + %d out", round, len(in), len(v4), len(v6))
		}
		union := func(a netip.Addr, bits int) uint64 {
			var m uint64
			for q, qm := range in {
				if q.Addr().Is4() == a.Is4() && q.Bits() <= bits && q.Contains(a) {
					m |= qm
				}
			}
			return m
		}
		for p := range in {
			out := v6
			if p.Addr().Is4() {
				out = v4
			}
			got, ok := out[p]
			if want := union(p.Addr(), p.Bits()); !ok || got != want {
				t.Fatalf("round %d: %s has %#x (present: %v), the union of its containers is %#x; in %v", round, p, got, ok, want, in)
			}
		}
		for range 50 {
			a := g.Addr(g.P(0.4))
			out := v6
			if a.Is4() {
				out = v4
			}
			if got, want := longest(out, a), union(a, a.BitLen()); got != want {
				t.Fatalf("round %d: the longest match for %s gives %#x, the prefixes containing it %#x; in %v", round, a, got, want, in)
			}
		}
	}
}

func TestCompileFields(t *testing.T) {
	ifs := map[string]uint32{"lo": 1, "eth0": 2, "eth1": 3, "wlan0": 4}
	subs := mustParse(t, `[
		{"id": "any", "spec": {}},
		{"id": "web", "spec": {"NIC": ["eth*"], "L4CLASS": ["TCP"], "L4": [80], "L4Range": ["8000-8080", "9000-9000"],
			"L3Match": ["10.0.0.0/8"], "L3": ["2001:db8::1"]}},
		{"id": "dns", "spec": {"NIC": ["lo", "wlan?"], "L4CLASS": ["UDP", "ICMPv6"], "L4Miss": [5353], "L4MissRange": ["1-3"],
			"L3Miss": ["10.0.0.9"], "L3MissRange": ["fd00::/8"], "L7": ["DNS"]},
			"options": {"payload_bytes": 300, "frames": true}},
		{"id": "http", "spec": {"L7": ["HTTP"], "L4Range": "65535-65535"}, "options": {"payload_bytes": 2000}},
		{"id": "big-payload-no-l7", "spec": {"L4": [0]}, "options": {"payload_bytes": 4000, "frames": true}}
	]`)
	s := Compile(subs, ifs)
	const any, web, dns, http, nol7 = 1, 2, 4, 8, 16
	check := func(what string, got, want uint64) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %#b, want %#b", what, got, want)
		}
	}
	if s.NumSubs != 5 || s.Truncated || fmt.Sprint(s.IDs) != "[any web dns http big-payload-no-l7]" {
		t.Errorf("NumSubs %d, Truncated %v, IDs %v", s.NumSubs, s.Truncated, s.IDs)
	}
	check("AddrAny", s.AddrAny, any|dns|http|nol7) // excludes alone do not restrict the includes
	check("PortAny", s.PortAny, any|dns)
	check("L7", s.L7, dns|http)
	check("Frames", s.Frames, dns|nol7)
	if s.PayloadBytes != 2000 {
		t.Errorf("PayloadBytes %d, want 2000: the largest of the L7 subscriptions' (a subscription without L7 samples nothing)", s.PayloadBytes)
	}
	all := uint64(any | http | nol7)
	check("Protos[TCP]", s.Protos[6], all|web)
	check("Protos[UDP]", s.Protos[17], all|dns)
	check("Protos[ICMPv6]", s.Protos[58], all|dns)
	check("Protos[ICMP]", s.Protos[1], all)
	check("Protos[GRE]", s.Protos[47], all)
	for _, p := range []struct {
		port       int
		incl, excl uint64
	}{{0, nol7, 0}, {1, 0, dns}, {3, 0, dns}, {4, 0, 0}, {79, 0, 0}, {80, web, 0}, {81, 0, 0}, {5353, 0, dns},
		{7999, 0, 0}, {8000, web, 0}, {8080, web, 0}, {8081, 0, 0}, {8999, 0, 0}, {9000, web, 0}, {9001, 0, 0}, {65534, 0, 0}, {65535, http, 0}} {
		check(fmt.Sprintf("PortIncl[%d]", p.port), s.PortIncl[p.port], p.incl)
		check(fmt.Sprintf("PortExcl[%d]", p.port), s.PortExcl[p.port], p.excl)
	}
	everywhere := uint64(any | http | nol7)
	for name, want := range map[string]uint64{"lo": everywhere | dns, "eth0": everywhere | web, "eth1": everywhere | web, "wlan0": everywhere | dns} {
		check("NICs["+name+"]", s.NICs[ifs[name]], want)
	}
	if len(s.NICs) != len(ifs) {
		t.Errorf("NICs %v: one entry per interface", s.NICs)
	}
	for _, c := range []struct {
		m    map[netip.Prefix]uint64
		name string
		want map[string]uint64
	}{
		{s.InclV4, "InclV4", map[string]uint64{"10.0.0.0/8": web}},
		{s.InclV6, "InclV6", map[string]uint64{"2001:db8::1/128": web}},
		{s.ExclV4, "ExclV4", map[string]uint64{"10.0.0.9/32": dns}},
		{s.ExclV6, "ExclV6", map[string]uint64{"fd00::/8": dns}},
	} {
		if len(c.m) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.m, c.want)
		}
		for p, m := range c.want {
			check(c.name+"["+p+"]", c.m[pfx(p)], m)
		}
	}
}

// TestCompileCanonicalPrefixes: a Spec built in code may hold IPv4-mapped addresses and
// prefixes, and host bits; the kernel looks IPv4-mapped addresses up in the IPv4 tries, and the
// matcher reads such prefixes as IPv4 ones, so Compile must too.
func TestCompileCanonicalPrefixes(t *testing.T) {
	subs := []sdk.Subscription{{ID: "a", Spec: sdk.Spec{
		L3:          []netip.Addr{netip.MustParseAddr("::ffff:10.1.2.3")},
		L3Match:     []netip.Prefix{pfx("::ffff:0:0/96"), pfx("192.168.1.77/24"), pfx("::ffff:172.16.0.0/108")},
		L3Miss:      []netip.Addr{netip.MustParseAddr("::ffff:10.1.2.4")},
		L3MissRange: []netip.Prefix{pfx("::/80"), pfx("2001:db8::ff/120")},
	}}}
	s := Compile(subs, nil)
	for _, c := range []struct {
		m    map[netip.Prefix]uint64
		name string
		want []string
	}{
		{s.InclV4, "InclV4", []string{"10.1.2.3/32", "0.0.0.0/0", "192.168.1.0/24", "172.16.0.0/12"}},
		{s.InclV6, "InclV6", nil},
		{s.ExclV4, "ExclV4", []string{"10.1.2.4/32"}},
		{s.ExclV6, "ExclV6", []string{"::/80", "2001:db8::/120"}},
	} {
		if len(c.m) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.m, c.want)
		}
		for _, p := range c.want {
			if _, ok := c.m[pfx(p)]; !ok {
				t.Errorf("%s: no %s in %v", c.name, p, c.m)
			}
		}
	}
}

func TestCompileTruncates(t *testing.T) {
	subs := make([]sdk.Subscription, sdk.MaxSubscriptions+3)
	for i := range subs {
		subs[i] = sdk.Subscription{ID: fmt.Sprintf("s%d", i), Spec: sdk.Spec{L4: []uint16{uint16(i)}}}
	}
	s := Compile(subs, nil)
	if !s.Truncated || s.NumSubs != sdk.MaxSubscriptions || len(s.IDs) != sdk.MaxSubscriptions {
		t.Fatalf("Truncated %v, NumSubs %d, %d ids; want the first %d", s.Truncated, s.NumSubs, len(s.IDs), sdk.MaxSubscriptions)
	}
	if s.PortIncl[63] != 1<<63 || s.PortIncl[64] != 0 {
		t.Fatalf("PortIncl[63] %#x, PortIncl[64] %#x: subscription 63 is the last one in", s.PortIncl[63], s.PortIncl[64])
	}
}

// TestCompileFormula reads compiled sets by the formula in the package documentation, with an
// LPM lookup for the tries, and checks the result against the reference matcher on random sets
// and packets. The kernel tests run the real program; this one needs no privileges.
func TestCompileFormula(t *testing.T) {
	seed := testSeed(t)
	g := testframes.NewGen(seed)
	nics := map[string]uint32{"lo": 1, "eth0": 2, "veth1": 3, "wlan0": 4}
	names := []string{"lo", "eth0", "veth1", "wlan0"}
	checked := 0
	for round := range 500 {
		subs := kernelSet(g)
		s := Compile(subs, nics)
		m := sdk.NewMatcher(subs)
		tg := testframes.TargetsOf(subs)
		lookup := func(v4, v6 map[netip.Prefix]uint64, a netip.Addr) uint64 {
			a = a.Unmap()
			if a.Is4() {
				return longest(v4, a)
			}
			return longest(v6, a)
		}
		for range 100 {
			v6 := g.P(0.5)
			meta := sdk.PacketMeta{NIC: testframes.Pick(g, names), Src: g.FrameAddr(tg, v6), Dst: g.FrameAddr(tg, v6),
				Transport: testframes.Pick(g, []sdk.Transport{1, 6, 17, 58, 132, 47}), PortsUnknown: g.P(0.1)}
			if meta.Transport.HasPorts() && !meta.PortsUnknown {
				meta.SrcPort, meta.DstPort = g.FramePort(tg), g.FramePort(tg)
			}
			got := s.NICs[nics[meta.NIC]] & s.Protos[meta.Transport]
			got &= s.AddrAny | lookup(s.InclV4, s.InclV6, meta.Src) | lookup(s.InclV4, s.InclV6, meta.Dst)
			got &^= lookup(s.ExclV4, s.ExclV6, meta.Src) | lookup(s.ExclV4, s.ExclV6, meta.Dst)
			if !meta.PortsUnknown {
				got &= s.PortAny | s.PortIncl[meta.SrcPort] | s.PortIncl[meta.DstPort]
				got &^= s.PortExcl[meta.SrcPort] | s.PortExcl[meta.DstPort]
			}
			if want := m.Match(&meta); got != want {
				t.Fatalf("round %d: the compiled set gives %#x, the matcher %#x\nmeta %+v\nset %s", round, got, want, meta, setJSON(subs))
			}
			checked++
		}
	}
	t.Logf("%d packets", checked)
}
