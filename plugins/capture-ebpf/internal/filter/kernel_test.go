//go:build linux

package filter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/quanyu/quanyu/internal/testframes"
	"github.com/quanyu/quanyu/plugins/capture-ebpf/internal/kern"
	"github.com/quanyu/quanyu/sdk"
)

// These tests run frames through the real program with BPF_PROG_TEST_RUN and read its decision
// back from the flow map: a new conversation the subscriptions match gets an entry whose subs
// field holds the matched subscriptions; one they do not match gets none. The reference matcher
// (sdk.Matcher) must make the same decision on the test's own reading of every frame.

// kernel is the loaded program with a writer for its filter maps.
type kernel struct {
	objs kern.CaptureObjects
	w    *Writer
	// lo is the loopback's index: BPF_PROG_TEST_RUN hands the program an skb from the loopback
	// of the calling thread's network namespace.
	lo uint32
}

func loadKernel(t testing.TB) *kernel {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running the BPF program needs root (CI runs this test as root)")
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatalf("finding the loopback interface: %v", err)
	}
	k := &kernel{lo: uint32(lo.Index)}
	if err := kern.LoadCaptureObjects(&k.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("the verifier rejects the program: %+v", ve)
		}
		t.Skipf("BPF programs cannot be loaded here (CI can): %v", err)
	}
	t.Cleanup(func() { k.objs.Close() })
	k.w = NewWriter(MapsOf(&k.objs))
	// Test runs happen one at a time on this goroutine: no program run can be in flight during
	// a swap, so the writer need not wait before emptying the old version.
	k.w.Grace = 0
	return k
}

func (k *kernel) swap(t testing.TB, subs []sdk.Subscription) {
	t.Helper()
	if err := k.w.Swap(Compile(subs, map[string]uint32{"lo": k.lo})); err != nil {
		t.Fatalf("swapping in %s: %v", setJSON(subs), err)
	}
}

// flowEntry is one entry of the flow map: the key and the subscriptions, ORed over the CPUs.
type flowEntry struct {
	key  kern.CaptureFlowKey
	subs uint64
}

// run runs a frame through the program, and takes out (returns and deletes) every flow it left.
func (k *kernel) run(t testing.TB, frame []byte) []flowEntry {
	t.Helper()
	ret, err := k.objs.QuanyuCapture.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("running the program on % x: %v", frame, err)
	}
	if ret != 0xffffffff {
		t.Fatalf("the program returned %#x, not TC_ACT_UNSPEC (-1): it must never drop or redirect", ret)
	}
	var out []flowEntry
	var key kern.CaptureFlowKey
	var vals []kern.CaptureFlowStats
	it := k.objs.Flows.Iterate()
	for it.Next(&key, &vals) {
		e := flowEntry{key: key}
		for _, v := range vals {
			e.subs |= v.Subs
		}
		out = append(out, e)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("reading the flow map: %v", err)
	}
	for _, e := range out {
		if err := k.objs.Flows.Delete(e.key); err != nil {
			t.Fatalf("deleting a flow: %v", err)
		}
	}
	return out
}

// counter is one of the program's counters, summed over the CPUs.
func (k *kernel) counter(t testing.TB, c kern.CaptureCounter) uint64 {
	t.Helper()
	var per []uint64
	if err := k.objs.Counters.Lookup(uint32(c), &per); err != nil {
		t.Fatalf("reading counter %d: %v", c, err)
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	return sum
}

func (k *kernel) counters(t testing.TB) map[kern.CaptureCounter]uint64 {
	out := map[kern.CaptureCounter]uint64{}
	for c := kern.CaptureCounterCOUNT_PACKETS; c < kern.CaptureCounterCOUNT_MAX; c++ {
		out[c] = k.counter(t, c)
	}
	return out
}

// clearFrags empties the program's memory of first fragments.
func (k *kernel) clearFrags(t testing.TB) {
	t.Helper()
	var keys []kern.CaptureFragKey
	var key kern.CaptureFragKey
	var val kern.CaptureFragPorts
	it := k.objs.Frags.Iterate()
	for it.Next(&key, &val) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("reading the fragment map: %v", err)
	}
	for _, key := range keys {
		if err := k.objs.Frags.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatalf("emptying the fragment map: %v", err)
		}
	}
}

// fragKey names a fragmented datagram as IP does: addresses, protocol and identification.
type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint8
}

// reading is the test's own account of a frame it built.
type reading struct {
	ip   bool // IPv4 or IPv6: the program decides on it
	meta sdk.PacketMeta
	// A first fragment (offset 0, more fragments) carries the ports of every fragment of its
	// datagram; a later one (offset > 0) carries none.
	first, later bool
	frag         fragKey
	// ambiguous marks a later IPv6 fragment whose fragment header names another extension
	// header as the next one: what follows is the middle of a datagram, and no reading of it
	// is more right than another. Such frames are not judged.
	ambiguous bool
}

// The frame builder gives every IPv4 datagram identification 0 and every IPv6 fragment header
// identification 0x1234, so fragments with the same addresses and transport are one datagram.
const (
	builderIDv4 = 0
	builderIDv6 = 0x1234
)

func isExtHeader(h uint8) bool { return h == 0 || h == 43 || h == 44 || h == 51 || h == 60 }

// read reads a frame from the description it was built from. Ports are those of the frame's own
// transport header; for a later fragment the caller fills them in from the first fragment, or
// marks them unknown.
func read(f testframes.Frame) reading {
	var r reading
	switch f.EtherType {
	case 0x0800:
		r.first = f.FragOff == 0 && f.More
		r.later = f.FragOff != 0
		r.meta.Transport = sdk.Transport(f.Proto)
		r.frag.id = builderIDv4
	case 0x86dd:
		next := f.Proto
		for i, e := range f.Ext {
			if e.Type != 44 {
				continue
			}
			r.first = e.FragOff == 0 && e.More
			r.later = e.FragOff != 0
			if r.later {
				next = f.Proto
				if i+1 < len(f.Ext) {
					next = f.Ext[i+1].Type
				}
				r.ambiguous = isExtHeader(next)
				break
			}
		}
		r.meta.Transport = sdk.Transport(next)
		r.frag.id = builderIDv6
	default:
		return r
	}
	r.ip = true
	r.meta.Src, r.meta.Dst = f.Src, f.Dst
	if !r.later && r.meta.Transport.HasPorts() {
		r.meta.SrcPort, r.meta.DstPort = f.Sport, f.Dport
	}
	r.frag.src, r.frag.dst, r.frag.proto = f.Src.As16(), f.Dst.As16(), uint8(r.meta.Transport)
	return r
}

// wantKey is the conversation key the program must give a frame: endpoints in order (address,
// then port), IPv4 addresses IPv4-mapped.
func wantKey(meta *sdk.PacketMeta, ifindex uint32) kern.CaptureFlowKey {
	a, b := meta.Src.As16(), meta.Dst.As16()
	pa, pb := meta.SrcPort, meta.DstPort
	if c := bytes.Compare(b[:], a[:]); c < 0 || c == 0 && pb < pa {
		a, b, pa, pb = b, a, pb, pa
	}
	k := kern.CaptureFlowKey{PortA: pa, PortB: pb, Ifindex: ifindex, Proto: uint8(meta.Transport)}
	for i := range 4 {
		// The key holds the packet's bytes; read as host-order words on a little-endian host.
		k.AddrA[i] = binary.LittleEndian.Uint32(a[4*i:])
		k.AddrB[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return k
}

// judge runs frames through the program and checks its decisions against the matcher's.
type judge struct {
	k    *kernel
	m    *sdk.Matcher
	subs []sdk.Subscription
	// firsts is the test's memory of the first fragments run so far and their ports: what the
	// program's fragment map must hold.
	firsts map[fragKey][2]uint16
	// What the program's counters must have moved by.
	filtered, created, orphans, notIP int
}

func newJudge(k *kernel, subs []sdk.Subscription) *judge {
	return &judge{k: k, m: sdk.NewMatcher(subs), subs: subs, firsts: map[fragKey][2]uint16{}}
}

// frame runs one frame as a new conversation and checks the decision. It returns the
// matcher's mask, and whether the frame was judged at all (ambiguous ones are not run).
func (j *judge) frame(t *testing.T, f testframes.Frame, what string) (uint64, bool) {
	t.Helper()
	r := read(f)
	if r.ambiguous {
		return 0, false
	}
	frame := f.Build()
	got := j.k.run(t, frame)
	if !r.ip {
		j.notIP++
		if len(got) != 0 {
			t.Fatalf("%s: a frame with EtherType %#04x made a flow: %+v", what, f.EtherType, got)
		}
		return 0, true
	}
	meta := r.meta
	meta.NIC = "lo"
	if r.later {
		if ports, ok := j.firsts[r.frag]; ok {
			meta.SrcPort, meta.DstPort = ports[0], ports[1]
		} else {
			meta.PortsUnknown = true
			j.orphans++
		}
	}
	if r.first {
		j.firsts[r.frag] = [2]uint16{meta.SrcPort, meta.DstPort}
	}
	want := j.m.Match(&meta)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s\nframe %+v\nbytes % x\nmeta %+v\nset %s", what, fmt.Sprintf(format, args...), f, frame, meta, setJSON(j.subs))
	}
	if want == 0 {
		j.filtered++
		if len(got) != 0 {
			fail("the matcher matches nothing, the program made %d flows (subs %#x)", len(got), got[0].subs)
		}
		return 0, true
	}
	j.created++
	if len(got) != 1 {
		fail("the matcher matches %#x, the program made %d flows: %+v", want, len(got), got)
	}
	if got[0].subs != want {
		fail("the matcher matches %#x (%v), the program %#x (%v)", want, j.m.IDs(want), got[0].subs, j.m.IDs(got[0].subs))
	}
	if k := wantKey(&meta, j.k.lo); got[0].key != k {
		fail("the program's flow key is %+v, not %+v", got[0].key, k)
	}
	return want, true
}

// checkCounters checks the program counted what the test expects since before.
func (j *judge) checkCounters(t *testing.T, before map[kern.CaptureCounter]uint64) {
	t.Helper()
	after := j.k.counters(t)
	for _, c := range []struct {
		c    kern.CaptureCounter
		name string
		want int
	}{
		{kern.CaptureCounterCOUNT_FILTERED, "filtered", j.filtered},
		{kern.CaptureCounterCOUNT_FLOWS_CREATED, "flows created", j.created},
		{kern.CaptureCounterCOUNT_FRAG_ORPHAN, "orphan fragments", j.orphans},
		{kern.CaptureCounterCOUNT_PARSE_ERROR, "parse errors", 0},
		{kern.CaptureCounterCOUNT_MAP_FULL, "flow map full", 0},
	} {
		if got := after[c.c] - before[c.c]; got != uint64(c.want) {
			t.Errorf("counter %s moved by %d, the test expects %d", c.name, got, c.want)
		}
	}
	if got := after[kern.CaptureCounterCOUNT_NOT_IP] + after[kern.CaptureCounterCOUNT_ARP] -
		before[kern.CaptureCounterCOUNT_NOT_IP] - before[kern.CaptureCounterCOUNT_ARP]; got != uint64(j.notIP) {
		t.Errorf("counters not-IP and ARP moved by %d, the test sent %d such frames", got, j.notIP)
	}
}

// repair undoes the generator's deliberate damage: what the program does with broken headers
// is not the matcher's business. Ethernet padding is kept: it is normal.
func repair(f *testframes.Frame) {
	f.Truncate, f.BadVersion, f.IHL, f.IPLenDelta = 0, false, 0, 0
}

// laterFragment is a later fragment of the datagram first began.
func laterFragment(g *testframes.Gen, first testframes.Frame) testframes.Frame {
	f := first
	f.Payload = testframes.Pick(g, []int{0, 8, 100})
	f.Tags = nil
	for range g.N(0, 2) {
		f.Tags = append(f.Tags, testframes.Pick(g, []uint16{0x8100, 0x88a8, 0x9100}))
	}
	if f.EtherType == 0x0800 {
		f.FragOff, f.More = uint16(g.N(1, 0x1fff)), g.P(0.5)
		return f
	}
	f.Ext = nil
	if g.P(0.3) {
		f.Ext = append(f.Ext, testframes.ExtHeader{Type: 0, Size: 8})
	}
	f.Ext = append(f.Ext, testframes.ExtHeader{Type: 44, Size: 8, FragOff: uint16(g.N(1, 0x1fff)), More: g.P(0.5)})
	return f
}

// makeFirst turns an IP frame into the first fragment of a datagram.
func makeFirst(g *testframes.Gen, f *testframes.Frame) {
	if f.EtherType == 0x0800 {
		f.FragOff, f.More = 0, true
		return
	}
	var ext []testframes.ExtHeader
	for _, e := range f.Ext {
		if e.Type != 44 {
			ext = append(ext, e)
		}
	}
	at := g.N(0, len(ext))
	ext = append(ext[:at], append([]testframes.ExtHeader{{Type: 44, Size: 8, More: true}}, ext[at:]...)...)
	f.Ext = ext
}

// TestKernelDifferential runs random frames aimed at the boundaries of random subscription sets
// through the program and the reference matcher: their decisions must be the same on every
// frame.
func TestKernelDifferential(t *testing.T) {
	k := loadKernel(t)
	seed := testSeed(t)
	g := testframes.NewGen(seed)
	sets, perSet := 60, 350
	if testing.Short() {
		sets, perSet = 20, 100
	}
	var frames, matched, fragPairs int
	for set := range sets {
		subs := kernelSet(g)
		k.swap(t, subs)
		k.clearFrags(t)
		j := newJudge(k, subs)
		before := k.counters(t)
		tg := testframes.TargetsOf(subs)
		var firsts []testframes.Frame
		for i := range perSet {
			var f testframes.Frame
			if len(firsts) > 0 && g.P(0.12) {
				f = laterFragment(g, testframes.Pick(g, firsts))
				fragPairs++
			} else {
				f, _ = g.Frame(tg, uint32(i), true)
				repair(&f)
				if (f.EtherType == 0x0800 || f.EtherType == 0x86dd) && g.P(0.08) {
					makeFirst(g, &f)
				}
			}
			mask, judged := j.frame(t, f, fmt.Sprintf("set %d frame %d", set, i))
			if !judged {
				continue
			}
			frames++
			if mask != 0 {
				matched++
			}
			if r := read(f); r.first {
				firsts = append(firsts, f)
			}
		}
		j.checkCounters(t, before)
		if t.Failed() {
			t.Fatalf("set %d: %s", set, setJSON(subs))
		}
	}
	t.Logf("%d sets, %d frames judged (%d matched, %d later fragments of a first one run)", sets, frames, matched, fragPairs)
	if matched < frames/10 || frames-matched < frames/10 {
		t.Errorf("%d of %d frames matched: the test does not exercise both decisions", matched, frames)
	}
}

// TestKernelEdgeCases pins cases by name: the matcher is still the oracle, and each case also
// states the mask it stands for, so that a case cannot silently stop testing what it says.
func TestKernelEdgeCases(t *testing.T) {
	k := loadKernel(t)
	tcp4 := func(src, dst string, sport, dport uint16) testframes.Frame {
		return testframes.Frame{EtherType: 0x0800, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
			Proto: uint8(sdk.TransportTCP), Sport: sport, Dport: dport}
	}
	ip6 := func(src, dst string, proto sdk.Transport, sport, dport uint16) testframes.Frame {
		return testframes.Frame{EtherType: 0x86dd, Src: netip.AddrFrom16(netip.MustParseAddr(src).As16()),
			Dst: netip.AddrFrom16(netip.MustParseAddr(dst).As16()), Proto: uint8(proto), Sport: sport, Dport: dport}
	}
	with := func(f testframes.Frame, change func(*testframes.Frame)) testframes.Frame {
		change(&f)
		return f
	}
	first4 := func(f testframes.Frame) testframes.Frame { f.More = true; return f }
	later4 := func(f testframes.Frame) testframes.Frame { f.FragOff = 100; return f }
	first6 := func(f testframes.Frame) testframes.Frame {
		f.Ext = []testframes.ExtHeader{{Type: 44, Size: 8, More: true}}
		return f
	}
	later6 := func(f testframes.Frame) testframes.Frame {
		f.Ext = []testframes.ExtHeader{{Type: 0, Size: 8}, {Type: 44, Size: 8, FragOff: 7}}
		return f
	}
	type step struct {
		f    testframes.Frame
		want uint64
	}
	cases := []struct {
		name  string
		subs  string
		steps []step
	}{
		{"the default subscription takes every IP packet",
			`[{"id": "default", "spec": {}}]`,
			[]step{{tcp4("1.2.3.4", "5.6.7.8", 1, 2), 1}, {ip6("2001:db8::1", "::1", sdk.TransportUDP, 53, 53), 1},
				{testframes.Frame{EtherType: 0x0806}, 0}, {testframes.Frame{EtherType: 0x88cc}, 0}}},
		{"exclusion beats inclusion, in either direction",
			`[{"id": "a", "spec": {"L3Match": ["10.0.0.0/8"], "L3Miss": ["10.0.0.9"]}}]`,
			[]step{{tcp4("10.0.0.8", "192.0.2.1", 1, 2), 1}, {tcp4("10.0.0.9", "10.0.0.8", 1, 2), 0},
				{tcp4("192.0.2.1", "10.0.0.9", 1, 2), 0}}},
		{"nested prefixes of different subscriptions",
			`[{"id": "a", "spec": {"L3Match": ["10.0.0.0/8"]}}, {"id": "b", "spec": {"L3Match": ["10.1.0.0/16"]}},
				{"id": "c", "spec": {"L3": ["10.1.2.3"]}}]`,
			[]step{{tcp4("10.1.2.3", "192.0.2.1", 1, 2), 7}, {tcp4("10.1.2.4", "192.0.2.1", 1, 2), 3},
				{tcp4("10.2.0.1", "192.0.2.1", 1, 2), 1}, {tcp4("192.0.2.1", "10.1.2.3", 1, 2), 7}}},
		{"IPv4 /0 is every IPv4 address, IPv6 /0 every IPv6 address but no IPv4-mapped one",
			`[{"id": "v4", "spec": {"L3Match": ["0.0.0.0/0"]}}, {"id": "v6", "spec": {"L3Match": ["::/0"]}}]`,
			[]step{{tcp4("1.2.3.4", "5.6.7.8", 1, 2), 1}, {ip6("2001:db8::1", "fd00::1", sdk.TransportTCP, 1, 2), 2},
				{ip6("::ffff:1.2.3.4", "::ffff:5.6.7.8", sdk.TransportTCP, 1, 2), 1},
				{ip6("::ffff:1.2.3.4", "fd00::1", sdk.TransportTCP, 1, 2), 3}}},
		{"an IPv4-mapped address in an IPv6 header is the IPv4 address, whichever end it is",
			`[{"id": "a", "spec": {"L3Match": ["10.9.0.0/16"], "L3Miss": ["10.9.9.9"]}}, {"id": "b", "spec": {"L3Miss": ["10.9.9.9"]}}]`,
			[]step{{ip6("::ffff:10.9.9.8", "fd00::1", sdk.TransportUDP, 1, 2), 3},
				{ip6("fd00::1", "::ffff:10.9.9.8", sdk.TransportUDP, 1, 2), 3},
				{ip6("fd00::1", "::ffff:10.9.9.9", sdk.TransportUDP, 1, 2), 0},
				{ip6("::ffff:10.9.9.9", "fd00::1", sdk.TransportUDP, 1, 2), 0}}},
		{"a port list without 0 rejects ICMP, one with 0 takes it",
			`[{"id": "a", "spec": {"L4": [80]}}, {"id": "b", "spec": {"L4": [0]}}]`,
			[]step{{with(tcp4("1.1.1.1", "2.2.2.2", 0, 0), func(f *testframes.Frame) { f.Proto = uint8(sdk.TransportICMP) }), 2},
				{ip6("fd00::1", "fd00::2", sdk.TransportICMPv6, 0, 0), 2}, {tcp4("1.1.1.1", "2.2.2.2", 5000, 80), 1}}},
		{"port ranges are inclusive at both ends; excluded ports win",
			`[{"id": "a", "spec": {"L4Range": ["1000-2000"], "L4Miss": [1500]}}]`,
			[]step{{tcp4("1.1.1.1", "2.2.2.2", 999, 999), 0}, {tcp4("1.1.1.1", "2.2.2.2", 999, 1000), 1},
				{tcp4("1.1.1.1", "2.2.2.2", 2000, 3), 1}, {tcp4("1.1.1.1", "2.2.2.2", 2001, 3), 0},
				{tcp4("1.1.1.1", "2.2.2.2", 1200, 1500), 0}}},
		{"transports",
			`[{"id": "a", "spec": {"L4CLASS": ["UDP", "SCTP"]}}]`,
			[]step{{tcp4("1.1.1.1", "2.2.2.2", 1, 2), 0},
				{with(tcp4("1.1.1.1", "2.2.2.2", 1, 2), func(f *testframes.Frame) { f.Proto = uint8(sdk.TransportSCTP) }), 1},
				{ip6("fd00::1", "fd00::2", sdk.TransportUDP, 1, 2), 1}}},
		{"a later fragment whose first fragment was not seen skips the port conditions only",
			`[{"id": "a", "spec": {"L4": [53], "L3Match": ["10.0.0.0/8"]}}, {"id": "b", "spec": {"L4Miss": [9]}}]`,
			[]step{{later4(tcp4("10.0.0.1", "192.0.2.1", 9, 9)), 3}, {later4(tcp4("192.0.2.2", "192.0.2.1", 9, 9)), 2},
				{later6(ip6("fd00::1", "fd00::2", sdk.TransportUDP, 9, 9)), 2}}},
		{"a later fragment takes the ports of its first fragment, even when the first was filtered",
			`[{"id": "a", "spec": {"L4Miss": [22]}}, {"id": "b", "spec": {"L4": [53]}}]`,
			[]step{{first4(tcp4("10.0.0.1", "10.0.0.2", 22, 40000)), 0}, {later4(tcp4("10.0.0.1", "10.0.0.2", 22, 40000)), 0},
				{first6(ip6("fd00::1", "fd00::2", sdk.TransportUDP, 5353, 53)), 3},
				{later6(ip6("fd00::1", "fd00::2", sdk.TransportUDP, 5353, 53)), 3},
				{first4(with(tcp4("10.0.0.3", "10.0.0.4", 0, 0), func(f *testframes.Frame) { f.Proto = uint8(sdk.TransportICMP) })), 1},
				{later4(with(tcp4("10.0.0.3", "10.0.0.4", 0, 0), func(f *testframes.Frame) { f.Proto = uint8(sdk.TransportICMP) })), 1}}},
		{"IPv6 extension headers before the transport",
			`[{"id": "a", "spec": {"L4": [443]}}]`,
			[]step{{with(ip6("fd00::1", "fd00::2", sdk.TransportTCP, 5, 443), func(f *testframes.Frame) {
				f.Ext = []testframes.ExtHeader{{Type: 0, Size: 8}, {Type: 43, Size: 24}, {Type: 51, Size: 16}, {Type: 60, Size: 8}}
			}), 1}, {with(ip6("fd00::1", "fd00::2", sdk.TransportTCP, 5, 444), func(f *testframes.Frame) {
				f.Ext = []testframes.ExtHeader{{Type: 0, Size: 8}, {Type: 60, Size: 16}}
			}), 0}}},
		{"VLAN tags and IPv4 options",
			`[{"id": "a", "spec": {"L3": ["10.0.0.1"], "L4": [2]}}]`,
			[]step{{with(tcp4("10.0.0.1", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.Tags = []uint16{0x8100} }), 1},
				{with(tcp4("10.0.0.2", "10.0.0.1", 1, 2), func(f *testframes.Frame) { f.Tags = []uint16{0x88a8, 0x8100}; f.Options = 40 }), 1},
				{with(tcp4("10.0.0.3", "10.0.0.2", 1, 2), func(f *testframes.Frame) { f.Tags = []uint16{0x9100, 0x8100}; f.Options = 8 }), 0}}},
		{"interface patterns: only those naming the loopback see the test's packets",
			`[{"id": "a", "spec": {"NIC": ["lo"]}}, {"id": "b", "spec": {"NIC": ["eth*"]}},
				{"id": "c", "spec": {"NIC": ["l?", "eth0"]}}, {"id": "d", "spec": {}}]`,
			[]step{{tcp4("10.0.0.1", "10.0.0.2", 1, 2), 0b1101}}},
		{"no subscription: nothing",
			`[]`,
			[]step{{tcp4("10.0.0.1", "10.0.0.2", 1, 2), 0}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			subs, err := sdk.ParseSubscriptions([]byte(c.subs))
			if err != nil {
				t.Fatalf("parsing %s: %v", c.subs, err)
			}
			k.swap(t, subs)
			k.clearFrags(t)
			j := newJudge(k, subs)
			before := k.counters(t)
			for i, s := range c.steps {
				got, _ := j.frame(t, s.f, fmt.Sprintf("frame %d", i))
				if got != s.want {
					t.Errorf("frame %d: the matcher (and the program) say %#b; the case stands for %#b", i, got, s.want)
				}
			}
			j.checkCounters(t, before)
		})
	}
}

// TestKernelSwap swaps two sets in turn through the writer. After each swap the program decides
// by the new set (on frames chosen so that the two sets disagree on many of them), the maps hold
// exactly what Compile gave for the active version, and nothing of the old one is left: no key
// of the tries and the interface map carries its version, and its arrays and set are zero.
func TestKernelSwap(t *testing.T) {
	k := loadKernel(t)
	seed := testSeed(t)
	g := testframes.NewGen(seed)
	a := mustParse(t, `[{"id": "web", "spec": {"L3Match": ["10.0.0.0/8", "2001:db8::/32"], "L3Miss": ["10.0.0.9"],
		"L4": [80, 443], "NIC": ["lo"]}}, {"id": "dns", "spec": {"L4": [53], "L4CLASS": ["UDP"]}},
		{"id": "tcp", "spec": {"L4CLASS": ["TCP"], "L3MissRange": ["fd00::/8"]}}]`)
	b := mustParse(t, `[{"id": "v6", "spec": {"L3Match": ["fd00::/8"], "L3MissRange": ["fd00:1::/32", "10.0.0.0/8"],
		"L4Range": ["1000-2000"]}}, {"id": "elsewhere", "spec": {"NIC": ["eth*"]}},
		{"id": "ssh", "spec": {"L3": ["192.0.2.1", "10.0.0.9"], "L4": [22], "L4Miss": [53]}},
		{"id": "not-tcp", "spec": {"L4CLASS": ["UDP", "SCTP", "ICMP", "ICMPv6"]}}]`)
	var frames []testframes.Frame
	for _, tg := range []*testframes.Targets{testframes.TargetsOf(a), testframes.TargetsOf(b)} {
		for n := 0; n < 300; {
			f, _ := g.Frame(tg, uint32(len(frames)), true)
			repair(&f)
			// Fragments are left out: the fragment memory would carry over from round to round.
			if r := read(f); r.ip && !r.first && !r.later {
				frames = append(frames, f)
				n++
			}
		}
	}
	ma, mb := sdk.NewMatcher(a), sdk.NewMatcher(b)
	differ := 0
	for _, f := range frames {
		r := read(f)
		r.meta.NIC = "lo"
		if ma.Match(&r.meta) != 0 != (mb.Match(&r.meta) != 0) {
			differ++
		}
	}
	if differ < len(frames)/4 {
		t.Fatalf("the two sets disagree on only %d of %d frames: the test would not see a missed swap", differ, len(frames))
	}
	for round, subs := range [][]sdk.Subscription{a, b, a, b} {
		set := Compile(subs, map[string]uint32{"lo": k.lo})
		if err := k.w.Swap(set); err != nil {
			t.Fatalf("round %d: swapping: %v", round, err)
		}
		var cfg kern.CaptureCaptureConfig
		if err := k.objs.Config.Lookup(uint32(0), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Active != k.w.Active() || cfg.Active != uint32(1-round%2) {
			t.Fatalf("round %d: the program reads version %d, the writer says %d, the test expects %d", round, cfg.Active, k.w.Active(), 1-round%2)
		}
		checkVersions(t, k, set, cfg.Active)
		j := newJudge(k, subs)
		for i, f := range frames {
			j.frame(t, f, fmt.Sprintf("round %d, frame %d", round, i))
		}
		t.Logf("round %d (version %d): %d of %d frames matched", round, cfg.Active, j.created, len(frames))
	}
}

// checkVersions checks the filter maps hold set as version active and nothing as the other.
func checkVersions(t *testing.T, k *kernel, set *Set, active uint32) {
	t.Helper()
	old := 1 - active
	v4 := func(m *ebpf.Map, want map[netip.Prefix]uint64, name string) {
		got := map[kern.CaptureLpmV4Key]uint64{}
		var key kern.CaptureLpmV4Key
		var val uint64
		for it := m.Iterate(); it.Next(&key, &val); {
			got[key] = val
		}
		checkKeys(t, name, got, want, func(p netip.Prefix) kern.CaptureLpmV4Key { return v4Key(active, p) },
			func(k kern.CaptureLpmV4Key) uint32 { return k.Version }, active)
	}
	v6 := func(m *ebpf.Map, want map[netip.Prefix]uint64, name string) {
		got := map[kern.CaptureLpmV6Key]uint64{}
		var key kern.CaptureLpmV6Key
		var val uint64
		for it := m.Iterate(); it.Next(&key, &val); {
			got[key] = val
		}
		checkKeys(t, name, got, want, func(p netip.Prefix) kern.CaptureLpmV6Key { return v6Key(active, p) },
			func(k kern.CaptureLpmV6Key) uint32 { return k.Version }, active)
	}
	v4(k.objs.InclV4, set.InclV4, "incl_v4")
	v4(k.objs.ExclV4, set.ExclV4, "excl_v4")
	v6(k.objs.InclV6, set.InclV6, "incl_v6")
	v6(k.objs.ExclV6, set.ExclV6, "excl_v6")
	nics := map[kern.CaptureNicKey]uint64{}
	var nk kern.CaptureNicKey
	var nv uint64
	for it := k.objs.Nics.Iterate(); it.Next(&nk, &nv); {
		nics[nk] = nv
	}
	wantNICs := map[uint32]uint64{}
	for idx, mask := range set.NICs {
		wantNICs[idx] = mask
	}
	checkKeys(t, "nics", nics, wantNICs, func(idx uint32) kern.CaptureNicKey { return kern.CaptureNicKey{Version: active, Ifindex: idx} },
		func(k kern.CaptureNicKey) uint32 { return k.Version }, active)

	arrays := []struct {
		name   string
		m      *ebpf.Map
		shift  uint
		values []uint64
	}{{"protos", k.objs.Protos, 8, set.Protos[:]}, {"port_incl", k.objs.PortIncl, 16, set.PortIncl[:]},
		{"port_excl", k.objs.PortExcl, 16, set.PortExcl[:]}}
	for _, a := range arrays {
		all := readArray(t, a.m)
		n := 1 << a.shift
		for i := range n {
			if got := all[int(active)<<a.shift+i]; got != a.values[i] {
				t.Fatalf("%s[%d] of the active version %d is %#x, Compile gave %#x", a.name, i, active, got, a.values[i])
			}
			if got := all[int(old)<<a.shift+i]; got != 0 {
				t.Fatalf("%s[%d] of the old version %d is %#x, not 0", a.name, i, old, got)
			}
		}
	}
	var fs kern.CaptureFilterSet
	if err := k.objs.Sets.Lookup(old, &fs); err != nil {
		t.Fatal(err)
	}
	if fs != (kern.CaptureFilterSet{}) {
		t.Fatalf("the old version's set is %+v, not empty", fs)
	}
	if err := k.objs.Sets.Lookup(active, &fs); err != nil {
		t.Fatal(err)
	}
	if want := (kern.CaptureFilterSet{AddrAny: set.AddrAny, PortAny: set.PortAny, L7: set.L7, Frames: set.Frames,
		PayloadBytes: set.PayloadBytes}); fs != want {
		t.Fatalf("the active version's set is %+v, Compile gave %+v", fs, want)
	}
}

// checkKeys checks a hash or trie map holds exactly want, under the active version's keys.
func checkKeys[K comparable, W comparable](t *testing.T, name string, got map[K]uint64, want map[W]uint64,
	key func(W) K, version func(K) uint32, active uint32) {
	t.Helper()
	for k := range got {
		if v := version(k); v != active {
			t.Fatalf("%s still holds %+v of version %d; version %d is active", name, k, v, active)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s holds %d keys, Compile gave %d", name, len(got), len(want))
	}
	for w, mask := range want {
		if g, ok := got[key(w)]; !ok || g != mask {
			t.Fatalf("%s[%v] is %#x (present: %v), Compile gave %#x", name, w, g, ok, mask)
		}
	}
}

// readArray reads a whole array map of uint64 values in batches.
func readArray(t *testing.T, m *ebpf.Map) []uint64 {
	t.Helper()
	out := make([]uint64, 0, m.MaxEntries())
	var cursor ebpf.MapBatchCursor
	keys := make([]uint32, 4096)
	vals := make([]uint64, 4096)
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		out = append(out, vals[:n]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			t.Fatalf("reading an array map: %v", err)
		}
	}
	if len(out) != int(m.MaxEntries()) {
		t.Fatalf("read %d entries of an array of %d", len(out), m.MaxEntries())
	}
	return out
}

// bigSet is 1,000 IPv4 CIDRs and 100 port ranges in one subscription, the size the eBPF
// capture's issue benchmarks (the socket filter's tests use the same shape).
func bigSet(g *testframes.Gen) []sdk.Subscription {
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

// benchConv is one conversation of the benchmark's traffic: a frame each way.
type benchConv struct {
	frames [2][]byte
	l4     int // offset of the transport header in the frames
	tcp    bool
	meta   sdk.PacketMeta
	seq    [2]uint32
}

// newBenchConv makes a conversation that big matches (or not, as match says): 70% TCP/IPv4,
// 15% UDP/IPv4, 10% TCP/IPv6, 5% UDP/IPv6, one frame in ten VLAN-tagged.
func newBenchConv(g *testframes.Gen, big *sdk.Matcher, match bool) *benchConv {
	for {
		f := testframes.Frame{EtherType: 0x0800, Proto: uint8(sdk.TransportTCP)}
		switch x := g.R.Float64(); {
		case x < 0.15:
			f.Proto = uint8(sdk.TransportUDP)
		case x < 0.25:
			f.EtherType = 0x86dd
		case x < 0.30:
			f.EtherType, f.Proto = 0x86dd, uint8(sdk.TransportUDP)
		}
		if g.P(0.1) {
			f.Tags = []uint16{0x8100}
		}
		if f.EtherType == 0x0800 {
			f.Src = netip.AddrFrom4([4]byte{byte(g.R.IntN(224)), byte(g.R.IntN(256)), byte(g.R.IntN(256)), byte(g.R.IntN(256))})
			f.Dst = netip.AddrFrom4([4]byte{10, byte(g.R.IntN(256)), byte(g.R.IntN(256)), byte(g.R.IntN(256))})
		} else {
			f.Src, f.Dst = g.Addr(true), g.Addr(true)
		}
		f.Sport, f.Dport = uint16(g.N(1024, 65535)), uint16(g.N(1, 60000))
		c := &benchConv{tcp: f.Proto == uint8(sdk.TransportTCP)}
		c.meta = sdk.PacketMeta{NIC: "lo", Src: f.Src, Dst: f.Dst, Transport: sdk.Transport(f.Proto), SrcPort: f.Sport, DstPort: f.Dport}
		if (big.Match(&c.meta) != 0) != match {
			continue
		}
		c.l4 = 14 + 4*len(f.Tags) + 20
		if f.EtherType == 0x86dd {
			c.l4 = 14 + 4*len(f.Tags) + 40
		}
		f.Payload = testframes.Pick(g, []int{0, 0, 100, 500, 1400})
		c.frames[0] = f.Build()
		f.Src, f.Dst, f.Sport, f.Dport = f.Dst, f.Src, f.Dport, f.Sport
		f.Payload = testframes.Pick(g, []int{0, 0, 100, 500, 1400})
		c.frames[1] = f.Build()
		return c
	}
}

// packet is the conversation's next frame from dir: TCP carries ACK (and PSH with data) and
// sequence numbers that advance, as established traffic does.
func (c *benchConv) packet(dir int) []byte {
	fr := c.frames[dir]
	if c.tcp {
		l4 := fr[c.l4:]
		binary.BigEndian.PutUint32(l4[4:], c.seq[dir])
		l4[13] = 0x10
		if n := len(l4) - 20; n > 0 {
			l4[13] |= 0x08
			c.seq[dir] += uint32(n)
		}
	}
	return fr
}

// BenchmarkProgram measures what the program itself costs per packet, from the kernel's own
// run-time statistics (enabled for the benchmark's duration, as kernel.bpf_stats_enabled does):
// the time spent in the program, its helpers and its map operations. BPF_PROG_TEST_RUN's own
// work (copying the frame in, building the skb, the system call) is outside that figure; the
// benchmark's ns/op, the wall time per test run, has it.
//
// The traffic: 1,000 established conversations carry 7 packets in 8 (both ways, TCP with data and
// ACKs); the eighth starts a conversation, one in two of them outside the large set (filtered
// there: no flow is made, the program decides anew on every such packet). The flows of new
// conversations are deleted after each block, so they are new every time.
func BenchmarkProgram(b *testing.B) {
	k := loadKernel(b)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Skipf("enabling the kernel's BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	rd, err := ringbuf.NewReader(k.objs.Events)
	if err != nil {
		b.Fatalf("opening the event ring: %v", err)
	}
	defer rd.Close()

	g := testframes.NewGen(1)
	big := bigSet(g)
	mbig := sdk.NewMatcher(big)
	var established, starts, outside []*benchConv
	for range 1000 {
		established = append(established, newBenchConv(g, mbig, true))
	}
	for range 256 {
		starts = append(starts, newBenchConv(g, mbig, true))
		outside = append(outside, newBenchConv(g, mbig, false))
	}

	for _, c := range []struct {
		name string
		subs []sdk.Subscription
	}{
		{"1000-cidrs-100-ranges", big},
		{"default", []sdk.Subscription{{ID: "default"}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			k.swap(b, c.subs)
			m := sdk.NewMatcher(c.subs)
			k.emptyFlows(b)
			for _, conv := range established {
				for dir := range 2 {
					if _, err := k.objs.QuanyuCapture.Run(&ebpf.RunOptions{Data: conv.packet(dir)}); err != nil {
						b.Fatal(err)
					}
				}
			}
			if n := k.countFlows(b); n != len(established) {
				b.Fatalf("%d flows for %d established conversations", n, len(established))
			}
			k.drain(b, rd)
			const block = 64
			type class struct {
				name       string
				ns, n      uint64
				convs      []*benchConv
				deleteFlow bool
			}
			classes := []*class{{name: "established"}, {name: "new", convs: starts, deleteFlow: true},
				{name: "filtered", convs: outside, deleteFlow: true}}
			if m.Match(&outside[0].meta) != 0 {
				classes[2].name = "new-outside-the-large-set"
			}
			prog := k.objs.QuanyuCapture
			before := progStats(b, prog)
			last := before
			b.ResetTimer()
			var next, nextNew [3]int
			for i := 0; i < b.N; {
				// Blocks of one class, in the ratio 14:1:1, so that the statistics read between
				// blocks tell the classes apart.
				ci := 0
				switch (i / block) % 16 {
				case 7:
					ci = 1
				case 15:
					ci = 2
				}
				cl := classes[ci]
				var made []kern.CaptureFlowKey
				for j := 0; j < block && i < b.N; j, i = j+1, i+1 {
					var frame []byte
					if ci == 0 {
						conv := established[next[0]%len(established)]
						frame = conv.packet(next[0] / len(established) % 2)
						next[0]++
					} else {
						conv := cl.convs[nextNew[ci]%len(cl.convs)]
						nextNew[ci]++
						frame = conv.frames[0]
						made = append(made, wantKey(&conv.meta, k.lo))
					}
					if _, err := prog.Run(&ebpf.RunOptions{Data: frame}); err != nil {
						b.Fatal(err)
					}
				}
				now := progStats(b, prog)
				cl.ns += uint64(now.Runtime - last.Runtime)
				cl.n += now.RunCount - last.RunCount
				last = now
				if cl.deleteFlow {
					b.StopTimer()
					for _, key := range made {
						if err := k.objs.Flows.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
							b.Fatal(err)
						}
					}
					k.drain(b, rd)
					b.StartTimer()
				}
			}
			b.StopTimer()
			after := progStats(b, prog)
			runs := after.RunCount - before.RunCount
			if runs != uint64(b.N) {
				b.Fatalf("the kernel counted %d runs for %d test runs", runs, b.N)
			}
			b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(runs), "prog-ns/pkt")
			for _, cl := range classes {
				if cl.n > 0 {
					b.ReportMetric(float64(cl.ns)/float64(cl.n), cl.name+"-ns/pkt")
				}
			}
			// The same established-flow packet repeated inside one test run: the kernel's own
			// timing of its test-run loop against the run-time statistics for those runs.
			frame := established[0].frames[0]
			s0 := progStats(b, prog)
			_, d, err := prog.Benchmark(frame, 10000, nil)
			if err != nil {
				b.Fatal(err)
			}
			s1 := progStats(b, prog)
			b.ReportMetric(float64(d.Nanoseconds()), "repeat-testrun-ns/pkt")
			b.ReportMetric(float64(s1.Runtime-s0.Runtime)/float64(s1.RunCount-s0.RunCount), "repeat-prog-ns/pkt")
			// What the statistics themselves add: a program that only returns, timed the same way.
			b.ReportMetric(emptyProgramNs(b, frame), "empty-prog-ns/pkt")
		})
	}
}

// emptyProgramNs is the run time the kernel's statistics give a TC program that does nothing:
// the cost of the accounting (two clock reads around every run), which every figure includes.
func emptyProgramNs(b *testing.B, frame []byte) float64 {
	b.Helper()
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		b.Fatalf("loading an empty program: %v", err)
	}
	defer empty.Close()
	s0 := progStats(b, empty)
	if _, _, err := empty.Benchmark(frame, 10000, nil); err != nil {
		b.Fatal(err)
	}
	s1 := progStats(b, empty)
	return float64(s1.Runtime-s0.Runtime) / float64(s1.RunCount-s0.RunCount)
}

func progStats(b *testing.B, p *ebpf.Program) *ebpf.ProgramStats {
	s, err := p.Stats()
	if err != nil {
		b.Fatalf("reading the program's run-time statistics: %v", err)
	}
	return s
}

func (k *kernel) countFlows(b *testing.B) int {
	n := 0
	var key kern.CaptureFlowKey
	var vals []kern.CaptureFlowStats
	for it := k.objs.Flows.Iterate(); it.Next(&key, &vals); {
		n++
	}
	return n
}

func (k *kernel) emptyFlows(b *testing.B) {
	var keys []kern.CaptureFlowKey
	var key kern.CaptureFlowKey
	var vals []kern.CaptureFlowStats
	for it := k.objs.Flows.Iterate(); it.Next(&key, &vals); {
		keys = append(keys, key)
	}
	for _, key := range keys {
		if err := k.objs.Flows.Delete(key); err != nil {
			b.Fatal(err)
		}
	}
}

// drain reads every event waiting in the ring, as the capture's reader would, so that the
// program never finds the ring full.
func (k *kernel) drain(b *testing.B, rd *ringbuf.Reader) {
	rd.SetDeadline(time.Now())
	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			b.Fatalf("reading the event ring: %v", err)
		}
	}
}
