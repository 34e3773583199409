package otlpsink

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// optionsPath prefixes every key a validation error names: the sink's section of the agent's
// configuration.
const optionsPath = "plugins.sink-otlp"

// Duration is a time.Duration written as Go spells it in JSON ("10s", "500ms").
type Duration time.Duration

// UnmarshalJSON reads "10s"-style strings.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as "10s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Options are the sink's settings (plugins.sink-otlp in the agent's configuration).
type Options struct {
	// Protocol is "grpc" (OTLP/gRPC) or "http" (OTLP/HTTP with protobuf bodies).
	Protocol string `json:"protocol"`
	// Endpoint is host:port; empty means 127.0.0.1:4317 for grpc and 127.0.0.1:4318 for http.
	Endpoint string `json:"endpoint"`
	// Insecure sends in plain text. It is the default because the default endpoint is the
	// loopback; set it to false (with CAFile for a private CA) for anything beyond.
	Insecure bool `json:"insecure"`
	// CAFile is a PEM bundle to verify the collector with (empty: the system's roots).
	CAFile string `json:"ca_file"`
	// CertFile and KeyFile are the client's certificate and key, for mutual TLS.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// ServerName overrides the name the collector's certificate is checked against.
	ServerName string `json:"server_name"`
	// Headers are sent with every export (an API key, a tenant).
	Headers map[string]string `json:"headers"`
	// Compression is "gzip" or "none".
	Compression string `json:"compression"`
	// Timeout bounds one export, retries included.
	Timeout Duration `json:"timeout"`
	// Retry retries failed exports with exponential backoff (0.5 s up to 5 s) within Timeout.
	Retry bool `json:"retry"`
	// QueueSize is the most records waiting between Write and the exporters; past it, Write drops
	// batches and counts them (dropped.queue_full).
	QueueSize int `json:"queue_size"`
	// BatchSize is the most records in one export request.
	BatchSize int `json:"batch_size"`
	// MetricsInterval is how often the per-edge metrics are exported; 0 turns metrics off.
	MetricsInterval Duration `json:"metrics_interval"`
	// HostName is the resource's host.name; empty: the agent's host name.
	HostName string `json:"host_name"`
	// AgentID is the resource's quanyu.agent.id; empty: the agent's id (identity.id), else the
	// host name.
	AgentID string `json:"agent_id"`
}

// DefaultOptions: plain-text OTLP/gRPC to a collector on this host, gzip, 10 s per export with
// retries, a queue of 16384 records (a few seconds of a busy host's flows), requests of up to
// 2048 records (well under gRPC's 4 MiB), metrics every 10 s.
func DefaultOptions() Options {
	return Options{
		Protocol:        "grpc",
		Insecure:        true,
		Compression:     "gzip",
		Timeout:         Duration(10 * time.Second),
		Retry:           true,
		QueueSize:       16384,
		BatchSize:       2048,
		MetricsInterval: Duration(10 * time.Second),
	}
}

// parseOptions applies raw over the defaults and validates the result. Keys are decoded one at
// a time so that an error (an unknown key, a wrong type, a duration that does not parse) names
// the key it is about.
func parseOptions(raw json.RawMessage) (Options, error) {
	o := DefaultOptions()
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return o, o.Validate()
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return o, &sdk.ValidationError{Fields: []sdk.FieldError{{Path: optionsPath, Reason: err.Error()}}}
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var fields []sdk.FieldError
	for _, k := range names {
		one, _ := json.Marshal(map[string]json.RawMessage{k: keys[k]})
		dec := json.NewDecoder(bytes.NewReader(one))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			reason := err.Error()
			if strings.HasPrefix(reason, "json: unknown field") {
				reason = "unknown key"
			}
			fields = append(fields, sdk.FieldError{Path: optionsPath + "." + k, Reason: reason})
		}
	}
	if len(fields) > 0 {
		return o, &sdk.ValidationError{Fields: fields}
	}
	return o, o.Validate()
}

// Validate names every key that is wrong.
func (o Options) Validate() error {
	var fields []sdk.FieldError
	bad := func(key, format string, args ...any) {
		fields = append(fields, sdk.FieldError{Path: optionsPath + "." + key, Reason: fmt.Sprintf(format, args...)})
	}
	if o.Protocol != "grpc" && o.Protocol != "http" {
		bad("protocol", "%q is not grpc or http", o.Protocol)
	}
	if o.Endpoint != "" {
		host, port, err := net.SplitHostPort(o.Endpoint)
		if err != nil {
			bad("endpoint", "%q is not host:port: %v", o.Endpoint, err)
		} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || host == "" {
			bad("endpoint", "%q is not host:port with a port from 1 to 65535", o.Endpoint)
		}
	}
	if o.Insecure && (o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" || o.ServerName != "") {
		bad("insecure", "true, but TLS settings are given (ca_file, cert_file, key_file, server_name): set it to false to use them")
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		if o.CertFile == "" {
			bad("cert_file", "missing: key_file needs it")
		} else {
			bad("key_file", "missing: cert_file needs it")
		}
	}
	for _, f := range []struct{ key, path string }{{"ca_file", o.CAFile}, {"cert_file", o.CertFile}, {"key_file", o.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad(f.key, "%v", err)
		}
	}
	for k := range o.Headers {
		if k == "" {
			bad("headers", "a header with an empty name")
		}
	}
	if o.Compression != "gzip" && o.Compression != "none" {
		bad("compression", "%q is not gzip or none", o.Compression)
	}
	if t := time.Duration(o.Timeout); t < 100*time.Millisecond || t > 10*time.Minute {
		bad("timeout", "%s: want 100ms to 10m", t)
	}
	if o.QueueSize < 1 || o.QueueSize > 1<<24 {
		bad("queue_size", "%d: want 1 to %d", o.QueueSize, 1<<24)
	}
	if o.BatchSize < 1 || o.BatchSize > 65536 {
		bad("batch_size", "%d: want 1 to 65536", o.BatchSize)
	}
	if m := time.Duration(o.MetricsInterval); m != 0 && (m < 100*time.Millisecond || m > time.Hour) {
		bad("metrics_interval", "%s: want 0 (off) or 100ms to 1h", m)
	}
	if len(fields) > 0 {
		return &sdk.ValidationError{Fields: fields}
	}
	return nil
}

// endpoint is the collector's host:port.
func (o Options) endpoint() string {
	if o.Endpoint != "" {
		return o.Endpoint
	}
	if o.Protocol == "http" {
		return "127.0.0.1:4318"
	}
	return "127.0.0.1:4317"
}

// tlsConfig loads the certificates; nil when Insecure.
func (o Options) tlsConfig() (*tls.Config, error) {
	if o.Insecure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, &sdk.ValidationError{Fields: []sdk.FieldError{{Path: optionsPath + ".ca_file", Reason: err.Error()}}}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &sdk.ValidationError{Fields: []sdk.FieldError{{Path: optionsPath + ".ca_file", Reason: "no PEM certificate in " + o.CAFile}}}
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, &sdk.ValidationError{Fields: []sdk.FieldError{{Path: optionsPath + ".cert_file", Reason: err.Error()}}}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
