package main

import (
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"path/filepath"

	"fmt"
	"github.com/cilium/ebpf"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cpuTicks is the user+system CPU time, in clock ticks, of a process.
func cpuTicks(pid int) (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it start past the last ')'.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err := strconv.ParseUint(fields[11], 10, 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseUint(fields[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return utime + stime, nil
}

// agentCPU is the CPU time of the agent and all its plugins.
func agentCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	const hz = 100 // USER_HZ on Linux
	var total uint64
	for _, p := range append([]int{pid}, childPIDs(pid)...) {
		t, err := cpuTicks(p)
		if err != nil {
			b.Fatal(err)
		}
		total += t
	}
	return time.Duration(total) * time.Second / hz
}

// BenchmarkLiveCaptureCPU measures what the agent (core and every plugin) costs while capturing
// live: each iteration sends one second of UDP at the given rate over a veth pair, spread over
// many conversations, and reports the agent's CPU as a percentage of one core. Run with
//
//	go test -run '^$' -bench LiveCaptureCPU -benchtime 10x ./cmd/quanyu/
func BenchmarkLiveCaptureCPU(b *testing.B) {
	for _, rate := range []int{0, 10000, 50000} {
		b.Run(fmt.Sprintf("pps=%d", rate), func(b *testing.B) { benchLiveCPU(b, rate, 10000) })
	}
}

func benchLiveCPU(b *testing.B, rate, conversations int) {
	l := newLab(b)
	agent := startAgent(b, l.a, l.la.Name, "--capture", "mmap")
	cpu, sent, recs := sendPaced(b, l, agent, rate, conversations, 0)
	var got uint64
	for _, f := range recs.flows {
		got += f.ClientToServer.Packets
	}
	capture := recs.stats["capture-mmap"].Counters
	elapsed := time.Duration(b.N) * time.Second
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "%cpu")
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "pps")
	b.ReportMetric(float64(capture["drop.ring"]), "ring-drops")
	b.ReportMetric(float64(uint64(sent)-min(got, uint64(sent))), "missing")
}

// sendPaced sends UDP datagrams from a, spread over many conversations, at a steady rate for
// b.N seconds after warm seconds of the same traffic (not measured: conversations start there),
// and returns the agent's CPU time over the measured seconds, the datagrams sent in all, and
// the agent's records after it stopped.
func sendPaced(b *testing.B, l *lab, agent *agentProc, rate, conversations, warm int) (time.Duration, int, records) {
	return sendTrains(b, l, agent, rate, conversations, warm, 1)
}

// sendTrains is sendPaced with the datagrams sent in trains of train datagrams per
// conversation, as real traffic comes (a TCP window, a burst of requests), rather than one
// conversation after another.
func sendTrains(b *testing.B, l *lab, agent *agentProc, rate, conversations, warm, train int) (time.Duration, int, records) {
	var conn *net.UDPConn
	if err := l.a.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: l.ipA.AsSlice()})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	// The datagrams go to an address b does not hold, behind b's MAC: b's kernel drops them without
	// an ICMP answer, so the traffic on the link is the sender's alone.
	sink := "10.77.0.3"
	l.a.Exec(b, "ip", "neigh", "replace", sink, "lladdr", l.lb.MAC, "dev", l.la.Name, "nud", "permanent")
	payload := make([]byte, 64)
	dst := &net.UDPAddr{IP: net.ParseIP(sink)}
	const slice = 10 * time.Millisecond
	perSlice := rate / int(time.Second/slice)
	sent := 0
	var cpu time.Duration
	b.ResetTimer()
	for i := -warm; i < b.N; i++ {
		before := agentCPU(b, agent.cmd.Process.Pid)
		start := time.Now()
		for s := 1; s <= int(time.Second/slice); s++ {
			for k := 0; k < perSlice; k++ {
				dst.Port = 10000 + (sent/train)%conversations
				if _, err := conn.WriteToUDP(payload, dst); err != nil {
					b.Fatal(err)
				}
				sent++
			}
			time.Sleep(time.Until(start.Add(time.Duration(s) * slice)))
		}
		if i >= 0 {
			cpu += agentCPU(b, agent.cmd.Process.Pid) - before
		}
	}
	b.StopTimer()
	return cpu, sent, agent.stop(b)
}

// BenchmarkEBPFAgent measures the eBPF capture under steady traffic (50,000 packets a second over
// 10,000 conversations): the agent's user-space CPU (core and plugins, as a percentage of one
// core), and the kernel program's own cost per packet from the kernel's statistics
// (kernel.bpf_stats_enabled). Two subscription sets: the default (everything) and 1,000 CIDRs with
// 100 port ranges; two traffic shapes: every packet from the next conversation (the worst case for
// caches), and trains of 16 packets per conversation. Run with
//
//	go test -run '^$' -bench EBPFAgent -benchtime 10x ./cmd/quanyu/
func BenchmarkEBPFAgent(b *testing.B) {
	large := largeSubscription(b)
	for _, tc := range []struct {
		name, sub string
		train     int
	}{
		{"default/one-by-one", "", 1},
		{"default/trains-of-16", "", 16},
		{"1000cidrs-100ranges/one-by-one", large, 1},
		{"1000cidrs-100ranges/trains-of-16", large, 16},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l := newLab(b)
			args := []string{"--capture", "ebpf"}
			if tc.sub != "" {
				args = append(args, "--subscription", tc.sub)
			}
			restore := enableBPFStats(b)
			defer restore()
			agent := startAgent(b, l.a, l.la.Name, args...)
			prog := captureProgram(b, pluginPID(b, agent.cmd.Process.Pid, "quanyu-capture-ebpf"))
			defer prog.Close()
			before, err := prog.Stats()
			if err != nil {
				b.Fatal(err)
			}
			// Warm up for one round through every conversation, so all have started (and their
			// start events are out) before the measured seconds.
			const rate, conversations = 50000, 10000
			warm := conversations*tc.train/rate + 1
			cpu, sent, recs := sendTrains(b, l, agent, rate, conversations, warm, tc.train)
			after, err := prog.Stats()
			if err != nil {
				b.Fatal(err)
			}
			var got uint64
			for _, f := range recs.flows {
				got += f.ClientToServer.Packets
			}
			capture := recs.stats["capture-ebpf"].Counters
			elapsed := time.Duration(b.N) * time.Second
			b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "%cpu")
			if n := after.RunCount - before.RunCount; n > 0 {
				b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(n), "bpf-ns/pkt")
			}
			b.ReportMetric(float64(capture["drop.map_full"]+capture["drop.ring_full"]), "drops")
			b.ReportMetric(float64(uint64(sent)-min(got, uint64(sent))), "missing")
		})
	}
}

// largeSubscription writes a set of 1,000 IPv4 CIDRs and 100 port ranges that the benchmark's
// traffic matches (through one CIDR and one range among them).
func largeSubscription(b *testing.B) string {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	cidrs := []string{"10.77.0.0/16"}
	for len(cidrs) < 1000 {
		cidrs = append(cidrs, fmt.Sprintf("%d.%d.%d.0/%d", 11+rng.IntN(200), rng.IntN(256), rng.IntN(256), 16+rng.IntN(9)))
	}
	ranges := []string{"10000-19999"}
	for len(ranges) < 100 {
		lo := 20000 + rng.IntN(40000)
		ranges = append(ranges, fmt.Sprintf("%d-%d", lo, lo+rng.IntN(100)))
	}
	raw, err := json.Marshal(map[string]any{"id": "large", "spec": map[string]any{"L3Match": cidrs, "L4Range": ranges}})
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "large.json")
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// enableBPFStats turns on the kernel's run-time statistics for BPF programs and returns a
// function that puts the setting back.
func enableBPFStats(b *testing.B) func() {
	b.Helper()
	const path = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		b.Fatal(err)
	}
	return func() { _ = os.WriteFile(path, old, 0o644) }
}

// captureProgram opens the capture program the plugin holds (by the id in its fdinfo).
func captureProgram(b *testing.B, pid int) *ebpf.Program {
	b.Helper()
	infos, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	for _, f := range infos {
		raw, err := os.ReadFile(f)
		if err != nil || strings.Contains(string(raw), "link_type") {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				id, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					continue
				}
				prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
				if err != nil {
					b.Fatal(err)
				}
				return prog
			}
		}
	}
	b.Fatalf("no BPF program held by pid %d", pid)
	return nil
}

// BenchmarkIperf3Throughput measures what capturing costs bulk TCP: iperf3 between the two
// namespaces for a few seconds without an agent, then with each backend watching the sender's
// end, and reports the throughput with the agent as a percentage of without. Needs iperf3. Run with
//
//	go test -run '^$' -bench Iperf3 -benchtime 3x ./cmd/quanyu/
func BenchmarkIperf3Throughput(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("iperf3 is not installed (apt-get install iperf3)")
	}
	l := newLab(b)
	server := l.b.Command("iperf3", "-s", "-B", l.ipB.String())
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = server.Process.Kill(); _ = server.Wait() }()
	time.Sleep(300 * time.Millisecond)
	run := func() float64 {
		out := l.a.Exec(b, "iperf3", "-c", l.ipB.String(), "-t", "4", "-J")
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			b.Fatalf("iperf3 output: %v", err)
		}
		return r.End.SumReceived.BitsPerSecond
	}
	for _, backend := range []string{"ebpf", "mmap"} {
		b.Run(backend, func(b *testing.B) {
			var without, with float64
			for i := 0; i < b.N; i++ {
				without += run()
				agent := startAgent(b, l.a, l.la.Name, "--capture", backend)
				with += run()
				agent.stop(b)
			}
			b.ReportMetric(without/float64(b.N)/1e9, "Gbit/s-without")
			b.ReportMetric(with/float64(b.N)/1e9, "Gbit/s-with")
			b.ReportMetric(100*with/without, "%of-without")
		})
	}
}
