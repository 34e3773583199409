// Package capture is the AF_PACKET capture plugin: a TPACKET_V3 ring per watched interface, a
// classic BPF filter compiled from the subscriptions on each socket (so unwanted packets never
// leave the kernel, and kept packets are cut to the snap length), one flow table fed by every
// interface, and batches of flow records to the agent. The same table reads pcap and pcapng files
// for replay.
//
// Goroutines, live: one reader per interface (read a frame from the ring, account it in the
// table under the table's lock), one manager (ticks the table, re-reads the interface list,
// applies new subscriptions, samples counters), and one sender (hands batches to the agent).
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
	"github.com/quanyu/quanyu/plugins/capture-mmap/internal/flowtable"
	"github.com/quanyu/quanyu/plugins/internal/health"
	"github.com/quanyu/quanyu/sdk"
)

// Options are the plugin's own settings (plugins.capture-mmap in the agent's configuration).
type Options struct {
	// BlockSize is the size of one ring block in bytes (a multiple of the page size).
	BlockSize int `json:"block_size"`
	// NumBlocks is the number of blocks in each interface's ring.
	NumBlocks int `json:"num_blocks"`
	// BlockTimeoutMS is how long the kernel fills a block before handing it over anyway.
	BlockTimeoutMS int `json:"block_timeout_ms"`
	// Promiscuous also captures frames not addressed to this host.
	Promiscuous bool `json:"promiscuous"`
	// RescanIntervalMS is how often the interface list is re-read for new or removed interfaces.
	RescanIntervalMS int `json:"rescan_interval_ms"`
}

// DefaultOptions: 16 blocks of 256 KiB per interface, about 12,000 packets of ring at the default
// snap length; blocks handed over at least every 10 ms so records are timely on a quiet link.
func DefaultOptions() Options {
	return Options{BlockSize: 256 << 10, NumBlocks: 16, BlockTimeoutMS: 10, RescanIntervalMS: 2000}
}

func parseOptions(raw json.RawMessage) (Options, error) {
	o := DefaultOptions()
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			return o, fieldError("plugins.capture-mmap", err.Error())
		}
	}
	switch {
	case o.BlockSize < 4096 || o.BlockSize%4096 != 0 || o.BlockSize > 64<<20:
		return o, fieldError("plugins.capture-mmap.block_size", fmt.Sprintf("%d: want a multiple of 4096 up to 64 MiB", o.BlockSize))
	case o.NumBlocks < 2 || o.NumBlocks > 4096:
		return o, fieldError("plugins.capture-mmap.num_blocks", fmt.Sprintf("%d: want 2 to 4096", o.NumBlocks))
	case o.BlockTimeoutMS < 1 || o.BlockTimeoutMS > 1000:
		return o, fieldError("plugins.capture-mmap.block_timeout_ms", fmt.Sprintf("%d: want 1 to 1000", o.BlockTimeoutMS))
	case o.RescanIntervalMS < 100:
		return o, fieldError("plugins.capture-mmap.rescan_interval_ms", fmt.Sprintf("%d: want at least 100", o.RescanIntervalMS))
	}
	return o, nil
}

func fieldError(path, reason string) error {
	return &sdk.ValidationError{Fields: []sdk.FieldError{{Path: path, Reason: reason}}}
}

// config is one validated configuration, swapped whole.
type config struct {
	sdk     sdk.CaptureConfig
	opts    Options
	matcher *sdk.Matcher
	table   flowtable.Config
	gen     uint64
}

// Capture is the plugin.
type Capture struct {
	log *slog.Logger

	mu       sync.Mutex
	cfg      *config
	changed  chan struct{} // closed when cfg changes while running
	running  bool
	shutdown chan struct{}
	stopOnce sync.Once

	// counters published by the running capture for Health
	snapshot atomic.Pointer[map[string]uint64]
}

var _ sdk.Capture = (*Capture)(nil)

// New makes an unconfigured capture.
func New() *Capture {
	return &Capture{
		log:      slog.Default().With("component", "capture-mmap"),
		changed:  make(chan struct{}),
		shutdown: make(chan struct{}),
	}
}

func (c *Capture) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Kind: sdk.KindCapture, Name: "mmap", Version: version.Version,
		Capabilities: []string{"live", "files", "cbpf-filter"}}, nil
}

// Configure validates and applies a configuration. While capturing live, a new subscription set
// is applied to the running sockets and flow table without stopping them; the files of a replay
// cannot change once it runs.
func (c *Capture) Configure(_ context.Context, in sdk.CaptureConfig) error {
	if err := sdk.ValidateSet(in.Subscriptions); err != nil {
		return err
	}
	opts, err := parseOptions(in.Options)
	if err != nil {
		return err
	}
	tc := flowtable.DefaultConfig()
	if in.MaxFlows > 0 {
		tc.MaxFlows = in.MaxFlows
	}
	if in.IdleTimeout > 0 {
		tc.IdleTimeout = in.IdleTimeout
	}
	if in.ActiveTimeout > 0 {
		tc.ActiveTimeout = in.ActiveTimeout
	}
	if err := tc.Validate(); err != nil {
		return fieldError("capture", err.Error())
	}
	if in.BatchSize <= 0 {
		in.BatchSize = 512
	}
	if in.FlushInterval <= 0 {
		in.FlushInterval = time.Second
	}
	if in.SnapLen <= 0 {
		in.SnapLen = 256
	}
	next := &config{sdk: in, opts: opts, matcher: sdk.NewMatcher(in.Subscriptions), table: tc}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running && c.cfg != nil {
		if len(c.cfg.sdk.Files) > 0 || len(in.Files) > 0 {
			return fmt.Errorf("%w: a replay cannot be reconfigured while it runs", sdk.ErrRejected)
		}
		if c.cfg.table != tc {
			return fmt.Errorf("%w: flow table settings (max_flows, timeouts) apply at the next start; only subscriptions and options change live", sdk.ErrRejected)
		}
	}
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
	switch {
	case !judge:
	case h.Counters["drop.ring"] > 0 || h.Counters["drop.emit_queue_full"] > 0:
		h.Status, h.Message = sdk.HealthDegraded, "packets or records were dropped (see drop.* counters)"
	case h.Counters["filter.inexact"] > 0:
		h.Status, h.Message = sdk.HealthDegraded, "a subscription set is too large for an exact socket filter; user space filters the rest"
	}
	return h, nil
}

// ErrNotConfigured is returned by Run before Configure.
var ErrNotConfigured = errors.New("capture is not configured")

// Run captures until Shutdown, the context ends, or (replay) the files end.
func (c *Capture) Run(ctx context.Context, out sdk.Emitter) error {
	c.mu.Lock()
	cfg := c.cfg
	if cfg == nil {
		c.mu.Unlock()
		return ErrNotConfigured
	}
	if c.running {
		c.mu.Unlock()
		return errors.New("capture is already running")
	}
	c.running = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()
	if len(cfg.sdk.Files) > 0 {
		return c.runFiles(ctx, cfg, out)
	}
	return c.runLive(ctx, out)
}

// Shutdown ends Run after flushing every flow as final (end reason "shutdown"). Safe to call
// twice and without Run.
func (c *Capture) Shutdown(context.Context) error {
	c.stopOnce.Do(func() { close(c.shutdown) })
	return nil
}
