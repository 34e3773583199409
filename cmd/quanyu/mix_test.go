package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testnet"
	"github.com/quanyu/quanyu/mix"
	"github.com/quanyu/quanyu/mix/mixpb"
)

// mixProc is a running `quanyu mix`.
type mixProc struct {
	cmd  *exec.Cmd
	addr string
	http string // the HTTP/JSON admin API's address; empty when it does not listen
	dir  string
	log  syncBuffer
	cfg  string
}

const (
	opsToken   = "ops-token-0123456789abcdef"
	ops2Token  = "ops2-token-0123456789abcdef"
	viewToken  = "view-token-0123456789abcdef"
	agentToken = "agent-token-0123456789abcdef"
)

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startMix runs mix with four tokens (two admins, a viewer, an agent) on a free port, gRPC only.
func startMix(t testing.TB) *mixProc {
	t.Helper()
	return startMixListening(t, "")
}

// startMixHTTP is startMix with the HTTP/JSON admin API on a free port too (m.http), for tests
// that reach mix the way a browser does, through analysis's proxy.
func startMixHTTP(t testing.TB) *mixProc {
	t.Helper()
	return startMixListening(t, freePort(t))
}

func startMixListening(t testing.TB, httpAddr string) *mixProc {
	t.Helper()
	m := &mixProc{addr: freePort(t), http: httpAddr, dir: t.TempDir()}
	m.cfg = filepath.Join(m.dir, "mix.yaml")
	yaml := fmt.Sprintf(`listen: %s
http_listen: "%s"
data_dir: %s
push:
  debounce: 20ms
  max_delay: 200ms
tokens:
  - {name: ops, token: %s, role: admin}
  - {name: ops2, token: %s, role: admin}
  - {name: dash, token: %s, role: viewer}
  - {name: host1, token: %s, role: agent}
`, m.addr, m.http, filepath.Join(m.dir, "data"), opsToken, ops2Token, viewToken, agentToken)
	if err := os.WriteFile(m.cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start(t)
	return m
}

func (m *mixProc) start(t testing.TB) {
	t.Helper()
	m.cmd = quanyu(t, "mix", "--config", m.cfg)
	m.cmd.Stderr = &m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := m.cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(m.log.String(), "mix started") {
		if time.Now().After(deadline) {
			t.Fatalf("mix did not start:\n%s", m.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *mixProc) kill(t testing.TB) {
	t.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	_ = m.cmd.Wait()
}

// cli runs a quanyu client command against this mix with a token.
func (m *mixProc) cli(t testing.TB, token string, args ...string) (string, error) {
	t.Helper()
	full := append(args, "--mix", m.addr, "--token", token)
	out, err := quanyu(t, full...).CombinedOutput()
	return string(out), err
}

func (m *mixProc) apply(t testing.TB, token, doc string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := m.cli(t, token, "sub", "apply", "-f", f); err != nil {
		t.Fatalf("sub apply %s: %v\n%s", doc, err, out)
	}
}

func (m *mixProc) client(t testing.TB) mixpb.MixClient {
	t.Helper()
	conn, err := mix.Dial(mix.DialOptions{Address: m.addr, Token: viewToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return mixpb.NewMixClient(conn)
}

// agentState polls mix until the agent reaches the status (and a version other than not).
func (m *mixProc) waitAgent(t testing.TB, c mixpb.MixClient, id, status, not string, timeout time.Duration) *mixpb.Agent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Agents(context.Background(), &mixpb.AgentsRequest{})
		if err == nil {
			for _, a := range resp.Agents {
				if a.Id == id && a.Status == status && a.AppliedVersion != not {
					return a
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s not %s within %s: %v %v\nmix log:\n%s", id, status, timeout, resp, err, m.log.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rootLab is a veth pair with one end in the test's own namespace, where mix and the agent run,
// and the other in a namespace b: traffic to 10.79.1.3, behind b's end, is dropped by b without
// an answer.
type rootLab struct {
	b      *testnet.NS
	la, lb *testnet.Link
}

const sinkAddr = "10.79.1.3"

func newRootLab(t testing.TB) *rootLab {
	testnet.RequireRoot(t)
	l := &rootLab{b: testnet.NewNS(t, "mixb")}
	l.la, l.lb = testnet.Veth(t, nil, "10.79.1.1/24", l.b, "10.79.1.2/24")
	testnet.Run(t, "ip", "neigh", "replace", sinkAddr, "lladdr", l.lb.MAC, "dev", l.la.Name, "nud", "permanent")
	return l
}

// send sends n datagrams to each port from one new socket and returns its port.
func send(t testing.TB, n int, ports ...int) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.79.1.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range ports {
		for i := 0; i < n; i++ {
			if _, err := c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.ParseIP(sinkAddr), Port: p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c.LocalAddr().(*net.UDPAddr).Port
}

// startRootAgent runs an agent in the test's namespace, watching the lab's end, driven by mix.
func startRootAgent(t testing.TB, l *rootLab, m *mixProc, args ...string) *agentProc {
	t.Helper()
	cmd := quanyu(t, append([]string{"agent", "--nic", l.la.Name, "--mix", m.addr, "--token", agentToken}, args...)...)
	p := &agentProc{cmd: cmd, logged: make(chan struct{}, 1)}
	cmd.Stdout = &p.out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	go p.collectLog(stderr)
	return p
}

// Acceptance (mix 1, 3, 4, 6): subscriptions applied in mix reach a capturing agent, which ACKs
// and follows them; one it cannot apply is NACKed with the reason and the previous set stays;
// with mix killed the agent keeps capturing, and when mix comes back it reconnects and resyncs
// without restarting its plugins; three edits are three revisions with their authors.
func TestMixDrivesAgent(t *testing.T) {
	l := newRootLab(t)
	m := startMix(t)
	c := m.client(t)
	host, _ := os.Hostname()
	m.apply(t, opsToken, `{"id":"p5000","spec":{"L4":["5000"]}}`)
	agent := startRootAgent(t, l, m, "--capture", "mmap")
	v1 := m.waitAgent(t, c, host, mix.StatusSynced, "", 20*time.Second).AppliedVersion
	agent.waitLog(t, 1, 10*time.Second, "msg=capturing", "nic="+l.la.Name)
	phase1 := send(t, 10, 5000, 6000)

	m.apply(t, opsToken, `{"id":"p5000","spec":{"L4":["5000","6000"]}}`)
	v2 := m.waitAgent(t, c, host, mix.StatusSynced, v1, 5*time.Second).AppliedVersion
	phase2 := send(t, 10, 5000, 6000)

	m.apply(t, ops2Token, `{"id":"p5000","spec":{"L4":["6000"]}}`)
	v3 := m.waitAgent(t, c, host, mix.StatusSynced, v2, 5*time.Second).AppliedVersion
	phase3 := send(t, 10, 5000, 6000)

	out, err := m.cli(t, viewToken, "sub", "history", "p5000")
	if err != nil {
		t.Fatal(err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], "ops2") || !strings.Contains(lines[2], " ops ") || !strings.Contains(lines[3], " ops ") {
		t.Errorf("sub history should list 3 revisions, newest first, by ops2, ops, ops:\n%s", out)
	}

	// A set the agent cannot apply: NACKED, with the reason, in `quanyu agents`.
	m.apply(t, opsToken, `{"id":"bad-nic","spec":{"NIC":["nosuch0"]}}`)
	nacked := m.waitAgent(t, c, host, mix.StatusNacked, "", 5*time.Second)
	if nacked.AppliedVersion != v3 || !strings.Contains(nacked.LastError, "nosuch0") {
		t.Errorf("NACKED agent: applied %s (want %s), error %q", nacked.AppliedVersion, v3, nacked.LastError)
	}
	table, err := m.cli(t, viewToken, "agents")
	if err != nil || !strings.Contains(table, "NACKED") || !strings.Contains(table, "nosuch0") {
		t.Errorf("quanyu agents:\n%s %v", table, err)
	}
	phase4 := send(t, 10, 5000, 6000) // still under the previous set: 6000 only
	if out, err := m.cli(t, opsToken, "sub", "delete", "bad-nic"); err != nil {
		t.Fatal(err, out)
	}
	m.waitAgent(t, c, host, mix.StatusSynced, "", 5*time.Second)

	// Kill mix: the agent keeps capturing with its set. Bring it back: the agent reconnects and
	// is in sync again, and its plugins never restarted.
	pluginBefore := pluginPID(t, agent.cmd.Process.Pid, "quanyu-capture-mmap")
	m.kill(t)
	phase5 := send(t, 10, 5000, 6000)
	time.Sleep(500 * time.Millisecond)
	m.start(t)
	c = m.client(t)
	back := m.waitAgent(t, c, host, mix.StatusSynced, "", 20*time.Second)
	if back.AppliedVersion != v3 {
		t.Errorf("after mix's restart the agent runs %s, want %s", back.AppliedVersion, v3)
	}
	if pluginAfter := pluginPID(t, agent.cmd.Process.Pid, "quanyu-capture-mmap"); pluginAfter != pluginBefore {
		t.Errorf("the capture plugin was restarted (pid %d → %d)", pluginBefore, pluginAfter)
	}
	if !strings.Contains(agent.logText(), "mix unreachable; capturing with the last subscription set") {
		t.Errorf("the agent did not say it lost mix:\n%s", agent.logText())
	}

	recs := agent.stop(t)
	got := map[string]uint64{}
	for _, f := range recs.flows {
		got[fmt.Sprintf("%d>%d", f.Client.Port, f.Server.Port)] += f.ClientToServer.Packets
	}
	want := map[string]uint64{
		fmt.Sprintf("%d>5000", phase1): 10,
		fmt.Sprintf("%d>5000", phase2): 10, fmt.Sprintf("%d>6000", phase2): 10,
		fmt.Sprintf("%d>6000", phase3): 10,
		fmt.Sprintf("%d>6000", phase4): 10,
		fmt.Sprintf("%d>6000", phase5): 10,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records by conversation:\n got %v\nwant %v", got, want)
	}
}

// BenchmarkPushToAck measures, with real processes, the time from a subscription's apply
// returning to mix showing the capturing agent SYNCED on the new version, over 100 changes.
//
//	go test -run '^$' -bench PushToAck -benchtime 100x ./cmd/quanyu/
func BenchmarkPushToAck(b *testing.B) {
	l := newRootLab(b)
	m := startMix(b)
	c := m.client(b)
	host, _ := os.Hostname()
	m.apply(b, opsToken, `{"id":"bench","spec":{"L4":["1"]}}`)
	_ = startRootAgent(b, l, m, "--capture", "mmap")
	last := m.waitAgent(b, c, host, mix.StatusSynced, "", 20*time.Second).AppliedVersion
	admin, err := mix.Dial(mix.DialOptions{Address: m.addr, Token: opsToken})
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	ac := mixpb.NewMixClient(admin)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		doc := fmt.Sprintf(`{"id":"bench","spec":{"L4":["%d"]}}`, 2+i)
		if _, err := ac.Apply(context.Background(), &mixpb.ApplyRequest{Kind: "subscription", Json: []byte(doc)}); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		last = m.waitAgent(b, c, host, mix.StatusSynced, last, 10*time.Second).AppliedVersion
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
