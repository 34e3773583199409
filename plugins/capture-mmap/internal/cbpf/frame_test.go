package cbpf

import (
	"encoding/binary"
	"net/netip"

	"github.com/quanyu/quanyu/sdk"
)

// This file builds test frames and holds the test's own reading of a frame: which frames the
// filter must accept unconditionally, which it must reject, and, for the rest, the
// sdk.PacketMeta the reference matcher decides on. The parsing rules are the ones the package
// documentation states; the test cross-checks this parser against gopacket on well-formed frames.

// extHeader is one IPv6 extension header in a built frame.
type extHeader struct {
	typ     uint8
	size    int    // bytes, a multiple of 8 (AH: of 4, at least 12), at least 8
	fragOff uint16 // fragment header: offset in 8-octet units
	more    bool   // fragment header: M flag
}

// frameSpec describes a frame to build. Zero values give a plain untagged frame.
type frameSpec struct {
	tags      []uint16 // TPIDs of the VLAN tags, outermost first
	etherType uint16
	src, dst  netip.Addr // IPv4 for 0x0800, 16-byte for 0x86dd
	proto     uint8
	sport     uint16
	dport     uint16
	payload   int
	// IPv4
	options int // bytes of IPv4 options, a multiple of 4 up to 40
	fragOff uint16
	more    bool
	// IPv6
	ext []extHeader
	// Damage applied after building.
	truncate   int // cut the frame to this many bytes (0: keep)
	pad        int // Ethernet padding after the IP packet
	badVersion bool
	ihl        int // override the IPv4 IHL field (0: keep)
	ipLenDelta int // added to the IPv4 total length or the IPv6 payload length
	marker     uint32
}

func (f frameSpec) l4Header() []byte {
	var h []byte
	switch sdk.Transport(f.proto) {
	case sdk.TransportTCP:
		h = make([]byte, 20)
		h[12] = 5 << 4
		h[13] = 0x02
	case sdk.TransportUDP:
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h[4:], uint16(8+f.payload))
	case sdk.TransportSCTP:
		h = make([]byte, 12)
	case sdk.TransportICMP, sdk.TransportICMPv6:
		h = []byte{8, 0, 0, 0, 0, 1, 0, 1}
	default:
		return nil
	}
	if f.proto != uint8(sdk.TransportICMP) && f.proto != uint8(sdk.TransportICMPv6) {
		binary.BigEndian.PutUint16(h[0:], f.sport)
		binary.BigEndian.PutUint16(h[2:], f.dport)
	}
	return h
}

func (f frameSpec) build() []byte {
	b := make([]byte, 0, 128)
	b = append(b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01) // destination: not the receiver's address
	b = append(b, 0x02, 0x51, 0, 0, 0, 0)             // source: carries the marker
	binary.BigEndian.PutUint32(b[8:], f.marker)
	for _, tpid := range f.tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, 0x0064) // VLAN 100
	}
	b = binary.BigEndian.AppendUint16(b, f.etherType)
	var body []byte // transport header and payload
	if f.fragOff == 0 && !f.firstV6FragIsLater() {
		body = append(body, f.l4Header()...)
	}
	for i := 0; i < f.payload; i++ {
		body = append(body, byte(0xa0+i))
	}
	switch f.etherType {
	case 0x0800:
		ihl := 20 + f.options
		h := make([]byte, ihl)
		h[0] = 0x40 | byte(ihl/4)
		if f.ihl != 0 {
			h[0] = 0x40 | byte(f.ihl)
		}
		if f.badVersion {
			h[0] = 0x60 | h[0]&0x0f
		}
		binary.BigEndian.PutUint16(h[2:], uint16(ihl+len(body)+f.ipLenDelta))
		frag := f.fragOff & 0x1fff
		if f.more {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], frag)
		h[8] = 64
		h[9] = f.proto
		s4, d4 := f.src.As4(), f.dst.As4()
		copy(h[12:], s4[:])
		copy(h[16:], d4[:])
		for i := 20; i < ihl; i++ {
			h[i] = 1 // NOP options
		}
		var sum uint32
		for i := 0; i < ihl; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(h[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
		b = append(b, h...)
		b = append(b, body...)
	case 0x86dd:
		h := make([]byte, 40)
		h[0] = 0x60
		if f.badVersion {
			h[0] = 0x40
		}
		var exts []byte
		next := f.proto
		for i := len(f.ext) - 1; i >= 0; i-- {
			e := f.ext[i]
			x := make([]byte, e.size)
			x[0] = next
			switch e.typ {
			case 51:
				x[1] = byte(e.size/4 - 2)
			case 44:
				off := e.fragOff << 3
				if e.more {
					off |= 1
				}
				binary.BigEndian.PutUint16(x[2:], off)
				binary.BigEndian.PutUint32(x[4:], 0x1234)
			default:
				x[1] = byte(e.size/8 - 1)
				x[2], x[3] = 1, byte(e.size-4) // a PadN option filling the header
			}
			exts = append(x, exts...)
			next = e.typ
		}
		h[6] = next
		h[7] = 64
		binary.BigEndian.PutUint16(h[4:], uint16(len(exts)+len(body)+f.ipLenDelta))
		s16, d16 := f.src.As16(), f.dst.As16()
		copy(h[8:], s16[:])
		copy(h[24:], d16[:])
		b = append(b, h...)
		b = append(b, exts...)
		b = append(b, body...)
	case 0x0806:
		arp := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0x51, 0, 0, 0, 0, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2}
		b = append(b, arp...)
	default:
		b = append(b, make([]byte, 46)...)
	}
	b = append(b, make([]byte, f.pad)...)
	if f.truncate > 0 && f.truncate < len(b) {
		b = b[:f.truncate]
	}
	return b
}

// firstV6FragIsLater reports whether the IPv6 frame is a non-first fragment (no transport header
// in it).
func (f frameSpec) firstV6FragIsLater() bool {
	for _, e := range f.ext {
		if e.typ == 44 && e.fragOff != 0 {
			return true
		}
	}
	return false
}

// verdict is what the filter must do with a frame.
type verdict uint8

const (
	mustReject verdict = iota // not IP, not ARP
	mustAccept                // ARP, or IP the filter cannot parse
	decide                    // the matcher decides, on the meta returned with it
)

func (v verdict) String() string {
	return [...]string{"must reject", "must accept", "decided by the matcher"}[v]
}

func isVLAN(et uint16) bool { return et == 0x8100 || et == 0x88a8 || et == 0x9100 }

// readFrame is the test's reading of a frame, following the package documentation.
func readFrame(b []byte) (verdict, sdk.PacketMeta) {
	var meta sdk.PacketMeta
	if len(b) < 14 {
		return mustReject, meta
	}
	p := 12
	et := binary.BigEndian.Uint16(b[p:])
	for range maxVLANTags {
		if !isVLAN(et) {
			break
		}
		if len(b) < p+6 {
			return mustAccept, meta
		}
		p += 4
		et = binary.BigEndian.Uint16(b[p:])
	}
	if isVLAN(et) || et == 0x0806 {
		return mustAccept, meta
	}
	l3 := p + 2
	var cur, end int
	switch et {
	case 0x0800:
		if len(b) < l3+20 || b[l3]>>4 != 4 {
			return mustAccept, meta
		}
		ihl := int(b[l3]&0x0f) * 4
		end = l3 + int(binary.BigEndian.Uint16(b[l3+2:]))
		if ihl < 20 || end < l3+ihl || end > len(b) {
			return mustAccept, meta
		}
		meta.Src = netip.AddrFrom4([4]byte(b[l3+12 : l3+16]))
		meta.Dst = netip.AddrFrom4([4]byte(b[l3+16 : l3+20]))
		meta.Transport = sdk.Transport(b[l3+9])
		meta.PortsUnknown = binary.BigEndian.Uint16(b[l3+6:])&0x1fff != 0
		cur = l3 + ihl
	case 0x86dd:
		if len(b) < l3+40 || b[l3]>>4 != 6 {
			return mustAccept, meta
		}
		end = l3 + 40 + int(binary.BigEndian.Uint16(b[l3+4:]))
		if end > len(b) {
			return mustAccept, meta
		}
		meta.Src = netip.AddrFrom16([16]byte(b[l3+8 : l3+24]))
		meta.Dst = netip.AddrFrom16([16]byte(b[l3+24 : l3+40]))
		next := b[l3+6]
		cur = l3 + 40
		walked := 0
		for ; walked < maxIPv6Headers && isExt(next); walked++ {
			if cur+8 > end {
				return mustAccept, meta
			}
			typ := next
			next = b[cur]
			switch typ {
			case 44:
				if binary.BigEndian.Uint16(b[cur+2:])&0xfff8 != 0 {
					if isExt(next) {
						return mustAccept, meta
					}
					meta.PortsUnknown = true
				}
				cur += 8
			case 51:
				cur += (int(b[cur+1]) + 2) * 4
			default:
				cur += (int(b[cur+1]) + 1) * 8
			}
			if meta.PortsUnknown {
				break
			}
			if cur > end {
				return mustAccept, meta
			}
		}
		if !meta.PortsUnknown && isExt(next) {
			return mustAccept, meta
		}
		meta.Transport = sdk.Transport(next)
	default:
		return mustReject, meta
	}
	if !meta.PortsUnknown && meta.Transport.HasPorts() {
		need := map[sdk.Transport]int{sdk.TransportTCP: 20, sdk.TransportUDP: 8, sdk.TransportSCTP: 12}[meta.Transport]
		if cur+need > end {
			return mustAccept, meta
		}
		meta.SrcPort = binary.BigEndian.Uint16(b[cur:])
		meta.DstPort = binary.BigEndian.Uint16(b[cur+2:])
	}
	return decide, meta
}

func isExt(h uint8) bool { return h == 0 || h == 43 || h == 44 || h == 51 || h == 60 }
