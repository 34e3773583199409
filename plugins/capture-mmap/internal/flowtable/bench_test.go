package flowtable

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/packet"
	"github.com/quanyu/quanyu/sdk"
)

// trace is a capture laid out as the AF_PACKET ring holds it: frames back to back in one buffer
// (128-byte slots, the snap length), read in order.
type trace struct {
	buf  []byte
	lens []int
}

const slot = 128

func (tr *trace) frame(i int) []byte {
	i &= len(tr.lens) - 1
	return tr.buf[i*slot : i*slot+tr.lens[i]]
}

// benchTrace builds a packet trace with the shape of a busy host: concurrent conversations, each a
// whole life (TCP: handshake, requests and responses, FIN both ways and the last ACK; UDP: queries
// and answers), 70% TCP over IPv4, 15% TCP over IPv6, 15% UDP. A conversation averages about 20
// packets, so about one packet in 20 starts a new flow and the rest belong to flows the table
// holds. Packets come in trains, as they do on the wire: a conversation picked at random sends
// 1 to 7 packets in a row (4 on average) before another one's turn; trains = 1 gives no locality
// at all. packets must be a power of two.
func benchTrace(tb testing.TB, packets, concurrent, trains int) *trace {
	tb.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	type conv struct {
		cli, srv    netip.AddrPort
		udp         bool
		step, total int
		cseq, sseq  uint32
	}
	next := 0
	start := func() conv {
		next++
		c := conv{total: 8 + rng.IntN(25), cseq: rng.Uint32(), sseq: rng.Uint32()}
		host := netip.AddrFrom4([4]byte{10, byte(next >> 16), byte(next >> 8), byte(next)})
		srv := netip.AddrFrom4([4]byte{192, 0, 2, byte(next % 50)})
		switch k := rng.IntN(100); {
		case k < 15:
			var a, s [16]byte
			a[0], a[1], a[12], a[13], a[14], a[15] = 0x20, 0x01, byte(next>>24), byte(next>>16), byte(next>>8), byte(next)
			s[0], s[1], s[15] = 0x20, 0x01, byte(next%50)
			host, srv = netip.AddrFrom16(a), netip.AddrFrom16(s)
		case k < 30:
			c.udp = true
		}
		c.cli = netip.AddrPortFrom(host, uint16(20000+next%40000))
		c.srv = netip.AddrPortFrom(srv, 443)
		if c.udp {
			c.srv = netip.AddrPortFrom(srv, 53)
		}
		return c
	}
	convs := make([]conv, concurrent)
	for i := range convs {
		convs[i] = start()
	}
	tr := &trace{buf: make([]byte, packets*slot), lens: make([]int, packets)}
	n := 0
	for n < packets {
		c := &convs[rng.IntN(concurrent)]
		burst := 1
		if trains > 1 {
			burst = 1 + rng.IntN(2*trains-1)
		}
		for ; burst > 0 && n < packets; burst-- {
			var f []byte
			switch {
			case c.udp && c.step%2 == 0:
				f = udpFrame(tb, c.cli, c.srv, 40)
			case c.udp:
				f = udpFrame(tb, c.srv, c.cli, 200)
			case c.step == 0:
				f = tcpFrame(tb, c.cli, c.srv, fSYN, c.cseq, 0, 0)
				c.cseq++
			case c.step == 1:
				f = tcpFrame(tb, c.srv, c.cli, fSYN|fACK, c.sseq, c.cseq, 0)
				c.sseq++
			case c.step == c.total-3:
				f = tcpFrame(tb, c.cli, c.srv, fFIN|fACK, c.cseq, c.sseq, 0)
				c.cseq++
			case c.step == c.total-2:
				f = tcpFrame(tb, c.srv, c.cli, fFIN|fACK, c.sseq, c.cseq, 0)
				c.sseq++
			case c.step == c.total-1 || c.step == 2:
				f = tcpFrame(tb, c.cli, c.srv, fACK, c.cseq, c.sseq, 0)
			case c.step%2 == 1:
				f = tcpFrame(tb, c.cli, c.srv, fACK|fPSH, c.cseq, c.sseq, 300)
				c.cseq += 300
			default:
				f = tcpFrame(tb, c.srv, c.cli, fACK|fPSH, c.sseq, c.cseq, 1400)
				c.sseq += 1400
			}
			tr.lens[n] = copy(tr.buf[n*slot:(n+1)*slot], f)
			n++
			c.step++
			if c.step == c.total {
				*c = start()
				break
			}
		}
	}
	return tr
}

// runTable replays a trace through a table with the default configuration (65536 flows) at
// 200 000 packets a second of packet time, with a Tick every 2^15 packets (about 160 ms). One pass
// over the trace warms the table up to its steady state before the clock starts. Records that
// flows emit are part of the cost; "records/op" and the exact "allocs/pkt" (allocs/op is rounded
// down to an integer) are reported with it.
func runTable(b *testing.B, tr *trace) {
	var records int
	tbl, err := New(DefaultConfig(), sdk.NewMatcher([]sdk.Subscription{{ID: "web", Spec: sdk.Spec{L4: []uint16{443}}},
		{ID: "dns", Spec: sdk.Spec{L4: []uint16{53}}}}), func(sdk.Flow) { records++ })
	if err != nil {
		b.Fatal(err)
	}
	ts := base
	for i := range tr.lens {
		ts = ts.Add(5 * time.Microsecond)
		tbl.AddFrame(1, "eth0", ts, tr.frame(i), packet.NoVLAN)
		if i&(1<<15-1) == 0 {
			tbl.Tick(ts)
		}
	}
	records = 0
	// Building the trace left garbage behind; collect it now rather than in the measurement.
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		ts = ts.Add(5 * time.Microsecond)
		tbl.AddFrame(1, "eth0", ts, tr.frame(i), packet.NoVLAN)
		if i&(1<<15-1) == 0 {
			tbl.Tick(ts)
		}
		i++
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(records)/float64(i), "records/op")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(i), "allocs/pkt")
	if c := tbl.Counters(); c["packets"] != c["frames"] {
		b.Fatalf("every frame of the trace should be accounted: %v", c)
	}
}

// BenchmarkTable is the capture's per-packet cost, decode plus flow accounting, over a trace of
// 256 Ki packets from 5000 concurrent conversations in trains of 4 on average, about one new flow
// in 20 packets.
func BenchmarkTable(b *testing.B) {
	runTable(b, benchTrace(b, 1<<18, 5000, 4))
}

// BenchmarkTableNoLocality is the same without trains: every packet belongs to a conversation
// picked at random, the worst case for the caches.
func BenchmarkTableNoLocality(b *testing.B) {
	runTable(b, benchTrace(b, 1<<18, 5000, 1))
}

// BenchmarkTableEstablished is the packet path alone: 5000 established TCP flows carrying data
// in trains, no flow starting or ending, so no records and no allocation at all.
func BenchmarkTableEstablished(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 5))
	const flows = 5000
	tr := &trace{buf: make([]byte, (1<<18)*slot), lens: make([]int, 1<<18)}
	seq := make([]uint32, flows)
	for n := 0; n < len(tr.lens); {
		i := rng.IntN(flows)
		cli := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), uint16(30000+i))
		for burst := 1 + rng.IntN(7); burst > 0 && n < len(tr.lens); burst-- {
			f := tcpFrame(b, ap("192.0.2.1:443"), cli, fACK|fPSH, seq[i], 1, 1400)
			seq[i] += 1400
			tr.lens[n] = copy(tr.buf[n*slot:(n+1)*slot], f)
			n++
		}
	}
	tbl, err := New(DefaultConfig(), matchAll(), func(sdk.Flow) { b.Fatal("a record in the steady state") })
	if err != nil {
		b.Fatal(err)
	}
	for i := range tr.lens {
		tbl.AddFrame(1, "eth0", base, tr.frame(i), packet.NoVLAN)
	}
	runtime.GC() // the garbage of building the trace, outside the measurement
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tbl.AddFrame(1, "eth0", base, tr.frame(i), packet.NoVLAN)
		i++
	}
}
