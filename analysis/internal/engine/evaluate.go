package engine

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/sdk"
)

// What the alert evaluator reads. It evaluates each 10 s bucket a few seconds after the bucket
// ends, long before the bucket closes (Options.Lateness), so it reads what the bucket holds at
// that moment, as Prometheus evaluates rules on what has been scraped so far: a record arriving
// later still counts in the rollups and the graph, but not in that evaluation.

// Bucket calls fn for every row of one level in the 10 s bucket starting at start (floored to
// 10 s). Rows of one key may come more than once (one per shard and per stored delta); fn adds
// them up. fn must not keep k or f.
func (e *Engine) Bucket(ctx context.Context, start time.Time, level store.Level, fn func(k *store.RollupKey, f *store.Figures)) error {
	if e.closed.Load() {
		return ErrClosed
	}
	li := levelIndex(level)
	if li < 0 {
		return invalid("unknown level %q", level)
	}
	from := floor(start.UnixNano(), int64(10*time.Second))
	return e.gather(ctx, 0, li, from, from+int64(10*time.Second), "", "",
		func(_ int64, k *store.RollupKey, f *store.Figures) { fn(k, f) }, nil)
}

// SetEventHook has fn called, during Ingest, with every flow event that names the subscriptions
// it matched (nil: none). fn must be quick and must not keep ev.
func (e *Engine) SetEventHook(fn func(agent string, ev *sdk.Event)) {
	if fn == nil {
		e.eventHook.Store(nil)
		return
	}
	e.eventHook.Store(&fn)
}

// Socket is a server endpoint and one client address seen talking to it.
type Socket struct {
	Client, Server netip.Addr
	Transport      sdk.Transport
	Port           uint16
}

// EdgeSockets gives the client and server addresses and server ports seen in [from, to)
// between two graph nodes (ids as in the graph: "app:web", "ip:10.0.0.1"), at most limit of
// them. They are found from the L4 rollups, whose addresses
// are mapped to nodes with the current catalog.
func (e *Engine) EdgeSockets(ctx context.Context, from, to time.Time, source, target string, limit int) ([]Socket, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	cat := e.catalog.Load()
	seen := map[Socket]bool{}
	var out []Socket
	err := e.gather(ctx, e.resolutionFor(to.Sub(from)), levelIndex(store.LevelL4), from.UnixNano(), to.UnixNano(), "", "",
		func(_ int64, k *store.RollupKey, _ *store.Figures) {
			if len(out) >= limit {
				return
			}
			c, err1 := netip.ParseAddr(k.Source)
			s, err2 := netip.ParseAddr(k.Target)
			if err1 != nil || err2 != nil {
				return
			}
			if nodeID(node(cat, sdk.Endpoint{Addr: c})) != source ||
				nodeID(node(cat, sdk.Endpoint{Addr: s, Port: k.Port})) != target {
				return
			}
			sk := Socket{Client: c, Server: s, Transport: k.Transport, Port: k.Port}
			if !seen[sk] {
				seen[sk] = true
				out = append(out, sk)
			}
		}, nil)
	return out, err
}

// Edges calls fn for every pair of graph nodes with traffic in [from, to), from the application
// rollups of the coarsest resolution that covers the span.
func (e *Engine) Edges(ctx context.Context, from, to time.Time, fn func(source, target string)) error {
	if e.closed.Load() {
		return ErrClosed
	}
	ri := e.resolutionFor(to.Sub(from))
	return e.gather(ctx, ri, levelIndex(store.LevelApp), floor(from.UnixNano(), e.res[ri].width), to.UnixNano(), "", "",
		func(_ int64, k *store.RollupKey, _ *store.Figures) { fn(k.Source, k.Target) }, nil)
}

// EdgeHosts gives the hosts whose agents reported flows to a server address (and port, 0 for
// any) that ended at or after since: the agents that see that traffic. It reads the stored flow
// records, after writing those still on their way.
func (e *Engine) EdgeHosts(ctx context.Context, server netip.Addr, port uint16, since time.Time) ([]string, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	e.writeRecords(ctx)
	recs, err := e.st.QueryFlows(ctx, store.FlowFilter{From: since, Addr: server, Port: port, Limit: 1000})
	if err != nil {
		return nil, fmt.Errorf("finding the hosts that see %s: %w", server, err)
	}
	var hosts []string
	for _, r := range recs {
		if r.Host != "" && !slices.Contains(hosts, r.Host) {
			hosts = append(hosts, r.Host)
		}
	}
	return hosts, nil
}
