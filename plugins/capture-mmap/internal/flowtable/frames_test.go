package flowtable

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/quanyu/quanyu/internal/packet"
	"github.com/quanyu/quanyu/sdk"
)

// Test frames are built with gopacket's serialisers, independent of the parser under test.

var (
	macClient = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	macServer = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		tb.Fatalf("building a test frame: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ipLayers gives Ethernet and IP layers from src to dst; MACs follow the addresses' order so that
// a test can tell which side a MAC was taken from.
func ipLayers(src, dst netip.Addr, proto layers.IPProtocol) []gopacket.SerializableLayer {
	sm, dm := macClient, macServer
	if dst.Less(src) {
		sm, dm = dm, sm
	}
	if src.Is4() {
		return []gopacket.SerializableLayer{
			&layers.Ethernet{SrcMAC: sm, DstMAC: dm, EthernetType: layers.EthernetTypeIPv4},
			&layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()},
		}
	}
	return []gopacket.SerializableLayer{
		&layers.Ethernet{SrcMAC: sm, DstMAC: dm, EthernetType: layers.EthernetTypeIPv6},
		&layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()},
	}
}

// TCP flag sets for tcpFrame.
const (
	fSYN = 1 << iota
	fACK
	fFIN
	fRST
	fPSH
)

func tcpFrame(tb testing.TB, src, dst netip.AddrPort, flags int, seq, ack uint32, payload int) []byte {
	tb.Helper()
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Ack: ack,
		SYN: flags&fSYN != 0, ACK: flags&fACK != 0, FIN: flags&fFIN != 0, RST: flags&fRST != 0, PSH: flags&fPSH != 0, Window: 1024}
	ls := append(ipLayers(src.Addr(), dst.Addr(), layers.IPProtocolTCP), tcp, gopacket.Payload(make([]byte, payload)))
	return serialize(tb, ls...)
}

func udpFrame(tb testing.TB, src, dst netip.AddrPort, payload int) []byte {
	tb.Helper()
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	return serialize(tb, append(ipLayers(src.Addr(), dst.Addr(), layers.IPProtocolUDP), udp, gopacket.Payload(make([]byte, payload)))...)
}

func icmpFrame(tb testing.TB, src, dst netip.Addr, typ, code uint8) []byte {
	tb.Helper()
	if src.Is4() {
		return serialize(tb, append(ipLayers(src, dst, layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}, gopacket.Payload(make([]byte, 32)))...)
	}
	return serialize(tb, append(ipLayers(src, dst, layers.IPProtocolICMPv6),
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}, gopacket.Payload(make([]byte, 32)))...)
}

// udpFragments splits one UDP datagram of the given payload size into IPv4 fragments of at most
// fragSize data bytes each (a multiple of 8), as a sender would.
func udpFragments(tb testing.TB, src, dst netip.AddrPort, id uint16, payload, fragSize int) [][]byte {
	tb.Helper()
	udp := serialize(tb, &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())},
		gopacket.Payload(make([]byte, payload)))
	var frames [][]byte
	for off := 0; off < len(udp); off += fragSize {
		end := min(off+fragSize, len(udp))
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(),
			DstIP: dst.Addr().AsSlice(), Id: id, FragOffset: uint16(off / 8)}
		if end < len(udp) {
			ip.Flags = layers.IPv4MoreFragments
		}
		frames = append(frames, serialize(tb, &layers.Ethernet{SrcMAC: macClient, DstMAC: macServer, EthernetType: layers.EthernetTypeIPv4},
			ip, gopacket.Payload(udp[off:end])))
	}
	return frames
}

// udp6Fragments is udpFragments for IPv6, with a fragment extension header.
func udp6Fragments(tb testing.TB, src, dst netip.AddrPort, id uint32, payload, fragSize int) [][]byte {
	tb.Helper()
	udp := serialize(tb, &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())},
		gopacket.Payload(make([]byte, payload)))
	var frames [][]byte
	for off := 0; off < len(udp); off += fragSize {
		end := min(off+fragSize, len(udp))
		fh := []byte{uint8(layers.IPProtocolUDP), 0, byte(off >> 8), byte(off) &^ 7, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
		if end < len(udp) {
			fh[3] |= 1
		}
		frames = append(frames, serialize(tb, &layers.Ethernet{SrcMAC: macClient, DstMAC: macServer, EthernetType: layers.EthernetTypeIPv6},
			&layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()},
			gopacket.Payload(append(fh, udp[off:end]...))))
	}
	return frames
}

// harness drives a table with an injected clock: times are offsets from a fixed base.
type harness struct {
	t    *testing.T
	tbl  *Table
	recs []sdk.Flow
}

var base = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func newHarness(t *testing.T, cfg Config, m *sdk.Matcher) *harness {
	t.Helper()
	h := &harness{t: t}
	if m == nil {
		m = matchAll()
	}
	tbl, err := New(cfg, m, func(f sdk.Flow) { h.recs = append(h.recs, f) })
	if err != nil {
		t.Fatal(err)
	}
	h.tbl = tbl
	return h
}

func (h *harness) add(at time.Duration, frame []byte) {
	h.t.Helper()
	h.tbl.AddFrame(1, "eth0", base.Add(at), frame, packet.NoVLAN)
}

func (h *harness) tick(at time.Duration) { h.tbl.Tick(base.Add(at)) }

// take returns the records emitted so far and forgets them.
func (h *harness) take() []sdk.Flow {
	r := h.recs
	h.recs = nil
	return r
}

func (h *harness) one() sdk.Flow {
	h.t.Helper()
	r := h.take()
	if len(r) != 1 {
		h.t.Fatalf("want one record, got %d: %+v", len(r), r)
	}
	return r[0]
}

func (h *harness) counter(name string) uint64 {
	h.t.Helper()
	c := h.tbl.Counters()
	v, ok := c[name]
	if !ok {
		h.t.Fatalf("no counter %q", name)
	}
	return v
}
