package analysis

import (
	"bufio"
	"math"
	"net/http"
)

// getMetrics serves Prometheus's text format: the service graph under the names of Tempo's and
// the OpenTelemetry Collector's servicegraph connector (traces_service_graph_request_total,
// …_failed_total, …_server_seconds), so Grafana's service-graph views work on it as they are, and
// analysis's own counters as quanyu_analysis_*_total.
func (s *Server) getMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	p := &promWriter{w: bw}
	edges := s.eng.ServiceGraph()
	p.family("traces_service_graph_request_total", "counter", "Requests between two nodes, counted once per conversation however many agents saw it.")
	for _, e := range edges {
		p.sample("traces_service_graph_request_total", sgLabels(e.Client, e.Server, e.ConnectionType), float64(e.Requests))
	}
	p.family("traces_service_graph_request_failed_total", "counter", "Failed requests between two nodes (HTTP 5xx, DNS errors, malformed).")
	for _, e := range edges {
		p.sample("traces_service_graph_request_failed_total", sgLabels(e.Client, e.Server, e.ConnectionType), float64(e.Failed))
	}
	p.family("traces_service_graph_request_server_seconds", "histogram", "Request latency seen at the server: request's first byte to response's first byte.")
	for _, e := range edges {
		base := sgLabels(e.Client, e.Server, e.ConnectionType)
		var cum uint64
		for i, le := range e.Bounds {
			cum += e.Counts[i]
			p.sample("traces_service_graph_request_server_seconds_bucket", append(base, label{"le", formatFloat(le)}), float64(cum))
		}
		p.sample("traces_service_graph_request_server_seconds_bucket", append(base, label{"le", formatFloat(math.Inf(1))}), float64(e.Count))
		p.sample("traces_service_graph_request_server_seconds_sum", base, e.Sum)
		p.sample("traces_service_graph_request_server_seconds_count", base, float64(e.Count))
	}
	p.family("quanyu_analysis_edges", "gauge", "Edges in the service graph.")
	p.sample("quanyu_analysis_edges", nil, float64(len(edges)))
	p.counters("quanyu_analysis_", "analysis counter", s.rcv.counters())
	p.counters("quanyu_analysis_", "analysis counter", s.eng.Counters())
	ac := s.ev.Counters()
	for _, g := range []struct{ key, help string }{{"rules", "Alert rules being evaluated."},
		{"series", "Series the alert rules cover."}, {"edges_known", "Edges seen so far, for new-edge events."}} {
		name := "quanyu_analysis_alert_" + g.key
		p.family(name, "gauge", g.help)
		p.sample(name, nil, float64(ac[g.key]))
		delete(ac, g.key)
	}
	// Evaluation time is a duration: exported in seconds, Prometheus's base unit.
	p.family("quanyu_analysis_alert_evaluation_seconds_total", "counter", "Time spent evaluating alert rules.")
	p.sample("quanyu_analysis_alert_evaluation_seconds_total", nil, float64(ac["evaluation_ns"])/1e9)
	delete(ac, "evaluation_ns")
	p.counters("quanyu_analysis_alert_", "alert evaluator counter", ac)
	p.counters("quanyu_analysis_notify_", "alert delivery counter", s.ntf.Counters())
	if s.mix != nil {
		c := s.mix.Counters()
		p.family("quanyu_analysis_mix_connected", "gauge", "1 while analysis watches mix for the catalog.")
		p.sample("quanyu_analysis_mix_connected", nil, float64(c["mix.connected"]))
		delete(c, "mix.connected")
		p.counters("quanyu_analysis_", "analysis counter", c)
	}
	_ = bw.Flush()
}

func sgLabels(client, server, connType string) []label {
	return []label{{"client", client}, {"server", server}, {"connection_type", connType}}
}
