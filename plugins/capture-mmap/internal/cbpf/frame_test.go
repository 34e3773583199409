package cbpf

import (
	"encoding/binary"
	"net/netip"

	"github.com/quanyu/quanyu/sdk"
)

// This file holds the test's own reading of a frame: which frames the
// filter must accept unconditionally, which it must reject, and, for the rest, the
// sdk.PacketMeta the reference matcher decides on. The parsing rules are the ones the package
// documentation states; the test cross-checks this parser against gopacket on well-formed frames.

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
