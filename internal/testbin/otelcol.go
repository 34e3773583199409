package testbin

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The stock collector is a separate Go module (test/otelcol) so that its dependency tree stays out
// of the root module; it is built here on demand, once per test process, because it takes a
// minute or two from a cold build cache and most test binaries never need it.
var (
	otelOnce sync.Once
	otelDir  string
	otelPath string
	otelErr  error
)

// OtelCol builds the stock OpenTelemetry Collector in test/otelcol (OTLP receiver, OTLP gRPC and
// OTLP/HTTP exporters, nothing else) once per test process and returns the binary's path. The
// first call can take a couple of minutes on a cold build cache; Cleanup removes the binary.
func OtelCol(t testing.TB) string {
	t.Helper()
	otelOnce.Do(func() {
		var root string
		if root, otelErr = Root(); otelErr != nil {
			return
		}
		if otelDir, otelErr = os.MkdirTemp("", "quanyu-otelcol-"); otelErr != nil {
			return
		}
		otelPath = filepath.Join(otelDir, "otelcol")
		cmd := exec.Command("go", "build", "-C", filepath.Join(root, "test", "otelcol"), "-o", otelPath, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			otelErr = fmt.Errorf("go build test/otelcol: %v\n%s", err, out)
		}
	})
	if otelErr != nil {
		t.Fatalf("building the OpenTelemetry Collector: %v", otelErr)
	}
	return otelPath
}

// FreePort returns a TCP port on 127.0.0.1 that was free when it was asked for. Another process
// can take it before the caller binds it; helpers that start servers on it notice and say so.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreeAddr is FreePort as "127.0.0.1:PORT".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// OtelColConfig says where a test collector listens and where it forwards.
type OtelColConfig struct {
	// GRPCPort and HTTPPort are the OTLP receiver's ports on 127.0.0.1; 0 picks a free one.
	GRPCPort, HTTPPort int
	// ExportTo is the OTLP/gRPC endpoint (host:port, no TLS) that logs, metrics and traces are
	// forwarded to. Required.
	ExportTo string
	// Compression of the exported requests: "" keeps the collector's own default (gzip), as a
	// stock deployment would send; "none" sends them uncompressed. A gRPC server that has not
	// registered the gzip codec (google.golang.org/grpc/encoding/gzip) refuses gzip requests.
	Compression string
}

// YAML is the collector configuration for c: one pipeline per signal from the OTLP receiver to
// the OTLP/gRPC exporter, with a queue and retries tuned so a test sees its data (or the error)
// within seconds rather than the minutes a production collector waits.
func (c OtelColConfig) YAML() string {
	compression := ""
	if c.Compression != "" {
		compression = fmt.Sprintf("\n    compression: %s", c.Compression)
	}
	return fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
exporters:
  otlp_grpc:
    endpoint: %s
    tls:
      insecure: true%s
    timeout: 5s
    # One consumer keeps requests in the order they arrived; blocking on a full queue pushes back
    # on the sender instead of dropping, so a test never loses data silently.
    sending_queue:
      enabled: true
      num_consumers: 1
      queue_size: 1000
      block_on_overflow: true
    retry_on_failure:
      enabled: true
      initial_interval: 100ms
      max_interval: 1s
      max_elapsed_time: 30s
service:
  telemetry:
    logs:
      level: info
    # The default exposes the collector's own metrics on localhost:8888, which parallel tests
    # would fight over.
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [otlp_grpc]
    metrics:
      receivers: [otlp]
      exporters: [otlp_grpc]
    traces:
      receivers: [otlp]
      exporters: [otlp_grpc]
`, c.GRPCPort, c.HTTPPort, c.ExportTo, compression)
}

// OtelColProc is a running test collector.
type OtelColProc struct {
	// GRPC and HTTP are the receiver's addresses (127.0.0.1:PORT). OTLP/HTTP clients post to
	// http://HTTP/v1/logs, /v1/metrics and /v1/traces.
	GRPC, HTTP string
	// Config is the path of the configuration file it runs with.
	Config string

	cmd  *exec.Cmd
	logs *syncBuffer
}

// Log returns what the collector has written to stderr so far.
func (p *OtelColProc) Log() string { return p.logs.String() }

// StartOtelCol builds the stock collector (OtelCol), writes c's configuration into a temporary
// directory and runs the collector as a child of the test. It returns once the collector reports
// that it is ready and its gRPC and HTTP receivers accept connections, and fails the test, with
// the collector's log, if that does not happen within 30 seconds. The collector is stopped when
// the test ends; its log is added to the test's output if the test failed.
func StartOtelCol(t testing.TB, c OtelColConfig) *OtelColProc {
	t.Helper()
	if c.ExportTo == "" {
		t.Fatal("starting the OpenTelemetry Collector: OtelColConfig.ExportTo is empty")
	}
	if c.GRPCPort == 0 {
		c.GRPCPort = FreePort(t)
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = FreePort(t)
	}
	bin := OtelCol(t)
	p := &OtelColProc{
		GRPC:   net.JoinHostPort("127.0.0.1", strconv.Itoa(c.GRPCPort)),
		HTTP:   net.JoinHostPort("127.0.0.1", strconv.Itoa(c.HTTPPort)),
		Config: filepath.Join(t.TempDir(), "otelcol.yaml"),
		logs:   &syncBuffer{},
	}
	if err := os.WriteFile(p.Config, []byte(c.YAML()), 0o600); err != nil {
		t.Fatalf("writing the collector's configuration: %v", err)
	}
	p.cmd = exec.Command(bin, "--config", p.Config)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	// No Pdeathsig: it fires when the *thread* that started the child exits, and tests that enter
	// network namespaces end their locked threads (testnet.NS.Do), which killed the collector in
	// the middle of a test. t.Cleanup stops it; its ports are chosen at random, so one left by a
	// test binary that died does not stand in a later run's way.
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting the OpenTelemetry Collector: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// SIGTERM lets the exporter drain its queue; a collector that hangs is killed.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("OpenTelemetry Collector log (%s):\n%s", p.Config, p.Log())
		}
	})

	// The log line says every pipeline started; the dials rule out a port that another process
	// took between FreePort and the collector binding it (the collector would exit, but only
	// after a moment).
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("the OpenTelemetry Collector exited while starting (%s):\n%s", p.cmd.ProcessState, p.Log())
		default:
		}
		if strings.Contains(p.Log(), "Everything is ready") && accepts(p.GRPC) && accepts(p.HTTP) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the OpenTelemetry Collector was not ready on %s and %s within 30s:\n%s", p.GRPC, p.HTTP, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// syncBuffer is a bytes.Buffer that the process's output copier and the test can use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
