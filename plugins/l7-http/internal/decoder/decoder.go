// Package decoder is the HTTP/1 decoder plugin: it keeps one http1.Conn per connection the agent
// routes to it, keyed by (NIC, Community ID), and turns the transactions they report into L7
// records.
//
// The table of connections is bounded three ways, all in capture time so that replaying a file
// behaves like watching the wire: the agent's FlowEnd sample ends a connection; a connection
// without a sample for IdleTimeout is ended as if one had come; and when MaxFlows connections are
// held, the least recently active one is evicted. Whatever a connection still holds when it goes
// is reported, partial where it was not finished.
package decoder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quanyu/quanyu/internal/version"
	"github.com/quanyu/quanyu/plugins/internal/lru"
	"github.com/quanyu/quanyu/plugins/l7-http/internal/http1"
	"github.com/quanyu/quanyu/sdk"
)

// Protocol is the L7 protocol token the decoder reports.
const Protocol = "HTTP"

// Detection patterns, matched by the agent at the start of a flow's first payloads. The client
// pattern is a request line: a method token of 1 to 32 characters, a space, then HTTP/1.x and a
// digit before the line ends. Odd request lines the parser still reads ("OPTIONS" alone, "GET /
// HTTP/1.") do not match; on ports 80 and 8080 the port rule brings them here anyway.
const (
	ClientPattern = `^[-!#$%&'*+.^_` + "`" + `|~0-9A-Za-z]{1,32} [^\r\n]*HTTP/1\.[0-9]`
	ServerPattern = `^HTTP/1\.[0-9] [0-9]{3}`
)

// ErrShutdown is returned by Decode after Shutdown.
var ErrShutdown = errors.New("the HTTP decoder is shut down")

type flowKey struct{ nic, cid string }

// flow is one connection and what its records repeat.
type flow struct {
	key           flowKey
	conn          http1.Conn
	transport     sdk.Transport
	client        sdk.Endpoint
	server        sdk.Endpoint
	subscriptions []string
	last          time.Time // capture time of its newest sample

	links lru.Links[flow]
}

// Decoder is the sdk.Decoder for HTTP/1.0 and HTTP/1.1.
type Decoder struct {
	log *slog.Logger

	mu     sync.Mutex
	opts   Options
	shared *http1.Shared
	flows  map[flowKey]*flow
	lru    lru.List[flow] // the flows, most recently active first
	newest time.Time
	closed bool
	txs    []http1.Transaction // reused between calls

	// Counters of the decoder's own; the parser's are in shared.
	samples, udpIgnored, otherIgnored, emptySamples  uint64
	flowsStarted, flowEnds, flowEndsUnknown, expired uint64
	evicted, shutdownDropped                         uint64
	evictedAtHealth                                  uint64
	lastEvictionLog                                  time.Time
}

var _ sdk.Decoder = (*Decoder)(nil)

// New makes a decoder with the default options.
func New() *Decoder {
	d := &Decoder{
		log:    slog.Default().With("component", "l7-http"),
		flows:  map[flowKey]*flow{},
		lru:    lru.New(func(f *flow) *lru.Links[flow] { return &f.links }),
		shared: http1.NewShared(),
	}
	d.apply(Default())
	return d
}

func (d *Decoder) apply(o Options) {
	d.opts = o
	d.shared.MaxHeaderBytes = o.MaxHeaderBytes
	d.shared.MaxPending = o.MaxPending
}

// Info says what the decoder is and how the agent recognises its flows.
func (d *Decoder) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Kind:      sdk.KindDecoder,
		Name:      "l7-http",
		Version:   version.Version,
		Protocols: []string{Protocol},
		Detect: []sdk.Detect{{
			Protocol:      Protocol,
			ClientPattern: ClientPattern,
			ServerPattern: ServerPattern,
			Ports:         []uint16{80, 8080},
			Transports:    []sdk.Transport{sdk.TransportTCP},
		}},
	}, nil
}

// Configure applies the plugin's options. Connections are kept: new limits apply from the next
// sample (a smaller MaxFlows evicts at the next Decode).
func (d *Decoder) Configure(_ context.Context, cfg sdk.DecoderConfig) error {
	o, err := ParseOptions(cfg.Options)
	if err != nil {
		return fmt.Errorf("configuring the HTTP decoder: %w", err)
	}
	d.mu.Lock()
	d.apply(o)
	d.mu.Unlock()
	d.log.Debug("configured", "max_flows", o.MaxFlows, "max_pending", o.MaxPending,
		"idle_timeout", o.IdleTimeout, "max_header_bytes", o.MaxHeaderBytes)
	return nil
}

// Health reports the counters; the decoder is degraded while it evicts connections, since each
// eviction may cut transactions short.
func (d *Decoder) Health(context.Context) (sdk.Health, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := map[string]uint64{
		"samples":            d.samples,
		"udp_ignored":        d.udpIgnored,
		"other_ignored":      d.otherIgnored,
		"empty_samples":      d.emptySamples,
		"flows":              uint64(len(d.flows)),
		"flows_started":      d.flowsStarted,
		"flow_ends":          d.flowEnds,
		"flow_ends_unknown":  d.flowEndsUnknown,
		"idle_expired":       d.expired,
		"evicted":            d.evicted,
		"shutdown_discarded": d.shutdownDropped,
	}
	d.shared.Counters.Each(func(name string, v uint64) { c[name] = v })
	h := sdk.Health{Status: sdk.HealthOK, Counters: c}
	if n := d.evicted - d.evictedAtHealth; n > 0 {
		h.Status = sdk.HealthDegraded
		h.Message = fmt.Sprintf("the connection table is full (max_flows %d): %d connections evicted since the last health check",
			d.opts.MaxFlows, n)
	}
	d.evictedAtHealth = d.evicted
	return h, nil
}

// Decode follows each sample's connection and returns the records completed, in the order they
// completed.
func (d *Decoder) Decode(ctx context.Context, samples []sdk.Sample) ([]sdk.L7, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("decoding %d samples: %w", len(samples), err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrShutdown
	}
	var out []sdk.L7
	for len(d.flows) > d.opts.MaxFlows {
		out = d.evict(out)
	}
	for i := range samples {
		out = d.sample(&samples[i], out)
	}
	out = d.expire(out)
	return out, nil
}

func (d *Decoder) sample(s *sdk.Sample, out []sdk.L7) []sdk.L7 {
	d.samples++
	switch {
	case s.Transport == sdk.TransportUDP:
		d.udpIgnored++
		return out
	case s.Transport != sdk.TransportTCP:
		d.otherIgnored++
		return out
	}
	if s.Time.After(d.newest) {
		d.newest = s.Time
	}
	key := flowKey{s.NIC, s.CommunityID}
	f := d.flows[key]
	if f == nil {
		if len(s.Data) == 0 && s.WireLen <= 0 {
			if s.FlowEnd {
				d.flowEndsUnknown++
			} else {
				d.emptySamples++
			}
			return out
		}
		for len(d.flows) >= d.opts.MaxFlows {
			out = d.evict(out)
		}
		f = &flow{key: key, transport: s.Transport, client: s.Client, server: s.Server}
		f.conn.Init(d.shared)
		d.flows[key] = f
		d.flowsStarted++
		d.lru.PushFront(f)
	} else {
		d.lru.MoveToFront(f)
	}
	f.last = s.Time
	if s.Subscriptions != nil {
		f.subscriptions = s.Subscriptions
	}
	if len(s.Data) > 0 || s.WireLen > 0 {
		d.txs = f.conn.Packet(s.FromClient, s.Seq, s.Data, s.WireLen, s.Time, d.txs[:0])
		out = d.records(f, d.txs, out)
	} else if !s.FlowEnd {
		d.emptySamples++
	}
	if s.FlowEnd {
		d.flowEnds++
		out = d.end(f, true, out)
	}
	return out
}

// end reports what a connection holds and forgets it.
func (d *Decoder) end(f *flow, closed bool, out []sdk.L7) []sdk.L7 {
	d.txs = f.conn.End(closed, d.txs[:0])
	out = d.records(f, d.txs, out)
	d.lru.Remove(f)
	delete(d.flows, f.key)
	return out
}

// evict ends the least recently active connection to make room.
func (d *Decoder) evict(out []sdk.L7) []sdk.L7 {
	f := d.lru.Back()
	if f == nil {
		return out
	}
	d.evicted++
	if d.newest.Sub(d.lastEvictionLog) >= time.Minute || d.lastEvictionLog.IsZero() {
		d.lastEvictionLog = d.newest
		d.log.Warn("connection table full: evicting the least recently active connections",
			"max_flows", d.opts.MaxFlows, "evicted_total", d.evicted)
	}
	return d.end(f, false, out)
}

// expire ends the connections without a sample for IdleTimeout of capture time. The list is in
// order of activity, so the walk stops at the first connection still active.
func (d *Decoder) expire(out []sdk.L7) []sdk.L7 {
	for f := d.lru.Back(); f != nil && d.newest.Sub(f.last) > d.opts.IdleTimeout; f = d.lru.Back() {
		d.expired++
		out = d.end(f, true, out)
	}
	return out
}

func (d *Decoder) records(f *flow, txs []http1.Transaction, out []sdk.L7) []sdk.L7 {
	for i := range txs {
		tx := &txs[i]
		r := sdk.L7{
			Protocol:      Protocol,
			Method:        tx.Method,
			Host:          tx.Host,
			Path:          tx.Path,
			Status:        tx.Status,
			RequestBytes:  tx.RequestBytes,
			ResponseBytes: tx.ResponseBytes,
			Time:          tx.RequestTime,
			Transport:     f.transport,
			NIC:           f.key.nic,
			Client:        f.client,
			Server:        f.server,
			CommunityID:   f.key.cid,
			Partial:       tx.Partial,
			Error:         tx.Error,
			Flags:         tx.Flags.Names(),
			Version:       tx.Version,
			UserAgent:     tx.UserAgent,
			ContentType:   tx.ContentType,
			Subscriptions: f.subscriptions,
		}
		if !tx.ResponseTime.IsZero() {
			// Timestamps of the two directions may come from different clocks (two NICs), so
			// a response stamped before its request is reported with no latency rather than
			// a negative one.
			r.Latency = max(0, tx.ResponseTime.Sub(tx.RequestTime))
		}
		out = append(out, r)
	}
	return out
}

// Shutdown forgets every connection. Records still held cannot be returned from here, so they
// are counted (shutdown_discarded); the agent ends flows with FlowEnd before it stops. Safe
// without Configure and safe twice.
func (d *Decoder) Shutdown(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.flows {
		d.shutdownDropped += uint64(f.conn.Pending())
	}
	clear(d.flows)
	d.lru.Clear()
	d.closed = true
	return nil
}
