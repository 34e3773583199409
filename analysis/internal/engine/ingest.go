package engine

import (
	"net/netip"
	"sync"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// How ingest works. Records are spread over shards by community id, so the observations of one
// conversation always meet in one shard, under one lock, whichever receiver goroutine brings
// them. In its shard a flow record:
//
//  1. updates the conversation's merge entry: per observation point (an agent's interface) the
//     running sum of its windows, and per direction the conversation's total is the largest of those sums, so
//     two agents seeing one conversation count it once and a third changes nothing;
//  2. adds the growth of that total (never the record's own counts) to the 10 s bucket of the
//     record's end, at the app, L3 and L4 levels.
//
// L7 records are matched the same way on (community id, method, path, request time within a
// tolerance) across agents, and counted once at the app, L3, L4 and L7 levels.
const numShards = 16

// nodeKey is a graph node as ingest sees it: an application of the catalog when app is set, else
// the address. Ids are made into strings only when buckets close or are queried.
type nodeKey struct {
	app  string
	addr netip.Addr
}

type appKey struct {
	src, dst  nodeKey
	transport sdk.Transport
	port      uint16
}

type l3Key struct{ src, dst netip.Addr }

type l4Key struct {
	src, dst  netip.Addr
	transport sdk.Transport
	port      uint16
}

type l7Key struct {
	src, dst               nodeKey
	transport              sdk.Transport
	port                   uint16
	protocol, method, path string
}

type nodeAddrKey struct {
	app  string
	addr netip.Addr
}

// openBucket is one shard's part of a 10 s bucket that is still open.
type openBucket struct {
	start int64
	app   map[appKey]*store.Figures
	l3    map[l3Key]*store.Figures
	l4    map[l4Key]*store.Figures
	l7    map[l7Key]*store.Figures
	addrs map[nodeAddrKey]struct{} // application nodes' addresses seen in the bucket
}

func newOpenBucket(start int64) *openBucket {
	return &openBucket{start: start, app: map[appKey]*store.Figures{}, l3: map[l3Key]*store.Figures{},
		l4: map[l4Key]*store.Figures{}, l7: map[l7Key]*store.Figures{}, addrs: map[nodeAddrKey]struct{}{}}
}

// totals are what the merge compares across observation points.
type totals struct {
	pktsC2S, bytesC2S, pktsS2C, bytesS2C, retrans uint64
}

func (t *totals) max(o *totals) {
	t.pktsC2S = max(t.pktsC2S, o.pktsC2S)
	t.bytesC2S = max(t.bytesC2S, o.bytesC2S)
	t.pktsS2C = max(t.pktsS2C, o.pktsS2C)
	t.bytesS2C = max(t.bytesS2C, o.bytesS2C)
	t.retrans = max(t.retrans, o.retrans)
}

// obsPoint is where a record was seen: an agent's interface. One agent watching both ends'
// interfaces (a lab, a host with containers) sees a conversation twice, as two agents would. The
// parts are kept apart rather than joined into one string, which would cost an allocation per
// record.
type obsPoint struct{ agent, nic, netns string }

type observation struct {
	point   obsPoint
	sum     totals
	final   bool
	lastEnd int64
}

// conv is the merge entry of one conversation.
type conv struct {
	obs        []observation
	counted    totals // what rollups hold of it so far
	rttCounted bool
	touched    int64 // wall time of the last record, for expiry
}

type l7Seen struct {
	at      int64    // request time
	point   obsPoint // the interface's netns is left empty
	matched bool
	touched int64
}

type l7MergeKey struct{ cid, method, path string }

type sgKey struct{ client, server nodeKey }

type sgEdge struct {
	requests, failed uint64
	latency          store.Sketch
}

type shard struct {
	mu    sync.Mutex
	convs map[string]*conv
	l7    map[l7MergeKey][]l7Seen
	open  map[int64]*openBucket
	sg    map[sgKey]*sgEdge
}

func shardOf(cid string) int {
	// FNV-1a over the community id: cheap, and ids are already hashes.
	h := uint32(2166136261)
	for i := 0; i < len(cid); i++ {
		h ^= uint32(cid[i])
		h *= 16777619
	}
	return int(h % numShards)
}

// Ingest takes decoded OTLP batches. It is safe for concurrent use, never blocks on the store,
// and counts whatever it cannot keep.
func (e *Engine) Ingest(batches []otlpschema.Batch) {
	now := e.opts.Now()
	nowNs := now.UnixNano()
	cat := e.catalog.Load()
	var perShard [numShards][]int // reused index lists per batch
	for bi := range batches {
		b := &batches[bi]
		e.c.batches.Add(1)
		agent := b.Agent
		if agent == "" {
			agent = b.Host
		}
		e.noteAgent(agent, b, now)
		e.queueRecords(agent, b)

		if len(b.Flows) > 0 {
			e.c.flows.Add(uint64(len(b.Flows)))
			for s := range perShard {
				perShard[s] = perShard[s][:0]
			}
			for i := range b.Flows {
				s := shardOf(b.Flows[i].CommunityID)
				perShard[s] = append(perShard[s], i)
			}
			for s := range perShard {
				if len(perShard[s]) == 0 {
					continue
				}
				sh := &e.shards[s]
				sh.mu.Lock()
				for _, i := range perShard[s] {
					f := &b.Flows[i]
					a := agent
					if a == "" {
						a = f.Host
					}
					e.ingestFlow(sh, cat, a, f, nowNs)
				}
				sh.mu.Unlock()
			}
		}
		if len(b.L7) > 0 {
			e.c.l7.Add(uint64(len(b.L7)))
			for i := range b.L7 {
				r := &b.L7[i]
				sh := &e.shards[shardOf(r.CommunityID)]
				sh.mu.Lock()
				e.ingestL7(sh, cat, agent, r, nowNs)
				sh.mu.Unlock()
			}
		}
		e.c.events.Add(uint64(len(b.Events)))
		if hook := e.eventHook.Load(); hook != nil {
			for i := range b.Events {
				if len(b.Events[i].Subscriptions) > 0 {
					(*hook)(agent, &b.Events[i])
				}
			}
		}
		e.c.inventories.Add(uint64(len(b.Inventory)))
	}
}

// node maps an endpoint to its graph node.
func node(cat *api.Catalog, ep sdk.Endpoint) nodeKey {
	addr := ep.Addr.Unmap()
	if cat != nil {
		if entry, ok := cat.Lookup(addr, ep.Port, ""); ok {
			return nodeKey{app: entry.App, addr: addr}
		}
	}
	return nodeKey{addr: addr}
}

// bucketOf gives the open 10 s bucket a record time falls in, clamped to the open range.
func (e *Engine) bucketOf(sh *shard, t time.Time, nowNs int64) *openBucket {
	ns := t.UnixNano()
	if t.IsZero() {
		ns = nowNs
	}
	wm := e.watermark.Load()
	if ns < wm {
		e.c.late.Add(1)
		ns = wm
	} else if ns > nowNs+int64(10*time.Second) {
		// An agent whose clock runs ahead: its records count now rather than in a bucket that
		// would not close for a long time.
		e.c.clockAhead.Add(1)
		ns = nowNs
	}
	start := ns - mod(ns, int64(10*time.Second))
	ob := sh.open[start]
	if ob == nil {
		ob = newOpenBucket(start)
		sh.open[start] = ob
	}
	return ob
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// figures finds or adds the figures of a key in a bucket map, within the per-shard limit.
func figures[K comparable](e *Engine, m map[K]*store.Figures, k K, dropped *counter) *store.Figures {
	if f, ok := m[k]; ok {
		return f
	}
	if len(m) >= e.keysPerShard {
		dropped.Add(1)
		return nil
	}
	f := &store.Figures{}
	m[k] = f
	return f
}

func (e *Engine) ingestFlow(sh *shard, cat *api.Catalog, agent string, f *sdk.Flow, nowNs int64) {
	rec := totals{f.ClientToServer.Packets, f.ClientToServer.IPBytes, f.ServerToClient.Packets,
		f.ServerToClient.IPBytes, uint64(f.Retransmits)}
	var delta totals
	newConv := false
	countRTT := false
	point := obsPoint{agent, f.NIC, f.Netns}
	switch c := sh.convs[f.CommunityID]; {
	case f.CommunityID == "":
		e.c.noCommunityID.Add(1)
		delta, newConv, countRTT = rec, true, f.RTT > 0
	case c == nil && len(sh.convs) >= e.convsPerShard && !e.sweepConvs(sh, nowNs):
		// No room to remember it: count it as it comes, which over-counts only when a second
		// agent also reports it.
		e.c.untracked.Add(1)
		delta, newConv, countRTT = rec, true, f.RTT > 0
	default:
		if c != nil {
			// A conversation that one agent saw end and that starts again there is a new one
			// on a reused 5-tuple.
			for i := range c.obs {
				if c.obs[i].point == point && c.obs[i].final && f.Start.UnixNano() >= c.obs[i].lastEnd {
					e.c.reused.Add(1)
					c = nil
					break
				}
			}
		}
		if c == nil {
			c = &conv{}
			sh.convs[f.CommunityID] = c
			newConv = true
			e.c.conversations.Add(1)
		}
		c.touched = nowNs
		oi := -1
		for i := range c.obs {
			if c.obs[i].point == point {
				oi = i
				break
			}
		}
		if oi < 0 {
			if len(c.obs) > 0 {
				e.c.observations.Add(1)
			}
			c.obs = append(c.obs, observation{point: point})
			oi = len(c.obs) - 1
		}
		o := &c.obs[oi]
		o.sum.pktsC2S += rec.pktsC2S
		o.sum.bytesC2S += rec.bytesC2S
		o.sum.pktsS2C += rec.pktsS2C
		o.sum.bytesS2C += rec.bytesS2C
		o.sum.retrans += rec.retrans
		o.final = o.final || f.Final
		o.lastEnd = max(o.lastEnd, f.End.UnixNano())
		var total totals
		for i := range c.obs {
			total.max(&c.obs[i].sum)
		}
		delta = totals{total.pktsC2S - c.counted.pktsC2S, total.bytesC2S - c.counted.bytesC2S,
			total.pktsS2C - c.counted.pktsS2C, total.bytesS2C - c.counted.bytesS2C, total.retrans - c.counted.retrans}
		c.counted = total
		if !c.rttCounted && f.RTT > 0 {
			c.rttCounted, countRTT = true, true
		}
	}
	if !newConv && !countRTT && delta == (totals{}) {
		e.c.merged.Add(1)
		return
	}
	ob := e.bucketOf(sh, f.End, nowNs)
	add := func(fg *store.Figures) {
		if fg == nil {
			return
		}
		if newConv {
			fg.Flows++
		}
		fg.PacketsToServer += delta.pktsC2S
		fg.BytesToServer += delta.bytesC2S
		fg.PacketsToClient += delta.pktsS2C
		fg.BytesToClient += delta.bytesS2C
		fg.Retransmits += delta.retrans
		if countRTT {
			fg.RTTSumNs += uint64(f.RTT)
			fg.RTTCount++
			fg.RTT.Add(f.RTT)
		}
		if f.L7 != nil {
			fg.Protocols |= store.ProtocolBit(f.L7.Protocol)
		}
	}
	src, dst := node(cat, f.Client), node(cat, f.Server)
	e.noteAddrs(ob, src, dst)
	ca, sa := f.Client.Addr.Unmap(), f.Server.Addr.Unmap()
	add(figures(e, ob.app, appKey{src, dst, f.Transport, f.Server.Port}, &e.c.droppedApp))
	add(figures(e, ob.l3, l3Key{ca, sa}, &e.c.droppedL3))
	add(figures(e, ob.l4, l4Key{ca, sa, f.Transport, f.Server.Port}, &e.c.droppedL4))
}

func (e *Engine) noteAddrs(ob *openBucket, nodes ...nodeKey) {
	for _, n := range nodes {
		if n.app == "" {
			continue
		}
		k := nodeAddrKey(n)
		if _, ok := ob.addrs[k]; !ok {
			if len(ob.addrs) >= e.keysPerShard {
				e.c.droppedAddrs.Add(1)
				continue
			}
			ob.addrs[k] = struct{}{}
		}
	}
}

// sweepConvs forgets the conversations idle for MergeIdle, and reports whether there is room.
func (e *Engine) sweepConvs(sh *shard, nowNs int64) bool {
	idle := int64(e.opts.MergeIdle)
	for k, c := range sh.convs {
		if nowNs-c.touched > idle {
			delete(sh.convs, k)
			e.c.expired.Add(1)
		}
	}
	return len(sh.convs) < e.convsPerShard
}

// l7Failed says whether an L7 transaction counts as an error.
func l7Failed(r *sdk.L7) bool {
	if r.Error != "" {
		return true
	}
	switch r.Protocol {
	case "HTTP":
		return r.Status >= 500
	case "DNS":
		return r.RCode != "" && r.RCode != "NOERROR" && r.RCode != "NXDOMAIN"
	}
	return false
}

func (e *Engine) ingestL7(sh *shard, cat *api.Catalog, agent string, r *sdk.L7, nowNs int64) {
	if r.CommunityID != "" {
		point := obsPoint{agent: agent, nic: r.NIC}
		k := l7MergeKey{r.CommunityID, r.Method, r.Path}
		seen := sh.l7[k]
		at := r.Time.UnixNano()
		tol := int64(e.opts.L7Tolerance)
		for i := range seen {
			s := &seen[i]
			if s.point != point && !s.matched && at-s.at <= tol && s.at-at <= tol {
				s.matched = true
				e.c.l7Merged.Add(1)
				return
			}
		}
		switch {
		case seen == nil && len(sh.l7) >= e.l7PerShard && !e.sweepL7(sh, nowNs):
			e.c.l7Untracked.Add(1)
		default:
			if len(seen) >= maxSeenPerKey {
				// A busy keep-alive connection: the oldest requests can no longer be matched.
				copy(seen, seen[1:])
				seen = seen[:len(seen)-1]
				e.c.l7Forgotten.Add(1)
			}
			sh.l7[k] = append(seen, l7Seen{at: at, point: point, touched: nowNs})
		}
	}
	failed := l7Failed(r)
	ob := e.bucketOf(sh, r.Time, nowNs)
	add := func(fg *store.Figures) {
		if fg == nil {
			return
		}
		fg.Requests++
		if failed {
			fg.Errors++
		}
		fg.Protocols |= store.ProtocolBit(r.Protocol)
		fg.Latency.Add(r.Latency)
	}
	src, dst := node(cat, r.Client), node(cat, r.Server)
	e.noteAddrs(ob, src, dst)
	ca, sa := r.Client.Addr.Unmap(), r.Server.Addr.Unmap()
	add(figures(e, ob.app, appKey{src, dst, r.Transport, r.Server.Port}, &e.c.droppedApp))
	add(figures(e, ob.l3, l3Key{ca, sa}, &e.c.droppedL3))
	add(figures(e, ob.l4, l4Key{ca, sa, r.Transport, r.Server.Port}, &e.c.droppedL4))
	add(figures(e, ob.l7, l7Key{src, dst, r.Transport, r.Server.Port, r.Protocol, r.Method, r.Path}, &e.c.droppedL7))

	sk := sgKey{src, dst}
	sg := sh.sg[sk]
	if sg == nil {
		if len(sh.sg) >= e.sgPerShard {
			e.c.droppedSG.Add(1)
			return
		}
		sg = &sgEdge{}
		sh.sg[sk] = sg
	}
	sg.requests++
	if failed {
		sg.failed++
	}
	sg.latency.Add(r.Latency)
}

const maxSeenPerKey = 64

func (e *Engine) sweepL7(sh *shard, nowNs int64) bool {
	idle := int64(e.opts.MergeIdle)
	for k, seen := range sh.l7 {
		keep := seen[:0]
		for _, s := range seen {
			if nowNs-s.touched <= idle {
				keep = append(keep, s)
			}
		}
		if len(keep) == 0 {
			delete(sh.l7, k)
		} else {
			sh.l7[k] = keep
		}
	}
	return len(sh.l7) < e.l7PerShard
}

// queueRecords hands a batch's records to the store writer, or counts them dropped when it is
// behind by MaxPendingRecords.
func (e *Engine) queueRecords(agent string, b *otlpschema.Batch) {
	n := len(b.Flows) + len(b.Events) + len(b.L7)
	if n == 0 {
		return
	}
	first := e.ids.Add(uint64(n)) - uint64(n) + 1
	e.recMu.Lock()
	if e.pending.Len()+n > e.opts.MaxPendingRecords {
		e.recMu.Unlock()
		e.c.recordsDropped.Add(uint64(n))
		return
	}
	id := first
	for i := range b.Flows {
		a := agent
		if a == "" {
			a = b.Flows[i].Host
		}
		e.pending.Flows = append(e.pending.Flows, store.FlowRecord{ID: id, Agent: a, Flow: b.Flows[i]})
		id++
	}
	for i := range b.Events {
		e.pending.Events = append(e.pending.Events, store.EventRecord{ID: id, Agent: agent, Event: b.Events[i]})
		id++
	}
	for i := range b.L7 {
		e.pending.L7 = append(e.pending.L7, store.L7Record{ID: id, Agent: agent, L7: b.L7[i]})
		id++
	}
	full := e.pending.Len() >= recordBatch
	e.recMu.Unlock()
	if full {
		select {
		case e.recKick <- struct{}{}:
		default:
		}
	}
}

// recordBatch is how many records make the writer go before its tick.
const recordBatch = 8192

func (e *Engine) noteAgent(id string, b *otlpschema.Batch, now time.Time) {
	e.agentsMu.Lock()
	defer e.agentsMu.Unlock()
	a := e.agents[id]
	if a == nil {
		if len(e.agents) >= e.opts.MaxAgents {
			e.c.droppedAgents.Add(1)
			return
		}
		a = &Agent{ID: id}
		e.agents[id] = a
	}
	if b.Host != "" {
		a.Host = b.Host
	} else if a.Host == "" && len(b.Flows) > 0 {
		a.Host = b.Flows[0].Host
	}
	a.LastSeen = now
	a.Flows += uint64(len(b.Flows))
	a.Events += uint64(len(b.Events))
	a.L7 += uint64(len(b.L7))
	a.Records += uint64(len(b.Flows) + len(b.Events) + len(b.L7))
}
