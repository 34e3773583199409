package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// web is the storefront: pages of its own, and products and a cart that it gets from api.
type web struct {
	api    string // base URL
	client *http.Client
	log    *slog.Logger
}

const indexPage = `<!doctype html>
<title>Lab storefront</title>
<h1>Lab storefront</h1>
<p>A demo shop of the Quanyu lab: <a href="/products">products</a>, a cart, and a slow page.</p>
`

// webHandler is web's routes, instrumented.
func webHandler(w *web, st *httpStats, latency time.Duration, errorRatio float64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(rw, indexPage)
	})
	mux.HandleFunc("GET /products", func(rw http.ResponseWriter, r *http.Request) {
		w.relay(rw, r, http.MethodGet, "/v1/products", nil)
	})
	mux.HandleFunc("GET /products/{id}", func(rw http.ResponseWriter, r *http.Request) {
		w.relay(rw, r, http.MethodGet, "/v1/products/"+r.PathValue("id"), nil)
	})
	mux.HandleFunc("POST /cart", func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, 64<<10))
		if err != nil {
			http.Error(rw, "reading the request: "+err.Error(), http.StatusBadRequest)
			return
		}
		// Read whole, so that api gets a Content-Length rather than a chunked body.
		w.relay(rw, r, http.MethodPost, "/v1/orders", bytes.NewReader(body))
	})
	mux.HandleFunc("DELETE /cart/{id}", func(rw http.ResponseWriter, r *http.Request) {
		w.relay(rw, r, http.MethodDelete, "/v1/orders/"+r.PathValue("id"), nil)
	})
	mux.HandleFunc("GET /slow", func(rw http.ResponseWriter, r *http.Request) {
		d := 300*time.Millisecond + rand.N(500*time.Millisecond)
		select {
		case <-r.Context().Done():
			return
		case <-time.After(d):
		}
		_, _ = fmt.Fprintf(rw, "slow page, %s\n", d.Round(time.Millisecond))
	})
	return instrument(mux, st, latency, errorRatio, rand.Float64)
}

// relay asks api and passes its answer on; api failing or unreachable is web's 502.
func (w *web) relay(rw http.ResponseWriter, r *http.Request, method, path string, body io.Reader) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(w.api, "/")+path, body)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := w.client.Do(req)
	if err != nil {
		w.log.Warn("api unreachable", "method", method, "path", path, "err", err)
		http.Error(rw, "api unreachable", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		_, _ = io.Copy(io.Discard, resp.Body)
		http.Error(rw, fmt.Sprintf("api failed: %s", resp.Status), http.StatusBadGateway)
		return
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		rw.Header().Set("Content-Type", ct)
	}
	rw.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(rw, resp.Body)
}

func runWeb(ctx context.Context, c serveConfig, log *slog.Logger) error {
	res := newResolver(c.dns, c.dnsTTL, c.dnsTCPEvery)
	w := &web{api: c.api, log: log, client: &http.Client{Transport: &http.Transport{
		DialContext: res.DialContext, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second,
	}}}
	return serveHTTP(ctx, c.listen, webHandler(w, newHTTPStats(), c.latency, c.errorRatio), log)
}
