package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/quanyu/quanyu/analysis"
	"github.com/quanyu/quanyu/core"
	"github.com/quanyu/quanyu/internal/confload"
	"github.com/quanyu/quanyu/internal/doctor"
	"github.com/quanyu/quanyu/mix"
)

// errNoBackend is doctor's exit status 1: the report has said why.
var errNoBackend = errors.New("no capture backend can run on this host")

func runDoctor(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quanyu doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "the agent's YAML configuration `file` (its backend, fallback and plugins are checked)")
	pluginDir := fs.String("plugin-dir", "", "`directory` of the quanyu-* plugin binaries")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: quanyu doctor [flags]\n\nChecks this host for what Quanyu needs — kernel, BPF, TCX or TC, AF_PACKET, capabilities,\n"+
			"plugins, ports, directories, tools — and says how to fix what is missing. Run it as the agent\n"+
			"runs (same user, same capabilities). Exits 1 when neither the agent's capture backend nor its\nfallback can run.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	flags := map[string]any{}
	if *pluginDir != "" {
		flags["plugin_dir"] = *pluginDir
	}
	cfg, err := core.Load(core.LoadOptions{File: *config, Flags: flags})
	if err != nil {
		return fmt.Errorf("loading the agent's configuration: %w", err)
	}
	opts, err := doctorOptions(cfg)
	if err != nil {
		return err
	}
	report := doctor.Run(doctor.System(), opts)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	} else if err := report.WriteText(stdout); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if !report.OK {
		return errNoBackend
	}
	return nil
}

// doctorOptions is what the agent configured in cfg would run, and where mix and analysis would
// keep their data and listen by default.
func doctorOptions(cfg core.Config) (doctor.Options, error) {
	dir := cfg.PluginDir
	if dir == "" {
		// As core.NewAgent does: "plugins" beside the quanyu binary.
		exe, err := os.Executable()
		if err != nil {
			return doctor.Options{}, fmt.Errorf("locating the quanyu binary to find plugins (set --plugin-dir): %w", err)
		}
		dir = filepath.Join(filepath.Dir(exe), "plugins")
	}
	o := doctor.Options{
		Backend: cfg.Capture.Backend, Fallback: cfg.Capture.Fallback, PluginDir: dir,
		Checksums: cfg.PluginChecksums,
		Tools: []doctor.Tool{
			{Name: "tshark", Why: "tests compare flows with its conversation table", Package: "tshark"},
			{Name: "chromium", Why: "the web UI's browser tests", Package: "chromium"},
			{Name: "bpftool", Why: "tests list the kernel's BPF programs and links", Package: "bpftool"},
		},
	}
	for _, s := range cfg.Sinks {
		o.Plugins = append(o.Plugins, "sink-"+s)
	}
	for _, d := range cfg.Decoders {
		o.Plugins = append(o.Plugins, "l7-"+d)
	}
	for _, program := range []string{"mix", "analysis"} {
		d, err := confload.StateDir(program)
		if err != nil {
			return doctor.Options{}, err
		}
		o.StateDirs = append(o.StateDirs, doctor.StateDir{Program: program, Dir: d})
	}
	// The ports are those of the default configurations, so this list follows the code.
	m, a := mix.Default(), analysis.Default()
	for _, p := range []struct{ addr, who, setting string }{
		{m.Listen, "mix (gRPC)", "listen (--listen) in mix's configuration"},
		{m.HTTPListen, "mix (HTTP admin API)", "http_listen (--http-listen) in mix's configuration"},
		{a.OTLP.GRPCListen, "analysis (OTLP/gRPC)", "otlp.grpc_listen (--otlp-grpc) in analysis's configuration"},
		{a.OTLP.HTTPListen, "analysis (OTLP/HTTP)", "otlp.http_listen (--otlp-http) in analysis's configuration"},
		{a.HTTPListen, "analysis (API and UI)", "http_listen (--http-listen) in analysis's configuration"},
	} {
		_, port, err := net.SplitHostPort(p.addr)
		if err != nil {
			return doctor.Options{}, fmt.Errorf("reading the default address %q: %w", p.addr, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			return doctor.Options{}, fmt.Errorf("reading the default address %q: %w", p.addr, err)
		}
		o.Ports = append(o.Ports, doctor.Port{Port: n, Who: p.who, Setting: p.setting})
	}
	return o, nil
}
