package flowtable

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/quanyu/quanyu/internal/packet"
	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/communityid"
)

const ms = time.Millisecond

func TestClientServer(t *testing.T) {
	cli, srv := ap("10.0.0.1:50000"), ap("10.0.0.2:443")
	tests := []struct {
		name       string
		first      func(t *testing.T) []byte
		wantClient netip.AddrPort
	}{
		{"SYN: its sender", func(t *testing.T) []byte { return tcpFrame(t, cli, srv, fSYN, 1, 0, 0) }, cli},
		{"SYN from a low port: still its sender", func(t *testing.T) []byte {
			return tcpFrame(t, ap("10.0.0.2:20"), ap("10.0.0.1:40000"), fSYN, 1, 0, 0)
		}, ap("10.0.0.2:20")},
		{"SYN-ACK first: its receiver", func(t *testing.T) []byte { return tcpFrame(t, srv, cli, fSYN|fACK, 1, 2, 0) }, cli},
		{"mid-stream server packet: the low port is the server", func(t *testing.T) []byte {
			return tcpFrame(t, srv, cli, fACK|fPSH, 100, 200, 50)
		}, cli},
		{"mid-stream, both ports high: the first sender", func(t *testing.T) []byte {
			return tcpFrame(t, ap("10.0.0.2:8443"), ap("10.0.0.1:50000"), fACK, 100, 200, 50)
		}, ap("10.0.0.2:8443")},
		{"udp, both ports low: the first sender", func(t *testing.T) []byte {
			return udpFrame(t, ap("10.0.0.9:53"), ap("10.0.0.1:53"), 20)
		}, ap("10.0.0.9:53")},
		{"udp reply first: the low port is the server", func(t *testing.T) []byte {
			return udpFrame(t, ap("8.8.8.8:53"), ap("10.0.0.1:33333"), 20)
		}, ap("10.0.0.1:33333")},
		{"icmp echo reply first: the first sender (no ports)", func(t *testing.T) []byte {
			return icmpFrame(t, netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1"), 0, 0)
		}, ap("10.0.0.2:0")},
		{"ipv6 SYN", func(t *testing.T) []byte {
			return tcpFrame(t, ap("[2001:db8::9]:40000"), ap("[2001:db8::1]:80"), fSYN, 1, 0, 0)
		}, ap("[2001:db8::9]:40000")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), nil)
			h.add(0, tt.first(t))
			h.tbl.Flush(sdk.EndInput)
			r := h.one()
			if got := netip.AddrPortFrom(r.Client.Addr, r.Client.Port); got != tt.wantClient {
				t.Errorf("client %v, want %v (server %v)", got, tt.wantClient, r.Server)
			}
			if r.ClientToServer.Packets+r.ServerToClient.Packets != 1 {
				t.Errorf("counts %+v / %+v", r.ClientToServer, r.ServerToClient)
			}
		})
	}
}

func TestBothDirectionsOneFlow(t *testing.T) {
	h := newHarness(t, testConfig(), nil)
	cli, srv := ap("192.0.2.10:40000"), ap("198.51.100.1:80")
	h.add(0, tcpFrame(t, cli, srv, fSYN, 100, 0, 0))
	h.add(10*ms, tcpFrame(t, srv, cli, fSYN|fACK, 900, 101, 0))
	h.add(20*ms, tcpFrame(t, cli, srv, fACK, 101, 901, 0))
	h.add(30*ms, tcpFrame(t, cli, srv, fACK|fPSH, 101, 901, 100))
	h.add(40*ms, tcpFrame(t, srv, cli, fACK|fPSH, 901, 201, 1000))
	if h.tbl.Len() != 1 {
		t.Fatalf("%d flows, want 1", h.tbl.Len())
	}
	h.tbl.Flush(sdk.EndShutdown)
	r := h.one()
	want := sdk.Flow{
		NIC: "eth0", IfIndex: 1, Start: base, End: base.Add(40 * ms), Transport: sdk.TransportTCP,
		Client:         sdk.Endpoint{Addr: cli.Addr(), Port: cli.Port()},
		Server:         sdk.Endpoint{Addr: srv.Addr(), Port: srv.Port()},
		ClientToServer: sdk.Counts{Packets: 3, IPBytes: 40 + 40 + 140},
		ServerToClient: sdk.Counts{Packets: 2, IPBytes: 40 + 1040},
		TCPFlags:       sdk.FlagSYN | sdk.FlagACK | sdk.FlagPSH,
		RTT:            20 * ms,
		Final:          true, EndReason: sdk.EndShutdown,
	}
	if !r.Start.Equal(want.Start) || !r.End.Equal(want.End) {
		t.Errorf("start/end %v/%v, want %v/%v", r.Start, r.End, want.Start, want.End)
	}
	if r.NIC != want.NIC || r.IfIndex != want.IfIndex || r.Transport != want.Transport || r.Client != want.Client ||
		r.Server != want.Server || r.ClientToServer != want.ClientToServer || r.ServerToClient != want.ServerToClient ||
		r.TCPFlags != want.TCPFlags || r.RTT != want.RTT || r.Final != want.Final || r.EndReason != want.EndReason || r.Retransmits != 0 {
		t.Errorf("record\n got %+v\nwant %+v", r, want)
	}
	if r.ClientMAC.String() != macClient.String() || r.ServerMAC.String() != macServer.String() {
		t.Errorf("MACs client %v server %v, want %v %v", r.ClientMAC, r.ServerMAC, macClient, macServer)
	}
	cid := communityid.String(communityid.Hash(0, cli.Addr(), srv.Addr(), 6, cli.Port(), srv.Port()))
	if r.CommunityID != cid {
		t.Errorf("community id %s, want %s", r.CommunityID, cid)
	}
	if !slices.Equal(r.Subscriptions, []string{"all"}) {
		t.Errorf("subscriptions %v", r.Subscriptions)
	}
}

func TestRetransmissions(t *testing.T) {
	type seg struct {
		seq     uint32
		payload int
		flags   int
	}
	tests := []struct {
		name string
		segs []seg
		want uint32
	}{
		{"in order", []seg{{1000, 100, fACK}, {1100, 100, fACK}, {1200, 100, fACK}}, 0},
		{"one resent", []seg{{1000, 100, fACK}, {1100, 100, fACK}, {1100, 100, fACK}}, 1},
		{"resent twice and an older one", []seg{{1000, 100, fACK}, {1100, 100, fACK}, {1100, 100, fACK}, {1100, 100, fACK}, {1000, 50, fACK}}, 3},
		{"pure acks are not retransmissions", []seg{{1000, 100, fACK}, {1100, 0, fACK}, {1100, 0, fACK}}, 0},
		{"partly new data is not a retransmission", []seg{{1000, 100, fACK}, {1050, 100, fACK}}, 0},
		{"a gap filled late was not seen before", []seg{{1000, 100, fACK}, {1200, 100, fACK}, {1100, 100, fACK}}, 0},
		{"the filled gap sent again is", []seg{{1000, 100, fACK}, {1200, 100, fACK}, {1100, 100, fACK}, {1100, 100, fACK}}, 1},
		{"a gap filled in two parts", []seg{{1000, 100, fACK}, {1300, 100, fACK}, {1100, 100, fACK}, {1200, 100, fACK}, {1250, 50, fACK}}, 1},
		{"across the sequence wrap", []seg{{0xffffff00, 0x80, fACK}, {0xffffff80, 0x100, fACK}, {0xffffff80, 0x100, fACK}, {0x80, 0x10, fACK}}, 1},
		{"data after the SYN", []seg{{5000, 0, fSYN}, {5001, 100, fACK}, {5001, 100, fACK}}, 1},
		{"SYN resent is not counted (no payload)", []seg{{5000, 0, fSYN}, {5000, 0, fSYN}, {5001, 10, fACK}}, 0},
		{"data with FIN resent", []seg{{1000, 100, fACK | fFIN}, {1000, 100, fACK | fFIN}}, 1},
		{"keep-alive probe below the data", []seg{{1000, 100, fACK}, {1099, 1, fACK}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), nil)
			cli, srv := ap("10.0.0.1:40000"), ap("10.0.0.2:80")
			for i, s := range tt.segs {
				h.add(time.Duration(i)*ms, tcpFrame(t, cli, srv, s.flags, s.seq, 1, s.payload))
				// The same sequence numbers in the other direction are a different space.
				h.add(time.Duration(i)*ms, tcpFrame(t, srv, cli, fACK, 1000+uint32(i)*100, 1, 100))
			}
			h.tbl.Flush(sdk.EndInput)
			if r := h.one(); r.Retransmits != tt.want {
				t.Errorf("retransmits %d, want %d", r.Retransmits, tt.want)
			}
		})
	}
}

func TestRTT(t *testing.T) {
	cli, srv := ap("10.0.0.1:40000"), ap("10.0.0.2:80")
	type pkt struct {
		at       time.Duration
		fromCli  bool
		flags    int
		seq, ack uint32
	}
	tests := []struct {
		name string
		pkts []pkt
		want time.Duration
	}{
		{"handshake", []pkt{{0, true, fSYN, 100, 0}, {15 * ms, false, fSYN | fACK, 900, 101}, {32 * ms, true, fACK, 101, 901}}, 32 * ms},
		{"SYN resent: from the first SYN", []pkt{{0, true, fSYN, 100, 0}, {1000 * ms, true, fSYN, 100, 0}, {1010 * ms, false, fSYN | fACK, 900, 101}, {1020 * ms, true, fACK, 101, 901}}, 1020 * ms},
		{"SYN-ACK captured before the SYN", []pkt{{10 * ms, false, fSYN | fACK, 900, 101}, {0, true, fSYN, 100, 0}, {20 * ms, true, fACK, 101, 901}}, 20 * ms},
		{"ACK of something else does not end it", []pkt{{0, true, fSYN, 100, 0}, {10 * ms, false, fSYN | fACK, 900, 101}, {15 * ms, true, fACK, 101, 555}, {40 * ms, true, fACK, 101, 901}}, 40 * ms},
		{"no SYN seen", []pkt{{10 * ms, false, fSYN | fACK, 900, 101}, {20 * ms, true, fACK, 101, 901}}, 0},
		{"mid-stream", []pkt{{0, true, fACK, 101, 901}, {5 * ms, false, fACK, 901, 101}}, 0},
		{"second handshake does not overwrite", []pkt{{0, true, fSYN, 100, 0}, {10 * ms, false, fSYN | fACK, 900, 101}, {20 * ms, true, fACK, 101, 901},
			{30 * ms, false, fSYN | fACK, 900, 101}, {90 * ms, true, fACK, 101, 901}}, 20 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), nil)
			for _, p := range tt.pkts {
				src, dst := cli, srv
				if !p.fromCli {
					src, dst = srv, cli
				}
				h.add(p.at, tcpFrame(t, src, dst, p.flags, p.seq, p.ack, 0))
			}
			h.tbl.Flush(sdk.EndInput)
			r := h.one()
			if r.RTT != tt.want {
				t.Errorf("rtt %v, want %v", r.RTT, tt.want)
			}
			if !r.Start.Equal(base) && tt.pkts[0].at != 10*ms {
				t.Errorf("start %v, want the earliest packet %v", r.Start, base)
			}
		})
	}
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.MaxFlows = 64
	cfg.IdleTimeout = 30 * time.Second
	cfg.ActiveTimeout = 10 * time.Second
	cfg.Linger = 2 * time.Second
	cfg.FragmentTimeout = 5 * time.Second
	return cfg
}

func TestIdleTimeout(t *testing.T) {
	u1, u2 := ap("10.0.0.1:5000"), ap("10.0.0.2:6000")
	t.Run("tick", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		h.add(0, udpFrame(t, u1, u2, 10))
		h.add(5*time.Second, udpFrame(t, u2, u1, 10))
		h.tick(9 * time.Second)
		for _, r := range h.take() { // the active timeout may report a window; it is not final
			if r.Final {
				t.Fatalf("flow ended before its idle timeout: %+v", r)
			}
		}
		h.tick(34*time.Second + 999*ms)
		for _, r := range h.take() {
			if r.Final {
				t.Fatalf("flow ended 29.999 s after the last packet: %+v", r)
			}
		}
		h.tick(35 * time.Second)
		r := h.one()
		if !r.Final || r.EndReason != sdk.EndIdle {
			t.Errorf("final %v reason %q, want final idle", r.Final, r.EndReason)
		}
		if h.tbl.Len() != 0 {
			t.Errorf("%d flows left", h.tbl.Len())
		}
	})
	t.Run("noticed by the next packet", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		h.add(0, udpFrame(t, u1, u2, 10))
		h.add(31*time.Second, udpFrame(t, u1, u2, 10))
		r := h.one()
		if !r.Final || r.EndReason != sdk.EndIdle || r.ClientToServer.Packets != 1 {
			t.Errorf("old flow: final %v reason %q counts %+v", r.Final, r.EndReason, r.ClientToServer)
		}
		h.tbl.Flush(sdk.EndInput)
		r = h.one()
		if r.ClientToServer.Packets != 1 || !r.Start.Equal(base.Add(31*time.Second)) {
			t.Errorf("new flow: counts %+v start %v", r.ClientToServer, r.Start)
		}
		if got := h.counter("flows.created"); got != 2 {
			t.Errorf("flows.created %d, want 2", got)
		}
	})
}

func TestActiveTimeout(t *testing.T) {
	h := newHarness(t, testConfig(), nil)
	u1, u2 := ap("10.0.0.1:5000"), ap("10.0.0.2:6000")
	// One packet a second for 25 s, a Tick every second after the packet.
	for i := 0; i < 25; i++ {
		at := time.Duration(i) * time.Second
		h.add(at, udpFrame(t, u1, u2, 72)) // 100 IP bytes
		h.tick(at + 500*ms)
	}
	recs := h.take()
	if len(recs) != 2 {
		t.Fatalf("%d window records in 25 s with a 10 s active timeout, want 2", len(recs))
	}
	// Windows: created at 0 s with its deadline at 10 s, reported by the Tick at 10.5 s with the
	// packets of 0..10 s; the next deadline is 20.5 s, reported then with the packets of 11..20 s.
	wantWindows := []struct {
		packets    uint64
		start, end time.Duration
	}{{11, 0, 10 * time.Second}, {10, 11 * time.Second, 20 * time.Second}}
	for i, w := range wantWindows {
		r := recs[i]
		if r.Final || r.ClientToServer.Packets != w.packets || r.ClientToServer.IPBytes != 100*w.packets ||
			!r.Start.Equal(base.Add(w.start)) || !r.End.Equal(base.Add(w.end)) {
			t.Errorf("window %d: final %v, %d packets %d bytes, %v..%v; want %d packets, %v..%v", i, r.Final,
				r.ClientToServer.Packets, r.ClientToServer.IPBytes, r.Start.Sub(base), r.End.Sub(base), w.packets, w.start, w.end)
		}
		if r.CommunityID == "" || r.CommunityID != recs[0].CommunityID {
			t.Errorf("window %d: community id %q", i, r.CommunityID)
		}
	}
	h.tbl.Flush(sdk.EndInput)
	last := h.one()
	if !last.Final || last.ClientToServer.Packets != 4 || !last.Start.Equal(base.Add(21*time.Second)) {
		t.Errorf("last window: final %v, %d packets, start %v", last.Final, last.ClientToServer.Packets, last.Start.Sub(base))
	}

	t.Run("reported by Tick only", func(t *testing.T) {
		// Packets past the deadline still count in the window until the next Tick closes it.
		h := newHarness(t, testConfig(), nil)
		h.add(0, udpFrame(t, u1, u2, 10))
		h.add(10*time.Second, udpFrame(t, u1, u2, 10))
		if n := len(h.take()); n != 0 {
			t.Fatalf("%d records without a Tick", n)
		}
		h.tick(10500 * ms)
		r := h.one()
		if r.Final || r.ClientToServer.Packets != 2 {
			t.Errorf("window record: final %v counts %+v", r.Final, r.ClientToServer)
		}
		h.add(11*time.Second, udpFrame(t, u1, u2, 10))
		h.tbl.Flush(sdk.EndInput)
		if r := h.one(); r.ClientToServer.Packets != 1 || !r.Final || !r.Start.Equal(base.Add(11*time.Second)) {
			t.Errorf("final record: %+v", r)
		}
	})
	t.Run("an empty window reports nothing", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		h.add(0, udpFrame(t, u1, u2, 10))
		h.tick(10 * time.Second)
		h.one()
		h.tick(20 * time.Second)
		if n := len(h.take()); n != 0 {
			t.Errorf("%d records for a window without packets", n)
		}
		h.tick(30 * time.Second)
		r := h.one()
		if !r.Final || r.EndReason != sdk.EndIdle || r.ClientToServer.Packets != 0 || !r.Start.Equal(base) || !r.End.Equal(base) {
			t.Errorf("final record after an empty window: %+v", r)
		}
	})
}

func TestTCPClose(t *testing.T) {
	cli, srv := ap("10.0.0.1:40000"), ap("10.0.0.2:80")
	open := func(h *harness) {
		h.add(0, tcpFrame(t, cli, srv, fSYN, 100, 0, 0))
		h.add(10*ms, tcpFrame(t, srv, cli, fSYN|fACK, 900, 101, 0))
		h.add(20*ms, tcpFrame(t, cli, srv, fACK, 101, 901, 0))
	}
	t.Run("fin both ways, last ack within the linger time", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		open(h)
		h.add(1*time.Second, tcpFrame(t, cli, srv, fFIN|fACK, 101, 901, 0))
		h.add(1100*ms, tcpFrame(t, srv, cli, fFIN|fACK, 901, 102, 0))
		h.tick(1500 * ms)
		h.add(1600*ms, tcpFrame(t, cli, srv, fACK, 102, 902, 0))
		h.tick(3099 * ms)
		if n := len(h.take()); n != 0 {
			t.Fatalf("%d records before the linger time is over", n)
		}
		h.tick(3100 * ms)
		r := h.one()
		if !r.Final || r.EndReason != sdk.EndFIN || r.ClientToServer.Packets != 4 || r.ServerToClient.Packets != 2 {
			t.Errorf("final %v reason %q counts %+v / %+v", r.Final, r.EndReason, r.ClientToServer, r.ServerToClient)
		}
	})
	t.Run("fin one way only stays open", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		open(h)
		h.add(1*time.Second, tcpFrame(t, cli, srv, fFIN|fACK, 101, 901, 0))
		h.tick(5 * time.Second)
		if n := len(h.take()); n != 0 {
			t.Fatalf("%d records for a half-closed flow", n)
		}
	})
	t.Run("rst, repeated rst collected", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		open(h)
		h.add(1*time.Second, tcpFrame(t, srv, cli, fRST, 901, 0, 0))
		h.add(1200*ms, tcpFrame(t, srv, cli, fRST, 901, 0, 0))
		h.tick(3200 * ms)
		r := h.one()
		if r.EndReason != sdk.EndRST || r.ServerToClient.Packets != 3 || r.TCPFlags&sdk.FlagRST == 0 {
			t.Errorf("reason %q, server packets %d, flags %v", r.EndReason, r.ServerToClient.Packets, r.TCPFlags.Names())
		}
	})
	t.Run("new SYN on a closed flow starts a new one", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		open(h)
		h.add(1*time.Second, tcpFrame(t, cli, srv, fRST|fACK, 101, 901, 0))
		h.add(1500*ms, tcpFrame(t, cli, srv, fSYN, 5000, 0, 0))
		r := h.one()
		if !r.Final || r.EndReason != sdk.EndRST || r.ClientToServer.Packets != 3 {
			t.Errorf("old flow: %+v", r)
		}
		h.add(1510*ms, tcpFrame(t, srv, cli, fSYN|fACK, 7000, 5001, 0))
		h.add(1530*ms, tcpFrame(t, cli, srv, fACK, 5001, 7001, 0))
		h.tbl.Flush(sdk.EndInput)
		r = h.one()
		if r.ClientToServer.Packets != 2 || r.ServerToClient.Packets != 1 || r.RTT != 30*ms || !r.Start.Equal(base.Add(1500*ms)) {
			t.Errorf("new flow: counts %+v/%+v rtt %v start %v", r.ClientToServer, r.ServerToClient, r.RTT, r.Start.Sub(base))
		}
	})
	t.Run("a packet after the linger time starts a new flow", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		open(h)
		h.add(1*time.Second, tcpFrame(t, cli, srv, fRST, 101, 0, 0))
		h.add(4*time.Second, tcpFrame(t, srv, cli, fACK, 901, 101, 0))
		r := h.one()
		if r.EndReason != sdk.EndRST {
			t.Errorf("old flow reason %q", r.EndReason)
		}
		if h.tbl.Len() != 1 {
			t.Errorf("%d flows, want the new one", h.tbl.Len())
		}
	})
}

func TestFragments(t *testing.T) {
	src, dst := ap("192.0.2.1:5353"), ap("192.0.2.2:53")
	t.Run("ipv4 in order", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		frags := udpFragments(t, src, dst, 4242, 3000, 1480)
		if len(frags) != 3 {
			t.Fatalf("%d fragments", len(frags))
		}
		var bytes uint64
		for i, f := range frags {
			h.add(time.Duration(i)*ms, f)
			var p packet.Packet
			p.Decode(f, packet.NoVLAN)
			bytes += uint64(p.IPBytes)
		}
		h.tbl.Flush(sdk.EndInput)
		r := h.one()
		if r.Client.Port != 5353 || r.Server.Port != 53 || r.ClientToServer.Packets != 3 || r.ClientToServer.IPBytes != bytes {
			t.Errorf("%v -> %v, %+v; want ports 5353 -> 53, 3 packets, %d bytes", r.Client, r.Server, r.ClientToServer, bytes)
		}
		if bytes != 3000+8+3*20 {
			t.Errorf("fragments carry %d IP bytes, want %d", bytes, 3000+8+3*20)
		}
		if got := h.counter("fragment.orphan"); got != 0 {
			t.Errorf("fragment.orphan %d", got)
		}
	})
	t.Run("ipv6 in order", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		s6, d6 := ap("[2001:db8::1]:5353"), ap("[2001:db8::2]:53")
		for i, f := range udp6Fragments(t, s6, d6, 99, 3000, 1448) {
			h.add(time.Duration(i)*ms, f)
		}
		h.tbl.Flush(sdk.EndInput)
		r := h.one()
		if r.Client.Port != 5353 || r.Server.Port != 53 || r.ClientToServer.Packets != 3 {
			t.Errorf("%v -> %v, %+v", r.Client, r.Server, r.ClientToServer)
		}
	})
	t.Run("orphan", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		frags := udpFragments(t, src, dst, 4242, 3000, 1480)
		h.add(0, frags[1])
		h.add(1*ms, frags[2])
		h.tbl.Flush(sdk.EndInput)
		r := h.one()
		if r.Client.Port != 0 || r.Server.Port != 0 || r.Transport != sdk.TransportUDP || r.ClientToServer.Packets != 2 {
			t.Errorf("%v %v -> %v, %+v; want UDP with ports 0, 2 packets", r.Transport, r.Client, r.Server, r.ClientToServer)
		}
		if got := h.counter("fragment.orphan"); got != 2 {
			t.Errorf("fragment.orphan %d, want 2", got)
		}
	})
	t.Run("first fragment expired", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		frags := udpFragments(t, src, dst, 4242, 3000, 1480)
		h.add(0, frags[0])
		h.add(5*time.Second, frags[1]) // the fragment timeout is 5 s
		if got := h.counter("fragment.orphan"); got != 1 {
			t.Errorf("fragment.orphan %d, want 1", got)
		}
	})
	t.Run("same id from another source is another datagram", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil)
		frags := udpFragments(t, src, dst, 4242, 3000, 1480)
		other := udpFragments(t, ap("192.0.2.3:5353"), dst, 4242, 3000, 1480)
		h.add(0, frags[0])
		h.add(1*ms, other[1])
		if got := h.counter("fragment.orphan"); got != 1 {
			t.Errorf("fragment.orphan %d, want 1", got)
		}
	})
	t.Run("bounded: a full table drops the oldest datagram", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxFragments = 4 // one set of four
		h := newHarness(t, cfg, nil)
		var all [][][]byte
		for id := uint16(1); id <= 5; id++ {
			f := udpFragments(t, src, dst, id, 3000, 1480)
			all = append(all, f)
			h.add(time.Duration(id)*ms, f[0])
		}
		if got := h.counter("fragment.evicted"); got != 1 {
			t.Errorf("fragment.evicted %d, want 1", got)
		}
		h.add(10*ms, all[0][1]) // datagram 1 was dropped to make room for 5
		h.add(11*ms, all[4][1])
		if got := h.counter("fragment.orphan"); got != 1 {
			t.Errorf("fragment.orphan %d, want 1", got)
		}
	})
}

func TestEviction(t *testing.T) {
	cfg := testConfig()
	cfg.MaxFlows = 3
	h := newHarness(t, cfg, nil)
	flow := func(i int) []byte {
		return udpFrame(t, ap("10.0.0.1:1100"), netip.AddrPortFrom(netip.MustParseAddr("10.0.1.1"), uint16(2000+i)), 10)
	}
	h.add(0, flow(1))
	h.add(1*ms, flow(2))
	h.add(2*ms, flow(3))
	h.add(3*ms, flow(1)) // flow 2 is now the one idle the longest
	h.add(4*ms, flow(4))
	r := h.one()
	if !r.Final || r.EndReason != sdk.EndEvicted || r.Server.Port != 2002 {
		t.Errorf("evicted %v reason %q, want the flow to port 2002, evicted", r.Server, r.EndReason)
	}
	if got := h.counter("flow_table.evicted"); got != 1 {
		t.Errorf("flow_table.evicted %d, want 1", got)
	}
	if h.tbl.Len() != 3 {
		t.Errorf("%d flows, want 3", h.tbl.Len())
	}
	h.tbl.Flush(sdk.EndInput)
	var ports []uint16
	for _, r := range h.take() {
		ports = append(ports, r.Server.Port)
	}
	// Flush reports by start time: flow 1 (0 ms), flow 3 (2 ms), flow 4 (4 ms).
	if !slices.Equal(ports, []uint16{2001, 2003, 2004}) {
		t.Errorf("flush order %v, want [2001 2003 2004]", ports)
	}
}

func TestEvictionOfClosedFlows(t *testing.T) {
	// When every flow has closed and waits out its linger time, the one closed first makes room.
	cfg := testConfig()
	cfg.MaxFlows = 2
	h := newHarness(t, cfg, nil)
	for i, port := range []uint16{40001, 40002} {
		cli := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)
		h.add(time.Duration(i)*ms, tcpFrame(t, cli, ap("10.0.0.2:80"), fRST, 1, 0, 0))
	}
	h.add(5*ms, udpFrame(t, ap("10.0.0.1:5000"), ap("10.0.0.2:53"), 10))
	r := h.one()
	if r.EndReason != sdk.EndEvicted || r.Client.Port != 40001 {
		t.Errorf("evicted %v with reason %q, want the flow from port 40001, evicted", r.Client, r.EndReason)
	}
}

func mustSubs(t *testing.T, doc string) *sdk.Matcher {
	t.Helper()
	subs, err := sdk.ParseSubscriptions([]byte(doc))
	if err != nil {
		t.Fatalf("parsing subscriptions: %v", err)
	}
	return sdk.NewMatcher(subs)
}

func TestSubscriptions(t *testing.T) {
	m := mustSubs(t, `[{"id":"web","spec":{"L4":[80]}},{"id":"dns","spec":{"L4":[53]}},{"id":"lan","spec":{"L3Match":["10.0.0.0/8"]}}]`)
	h := newHarness(t, testConfig(), m)
	web := tcpFrame(t, ap("192.0.2.1:40000"), ap("192.0.2.2:80"), fSYN, 1, 0, 0)
	dns := udpFrame(t, ap("192.0.2.1:5353"), ap("192.0.2.2:53"), 30)
	ssh := tcpFrame(t, ap("192.0.2.1:40001"), ap("192.0.2.2:22"), fSYN, 1, 0, 0)
	lanWeb := tcpFrame(t, ap("10.1.1.1:40002"), ap("10.2.2.2:80"), fSYN, 1, 0, 0)
	h.add(0, web)
	h.add(1*ms, dns)
	h.add(2*ms, ssh)
	h.add(3*ms, ssh)
	h.add(4*ms, lanWeb)
	if got := h.counter("filtered"); got != 2 {
		t.Errorf("filtered %d, want 2 (the ssh packets)", got)
	}
	if h.tbl.Len() != 3 {
		t.Fatalf("%d flows, want 3", h.tbl.Len())
	}

	// The new set drops "web", keeps "dns" (now second) and adds "ssh".
	if err := h.tbl.SetMatcher(mustSubs(t, `[{"id":"ssh","spec":{"L4":[22]}},{"id":"dns","spec":{"L4":[53]}},{"id":"lan","spec":{"L3Match":["10.0.0.0/8"]}}]`)); err != nil {
		t.Fatal(err)
	}
	r := h.one()
	if !r.Final || r.EndReason != sdk.EndUnsubscribed || r.Server.Port != 80 || !slices.Equal(r.Subscriptions, []string{"web"}) {
		t.Errorf("unsubscribed record: final %v reason %q server %v subs %v", r.Final, r.EndReason, r.Server, r.Subscriptions)
	}
	h.add(5*ms, dns)
	h.add(6*ms, ssh) // tracked now
	h.add(7*ms, web) // a new flow, filtered: nothing covers port 80 outside 10/8
	if got := h.counter("filtered"); got != 3 {
		t.Errorf("filtered %d, want 3", got)
	}
	h.tbl.Flush(sdk.EndInput)
	got := map[uint16]sdk.Flow{}
	for _, r := range h.take() {
		got[r.Server.Port] = r
	}
	if r := got[53]; r.ClientToServer.Packets != 2 || !slices.Equal(r.Subscriptions, []string{"dns"}) {
		t.Errorf("dns flow: %d packets, subs %v; want its counts kept and the new ids", r.ClientToServer.Packets, r.Subscriptions)
	}
	if r := got[80]; r.Client.Addr != netip.MustParseAddr("10.1.1.1") || !slices.Equal(r.Subscriptions, []string{"lan"}) {
		t.Errorf("lan web flow: %v subs %v", r.Client, r.Subscriptions)
	}
	if r := got[22]; r.ClientToServer.Packets != 1 || !slices.Equal(r.Subscriptions, []string{"ssh"}) {
		t.Errorf("ssh flow: %d packets, subs %v", r.ClientToServer.Packets, r.Subscriptions)
	}
	if err := h.tbl.SetMatcher(nil); err == nil {
		t.Error("SetMatcher(nil) accepted")
	}
}

func TestSubscriptionsOnFragments(t *testing.T) {
	// A port subscription decides on the first fragment; an orphan fragment has no ports, so only
	// the port-less conditions apply to it (PortsUnknown).
	m := mustSubs(t, `[{"id":"dns","spec":{"L4":[53],"L3Match":["192.0.2.0/24"]}}]`)
	h := newHarness(t, testConfig(), m)
	frags := udpFragments(t, ap("192.0.2.1:5353"), ap("192.0.2.2:53"), 1, 3000, 1480)
	h.add(0, frags[2]) // orphan
	h.add(1*ms, frags[0])
	h.add(2*ms, frags[1])
	h.tbl.Flush(sdk.EndInput)
	recs := h.take()
	if len(recs) != 2 {
		t.Fatalf("%d records, want the orphan and the datagram", len(recs))
	}
	if recs[0].Server.Port != 0 || recs[1].Server.Port != 53 || recs[1].ClientToServer.Packets != 2 {
		t.Errorf("records %v / %v", recs[0], recs[1])
	}
}

func TestL2FromFirstPacket(t *testing.T) {
	h := newHarness(t, testConfig(), nil)
	cli, srv := ap("10.0.0.1:40000"), ap("10.0.0.2:80")
	// The server's packet comes first (mid-stream); AF_PACKET stripped VLAN 7 from it.
	h.tbl.AddFrame(3, "eth1", base, tcpFrame(t, srv, cli, fACK, 1, 1, 10), 7)
	h.tbl.AddFrame(3, "eth1", base.Add(ms), tcpFrame(t, cli, srv, fACK, 1, 11, 0), 8)
	h.tbl.Flush(sdk.EndInput)
	r := h.one()
	if !slices.Equal(r.VLAN, []uint16{7}) || r.NIC != "eth1" || r.IfIndex != 3 {
		t.Errorf("vlan %v nic %q ifindex %d", r.VLAN, r.NIC, r.IfIndex)
	}
	if r.ClientMAC.String() != macClient.String() || r.ServerMAC.String() != macServer.String() {
		t.Errorf("client MAC %v server MAC %v", r.ClientMAC, r.ServerMAC)
	}
	// The same conversation on another interface is another flow.
	h.tbl.AddFrame(3, "eth1", base, tcpFrame(t, srv, cli, fACK, 1, 1, 10), packet.NoVLAN)
	h.tbl.AddFrame(4, "eth2", base, tcpFrame(t, srv, cli, fACK, 1, 1, 10), packet.NoVLAN)
	if h.tbl.Len() != 2 {
		t.Errorf("%d flows for two interfaces", h.tbl.Len())
	}
}

func TestICMPCommunityID(t *testing.T) {
	a, b := netip.MustParseAddr("192.168.0.89"), netip.MustParseAddr("192.168.0.1")
	tests := []struct {
		name  string
		first []byte
		want  [20]byte
	}{
		{"echo", icmpFrame(t, a, b, 8, 0), communityid.ICMPHash(0, a, b, 1, 8, 0)},
		{"unreachable keeps its direction", icmpFrame(t, b, a, 3, 1), communityid.ICMPHash(0, b, a, 1, 3, 1)},
		{"icmpv6 echo", icmpFrame(t, netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::1"), 128, 0),
			communityid.ICMPHash(0, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), 58, 129, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), nil)
			h.add(0, tt.first)
			h.tbl.Flush(sdk.EndInput)
			if r := h.one(); r.CommunityID != communityid.String(tt.want) {
				t.Errorf("community id %s, want %s", r.CommunityID, communityid.String(tt.want))
			}
		})
	}
}

func TestCounters(t *testing.T) {
	h := newHarness(t, testConfig(), nil)
	good := udpFrame(t, ap("10.0.0.1:1"), ap("10.0.0.2:2"), 10)
	h.add(0, good)
	h.add(0, good[:20])                              // truncated IPv4
	h.add(0, append(good[:12:12], 0x88, 0xcc, 0, 0)) // LLDP
	arp := append([]byte(nil), good...)
	arp[12], arp[13] = 0x08, 0x06
	h.add(0, arp)
	c := h.tbl.Counters()
	want := map[string]uint64{"frames": 4, "packets": 1, "ip_bytes": 38, "arp": 1, "non_ip": 1,
		"parse_error.truncated_ipv4": 1, "flows.created": 1, "filtered": 0, "records": 0}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("%s = %d, want %d", k, c[k], v)
		}
	}
	for k := range c {
		if strings.ContainsAny(k, " A-Z") {
			t.Errorf("counter name %q is not lower-case dotted", k)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"max flows", func(c *Config) { c.MaxFlows = 0 }, "max_flows"},
		{"max fragments", func(c *Config) { c.MaxFragments = -1 }, "max_fragments"},
		{"idle", func(c *Config) { c.IdleTimeout = 0 }, "idle_timeout"},
		{"active", func(c *Config) { c.ActiveTimeout = -time.Second }, "active_timeout"},
		{"linger", func(c *Config) { c.Linger = -1 }, "linger"},
		{"fragment timeout", func(c *Config) { c.FragmentTimeout = 0 }, "fragment_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			_, err := New(cfg, matchAll(), func(sdk.Flow) {})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
	if _, err := New(DefaultConfig(), nil, func(sdk.Flow) {}); err == nil {
		t.Error("New without a matcher accepted")
	}
}

// TestIndex checks the open-addressing index against a Go map through random inserts and
// removals, including long probe runs (a small index and colliding hashes).
func TestIndex(t *testing.T) {
	const slots = 64
	flows := make([]flow, slots)
	cold := make([]flowCold, slots)
	x := newIndex(slots)
	model := map[flowKey]int32{}
	free := make([]int32, 0, slots)
	for i := slots - 1; i >= 0; i-- {
		free = append(free, int32(i))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	keyOf := func(n int) flowKey { return flowKey{a0: uint64(n), pa: uint16(n)} }
	// Few distinct hashes (long probe runs), and the same tag bits for all (so that the slab
	// comparison decides).
	hashOf := func(k flowKey) uint32 { return uint32(k.a0%7)*3 | 5<<slotBits }
	for step := 0; step < 20000; step++ {
		k := keyOf(rng.IntN(200))
		s, present := model[k]
		if present && rng.IntN(2) == 0 {
			x.remove(hashOf(k), s, cold)
			delete(model, k)
			free = append(free, s)
		} else if !present && len(free) > 0 {
			s = free[len(free)-1]
			free = free[:len(free)-1]
			flows[s] = flow{a0: k.a0, pa: k.pa}
			cold[s].hash = hashOf(k)
			x.insert(hashOf(k), s)
			model[k] = s
		}
		if step%97 == 0 {
			for n := 0; n < 200; n++ {
				k := keyOf(n)
				want, ok := model[k]
				if !ok {
					want = -1
				}
				if got := x.find(flows, &k, hashOf(k)); got != want {
					t.Fatalf("step %d: find(%d) = %d, want %d", step, n, got, want)
				}
			}
		}
	}
}

// TestAllocations: the packet path allocates nothing, for packets of existing flows and for new
// flows, once the table is built.
func TestAllocations(t *testing.T) {
	const n = 1000
	cfg := testConfig()
	cfg.MaxFlows = 4 * n
	h := newHarness(t, cfg, nil)
	var frames [][]byte
	for i := 0; i < n; i++ {
		frames = append(frames, tcpFrame(t, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(10000+i)), ap("10.0.0.2:443"), fACK|fPSH, uint32(i), 1, 100))
	}
	for i := 0; i < n; i++ {
		frames = append(frames, udpFrame(t, netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1"), uint16(10000+i)), ap("[2001:db8::2]:53"), 40))
	}
	round := 0
	allocs := testing.AllocsPerRun(3, func() {
		at := base.Add(time.Duration(round) * ms)
		round++
		for _, f := range frames {
			h.tbl.AddFrame(1, "eth0", at, f, packet.NoVLAN)
		}
	})
	// AllocsPerRun runs once to warm up: every round after the first sees existing flows, the
	// first creates 2000; the average over the measured rounds must be 0 either way, so check
	// creation separately too.
	if allocs != 0 {
		t.Errorf("%v allocations per %d packets of existing flows", allocs, len(frames))
	}
	h2 := newHarness(t, cfg, nil)
	i := 0
	allocs = testing.AllocsPerRun(1000, func() {
		f := frames[i%len(frames)]
		i++
		h2.tbl.AddFrame(1, "eth0", base, f, packet.NoVLAN)
	})
	if allocs != 0 || h2.counter("flows.created") < 1000 {
		t.Errorf("%v allocations per new flow (%d created)", allocs, h2.counter("flows.created"))
	}
	if len(h.recs)+len(h2.recs) != 0 {
		t.Errorf("records emitted during the allocation test")
	}
}

// TestHotLayout keeps the per-packet part of a flow at two cache lines (see flow).
func TestHotLayout(t *testing.T) {
	if n := unsafe.Sizeof(flow{}); n != 128 {
		t.Errorf("flow is %d bytes; the packet path is laid out for 128 (two cache lines)", n)
	}
	if off := unsafe.Offsetof(flow{}.dir); off != 64 {
		t.Errorf("dir starts at byte %d, want 64 (the second line)", off)
	}
	if n := unsafe.Sizeof(flowCold{}); n != 128 {
		t.Errorf("flowCold is %d bytes; creation and records are laid out for 128 (two cache lines)", n)
	}
}

// TestKeyOf compares keyOf, which reads the frame, with a key built from the decoded netip
// addresses in the most direct way.
func TestKeyOf(t *testing.T) {
	for _, f := range [][]byte{
		udpFrame(t, ap("192.0.2.1:1"), ap("198.51.100.2:2"), 1),
		udpFrame(t, ap("198.51.100.2:2"), ap("192.0.2.1:1"), 1),
		udpFrame(t, ap("192.0.2.1:9"), ap("192.0.2.1:8"), 1),
		udpFrame(t, ap("[2001:db8::1]:1"), ap("[ff02::1:ff00:2]:2"), 1),
		udpFrame(t, ap("[2001:db8::2]:1"), ap("[2001:db8::1]:2"), 1),
		udpFrame(t, ap("[2001:db9::1]:1"), ap("[2001:db8::1:0]:2"), 1),
	} {
		var p packet.Packet
		if r := p.Decode(f, packet.NoVLAN); r != packet.OK {
			t.Fatal(r)
		}
		var got flowKey
		fromA := keyOf(&got, f, &p, 7, p.SrcPort, p.DstPort)
		src, dst := endpointOf(p.Src, p.SrcPort), endpointOf(p.Dst, p.DstPort)
		wantFromA := [3]uint64{src.hi, src.lo, uint64(src.port)} == [3]uint64{dst.hi, dst.lo, uint64(dst.port)} ||
			slices.Compare([]uint64{src.hi, src.lo, uint64(src.port)}, []uint64{dst.hi, dst.lo, uint64(dst.port)}) < 0
		a, b := src, dst
		if !wantFromA {
			a, b = dst, src
		}
		want := flowKey{a0: a.hi, a1: a.lo, b0: b.hi, b1: b.lo, pa: a.port, pb: b.port, ifindex: 7,
			proto: p.Protocol, v6: p.Src.Is6()}
		if got != want || fromA != wantFromA {
			t.Errorf("%v -> %v: key %+v fromA %v, want %+v %v", p.Src, p.Dst, got, fromA, want, wantFromA)
		}
		if keyAddr(got.a0, got.a1, got.v6) != a.addr(p.Src.Is6()) {
			t.Errorf("address a does not round-trip: %v", keyAddr(got.a0, got.a1, got.v6))
		}
	}
}

func (e endpoint) addr(v6 bool) netip.Addr { return keyAddr(e.hi, e.lo, v6) }
