package cbpf

import (
	"net/netip"

	"golang.org/x/net/bpf"

	"github.com/quanyu/quanyu/sdk"
)

// The program has two halves. The first parses the frame once and leaves what the subscription
// language looks at in scratch memory (the slots below); it accepts ARP and every IP packet it
// cannot parse, and rejects other EtherTypes. The second tests the subscriptions one after the
// other against the scratch slots, returning the snap length at the first that matches and 0
// after the last.
//
// Addresses are stored as four words per side. An IPv4 address (and an IPv4-mapped IPv6
// address, which the sdk matcher looks up as IPv4) sits in the last word and its side's family
// slot says 4; otherwise the family slot says 6 and the four words are the IPv6 address. One
// copy of the address code then serves IPv4 packets, IPv6 packets and mapped addresses.
const (
	mSrcFam  = 0  // 4 or 6
	mSrc     = 1  // 1..4: source address words; IPv4 in the last
	mDstFam  = 5  // 4 or 6
	mDst     = 6  // 6..9: destination address words; IPv4 in the last
	mProto   = 10 // transport (IPv6: the header after the extension headers)
	mSport   = 11 // 0 for transports without ports
	mDport   = 12
	mNoPorts = 13 // 1 for a non-first fragment: the port conditions are skipped
	mEnd     = 14 // offset just past the IP packet (IPv4 total length, IPv6 payload length)
	mCur     = 15 // offset of the transport header; a temporary in the IPv6 header walk
)

// Frame layout limits. They are unrolled in the program, so they are small.
const (
	maxVLANTags     = 2 // tags walked; a deeper stack is accepted for user space to decide
	maxIPv6Headers  = 4 // IPv6 extension headers walked; a longer chain is accepted
	etherTypeOffset = 12
)

var (
	vlanTPIDs        = []uint32{0x8100, 0x88a8, 0x9100}
	ipv6ExtHeaders   = []uint32{0, 43, 44, 51, 60} // hop-by-hop, routing, fragment, AH, destination options
	ipv6LengthIn8    = []uint32{0, 43, 60}         // extension headers whose length is in 8-octet units
	transportHeaders = map[uint32]uint32{          // shortest header of the transports with ports
		uint32(sdk.TransportTCP):  20,
		uint32(sdk.TransportUDP):  8,
		uint32(sdk.TransportSCTP): 12,
	}
)

// gen writes one program. It also records how many instructions each droppable part of each
// subscription took, which the fallback uses to choose what to drop.
type gen struct {
	asm
	leaf   int // comparisons in a leaf of a search tree
	accept label
	reject label
	cost   [][numWidenings]int
}

// generate writes the program for plans (in evaluation order). With acceptAllIP it stops after
// the Ethernet layer and accepts every IPv4 and IPv6 frame.
func generate(plans []plan, snap uint32, leaf int, acceptAllIP bool) *gen {
	g := &gen{leaf: leaf, cost: make([][numWidenings]int, len(plans))}
	// A subscription that matches every packet makes the tests after it moot; if it is the first
	// (largest snap), nothing past the Ethernet layer needs looking at.
	if len(plans) > 0 && plans[0].matchesAll() {
		acceptAllIP, snap = true, plans[0].snap
	}
	g.accept, g.reject = g.retLabel(snap), g.retLabel(0)
	v4, v6 := g.newLabel(), g.newLabel()
	if acceptAllIP {
		v4, v6 = g.accept, g.accept
	}
	g.ethernet(v4, v6)
	if !acceptAllIP {
		l4 := g.newLabel()
		g.mark(v4)
		g.ipv4(l4)
		g.mark(v6)
		g.ipv6(l4)
		g.mark(l4)
		g.transport()
		for i := range plans {
			if plans[i].never {
				continue
			}
			next := g.newLabel()
			g.subscription(&plans[i], &g.cost[i], next)
			g.mark(next)
			if plans[i].matchesAll() {
				break
			}
		}
	}
	g.mark(g.reject)
	g.ret(0)
	g.mark(g.accept)
	g.ret(snap)
	return g
}

// ethernet walks up to maxVLANTags tags and dispatches on the EtherType. X ends at the offset of
// the EtherType field.
func (g *gen) ethernet(v4, v6 label) {
	// The kernel's checker refuses a program that may read a scratch slot before writing it, and
	// it follows paths imprecisely (a ret does not end one), so every slot is written up front.
	g.ldConst(0)
	for slot := range 16 {
		g.stMem(slot)
	}
	done := g.newLabel()
	g.ldxConst(etherTypeOffset)
	g.ldInd(0, 2)
	for range maxVLANTags {
		tag, ok := g.newLabel(), g.newLabel()
		g.jeqAny(vlanTPIDs, tag, done)
		g.mark(tag)
		// The tag's EtherType was read at X, so X < len and len-X cannot wrap. A frame that ends
		// inside the tag stack is malformed, which user space counts.
		g.ldLen()
		g.aluX(bpf.ALUOpSub)
		g.jge(6, ok, g.accept)
		g.mark(ok)
		g.txa()
		g.alu(bpf.ALUOpAdd, 4)
		g.tax()
		g.ldInd(0, 2)
	}
	g.jeqAny(vlanTPIDs, g.accept, done)
	g.mark(done)
	arp, notV4 := g.newLabel(), g.newLabel()
	g.jeq(0x0800, v4, notV4)
	g.mark(notV4)
	g.jeq(0x86dd, v6, arp)
	g.mark(arp)
	g.jeq(0x0806, g.accept, g.reject)
}

// need accepts the packet unless the IP packet holds n more bytes at X (bounds against mEnd,
// which the IP code has already checked against the frame length).
func (g *gen) need(n uint32) {
	ok := g.newLabel()
	g.ldMem(mEnd)
	g.alu(bpf.ALUOpSub, n)
	g.jgeX(ok, g.accept)
	g.mark(ok)
}

// ipv4 parses the IPv4 header at X+2 and leaves X at the transport header.
func (g *gen) ipv4(l4 label) {
	g.txa()
	g.alu(bpf.ALUOpAdd, 2)
	g.tax()
	ok := g.newLabel()
	g.ldLen()
	g.aluX(bpf.ALUOpSub)
	g.jge(20, ok, g.accept)
	g.mark(ok)
	ok = g.newLabel()
	g.ldInd(0, 1)
	g.alu(bpf.ALUOpAnd, 0xf0)
	g.jeq(0x40, ok, g.accept)
	g.mark(ok)
	g.ldInd(12, 4)
	g.stMem(mSrc + 3)
	g.ldInd(16, 4)
	g.stMem(mDst + 3)
	g.ldInd(9, 1)
	g.stMem(mProto)
	g.ldInd(2, 2)
	g.aluX(bpf.ALUOpAdd)
	g.stMem(mEnd)
	first, later, stored := g.newLabel(), g.newLabel(), g.newLabel()
	g.ldInd(6, 2)
	g.alu(bpf.ALUOpAnd, 0x1fff)
	g.jeq(0, first, later)
	g.mark(later)
	g.ldConst(1)
	g.ja(stored)
	g.mark(first)
	g.ldConst(0)
	g.mark(stored)
	g.stMem(mNoPorts)
	ok = g.newLabel()
	g.ldInd(0, 1)
	g.alu(bpf.ALUOpAnd, 0x0f)
	g.alu(bpf.ALUOpShiftLeft, 2)
	g.jge(20, ok, g.accept)
	g.mark(ok)
	g.aluX(bpf.ALUOpAdd)
	g.stMem(mCur)
	g.tax()
	// The total length must cover the header and the frame must hold the whole packet.
	ok = g.newLabel()
	g.ldMem(mEnd)
	g.jgeX(ok, g.accept)
	g.mark(ok)
	ok = g.newLabel()
	g.ldxMem(mEnd)
	g.ldLen()
	g.jgeX(ok, g.accept)
	g.mark(ok)
	g.ldConst(4)
	g.stMem(mSrcFam)
	g.stMem(mDstFam)
	g.ldxMem(mCur)
	g.ja(l4)
}

// ipv6 parses the IPv6 header at X+2 and its extension headers and leaves X at the transport
// header.
func (g *gen) ipv6(l4 label) {
	g.txa()
	g.alu(bpf.ALUOpAdd, 2)
	g.tax()
	ok := g.newLabel()
	g.ldLen()
	g.aluX(bpf.ALUOpSub)
	g.jge(40, ok, g.accept)
	g.mark(ok)
	ok = g.newLabel()
	g.ldInd(0, 1)
	g.alu(bpf.ALUOpAnd, 0xf0)
	g.jeq(0x60, ok, g.accept)
	g.mark(ok)
	for w := range uint32(4) {
		g.ldInd(8+4*w, 4)
		g.stMem(mSrc + int(w))
		g.ldInd(24+4*w, 4)
		g.stMem(mDst + int(w))
	}
	g.ldInd(6, 1)
	g.stMem(mProto)
	g.ldInd(4, 2)
	g.aluX(bpf.ALUOpAdd)
	g.alu(bpf.ALUOpAdd, 40)
	g.stMem(mEnd)
	g.txa()
	g.alu(bpf.ALUOpAdd, 40)
	g.stMem(mCur)
	ok = g.newLabel()
	g.ldxMem(mEnd)
	g.ldLen()
	g.jgeX(ok, g.accept)
	g.mark(ok)
	g.ldxMem(mCur)
	g.ldConst(0)
	g.stMem(mNoPorts)
	g.family(mSrc, mSrcFam)
	g.family(mDst, mDstFam)

	// The walk keeps the offset of the current header in X and its type in mProto.
	nonFirst := g.newLabel()
	for range maxIPv6Headers {
		header, in8, ah, frag, advance, next := g.newLabel(), g.newLabel(), g.newLabel(), g.newLabel(),
			g.newLabel(), g.newLabel()
		g.ldMem(mProto)
		g.jeqAny(ipv6ExtHeaders, header, l4)
		g.mark(header)
		g.need(8)
		g.ldMem(mProto)
		notFrag := g.newLabel()
		g.jeq(44, frag, notFrag)
		g.mark(notFrag)
		g.jeq(51, ah, in8)

		// Hop-by-hop, routing, destination options: length in 8 octets, not counting the first 8.
		g.mark(in8)
		g.ldInd(1, 1)
		g.alu(bpf.ALUOpAdd, 1)
		g.alu(bpf.ALUOpShiftLeft, 3)
		g.ja(advance)

		// AH: length in 4 octets, not counting the first 8.
		g.mark(ah)
		g.ldInd(1, 1)
		g.alu(bpf.ALUOpAdd, 2)
		g.alu(bpf.ALUOpShiftLeft, 2)
		g.ja(advance)

		// Fragment: 8 octets; a non-first fragment ends the walk, with no ports.
		firstFrag := g.newLabel()
		g.mark(frag)
		g.ldInd(2, 2)
		g.alu(bpf.ALUOpAnd, 0xfff8)
		g.jeq(0, firstFrag, nonFirst)
		g.mark(firstFrag)
		g.ldConst(8)

		// A holds the header's length: read its next header, step over it, and check that it
		// ends inside the packet.
		g.mark(advance)
		g.aluX(bpf.ALUOpAdd)
		g.stMem(mCur)
		g.ldInd(0, 1)
		g.stMem(mProto)
		g.ldxMem(mCur)
		g.ldMem(mEnd)
		g.jgeX(next, g.accept)
		g.mark(next)
	}
	// Still an extension header after maxIPv6Headers: user space decides.
	g.ldMem(mProto)
	g.jeqAny(ipv6ExtHeaders, g.accept, l4)
	// A non-first fragment (X at its fragment header) whose next header is another extension
	// header hides its transport.
	g.mark(nonFirst)
	g.ldInd(0, 1)
	g.stMem(mProto)
	g.ldConst(1)
	g.stMem(mNoPorts)
	g.ldMem(mProto)
	g.jeqAny(ipv6ExtHeaders, g.accept, l4)
}

// family sets a side's family slot to 4 for an IPv4-mapped address (::ffff:a.b.c.d), else 6.
func (g *gen) family(words, fam int) {
	g.ldConst(6)
	g.stMem(fam)
	done, w1, w2, mapped := g.newLabel(), g.newLabel(), g.newLabel(), g.newLabel()
	g.ldMem(words)
	g.jeq(0, w1, done)
	g.mark(w1)
	g.ldMem(words + 1)
	g.jeq(0, w2, done)
	g.mark(w2)
	g.ldMem(words + 2)
	g.jeq(0xffff, mapped, done)
	g.mark(mapped)
	g.ldConst(4)
	g.stMem(fam)
	g.mark(done)
}

// transport reads the ports of TCP, UDP and SCTP (0 for other transports and for non-first
// fragments) with X at the transport header, accepting a packet too short for the header.
func (g *gen) transport() {
	match := g.newLabel()
	g.ldConst(0)
	g.stMem(mSport)
	g.stMem(mDport)
	known := g.newLabel()
	g.ldMem(mNoPorts)
	g.jeq(0, known, match)
	g.mark(known)
	read := g.newLabel()
	g.ldMem(mProto)
	for _, t := range []sdk.Transport{sdk.TransportTCP, sdk.TransportUDP, sdk.TransportSCTP} {
		this, other := g.newLabel(), g.newLabel()
		g.jeq(uint32(t), this, other)
		g.mark(this)
		g.need(transportHeaders[uint32(t)])
		g.ja(read)
		g.mark(other)
	}
	g.ja(match)
	g.mark(read)
	g.ldInd(0, 2)
	g.stMem(mSport)
	g.ldInd(2, 2)
	g.stMem(mDport)
	g.mark(match)
}

// subscription tests one subscription: on a match it returns its snap length, otherwise it goes
// on to next.
func (g *gen) subscription(p *plan, cost *[numWidenings]int, next label) {
	if !p.anyTransport {
		ok := g.newLabel()
		g.ldMem(mProto)
		g.jeqAny(p.transports, ok, next)
		g.mark(ok)
	}
	if p.include.configured {
		start := g.n
		ok, dst := g.newLabel(), g.newLabel()
		g.addrs(mSrcFam, mSrc, &p.include, ok, dst)
		g.mark(dst)
		g.addrs(mDstFam, mDst, &p.include, ok, next)
		g.mark(ok)
		cost[dropInclude] = g.n - start
	}
	if !p.exclude.empty() {
		start := g.n
		ok, dst := g.newLabel(), g.newLabel()
		g.addrs(mSrcFam, mSrc, &p.exclude, next, dst)
		g.mark(dst)
		g.addrs(mDstFam, mDst, &p.exclude, next, ok)
		g.mark(ok)
		cost[dropExclude] = g.n - start
	}
	if p.portsConfigured || len(p.missPorts) > 0 {
		known, accept := g.newLabel(), g.newLabel()
		g.ldMem(mNoPorts)
		g.jeq(0, known, accept)
		g.mark(known)
		if p.portsConfigured {
			start := g.n
			ok, dst := g.newLabel(), g.newLabel()
			g.ldMem(mSport)
			g.ports(p.ports, ok, dst)
			g.mark(dst)
			g.ldMem(mDport)
			g.ports(p.ports, ok, next)
			g.mark(ok)
			cost[dropPorts] = g.n - start
		}
		if len(p.missPorts) > 0 {
			start := g.n
			ok, dst := g.newLabel(), g.newLabel()
			g.ldMem(mSport)
			g.ports(p.missPorts, next, dst)
			g.mark(dst)
			g.ldMem(mDport)
			g.ports(p.missPorts, next, ok)
			g.mark(ok)
			cost[dropMissPorts] = g.n - start
		}
		g.mark(accept)
	}
	g.ret(p.snap)
}

// addrs jumps to hit if the side's address is in the set, else to miss.
func (g *gen) addrs(famSlot, words int, s *addrSet, hit, miss label) {
	v4, v6 := miss, miss
	if len(s.v4) > 0 {
		v4 = g.newLabel()
	}
	if len(s.v6) > 0 {
		v6 = g.newLabel()
	}
	if v4 == miss && v6 == miss {
		g.ja(miss)
		return
	}
	g.ldMem(famSlot)
	g.jeq(4, v4, v6)
	if len(s.v4) > 0 {
		g.mark(v4)
		g.prefixes(s.v4, words, hit, miss)
	}
	if len(s.v6) > 0 {
		g.mark(v6)
		g.prefixes(s.v6, words, hit, miss)
	}
}

// prefixes tests a pruned prefix list of one family (sorted by length, then address). Prefixes
// of one length share a masked load; within a length, the values are searched with a tree.
func (g *gen) prefixes(ps []netip.Prefix, words int, hit, miss label) {
	if ps[0].Bits() == 0 {
		g.ja(hit) // pruning left only the /0
		return
	}
	for start := 0; start < len(ps); {
		end := start + 1
		for end < len(ps) && ps[end].Bits() == ps[start].Bits() {
			end++
		}
		next := miss
		if end < len(ps) {
			next = g.newLabel()
		}
		group := make([][4]uint32, end-start)
		for i, p := range ps[start:end] {
			group[i] = addrWords(p.Addr())
		}
		first := 0
		if ps[start].Addr().Is4() {
			first = 3
		}
		g.trie(group, words, first, first, ps[start].Bits(), hit, next)
		if next != miss {
			g.mark(next)
		}
		start = end
	}
}

// addrWords places an address in the four scratch words: IPv4 in the last.
func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() {
		b := a.As4()
		w[3] = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		return w
	}
	b := a.As16()
	for i := range 4 {
		w[i] = uint32(b[4*i])<<24 | uint32(b[4*i+1])<<16 | uint32(b[4*i+2])<<8 | uint32(b[4*i+3])
	}
	return w
}

// trie tests prefixes of one length (bits counted from word `first`: 3 for IPv4, 0 for IPv6),
// sorted by address, word by word: at each word the distinct values lead to the prefixes that
// share them.
func (g *gen) trie(group [][4]uint32, words, first, word, bits int, hit, miss label) {
	covered := 32 * (word - first + 1) // bits of the prefix that end with this word
	mask := uint32(0xffffffff)
	last := covered >= bits
	if last && covered > bits {
		mask <<= uint(covered - bits)
	}
	g.ldMem(words + word)
	if mask != 0xffffffff {
		g.alu(bpf.ALUOpAnd, mask)
	}
	var values []uint32
	var starts []int
	for i, w := range group {
		if i == 0 || w[word] != group[i-1][word] {
			values = append(values, w[word])
			starts = append(starts, i)
		}
	}
	targets := make([]label, len(values))
	for i := range targets {
		targets[i] = hit
		if !last {
			targets[i] = g.newLabel()
		}
	}
	g.search(values, targets, miss)
	if last {
		return
	}
	for i := range values {
		end := len(group)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		g.mark(targets[i])
		g.trie(group[starts[i]:end], words, first, word+1, bits, hit, miss)
	}
}

// search jumps to targets[i] if A == values[i] (values sorted, unique), else to miss: a chain of
// comparisons for a few values, a binary tree of jge above that.
func (g *gen) search(values []uint32, targets []label, miss label) {
	if len(values) <= g.leaf {
		for i, v := range values {
			next := miss
			if i+1 < len(values) {
				next = g.newLabel()
			}
			g.jeq(v, targets[i], next)
			if next != miss {
				g.mark(next)
			}
		}
		return
	}
	mid := len(values) / 2
	left, right := g.newLabel(), g.newLabel()
	g.jge(values[mid], right, left)
	g.mark(left)
	g.search(values[:mid], targets[:mid], miss)
	g.mark(right)
	g.search(values[mid:], targets[mid:], miss)
}

// ports jumps to hit if the port in A is in rs (merged ranges), else to miss.
func (g *gen) ports(rs []sdk.PortRange, hit, miss label) {
	switch {
	case len(rs) == 0:
		g.ja(miss)
		return
	case fullPorts(rs):
		g.ja(hit)
		return
	}
	points := true
	for _, r := range rs {
		points = points && r.First == r.Last
	}
	if points {
		values := make([]uint32, len(rs))
		targets := make([]label, len(rs))
		for i, r := range rs {
			values[i], targets[i] = uint32(r.First), hit
		}
		g.search(values, targets, miss)
		return
	}
	if rs[0].First > 0 {
		ok := g.newLabel()
		g.jge(uint32(rs[0].First), ok, miss)
		g.mark(ok)
	}
	g.rangeTree(rs, hit, miss)
}

// rangeTree searches sorted disjoint ranges; on entry A >= rs[0].First and A < the First of the
// range after rs (if any), so at a single range only its Last needs testing.
func (g *gen) rangeTree(rs []sdk.PortRange, hit, miss label) {
	if len(rs) == 1 {
		if rs[0].Last == 65535 {
			g.ja(hit)
			return
		}
		g.jgt(uint32(rs[0].Last), miss, hit)
		return
	}
	mid := len(rs) / 2
	left, right := g.newLabel(), g.newLabel()
	g.jge(uint32(rs[mid].First), right, left)
	g.mark(left)
	g.rangeTree(rs[:mid], hit, miss)
	g.mark(right)
	g.rangeTree(rs[mid:], hit, miss)
}
