// Package flowtable is the AF_PACKET capture's flow table: it turns decoded packets into
// bidirectional flow records (ARCHITECTURE §4) with the same semantics as the eBPF backend.
//
// How it works, in short. Each frame is decoded into a reused packet.Packet; its conversation key
// (interface, transport, unordered address/port pair) is looked up in a fixed open-addressing
// index over a pre-allocated slab of flows (after a check of the previous packet's flow, since
// packets come in trains). A new conversation is matched against the subscriptions once, at
// creation; one that no subscription covers is counted and not tracked. An open flow sits on an
// LRU list (oldest packet first: idle expiry and eviction take from its head) and on the
// active-timeout list (ordered by window deadline); a TCP flow that has closed moves to the
// linger list (ordered by close time). Tick thus only visits flows that are due. Nothing on the
// packet path allocates once the table is built; emitting a record may.
//
// The slab is laid out for the cache: on a busy host the table is larger than the caches and the
// packet path's time is mostly cache misses (see flow and requeue).
//
// Time is whatever the caller passes: packet timestamps in a replay, the wall clock live. The
// packet path decides what changes a flow's identity (an idle gap, a closed flow's linger time
// being over, a new SYN on a closed flow); Tick decides everything that only reports (idle flows
// with no further packet, the end of linger, active-timeout windows), so the capture loop must
// call Tick about once a second of its clock.
//
// A Table is not safe for concurrent use: the capture loop that feeds it also calls Tick,
// SetMatcher and Flush, which serialises a subscription change with the packets around it.
package flowtable

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/quanyu/quanyu/internal/packet"
	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/communityid"
)

// Config sizes the table and sets its timeouts. Start from DefaultConfig.
type Config struct {
	// MaxFlows is the number of conversations tracked at once; the slab and index are allocated
	// for it up front. When it is reached the flow idle the longest is ended as "evicted".
	MaxFlows int
	// MaxFragments is the number of fragmented datagrams whose ports are remembered at once.
	MaxFragments int
	// IdleTimeout ends a flow that has seen no packet for this long ("idle").
	IdleTimeout time.Duration
	// ActiveTimeout makes a long flow report every so often: a non-final record with the counts
	// since its previous record.
	ActiveTimeout time.Duration
	// Linger is how long a TCP flow closed by FINs both ways or by a RST stays to collect the last
	// ACKs and repeated RSTs before its final record ("fin" or "rst").
	Linger time.Duration
	// FragmentTimeout is how long a first fragment's ports wait for the datagram's other fragments.
	FragmentTimeout time.Duration
	// CommunityIDSeed is the Community ID seed (0 unless every tool in the deployment agrees on
	// another).
	CommunityIDSeed uint16
}

// DefaultConfig gives the defaults: 65536 flows, 1024 fragmented datagrams, 60 s idle and active
// timeouts, 2 s linger, 30 s for fragments (Linux's own reassembly timeout).
func DefaultConfig() Config {
	return Config{
		MaxFlows:        65536,
		MaxFragments:    1024,
		IdleTimeout:     60 * time.Second,
		ActiveTimeout:   60 * time.Second,
		Linger:          2 * time.Second,
		FragmentTimeout: 30 * time.Second,
	}
}

// Validate names the first setting that is out of range.
func (c Config) Validate() error {
	switch {
	case c.MaxFlows < 1 || c.MaxFlows >= slotMask:
		return fmt.Errorf("flow table max_flows: %d, want 1 to %d", c.MaxFlows, slotMask-1)
	case c.MaxFragments < 1 || c.MaxFragments > 1<<20:
		return fmt.Errorf("flow table max_fragments: %d, want 1 to %d", c.MaxFragments, 1<<20)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("flow table idle_timeout: %v, want more than 0", c.IdleTimeout)
	case c.ActiveTimeout <= 0:
		return fmt.Errorf("flow table active_timeout: %v, want more than 0", c.ActiveTimeout)
	case c.Linger < 0:
		return fmt.Errorf("flow table linger: %v, want 0 or more", c.Linger)
	case c.FragmentTimeout <= 0:
		return fmt.Errorf("flow table fragment_timeout: %v, want more than 0", c.FragmentTimeout)
	}
	return nil
}

// EmitFunc receives each flow record as it is produced. It is called synchronously from AddFrame,
// Tick, SetMatcher and Flush, owns the record it is given, and must not call back into the table.
type EmitFunc func(sdk.Flow)

// SampleFunc receives the payload samples of flows an L7 subscription covers, under the same
// rules as EmitFunc. A flow's samples come before its final record.
type SampleFunc func(sdk.Sample)

// EventFunc receives flow events — start, end (FINs both ways), reset and timeout — with the first
// bytes of the packet's headers when a subscription of the flow asks for frames; under the same
// rules as EmitFunc. A flow's events come before its final record.
type EventFunc func(sdk.Event)

// FrameBytes is how much of a packet, from its IP header on, a flow event with frames carries:
// the eBPF capture's FRAME_BYTES, so that both backends give the same.
const FrameBytes = 192

// Counter indexes. Names are in counterNames; parse errors follow them, one per packet.Error.
const (
	cFrames = iota
	cPackets
	cIPBytes
	cFiltered
	cARP
	cNonIP
	cFragOrphan
	cFragEvicted
	cEvicted
	cCreated
	cRecords
	cSamples
	cEvents
	cParseError // first of packet.NumErrors entries
	numCounters = cParseError + int(packet.NumErrors)
)

var counterNames = [cParseError]string{
	cFrames:      "frames",
	cPackets:     "packets",
	cIPBytes:     "ip_bytes",
	cFiltered:    "filtered",
	cARP:         "arp",
	cNonIP:       "non_ip",
	cFragOrphan:  "fragment.orphan",
	cFragEvicted: "fragment.evicted",
	cEvicted:     "flow_table.evicted",
	cCreated:     "flows.created",
	cRecords:     "records",
	cSamples:     "samples",
	cEvents:      "events",
}

// Lists a flow is linked on. An open flow is on lruList (by last packet, for idle expiry and
// eviction) and activeList (by window deadline); a TCP flow that has closed leaves both for
// lingerList (by close time) until its linger time is over. A closed flow's end is thus known in
// advance and needs no LRU bookkeeping, which spares ending it two cache misses on its LRU
// neighbours.
const (
	lruList = iota
	activeList
	lingerList
	numLists
)

type link struct{ prev, next int32 }

type list struct{ head, tail int32 }

// dirState is one direction of a flow: the window's counts and the sequence-space tracking that
// finds retransmissions (kept across windows). 32 bytes.
type dirState struct {
	packets, bytes uint64
	flags          uint8
	seqValid       bool
	hole           bool
	hiEnd          uint32 // one past the highest sequence number seen
	holeLo, holeHi uint32 // the latest gap below hiEnd not yet filled
}

// Flow state bits.
const (
	stClientIsA = 1 << iota
	stClosed
	stRST // closed by a reset (else by FINs)
	stFinA
	stFinB
)

// Handshake progress for the RTT, as bits: captures do not always keep the SYN before the
// SYN-ACK (two interfaces, two queues), so each is noted whenever it comes.
const (
	hsSYN    = 1 << iota // the client's SYN was seen, at flowCold.at
	hsSYNACK             // the server's SYN-ACK was seen, with serverISN
	hsDone               // the client acknowledged the SYN-ACK: rtt is set
)

// A flow is split in two parallel slabs. flow holds what a packet of an established flow reads
// and writes, in exactly two cache lines: the key with the flow's state and times in the first,
// both directions' counters and sequence state in the second. On a busy host the table is larger
// than the caches and every line is a miss, so this layout is most of the packet path's speed.
// flowCold holds what creation, the first packet of a window, the handshake, closing, Tick and
// records use, with the list links, which the lazy LRU (see requeue) rarely changes.
type flow struct {
	// Line 0: flowKey's fields (compared by is), then the flow's state where flowKey has padding.
	a0, a1, b0, b1 uint64
	ifindex        int32
	pa, pb         uint16
	proto          uint8
	v6             bool
	state          uint8 // st* bits
	hs             uint8 // hs* bits
	retrans        uint32
	lastSeen       int64 // last packet (of the flow, hence of the window when it has packets)
	lruAt          int64 // packet time at which the flow took its place on the LRU list

	// Line 1.
	dir [2]dirState
}

type flowCold struct {
	hash      uint32
	serverISN uint32
	winStart  int64 // first packet of the window
	deadline  int64 // end of the active-timeout window
	// at is the time of the client's SYN while the handshake is followed, then, once the flow
	// has closed (which ends the handshake), the time it closed.
	at           int64
	rtt          int64
	serial       uint64 // creation order, the tie-breaker for deterministic output
	mask         uint64
	nic          string
	cid          string // Community ID, computed at the first record
	portsUnknown bool   // created by a fragment whose first fragment was not seen
	cidICMP      bool   // hash with the ICMP type/code of the first packet
	cidFromA     bool   // the first packet's direction (one-way ICMP keeps it)
	cidType      uint8
	cidCode      uint8
	nvlans       uint8
	vlans        [packet.MaxVLANs]uint16
	mac          [2][6]byte // of endpoint a and b, from the first packet
	lru          link       // on lruList
	sched        link       // on activeList or lingerList (never both)
}

func (f *flow) is(k *flowKey) bool {
	return f.a0 == k.a0 && f.a1 == k.a1 && f.b0 == k.b0 && f.b1 == k.b1 && f.ifindex == k.ifindex &&
		f.pa == k.pa && f.pb == k.pb && f.proto == k.proto && f.v6 == k.v6
}

func (f *flow) addrA() netip.Addr { return keyAddr(f.a0, f.a1, f.v6) }
func (f *flow) addrB() netip.Addr { return keyAddr(f.b0, f.b1, f.v6) }

func (f *flow) has(bit uint8) bool    { return f.state&bit != 0 }
func (f *flow) windowPackets() uint64 { return f.dir[0].packets + f.dir[1].packets }
func (f *flow) clientSide() (client, server int) {
	if f.has(stClientIsA) {
		return 0, 1
	}
	return 1, 0
}

func (f *flow) endReason() string {
	if f.has(stRST) {
		return sdk.EndRST
	}
	return sdk.EndFIN
}

// Table is the flow table. See the package comment for how it works.
type Table struct {
	cfg     Config
	matcher *sdk.Matcher
	emit    EmitFunc
	sample  SampleFunc
	event   EventFunc

	flows  []flow
	cold   []flowCold
	free   []int32 // a stack of free slots
	index  index
	lists  [numLists]list
	frags  fragTable
	seed   uint64
	serial uint64

	pkt      packet.Packet
	last     int32 // the flow of the previous packet, or -1
	counters [numCounters]uint64

	idle, active, linger int64
	lruGrain             int64   // see requeue
	order                []int32 // scratch for Flush and SetMatcher
}

// New builds a table: all memory for cfg.MaxFlows flows is allocated here. m is the subscription
// set (a matcher with no subscriptions tracks nothing); emit receives the records.
func New(cfg Config, m *sdk.Matcher, emit EmitFunc) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("building the flow table: no subscription matcher")
	}
	if emit == nil {
		return nil, errors.New("building the flow table: no record receiver")
	}
	t := &Table{
		cfg:     cfg,
		matcher: m,
		emit:    emit,
		flows:   make([]flow, cfg.MaxFlows),
		cold:    make([]flowCold, cfg.MaxFlows),
		free:    make([]int32, cfg.MaxFlows),
		index:   newIndex(cfg.MaxFlows),
		seed:    rand.Uint64(),
		idle:    int64(cfg.IdleTimeout),
		active:  int64(cfg.ActiveTimeout),
		linger:  int64(cfg.Linger),
		order:   make([]int32, 0, cfg.MaxFlows),
		last:    -1,
	}
	t.lruGrain = min(int64(time.Second), t.idle/16)
	t.frags = newFragTable(cfg.MaxFragments, int64(cfg.FragmentTimeout), t.seed^0x5bd1e995)
	for i := range t.free {
		t.free[i] = int32(cfg.MaxFlows - 1 - i) // pop from the end: slot 0 first
	}
	for i := range t.lists {
		t.lists[i] = list{-1, -1}
	}
	return t, nil
}

// Len is the number of flows being tracked.
func (t *Table) Len() int { return len(t.flows) - len(t.free) }

// Counters returns a snapshot of the table's counters by their stable names: frames, packets
// (IP packets accounted to flows), ip_bytes, filtered (no subscription covers them), arp, non_ip,
// parse_error.<reason>, fragment.orphan, fragment.evicted, flow_table.evicted, flows.created,
// records. Every frame is exactly one of packets, filtered, arp, non_ip or a parse error.
func (t *Table) Counters() map[string]uint64 {
	out := make(map[string]uint64, numCounters)
	for i, n := range counterNames {
		out[n] = t.counters[i]
	}
	for e := packet.OK + 1; e < packet.NumErrors; e++ {
		out["parse_error."+e.String()] = t.counters[cParseError+int(e)]
	}
	return out
}

// AddFrame decodes one Ethernet frame seen at ts on interface ifindex (named nic) and accounts
// it. outerVLAN is a VLAN id the capture stripped from the frame, or packet.NoVLAN. Frames that
// are not IP, cannot be decoded or match no subscription are counted and dropped. AddFrame may end
// flows (this one's idle gap or linger time, eviction when the table is full) and so emit records,
// and hands out the events of a flow's start and close (see OnEvent); otherwise it allocates
// nothing.
func (t *Table) AddFrame(ifindex int, nic string, ts time.Time, frame []byte, outerVLAN int) {
	t.counters[cFrames]++
	p := &t.pkt
	if r := p.Decode(frame, outerVLAN); r != packet.OK {
		t.counters[cParseError+int(r)]++
		return
	}
	switch p.Kind {
	case packet.KindARP:
		t.counters[cARP]++
		return
	case packet.KindOther:
		t.counters[cNonIP]++
		return
	}
	t.add(ifindex, nic, ts.UnixNano(), frame, p)
}

// TCP flag bits.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

func (t *Table) add(ifindex int, nic string, now int64, frame []byte, p *packet.Packet) {
	sport, dport := p.SrcPort, p.DstPort
	portsUnknown := false
	switch {
	case !p.Fragment:
	case p.NonFirstFragment():
		// The ports are in the first fragment. The oracle (tshark) does the same: a fragment
		// whose first fragment was not seen joins the flow with ports 0.
		var ok bool
		sport, dport, ok = t.frags.get(ifindex, p.Src, p.Dst, p.Protocol, p.FragID, now)
		if !ok {
			portsUnknown = true
			t.counters[cFragOrphan]++
		}
	case p.FirstFragment():
		if t.frags.put(ifindex, p.Src, p.Dst, p.Protocol, p.FragID, sport, dport, now) {
			t.counters[cFragEvicted]++
		}
	}
	var key flowKey
	fromA := keyOf(&key, frame, p, ifindex, sport, dport)
	// Packets come in trains: the previous packet's flow is checked first, which spares the
	// hash and the index for most packets.
	s := t.last
	if s < 0 || !t.flows[s].is(&key) {
		s = t.index.find(t.flows, &key, key.hash(t.seed))
	}
	tcp := p.Protocol == packet.ProtoTCP && !p.NonFirstFragment()
	if s >= 0 {
		f := &t.flows[s]
		switch {
		case f.has(stClosed) && (now-t.cold[s].at >= t.linger || tcp && p.TCPFlags&(tcpSYN|tcpACK) == tcpSYN):
			// The linger time is over, or a new connection reuses the ports.
			t.end(s, f.endReason())
			s = -1
		case now-f.lastSeen >= t.idle:
			t.end(s, sdk.EndIdle)
			s = -1
		}
	}
	if s < 0 {
		meta := sdk.PacketMeta{NIC: nic, Src: p.Src, Dst: p.Dst, Transport: sdk.Transport(p.Protocol),
			SrcPort: sport, DstPort: dport, PortsUnknown: portsUnknown}
		mask := t.matcher.Match(&meta)
		if mask == 0 {
			t.counters[cFiltered]++
			return
		}
		s = t.create(&key, key.hash(t.seed), fromA, nic, mask, portsUnknown, now, p)
		if t.event != nil {
			t.emitEvent(s, sdk.EventStart, now, frame, p)
		}
	}
	t.last = s
	wasClosed := t.flows[s].has(stClosed)
	t.account(s, fromA, now, p, tcp)
	if t.event != nil && !wasClosed && t.flows[s].has(stClosed) {
		kind := sdk.EventEnd
		if t.flows[s].has(stRST) {
			kind = sdk.EventReset
		}
		t.emitEvent(s, kind, now, frame, p)
	}
	if t.sample != nil && p.PayloadLen > 0 && !p.NonFirstFragment() &&
		(p.Protocol == packet.ProtoTCP || p.Protocol == packet.ProtoUDP) {
		if l7, _ := t.matcher.L7(); t.cold[s].mask&l7 != 0 {
			t.emitSample(s, fromA, now, frame, p)
		}
	}
}

// OnSample makes the table hand out payload samples of the flows an L7 subscription covers: the
// start of every payload-carrying TCP or UDP packet, up to the subscriptions' payload bytes.
func (t *Table) OnSample(fn SampleFunc) { t.sample = fn }

func (t *Table) emitSample(s int32, fromA bool, now int64, frame []byte, p *packet.Packet) {
	f, c := &t.flows[s], &t.cold[s]
	if c.cid == "" {
		c.cid = t.communityID(f, c)
	}
	_, payload := t.matcher.L7()
	n := min(p.PayloadLen, payload)
	ends := [2]sdk.Endpoint{{Addr: f.addrA(), Port: f.pa}, {Addr: f.addrB(), Port: f.pb}}
	ci, si := f.clientSide()
	side := 1
	if fromA {
		side = 0
	}
	t.counters[cSamples]++
	t.sample(sdk.Sample{
		CommunityID: c.cid, NIC: c.nic, Transport: sdk.Transport(f.proto),
		Client: ends[ci], Server: ends[si], FromClient: side == ci,
		Time: time.Unix(0, now).UTC(), Seq: p.TCPSeq,
		Data:    append([]byte(nil), frame[p.PayloadOffset:p.PayloadOffset+n]...),
		WireLen: p.PayloadWireLen, Subscriptions: t.matcher.IDs(c.mask),
	})
}

// OnEvent makes the table hand out flow events (see EventFunc).
func (t *Table) OnEvent(fn EventFunc) { t.event = fn }

// emitEvent hands out an event of flow s at time at; frame and p are the packet that made it
// (nil for a timeout), whose headers it carries when a subscription of the flow asks for frames.
func (t *Table) emitEvent(s int32, kind string, at int64, frame []byte, p *packet.Packet) {
	f, c := &t.flows[s], &t.cold[s]
	if c.cid == "" {
		c.cid = t.communityID(f, c)
	}
	ends := [2]sdk.Endpoint{{Addr: f.addrA(), Port: f.pa}, {Addr: f.addrB(), Port: f.pb}}
	ci, si := f.clientSide()
	e := sdk.Event{Kind: kind, Time: time.Unix(0, at).UTC(), NIC: c.nic, Transport: sdk.Transport(f.proto),
		Client: ends[ci], Server: ends[si], CommunityID: c.cid, Subscriptions: t.matcher.IDs(c.mask)}
	if p != nil && c.mask&t.matcher.Frames() != 0 && p.L3Offset < len(frame) {
		// One copy, cut in three: the IP header, the transport header (empty for a fragment
		// without one), and the start of the payload — up to the IP packet's end, not into the
		// Ethernet padding of a short frame.
		b := append([]byte(nil), frame[p.L3Offset:min(len(frame), p.L3Offset+min(p.IPBytes, FrameBytes))]...)
		l4 := min(max(p.L4Offset-p.L3Offset, 0), len(b))
		if p.L4Len == 0 {
			l4 = len(b) // no transport header read: all of it is the IP packet's
		}
		l7 := min(max(p.PayloadOffset-p.L3Offset, l4), len(b))
		if p.L4Len == 0 {
			l7 = len(b)
		}
		e.L3Frame, e.L4Frame, e.L7Frame = b[:l4:l4], b[l4:l7:l7], b[l7:]
	}
	t.counters[cEvents]++
	t.event(e)
}

func (t *Table) create(key *flowKey, h uint32, fromA bool, nic string, mask uint64, portsUnknown bool, now int64, p *packet.Packet) int32 {
	if len(t.free) == 0 {
		t.counters[cEvicted]++
		t.end(t.oldest(), sdk.EndEvicted)
	}
	s := t.free[len(t.free)-1]
	t.free = t.free[:len(t.free)-1]
	t.serial++
	var state uint8
	if clientIsA(key, fromA, p) {
		state = stClientIsA
	}
	t.flows[s] = flow{a0: key.a0, a1: key.a1, b0: key.b0, b1: key.b1, ifindex: key.ifindex, pa: key.pa, pb: key.pb,
		proto: key.proto, v6: key.v6, state: state, lastSeen: now, lruAt: now}
	c := &t.cold[s]
	*c = flowCold{hash: h, winStart: now, deadline: now + t.active, serial: t.serial, nic: nic, mask: mask,
		portsUnknown: portsUnknown, cidFromA: fromA, nvlans: uint8(p.NumVLANs)}
	copy(c.vlans[:], p.VLANs[:p.NumVLANs])
	side := 1
	if fromA {
		side = 0
	}
	c.mac[side] = p.SrcMAC
	c.mac[1-side] = p.DstMAC
	if (p.Protocol == packet.ProtoICMP || p.Protocol == packet.ProtoICMPv6) && !p.NonFirstFragment() {
		c.cidICMP, c.cidType, c.cidCode = true, p.ICMPType, p.ICMPCode
	}
	t.index.insert(h, s)
	t.pushBack(lruList, s)
	t.pushBack(activeList, s)
	t.counters[cCreated]++
	return s
}

// clientIsA decides which endpoint is the client (the initiator) from a flow's first packet:
//
//  1. a TCP SYN without ACK: its sender is the client;
//  2. a TCP SYN+ACK: its receiver is the client (the SYN was missed);
//  3. otherwise, if exactly one side's port is below 1024, that side is the server: a flow picked
//     up mid-stream often starts with a server packet, and well-known ports are servers;
//  4. otherwise the sender of the first packet is the client.
//
// Port-less transports (ICMP) and fragments whose first fragment was missed have port 0 on both
// sides and so fall to rule 4. The eBPF backend must apply the same rule (ARCHITECTURE §6).
func clientIsA(key *flowKey, fromA bool, p *packet.Packet) bool {
	if p.Protocol == packet.ProtoTCP && !p.NonFirstFragment() && p.TCPFlags&tcpSYN != 0 {
		if p.TCPFlags&tcpACK == 0 {
			return fromA
		}
		return !fromA
	}
	aLow, bLow := key.pa < 1024, key.pb < 1024
	if aLow != bLow {
		return bLow // the low port is the server's
	}
	return fromA
}

func (t *Table) account(s int32, fromA bool, now int64, p *packet.Packet, tcp bool) {
	f := &t.flows[s]
	side := 1
	if fromA {
		side = 0
	}
	switch {
	case f.windowPackets() == 0:
		t.cold[s].winStart = now
	case now < f.lastSeen && now < t.cold[s].winStart:
		t.cold[s].winStart = now // captures from several queues are not always in time order
	}
	d := &f.dir[side]
	d.packets++
	d.bytes += uint64(p.IPBytes)
	if now > f.lastSeen {
		f.lastSeen = now
	}
	t.counters[cPackets]++
	t.counters[cIPBytes] += uint64(p.IPBytes)
	if now-f.lruAt >= t.lruGrain && !f.has(stClosed) {
		t.requeue(s, now)
	}
	if !tcp {
		return
	}
	flags := p.TCPFlags
	d.flags |= flags
	if d.retransmission(p.TCPSeq, uint32(p.PayloadWireLen), flags) {
		f.retrans++
	}
	if (flags&tcpSYN != 0 || f.hs == hsSYN|hsSYNACK) && !f.has(stClosed) {
		t.handshake(s, fromA, now, p) // only while the handshake is under way
	}
	if f.has(stClosed) {
		return
	}
	if flags&tcpRST != 0 {
		f.state |= stRST
		t.close(s, now)
		return
	}
	if flags&tcpFIN != 0 {
		f.state |= stFinA << side // stFinA or stFinB
		if f.has(stFinA) && f.has(stFinB) {
			t.close(s, now)
		}
	}
}

// handshake follows the TCP handshake for the RTT: from the client's (first) SYN to its ACK of
// the server's SYN-ACK, as seen at this point.
func (t *Table) handshake(s int32, fromA bool, now int64, p *packet.Packet) {
	f, c := &t.flows[s], &t.cold[s]
	fromClient := fromA == f.has(stClientIsA)
	switch flags := p.TCPFlags & (tcpSYN | tcpACK); {
	case f.hs&hsDone != 0:
	case flags == tcpSYN && fromClient && f.hs&hsSYN == 0:
		f.hs |= hsSYN
		c.at = now
	case flags == tcpSYN|tcpACK && !fromClient:
		f.hs |= hsSYNACK
		c.serverISN = p.TCPSeq
	case flags == tcpACK && fromClient && f.hs == hsSYN|hsSYNACK && p.TCPAck == c.serverISN+1:
		f.hs |= hsDone
		c.rtt = now - c.at
	}
}

// retransmission tracks one direction's sequence space and reports whether a segment carrying
// payload covers only sequence numbers already seen in that direction (serial-number arithmetic,
// RFC 1982). Everything below the highest sequence number seen counts as seen, except the latest
// gap: a segment that fills it was not seen here before (it was lost upstream or reordered), so it
// is not a retransmission as seen at this point. Older gaps are forgotten, which can count a late
// fill of an earlier gap as a retransmission; one gap covers the usual single loss.
func (d *dirState) retransmission(seq, payload uint32, flags uint8) bool {
	end := seq + payload
	if flags&tcpSYN != 0 {
		end++ // the SYN takes one sequence number before the data
		seq++
	}
	next := end
	if flags&tcpFIN != 0 {
		next++
	}
	if !d.seqValid {
		d.seqValid, d.hiEnd = true, next
		return false
	}
	if payload == 0 {
		if seqLT(d.hiEnd, next) {
			d.hiEnd = next
		}
		return false
	}
	if seqLT(d.hiEnd, end) {
		if seqLT(d.hiEnd, seq) {
			d.hole, d.holeLo, d.holeHi = true, d.hiEnd, seq
		}
		d.hiEnd = next
		return false
	}
	if seqLT(d.hiEnd, next) {
		d.hiEnd = next
	}
	if d.hole && seqLT(seq, d.holeHi) && seqLT(d.holeLo, end) {
		// Part of the gap arrives: not seen before. Shrink the gap to what is still missing
		// (keeping its lower part if the segment lands in the middle).
		switch {
		case !seqLT(d.holeLo, seq) && !seqLT(end, d.holeHi):
			d.hole = false
		case !seqLT(d.holeLo, seq):
			d.holeLo = end
		default:
			d.holeHi = seq
		}
		return false
	}
	return true
}

func seqLT(a, b uint32) bool { return int32(a-b) < 0 }

func (t *Table) close(s int32, now int64) {
	t.flows[s].state |= stClosed
	t.cold[s].at = now
	t.unlink(lruList, s)
	t.unlink(activeList, s)
	t.pushBack(lingerList, s)
}

// requeue moves a flow to the back of the LRU list as of packet time at. The list is kept lazily:
// a packet moves its flow only when the flow's place is older than lruGrain (a second at most), so
// most packets do not touch their neighbours' list links (three cache misses at random places).
// The list is therefore ordered by lruAt, and lastSeen is at most lruGrain newer than lruAt;
// whoever takes flows from the head (idle expiry, eviction) requeues a flow whose lastSeen moved
// on before judging it.
func (t *Table) requeue(s int32, at int64) {
	t.flows[s].lruAt = at
	if t.lists[lruList].tail != s {
		t.unlink(lruList, s)
		t.pushBack(lruList, s)
	}
}

// oldest finds the open flow idle the longest (to within lruGrain) for eviction, or, when every
// flow has closed, the one closed the longest.
func (t *Table) oldest() int32 {
	if t.lists[lruList].head < 0 {
		return t.lists[lingerList].head
	}
	for range t.Len() {
		s := t.lists[lruList].head
		f := &t.flows[s]
		if f.lruAt == f.lastSeen {
			return s
		}
		t.requeue(s, f.lastSeen)
	}
	return t.lists[lruList].head
}

// Tick ends and reports what is due at now: closed TCP flows whose linger time is over, flows
// idle for the idle timeout, and windows of long flows that reached the active timeout. The
// capture loop calls it about once a second, with wall-clock time live and packet time in replay.
func (t *Table) Tick(now time.Time) {
	n := now.UnixNano()
	// Closed flows first, so that one whose linger and idle time are both over ends as fin/rst.
	for s := t.lists[lingerList].head; s >= 0 && n-t.cold[s].at >= t.linger; s = t.lists[lingerList].head {
		t.end(s, t.flows[s].endReason())
	}
	for s := t.lists[lruList].head; s >= 0; s = t.lists[lruList].head {
		f := &t.flows[s]
		if n-f.lastSeen >= t.idle {
			t.end(s, sdk.EndIdle)
			continue
		}
		if n-f.lruAt < t.idle {
			break // every flow behind it took its place later: none is due
		}
		t.requeue(s, f.lastSeen) // it had packets since it took its place
	}
	for s := t.lists[activeList].head; s >= 0 && n >= t.cold[s].deadline; s = t.lists[activeList].head {
		t.window(s, n)
	}
}

// window closes a flow's active-timeout window: a non-final record if it has packets, and a new
// window (deadline now + active timeout) either way.
func (t *Table) window(s int32, now int64) {
	f := &t.flows[s]
	if f.windowPackets() > 0 {
		t.emitRecord(s, false, "")
		for i := range f.dir {
			d := &f.dir[i]
			d.packets, d.bytes = 0, 0 // flags stay: a record carries every flag seen in the conversation so far
		}
		f.retrans = 0
	}
	t.cold[s].deadline = now + t.active
	t.unlink(activeList, s)
	t.pushBack(activeList, s)
}

// end emits a flow's final record and frees its slot; an idle end is a timeout event first.
func (t *Table) end(s int32, reason string) {
	if reason == sdk.EndIdle && t.event != nil {
		t.emitEvent(s, sdk.EventTimeout, t.flows[s].lastSeen, nil, nil)
	}
	t.emitRecord(s, true, reason)
	if t.last == s {
		t.last = -1
	}
	t.index.remove(t.cold[s].hash, s, t.cold)
	if t.flows[s].has(stClosed) {
		t.unlink(lingerList, s)
	} else {
		t.unlink(lruList, s)
		t.unlink(activeList, s)
	}
	t.flows[s] = flow{}
	t.cold[s] = flowCold{} // drop the references (NIC, Community ID)
	t.free = append(t.free, s)
}

// Flush ends every flow with the given reason (sdk.EndInput at the end of a file, sdk.EndShutdown
// when the capture stops), in order of their windows' start (then creation), and forgets pending
// fragments.
func (t *Table) Flush(reason string) {
	for _, s := range t.byStart() {
		t.end(s, reason)
	}
	t.frags.clear()
}

// byStart lists the live flows by window start, then creation order.
func (t *Table) byStart() []int32 {
	t.order = t.order[:0]
	for s := t.lists[lruList].head; s >= 0; s = t.cold[s].lru.next {
		t.order = append(t.order, s)
	}
	for s := t.lists[lingerList].head; s >= 0; s = t.cold[s].sched.next {
		t.order = append(t.order, s)
	}
	slices.SortFunc(t.order, func(x, y int32) int {
		if a, b := t.recordStart(x), t.recordStart(y); a != b {
			if a < b {
				return -1
			}
			return 1
		}
		if t.cold[x].serial < t.cold[y].serial {
			return -1
		}
		return 1
	})
	return t.order
}

// recordStart is the Start of the record a flow would emit now: its window's first packet, or
// its last packet when the window is empty.
func (t *Table) recordStart(s int32) int64 {
	if t.flows[s].windowPackets() == 0 {
		return t.flows[s].lastSeen
	}
	return t.cold[s].winStart
}

// SetMatcher replaces the subscription set. Every live flow is matched again as its first packet
// would be: a flow no subscription covers any more is ended with reason "unsubscribed" (its record
// names the subscriptions that did cover it); the others keep their counts and report the new set's
// ids from their next record on.
func (t *Table) SetMatcher(m *sdk.Matcher) error {
	if m == nil {
		return errors.New("replacing the flow table's subscriptions: no matcher")
	}
	for _, s := range t.byStart() {
		f, c := &t.flows[s], &t.cold[s]
		cl, sv := sdk.Endpoint{Addr: f.addrA(), Port: f.pa}, sdk.Endpoint{Addr: f.addrB(), Port: f.pb}
		if !f.has(stClientIsA) {
			cl, sv = sv, cl
		}
		meta := sdk.PacketMeta{NIC: c.nic, Src: cl.Addr, Dst: sv.Addr, Transport: sdk.Transport(f.proto),
			SrcPort: cl.Port, DstPort: sv.Port, PortsUnknown: c.portsUnknown}
		mask := m.Match(&meta)
		if mask == 0 {
			t.end(s, sdk.EndUnsubscribed)
			continue
		}
		c.mask = mask
	}
	t.matcher = m
	return nil
}

// emitRecord builds and hands out the record of a flow's current window.
func (t *Table) emitRecord(s int32, final bool, reason string) {
	f, c := &t.flows[s], &t.cold[s]
	ends := [2]sdk.Endpoint{{Addr: f.addrA(), Port: f.pa}, {Addr: f.addrB(), Port: f.pb}}
	ci, si := f.clientSide()
	if c.cid == "" {
		c.cid = t.communityID(f, c)
	}
	macs := make([]byte, 12) // one allocation for both MACs
	copy(macs[:6], c.mac[ci][:])
	copy(macs[6:], c.mac[si][:])
	rec := sdk.Flow{
		NIC:            c.nic,
		IfIndex:        int(f.ifindex),
		Start:          time.Unix(0, t.recordStart(s)).UTC(),
		End:            time.Unix(0, f.lastSeen).UTC(),
		Transport:      sdk.Transport(f.proto),
		Client:         ends[ci],
		Server:         ends[si],
		ClientToServer: sdk.Counts{Packets: f.dir[ci].packets, IPBytes: f.dir[ci].bytes},
		ServerToClient: sdk.Counts{Packets: f.dir[si].packets, IPBytes: f.dir[si].bytes},
		TCPFlags:       sdk.TCPFlags(f.dir[0].flags | f.dir[1].flags),
		RTT:            time.Duration(c.rtt),
		Retransmits:    f.retrans,
		ClientMAC:      net.HardwareAddr(macs[:6:6]),
		ServerMAC:      net.HardwareAddr(macs[6:]),
		CommunityID:    c.cid,
		Subscriptions:  t.matcher.IDs(c.mask),
		Final:          final,
		EndReason:      reason,
	}
	if c.nvlans > 0 {
		rec.VLAN = append([]uint16(nil), c.vlans[:c.nvlans]...)
	}
	t.counters[cRecords]++
	t.emit(rec)
}

func (t *Table) communityID(f *flow, c *flowCold) string {
	a, b := f.addrA(), f.addrB()
	if c.cidICMP {
		src, dst := a, b
		if !c.cidFromA {
			src, dst = b, a
		}
		return communityid.String(communityid.ICMPHash(t.cfg.CommunityIDSeed, src, dst, f.proto, c.cidType, c.cidCode))
	}
	return communityid.String(communityid.Hash(t.cfg.CommunityIDSeed, a, b, f.proto, f.pa, f.pb))
}

// Intrusive doubly linked lists over slab slots.

func (t *Table) linkOf(l int, s int32) *link {
	if l == lruList {
		return &t.cold[s].lru
	}
	return &t.cold[s].sched
}

func (t *Table) pushBack(l int, s int32) {
	lst := &t.lists[l]
	*t.linkOf(l, s) = link{prev: lst.tail, next: -1}
	if lst.tail >= 0 {
		t.linkOf(l, lst.tail).next = s
	} else {
		lst.head = s
	}
	lst.tail = s
}

func (t *Table) unlink(l int, s int32) {
	lst := &t.lists[l]
	lk := *t.linkOf(l, s)
	if lk.prev >= 0 {
		t.linkOf(l, lk.prev).next = lk.next
	} else {
		lst.head = lk.next
	}
	if lk.next >= 0 {
		t.linkOf(l, lk.next).prev = lk.prev
	} else {
		lst.tail = lk.prev
	}
	*t.linkOf(l, s) = link{-1, -1}
}
