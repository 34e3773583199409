// Package pluginhost starts the agent's plugins as go-plugin subprocesses, keeps them running and
// stops them. Its rules (ARCHITECTURE §5): plugins are found as quanyu-<name> binaries in one
// directory; they start with AutoMTLS; a crashed plugin is restarted with backoff and given its
// configuration again, and the restart is counted; one plugin's failure never stops the others;
// on exit every plugin is asked to shut down, then killed.
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/quanyu/quanyu/sdk"
)

// BinaryPrefix starts every plugin binary's name.
const BinaryPrefix = "quanyu-"

// StdoutFDEnv tells a sink plugin which inherited file descriptor is the agent's standard output.
// Sinks that print (sink-stdout) write there directly instead of through go-plugin's stdio relay,
// so nothing is copied twice and nothing is lost when the agent exits.
const StdoutFDEnv = "QUANYU_PLUGIN_STDOUT_FD"

// Host starts plugins from one directory.
type Host struct {
	Dir string
	// Log is the host's own log; PluginLog receives the plugins' lines, which carry their own
	// component, under plugin=<name>.
	Log       *slog.Logger
	PluginLog *slog.Logger
	LogLevel  slog.Level
	Checksums map[string]string // plugin name → SHA-256 hex
	// Stdout is handed to sink plugins as an inherited file; nil for none.
	Stdout *os.File

	mu      sync.Mutex
	plugins []*Plugin
}

// Discover lists the plugins in the directory: name (without the quanyu- prefix) → path.
func (h *Host) Discover() (map[string]string, error) {
	entries, err := os.ReadDir(h.Dir)
	if err != nil {
		return nil, fmt.Errorf("listing plugin directory %s: %w", h.Dir, err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasPrefix(e.Name(), BinaryPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Mode()&0o111 == 0 {
			continue
		}
		out[strings.TrimPrefix(e.Name(), BinaryPrefix)] = filepath.Join(h.Dir, e.Name())
	}
	return out, nil
}

// Options say how one plugin is run.
type Options struct {
	// Restart restarts the plugin after it exits unexpectedly. Replay runs without: restarting
	// would read its files again from the start and count them twice.
	Restart bool
	// Configure is applied to every instance of the plugin, first and restarted, before it is
	// published to the rest of the agent.
	Configure func(ctx context.Context, impl any) error
}

// Plugin is one running plugin and its restarts. Callers take the current instance with Current
// and learn of a restart by waiting on Changed.
type Plugin struct {
	Name string
	Kind sdk.Kind
	path string
	host *Host
	log  *slog.Logger

	mu        sync.Mutex
	client    *plugin.Client
	impl      any
	info      sdk.Info
	gen       uint64
	changed   chan struct{}
	configure func(ctx context.Context, impl any) error
	restart   bool

	restarts atomic.Uint64
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// Start launches the named plugin (binary quanyu-<name>), checks that it is of the expected kind,
// configures it and, with opts.Restart, supervises it.
func (h *Host) Start(ctx context.Context, name string, kind sdk.Kind, opts Options) (*Plugin, error) {
	path := filepath.Join(h.Dir, BinaryPrefix+name)
	if _, err := os.Stat(path); err != nil {
		known, _ := h.Discover()
		names := make([]string, 0, len(known))
		for n := range known {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("plugin %s not found: no %s in %s (found: %s; `make build` builds them)",
			name, BinaryPrefix+name, h.Dir, strings.Join(names, ", "))
	}
	p := &Plugin{
		Name: name, Kind: kind, path: path, host: h,
		log:       h.Log.With("plugin", name),
		changed:   make(chan struct{}),
		configure: opts.Configure,
		restart:   opts.Restart,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	client, impl, info, err := p.launch(ctx)
	if err != nil {
		return nil, err
	}
	p.client, p.impl, p.info, p.gen = client, impl, info, 1
	h.mu.Lock()
	h.plugins = append(h.plugins, p)
	h.mu.Unlock()
	if opts.Restart {
		go p.supervise()
	} else {
		close(p.done)
	}
	return p, nil
}

func (p *Plugin) launch(ctx context.Context) (*plugin.Client, any, sdk.Info, error) {
	cmd := exec.Command(p.path)
	cmd.Env = append(os.Environ(), sdk.LogLevelEnv+"="+p.host.LogLevel.String())
	// The kernel kills the plugin if the agent dies without stopping it (SIGKILL, OOM): a plugin
	// must never outlive its agent and keep capturing. Pdeathsig follows the thread that started
	// the plugin, not the process: the agent must never end a thread (runtime.LockOSThread in a
	// goroutine that returns locked, as entering a network namespace does), or plugins started
	// from it would be killed with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.Kind == sdk.KindSink && p.host.Stdout != nil {
		cmd.ExtraFiles = []*os.File{p.host.Stdout}
		cmd.Env = append(cmd.Env, StdoutFDEnv+"=3")
	}
	var secure *plugin.SecureConfig
	if sum, ok := p.host.Checksums[p.Name]; ok {
		raw, err := hex.DecodeString(sum)
		if err != nil {
			return nil, nil, sdk.Info{}, fmt.Errorf("checksum of plugin %s: %w", p.Name, err)
		}
		secure = &plugin.SecureConfig{Checksum: raw, Hash: sha256.New()}
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          sdk.PluginSet(),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		SecureConfig:     secure,
		Logger:           newSlogAdapter(p.host.Log, p.host.PluginLog),
		StartTimeout:     15 * time.Second,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes), grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes)),
			grpc.WithInitialWindowSize(sdk.StreamWindowBytes), grpc.WithInitialConnWindowSize(sdk.ConnWindowBytes)},
	})
	fail := func(format string, args ...any) (*plugin.Client, any, sdk.Info, error) {
		client.Kill()
		return nil, nil, sdk.Info{}, fmt.Errorf(format, args...)
	}
	rpc, err := client.Client()
	if err != nil {
		return fail("starting plugin %s: %w", p.Name, err)
	}
	raw, err := rpc.Dispense(string(p.Kind))
	if err != nil {
		return fail("plugin %s does not serve %s: %w", p.Name, p.Kind, err)
	}
	info, err := infoOf(ctx, raw)
	if err != nil {
		return fail("plugin %s: %w", p.Name, err)
	}
	if info.Kind != p.Kind {
		return fail("plugin %s is a %s plugin, not %s", p.Name, info.Kind, p.Kind)
	}
	p.mu.Lock()
	configure := p.configure
	p.mu.Unlock()
	if configure != nil {
		if err := configure(ctx, raw); err != nil {
			return fail("configuring plugin %s: %w", p.Name, err)
		}
	}
	p.log.Debug("plugin started", "version", info.Version, "pid", pidOf(client))
	return client, raw, info, nil
}

func pidOf(c *plugin.Client) int {
	if rc := c.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

func infoOf(ctx context.Context, raw any) (sdk.Info, error) {
	switch v := raw.(type) {
	case sdk.Capture:
		return v.Info(ctx)
	case sdk.Decoder:
		return v.Info(ctx)
	case sdk.Sink:
		return v.Info(ctx)
	}
	return sdk.Info{}, fmt.Errorf("unexpected plugin type %T", raw)
}

// Current returns the running instance and its generation (1 for the first, +1 per restart).
func (p *Plugin) Current() (any, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.impl, p.gen
}

// Changed is closed when a restarted instance replaces the current one.
func (p *Plugin) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// Info is what the plugin said about itself at its last start.
func (p *Plugin) Info() sdk.Info {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.info
}

// Restarts counts restarts after crashes.
func (p *Plugin) Restarts() uint64 { return p.restarts.Load() }

// Pid is the plugin process's id, 0 if unknown.
func (p *Plugin) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pidOf(p.client)
}

// Reconfigure replaces the configuration applied at every start and applies it to the running
// instance now. If the running instance rejects it, the old one stays in force for restarts too.
func (p *Plugin) Reconfigure(ctx context.Context, configure func(ctx context.Context, impl any) error) error {
	impl, _ := p.Current()
	if err := configure(ctx, impl); err != nil {
		return err
	}
	p.mu.Lock()
	p.configure = configure
	p.mu.Unlock()
	return nil
}

// Backoff between restarts: quick at first, so a one-off crash costs little capture, and slower
// for a plugin that keeps crashing, so it does not spin.
const (
	restartFirst  = 200 * time.Millisecond
	restartMax    = 30 * time.Second
	restartStable = time.Minute // up this long: the next crash starts the backoff again
	exitPoll      = 250 * time.Millisecond
)

func (p *Plugin) supervise() {
	defer close(p.done)
	backoff := restartFirst
	started := time.Now()
	tick := time.NewTicker(exitPoll)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		exited := p.client.Exited()
		p.mu.Unlock()
		if !exited {
			continue
		}
		if time.Since(started) > restartStable {
			backoff = restartFirst
		}
		n := p.restarts.Add(1)
		p.log.Warn("plugin exited unexpectedly; restarting", "restarts", n, "backoff", backoff)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, restartMax)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			client, impl, info, err := p.launch(ctx)
			cancel()
			if err != nil {
				p.log.Error("restarting plugin failed", "err", err, "next_backoff", backoff)
				continue
			}
			p.mu.Lock()
			p.client, p.impl, p.info = client, impl, info
			p.gen++
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			started = time.Now()
			break
		}
	}
}

// Stop asks the plugin to shut down (flush what it holds), waits up to the context's deadline,
// then kills it. Safe to call twice.
func (p *Plugin) Stop(ctx context.Context) error {
	var err error
	p.stopOnce.Do(func() {
		close(p.stop)
		<-p.done
		impl, _ := p.Current()
		if impl != nil {
			err = shutdownOf(ctx, impl)
		}
		p.mu.Lock()
		client := p.client
		p.mu.Unlock()
		client.Kill()
	})
	return err
}

func shutdownOf(ctx context.Context, raw any) error {
	switch v := raw.(type) {
	case sdk.Capture:
		return v.Shutdown(ctx)
	case sdk.Decoder:
		return v.Shutdown(ctx)
	case sdk.Sink:
		return v.Shutdown(ctx)
	}
	return nil
}

// Plugins lists the plugins started by this host, in order of start.
func (h *Host) Plugins() []*Plugin {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Plugin(nil), h.plugins...)
}

// StopAll stops every plugin started by this host, in reverse order of start.
func (h *Host) StopAll(ctx context.Context) error {
	h.mu.Lock()
	plugins := append([]*Plugin(nil), h.plugins...)
	h.mu.Unlock()
	var errs []error
	for i := len(plugins) - 1; i >= 0; i-- {
		if err := plugins[i].Stop(ctx); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("stopping %s: %w", plugins[i].Name, err))
		}
	}
	return errors.Join(errs...)
}
