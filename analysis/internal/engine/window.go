package engine

import (
	"sync"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/sdk"
)

// windowCache holds, for one resolution and level, the sum of the closed in-memory buckets from
// a start time on. A graph over the last hour then costs one pass over its edges and the open
// buckets, rather than one pass over sixty buckets: when the window slides, the buckets that
// left it are subtracted, and those that closed since are added, once each.
//
// Subtraction leaves the protocol bits of an edge as they were, so the cache is rebuilt from
// the buckets every rebuildEvery to drop what is stale.
//
// Each cache has its own lock, held only while a query brings the cache up to date and copies
// its edges out, so that concurrent queries overlap for everything else.
type windowCache struct {
	mu    sync.Mutex
	valid bool
	from  int64
	built int64
	edges map[graphKey]*cachedEdge
	seen  map[*aggBucket]bool
}

// graphKey is a rollup key of the levels a graph is drawn at (app, L3, L4), which use no other
// field. A graph hashes one per edge, and it hashes two strings where the whole key hashes six.
type graphKey struct {
	source, target string
	transport      sdk.Transport
	port           uint16
}

func graphKeyOf(k *store.RollupKey) graphKey {
	return graphKey{k.Source, k.Target, k.Transport, k.Port}
}

// cachedEdge is one edge's sum over the cache's buckets. Its latency quantiles are kept between
// queries, since they change only when a bucket enters or leaves the window, and reading them
// from the sketch is a good part of a query's cost.
type cachedEdge struct {
	f         store.Figures
	p50, p95  float64
	quantiled bool
}

func (c *cachedEdge) quantiles() (p50, p95 float64) {
	if !c.quantiled {
		c.p50, c.p95, c.quantiled = c.f.Latency.Quantile(0.5), c.f.Latency.Quantile(0.95), true
	}
	return c.p50, c.p95
}

const rebuildEvery = 10 * time.Minute

func (w *windowCache) add(b *aggBucket, li int) {
	for k, f := range b.levels[li] {
		gk := graphKeyOf(&k)
		cur := w.edges[gk]
		if cur == nil {
			cur = &cachedEdge{}
			w.edges[gk] = cur
		}
		cur.f.Add(f)
		cur.quantiled = false
	}
	w.seen[b] = true
}

func (w *windowCache) sub(b *aggBucket, li int) {
	for k, f := range b.levels[li] {
		gk := graphKeyOf(&k)
		if cur := w.edges[gk]; cur != nil {
			cur.f.Sub(f)
			cur.quantiled = false
			if cur.f.IsZero() {
				delete(w.edges, gk)
			}
		}
	}
	delete(w.seen, b)
}

// windowFor brings the cache of (ri, li) to the closed buckets starting at or after from and
// returns it locked: the caller unlocks its mu when done reading it. Called with roll
// read-held; from is at or after the cutoff, so every closed bucket in range is in memory.
func (e *Engine) windowFor(ri, li int, from, now int64) *windowCache {
	w := &e.windows[ri][li]
	w.mu.Lock()
	rs := &e.res[ri]
	hot := make(map[*aggBucket]bool, len(rs.hot))
	for _, b := range rs.hot {
		hot[b] = true
	}
	stale := !w.valid || from < w.from || now-w.built > int64(rebuildEvery) || now < w.built
	if !stale {
		for b := range w.seen {
			if !hot[b] && b.start >= from {
				stale = true // a bucket in the window left memory: start again
				break
			}
		}
	}
	if stale {
		w.valid, w.from, w.built = true, from, now
		w.edges, w.seen = map[graphKey]*cachedEdge{}, map[*aggBucket]bool{}
	}
	for b := range w.seen {
		if b.start < from {
			w.sub(b, li)
		}
	}
	w.from = from
	for _, b := range rs.hot {
		if b.start >= from && !w.seen[b] {
			w.add(b, li)
		}
	}
	return w
}
