package packet

import (
	"encoding/binary"
	"github.com/quanyu/quanyu/internal/testpcap"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	v4A  = net.IP{192, 0, 2, 1}
	v4B  = net.IP{198, 51, 100, 7}
	v6A  = net.ParseIP("2001:db8::1")
	v6B  = net.ParseIP("2001:db8::2")
)

// build serialises layers with gopacket, an encoder independent of the parser under test. Lengths
// are fixed up by gopacket; checksums are not computed (the parser does not check them).
func build(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		t.Fatalf("building a test frame: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: t}
}

func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: v4A, DstIP: v4B, Id: 0x1234}
}

func ip6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: v6A, DstIP: v6B}
}

func tcp() *layers.TCP {
	return &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1000, Ack: 2000, SYN: true, ACK: true, Window: 512}
}

// extHeader is an IPv6 extension header of the given total size (a multiple of 8, at least 8)
// in the hop-by-hop/routing/destination-options layout.
func extHeader(next uint8, size int) []byte {
	h := make([]byte, size)
	h[0] = next
	h[1] = uint8(size/8 - 1)
	return h
}

func fragHeader(next uint8, offset uint16, more bool, id uint32) []byte {
	h := make([]byte, 8)
	h[0] = next
	fo := offset &^ 7
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(h[2:], fo)
	binary.BigEndian.PutUint32(h[4:], id)
	return h
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ipv6Frame assembles Ethernet + IPv6 + raw bytes after the fixed header, with the payload length
// set to len(rest).
func ipv6Frame(t testing.TB, first uint8, rest []byte) []byte {
	t.Helper()
	h := ip6(layers.IPProtocol(first))
	return build(t, eth(layers.EthernetTypeIPv6), h, gopacket.Payload(rest))
}

func TestDecode(t *testing.T) {
	payload := gopacket.Payload([]byte("hello, world"))
	tcpHdr := build(t, tcp())
	udpHdr := func() []byte {
		return build(t, &layers.UDP{SrcPort: 5353, DstPort: 53}, payload)
	}
	tests := []struct {
		name      string
		frame     []byte
		outerVLAN int
		check     func(t *testing.T, p *Packet)
	}{
		{
			name:  "ipv4 tcp with padding",
			frame: build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp()),
			check: func(t *testing.T, p *Packet) {
				want(t, "kind", p.Kind, KindIPv4)
				want(t, "src", p.Src, netip.MustParseAddr("192.0.2.1"))
				want(t, "dst", p.Dst, netip.MustParseAddr("198.51.100.7"))
				want(t, "src mac", net.HardwareAddr(p.SrcMAC[:]).String(), macA.String())
				want(t, "dst mac", net.HardwareAddr(p.DstMAC[:]).String(), macB.String())
				want(t, "protocol", p.Protocol, uint8(ProtoTCP))
				want(t, "ip bytes", p.IPBytes, 40) // the frame is padded to 60 bytes; the header says 40
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{40000, 443})
				want(t, "seq", p.TCPSeq, uint32(1000))
				want(t, "ack", p.TCPAck, uint32(2000))
				want(t, "flags", p.TCPFlags, uint8(0x12))
				want(t, "window", p.TCPWindow, uint16(512))
				want(t, "l4 offset", p.L4Offset, 34)
				want(t, "l4 len", p.L4Len, 20)
				want(t, "payload len (padding excluded)", p.PayloadLen, 0)
				want(t, "payload wire len", p.PayloadWireLen, 0)
				want(t, "fragment", p.Fragment, false)
				want(t, "ttl", p.TTL, uint8(64))
			},
		},
		{
			name: "ipv4 options and payload",
			frame: build(t, eth(layers.EthernetTypeIPv4),
				&layers.IPv4{Version: 4, TTL: 9, Protocol: layers.IPProtocolUDP, SrcIP: v4A, DstIP: v4B,
					Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}},
				&layers.UDP{SrcPort: 5353, DstPort: 53}, payload),
			check: func(t *testing.T, p *Packet) {
				want(t, "ip header len", p.IPHeaderLen, 24)
				want(t, "ip bytes", p.IPBytes, 24+8+12)
				want(t, "l4 offset", p.L4Offset, 14+24)
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{5353, 53})
				want(t, "payload offset", p.PayloadOffset, 14+24+8)
				want(t, "payload len", p.PayloadLen, 12)
			},
		},
		{
			name: "802.1ad + 802.1Q",
			frame: build(t, eth(layers.EthernetTypeQinQ),
				&layers.Dot1Q{VLANIdentifier: 13, Type: layers.EthernetTypeDot1Q},
				&layers.Dot1Q{VLANIdentifier: 10, Priority: 3, Type: layers.EthernetTypeIPv4},
				ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 1, DstPort: 2}),
			check: func(t *testing.T, p *Packet) {
				wantVLANs(t, p, 13, 10)
				want(t, "ethertype", p.EtherType, uint16(EtherTypeIPv4))
				want(t, "l3 offset", p.L3Offset, 22)
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{1, 2})
			},
		},
		{
			name: "0x9100 tag",
			frame: build(t, eth(0x9100), &layers.Dot1Q{VLANIdentifier: 4095, Type: layers.EthernetTypeIPv4},
				ip4(layers.IPProtocolTCP), tcp()),
			check: func(t *testing.T, p *Packet) {
				wantVLANs(t, p, 4095)
				want(t, "protocol", p.Protocol, uint8(ProtoTCP))
			},
		},
		{
			name:      "stripped outer vlan comes first",
			outerVLAN: 100,
			frame: build(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeIPv4},
				ip4(layers.IPProtocolTCP), tcp()),
			check: func(t *testing.T, p *Packet) {
				wantVLANs(t, p, 100, 200)
			},
		},
		{
			name:      "stripped vlan 0 is still a tag",
			outerVLAN: 0,
			frame:     build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp()),
			check: func(t *testing.T, p *Packet) {
				wantVLANs(t, p, 0)
			},
		},
		{
			name: "arp",
			frame: build(t, eth(layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet,
				Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4, Operation: 1,
				SourceHwAddress: macA, SourceProtAddress: v4A, DstHwAddress: make([]byte, 6), DstProtAddress: v4B}),
			check: func(t *testing.T, p *Packet) {
				want(t, "kind", p.Kind, KindARP)
				want(t, "src valid", p.Src.IsValid(), false)
			},
		},
		{
			name:  "lldp is other",
			frame: build(t, eth(0x88cc), gopacket.Payload(make([]byte, 40))),
			check: func(t *testing.T, p *Packet) { want(t, "kind", p.Kind, KindOther) },
		},
		{
			name: "ipv4 first fragment",
			frame: build(t, eth(layers.EthernetTypeIPv4),
				&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: v4A, DstIP: v4B, Id: 77, Flags: layers.IPv4MoreFragments},
				&layers.UDP{SrcPort: 5353, DstPort: 53}, payload),
			check: func(t *testing.T, p *Packet) {
				want(t, "fragment", p.Fragment, true)
				want(t, "first", p.FirstFragment(), true)
				want(t, "mf", p.MoreFragments, true)
				want(t, "id", p.FragID, uint32(77))
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{5353, 53})
			},
		},
		{
			name: "ipv4 non-first fragment shorter than a tcp header is no error",
			frame: build(t, eth(layers.EthernetTypeIPv4),
				&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: v4A, DstIP: v4B, Id: 77, FragOffset: 185},
				gopacket.Payload([]byte{1, 2, 3})),
			check: func(t *testing.T, p *Packet) {
				want(t, "non-first", p.NonFirstFragment(), true)
				want(t, "offset in bytes", p.FragOffset, uint16(185*8))
				want(t, "mf", p.MoreFragments, false)
				want(t, "protocol", p.Protocol, uint8(ProtoTCP))
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{0, 0})
				want(t, "l4 len", p.L4Len, 0)
				want(t, "payload", [2]int{p.PayloadOffset, p.PayloadLen}, [2]int{34, 3})
				want(t, "ip bytes", p.IPBytes, 23)
			},
		},
		{
			name:  "ipv6 tcp",
			frame: build(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolTCP), tcp(), payload),
			check: func(t *testing.T, p *Packet) {
				want(t, "kind", p.Kind, KindIPv6)
				want(t, "src", p.Src, netip.MustParseAddr("2001:db8::1"))
				want(t, "ip bytes", p.IPBytes, 40+20+12)
				want(t, "header len", p.IPHeaderLen, 40)
				want(t, "payload", [3]int{p.PayloadOffset, p.PayloadLen, p.PayloadWireLen}, [3]int{14 + 60, 12, 12})
			},
		},
		{
			name: "ipv6 hop-by-hop, routing, destination options, AH before udp",
			frame: ipv6Frame(t, ProtoHopByHop, cat(extHeader(ProtoRouting, 8), extHeader(ProtoDestOpts, 24),
				extHeader(ProtoAH, 8), func() []byte {
					ah := make([]byte, 16) // AH length is in 4-byte units minus 2: 16 bytes → 2
					ah[0], ah[1] = ProtoUDP, 2
					return ah
				}(), udpHdr())),
			check: func(t *testing.T, p *Packet) {
				want(t, "protocol", p.Protocol, uint8(ProtoUDP))
				want(t, "header len", p.IPHeaderLen, 40+8+24+8+16)
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{5353, 53})
				want(t, "payload len", p.PayloadLen, 12)
			},
		},
		{
			name:  "ipv6 first fragment",
			frame: ipv6Frame(t, ProtoFragment, cat(fragHeader(ProtoUDP, 0, true, 0xabcdef), udpHdr())),
			check: func(t *testing.T, p *Packet) {
				want(t, "first", p.FirstFragment(), true)
				want(t, "id", p.FragID, uint32(0xabcdef))
				want(t, "protocol", p.Protocol, uint8(ProtoUDP))
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{5353, 53})
			},
		},
		{
			name:  "ipv6 atomic fragment",
			frame: ipv6Frame(t, ProtoFragment, cat(fragHeader(ProtoTCP, 0, false, 5), tcpHdr)),
			check: func(t *testing.T, p *Packet) {
				want(t, "fragment", p.Fragment, true)
				want(t, "first", p.FirstFragment(), false)
				want(t, "non-first", p.NonFirstFragment(), false)
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{40000, 443})
			},
		},
		{
			name:  "ipv6 non-first fragment",
			frame: ipv6Frame(t, ProtoDestOpts, cat(extHeader(ProtoFragment, 8), fragHeader(ProtoUDP, 1448, true, 9), []byte{1, 2})),
			check: func(t *testing.T, p *Packet) {
				want(t, "non-first", p.NonFirstFragment(), true)
				want(t, "offset", p.FragOffset, uint16(1448))
				want(t, "protocol", p.Protocol, uint8(ProtoUDP))
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{0, 0})
				want(t, "payload", [2]int{p.PayloadOffset, p.PayloadLen}, [2]int{14 + 40 + 16, 2})
			},
		},
		{
			name:  "ipv6 no next header",
			frame: ipv6Frame(t, ProtoNoNext, nil),
			check: func(t *testing.T, p *Packet) {
				want(t, "protocol", p.Protocol, uint8(ProtoNoNext))
				want(t, "ip bytes", p.IPBytes, 40)
			},
		},
		{
			name:  "icmp echo",
			frame: build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 2}, payload),
			check: func(t *testing.T, p *Packet) {
				want(t, "type/code", [2]uint8{p.ICMPType, p.ICMPCode}, [2]uint8{8, 0})
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{0, 0})
				want(t, "l4 len", p.L4Len, 8)
				want(t, "payload len", p.PayloadLen, 12)
			},
		},
		{
			name:  "icmpv6 unreachable",
			frame: build(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolICMPv6), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 4)}, gopacket.Payload(make([]byte, 4))),
			check: func(t *testing.T, p *Packet) {
				want(t, "protocol", p.Protocol, uint8(ProtoICMPv6))
				want(t, "type/code", [2]uint8{p.ICMPType, p.ICMPCode}, [2]uint8{1, 4})
			},
		},
		{
			name: "sctp",
			frame: build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolSCTP),
				&layers.SCTP{SrcPort: 2905, DstPort: 2906, VerificationTag: 1}),
			check: func(t *testing.T, p *Packet) {
				want(t, "protocol", p.Protocol, uint8(ProtoSCTP))
				want(t, "ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{2905, 2906})
				want(t, "l4 len", p.L4Len, 12)
			},
		},
		{
			name:  "gre is tracked without ports",
			frame: build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolGRE), gopacket.Payload(make([]byte, 8))),
			check: func(t *testing.T, p *Packet) {
				want(t, "protocol", p.Protocol, uint8(47))
				want(t, "l4 len", p.L4Len, 0)
				want(t, "payload", [2]int{p.PayloadOffset, p.PayloadLen}, [2]int{34, 8})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Packet
			outer := NoVLAN
			if tt.outerVLAN != 0 || tt.name == "stripped vlan 0 is still a tag" {
				outer = tt.outerVLAN
			}
			if r := p.Decode(tt.frame, outer); r != OK {
				t.Fatalf("Decode: %v", r)
			}
			tt.check(t, &p)
			checkInvariants(t, &p, tt.frame)
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	ipv4TCP := build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp())
	withByte := func(frame []byte, at int, v byte) []byte {
		f := append([]byte(nil), frame...)
		f[at] = v
		return f
	}
	setTotal := func(frame []byte, total uint16) []byte {
		f := append([]byte(nil), frame...)
		binary.BigEndian.PutUint16(f[16:], total)
		return f
	}
	// Nine destination-options headers: one more than the parser follows.
	var longChain []byte
	for i := 0; i < MaxIPv6ExtHeaders+1; i++ {
		longChain = append(longChain, extHeader(ProtoDestOpts, 8)...)
	}
	tests := []struct {
		name  string
		frame []byte
		want  Error
	}{
		{"empty", nil, ErrTruncatedEthernet},
		{"13 bytes", ipv4TCP[:13], ErrTruncatedEthernet},
		{"vlan tag cut", build(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{Type: layers.EthernetTypeIPv4})[:16], ErrTruncatedVLAN},
		{"three tags in the frame", build(t, eth(layers.EthernetTypeQinQ),
			&layers.Dot1Q{VLANIdentifier: 1, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 2, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 3, Type: layers.EthernetTypeIPv4}, ip4(layers.IPProtocolTCP), tcp()), ErrTooManyVLANs},
		{"ipv4 cut", ipv4TCP[:14+19], ErrTruncatedIPv4},
		{"ipv4 options cut", withByte(ipv4TCP[:14+20], 14, 0x46), ErrTruncatedIPv4},
		{"ipv4 version 5", withByte(ipv4TCP, 14, 0x55), ErrBadIPVersion},
		{"ipv4 ihl 4", withByte(ipv4TCP, 14, 0x44), ErrBadIPv4HeaderLength},
		{"ipv4 total below header", setTotal(ipv4TCP, 19), ErrBadIPv4TotalLength},
		{"tcp cut by total length", setTotal(ipv4TCP, 30), ErrTruncatedTCP},
		{"tcp cut by capture", ipv4TCP[:14+20+19], ErrTruncatedTCP},
		{"tcp data offset 4", withByte(ipv4TCP, 14+20+12, 0x40), ErrBadTCPOffset},
		{"tcp data offset past the packet", withByte(ipv4TCP, 14+20+12, 0x60), ErrBadTCPOffset},
		{"udp cut", build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), &layers.UDP{})[:14+20+7], ErrTruncatedUDP},
		{"sctp cut", build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolSCTP), &layers.SCTP{})[:14+20+11], ErrTruncatedSCTP},
		{"icmp cut", setTotal(build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4), &layers.ICMPv4{}), 23), ErrTruncatedICMP},
		{"ipv6 cut", ipv6Frame(t, ProtoTCP, build(t, tcp()))[:14+39], ErrTruncatedIPv6},
		{"ipv6 version 4", withByte(ipv6Frame(t, ProtoTCP, build(t, tcp())), 14, 0x40), ErrBadIPVersion},
		{"ipv6 too many extension headers", ipv6Frame(t, ProtoDestOpts, cat(longChain, build(t, tcp()))), ErrTooManyIPv6Ext},
		{"ipv6 extension header loop", ipv6Frame(t, ProtoHopByHop, func() []byte {
			// Each header names hop-by-hop as the next one; without a bound this would not end
			// before the data does, and with a frame of repeated headers it would run long.
			var b []byte
			for i := 0; i < 64; i++ {
				b = append(b, extHeader(ProtoHopByHop, 8)...)
			}
			return b
		}()), ErrTooManyIPv6Ext},
		{"ipv6 extension header cut by capture", ipv6Frame(t, ProtoDestOpts, extHeader(ProtoTCP, 16))[:14+40+12], ErrTruncatedIPv6Ext},
		{"ipv6 extension header longer than the payload", func() []byte {
			f := ipv6Frame(t, ProtoDestOpts, cat(extHeader(ProtoTCP, 8), build(t, tcp())))
			f[14+40+1] = 200 // the header now claims 1608 bytes
			return f
		}(), ErrTruncatedIPv6Ext},
		{"ipv6 tcp cut", ipv6Frame(t, ProtoTCP, build(t, tcp()))[:14+40+10], ErrTruncatedTCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Packet
			got := p.Decode(tt.frame, NoVLAN)
			if got != tt.want {
				t.Fatalf("Decode = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSnapLengthKeepsWireLengths(t *testing.T) {
	frame := build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(), gopacket.Payload(make([]byte, 1400)))
	var p Packet
	if r := p.Decode(frame[:96], NoVLAN); r != OK {
		t.Fatalf("Decode of a frame cut at 96 bytes: %v", r)
	}
	want(t, "ip bytes", p.IPBytes, 20+20+1400)
	want(t, "payload len", p.PayloadLen, 96-14-40)
	want(t, "payload wire len", p.PayloadWireLen, 1400)

	// Options cut off by the snap length still leave the fixed header readable.
	opt := tcp()
	opt.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 180}},
		{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}}
	frame = build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), opt, gopacket.Payload(make([]byte, 100)))
	if r := p.Decode(frame[:14+20+22], NoVLAN); r != OK {
		t.Fatalf("Decode with TCP options cut: %v", r)
	}
	want(t, "l4 len (what was captured)", p.L4Len, 22)
	want(t, "payload offset", p.PayloadOffset, 14+20+22)
	want(t, "payload len", p.PayloadLen, 0)
	want(t, "payload wire len", p.PayloadWireLen, 100)
}

func TestErrorNames(t *testing.T) {
	seen := map[string]Error{}
	for e := OK; e < NumErrors; e++ {
		n := e.String()
		if n == "" || n == "unknown" {
			t.Errorf("error %d has no name", e)
		}
		if prev, dup := seen[n]; dup {
			t.Errorf("errors %d and %d share the name %q", prev, e, n)
		}
		seen[n] = e
	}
	if NumErrors.String() != "unknown" {
		t.Errorf("an out-of-range error should be named unknown, got %q", NumErrors.String())
	}
}

// TestAgainstGopacket decodes every frame of the shared pcaps with both this parser and
// gopacket's layer decoders, an independent implementation, and compares what both read.
func TestAgainstGopacket(t *testing.T) {
	for _, path := range testpcap.Files(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			var p Packet
			for i, frame := range testpcap.Data(t, path) {
				r := p.Decode(frame, NoVLAN)
				checkInvariants(t, &p, frame)
				g := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: false, NoCopy: true})
				if r != OK {
					t.Errorf("frame %d: Decode = %v", i+1, r)
					continue
				}
				compareGopacket(t, i+1, &p, g)
			}
		})
	}
}

func compareGopacket(t *testing.T, n int, p *Packet, g gopacket.Packet) {
	t.Helper()
	var vlans []uint16
	for _, l := range g.Layers() {
		if d, ok := l.(*layers.Dot1Q); ok {
			vlans = append(vlans, d.VLANIdentifier)
		}
	}
	if got := p.VLANs[:p.NumVLANs]; !equalU16(got, vlans) {
		t.Errorf("frame %d: vlans %v, gopacket %v", n, got, vlans)
	}
	if l, ok := g.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		want(t, "kind", p.Kind, KindIPv4)
		wantAddr(t, n, p.Src, l.SrcIP)
		wantAddr(t, n, p.Dst, l.DstIP)
		want(t, "ip bytes", p.IPBytes, int(l.Length))
		want(t, "frag offset", p.FragOffset, l.FragOffset*8)
		want(t, "frag id", p.FragID, uint32(l.Id))
		want(t, "protocol", p.Protocol, uint8(l.Protocol))
	} else if l, ok := g.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		want(t, "kind", p.Kind, KindIPv6)
		wantAddr(t, n, p.Src, l.SrcIP)
		wantAddr(t, n, p.Dst, l.DstIP)
		want(t, "ip bytes", p.IPBytes, int(l.Length)+40)
		if f, ok := g.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment); ok {
			want(t, "frag offset", p.FragOffset, f.FragmentOffset*8)
			want(t, "frag id", p.FragID, f.Identification)
			want(t, "more fragments", p.MoreFragments, f.MoreFragments)
		}
	} else if g.Layer(layers.LayerTypeARP) != nil {
		want(t, "kind", p.Kind, KindARP)
		return
	} else {
		if p.Kind != KindOther {
			t.Errorf("frame %d: kind %v, gopacket found no IP", n, p.Kind)
		}
		return
	}
	if p.NonFirstFragment() {
		return
	}
	switch l := g.TransportLayer().(type) {
	case *layers.TCP:
		want(t, "protocol", p.Protocol, uint8(ProtoTCP))
		want(t, "tcp ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{uint16(l.SrcPort), uint16(l.DstPort)})
		want(t, "seq/ack", [2]uint32{p.TCPSeq, p.TCPAck}, [2]uint32{l.Seq, l.Ack})
		want(t, "syn", p.TCPFlags&0x02 != 0, l.SYN)
		want(t, "ack flag", p.TCPFlags&0x10 != 0, l.ACK)
		want(t, "fin", p.TCPFlags&0x01 != 0, l.FIN)
		want(t, "rst", p.TCPFlags&0x04 != 0, l.RST)
		want(t, "tcp header len", p.L4Len, int(l.DataOffset)*4)
		if len(l.Payload) != p.PayloadLen {
			t.Errorf("frame %d: tcp payload %d bytes, gopacket %d", n, p.PayloadLen, len(l.Payload))
		}
	case *layers.UDP:
		want(t, "protocol", p.Protocol, uint8(ProtoUDP))
		want(t, "udp ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{uint16(l.SrcPort), uint16(l.DstPort)})
	case *layers.SCTP:
		want(t, "sctp ports", [2]uint16{p.SrcPort, p.DstPort}, [2]uint16{uint16(l.SrcPort), uint16(l.DstPort)})
	}
	if l, ok := g.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		want(t, "icmp type/code", [2]uint8{p.ICMPType, p.ICMPCode}, [2]uint8{l.TypeCode.Type(), l.TypeCode.Code()})
	}
	if l, ok := g.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
		want(t, "protocol", p.Protocol, uint8(ProtoICMPv6))
		want(t, "icmpv6 type/code", [2]uint8{p.ICMPType, p.ICMPCode}, [2]uint8{l.TypeCode.Type(), l.TypeCode.Code()})
	}
}

func wantAddr(t *testing.T, n int, got netip.Addr, ip net.IP) {
	t.Helper()
	w, ok := netip.AddrFromSlice(ip)
	if !ok || got != w.Unmap() && got != w {
		t.Errorf("frame %d: address %v, gopacket %v", n, got, ip)
	}
}

func wantVLANs(t *testing.T, p *Packet, ids ...uint16) {
	t.Helper()
	if got := p.VLANs[:p.NumVLANs]; !equalU16(got, ids) {
		t.Errorf("vlans = %v, want %v", got, ids)
	}
}

func equalU16(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// checkInvariants holds for every decoded packet, good or bad: offsets are inside the frame and
// lengths agree with one another. The fuzz target checks the same.
func checkInvariants(t testing.TB, p *Packet, frame []byte) {
	// Callers use it on packets that decoded; the fuzz target passes the real result.
	t.Helper()
	if msg := invariantViolation(p, frame, OK); msg != "" {
		t.Errorf("invariant broken: %s (packet %+v)", msg, *p)
	}
}

// invariantViolation describes the first broken invariant, or returns "". Offsets must lie in the
// frame whatever the result; how the parts relate is checked only for packets that decoded.
func invariantViolation(p *Packet, frame []byte, r Error) string {
	n := len(frame)
	switch {
	case p.NumVLANs < 0 || p.NumVLANs > MaxVLANs:
		return "vlan count out of range"
	case p.L3Offset < 0 || p.L3Offset > n:
		return "l3 offset outside the frame"
	}
	switch {
	case p.L4Offset < 0 || p.L4Offset > n:
		return "l4 offset outside the frame"
	case p.L4Len < 0 || p.L4Offset+p.L4Len > n:
		return "l4 header outside the frame"
	case p.PayloadOffset < 0 || p.PayloadOffset > n || p.PayloadLen < 0 || p.PayloadOffset+p.PayloadLen > n:
		return "payload outside the frame"
	}
	if r != OK || p.Kind != KindIPv4 && p.Kind != KindIPv6 {
		return ""
	}
	switch {
	case !p.Src.IsValid() || !p.Dst.IsValid():
		return "ip packet without addresses"
	case p.PayloadOffset != p.L4Offset+p.L4Len:
		return "payload does not follow the l4 header"
	case p.PayloadWireLen < 0 || p.PayloadLen > p.PayloadWireLen:
		return "captured payload longer than the wire payload"
	case p.PayloadOffset+p.PayloadLen > p.L3Offset+p.IPBytes:
		return "payload ends after the ip packet"
	case p.L3Offset+p.IPHeaderLen != p.L4Offset:
		return "ip header does not end where l4 begins"
	case (p.IPBytes < p.IPHeaderLen || p.PayloadWireLen > p.IPBytes):
		return "ip bytes smaller than its parts"
	case p.Kind == KindIPv4 && (!p.Src.Is4() || !p.Dst.Is4()):
		return "ipv4 packet with a non-IPv4 address"
	case p.Kind == KindIPv6 && (!p.Src.Is6() || !p.Dst.Is6()):
		return "ipv6 packet with a non-IPv6 address"
	}
	return ""
}
