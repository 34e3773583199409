package flowtable

import "net/netip"

// fragTable remembers the ports of fragmented datagrams: a first fragment records them under
// (interface, source, destination, protocol, IP id), and the later fragments of that datagram,
// which carry no transport header, look them up to join the same flow. It is a small
// set-associative cache: a key hashes to a set of fragWays entries, an entry lives until its
// deadline, and when a set is full the entry closest to its deadline makes room (counted, since
// the datagram's remaining fragments will then be orphans). Nothing allocates after construction.
type fragTable struct {
	sets    []fragSet
	mask    uint32
	seed    uint64
	timeout int64
}

const fragWays = 4

type fragSet [fragWays]fragEntry

type fragEntry struct {
	src, dst endpoint // ports unused
	id       uint32
	proto    uint8
	v6       bool
	ifindex  int32
	deadline int64 // 0: empty
	sport    uint16
	dport    uint16
}

func newFragTable(entries int, timeout int64, seed uint64) fragTable {
	n := 1
	for n*fragWays < entries {
		n <<= 1
	}
	return fragTable{sets: make([]fragSet, n), mask: uint32(n - 1), seed: seed, timeout: timeout}
}

func (t *fragTable) key(ifindex int, src, dst netip.Addr, proto uint8, id uint32) (fragEntry, *fragSet) {
	e := fragEntry{src: endpointOf(src, 0), dst: endpointOf(dst, 0), id: id, proto: proto, v6: src.Is6(), ifindex: int32(ifindex)}
	h := mix(t.seed, e.src.hi)
	h = mix(h, e.src.lo)
	h = mix(h, e.dst.hi)
	h = mix(h, e.dst.lo)
	h = mix(h, uint64(id)|uint64(proto)<<32|uint64(uint32(ifindex))<<40)
	return e, &t.sets[uint32(h^h>>32)&t.mask]
}

func (e *fragEntry) same(o *fragEntry) bool {
	return e.src == o.src && e.dst == o.dst && e.id == o.id && e.proto == o.proto && e.v6 == o.v6 && e.ifindex == o.ifindex
}

// put records the ports of a first fragment. It reports whether a live entry of another datagram
// had to be dropped to make room.
func (t *fragTable) put(ifindex int, src, dst netip.Addr, proto uint8, id uint32, sport, dport uint16, now int64) (evicted bool) {
	e, set := t.key(ifindex, src, dst, proto, id)
	e.sport, e.dport, e.deadline = sport, dport, now+t.timeout
	for i := range set {
		if w := &set[i]; w.deadline > now && w.same(&e) {
			*w = e // the same datagram again (a retransmitted first fragment)
			return false
		}
	}
	victim := 0
	for i := range set {
		w := &set[i]
		if w.deadline <= now { // empty (0) or expired
			*w = e
			return false
		}
		if w.deadline < set[victim].deadline {
			victim = i
		}
	}
	set[victim] = e
	return true
}

// get returns the ports recorded for a datagram's first fragment, if it was seen and has not
// expired.
func (t *fragTable) get(ifindex int, src, dst netip.Addr, proto uint8, id uint32, now int64) (sport, dport uint16, ok bool) {
	e, set := t.key(ifindex, src, dst, proto, id)
	for i := range set {
		w := &set[i]
		if w.deadline > now && w.same(&e) {
			return w.sport, w.dport, true
		}
	}
	return 0, 0, false
}

func (t *fragTable) clear() { clear(t.sets) }
