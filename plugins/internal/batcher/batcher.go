// Package batcher gathers a capture plugin's records into batches for the agent: a batch leaves
// when it holds Size records or when Flush is called (on the flush interval), never one record
// at a time, since every batch crosses a process boundary.
//
// Live, adding never blocks the capture: a batch that finds the bounded queue full is dropped
// and its records counted (drop.emit_queue_full). Replaying a file, it waits instead.
package batcher

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/quanyu/quanyu/sdk"
)

// QueueBatches bounds the batches waiting for the agent.
const QueueBatches = 64

// Batcher is safe for concurrent use.
type Batcher struct {
	size  int
	block bool

	mu    sync.Mutex
	cur   *sdk.Batch
	queue chan *sdk.Batch

	dropped atomic.Uint64
	records atomic.Uint64
	batches atomic.Uint64
}

// New makes a batcher of batches of size records; block makes a full queue wait (replay).
func New(size int, block bool) *Batcher {
	if size < 1 {
		size = 1
	}
	return &Batcher{size: size, block: block, cur: &sdk.Batch{}, queue: make(chan *sdk.Batch, QueueBatches)}
}

// AddFlow adds a flow record. It has the flow table's EmitFunc signature.
func (b *Batcher) AddFlow(f sdk.Flow) {
	b.add(func(cur *sdk.Batch) { cur.Flows = append(cur.Flows, f) })
}

// AddEvent adds a flow event.
func (b *Batcher) AddEvent(e sdk.Event) {
	b.add(func(cur *sdk.Batch) { cur.Events = append(cur.Events, e) })
}

// AddSample adds a payload sample.
func (b *Batcher) AddSample(s sdk.Sample) {
	b.add(func(cur *sdk.Batch) { cur.Samples = append(cur.Samples, s) })
}

func (b *Batcher) add(put func(*sdk.Batch)) {
	b.mu.Lock()
	put(b.cur)
	var full *sdk.Batch
	if b.cur.Len() >= b.size {
		full, b.cur = b.cur, &sdk.Batch{}
	}
	b.mu.Unlock()
	if full != nil {
		b.push(full)
	}
}

// Flush sends what is gathered, if anything.
func (b *Batcher) Flush() {
	b.mu.Lock()
	var batch *sdk.Batch
	if b.cur.Len() > 0 {
		batch, b.cur = b.cur, &sdk.Batch{}
	}
	b.mu.Unlock()
	if batch != nil {
		b.push(batch)
	}
}

// Close flushes and ends Run once the queue is empty. Nothing may be added after Close.
func (b *Batcher) Close() {
	b.Flush()
	close(b.queue)
}

func (b *Batcher) push(batch *sdk.Batch) {
	if b.block {
		b.queue <- batch
		return
	}
	select {
	case b.queue <- batch:
	default:
		b.dropped.Add(uint64(batch.Len()))
	}
}

// Run hands queued batches to the agent until Close. After the first failed Emit (the agent is
// gone), the rest are counted as dropped.
func (b *Batcher) Run(ctx context.Context, out sdk.Emitter) error {
	var firstErr error
	for batch := range b.queue {
		if firstErr != nil {
			b.dropped.Add(uint64(batch.Len()))
			continue
		}
		if err := out.Emit(ctx, batch); err != nil {
			firstErr = fmt.Errorf("sending records to the agent: %w", err)
			b.dropped.Add(uint64(batch.Len()))
			continue
		}
		b.records.Add(uint64(batch.Len()))
		b.batches.Add(1)
	}
	return firstErr
}

// Counters adds the batcher's counters to into.
func (b *Batcher) Counters(into map[string]uint64) {
	into["records.sent"] = b.records.Load()
	into["batches.sent"] = b.batches.Load()
	into["drop.emit_queue_full"] = b.dropped.Load()
}
