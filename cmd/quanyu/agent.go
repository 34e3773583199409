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
	"syscall"

	"github.com/quanyu/quanyu/core"
	"github.com/quanyu/quanyu/internal/gctune"
)

// agentFlags are the flags shared by agent and replay, each mapped to its configuration key so
// that flags are the last layer over file and environment.
type agentFlags struct {
	fs           *flag.FlagSet
	config       string
	subscription string
	format       string
	pluginDir    string
	logLevel     string
	host         string
	capture      string
	mix          string
	token        string
	nic          listFlag
	sinks        listFlag
}

func newAgentFlags(name string, stderr io.Writer, live bool) *agentFlags {
	f := &agentFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.config, "config", "", "YAML configuration `file`")
	f.fs.StringVar(&f.subscription, "subscription", "", "subscription `file` (the seed's JSON, wrapped, or a list)")
	f.fs.StringVar(&f.format, "format", "", "stdout record format: json or seed")
	f.fs.StringVar(&f.pluginDir, "plugin-dir", "", "`directory` of the quanyu-* plugin binaries")
	f.fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	f.fs.StringVar(&f.host, "host", "", "host `name` carried by records")
	f.fs.Var(&f.sinks, "sink", "sink plugin(s), comma-separated (stdout)")
	if live {
		f.fs.StringVar(&f.capture, "capture", "", "capture `backend`: mmap")
		f.fs.Var(&f.nic, "nic", "interface names or globs to watch, comma-separated (default all but lo)")
		f.fs.StringVar(&f.mix, "mix", "", "mix's gRPC `address`: mix pushes the subscriptions")
		f.fs.StringVar(&f.token, "token", "", "bearer `token` for mix")
	}
	return f
}

// load builds the configuration: defaults, --config file, QUANYU_* environment, set flags.
func (f *agentFlags) load() (core.Config, error) {
	flags := map[string]any{}
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "subscription":
			flags["subscription"] = f.subscription
		case "format":
			flags["plugins.sink-stdout.format"] = f.format
		case "plugin-dir":
			flags["plugin_dir"] = f.pluginDir
		case "log-level":
			flags["log.level"] = f.logLevel
		case "host":
			flags["host"] = f.host
		case "capture":
			flags["capture.backend"] = f.capture
		case "nic":
			flags["capture.interfaces"] = f.nic.values
			// Naming interfaces explicitly watches them even if excluded by default (lo).
			flags["capture.exclude_interfaces"] = []string{}
		case "sink":
			flags["sinks"] = f.sinks.values
		case "mix":
			flags["mix.address"] = f.mix
		case "token":
			flags["mix.token"] = f.token
		}
	})
	return core.Load(core.LoadOptions{File: f.config, Flags: flags})
}

func runAgent(args []string, stdout, stderr io.Writer) error {
	gctune.Apply()
	f := newAgentFlags("quanyu agent", stderr, true)
	f.fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: quanyu agent [flags]\n\nCaptures traffic on this host's interfaces and prints records (JSON Lines) to stdout.\n\nFlags:")
		f.fs.PrintDefaults()
	}
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		f.fs.Usage()
		return fmt.Errorf("unexpected arguments %v", f.fs.Args())
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	return runCore(cfg, core.Options{}, stdout, stderr)
}

// runCore runs the agent until SIGINT or SIGTERM (or, replaying, the end of the files).
func runCore(cfg core.Config, opts core.Options, stdout, stderr io.Writer) error {
	opts.Log = newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	// Sinks that print get the agent's standard output as an inherited file.
	opts.Stdout, _ = stdout.(*os.File)
	agent, err := core.NewAgent(cfg, opts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(opts.Files) == 0 && cfg.Subscription != "" {
		go reloadOnHangup(ctx, agent, cfg.Subscription, opts.Log)
	}
	if err := agent.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// reloadOnHangup re-reads the subscription file on SIGHUP and applies it to the running capture,
// as daemons do with their configuration. A file that does not parse, or names an interface the
// host lacks, is refused and the running set stays.
func reloadOnHangup(ctx context.Context, agent *core.Agent, file string, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		subs, err := core.LoadSubscriptions(file)
		if err == nil {
			err = agent.SetSubscriptions(ctx, subs)
		}
		if err != nil {
			log.Error("subscriptions not reloaded; the running set stays", "file", file, "err", err)
			continue
		}
		log.Info("subscriptions reloaded", "file", file, "subscriptions", len(subs))
	}
}

func runReplay(args []string, stdout, stderr io.Writer) error {
	gctune.Apply()
	f := newAgentFlags("quanyu replay", stderr, false)
	f.fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: quanyu replay [flags] FILE...\n\nRuns pcap or pcapng files through the same capture and sink plugins as the live agent\nand prints the records (JSON Lines) to stdout.\n\nFlags:")
		f.fs.PrintDefaults()
	}
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() == 0 {
		f.fs.Usage()
		return errors.New("no files to replay")
	}
	files := make([]string, 0, f.fs.NArg())
	for _, file := range f.fs.Args() {
		if _, err := os.Stat(file); err != nil {
			return fmt.Errorf("replay input: %w", err)
		}
		abs, err := filepath.Abs(file)
		if err != nil {
			return fmt.Errorf("replay input: %w", err)
		}
		files = append(files, abs)
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	// Replay reads files with the mmap plugin's file reader, whatever the live backend is.
	cfg.Capture.Backend = "mmap"
	return runCore(cfg, core.Options{Files: files, Progress: stderr}, stdout, stderr)
}
