// Package engine turns what agents send (OTLP batches decoded into Quanyu's records) into the
// live service graph, rollups and queryable flows of analysis.
//
// Data moves in one direction:
//
//	Ingest → shards (merge per conversation, open 10 s buckets)
//	       → flush: closed 10 s buckets → store, and into the open 1 m bucket
//	                closed 1 m buckets  → store, and into the open 1 h bucket
//	                closed 1 h buckets  → store
//	       → records (flows, events, L7) → store, for /flows and the flow trace
//
// Closed buckets of the last minutes (10 s) and the last hour (1 m) stay in memory as well, so
// that the graph of the last hour is answered without reading the store; New loads them back
// from the store, so a restarted analysis shows the same graph. Rollup rows are deltas: a bucket
// written in parts (at Close, then after a restart) is summed by readers.
//
// Lifecycle: New starts a background flusher; Ingest, SetCatalog and the queries may be called
// from any goroutine; Close stops the flusher, writes every open bucket and pending record, and
// is safe twice. Close does not close the store, which the caller owns.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// ErrNotFound is returned by queries for something the engine does not know.
var ErrNotFound = errors.New("not found")

// IsNotFound reports whether err says that the thing asked for does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// ErrClosed is returned by queries after Close.
var ErrClosed = errors.New("engine is closed")

type counter = atomic.Uint64

// counters are the engine's; Counters gives them by name.
type counters struct {
	batches, flows, events, l7, inventories                              counter
	conversations, observations, merged, reused, untracked, expired      counter
	noCommunityID                                                        counter
	l7Merged, l7Untracked, l7Forgotten                                   counter
	late, clockAhead                                                     counter
	droppedApp, droppedL3, droppedL4, droppedL7, droppedAddrs, droppedSG counter
	droppedAgents, droppedUnwritten                                      counter
	rowsWritten, rollupWriteErrors                                       counter
	recordsWritten, recordsDropped, recordsLost, recordWriteErrors       counter
	pruned, pruneErrors                                                  counter
}

// Engine is the analysis engine. See the package comment.
type Engine struct {
	opts Options
	log  *slog.Logger
	st   store.Store
	c    counters

	catalog   atomic.Pointer[api.Catalog]
	eventHook atomic.Pointer[func(agent string, ev *sdk.Event)]
	shards    [numShards]shard
	watermark atomic.Int64 // start of the oldest open 10 s bucket, Unix ns
	ids       atomic.Uint64

	keysPerShard, convsPerShard, l7PerShard, sgPerShard int

	// roll guards the resolutions' buckets and the node addresses.
	roll      sync.RWMutex
	res       [3]resState
	nodeAddrs map[nodeAddrKey]int64 // last seen, Unix ns
	dirty     map[nodeAddrKey]int64

	windows [3][numLevels]windowCache

	agentsMu sync.Mutex
	agents   map[string]*Agent

	recMu   sync.Mutex
	pending store.Records
	recKick chan struct{}

	lastPrune time.Time
	flushMu   sync.Mutex // one flush at a time
	stop      chan struct{}
	done      sync.WaitGroup
	closeOnce sync.Once
	closed    atomic.Bool
}

// aggBucket is a bucket of one resolution holding string-keyed rows, per level.
type aggBucket struct {
	start   int64
	levels  [numLevels]map[store.RollupKey]*store.Figures
	written bool
}

const numLevels = 4

var levels = [numLevels]store.Level{store.LevelApp, store.LevelL3, store.LevelL4, store.LevelL7}

func levelIndex(l store.Level) int {
	for i, v := range levels {
		if v == l {
			return i
		}
	}
	return -1
}

func newAggBucket(start int64) *aggBucket {
	b := &aggBucket{start: start}
	for i := range b.levels {
		b.levels[i] = map[store.RollupKey]*store.Figures{}
	}
	return b
}

func (b *aggBucket) add(level int, k store.RollupKey, f *store.Figures) {
	m := b.levels[level]
	if cur, ok := m[k]; ok {
		cur.Add(f)
		return
	}
	c := &store.Figures{}
	c.Add(f)
	m[k] = c
}

func (b *aggBucket) merge(o *aggBucket) {
	for l := range o.levels {
		for k, f := range o.levels[l] {
			b.add(l, k, f)
		}
	}
}

// resState is one resolution's buckets in memory.
type resState struct {
	res     store.Resolution
	width   int64
	horizon int64                // closed buckets stay in memory this long after they end
	open    map[int64]*aggBucket // 1 m and 1 h only: 10 s buckets are open in the shards
	hot     []*aggBucket         // closed
	// cutoff: the store is read for buckets before it; memory for those from it on (and for
	// buckets before it not yet written).
	cutoff int64
}

var hotHorizon = [3]time.Duration{10 * time.Minute, 65 * time.Minute, 0}

// New starts an engine on a store, loading the rollups of the last hour back from it.
func New(ctx context.Context, opts Options) (*Engine, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		opts:      opts,
		log:       opts.Log,
		st:        opts.Store,
		agents:    map[string]*Agent{},
		nodeAddrs: map[nodeAddrKey]int64{},
		dirty:     map[nodeAddrKey]int64{},
		recKick:   make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	e.keysPerShard = max(1, opts.MaxKeysPerBucket/numShards)
	e.convsPerShard = max(1, opts.MaxConversations/numShards)
	e.l7PerShard = max(1, opts.MaxL7Tracked/numShards)
	e.sgPerShard = max(1, opts.MaxServiceGraph/numShards)
	for i := range e.shards {
		sh := &e.shards[i]
		sh.convs = map[string]*conv{}
		sh.l7 = map[l7MergeKey][]l7Seen{}
		sh.open = map[int64]*openBucket{}
		sh.sg = map[sgKey]*sgEdge{}
	}
	now := opts.Now()
	nowNs := now.UnixNano()
	e.ids.Store(uint64(nowNs))
	e.lastPrune = now
	tenS := int64(10 * time.Second)
	e.watermark.Store(floor(nowNs-int64(opts.Lateness), tenS))
	for i, r := range store.Resolutions {
		rs := &e.res[i]
		rs.res, rs.width, rs.horizon = r, int64(r.Duration()), int64(hotHorizon[i])
		rs.open = map[int64]*aggBucket{}
		rs.cutoff = math.MaxInt64
		if rs.horizon == 0 {
			continue
		}
		from := floor(nowNs-rs.horizon, rs.width)
		rs.cutoff = from
		byStart := map[int64]*aggBucket{}
		for li, l := range levels {
			rows, err := e.st.ReadRollups(ctx, store.RollupQuery{Resolution: r, Level: l, From: time.Unix(0, from)})
			if err != nil {
				return nil, fmt.Errorf("loading the last rollups: %w", err)
			}
			for j := range rows {
				s := rows[j].Bucket.UnixNano()
				b := byStart[s]
				if b == nil {
					b = newAggBucket(s)
					b.written = true
					byStart[s] = b
				}
				k := rows[j].Key
				k.Level = ""
				b.add(li, k, &rows[j].Figures)
			}
		}
		for _, b := range byStart {
			rs.hot = append(rs.hot, b)
		}
		slices.SortFunc(rs.hot, func(a, b *aggBucket) int { return cmpInt(a.start, b.start) })
	}
	addrs, err := e.st.ReadNodeAddresses(ctx, now.Add(-opts.RecordRetention))
	if err != nil {
		return nil, fmt.Errorf("loading node addresses: %w", err)
	}
	for _, a := range addrs {
		if len(e.nodeAddrs) >= opts.MaxNodeAddresses {
			e.c.droppedAddrs.Add(1)
			continue
		}
		app, ok := appOfNodeID(a.Node)
		if !ok {
			continue
		}
		e.nodeAddrs[nodeAddrKey{app, a.Addr}] = a.LastSeen.UnixNano()
	}
	e.done.Add(2)
	go e.flushLoop()
	go e.recordLoop()
	return e, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func floor(ns, width int64) int64 { return ns - mod(ns, width) }

// SetCatalog replaces the application catalog; nil is an empty one. Records already counted
// keep the nodes they were counted under.
func (e *Engine) SetCatalog(c *api.Catalog) { e.catalog.Store(c) }

func (e *Engine) flushLoop() {
	defer e.done.Done()
	t := time.NewTicker(e.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.flush(context.Background(), false)
		}
	}
}

func (e *Engine) recordLoop() {
	defer e.done.Done()
	t := time.NewTicker(e.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		case <-e.recKick:
		}
		e.writeRecords(context.Background())
	}
}

// writeRecords sends the pending records to the store.
func (e *Engine) writeRecords(ctx context.Context) {
	e.recMu.Lock()
	batch := e.pending
	e.pending = store.Records{}
	e.recMu.Unlock()
	if batch.Len() == 0 {
		return
	}
	if err := e.st.WriteRecords(ctx, batch); err != nil {
		e.c.recordWriteErrors.Add(1)
		e.c.recordsLost.Add(uint64(batch.Len()))
		e.log.Warn("records lost: writing them to the store failed", "records", batch.Len(), "err", err)
		return
	}
	e.c.recordsWritten.Add(uint64(batch.Len()))
}

// nodeID is a node's id in the graph and in app and L7 rollup rows.
func nodeID(n nodeKey) string {
	if n.app != "" {
		return "app:" + n.app
	}
	return "ip:" + n.addr.String()
}

func appOfNodeID(id string) (string, bool) {
	if len(id) > 4 && id[:4] == "app:" {
		return id[4:], true
	}
	return "", false
}

// addOpen adds a shard's open bucket to a string-keyed bucket, every level.
func addOpen(dst *aggBucket, ob *openBucket, ids map[nodeKey]string) {
	eachOpen(ob, ids, -1, func(l int, k store.RollupKey, f *store.Figures) { dst.add(l, k, f) })
}

// eachOpen gives the rows of a shard's open bucket with string keys: level li only, or every
// level when li is negative.
func eachOpen(ob *openBucket, ids map[nodeKey]string, li int, fn func(l int, k store.RollupKey, f *store.Figures)) {
	id := func(n nodeKey) string {
		if s, ok := ids[n]; ok {
			return s
		}
		s := nodeID(n)
		ids[n] = s
		return s
	}
	if li < 0 || li == 0 {
		for k, f := range ob.app {
			fn(0, store.RollupKey{Source: id(k.src), Target: id(k.dst), Transport: k.transport, Port: k.port}, f)
		}
	}
	if li < 0 || li == 1 {
		for k, f := range ob.l3 {
			fn(1, store.RollupKey{Source: k.src.String(), Target: k.dst.String()}, f)
		}
	}
	if li < 0 || li == 2 {
		for k, f := range ob.l4 {
			fn(2, store.RollupKey{Source: k.src.String(), Target: k.dst.String(), Transport: k.transport, Port: k.port}, f)
		}
	}
	if li < 0 || li == 3 {
		for k, f := range ob.l7 {
			fn(3, store.RollupKey{Source: id(k.src), Target: id(k.dst), Transport: k.transport, Port: k.port,
				Protocol: k.protocol, Method: k.method, Path: k.path}, f)
		}
	}
}

// flush closes the 10 s buckets past the lateness, cascades them into the coarser resolutions,
// writes what closed, and forgets what is past the memory horizon. final closes everything.
func (e *Engine) flush(ctx context.Context, final bool) {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	now := e.opts.Now()
	nowNs := now.UnixNano()
	wm := floor(nowNs-int64(e.opts.Lateness), int64(10*time.Second))
	if final {
		wm = math.MaxInt64
	}
	if wm > e.watermark.Load() {
		e.watermark.Store(wm)
	}
	wm = e.watermark.Load()

	// Take the closed 10 s buckets out of the shards.
	closed := map[int64]*aggBucket{}
	var addrs []nodeAddrKey
	var addrTimes []int64
	ids := map[nodeKey]string{}
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for start, ob := range sh.open {
			if start >= wm {
				continue
			}
			b := closed[start]
			if b == nil {
				b = newAggBucket(start)
				closed[start] = b
			}
			addOpen(b, ob, ids)
			for k := range ob.addrs {
				addrs = append(addrs, k)
				addrTimes = append(addrTimes, start)
			}
			delete(sh.open, start)
		}
		if len(sh.convs) > e.convsPerShard/2 || final {
			e.sweepConvs(sh, nowNs)
		}
		if len(sh.l7) > e.l7PerShard/2 {
			e.sweepL7(sh, nowNs)
		}
		sh.mu.Unlock()
	}

	e.roll.Lock()
	for i, k := range addrs {
		t := addrTimes[i]
		if cur, ok := e.nodeAddrs[k]; ok || len(e.nodeAddrs) < e.opts.MaxNodeAddresses {
			if t > cur {
				e.nodeAddrs[k] = t
				e.dirty[k] = t
			}
		} else {
			e.c.droppedAddrs.Add(1)
		}
	}
	starts := make([]int64, 0, len(closed))
	for s := range closed {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	for _, s := range starts {
		e.closeInto(0, closed[s])
	}
	for ri := 1; ri < len(e.res); ri++ {
		rs := &e.res[ri]
		var done []int64
		for s := range rs.open {
			if final || s+rs.width <= wm {
				done = append(done, s)
			}
		}
		slices.Sort(done)
		for _, s := range done {
			b := rs.open[s]
			delete(rs.open, s)
			e.closeInto(ri, b)
		}
	}
	// Buckets before a resolution's cutoff are read from the store by queries: they are
	// written under the lock, so no query sees them in both places. The others are invisible in
	// the store to queries, and are written without holding queries up.
	type job struct {
		ri int
		b  *aggBucket
	}
	var later []job
	for ri := range e.res {
		rs := &e.res[ri]
		for _, b := range rs.hot {
			if b.written {
				continue
			}
			if b.start < rs.cutoff {
				b.written = e.writeBucket(ctx, rs.res, b)
			} else {
				later = append(later, job{ri, b})
			}
		}
	}
	dirty := e.dirty
	e.dirty = map[nodeAddrKey]int64{}
	e.roll.Unlock()

	var wrote []job
	for _, j := range later {
		if e.writeBucket(ctx, e.res[j.ri].res, j.b) {
			wrote = append(wrote, j)
		}
	}
	if len(dirty) > 0 {
		rows := make([]store.NodeAddress, 0, len(dirty))
		for k, t := range dirty {
			rows = append(rows, store.NodeAddress{Node: "app:" + k.app, Addr: k.addr, LastSeen: time.Unix(0, t)})
		}
		if err := e.st.WriteNodeAddresses(ctx, rows); err != nil {
			e.log.Warn("writing node addresses failed; retrying", "err", err)
			e.roll.Lock()
			for k, t := range dirty {
				if t > e.dirty[k] {
					e.dirty[k] = t
				}
			}
			e.roll.Unlock()
		}
	}

	e.roll.Lock()
	for _, j := range wrote {
		j.b.written = true
	}
	for ri := range e.res {
		rs := &e.res[ri]
		keep := rs.hot[:0]
		unwritten := 0
		for _, b := range rs.hot {
			if b.written && b.start+rs.width <= nowNs-rs.horizon {
				rs.cutoff = max(rs.cutoff, b.start+rs.width)
				if rs.cutoff == math.MaxInt64 {
					rs.cutoff = b.start + rs.width
				}
				continue
			}
			if !b.written {
				unwritten++
			}
			keep = append(keep, b)
		}
		// A store that keeps failing must not make memory grow without end.
		limit := int(int64(time.Hour)/rs.width) + 16
		for unwritten > limit {
			i := slices.IndexFunc(keep, func(b *aggBucket) bool { return !b.written })
			keep = slices.Delete(keep, i, i+1)
			unwritten--
			e.c.droppedUnwritten.Add(1)
		}
		clear(rs.hot[len(keep):])
		rs.hot = keep
	}
	e.roll.Unlock()

	if final || now.Sub(e.lastPrune) >= time.Minute {
		e.lastPrune = now
		e.prune(ctx, now)
	}
}

// closeInto puts a closed bucket of resolution ri among the hot buckets and into the open
// bucket of the next resolution. Called with roll held.
func (e *Engine) closeInto(ri int, b *aggBucket) {
	rs := &e.res[ri]
	rs.hot = append(rs.hot, b)
	if ri+1 < len(e.res) {
		next := &e.res[ri+1]
		s := floor(b.start, next.width)
		nb := next.open[s]
		if nb == nil {
			nb = newAggBucket(s)
			next.open[s] = nb
		}
		nb.merge(b)
	}
}

// writeBucket writes one bucket's rows; it reports success.
func (e *Engine) writeBucket(ctx context.Context, res store.Resolution, b *aggBucket) bool {
	n := 0
	for l := range b.levels {
		n += len(b.levels[l])
	}
	if n == 0 {
		return true
	}
	rows := make([]store.Rollup, 0, n)
	at := time.Unix(0, b.start).UTC()
	for l := range b.levels {
		for k, f := range b.levels[l] {
			k.Level = levels[l]
			rows = append(rows, store.Rollup{Bucket: at, Key: k, Figures: *f})
		}
	}
	if err := e.st.WriteRollups(ctx, res, rows); err != nil {
		e.c.rollupWriteErrors.Add(1)
		e.log.Warn("writing rollups failed; retrying", "resolution", res, "bucket", at, "err", err)
		return false
	}
	e.c.rowsWritten.Add(uint64(len(rows)))
	return true
}

func (e *Engine) prune(ctx context.Context, now time.Time) {
	c := store.Cutoffs{Rollups: map[store.Resolution]time.Time{}, Records: now.Add(-e.opts.RecordRetention),
		Nodes: now.Add(-e.opts.Retention1h)}
	for _, r := range store.Resolutions {
		c.Rollups[r] = now.Add(-e.opts.retention(r))
	}
	n, err := e.st.Prune(ctx, c)
	if err != nil {
		e.c.pruneErrors.Add(1)
		e.log.Warn("pruning the store failed", "err", err)
		return
	}
	e.c.pruned.Add(uint64(n))
}

// Close stops the engine: it writes every open bucket (partial buckets are completed by later
// rows after a restart) and the pending records. It does not close the store.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		close(e.stop)
		e.done.Wait()
		ctx := context.Background()
		e.flush(ctx, true)
		e.writeRecords(ctx)
		e.closed.Store(true)
	})
	return nil
}

// Counters gives the engine's counters by name: what it received, merged, wrote and dropped
// (with the reason in the name).
func (e *Engine) Counters() map[string]uint64 {
	c := &e.c
	e.recMu.Lock()
	pending := e.pending.Len()
	e.recMu.Unlock()
	return map[string]uint64{
		"ingest.batches":                  c.batches.Load(),
		"ingest.flows":                    c.flows.Load(),
		"ingest.events":                   c.events.Load(),
		"ingest.l7":                       c.l7.Load(),
		"ingest.inventories":              c.inventories.Load(),
		"merge.conversations":             c.conversations.Load(),
		"merge.second_observation_points": c.observations.Load(),
		"merge.records_already_counted":   c.merged.Load(),
		"merge.reused_five_tuple":         c.reused.Load(),
		"merge.expired":                   c.expired.Load(),
		"merge.untracked.table_full":      c.untracked.Load(),
		"merge.untracked.no_community_id": c.noCommunityID.Load(),
		"l7.merged":                       c.l7Merged.Load(),
		"l7.untracked.table_full":         c.l7Untracked.Load(),
		"l7.forgotten.per_key_limit":      c.l7Forgotten.Load(),
		"rollup.late_clamped":             c.late.Load(),
		"rollup.clock_ahead_clamped":      c.clockAhead.Load(),
		"rollup.dropped.app_keys_full":    c.droppedApp.Load(),
		"rollup.dropped.l3_keys_full":     c.droppedL3.Load(),
		"rollup.dropped.l4_keys_full":     c.droppedL4.Load(),
		"rollup.dropped.l7_keys_full":     c.droppedL7.Load(),
		"rollup.dropped.unwritten":        c.droppedUnwritten.Load(),
		"rollup.rows_written":             c.rowsWritten.Load(),
		"rollup.write_errors":             c.rollupWriteErrors.Load(),
		"nodes.dropped.addresses_full":    c.droppedAddrs.Load(),
		"servicegraph.dropped.edges_full": c.droppedSG.Load(),
		"agents.dropped.table_full":       c.droppedAgents.Load(),
		"records.pending":                 uint64(pending),
		"records.written":                 c.recordsWritten.Load(),
		"records.dropped.queue_full":      c.recordsDropped.Load(),
		"records.dropped.write_failed":    c.recordsLost.Load(),
		"records.write_errors":            c.recordWriteErrors.Load(),
		"store.pruned_rows":               c.pruned.Load(),
		"store.prune_errors":              c.pruneErrors.Load(),
	}
}
