package otlpsink

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/quanyu/quanyu/internal/version"
)

// The log records' exporter sends the OTLP requests the pipeline encodes (wire.go), as they
// are, over gRPC (through a codec that passes the bytes on) or as the HTTP body, as the OTLP
// specification says (https://opentelemetry.io/docs/specs/otlp/): a failure the
// collector calls transient is retried with exponential backoff within the options' Timeout,
// honouring its throttling hints; any other failure is final. A partial success comes back
// as a *partialSuccess error.

// maxResponseBytes bounds what is read of an OTLP/HTTP response (a status or partial success).
const maxResponseBytes = 64 << 10

var userAgent = "quanyu-sink-otlp/" + version.Version

// logTransport sends one request once.
type logTransport interface {
	send(ctx context.Context, req *logRequest) (*collogspb.ExportLogsServiceResponse, error)
	close() error
}

// retryableError is a failure that the OTLP specification says to retry; after is the wait
// the collector asked for (0: none).
type retryableError struct {
	err   error
	after time.Duration
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// partialSuccess is the collector accepting a request but rejecting some of its records.
type partialSuccess struct {
	rejected int64
	msg      string
}

func (e *partialSuccess) Error() string {
	return fmt.Sprintf("the collector rejected %d log records: %s", e.rejected, e.msg)
}

type logExporter struct {
	t     logTransport
	retry bool
}

func newLogExporter(o Options, tlsCfg *tls.Config, log *slog.Logger) (*logExporter, error) {
	var t logTransport
	var err error
	if o.Protocol == "grpc" {
		t, err = newGRPCLogs(o, tlsCfg)
	} else {
		t = newHTTPLogs(o, tlsCfg, log)
	}
	if err != nil {
		return nil, err
	}
	return &logExporter{t: t, retry: o.Retry}, nil
}

// export sends req until it succeeds, fails for good, or ctx ends, and says how many attempts
// it made. The transports may still hold the request's bytes after export returns (see
// logRequest.refs).
func (e *logExporter) export(ctx context.Context, req *logRequest) (attempts uint64, err error) {
	backoff := retryInitial
	for {
		attempts++
		resp, err := e.t.send(ctx, req)
		if err == nil {
			if p := resp.GetPartialSuccess(); p != nil && (p.GetRejectedLogRecords() != 0 || p.GetErrorMessage() != "") {
				return attempts, &partialSuccess{rejected: p.GetRejectedLogRecords(), msg: p.GetErrorMessage()}
			}
			return attempts, nil
		}
		if ctx.Err() != nil {
			return attempts, fmt.Errorf("%w (last attempt: %v)", context.Cause(ctx), err)
		}
		var r *retryableError
		if !e.retry || !errors.As(err, &r) {
			return attempts, err
		}
		// A random wait between half the backoff and all of it, so that agents that failed
		// together do not retry in step.
		wait := max(r.after, backoff/2+rand.N(backoff/2+1))
		backoff = min(2*backoff, retryMax)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return attempts, err
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return attempts, fmt.Errorf("%w (waiting to retry after: %v)", context.Cause(ctx), err)
		}
	}
}

func (e *logExporter) close() error { return e.t.close() }

// grpcLogs is OTLP/gRPC: the LogsService's Export on a connection of its own.
type grpcLogs struct {
	conn *grpc.ClientConn
	md   metadata.MD // the configured headers
}

// logsExportMethod is collogspb.LogsService_Export_FullMethodName, called directly so that the
// request can be the encoded bytes.
const logsExportMethod = collogspb.LogsService_Export_FullMethodName

// rawCodec sends a logRequest's bytes as they are and decodes the response with protobuf-go.
// Its name is the one the content type of protobuf-go's codec carries (application/grpc+proto):
// to the collector it is the same.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*logRequest)
	if !ok {
		return nil, fmt.Errorf("encoding an OTLP/gRPC request: want an encoded log request, got %T", v)
	}
	if mem.IsBelowBufferPoolingThreshold(cap(r.wire)) {
		// gRPC would not tell when it is done with these bytes; they are few.
		return mem.BufferSlice{mem.SliceBuffer(slices.Clone(r.wire))}, nil
	}
	// gRPC holds the bytes until they are written, which may be after Invoke returns; it
	// calls r.Put when it is done.
	r.hold()
	return mem.BufferSlice{mem.NewBuffer(&r.wire, r)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("decoding an OTLP/gRPC response: %T is not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if err := proto.Unmarshal(buf.ReadOnlyData(), m); err != nil {
		return fmt.Errorf("decoding an OTLP/gRPC response: %w", err)
	}
	return nil
}

func newGRPCLogs(o Options, tlsCfg *tls.Config) (*grpcLogs, error) {
	creds := insecure.NewCredentials()
	if !o.Insecure {
		creds = credentials.NewTLS(tlsCfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithUserAgent(userAgent)}
	if o.Compression == "gzip" {
		opts = append(opts, grpc.WithDefaultCallOptions(grpc.UseCompressor(grpcgzip.Name)))
	}
	conn, err := grpc.NewClient(o.endpoint(), opts...)
	if err != nil {
		return nil, fmt.Errorf("creating the OTLP/gRPC connection for logs to %s: %w", o.endpoint(), err)
	}
	g := &grpcLogs{conn: conn}
	if len(o.Headers) > 0 {
		g.md = metadata.New(o.Headers)
	}
	return g, nil
}

func (g *grpcLogs) send(ctx context.Context, req *logRequest) (*collogspb.ExportLogsServiceResponse, error) {
	if g.md != nil {
		ctx = metadata.NewOutgoingContext(ctx, g.md)
	}
	resp := &collogspb.ExportLogsServiceResponse{}
	err := g.conn.Invoke(ctx, logsExportMethod, req, resp, grpc.ForceCodecV2(rawCodec{}))
	if err == nil {
		return resp, nil
	}
	st := status.Convert(err)
	if ok, after := retryableStatus(st); ok {
		return nil, &retryableError{err: err, after: after}
	}
	return nil, err
}

func (g *grpcLogs) close() error { return g.conn.Close() }

// retryableStatus follows the OTLP specification's list of retryable gRPC codes;
// ResourceExhausted is retried only when the collector says when (RetryInfo).
func retryableStatus(st *status.Status) (bool, time.Duration) {
	var info *errdetails.RetryInfo
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			info = ri
		}
	}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable, codes.DataLoss:
		return true, info.GetRetryDelay().AsDuration()
	case codes.ResourceExhausted:
		return info != nil, info.GetRetryDelay().AsDuration()
	}
	return false, 0
}

// httpLogs is OTLP/HTTP: protobuf bodies POSTed to /v1/logs.
type httpLogs struct {
	url     string
	client  *http.Client
	headers http.Header
	gzip    bool
	log     *slog.Logger
	zw      sync.Pool // *gzip.Writer, reused between requests (one per export in flight)
}

func newHTTPLogs(o Options, tlsCfg *tls.Config, log *slog.Logger) *httpLogs {
	scheme := "https"
	if o.Insecure {
		scheme = "http"
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	h := &httpLogs{
		url:     scheme + "://" + o.endpoint() + "/v1/logs",
		client:  &http.Client{Transport: tr, Timeout: time.Duration(o.Timeout)},
		headers: http.Header{},
		gzip:    o.Compression == "gzip",
		log:     log,
	}
	for k, v := range o.Headers {
		h.headers.Set(k, v)
	}
	h.headers.Set("Content-Type", "application/x-protobuf")
	h.headers.Set("User-Agent", userAgent)
	if h.gzip {
		h.headers.Set("Content-Encoding", "gzip")
	}
	return h
}

// body is the request's HTTP body: its bytes, or their gzip compression, made on the first
// attempt and kept for the retries.
func (h *httpLogs) body(req *logRequest) ([]byte, error) {
	if !h.gzip {
		return req.wire, nil
	}
	if req.zipOK {
		return req.zipped, nil
	}
	zw, _ := h.zw.Get().(*gzip.Writer)
	if zw == nil {
		zw = gzip.NewWriter(io.Discard)
	}
	defer h.zw.Put(zw)
	// Flow records compress to about a tenth; starting there saves most regrowth.
	buf := bytes.NewBuffer(req.zipped[:0])
	buf.Grow(len(req.wire)/8 + 512)
	zw.Reset(buf)
	if _, err := zw.Write(req.wire); err != nil {
		return nil, fmt.Errorf("compressing the OTLP logs request: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing the OTLP logs request: %w", err)
	}
	req.zipped, req.zipOK = buf.Bytes(), true
	return req.zipped, nil
}

// requestBody is an HTTP body over a request's bytes. net/http may still read it after Do
// returns (when the collector answers early) but always closes it, and says so: Close tells
// the request that this use of its bytes is over.
type requestBody struct {
	bytes.Reader
	req    *logRequest
	closed atomic.Bool
}

func newRequestBody(req *logRequest, b []byte) *requestBody {
	req.hold()
	body := &requestBody{req: req}
	body.Reset(b)
	return body
}

func (b *requestBody) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.req.release()
	}
	return nil
}

func (h *httpLogs) send(ctx context.Context, req *logRequest) (*collogspb.ExportLogsServiceResponse, error) {
	body, err := h.body(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, nil)
	if err != nil {
		return nil, fmt.Errorf("making the OTLP/HTTP request to %s: %w", h.url, err)
	}
	// As NewRequest sets them for a bytes.Reader; GetBody lets the transport resend on a
	// keep-alive connection that turned out closed, within Do.
	hreq.Body, hreq.ContentLength = newRequestBody(req, body), int64(len(body))
	hreq.GetBody = func() (io.ReadCloser, error) { return newRequestBody(req, body), nil }
	hreq.Header = h.headers.Clone()
	resp, err := h.client.Do(hreq)
	if err != nil {
		// The collector could not be reached: the specification says to retry with backoff.
		return nil, &retryableError{err: fmt.Errorf("posting logs: %w", err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	// What is left unread is drained, so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, &retryableError{err: fmt.Errorf("reading the response to %s: %w", h.url, err)}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var out collogspb.ExportLogsServiceResponse
		if err := proto.Unmarshal(raw, &out); err != nil {
			// The collector took the records; only what it said about them is lost.
			h.log.Warn("the collector's answer to an export does not decode", "url", h.url, "err", err)
		}
		return &out, nil
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return nil, &retryableError{err: httpError(h.url, resp, raw), after: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return nil, httpError(h.url, resp, raw)
}

func (h *httpLogs) close() error {
	h.client.CloseIdleConnections()
	return nil
}

// httpError describes a refusal with the message of the google.rpc.Status the specification
// says the body carries, else the start of the body.
func httpError(url string, resp *http.Response, body []byte) error {
	msg := ""
	var st statuspb.Status
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-protobuf") && proto.Unmarshal(body, &st) == nil {
		msg = st.GetMessage()
	} else {
		msg = strings.TrimSpace(string(body[:min(len(body), 256)]))
	}
	return fmt.Errorf("posting logs to %s: %s: %s", url, resp.Status, msg)
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
