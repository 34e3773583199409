package alert

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// step is the spacing of evaluations: the finest rollup bucket.
const stepSeconds = 10

// seriesKey identifies one series of a rule. Which fields are set depends on the level:
// edge {source, target}; node {target}; endpoint {target, method, path}; address {target, an
// address}; port {transport, port}.
type seriesKey struct {
	source, target string
	transport      sdk.Transport
	port           uint16
	method, path   string
}

func (k seriesKey) String() string {
	return fmt.Sprintf("%s|%s|%d|%d|%s|%s", k.source, k.target, k.transport, k.port, k.method, k.path)
}

// rowSource is the rollup level a rule's series are made from.
func rowSource(r *api.Rule) store.Level {
	switch r.Level {
	case api.LevelEndpoint:
		return store.LevelL7
	case api.LevelAddress, api.LevelPort:
		// L4 rows have the addresses, transport and port that both levels select by.
		return store.LevelL4
	}
	if r.Selector.Method != "" {
		return store.LevelL7 // the method is known only in L7 rows
	}
	return store.LevelApp
}

// keyOf gives the series a row belongs to at the rule's level.
func keyOf(l api.Level, k *store.RollupKey) seriesKey {
	switch l {
	case api.LevelEdge:
		return seriesKey{source: k.Source, target: k.Target}
	case api.LevelNode:
		return seriesKey{target: k.Target}
	case api.LevelEndpoint:
		return seriesKey{target: k.Target, method: k.Method, path: k.Path}
	case api.LevelAddress:
		return seriesKey{target: k.Target}
	default: // port
		return seriesKey{transport: k.Transport, port: k.Port}
	}
}

// resolver answers, for one evaluation, which catalog application a node or address is; it
// remembers answers, since the same few ends come up in row after row.
type resolver struct {
	cat   *api.Catalog
	nodes map[string]*api.CatalogEntry
	addrs map[netip.AddrPort]*api.CatalogEntry
}

func newResolver(cat *api.Catalog) *resolver {
	return &resolver{cat: cat, nodes: map[string]*api.CatalogEntry{}, addrs: map[netip.AddrPort]*api.CatalogEntry{}}
}

// node gives the catalog entry of a graph node id ("app:web"), or nil.
func (r *resolver) node(id string) *api.CatalogEntry {
	if e, ok := r.nodes[id]; ok {
		return e
	}
	var e *api.CatalogEntry
	if app, ok := strings.CutPrefix(id, "app:"); ok && r.cat != nil {
		e, _ = r.cat.Entry(app)
	}
	r.nodes[id] = e
	return e
}

// addr gives the catalog entry of an address and port (0 for a client), or nil.
func (r *resolver) addr(s string, port uint16) *api.CatalogEntry {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil
	}
	ap := netip.AddrPortFrom(a, port)
	if e, ok := r.addrs[ap]; ok {
		return e
	}
	var e *api.CatalogEntry
	if r.cat != nil {
		e, _ = r.cat.Lookup(a, port, "")
	}
	r.addrs[ap] = e
	return e
}

// nodeIn reports whether a node is in a range: an address node whose address is, or an
// application one of whose catalog ranges overlaps it.
func (r *resolver) nodeIn(id string, p netip.Prefix) bool {
	if a, ok := strings.CutPrefix(id, "ip:"); ok {
		addr, err := netip.ParseAddr(a)
		return err == nil && p.Contains(addr)
	}
	if e := r.node(id); e != nil {
		for _, m := range e.Match {
			if m.Prefix.IsValid() && m.Prefix.Overlaps(p) {
				return true
			}
		}
	}
	return false
}

func ownedBy(e *api.CatalogEntry, owner string) bool {
	return e != nil && (e.Owner.Name == owner || e.Owner.Team == owner)
}

func appIs(e *api.CatalogEntry, app string) bool { return e != nil && e.App == app }

// selects reports whether a row of the rule's row source is selected by its selector.
func selects(sel *api.RuleSelector, src store.Level, k *store.RollupKey, r *resolver) bool {
	if sel.Transport != 0 && k.Transport != sel.Transport {
		return false
	}
	if sel.Port != nil && (k.Port < sel.Port.First || k.Port > sel.Port.Last) {
		return false
	}
	if sel.Method != "" && k.Method != sel.Method {
		return false
	}
	if sel.ClientApp == "" && sel.ServerApp == "" && sel.Owner == "" && !sel.CIDR.IsValid() {
		return true
	}
	var client, server *api.CatalogEntry
	if src == store.LevelL4 {
		client, server = r.addr(k.Source, 0), r.addr(k.Target, k.Port)
	} else {
		client, server = r.node(k.Source), r.node(k.Target)
	}
	if sel.ClientApp != "" && !appIs(client, sel.ClientApp) {
		return false
	}
	if sel.ServerApp != "" && !appIs(server, sel.ServerApp) {
		return false
	}
	if sel.Owner != "" && !ownedBy(client, sel.Owner) && !ownedBy(server, sel.Owner) {
		return false
	}
	if p := sel.CIDR; p.IsValid() {
		if src == store.LevelL4 {
			c, err1 := netip.ParseAddr(k.Source)
			s, err2 := netip.ParseAddr(k.Target)
			if !(err1 == nil && p.Contains(c)) && !(err2 == nil && p.Contains(s)) {
				return false
			}
		} else if !r.nodeIn(k.Source, p) && !r.nodeIn(k.Target, p) {
			return false
		}
	}
	return true
}

// value gives a metric of one bucket's figures; ok is false where the bucket says nothing of it
// (a ratio or latency without requests). Rates are per second over the bucket.
func value(m api.Metric, f *store.Figures) (v float64, ok bool) {
	switch m {
	case api.MetricRequestRate:
		return float64(f.Requests) / stepSeconds, true
	case api.MetricErrorRatio:
		if f.Requests == 0 {
			return 0, false
		}
		return float64(f.Errors) / float64(f.Requests), true
	case api.MetricLatencyP50, api.MetricLatencyP95, api.MetricLatencyP99:
		if f.Latency.Count() == 0 {
			return 0, false
		}
		q := 0.5
		switch m {
		case api.MetricLatencyP95:
			q = 0.95
		case api.MetricLatencyP99:
			q = 0.99
		}
		return f.Latency.Quantile(q) / 1000, true // the sketch answers in milliseconds
	case api.MetricBytesPerSecond:
		return float64(f.BytesToServer+f.BytesToClient) / stepSeconds, true
	case api.MetricPacketsPerSecond:
		return float64(f.PacketsToServer+f.PacketsToClient) / stepSeconds, true
	case api.MetricNewConversationsRate:
		return float64(f.Flows) / stepSeconds, true
	case api.MetricRetransmissionRatio:
		p := f.PacketsToServer + f.PacketsToClient
		if p == 0 {
			return 0, false
		}
		return float64(f.Retransmits) / float64(p), true
	case api.MetricRTTP95:
		if f.RTT.Count() == 0 {
			return 0, false
		}
		return f.RTT.Quantile(0.95) / 1000, true
	}
	return 0, false
}

// isRate reports whether a series that had traffic and now has none is at 0 (a rate), rather
// than unknown (a ratio or a latency needs something to measure).
func isRate(m api.Metric) bool {
	switch m {
	case api.MetricRequestRate, api.MetricBytesPerSecond, api.MetricPacketsPerSecond, api.MetricNewConversationsRate:
		return true
	}
	return false
}

// minDev is the smallest deviation a forecast band of the metric is given: a difference of one
// request, packet, byte or conversation in a 10 s bucket is not an anomaly, nor is a ratio
// moving by a point or a latency by a millisecond.
func minDev(m api.Metric) float64 {
	switch m {
	case api.MetricErrorRatio, api.MetricRetransmissionRatio:
		return 0.01
	case api.MetricLatencyP50, api.MetricLatencyP95, api.MetricLatencyP99, api.MetricRTTP95:
		return 0.001
	}
	return 1.0 / stepSeconds
}

// weight is how much a row counts when picking a series' busiest client.
func weight(m api.Metric, f *store.Figures) uint64 {
	if m.IsL7() {
		return f.Requests
	}
	return f.BytesToServer + f.BytesToClient
}
