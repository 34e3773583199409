package engine

import (
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
)

// windowCache holds, for one resolution and level, the sum of the closed in-memory buckets from
// a start time on. A graph over the last hour then costs one pass over its edges and the open
// buckets, rather than one pass over sixty buckets: when the window slides, the buckets that
// left it are subtracted, and those that closed since are added, once each.
//
// Subtraction leaves the protocol bits of an edge as they were, so the cache is rebuilt from
// the buckets every rebuildEvery to drop what is stale.
type windowCache struct {
	valid bool
	from  int64
	built int64
	edges map[store.RollupKey]*store.Figures
	seen  map[*aggBucket]bool
}

const rebuildEvery = 10 * time.Minute

func (w *windowCache) add(b *aggBucket, li int) {
	for k, f := range b.levels[li] {
		cur := w.edges[k]
		if cur == nil {
			cur = &store.Figures{}
			w.edges[k] = cur
		}
		cur.Add(f)
	}
	w.seen[b] = true
}

func (w *windowCache) sub(b *aggBucket, li int) {
	for k, f := range b.levels[li] {
		if cur := w.edges[k]; cur != nil {
			cur.Sub(f)
			if cur.IsZero() {
				delete(w.edges, k)
			}
		}
	}
	delete(w.seen, b)
}

// windowFor brings the cache of (ri, li) to the closed buckets starting at or after from and
// returns it. Called with roll read-held and cacheMu held; from is at or after the cutoff, so
// every closed bucket in range is in memory.
func (e *Engine) windowFor(ri, li int, from, now int64) *windowCache {
	w := &e.windows[ri][li]
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
		*w = windowCache{valid: true, from: from, built: now, edges: map[store.RollupKey]*store.Figures{}, seen: map[*aggBucket]bool{}}
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
