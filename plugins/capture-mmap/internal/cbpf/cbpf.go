// Package cbpf compiles a set of subscriptions into the classic BPF socket filter the AF_PACKET
// capture attaches to its socket (SO_ATTACH_FILTER), so that packets no subscription wants never
// reach user space, and accepted packets are cut to the snap length.
//
// The filter answers exactly what sdk.Matcher answers for the packet on that interface — the OR
// over the interface's subscriptions of addresses, exclusions, transports and ports — with three
// deliberate widenings, all of which leave the decision to user space:
//   - ARP frames are always accepted (the agent counts them);
//   - a frame the filter cannot parse is accepted (user space counts the parse error): a frame
//     that ends inside its VLAN tags; an IPv4 header that is short, not version 4, has IHL < 5,
//     or a total length shorter than its header or longer than the frame; an IPv6 header that is
//     short, not version 6, or whose payload length runs past the frame; an IPv6 extension header
//     that does not fit in the payload; a TCP, UDP or SCTP packet (other than a non-first
//     fragment) whose IP packet ends before the transport's fixed header (20, 8, 12 bytes) does;
//   - layouts deeper than the filter walks are accepted: more than two VLAN tags left in the data,
//     more than four IPv6 extension headers (hop-by-hop, routing, fragment, destination options,
//     AH), a non-first IPv6 fragment whose next header is another extension header.
//
// Every other frame that is neither IPv4 nor IPv6 is rejected. The frame is expected to start
// with an Ethernet header (loopback devices use one too; interfaces without a link header, such
// as tun devices, are not handled), possibly followed by 802.1Q/802.1ad tags (0x8100, 0x88a8,
// 0x9100); the kernel may already have moved the outer tag into packet metadata. The IP length
// fields, not the frame length, bound the packet, so Ethernet padding is never read as data.
// Non-first fragments carry no ports: the port conditions are skipped for them, as
// sdk.PacketMeta.PortsUnknown says, and the flow table attributes them to their first fragment.
// IPv4-mapped IPv6 addresses are matched as IPv4 addresses, as the matcher does.
//
// When the exact program does not fit in the kernel's 4096 instructions, Compile returns a wider
// one (see Compile) and says so: the flow table applies the Go matcher to every flow anyway, so a
// wider prefilter only costs CPU, while a narrower one would lose traffic.
package cbpf

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/net/bpf"

	"github.com/quanyu/quanyu/sdk"
)

// DefaultSnapLen is the snap length used when Options.SnapLen is 0: enough for any frame, so
// the whole packet is kept.
const DefaultSnapLen = 262144

// Options tune a compiled program.
type Options struct {
	// SnapLen is what an accepted packet returns: how many bytes of it the kernel keeps. 0 means
	// DefaultSnapLen.
	SnapLen uint32
	// MaxInstructions caps the program's length; 0 means the kernel's MaxInstructions. Tests set
	// it lower to exercise the fallback.
	MaxInstructions int
}

// Program is a compiled socket filter.
type Program struct {
	// Instructions is the program, ready for SO_ATTACH_FILTER (or afpacket's SetBPF).
	Instructions []bpf.RawInstruction
	// Exact reports whether the program accepts exactly the packets the subscriptions match
	// (plus the documented ARP and malformed frames). When it is false the program accepts more,
	// and Reason says what was left out and why.
	Exact  bool
	Reason string
	// Subscriptions are the ids of the subscriptions compiled in: those whose NIC patterns accept
	// the interface, in the order the program tests them.
	Subscriptions []string
}

// leafSizes are the comparison-chain lengths tried at the leaves of the search trees: short
// chains run fastest, long chains take fewer instructions when the program is tight.
var leafSizes = []int{4, 16}

// Compile builds the socket filter for interface nic (an empty nic is accepted by every NIC
// pattern, as in sdk.Matcher). Subscriptions whose NIC patterns reject nic take no part; when
// none is left the program is a single "ret #0" that accepts nothing, ARP included, since no
// subscription watches this interface.
//
// Errors do not repeat the interface's name: the caller knows what it was compiling for.
//
// When the exact program is longer than opts.MaxInstructions, Compile first packs the search
// trees more densely, then drops the address and port include and exclude lists of individual
// subscriptions one at a time — the smallest list whose removal makes the program fit, else the
// largest. An include list dropped means "any" and an exclude list dropped means "none", so each
// step only accepts more. As a last resort the program accepts every IP packet. The result then
// has Exact false and a Reason naming what was dropped.
func Compile(subs []sdk.Subscription, nic string, opts Options) (Program, error) {
	if len(subs) > sdk.MaxSubscriptions {
		return Program{}, fmt.Errorf("%d subscriptions, at most %d", len(subs), sdk.MaxSubscriptions)
	}
	limit := opts.MaxInstructions
	switch {
	case limit == 0:
		limit = MaxInstructions
	case limit < 0 || limit > MaxInstructions:
		return Program{}, fmt.Errorf("MaxInstructions %d is outside 1 to the kernel's %d", limit, MaxInstructions)
	}
	snap := opts.SnapLen
	if snap == 0 {
		snap = DefaultSnapLen
	}
	m := sdk.NewMatcher(subs)
	var plans []plan
	for i := range subs {
		if m.MatchNIC(i, nic) {
			plans = append(plans, newPlan(&subs[i], snapFor(&subs[i], snap)))
		}
	}
	// The first subscription that matches returns its snap length, so testing the ones with the
	// larger snap first returns the largest any matching subscription asks for: an L7
	// subscription keeps its payload bytes beyond the headers.
	slices.SortStableFunc(plans, func(a, b plan) int { return cmp.Compare(b.snap, a.snap) })
	prog := Program{Exact: true}
	for _, p := range plans {
		prog.Subscriptions = append(prog.Subscriptions, p.id)
	}
	if len(plans) == 0 {
		prog.Instructions = []bpf.RawInstruction{{Op: opClassRet, K: 0}}
		return prog, nil
	}
	// ARP and frames the filter cannot parse get the largest snap length any subscription asks for.
	snap = plans[0].snap

	var exactLen int
	for _, leaf := range leafSizes {
		insns, n, _, err := build(plans, snap, leaf, false, limit)
		if err != nil {
			return Program{}, err
		}
		if insns != nil {
			prog.Instructions = insns
			return prog, nil
		}
		exactLen = n
	}

	// Widen, one list at a time, until the program fits.
	prog.Exact = false
	leaf := leafSizes[len(leafSizes)-1]
	var dropped []string
	for {
		insns, n, g, err := build(plans, snap, leaf, false, limit)
		if err != nil {
			return Program{}, err
		}
		if insns != nil {
			prog.Instructions = insns
			prog.Reason = fmt.Sprintf("the exact program needs %d instructions, over the limit of %d; dropped %s",
				exactLen, limit, strings.Join(dropped, "; "))
			return prog, nil
		}
		// Drop the smallest part whose removal makes the program fit, or else the largest part;
		// the costs leave out jump islands, so this may take another round.
		over := n - limit
		best, bestW, bestCost := -1, widening(0), 0
		for i := range plans {
			for w := range numWidenings {
				c := g.cost[i][w]
				if c == 0 {
					continue
				}
				fits, bestFits := c >= over, bestCost >= over
				if best < 0 || fits && (!bestFits || c < bestCost) || !fits && !bestFits && c > bestCost {
					best, bestW, bestCost = i, w, c
				}
			}
		}
		if best < 0 || !plans[best].widen(bestW) {
			break
		}
		dropped = append(dropped, fmt.Sprintf("the %s of subscription %q (%d instructions)", bestW, plans[best].id, bestCost))
	}
	insns, _, _, err := build(plans, snap, leaf, true, limit)
	if err != nil {
		return Program{}, err
	}
	if insns == nil {
		return Program{}, fmt.Errorf("even accepting every IP packet needs more than %d instructions", limit)
	}
	prog.Instructions = insns
	prog.Reason = fmt.Sprintf("the exact program needs %d instructions, over the limit of %d, and dropping address and port lists was not enough; every IP packet is accepted",
		exactLen, limit)
	return prog, nil
}

// build generates and assembles one program. It returns nil instructions (and the length) when
// the program is longer than limit, and the generator for its cost table.
func build(plans []plan, snap uint32, leaf int, acceptAllIP bool, limit int) ([]bpf.RawInstruction, int, *gen, error) {
	g := generate(plans, snap, leaf, acceptAllIP)
	insns, err := g.assemble()
	if err != nil {
		return nil, 0, nil, fmt.Errorf("assembling: %w", err)
	}
	if len(insns) > limit {
		return nil, len(insns), g, nil
	}
	if err := verify(insns, limit); err != nil {
		return nil, 0, nil, fmt.Errorf("checking the assembled %d-instruction program: %w", len(insns), err)
	}
	return insns, len(insns), g, nil
}

// Len is the number of instructions.
func (p Program) Len() int { return len(p.Instructions) }

// String disassembles the program, one instruction a line, with jump targets as absolute
// instruction numbers.
func (p Program) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "; %d instructions, exact=%v", len(p.Instructions), p.Exact)
	if p.Reason != "" {
		fmt.Fprintf(&b, " (%s)", p.Reason)
	}
	fmt.Fprintf(&b, ", subscriptions %q\n", p.Subscriptions)
	for i, ri := range p.Instructions {
		fmt.Fprintf(&b, "%4d  %s\n", i, disassemble(i, ri))
	}
	return b.String()
}

func disassemble(pc int, ri bpf.RawInstruction) string {
	if ri.Op == opJA {
		return fmt.Sprintf("ja %d", pc+1+int(ri.K))
	}
	if ri.Op&opClassMask == opJmp&opClassMask {
		name := map[uint16]string{opJEQ: "jeq", opJGT: "jgt", opJGE: "jge", opJSET: "jset"}[ri.Op&^opSrcX]
		if name == "" {
			return fmt.Sprintf("%#v", ri)
		}
		operand := fmt.Sprintf("#%#x", ri.K)
		if ri.Op&opSrcX != 0 {
			operand = "x"
		}
		return fmt.Sprintf("%s %s, %d, %d", name, operand, pc+1+int(ri.Jt), pc+1+int(ri.Jf))
	}
	if s, ok := ri.Disassemble().(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%#v", ri)
}

// snapFor is a subscription's snap length: the headers' for flow accounting, plus, when it asks
// for L7 decoding, the payload bytes its decoders are to see.
func snapFor(s *sdk.Subscription, snap uint32) uint32 {
	if len(s.Spec.L7) == 0 || snap >= DefaultSnapLen {
		return snap
	}
	return min(snap+uint32(s.Payload()), DefaultSnapLen)
}
