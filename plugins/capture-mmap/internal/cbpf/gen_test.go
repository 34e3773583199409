package cbpf

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/quanyu/quanyu/sdk"
)

// rgen generates random subscription sets and frames aimed at their boundaries.
type rgen struct {
	r *rand.Rand
}

func newRgen(seed uint64) *rgen {
	return &rgen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g *rgen) p(prob float64) bool { return g.r.Float64() < prob }
func (g *rgen) n(lo, hi int) int    { return lo + g.r.IntN(hi-lo+1) }

func pick[T any](g *rgen, s []T) T { return s[g.r.IntN(len(s))] }

var (
	v4Bases = []netip.Addr{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.1.0.0"),
		netip.MustParseAddr("192.168.1.0"), netip.MustParseAddr("172.16.5.0"), netip.MustParseAddr("8.8.8.0")}
	v6Bases = []netip.Addr{netip.MustParseAddr("2001:db8::"), netip.MustParseAddr("2001:db8:0:1::"),
		netip.MustParseAddr("fd00::"), netip.MustParseAddr("2001:db8:ffff:ffff::")}
	portPool   = []uint16{0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 65534, 65535}
	transports = []sdk.Transport{sdk.TransportTCP, sdk.TransportUDP, sdk.TransportICMP, sdk.TransportICMPv6, sdk.TransportSCTP}
)

func (g *rgen) addr(v6 bool) netip.Addr {
	if v6 {
		b := pick(g, v6Bases).As16()
		b[15] = byte(g.r.IntN(256))
		if g.p(0.5) {
			b[14] = byte(g.r.IntN(4))
		}
		if g.p(0.2) {
			for i := 8; i < 14; i++ {
				b[i] = byte(g.r.IntN(256))
			}
		}
		return netip.AddrFrom16(b)
	}
	b := pick(g, v4Bases).As4()
	b[3] = byte(g.r.IntN(256))
	if g.p(0.3) {
		b[2] = byte(g.r.IntN(4))
	}
	return netip.AddrFrom4(b)
}

func (g *rgen) prefix(v6 bool) netip.Prefix {
	a := g.addr(v6)
	var bits int
	if v6 {
		bits = pick(g, []int{16, 32, 48, 64, 96, 104, 112, 120, 124, 127, 128, g.n(0, 128)})
		if g.p(0.03) {
			bits = 0
		}
	} else {
		bits = pick(g, []int{8, 16, 20, 23, 24, 25, 28, 30, 31, 32, g.n(0, 32)})
		if g.p(0.03) {
			bits = 0
		}
	}
	return netip.PrefixFrom(a, bits).Masked()
}

func (g *rgen) addrs(lo, hi int) []netip.Addr {
	var out []netip.Addr
	for range g.n(lo, hi) {
		out = append(out, g.addr(g.p(0.4)))
	}
	// Code-built specs may hold what the parser would have normalised away.
	if g.p(0.03) {
		out = append(out, netip.AddrFrom16(g.addr(false).As16())) // ::ffff:a.b.c.d
	}
	return out
}

func (g *rgen) prefixes(lo, hi int) []netip.Prefix {
	var out []netip.Prefix
	for range g.n(lo, hi) {
		out = append(out, g.prefix(g.p(0.4)))
	}
	if g.p(0.03) {
		out = append(out, netip.PrefixFrom(g.addr(false), 20)) // host bits set: the matcher clears them
	}
	if g.p(0.03) {
		out = append(out, netip.MustParsePrefix("::ffff:0:0/96")) // mapped space as an IPv6 entry
	}
	return out
}

func (g *rgen) port() uint16 {
	if g.p(0.6) {
		return pick(g, portPool)
	}
	return uint16(g.r.IntN(65536))
}

func (g *rgen) ports(lo, hi int) []uint16 {
	var out []uint16
	for range g.n(lo, hi) {
		out = append(out, g.port())
	}
	return out
}

func (g *rgen) ranges(lo, hi int) []sdk.PortRange {
	var out []sdk.PortRange
	for range g.n(lo, hi) {
		a := g.port()
		b := uint16(min(65535, int(a)+pick(g, []int{0, 1, 10, 1000, 30000})))
		if g.p(0.03) {
			a, b = b+1, a // inverted: holds no port
		}
		out = append(out, sdk.PortRange{First: a, Last: b})
	}
	return out
}

func (g *rgen) subscription(id string) sdk.Subscription {
	var s sdk.Spec
	if g.p(0.1) {
		// Long lists: the address and port searches become trees rather than chains.
		s.L3Match = g.prefixes(5, 40)
		s.L3 = g.addrs(5, 20)
		s.L4 = g.ports(5, 30)
		s.L4Range = g.ranges(5, 20)
		s.L3MissRange = g.prefixes(0, 10)
		return sdk.Subscription{ID: id, Spec: s}
	}
	if g.p(0.25) {
		s.NIC = pick(g, [][]string{{"eth*"}, {"veth1"}, {"lo", "eth0"}, {"wlan?"}})
	}
	if g.p(0.35) {
		s.L3 = g.addrs(1, 3)
	}
	if g.p(0.35) {
		s.L3Match = g.prefixes(1, 3)
	}
	if g.p(0.3) {
		s.L3Miss = g.addrs(1, 2)
	}
	if g.p(0.3) {
		s.L3MissRange = g.prefixes(1, 2)
	}
	if g.p(0.45) {
		for _, t := range transports {
			if g.p(0.4) {
				s.L4Class = append(s.L4Class, t)
			}
		}
	}
	if g.p(0.35) {
		s.L4 = g.ports(1, 3)
	}
	if g.p(0.3) {
		s.L4Range = g.ranges(1, 2)
	}
	if g.p(0.25) {
		s.L4Miss = g.ports(1, 2)
	}
	if g.p(0.2) {
		s.L4MissRange = g.ranges(1, 1)
	}
	return sdk.Subscription{ID: id, Spec: s}
}

// subscriptionFrom builds a subscription out of values seen in real traffic.
func (g *rgen) subscriptionFrom(t *targets, id string) sdk.Subscription {
	var s sdk.Spec
	addr := func() netip.Addr {
		if len(t.v6) > 0 && (len(t.v4) == 0 || g.p(0.3)) {
			return pick(g, t.v6)
		}
		if len(t.v4) > 0 {
			return pick(g, t.v4)
		}
		return g.addr(false)
	}
	prefix := func() netip.Prefix {
		a := addr()
		return netip.PrefixFrom(a, g.n(a.BitLen()/2, a.BitLen())).Masked()
	}
	port := func() uint16 {
		if len(t.ports) > 0 && g.p(0.8) {
			return pick(g, t.ports)
		}
		return g.port()
	}
	if g.p(0.4) {
		s.L3 = []netip.Addr{addr()}
	}
	if g.p(0.4) {
		s.L3Match = []netip.Prefix{prefix(), prefix()}
	}
	if g.p(0.3) {
		s.L3Miss = []netip.Addr{addr()}
	}
	if g.p(0.2) {
		s.L3MissRange = []netip.Prefix{prefix()}
	}
	if g.p(0.4) {
		s.L4Class = []sdk.Transport{pick(g, transports), pick(g, transports)}
	}
	if g.p(0.4) {
		s.L4 = []uint16{port(), port()}
	}
	if g.p(0.3) {
		p := port()
		s.L4Range = []sdk.PortRange{{First: p - min(p, 10), Last: p}}
	}
	if g.p(0.3) {
		s.L4Miss = []uint16{port()}
	}
	return sdk.Subscription{ID: id, Spec: s}
}

func (g *rgen) set() []sdk.Subscription {
	var subs []sdk.Subscription
	for i := range g.n(1, 3) {
		subs = append(subs, g.subscription(fmt.Sprintf("s%d", i)))
	}
	return subs
}

// targets are the values a set's boundaries are made of.
type targets struct {
	v4, v6 []netip.Addr
	ports  []uint16
}

func targetsOf(subs []sdk.Subscription) *targets {
	t := &targets{}
	addAddr := func(a netip.Addr) {
		if !a.IsValid() {
			return
		}
		if a.Is4() {
			t.v4 = append(t.v4, a)
		} else {
			t.v6 = append(t.v6, a)
		}
	}
	addPrefix := func(p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		first := p.Masked().Addr()
		last := lastAddr(p)
		addAddr(first)
		addAddr(last)
		addAddr(first.Prev())
		addAddr(last.Next())
		addAddr(first.Next())
	}
	addPort := func(p uint16) {
		t.ports = append(t.ports, p, p-1, p+1)
	}
	for _, s := range subs {
		for _, a := range slices.Concat(s.Spec.L3, s.Spec.L3Miss) {
			addAddr(a)
			addAddr(a.Next())
		}
		for _, p := range slices.Concat(s.Spec.L3Match, s.Spec.L3MissRange) {
			addPrefix(p)
		}
		for _, p := range slices.Concat(s.Spec.L4, s.Spec.L4Miss) {
			addPort(p)
		}
		for _, r := range slices.Concat(s.Spec.L4Range, s.Spec.L4MissRange) {
			addPort(r.First)
			addPort(r.Last)
		}
	}
	return t
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (g *rgen) frameAddr(t *targets, v6 bool) netip.Addr {
	if !v6 {
		if len(t.v4) > 0 && g.p(0.7) {
			return pick(g, t.v4)
		}
		return g.addr(false)
	}
	if len(t.v4) > 0 && g.p(0.15) {
		return netip.AddrFrom16(pick(g, t.v4).As16()) // IPv4-mapped
	}
	if len(t.v6) > 0 && g.p(0.7) {
		return pick(g, t.v6)
	}
	if g.p(0.05) {
		return netip.AddrFrom16(g.addr(false).As16())
	}
	return g.addr(true)
}

func (g *rgen) framePort(t *targets) uint16 {
	if len(t.ports) > 0 && g.p(0.7) {
		return pick(g, t.ports)
	}
	return g.port()
}

// frame builds a random frame aimed at t. damaged reports whether it was deliberately broken
// (then only the filter's own rules, not gopacket, can say what it is).
func (g *rgen) frame(t *targets, marker uint32, kernel bool) (f frameSpec, damaged bool) {
	f.marker = marker
	switch x := g.r.Float64(); {
	case x < 0.45:
		f.etherType = 0x0800
	case x < 0.87:
		f.etherType = 0x86dd
	case x < 0.93:
		f.etherType = 0x0806
	default:
		f.etherType = pick(g, []uint16{0x88cc, 0x8847, 0x0040, 0x8863})
	}
	tagWeights := []int{0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2}
	if !kernel && g.p(0.03) {
		tagWeights = []int{3}
	}
	for range pick(g, tagWeights) {
		f.tags = append(f.tags, pick(g, []uint16{0x8100, 0x88a8, 0x9100}))
	}
	v6 := f.etherType == 0x86dd
	f.src, f.dst = g.frameAddr(t, v6), g.frameAddr(t, v6)
	f.proto = uint8(pick(g, []sdk.Transport{sdk.TransportTCP, sdk.TransportTCP, sdk.TransportUDP, sdk.TransportUDP,
		sdk.TransportSCTP, sdk.TransportICMP, sdk.TransportICMPv6, 47, 50, 59, 136}))
	f.sport, f.dport = g.framePort(t), g.framePort(t)
	f.payload = pick(g, []int{0, 0, 3, 10, 40})
	if f.etherType == 0x0800 {
		if g.p(0.3) {
			f.options = 4 * g.n(1, 10)
		}
		switch x := g.r.Float64(); {
		case x < 0.12:
			f.more = true
		case x < 0.25:
			f.fragOff = uint16(g.n(1, 0x1fff))
			f.more = g.p(0.5)
		}
	}
	if v6 && g.p(0.4) {
		for range g.n(1, 5) {
			e := extHeader{typ: pick(g, []uint8{0, 43, 60, 51, 44})}
			switch e.typ {
			case 44:
				e.size = 8
				e.more = g.p(0.5)
				if g.p(0.5) {
					e.fragOff = uint16(g.n(1, 0x1fff))
				}
			case 51:
				e.size = 4 * g.n(3, 8)
			default:
				e.size = 8 * g.n(1, 3)
			}
			f.ext = append(f.ext, e)
		}
	}
	if g.p(0.25) {
		damaged = true
		switch g.r.IntN(6) {
		case 0:
			f.truncate = g.n(14, len(f.build()))
		case 1:
			f.pad = g.n(1, 30)
			damaged = false // padding is normal on short Ethernet frames
		case 2:
			f.badVersion = true
		case 3:
			f.ihl = g.n(0, 15)
		case 4:
			f.ipLenDelta = pick(g, []int{-60, -30, -8, -4, -1, 1, 4, 8, 30})
		case 5:
			f.pad = g.n(1, 20)
			f.ipLenDelta = -g.n(1, 20)
		}
	}
	return f, damaged
}
