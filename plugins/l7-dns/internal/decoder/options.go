package decoder

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// optionsPath is where the options live in the agent's configuration, for error messages.
const optionsPath = "plugins.l7-dns"

// Options are the decoder's settings, as JSON: {"max_flows": 65536, "max_pending": 256,
// "query_timeout": "5s", "max_answers": 32}. Every key is optional.
type Options struct {
	// MaxFlows bounds the flows tracked at once; past it the least recently used one is ended
	// as if its flow had ended (its queries reported) and counted as evicted.
	MaxFlows int
	// MaxPending bounds the queries waiting for a response in one flow; past it the oldest is
	// reported without a response.
	MaxPending int
	// QueryTimeout is how long, in sample time, a query waits for its response before it is
	// reported without one.
	QueryTimeout time.Duration
	// MaxAnswers bounds the answers reported per transaction; the rest are counted.
	MaxAnswers int
}

// DefaultOptions are the settings before any Configure.
func DefaultOptions() Options {
	return Options{MaxFlows: 65536, MaxPending: 256, QueryTimeout: 5 * time.Second, MaxAnswers: 32}
}

// limits are the accepted ranges, chosen so that no setting can make the decoder's memory
// unbounded or its reports meaningless.
var limits = map[string][2]int{
	"max_flows":   {1, 1 << 24},
	"max_pending": {1, 1 << 16},
	"max_answers": {1, 1024},
}

const (
	minTimeout = time.Millisecond
	maxTimeout = time.Hour
)

// ParseOptions lays raw over DefaultOptions and validates the result. A bad key or value fails
// with an *sdk.ValidationError naming every key at fault.
func ParseOptions(raw json.RawMessage) (Options, error) {
	o := DefaultOptions()
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return o, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return o, &sdk.ValidationError{Fields: []sdk.FieldError{{Path: optionsPath,
			Reason: fmt.Sprintf("options are not a JSON object: %v", err)}}}
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []sdk.FieldError
	for _, k := range keys {
		if reason := o.set(k, fields[k]); reason != "" {
			errs = append(errs, sdk.FieldError{Path: optionsPath + "." + k, Reason: reason})
		}
	}
	// Range errors of the keys that did parse are reported too, so one round fixes them all.
	var ve *sdk.ValidationError
	if errors.As(o.Validate(), &ve) {
		for _, f := range ve.Fields {
			if !slices.ContainsFunc(errs, func(e sdk.FieldError) bool { return e.Path == f.Path }) {
				errs = append(errs, f)
			}
		}
	}
	if len(errs) == 0 {
		return o, nil
	}
	slices.SortFunc(errs, func(a, b sdk.FieldError) int { return strings.Compare(a.Path, b.Path) })
	return o, &sdk.ValidationError{Fields: errs}
}

// set applies one key and returns why it cannot, or "".
func (o *Options) set(key string, v json.RawMessage) string {
	var dst *int
	switch key {
	case "max_flows":
		dst = &o.MaxFlows
	case "max_pending":
		dst = &o.MaxPending
	case "max_answers":
		dst = &o.MaxAnswers
	case "query_timeout":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Sprintf("want a duration such as \"5s\", got %s", shorten(v))
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Sprintf("want a duration such as \"5s\", got %q", s)
		}
		o.QueryTimeout = d
		return ""
	default:
		return "unknown option (known: max_flows, max_pending, query_timeout, max_answers)"
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Sprintf("want a whole number, got %s", shorten(v))
	}
	return ""
}

// Validate checks every setting's range.
func (o Options) Validate() error {
	var errs []sdk.FieldError
	for key, v := range map[string]int{"max_flows": o.MaxFlows, "max_pending": o.MaxPending, "max_answers": o.MaxAnswers} {
		if r := limits[key]; v < r[0] || v > r[1] {
			errs = append(errs, sdk.FieldError{Path: optionsPath + "." + key,
				Reason: fmt.Sprintf("%d is outside %d to %d", v, r[0], r[1])})
		}
	}
	if o.QueryTimeout < minTimeout || o.QueryTimeout > maxTimeout {
		errs = append(errs, sdk.FieldError{Path: optionsPath + ".query_timeout",
			Reason: fmt.Sprintf("%v is outside %v to %v", o.QueryTimeout, minTimeout, maxTimeout)})
	}
	if len(errs) == 0 {
		return nil
	}
	slices.SortFunc(errs, func(a, b sdk.FieldError) int { return strings.Compare(a.Path, b.Path) })
	return &sdk.ValidationError{Fields: errs}
}

// shorten keeps an echoed value short, so a huge bad value does not flood the log.
func shorten(v json.RawMessage) string {
	const max = 40
	if len(v) > max {
		return string(v[:max]) + "..."
	}
	return string(v)
}
