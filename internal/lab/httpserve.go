package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// httpStats counts the requests a service answered, by status and route; GET /stats shows
// them, which is how tests (and curious people) see that the client's traffic arrives.
type httpStats struct {
	mu       sync.Mutex
	total    int64
	byStatus map[int]int64
	byRoute  map[string]int64
}

// StatsSnapshot is the body of GET /stats of web and api.
type StatsSnapshot struct {
	Requests int64            `json:"requests"`
	ByStatus map[string]int64 `json:"by_status"`
	ByRoute  map[string]int64 `json:"by_route"`
}

func newHTTPStats() *httpStats {
	return &httpStats{byStatus: map[int]int64{}, byRoute: map[string]int64{}}
}

func (s *httpStats) add(route string, status int) {
	s.mu.Lock()
	s.total++
	s.byStatus[status]++
	s.byRoute[route]++
	s.mu.Unlock()
}

func (s *httpStats) snapshot() StatsSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := StatsSnapshot{Requests: s.total, ByStatus: map[string]int64{}, ByRoute: map[string]int64{}}
	for k, v := range s.byStatus {
		out.ByStatus[strconv.Itoa(k)] = v
	}
	for k, v := range s.byRoute {
		out.ByRoute[k] = v
	}
	return out
}

// statusRecorder keeps the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// instrument wraps a service's routes: every request but /stats and /healthz is delayed by
// the latency (±50%), fails with 500 at the error ratio, and is counted.
func instrument(mux *http.ServeMux, st *httpStats, latency time.Duration, errorRatio float64, rnd func() float64) http.Handler {
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, st.snapshot()) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stats" || r.URL.Path == "/healthz" {
			mux.ServeHTTP(w, r)
			return
		}
		sleepJitter(r.Context(), latency)
		rec := &statusRecorder{ResponseWriter: w}
		if errorRatio > 0 && rnd() < errorRatio {
			http.Error(rec, "injected error (--error-ratio)", http.StatusInternalServerError)
			st.add("injected error", rec.status)
			return
		}
		mux.ServeHTTP(rec, r)
		route := r.Pattern // set by the mux on this very request
		if route == "" {
			route = "no route"
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		st.add(route, rec.status)
	})
}

// sleepJitter sleeps d ±50%, or until ctx ends.
func sleepJitter(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(float64(d) * (0.5 + rand.Float64())))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveHTTP runs h on addr until ctx ends, then lets requests in flight finish for a moment.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return ctx.Err()
}
