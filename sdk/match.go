package sdk

import (
	"net/netip"
	"path"
)

// PacketMeta is what the subscription language looks at in a packet.
type PacketMeta struct {
	// NIC is the interface the packet was seen on; empty when unknown (a replayed file), which
	// every NIC pattern accepts.
	NIC       string
	Src, Dst  netip.Addr
	Transport Transport
	// SrcPort and DstPort are 0 for transports without ports (ICMP uses port 0).
	SrcPort, DstPort uint16
	// PortsUnknown is set for non-first IP fragments: the ports are in the first fragment, so the
	// port conditions are decided there and skipped here.
	PortsUnknown bool
}

// Matcher is the reference semantics of a set of subscriptions (ARCHITECTURE §3). Every backend's
// compiled filter is tested against it. It allocates nothing per call.
type Matcher struct {
	subs    []matchSpec
	ids     []string
	l7      uint64
	payload int
	frames  uint64
}

type matchSpec struct {
	nic        []string
	include    prefixSet
	exclude    prefixSet
	transports [256]bool
	anyTrans   bool
	ports      *portSet // nil: any port
	missPorts  *portSet // nil: none excluded
}

// prefixSet holds addresses and CIDRs, grouped by prefix length so that a lookup is one map probe
// per distinct length.
type prefixSet struct {
	v4, v6     map[netip.Prefix]struct{}
	bits4      []int
	bits6      []int
	configured bool
}

type portSet [1024]uint64

func (p *portSet) set(port uint16)      { p[port>>6] |= 1 << (port & 63) }
func (p *portSet) has(port uint16) bool { return p[port>>6]&(1<<(port&63)) != 0 }
func (p *portSet) setRange(r PortRange) {
	for q := int(r.First); q <= int(r.Last); q++ {
		p.set(uint16(q))
	}
}
func newPortSet(ports []uint16, ranges []PortRange) *portSet {
	if len(ports) == 0 && len(ranges) == 0 {
		return nil
	}
	ps := new(portSet)
	for _, q := range ports {
		ps.set(q)
	}
	for _, r := range ranges {
		ps.setRange(r)
	}
	return ps
}

func newPrefixSet(addrs []netip.Addr, prefixes []netip.Prefix) prefixSet {
	s := prefixSet{v4: map[netip.Prefix]struct{}{}, v6: map[netip.Prefix]struct{}{}}
	add := func(p netip.Prefix) {
		s.configured = true
		// The parser hands over canonical prefixes, but a Spec built in code may not: lookups
		// probe masked, unmapped prefixes, so the set must hold the same form or an entry
		// would silently never match.
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			if _, ok := s.v4[p]; !ok && !containsInt(s.bits4, p.Bits()) {
				s.bits4 = append(s.bits4, p.Bits())
			}
			s.v4[p] = struct{}{}
			return
		}
		if _, ok := s.v6[p]; !ok && !containsInt(s.bits6, p.Bits()) {
			s.bits6 = append(s.bits6, p.Bits())
		}
		s.v6[p] = struct{}{}
	}
	for _, a := range addrs {
		add(netip.PrefixFrom(a, a.BitLen()))
	}
	for _, p := range prefixes {
		add(p)
	}
	return s
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (s *prefixSet) contains(a netip.Addr) bool {
	a = a.Unmap()
	set, bits := s.v6, s.bits6
	if a.Is4() {
		set, bits = s.v4, s.bits4
	}
	for _, b := range bits {
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if _, ok := set[p]; ok {
			return true
		}
	}
	return false
}

// NewMatcher compiles a set of subscriptions (at most MaxSubscriptions; later ones are ignored,
// which ValidateSet prevents).
func NewMatcher(subs []Subscription) *Matcher {
	m := &Matcher{}
	for i := range subs {
		if i == MaxSubscriptions {
			break
		}
		s := &subs[i].Spec
		ms := matchSpec{
			nic:       s.NIC,
			include:   newPrefixSet(s.L3, s.L3Match),
			exclude:   newPrefixSet(s.L3Miss, s.L3MissRange),
			anyTrans:  len(s.L4Class) == 0,
			ports:     newPortSet(s.L4, s.L4Range),
			missPorts: newPortSet(s.L4Miss, s.L4MissRange),
		}
		for _, t := range s.L4Class {
			ms.transports[t] = true
		}
		m.subs = append(m.subs, ms)
		m.ids = append(m.ids, subs[i].ID)
		if len(subs[i].Spec.L7) > 0 {
			m.l7 |= 1 << i
			m.payload = max(m.payload, subs[i].Payload())
		}
		if subs[i].Options.Frames {
			m.frames |= 1 << i
		}
	}
	return m
}

// L7 returns the subscriptions that ask for L7 decoding (a protocol in L7), as a mask, and the
// payload bytes per packet the largest of them asks for: a flow any of them covers is sampled.
func (m *Matcher) L7() (mask uint64, payloadBytes int) { return m.l7, m.payload }

// Frames returns the subscriptions that ask for frames on flow events, as a mask.
func (m *Matcher) Frames() uint64 { return m.frames }

// Len is the number of subscriptions in the matcher.
func (m *Matcher) Len() int { return len(m.subs) }

// Match returns the subscriptions the packet matches, as a bit mask over the set's order.
func (m *Matcher) Match(p *PacketMeta) uint64 {
	var mask uint64
	for i := range m.subs {
		if m.subs[i].match(p) {
			mask |= 1 << i
		}
	}
	return mask
}

// IDs names the subscriptions of a mask, in the set's order.
func (m *Matcher) IDs(mask uint64) []string {
	if mask == 0 {
		return nil
	}
	out := make([]string, 0, 2)
	for i, id := range m.ids {
		if mask&(1<<i) != 0 {
			out = append(out, id)
		}
	}
	return out
}

// MatchNIC reports whether a subscription (by index) watches the named interface.
func (m *Matcher) MatchNIC(i int, nic string) bool { return m.subs[i].matchNIC(nic) }

func (s *matchSpec) matchNIC(nic string) bool {
	if len(s.nic) == 0 || nic == "" {
		return true
	}
	for _, pattern := range s.nic {
		if ok, _ := path.Match(pattern, nic); ok {
			return true
		}
	}
	return false
}

func (s *matchSpec) match(p *PacketMeta) bool {
	if !s.matchNIC(p.NIC) {
		return false
	}
	if s.include.configured && !s.include.contains(p.Src) && !s.include.contains(p.Dst) {
		return false
	}
	// Exclusion always wins over inclusion.
	if s.exclude.configured && (s.exclude.contains(p.Src) || s.exclude.contains(p.Dst)) {
		return false
	}
	if !s.anyTrans && !s.transports[p.Transport] {
		return false
	}
	if p.PortsUnknown {
		return true
	}
	if s.ports != nil && !s.ports.has(p.SrcPort) && !s.ports.has(p.DstPort) {
		return false
	}
	if s.missPorts != nil && (s.missPorts.has(p.SrcPort) || s.missPorts.has(p.DstPort)) {
		return false
	}
	return true
}
