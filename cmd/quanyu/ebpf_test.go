package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/quanyu/quanyu/sdk"
)

// ping sends echo requests from a to b; b's kernel answers them.
func (l *lab) ping(t *testing.T, n int) {
	t.Helper()
	if err := l.a.Do(func() error {
		c, err := icmp.ListenPacket("ip4:icmp", l.ipA.String())
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < n; i++ {
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 7, Seq: i, Data: []byte("quanyu")}}
			raw, err := msg.Marshal(nil)
			if err != nil {
				return err
			}
			if _, err := c.WriteTo(raw, &net.IPAddr{IP: l.ipB.AsSlice()}); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 1500)
			if _, _, err := c.ReadFrom(buf); err != nil {
				return fmt.Errorf("no echo reply: %w", err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Acceptance (eBPF 1): both backends watch the same interface at once and report the same
// conversations: endpoints, transport, per-direction packets and IP bytes, and TCP flags.
func TestBackendsAgree(t *testing.T) {
	l := newLab(t)
	mmap := startAgent(t, l.a, l.la.Name, "--capture", "mmap")
	ebpf := startAgent(t, l.a, l.la.Name, "--capture", "ebpf")
	tr := traffic{udpPort: 5300, udpDatagrams: 40, udpPayload: 200, tcpPorts: []int{8000, 8443},
		connsPerPort: 3, requestBytes: 3000, responseBytes: 50000}
	tr.send(t, l)
	l.ping(t, 5)
	time.Sleep(300 * time.Millisecond)
	fromMmap, fromEBPF := conversations(mmap.stop(t).flows), conversations(ebpf.stop(t).flows)
	if len(fromMmap) != 1+2*3+1 {
		t.Errorf("mmap recorded %d conversations, want %d (UDP, 6 TCP, ICMP)", len(fromMmap), 1+2*3+1)
	}
	for k, m := range fromMmap {
		e, ok := fromEBPF[k]
		if !ok {
			t.Errorf("%s: recorded by mmap only", k)
			continue
		}
		if m.c2s != e.c2s || m.s2c != e.s2c || m.flags != e.flags || m.transport != e.transport {
			t.Errorf("%s: mmap %+v/%+v %v, ebpf %+v/%+v %v", k, m.c2s, m.s2c, m.flags.Names(), e.c2s, e.s2c, e.flags.Names())
		}
		if m.finals != 1 || e.finals != 1 {
			t.Errorf("%s: final records mmap %d, ebpf %d", k, m.finals, e.finals)
		}
	}
	for k := range fromEBPF {
		if _, ok := fromMmap[k]; !ok {
			t.Errorf("%s: recorded by ebpf only", k)
		}
	}
}

// Acceptance (eBPF 4): with the capabilities BPF needs withheld, the eBPF backend cannot load;
// the agent falls back to AF_PACKET within 5 s, says why in its log and its counters, and
// captures.
func TestFallbackWhenEBPFCannotLoad(t *testing.T) {
	l := newLab(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed to withhold capabilities: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("pipeline:\n  stats_interval: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// CAP_NET_RAW stays (AF_PACKET needs it); what eBPF needs goes, for the agent and its plugins.
	withhold := []string{"setpriv", "--inh-caps=-bpf,-sys_admin,-perfmon", "--bounding-set=-bpf,-sys_admin,-perfmon", "--"}
	quanyu(t) // build first: the clock is for the agent
	start := time.Now()
	agent := startAgentWrapped(t, l.a, l.la.Name, withhold, "--capture", "ebpf", "--config", cfg)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("capturing began %s after start; the fallback should take under 5 s", d)
	}
	if agent.logLines("falling back", "backend=ebpf", "fallback=mmap", "permission denied") != 1 {
		t.Errorf("the log should say the agent fell back and why:\n%s", agent.logText())
	}
	if agent.logLines("msg=capturing", "plugin=capture-mmap") != 1 {
		t.Errorf("capture-mmap is not the one capturing:\n%s", agent.logText())
	}
	tr := traffic{udpPort: 6000, udpDatagrams: 7, udpPayload: 10, tcpPorts: []int{6001}, connsPerPort: 1,
		requestBytes: 1, responseBytes: 1}
	tr.send(t, l)
	recs := agent.stop(t)
	if got := conversations(recs.flows); len(got) != 2 {
		t.Errorf("after falling back: %d conversations, want 2", len(got))
	}
	if recs.stats["agent"].Counters["capture.fallback"] != 1 {
		t.Errorf("the agent's counters do not show the fallback: %v", recs.stats["agent"].Counters)
	}
}

// bpfObjects lists the BPF program and link ids a process holds, from its file descriptors'
// fdinfo: the kernel's own account.
func bpfObjects(t *testing.T, pid int) (progs, links []string) {
	t.Helper()
	infos, err := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range infos {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch k {
			case "prog_id":
				if !strings.Contains(string(raw), "link_type") { // a link's fdinfo names its program too
					progs = append(progs, strings.TrimSpace(v))
				}
			case "link_id":
				links = append(links, strings.TrimSpace(v))
			}
		}
	}
	return progs, links
}

type bpftoolObject struct {
	ID int `json:"id"`
}

// liveIDs is the set of ids bpftool lists for "prog" or "link".
func liveIDs(t *testing.T, what string) map[string]bool {
	t.Helper()
	out, err := exec.Command("bpftool", "-j", what, "show").Output()
	if err != nil {
		t.Fatalf("bpftool %s show: %v", what, err)
	}
	var objs []bpftoolObject
	if err := json.Unmarshal(out, &objs); err != nil {
		t.Fatalf("bpftool %s output: %v", what, err)
	}
	ids := map[string]bool{}
	for _, o := range objs {
		ids[fmt.Sprint(o.ID)] = true
	}
	return ids
}

// Acceptance (eBPF 5): after the agent and its plugin are killed, no program or link of ours is
// left: links are owned by file descriptors, so the kernel removes them with the process.
func TestEBPFLeavesNothingAfterKill(t *testing.T) {
	l := newLab(t)
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Fatalf("bpftool is needed to look at the kernel's programs: %v", err)
	}
	agent := startAgent(t, l.a, l.la.Name, "--capture", "ebpf")
	plugin := pluginPID(t, agent.cmd.Process.Pid, "quanyu-capture-ebpf")
	progs, links := bpfObjects(t, plugin)
	if len(progs) == 0 || len(links) != 2 {
		t.Fatalf("the plugin (pid %d) holds programs %v and links %v; want the capture program and two links (ingress, egress)", plugin, progs, links)
	}
	for what, ids := range map[string][]string{"prog": progs, "link": links} {
		shown := liveIDs(t, what)
		for _, id := range ids {
			if !shown[id] {
				t.Fatalf("bpftool %s show does not list %s %s", what, what, id)
			}
		}
	}
	// SIGKILL the agent: it cannot clean up, and the plugin dies with it (parent-death signal).
	if err := agent.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = agent.cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for ; ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", plugin)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plugin (pid %d) outlived its killed agent", plugin)
		}
	}
	for ; ; time.Sleep(50 * time.Millisecond) {
		var left []string
		for what, ids := range map[string][]string{"prog": progs, "link": links} {
			shown := liveIDs(t, what)
			for _, id := range ids {
				if shown[id] {
					left = append(left, what+" "+id)
				}
			}
		}
		// (This bpftool predates TCX and cannot list TCX attachments by device; the links
		// are the attachments, so their ids are what must vanish.)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after SIGKILL: %v", left)
		}
	}
}

// Acceptance (eBPF 3): the subscription set is swapped (SIGHUP reloads the file) again and again
// while traffic flows; every conversation's records add up to exactly what was sent, none lost
// and none counted twice, and the last records carry the new set's id.
func TestSubscriptionSwapUnderTraffic(t *testing.T) {
	l := newLab(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub.json")
	write := func(id, spec string) {
		t.Helper()
		tmp := sub + ".tmp"
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf(`{"id":%q,"spec":%s}`, id, spec)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, sub); err != nil {
			t.Fatal(err)
		}
	}
	specs := []struct{ id, spec string }{
		{"by-cidr", `{"L3Match":["10.77.0.0/24"]}`},
		{"by-transport", `{"L4CLASS":["TCP","UDP"],"L4Miss":["22"]}`},
		{"by-port", `{"L4Range":["7000-7999"]}`},
	}
	write(specs[0].id, specs[0].spec)
	agent := startAgent(t, l.a, l.la.Name, "--capture", "ebpf", "--subscription", sub)

	// Two streams through every swap: UDP datagrams on one conversation, and one TCP connection
	// carrying data both ways.
	const udpDatagrams = 3000
	var udpConn, tcpConn net.Conn
	var ln net.Listener
	var sink *net.UDPConn
	if err := l.b.Do(func() error {
		var err error
		if sink, err = net.ListenUDP("udp4", &net.UDPAddr{IP: l.ipB.AsSlice(), Port: 7001}); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.ipB, 7002).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	defer ln.Close()
	var echoed sync.WaitGroup
	echoed.Add(1)
	go func() {
		defer echoed.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(c, c)
		c.Close()
	}()
	if err := l.a.Do(func() error {
		var err error
		if udpConn, err = net.Dial("udp4", netip.AddrPortFrom(l.ipB, 7001).String()); err != nil {
			return err
		}
		tcpConn, err = net.Dial("tcp4", netip.AddrPortFrom(l.ipB, 7002).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	udpPort := udpConn.LocalAddr().(*net.UDPAddr).Port
	swaps := 0
	buf := make([]byte, 512)
	for i := 0; i < udpDatagrams; i++ {
		if _, err := udpConn.Write(buf[:100]); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			if _, err := tcpConn.Write(buf); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(tcpConn, buf); err != nil {
				t.Fatal(err)
			}
		}
		if i%500 == 250 {
			s := specs[(swaps+1)%len(specs)]
			write(s.id, s.spec)
			if err := agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			swaps++
			agent.waitLog(t, swaps, 5*time.Second, "subscriptions reloaded")
		}
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	udpConn.Close()
	tcpConn.Close()
	echoed.Wait()
	time.Sleep(300 * time.Millisecond)
	recs := agent.stop(t)
	if swaps < 5 {
		t.Fatalf("only %d swaps happened", swaps)
	}
	var udp, tcp *conversation
	convs := conversations(recs.flows)
	for _, c := range convs {
		switch {
		case c.transport == sdk.TransportUDP && int(c.client.Port) == udpPort:
			udp = c
		case c.transport == sdk.TransportTCP && c.server.Port == 7002:
			tcp = c
		}
	}
	if udp == nil || tcp == nil {
		t.Fatalf("conversations missing after %d swaps: %v", swaps, convs)
	}
	if udp.c2s.Packets != udpDatagrams || udp.c2s.IPBytes != udpDatagrams*(20+8+100) || udp.finals != 1 {
		t.Errorf("UDP: %+v in %d final records; sent %d datagrams of %d IP bytes", udp.c2s, udp.finals, udpDatagrams, 128)
	}
	// The TCP connection carried udpDatagrams/10 exchanges of 512 bytes each way; its packet count
	// depends on the kernel, so hold it to the interface's own counters below instead.
	if tcp.finals != 1 || tcp.c2s.IPBytes < udpDatagrams/10*512 || tcp.s2c.IPBytes < udpDatagrams/10*512 {
		t.Errorf("TCP: %+v / %+v in %d final records", tcp.c2s, tcp.s2c, tcp.finals)
	}
	last := specs[swaps%len(specs)].id
	if udp.subs != last && !strings.Contains(udp.subs, last) {
		t.Errorf("the UDP conversation's last record carries %q, want the last set's id %q", udp.subs, last)
	}
	var buf2 bytes.Buffer
	for _, c := range convs {
		fmt.Fprintf(&buf2, "%v>%v %s %+v/%+v\n", c.client, c.server, c.transport, c.c2s, c.s2c)
	}
	t.Logf("%d swaps; conversations:\n%s", swaps, buf2.String())
}

// Flow events from the kernel (start, end) carry the first bytes of the headers when the
// subscription asks for frames; flows an L7 subscription covers send payload samples.
func TestEBPFEventsWithFrames(t *testing.T) {
	stats := checkEventsWithFrames(t, "ebpf", "capture-ebpf")
	// Each connection's 100-byte request and 300-byte response were sampled for the decoders.
	if stats["samples.kernel"] < 4 || stats["sample_bytes"] != 2*(100+300) {
		t.Errorf("payload samples: %d samples, %d bytes; want 2×(100+300) bytes", stats["samples.kernel"], stats["sample_bytes"])
	}
}

// The AF_PACKET capture gives the same flow events, with the same frames: alert evidence works
// on hosts where eBPF cannot run.
func TestMmapEventsWithFrames(t *testing.T) {
	stats := checkEventsWithFrames(t, "mmap", "capture-mmap")
	if stats["events"] < 4 {
		t.Errorf("the capture counted %d events, want the 4 it sent at least", stats["events"])
	}
}

// checkEventsWithFrames runs an agent with the backend on the lab's link, subscribed to port
// 8088 with frames, makes two HTTP connections and checks their start and end events: only
// those, the start's frames the client's SYN. It gives the capture plugin's last counters.
func checkEventsWithFrames(t *testing.T, backend, plugin string) map[string]uint64 {
	t.Helper()
	l := newLab(t)
	sub := filepath.Join(t.TempDir(), "sub.json")
	if err := os.WriteFile(sub, []byte(`{"id":"frames","options":{"frames":true},"spec":{"L7":["HTTP"],"L4":["8088"]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, l.a, l.la.Name, "--capture", backend, "--subscription", sub)
	tr := traffic{udpPort: 9999, udpDatagrams: 1, udpPayload: 1, tcpPorts: []int{8088}, connsPerPort: 2,
		requestBytes: 100, responseBytes: 300}
	tr.send(t, l)
	time.Sleep(300 * time.Millisecond)
	_ = agent.cmd.Process.Signal(syscall.SIGTERM)
	if err := agent.cmd.Wait(); err != nil {
		t.Fatalf("agent: %v\n%s", err, agent.logText())
	}
	var starts, ends int
	var stats map[string]uint64
	for _, line := range strings.Split(strings.TrimSpace(agent.out.String()), "\n") {
		var rec struct {
			Type     string             `json:"type"`
			Kind     string             `json:"kind"`
			Source   string             `json:"source"`
			Client   struct{ Port int } `json:"client"`
			Server   struct{ Port int } `json:"server"`
			L3       []byte             `json:"l3_frame"`
			L4       []byte             `json:"l4_frame"`
			Subs     []string           `json:"subscriptions"`
			Counters map[string]uint64  `json:"counters"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		switch {
		case rec.Type == "stats" && rec.Source == plugin:
			stats = rec.Counters
		case rec.Type != "event":
			continue
		case rec.Server.Port != 8088:
			t.Errorf("an event for a conversation the subscription leaves out: %s", line)
		case rec.Kind == sdk.EventStart:
			starts++
			// The first packet is the client's SYN: an IPv4 header from a to b, then TCP.
			if len(rec.L3) < 20 || rec.L3[0]>>4 != 4 || !bytes.Equal(rec.L3[12:16], l.ipA.AsSlice()) ||
				!bytes.Equal(rec.L3[16:20], l.ipB.AsSlice()) || len(rec.L4) < 20 || rec.L4[13]&0x02 == 0 {
				t.Errorf("start event frames are not the SYN's headers: %x / %x", rec.L3, rec.L4)
			}
			if len(rec.Subs) != 1 || rec.Subs[0] != "frames" {
				t.Errorf("start event subscriptions %v", rec.Subs)
			}
		case rec.Kind == sdk.EventEnd:
			ends++
		}
	}
	if starts != 2 || ends != 2 {
		t.Errorf("%d start and %d end events for 2 connections", starts, ends)
	}
	if stats == nil {
		t.Fatalf("no counters from %s in the agent's output", plugin)
	}
	return stats
}

// Where TCX is missing the program is attached with TC clsact (forced here); the filters go
// when the capture stops.
func TestEBPFAttachWithTC(t *testing.T) {
	l := newLab(t)
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("plugins:\n  capture-ebpf:\n    attach: tc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, l.a, l.la.Name, "--capture", "ebpf", "--config", cfg)
	if agent.logLines("msg=capturing", "attach=tc") != 1 {
		t.Fatalf("not attached with TC:\n%s", agent.logText())
	}
	for _, dir := range []string{"ingress", "egress"} {
		if out := l.a.Exec(t, "tc", "filter", "show", "dev", l.la.Name, dir); !strings.Contains(out, "quanyu_capture") {
			t.Fatalf("no quanyu_capture filter on %s %s:\n%s", l.la.Name, dir, out)
		}
	}
	tr := traffic{udpPort: 5000, udpDatagrams: 9, udpPayload: 50, tcpPorts: []int{5001}, connsPerPort: 1,
		requestBytes: 10, responseBytes: 10}
	tr.send(t, l)
	recs := agent.stop(t)
	convs := conversations(recs.flows)
	if len(convs) != 2 {
		t.Errorf("%d conversations, want 2", len(convs))
	}
	for k, c := range convs {
		if c.transport == sdk.TransportUDP && c.c2s.Packets != 9 {
			t.Errorf("%s: %+v", k, c.c2s)
		}
	}
	for _, dir := range []string{"ingress", "egress"} {
		if out := l.a.Exec(t, "tc", "filter", "show", "dev", l.la.Name, dir); strings.Contains(out, "quanyu_capture") {
			t.Errorf("a quanyu_capture filter is left on %s %s after the agent stopped:\n%s", l.la.Name, dir, out)
		}
	}
}
