package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/plugintest"
)

// writePcap writes Ethernet frames, one millisecond apart, to a pcap file.
func writePcap(t *testing.T, frames [][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, fr := range frames {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func udpFrame(t *testing.T, src, dst string, sport, dport int, payload int) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(make([]byte, payload)))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// collector is the agent's side of the stream in these tests.
type collector struct {
	mu      sync.Mutex
	batches []*sdk.Batch
}

func (c *collector) Emit(_ context.Context, b *sdk.Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, b)
	return nil
}

// replayThroughPlugin runs the capture behind the real plugin transport on files.
func replayThroughPlugin(t *testing.T, files []string, subs []sdk.Subscription) (*collector, sdk.Health) {
	t.Helper()
	if subs == nil {
		subs = []sdk.Subscription{{ID: "default"}}
	}
	capture := plugintest.Capture(t, New())
	ctx := context.Background()
	if err := capture.Configure(ctx, sdk.CaptureConfig{Files: files, Subscriptions: subs, BatchSize: 512,
		FlushInterval: time.Second, IdleTimeout: time.Minute, ActiveTimeout: time.Minute, MaxFlows: 65536}); err != nil {
		t.Fatal(err)
	}
	var c collector
	if err := capture.Run(ctx, &c); err != nil {
		t.Fatal(err)
	}
	h, err := capture.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &c, h
}

// Records cross to the agent in batches of the configured size, never one at a time.
func TestRecordsLeaveInBatches(t *testing.T) {
	const flows = 2000
	frames := make([][]byte, flows)
	for i := range frames {
		frames[i] = udpFrame(t, "10.1.0.1", "10.1.0.2", 20000+i, 53, 40)
	}
	c, h := replayThroughPlugin(t, []string{writePcap(t, frames)}, nil)
	total := 0
	for i, b := range c.batches {
		total += len(b.Flows)
		if i < len(c.batches)-1 && len(b.Flows) != 512 {
			t.Errorf("batch %d holds %d flows, want 512", i, len(b.Flows))
		}
	}
	if total != flows || len(c.batches) != 4 {
		t.Fatalf("%d flows in %d batches, want %d in 4", total, len(c.batches), flows)
	}
	if h.Counters["batches.sent"] != 4 || h.Counters["records.sent"] != flows || h.Counters["flows.created"] != flows {
		t.Fatalf("counters %v", h.Counters)
	}
}

// Acceptance: malformed packets are counted by reason and never crash the capture; the good
// frames around them are still accounted.
func TestMalformedFramesCountedByReason(t *testing.T) {
	good := udpFrame(t, "10.2.0.1", "10.2.0.2", 1111, 2222, 10)
	ip := func(mut func(ip []byte)) []byte {
		f := append([]byte(nil), good...)
		mut(f[14:])
		return f
	}
	ipv6Loop := func() []byte {
		// An IPv6 packet whose extension headers chain more than the parser walks: destination
		// options pointing at destination options, over and over.
		f := make([]byte, 14+40+8*12)
		copy(f, good[:12])
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		h := f[14:]
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(8*12))
		h[6] = 60 // destination options
		h[7] = 64
		h[8], h[24] = 0xfd, 0xfd
		for i := 0; i < 12; i++ {
			h[40+8*i] = 60
		}
		return f
	}
	frames := [][]byte{
		good,
		good[:10], // cut inside the Ethernet header
		good[:14+12],
		ip(func(h []byte) { h[0] = 0x43 }), // IHL 3: shorter than the fixed header
		ip(func(h []byte) { binary.BigEndian.PutUint16(h[2:], 10) }),         // total length below the header
		ip(func(h []byte) { h[0] = 0x75 }),                                   // version 7
		append(append([]byte(nil), good[:14+20]...), 0x04, 0x57, 0x08, 0xae), // UDP header cut to 4 bytes
		ipv6Loop(),
		good,
	}
	c, h := replayThroughPlugin(t, []string{writePcap(t, frames)}, nil)
	want := map[string]uint64{
		"parse_error.truncated_ethernet":     1,
		"parse_error.truncated_ipv4":         1,
		"parse_error.bad_ipv4_header_length": 1,
		"parse_error.bad_ipv4_total_length":  1,
		"parse_error.bad_ip_version":         1,
		"parse_error.truncated_udp":          1,
		"parse_error.too_many_ipv6_ext":      1,
	}
	for k, v := range want {
		if h.Counters[k] != v {
			t.Errorf("%s = %d, want %d", k, h.Counters[k], v)
		}
	}
	var sum uint64
	for k, v := range h.Counters {
		if strings.HasPrefix(k, "parse_error.") {
			sum += v
		}
	}
	if sum != uint64(len(frames)-2) {
		t.Errorf("%d parse errors for %d malformed frames: %v", sum, len(frames)-2, h.Counters)
	}
	var flows []sdk.Flow
	for _, b := range c.batches {
		flows = append(flows, b.Flows...)
	}
	if len(flows) != 1 || flows[0].ClientToServer.Packets != 2 {
		t.Fatalf("the two good frames should make one flow of 2 packets, got %+v", flows)
	}
}

// A subscription applies to replay as to live capture: records carry its id and nothing else
// is recorded.
func TestReplayAppliesSubscriptions(t *testing.T) {
	frames := [][]byte{
		udpFrame(t, "10.3.0.1", "10.3.0.2", 4000, 53, 10),
		udpFrame(t, "10.3.0.1", "10.3.0.2", 4001, 8080, 10),
		udpFrame(t, "10.9.0.1", "10.3.0.2", 4002, 53, 10),
	}
	subs, err := sdk.ParseSubscriptions([]byte(`{"id":"dns","spec":{"L4":["53"],"L3Miss":["10.9.0.1"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	c, h := replayThroughPlugin(t, []string{writePcap(t, frames)}, subs)
	var flows []sdk.Flow
	for _, b := range c.batches {
		flows = append(flows, b.Flows...)
	}
	if len(flows) != 1 || flows[0].Client.Port != 4000 || strings.Join(flows[0].Subscriptions, ",") != "dns" {
		t.Fatalf("want only 10.3.0.1:4000 → :53 tagged dns, got %+v", flows)
	}
	if h.Counters["filtered"] != 2 {
		t.Errorf("filtered = %d, want 2", h.Counters["filtered"])
	}
}

func TestConfigureRejectsBadOptions(t *testing.T) {
	capture := plugintest.Capture(t, New())
	for _, tc := range []struct{ options, path string }{
		{`{"block_size":1000}`, "plugins.capture-mmap.block_size"},
		{`{"num_blocks":1}`, "plugins.capture-mmap.num_blocks"},
		{`{"block_timeout_ms":0}`, "plugins.capture-mmap.block_timeout_ms"},
		{`{"blocksize":4096}`, "plugins.capture-mmap"},
	} {
		err := capture.Configure(context.Background(), sdk.CaptureConfig{Options: []byte(tc.options),
			Subscriptions: []sdk.Subscription{{ID: "default"}}})
		if !errors.Is(err, sdk.ErrRejected) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("options %s: want a rejection naming %s, got %v", tc.options, tc.path, err)
		}
	}
	if err := capture.Run(context.Background(), &collector{}); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("Run before a valid Configure: %v", err)
	}
}
