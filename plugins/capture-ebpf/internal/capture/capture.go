// Package capture is the eBPF capture plugin. The kernel program (bpf/capture.c) filters and
// aggregates every packet in the kernel; this side loads it, attaches it to the watched
// interfaces (TCX, else TC clsact), writes the subscription set into its maps (filter package),
// reads the flow map in batches to report windows and ends and delete what ended (flows.go), and
// turns the ring buffer's events into flow events and payload samples (events.go).
//
// When the kernel or the process's capabilities do not allow it to load, Configure says so with
// sdk.ErrUnavailable, and the agent falls back to the AF_PACKET capture.
package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/internal/version"
	"github.com/quanyu/quanyu/plugins/internal/health"
	"github.com/quanyu/quanyu/sdk"
)

// Options are the plugin's own settings (plugins.capture-ebpf in the agent's configuration).
type Options struct {
	// Attach is "auto" (TCX where the kernel has it, else TC clsact), "tcx" or "tc".
	Attach string `json:"attach"`
	// RingBytes sizes the event ring buffer (a power of two, at least 64 KiB).
	RingBytes int `json:"ring_bytes"`
	// ScanIntervalMS is how often the flow map is read.
	ScanIntervalMS int `json:"scan_interval_ms"`
	// RescanIntervalMS is how often the interface list is re-read.
	RescanIntervalMS int `json:"rescan_interval_ms"`
	// LingerMS is how long a TCP flow closed by FINs both ways or a RST stays, to collect the
	// last packets, before its final record.
	LingerMS int `json:"linger_ms"`
}

// DefaultOptions read the flow map every 5 s: that is the resolution of the flow timeouts (idle
// and active timeouts are a minute by default), and reading the map costs user-space CPU in
// proportion to the flows it holds (about 1 ms per thousand flows here).
func DefaultOptions() Options {
	return Options{Attach: "auto", RingBytes: 4 << 20, ScanIntervalMS: 5000, RescanIntervalMS: 2000, LingerMS: 2000}
}

func parseOptions(raw json.RawMessage) (Options, error) {
	o := DefaultOptions()
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			return o, fieldError("plugins.capture-ebpf", err.Error())
		}
	}
	switch {
	case o.Attach != "auto" && o.Attach != "tcx" && o.Attach != "tc":
		return o, fieldError("plugins.capture-ebpf.attach", fmt.Sprintf("%q: want auto, tcx or tc", o.Attach))
	case o.RingBytes < 64<<10 || o.RingBytes > 1<<30 || o.RingBytes&(o.RingBytes-1) != 0:
		return o, fieldError("plugins.capture-ebpf.ring_bytes", fmt.Sprintf("%d: want a power of two from 65536 to 1 GiB", o.RingBytes))
	case o.ScanIntervalMS < 100 || o.ScanIntervalMS > 60000:
		return o, fieldError("plugins.capture-ebpf.scan_interval_ms", fmt.Sprintf("%d: want 100 to 60000", o.ScanIntervalMS))
	case o.RescanIntervalMS < 100:
		return o, fieldError("plugins.capture-ebpf.rescan_interval_ms", fmt.Sprintf("%d: want at least 100", o.RescanIntervalMS))
	case o.LingerMS < 0 || o.LingerMS > 60000:
		return o, fieldError("plugins.capture-ebpf.linger_ms", fmt.Sprintf("%d: want 0 to 60000", o.LingerMS))
	}
	return o, nil
}

func fieldError(path, reason string) error {
	return &sdk.ValidationError{Fields: []sdk.FieldError{{Path: path, Reason: reason}}}
}

// config is one validated configuration, swapped whole.
type config struct {
	sdk  sdk.CaptureConfig
	opts Options
	gen  uint64
}

// Capture is the plugin.
type Capture struct {
	log *slog.Logger

	mu       sync.Mutex
	cfg      *config
	kernel   *kernel // loaded at the first Configure: loading is the probe
	changed  chan struct{}
	running  bool
	shutdown chan struct{}
	stopOnce sync.Once

	snapshot atomic.Pointer[map[string]uint64]
}

var _ sdk.Capture = (*Capture)(nil)

// New makes an unconfigured capture.
func New() *Capture {
	return &Capture{
		log:      slog.Default().With("component", "capture-ebpf"),
		changed:  make(chan struct{}),
		shutdown: make(chan struct{}),
	}
}

func (c *Capture) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Kind: sdk.KindCapture, Name: "ebpf", Version: version.Version,
		Capabilities: []string{"live", "in-kernel-filter", "in-kernel-aggregation", "frames", "payload-samples"}}, nil
}

// Configure validates the configuration and, the first time, loads the kernel program: a host
// that cannot run it gets an error wrapping sdk.ErrUnavailable with the reason. Later calls
// apply new subscriptions to the running capture.
func (c *Capture) Configure(_ context.Context, in sdk.CaptureConfig) error {
	if err := sdk.ValidateSet(in.Subscriptions); err != nil {
		return err
	}
	if len(in.Files) > 0 {
		return fmt.Errorf("%w: the eBPF capture watches live interfaces; files are replayed by capture-mmap", sdk.ErrRejected)
	}
	opts, err := parseOptions(in.Options)
	if err != nil {
		return err
	}
	if in.BatchSize <= 0 {
		in.BatchSize = 512
	}
	if in.FlushInterval <= 0 {
		in.FlushInterval = time.Second
	}
	if in.MaxFlows <= 0 {
		in.MaxFlows = 65536
	}
	if in.IdleTimeout <= 0 {
		in.IdleTimeout = time.Minute
	}
	if in.ActiveTimeout <= 0 {
		in.ActiveTimeout = time.Minute
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kernel == nil {
		k, err := loadKernel(in.MaxFlows, opts.RingBytes)
		if err != nil {
			return err
		}
		c.kernel = k
		c.log.Info("kernel program loaded", "max_flows", in.MaxFlows, "ring_bytes", opts.RingBytes)
	} else if c.cfg != nil && (c.cfg.sdk.MaxFlows != in.MaxFlows || c.cfg.opts.RingBytes != opts.RingBytes) {
		return fmt.Errorf("%w: max_flows and ring_bytes size the kernel's maps and apply at the next start", sdk.ErrRejected)
	}
	next := &config{sdk: in, opts: opts}
	if c.cfg != nil {
		next.gen = c.cfg.gen + 1
	}
	c.cfg = next
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

func (c *Capture) current() (*config, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg, c.changed
}

func (c *Capture) Health(context.Context) (sdk.Health, error) {
	c.mu.Lock()
	configured, running := c.cfg != nil, c.running
	c.mu.Unlock()
	h, judge := health.Capture(c.snapshot.Load(), configured, running)
	if judge && (h.Counters["drop.map_full"] > 0 || h.Counters["drop.ring_full"] > 0 || h.Counters["drop.emit_queue_full"] > 0) {
		h.Status, h.Message = sdk.HealthDegraded, "flows, events or records were dropped (see drop.* counters)"
	}
	return h, nil
}

// ErrNotConfigured is returned by Run before Configure.
var ErrNotConfigured = errors.New("capture is not configured")

// Run captures until Shutdown or the context ends.
func (c *Capture) Run(ctx context.Context, out sdk.Emitter) error {
	c.mu.Lock()
	if c.cfg == nil || c.kernel == nil {
		c.mu.Unlock()
		return ErrNotConfigured
	}
	if c.running {
		c.mu.Unlock()
		return errors.New("capture is already running")
	}
	c.running = true
	k := c.kernel
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()
	return c.runLive(ctx, k, out)
}

// Shutdown ends Run after reporting every flow as final (end reason "shutdown") and detaching
// from every interface. Safe to call twice and without Run.
func (c *Capture) Shutdown(context.Context) error {
	c.stopOnce.Do(func() { close(c.shutdown) })
	c.mu.Lock()
	running, k := c.running, c.kernel
	c.mu.Unlock()
	if !running && k != nil {
		// Never ran: nothing holds the kernel objects but this plugin.
		k.close()
		c.mu.Lock()
		c.kernel = nil
		c.mu.Unlock()
	}
	return nil
}
