package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testnet"
	"github.com/quanyu/quanyu/sdk"
)

// lab is two network namespaces joined by a veth pair: a (10.77.0.1) and b (10.77.0.2). The agent
// runs in a and watches a's end.
type lab struct {
	a, b   *testnet.NS
	la, lb *testnet.Link
	ipA    netip.Addr
	ipB    netip.Addr
}

func newLab(t testing.TB) *lab {
	testnet.RequireRoot(t)
	l := &lab{a: testnet.NewNS(t, "a"), b: testnet.NewNS(t, "b"),
		ipA: netip.MustParseAddr("10.77.0.1"), ipB: netip.MustParseAddr("10.77.0.2")}
	l.la, l.lb = testnet.Veth(t, l.a, "10.77.0.1/24", l.b, "10.77.0.2/24")
	return l
}

// agentProc is a running `quanyu agent`: its stdout (records) and stderr (log) are collected.
type agentProc struct {
	cmd    *exec.Cmd
	out    syncBuffer
	mu     sync.Mutex
	log    strings.Builder
	logged chan struct{} // pulsed on every log line
}

// startAgent runs the agent inside a namespace and waits until it captures on nic.
func startAgent(t testing.TB, ns *testnet.NS, nic string, args ...string) *agentProc {
	t.Helper()
	return startAgentWrapped(t, ns, nic, nil, args...)
}

// startAgentWrapped is startAgent with the agent run under a wrapper command (setpriv).
func startAgentWrapped(t testing.TB, ns *testnet.NS, nic string, wrapper []string, args ...string) *agentProc {
	t.Helper()
	bin := quanyu(t) // builds, and carries QUANYU_AGENT_PLUGIN_DIR
	full := append([]string{"netns", "exec", ns.Name}, wrapper...)
	full = append(full, bin.Path, "agent", "--nic", nic)
	full = append(full, args...)
	cmd := exec.Command("ip", full...)
	cmd.Env = bin.Env
	return runAgentCmd(t, cmd, nic)
}

// runAgentCmd starts an agent command, collects its output and log, and waits until it captures on
// nic; the agent is killed when the test ends.
func runAgentCmd(t testing.TB, cmd *exec.Cmd, nic string) *agentProc {
	t.Helper()
	p := &agentProc{cmd: cmd, logged: make(chan struct{}, 1)}
	p.cmd.Stdout = &p.out
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	go p.collectLog(stderr)
	p.waitLog(t, 1, 20*time.Second, "msg=capturing", "nic="+nic)
	return p
}

// collectLog keeps the agent's log and signals every new line.
func (p *agentProc) collectLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.log.WriteString(sc.Text() + "\n")
		p.mu.Unlock()
		select {
		case p.logged <- struct{}{}:
		default:
		}
	}
}

func (p *agentProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// logLines counts the log lines that contain every one of parts (attributes forwarded from a
// plugin come in no fixed order).
func (p *agentProc) logLines(parts ...string) int {
	n := 0
	for _, line := range strings.Split(p.logText(), "\n") {
		all := true
		for _, s := range parts {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// waitLog waits until at least n log lines contain every one of parts.
func (p *agentProc) waitLog(t testing.TB, n int, timeout time.Duration, parts ...string) {
	t.Helper()
	deadline := time.After(timeout)
	for p.logLines(parts...) < n {
		select {
		case <-p.logged:
		case <-deadline:
			t.Fatalf("agent log has %d lines with %q, want %d, after %s:\n%s", p.logLines(parts...), parts, n, timeout, p.logText())
		}
	}
}

// syncBuffer is a buffer written by the command's output copier and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

func (b *syncBuffer) String() string { return string(b.Bytes()) }

// stop ends the agent with SIGTERM (it flushes every flow as final) and returns its records.
func (p *agentProc) stop(t testing.TB) records {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exited with %v:\n%s", err, p.logText())
		}
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatalf("agent did not stop within 20s of SIGTERM:\n%s", p.logText())
	}
	return parseRecords(t, p.out.Bytes())
}

// traffic is what the test sends from a to b: UDP datagrams and TCP connections on two ports.
type traffic struct {
	udpPort       int
	udpDatagrams  int
	udpPayload    int
	tcpPorts      []int
	connsPerPort  int
	requestBytes  int
	responseBytes int
}

// send runs servers in b and clients in a and returns the client ports used, by server port.
func (tr traffic) send(t *testing.T, l *lab) map[int][]int {
	t.Helper()
	clientPorts := map[int][]int{}
	var servers []io.Closer
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	// UDP: a server that only counts, so every datagram goes one way.
	var udpConn *net.UDPConn
	if err := l.b.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: l.ipB.AsSlice(), Port: tr.udpPort})
		udpConn = c
		return err
	}); err != nil {
		t.Fatal(err)
	}
	servers = append(servers, udpConn)
	var wg sync.WaitGroup
	for _, port := range tr.tcpPorts {
		var ln net.Listener
		if err := l.b.Do(func() error {
			var err error
			ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.ipB, uint16(port)).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		servers = append(servers, ln)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				buf := make([]byte, tr.requestBytes)
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write(bytes.Repeat([]byte{'r'}, tr.responseBytes))
				}
				c.Close()
			}
		}()
	}
	if err := l.a.Do(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: l.ipB.AsSlice(), Port: tr.udpPort})
		if err != nil {
			return err
		}
		defer c.Close()
		clientPorts[tr.udpPort] = []int{c.LocalAddr().(*net.UDPAddr).Port}
		payload := bytes.Repeat([]byte{'u'}, tr.udpPayload)
		for i := 0; i < tr.udpDatagrams; i++ {
			if _, err := c.Write(payload); err != nil {
				return err
			}
		}
		for _, port := range tr.tcpPorts {
			for i := 0; i < tr.connsPerPort; i++ {
				c, err := net.Dial("tcp4", netip.AddrPortFrom(l.ipB, uint16(port)).String())
				if err != nil {
					return err
				}
				clientPorts[port] = append(clientPorts[port], c.LocalAddr().(*net.TCPAddr).Port)
				if _, err := c.Write(bytes.Repeat([]byte{'q'}, tr.requestBytes)); err != nil {
					return err
				}
				got, err := io.ReadAll(c)
				if err != nil || len(got) != tr.responseBytes {
					return fmt.Errorf("tcp exchange: got %d bytes, %v", len(got), err)
				}
				c.Close()
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Let the last FIN/ACKs cross before anyone reads counters.
	time.Sleep(300 * time.Millisecond)
	return clientPorts
}

// conversations sums an agent's flow records per conversation (client endpoint, server endpoint,
// transport), as a user would.
type conversation struct {
	transport      sdk.Transport
	client, server sdk.Endpoint
	c2s, s2c       sdk.Counts
	flags          sdk.TCPFlags
	finals         int
	subs           string
}

func conversations(flows []sdk.Flow) map[string]*conversation {
	out := map[string]*conversation{}
	for _, f := range flows {
		k := fmt.Sprintf("%s %v>%v", f.Transport, f.Client, f.Server)
		c := out[k]
		if c == nil {
			c = &conversation{transport: f.Transport, client: f.Client, server: f.Server}
			out[k] = c
		}
		c.c2s = c.c2s.Add(f.ClientToServer)
		c.s2c = c.s2c.Add(f.ServerToClient)
		c.flags |= f.TCPFlags
		c.subs = strings.Join(f.Subscriptions, ",")
		if f.Final {
			c.finals++
		}
	}
	return out
}

// Acceptance: known traffic between two namespaces appears exactly in the records and in the
// kernel's interface counters; a subscription that leaves out one port removes exactly those
// flows.
func TestLiveCaptureMatchesSentTraffic(t *testing.T) {
	for _, backend := range []string{"mmap", "ebpf"} {
		t.Run(backend, func(t *testing.T) { testLiveCapture(t, backend) })
	}
}

func testLiveCapture(t *testing.T, backend string) {
	l := newLab(t)
	tr := traffic{udpPort: 5353, udpDatagrams: 50, udpPayload: 300, tcpPorts: []int{8080, 9090},
		connsPerPort: 4, requestBytes: 1000, responseBytes: 20000}

	agent := startAgent(t, l.a, l.la.Name, "--capture", backend)
	before := l.la.Counters(t)
	ports := tr.send(t, l)
	after := l.la.Counters(t)
	recs := agent.stop(t)
	kernel := after.Sub(before)

	convs := conversations(recs.flows)
	if len(convs) != 1+len(tr.tcpPorts)*tr.connsPerPort {
		for k := range convs {
			t.Log(k)
		}
		t.Fatalf("%d conversations recorded, want %d", len(convs), 1+len(tr.tcpPorts)*tr.connsPerPort)
	}
	var sum sdk.Counts
	for k, c := range convs {
		if c.client.Addr != l.ipA || c.server.Addr != l.ipB {
			t.Errorf("%s: client should be a (%v) and server b (%v)", k, l.ipA, l.ipB)
		}
		if c.finals != 1 {
			t.Errorf("%s: %d final records, want 1", k, c.finals)
		}
		if c.subs != "default" {
			t.Errorf("%s: subscriptions %q, want default", k, c.subs)
		}
		sum = sum.Add(c.c2s).Add(c.s2c)
		switch c.transport {
		case sdk.TransportUDP:
			want := sdk.Counts{Packets: uint64(tr.udpDatagrams), IPBytes: uint64(tr.udpDatagrams * (20 + 8 + tr.udpPayload))}
			if c.c2s != want || c.s2c != (sdk.Counts{}) {
				t.Errorf("UDP: %+v / %+v, want %+v one way", c.c2s, c.s2c, want)
			}
			if int(c.client.Port) != ports[tr.udpPort][0] || int(c.server.Port) != tr.udpPort {
				t.Errorf("UDP endpoints %v > %v", c.client, c.server)
			}
		case sdk.TransportTCP:
			if !contains(ports[int(c.server.Port)], int(c.client.Port)) {
				t.Errorf("%s: a connection the test did not make", k)
			}
			for _, f := range []sdk.TCPFlags{sdk.FlagSYN, sdk.FlagACK, sdk.FlagFIN} {
				if c.flags&f == 0 {
					t.Errorf("%s: flags %v lack %v", k, c.flags.Names(), f.Names())
				}
			}
			// Payload plus at least a 20-byte IP and 20-byte TCP header per packet.
			if c.c2s.IPBytes < uint64(tr.requestBytes)+40*c.c2s.Packets || c.s2c.IPBytes < uint64(tr.responseBytes)+40*c.s2c.Packets {
				t.Errorf("%s: %+v / %+v cannot carry %d / %d payload bytes", k, c.c2s, c.s2c, tr.requestBytes, tr.responseBytes)
			}
		default:
			t.Errorf("%s: unexpected transport", k)
		}
	}
	// The kernel's own counters for the interface: every packet it carried is in a record, and
	// IP bytes plus a 14-byte Ethernet header per packet are its link bytes.
	if want := kernel.RXPackets + kernel.TXPackets; sum.Packets != want {
		t.Errorf("records hold %d packets, the interface carried %d", sum.Packets, want)
	}
	if want := kernel.RXBytes + kernel.TXBytes; sum.IPBytes+14*sum.Packets != want {
		t.Errorf("records hold %d IP bytes (+%d link), the interface carried %d bytes", sum.IPBytes, 14*sum.Packets, want)
	}
	capture, ok := recs.stats["capture-"+backend]
	if !ok {
		t.Fatalf("no stats from capture-%s: %v", backend, recs.stats)
	}
	counted := capture.Counters["packets"] // the AF_PACKET capture's parsed packets
	if backend == "ebpf" {
		counted = capture.Counters["accounted"] // the kernel program's packets counted in a flow
	}
	if capture.Counters["drop.ring"] != 0 || capture.Counters["drop.map_full"] != 0 || counted != sum.Packets {
		t.Errorf("capture counters %v: want no drops and %d packets", capture.Counters, sum.Packets)
	}

	// The same traffic with port 9090 left out: exactly those flows disappear.
	sub := filepath.Join(t.TempDir(), "sub.json")
	if err := os.WriteFile(sub, []byte(`{"id":"no-9090","spec":{"L4Miss":["9090"]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	agent = startAgent(t, l.a, l.la.Name, "--capture", backend, "--subscription", sub)
	ports = tr.send(t, l)
	recs = agent.stop(t)
	convs = conversations(recs.flows)
	if len(convs) != 1+tr.connsPerPort {
		t.Fatalf("with L4Miss 9090: %d conversations, want %d", len(convs), 1+tr.connsPerPort)
	}
	for k, c := range convs {
		if c.server.Port == 9090 || c.client.Port == 9090 {
			t.Errorf("%s: port 9090 was left out by the subscription", k)
		}
		if c.subs != "no-9090" {
			t.Errorf("%s: subscriptions %q", k, c.subs)
		}
		if c.transport == sdk.TransportTCP && !contains(ports[8080], int(c.client.Port)) {
			t.Errorf("%s: unexpected connection", k)
		}
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		raw, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(raw)) {
			if n, err := strconv.Atoi(field); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func pluginPID(t testing.TB, agentPID int, binary string) int {
	t.Helper()
	for _, pid := range childPIDs(agentPID) {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if filepath.Base(exe) == binary {
			return pid
		}
	}
	t.Fatalf("no %s process under the agent (pid %d)", binary, agentPID)
	return 0
}

// Acceptance: SIGKILL of the capture plugin. The core restarts it within 5 s with its
// configuration, counts the restart, and keeps running; capture goes on.
func TestCapturePluginRestartsAfterSIGKILL(t *testing.T) {
	l := newLab(t)
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("pipeline:\n  stats_interval: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(t.TempDir(), "sub.json")
	if err := os.WriteFile(sub, []byte(`{"id":"udp-only","spec":{"L4CLASS":["UDP"]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, l.a, l.la.Name, "--capture", "mmap", "--config", cfg, "--subscription", sub)
	old := pluginPID(t, agent.cmd.Process.Pid, "quanyu-capture-mmap")
	killed := time.Now()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	agent.waitLog(t, 2, 5*time.Second, "msg=capturing", "nic="+l.la.Name)
	restartedIn := time.Since(killed)
	fresh := pluginPID(t, agent.cmd.Process.Pid, "quanyu-capture-mmap")
	if fresh == old {
		t.Fatalf("the plugin process was not replaced")
	}
	t.Logf("capture plugin restarted %s after SIGKILL", restartedIn.Round(time.Millisecond))

	// Capture goes on, with the configuration it had: UDP is recorded, TCP is not.
	tr := traffic{udpPort: 7000, udpDatagrams: 10, udpPayload: 100, tcpPorts: []int{8081}, connsPerPort: 1,
		requestBytes: 10, responseBytes: 10}
	tr.send(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for ctx.Err() == nil && !strings.Contains(agent.out.String(), `"plugin.capture-mmap.restarts":1`) {
		time.Sleep(100 * time.Millisecond)
	}
	recs := agent.stop(t)
	convs := conversations(recs.flows)
	if len(convs) != 1 {
		t.Fatalf("after the restart: %d conversations, want the one UDP conversation: %v", len(convs), convs)
	}
	for k, c := range convs {
		if c.transport != sdk.TransportUDP || c.c2s.Packets != 10 || c.subs != "udp-only" {
			t.Errorf("%s: %+v", k, c)
		}
	}
	if got := recs.stats["agent"].Counters["plugin.capture-mmap.restarts"]; got != 1 {
		t.Errorf("agent counts %d restarts of the capture plugin, want 1", got)
	}
	if !strings.Contains(agent.logText(), "plugin exited unexpectedly; restarting") {
		t.Errorf("the restart is not in the log:\n%s", agent.logText())
	}
}
