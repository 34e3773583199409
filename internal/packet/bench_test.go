package packet

import (
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// BenchmarkDecode decodes a typical data segment: VLAN-tagged IPv4 TCP with timestamps and a
// payload cut at a 128-byte snap length.
func BenchmarkDecode(b *testing.B) {
	opt := tcp()
	opt.SYN, opt.PSH = false, true
	opt.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)}}
	frame := build(b, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeIPv4},
		ip4(layers.IPProtocolTCP), opt, gopacket.Payload(make([]byte, 1400)))[:128]
	var p Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if r := p.Decode(frame, NoVLAN); r != OK {
			b.Fatal(r)
		}
	}
}

func TestDecodeAllocatesNothing(t *testing.T) {
	frames := [][]byte{
		build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp()),
		build(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolUDP), &layers.UDP{SrcPort: 1, DstPort: 2}),
		ipv6Frame(t, ProtoHopByHop, cat(extHeader(ProtoTCP, 8), build(t, tcp()))),
		build(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP))[:20], // an error
	}
	var p Packet
	n := testing.AllocsPerRun(200, func() {
		for _, f := range frames {
			p.Decode(f, 3)
		}
	})
	if n != 0 {
		t.Errorf("Decode allocates %v times per round, want 0", n)
	}
}
