package analysis

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/engine"
	"github.com/quanyu/quanyu/analysis/ui"
)

// handler serves the web UI at /, the JSON API under /api/v1/ (mix's admin API passed on under
// /api/v1/mix/), /metrics and /healthz.
func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/graph", s.getGraph)
	mux.HandleFunc("GET /api/v1/nodegraph", s.getNodeGraph)
	mux.HandleFunc("GET /api/v1/flows", s.getFlows)
	mux.HandleFunc("GET /api/v1/flows/{community_id}", s.getConversation)
	mux.HandleFunc("GET /api/v1/series", s.getSeries)
	mux.HandleFunc("GET /api/v1/l7/endpoints", s.getL7Endpoints)
	mux.HandleFunc("GET /api/v1/agents", s.getAgents)
	mux.HandleFunc("GET /api/v1/alerts", s.getAlerts)
	mux.HandleFunc("GET /api/v1/alerts/{id}", s.getAlert)
	mux.HandleFunc("GET /api/v1/events", s.getEvents)
	mux.HandleFunc("GET /api/v1/forecasts", s.getForecasts)
	mux.HandleFunc("GET /metrics", s.getMetrics)
	mux.Handle("/api/v1/mix/", s.mixProxy())
	// Browsers ask for an icon whatever the page says; "none" is an answer, a 404 an error in
	// the console.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no API at %s %s", r.Method, r.URL.Path))
	})
	mux.Handle("/", ui.Handler())
	return mux
}

// paramError is a bad query parameter, named.
type paramError struct{ name, reason string }

func (e *paramError) Error() string { return e.name + ": " + e.reason }

func apiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// fail answers err: a bad parameter is the client's (400), anything else ours (500).
func fail(w http.ResponseWriter, err error) {
	if pe, ok := err.(*paramError); ok {
		apiError(w, http.StatusBadRequest, pe.Error())
		return
	}
	if engine.IsInvalid(err) {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	if engine.IsNotFound(err) {
		apiError(w, http.StatusNotFound, err.Error())
		return
	}
	apiError(w, http.StatusInternalServerError, err.Error())
}

// duration reads a duration parameter (5m, 1h, 90s), def when absent.
func duration(r *http.Request, name string, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, &paramError{name, fmt.Sprintf("%q is not a positive duration such as 5m or 1h", v)}
	}
	return d, nil
}

// timeParam reads a time: RFC 3339, or a duration before now ("15m" = 15 minutes ago).
func timeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, &paramError{name, fmt.Sprintf("%q is neither an RFC 3339 time nor a duration before now such as 15m", v)}
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, &paramError{name, fmt.Sprintf("%q is not a whole number from %d to %d", v, lo, hi)}
	}
	return n, nil
}

func (s *Server) graphQuery(r *http.Request) (engine.GraphQuery, error) {
	since, err := duration(r, "since", 5*time.Minute)
	if err != nil {
		return engine.GraphQuery{}, err
	}
	q := r.URL.Query()
	level := q.Get("level")
	switch level {
	case "", "app", "l3", "l4":
	default:
		return engine.GraphQuery{}, &paramError{"level", fmt.Sprintf("%q is not app, l3 or l4", level)}
	}
	return engine.GraphQuery{Since: since, Level: level, App: q.Get("app"), Owner: q.Get("owner"), Protocol: q.Get("protocol")}, nil
}

func (s *Server) getGraph(w http.ResponseWriter, r *http.Request) {
	q, err := s.graphQuery(r)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, s.eng.Graph(q))
}

func (s *Server) getAgents(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"agents": s.eng.Agents()})
}

func (s *Server) getFlows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var fq engine.FlowQuery
	var err error
	if fq.From, err = timeParam(r, "from", time.Time{}); err != nil {
		fail(w, err)
		return
	}
	if fq.To, err = timeParam(r, "to", time.Time{}); err != nil {
		fail(w, err)
		return
	}
	if v := q.Get("addr"); v != "" {
		if fq.Addr, err = netip.ParseAddr(v); err != nil {
			fail(w, &paramError{"addr", fmt.Sprintf("%q is not an IP address", v)})
			return
		}
	}
	if v := q.Get("cidr"); v != "" {
		if fq.CIDR, err = netip.ParsePrefix(v); err != nil {
			fail(w, &paramError{"cidr", fmt.Sprintf("%q is not a CIDR such as 10.0.0.0/8", v)})
			return
		}
	}
	port, err := intParam(r, "port", 0, 0, 65535)
	if err != nil {
		fail(w, err)
		return
	}
	if fq.Limit, err = intParam(r, "limit", 100, 1, 1000); err != nil {
		fail(w, err)
		return
	}
	fq.Port = uint16(port)
	fq.NIC, fq.Agent, fq.Transport = q.Get("nic"), q.Get("agent"), q.Get("transport")
	fq.L7Method, fq.CommunityID, fq.Cursor = q.Get("method"), q.Get("community_id"), q.Get("cursor")
	page, err := s.eng.Flows(fq)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, page)
}

func (s *Server) getConversation(w http.ResponseWriter, r *http.Request) {
	c, err := s.eng.Conversation(r.PathValue("community_id"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, c)
}

func (s *Server) getSeries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sq := engine.SeriesQuery{Metric: q.Get("metric"), Level: q.Get("level"), Source: q.Get("source"),
		Target: q.Get("target"), Protocol: q.Get("protocol"), Resolution: q.Get("resolution")}
	// edge=SOURCE>TARGET is the short form of source= and target=.
	if e := q.Get("edge"); e != "" {
		src, dst, ok := strings.Cut(e, ">")
		if !ok {
			fail(w, &paramError{"edge", fmt.Sprintf("%q is not SOURCE>TARGET (node ids)", e)})
			return
		}
		sq.Source, sq.Target = src, dst
	}
	port, err := intParam(r, "port", 0, 0, 65535)
	if err != nil {
		fail(w, err)
		return
	}
	sq.Port = uint16(port)
	if sq.From, err = timeParam(r, "from", time.Now().Add(-time.Hour)); err != nil {
		fail(w, err)
		return
	}
	if sq.To, err = timeParam(r, "to", time.Now()); err != nil {
		fail(w, err)
		return
	}
	series, err := s.eng.Series(sq)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, series)
}

func (s *Server) getL7Endpoints(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lq := engine.L7Query{Source: q.Get("source"), Target: q.Get("target")}
	var err error
	if lq.Since, err = duration(r, "since", time.Hour); err != nil {
		fail(w, err)
		return
	}
	if lq.Limit, err = intParam(r, "limit", 20, 1, 1000); err != nil {
		fail(w, err)
		return
	}
	eps, err := s.eng.L7Endpoints(lq)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, map[string]any{"endpoints": eps})
}
