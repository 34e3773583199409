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
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for start, ob := range sh.open {
			if start < from || start >= to {
				continue
			}
			at := floor(start, rs.width)
			eachOpen(ob, ids, li, func(_ int, k store.RollupKey, f *store.Figures) {
				if keep(&k) {
					fn(at, &k, f)
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

func transportName(t sdk.Transport) string {
	if t == 0 {
		return ""
	}
	return t.String()
}

// Graph gives the graph of the last q.Since. A store error gives what memory holds, logged.
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
	// An edge's figures are the window cache's own until the open buckets add to them: copying
	// every edge's latency sketch would cost more than the rest of the query.
	type agg struct {
		key   store.RollupKey
		f     *store.Figures
		owned bool
	}
	edges := map[store.RollupKey]*agg{}
	openAddrs := map[nodeAddrKey]int64{}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	add := func(_ int64, k *store.RollupKey, f *store.Figures) {
		a := edges[*k]
		if a == nil {
			a = &agg{key: *k, f: &store.Figures{}, owned: true}
			edges[*k] = a
		} else if !a.owned {
			own := &store.Figures{}
			own.Add(a.f)
			a.f, a.owned = own, true
		}
		a.f.Add(f)
	}
	// cacheMu is held until the edges are built, since they may point into the cache.
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	e.roll.RLock()
	cached := from >= e.res[ri].cutoff
	if cached {
		// The closed buckets of the window come from the window cache; only the open ones are
		// added up here.
		wc := e.windowFor(ri, li, from, now)
		edges = make(map[store.RollupKey]*agg, len(wc.edges))
		for k, f := range wc.edges {
			edges[k] = &agg{key: k, f: f}
		}
	}
	err := e.gatherLocked(ctx, ri, li, from, now+1, "", "", cached, add,
		func(k nodeAddrKey, at int64) { openAddrs[k] = max(openAddrs[k], at) })
	e.roll.RUnlock()
	if err != nil {
		e.log.Warn("graph from memory only: reading the store failed", "err", err)
	}
	cat := e.catalog.Load()
	nodes := map[string]*Node{}
	nodeOf := func(id string) *Node {
		if n, ok := nodes[id]; ok {
			return n
		}
		n := &Node{ID: id, Addresses: []string{}}
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
		nodes[id] = n
		return n
	}
	g := Graph{Nodes: []Node{}, Edges: []Edge{}}
	for _, a := range edges {
		src, dst := a.key.Source, a.key.Target
		if li > 0 {
			src, dst = "ip:"+src, "ip:"+dst
		}
		ed := Edge{Source: src, Target: dst, Transport: transportName(a.key.Transport), Port: a.key.Port,
			Protocol: protocolNames(a.f.Protocols), Flows: a.f.Flows, Bytes: a.f.BytesToServer + a.f.BytesToClient,
			Packets: a.f.PacketsToServer + a.f.PacketsToClient, Requests: a.f.Requests, Errors: a.f.Errors,
			LatencyP50Ms: a.f.Latency.Quantile(0.5), LatencyP95Ms: a.f.Latency.Quantile(0.95),
			Retransmits: a.f.Retransmits}
		if a.f.RTTCount > 0 {
			ed.RTTMs = float64(a.f.RTTSumNs) / float64(a.f.RTTCount) / 1e6
		}
		sn, tn := nodeOf(src), nodeOf(dst)
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
		g.Edges = append(g.Edges, ed)
	}
	used := map[string]bool{}
	for _, ed := range g.Edges {
		used[ed.Source], used[ed.Target] = true, true
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
			id := "app:" + k.app
			if used[id] {
				n := nodeOf(id)
				n.Addresses = append(n.Addresses, k.addr.String())
			}
		}
	}
	for id := range used {
		n := nodes[id]
		slices.Sort(n.Addresses)
		g.Nodes = append(g.Nodes, *n)
	}
	slices.SortFunc(g.Nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(g.Edges, func(a, b Edge) int {
		if c := strings.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		if c := strings.Compare(a.Target, b.Target); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.Transport, b.Transport), cmp.Compare(a.Port, b.Port))
	})
	return g
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
