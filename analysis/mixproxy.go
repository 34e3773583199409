package analysis

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// mixProxy passes the UI's /api/v1/mix/… requests to mix's HTTP admin API (/api/v1/…) with the
// configured token, so that the page has one origin and never holds a token itself. mix's own
// answers (a 400 naming the bad fields included) come back as they are; when mix cannot be
// reached the answer is a 502 that says so.
func (s *Server) mixProxy() http.Handler {
	if s.cfg.Mix.HTTPAddress == "" {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			apiError(w, http.StatusServiceUnavailable, "analysis has no address for mix's admin API (mix.http_address, --mix-http): agents and subscriptions cannot be shown")
		})
	}
	target := &url.URL{Scheme: "http", Host: s.cfg.Mix.HTTPAddress}
	token := s.cfg.Mix.AdminToken
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.URL.Path = "/api/v1/" + strings.TrimPrefix(r.In.URL.Path, "/api/v1/mix/")
			r.Out.URL.RawPath = ""
			r.Out.Header.Del("Cookie")
			r.Out.Header.Del("Authorization")
			if token != "" {
				r.Out.Header.Set("Authorization", "Bearer "+token)
			}
		},
		Transport: &http.Transport{ResponseHeaderTimeout: 10 * time.Second},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			apiError(w, http.StatusBadGateway, fmt.Sprintf("analysis cannot reach mix's admin API at %s: %v", s.cfg.Mix.HTTPAddress, err))
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodPost, http.MethodDelete:
			rp.ServeHTTP(w, r)
		default:
			apiError(w, http.StatusMethodNotAllowed, r.Method+" is not passed to mix")
		}
	})
}
