// Package core is the agent: it reads its configuration, starts the capture, decoder and sink
// plugins, moves batches between them, adds what only the host knows (inventory), reports its own
// counters, and stops everything cleanly.
package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/quanyu/quanyu/core/internal/decode"
	"github.com/quanyu/quanyu/core/internal/inventory"
	"github.com/quanyu/quanyu/core/internal/pipeline"
	"github.com/quanyu/quanyu/core/internal/pluginhost"
	"github.com/quanyu/quanyu/internal/mixwatch"
	"github.com/quanyu/quanyu/sdk"
)

// Options are what the agent takes besides its configuration.
type Options struct {
	// Files switches the agent to replay: the capture plugin reads them and the agent exits when
	// they end. Nothing is dropped in replay: queues wait instead.
	Files []string
	// Log is the agent's logger (slog.Default() when nil).
	Log *slog.Logger
	// Stdout is where printing sinks write (os.Stdout when nil).
	Stdout *os.File
	// Progress, when set, gets a progress line for large replays.
	Progress io.Writer
}

// Agent is one running agent.
type Agent struct {
	cfg            Config
	hostConfigured bool // a replay names a host only when told one
	opts           Options
	log            *slog.Logger
	host           *pluginhost.Host

	applyMu        sync.Mutex // one subscription change at a time
	mu             sync.Mutex
	backend        string
	fallbackReason string
	subs           []sdk.Subscription
	capture        *pluginhost.Plugin
	mix            *mixwatch.Client
	sinks          map[string]*pluginhost.Plugin
	decoders       []*pluginhost.Plugin
	stage          *decode.Stage // nil without decoders
	pipe           *pipeline.Pipeline
	started        time.Time
}

// NewAgent checks the configuration and prepares an agent; Run starts it.
func NewAgent(cfg Config, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	hostname, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("reading host name: %w", err)
	}
	hostConfigured := cfg.Host != ""
	if !hostConfigured {
		cfg.Host = hostname
	}
	if cfg.PluginDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating the quanyu binary to find plugins (set plugin_dir): %w", err)
		}
		cfg.PluginDir = filepath.Join(filepath.Dir(exe), "plugins")
	}
	a := &Agent{cfg: cfg, opts: opts, log: opts.Log.With("component", "agent"), hostConfigured: hostConfigured}
	subs, err := LoadSubscriptions(cfg.Subscription)
	if err != nil {
		return nil, err
	}
	if len(opts.Files) > 0 && cfg.Subscription == "" {
		// A replay is an offline look at a capture, where sampling costs nothing that matters:
		// by default it decodes every L7 protocol the language knows.
		subs[0].Spec.L7 = slices.Clone(sdk.L7Protocols)
	}
	if cfg.Mix.Address != "" && cfg.Subscription == "" {
		// mix decides what this agent watches: until its first push, nothing. Watching
		// everything meanwhile would report traffic no one subscribed to.
		subs = []sdk.Subscription{}
	}
	a.subs = subs
	a.host = &pluginhost.Host{
		Dir: cfg.PluginDir, Log: opts.Log.With("component", "pluginhost"), PluginLog: opts.Log,
		LogLevel:  levelOf(cfg.Log.Level),
		Checksums: cfg.PluginChecksums, Stdout: opts.Stdout,
	}
	return a, nil
}

func levelOf(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}

// LoadSubscriptions reads a subscription file; an empty path gives the default subscription,
// which matches everything.
func LoadSubscriptions(path string) ([]sdk.Subscription, error) {
	if path == "" {
		return []sdk.Subscription{{ID: sdk.DefaultSubscriptionID}}, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading subscription file: %w", err)
	}
	subs, err := sdk.ParseSubscriptions(raw)
	if err != nil {
		return nil, fmt.Errorf("subscription file %s: %w", path, err)
	}
	return subs, nil
}

// CheckInterfaces refuses a subscription set that names an interface (not a glob) this host does
// not have: capturing nothing while claiming to watch it would be a silent loss.
func CheckInterfaces(subs []sdk.Subscription, have []string) error {
	var missing []string
	for i, s := range subs {
		for j, nic := range s.Spec.NIC {
			if inventory.IsGlob(nic) {
				continue
			}
			found := false
			for _, h := range have {
				if h == nic {
					found = true
				}
			}
			if !found {
				missing = append(missing, fmt.Sprintf("[%d].spec.NIC[%d]: no interface %q on this host", i, j, nic))
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%w: %s", sdk.ErrRejected, strings.Join(missing, "; "))
	}
	return nil
}

func (a *Agent) live() bool { return len(a.opts.Files) == 0 }

func (a *Agent) captureConfig() sdk.CaptureConfig {
	a.mu.Lock()
	subs := a.subs
	a.mu.Unlock()
	c := a.cfg.Capture
	return sdk.CaptureConfig{
		Host: a.cfg.Host, Interfaces: c.Interfaces, ExcludeInterfaces: c.ExcludeInterfaces,
		Files: a.opts.Files, Subscriptions: subs, IdleTimeout: c.IdleTimeout, ActiveTimeout: c.ActiveTimeout,
		FlushInterval: c.FlushInterval, BatchSize: c.BatchSize, MaxFlows: c.MaxFlows, SnapLen: c.SnapLen,
		Options: a.pluginOptions("capture-" + a.backendName()),
	}
}

func (a *Agent) pluginOptions(name string) json.RawMessage {
	opts, ok := a.cfg.Plugins[name]
	if !ok {
		return nil
	}
	raw, err := json.Marshal(opts)
	if err != nil {
		// The configuration came from YAML, so it always encodes; say so if it ever does not.
		a.log.Error("encoding plugin options", "plugin", name, "err", err)
		return nil
	}
	return raw
}

// backendName is the capture backend being configured: the running one, or while starting, the
// one being tried.
func (a *Agent) backendName() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.backend
}

// sinkHandle adapts a plugin to the pipeline's view of a sink.
type sinkHandle struct{ p *pluginhost.Plugin }

func (h sinkHandle) CurrentSink() (sdk.Sink, <-chan struct{}) {
	ch := h.p.Changed()
	impl, _ := h.p.Current()
	return impl.(sdk.Sink), ch
}

// Run runs the agent until ctx ends (live) or the replayed files end, then stops every plugin.
func (a *Agent) Run(ctx context.Context) (err error) {
	a.started = time.Now()
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if stopErr := a.host.StopAll(stopCtx); stopErr != nil {
			a.log.Warn("stopping plugins", "err", stopErr)
		}
	}()
	if a.live() {
		inv, err := inventory.Collect(a.cfg.Host, inventory.Options{})
		if err != nil {
			return fmt.Errorf("reading host inventory: %w", err)
		}
		if err := CheckInterfaces(a.subs, inventory.InterfaceNames(inv)); err != nil {
			return err
		}
	}

	a.sinks = map[string]*pluginhost.Plugin{}
	handles := map[string]pipeline.SinkHandle{}
	for _, name := range a.cfg.Sinks {
		pname := "sink-" + name
		cfg := sdk.SinkConfig{Host: a.cfg.Host, AgentID: a.ID(), Options: a.pluginOptions(pname)}
		p, err := a.host.Start(ctx, pname, sdk.KindSink, pluginhost.Options{
			Restart: a.live(),
			Configure: func(ctx context.Context, impl any) error {
				return impl.(sdk.Sink).Configure(ctx, cfg)
			},
		})
		if err != nil {
			return err
		}
		a.sinks[name] = p
		handles[name] = sinkHandle{p}
	}
	if err := a.startDecoders(ctx); err != nil {
		return err
	}
	popts := pipeline.Options{
		QueueBatches: a.cfg.Pipeline.QueueBatches,
		Block:        !a.live(),
		Enrich:       a.enrich,
		Log:          a.opts.Log.With("component", "pipeline"),
	}
	if a.stage != nil {
		popts.Decode = a.stage.Process
	}
	a.pipe = pipeline.New(popts, handles)
	a.pipe.Start()

	capture, err := a.startCapture(ctx)
	if err != nil {
		return err
	}
	capName := capture.Name
	a.mu.Lock()
	a.capture = capture
	a.mu.Unlock()
	a.log.Info("agent started", "host", a.cfg.Host, "capture", capName, "sinks", a.cfg.Sinks,
		"subscriptions", len(a.subs), "replay_files", len(a.opts.Files))

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	runDone := make(chan error, 1)
	go func() { runDone <- a.runCapture(runCtx) }()

	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.reportLoop(bg)
	}()
	if a.live() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.inventoryLoop(bg)
		}()
	}
	if a.live() && a.cfg.Mix.Address != "" {
		mc := a.mixClient()
		a.mu.Lock()
		a.mix = mc
		a.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := mc.Run(bg); err != nil {
				a.log.Error("watching mix", "err", err)
			}
		}()
	}

	var runErr error
	select {
	case runErr = <-runDone:
	case <-ctx.Done():
		a.log.Info("stopping: flushing flows")
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		impl, _ := a.capture.Current()
		if err := impl.(sdk.Capture).Shutdown(shutCtx); err != nil {
			a.log.Warn("capture shutdown", "err", err)
		}
		select {
		case runErr = <-runDone:
		case <-shutCtx.Done():
			a.log.Warn("capture did not finish in time; its last records are lost")
			cancelRun()
			<-runDone
		}
		cancel()
	}
	stopBG()
	wg.Wait()
	a.emitStats(context.Background())
	drainCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.pipe.Close(drainCtx); err != nil {
		a.log.Warn("sink queues not drained", "err", err)
	}
	return runErr
}

// startDecoders starts the decoder plugins and the stage that routes samples to them.
func (a *Agent) startDecoders(ctx context.Context) error {
	var decs []decode.Decoder
	for _, name := range a.cfg.Decoders {
		pname := "l7-" + name
		p, err := a.host.Start(ctx, pname, sdk.KindDecoder, pluginhost.Options{
			Restart:   a.live(),
			Configure: a.configureDecoder(pname),
		})
		if err != nil {
			return err
		}
		a.decoders = append(a.decoders, p)
		decs = append(decs, decode.Decoder{Name: pname, Info: p.Info(), Current: func() sdk.Decoder {
			impl, _ := p.Current()
			return impl.(sdk.Decoder)
		}})
	}
	if len(decs) == 0 {
		return nil
	}
	stage, err := decode.New(decode.Options{Log: a.opts.Log.With("component", "decode")}, decs)
	if err != nil {
		return err
	}
	a.mu.Lock()
	stage.SetSubscriptions(a.subs)
	a.stage = stage
	a.mu.Unlock()
	return nil
}

func (a *Agent) configureDecoder(pname string) func(ctx context.Context, impl any) error {
	return func(ctx context.Context, impl any) error {
		a.mu.Lock()
		subs := a.subs
		a.mu.Unlock()
		return impl.(sdk.Decoder).Configure(ctx, sdk.DecoderConfig{Subscriptions: subs, Options: a.pluginOptions(pname)})
	}
}

// enrich fills in what the core knows for every record: the host's name. Replayed records keep
// an empty host unless one is configured, since the file was not captured here. It also scrubs
// the L7 frames of events, which could hold credentials.
func (a *Agent) enrich(b *sdk.Batch) {
	for i := range b.Events {
		if len(b.Events[i].L7Frame) > 0 {
			b.Events[i].L7Frame = decode.ScrubFrame(b.Events[i].L7Frame)
		}
	}
	if !a.live() && !a.hostConfigured {
		return
	}
	for i := range b.Flows {
		if b.Flows[i].Host == "" {
			b.Flows[i].Host = a.cfg.Host
		}
	}
	for i := range b.Events {
		if b.Events[i].Host == "" {
			b.Events[i].Host = a.cfg.Host
		}
	}
}

// startCapture starts the configured capture backend, or the fallback when the backend says it
// cannot run on this host (sdk.ErrUnavailable: no eBPF, a capability withheld); the reason is
// logged and kept in the agent's status.
func (a *Agent) startCapture(ctx context.Context) (*pluginhost.Plugin, error) {
	backend := a.cfg.Capture.Backend
	if !a.live() {
		backend = "mmap" // only the AF_PACKET capture reads files
	}
	opts := pluginhost.Options{Restart: a.live(), Configure: a.configureCapture}
	a.setBackend(backend, "")
	p, err := a.host.Start(ctx, "capture-"+backend, sdk.KindCapture, opts)
	fallback := a.cfg.Capture.Fallback
	if err == nil || !a.live() || fallback == "" || fallback == backend || !errors.Is(err, sdk.ErrUnavailable) {
		return p, err
	}
	reason := err.Error()
	a.log.Warn("capture backend cannot run on this host; falling back", "backend", backend, "fallback", fallback, "reason", reason)
	a.setBackend(fallback, reason)
	p, err = a.host.Start(ctx, "capture-"+fallback, sdk.KindCapture, opts)
	if err != nil {
		return nil, fmt.Errorf("%s could not run (%s), nor could the fallback: %w", backend, reason, err)
	}
	return p, nil
}

func (a *Agent) setBackend(backend, fallbackReason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.backend, a.fallbackReason = backend, fallbackReason
}

// Status is what the agent says about itself beyond its counters.
type Status struct {
	// Backend is the capture backend running.
	Backend string
	// FallbackReason says why the configured backend is not the one running; empty if it is.
	FallbackReason string
}

// Status reports the capture backend in use and, after a fallback, why.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Status{Backend: a.backend, FallbackReason: a.fallbackReason}
}

func (a *Agent) configureCapture(ctx context.Context, impl any) error {
	return impl.(sdk.Capture).Configure(ctx, a.captureConfig())
}

// runCapture streams batches from the capture plugin into the pipeline, across restarts of the
// plugin. It returns when the input ends (replay), when the plugin was shut down, or when ctx ends.
func (a *Agent) runCapture(ctx context.Context) error {
	for {
		changed := a.capture.Changed()
		impl, gen := a.capture.Current()
		err := impl.(sdk.Capture).Run(ctx, a.pipe)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !a.live() {
			return fmt.Errorf("replay: %w", err)
		}
		a.log.Warn("capture stream broke; waiting for the plugin to restart", "err", err)
		if _, now := a.capture.Current(); now != gen {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// SetSubscriptions applies a new subscription set to the running capture without restarting it.
// When the plugin refuses the set, the previous one stays in force and the error says why.
func (a *Agent) SetSubscriptions(ctx context.Context, subs []sdk.Subscription) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if err := sdk.ValidateSet(subs); err != nil {
		return fmt.Errorf("%w: %v", sdk.ErrRejected, err)
	}
	inv, err := inventory.Collect(a.cfg.Host, inventory.Options{})
	if err != nil {
		return fmt.Errorf("reading host inventory: %w", err)
	}
	if err := CheckInterfaces(subs, inventory.InterfaceNames(inv)); err != nil {
		return err
	}
	a.mu.Lock()
	prev := a.subs
	a.subs = subs
	capture, stage, decoders := a.capture, a.stage, a.decoders
	a.mu.Unlock()
	if capture == nil {
		return nil // not capturing yet: Run starts with this set
	}
	if err := capture.Reconfigure(ctx, a.configureCapture); err != nil {
		a.mu.Lock()
		a.subs = prev
		a.mu.Unlock()
		return err
	}
	// The capture took the set; the decoders follow. A decoder that refuses it keeps its
	// previous subscriptions (they only inform it): say so, but the set is in force.
	if stage != nil {
		stage.SetSubscriptions(subs)
	}
	for _, d := range decoders {
		if err := d.Reconfigure(ctx, a.configureDecoder(d.Name)); err != nil {
			a.log.Warn("decoder refused the new subscriptions", "decoder", d.Name, "err", err)
		}
	}
	// The ids, up to a few, say which set is in force (mix pushes and withdraws them).
	ids := make([]string, 0, min(len(subs), 8))
	for i := range subs[:min(len(subs), 8)] {
		ids = append(ids, subs[i].ID)
	}
	a.log.Info("subscriptions applied", "subscriptions", len(subs), "ids", strings.Join(ids, ","))
	return nil
}

// CaptureHealth asks the capture plugin how it is doing, with its counters.
func (a *Agent) CaptureHealth(ctx context.Context) (sdk.Health, error) {
	a.mu.Lock()
	p := a.capture
	a.mu.Unlock()
	if p == nil {
		return sdk.Health{Status: sdk.HealthFailing, Message: "capture not started"}, nil
	}
	impl, _ := p.Current()
	return impl.(sdk.Capture).Health(ctx)
}

// Counters are the agent's own counters.
func (a *Agent) Counters() map[string]uint64 {
	c := map[string]uint64{}
	if a.pipe != nil {
		c = a.pipe.Counters()
	}
	c["agent.uptime_seconds"] = uint64(time.Since(a.started).Seconds())
	if a.capture != nil {
		c["plugin."+a.capture.Name+".restarts"] = a.capture.Restarts()
	}
	if st := a.Status(); st.FallbackReason != "" {
		c["capture.fallback"] = 1
	}
	a.mu.Lock()
	mc := a.mix
	a.mu.Unlock()
	if mc != nil {
		for k, v := range mc.Counters() {
			c[k] = v
		}
	}
	for _, p := range a.sinks {
		c["plugin."+p.Name+".restarts"] = p.Restarts()
	}
	for _, p := range a.decoders {
		c["plugin."+p.Name+".restarts"] = p.Restarts()
	}
	if a.stage != nil {
		for k, v := range a.stage.Counters() {
			c[k] = v
		}
	}
	a.cpuCounters(c)
	return c
}

// emitStats sends the agent's and the capture plugin's counters down the pipeline.
func (a *Agent) emitStats(ctx context.Context) {
	now := time.Now().UTC()
	b := &sdk.Batch{Stats: []sdk.Stats{{Source: "agent", Time: now, Counters: a.Counters()}}}
	impl, _ := a.capture.Current()
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	h, err := impl.(sdk.Capture).Health(hctx)
	cancel()
	if err == nil {
		b.Stats = append(b.Stats, sdk.Stats{Source: a.capture.Name, Time: now, Counters: h.Counters})
		if h.Status != sdk.HealthOK {
			a.log.Warn("capture reports trouble", "status", h.Status, "message", h.Message)
		}
	} else if !errors.Is(err, context.Canceled) {
		a.log.Warn("asking capture for its counters", "err", err)
	}
	for _, p := range a.decoders {
		impl, _ := p.Current()
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		h, err := impl.(sdk.Decoder).Health(hctx)
		cancel()
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				a.log.Warn("asking a decoder for its counters", "decoder", p.Name, "err", err)
			}
			continue
		}
		b.Stats = append(b.Stats, sdk.Stats{Source: p.Name, Time: now, Counters: h.Counters})
	}
	if err := a.pipe.Emit(ctx, b); err != nil && !errors.Is(err, pipeline.ErrClosed) {
		a.log.Warn("sending stats", "err", err)
	}
}

// progressMinBytes is the replay size from which a progress line is worth printing.
const progressMinBytes = 32 << 20

func (a *Agent) reportLoop(ctx context.Context) {
	stats := time.NewTicker(a.cfg.Pipeline.StatsInterval)
	defer stats.Stop()
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stats.C:
			if a.live() {
				a.emitStats(ctx)
			}
		case <-progress.C:
			if !a.live() && a.opts.Progress != nil {
				a.printProgress(ctx)
			}
		}
	}
}

func (a *Agent) printProgress(ctx context.Context) {
	impl, _ := a.capture.Current()
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	h, err := impl.(sdk.Capture).Health(hctx)
	if err != nil {
		return
	}
	total, read := h.Counters["file.bytes_total"], h.Counters["file.bytes_read"]
	if total < progressMinBytes {
		return
	}
	fmt.Fprintf(a.opts.Progress, "replay: %3.0f%%  %d of %d MiB, %d packets\n",
		100*float64(read)/float64(total), read>>20, total>>20, h.Counters["packets"])
}

func (a *Agent) inventoryLoop(ctx context.Context) {
	var last *sdk.Inventory
	tick := time.NewTicker(a.cfg.Pipeline.InventoryInterval)
	defer tick.Stop()
	for {
		inv, err := inventory.Collect(a.cfg.Host, inventory.Options{})
		if err != nil {
			a.log.Warn("reading host inventory", "err", err)
		} else if !inventory.Same(last, inv) {
			last = inv
			if err := a.pipe.Emit(ctx, &sdk.Batch{Inventory: inv}); err != nil && !errors.Is(err, pipeline.ErrClosed) {
				a.log.Warn("sending inventory", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
