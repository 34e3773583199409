package decoder

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/quanyu/quanyu/plugins/l7-http/internal/http1"
	"github.com/quanyu/quanyu/sdk"
)

// optionsPath is where the options sit in the agent's configuration, for error messages.
const optionsPath = "plugins.l7-http"

// Options are the decoder's settings: the agent configuration's plugins.l7-http section.
type Options struct {
	// MaxFlows bounds the connections followed at once; past it the least recently active one
	// is reported (its requests partial) and forgotten.
	MaxFlows int
	// MaxPending bounds the requests one connection holds while waiting for responses.
	MaxPending int
	// IdleTimeout forgets a connection with no sample for this long, in capture time, as if it
	// had ended. The agent normally says when a flow ends; this bounds what a lost end costs.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a message's start line and header block.
	MaxHeaderBytes int
}

// Default is the configuration before any Configure.
func Default() Options {
	return Options{
		MaxFlows:       65536,
		MaxPending:     http1.DefaultMaxPending,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: http1.DefaultMaxHeaderBytes,
	}
}

// Bounds of the settings. The upper ones keep a typo from asking for gigabytes.
const (
	maxMaxFlows       = 1 << 24
	maxMaxPending     = 1 << 16
	minHeaderBytes    = 256
	maxMaxHeaderBytes = 1 << 20
)

// Validate names every setting that is out of bounds.
func (o Options) Validate() error {
	var fields []sdk.FieldError
	add := func(key, format string, args ...any) {
		fields = append(fields, sdk.FieldError{Path: optionsPath + "." + key, Reason: fmt.Sprintf(format, args...)})
	}
	if o.MaxFlows < 1 || o.MaxFlows > maxMaxFlows {
		add("max_flows", "%d is not between 1 and %d", o.MaxFlows, maxMaxFlows)
	}
	if o.MaxPending < 1 || o.MaxPending > maxMaxPending {
		add("max_pending", "%d is not between 1 and %d", o.MaxPending, maxMaxPending)
	}
	if o.IdleTimeout <= 0 {
		add("idle_timeout", "%s is not a positive duration", o.IdleTimeout)
	}
	if o.MaxHeaderBytes < minHeaderBytes || o.MaxHeaderBytes > maxMaxHeaderBytes {
		add("max_header_bytes", "%d is not between %d and %d", o.MaxHeaderBytes, minHeaderBytes, maxMaxHeaderBytes)
	}
	if len(fields) > 0 {
		return &sdk.ValidationError{Fields: fields}
	}
	return nil
}

// ParseOptions reads the plugin's JSON options over the defaults: {"max_flows": 65536,
// "max_pending": 64, "idle_timeout": "2m", "max_header_bytes": 8192}, every key optional. Each
// key is read on its own, so an error names the key, and every wrong key is reported at once.
func ParseOptions(raw json.RawMessage) (Options, error) {
	o := Default()
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return o, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return o, &sdk.ValidationError{Fields: []sdk.FieldError{{Path: optionsPath,
			Reason: "reading the options as a JSON object: " + err.Error()}}}
	}
	var fields []sdk.FieldError
	bad := func(key string, err error) {
		fields = append(fields, sdk.FieldError{Path: optionsPath + "." + key, Reason: err.Error()})
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		v := m[key]
		var err error
		switch key {
		case "max_flows":
			err = json.Unmarshal(v, &o.MaxFlows)
		case "max_pending":
			err = json.Unmarshal(v, &o.MaxPending)
		case "max_header_bytes":
			err = json.Unmarshal(v, &o.MaxHeaderBytes)
		case "idle_timeout":
			var s string
			if err = json.Unmarshal(v, &s); err == nil {
				o.IdleTimeout, err = time.ParseDuration(s)
			}
		default:
			err = fmt.Errorf("unknown key (the keys are max_flows, max_pending, idle_timeout, max_header_bytes)")
		}
		if err != nil {
			bad(key, err)
		}
	}
	var ve *sdk.ValidationError
	if errors.As(o.Validate(), &ve) {
		for _, f := range ve.Fields {
			if !slices.ContainsFunc(fields, func(g sdk.FieldError) bool { return g.Path == f.Path }) {
				fields = append(fields, f)
			}
		}
	}
	if len(fields) > 0 {
		return o, &sdk.ValidationError{Fields: fields}
	}
	return o, nil
}
