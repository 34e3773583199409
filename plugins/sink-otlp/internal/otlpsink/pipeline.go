package otlpsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	s "github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/sdk"
)

// A pipeline is one configuration at work: Write puts batches on a bounded queue, and one worker
// turns them into OTLP log records (encoded straight into requests, see wire.go) and SDK spans
// (collected by a processor instead of the SDK's batch processor, whose queue drops without
// telling), and adds the flows to the edge sums. A request of BatchSize records, or whatever
// is there when the queue runs empty, goes to one of maxInFlight senders, so that the worker
// encodes the next request while the collector takes the last; when every sender is busy the
// worker waits, and the queue in front of it fills. Spans are exported by the worker itself.
// Every record is accounted for by whoever exported it: sent, or dropped with a reason. The
// edge sums are exported by the SDK's periodic reader, which reads them through
// edgeSums.Produce.
type pipeline struct {
	opts Options
	c    *counters
	log  *slog.Logger

	queue  chan *sdk.Batch
	queued atomic.Int64 // records on the queue
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	exp     *exporters
	enc     logEncoder
	cur     *logRequest      // the request being filled; nil when none is
	free    chan *logRequest // requests done with, for reuse
	toSend  chan *logRequest
	senders sync.WaitGroup

	traces *sdktrace.TracerProvider
	tracer trace.Tracer
	spans  *spanCollector
	meters *sdkmetric.MeterProvider
	edges  *edgeSums // nil when metrics are off
}

// maxInFlight is how many log exports may be under way at once. Two are enough for the
// worker's encoding to overlap the collector's decoding; more would only hold more memory.
const maxInFlight = 2

func newPipeline(o Options, host string, c *counters, log *slog.Logger) (*pipeline, error) {
	agent := o.AgentID
	if agent == "" {
		agent = host
	}
	resAttrs := []attribute.KeyValue{
		attribute.String(s.ResourceServiceName, s.ServiceAgent),
		attribute.String(s.ResourceHostName, host),
		attribute.String(s.AttrAgentID, agent)}
	hdr, err := newRequestHeader(resAttrs)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	exp, err := newExporters(ctx, o, log)
	if err != nil {
		cancel()
		return nil, err
	}
	res := resource.NewSchemaless(resAttrs...)
	p := &pipeline{
		opts: o, c: c, log: log,
		queue: make(chan *sdk.Batch, min(o.QueueSize, 4096)),
		ctx:   ctx, cancel: cancel, done: make(chan struct{}),
		exp: exp, enc: logEncoder{host: host, hdr: hdr},
		free: make(chan *logRequest, maxInFlight+1), toSend: make(chan *logRequest),
		spans: &spanCollector{},
	}
	p.traces = sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSpanProcessor(p.spans),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithRawSpanLimits(sdktrace.SpanLimits{AttributeCountLimit: -1, AttributeValueLengthLimit: -1,
			EventCountLimit: -1, LinkCountLimit: -1, AttributePerEventCountLimit: -1, AttributePerLinkCountLimit: -1}))
	p.tracer = p.traces.Tracer(s.ScopeName)
	if exp.metrics != nil {
		p.edges = newEdgeSums(c)
		reader := sdkmetric.NewPeriodicReader(countedMetrics{Exporter: exp.metrics, tries: exp.metricTries, c: c},
			sdkmetric.WithInterval(time.Duration(o.MetricsInterval)), sdkmetric.WithTimeout(time.Duration(o.Timeout)),
			sdkmetric.WithProducer(p.edges))
		p.meters = sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
	}
	p.senders.Add(maxInFlight)
	for range maxInFlight {
		go p.sendLoop()
	}
	go p.run()
	return p, nil
}

// records is how many records of b the sink exports (stats and samples are not among them).
func records(b *sdk.Batch) int {
	n := len(b.Flows) + len(b.Events) + len(b.L7)
	if b.Inventory != nil {
		n++
	}
	return n
}

// enqueue never blocks: a batch that does not fit is dropped whole and counted.
func (p *pipeline) enqueue(b *sdk.Batch) bool {
	n := int64(records(b))
	if n == 0 {
		return true
	}
	if p.queued.Add(n) > int64(p.opts.QueueSize) {
		p.queued.Add(-n)
		p.c.drop(dropQueueFull, uint64(n))
		return false
	}
	select {
	case p.queue <- b:
		return true
	default:
		p.queued.Add(-n)
		p.c.drop(dropQueueFull, uint64(n))
		return false
	}
}

func (p *pipeline) run() {
	defer close(p.done)
	for b := range p.queue {
		p.queued.Add(-int64(records(b)))
		if p.ctx.Err() != nil {
			p.c.drop(dropShutdown, uint64(records(b)))
			continue
		}
		p.emit(b)
		// Records wait for more while the queue has some, so requests stay large under load
		// and a quiet agent's records still leave at once.
		if len(p.queue) == 0 {
			p.sendLogs()
		}
		if len(p.queue) == 0 || len(p.spans.spans) >= p.opts.BatchSize {
			p.flushSpans()
		}
	}
	p.sendLogs()
	p.flushSpans()
	close(p.toSend)
	p.senders.Wait()
}

// emit turns a batch into log records and spans (held until they are exported) and edge
// sums.
func (p *pipeline) emit(b *sdk.Batch) {
	// One observation time for the batch: its records reached the sink together.
	p.enc.observed = timeUnixNano(time.Now())
	for i := range b.Flows {
		p.enc.addFlow(p.request(), &b.Flows[i])
		p.added()
	}
	if p.edges != nil {
		p.edges.add(b.Flows)
	}
	for i := range b.Events {
		p.enc.addEvent(p.request(), &b.Events[i])
		p.added()
	}
	for i := range b.L7 {
		r := &b.L7[i]
		if r.Protocol == "HTTP" {
			p.httpSpan(r)
			continue
		}
		p.enc.addL7(p.request(), r)
		p.added()
	}
	if b.Inventory != nil {
		p.enc.addInventory(p.request(), b.Inventory, inventoryJSON(b.Inventory, p.log))
		p.added()
	}
	p.c.skipped.Add(uint64(len(b.Stats) + len(b.Samples)))
}

// request is the request being filled, a reused one or a new one when it has none.
func (p *pipeline) request() *logRequest {
	if p.cur != nil {
		return p.cur
	}
	var r *logRequest
	select {
	case r = <-p.free:
	default:
		r = &logRequest{recycle: p.recycle}
	}
	r.reset(p.enc.hdr.room)
	r.refs.Store(1) // the pipeline's, until its export is over
	p.cur = r
	return r
}

// recycle keeps a request no one uses any more for reuse. A request given back after the list
// is full (its transport let go of it late) is left to the garbage collector.
func (p *pipeline) recycle(r *logRequest) {
	select {
	case p.free <- r:
	default:
	}
}

// added sends the request once it holds BatchSize records.
func (p *pipeline) added() {
	if p.cur.len() >= p.opts.BatchSize {
		p.sendLogs()
	}
}

// sendLogs hands the request being filled to a sender, waiting while every sender is busy.
func (p *pipeline) sendLogs() {
	r := p.cur
	if r == nil || r.len() == 0 {
		return
	}
	p.cur = nil
	r.seal(&p.enc.hdr)
	p.toSend <- r
}

// sendLoop is a sender: it exports requests and accounts for their records.
func (p *pipeline) sendLoop() {
	defer p.senders.Done()
	for r := range p.toSend {
		ctx, cancel := context.WithTimeout(p.ctx, time.Duration(p.opts.Timeout))
		attempts, err := p.exp.logs.export(ctx, r)
		cancel()
		p.c.retries(attempts)
		p.account(err, r.kinds, "logs")
		r.release()
	}
}

// httpSpan makes the server span of an HTTP transaction: from the request's first byte to the
// response's, named by the method alone (the path would make names high-cardinality).
func (p *pipeline) httpSpan(r *sdk.L7) {
	name := r.Method
	if name == "" {
		name = "HTTP"
	}
	_, span := p.tracer.Start(context.Background(), name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(r.Time), trace.WithAttributes(spanAttributes(r)...))
	if r.Status >= 500 {
		span.SetStatus(codes.Error, "")
	}
	span.End(trace.WithTimestamp(r.Time.Add(r.Latency)))
}

// spanExportTimeout bounds one span export, its retries included, whatever the SDK's
// exporter does.
func (p *pipeline) spanExportTimeout() time.Duration {
	return time.Duration(p.opts.Timeout) + time.Second
}

func (p *pipeline) flushSpans() {
	for len(p.spans.spans) > 0 {
		n := min(len(p.spans.spans), p.opts.BatchSize)
		ctx, cancel := context.WithTimeout(p.ctx, p.spanExportTimeout())
		before := p.exp.spanTries.n.Load()
		err := p.exp.spans.ExportSpans(ctx, p.spans.spans[:n])
		cancel()
		p.c.retries(p.exp.spanTries.n.Load() - before)
		kinds := make([]kind, n)
		for i := range kinds {
			kinds[i] = kindL7
		}
		p.account(err, kinds, "spans")
		clear(p.spans.spans[:n])
		p.spans.spans = p.spans.spans[n:]
	}
	p.spans.spans = nil
}

// account counts one export's records as sent or dropped.
func (p *pipeline) account(err error, kinds []kind, what string) {
	if err == nil {
		p.c.exportOK()
		for _, k := range kinds {
			p.c.sent[k].Add(1)
		}
		return
	}
	if n, ok := partialRejected(err); ok {
		// The collector took the request and refused some records; which ones it does not say,
		// so the kinds of the sent ones are counted from the front.
		n = min(n, uint64(len(kinds)))
		p.c.drop(dropRejected, n)
		for _, k := range kinds[:uint64(len(kinds))-n] {
			p.c.sent[k].Add(1)
		}
		p.log.Warn("collector rejected records", "signal", what, "rejected", n, "err", err)
		return
	}
	reason := dropExportFailed
	if errors.Is(err, context.Canceled) && p.ctx.Err() != nil {
		reason = dropShutdown
	}
	p.c.drop(reason, uint64(len(kinds)))
	p.c.exportFailed(fmt.Errorf("exporting %s to %s: %w", what, p.opts.endpoint(), err))
	p.log.Warn("export failed; records dropped", "signal", what, "records", len(kinds), "endpoint", p.opts.endpoint(), "err", err)
}

// close stops the pipeline: what is queued is still exported until ctx ends, then dropped and
// counted; the final metric sums are exported.
func (p *pipeline) close(ctx context.Context) error {
	close(p.queue)
	select {
	case <-p.done:
	case <-ctx.Done():
		p.cancel()
		<-p.done
	}
	err := p.shutdownProviders(ctx)
	p.cancel()
	return err
}

func (p *pipeline) shutdownProviders(ctx context.Context) error {
	var errs []error
	if p.meters != nil {
		if err := p.meters.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flushing metrics: %w", err))
		}
	}
	errs = append(errs, p.traces.Shutdown(ctx), p.exp.close(ctx))
	return errors.Join(errs...)
}

// spanCollector is the tracer provider's processor: it keeps the spans for the worker, which
// exports them itself. Only the worker ends spans, so no lock is needed.
type spanCollector struct {
	spans []sdktrace.ReadOnlySpan
}

var _ sdktrace.SpanProcessor = (*spanCollector)(nil)

func (c *spanCollector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *spanCollector) OnEnd(sp sdktrace.ReadOnlySpan)                  { c.spans = append(c.spans, sp) }
func (c *spanCollector) Shutdown(context.Context) error                  { return nil }
func (c *spanCollector) ForceFlush(context.Context) error                { return nil }

// edgeSums are the per-edge cumulative sums. They are kept here, in a map from the edge to its
// sums, rather than in the SDK's aggregation, which cost 4 to 7 µs a flow record
// (bench/RESULTS.md); the SDK's periodic reader reads them (Produce) on each interval and its
// exporter sends them. The worker adds a batch's flows under the lock, once a batch.
type edgeSums struct {
	c     *counters
	start time.Time // the sums count from the pipeline's start

	mu    sync.Mutex
	index map[edgeKey]int32 // into sums
	sums  []edgeSum
}

type edgeKey struct {
	client, server netip.Addr
	port           uint16
	transport      sdk.Transport
}

type edgeSum struct {
	key                  edgeKey
	flows                uint64
	txBytes, rxBytes     uint64
	txPackets, rxPackets uint64
}

// maxEdges bounds the edges summed, about 200 bytes each; the flows of edges beyond it are
// left out of the sums and counted (metrics.edges_full). The sums are cumulative, so an edge
// is never forgotten: a host talking to more peers than this needs a collector that derives
// its edges from the flow records.
const maxEdges = 65536

var _ sdkmetric.Producer = (*edgeSums)(nil)

func newEdgeSums(c *counters) *edgeSums {
	return &edgeSums{c: c, start: time.Now(), index: map[edgeKey]int32{}}
}

func (e *edgeSums) add(flows []sdk.Flow) {
	if len(flows) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range flows {
		f := &flows[i]
		k := edgeKey{f.Client.Addr, f.Server.Addr, f.Server.Port, f.Transport}
		idx, ok := e.index[k]
		if !ok {
			if len(e.sums) >= maxEdges {
				e.c.edgesFull.Add(1)
				continue
			}
			idx = int32(len(e.sums))
			e.index[k] = idx
			e.sums = append(e.sums, edgeSum{key: k})
		}
		sum := &e.sums[idx]
		if f.Final {
			sum.flows++
		}
		sum.txBytes += f.ClientToServer.IPBytes
		sum.rxBytes += f.ServerToClient.IPBytes
		sum.txPackets += f.ClientToServer.Packets
		sum.rxPackets += f.ServerToClient.Packets
	}
}

// Produce is the sums as the SDK's instruments would have reported them: cumulative monotonic
// sums; a flows point only for an edge that had a conversation end. The attribute sets are
// built on every call rather than kept: kept, they would cost about a kilobyte an edge.
func (e *edgeSums) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.sums) == 0 {
		return nil, nil
	}
	now := time.Now()
	point := func(set attribute.Set, v uint64) metricdata.DataPoint[int64] {
		return metricdata.DataPoint[int64]{Attributes: set, StartTime: e.start, Time: now, Value: int64(v)}
	}
	var flows []metricdata.DataPoint[int64]
	bytes := make([]metricdata.DataPoint[int64], 0, 2*len(e.sums))
	packets := make([]metricdata.DataPoint[int64], 0, 2*len(e.sums))
	for i := range e.sums {
		sum := &e.sums[i]
		// NewSet sorts what it is given in place: each set gets an array of its own.
		edge := [5]attribute.KeyValue{
			attribute.String(s.AttrSourceAddress, addrString(sum.key.client)),
			attribute.String(s.AttrDestinationAddress, addrString(sum.key.server)),
			attribute.Int64(s.AttrDestinationPort, int64(sum.key.port)),
			attribute.String(s.AttrNetworkTransport, s.TransportName(sum.key.transport)),
		}
		tx, rx := edge, edge
		if sum.flows > 0 {
			flows = append(flows, point(attribute.NewSet(edge[:4]...), sum.flows))
		}
		tx[4] = attribute.String(s.AttrIODirection, "transmit")
		rx[4] = attribute.String(s.AttrIODirection, "receive")
		txSet, rxSet := attribute.NewSet(tx[:]...), attribute.NewSet(rx[:]...)
		bytes = append(bytes, point(txSet, sum.txBytes), point(rxSet, sum.rxBytes))
		packets = append(packets, point(txSet, sum.txPackets), point(rxSet, sum.rxPackets))
	}
	sum := func(points []metricdata.DataPoint[int64]) metricdata.Sum[int64] {
		return metricdata.Sum[int64]{DataPoints: points, Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
	}
	var ms []metricdata.Metrics
	if len(flows) > 0 {
		ms = append(ms, metricdata.Metrics{Name: s.MetricEdgeFlows, Unit: "{flow}",
			Description: "Conversations that ended, per edge", Data: sum(flows)})
	}
	ms = append(ms,
		metricdata.Metrics{Name: s.MetricEdgeBytes, Unit: "By", Description: "IP bytes per edge and direction", Data: sum(bytes)},
		metricdata.Metrics{Name: s.MetricEdgePackets, Unit: "{packet}", Description: "Packets per edge and direction", Data: sum(packets)})
	return []metricdata.ScopeMetrics{{Scope: instrumentation.Scope{Name: s.ScopeName}, Metrics: ms}}, nil
}
