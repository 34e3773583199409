package lab

import (
	"context"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRateAt(t *testing.T) {
	period := 5 * time.Minute
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{
		{0, 10}, {period / 4, 15}, {period / 2, 10}, {3 * period / 4, 5}, {period, 10},
	} {
		if got := rateAt(10, period, tc.at); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("rate at %s: %g, want %g", tc.at, got, tc.want)
		}
	}
}

// TestPickFollowsWeights sweeps the random input: each kind is picked in proportion to its
// weight, so the mix is mostly pages and products with a few errors and slow pages.
func TestPickFollowsWeights(t *testing.T) {
	total := 0
	for _, k := range requestMix {
		total += k.weight
	}
	const n = 100000
	got := map[string]int{}
	for i := range n {
		got[pick(float64(i)/n).name]++
	}
	for _, k := range requestMix {
		want := n * k.weight / total
		if d := got[k.name] - want; d < -2 || d > 2 {
			t.Errorf("%s picked %d times in %d, want %d", k.name, got[k.name], n, want)
		}
	}
	if gets := got["home page"] + got["product list"] + got["product"]; gets*100/n < 60 {
		t.Errorf("page and product reads are %d%% of the mix, want most", gets*100/n)
	}
}

// TestTrafficConnections: a user keeps its connection alive and opens a new one every
// --new-conn-every requests.
func TestTrafficConnections(t *testing.T) {
	var conns, reqs atomic.Int64
	var mu sync.Mutex
	methods := map[string]int{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		mu.Lock()
		methods[r.Method]++
		mu.Unlock()
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	tr := &traffic{target: srv.URL, base: 400, period: time.Minute, users: 1, newConnEvery: 5,
		dial: dialDirect, log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	tr.run(ctx, time.Now)
	n, c := reqs.Load(), conns.Load()
	if n < 50 {
		t.Fatalf("%d requests in 1.5s at 400/s, want many more", n)
	}
	// One connection per five requests, give or take the first and the last.
	if lo, hi := n/5-1, n/5+2; c < lo || c > hi {
		t.Errorf("%d connections for %d requests, want %d to %d", c, n, lo, hi)
	}
	// Every request the server saw was counted by the client; the one a user had in flight when
	// the context ended is counted (an error) whether or not it reached the server.
	if d := tr.sent - n; d < 0 || d > int64(tr.users) {
		t.Errorf("the client counted %d requests, the server %d; want the same, or %d more in flight at the end", tr.sent, n, tr.users)
	}
	mu.Lock()
	defer mu.Unlock()
	if methods["GET"] == 0 || methods["POST"] == 0 {
		t.Errorf("methods %v, want GETs and POSTs", methods)
	}
}
