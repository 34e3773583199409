package analysis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/alert"
	"github.com/quanyu/quanyu/analysis/internal/engine"
	"github.com/quanyu/quanyu/analysis/internal/notify"
	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/internal/mixwatch"
	"github.com/quanyu/quanyu/mix"
	"github.com/quanyu/quanyu/mix/api"
	"google.golang.org/grpc"
)

// Server is a running analysis: the OTLP receivers, the engine and its store, the API and the
// watch on mix.
type Server struct {
	cfg Config
	log *slog.Logger
	st  store.Store
	eng *engine.Engine
	rcv *receiver
	mix *mixwatch.Client
	ev  *alert.Evaluator
	ntf *notify.Notifier

	grpcLn, otlpHTTPLn, httpLn net.Listener
	grpcSrv                    *grpc.Server
	otlpHTTP, api              *http.Server
}

// New opens the store (creating it on first start), loads the last hour back into the engine and
// binds every listener, so that a port in use or a bad directory fails here, before Run.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := cfg.dataDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the data directory: %w", err)
	}
	st, err := store.OpenSQLite(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the store in %s: %w", dir, err)
	}
	eng, err := engine.New(ctx, engine.Options{Store: st, Log: log.With("component", "engine")})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("starting the engine: %w", err)
	}
	s := &Server{cfg: cfg, log: log, st: st, eng: eng}
	s.rcv = &receiver{ingest: eng.Ingest, maxBytes: cfg.OTLP.MaxRequestBytes}
	if err := s.listen(); err != nil {
		s.closeListeners()
		eng.Close()
		st.Close()
		return nil, err
	}
	_, _, apiAddr := s.Addrs()
	external := cfg.Alerts.ExternalURL
	if external == "" {
		external = "http://" + apiAddr
	}
	s.ntf = notify.New(notify.Options{Log: log.With("component", "notify"), ExternalURL: external,
		Timeout: cfg.Alerts.DeliveryTimeout, MaxAttempts: cfg.Alerts.DeliveryAttempts})
	eo := alert.Options{Log: log, Source: eng, Store: st, Notifier: s.ntf, Delay: cfg.Alerts.EvaluationDelay,
		NewEdgeGrace: cfg.Alerts.NewEdgeGrace, EvidenceFor: cfg.Alerts.EvidenceFor, ExternalURL: external}
	if cfg.Alerts.NewEdgeGrace == 0 {
		eo.NewEdgeGrace = -1 // alert.Options reads 0 as "the default"
	}
	if cfg.Alerts.Evidence && cfg.Mix.HTTPAddress != "" {
		eo.Evidence = &mixSubscriber{address: cfg.Mix.HTTPAddress, token: cfg.Mix.AdminToken,
			client: &http.Client{Timeout: 10 * time.Second}}
	}
	if s.ev, err = alert.New(ctx, eo); err != nil {
		s.closeListeners()
		_ = s.ntf.Close(ctx)
		eng.Close()
		st.Close()
		return nil, fmt.Errorf("starting the alert evaluator: %w", err)
	}
	if cfg.Mix.Address != "" {
		m := cfg.Mix
		s.mix = &mixwatch.Client{
			Dial: mix.DialOptions{Address: m.Address, Token: m.Token, CA: m.CA, Cert: m.Cert, Key: m.Key, ServerName: m.ServerName},
			Peer: mixPeer{id: cfg.id(),
				setCat:      func(c *api.Catalog) { eng.SetCatalog(c); s.ev.SetCatalog(c) },
				setRules:    s.ev.SetRules,
				setRecv:     s.ntf.SetReceivers,
				setSettings: s.ev.SetSettings},
			Log:     log.With("component", "mixwatch"),
			Offline: "showing endpoints with the last catalog, evaluating the last rules",
		}
	}
	return s, nil
}

func (s *Server) listen() error {
	var err error
	if a := s.cfg.OTLP.GRPCListen; a != "" {
		if s.grpcLn, err = net.Listen("tcp", a); err != nil {
			return fmt.Errorf("otlp.grpc_listen: %w", err)
		}
	}
	if a := s.cfg.OTLP.HTTPListen; a != "" {
		if s.otlpHTTPLn, err = net.Listen("tcp", a); err != nil {
			return fmt.Errorf("otlp.http_listen: %w", err)
		}
	}
	if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPListen); err != nil {
		return fmt.Errorf("http_listen: %w", err)
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.grpcLn, s.otlpHTTPLn, s.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// Addrs are the bound addresses (with the ports chosen when the configuration said :0).
func (s *Server) Addrs() (otlpGRPC, otlpHTTP, api string) {
	addr := func(ln net.Listener) string {
		if ln == nil {
			return ""
		}
		return ln.Addr().String()
	}
	return addr(s.grpcLn), addr(s.otlpHTTPLn), addr(s.httpLn)
}

// Run serves until ctx ends, then stops taking requests, flushes the engine to the store and
// closes it.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	serve := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	if s.grpcLn != nil {
		s.grpcSrv = s.rcv.grpcServer()
		serve("OTLP/gRPC receiver", func() error { return s.grpcSrv.Serve(s.grpcLn) })
	}
	if s.otlpHTTPLn != nil {
		s.otlpHTTP = &http.Server{Handler: s.rcv.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		serve("OTLP/HTTP receiver", func() error { return s.otlpHTTP.Serve(s.otlpHTTPLn) })
	}
	s.api = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	serve("API", func() error { return s.api.Serve(s.httpLn) })
	if s.mix != nil {
		wg.Go(func() { _ = s.mix.Run(ctx) })
	}
	wg.Go(func() { s.ev.Run(ctx) })
	o1, o2, a := s.Addrs()
	s.log.Info("analysis running", "otlp_grpc", o1, "otlp_http", o2, "api", "http://"+a+"/api/v1/graph", "mix", s.cfg.Mix.Address)
	<-ctx.Done()

	shutdown, done := context.WithTimeout(context.Background(), shutdownGrace)
	defer done()
	if s.grpcSrv != nil {
		stopped := make(chan struct{})
		go func() { s.grpcSrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-shutdown.Done():
			s.grpcSrv.Stop()
		}
	}
	if s.otlpHTTP != nil {
		_ = s.otlpHTTP.Shutdown(shutdown)
	}
	_ = s.api.Shutdown(shutdown)
	wg.Wait()
	var err error
	select {
	case err = <-errs:
	default:
	}
	// Alerts already handed over get their chance to be delivered.
	_ = s.ntf.Close(shutdown)
	if cerr := s.eng.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("flushing the engine: %w", cerr)
	}
	if cerr := s.st.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("closing the store: %w", cerr)
	}
	return err
}
