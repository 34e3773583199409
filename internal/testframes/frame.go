// Package testframes holds test helpers shared by the packet filters' tests: a builder of
// Ethernet frames (plain, VLAN-tagged, IPv4 with options and fragments, IPv6 with extension
// headers, and deliberately damaged ones) and a generator of random subscription sets and of
// frames aimed at their boundaries. It is for tests only; nothing in a binary imports it.
package testframes

import (
	"encoding/binary"
	"net/netip"

	"github.com/quanyu/quanyu/sdk"
)

// ExtHeader is one IPv6 extension header in a built frame.
type ExtHeader struct {
	Type    uint8
	Size    int    // bytes, a multiple of 8 (AH: of 4, at least 12), at least 8
	FragOff uint16 // fragment header: offset in 8-octet units
	More    bool   // fragment header: M flag
}

// Frame describes a frame to build. Zero values give a plain untagged frame.
type Frame struct {
	Tags      []uint16 // TPIDs of the VLAN tags, outermost first
	EtherType uint16
	Src, Dst  netip.Addr // IPv4 for 0x0800, 16-byte for 0x86dd
	Proto     uint8
	Sport     uint16
	Dport     uint16
	Payload   int
	// IPv4
	Options int // bytes of IPv4 options, a multiple of 4 up to 40
	FragOff uint16
	More    bool
	// IPv6
	Ext []ExtHeader
	// Damage applied after building.
	Truncate   int // cut the frame to this many bytes (0: keep)
	Pad        int // Ethernet padding after the IP packet
	BadVersion bool
	IHL        int // override the IPv4 IHL field (0: keep)
	IPLenDelta int // added to the IPv4 total length or the IPv6 payload length
	// Marker is written into the source MAC address, so a test can tell its frames apart.
	Marker uint32
}

func (f Frame) l4Header() []byte {
	var h []byte
	switch sdk.Transport(f.Proto) {
	case sdk.TransportTCP:
		h = make([]byte, 20)
		h[12] = 5 << 4
		h[13] = 0x02
	case sdk.TransportUDP:
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h[4:], uint16(8+f.Payload))
	case sdk.TransportSCTP:
		h = make([]byte, 12)
	case sdk.TransportICMP, sdk.TransportICMPv6:
		h = []byte{8, 0, 0, 0, 0, 1, 0, 1}
	default:
		return nil
	}
	if f.Proto != uint8(sdk.TransportICMP) && f.Proto != uint8(sdk.TransportICMPv6) {
		binary.BigEndian.PutUint16(h[0:], f.Sport)
		binary.BigEndian.PutUint16(h[2:], f.Dport)
	}
	return h
}

// Build encodes the frame.
func (f Frame) Build() []byte {
	b := make([]byte, 0, 128)
	b = append(b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01) // destination: not the receiver's address
	b = append(b, 0x02, 0x51, 0, 0, 0, 0)             // source: carries the marker
	binary.BigEndian.PutUint32(b[8:], f.Marker)
	for _, tpid := range f.Tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, 0x0064) // VLAN 100
	}
	b = binary.BigEndian.AppendUint16(b, f.EtherType)
	var body []byte // transport header and payload
	if f.FragOff == 0 && !f.firstV6FragIsLater() {
		body = append(body, f.l4Header()...)
	}
	for i := 0; i < f.Payload; i++ {
		body = append(body, byte(0xa0+i))
	}
	switch f.EtherType {
	case 0x0800:
		ihl := 20 + f.Options
		h := make([]byte, ihl)
		h[0] = 0x40 | byte(ihl/4)
		if f.IHL != 0 {
			h[0] = 0x40 | byte(f.IHL)
		}
		if f.BadVersion {
			h[0] = 0x60 | h[0]&0x0f
		}
		binary.BigEndian.PutUint16(h[2:], uint16(ihl+len(body)+f.IPLenDelta))
		frag := f.FragOff & 0x1fff
		if f.More {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], frag)
		h[8] = 64
		h[9] = f.Proto
		s4, d4 := f.Src.As4(), f.Dst.As4()
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
		if f.BadVersion {
			h[0] = 0x40
		}
		var exts []byte
		next := f.Proto
		for i := len(f.Ext) - 1; i >= 0; i-- {
			e := f.Ext[i]
			x := make([]byte, e.Size)
			x[0] = next
			switch e.Type {
			case 51:
				x[1] = byte(e.Size/4 - 2)
			case 44:
				off := e.FragOff << 3
				if e.More {
					off |= 1
				}
				binary.BigEndian.PutUint16(x[2:], off)
				binary.BigEndian.PutUint32(x[4:], 0x1234)
			default:
				x[1] = byte(e.Size/8 - 1)
				x[2], x[3] = 1, byte(e.Size-4) // a PadN option filling the header
			}
			exts = append(x, exts...)
			next = e.Type
		}
		h[6] = next
		h[7] = 64
		binary.BigEndian.PutUint16(h[4:], uint16(len(exts)+len(body)+f.IPLenDelta))
		s16, d16 := f.Src.As16(), f.Dst.As16()
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
	b = append(b, make([]byte, f.Pad)...)
	if f.Truncate > 0 && f.Truncate < len(b) {
		b = b[:f.Truncate]
	}
	return b
}

// firstV6FragIsLater reports whether the IPv6 frame is a non-first fragment (no transport header
// in it).
func (f Frame) firstV6FragIsLater() bool {
	for _, e := range f.Ext {
		if e.Type == 44 && e.FragOff != 0 {
			return true
		}
	}
	return false
}
