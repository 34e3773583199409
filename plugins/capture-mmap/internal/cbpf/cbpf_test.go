package cbpf

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"

	"github.com/quanyu/quanyu/internal/testframes"
	"github.com/quanyu/quanyu/sdk"
)

var seedFlag = flag.Uint64("seed", 0, "seed for the random tests (0: from the clock)")

func testSeed(t testing.TB) uint64 {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random seed: %d (rerun with -seed=%d)", seed, seed)
		}
	})
	return seed
}

// newVM loads a program into the x/net/bpf interpreter, which behaves as the kernel does on an
// out-of-bounds load: the program stops and returns 0.
func newVM(t testing.TB, p Program) *bpf.VM {
	t.Helper()
	insns := make([]bpf.Instruction, len(p.Instructions))
	for i, ri := range p.Instructions {
		insns[i] = ri.Disassemble()
		if _, raw := insns[i].(bpf.RawInstruction); raw {
			t.Fatalf("instruction %d (%#v) is not one x/net/bpf understands", i, ri)
		}
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("loading the program into the VM: %v\n%v", err, p)
	}
	return vm
}

func runVM(t testing.TB, vm *bpf.VM, frame []byte) uint32 {
	t.Helper()
	n, err := vm.Run(frame)
	if err != nil {
		t.Fatalf("running the VM: %v", err)
	}
	return uint32(n)
}

// want is what the filter should return for a frame, from the test's reading of the frame and
// the reference matcher.
func want(m *sdk.Matcher, p Program, snap uint32, nic string, frame []byte) (uint32, verdict, sdk.PacketMeta) {
	v, meta := readFrame(frame)
	meta.NIC = nic
	if len(p.Subscriptions) == 0 {
		return 0, v, meta
	}
	switch v {
	case mustAccept:
		return snap, v, meta
	case decide:
		if m.Match(&meta) != 0 {
			return snap, v, meta
		}
	}
	return 0, v, meta
}

func setJSON(subs []sdk.Subscription) string {
	b, err := json.Marshal(subs)
	if err != nil {
		return fmt.Sprintf("%+v", subs)
	}
	return string(b)
}

// TestDifferential compiles random subscription sets and runs frames aimed at their boundaries
// through the program in the BPF interpreter and through the reference matcher: they must agree
// on every frame.
func TestDifferential(t *testing.T) {
	seed := testSeed(t)
	g := testframes.NewGen(seed)
	sets, frames := 400, 400
	if testing.Short() {
		sets = 60
	}
	var decided, accepted, mustAccepts, rejected int
	for set := range sets {
		subs := g.Set()
		nic := testframes.Pick(g, []string{"eth0", "eth0", "veth1", "lo", "wlan0", ""})
		snap := testframes.Pick(g, []uint32{0, 96, 1514, 65535})
		prog, err := Compile(subs, nic, Options{SnapLen: snap})
		if err != nil {
			t.Fatalf("set %d: compiling %s: %v", set, setJSON(subs), err)
		}
		if snap == 0 {
			snap = DefaultSnapLen
		}
		if !prog.Exact {
			t.Fatalf("set %d: a small set should compile exactly: %s", set, prog.Reason)
		}
		vm := newVM(t, prog)
		m := sdk.NewMatcher(subs)
		tg := testframes.TargetsOf(subs)
		failures := 0
		for i := range frames {
			f, damaged := g.Frame(tg, uint32(i), false)
			frame := f.Build()
			w, v, meta := want(m, prog, snap, nic, frame)
			got := runVM(t, vm, frame)
			switch {
			case v == decide:
				decided++
			case v == mustAccept:
				mustAccepts++
			}
			if w != 0 {
				accepted++
			} else {
				rejected++
			}
			if got != w {
				t.Errorf("set %d frame %d: filter returns %d, want %d (%v, meta %+v, damaged %v)\nnic %q, set %s\nframe %s",
					set, i, got, w, v, meta, damaged, nic, setJSON(subs), hex.EncodeToString(frame))
				if failures++; failures == 3 {
					t.Fatalf("program:\n%v", prog)
				}
			}
			if v == decide && !damaged {
				crossCheck(t, frame, meta)
			}
		}
	}
	t.Logf("%d sets × %d frames: %d decided by the matcher, %d accepted unconditionally; %d accepted, %d rejected",
		sets, frames, decided, mustAccepts, accepted, rejected)
	if decided < sets*frames/2 || accepted < sets*frames/10 || rejected < sets*frames/10 {
		t.Errorf("the generator no longer exercises both answers: %d decided, %d accepted, %d rejected", decided, accepted, rejected)
	}
}

// crossCheck compares the test's reading of a well-formed frame with gopacket's, so that the
// differential test does not rest on a frame parser nobody else checked.
func crossCheck(t *testing.T, frame []byte, meta sdk.PacketMeta) {
	t.Helper()
	for p := 12; p+2 <= len(frame); p += 4 {
		et := binary.BigEndian.Uint16(frame[p:])
		if et == 0x9100 { // gopacket does not decode this TPID
			return
		}
		if !isVLAN(et) {
			break
		}
	}
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	var src, dst netip.Addr
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		if sdk.Transport(ip.Protocol) != meta.Transport {
			t.Errorf("frame %x: gopacket says transport %d, the test's reader %d", frame, ip.Protocol, meta.Transport)
		}
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	default:
		t.Errorf("frame %x: gopacket finds no IP layer (%v)", frame, pkt)
		return
	}
	if src != meta.Src || dst != meta.Dst {
		t.Errorf("frame %x: gopacket says %v → %v, the test's reader %v → %v", frame, src, dst, meta.Src, meta.Dst)
	}
	// gopacket leaves every fragment, first ones included, undecoded above IP.
	if meta.PortsUnknown || pkt.Layer(gopacket.LayerTypeFragment) != nil {
		return
	}
	var sport, dport uint16
	switch l4 := pkt.TransportLayer().(type) {
	case *layers.TCP:
		sport, dport = uint16(l4.SrcPort), uint16(l4.DstPort)
	case *layers.UDP:
		sport, dport = uint16(l4.SrcPort), uint16(l4.DstPort)
	case *layers.SCTP:
		sport, dport = uint16(l4.SrcPort), uint16(l4.DstPort)
	default:
		if meta.Transport.HasPorts() {
			t.Errorf("frame %x: the test's reader finds %v ports, gopacket no transport layer (%v)", frame, meta.Transport, pkt)
		}
		return
	}
	if sport != meta.SrcPort || dport != meta.DstPort {
		t.Errorf("frame %x: gopacket says ports %d → %d, the test's reader %d → %d", frame, sport, dport, meta.SrcPort, meta.DstPort)
	}
}

func mustParse(t *testing.T, doc string) []sdk.Subscription {
	t.Helper()
	subs, err := sdk.ParseSubscriptions([]byte(doc))
	if err != nil {
		t.Fatalf("parsing %s: %v", doc, err)
	}
	return subs
}

func tcp4(src, dst string, sport, dport uint16) testframes.Frame {
	return testframes.Frame{EtherType: 0x0800, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
		Proto: uint8(sdk.TransportTCP), Sport: sport, Dport: dport}
}

func ip6(src, dst string, proto sdk.Transport, sport, dport uint16) testframes.Frame {
	return testframes.Frame{EtherType: 0x86dd, Src: netip.AddrFrom16(netip.MustParseAddr(src).As16()),
		Dst: netip.AddrFrom16(netip.MustParseAddr(dst).As16()), Proto: uint8(proto), Sport: sport, Dport: dport}
}

func with(f testframes.Frame, change func(*testframes.Frame)) testframes.Frame {
	change(&f)
	return f
}

// TestEdgeCases pins the cases the design names, each frame checked both against the stated
// answer and against the reference matcher.
func TestEdgeCases(t *testing.T) {
	const snap = 200
	icmp4 := with(tcp4("10.0.0.1", "10.0.0.2", 0, 0), func(f *testframes.Frame) { f.Proto = uint8(sdk.TransportICMP) })
	arp := testframes.Frame{EtherType: 0x0806}
	lldp := testframes.Frame{EtherType: 0x88cc}
	cases := []struct {
		name   string
		doc    string
		nic    string
		frames []testframes.Frame
		accept []bool
	}{
		{
			name: "empty subscription accepts every IP packet",
			doc:  `{}`,
			frames: []testframes.Frame{tcp4("1.2.3.4", "5.6.7.8", 1, 2), ip6("2001:db8::1", "::1", sdk.TransportUDP, 53, 53),
				icmp4, with(tcp4("1.2.3.4", "5.6.7.8", 1, 2), func(f *testframes.Frame) { f.FragOff = 100 }), arp, lldp},
			accept: []bool{true, true, true, true, true, false},
		},
		{
			name: "exclusion beats inclusion",
			doc:  `{"L3Match":["10.0.0.0/8"],"L3Miss":["10.0.0.5"],"L4":["80"],"L4Miss":["80"]}`,
			frames: []testframes.Frame{tcp4("10.0.0.5", "10.1.1.1", 1000, 80), tcp4("10.0.0.6", "10.1.1.1", 1000, 80),
				tcp4("10.0.0.6", "10.1.1.1", 1000, 443)},
			accept: []bool{false, false, false},
		},
		{
			name: "exclusion of one address inside an included range",
			doc:  `{"L3Match":["10.0.0.0/8"],"L3Miss":["10.0.0.5"]}`,
			frames: []testframes.Frame{tcp4("10.0.0.5", "10.1.1.1", 1000, 80), tcp4("10.1.1.1", "10.0.0.5", 1000, 80),
				tcp4("10.0.0.6", "10.1.1.1", 1000, 80), tcp4("11.0.0.6", "12.1.1.1", 1000, 80)},
			accept: []bool{false, false, true, false},
		},
		{
			name: "IPv6 CIDR",
			doc:  `{"L3Match":["2001:db8::/32"]}`,
			frames: []testframes.Frame{ip6("2001:db8:1::1", "fd00::1", sdk.TransportTCP, 1, 2),
				ip6("fd00::1", "2001:db8:ffff::1", sdk.TransportUDP, 1, 2), ip6("2001:db9::1", "fd00::1", sdk.TransportTCP, 1, 2),
				tcp4("10.0.0.1", "10.0.0.2", 1, 2)},
			accept: []bool{true, true, false, false},
		},
		{
			name: "IPv4 /0 is every IPv4 address and no IPv6 one",
			doc:  `{"L3Match":["0.0.0.0/0"]}`,
			frames: []testframes.Frame{tcp4("1.2.3.4", "5.6.7.8", 1, 2), ip6("2001:db8::1", "fd00::1", sdk.TransportTCP, 1, 2),
				ip6("::ffff:1.2.3.4", "fd00::1", sdk.TransportTCP, 1, 2)},
			accept: []bool{true, false, true},
		},
		{
			name: "IPv6 /0 is every IPv6 address but not the IPv4-mapped ones",
			doc:  `{"L3Match":["::/0"]}`,
			frames: []testframes.Frame{tcp4("1.2.3.4", "5.6.7.8", 1, 2), ip6("2001:db8::1", "fd00::1", sdk.TransportTCP, 1, 2),
				ip6("::ffff:1.2.3.4", "::ffff:5.6.7.8", sdk.TransportTCP, 1, 2)},
			accept: []bool{false, true, false},
		},
		{
			name: "an IPv4-mapped address matches the IPv4 CIDR",
			doc:  `{"L3Match":["10.0.0.0/8"]}`,
			frames: []testframes.Frame{ip6("::ffff:10.9.9.9", "fd00::1", sdk.TransportUDP, 1, 2),
				ip6("::fffe:10.9.9.9", "fd00::1", sdk.TransportUDP, 1, 2)},
			accept: []bool{true, false},
		},
		{
			name:   "a port list without 0 rejects ICMP",
			doc:    `{"L4":["80"]}`,
			frames: []testframes.Frame{icmp4, tcp4("1.1.1.1", "2.2.2.2", 5000, 80)},
			accept: []bool{false, true},
		},
		{
			name:   "a port list with 0 accepts ICMP",
			doc:    `{"L4":["0"]}`,
			frames: []testframes.Frame{icmp4, tcp4("1.1.1.1", "2.2.2.2", 5000, 80)},
			accept: []bool{true, false},
		},
		{
			name: "non-first fragments skip the port conditions but not the others",
			doc:  `{"L4CLASS":["UDP"],"L4":["53"],"L4Miss":["9"]}`,
			frames: []testframes.Frame{
				with(tcp4("1.1.1.1", "2.2.2.2", 9, 9), func(f *testframes.Frame) { f.Proto = uint8(sdk.TransportUDP); f.FragOff = 185 }),
				with(tcp4("1.1.1.1", "2.2.2.2", 9, 9), func(f *testframes.Frame) { f.FragOff = 185 }),
				with(tcp4("1.1.1.1", "2.2.2.2", 9, 53), func(f *testframes.Frame) { f.Proto = uint8(sdk.TransportUDP); f.More = true }),
				with(ip6("fd00::1", "fd00::2", sdk.TransportUDP, 9, 9), func(f *testframes.Frame) {
					f.Ext = []testframes.ExtHeader{{Type: 0, Size: 8}, {Type: 44, Size: 8, FragOff: 3}}
				}),
				with(ip6("fd00::1", "fd00::2", sdk.TransportUDP, 9, 53), func(f *testframes.Frame) {
					f.Ext = []testframes.ExtHeader{{Type: 44, Size: 8, More: true}}
				}),
			},
			accept: []bool{true, false, false, true, false},
		},
		{
			name: "port ranges, inclusive at both ends",
			doc:  `{"L4Range":["1000-2000","3000-3000"],"L4MissRange":"1500-1600"}`,
			frames: []testframes.Frame{tcp4("1.1.1.1", "2.2.2.2", 999, 999), tcp4("1.1.1.1", "2.2.2.2", 999, 1000),
				tcp4("1.1.1.1", "2.2.2.2", 2000, 50000), tcp4("1.1.1.1", "2.2.2.2", 2001, 2999),
				tcp4("1.1.1.1", "2.2.2.2", 3000, 1), tcp4("1.1.1.1", "2.2.2.2", 1000, 1500)},
			accept: []bool{false, true, true, false, true, false},
		},
		{
			name: "IPv6 extension headers before the transport",
			doc:  `{"L4CLASS":["TCP"],"L4":["443"]}`,
			frames: []testframes.Frame{
				with(ip6("fd00::1", "fd00::2", sdk.TransportTCP, 5, 443), func(f *testframes.Frame) {
					f.Ext = []testframes.ExtHeader{{Type: 0, Size: 8}, {Type: 43, Size: 24}, {Type: 51, Size: 16}, {Type: 60, Size: 8}}
				}),
				with(ip6("fd00::1", "fd00::2", sdk.TransportTCP, 5, 444), func(f *testframes.Frame) {
					f.Ext = []testframes.ExtHeader{{Type: 0, Size: 8}, {Type: 44, Size: 8}}
				}),
				// Five headers: deeper than the filter walks, so user space decides.
				with(ip6("fd00::1", "fd00::2", sdk.TransportTCP, 5, 444), func(f *testframes.Frame) {
					f.Ext = []testframes.ExtHeader{{Type: 0, Size: 8}, {Type: 60, Size: 8}, {Type: 60, Size: 8}, {Type: 60, Size: 8}, {Type: 60, Size: 8}}
				}),
			},
			accept: []bool{true, false, true},
		},
		{
			name: "VLAN tags",
			doc:  `{"L3":["10.0.0.1"]}`,
			frames: []testframes.Frame{
				with(tcp4("10.0.0.1", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.Tags = []uint16{0x8100} }),
				with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.Tags = []uint16{0x88a8, 0x8100} }),
				with(tcp4("10.0.0.2", "10.0.0.1", 1, 2), func(f *testframes.Frame) { f.Tags = []uint16{0x9100, 0x8100} }),
				with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.Tags = []uint16{0x8100, 0x8100, 0x8100} }),
				with(arp, func(f *testframes.Frame) { f.Tags = []uint16{0x8100} }),
			},
			accept: []bool{true, false, true, true, true},
		},
		{
			name: "malformed IP packets are accepted",
			doc:  `{"L3":["10.0.0.1"]}`,
			frames: []testframes.Frame{
				with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.Truncate = 30 }),
				with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.Truncate = 50 }),
				with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.IHL = 4 }),
				with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.BadVersion = true }),
				with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.IPLenDelta = 1 }),
				with(ip6("fd00::1", "fd00::2", sdk.TransportUDP, 1, 2), func(f *testframes.Frame) { f.Truncate = 60 }),
				with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.Pad = 10 }),
			},
			accept: []bool{true, true, true, true, true, true, false},
		},
		{
			name:   "no subscription for the interface accepts nothing",
			doc:    `{"NIC":["veth*"]}`,
			nic:    "eth0",
			frames: []testframes.Frame{tcp4("10.0.0.3", "10.0.0.2", 1, 2), arp},
			accept: []bool{false, false},
		},
		{
			name:   "NIC globs",
			doc:    `{"NIC":["veth*"],"L4":["80"]}`,
			nic:    "veth12",
			frames: []testframes.Frame{tcp4("10.0.0.3", "10.0.0.2", 1, 80), tcp4("10.0.0.3", "10.0.0.2", 1, 81)},
			accept: []bool{true, false},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			subs := mustParse(t, c.doc)
			nic := c.nic
			if nic == "" {
				nic = "eth0"
			}
			prog, err := Compile(subs, nic, Options{SnapLen: snap})
			if err != nil {
				t.Fatal(err)
			}
			vm := newVM(t, prog)
			m := sdk.NewMatcher(subs)
			for i, f := range c.frames {
				frame := f.Build()
				got := runVM(t, vm, frame)
				w, v, meta := want(m, prog, snap, nic, frame)
				stated := uint32(0)
				if c.accept[i] {
					stated = snap
				}
				if got != stated || got != w {
					t.Errorf("frame %d: filter returns %d; the case says %d, the matcher %d (%v, %+v)\n%x\n%v",
						i, got, stated, w, v, meta, frame, prog)
				}
			}
		})
	}
}

// bigSet is one subscription with 1,000 IPv4 CIDRs and 100 port ranges.
func bigSet(seed uint64) []sdk.Subscription {
	g := testframes.NewGen(seed)
	var s sdk.Spec
	for len(s.L3Match) < 1000 {
		b := [4]byte{byte(g.R.IntN(224)), byte(g.R.IntN(256)), byte(g.R.IntN(256)), byte(g.R.IntN(256))}
		bits := testframes.Pick(g, []int{16, 20, 22, 24, 24, 24, 26, 28, 32, 32})
		s.L3Match = append(s.L3Match, netip.PrefixFrom(netip.AddrFrom4(b), bits).Masked())
	}
	for i := range 100 {
		first := uint16(i*600 + g.N(0, 300))
		s.L4Range = append(s.L4Range, sdk.PortRange{First: first, Last: first + uint16(g.N(0, 250))})
	}
	s.L4Class = []sdk.Transport{sdk.TransportTCP, sdk.TransportUDP}
	return []sdk.Subscription{{ID: "big", Spec: s}}
}

// TestLargeSetFits compiles 1,000 IPv4 CIDRs and 100 port ranges exactly within the kernel's
// limit, and checks the program (long jumps and all) against the matcher.
func TestLargeSetFits(t *testing.T) {
	seed := testSeed(t)
	subs := bigSet(seed)
	prog, err := Compile(subs, "eth0", Options{SnapLen: 128})
	if err != nil {
		t.Fatal(err)
	}
	if !prog.Exact {
		t.Fatalf("the large set does not compile exactly: %s", prog.Reason)
	}
	if prog.Len() > MaxInstructions {
		t.Fatalf("%d instructions, over the kernel's %d", prog.Len(), MaxInstructions)
	}
	t.Logf("1,000 CIDRs and 100 port ranges: %d instructions", prog.Len())
	vm := newVM(t, prog)
	m := sdk.NewMatcher(subs)
	g := testframes.NewGen(seed + 1)
	tg := testframes.TargetsOf(subs)
	matched := 0
	for i := range 20000 {
		f, _ := g.Frame(tg, uint32(i), false)
		frame := f.Build()
		w, v, meta := want(m, prog, 128, "eth0", frame)
		if got := runVM(t, vm, frame); got != w {
			t.Fatalf("frame %d: filter returns %d, want %d (%v, %+v)\n%x", i, got, w, v, meta, frame)
		}
		if v == decide && w != 0 {
			matched++
		}
	}
	if matched < 500 {
		t.Errorf("only %d frames matched the set: the test does not exercise the address trees", matched)
	}
}

func BenchmarkCompileLargeSet(b *testing.B) {
	subs := bigSet(1)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		prog, err := Compile(subs, "eth0", Options{SnapLen: 128})
		if err != nil || !prog.Exact {
			b.Fatal(err, prog.Reason)
		}
		n = prog.Len()
	}
	b.ReportMetric(float64(n), "instructions")
}

// BenchmarkFilterLargeSet measures the program in the interpreter: a proxy for how many
// instructions the kernel runs per packet.
func BenchmarkFilterLargeSet(b *testing.B) {
	subs := bigSet(1)
	prog, err := Compile(subs, "eth0", Options{SnapLen: 128})
	if err != nil {
		b.Fatal(err)
	}
	vm := newVM(b, prog)
	frame := tcp4("203.0.113.9", "198.51.100.7", 40000, 65000).Build()
	for b.Loop() {
		if _, err := vm.Run(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFallbackIsWider squeezes random sets under small limits: the program must say it is not
// exact, say why, and accept every packet the exact program accepts.
func TestFallbackIsWider(t *testing.T) {
	seed := testSeed(t)
	g := testframes.NewGen(seed)
	widened := 0
	for set := range 150 {
		subs := g.Set()
		subs = append(subs, bigSet(seed+uint64(set))...)
		subs[len(subs)-1].Spec.L3Miss = []netip.Addr{g.Addr(false), g.Addr(true)}
		limit := testframes.Pick(g, []int{120, 300, 600, 1200, 2500})
		prog, err := Compile(subs, "eth0", Options{SnapLen: 100, MaxInstructions: limit})
		if err != nil {
			t.Fatalf("set %d: %v", set, err)
		}
		if prog.Len() > limit {
			t.Fatalf("set %d: %d instructions over the limit %d", set, prog.Len(), limit)
		}
		// A set whose first subscription matches everything fits anywhere, exactly.
		if prog.Exact != (prog.Reason == "") || !prog.Exact && !strings.Contains(prog.Reason, "over the limit") {
			t.Fatalf("set %d: a program squeezed into %d instructions claims exact=%v, reason %q", set, limit, prog.Exact, prog.Reason)
		}
		if strings.Contains(prog.Reason, "dropped the") {
			widened++
		}
		vm := newVM(t, prog)
		m := sdk.NewMatcher(subs)
		tg := testframes.TargetsOf(subs)
		for i := range 300 {
			f, _ := g.Frame(tg, uint32(i), false)
			frame := f.Build()
			w, v, meta := want(m, prog, 100, "eth0", frame)
			got := runVM(t, vm, frame)
			if (w != 0 || prog.Exact) && got != w {
				t.Fatalf("set %d frame %d: the widened program returns %d where the exact answer is %d (%v, %+v)\n%s\n%x",
					set, i, got, w, v, meta, prog.Reason, frame)
			}
			if v == mustReject && got != 0 {
				t.Fatalf("set %d frame %d: the widened program accepts a non-IP frame", set, i)
			}
		}
	}
	if widened == 0 {
		t.Error("no program was widened part by part; only the accept-all fallback ran")
	}
}

// TestOversizedSetFallsBack gives the kernel's own limit a set that cannot fit: four
// subscriptions of 1,000 CIDRs each.
func TestOversizedSetFallsBack(t *testing.T) {
	seed := testSeed(t)
	var subs []sdk.Subscription
	for i := range 4 {
		s := bigSet(seed + uint64(i))[0]
		s.ID = fmt.Sprintf("big%d", i)
		subs = append(subs, s)
	}
	prog, err := Compile(subs, "eth0", Options{SnapLen: 128})
	if err != nil {
		t.Fatal(err)
	}
	if prog.Exact || prog.Len() > MaxInstructions || !strings.Contains(prog.Reason, "dropped the address include list") {
		t.Fatalf("exact=%v, %d instructions, reason %q", prog.Exact, prog.Len(), prog.Reason)
	}
	t.Logf("%d instructions: %s", prog.Len(), prog.Reason)
	vm := newVM(t, prog)
	m := sdk.NewMatcher(subs)
	g := testframes.NewGen(seed)
	tg := testframes.TargetsOf(subs)
	for i := range 5000 {
		f, _ := g.Frame(tg, uint32(i), false)
		frame := f.Build()
		w, v, meta := want(m, prog, 128, "eth0", frame)
		if got := runVM(t, vm, frame); w != 0 && got != w || v == mustReject && got != 0 {
			t.Fatalf("frame %d: the widened program returns %d, the exact answer is %d (%v, %+v)\n%x", i, got, w, v, meta, frame)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	subs := make([]sdk.Subscription, sdk.MaxSubscriptions+1)
	if _, err := Compile(subs, "eth0", Options{}); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d subscriptions: want an error naming the limit, got %v", len(subs), err)
	}
	for _, limit := range []int{10, -1, MaxInstructions + 1} {
		if _, err := Compile(subs[:1], "eth0", Options{MaxInstructions: limit}); err == nil {
			t.Errorf("a limit of %d instructions: want an error, got a program", limit)
		}
	}
}

// TestDisassembly checks the debugging view names the jump targets.
func TestDisassembly(t *testing.T) {
	prog, err := Compile(mustParse(t, `{"L4":["80"]}`), "eth0", Options{SnapLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	s := prog.String()
	for _, want := range []string{"ld #len", "ldh [x + 0]", "jeq #0x800, ", "ret #64", "ret #0", "exact=true"} {
		if !strings.Contains(s, want) {
			t.Errorf("disassembly lacks %q:\n%s", want, s)
		}
	}
	if lines := strings.Count(s, "\n"); lines != prog.Len()+1 {
		t.Errorf("disassembly has %d lines for %d instructions", lines, prog.Len())
	}
}

// FuzzFilter runs arbitrary frames through programs for a few fixed sets and compares them with
// the reference: the filter must never reject what the matcher (or the malformed-frame rule)
// accepts, nor accept what it rejects.
func FuzzFilter(f *testing.F) {
	docs := []string{
		`{}`,
		`{"L3Match":["10.0.0.0/8","2001:db8::/32"],"L3Miss":["10.0.0.5"],"L4CLASS":["TCP","UDP"],"L4":["80","53"],"L4MissRange":"1000-2000"}`,
		`[{"id":"a","spec":{"L3":["192.168.1.1","fd00::1"]}},{"id":"b","spec":{"L4CLASS":["ICMP","ICMPv6"]}}]`,
	}
	var sets [][]sdk.Subscription
	for _, d := range docs {
		subs, err := sdk.ParseSubscriptions([]byte(d))
		if err != nil {
			f.Fatal(err)
		}
		sets = append(sets, subs)
	}
	g := testframes.NewGen(7)
	for i := range 64 {
		fs, _ := g.Frame(testframes.TargetsOf(sets[1]), uint32(i), false)
		f.Add(fs.Build())
	}
	type compiled struct {
		vm   *bpf.VM
		prog Program
		m    *sdk.Matcher
	}
	var progs []compiled
	for _, subs := range sets {
		prog, err := Compile(subs, "eth0", Options{SnapLen: 300})
		if err != nil {
			f.Fatal(err)
		}
		progs = append(progs, compiled{newVM(f, prog), prog, sdk.NewMatcher(subs)})
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		for i, c := range progs {
			w, v, meta := want(c.m, c.prog, 300, "eth0", frame)
			if got := runVM(t, c.vm, frame); got != w {
				t.Fatalf("set %d: filter returns %d, want %d (%v, %+v)\n%x", i, got, w, v, meta, frame)
			}
		}
	})
}
