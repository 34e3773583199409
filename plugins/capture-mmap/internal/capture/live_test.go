package capture

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testnet"
	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/plugintest"
)

// An interface that goes down and comes back is captured again, and appearing interfaces that match
// the agent's patterns are picked up: containers come and go.
func TestLiveFollowsInterfaces(t *testing.T) {
	testnet.RequireRoot(t)
	b := testnet.NewNS(t, "cap")
	la, lb := testnet.Veth(t, nil, "10.79.0.1/24", b, "10.79.0.2/24")
	const sink = "10.79.0.3" // behind b's MAC, held by nobody: no answers
	testnet.Run(t, "ip", "neigh", "replace", sink, "lladdr", lb.MAC, "dev", la.Name, "nud", "permanent")

	capture := plugintest.Capture(t, New())
	ctx := context.Background()
	if err := capture.Configure(ctx, sdk.CaptureConfig{Interfaces: []string{la.Name},
		Subscriptions: []sdk.Subscription{{ID: "default"}}, Options: []byte(`{"rescan_interval_ms":100}`),
		BatchSize: 512, FlushInterval: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	var c collector
	runDone := make(chan error, 1)
	go func() { runDone <- capture.Run(ctx, &c) }()
	waitWatched := func(n uint64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			h, err := capture.Health(ctx)
			if err == nil && h.Counters["interfaces.watched"] == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("interfaces.watched never became %d: %v %v", n, h.Counters, err)
			}
		}
	}
	send := func(port int) {
		t.Helper()
		conn, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(sink), Port: port})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i := 0; i < 3; i++ {
			if _, err := conn.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitWatched(1)
	send(1001)
	testnet.Run(t, "ip", "link", "set", la.Name, "down")
	waitWatched(0)
	testnet.Run(t, "ip", "link", "set", la.Name, "up")
	testnet.Run(t, "ip", "neigh", "replace", sink, "lladdr", lb.MAC, "dev", la.Name, "nud", "permanent")
	waitWatched(1)
	send(1002)
	time.Sleep(200 * time.Millisecond)
	if err := capture.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	got := map[uint16]uint64{}
	for _, bt := range c.batches {
		for _, f := range bt.Flows {
			got[f.Server.Port] += f.ClientToServer.Packets
		}
	}
	if got[1001] != 3 || got[1002] != 3 {
		t.Fatalf("packets per destination port: %v, want 3 to 1001 (before the interface went down) and 3 to 1002 (after)", got)
	}
}
