// Package pipeline moves batches from the capture plugin to the sinks. Each sink has its own
// bounded queue and goroutine, so a slow sink delays nobody but itself; what a full queue or a
// failed write loses is counted per sink and reason.
//
// Live, a full queue drops the batch (capture must never wait on a sink: the kernel ring would
// overflow instead, where the loss is harder to see). Replaying a file, Emit waits for room
// instead, because a file can always be read more slowly and nothing should be lost.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// SinkHandle gives the current instance of a sink plugin and a channel closed when a restarted
// instance replaces it.
type SinkHandle interface {
	CurrentSink() (sdk.Sink, <-chan struct{})
}

// Options configure a pipeline.
type Options struct {
	QueueBatches int
	// Block makes Emit wait for queue room instead of dropping (replay).
	Block bool
	// Enrich, when set, fills in what the core knows and capture does not (host, namespace)
	// before a batch is queued.
	Enrich func(*sdk.Batch)
	// Decode, when set, is the decoder stage: batches go through it, in order and on one
	// goroutine, before the sinks; it turns samples into L7 records and removes them. It has
	// its own queue of QueueBatches. Without it, samples are counted and dropped.
	Decode func(context.Context, *sdk.Batch)
	Log    *slog.Logger
}

// Pipeline fans batches out to sinks.
type Pipeline struct {
	opts    Options
	sinks   []*sinkStage
	wg      sync.WaitGroup
	decodeQ chan *sdk.Batch
	decoded sync.WaitGroup
	// sinksClose closes the sink queues once, after the decoder stage is done.
	sinksClose sync.Once

	// mu keeps Close from closing a queue while an Emit sends on it; closing wakes an Emit
	// blocked on a full queue first, so Close never waits behind it.
	mu        sync.RWMutex
	closed    bool
	closing   chan struct{}
	closeOnce sync.Once

	batchesIn atomic.Uint64
	recordsIn atomic.Uint64
	// samplesNoDecoder counts payload samples that arrived with no decoder to take them (a
	// subscription asked for L7, but no decoder plugin runs); they go no further.
	samplesNoDecoder atomic.Uint64
	// decodeFull counts records (and samples) of batches dropped because the decoder stage's
	// queue was full (live only).
	decodeFull        atomic.Uint64
	decodeFullSamples atomic.Uint64
}

type sinkStage struct {
	name   string
	handle SinkHandle
	q      chan *sdk.Batch
	log    *slog.Logger

	batches   atomic.Uint64
	records   atomic.Uint64
	dropFull  atomic.Uint64
	dropWrite atomic.Uint64
	retried   atomic.Uint64
}

// New builds a pipeline writing to the named sinks.
func New(opts Options, sinks map[string]SinkHandle) *Pipeline {
	if opts.QueueBatches < 1 {
		opts.QueueBatches = 1
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	p := &Pipeline{opts: opts, closing: make(chan struct{})}
	if opts.Decode != nil {
		p.decodeQ = make(chan *sdk.Batch, opts.QueueBatches)
	}
	names := make([]string, 0, len(sinks))
	for n := range sinks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p.sinks = append(p.sinks, &sinkStage{
			name: n, handle: sinks[n], q: make(chan *sdk.Batch, opts.QueueBatches),
			log: opts.Log.With("sink", n),
		})
	}
	return p
}

// Start runs one writer per sink, and the decoder stage if there is one, until Close.
func (p *Pipeline) Start() {
	if p.decodeQ != nil {
		p.decoded.Add(1)
		go func() {
			defer p.decoded.Done()
			for b := range p.decodeQ {
				p.opts.Decode(context.Background(), b)
				// Batches already taken are written even while closing: nil never gives up.
				_ = p.fanOut(context.Background(), b, nil)
			}
		}()
	}
	for _, s := range p.sinks {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			s.run()
		}()
	}
}

// ErrClosed is returned by Emit after Close.
var ErrClosed = errors.New("pipeline closed")

// Emit takes a batch from capture (it is the capture's sdk.Emitter). The batch is shared by the
// sinks read-only.
func (p *Pipeline) Emit(ctx context.Context, b *sdk.Batch) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	if p.opts.Enrich != nil {
		p.opts.Enrich(b)
	}
	if p.decodeQ != nil {
		return p.enqueueDecode(ctx, b)
	}
	if n := len(b.Samples); n > 0 {
		// Samples are for decoders, not sinks; with no decoder stage they stop here, counted.
		p.samplesNoDecoder.Add(uint64(n))
		b.Samples = nil
	}
	return p.fanOut(ctx, b, p.closing)
}

func (p *Pipeline) enqueueDecode(ctx context.Context, b *sdk.Batch) error {
	if p.opts.Block {
		select {
		case p.decodeQ <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-p.closing:
			return ErrClosed
		}
	}
	select {
	case p.decodeQ <- b:
	default:
		p.decodeFull.Add(uint64(b.Len() - len(b.Samples)))
		p.decodeFullSamples.Add(uint64(len(b.Samples)))
	}
	return nil
}

// fanOut queues a batch for every sink. Waiting for room (replay) ends with ctx or closing.
func (p *Pipeline) fanOut(ctx context.Context, b *sdk.Batch, closing <-chan struct{}) error {
	if b.Len() == 0 && len(b.Stats) == 0 && b.Inventory == nil {
		return nil
	}
	p.batchesIn.Add(1)
	p.recordsIn.Add(uint64(b.Len()))
	for _, s := range p.sinks {
		if p.opts.Block {
			select {
			case s.q <- b:
			case <-ctx.Done():
				s.dropFull.Add(uint64(b.Len()))
				return ctx.Err()
			case <-closing:
				s.dropFull.Add(uint64(b.Len()))
				return ErrClosed
			}
			continue
		}
		select {
		case s.q <- b:
		default:
			s.dropFull.Add(uint64(b.Len()))
		}
	}
	return nil
}

func (s *sinkStage) run() {
	for b := range s.q {
		s.write(b)
	}
}

// writeTimeout bounds one Write call; a sink is supposed to enqueue and return.
const writeTimeout = 30 * time.Second

func (s *sinkStage) write(b *sdk.Batch) {
	sink, changed := s.handle.CurrentSink()
	err := s.writeOnce(sink, b)
	if err == nil {
		return
	}
	// A sink that crashed is being restarted by the plugin host: give the batch one more try on
	// the new instance rather than dropping it at once.
	select {
	case <-changed:
		s.retried.Add(1)
		sink, _ = s.handle.CurrentSink()
		err = s.writeOnce(sink, b)
	case <-time.After(5 * time.Second):
	}
	if err != nil {
		s.dropWrite.Add(uint64(b.Len()))
		s.log.Warn("sink write failed; batch dropped", "records", b.Len(), "err", err)
	}
}

func (s *sinkStage) writeOnce(sink sdk.Sink, b *sdk.Batch) error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := sink.Write(ctx, b); err != nil {
		return fmt.Errorf("writing batch to sink %s: %w", s.name, err)
	}
	s.batches.Add(1)
	s.records.Add(uint64(b.Len()))
	return nil
}

// Close stops accepting batches and waits until every queued batch was written or ctx ends.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		close(p.closing)
		p.mu.Lock()
		p.closed = true
		if p.decodeQ != nil {
			close(p.decodeQ)
		}
		p.mu.Unlock()
	})
	done := make(chan struct{})
	go func() {
		// The decoder stage finishes what it holds before the sink queues close behind it.
		p.decoded.Wait()
		p.sinksClose.Do(func() {
			for _, s := range p.sinks {
				close(s.q)
			}
		})
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("draining sink queues: %w", ctx.Err())
	}
}

// Counters are the pipeline's cumulative counters.
func (p *Pipeline) Counters() map[string]uint64 {
	c := map[string]uint64{
		"pipeline.batches_in":              p.batchesIn.Load(),
		"pipeline.records_in":              p.recordsIn.Load(),
		"pipeline.drop.samples_no_decoder": p.samplesNoDecoder.Load(),
	}
	if p.decodeQ != nil {
		c["pipeline.drop.decode_queue_full"] = p.decodeFull.Load()
		c["pipeline.drop.decode_queue_full_samples"] = p.decodeFullSamples.Load()
		c["pipeline.decode_queue_length"] = uint64(len(p.decodeQ))
	}
	for _, s := range p.sinks {
		prefix := "sink." + s.name + "."
		c[prefix+"batches_written"] = s.batches.Load()
		c[prefix+"records_written"] = s.records.Load()
		c[prefix+"drop.queue_full"] = s.dropFull.Load()
		c[prefix+"drop.write_error"] = s.dropWrite.Load()
		c[prefix+"write_retries"] = s.retried.Load()
		c[prefix+"queue_length"] = uint64(len(s.q))
	}
	return c
}
