package flowtable

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"github.com/quanyu/quanyu/internal/packet"
)

// flowKey identifies a conversation at one observation point: the interface, the transport and
// the unordered pair of endpoints, stored in canonical order (endpoint a sorts before endpoint b by
// address bytes, then port) so that both directions build the same key. Addresses are the 16-byte
// form (IPv4 as 4-in-6) split into big-endian halves, which makes the order a comparison of
// integers and keeps the key free of pointers. The same fields open a flow (see flow), where the
// key's tail padding holds flow state instead.
type flowKey struct {
	a0, a1, b0, b1 uint64
	ifindex        int32
	pa, pb         uint16
	proto          uint8
	v6             bool
}

// endpoint is one side of a key before ordering.
type endpoint struct {
	hi, lo uint64
	port   uint16
}

func endpointOf(a netip.Addr, port uint16) endpoint {
	b := a.As16()
	return endpoint{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]), port}
}

// keyOf builds a packet's flow key in k, reading the addresses straight from the frame (in the
// form endpointOf gives: IPv4 as 4-in-6) rather than through netip.Addr, with the given ports. It
// reports whether the packet's source is endpoint a.
func keyOf(k *flowKey, frame []byte, p *packet.Packet, ifindex int, sport, dport uint16) (fromA bool) {
	h := frame[p.L3Offset:]
	var s0, s1, d0, d1 uint64
	if p.Kind == packet.KindIPv4 {
		const v4InV6 = 0xffff << 32
		s1 = v4InV6 | uint64(binary.BigEndian.Uint32(h[12:16]))
		d1 = v4InV6 | uint64(binary.BigEndian.Uint32(h[16:20]))
	} else {
		s0, s1 = binary.BigEndian.Uint64(h[8:16]), binary.BigEndian.Uint64(h[16:24])
		d0, d1 = binary.BigEndian.Uint64(h[24:32]), binary.BigEndian.Uint64(h[32:40])
	}
	fromA = s0 < d0 || s0 == d0 && (s1 < d1 || s1 == d1 && sport <= dport)
	if !fromA {
		s0, s1, d0, d1, sport, dport = d0, d1, s0, s1, dport, sport
	}
	*k = flowKey{a0: s0, a1: s1, b0: d0, b1: d1, pa: sport, pb: dport, ifindex: int32(ifindex),
		proto: p.Protocol, v6: p.Kind == packet.KindIPv6}
	return fromA
}

func keyAddr(hi, lo uint64, v6 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	a := netip.AddrFrom16(b)
	if !v6 {
		a = a.Unmap()
	}
	return a
}

// mix folds one word into a running hash with a 64×64→128 multiply, the core step of wyhash-like
// hashes: fast, and with a random per-table seed, hard for traffic to steer into collisions.
func mix(h, v uint64) uint64 {
	hi, lo := bits.Mul64(h^v, 0x9e3779b97f4a7c15)
	return hi ^ lo
}

// mum multiplies two words to 128 bits and folds the halves (wyhash's mixing step).
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hash is a wyhash-style hash of the key: three independent multiplies of the key's words with
// the per-table seed folded into each, so that the CPU can run them side by side.
func (k *flowKey) hash(seed uint64) uint32 {
	var v6 uint64
	if k.v6 {
		v6 = 1
	}
	meta := uint64(k.pa) | uint64(k.pb)<<16 | uint64(k.proto)<<32 | v6<<40
	h := mum(k.a0^seed^0xa0761d6478bd642f, k.a1^0xe7037ed1a0b428db) ^
		mum(k.b0^seed^0x8ebc6af09c88c6e3, k.b1^0x589965cc75374cc3) ^
		mum(meta^seed^0x1d8e4e27c47d124f, uint64(uint32(k.ifindex))^0xa0761d6478bd642f)
	h = mum(h^seed, 0xe7037ed1a0b428db)
	return uint32(h ^ h>>32)
}

// index maps keys to slab slots. It is an open-addressing table with linear probing and
// backward-shift deletion, sized once at construction to at least twice the slab. A Go map would
// do the same job, but a map that sees constant inserts and deletes may grow its tables when
// tombstones pile up, which is an allocation on the packet path; this index never allocates and
// never holds tombstones.
//
// An entry is 32 bits: slot+1 in the low slotBits (0 is empty) and, above them, a few bits of the
// key's hash that spare most mismatches a visit to the slab. Small entries keep the whole index in
// the cache (512 KiB for 65536 flows), since on a busy host each lookup lands on a random entry.
// The full hash of each flow stays in the slab, where deletion finds an entry's home bucket.
type index struct {
	entries []uint32
	mask    uint32
}

const (
	slotBits = 26 // MaxFlows is below 1<<slotBits
	slotMask = 1<<slotBits - 1
)

func newIndex(slots int) index {
	n := 1
	for n < 2*slots {
		n <<= 1
	}
	return index{entries: make([]uint32, n), mask: uint32(n - 1)}
}

func tag(h uint32) uint32 { return h &^ slotMask }

// find returns the slot holding key k (hash h), or -1.
func (x *index) find(flows []flow, k *flowKey, h uint32) int32 {
	tg := tag(h)
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		e := x.entries[i]
		if e == 0 {
			return -1
		}
		if e&^slotMask == tg {
			s := int32(e&slotMask) - 1
			if flows[s].is(k) {
				return s
			}
		}
	}
}

// insert records that slot s holds a key with hash h; the key must not be present.
func (x *index) insert(h uint32, s int32) {
	i := h & x.mask
	for x.entries[i] != 0 {
		i = (i + 1) & x.mask
	}
	x.entries[i] = tag(h) | uint32(s+1)
}

// remove deletes slot s (whose key hashes to h) and shifts later entries of the probe run back,
// so that every entry stays reachable from its home bucket without tombstones. cold holds each
// slot's hash.
func (x *index) remove(h uint32, s int32, cold []flowCold) {
	want := uint32(s + 1)
	i := h & x.mask
	for x.entries[i]&slotMask != want {
		if x.entries[i] == 0 {
			return // not present: nothing to do
		}
		i = (i + 1) & x.mask
	}
	for j := i; ; {
		j = (j + 1) & x.mask
		e := x.entries[j]
		if e == 0 {
			break
		}
		home := cold[e&slotMask-1].hash & x.mask
		// The entry at j may move to the hole at i only if its home is not in the cyclic range
		// (i, j]: otherwise a lookup starting at its home would no longer pass the hole.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.entries[i] = e
			i = j
		}
	}
	x.entries[i] = 0
}
