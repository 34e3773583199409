package core

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/internal/testnet"
	"github.com/quanyu/quanyu/sdk"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// A new subscription set reaches the running capture without a restart: flows the new set leaves
// out end as "unsubscribed" and are not recorded again, the others carry the new id; a set the
// host cannot apply is refused and the previous one stays.
func TestAgentSwapsSubscriptionsLive(t *testing.T) {
	for _, backend := range []string{"mmap", "ebpf"} {
		t.Run(backend, func(t *testing.T) { testSwap(t, backend) })
	}
}

func testSwap(t *testing.T, backend string) {
	testnet.RequireRoot(t)
	bins := testbin.Build(t)
	b := testnet.NewNS(t, "swap")
	la, lb := testnet.Veth(t, nil, "10.78.0.1/24", b, "10.78.0.2/24")
	// Datagrams go to an address b does not hold, behind b's MAC: dropped without an ICMP answer.
	const sink = "10.78.0.3"
	testnet.Run(t, "ip", "neigh", "replace", sink, "lladdr", lb.MAC, "dev", la.Name, "nud", "permanent")

	cfg := Default()
	cfg.PluginDir = filepath.Join(bins, "plugins")
	cfg.Capture.Interfaces = []string{la.Name}
	cfg.Capture.Backend = backend
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	agent, err := NewAgent(cfg, Options{Stdout: w, Log: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var flows []sdk.Flow
	var mu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if typ, _ := sdk.RecordType(sc.Bytes()); typ == "flow" {
				var f sdk.Flow
				if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
					t.Error(err)
				}
				mu.Lock()
				flows = append(flows, f)
				mu.Unlock()
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- agent.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-runDone
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		h, err := agent.CaptureHealth(ctx)
		if err == nil && h.Counters["interfaces.watched"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("capture did not start on %s: %+v %v", la.Name, h, err)
		}
	}

	send := func() int {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.78.0.1")})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, port := range []int{1000, 2000} {
			for i := 0; i < 5; i++ {
				if _, err := c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.ParseIP(sink), Port: port}); err != nil {
					t.Fatal(err)
				}
			}
		}
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	// seen waits until the capture has counted n more packets than at base, so that what was sent
	// is accounted before the test moves on, however busy the machine is.
	packets := func() uint64 {
		h, _ := agent.CaptureHealth(ctx)
		return h.Counters["packets"]
	}
	seen := func(base, n uint64) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); packets() < base+n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the capture counted %d packets of the %d sent", packets()-base, n)
			}
		}
	}
	base := packets()
	first := send()
	seen(base, 10)

	swap, err := sdk.ParseSubscriptions([]byte(`{"id":"no-2000","spec":{"L4Miss":["2000"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.SetSubscriptions(ctx, swap); err != nil {
		t.Fatal(err)
	}
	bad, err := sdk.ParseSubscriptions([]byte(`{"id":"ghost","spec":{"NIC":["no-such-nic9"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.SetSubscriptions(ctx, bad); !errors.Is(err, sdk.ErrRejected) || !strings.Contains(err.Error(), "no-such-nic9") {
		t.Fatalf("a set naming a missing interface: %v", err)
	}
	base = packets()
	second := send()
	// Port 2000 is filtered out now: only the five to port 1000 can be counted.
	seen(base, 5)
	time.Sleep(200 * time.Millisecond) // a dropped 2000 datagram would have been counted by now too

	cancel()
	stopped = true
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	w.Close()
	<-readDone

	type key struct{ src, dst int }
	got := map[key][]sdk.Flow{}
	for _, f := range flows {
		got[key{int(f.Client.Port), int(f.Server.Port)}] = append(got[key{int(f.Client.Port), int(f.Server.Port)}], f)
	}
	check := func(k key, packets uint64, ids string, reason string) {
		t.Helper()
		var sum uint64
		var last sdk.Flow
		for _, f := range got[k] {
			sum += f.ClientToServer.Packets
			last = f
		}
		if sum != packets || strings.Join(last.Subscriptions, ",") != ids || last.EndReason != reason || !last.Final {
			t.Errorf("%v: %d packets, last record %+v; want %d packets, ids %q, final %q", k, sum, last, packets, ids, reason)
		}
	}
	check(key{first, 1000}, 5, "no-2000", sdk.EndShutdown)
	check(key{first, 2000}, 5, "default", sdk.EndUnsubscribed)
	check(key{second, 1000}, 5, "no-2000", sdk.EndShutdown)
	if fs := got[key{second, 2000}]; len(fs) != 0 {
		t.Errorf("port 2000 after the swap was recorded: %+v", fs)
	}
	if len(got) != 3 {
		t.Errorf("%d conversations, want 3: %v", len(got), got)
	}
}

// testLog sends the agent's log to the test's log, shown when the test fails.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
