package pipeline

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// fakeSink records what it was given; gate, when set, holds every Write until closed.
type fakeSink struct {
	mu      sync.Mutex
	records int
	gate    chan struct{}
	fail    bool
}

func (f *fakeSink) Info(context.Context) (sdk.Info, error)          { return sdk.Info{}, nil }
func (f *fakeSink) Configure(context.Context, sdk.SinkConfig) error { return nil }
func (f *fakeSink) Health(context.Context) (sdk.Health, error)      { return sdk.Health{}, nil }
func (f *fakeSink) Shutdown(context.Context) error                  { return nil }
func (f *fakeSink) Write(_ context.Context, b *sdk.Batch) error {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("sink broken")
	}
	f.records += b.Len()
	return nil
}

func (f *fakeSink) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.records
}

// handle serves one sink, and after restart() another one.
type handle struct {
	mu      sync.Mutex
	sink    *fakeSink
	changed chan struct{}
}

func newHandle(s *fakeSink) *handle { return &handle{sink: s, changed: make(chan struct{})} }

func (h *handle) CurrentSink() (sdk.Sink, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sink, h.changed
}

func (h *handle) restart(s *fakeSink) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sink = s
	close(h.changed)
	h.changed = make(chan struct{})
}

func batchOf(n int) *sdk.Batch { return &sdk.Batch{Flows: make([]sdk.Flow, n)} }

func TestFanOutToEverySink(t *testing.T) {
	a, b := &fakeSink{}, &fakeSink{}
	p := New(Options{QueueBatches: 8}, map[string]SinkHandle{"a": newHandle(a), "b": newHandle(b)})
	p.Start()
	for i := 0; i < 5; i++ {
		if err := p.Emit(context.Background(), batchOf(10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.count() != 50 || b.count() != 50 {
		t.Fatalf("sinks got %d and %d records, want 50 each", a.count(), b.count())
	}
	c := p.Counters()
	if c["pipeline.records_in"] != 50 || c["sink.a.records_written"] != 50 || c["sink.b.drop.queue_full"] != 0 {
		t.Fatalf("counters %v", c)
	}
	if err := p.Emit(context.Background(), batchOf(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("emit after close: %v", err)
	}
}

// Live, a stuck sink loses batches once its queue is full, counted, and the other sink gets all.
func TestFullQueueDropsAndCounts(t *testing.T) {
	gate := make(chan struct{})
	slow, fast := &fakeSink{gate: gate}, &fakeSink{}
	p := New(Options{QueueBatches: 2}, map[string]SinkHandle{"slow": newHandle(slow), "fast": newHandle(fast)})
	p.Start()
	// The slow writer takes one batch and blocks on it; two more fill its queue; the rest drop.
	if err := p.Emit(context.Background(), batchOf(3)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Counters()["sink.slow.queue_length"] != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 6; i++ {
		if err := p.Emit(context.Background(), batchOf(3)); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := p.Counters()
	if got := c["sink.slow.drop.queue_full"]; got != 12 {
		t.Fatalf("slow sink dropped %d records, want 12 (4 batches of 3)", got)
	}
	if slow.count() != 9 {
		t.Fatalf("slow wrote %d, want 9 (the batch it held and the two queued)", slow.count())
	}
	// The fast sink has the same small queue, so it may drop too; every record is either written
	// or counted, for both.
	for _, s := range []string{"slow", "fast"} {
		if c["sink."+s+".records_written"]+c["sink."+s+".drop.queue_full"] != c["pipeline.records_in"] {
			t.Fatalf("%s: records unaccounted for: %v", s, c)
		}
	}
	if uint64(fast.count()) != c["sink.fast.records_written"] {
		t.Fatalf("fast wrote %d, counter says %d", fast.count(), c["sink.fast.records_written"])
	}
}

// Replay blocks instead of dropping.
func TestBlockModeLosesNothing(t *testing.T) {
	gate := make(chan struct{})
	slow := &fakeSink{gate: gate}
	p := New(Options{QueueBatches: 1, Block: true}, map[string]SinkHandle{"slow": newHandle(slow)})
	p.Start()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			if err := p.Emit(context.Background(), batchOf(2)); err != nil {
				t.Error(err)
			}
		}
	}()
	select {
	case <-done:
		t.Fatal("emits did not wait for the stuck sink")
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	<-done
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if slow.count() != 40 || p.Counters()["sink.slow.drop.queue_full"] != 0 {
		t.Fatalf("wrote %d of 40, counters %v", slow.count(), p.Counters())
	}
}

// A write that fails while the sink plugin restarts is tried once more on the new instance.
func TestWriteRetriedOnRestartedSink(t *testing.T) {
	broken := &fakeSink{fail: true}
	h := newHandle(broken)
	p := New(Options{QueueBatches: 4}, map[string]SinkHandle{"s": h})
	p.Start()
	if err := p.Emit(context.Background(), batchOf(5)); err != nil {
		t.Fatal(err)
	}
	fresh := &fakeSink{}
	time.Sleep(20 * time.Millisecond)
	h.restart(fresh)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := p.Counters()
	if fresh.count() != 5 || c["sink.s.write_retries"] != 1 || c["sink.s.drop.write_error"] != 0 {
		t.Fatalf("fresh sink wrote %d, counters %v", fresh.count(), c)
	}
}

// Payload samples are for decoders: with none, they are counted and go no further.
func TestSamplesWithoutDecoderCounted(t *testing.T) {
	s := &fakeSink{}
	p := New(Options{QueueBatches: 4}, map[string]SinkHandle{"s": newHandle(s)})
	p.Start()
	if err := p.Emit(context.Background(), &sdk.Batch{Samples: make([]sdk.Sample, 3), Flows: make([]sdk.Flow, 2)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Emit(context.Background(), &sdk.Batch{Samples: make([]sdk.Sample, 4)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := p.Counters()
	if c["pipeline.drop.samples_no_decoder"] != 7 || s.count() != 2 || c["sink.s.batches_written"] != 1 {
		t.Fatalf("counters %v, sink got %d records", c, s.count())
	}
}

// With a decoder stage, every batch goes through it in order before the sinks; what it turns
// samples into reaches them, and Close drains it first.
func TestDecodeStageBeforeSinks(t *testing.T) {
	s := &fakeSink{}
	var seen []int
	decode := func(_ context.Context, b *sdk.Batch) {
		seen = append(seen, len(b.Flows))
		for range b.Samples {
			b.L7 = append(b.L7, sdk.L7{Protocol: "HTTP"})
		}
		b.Samples = nil
	}
	p := New(Options{QueueBatches: 2, Block: true, Decode: decode}, map[string]SinkHandle{"s": newHandle(s)})
	p.Start()
	for i := 1; i <= 5; i++ {
		if err := p.Emit(context.Background(), &sdk.Batch{Samples: make([]sdk.Sample, 2), Flows: make([]sdk.Flow, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2, 3, 4, 5}; len(seen) != 5 || seen[0] != 1 || seen[4] != 5 {
		t.Errorf("decoder saw batches with %v flows, want %v in order", seen, want)
	}
	// 15 flows and 10 L7 records made from the samples.
	if s.count() != 25 {
		t.Errorf("sink got %d records, want 25", s.count())
	}
}

// Live, a full decoder queue drops the batch and counts it; capture never waits.
func TestDecodeQueueFullCounted(t *testing.T) {
	gate, entered := make(chan struct{}), make(chan struct{}, 4)
	decode := func(context.Context, *sdk.Batch) {
		entered <- struct{}{}
		<-gate
	}
	p := New(Options{QueueBatches: 1, Decode: decode}, map[string]SinkHandle{"s": newHandle(&fakeSink{})})
	p.Start()
	for i := range 4 {
		if err := p.Emit(context.Background(), &sdk.Batch{Samples: make([]sdk.Sample, 3), Flows: make([]sdk.Flow, 1)}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-entered // the stage holds the first batch
		}
	}
	// One batch is in the stage, one in the queue: two were dropped.
	close(gate)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := p.Counters()
	if c["pipeline.drop.decode_queue_full"] != 2 || c["pipeline.drop.decode_queue_full_samples"] != 6 {
		t.Errorf("counters %v, want 2 records and 6 samples dropped", c)
	}
}
