package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/quanyu/quanyu/analysis"
	"github.com/quanyu/quanyu/core"
	"github.com/quanyu/quanyu/internal/confload"
	"github.com/quanyu/quanyu/internal/doctor"
	"github.com/quanyu/quanyu/internal/gctune"
	"github.com/quanyu/quanyu/mix"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/mix/mixpb"
)

// upSubscription is what `quanyu up` watches: every conversation on the agent's interfaces, with
// HTTP and DNS decoded (L7 decoding is opt-in in a subscription).
const upSubscription = `{"id":"default","name":"quanyu up: everything on the watched interfaces, HTTP and DNS decoded","spec":{"L7":["HTTP","DNS"]}}`

// upOptions are `quanyu up`'s flags.
type upOptions struct {
	lab                           bool
	stateDir, capture, logLevel   string
	ui, mixGRPC, mixHTTP          string
	otlpGRPC, otlpHTTP, pluginDir string
	nics                          listFlag
	labRate                       float64
	labPrefix, labCIDR            string
}

// runUp is `quanyu up`: mix, analysis and an agent in this process, with their embedded defaults,
// listening on 127.0.0.1 only, and with --lab a lab of test hosts whose traffic the agent watches.
// Ctrl-C (or SIGTERM) stops all of it and takes the lab down.
func runUp(args []string, stdout, stderr io.Writer) error {
	gctune.Apply()
	var o upOptions
	fs := flag.NewFlagSet("quanyu up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.lab, "lab", false, "also bring up the lab (test hosts in network namespaces, with services and traffic) and watch it")
	fs.StringVar(&o.stateDir, "state-dir", "", "`directory` for mix's and analysis's data and the log (default: the user's state directory, quanyu/up)")
	fs.StringVar(&o.capture, "capture", "ebpf", "capture `backend`: ebpf (falls back to mmap where the kernel or capabilities refuse it) or mmap")
	fs.Var(&o.nics, "nic", "interfaces to watch, comma-separated (default: all but lo; with --lab: the lab's)")
	fs.StringVar(&o.ui, "ui", "127.0.0.1:8080", "`address` of the web UI and the API")
	fs.StringVar(&o.mixGRPC, "mix-listen", "127.0.0.1:7070", "mix's gRPC `address` (the quanyu CLI's default)")
	fs.StringVar(&o.mixHTTP, "mix-http", "127.0.0.1:7071", "mix's HTTP admin API `address`")
	fs.StringVar(&o.otlpGRPC, "otlp-grpc", "127.0.0.1:4317", "analysis's OTLP/gRPC `address`")
	fs.StringVar(&o.otlpHTTP, "otlp-http", "127.0.0.1:4318", "analysis's OTLP/HTTP `address`")
	fs.StringVar(&o.pluginDir, "plugin-dir", "", "`directory` of the agent's plugins (default: plugins/ beside this binary)")
	fs.StringVar(&o.logLevel, "log-level", "info", "level of the log file: debug, info, warn or error")
	fs.Float64Var(&o.labRate, "lab-rate", 0, "the lab client's base requests per second (0: the lab's default)")
	fs.StringVar(&o.labPrefix, "lab-prefix", "", "`prefix` of every name the lab makes (default qylab)")
	fs.StringVar(&o.labCIDR, "lab-cidr", "", "IPv4 `range` the lab owns (default 10.177.0.0/24)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: quanyu up [--lab] [flags]\n\nRuns mix, analysis and an agent on this host with embedded defaults, listening on 127.0.0.1,\nand with --lab a lab of test hosts with services and traffic. Ctrl-C stops everything.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	for name, addr := range map[string]string{"--ui": o.ui, "--mix-listen": o.mixGRPC, "--mix-http": o.mixHTTP,
		"--otlp-grpc": o.otlpGRPC, "--otlp-http": o.otlpHTTP} {
		if !confload.Loopback(addr) {
			return fmt.Errorf("%s %s: quanyu up listens on this host only (it runs without tokens); use 127.0.0.1", name, addr)
		}
	}
	// Before anything is made: can this host capture at all?
	if err := (&upRun{o: o}).preflight(); err != nil {
		return err
	}
	if o.lab && os.Geteuid() != 0 {
		return errors.New("the lab makes network namespaces, which needs root: run it as root (sudo)")
	}
	if o.stateDir == "" {
		dir, err := confload.StateDir("up")
		if err != nil {
			return err
		}
		o.stateDir = dir
	}
	if err := os.MkdirAll(o.stateDir, 0o750); err != nil {
		return fmt.Errorf("creating the state directory: %w", err)
	}
	logPath := filepath.Join(o.stateDir, "quanyu.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening the log file: %w", err)
	}
	defer logFile.Close()
	// Everything goes to the log file; warnings and errors are also shown here, where a person is
	// watching.
	log := slog.New(teeHandler{newLogger(logFile, o.logLevel, "text").Handler(),
		newLogger(stderr, "warn", "text").Handler()})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	u := &upRun{o: o, log: log, out: stdout}
	if err := u.run(ctx); err != nil {
		return fmt.Errorf("%w\n(the log is %s)", err, logPath)
	}
	return nil
}

type upRun struct {
	o   upOptions
	log *slog.Logger
	out io.Writer

	mix   *mix.Server
	an    *analysis.Server
	agent *core.Agent
	lab   *upLab
}

// preflight refuses to start when no capture backend can run here (no root, no capabilities):
// the agent would otherwise retry forever while the UI stays empty. quanyu doctor's checks
// decide, and their fixes are the error.
func (u *upRun) preflight() error {
	flags := map[string]any{"capture.backend": u.o.capture}
	if u.o.capture == "ebpf" {
		flags["capture.fallback"] = "mmap"
	}
	if u.o.pluginDir != "" {
		flags["plugin_dir"] = u.o.pluginDir
	}
	cfg, err := core.Load(core.LoadOptions{Flags: flags})
	if err != nil {
		return fmt.Errorf("configuring the agent: %w", err)
	}
	opts, err := doctorOptions(cfg)
	if err != nil {
		return err
	}
	opts.Ports, opts.Tools, opts.StateDirs = nil, nil, nil // up chooses its own; not the question here
	report := doctor.Run(doctor.System(), opts)
	if report.OK {
		return nil
	}
	var b strings.Builder
	b.WriteString("no capture backend can run on this host, so the agent would see nothing:")
	for _, c := range report.Checks {
		if c.Status == doctor.Fail {
			fmt.Fprintf(&b, "\n  %s: %s", c.Name, c.Found)
		}
	}
	fmt.Fprintf(&b, "\nRun it as root (sudo), or grant the capture plugins %s; `quanyu doctor` says more.",
		strings.Join(doctor.AgentCapabilities(), ", "))
	return errors.New(b.String())
}

func (u *upRun) run(ctx context.Context) error {
	o := u.o
	// The lab first: the agent is configured with its interfaces.
	if o.lab {
		fmt.Fprintln(u.out, "Bringing the lab up …")
		l, err := startUpLab(ctx, u.log.With("component", "lab"), o)
		if err != nil {
			return fmt.Errorf("bringing the lab up: %w", err)
		}
		u.lab = l
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := l.down(dctx); err != nil {
				fmt.Fprintf(u.out, "Taking the lab down failed: %v (run `quanyu lab down`)\n", err)
			} else {
				fmt.Fprintln(u.out, "The lab is down.")
			}
		}()
	}

	mcfg, err := mix.Load(mix.LoadOptions{Flags: map[string]any{"listen": o.mixGRPC, "http_listen": o.mixHTTP,
		"data_dir": filepath.Join(o.stateDir, "mix")}})
	if err != nil {
		return fmt.Errorf("configuring mix: %w", err)
	}
	if u.mix, err = mix.New(ctx, mcfg, u.log.With("role", "mix")); err != nil {
		return fmt.Errorf("starting mix: %w", err)
	}
	acfg, err := analysis.Load(analysis.LoadOptions{Flags: map[string]any{"otlp.grpc_listen": o.otlpGRPC,
		"otlp.http_listen": o.otlpHTTP, "http_listen": o.ui, "data_dir": filepath.Join(o.stateDir, "analysis"),
		"mix.address": u.mix.GRPCAddr(), "mix.http_address": u.mix.HTTPAddr()}})
	if err != nil {
		return fmt.Errorf("configuring analysis: %w", err)
	}
	if u.an, err = analysis.New(ctx, acfg, u.log.With("role", "analysis")); err != nil {
		return fmt.Errorf("starting analysis: %w", err)
	}
	otlpGRPC, _, ui := u.an.Addrs()
	agentFlags := map[string]any{"capture.backend": o.capture, "sinks": []string{"otlp"},
		"plugins.sink-otlp.endpoint": otlpGRPC, "plugins.sink-otlp.insecure": true,
		"mix.address": u.mix.GRPCAddr(), "identity.id": "up-agent", "capture.flush_interval": "1s",
		"capture.active_timeout": "10s"}
	if o.capture == "ebpf" {
		agentFlags["capture.fallback"] = "mmap"
	}
	if o.pluginDir != "" {
		agentFlags["plugin_dir"] = o.pluginDir
	}
	nics := o.nics.values
	if u.lab != nil && len(nics) == 0 {
		nics = u.lab.interfaces
	}
	if len(nics) > 0 {
		agentFlags["capture.interfaces"] = nics
		agentFlags["capture.exclude_interfaces"] = []string{}
	}
	ccfg, err := core.Load(core.LoadOptions{Flags: agentFlags})
	if err != nil {
		return fmt.Errorf("configuring the agent: %w", err)
	}
	if u.agent, err = core.NewAgent(ccfg, core.Options{Log: u.log.With("role", "agent")}); err != nil {
		return fmt.Errorf("starting the agent: %w", err)
	}

	// Run the three until ctx ends or one of them fails. They stop in the reverse order of the
	// data: the agent first, so its last records still reach analysis; then analysis, which
	// flushes to its store; then mix.
	failed := make(chan error, 3)
	type part struct {
		name   string
		run    func(context.Context) error
		cancel context.CancelFunc
		done   chan struct{}
	}
	var parts []*part
	for _, p := range []struct {
		name string
		run  func(context.Context) error
	}{{"mix", u.mix.Run}, {"analysis", u.an.Run}, {"agent", u.agent.Run}} {
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		pt := &part{name: p.name, run: p.run, cancel: cancel, done: make(chan struct{})}
		parts = append(parts, pt)
		go func() {
			defer close(pt.done)
			if err := pt.run(pctx); err != nil && !errors.Is(err, context.Canceled) {
				failed <- fmt.Errorf("%s: %w", pt.name, err)
			}
		}()
	}
	stopAll := func() {
		for i := len(parts) - 1; i >= 0; i-- {
			if parts[i].name == "mix" && u.lab != nil {
				u.unseedLab()
			}
			parts[i].cancel()
			select {
			case <-parts[i].done:
			case <-time.After(30 * time.Second):
				u.log.Warn("a part did not stop within 30 s", "part", parts[i].name)
			}
		}
	}
	var runErr error
	if err := u.seed(ctx); err != nil {
		runErr = err
	} else {
		u.banner(ctx, ui)
		select {
		case <-ctx.Done():
		case runErr = <-failed:
		}
	}
	fmt.Fprintln(u.out, "\nStopping …")
	stopAll()
	if runErr != nil {
		return runErr
	}
	fmt.Fprintln(u.out, "Stopped: the agent (its kernel programs detached), analysis and mix.")
	return nil
}

// seed writes the default subscription, and the lab's applications and owners, into mix.
func (u *upRun) seed(ctx context.Context) error {
	conn, err := mix.Dial(mix.DialOptions{Address: u.mix.GRPCAddr()})
	if err != nil {
		return fmt.Errorf("connecting to mix: %w", err)
	}
	defer conn.Close()
	client := mixpb.NewMixClient(conn)
	apply := func(kind string, body []byte) error {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := client.Apply(actx, &mixpb.ApplyRequest{Kind: kind, Json: body}); err != nil {
			return fmt.Errorf("writing the %s into mix: %w", kind, err)
		}
		return nil
	}
	if err := apply("subscription", []byte(upSubscription)); err != nil {
		return err
	}
	if u.lab != nil {
		if err := apply("catalog", u.lab.catalog); err != nil {
			return err
		}
	}
	return nil
}

// unseedLab takes the lab's applications out of mix's catalog as the lab goes: mix's data stays
// in the state directory, and a later `quanyu up` on real interfaces should not name addresses
// after a lab that is gone. An entry changed since the lab wrote it (by hand, or by a catalog
// that reused the name) is someone else's now and stays.
func (u *upRun) unseedLab() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := mix.Dial(mix.DialOptions{Address: u.mix.GRPCAddr()})
	if err != nil {
		u.log.Warn("taking the lab's applications out of mix's catalog failed", "err", err)
		return
	}
	defer conn.Close()
	client := mixpb.NewMixClient(conn)
	for _, e := range u.lab.l.Catalog() {
		obj, err := client.Get(ctx, &mixpb.GetRequest{Kind: "catalog", Id: e.App})
		if err != nil {
			continue // gone already
		}
		stored, err := api.ParseCatalog(obj.Json)
		if err != nil || len(stored) != 1 || !reflect.DeepEqual(stored[0], e) {
			continue
		}
		if _, err := client.Delete(ctx, &mixpb.DeleteRequest{Kind: "catalog", Id: e.App}); err != nil {
			u.log.Warn("taking a lab application out of mix's catalog failed", "app", e.App, "err", err)
		}
	}
}

// banner says what runs where, once the agent is capturing (or after a few seconds).
func (u *upRun) banner(ctx context.Context, ui string) {
	deadline := time.Now().Add(15 * time.Second)
	for u.agent.Status().Backend == "" && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	st := u.agent.Status()
	backend := st.Backend
	switch {
	case backend == "ebpf":
		backend = "eBPF (TCX/TC)"
	case backend == "mmap" && st.FallbackReason != "":
		backend = "AF_PACKET mmap ring, as eBPF is unavailable here: " + st.FallbackReason
	case backend == "mmap":
		backend = "AF_PACKET mmap ring"
	}
	nics := "all interfaces but lo"
	if len(u.o.nics.values) > 0 || u.lab != nil {
		nics = strings.Join(append(u.o.nics.values, u.labInterfaces()...), ", ")
	}
	w := u.out
	fmt.Fprintf(w, "\nQuanyu is up.\n\n")
	fmt.Fprintf(w, "  UI        http://%s/\n", ui)
	fmt.Fprintf(w, "  agent     capturing on %s with %s\n", nics, backend)
	fmt.Fprintf(w, "  mix       %s (gRPC, the CLI's default), http://%s/api/v1/  (this host only, no tokens)\n", u.mix.GRPCAddr(), u.mix.HTTPAddr())
	g, h, _ := u.an.Addrs()
	fmt.Fprintf(w, "  analysis  OTLP %s (gRPC), %s (HTTP); API http://%s/api/v1/graph\n", g, h, ui)
	if u.lab != nil {
		fmt.Fprintf(w, "  lab       %s\n", u.lab.summary)
	}
	fmt.Fprintf(w, "  data      %s (log: quanyu.log there)\n\n", u.o.stateDir)
	// The commands as this binary was run (bin/quanyu from make demo), so they can be pasted.
	self := "quanyu"
	if strings.Contains(os.Args[0], "/") {
		self = os.Args[0]
	}
	fmt.Fprintf(w, "Try: %[1]s agents; %[1]s catalog list; %[1]s rule apply -f examples/rules.json\n", self)
	fmt.Fprintf(w, "Stop: Ctrl-C\n")
}

func (u *upRun) labInterfaces() []string {
	if u.lab == nil || len(u.o.nics.values) > 0 {
		return nil
	}
	return u.lab.interfaces
}

// teeHandler sends each record to every handler that takes its level.
type teeHandler []slog.Handler

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			err = errors.Join(err, h.Handle(ctx, r.Clone()))
		}
	}
	return err
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}
