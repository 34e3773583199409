package engine

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/sdk"
)

// ErrInvalid wraps the errors of queries whose arguments are wrong (the caller's mistake).
var ErrInvalid = errors.New("invalid query")

// IsInvalid reports whether err is a query argument's fault.
func IsInvalid(err error) bool { return errors.Is(err, ErrInvalid) }

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// queryTimeout bounds a query's store reads.
const queryTimeout = 30 * time.Second

// gather calls fn for every row of a level in [from, to) at resolution ri: the store's rows
// before the resolution's cutoff, closed buckets in memory, open buckets of this and the finer
// resolutions, and the shards' open 10 s buckets. Buckets are given at resolution ri. addrs, if
// not nil, receives the application nodes' addresses seen in open shard buckets of the range.
func (e *Engine) gather(ctx context.Context, ri, li int, from, to int64, source, target string,
	fn func(bucket int64, k *store.RollupKey, f *store.Figures), addrs func(k nodeAddrKey, at int64)) error {
	e.roll.RLock()
	defer e.roll.RUnlock()
	return e.gatherLocked(ctx, ri, li, from, to, source, target, false, fn, addrs)
}

// gatherLocked is gather with roll held; skipHot leaves the closed buckets in memory out.
func (e *Engine) gatherLocked(ctx context.Context, ri, li int, from, to int64, source, target string, skipHot bool,
	fn func(bucket int64, k *store.RollupKey, f *store.Figures), addrs func(k nodeAddrKey, at int64)) error {
	rs := &e.res[ri]
	keep := func(k *store.RollupKey) bool {
		return (source == "" || k.Source == source) && (target == "" || k.Target == target)
	}
	if storeTo := min(to, rs.cutoff); from < storeTo {
		rows, err := e.st.ReadRollups(ctx, store.RollupQuery{Resolution: rs.res, Level: levels[li],
			From: time.Unix(0, from), To: time.Unix(0, storeTo), Source: source, Target: target})
		if err != nil {
			return err
		}
		for i := range rows {
			r := &rows[i]
			r.Key.Level = ""
			fn(floor(r.Bucket.UnixNano(), rs.width), &r.Key, &r.Figures)
		}
	}
	each := func(b *aggBucket) {
		at := floor(b.start, rs.width)
		for k, f := range b.levels[li] {
			if keep(&k) {
				fn(at, &k, f)
			}
		}
	}
	for _, b := range rs.hot {
		if !skipHot && b.start >= from && b.start < to && (b.start >= rs.cutoff || !b.written) {
			each(b)
		}
	}
	for fi := ri; fi >= 1; fi-- {
		for _, b := range e.res[fi].open {
			if b.start >= from && b.start < to {
				each(b)
			}
		}
	}
	ids := map[nodeKey]string{}
	// One key serves every row of the open buckets, as fn must not keep it: a key made per row
	// would escape to the heap, and a graph has a row per edge in each open bucket.
	var row store.RollupKey
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for start, ob := range sh.open {
			if start < from || start >= to {
				continue
			}
			at := floor(start, rs.width)
			eachOpen(ob, ids, li, func(_ int, k store.RollupKey, f *store.Figures) {
				row = k
				if keep(&row) {
					fn(at, &row, f)
				}
			})
			if addrs != nil {
				for k := range ob.addrs {
					addrs(k, start)
				}
			}
		}
		sh.mu.Unlock()
	}
	return nil
}

// resolutionFor picks the finest resolution that answers a span in at most about 60 buckets
// and whose retention covers it.
func (e *Engine) resolutionFor(span time.Duration) int {
	switch {
	case span <= 10*time.Minute && span <= e.opts.Retention10s:
		return 0
	case span <= time.Hour && span <= e.opts.Retention1m:
		return 1
	}
	return 2
}

// GraphQuery selects a graph.
type GraphQuery struct {
	Since    time.Duration // default 5m; the window is widened to whole buckets
	Level    string        // "app" (default), "l3", "l4"
	App      string        // only edges with this application at either end
	Owner    string        // only edges with this owner (name or team) at either end
	Protocol string        // only edges of this transport or L7 protocol (TCP, HTTP, DNS, …)
}

// Graph is the service graph of a time window.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Node is a graph node: an application of the catalog, or an address.
type Node struct {
	ID        string   `json:"id"` // "app:<app>" or "ip:<address>"
	App       string   `json:"app"`
	Owner     string   `json:"owner"`
	Team      string   `json:"team"`
	Kind      string   `json:"kind"` // "app", "address" ("process", "container" reserved)
	Addresses []string `json:"addresses"`
}

// Edge is client → server traffic between two nodes, by transport and server port.
type Edge struct {
	Source       string  `json:"source"`
	Target       string  `json:"target"`
	Transport    string  `json:"transport"`
	Port         uint16  `json:"port"`
	Protocol     string  `json:"protocol"` // L7 protocols seen, comma-separated
	Flows        uint64  `json:"flows"`    // conversations that began in the window
	Bytes        uint64  `json:"bytes"`    // IP bytes, both directions
	Packets      uint64  `json:"packets"`
	Requests     uint64  `json:"requests"`
	Errors       uint64  `json:"errors"`
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP95Ms float64 `json:"latency_p95_ms"`
	RTTMs        float64 `json:"rtt_ms"` // mean handshake RTT
	Retransmits  uint64  `json:"retransmits"`
}

func protocolNames(bits uint8) string {
	var out []string
	if bits&store.ProtoDNS != 0 {
		out = append(out, "DNS")
	}
	if bits&store.ProtoHTTP != 0 {
		out = append(out, "HTTP")
	}
	if bits&store.ProtoOther != 0 {
		out = append(out, "other")
	}
	return strings.Join(out, ",")
}

const protoBits = store.ProtoHTTP | store.ProtoDNS | store.ProtoOther

// protocolNamesOf holds protocolNames of every combination of the bits, so that a graph does
// not build the same few strings again for each edge.
var protocolNamesOf = func() (t [protoBits + 1]string) {
	for b := range t {
		t[b] = protocolNames(uint8(b))
	}
	return t
}()

func transportName(t sdk.Transport) string {
	if t == 0 {
		return ""
	}
	return t.String()
}

// graphScratch is what a Graph query needs only while it runs. It is kept between queries
// because a large graph's worth of garbage per query made the collector, marking the hot
// buckets, the largest part of a query's time.
type graphScratch struct {
	restIdx map[graphKey]int // index in rest
	rest    []restEdge
	edges   []Edge
	nodeIdx map[string]int // index in nodes, by an edge's end as its key names it
	nodes   []graphNode
	kept    []keptEdge
}

// restEdge sums an edge's rows that are not in the window cache.
type restEdge struct {
	key     graphKey
	f       store.Figures
	inCache bool
}

type graphNode struct {
	Node
	used bool
	rank int
}

// keptEdge is an edge of edges that passed the filters, with its ends in nodes.
type keptEdge struct{ i, src, dst int }

var graphScratchPool = sync.Pool{New: func() any {
	return &graphScratch{restIdx: map[graphKey]int{}, nodeIdx: map[string]int{}}
}}

func (s *graphScratch) reset() {
	clear(s.restIdx)
	clear(s.nodeIdx)
	// Zeroed so that the pool holds no sketches, strings or addresses of this query.
	clear(s.rest)
	clear(s.edges)
	clear(s.nodes)
	s.rest, s.edges, s.nodes, s.kept = s.rest[:0], s.edges[:0], s.nodes[:0], s.kept[:0]
}

// Graph gives the graph of the last q.Since. A store error gives what memory holds, logged.
//
// The closed buckets of the window come from the window cache and the rest (open buckets, and
// the store's rows when the window reaches past the cache) is summed per query. The two are
// combined edge by edge, so the cache is locked only while it is read, and no edge's figures
// are copied.
func (e *Engine) Graph(q GraphQuery) Graph {
	since := q.Since
	if since <= 0 {
		since = 5 * time.Minute
	}
	li := 0
	switch q.Level {
	case "l3":
		li = 1
	case "l4":
		li = 2
	}
	now := e.opts.Now().UnixNano()
	ri := e.resolutionFor(since)
	from := floor(now-int64(since), e.res[ri].width)
	s := graphScratchPool.Get().(*graphScratch)
	defer func() {
		s.reset()
		graphScratchPool.Put(s)
	}()
	openAddrs := map[nodeAddrKey]int64{}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	add := func(_ int64, k *store.RollupKey, f *store.Figures) {
		gk := graphKeyOf(k)
		i, ok := s.restIdx[gk]
		if !ok {
			i = len(s.rest)
			s.restIdx[gk] = i
			s.rest = append(s.rest, restEdge{key: gk})
		}
		s.rest[i].f.Add(f)
	}
	e.roll.RLock()
	cached := from >= e.res[ri].cutoff
	err := e.gatherLocked(ctx, ri, li, from, now+1, "", "", cached, add,
		func(k nodeAddrKey, at int64) { openAddrs[k] = max(openAddrs[k], at) })
	if cached {
		w := e.windowFor(ri, li, from, now)
		s.edges = slices.Grow(s.edges, len(w.edges)+len(s.rest))
		for k, c := range w.edges {
			p50, p95 := c.quantiles()
			i, ok := s.restIdx[k]
			if !ok {
				s.edges = append(s.edges, newEdge(&k, &c.f, nil, p50, p95))
				continue
			}
			r := &s.rest[i]
			r.inCache = true
			if r.f.Latency.Count() > 0 {
				// The query's own sketch takes the cache's samples, which leaves the cache's as
				// it is.
				r.f.Latency.Merge(&c.f.Latency)
				p50, p95 = r.f.Latency.Quantile(0.5), r.f.Latency.Quantile(0.95)
			}
			s.edges = append(s.edges, newEdge(&k, &c.f, &r.f, p50, p95))
		}
		w.mu.Unlock()
	}
	e.roll.RUnlock()
	if err != nil {
		e.log.Warn("graph from memory only: reading the store failed", "err", err)
	}
	for i := range s.rest {
		if r := &s.rest[i]; !r.inCache {
			s.edges = append(s.edges, newEdge(&r.key, &r.f, nil, r.f.Latency.Quantile(0.5), r.f.Latency.Quantile(0.95)))
		}
	}

	// Nodes are found by the edges' ends as the rows name them: node ids at the app level, bare
	// addresses at the L3 and L4 levels.
	cat := e.catalog.Load()
	nodeOf := func(end string) int {
		if i, ok := s.nodeIdx[end]; ok {
			return i
		}
		id := end
		if li > 0 {
			id = "ip:" + end
		}
		n := Node{ID: id, Addresses: []string{}}
		if app, ok := appOfNodeID(id); ok {
			n.App, n.Kind = app, "app"
			if cat != nil {
				if entry, ok := cat.Entry(app); ok {
					n.Owner, n.Team = entry.Owner.Name, entry.Owner.Team
				}
			}
		} else {
			addr := strings.TrimPrefix(id, "ip:")
			n.Kind = "address"
			n.Addresses = []string{addr}
			if li > 0 && cat != nil {
				if a, err := netip.ParseAddr(addr); err == nil {
					if entry, ok := cat.Lookup(a, 0, ""); ok {
						n.App, n.Owner, n.Team = entry.App, entry.Owner.Name, entry.Owner.Team
					}
				}
			}
		}
		s.nodeIdx[end] = len(s.nodes)
		s.nodes = append(s.nodes, graphNode{Node: n})
		return len(s.nodes) - 1
	}
	for i := range s.edges {
		ed := &s.edges[i]
		si, ti := nodeOf(ed.Source), nodeOf(ed.Target)
		sn, tn := &s.nodes[si], &s.nodes[ti]
		ed.Source, ed.Target = sn.ID, tn.ID
		if q.App != "" && sn.App != q.App && tn.App != q.App {
			continue
		}
		if q.Owner != "" && sn.Owner != q.Owner && sn.Team != q.Owner && tn.Owner != q.Owner && tn.Team != q.Owner {
			continue
		}
		if q.Protocol != "" && !strings.EqualFold(ed.Transport, q.Protocol) &&
			!slices.ContainsFunc(strings.Split(ed.Protocol, ","), func(p string) bool { return strings.EqualFold(p, q.Protocol) }) {
			continue
		}
		sn.used, tn.used = true, true
		s.kept = append(s.kept, keptEdge{i, si, ti})
	}
	if li == 0 {
		e.roll.RLock()
		for k, t := range e.nodeAddrs {
			if t >= from {
				openAddrs[k] = max(openAddrs[k], t)
			}
		}
		e.roll.RUnlock()
		for k := range openAddrs {
			if i, ok := s.nodeIdx["app:"+k.app]; ok && s.nodes[i].used {
				s.nodes[i].Addresses = append(s.nodes[i].Addresses, k.addr.String())
			}
		}
	}
	used := make([]*graphNode, 0, len(s.nodes))
	for i := range s.nodes {
		if s.nodes[i].used {
			used = append(used, &s.nodes[i])
		}
	}
	slices.SortFunc(used, func(a, b *graphNode) int { return strings.Compare(a.ID, b.ID) })
	g := Graph{Nodes: make([]Node, len(used)), Edges: make([]Edge, len(s.kept))}
	for i, n := range used {
		n.rank = i
		slices.Sort(n.Addresses)
		g.Nodes[i] = n.Node
	}
	// Edges are ordered by their ends' ids, compared through the nodes' ranks: comparing the ids
	// themselves was most of a large graph's sorting.
	slices.SortFunc(s.kept, func(a, b keptEdge) int {
		if c := cmp.Compare(s.nodes[a.src].rank, s.nodes[b.src].rank); c != 0 {
			return c
		}
		if c := cmp.Compare(s.nodes[a.dst].rank, s.nodes[b.dst].rank); c != 0 {
			return c
		}
		ea, eb := &s.edges[a.i], &s.edges[b.i]
		return cmp.Or(strings.Compare(ea.Transport, eb.Transport), cmp.Compare(ea.Port, eb.Port))
	})
	for j, k := range s.kept {
		g.Edges[j] = s.edges[k.i]
	}
	return g
}

// noFigures stands for an edge's missing part in newEdge.
var noFigures store.Figures

// newEdge makes the Edge of key k from its figures a plus b (b nil for none), with p50 and p95
// the latency quantiles of their sum. Its ends are k's, bare addresses at the L3 and L4 levels.
func newEdge(k *graphKey, a, b *store.Figures, p50, p95 float64) Edge {
	if b == nil {
		b = &noFigures
	}
	ed := Edge{Source: k.source, Target: k.target, Transport: transportName(k.transport), Port: k.port,
		Protocol: protocolNamesOf[(a.Protocols|b.Protocols)&protoBits], Flows: a.Flows + b.Flows,
		Bytes:    a.BytesToServer + a.BytesToClient + b.BytesToServer + b.BytesToClient,
		Packets:  a.PacketsToServer + a.PacketsToClient + b.PacketsToServer + b.PacketsToClient,
		Requests: a.Requests + b.Requests, Errors: a.Errors + b.Errors, LatencyP50Ms: p50, LatencyP95Ms: p95,
		Retransmits: a.Retransmits + b.Retransmits}
	if n := a.RTTCount + b.RTTCount; n > 0 {
		ed.RTTMs = float64(a.RTTSumNs+b.RTTSumNs) / float64(n) / 1e6
	}
	return ed
}

// FlowQuery selects flow records. Zero fields select all.
type FlowQuery struct {
	From, To    time.Time // the record's End in [From, To); zero To: now
	NIC         string
	Agent       string
	Addr        netip.Addr   // either end
	CIDR        netip.Prefix // either end inside
	Transport   string       // TCP, UDP, ICMP, …
	Port        uint16       // either end's port
	L7Method    string       // conversations with an L7 record of this method
	CommunityID string
	Limit       int    // default 100, at most 1000
	Cursor      string // FlowPage.Next of the previous page
}

// FlowRecord is a flow record as an agent sent it.
type FlowRecord struct {
	ID    string   `json:"id"`
	Agent string   `json:"agent"`
	Flow  sdk.Flow `json:"flow"`
}

// FlowPage is one page of flow records, newest first.
type FlowPage struct {
	Flows []FlowRecord `json:"flows"`
	Next  string       `json:"next,omitempty"` // cursor of the next page; "" on the last
}

func encodeCursor(c store.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.Time.UnixNano(), 10) + "." + strconv.FormatUint(c.ID, 10)))
}

func decodeCursor(s string) (store.Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		t, id, ok := strings.Cut(string(b), ".")
		if ok {
			ns, err1 := strconv.ParseInt(t, 10, 64)
			n, err2 := strconv.ParseUint(id, 10, 64)
			if err1 == nil && err2 == nil {
				return store.Cursor{Time: time.Unix(0, ns), ID: n}, nil
			}
		}
	}
	return store.Cursor{}, invalid("cursor %q: not a cursor this server gave", s)
}

// Flows gives a page of flow records that match, newest first. Records reach the store within
// about a flush interval of their arrival.
func (e *Engine) Flows(q FlowQuery) (FlowPage, error) {
	page := FlowPage{Flows: []FlowRecord{}}
	if e.closed.Load() {
		return page, ErrClosed
	}
	f := store.FlowFilter{From: q.From, To: q.To, NIC: q.NIC, Agent: q.Agent, Addr: q.Addr, Prefix: q.CIDR,
		Port: q.Port, L7Method: q.L7Method, CommunityID: q.CommunityID, Limit: q.Limit}
	switch {
	case f.Limit == 0:
		f.Limit = 100
	case f.Limit < 0 || f.Limit > 1000:
		return page, invalid("limit %d: want 1 to 1000", q.Limit)
	}
	if q.Transport != "" {
		t, ok := sdk.ParseTransport(q.Transport)
		if !ok {
			if n, err := strconv.ParseUint(q.Transport, 10, 8); err == nil {
				t, ok = sdk.Transport(n), true
			}
		}
		if !ok {
			return page, invalid("transport %q: want TCP, UDP, ICMP, ICMPv6, SCTP or a protocol number", q.Transport)
		}
		f.Transport = t
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return page, invalid("time range: from %v is not before to %v", q.From, q.To)
	}
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor)
		if err != nil {
			return page, err
		}
		f.After = &c
	}
	// One more than asked tells whether there is a next page.
	f.Limit++
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	recs, err := e.st.QueryFlows(ctx, f)
	if err != nil {
		return page, fmt.Errorf("querying flow records: %w", err)
	}
	more := len(recs) == f.Limit
	if more {
		recs = recs[:len(recs)-1]
	}
	for _, r := range recs {
		page.Flows = append(page.Flows, FlowRecord{ID: strconv.FormatUint(r.ID, 10), Agent: r.Agent, Flow: r.Flow})
	}
	if more {
		last := recs[len(recs)-1]
		page.Next = encodeCursor(store.Cursor{Time: last.End, ID: last.ID})
	}
	return page, nil
}

// Conversation is the flow trace of one conversation: all its records, by time.
type Conversation struct {
	CommunityID string      `json:"community_id"`
	Items       []TraceItem `json:"items"`
}

// TraceItem is one record of a conversation. A flow record's time is the start of its window.
type TraceItem struct {
	Time  time.Time  `json:"time"`
	Kind  string     `json:"kind"` // "flow", "event", "l7"
	Agent string     `json:"agent"`
	Flow  *sdk.Flow  `json:"flow,omitempty"`
	Event *sdk.Event `json:"event,omitempty"`
	L7    *sdk.L7    `json:"l7,omitempty"`
}

// maxTrace bounds the records of one kind in a flow trace.
const maxTrace = 5000

// Conversation gives every flow record, event and L7 record of a community id that the store
// holds, oldest first; ErrNotFound when there is none.
func (e *Engine) Conversation(communityID string) (Conversation, error) {
	out := Conversation{CommunityID: communityID, Items: []TraceItem{}}
	if communityID == "" {
		return out, invalid("community id: empty")
	}
	if e.closed.Load() {
		return out, ErrClosed
	}
	// Records still on their way to the store are written first, so the trace is complete.
	e.writeRecords(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	recs, err := e.st.Conversation(ctx, communityID, time.Time{}, time.Time{}, maxTrace)
	if err != nil {
		return out, fmt.Errorf("reading conversation %q: %w", communityID, err)
	}
	if recs.Len() == 0 {
		return out, fmt.Errorf("conversation %q: %w", communityID, ErrNotFound)
	}
	for i := range recs.Flows {
		r := &recs.Flows[i]
		out.Items = append(out.Items, TraceItem{Time: r.Start, Kind: "flow", Agent: r.Agent, Flow: &r.Flow})
	}
	for i := range recs.Events {
		r := &recs.Events[i]
		out.Items = append(out.Items, TraceItem{Time: r.Time, Kind: "event", Agent: r.Agent, Event: &r.Event})
	}
	for i := range recs.L7 {
		r := &recs.L7[i]
		out.Items = append(out.Items, TraceItem{Time: r.Time, Kind: "l7", Agent: r.Agent, L7: &r.L7})
	}
	kindOrder := map[string]int{"event": 0, "flow": 1, "l7": 2}
	slices.SortStableFunc(out.Items, func(a, b TraceItem) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(kindOrder[a.Kind], kindOrder[b.Kind]))
	})
	return out, nil
}

// SeriesQuery selects one metric of one edge over time.
type SeriesQuery struct {
	Metric     string // requests, errors, latency_p50_ms, latency_p95_ms, bytes, packets, flows, rtt_ms, retransmits
	Level      string // "app" (default): node ids; "l3", "l4": addresses ("ip:" prefix optional)
	Source     string // required
	Target     string // required
	Port       uint16 // 0: any
	Protocol   string // transport or L7 protocol; "": any
	Resolution string // "10s", "1m", "1h"; "": the finest that gives at most about 60 points
	From, To   time.Time
}

// Series is a metric at one resolution; every bucket of the range has a point.
type Series struct {
	Metric     string  `json:"metric"`
	Resolution string  `json:"resolution"`
	Points     []Point `json:"points"`
}

// Point is one bucket's value.
type Point struct {
	Time  time.Time `json:"time"` // the bucket's start
	Value float64   `json:"value"`
}

var metrics = map[string]func(f *store.Figures) float64{
	"requests":       func(f *store.Figures) float64 { return float64(f.Requests) },
	"errors":         func(f *store.Figures) float64 { return float64(f.Errors) },
	"latency_p50_ms": func(f *store.Figures) float64 { return f.Latency.Quantile(0.5) },
	"latency_p95_ms": func(f *store.Figures) float64 { return f.Latency.Quantile(0.95) },
	"bytes":          func(f *store.Figures) float64 { return float64(f.BytesToServer + f.BytesToClient) },
	"packets":        func(f *store.Figures) float64 { return float64(f.PacketsToServer + f.PacketsToClient) },
	"flows":          func(f *store.Figures) float64 { return float64(f.Flows) },
	"retransmits":    func(f *store.Figures) float64 { return float64(f.Retransmits) },
	"rtt_ms": func(f *store.Figures) float64 {
		if f.RTTCount == 0 {
			return 0
		}
		return float64(f.RTTSumNs) / float64(f.RTTCount) / 1e6
	},
}

// maxPoints bounds a series.
const maxPoints = 10000

func matchesProtocol(k *store.RollupKey, f *store.Figures, p string) bool {
	if p == "" || strings.EqualFold(transportName(k.Transport), p) {
		return true
	}
	return slices.ContainsFunc(strings.Split(protocolNames(f.Protocols), ","), func(n string) bool { return strings.EqualFold(n, p) })
}

// Series gives one metric of one edge over [From, To) (zero To: now).
func (e *Engine) Series(q SeriesQuery) (Series, error) {
	val, ok := metrics[q.Metric]
	if !ok {
		return Series{}, invalid("metric %q: want requests, errors, latency_p50_ms, latency_p95_ms, bytes, packets, flows, rtt_ms or retransmits", q.Metric)
	}
	if q.Source == "" || q.Target == "" {
		return Series{}, invalid("source and target: both required")
	}
	li := 0
	src, dst := q.Source, q.Target
	switch q.Level {
	case "", "app":
	case "l3", "l4":
		li = 1
		if q.Level == "l4" {
			li = 2
		}
		src, dst = strings.TrimPrefix(src, "ip:"), strings.TrimPrefix(dst, "ip:")
	default:
		return Series{}, invalid("level %q: want app, l3 or l4", q.Level)
	}
	to := q.To
	if to.IsZero() {
		to = e.opts.Now()
	}
	if q.From.IsZero() || !q.From.Before(to) {
		return Series{}, invalid("time range: from %v must be set and before to %v", q.From, to)
	}
	ri := e.resolutionFor(to.Sub(q.From))
	if q.Resolution != "" {
		r, err := store.ParseResolution(q.Resolution)
		if err != nil {
			return Series{}, invalid("resolution: %v", err)
		}
		ri = slices.Index(store.Resolutions, r)
	}
	rs := &e.res[ri]
	from, end := floor(q.From.UnixNano(), rs.width), to.UnixNano()
	if (end-from)/rs.width > maxPoints {
		return Series{}, invalid("time range: %d points at %s, at most %d", (end-from)/rs.width, rs.res, maxPoints)
	}
	byBucket := map[int64]*store.Figures{}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	err := e.gather(ctx, ri, li, from, end, src, dst, func(b int64, k *store.RollupKey, f *store.Figures) {
		if (q.Port != 0 && k.Port != q.Port) || !matchesProtocol(k, f, q.Protocol) {
			return
		}
		acc := byBucket[b]
		if acc == nil {
			acc = &store.Figures{}
			byBucket[b] = acc
		}
		acc.Add(f)
	}, nil)
	if err != nil {
		return Series{}, fmt.Errorf("reading the series: %w", err)
	}
	out := Series{Metric: q.Metric, Resolution: string(rs.res), Points: []Point{}}
	for b := from; b < end; b += rs.width {
		v := 0.0
		if f := byBucket[b]; f != nil {
			v = val(f)
		}
		out.Points = append(out.Points, Point{Time: time.Unix(0, b).UTC(), Value: v})
	}
	return out, nil
}

// L7Query selects L7 endpoints: those of one edge (Source and Target) or of one server node
// (Target only).
type L7Query struct {
	Source string        // client node id; "": every client
	Target string        // server node id; required
	Since  time.Duration // default 1h
	Limit  int           // default 20, at most 1000
}

// L7Endpoint is one method and path and what it served.
type L7Endpoint struct {
	Source       string  `json:"source,omitempty"`
	Target       string  `json:"target"`
	Protocol     string  `json:"protocol"`
	Method       string  `json:"method"`
	Path         string  `json:"path"`
	Requests     uint64  `json:"requests"`
	Errors       uint64  `json:"errors"`
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP95Ms float64 `json:"latency_p95_ms"`
}

// L7Endpoints gives the busiest methods and paths of an edge or a server node, most requests
// first.
func (e *Engine) L7Endpoints(q L7Query) ([]L7Endpoint, error) {
	if q.Target == "" {
		return nil, invalid("target: required")
	}
	since := q.Since
	if since <= 0 {
		since = time.Hour
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = 20
	case limit < 0 || limit > 1000:
		return nil, invalid("limit %d: want 1 to 1000", q.Limit)
	}
	now := e.opts.Now().UnixNano()
	ri := e.resolutionFor(since)
	from := floor(now-int64(since), e.res[ri].width)
	type key struct{ protocol, method, path string }
	type agg struct {
		key
		f store.Figures
	}
	accs := map[key]*agg{}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	err := e.gather(ctx, ri, 3, from, now+1, q.Source, q.Target, func(_ int64, k *store.RollupKey, f *store.Figures) {
		kk := key{k.Protocol, k.Method, k.Path}
		a := accs[kk]
		if a == nil {
			a = &agg{key: kk}
			accs[kk] = a
		}
		a.f.Add(f)
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("reading L7 endpoints: %w", err)
	}
	out := make([]L7Endpoint, 0, len(accs))
	for _, a := range accs {
		out = append(out, L7Endpoint{Source: q.Source, Target: q.Target, Protocol: a.protocol, Method: a.method,
			Path: a.path, Requests: a.f.Requests, Errors: a.f.Errors,
			LatencyP50Ms: a.f.Latency.Quantile(0.5), LatencyP95Ms: a.f.Latency.Quantile(0.95)})
	}
	slices.SortFunc(out, func(a, b L7Endpoint) int {
		return cmp.Or(cmp.Compare(b.Requests, a.Requests), strings.Compare(a.Method, b.Method), strings.Compare(a.Path, b.Path))
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Agent is an agent that has sent records since the engine started.
type Agent struct {
	ID       string    `json:"id"` // the agent id, else the host name
	Host     string    `json:"host"`
	LastSeen time.Time `json:"last_seen"`
	Records  uint64    `json:"records"` // flow records, events and L7 records
	Flows    uint64    `json:"flows"`
	Events   uint64    `json:"events"`
	L7       uint64    `json:"l7"`
}

// Agents lists the agents seen, by id.
func (e *Engine) Agents() []Agent {
	e.agentsMu.Lock()
	out := make([]Agent, 0, len(e.agents))
	for _, a := range e.agents {
		out = append(out, *a)
	}
	e.agentsMu.Unlock()
	slices.SortFunc(out, func(a, b Agent) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// ServiceGraphBounds are the upper bounds, in seconds, of ServiceGraphEdge.Counts.
var ServiceGraphBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// ServiceGraphEdge is the cumulative request figures of one client → server pair since start,
// for Prometheus's traces_service_graph_* series.
type ServiceGraphEdge struct {
	Client         string    // the application, else the address
	Server         string    // the application, else the address
	ConnectionType string    // "" between applications; "virtual_node" when an end is only an address
	Requests       uint64    // requests, counted once however many agents saw them
	Failed         uint64    // HTTP 5xx, DNS errors, malformed
	Bounds         []float64 // latency bucket upper bounds in seconds (ServiceGraphBounds)
	Counts         []uint64  // requests per bucket (not cumulative): Counts[i] in (Bounds[i-1], Bounds[i]]
	Count          uint64    // all requests with a latency, the +Inf bucket
	Sum            float64   // seconds
}

func nodeName(n nodeKey) string {
	if n.app != "" {
		return n.app
	}
	return n.addr.String()
}

// ServiceGraph gives the service graph's cumulative figures, by client and server.
func (e *Engine) ServiceGraph() []ServiceGraphEdge {
	type key struct{ client, server, ct string }
	type agg struct {
		requests, failed uint64
		lat              store.Sketch
	}
	accs := map[key]*agg{}
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for k, sg := range sh.sg {
			ct := ""
			if k.client.app == "" || k.server.app == "" {
				ct = "virtual_node"
			}
			kk := key{nodeName(k.client), nodeName(k.server), ct}
			a := accs[kk]
			if a == nil {
				a = &agg{}
				accs[kk] = a
			}
			a.requests += sg.requests
			a.failed += sg.failed
			a.lat.Merge(&sg.latency)
		}
		sh.mu.Unlock()
	}
	out := make([]ServiceGraphEdge, 0, len(accs))
	for k, a := range accs {
		ed := ServiceGraphEdge{Client: k.client, Server: k.server, ConnectionType: k.ct, Requests: a.requests,
			Failed: a.failed, Bounds: ServiceGraphBounds, Counts: make([]uint64, len(ServiceGraphBounds)),
			Count: a.lat.Count(), Sum: a.lat.Sum().Seconds()}
		var prev uint64
		for i, b := range ServiceGraphBounds {
			c := a.lat.CountAtMost(time.Duration(b * float64(time.Second)))
			ed.Counts[i] = c - prev
			prev = c
		}
		out = append(out, ed)
	}
	slices.SortFunc(out, func(a, b ServiceGraphEdge) int {
		return cmp.Or(strings.Compare(a.Client, b.Client), strings.Compare(a.Server, b.Server))
	})
	return out
}
