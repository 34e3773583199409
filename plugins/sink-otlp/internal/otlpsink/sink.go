// Package otlpsink is the sink that sends Quanyu's records as OpenTelemetry signals (OTLP over
// gRPC or HTTP), mapped as internal/otlpschema says: flows, flow events, DNS L7 records and
// inventories as log records, HTTP L7 records as server spans, per-edge counts as metrics.
//
// Write only queues (a bounded queue, in records); one worker per configuration builds the
// signals, and up to two exports of log records are under way while it builds the next. Log
// records, the bulk (flows), are encoded straight into the OTLP protobuf wire format and sent
// by the sink's own OTLP/gRPC or OTLP/HTTP client, and the per-edge sums are kept by the sink,
// because the OpenTelemetry Go SDK costs too much per record for them (bench/RESULTS.md);
// spans go through the SDK, and the SDK's metric exporter sends the sums. Everything Write
// accepts ends up in a counter: sent.<kind>, or dropped.<reason>.
package otlpsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/quanyu/quanyu/internal/version"
	"github.com/quanyu/quanyu/sdk"
)

// ErrNotConfigured is returned by Write before the first Configure; the batch is counted as
// dropped.not_configured.
var ErrNotConfigured = errors.New("sink-otlp is not configured")

// ErrShutdown is returned by Write after Shutdown; the batch is counted as dropped.shutdown.
var ErrShutdown = errors.New("sink-otlp is shut down")

// Sink sends records to an OTLP collector.
type Sink struct {
	log *slog.Logger
	c   *counters

	mu       sync.RWMutex // guards cur and the swap; Write holds it shared
	cur      *pipeline
	curHost  string
	closed   bool
	retiring sync.WaitGroup // old pipelines still draining after a reconfiguration

	healthMu    sync.Mutex
	lastDropped uint64
}

var _ sdk.Sink = (*Sink)(nil)

// New makes an unconfigured sink.
func New() *Sink {
	return &Sink{log: slog.Default().With("component", "sink-otlp"), c: newCounters()}
}

func (s *Sink) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Kind: sdk.KindSink, Name: "otlp", Version: version.Version,
		Capabilities: []string{"logs", "traces", "metrics"}}, nil
}

// Configure validates the options and, when they changed, starts a pipeline with them and
// retires the previous one: it sends what it still holds (within its timeout) in the
// background, while Write already feeds the new one.
func (s *Sink) Configure(ctx context.Context, cfg sdk.SinkConfig) error {
	o, err := parseOptions(cfg.Options)
	if err != nil {
		return err
	}
	if o.AgentID == "" {
		// The agent's own name for itself (identity.id): two agents on one host stay two.
		o.AgentID = cfg.AgentID
	}
	host := o.HostName
	if host == "" {
		host = cfg.Host
	}
	if host == "" {
		if host, err = os.Hostname(); err != nil {
			return fmt.Errorf("sink-otlp: no host name configured and none from the system: %w", err)
		}
	}
	s.mu.RLock()
	same := s.cur != nil && s.curHost == host && reflect.DeepEqual(s.cur.opts, o)
	s.mu.RUnlock()
	if same {
		return nil
	}
	p, err := newPipeline(o, host, s.c, s.log)
	if err != nil {
		return fmt.Errorf("sink-otlp: %w", err)
	}
	s.mu.Lock()
	old := s.cur
	s.cur, s.curHost = p, host
	s.mu.Unlock()
	s.log.Info("configured", "protocol", o.Protocol, "endpoint", o.endpoint(), "host", host)
	if old != nil {
		s.retiring.Add(1)
		go func() {
			defer s.retiring.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Duration(old.opts.Timeout))
			defer cancel()
			if err := old.close(ctx); err != nil {
				s.log.Warn("closing the previous configuration's exporters", "err", err)
			}
		}()
	}
	return nil
}

// Health reports the counters. It is failing while the last export failed (the collector is
// unreachable or refuses), degraded when records were dropped since the previous call.
func (s *Sink) Health(context.Context) (sdk.Health, error) {
	h := sdk.Health{Status: sdk.HealthOK, Counters: s.c.snapshot()}
	s.mu.RLock()
	if s.cur != nil {
		h.Counters["queue.records"] = uint64(max(s.cur.queued.Load(), 0))
	}
	s.mu.RUnlock()
	s.healthMu.Lock()
	dropped := s.c.totalDropped()
	newDrops := dropped - s.lastDropped
	s.lastDropped = dropped
	s.healthMu.Unlock()
	s.c.mu.Lock()
	lastErr := s.c.lastErr
	s.c.mu.Unlock()
	switch {
	case lastErr != nil:
		h.Status, h.Message = sdk.HealthFailing, lastErr.Error()
	case newDrops > 0:
		h.Status, h.Message = sdk.HealthDegraded, fmt.Sprintf("%d records dropped since the last report", newDrops)
	}
	return h, nil
}

// Write queues the batch and returns at once; when the queue is full the batch is dropped and
// counted (dropped.queue_full), never waited for. The sink keeps b until it is exported: the
// caller must not change it afterwards (across the plugin boundary every batch is new).
func (s *Sink) Write(_ context.Context, b *sdk.Batch) error {
	if b == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur == nil {
		if s.closed {
			s.c.drop(dropShutdown, uint64(records(b)))
			return ErrShutdown
		}
		s.c.drop(dropNotConfigured, uint64(records(b)))
		return ErrNotConfigured
	}
	s.cur.enqueue(b)
	return nil
}

// Shutdown sends what is queued until ctx ends, drops and counts the rest, and closes the
// exporters. It is safe without Configure and safe twice.
func (s *Sink) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	p := s.cur
	s.cur, s.closed = nil, true
	s.mu.Unlock()
	var err error
	if p != nil {
		err = p.close(ctx)
	}
	done := make(chan struct{})
	go func() { s.retiring.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	if err != nil {
		return fmt.Errorf("sink-otlp: shutting down: %w", err)
	}
	return nil
}
