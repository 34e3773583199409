package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/quanyu/quanyu/analysis"
	"github.com/quanyu/quanyu/internal/gctune"
)

func runAnalysis(args []string, _, stderr io.Writer) error {
	gctune.Apply()
	fs := flag.NewFlagSet("quanyu analysis", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "YAML configuration `file`")
	fs.String("otlp-grpc", "", "OTLP/gRPC receiver `address` (default 127.0.0.1:4317)")
	fs.String("otlp-http", "", "OTLP/HTTP receiver `address` (default 127.0.0.1:4318)")
	fs.String("http-listen", "", "API and /metrics `address` (default 127.0.0.1:8080)")
	fs.String("data-dir", "", "`directory` of the store (default: the user's state directory)")
	fs.String("mix", "", "mix's gRPC `address`, for the application catalog")
	fs.String("mix-token", "", "bearer `token` for mix")
	fs.String("mix-http", "", "mix's HTTP admin API `address`, for the UI's agents and subscriptions pages")
	fs.String("mix-admin-token", "", "bearer `token` for mix's admin API (viewer to read, admin to edit)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: quanyu analysis [flags]\n\nRuns analysis: receives the agents' OTLP, builds the live service graph with applications and\nowners from mix's catalog, and serves it as JSON (/api/v1/graph), Prometheus /metrics and more.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	// Flags are the top layer, and only those given: an unset flag must not hide the file's value.
	flags := map[string]any{}
	fs.Visit(func(f *flag.Flag) {
		key := map[string]string{"otlp-grpc": "otlp.grpc_listen", "otlp-http": "otlp.http_listen",
			"http-listen": "http_listen", "data-dir": "data_dir", "mix": "mix.address", "mix-token": "mix.token",
			"mix-http": "mix.http_address", "mix-admin-token": "mix.admin_token"}[f.Name]
		if key != "" {
			flags[key] = f.Value.String()
		}
	})
	cfg, err := analysis.Load(analysis.LoadOptions{File: *config, Flags: flags})
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := analysis.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
