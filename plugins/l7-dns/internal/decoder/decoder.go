// Package decoder is the DNS decoder plugin: it turns payload samples of DNS flows into one L7
// record per query and response.
//
// A flow (keyed by NIC and Community ID) holds the queries waiting for a response and, for TCP,
// where each direction's stream stands. A UDP sample is one message. A TCP direction is
// followed by sequence number and cut into messages at their two-byte length prefixes (see
// tcp.go). A query waits in its flow until a response from the other side with the same ID and
// question arrives, and is reported with it. It is also reported, Partial and without one, when
// the flow ends, when it has waited longer than the query timeout (measured in sample time, so
// a replayed capture behaves as it did live), when newer queries push it out, or when its flow
// is evicted. A response with no waiting query is reported on its own, Partial.
//
// Every bound is a count: flows (the least recently used goes first), queries per flow, bytes
// buffered per TCP message and in all. A UDP flow is kept only while it has a query waiting,
// so the flow table holds conversations with something to remember, not every client seen.
package decoder

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/internal/version"
	"github.com/quanyu/quanyu/plugins/internal/lru"
	"github.com/quanyu/quanyu/plugins/l7-dns/internal/dnswire"
	"github.com/quanyu/quanyu/sdk"
)

// Decoder is the DNS decoder. Its methods are safe for concurrent use; Decode calls are
// serialised, since samples of one flow must be taken in order.
type Decoder struct {
	log *slog.Logger

	mu     sync.Mutex
	opts   Options
	parser dnswire.Parser
	msg    dnswire.Message // reused by every parse

	flows    map[flowKey]*flow
	lru      lru.List[flow] // the flows, most recently used first
	waiting  waitQueue      // every waiting query, oldest first, for the timeout
	newest   time.Time      // the newest sample time seen: the decoder's clock
	buffered int            // TCP message bytes held, over all flows
	out      []sdk.L7       // records made and not yet returned by Decode

	c        counters
	gauges   [3]atomic.Uint64 // flows, waiting queries, buffered bytes, after the last call
	lastLoss atomic.Uint64    // the loss counters' sum at the last Health
}

var _ sdk.Decoder = (*Decoder)(nil)

// New makes a decoder with DefaultOptions.
func New() *Decoder {
	d := &Decoder{log: slog.Default().With("component", "l7-dns"), flows: make(map[flowKey]*flow),
		lru: lru.New(func(f *flow) *lru.Links[flow] { return &f.links })}
	d.apply(DefaultOptions())
	return d
}

func (d *Decoder) apply(o Options) {
	d.opts = o
	d.parser.MaxAnswers = o.MaxAnswers
	// Only the first question is reported and paired on; the others are still checked.
	d.parser.MaxQuestions = 1
}

// Info describes the plugin. DNS has no content signature reliable enough to claim a flow on
// any port (a DNS header is twelve arbitrary-looking bytes), so the plugin claims port 53 only.
func (d *Decoder) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Kind:      sdk.KindDecoder,
		Name:      "l7-dns",
		Version:   version.Version,
		Protocols: []string{"DNS"},
		Detect: []sdk.Detect{{Protocol: "DNS", Ports: []uint16{53},
			Transports: []sdk.Transport{sdk.TransportUDP, sdk.TransportTCP}}},
	}, nil
}

// Configure applies new options (see Options). It may come at any time: shrunk bounds take
// effect at once, and what they push out is reported with the next Decode.
func (d *Decoder) Configure(_ context.Context, cfg sdk.DecoderConfig) error {
	o, err := ParseOptions(cfg.Options)
	if err != nil {
		return fmt.Errorf("configuring the DNS decoder: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.apply(o)
	for len(d.flows) > o.MaxFlows {
		d.c.inc(cFlowsEvicted)
		d.endFlow(d.lru.Back(), cQueriesEvicted)
	}
	for fl := d.lru.Front(); fl != nil; fl = d.lru.Next(fl) {
		for len(fl.pending) > o.MaxPending {
			d.unanswered(fl.pending[0], cQueriesPendingFull)
		}
	}
	d.expire()
	d.setGauges()
	d.log.Debug("configured", "max_flows", o.MaxFlows, "max_pending", o.MaxPending,
		"query_timeout", o.QueryTimeout, "max_answers", o.MaxAnswers)
	return nil
}

// Health reports the counters, and degraded while the decoder's own bounds make it lose
// something (evicted flows, pushed-out queries, messages too long to buffer).
func (d *Decoder) Health(context.Context) (sdk.Health, error) {
	counters := make(map[string]uint64, int(numCounters)+3)
	for i, name := range counterNames {
		counters[name] = d.c[i].Load()
	}
	counters["state.flows"] = d.gauges[0].Load()
	counters["state.waiting_queries"] = d.gauges[1].Load()
	counters["state.buffered_bytes"] = d.gauges[2].Load()
	var loss uint64
	for _, k := range lossCounters {
		loss += d.c[k].Load()
	}
	h := sdk.Health{Status: sdk.HealthOK, Counters: counters}
	if prev := d.lastLoss.Swap(loss); loss > prev {
		h.Status = sdk.HealthDegraded
		h.Message = fmt.Sprintf("%d flows evicted, queries pushed out or messages cut by the decoder's bounds since the last check; "+
			"raise max_flows or max_pending", loss-prev)
	}
	return h, nil
}

// Decode takes samples in capture order and returns the records they complete, with any that
// Configure pushed out since the last call.
func (d *Decoder) Decode(ctx context.Context, samples []sdk.Sample) ([]sdk.L7, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("decoding DNS samples: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.out == nil {
		// Mostly one record per query and response pair: sized for that, the slice of large
		// records is not regrown and copied while it fills.
		d.out = make([]sdk.L7, 0, len(samples)/2+1)
	}
	for i := range samples {
		d.sample(&samples[i])
	}
	d.setGauges()
	out := d.out
	d.out = nil
	return out, nil
}

// Shutdown forgets every flow. Queries still waiting cannot be reported any more (Shutdown
// returns no records), so they are counted. It is safe twice and without Configure.
func (d *Decoder) Shutdown(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.c.add(cQueriesShutdown, len(d.waiting))
	d.c.add(cRecordsLost, len(d.out))
	d.flows = make(map[flowKey]*flow)
	d.lru.Clear()
	d.waiting = nil
	d.buffered = 0
	d.out = nil
	d.setGauges()
	return nil
}

func (d *Decoder) setGauges() {
	d.gauges[0].Store(uint64(len(d.flows)))
	d.gauges[1].Store(uint64(len(d.waiting)))
	d.gauges[2].Store(uint64(d.buffered))
}

func (d *Decoder) sample(s *sdk.Sample) {
	d.c.inc(cSamples)
	if s.Time.After(d.newest) {
		d.newest = s.Time
		d.expire()
	}
	key := flowKey{nic: s.NIC, communityID: s.CommunityID}
	switch {
	case len(s.Data) == 0 && s.WireLen <= 0:
		if !s.FlowEnd {
			d.c.inc(cSkipEmpty)
		}
	case s.Transport == sdk.TransportUDP:
		if fl := d.flows[key]; fl != nil {
			d.lru.MoveToFront(fl)
		}
		meta := metaOf(s)
		d.message(key, &meta, msgIn{data: s.Data, size: max(s.WireLen, len(s.Data)),
			cut: s.WireLen > len(s.Data), at: s.Time, fromClient: s.FromClient})
	case s.Transport == sdk.TransportTCP:
		fl := d.flowFor(key)
		// The flow outlives the sample, whose memory the caller may reuse: it keeps its own
		// copy of the subscriptions, made again only when they change.
		meta := metaOf(s)
		if slices.Equal(meta.subscriptions, fl.meta.subscriptions) {
			meta.subscriptions = fl.meta.subscriptions
		} else {
			meta.subscriptions = slices.Clone(meta.subscriptions)
		}
		fl.meta = meta
		if fl.tcp == nil {
			fl.tcp = new([2]stream)
		}
		d.feed(fl, s)
	default:
		d.c.inc(cSkipTransport)
	}
	if s.FlowEnd {
		d.c.inc(cFlowEnds)
		if fl := d.flows[key]; fl != nil {
			d.endFlow(fl, cQueriesFlowEnd)
		}
	}
}

// expire reports the queries that have waited longer than the timeout on the sample clock.
func (d *Decoder) expire() {
	limit := d.newest.Add(-d.opts.QueryTimeout)
	for len(d.waiting) > 0 && d.waiting[0].at.Before(limit) {
		q := d.waiting[0]
		d.unanswered(q, cQueriesTimeout)
		if q.flow.idle() {
			d.removeFlow(q.flow)
		}
	}
}

// ---- flows ----

type flowKey struct {
	nic, communityID string
}

// flowMeta is what every record of a flow copies from its samples.
type flowMeta struct {
	nic, communityID string
	transport        sdk.Transport
	client, server   sdk.Endpoint
	subscriptions    []string
}

func metaOf(s *sdk.Sample) flowMeta {
	return flowMeta{nic: s.NIC, communityID: s.CommunityID, transport: s.Transport, client: s.Client,
		server: s.Server, subscriptions: s.Subscriptions}
}

func (m *flowMeta) record(at time.Time) sdk.L7 {
	return sdk.L7{Protocol: "DNS", Time: at, Transport: m.transport, NIC: m.nic, Client: m.client,
		Server: m.server, CommunityID: m.communityID, Subscriptions: slices.Clone(m.subscriptions)}
}

type flow struct {
	key     flowKey
	meta    flowMeta // TCP only: records of messages completed at flow end or eviction
	links   lru.Links[flow]
	pending []*query // oldest first
	tcp     *[2]stream
}

// idle reports whether the flow holds nothing worth keeping: a UDP flow without waiting
// queries. A TCP flow keeps its stream positions until it ends.
func (f *flow) idle() bool { return f.tcp == nil && len(f.pending) == 0 }

// flowFor returns the flow of key, made most recently used, creating it (and evicting the least
// recently used flow if the table is full) when there is none.
func (d *Decoder) flowFor(key flowKey) *flow {
	if fl := d.flows[key]; fl != nil {
		d.lru.MoveToFront(fl)
		return fl
	}
	for len(d.flows) >= d.opts.MaxFlows {
		d.c.inc(cFlowsEvicted)
		d.endFlow(d.lru.Back(), cQueriesEvicted)
	}
	fl := &flow{key: key}
	d.flows[key] = fl
	d.lru.PushFront(fl)
	return fl
}

// endFlow reports what the flow holds (a TCP message in progress, then every waiting query,
// counted under why) and forgets it.
func (d *Decoder) endFlow(fl *flow, why counter) {
	if fl.tcp != nil {
		d.flushStream(fl, 0)
		d.flushStream(fl, 1)
	}
	for len(fl.pending) > 0 {
		d.unanswered(fl.pending[0], why)
	}
	d.removeFlow(fl)
}

func (d *Decoder) removeFlow(fl *flow) {
	if d.flows[fl.key] != fl {
		return
	}
	if fl.tcp != nil {
		d.release(&fl.tcp[0])
		d.release(&fl.tcp[1])
	}
	delete(d.flows, fl.key)
	d.lru.Remove(fl)
}

// ---- waiting queries ----

// waitQueue is a min-heap of waiting queries by time, so the timeout finds the oldest query
// among all flows without scanning them.
type waitQueue []*query

func (w waitQueue) Len() int           { return len(w) }
func (w waitQueue) Less(i, j int) bool { return w[i].at.Before(w[j].at) }
func (w waitQueue) Swap(i, j int) {
	w[i], w[j] = w[j], w[i]
	w[i].index, w[j].index = i, j
}
func (w *waitQueue) Push(x any) {
	q := x.(*query)
	q.index = len(*w)
	*w = append(*w, q)
}
func (w *waitQueue) Pop() any {
	old := *w
	q := old[len(old)-1]
	old[len(old)-1] = nil
	*w = old[:len(old)-1]
	q.index = -1
	return q
}

var _ heap.Interface = (*waitQueue)(nil)
