package testframes

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/quanyu/quanyu/sdk"
)

// Gen generates random subscription sets and frames aimed at their boundaries.
type Gen struct {
	R *rand.Rand
}

// NewGen seeds a generator: the same seed gives the same sets and frames.
func NewGen(seed uint64) *Gen {
	return &Gen{R: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// P is true with probability prob.
func (g *Gen) P(prob float64) bool { return g.R.Float64() < prob }

// N is uniform in [lo, hi].
func (g *Gen) N(lo, hi int) int { return lo + g.R.IntN(hi-lo+1) }

// Pick is a uniformly chosen element of s.
func Pick[T any](g *Gen, s []T) T { return s[g.R.IntN(len(s))] }

var (
	v4Bases = []netip.Addr{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.1.0.0"),
		netip.MustParseAddr("192.168.1.0"), netip.MustParseAddr("172.16.5.0"), netip.MustParseAddr("8.8.8.0")}
	v6Bases = []netip.Addr{netip.MustParseAddr("2001:db8::"), netip.MustParseAddr("2001:db8:0:1::"),
		netip.MustParseAddr("fd00::"), netip.MustParseAddr("2001:db8:ffff:ffff::")}
	portPool   = []uint16{0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 65534, 65535}
	transports = []sdk.Transport{sdk.TransportTCP, sdk.TransportUDP, sdk.TransportICMP, sdk.TransportICMPv6, sdk.TransportSCTP}
)

// Addr is an address near one of a few bases, so that sets and frames meet.
func (g *Gen) Addr(v6 bool) netip.Addr {
	if v6 {
		b := Pick(g, v6Bases).As16()
		b[15] = byte(g.R.IntN(256))
		if g.P(0.5) {
			b[14] = byte(g.R.IntN(4))
		}
		if g.P(0.2) {
			for i := 8; i < 14; i++ {
				b[i] = byte(g.R.IntN(256))
			}
		}
		return netip.AddrFrom16(b)
	}
	b := Pick(g, v4Bases).As4()
	b[3] = byte(g.R.IntN(256))
	if g.P(0.3) {
		b[2] = byte(g.R.IntN(4))
	}
	return netip.AddrFrom4(b)
}

// Prefix is a masked prefix of a typical length (now and then /0).
func (g *Gen) Prefix(v6 bool) netip.Prefix {
	a := g.Addr(v6)
	var bits int
	if v6 {
		bits = Pick(g, []int{16, 32, 48, 64, 96, 104, 112, 120, 124, 127, 128, g.N(0, 128)})
		if g.P(0.03) {
			bits = 0
		}
	} else {
		bits = Pick(g, []int{8, 16, 20, 23, 24, 25, 28, 30, 31, 32, g.N(0, 32)})
		if g.P(0.03) {
			bits = 0
		}
	}
	return netip.PrefixFrom(a, bits).Masked()
}

// Addrs is a list of lo to hi addresses of both families.
func (g *Gen) Addrs(lo, hi int) []netip.Addr {
	var out []netip.Addr
	for range g.N(lo, hi) {
		out = append(out, g.Addr(g.P(0.4)))
	}
	// Code-built specs may hold what the parser would have normalised away.
	if g.P(0.03) {
		out = append(out, netip.AddrFrom16(g.Addr(false).As16())) // ::ffff:a.b.c.d
	}
	return out
}

// Prefixes is a list of lo to hi prefixes of both families.
func (g *Gen) Prefixes(lo, hi int) []netip.Prefix {
	var out []netip.Prefix
	for range g.N(lo, hi) {
		out = append(out, g.Prefix(g.P(0.4)))
	}
	if g.P(0.03) {
		out = append(out, netip.PrefixFrom(g.Addr(false), 20)) // host bits set: the matcher clears them
	}
	if g.P(0.03) {
		out = append(out, netip.MustParsePrefix("::ffff:0:0/96")) // mapped space as an IPv6 entry
	}
	return out
}

// Port is a well-known or boundary port more often than not.
func (g *Gen) Port() uint16 {
	if g.P(0.6) {
		return Pick(g, portPool)
	}
	return uint16(g.R.IntN(65536))
}

// Ports is a list of lo to hi ports.
func (g *Gen) Ports(lo, hi int) []uint16 {
	var out []uint16
	for range g.N(lo, hi) {
		out = append(out, g.Port())
	}
	return out
}

// Ranges is a list of lo to hi port ranges, now and then an empty (inverted) one.
func (g *Gen) Ranges(lo, hi int) []sdk.PortRange {
	var out []sdk.PortRange
	for range g.N(lo, hi) {
		a := g.Port()
		b := uint16(min(65535, int(a)+Pick(g, []int{0, 1, 10, 1000, 30000})))
		if g.P(0.03) {
			a, b = b+1, a // inverted: holds no port
		}
		out = append(out, sdk.PortRange{First: a, Last: b})
	}
	return out
}

// Subscription is a random subscription mixing every field of the language.
func (g *Gen) Subscription(id string) sdk.Subscription {
	var s sdk.Spec
	if g.P(0.1) {
		// Long lists: the address and port searches become trees rather than chains.
		s.L3Match = g.Prefixes(5, 40)
		s.L3 = g.Addrs(5, 20)
		s.L4 = g.Ports(5, 30)
		s.L4Range = g.Ranges(5, 20)
		s.L3MissRange = g.Prefixes(0, 10)
		return sdk.Subscription{ID: id, Spec: s}
	}
	if g.P(0.25) {
		s.NIC = Pick(g, [][]string{{"eth*"}, {"veth1"}, {"lo", "eth0"}, {"wlan?"}})
	}
	if g.P(0.35) {
		s.L3 = g.Addrs(1, 3)
	}
	if g.P(0.35) {
		s.L3Match = g.Prefixes(1, 3)
	}
	if g.P(0.3) {
		s.L3Miss = g.Addrs(1, 2)
	}
	if g.P(0.3) {
		s.L3MissRange = g.Prefixes(1, 2)
	}
	if g.P(0.45) {
		for _, t := range transports {
			if g.P(0.4) {
				s.L4Class = append(s.L4Class, t)
			}
		}
	}
	if g.P(0.35) {
		s.L4 = g.Ports(1, 3)
	}
	if g.P(0.3) {
		s.L4Range = g.Ranges(1, 2)
	}
	if g.P(0.25) {
		s.L4Miss = g.Ports(1, 2)
	}
	if g.P(0.2) {
		s.L4MissRange = g.Ranges(1, 1)
	}
	return sdk.Subscription{ID: id, Spec: s}
}

// SubscriptionFrom builds a subscription out of values seen in real traffic.
func (g *Gen) SubscriptionFrom(t *Targets, id string) sdk.Subscription {
	var s sdk.Spec
	addr := func() netip.Addr {
		if len(t.V6) > 0 && (len(t.V4) == 0 || g.P(0.3)) {
			return Pick(g, t.V6)
		}
		if len(t.V4) > 0 {
			return Pick(g, t.V4)
		}
		return g.Addr(false)
	}
	prefix := func() netip.Prefix {
		a := addr()
		return netip.PrefixFrom(a, g.N(a.BitLen()/2, a.BitLen())).Masked()
	}
	port := func() uint16 {
		if len(t.Ports) > 0 && g.P(0.8) {
			return Pick(g, t.Ports)
		}
		return g.Port()
	}
	if g.P(0.4) {
		s.L3 = []netip.Addr{addr()}
	}
	if g.P(0.4) {
		s.L3Match = []netip.Prefix{prefix(), prefix()}
	}
	if g.P(0.3) {
		s.L3Miss = []netip.Addr{addr()}
	}
	if g.P(0.2) {
		s.L3MissRange = []netip.Prefix{prefix()}
	}
	if g.P(0.4) {
		s.L4Class = []sdk.Transport{Pick(g, transports), Pick(g, transports)}
	}
	if g.P(0.4) {
		s.L4 = []uint16{port(), port()}
	}
	if g.P(0.3) {
		p := port()
		s.L4Range = []sdk.PortRange{{First: p - min(p, 10), Last: p}}
	}
	if g.P(0.3) {
		s.L4Miss = []uint16{port()}
	}
	return sdk.Subscription{ID: id, Spec: s}
}

// Set is one to three random subscriptions, with ids s0, s1, ….
func (g *Gen) Set() []sdk.Subscription {
	var subs []sdk.Subscription
	for i := range g.N(1, 3) {
		subs = append(subs, g.Subscription(fmt.Sprintf("s%d", i)))
	}
	return subs
}

// Targets are the values a set's boundaries are made of.
type Targets struct {
	V4, V6 []netip.Addr
	Ports  []uint16
}

// TargetsOf collects the addresses and ports at the edges of the subscriptions' conditions.
func TargetsOf(subs []sdk.Subscription) *Targets {
	t := &Targets{}
	addAddr := func(a netip.Addr) {
		if !a.IsValid() {
			return
		}
		if a.Is4() {
			t.V4 = append(t.V4, a)
		} else {
			t.V6 = append(t.V6, a)
		}
	}
	addPrefix := func(p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		first := p.Masked().Addr()
		last := LastAddr(p)
		addAddr(first)
		addAddr(last)
		addAddr(first.Prev())
		addAddr(last.Next())
		addAddr(first.Next())
	}
	addPort := func(p uint16) {
		t.Ports = append(t.Ports, p, p-1, p+1)
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

// LastAddr is the highest address in p.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// FrameAddr is an address for a frame, a target more often than not.
func (g *Gen) FrameAddr(t *Targets, v6 bool) netip.Addr {
	if !v6 {
		if len(t.V4) > 0 && g.P(0.7) {
			return Pick(g, t.V4)
		}
		return g.Addr(false)
	}
	if len(t.V4) > 0 && g.P(0.15) {
		return netip.AddrFrom16(Pick(g, t.V4).As16()) // IPv4-mapped
	}
	if len(t.V6) > 0 && g.P(0.7) {
		return Pick(g, t.V6)
	}
	if g.P(0.05) {
		return netip.AddrFrom16(g.Addr(false).As16())
	}
	return g.Addr(true)
}

// FramePort is a port for a frame, a target more often than not.
func (g *Gen) FramePort(t *Targets) uint16 {
	if len(t.Ports) > 0 && g.P(0.7) {
		return Pick(g, t.Ports)
	}
	return g.Port()
}

// Frame builds a random frame aimed at t. damaged reports whether it was deliberately broken
// (then only the filter's own rules, not gopacket, can say what it is). kernel leaves out
// frames with three VLAN tags, for tests whose frames pass through the kernel's VLAN handling.
func (g *Gen) Frame(t *Targets, marker uint32, kernel bool) (f Frame, damaged bool) {
	f.Marker = marker
	switch x := g.R.Float64(); {
	case x < 0.45:
		f.EtherType = 0x0800
	case x < 0.87:
		f.EtherType = 0x86dd
	case x < 0.93:
		f.EtherType = 0x0806
	default:
		f.EtherType = Pick(g, []uint16{0x88cc, 0x8847, 0x0040, 0x8863})
	}
	tagWeights := []int{0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2}
	if !kernel && g.P(0.03) {
		tagWeights = []int{3}
	}
	for range Pick(g, tagWeights) {
		f.Tags = append(f.Tags, Pick(g, []uint16{0x8100, 0x88a8, 0x9100}))
	}
	v6 := f.EtherType == 0x86dd
	f.Src, f.Dst = g.FrameAddr(t, v6), g.FrameAddr(t, v6)
	f.Proto = uint8(Pick(g, []sdk.Transport{sdk.TransportTCP, sdk.TransportTCP, sdk.TransportUDP, sdk.TransportUDP,
		sdk.TransportSCTP, sdk.TransportICMP, sdk.TransportICMPv6, 47, 50, 59, 136}))
	f.Sport, f.Dport = g.FramePort(t), g.FramePort(t)
	f.Payload = Pick(g, []int{0, 0, 3, 10, 40})
	if f.EtherType == 0x0800 {
		if g.P(0.3) {
			f.Options = 4 * g.N(1, 10)
		}
		switch x := g.R.Float64(); {
		case x < 0.12:
			f.More = true
		case x < 0.25:
			f.FragOff = uint16(g.N(1, 0x1fff))
			f.More = g.P(0.5)
		}
	}
	if v6 && g.P(0.4) {
		for range g.N(1, 5) {
			e := ExtHeader{Type: Pick(g, []uint8{0, 43, 60, 51, 44})}
			switch e.Type {
			case 44:
				e.Size = 8
				e.More = g.P(0.5)
				if g.P(0.5) {
					e.FragOff = uint16(g.N(1, 0x1fff))
				}
			case 51:
				e.Size = 4 * g.N(3, 8)
			default:
				e.Size = 8 * g.N(1, 3)
			}
			f.Ext = append(f.Ext, e)
		}
	}
	if g.P(0.25) {
		damaged = true
		switch g.R.IntN(6) {
		case 0:
			f.Truncate = g.N(14, len(f.Build()))
		case 1:
			f.Pad = g.N(1, 30)
			damaged = false // padding is normal on short Ethernet frames
		case 2:
			f.BadVersion = true
		case 3:
			f.IHL = g.N(0, 15)
		case 4:
			f.IPLenDelta = Pick(g, []int{-60, -30, -8, -4, -1, 1, 4, 8, 30})
		case 5:
			f.Pad = g.N(1, 20)
			f.IPLenDelta = -g.N(1, 20)
		}
	}
	return f, damaged
}
