package cbpf

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/quanyu/quanyu/sdk"
)

// plan is one subscription reduced to what the filter tests, with the sdk matcher's exact
// semantics (sdk/match.go): every list is turned into the set of packets it really accepts, so
// that the generated code can be as small as possible without changing the answer.
type plan struct {
	id   string
	snap uint32

	anyTransport bool
	transports   []uint32 // sorted, unique

	include addrSet // !configured: any address
	exclude addrSet // empty: none excluded

	portsConfigured bool
	ports           []sdk.PortRange // merged; may be empty while configured (then only PortsUnknown passes)
	missPorts       []sdk.PortRange // merged; empty: none excluded

	// never is set when no packet can match (an address include list none of whose entries can
	// ever match an address).
	never bool
}

// addrSet is an include or exclude address list split by family, with entries that can never
// match removed and entries inside a shorter entry of the same set dropped.
type addrSet struct {
	configured bool
	v4, v6     []netip.Prefix
}

func (s *addrSet) empty() bool { return len(s.v4) == 0 && len(s.v6) == 0 }

// newAddrSet mirrors sdk's prefixSet: an entry is normalised as the matcher normalises it (an
// IPv4-mapped prefix of 96 bits or more becomes the IPv4 prefix, host bits are cleared), and then
// matches address a (v4-mapped addresses taken as IPv4) when a.Prefix(p.Bits()) == p. Entries for
// which that can never hold — invalid values, IPv6 entries still inside ::ffff:0:0/96 — make the
// list "configured" but are left out of the code.
func newAddrSet(addrs []netip.Addr, prefixes []netip.Prefix) addrSet {
	var s addrSet
	add := func(p netip.Prefix) {
		s.configured = true
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		q, err := p.Addr().Prefix(p.Bits())
		if err != nil || q != p {
			return
		}
		switch {
		case p.Addr().Is4():
			s.v4 = append(s.v4, p)
		case p.Addr().Is6() && !p.Addr().Is4In6():
			s.v6 = append(s.v6, p)
		}
	}
	for _, a := range addrs {
		add(netip.PrefixFrom(a, a.BitLen()))
	}
	for _, p := range prefixes {
		add(p)
	}
	s.v4 = prune(s.v4)
	s.v6 = prune(s.v6)
	return s
}

// prune sorts prefixes by length then address, removes duplicates and drops every prefix that a
// shorter one in the list already covers: the set of matched addresses is unchanged.
func prune(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(cmp.Compare(a.Bits(), b.Bits()), a.Addr().Compare(b.Addr()))
	})
	ps = slices.Compact(ps)
	kept := map[netip.Prefix]bool{}
	var lengths []int
	out := ps[:0]
	for _, p := range ps {
		covered := false
		for _, b := range lengths {
			if b >= p.Bits() {
				break
			}
			if q, _ := p.Addr().Prefix(b); kept[q] {
				covered = true
				break
			}
		}
		if covered {
			continue
		}
		kept[p] = true
		if len(lengths) == 0 || lengths[len(lengths)-1] != p.Bits() {
			lengths = append(lengths, p.Bits())
		}
		out = append(out, p)
	}
	return out
}

// mergePorts turns ports and ranges into sorted, disjoint, non-adjacent ranges. Ranges with
// First > Last hold no port (the matcher's loop over them runs zero times).
func mergePorts(ports []uint16, ranges []sdk.PortRange) []sdk.PortRange {
	all := make([]sdk.PortRange, 0, len(ports)+len(ranges))
	for _, p := range ports {
		all = append(all, sdk.PortRange{First: p, Last: p})
	}
	for _, r := range ranges {
		if r.First <= r.Last {
			all = append(all, r)
		}
	}
	slices.SortFunc(all, func(a, b sdk.PortRange) int { return cmp.Compare(a.First, b.First) })
	var out []sdk.PortRange
	for _, r := range all {
		if n := len(out); n > 0 && int(r.First) <= int(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

func fullPorts(rs []sdk.PortRange) bool {
	return len(rs) == 1 && rs[0].First == 0 && rs[0].Last == 65535
}

func newPlan(s *sdk.Subscription, snap uint32) plan {
	sp := &s.Spec
	p := plan{
		id:           s.ID,
		snap:         snap,
		anyTransport: len(sp.L4Class) == 0,
		include:      newAddrSet(sp.L3, sp.L3Match),
		exclude:      newAddrSet(sp.L3Miss, sp.L3MissRange),
	}
	for _, t := range sp.L4Class {
		p.transports = append(p.transports, uint32(t))
	}
	slices.Sort(p.transports)
	p.transports = slices.Compact(p.transports)
	if len(sp.L4) > 0 || len(sp.L4Range) > 0 {
		p.ports = mergePorts(sp.L4, sp.L4Range)
		// Every port included is the same as no port list.
		p.portsConfigured = !fullPorts(p.ports)
	}
	p.missPorts = mergePorts(sp.L4Miss, sp.L4MissRange)
	p.never = p.include.configured && p.include.empty()
	return p
}

// matchesAll reports whether the plan accepts every IP packet.
func (p *plan) matchesAll() bool {
	return !p.never && p.anyTransport && !p.include.configured && p.exclude.empty() &&
		!p.portsConfigured && len(p.missPorts) == 0
}

// widening names one part of a subscription the fallback may drop. Dropping any of them only
// lets more packets through: an include list becomes "any", an exclude list becomes "none".
type widening uint8

const (
	dropInclude widening = iota
	dropExclude
	dropPorts
	dropMissPorts
	numWidenings
)

func (w widening) String() string {
	return [...]string{"address include list (L3, L3Match)", "address exclude list (L3Miss, L3MissRange)",
		"port include list (L4, L4Range)", "port exclude list (L4Miss, L4MissRange)"}[w]
}

// widen drops one part of the plan; it reports false when there was nothing to drop.
func (p *plan) widen(w widening) bool {
	switch w {
	case dropInclude:
		if !p.include.configured {
			return false
		}
		p.include = addrSet{}
		p.never = false
	case dropExclude:
		if p.exclude.empty() {
			return false
		}
		p.exclude = addrSet{}
	case dropPorts:
		if !p.portsConfigured {
			return false
		}
		p.portsConfigured, p.ports = false, nil
	case dropMissPorts:
		if len(p.missPorts) == 0 {
			return false
		}
		p.missPorts = nil
	}
	return true
}
