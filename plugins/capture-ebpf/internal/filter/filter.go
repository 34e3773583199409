// Package filter compiles a subscription set into the kernel program's filter maps, and swaps a
// new set in without a moment where the program sees half of one (bpf/flow.h: the maps hold two
// versions; the program reads the active one from the config map once per packet).
//
// The kernel decides per new conversation, with one lookup per field, the mask of subscriptions
// it matches (sdk.Matcher's semantics):
//
//	nics[ifindex] & protos[proto]
//	  & (addr_any | incl(src) | incl(dst)) & ^(excl(src) | excl(dst))
//	  & (port_any | port_incl[sport] | port_incl[dport]) & ^(port_excl[sport] | port_excl[dport])
//
// An LPM trie returns only the longest prefix that contains an address, so the mask stored with
// each prefix is the union of the masks of every prefix that contains it: then the longest match
// alone answers "which subscriptions have a prefix containing this address".
package filter

import (
	"net/netip"
	"path"
	"slices"

	"github.com/quanyu/quanyu/sdk"
)

// Set is one subscription set as the kernel's maps hold it (before the version is added to the
// keys).
type Set struct {
	AddrAny      uint64
	PortAny      uint64
	L7           uint64
	Frames       uint64
	PayloadBytes uint32

	Protos    [256]uint64
	PortIncl  [65536]uint64
	PortExcl  [65536]uint64
	InclV4    map[netip.Prefix]uint64
	ExclV4    map[netip.Prefix]uint64
	InclV6    map[netip.Prefix]uint64
	ExclV6    map[netip.Prefix]uint64
	NICs      map[uint32]uint64 // ifindex → subscriptions that watch it
	IDs       []string          // subscription ids by bit
	NumSubs   int
	Truncated bool // more than sdk.MaxSubscriptions were given; the rest were left out
}

// Compile builds the kernel's view of subs (already scoped to this host's interfaces, see
// nicscope) for the interfaces in ifindex (name → index).
func Compile(subs []sdk.Subscription, ifindex map[string]uint32) *Set {
	s := &Set{
		InclV4: map[netip.Prefix]uint64{}, ExclV4: map[netip.Prefix]uint64{},
		InclV6: map[netip.Prefix]uint64{}, ExclV6: map[netip.Prefix]uint64{},
		NICs: map[uint32]uint64{},
	}
	if len(subs) > sdk.MaxSubscriptions {
		subs, s.Truncated = subs[:sdk.MaxSubscriptions], true
	}
	s.NumSubs = len(subs)
	incl := map[netip.Prefix]uint64{}
	excl := map[netip.Prefix]uint64{}
	for i := range subs {
		bit := uint64(1) << i
		sp := &subs[i].Spec
		s.IDs = append(s.IDs, subs[i].ID)
		for name, idx := range ifindex {
			if watches(sp.NIC, name) {
				s.NICs[idx] |= bit
			}
		}
		if len(sp.L4Class) == 0 {
			for p := range s.Protos {
				s.Protos[p] |= bit
			}
		}
		for _, t := range sp.L4Class {
			s.Protos[t] |= bit
		}
		if len(sp.L3) == 0 && len(sp.L3Match) == 0 {
			s.AddrAny |= bit
		}
		for _, a := range sp.L3 {
			incl[canonical(netip.PrefixFrom(a, a.BitLen()))] |= bit
		}
		for _, p := range sp.L3Match {
			incl[canonical(p)] |= bit
		}
		for _, a := range sp.L3Miss {
			excl[canonical(netip.PrefixFrom(a, a.BitLen()))] |= bit
		}
		for _, p := range sp.L3MissRange {
			excl[canonical(p)] |= bit
		}
		if len(sp.L4) == 0 && len(sp.L4Range) == 0 {
			s.PortAny |= bit
		}
		for _, p := range sp.L4 {
			s.PortIncl[p] |= bit
		}
		for _, r := range sp.L4Range {
			for p := int(r.First); p <= int(r.Last); p++ {
				s.PortIncl[p] |= bit
			}
		}
		for _, p := range sp.L4Miss {
			s.PortExcl[p] |= bit
		}
		for _, r := range sp.L4MissRange {
			for p := int(r.First); p <= int(r.Last); p++ {
				s.PortExcl[p] |= bit
			}
		}
		if len(sp.L7) > 0 {
			s.L7 |= bit
			s.PayloadBytes = max(s.PayloadBytes, uint32(subs[i].Payload()))
		}
		if subs[i].Options.Frames {
			s.Frames |= bit
		}
	}
	closeUnder(incl, s.InclV4, s.InclV6)
	closeUnder(excl, s.ExclV4, s.ExclV6)
	return s
}

// canonical is p as the kernel looks it up: masked, and an IPv4-mapped prefix (::ffff:a.b.c.d/n,
// n >= 96) as the IPv4 prefix it stands for, since the program looks IPv4-mapped addresses up in
// the IPv4 tries. The parser hands over this form already; a Spec built in code may not, and the
// reference matcher reads such a prefix the same way.
func canonical(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

func watches(patterns []string, name string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// closeUnder gives every prefix the union of its own mask and those of all prefixes containing
// it, and splits the result by family. Sorting by address then length puts every prefix after
// the prefixes that contain it; a stack of the open containing prefixes does the rest.
func closeUnder(in map[netip.Prefix]uint64, v4, v6 map[netip.Prefix]uint64) {
	prefixes := make([]netip.Prefix, 0, len(in))
	for p := range in {
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if a.Addr().Is4() != b.Addr().Is4() {
			if a.Addr().Is4() {
				return -1
			}
			return 1
		}
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	type open struct {
		p    netip.Prefix
		mask uint64
	}
	var stack []open
	for _, p := range prefixes {
		for len(stack) > 0 {
			top := stack[len(stack)-1]
			if top.p.Addr().Is4() == p.Addr().Is4() && top.p.Bits() <= p.Bits() && top.p.Contains(p.Addr()) {
				break
			}
			stack = stack[:len(stack)-1]
		}
		mask := in[p]
		if len(stack) > 0 {
			mask |= stack[len(stack)-1].mask
		}
		stack = append(stack, open{p, mask})
		if p.Addr().Is4() {
			v4[p] = mask
		} else {
			v6[p] = mask
		}
	}
}
