package otlpsink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Logs go through the sink's own exporter (logexport.go); spans and metrics through the SDK's,
// whose retry (exponential backoff, honouring the collector's throttling hints) is used as it
// is: the sink only counts their attempts, through a gRPC interceptor or an HTTP round tripper,
// so that Health can say how many exports were retried. Both retry with the same backoff.
const (
	retryInitial = 500 * time.Millisecond
	retryMax     = 5 * time.Second
)

// attempts counts the requests one exporter sent.
type attempts struct{ n atomic.Uint64 }

func (a *attempts) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	a.n.Add(1)
	return invoker(ctx, method, req, reply, cc, opts...)
}

type countingTransport struct {
	a    *attempts
	next http.RoundTripper
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.a.n.Add(1)
	return t.next.RoundTrip(r)
}

// exporters are one configuration's three exporters and the SDK exporters' attempt counters.
type exporters struct {
	logs                   *logExporter
	spans                  sdktrace.SpanExporter
	metrics                sdkmetric.Exporter // nil when metrics are off
	spanTries, metricTries *attempts
}

func newExporters(ctx context.Context, o Options, log *slog.Logger) (*exporters, error) {
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}
	e := &exporters{spanTries: &attempts{}, metricTries: &attempts{}}
	if e.logs, err = newLogExporter(o, tlsCfg, log); err != nil {
		return nil, err
	}
	timeout := time.Duration(o.Timeout)
	if o.Protocol == "grpc" {
		err = e.grpc(ctx, o, tlsCfg, timeout)
	} else {
		err = e.http(ctx, o, tlsCfg, timeout)
	}
	if err != nil {
		_ = e.close(ctx)
		return nil, err
	}
	return e, nil
}

func (e *exporters) grpc(ctx context.Context, o Options, tlsCfg *tls.Config, timeout time.Duration) error {
	creds := grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))
	compressor := ""
	if o.Compression == "gzip" {
		compressor = "gzip"
	}
	spanOpts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(o.endpoint()), otlptracegrpc.WithTimeout(timeout),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: o.Retry, InitialInterval: retryInitial, MaxInterval: retryMax, MaxElapsedTime: timeout}),
		otlptracegrpc.WithDialOption(grpc.WithUnaryInterceptor(e.spanTries.unary))}
	metricOpts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(o.endpoint()), otlpmetricgrpc.WithTimeout(timeout),
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: o.Retry, InitialInterval: retryInitial, MaxInterval: retryMax, MaxElapsedTime: timeout}),
		otlpmetricgrpc.WithDialOption(grpc.WithUnaryInterceptor(e.metricTries.unary))}
	if o.Insecure {
		spanOpts = append(spanOpts, otlptracegrpc.WithInsecure())
		metricOpts = append(metricOpts, otlpmetricgrpc.WithInsecure())
	} else {
		spanOpts = append(spanOpts, otlptracegrpc.WithDialOption(creds))
		metricOpts = append(metricOpts, otlpmetricgrpc.WithDialOption(creds))
	}
	if len(o.Headers) > 0 {
		spanOpts = append(spanOpts, otlptracegrpc.WithHeaders(o.Headers))
		metricOpts = append(metricOpts, otlpmetricgrpc.WithHeaders(o.Headers))
	}
	if compressor != "" {
		spanOpts = append(spanOpts, otlptracegrpc.WithCompressor(compressor))
		metricOpts = append(metricOpts, otlpmetricgrpc.WithCompressor(compressor))
	}
	spans, err := otlptracegrpc.New(ctx, spanOpts...)
	if err != nil {
		return fmt.Errorf("creating the OTLP/gRPC trace exporter: %w", err)
	}
	e.spans = spans
	if o.MetricsInterval > 0 {
		metrics, err := otlpmetricgrpc.New(ctx, metricOpts...)
		if err != nil {
			return fmt.Errorf("creating the OTLP/gRPC metric exporter: %w", err)
		}
		e.metrics = metrics
	}
	return nil
}

func (e *exporters) http(ctx context.Context, o Options, tlsCfg *tls.Config, timeout time.Duration) error {
	client := func(a *attempts) *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsCfg
		return &http.Client{Transport: countingTransport{a: a, next: tr}, Timeout: timeout}
	}
	spanOpts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(o.endpoint()), otlptracehttp.WithHTTPClient(client(e.spanTries)),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: o.Retry, InitialInterval: retryInitial, MaxInterval: retryMax, MaxElapsedTime: timeout})}
	metricOpts := []otlpmetrichttp.Option{otlpmetrichttp.WithEndpoint(o.endpoint()), otlpmetrichttp.WithHTTPClient(client(e.metricTries)),
		otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: o.Retry, InitialInterval: retryInitial, MaxInterval: retryMax, MaxElapsedTime: timeout})}
	if o.Insecure {
		spanOpts = append(spanOpts, otlptracehttp.WithInsecure())
		metricOpts = append(metricOpts, otlpmetrichttp.WithInsecure())
	}
	if len(o.Headers) > 0 {
		spanOpts = append(spanOpts, otlptracehttp.WithHeaders(o.Headers))
		metricOpts = append(metricOpts, otlpmetrichttp.WithHeaders(o.Headers))
	}
	if o.Compression == "gzip" {
		spanOpts = append(spanOpts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		metricOpts = append(metricOpts, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))
	}
	spans, err := otlptracehttp.New(ctx, spanOpts...)
	if err != nil {
		return fmt.Errorf("creating the OTLP/HTTP trace exporter: %w", err)
	}
	e.spans = spans
	if o.MetricsInterval > 0 {
		metrics, err := otlpmetrichttp.New(ctx, metricOpts...)
		if err != nil {
			return fmt.Errorf("creating the OTLP/HTTP metric exporter: %w", err)
		}
		e.metrics = metrics
	}
	return nil
}

// close shuts down the log and span exporters (the metric exporter belongs to the meter
// provider, which shuts it down).
func (e *exporters) close(ctx context.Context) error {
	var first error
	if e.logs != nil {
		if err := e.logs.close(); err != nil {
			first = fmt.Errorf("closing the log exporter: %w", err)
		}
	}
	if e.spans != nil {
		if err := e.spans.Shutdown(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// countedMetrics counts the metric exports' failures and retries; the periodic reader calls it
// on its own goroutine. A failed metric export loses nothing: the sums are cumulative and the
// next export carries them.
type countedMetrics struct {
	sdkmetric.Exporter
	tries *attempts
	c     *counters
}

func (m countedMetrics) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	before := m.tries.n.Load()
	err := m.Exporter.Export(ctx, rm)
	m.c.retries(m.tries.n.Load() - before)
	if err != nil {
		m.c.exportFailed(fmt.Errorf("exporting metrics: %w", err))
	} else {
		m.c.exportOK()
	}
	return err
}
