package otlpsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	s "github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/sdk"
)

// A pipeline is one configuration at work: Write puts batches on a bounded queue, and one worker
// turns them into OTLP log records (built directly, see encode.go) and SDK spans (collected by a
// processor instead of the SDK's batch processor, whose queue drops without telling), and
// exports them in requests of at most BatchSize records. The worker is the only exporter of logs
// and spans, so every record is accounted for: sent, or dropped with a reason. Metrics go
// through the SDK's periodic reader.
type pipeline struct {
	opts Options
	c    *counters
	log  *slog.Logger

	queue  chan *sdk.Batch
	queued atomic.Int64 // records on the queue
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	exp       *exporters
	logBuf    *logBuffer
	logReq    *collogspb.ExportLogsServiceRequest // reused: only its records change
	spanAttrs attrBuilder
	traces    *sdktrace.TracerProvider
	tracer    trace.Tracer
	spans     *spanCollector
	meters    *sdkmetric.MeterProvider
	edges     *edgeMetrics // nil when metrics are off
}

func newPipeline(o Options, host string, c *counters, log *slog.Logger) (*pipeline, error) {
	ctx, cancel := context.WithCancel(context.Background())
	exp, err := newExporters(ctx, o, log)
	if err != nil {
		cancel()
		return nil, err
	}
	agent := o.AgentID
	if agent == "" {
		agent = host
	}
	resAttrs := []attribute.KeyValue{
		attribute.String(s.ResourceServiceName, s.ServiceAgent),
		attribute.String(s.ResourceHostName, host),
		attribute.String(s.AttrAgentID, agent)}
	res := resource.NewSchemaless(resAttrs...)
	p := &pipeline{
		opts: o, c: c, log: log,
		queue: make(chan *sdk.Batch, min(o.QueueSize, 4096)),
		ctx:   ctx, cancel: cancel, done: make(chan struct{}),
		exp: exp, logBuf: &logBuffer{host: host}, logReq: logRequest(resAttrs), spans: &spanCollector{},
	}
	p.traces = sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSpanProcessor(p.spans),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithRawSpanLimits(sdktrace.SpanLimits{AttributeCountLimit: -1, AttributeValueLengthLimit: -1,
			EventCountLimit: -1, LinkCountLimit: -1, AttributePerEventCountLimit: -1, AttributePerLinkCountLimit: -1}))
	p.tracer = p.traces.Tracer(s.ScopeName)
	if exp.metrics != nil {
		reader := sdkmetric.NewPeriodicReader(countedMetrics{Exporter: exp.metrics, tries: exp.metricTries, c: c},
			sdkmetric.WithInterval(time.Duration(o.MetricsInterval)), sdkmetric.WithTimeout(time.Duration(o.Timeout)))
		p.meters = sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
		if p.edges, err = newEdgeMetrics(p.meters.Meter(s.ScopeName)); err != nil {
			_ = p.shutdownProviders(context.Background())
			cancel()
			return nil, err
		}
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
		if len(p.queue) == 0 || p.logBuf.len() >= p.opts.BatchSize {
			p.flushLogs()
		}
		if len(p.queue) == 0 || len(p.spans.spans) >= p.opts.BatchSize {
			p.flushSpans()
		}
	}
	p.flushLogs()
	p.flushSpans()
}

// logRequest is the request every log export reuses: one resource (the agent), one scope.
func logRequest(resAttrs []attribute.KeyValue) *collogspb.ExportLogsServiceRequest {
	res := &resourcepb.Resource{}
	for _, kv := range resAttrs {
		res.Attributes = append(res.Attributes, &commonpb.KeyValue{Key: string(kv.Key),
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: kv.Value.AsString()}}})
	}
	return &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource:  res,
		ScopeLogs: []*logspb.ScopeLogs{{Scope: &commonpb.InstrumentationScope{Name: s.ScopeName}}},
	}}}
}

// emit turns a batch into log records and spans (held until they are exported) and metric
// sums.
func (p *pipeline) emit(b *sdk.Batch) {
	ctx := context.Background()
	// One observation time for the batch: its records reached the sink together.
	p.logBuf.observed = timeUnixNano(time.Now())
	for i := range b.Flows {
		f := &b.Flows[i]
		p.logBuf.addFlow(f)
		if p.edges != nil {
			p.edges.add(ctx, f)
		}
	}
	for i := range b.Events {
		p.logBuf.addEvent(&b.Events[i])
	}
	for i := range b.L7 {
		r := &b.L7[i]
		if r.Protocol == "HTTP" {
			p.httpSpan(r)
			continue
		}
		p.logBuf.addL7(r)
	}
	if b.Inventory != nil {
		p.logBuf.addInventory(b.Inventory, p.log)
	}
	p.c.skipped.Add(uint64(len(b.Stats) + len(b.Samples)))
}

// httpSpan makes the server span of an HTTP transaction: from the request's first byte to the
// response's, named by the method alone (the path would make names high-cardinality).
func (p *pipeline) httpSpan(r *sdk.L7) {
	name := r.Method
	if name == "" {
		name = "HTTP"
	}
	_, span := p.tracer.Start(context.Background(), name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(r.Time), trace.WithAttributes(p.spanAttrs.spanAttributes(r)...))
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

func (p *pipeline) flushLogs() {
	scope := p.logReq.ResourceLogs[0].ScopeLogs[0]
	for p.logBuf.len() > 0 {
		n := min(p.logBuf.len(), p.opts.BatchSize)
		scope.LogRecords = p.logBuf.recs[:n]
		ctx, cancel := context.WithTimeout(p.ctx, time.Duration(p.opts.Timeout))
		attempts, err := p.exp.logs.export(ctx, p.logReq)
		cancel()
		scope.LogRecords = nil
		p.c.retries(attempts)
		p.account(err, p.logBuf.kinds[:n], "logs")
		p.logBuf.consume(n)
	}
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

// edgeMetrics are the per-edge cumulative sums. Their attribute sets are cached per edge: a flow
// record would otherwise build and sort three sets.
type edgeMetrics struct {
	flows, bytes, packets metric.Int64Counter
	sets                  map[edgeKey]*edgeSets
}

type edgeKey struct {
	client, server netip.Addr
	port           uint16
	transport      sdk.Transport
}

type edgeSets struct{ edge, tx, rx metric.MeasurementOption }

// maxCachedEdges bounds the cache; past it the cache starts over (the sums are kept by the
// SDK, not here).
const maxCachedEdges = 16384

func newEdgeMetrics(m metric.Meter) (*edgeMetrics, error) {
	e := &edgeMetrics{sets: map[edgeKey]*edgeSets{}}
	var err error
	if e.flows, err = m.Int64Counter(s.MetricEdgeFlows, metric.WithUnit("{flow}"),
		metric.WithDescription("Conversations that ended, per edge")); err != nil {
		return nil, fmt.Errorf("creating %s: %w", s.MetricEdgeFlows, err)
	}
	if e.bytes, err = m.Int64Counter(s.MetricEdgeBytes, metric.WithUnit("By"),
		metric.WithDescription("IP bytes per edge and direction")); err != nil {
		return nil, fmt.Errorf("creating %s: %w", s.MetricEdgeBytes, err)
	}
	if e.packets, err = m.Int64Counter(s.MetricEdgePackets, metric.WithUnit("{packet}"),
		metric.WithDescription("Packets per edge and direction")); err != nil {
		return nil, fmt.Errorf("creating %s: %w", s.MetricEdgePackets, err)
	}
	return e, nil
}

func (e *edgeMetrics) add(ctx context.Context, f *sdk.Flow) {
	k := edgeKey{f.Client.Addr, f.Server.Addr, f.Server.Port, f.Transport}
	sets, ok := e.sets[k]
	if !ok {
		if len(e.sets) >= maxCachedEdges {
			clear(e.sets)
		}
		base := []attribute.KeyValue{
			attribute.String(s.AttrSourceAddress, addrString(f.Client.Addr)),
			attribute.String(s.AttrDestinationAddress, addrString(f.Server.Addr)),
			attribute.Int64(s.AttrDestinationPort, int64(f.Server.Port)),
			attribute.String(s.AttrNetworkTransport, s.TransportName(f.Transport)),
		}
		dir := func(d string) metric.MeasurementOption {
			return metric.WithAttributeSet(attribute.NewSet(append(base[:4:4], attribute.String(s.AttrIODirection, d))...))
		}
		sets = &edgeSets{edge: metric.WithAttributeSet(attribute.NewSet(base...)), tx: dir("transmit"), rx: dir("receive")}
		e.sets[k] = sets
	}
	if f.Final {
		e.flows.Add(ctx, 1, sets.edge)
	}
	e.bytes.Add(ctx, int64(f.ClientToServer.IPBytes), sets.tx)
	e.bytes.Add(ctx, int64(f.ServerToClient.IPBytes), sets.rx)
	e.packets.Add(ctx, int64(f.ClientToServer.Packets), sets.tx)
	e.packets.Add(ctx, int64(f.ServerToClient.Packets), sets.rx)
}
