package main

import (
	"fmt"
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
	for i := 0; i < b.N; i++ {
		before := agentCPU(b, agent.cmd.Process.Pid)
		start := time.Now()
		for s := 1; s <= int(time.Second/slice); s++ {
			for k := 0; k < perSlice; k++ {
				dst.Port = 10000 + sent%conversations
				if _, err := conn.WriteToUDP(payload, dst); err != nil {
					b.Fatal(err)
				}
				sent++
			}
			time.Sleep(time.Until(start.Add(time.Duration(s) * slice)))
		}
		cpu += agentCPU(b, agent.cmd.Process.Pid) - before
	}
	b.StopTimer()
	elapsed := time.Duration(b.N) * time.Second
	recs := agent.stop(b)
	var got uint64
	for _, f := range recs.flows {
		got += f.ClientToServer.Packets
	}
	capture := recs.stats["capture-mmap"].Counters
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "%cpu")
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "pps")
	b.ReportMetric(float64(capture["drop.ring"]), "ring-drops")
	b.ReportMetric(float64(uint64(sent)-min(got, uint64(sent))), "missing")
}
