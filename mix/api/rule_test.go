package api_test

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// exampleRule is the threshold rule of the design, with every field a threshold rule has.
const exampleRule = `{"id": "api-errors", "kind": "threshold", "metric": "error_ratio", "level": "edge",
	"selector": {"client_app": "web", "server_app": "api", "owner": "", "cidr": "10.0.0.0/8",
	             "port": "8080", "transport": "TCP", "method": "GET"},
	"op": ">", "value": 0.05, "for": "1m", "severity": "critical",
	"labels": {"team": "api"}, "annotations": {"summary": "API errors above 5%"}}`

// exampleForecast uses every field a forecast rule has.
const exampleForecast = `{"id": "web-traffic", "kind": "forecast", "metric": "request_rate", "level": "node",
	"selector": {"server_app": "web", "owner": "Web team", "cidr": "2001:db8::1/32", "port": "8000-8100",
	             "transport": "udp", "method": "post"},
	"band": 2.5, "direction": "below", "for": "5m", "severity": "warning",
	"labels": {"page": "no"}, "annotations": {"runbook": "https://runbooks.example/web\nstep two"}}`

func TestParseRuleExample(t *testing.T) {
	r, err := api.ParseRule([]byte(exampleRule))
	if err != nil {
		t.Fatalf("the example is rejected: %v", err)
	}
	port := sdk.PortRange{First: 8080, Last: 8080}
	want := api.Rule{
		ID: "api-errors", Kind: api.KindThreshold, Metric: api.MetricErrorRatio, Level: api.LevelEdge,
		Selector: api.RuleSelector{ClientApp: "web", ServerApp: "api", CIDR: pfx("10.0.0.0/8"), Port: &port,
			Transport: sdk.TransportTCP, Method: "GET"},
		Op: api.OpGreater, Value: 0.05, For: time.Minute, Severity: api.SeverityCritical,
		Labels: map[string]string{"team": "api"}, Annotations: map[string]string{"summary": "API errors above 5%"},
	}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("ParseRule(example) =\n%+v\nwant\n%+v", r, want)
	}
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"id":"api-errors","kind":"threshold","metric":"error_ratio","level":"edge",` +
		`"selector":{"client_app":"web","server_app":"api","cidr":"10.0.0.0/8","port":"8080","transport":"TCP","method":"GET"},` +
		`"op":"\u003e","value":0.05,"for":"1m","severity":"critical","labels":{"team":"api"},"annotations":{"summary":"API errors above 5%"}}`
	if string(out) != wantJSON {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, wantJSON)
	}
	roundTrip(t, r, api.ParseRule, (*api.Rule).Validate)

	f, err := api.ParseRule([]byte(exampleForecast))
	if err != nil {
		t.Fatalf("the forecast example is rejected: %v", err)
	}
	wide := sdk.PortRange{First: 8000, Last: 8100}
	wantF := api.Rule{
		ID: "web-traffic", Kind: api.KindForecast, Metric: api.MetricRequestRate, Level: api.LevelNode,
		Selector: api.RuleSelector{ServerApp: "web", Owner: "Web team", CIDR: pfx("2001:db8::/32"), Port: &wide,
			Transport: sdk.TransportUDP, Method: "POST"},
		Band: 2.5, Direction: api.DirectionBelow, For: 5 * time.Minute, Severity: api.SeverityWarning,
		Labels: map[string]string{"page": "no"}, Annotations: map[string]string{"runbook": "https://runbooks.example/web\nstep two"},
	}
	if !reflect.DeepEqual(f, wantF) {
		t.Errorf("ParseRule(forecast) =\n%+v\nwant\n%+v", f, wantF)
	}
	roundTrip(t, f, api.ParseRule, (*api.Rule).Validate)
}

// rule is a minimal valid threshold rule with extra fields.
func rule(extra string) string {
	doc := `{"id":"r","kind":"threshold","metric":"request_rate","level":"edge","op":">","value":1,"severity":"info"`
	if extra != "" {
		doc += "," + extra
	}
	return doc + "}"
}

// forecast is a minimal valid forecast rule with extra fields.
func forecast(extra string) string {
	doc := `{"id":"f","kind":"forecast","metric":"request_rate","level":"edge","severity":"info"`
	if extra != "" {
		doc += "," + extra
	}
	return doc + "}"
}

func TestRuleFields(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(api.Rule) bool
	}{
		{"every kind, any case", strings.Replace(forecast(""), `"forecast"`, `"Forecast"`, 1),
			func(r api.Rule) bool { return r.Kind == api.KindForecast }},
		{"a forecast rule without direction is both, without band takes the setting", forecast(""),
			func(r api.Rule) bool { return r.Direction == api.DirectionBoth && r.Band == 0 && r.Op == "" }},
		{"for defaults to 0", rule(""), func(r api.Rule) bool { return r.For == 0 }},
		{"for in days", rule(`"for":"1d"`), func(r api.Rule) bool { return r.For == 24*time.Hour }},
		{"for at its limit", rule(`"for":"7d"`), func(r api.Rule) bool { return r.For == api.MaxFor }},
		{"value 0", rule(`"value":0`), func(r api.Rule) bool { return r.Value == 0 }},
		{"a ratio of 1", strings.Replace(rule(`"value":1`), "request_rate", "retransmission_ratio", 1),
			func(r api.Rule) bool { return r.Value == 1 && r.Metric == api.MetricRetransmissionRatio }},
		{"a large rate", rule(`"value":1e12`), func(r api.Rule) bool { return r.Value == 1e12 }},
		{"port as a number", rule(`"selector":{"port":53}`),
			func(r api.Rule) bool { return *r.Selector.Port == sdk.PortRange{First: 53, Last: 53} }},
		{"port 0", rule(`"selector":{"port":"0"}`),
			func(r api.Rule) bool { return r.Selector.Port != nil && *r.Selector.Port == sdk.PortRange{} }},
		{"a bare address as cidr", rule(`"selector":{"cidr":"::ffff:192.0.2.1"}`),
			func(r api.Rule) bool { return r.Selector.CIDR == pfx("192.0.2.1/32") }},
		{"empty selector fields are any", rule(`"selector":{"client_app":"","server_app":"","owner":"","cidr":"","port":"","transport":"","method":""}`),
			func(r api.Rule) bool { return r.Selector.IsZero() }},
		{"ICMP6", rule(`"selector":{"transport":"icmp6"}`),
			func(r api.Rule) bool { return r.Selector.Transport == sdk.TransportICMPv6 }},
		{"empty labels are none", rule(`"labels":{},"annotations":null`),
			func(r api.Rule) bool { return r.Labels == nil && r.Annotations == nil }},
		{"label names", rule(`"labels":{"_a":"","B_9":"x"}`),
			func(r api.Rule) bool { return len(r.Labels) == 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := api.ParseRule([]byte(tt.doc))
			if err != nil {
				t.Fatalf("ParseRule(%s): %v", tt.doc, err)
			}
			if !tt.check(r) {
				t.Errorf("ParseRule(%s) = %+v", tt.doc, r)
			}
			roundTrip(t, r, api.ParseRule, (*api.Rule).Validate)
		})
	}
	// Every metric, level, op, severity and direction is accepted and comes back as written
	// (endpoint series have L7 metrics only).
	for _, m := range api.Metrics {
		for _, l := range api.Levels {
			if l == api.LevelEndpoint && !m.IsL7() {
				continue
			}
			for _, s := range api.Severities {
				doc := fmt.Sprintf(`{"id":"x","kind":"forecast","metric":%q,"level":%q,"severity":%q}`, m, l, s)
				r, err := api.ParseRule([]byte(doc))
				if err != nil || r.Metric != m || r.Level != l || r.Severity != s {
					t.Errorf("ParseRule(%s) = %+v, %v", doc, r, err)
				}
			}
		}
	}
	for _, op := range api.Ops {
		r, err := api.ParseRule([]byte(rule(fmt.Sprintf(`"op":%q`, op))))
		if err != nil || r.Op != op {
			t.Errorf("op %s: %+v, %v", op, r, err)
		}
	}
	for _, d := range api.Directions {
		r, err := api.ParseRule([]byte(forecast(fmt.Sprintf(`"direction":%q`, strings.ToUpper(string(d))))))
		if err != nil || r.Direction != d {
			t.Errorf("direction %s: %+v, %v", d, r, err)
		}
	}
	for _, m := range sdk.L7Methods {
		r, err := api.ParseRule([]byte(rule(fmt.Sprintf(`"selector":{"method":%q}`, strings.ToLower(m)))))
		if err != nil || r.Selector.Method != m {
			t.Errorf("method %s: %+v, %v", m, r, err)
		}
	}
	// Limits are inclusive.
	long := fmt.Sprintf(`"labels":{%s},"annotations":{%q:%q}`, manyKeys(api.MaxMapEntries),
		strings.Repeat("a", api.MaxMapKeyLength), strings.Repeat("v", api.MaxMapValueLength))
	if _, err := api.ParseRule([]byte(rule(long))); err != nil {
		t.Errorf("labels at their limits rejected: %v", err)
	}
}

// newEdge is a valid new_edge rule with extra fields added.
func newEdge(extra string) string {
	r := `{"id":"n","kind":"new_edge","severity":"warning"`
	if extra != "" {
		r += "," + extra
	}
	return r + "}"
}

// A new_edge rule: its level is edge whether given or not, it writes neither metric nor for,
// and reads back equal.
func TestParseNewEdgeRule(t *testing.T) {
	for _, doc := range []string{newEdge(`"selector":{"server_app":"db","port":"5432","transport":"TCP"}`),
		newEdge(`"level":"edge","selector":{"server_app":"db","port":5432,"transport":"tcp"}`)} {
		r, err := api.ParseRule([]byte(doc))
		if err != nil {
			t.Fatalf("%s is rejected: %v", doc, err)
		}
		port := sdk.PortRange{First: 5432, Last: 5432}
		want := api.Rule{ID: "n", Kind: api.KindNewEdge, Level: api.LevelEdge, Severity: api.SeverityWarning,
			Selector: api.RuleSelector{ServerApp: "db", Port: &port, Transport: sdk.TransportTCP}}
		if !reflect.DeepEqual(r, want) {
			t.Errorf("ParseRule(%s) =\n%+v\nwant\n%+v", doc, r, want)
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		const wantJSON = `{"id":"n","kind":"new_edge","level":"edge","selector":{"server_app":"db","port":"5432","transport":"TCP"},"severity":"warning"}`
		if string(out) != wantJSON {
			t.Errorf("Marshal =\n%s\nwant\n%s", out, wantJSON)
		}
		roundTrip(t, r, api.ParseRule, (*api.Rule).Validate)
	}
}

func TestOpHolds(t *testing.T) {
	for _, tt := range []struct {
		op        api.Op
		below, at bool // observed 1 against 2, observed 2 against 2
		above     bool // observed 3 against 2
	}{
		{api.OpGreater, false, false, true},
		{api.OpGreaterEqual, false, true, true},
		{api.OpLess, true, false, false},
		{api.OpLessEqual, true, true, false},
		{api.OpEqual, false, true, false},
		{api.OpNotEqual, true, false, true},
		{"=>", false, false, false},
	} {
		if tt.op.Holds(1, 2) != tt.below || tt.op.Holds(2, 2) != tt.at || tt.op.Holds(3, 2) != tt.above {
			t.Errorf("%s: Holds(1,2), Holds(2,2), Holds(3,2) = %v %v %v, want %v %v %v", tt.op,
				tt.op.Holds(1, 2), tt.op.Holds(2, 2), tt.op.Holds(3, 2), tt.below, tt.at, tt.above)
		}
	}
}

func TestRuleRejects(t *testing.T) {
	ratio := func(extra string) string {
		return strings.Replace(rule(extra), "request_rate", "error_ratio", 1)
	}
	cases := []badCase{
		{"not an object", `[1]`, []string{""}},
		{"unknown field", rule(`"expr":"rate(x[5m]) > 1"`), []string{"expr"}},
		{"id missing", strings.Replace(rule(""), `"id":"r",`, "", 1), []string{"id"}},
		{"id with a slash", strings.Replace(rule(""), `"id":"r"`, `"id":"a/b"`, 1), []string{"id"}},
		{"kind missing", strings.Replace(rule(""), `"kind":"threshold",`, "", 1), []string{"kind"}},
		{"kind unknown", strings.Replace(rule(""), `"threshold"`, `"static"`, 1), []string{"kind"}},
		{"metric missing", strings.Replace(rule(""), `"metric":"request_rate",`, "", 1), []string{"metric"}},
		{"metric unknown", strings.Replace(rule(""), `"request_rate"`, `"requests"`, 1), []string{"metric"}},
		{"level unknown", strings.Replace(rule(""), `"edge"`, `"host"`, 1), []string{"level"}},
		{"level not a string", strings.Replace(rule(""), `"edge"`, `1`, 1), []string{"level"}},
		{"severity missing", strings.Replace(rule(""), `,"severity":"info"`, "", 1), []string{"severity"}},
		{"severity unknown", strings.Replace(rule(""), `"info"`, `"page"`, 1), []string{"severity"}},
		{"op missing", strings.Replace(rule(""), `"op":">",`, "", 1), []string{"op"}},
		{"op unknown", strings.Replace(rule(""), `">"`, `"=>"`, 1), []string{"op"}},
		{"value missing", strings.Replace(rule(""), `"value":1,`, "", 1), []string{"value"}},
		{"value a string", strings.Replace(rule(""), `"value":1`, `"value":"1"`, 1), []string{"value"}},
		{"value null", strings.Replace(rule(""), `"value":1`, `"value":null`, 1), []string{"value"}},
		{"value beyond float64", strings.Replace(rule(""), `"value":1`, `"value":1e999`, 1), []string{"value"}},
		{"ratio above 1", strings.Replace(ratio(""), `"value":1`, `"value":5`, 1), []string{"value"}},
		{"ratio below 0", strings.Replace(ratio(""), `"value":1`, `"value":-0.1`, 1), []string{"value"}},
		{"negative rate", strings.Replace(rule(""), `"value":1`, `"value":-1`, 1), []string{"value"}},
		{"for negative", rule(`"for":"-1m"`), []string{"for"}},
		{"for in words", rule(`"for":"1 minute"`), []string{"for"}},
		{"for a number", rule(`"for":60`), []string{"for"}},
		{"for over the limit", rule(`"for":"8d"`), []string{"for"}},
		{"threshold with band", rule(`"band":2`), []string{"band"}},
		{"threshold with direction", rule(`"direction":"both"`), []string{"direction"}},
		{"forecast with op", forecast(`"op":">"`), []string{"op"}},
		{"forecast with value", forecast(`"value":1`), []string{"value"}},
		{"forecast band 0", forecast(`"band":0`), []string{"band"}},
		{"forecast band negative", forecast(`"band":-1`), []string{"band"}},
		{"forecast band a string", forecast(`"band":"3"`), []string{"band"}},
		{"forecast direction unknown", forecast(`"direction":"up"`), []string{"direction"}},
		{"selector a string", rule(`"selector":"web"`), []string{"selector"}},
		{"selector unknown field", rule(`"selector":{"app":"web"}`), []string{"selector.app"}},
		{"selector cidr bad", rule(`"selector":{"cidr":"10.0.0.0/33"}`), []string{"selector.cidr"}},
		{"selector port reversed", rule(`"selector":{"port":"80-70"}`), []string{"selector.port"}},
		{"selector port too big", rule(`"selector":{"port":70000}`), []string{"selector.port"}},
		{"selector port a list", rule(`"selector":{"port":["80"]}`), []string{"selector.port"}},
		{"selector transport unknown", rule(`"selector":{"transport":"QUIC"}`), []string{"selector.transport"}},
		{"selector method unknown", rule(`"selector":{"method":"FETCH"}`), []string{"selector.method"}},
		{"selector method a protocol", rule(`"selector":{"method":"HTTP"}`), []string{"selector.method"}},
		{"endpoint level with a flow metric", `{"id":"r","kind":"threshold","metric":"bytes_per_second","level":"endpoint","op":">","value":1,"severity":"info"}`, []string{"metric"}},
		{"method on the address level", `{"id":"r","kind":"threshold","metric":"request_rate","level":"address","op":">","value":1,"severity":"info","selector":{"method":"GET"}}`, []string{"selector.method"}},
		{"selector client_app bad", rule(`"selector":{"client_app":"web app"}`), []string{"selector.client_app"}},
		{"selector server_app not a string", rule(`"selector":{"server_app":7}`), []string{"selector.server_app"}},
		{"selector owner with a control character", rule(`"selector":{"owner":"a\u0000"}`), []string{"selector.owner"}},
		{"label name with a dash", rule(`"labels":{"team-name":"x"}`), []string{"labels.team-name"}},
		{"label name reserved", rule(`"labels":{"__name__":"x"}`), []string{"labels.__name__"}},
		{"label name starts with a digit", rule(`"labels":{"1a":"x"}`), []string{"labels.1a"}},
		{"label value with a newline", rule(`"labels":{"a":"x\ny"}`), []string{"labels.a"}},
		{"annotation too long", rule(fmt.Sprintf(`"annotations":{"summary":%q}`, strings.Repeat("s", 1025))), []string{"annotations.summary"}},
		{"labels over the limit", rule(`"labels":{` + manyKeys(api.MaxMapEntries+1) + `}`), []string{"labels"}},
		{"annotations a list", rule(`"annotations":["x"]`), []string{"annotations"}},
		{"new_edge with a metric", newEdge(`"metric":"request_rate"`), []string{"metric"}},
		{"new_edge with for", newEdge(`"for":"1m"`), []string{"for"}},
		{"new_edge with op and value", newEdge(`"op":">","value":1`), []string{"op", "value"}},
		{"new_edge with band and direction", newEdge(`"band":3,"direction":"below"`), []string{"band", "direction"}},
		{"new_edge on nodes", newEdge(`"level":"node"`), []string{"level"}},
		{"new_edge by method", newEdge(`"selector":{"method":"GET"}`), []string{"selector.method"}},
		{"several at once", `{"id":"x","kind":"threshold","metric":"m","level":"l","severity":"s","band":1,"selector":{"cidr":"x","port":"y"}}`,
			[]string{"metric", "level", "severity", "band", "op", "value", "selector.cidr", "selector.port"}},
	}
	if len(cases) < 20 {
		t.Fatalf("only %d bad rules", len(cases))
	}
	runBad(t, cases, api.ParseRule)

	// In a set, paths start at the rule's index.
	set := "[" + rule("") + "," + strings.Replace(forecast(""), `"f"`, `"g"`, 1) + "," +
		strings.Replace(rule(`"selector":{"cidr":"10.0.0.0/40"}`), `"r"`, `"s"`, 1) + "]"
	_, err := api.ParseRules([]byte(set))
	checkPaths(t, err, "[2].selector.cidr")
}

func TestRuleValidate(t *testing.T) {
	good := api.Rule{ID: "r", Kind: api.KindThreshold, Metric: api.MetricLatencyP99, Level: api.LevelEndpoint,
		Op: api.OpGreaterEqual, Value: 0.5, For: 30 * time.Second, Severity: api.SeverityWarning}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	bad := []struct {
		name  string
		edit  func(*api.Rule)
		paths []string
	}{
		{"zero rule", func(r *api.Rule) { *r = api.Rule{} }, []string{"id", "kind", "metric", "level", "severity"}},
		{"negative for", func(r *api.Rule) { r.For = -time.Second }, []string{"for"}},
		{"for too long", func(r *api.Rule) { r.For = api.MaxFor + 1 }, []string{"for"}},
		{"band on a threshold rule", func(r *api.Rule) { r.Band = 1 }, []string{"band"}},
		{"forecast with op and value", func(r *api.Rule) { r.Kind = api.KindForecast }, []string{"op", "value"}},
		{"forecast with a negative band", func(r *api.Rule) {
			r.Kind, r.Op, r.Value, r.Band = api.KindForecast, "", 0, -1
		}, []string{"band"}},
		{"unknown op", func(r *api.Rule) { r.Op = "~" }, []string{"op"}},
		{"bad port", func(r *api.Rule) { r.Selector.Port = &sdk.PortRange{First: 2, Last: 1} }, []string{"selector.port"}},
		{"bad method", func(r *api.Rule) { r.Selector.Method = "FETCH" }, []string{"selector.method"}},
		{"unknown transport", func(r *api.Rule) { r.Selector.Transport = 99 }, []string{"selector.transport"}},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			r := good
			b.edit(&r)
			checkPaths(t, r.Validate(), b.paths...)
		})
	}
	// A forecast rule built without a direction is valid and reads back with "both".
	f := api.Rule{ID: "f", Kind: api.KindForecast, Metric: api.MetricRTTP95, Level: api.LevelAddress, Severity: api.SeverityInfo}
	if err := f.Validate(); err != nil {
		t.Errorf("Validate(forecast) = %v", err)
	}
	other := good
	other.ID = "s"
	if err := api.ValidateRules([]api.Rule{good, other}); err != nil {
		t.Errorf("ValidateRules = %v", err)
	}
	checkPaths(t, api.ValidateRules([]api.Rule{good, other, good}), "[2].id")
}

// The example rules the README and `quanyu up` point to are valid.
func TestExampleRules(t *testing.T) {
	data, err := os.ReadFile("../../examples/rules.json")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := api.ParseRules(data)
	if err != nil || len(rules) != 5 {
		t.Fatalf("examples/rules.json: %d rules, %v", len(rules), err)
	}
}
