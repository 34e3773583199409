// Package decode is the agent's decoder stage. It sits between capture and the sinks and does
// four things with each batch:
//
//  1. routes every payload sample to the decoder plugin that claims its flow. A flow is claimed
//     once, by content first (a decoder's pattern matching the start of a sample from that side),
//     then by the server's port; the claim is remembered, so later samples cost a map lookup;
//  2. tells a decoder when one of its flows ended (a sample with FlowEnd), so it reports what it
//     still holds and forgets the flow;
//  3. keeps the L7 records the flow's subscriptions ask for (protocol tokens in L7, method tokens
//     and L7Miss) with those subscriptions' ids, and cuts query strings unless a subscription
//     keeps them;
//  4. gives each flow record the L7 summary of its window.
//
// The stage runs on one goroutine (the pipeline's), so a flow's samples reach its decoder in
// capture order. The route table is bounded; every sample or record that goes no further is
// counted with its reason.
package decode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// Decoder is a decoder plugin as the stage sees it: the instance running now (the plugin host
// replaces it after a crash) and what it said about itself at start.
type Decoder struct {
	Name    string
	Info    sdk.Info
	Current func() sdk.Decoder
}

// Options tune the stage.
type Options struct {
	// MaxFlows bounds the route table (default 65536).
	MaxFlows int
	// DetectSamples is how many samples of a flow are looked at for a claim before giving up on
	// it (default 8): a flow picked up mid-message may show its protocol only a few packets on.
	DetectSamples int
	// RouteIdle is how long a route without samples survives a full table (default 5 minutes).
	RouteIdle time.Duration
	// CallTimeout bounds one Decode call (default 10 s).
	CallTimeout time.Duration
	Log         *slog.Logger
	// Now is the clock for route expiry (time.Now when nil).
	Now func() time.Time
}

// Route states besides a decoder's index.
const (
	undecided = -1
	gaveUp    = -2
)

// A decoder gets a batch's samples in up to shards concurrent calls, each of at least
// minShardSamples (fewer samples go in one call). Two calls let the agent and the plugin work at
// the same time; more gained nothing on two cores.
const (
	shards          = 2
	minShardSamples = 128
)

type route struct {
	decoder int
	shard   int // which of the decoder's concurrent calls carries the flow's samples
	tries   int
	allowed []string // L7 protocols the flow's subscriptions turn on
	last    time.Time
	sum     sdk.L7Summary // the current window's
}

type key struct{ nic, cid string }

// group is what a batch has for one decoder: samples in capture order and, for each, the shard
// of its flow.
type group struct {
	samples []sdk.Sample
	shards  []uint8
}

type rule struct {
	protocol       string
	client, server *regexp.Regexp
	ports          []uint16
	transports     []sdk.Transport
}

func (r *rule) transport(t sdk.Transport) bool {
	if len(r.transports) == 0 {
		return t == sdk.TransportTCP || t == sdk.TransportUDP
	}
	return slices.Contains(r.transports, t)
}

type slot struct {
	Decoder
	rules []rule

	samples  atomic.Uint64
	records  atomic.Uint64
	calls    atomic.Uint64
	errs     atomic.Uint64
	dropErr  atomic.Uint64 // samples lost to a failed call
	claimed  atomic.Uint64
	lastWarn time.Time
}

// Stage is the decoder stage. Process is called from one goroutine; SetSubscriptions and
// Counters from any.
type Stage struct {
	opts     Options
	decoders []*slot

	mu   sync.Mutex // subs, flows
	subs map[string]*sdk.Subscription
	// flows maps a flow to its route; it holds only flows that sent samples.
	flows map[key]*route
	// routes counts the routes made, to deal flows to the shards in turn.
	routes int

	noSubscription atomic.Uint64 // samples whose subscriptions turn on no protocol (any more)
	undetected     atomic.Uint64 // flows no decoder claimed within DetectSamples samples
	unrouted       atomic.Uint64 // samples of flows not (or not yet) claimed
	tableFull      atomic.Uint64 // samples dropped because the route table was full
	filtered       atomic.Uint64 // L7 records no subscription of the flow asked for
	emitted        atomic.Uint64
}

// New builds the stage for the decoders, compiling their detection rules.
func New(opts Options, decoders []Decoder) (*Stage, error) {
	if opts.MaxFlows <= 0 {
		opts.MaxFlows = 65536
	}
	if opts.DetectSamples <= 0 {
		opts.DetectSamples = 8
	}
	if opts.RouteIdle <= 0 {
		opts.RouteIdle = 5 * time.Minute
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Stage{opts: opts, subs: map[string]*sdk.Subscription{}, flows: map[key]*route{}}
	for _, d := range decoders {
		sl := &slot{Decoder: d}
		for i, det := range d.Info.Detect {
			if !slices.Contains(d.Info.Protocols, det.Protocol) {
				return nil, fmt.Errorf("decoder %s: detect[%d] is for %q, which is not one of its protocols %v",
					d.Name, i, det.Protocol, d.Info.Protocols)
			}
			r := rule{protocol: det.Protocol, ports: det.Ports, transports: det.Transports}
			var err error
			if r.client, err = compile(det.ClientPattern); err != nil {
				return nil, fmt.Errorf("decoder %s: detect[%d] client pattern: %w", d.Name, i, err)
			}
			if r.server, err = compile(det.ServerPattern); err != nil {
				return nil, fmt.Errorf("decoder %s: detect[%d] server pattern: %w", d.Name, i, err)
			}
			sl.rules = append(sl.rules, r)
		}
		s.decoders = append(s.decoders, sl)
	}
	return s, nil
}

// compile anchors a pattern at the start of the payload, whatever the decoder wrote.
func compile(p string) (*regexp.Regexp, error) {
	if p == "" {
		return nil, nil
	}
	return regexp.Compile(`\A(?:` + p + `)`)
}

// SetSubscriptions gives the stage the subscription set in force: it decides which protocols a
// flow's samples may be decoded as, and which L7 records are kept.
func (s *Stage) SetSubscriptions(subs []sdk.Subscription) {
	m := make(map[string]*sdk.Subscription, len(subs))
	for i := range subs {
		m[subs[i].ID] = &subs[i]
	}
	s.mu.Lock()
	s.subs = m
	s.mu.Unlock()
}

// Process decodes a batch's samples, adds the L7 records to it, annotates its flow records and
// removes the samples, which go no further than this stage.
func (s *Stage) Process(ctx context.Context, b *sdk.Batch) {
	if len(b.Samples) == 0 && len(b.Flows) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	// Each decoder's samples in capture order, with the shard of each sample's flow.
	groups := make([]group, len(s.decoders))
	add := func(r *route, sm sdk.Sample) {
		g := &groups[r.decoder]
		g.samples = append(g.samples, sm)
		g.shards = append(g.shards, uint8(r.shard))
	}
	for i := range b.Samples {
		sm := &b.Samples[i]
		if r := s.route(sm, now); r != nil {
			add(r, *sm)
		}
	}
	b.Samples = nil
	for i := range b.Flows {
		f := &b.Flows[i]
		if !f.Final {
			continue
		}
		if r := s.flows[key{f.NIC, f.CommunityID}]; r != nil && r.decoder >= 0 {
			add(r, sdk.Sample{
				CommunityID: f.CommunityID, NIC: f.NIC, Transport: f.Transport, Client: f.Client,
				Server: f.Server, Time: f.End, FlowEnd: true, Subscriptions: f.Subscriptions,
			})
		}
	}
	b.L7 = s.decodeAll(ctx, groups, b.L7)
	for i := range b.Flows {
		f := &b.Flows[i]
		k := key{f.NIC, f.CommunityID}
		r := s.flows[k]
		if r == nil {
			continue
		}
		if r.decoder >= 0 {
			sum := r.sum
			f.L7 = &sum
			r.sum = sdk.L7Summary{Protocol: r.sum.Protocol}
		}
		if f.Final {
			delete(s.flows, k)
		}
	}
}

// route finds or makes the route of a sample's flow and returns it once a decoder has the flow;
// nil means the sample goes no further (counted).
func (s *Stage) route(sm *sdk.Sample, now time.Time) *route {
	k := key{sm.NIC, sm.CommunityID}
	r := s.flows[k]
	if r == nil {
		allowed := s.allowed(sm.Subscriptions)
		if len(allowed) == 0 {
			s.noSubscription.Add(1)
			return nil
		}
		if len(s.flows) >= s.opts.MaxFlows && !s.sweep(now) {
			s.tableFull.Add(1)
			return nil
		}
		s.routes++
		r = &route{decoder: undecided, allowed: allowed, shard: s.routes % shards}
		s.flows[k] = r
	}
	r.last = now
	switch r.decoder {
	case gaveUp:
		s.unrouted.Add(1)
		return nil
	case undecided:
		d, proto := s.detect(sm, r.allowed)
		if d < 0 {
			s.unrouted.Add(1)
			if r.tries++; r.tries >= s.opts.DetectSamples {
				r.decoder = gaveUp
				s.undetected.Add(1)
			}
			return nil
		}
		r.decoder, r.sum.Protocol = d, proto
		s.decoders[d].claimed.Add(1)
	}
	return r
}

// allowed lists the protocols a flow's subscriptions turn on: each one's L7 protocols less the
// protocols its L7Miss leaves out.
func (s *Stage) allowed(ids []string) []string {
	var out []string
	for _, id := range ids {
		sub := s.subs[id]
		if sub == nil {
			continue
		}
		for _, p := range sub.Spec.L7 {
			if !slices.Contains(sub.Spec.L7Miss, p) && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// detect picks the decoder for a flow from one of its samples: a content pattern of the sample's
// side first, then the server's port.
func (s *Stage) detect(sm *sdk.Sample, allowed []string) (int, string) {
	if len(sm.Data) > 0 {
		for i, d := range s.decoders {
			for j := range d.rules {
				r := &d.rules[j]
				re := r.server
				if sm.FromClient {
					re = r.client
				}
				if re != nil && r.transport(sm.Transport) && slices.Contains(allowed, r.protocol) && re.Match(sm.Data) {
					return i, r.protocol
				}
			}
		}
	}
	for i, d := range s.decoders {
		for j := range d.rules {
			r := &d.rules[j]
			if r.transport(sm.Transport) && slices.Contains(allowed, r.protocol) && slices.Contains(r.ports, sm.Server.Port) {
				return i, r.protocol
			}
		}
	}
	return -1, ""
}

// sweep makes room in a full route table by forgetting routes idle for RouteIdle (flows whose
// final record never came, such as those of a capture that restarted). It reports whether there
// is room now.
func (s *Stage) sweep(now time.Time) bool {
	for k, r := range s.flows {
		if now.Sub(r.last) >= s.opts.RouteIdle {
			delete(s.flows, k)
		}
	}
	return len(s.flows) < s.opts.MaxFlows
}

// decodeAll sends each decoder its samples and keeps the records that come back. A large batch
// goes to a decoder as several concurrent calls, split by flow, so that this process encodes one
// call while the plugin decodes another: one call at a time left both sides waiting on each other
// (bench/RESULTS.md). A flow's samples are all in one call, in order, and the next batch waits
// for every call of this one.
func (s *Stage) decodeAll(ctx context.Context, groups []group, out []sdk.L7) []sdk.L7 {
	type call struct {
		d       *slot
		samples []sdk.Sample
		recs    []sdk.L7
		err     error
	}
	var calls []*call
	for d := range groups {
		g := &groups[d]
		if len(g.samples) == 0 {
			continue
		}
		if len(g.samples) < minShardSamples*shards {
			calls = append(calls, &call{d: s.decoders[d], samples: g.samples})
			continue
		}
		var split [shards][]sdk.Sample
		for i := range g.samples {
			split[g.shards[i]] = append(split[g.shards[i]], g.samples[i])
		}
		for _, sh := range split {
			if len(sh) > 0 {
				calls = append(calls, &call{d: s.decoders[d], samples: sh})
			}
		}
	}
	run := func(c *call) {
		c.d.samples.Add(uint64(len(c.samples)))
		c.d.calls.Add(1)
		cctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
		c.recs, c.err = c.d.Current().Decode(cctx, c.samples)
		cancel()
	}
	start := len(out)
	if len(calls) == 1 {
		run(calls[0])
	} else {
		var wg sync.WaitGroup
		for _, c := range calls {
			wg.Go(func() { run(c) })
		}
		wg.Wait()
	}
	for _, c := range calls {
		d := c.d
		if c.err != nil {
			d.errs.Add(1)
			d.dropErr.Add(uint64(len(c.samples)))
			// A crashed decoder fails every call until it is back: one warning a minute is enough.
			if now := time.Now(); now.Sub(d.lastWarn) >= time.Minute && !errors.Is(c.err, context.Canceled) {
				d.lastWarn = now
				s.opts.Log.Warn("decoder failed; its samples are dropped", "decoder", d.Name, "samples", len(c.samples), "err", c.err)
			}
			continue
		}
		d.records.Add(uint64(len(c.recs)))
		for i := range c.recs {
			if s.keep(&c.recs[i]) {
				out = append(out, c.recs[i])
			}
		}
	}
	if len(calls) > 1 {
		// One call's records are in the order its decoder completed them; across calls, the
		// order of the transactions' start keeps the output independent of the split.
		slices.SortStableFunc(out[start:], func(a, b sdk.L7) int { return a.Time.Compare(b.Time) })
	}
	return out
}

// keep decides whether an L7 record is reported: it names the subscriptions of its flow that ask
// for its protocol and do not leave out its method, and updates the flow's summary.
func (s *Stage) keep(rec *sdk.L7) bool {
	var ids []string
	query := false
	for _, id := range rec.Subscriptions {
		sub := s.subs[id]
		if sub == nil || !wants(&sub.Spec, rec) {
			continue
		}
		ids = append(ids, id)
		query = query || sub.Options.QueryStrings
	}
	if len(ids) == 0 {
		s.filtered.Add(1)
		return false
	}
	rec.Subscriptions = ids
	if rec.Protocol == "HTTP" {
		rec.Path = CutQuery(rec.Path, query)
	}
	if r := s.flows[key{rec.NIC, rec.CommunityID}]; r != nil {
		r.sum.Transactions++
		if failed(rec) {
			r.sum.Errors++
		}
		if rec.Partial {
			r.sum.Partial++
		}
	}
	s.emitted.Add(1)
	return true
}

// wants reports whether a subscription asks for a record: its protocol is in L7 and not in
// L7Miss; for HTTP, its method is among L7's methods (when L7 names any) and not in L7Miss.
func wants(sp *sdk.Spec, rec *sdk.L7) bool {
	if !slices.Contains(sp.L7, rec.Protocol) || slices.Contains(sp.L7Miss, rec.Protocol) {
		return false
	}
	if rec.Protocol != "HTTP" {
		return true // method tokens are HTTP methods
	}
	if len(sp.L7Methods) > 0 && !slices.Contains(sp.L7Methods, rec.Method) {
		return false
	}
	return !slices.Contains(sp.L7Miss, rec.Method)
}

// failed reports whether a transaction counts as an error in the flow's summary.
func failed(rec *sdk.L7) bool {
	switch {
	case rec.Error != "":
		return true
	case rec.Protocol == "HTTP":
		return rec.Status >= 500
	case rec.Protocol == "DNS":
		return rec.RCode != "" && rec.RCode != "NOERROR" && rec.RCode != "NXDOMAIN"
	}
	return false
}

// sensitiveParams are query parameters whose values are credentials more often than not: even
// where query strings are kept, their values are replaced.
var sensitiveParams = []string{"access_token", "api_key", "apikey", "auth", "code", "key", "pass",
	"password", "passwd", "secret", "session", "sessionid", "sig", "signature", "token"}

// CutQuery removes the query string of a path, or with keep, replaces the values of parameters
// that usually carry credentials with "REDACTED". The fragment is never kept.
func CutQuery(path string, keep bool) string {
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path = path[:i]
	}
	i := strings.IndexByte(path, '?')
	if i < 0 {
		return path
	}
	if !keep {
		return path[:i]
	}
	params := strings.Split(path[i+1:], "&")
	for j, p := range params {
		name, _, hasValue := strings.Cut(p, "=")
		if hasValue && slices.Contains(sensitiveParams, strings.ToLower(name)) {
			params[j] = name + "=REDACTED"
		}
	}
	return path[:i+1] + strings.Join(params, "&")
}

// Counters are the stage's cumulative counters.
func (s *Stage) Counters() map[string]uint64 {
	s.mu.Lock()
	routes := len(s.flows)
	s.mu.Unlock()
	c := map[string]uint64{
		"decode.routes":                        uint64(routes),
		"decode.flows_undetected":              s.undetected.Load(),
		"decode.l7_records":                    s.emitted.Load(),
		"decode.drop.samples_no_l7_protocol":   s.noSubscription.Load(),
		"decode.drop.samples_unclaimed":        s.unrouted.Load(),
		"decode.drop.samples_route_table_full": s.tableFull.Load(),
		"decode.drop.l7_not_subscribed":        s.filtered.Load(),
	}
	for _, d := range s.decoders {
		p := "decoder." + d.Name + "."
		c[p+"flows_claimed"] = d.claimed.Load()
		c[p+"samples"] = d.samples.Load()
		c[p+"calls"] = d.calls.Load()
		c[p+"records"] = d.records.Load()
		c[p+"call_errors"] = d.errs.Load()
		c[p+"drop.samples_call_failed"] = d.dropErr.Load()
	}
	return c
}
