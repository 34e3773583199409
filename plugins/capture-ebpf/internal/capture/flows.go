package capture

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/cilium/ebpf"

	"github.com/quanyu/quanyu/plugins/capture-ebpf/internal/kern"
	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/communityid"
)

// flowState is what user space remembers of a flow the kernel counts: who the client is (decided
// once), its subscriptions, and what has been reported already, so each record holds the counts
// of its own window and the sum of a flow's records is its total.
type flowState struct {
	decided    bool
	clientIsA  bool
	mask       uint64
	cid        string
	fragmented bool

	reported    [2]sdk.Counts // per direction (0: from a)
	retransSent uint32
	windowStart uint64 // monotonic ns: start of the unreported window
	deadline    uint64 // monotonic ns: end of the active-timeout window
	fins        uint8  // directions whose FIN event arrived (bit 0: a, bit 1: b)
	ended       bool   // an end or reset event was emitted
	scanned     uint64 // the last scan that found the flow in the kernel
}

// merged is one flow with its per-CPU values combined.
type merged struct {
	first, last       uint64
	firstDir          uint8
	syn, synack       uint64
	synDir, synackDir uint8
	ack               [2]uint64
	counts            [2]sdk.Counts
	flags             uint8
	retrans           uint32
	closed            uint8
	vlan              []uint16
	macA, macB        [6]byte
	icmpType          uint8
	icmpCode          uint8
	fragmented        bool
	subs              uint64
}

func minNonZero(a, b uint64) uint64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

func (m *merged) merge(vals []kern.CaptureFlowStats) {
	*m = merged{vlan: m.vlan[:0]}
	for i := range vals {
		v := &vals[i]
		if v.Packets[0]+v.Packets[1] == 0 {
			continue // this CPU saw none of the flow
		}
		if m.first == 0 || v.FirstNs < m.first {
			m.first, m.firstDir = v.FirstNs, v.FirstDir
			m.icmpType, m.icmpCode = v.IcmpType, v.IcmpCode
			m.vlan = m.vlan[:0]
			for j := 0; j < int(v.Nvlan) && j < len(v.Vlan); j++ {
				m.vlan = append(m.vlan, v.Vlan[j])
			}
		}
		m.last = max(m.last, v.LastNs)
		if v.SynNs != 0 && (m.syn == 0 || v.SynNs < m.syn) {
			m.syn, m.synDir = v.SynNs, v.SynDir
		}
		if v.SynackNs != 0 && (m.synack == 0 || v.SynackNs < m.synack) {
			m.synack, m.synackDir = v.SynackNs, v.SynackDir
		}
		for d := range 2 {
			m.counts[d].Packets += v.Packets[d]
			m.counts[d].IPBytes += v.Bytes[d]
			m.ack[d] = minNonZero(m.ack[d], v.AckNs[d])
			m.flags |= v.Flags[d]
		}
		m.retrans += v.Retrans
		m.closed |= v.Closed
		m.subs |= v.Subs
		m.fragmented = m.fragmented || v.Fragmented != 0
		if v.Seen&0x01 != 0 || v.Seen&0x02 != 0 {
			// Either side's first packet on this CPU set both addresses.
			if m.macA == ([6]byte{}) {
				m.macA = v.MacA
			}
			if m.macB == ([6]byte{}) {
				m.macB = v.MacB
			}
		}
	}
}

// closedDone reports a TCP flow closed by FINs both ways or by a RST.
func (m *merged) closedDone() bool {
	return m.closed&4 != 0 || m.closed&3 == 3
}

// decideClient applies the rule both capture backends share (flowtable.clientIsA), to the first
// packet the kernel saw of the flow:
//  1. a SYN without ACK: its sender is the client;
//  2. a SYN+ACK: its receiver is the client;
//  3. otherwise, if exactly one side's port is below 1024, that side is the server;
//  4. otherwise the sender of the first packet is the client.
func decideClient(key *kern.CaptureFlowKey, firstFromA bool, firstFlags uint8) bool {
	const syn, ack = 0x02, 0x10
	if key.Proto == uint8(sdk.TransportTCP) && firstFlags&syn != 0 {
		if firstFlags&ack == 0 {
			return firstFromA
		}
		return !firstFromA
	}
	aLow, bLow := key.PortA < 1024, key.PortB < 1024
	if aLow != bLow {
		return bLow
	}
	return firstFromA
}

// decide sets the client side from the merged kernel view, unless an event did already.
func (st *flowState) decide(key *kern.CaptureFlowKey, m *merged) {
	if st.decided {
		return
	}
	var flags uint8
	switch {
	case m.syn != 0 && m.syn == m.first:
		flags = 0x02
	case m.synack != 0 && m.synack == m.first:
		flags = 0x12
	}
	st.clientIsA = decideClient(key, m.firstDir == 0, flags)
	st.decided = true
}

func addrOf(words [4]uint32) netip.Addr {
	var b [16]byte
	for i, w := range words {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
	return netip.AddrFrom16(b).Unmap()
}

// scan reads the whole flow map and reports what is due: windows of long flows, ends of closed
// and idle flows, and, when the map is full, the flows idle the longest. With final set (the
// capture stops) every flow ends.
func (l *live) scan(final bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	began := time.Now()
	defer func() {
		l.user.scans++
		l.user.scanNanos += uint64(time.Since(began))
	}()
	clk := now()
	nowMono := uint64(clk.mono)
	cfg := l.cfg.sdk
	idle, active := uint64(cfg.IdleTimeout), uint64(cfg.ActiveTimeout)
	linger := uint64(time.Duration(l.cfg.opts.LingerMS) * time.Millisecond)

	gen := l.user.scans + 1
	var ended []kern.CaptureFlowKey
	// Eviction candidates are only gathered when the map is (nearly) full.
	evict := !final && (l.evictWant || len(l.flows) >= l.cfg.sdk.MaxFlows*9/10)
	if kc, err := l.k.counters(); err == nil {
		evict = evict || (!final && kc[kern.CaptureCounterCOUNT_MAP_FULL] > l.lastFull)
		l.lastFull = kc[kern.CaptureCounterCOUNT_MAP_FULL]
	}
	type candidate struct {
		key  kern.CaptureFlowKey
		last uint64
	}
	var live []candidate
	var m merged
	cursor := new(ebpf.MapBatchCursor)
	for {
		n, err := l.k.objs.Flows.BatchLookup(cursor, l.keyBuf, l.valBuf, nil)
		for i := 0; i < n; i++ {
			key := l.keyBuf[i]
			m.merge(l.valBuf[i*l.ncpu : (i+1)*l.ncpu])
			if m.first == 0 {
				continue // created this instant, not yet counted
			}
			st := l.state(key, &m)
			st.scanned = gen
			if st.mask == 0 {
				l.user.unsubscribed++
				ended = append(ended, key)
				continue
			}
			switch {
			case final:
				l.emit(key, st, &m, clk, true, sdk.EndShutdown)
				ended = append(ended, key)
			case m.closedDone() && since(nowMono, m.last) >= linger:
				reason := sdk.EndFIN
				if m.closed&4 != 0 {
					reason = sdk.EndRST
				}
				l.emit(key, st, &m, clk, true, reason)
				ended = append(ended, key)
			case since(nowMono, m.last) >= idle:
				l.emit(key, st, &m, clk, true, sdk.EndIdle)
				l.timeoutEvent(key, st, &m, clk)
				ended = append(ended, key)
			default:
				if nowMono >= st.deadline {
					if m.counts[0].Packets+m.counts[1].Packets > st.reported[0].Packets+st.reported[1].Packets {
						l.emit(key, st, &m, clk, false, "")
					}
					st.deadline = nowMono + active
				}
				if evict {
					live = append(live, candidate{key, m.last})
				}
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			l.user.scanErrors++
			l.c.log.Warn("reading the flow map", "err", err)
			break
		}
	}
	// The kernel found its flow map full: end the flows idle the longest, so new ones find room.
	if evict {
		sort.Slice(live, func(i, j int) bool { return live[i].last < live[j].last })
		target := len(live) - l.cfg.sdk.MaxFlows*8/10
		for i := 0; i < target && i < len(live); i++ {
			key := live[i].key
			if l.lookup(key, &m) {
				l.emit(key, l.flows[key], &m, clk, true, sdk.EndEvicted)
			}
			l.user.evicted++
			ended = append(ended, key)
		}
	}
	l.evictWant = false
	for key, st := range l.flows {
		if st.scanned != gen && st.windowStart == 0 {
			delete(l.flows, key) // made by a late event for a flow already ended
		} else if st.scanned != gen && st.scanned != 0 {
			delete(l.flows, key) // gone from the kernel without a record: only a restart does that
		}
	}
	l.remove(ended)
}

// since is how long before now the kernel time t was, and 0 for a packet counted after now was
// read (the map is read while packets keep coming).
func since(now, t uint64) uint64 {
	if t >= now {
		return 0
	}
	return now - t
}

// state finds or makes a flow's user-space state. Called with l.mu held.
func (l *live) state(key kern.CaptureFlowKey, m *merged) *flowState {
	st := l.flows[key]
	if st == nil {
		st = &flowState{windowStart: m.first, deadline: m.first + uint64(l.cfg.sdk.ActiveTimeout)}
		st.fragmented = m.fragmented
		st.mask = l.matcher.Match(l.meta(&key, st.fragmented))
		l.flows[key] = st
	}
	if st.windowStart == 0 {
		st.windowStart = m.first
		st.deadline = m.first + uint64(l.cfg.sdk.ActiveTimeout)
	}
	st.decide(&key, m)
	return st
}

// emit sends a flow record with the counts since the previous one, tagged with the flow's
// subscriptions. Called with l.mu held.
func (l *live) emit(key kern.CaptureFlowKey, st *flowState, m *merged, clk clock, final bool, reason string) {
	l.emitAs(key, st, m, clk, final, reason, l.matcher.IDs(st.mask))
}

// emitAs is emit with the subscription ids given: a flow a new set leaves out is reported with
// the ids it had.
func (l *live) emitAs(key kern.CaptureFlowKey, st *flowState, m *merged, clk clock, final bool, reason string, ids []string) {
	a := sdk.Endpoint{Addr: addrOf(key.AddrA), Port: key.PortA}
	b := sdk.Endpoint{Addr: addrOf(key.AddrB), Port: key.PortB}
	delta := [2]sdk.Counts{
		{Packets: m.counts[0].Packets - st.reported[0].Packets, IPBytes: m.counts[0].IPBytes - st.reported[0].IPBytes},
		{Packets: m.counts[1].Packets - st.reported[1].Packets, IPBytes: m.counts[1].IPBytes - st.reported[1].IPBytes},
	}
	ci, si := 0, 1
	client, server := a, b
	macC, macS := m.macA, m.macB
	if !st.clientIsA {
		ci, si = 1, 0
		client, server = b, a
		macC, macS = m.macB, m.macA
	}
	if st.cid == "" {
		st.cid = l.communityID(&key, st, m)
	}
	rec := sdk.Flow{
		NIC: l.ifnames[key.Ifindex], IfIndex: int(key.Ifindex),
		// The last time is from the kernel's coarse clock, the first from its fine one: a short
		// flow's last can read a tick before its first.
		Start: clk.at(max(st.windowStart, m.first)), End: clk.at(max(m.last, m.first)),
		Transport: sdk.Transport(key.Proto), Client: client, Server: server,
		ClientToServer: delta[ci], ServerToClient: delta[si],
		TCPFlags:      sdk.TCPFlags(m.flags),
		Retransmits:   m.retrans - st.retransSent,
		ClientMAC:     net.HardwareAddr(append([]byte(nil), macC[:]...)),
		ServerMAC:     net.HardwareAddr(append([]byte(nil), macS[:]...)),
		CommunityID:   st.cid,
		Subscriptions: ids,
		Final:         final,
		EndReason:     reason,
	}
	if len(m.vlan) > 0 {
		rec.VLAN = append([]uint16(nil), m.vlan...)
	}
	// The handshake RTT as seen here: the SYN to the client's first ACK after the SYN-ACK.
	cdir := uint8(ci)
	if m.syn != 0 && m.synDir == cdir+1 && m.synack > m.syn && m.ack[ci] > m.synack {
		rec.RTT = time.Duration(m.ack[ci] - m.syn)
	}
	st.reported = m.counts
	st.retransSent = m.retrans
	st.windowStart = m.last + 1
	l.user.records++
	l.snd.AddFlow(rec)
}

func (l *live) communityID(key *kern.CaptureFlowKey, st *flowState, m *merged) string {
	a, b := addrOf(key.AddrA), addrOf(key.AddrB)
	if key.Proto == uint8(sdk.TransportICMP) || key.Proto == uint8(sdk.TransportICMPv6) {
		src, dst := a, b
		if m.firstDir == 1 {
			src, dst = b, a
		}
		return communityid.String(communityid.ICMPHash(0, src, dst, key.Proto, m.icmpType, m.icmpCode))
	}
	return communityid.String(communityid.Hash(0, a, b, key.Proto, key.PortA, key.PortB))
}

// timeoutEvent reports an idle end as a flow event, as FIN and RST are. Called with l.mu held.
func (l *live) timeoutEvent(key kern.CaptureFlowKey, st *flowState, m *merged, clk clock) {
	e := l.event(key, st, sdk.EventTimeout, clk.at(m.last))
	l.user.events++
	l.snd.AddEvent(e)
}

// event builds a flow event oriented by the flow's client. Called with l.mu held.
func (l *live) event(key kern.CaptureFlowKey, st *flowState, kind string, at time.Time) sdk.Event {
	a := sdk.Endpoint{Addr: addrOf(key.AddrA), Port: key.PortA}
	b := sdk.Endpoint{Addr: addrOf(key.AddrB), Port: key.PortB}
	client, server := a, b
	if !st.clientIsA {
		client, server = b, a
	}
	return sdk.Event{Kind: kind, Time: at, NIC: l.ifnames[key.Ifindex], Transport: sdk.Transport(key.Proto),
		Client: client, Server: server, CommunityID: st.cid, Subscriptions: l.matcher.IDs(st.mask)}
}
