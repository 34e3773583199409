package api

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// Limits of alert rules.
const (
	MaxRules = 1000               // rules in one set
	MaxFor   = 7 * 24 * time.Hour // a rule's "for"
)

// RuleKind says how a rule decides that something is wrong.
type RuleKind string

const (
	// KindThreshold alerts while the metric compares with a fixed value (op, value).
	KindThreshold RuleKind = "threshold"
	// KindForecast alerts while the metric is outside the band around its seasonal forecast.
	KindForecast RuleKind = "forecast"
	// KindNewEdge alerts when an edge the selector covers is seen for the first time: a client
	// application talking to a server it never talked to before. It has no metric, level (its
	// series are edges), op, value, band, direction or "for"; the alert fires at once and
	// resolves by itself NewEdgeHold later.
	KindNewEdge RuleKind = "new_edge"
)

// NewEdgeHold is how long a new-edge alert stays firing before it resolves by itself: long
// enough for a receiver that groups alerts to see it, short enough not to clutter.
const NewEdgeHold = 10 * time.Minute

// RuleKinds lists the kinds.
var RuleKinds = []RuleKind{KindThreshold, KindForecast, KindNewEdge}

// Metric is what a rule watches. Rates are per second; latencies and RTT are in seconds;
// ratios are fractions from 0 to 1 (0.05 is 5%).
type Metric string

const (
	MetricRequestRate          Metric = "request_rate"
	MetricErrorRatio           Metric = "error_ratio"
	MetricLatencyP50           Metric = "latency_p50"
	MetricLatencyP95           Metric = "latency_p95"
	MetricLatencyP99           Metric = "latency_p99"
	MetricBytesPerSecond       Metric = "bytes_per_second"
	MetricPacketsPerSecond     Metric = "packets_per_second"
	MetricNewConversationsRate Metric = "new_conversations_per_second"
	MetricRetransmissionRatio  Metric = "retransmission_ratio"
	MetricRTTP95               Metric = "rtt_p95"
)

// Metrics lists the metrics.
var Metrics = []Metric{MetricRequestRate, MetricErrorRatio, MetricLatencyP50, MetricLatencyP95,
	MetricLatencyP99, MetricBytesPerSecond, MetricPacketsPerSecond, MetricNewConversationsRate,
	MetricRetransmissionRatio, MetricRTTP95}

// L7Metrics are the metrics measured from L7 transactions.
var L7Metrics = []Metric{MetricRequestRate, MetricErrorRatio, MetricLatencyP50, MetricLatencyP95, MetricLatencyP99}

// IsL7 reports whether the metric is measured from L7 transactions.
func (m Metric) IsL7() bool { return slices.Contains(L7Metrics, m) }

// IsRatio reports whether the metric is a fraction from 0 to 1.
func (m Metric) IsRatio() bool {
	return m == MetricErrorRatio || m == MetricRetransmissionRatio
}

// Level is what a rule's series are kept per.
type Level string

const (
	LevelEdge     Level = "edge"     // a pair of applications (client → server)
	LevelNode     Level = "node"     // one application
	LevelEndpoint Level = "endpoint" // one L7 endpoint (method and path) of a server
	LevelAddress  Level = "address"  // one address
	LevelPort     Level = "port"     // one transport port
)

// Levels lists the levels.
var Levels = []Level{LevelEdge, LevelNode, LevelEndpoint, LevelAddress, LevelPort}

// Op is the comparison of a threshold rule: it fires while "observed op value" holds.
type Op string

const (
	OpGreater      Op = ">"
	OpGreaterEqual Op = ">="
	OpLess         Op = "<"
	OpLessEqual    Op = "<="
	OpEqual        Op = "=="
	OpNotEqual     Op = "!="
)

// Ops lists the comparisons.
var Ops = []Op{OpGreater, OpGreaterEqual, OpLess, OpLessEqual, OpEqual, OpNotEqual}

// Holds reports whether "observed op value" holds; an unknown op never holds.
func (o Op) Holds(observed, value float64) bool {
	switch o {
	case OpGreater:
		return observed > value
	case OpGreaterEqual:
		return observed >= value
	case OpLess:
		return observed < value
	case OpLessEqual:
		return observed <= value
	case OpEqual:
		return observed == value
	case OpNotEqual:
		return observed != value
	}
	return false
}

// Severity is how urgent an alert is.
type Severity string

const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Severities lists the severities, least urgent first.
var Severities = []Severity{SeverityInfo, SeverityWarning, SeverityCritical}

// Direction says which side of its band a forecast rule alerts on.
type Direction string

const (
	DirectionAbove Direction = "above"
	DirectionBelow Direction = "below"
	DirectionBoth  Direction = "both"
)

// Directions lists the directions.
var Directions = []Direction{DirectionAbove, DirectionBelow, DirectionBoth}

// RuleSelector chooses the series a rule covers; every field given must hold, and an empty
// field (the zero value) means any.
type RuleSelector struct {
	ClientApp string         // catalog app id of the client end
	ServerApp string         // catalog app id of the server end
	Owner     string         // owner name or team of either end, as in the catalog
	CIDR      netip.Prefix   // an address of either end in this range
	Port      *sdk.PortRange // the server port in this port or range
	Transport sdk.Transport  // 0: any
	Method    string         // an L7 method token (sdk.L7Methods)
}

// IsZero reports whether the selector selects everything.
func (s RuleSelector) IsZero() bool {
	return s.ClientApp == "" && s.ServerApp == "" && s.Owner == "" && !s.CIDR.IsValid() &&
		s.Port == nil && s.Transport == 0 && s.Method == ""
}

// Rule is an alert rule: mix stores and serves it, analysis evaluates it.
type Rule struct {
	ID       string
	Kind     RuleKind
	Metric   Metric
	Level    Level
	Selector RuleSelector
	// Op and Value are the comparison of a threshold rule; forecast rules have neither.
	Op    Op
	Value float64
	// For is how long the condition must hold before the alert fires (0: at once).
	For      time.Duration
	Severity Severity
	// Band is a forecast rule's band width in deviations; 0 takes PredictionSettings.Band.
	Band float64
	// Direction is the side a forecast rule alerts on; DirectionBoth when not given.
	Direction   Direction
	Labels      map[string]string // added to the alert's labels
	Annotations map[string]string // added to the alert's annotations (summary, description, …)
}

var ruleFields = []string{"id", "kind", "metric", "level", "selector", "op", "value", "for", "severity",
	"band", "direction", "labels", "annotations"}
var selectorFields = []string{"client_app", "server_app", "owner", "cidr", "port", "transport", "method"}

// labelName is the label-name syntax of Prometheus and Alertmanager, where alerts go.
var labelName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// checkLabelName is the rule for the keys of rule labels and annotations: Alertmanager label
// names of 1 to 63 characters, without the "__" prefix Prometheus reserves.
func checkLabelName(k string) string {
	switch {
	case k == "" || len(k) > MaxMapKeyLength:
		return fmt.Sprintf("names are 1 to %d characters", MaxMapKeyLength)
	case !labelName.MatchString(k):
		return "names are letters, digits and '_', not starting with a digit"
	case strings.HasPrefix(k, "__"):
		return "names starting with \"__\" are reserved"
	}
	return ""
}

// ParseRule reads one alert rule:
//
//	{"id": "api-errors", "kind": "threshold", "metric": "error_ratio", "level": "edge",
//	 "selector": {"client_app": "web", "server_app": "api", "cidr": "10.0.0.0/8",
//	              "port": "8080", "transport": "TCP", "method": "GET"},
//	 "op": ">", "value": 0.05, "for": "1m", "severity": "critical",
//	 "labels": {"team": "api"}, "annotations": {"summary": "API errors above 5%"}}
//
// A forecast rule has no op or value, and may have "band" (> 0) and "direction" (above, below,
// both). A new_edge rule has only an id, the kind, a selector (no method), severity, labels and
// annotations: {"id": "new-db-clients", "kind": "new_edge", "selector": {"server_app": "db"},
// "severity": "warning"}. The result is normalised; otherwise the error is a *sdk.ValidationError naming every
// bad field.
func ParseRule(data []byte) (Rule, error) {
	return parseOne(data, parseRule)
}

// ParseRules reads a set of rules: one rule, a JSON array of them, or {"rules": […]}. Ids must
// be unique.
func ParseRules(data []byte) ([]Rule, error) {
	return parseSet(data, "rules", "id", MaxRules, parseRule, func(r *Rule) string { return r.ID }, nil)
}

func parseRule(raw json.RawMessage, p string, e *errs) Rule {
	var r Rule
	fields, ok := fieldsOf(raw, p, "a rule", ruleFields, e)
	if !ok {
		return r
	}
	r.ID = id(fields, "id", p, true, e)
	r.Kind = enum(fields, "kind", p, RuleKinds, true, e)
	r.Severity = enum(fields, "severity", p, Severities, true, e)
	if v, ok := fields["selector"]; ok {
		r.Selector = parseRuleSelector(v, join(p, "selector"), e)
	}
	if r.Kind == KindNewEdge {
		// An event, not a measure: what the other kinds need to measure is refused rather
		// than ignored.
		for _, name := range []string{"metric", "for"} {
			if _, ok := fields[name]; ok {
				e.add(join(p, name), "a new_edge rule has no %s (it alerts once, when an edge is first seen)", name)
			}
		}
		r.Level = LevelEdge
		if _, ok := fields["level"]; ok {
			if l := enum(fields, "level", p, Levels, true, e); l != "" && l != LevelEdge {
				e.add(join(p, "level"), "a new_edge rule's series are edges, not %s", l)
			}
		}
		if r.Selector.Method != "" {
			e.add(join(join(p, "selector"), "method"), "a new_edge rule selects edges by their ends, port and transport, not by method")
		}
	} else {
		r.Metric = enum(fields, "metric", p, Metrics, true, e)
		r.Level = enum(fields, "level", p, Levels, true, e)
		if v, ok := fields["for"]; ok {
			r.For, _ = duration(v, join(p, "for"), 0, MaxFor, e)
		}
	}
	if v, ok := fields["labels"]; ok {
		r.Labels = stringMap(v, join(p, "labels"), false, checkLabelName, nil, e)
	}
	if v, ok := fields["annotations"]; ok {
		r.Annotations = stringMap(v, join(p, "annotations"), true, checkLabelName, nil, e)
	}

	// The fields that belong to one kind are refused on the other, rather than ignored, so
	// that a rule never silently does less than it says.
	only := func(name string, kind RuleKind, why string) bool {
		_, ok := fields[name]
		if ok && r.Kind != "" && r.Kind != kind {
			e.add(join(p, name), "only %s rules have %s (%s)", kind, name, why)
			return false
		}
		return ok
	}
	if only("op", KindThreshold, "the other kinds have no value to compare") {
		r.Op = enum(fields, "op", p, Ops, true, e)
	} else if r.Kind == KindThreshold {
		e.add(join(p, "op"), "required in a threshold rule (one of %s)", listOf(Ops))
	}
	if only("value", KindThreshold, "the other kinds have no value to compare") {
		fp := join(p, "value")
		if v, ok := number(fields["value"], fp, e); ok {
			r.Value = v
			switch {
			case r.Metric.IsRatio() && (v < 0 || v > 1):
				e.add(fp, "%v: %s is a fraction from 0 to 1 (0.05 is 5%%)", v, r.Metric)
			case v < 0:
				e.add(fp, "%v: %s is never negative", v, r.Metric)
			}
		}
	} else if r.Kind == KindThreshold {
		e.add(join(p, "value"), "required in a threshold rule")
	}
	if only("band", KindForecast, "only a forecast has a band") {
		fp := join(p, "band")
		if v, ok := number(fields["band"], fp, e); ok {
			if v <= 0 {
				e.add(fp, "%v: want more than 0 (leave it out to use the prediction settings' band)", v)
			}
			r.Band = v
		}
	}
	if only("direction", KindForecast, "only a forecast has sides") {
		r.Direction = enum(fields, "direction", p, Directions, true, e)
	}
	if r.Kind == KindForecast && r.Direction == "" {
		r.Direction = DirectionBoth
	}
	// Endpoint series come from the L7 rollups, which hold L7 figures only; and the method of a
	// request is known only there, where the ends are applications rather than addresses.
	if r.Level == LevelEndpoint && r.Metric != "" && !r.Metric.IsL7() {
		e.add(join(p, "metric"), "%s is not measured per endpoint (endpoint rules take %s)", r.Metric, listOf(L7Metrics))
	}
	if r.Selector.Method != "" && (r.Level == LevelAddress || r.Level == LevelPort) {
		e.add(join(join(p, "selector"), "method"), "a method selects edge, node and endpoint series, not %s ones", r.Level)
	}
	return r
}

func parseRuleSelector(raw json.RawMessage, p string, e *errs) RuleSelector {
	var s RuleSelector
	fields, ok := fieldsOf(raw, p, "a selector", selectorFields, e)
	if !ok {
		return s
	}
	// Every field may be given as "" (or be left out) to mean any.
	given := func(name string) (string, string, bool) {
		raw, ok := fields[name]
		if !ok {
			return "", "", false
		}
		fp := join(p, name)
		v, ok := str(raw, fp, e)
		return v, fp, ok && v != ""
	}
	for _, name := range []string{"client_app", "server_app"} {
		if v, fp, ok := given(name); ok {
			if !idPattern.MatchString(v) {
				e.add(fp, "%q is not an app id: %s", v, idReason)
				continue
			}
			if name == "client_app" {
				s.ClientApp = v
			} else {
				s.ServerApp = v
			}
		}
	}
	if v, fp, ok := given("owner"); ok {
		if reason := checkText(v, MaxNameLength, false); reason != "" {
			e.add(fp, "%s", reason)
		} else {
			s.Owner = v
		}
	}
	if v, fp, ok := given("cidr"); ok {
		pfx, err := parsePrefix(v)
		if err != nil {
			e.add(fp, "%v", err)
		}
		s.CIDR = pfx
	}
	if raw, ok := fields["port"]; ok {
		// A port is written as a string or a number, as in a subscription.
		fp := join(p, "port")
		var n json.Number
		v, isString := "", false
		if json.Unmarshal(raw, &n) == nil {
			v = n.String()
		} else {
			v, isString = str(raw, fp, e)
			if !isString {
				v = ""
			}
		}
		if v != "" {
			r, err := parsePortRange(v)
			if err != nil {
				e.add(fp, "%v", err)
			} else {
				s.Port = &r
			}
		}
	}
	if v, fp, ok := given("transport"); ok {
		t, known := sdk.ParseTransport(strings.TrimSpace(v))
		if !known {
			e.add(fp, "unknown transport %q (want TCP, UDP, ICMP, ICMPv6 or SCTP)", v)
		}
		s.Transport = t
	}
	if v, fp, ok := given("method"); ok {
		u := strings.ToUpper(strings.TrimSpace(v))
		if !slices.Contains(sdk.L7Methods, u) {
			e.add(fp, "unknown L7 method %q (want one of %s)", v, strings.Join(sdk.L7Methods, ", "))
		}
		s.Method = u
	}
	return s
}

type ruleSelectorJSON struct {
	ClientApp string `json:"client_app,omitempty"`
	ServerApp string `json:"server_app,omitempty"`
	Owner     string `json:"owner,omitempty"`
	CIDR      string `json:"cidr,omitempty"`
	Port      string `json:"port,omitempty"`
	Transport string `json:"transport,omitempty"`
	Method    string `json:"method,omitempty"`
}

// MarshalJSON writes the fields given; the port as "8080" or "8000-8999".
func (s RuleSelector) MarshalJSON() ([]byte, error) {
	j := ruleSelectorJSON{ClientApp: s.ClientApp, ServerApp: s.ServerApp, Owner: s.Owner, Method: s.Method}
	if s.CIDR.IsValid() {
		j.CIDR = s.CIDR.String()
	}
	if s.Port != nil {
		j.Port = portRangeText(*s.Port)
	}
	if s.Transport != 0 {
		j.Transport = s.Transport.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads a selector as ParseRule does.
func (s *RuleSelector) UnmarshalJSON(data []byte) error {
	var e errs
	v := parseRuleSelector(data, "", &e)
	if err := e.err(); err != nil {
		return err
	}
	*s = v
	return nil
}

type ruleJSON struct {
	ID          string            `json:"id"`
	Kind        RuleKind          `json:"kind"`
	Metric      Metric            `json:"metric,omitempty"` // always there but in new_edge rules
	Level       Level             `json:"level"`
	Selector    *RuleSelector     `json:"selector,omitempty"`
	Op          Op                `json:"op,omitempty"`
	Value       *float64          `json:"value,omitempty"`
	For         string            `json:"for,omitempty"` // always there but in new_edge rules
	Severity    Severity          `json:"severity"`
	Band        float64           `json:"band,omitempty"`
	Direction   Direction         `json:"direction,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// MarshalJSON writes the normalised rule; ParseRule reads it back to an equal value. The value
// is written for threshold rules (even when 0) and only for them.
func (r Rule) MarshalJSON() ([]byte, error) {
	j := ruleJSON{ID: r.ID, Kind: r.Kind, Metric: r.Metric, Level: r.Level, Op: r.Op,
		For: formatDuration(r.For), Severity: r.Severity, Band: r.Band, Direction: r.Direction,
		Labels: r.Labels, Annotations: r.Annotations}
	if !r.Selector.IsZero() {
		j.Selector = &r.Selector
	}
	if r.Kind == KindThreshold || r.Value != 0 {
		j.Value = &r.Value
	}
	if r.Kind == KindNewEdge {
		j.For = ""
	}
	return json.Marshal(j)
}

// UnmarshalJSON is ParseRule.
func (r *Rule) UnmarshalJSON(data []byte) error {
	v, err := ParseRule(data)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Validate checks a rule built in code against the parser's rules by writing it out and
// reading it back.
func (r *Rule) Validate() error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding rule %q: %w", r.ID, err)
	}
	_, err = ParseRule(data)
	return err
}

// ValidateRules checks a set of rules built in code as ParseRules checks a document.
func ValidateRules(rules []Rule) error {
	data, err := marshalSet(rules)
	if err != nil {
		return fmt.Errorf("encoding rules: %w", err)
	}
	_, err = ParseRules(data)
	return err
}
