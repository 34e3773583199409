package packet

import (
	"encoding/binary"
	"github.com/quanyu/quanyu/internal/testpcap"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// FuzzDecode feeds arbitrary frames to Decode: it must never panic, every offset it reports must
// lie inside the frame, IP lengths must agree with the header, and a Packet that decoded
// something else before must give the same answer as a fresh one.
func FuzzDecode(f *testing.F) {
	for _, path := range testpcap.Files(f) {
		frames := testpcap.Data(f, path)
		for i, frame := range frames {
			// Every frame of the small captures, a sample of the larger ones.
			if len(frames) < 64 || i%16 == 0 {
				f.Add(frame, int16(NoVLAN))
			}
		}
	}
	f.Add(build(f, eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 13, Type: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeIPv6}, ip6(layers.IPProtocolTCP), tcp()), int16(7))
	f.Add(ipv6Frame(f, ProtoHopByHop, cat(extHeader(ProtoFragment, 8), fragHeader(ProtoUDP, 0, true, 1),
		build(f, &layers.UDP{SrcPort: 1, DstPort: 2}))), int16(NoVLAN))
	f.Add(ipv6Frame(f, ProtoFragment, cat(fragHeader(ProtoTCP, 64, false, 1), []byte{1, 2, 3})), int16(NoVLAN))
	f.Add(build(f, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolSCTP), &layers.SCTP{SrcPort: 1, DstPort: 2}), int16(NoVLAN))

	var dirty Packet
	dirty.Decode(build(f, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(), gopacket.Payload("x")), 5)
	f.Fuzz(func(t *testing.T, frame []byte, outer int16) {
		vlan := int(outer)
		if vlan < NoVLAN {
			vlan = NoVLAN
		}
		var p Packet
		r := p.Decode(frame, vlan)
		if r >= NumErrors {
			t.Fatalf("Decode returned %d, outside the error enum", r)
		}
		if msg := invariantViolation(&p, frame, r); msg != "" {
			t.Fatalf("%s (result %v, packet %+v)", msg, r, p)
		}
		if r == OK {
			switch p.Kind {
			case KindIPv4:
				total := int(binary.BigEndian.Uint16(frame[p.L3Offset+2:]))
				if p.IPHeaderLen < 20 || p.IPBytes < p.IPHeaderLen || (total != 0 && p.IPBytes != total) {
					t.Fatalf("ipv4: header %d, ip bytes %d, total length field %d", p.IPHeaderLen, p.IPBytes, total)
				}
			case KindIPv6:
				plen := int(binary.BigEndian.Uint16(frame[p.L3Offset+4:]))
				if p.IPBytes < 40 || (plen != 0 && p.IPBytes != 40+plen) || p.IPHeaderLen < 40 || p.IPHeaderLen > p.IPBytes {
					t.Fatalf("ipv6: header %d, ip bytes %d, payload length field %d", p.IPHeaderLen, p.IPBytes, plen)
				}
			}
			if p.Kind == KindIPv4 || p.Kind == KindIPv6 {
				if p.Protocol == ProtoTCP && !p.NonFirstFragment() && (p.L4Len < 20 || p.L4Len > 60) {
					t.Fatalf("tcp header of %d bytes", p.L4Len)
				}
			}
		}
		again := dirty
		if r2 := again.Decode(frame, vlan); r2 != r || again != p {
			t.Fatalf("decoding into a used Packet differs: %v/%+v, fresh %v/%+v", r2, again, r, p)
		}
	})
}
