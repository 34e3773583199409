package mix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/quanyu/quanyu/mix/internal/store"
	"github.com/quanyu/quanyu/mix/mixpb"
)

// Server is a running mix.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *store.SQLite
	hub   *hub
	admin *admin
	auth  *authorizer
	certs *certs

	grpcLn, httpLn net.Listener
	lock           *os.File // held while mix runs: one mix per data directory
}

// lockDir takes the data directory for this process: two mixes on one store would each push
// their own view to agents.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the data directory %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "mix.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the data directory's lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("the data directory %s is in use by another mix: %w", dir, err)
	}
	return f, nil
}

// New opens mix's store (creating its data directory on first start) and binds its listeners;
// Run serves.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := cfg.dataDir()
	if err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, dir)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("opening mix's store: %w", err)
	}
	s := &Server{cfg: cfg, log: log.With("component", "mix"), store: st, lock: lock, certs: &certs{cfg: cfg.TLS},
		auth: &authorizer{tokens: cfg.Tokens, mtls: cfg.TLS.ClientCA != ""}}
	fail := func(err error) (*Server, error) {
		s.closeListeners()
		_ = st.Close()
		_ = lock.Close()
		return nil, err
	}
	if s.hub, err = newHub(ctx, st, cfg.Push, log.With("component", "push")); err != nil {
		return fail(err)
	}
	s.admin = &admin{store: st, hub: s.hub, log: log.With("component", "admin")}
	if s.grpcLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return fail(fmt.Errorf("listening for gRPC on %s: %w", cfg.Listen, err))
	}
	if cfg.HTTPListen != "" {
		if s.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return fail(fmt.Errorf("listening for HTTP on %s: %w", cfg.HTTPListen, err))
		}
	}
	if _, err := s.certs.tlsConfig(); err != nil {
		return fail(err)
	}
	s.log.Info("mix started", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "data_dir", dir,
		"tokens", len(cfg.Tokens), "tls", cfg.TLS.Cert != "", "mtls", cfg.TLS.ClientCA != "")
	return s, nil
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.grpcLn, s.httpLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// GRPCAddr is the address the gRPC listener is bound to.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the HTTP listener's address, "" without one.
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Run serves until ctx ends, then stops both listeners and closes the store.
func (s *Server) Run(ctx context.Context) error {
	defer s.lock.Close()
	defer s.store.Close()
	tlsCfg, err := s.certs.tlsConfig()
	if err != nil {
		return err
	}
	opts := []grpc.ServerOption{
		grpc.UnaryInterceptor(s.auth.unary()), grpc.StreamInterceptor(s.auth.stream()),
		grpc.MaxRecvMsgSize(maxBody),
		// Agents keep one stream open for days; keepalives find the dead ones.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	gs := grpc.NewServer(opts...)
	mixpb.RegisterMixServer(gs, &grpcService{admin: s.admin, hub: s.hub})

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := gs.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("serving gRPC: %w", err)
		}
	}()
	var hs *http.Server
	if s.httpLn != nil {
		hs = &http.Server{Handler: s.httpHandler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if tlsCfg != nil {
				err = hs.ServeTLS(s.httpLn, "", "")
			} else {
				err = hs.Serve(s.httpLn)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving HTTP: %w", err)
			}
		}()
	}
	expCtx, stopExpiry := context.WithCancel(ctx)
	defer stopExpiry()
	go s.hub.expire(expCtx)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	// Watch streams last for ever: stop them rather than wait for them.
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		gs.Stop()
	}
	if hs != nil {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(shutCtx)
		cancel()
	}
	wg.Wait()
	s.log.Info("mix stopped")
	return runErr
}
