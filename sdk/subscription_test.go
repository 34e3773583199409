package sdk_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// seedPath is the seed's subscription example, copied byte for byte (trailing spaces included)
// from the seed document, so the parser is tested on exactly what the seed wrote.
const seedPath = "testdata/seed-subscription.json"

func readSeed(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(seedPath)
	if err != nil {
		t.Fatalf("reading the seed's example: %v", err)
	}
	return data
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// seedSpec is the seed's example as the architecture says it normalises (§3): addresses sorted,
// CIDRs with host bits cleared, ports numeric, the range parsed, L7 split into its protocol and
// its methods.
func seedSpec() sdk.Spec {
	return sdk.Spec{
		NIC:         []string{"ens33", "eth0"},
		L3:          addrs("19.66.44.8", "172.101.2.33"),
		L3Match:     prefixes("172.10.2.0/24"),
		L3Miss:      addrs("10.10.0.4"),
		L3MissRange: prefixes("10.10.2.0/24"),
		L4Class:     []sdk.Transport{sdk.TransportTCP, sdk.TransportUDP},
		L4:          []uint16{8080, 9090},
		L4Range:     []sdk.PortRange{{First: 5000, Last: 6000}},
		L4Miss:      []uint16{6666, 7777},
		L4MissRange: []sdk.PortRange{{First: 6666, Last: 7777}},
		L7:          []string{"HTTP"},
		L7Methods:   []string{"GET", "POST"},
		L7Miss:      []string{"DELETE", "PUT"},
	}
}

// compareSpec reports each field that differs, so a failure names the field rather than
// printing two whole structs.
func compareSpec(t *testing.T, got, want sdk.Spec) {
	t.Helper()
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := 0; i < gv.NumField(); i++ {
		name := gv.Type().Field(i).Name
		if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			t.Errorf("Spec.%s = %v, want %v", name, gv.Field(i).Interface(), wv.Field(i).Interface())
		}
	}
}

func TestParseSeedExample(t *testing.T) {
	s, err := sdk.ParseSubscription(readSeed(t))
	if err != nil {
		t.Fatalf("the seed's own example is rejected: %v", err)
	}
	if s.ID != "default" {
		t.Errorf("ID = %q, want %q", s.ID, "default")
	}
	if s.Name != "" || s.Owner != "" || !s.Expires.IsZero() || s.Options != (sdk.Options{}) ||
		s.Selector.Labels != nil || s.Selector.Hosts != nil {
		t.Errorf("the bare form filled wrapper fields: %+v", s)
	}
	compareSpec(t, s.Spec, seedSpec())

	// The same document through ParseSubscriptions and through encoding/json.
	set, err := sdk.ParseSubscriptions(readSeed(t))
	if err != nil || len(set) != 1 || !reflect.DeepEqual(set[0], s) {
		t.Errorf("ParseSubscriptions(seed) = %+v, %v; want the one subscription ParseSubscription gives", set, err)
	}
	var viaJSON sdk.Subscription
	if err := json.Unmarshal(readSeed(t), &viaJSON); err != nil || !reflect.DeepEqual(viaJSON, s) {
		t.Errorf("json.Unmarshal into Subscription = %+v, %v; want %+v", viaJSON, err, s)
	}
	var spec sdk.Spec
	if err := json.Unmarshal(readSeed(t), &spec); err != nil {
		t.Fatalf("json.Unmarshal into Spec: %v", err)
	}
	compareSpec(t, spec, seedSpec())
}

// TestCIDRCanonicalMatchesNet checks the CIDR normalisation against the older net package, which
// reports the network of a CIDR independently of net/netip.
func TestCIDRCanonicalMatchesNet(t *testing.T) {
	for _, cidr := range []string{
		"172.10.2.33/24", "10.10.2.33/24", "10.255.255.255/8", "192.168.1.77/32", "1.2.3.4/0",
		"203.0.113.200/27", "2001:db8:abcd:12::1/48", "2001:db8::ffff/127", "fe80::1:2:3:4/10",
		"::1/128", "::/0",
	} {
		t.Run(cidr, func(t *testing.T) {
			s, err := sdk.ParseSubscription([]byte(fmt.Sprintf(`{"L3Match":[%q],"L3MissRange":[%q]}`, cidr, cidr)))
			if err != nil {
				t.Fatal(err)
			}
			_, ipnet, err := net.ParseCIDR(cidr)
			if err != nil {
				t.Fatal(err)
			}
			want := ipnet.String()
			if got := s.Spec.L3Match[0].String(); got != want {
				t.Errorf("L3Match = %s, net.ParseCIDR says %s", got, want)
			}
			if got := s.Spec.L3MissRange[0].String(); got != want {
				t.Errorf("L3MissRange = %s, net.ParseCIDR says %s", got, want)
			}
		})
	}
}

func TestParseNormalises(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want sdk.Spec
	}{
		{"ports as numbers and strings, sorted and unique", `{"L4":[9090,"8080"," 80 ","08080"],"L4Miss":"7"}`,
			sdk.Spec{L4: []uint16{80, 8080, 9090}, L4Miss: []uint16{7}}},
		{"port range list form", `{"L4Range":["6000-7000","1-2","1-2"," 10 - 20 ","443"]}`,
			sdk.Spec{L4Range: []sdk.PortRange{{1, 2}, {10, 20}, {443, 443}, {6000, 7000}}}},
		{"ports 0 and 65535 are ports", `{"L4":["0","65535"],"L4Range":"0-65535"}`,
			sdk.Spec{L4: []uint16{0, 65535}, L4Range: []sdk.PortRange{{0, 65535}}}},
		{"IPv4-mapped IPv6 becomes IPv4", `{"L3":["::ffff:10.0.0.1","10.0.0.1"],"L3Miss":["::FFFF:192.0.2.1"]}`,
			sdk.Spec{L3: addrs("10.0.0.1"), L3Miss: addrs("192.0.2.1")}},
		{"IPv4-mapped CIDR becomes IPv4", `{"L3Match":["::ffff:10.1.2.3/104","::ffff:0:0/96"]}`,
			sdk.Spec{L3Match: prefixes("0.0.0.0/0", "10.0.0.0/8")}},
		{"IPv6 written in any form", `{"L3":["2001:DB8:0:0::1","2001:db8::1"],"L3Match":["2001:db8::1/64"]}`,
			sdk.Spec{L3: addrs("2001:db8::1"), L3Match: prefixes("2001:db8::/64")}},
		{"a bare address in a range field is a range of one", `{"L3Match":["10.0.0.1","2001:db8::1"]}`,
			sdk.Spec{L3Match: prefixes("10.0.0.1/32", "2001:db8::1/128")}},
		{"transports in any case, unique", `{"L4CLASS":["udp","TCP","tcp","icmp6","ICMPv6","sctp","ICMP"]}`,
			sdk.Spec{L4Class: []sdk.Transport{sdk.TransportICMP, sdk.TransportTCP, sdk.TransportUDP,
				sdk.TransportICMPv6, sdk.TransportSCTP}}},
		{"L7 split, upper-cased, unique", `{"L7":["get","DNS","http","GET"," post "],"L7Miss":["dns","put","PUT"]}`,
			sdk.Spec{L7: []string{"DNS", "HTTP"}, L7Methods: []string{"GET", "POST"}, L7Miss: []string{"DNS", "PUT"}}},
		{"NIC keeps order and drops repeats", `{"NIC":["veth*","eth0","veth*","en?3[0-9]"]}`,
			sdk.Spec{NIC: []string{"veth*", "eth0", "en?3[0-9]"}}},
		{"a single string is a list of one", `{"NIC":"eth0","L3":"10.0.0.1","L4":"80","L4CLASS":"TCP","L7":"HTTP"}`,
			sdk.Spec{NIC: []string{"eth0"}, L3: addrs("10.0.0.1"), L4: []uint16{80},
				L4Class: []sdk.Transport{sdk.TransportTCP}, L7: []string{"HTTP"}}},
		{"null and empty lists are empty", `{"NIC":null,"L3":[],"L3Match":null,"L4":[],"L4Range":null,"L7":[]}`,
			sdk.Spec{}},
		{"empty object matches everything", `{}`, sdk.Spec{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sdk.ParseSubscription([]byte(tt.doc))
			if err != nil {
				t.Fatalf("ParseSubscription(%s): %v", tt.doc, err)
			}
			compareSpec(t, s.Spec, tt.want)
		})
	}
}

// wrappedDoc uses every field of the wrapped form.
const wrappedDoc = `{
	"id": "web-prod.1",
	"name": "web tier, 生产",
	"owner": "team-web",
	"expires": "2030-06-01T08:00:00+08:00",
	"selector": {"labels": {"env": "prod", "tier": "web"}, "hosts": ["web-*", "db1"]},
	"options": {"frames": true, "payload_bytes": 512, "query_strings": true},
	"spec": {"NIC": ["eth0"], "L3Match": ["10.1.0.0/16"], "L4CLASS": ["TCP"], "L4": [80, 443], "L7": ["HTTP", "GET"]}
}`

func TestParseWrapped(t *testing.T) {
	s, err := sdk.ParseSubscription([]byte(wrappedDoc))
	if err != nil {
		t.Fatalf("ParseSubscription(wrapped): %v", err)
	}
	want := sdk.Subscription{
		ID:    "web-prod.1",
		Name:  "web tier, 生产",
		Owner: "team-web",
		// Stored in UTC: 08:00 at +08:00 is midnight UTC.
		Expires:  time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC),
		Selector: sdk.Selector{Labels: map[string]string{"env": "prod", "tier": "web"}, Hosts: []string{"web-*", "db1"}},
		Options:  sdk.Options{Frames: true, PayloadBytes: 512, QueryStrings: true},
		Spec: sdk.Spec{
			NIC: []string{"eth0"}, L3Match: prefixes("10.1.0.0/16"), L4Class: []sdk.Transport{sdk.TransportTCP},
			L4: []uint16{80, 443}, L7: []string{"HTTP"}, L7Methods: []string{"GET"},
		},
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("ParseSubscription(wrapped) =\n%+v\nwant\n%+v", s, want)
	}
	if got := s.Payload(); got != 512 {
		t.Errorf("Payload() = %d, want 512", got)
	}
	if !s.Expired(want.Expires) || !s.Expired(want.Expires.Add(time.Second)) || s.Expired(want.Expires.Add(-time.Nanosecond)) {
		t.Errorf("Expired is wrong around %v", want.Expires)
	}

	// The wrapped form without an id, or with only a spec, gets the default id, as the bare form does.
	s, err = sdk.ParseSubscription([]byte(`{"spec":{"L4":[53]}}`))
	if err != nil || s.ID != sdk.DefaultSubscriptionID || !reflect.DeepEqual(s.Spec.L4, []uint16{53}) {
		t.Errorf(`ParseSubscription({"spec":…}) = %+v, %v; want id "default" and L4 [53]`, s, err)
	}
	if s.Payload() != sdk.DefaultPayloadBytes || s.Expired(time.Now().Add(100*365*24*time.Hour)) {
		t.Errorf("a subscription without options should have the default payload and never expire: %+v", s)
	}
}

// validDocs are accepted documents of every shape; the round-trip and fuzz tests use them.
var validDocs = []string{
	`{}`,
	`{"spec":{}}`,
	wrappedDoc,
	`{"id":"a","spec":{"L3":["2001:db8::1","::ffff:1.2.3.4"],"L3MissRange":["::ffff:0:0/96","2001:db8::/32"]}}`,
	`{"id":"b","expires":"2031-01-02T03:04:05.123456789Z","spec":{"L4Range":["1-1","2-65535"],"L4MissRange":"0-0"}}`,
	`{"id":"c","expires":"","selector":{"labels":{},"hosts":[]},"options":{"payload_bytes":0},"spec":{"L7Miss":["DNS"]}}`,
	`{"NIC":["veth*","eth[0-3]"],"L4CLASS":["ICMP","ICMPv6","SCTP"],"L7":["DNS","HTTP","CONNECT","TRACE"]}`,
	`{"L4":"0","L4Miss":65535,"L3Match":"0.0.0.0/0"}`,
}

func TestRoundTrip(t *testing.T) {
	docs := append([]string{string(readSeed(t))}, validDocs...)
	for i, doc := range docs {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			s, err := sdk.ParseSubscription([]byte(doc))
			if err != nil {
				t.Fatalf("ParseSubscription(%s): %v", doc, err)
			}
			out, err := json.Marshal(s)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			back, err := sdk.ParseSubscription(out)
			if err != nil {
				t.Fatalf("ParseSubscription(Marshal(s)) = %v\nfor %s", err, out)
			}
			if !reflect.DeepEqual(back, s) {
				t.Errorf("round trip changed the subscription:\n got %+v\nwant %+v\nvia %s", back, s, out)
			}
			again, err := json.Marshal(back)
			if err != nil || string(again) != string(out) {
				t.Errorf("marshalling is not stable:\n%s\n%s (%v)", out, again, err)
			}
			if err := s.Validate(); err != nil {
				t.Errorf("Validate() of a parsed subscription: %v", err)
			}
		})
	}
}

func TestSeedMarshalsToTheSeedFieldNames(t *testing.T) {
	s, err := sdk.ParseSubscription(readSeed(t))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(s.Spec)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"NIC":         []any{"ens33", "eth0"},
		"L3":          []any{"19.66.44.8", "172.101.2.33"},
		"L3Match":     []any{"172.10.2.0/24"},
		"L3Miss":      []any{"10.10.0.4"},
		"L3MissRange": []any{"10.10.2.0/24"},
		"L4CLASS":     []any{"TCP", "UDP"},
		"L4":          []any{8080.0, 9090.0},
		"L4Range":     []any{"5000-6000"},
		"L4Miss":      []any{6666.0, 7777.0},
		"L4MissRange": []any{"6666-7777"},
		"L7":          []any{"HTTP", "GET", "POST"},
		"L7Miss":      []any{"DELETE", "PUT"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Marshal(seed spec) = %s\nwant %v", out, want)
	}
}

func TestParseSubscriptionsForms(t *testing.T) {
	a := `{"id":"a","spec":{"L4":[80]}}`
	b := `{"id":"b","spec":{"L4":[53]}}`
	tests := []struct {
		name string
		doc  string
		ids  []string
	}{
		{"one bare object", `{"L4":[80]}`, []string{"default"}},
		{"one wrapped object", a, []string{"a"}},
		{"one wrapped object without id", `{"spec":{"L4":[80]}}`, []string{"default"}},
		{"array", "[" + a + "," + b + "]", []string{"a", "b"}},
		{"array of one bare object", `[{"L4":[80]}]`, []string{"default"}},
		{"subscriptions object", `{"subscriptions":[` + a + "," + b + "]}", []string{"a", "b"}},
		{"empty array", `[]`, []string{}},
		{"empty subscriptions", ` {"subscriptions":[]} `, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subs, err := sdk.ParseSubscriptions([]byte(tt.doc))
			if err != nil {
				t.Fatalf("ParseSubscriptions(%s): %v", tt.doc, err)
			}
			ids := []string{}
			for _, s := range subs {
				ids = append(ids, s.ID)
			}
			if !reflect.DeepEqual(ids, tt.ids) {
				t.Errorf("ids = %q, want %q", ids, tt.ids)
			}
			out, err := sdk.MarshalSubscriptions(subs)
			if err != nil {
				t.Fatal(err)
			}
			back, err := sdk.ParseSubscriptions(out)
			if err != nil || len(back) != len(subs) || (len(subs) > 0 && !reflect.DeepEqual(back, subs)) {
				t.Errorf("MarshalSubscriptions → ParseSubscriptions = %+v, %v; want %+v", back, err, subs)
			}
			if err := sdk.ValidateSet(subs); err != nil {
				t.Errorf("ValidateSet of a parsed set: %v", err)
			}
		})
	}
	// The specs are kept apart: each subscription keeps its own ports.
	subs, err := sdk.ParseSubscriptions([]byte("[" + a + "," + b + "]"))
	if err != nil || !reflect.DeepEqual(subs[0].Spec.L4, []uint16{80}) || !reflect.DeepEqual(subs[1].Spec.L4, []uint16{53}) {
		t.Errorf("set parsed to %+v, %v", subs, err)
	}
	if out, err := sdk.MarshalSubscriptions(nil); err != nil || string(out) != "[]" {
		t.Errorf("MarshalSubscriptions(nil) = %s, %v; want []", out, err)
	}
}

// fieldErrors unwraps err into its field errors, failing the test if it is not a
// *sdk.ValidationError.
func fieldErrors(t *testing.T, err error) []sdk.FieldError {
	t.Helper()
	if err == nil {
		t.Fatal("accepted; want an error")
	}
	var ve *sdk.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *sdk.ValidationError", err, err)
	}
	if len(ve.Fields) == 0 {
		t.Fatalf("ValidationError with no fields: %v", err)
	}
	for _, f := range ve.Fields {
		if f.Reason == "" {
			t.Errorf("field %q rejected without a reason", f.Path)
		}
	}
	return ve.Fields
}

func list(n int, f func(i int) string) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("%q", f(i))
	}
	return "[" + strings.Join(items, ",") + "]"
}

func v4(i int) string     { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }
func v4net(i int) string  { return fmt.Sprintf("10.%d.%d.0/24", i>>8&255, i&255) }
func port(i int) string   { return fmt.Sprint(i) }
func prange(i int) string { return fmt.Sprintf("%d-%d", i*10, i*10+5) }

// badDoc is one document with exactly one bad field.
type badDoc struct {
	name, doc  string
	path       string // the exact path ParseSubscription names
	reasonPart string // a part of the reason a user needs to fix it
}

var badDocs = []badDoc{
	// Addresses.
	{"address with a bad octet", `{"L3":["172.101.2.333"]}`, "L3[0]", `"172.101.2.333" is not an IPv4 or IPv6 address`},
	{"address not an address", `{"L3":["10.0.0.1","example.com"]}`, "L3[1]", "not an IPv4 or IPv6 address"},
	{"CIDR in L3", `{"L3":["10.0.0.0/8"]}`, "L3[0]", "L3 takes single addresses, put ranges in L3Match"},
	{"CIDR in L3Miss", `{"L3Miss":["10.0.0.0/8"]}`, "L3Miss[0]", "put ranges in L3MissRange"},
	{"address with a zone", `{"L3":["fe80::1%eth0"]}`, "L3[0]", "has a zone"},
	{"single-string bad address", `{"L3Miss":"1.2.3"}`, "L3Miss", `"1.2.3" is not an IPv4 or IPv6 address`},
	{"empty address", `{"L3":[""]}`, "L3[0]", "not an IPv4 or IPv6 address"},
	{"IPv4 mask too long", `{"L3Match":["10.0.0.0/33"]}`, "L3Match[0]", "not a CIDR such as 10.0.0.0/8"},
	{"short IPv4 CIDR", `{"L3Match":["172.10.2.33/24","10.0.0/8"]}`, "L3Match[1]", `"10.0.0/8" is not a CIDR`},
	{"IPv6 mask too long", `{"L3MissRange":["2001:db8::/129"]}`, "L3MissRange[0]", "not a CIDR"},
	{"CIDR without a length", `{"L3MissRange":["10.0.0.0/"]}`, "L3MissRange[0]", "not a CIDR"},
	{"CIDR with a zone", `{"L3Match":["fe80::%eth0"]}`, "L3Match[0]", "not a CIDR"},
	// Ports.
	{"port above 65535", `{"L4":["65536"]}`, "L4[0]", "port 65536 is outside 0-65535"},
	{"huge port number", `{"L4Miss":[99999999999999999999999]}`, "L4Miss[0]", "outside 0-65535"},
	{"negative port", `{"L4":[-1]}`, "L4[0]", `"-1" is not a port number`},
	{"port name", `{"L4":["80","http"]}`, "L4[1]", `"http" is not a port number`},
	{"fractional port", `{"L4Miss":[80.5]}`, "L4Miss[0]", "not a port number"},
	{"range in L4", `{"L4":["80-90"]}`, "L4[0]", "is a range; put ranges in L4Range"},
	{"range in L4Miss", `{"L4Miss":["80-90"]}`, "L4Miss[0]", "put ranges in L4MissRange"},
	{"range start after end (string)", `{"L4Range":"6000-5000"}`, "L4Range", "start 6000 is greater than end 5000"},
	{"range start after end (list)", `{"L4MissRange":["1-2","9-8"]}`, "L4MissRange[1]", "start 9 is greater than end 8"},
	{"range with a word", `{"L4Range":["1-2","9-x"]}`, "L4Range[1]", `want "first-last"`},
	{"range with three parts", `{"L4Range":["1-2-3"]}`, "L4Range[0]", `want "first-last"`},
	{"range without a start", `{"L4MissRange":"-5"}`, "L4MissRange", `want "first-last"`},
	{"range without an end", `{"L4Range":"5-"}`, "L4Range", `want "first-last"`},
	{"range past 65535", `{"L4MissRange":["7777-70000"]}`, "L4MissRange[0]", "port 70000 is outside 0-65535"},
	{"comma-separated ranges", `{"L4Range":"1-2,3-4"}`, "L4Range", `want "first-last"`},
	// Tokens.
	{"unknown transport", `{"L4CLASS":["TCP","QUIC"]}`, "L4CLASS[1]", `unknown transport "QUIC" (want TCP, UDP, ICMP, ICMPv6 or SCTP)`},
	{"protocol number as transport", `{"L4CLASS":["6"]}`, "L4CLASS[0]", "unknown transport"},
	{"unknown L7 protocol", `{"L7":["HTTP","GRPC"]}`, "L7[1]", `unknown L7 token "GRPC" (protocols: DNS, HTTP; methods:`},
	{"unknown L7Miss method", `{"L7Miss":["FETCH"]}`, "L7Miss[0]", `unknown L7 token "FETCH"`},
	{"empty L7 token", `{"L7":[""]}`, "L7[0]", "unknown L7 token"},
	// Interfaces.
	{"empty NIC", `{"NIC":["eth0",""]}`, "NIC[1]", "want an interface name or glob of 1 to 64 characters"},
	{"NIC too long", `{"NIC":["` + strings.Repeat("e", 65) + `"]}`, "NIC[0]", "1 to 64 characters"},
	{"NIC bad glob", `{"NIC":["eth["]}`, "NIC[0]", `"eth[" is not a valid glob`},
	// Unknown fields.
	{"unknown top-level field", `{"L5":["x"]}`, "L5", "unknown field; the fields are NIC, L3,"},
	{"misspelt field", `{"l4class":["TCP"]}`, "l4class", "did you mean L4CLASS?"},
	{"unknown wrapper field", `{"id":"a","spec":{},"extra":1}`, "extra", "unknown field (a wrapped subscription has id, name,"},
	{"seed field beside the wrapper", `{"id":"a","spec":{},"L3":["1.1.1.1"]}`, "L3", "unknown field (a wrapped subscription"},
	{"unknown spec field", `{"id":"a","spec":{"L3Miss":["1.1.1.1"],"L8":[]}}`, "spec.L8", "unknown field"},
	{"unknown option", `{"id":"a","options":{"sample":true},"spec":{}}`, "options.sample", "unknown field (options are frames, payload_bytes, query_strings)"},
	{"unknown selector field", `{"id":"a","selector":{"zone":"x"},"spec":{}}`, "selector.zone", "unknown field (a selector has labels, hosts)"},
	// Wrong JSON types.
	{"object for a list", `{"L3":{"a":1}}`, "L3", "want a list of strings"},
	{"boolean for a list", `{"NIC":true}`, "NIC", "want a list of strings"},
	{"number for an address list", `{"L3":5}`, "L3", `"5" is not an IPv4 or IPv6 address`},
	{"boolean in a list", `{"L4":[true]}`, "L4[0]", "want a string"},
	{"nested list", `{"L7":[["GET"]]}`, "L7[0]", "want a string"},
	{"spec not an object", `{"id":"a","spec":[]}`, "spec", "want a JSON object"},
	{"spec null", `{"id":"a","spec":null}`, "spec", "want a JSON object"},
	{"options not an object", `{"id":"a","options":true,"spec":{}}`, "options", "want a JSON object"},
	{"selector not an object", `{"id":"a","selector":"web","spec":{}}`, "selector", "want a JSON object"},
	{"frames not a boolean", `{"id":"a","options":{"frames":"yes"},"spec":{}}`, "options.frames", "want true or false"},
	{"name not a string", `{"id":"a","name":7,"spec":{}}`, "name", "want a string"},
	{"owner not a string", `{"id":"a","owner":["x"],"spec":{}}`, "owner", "want a string"},
	{"label value not a string", `{"id":"a","selector":{"labels":{"app":1}},"spec":{}}`, "selector.labels", "want an object of string values"},
	{"top level an array", `[]`, "", "want a JSON object"},
	{"top level null", `null`, "", "want a JSON object"},
	{"top level a string", `"L3"`, "", "want a JSON object"},
	{"not JSON", `{"L3":[`, "", "want a JSON object"},
	// Limits.
	{"L3 over MaxAddresses", `{"L3":` + list(sdk.MaxAddresses+1, v4) + `}`, "L3", "4097 entries, at most 4096"},
	{"L3Match over MaxAddresses", `{"L3Match":` + list(sdk.MaxAddresses+1, v4net) + `}`, "L3Match", "at most 4096"},
	{"L3Miss over MaxAddresses", `{"L3Miss":` + list(sdk.MaxAddresses+1, v4) + `}`, "L3Miss", "at most 4096"},
	{"L3MissRange over MaxAddresses", `{"L3MissRange":` + list(sdk.MaxAddresses+1, v4net) + `}`, "L3MissRange", "at most 4096"},
	{"L4 over MaxPorts", `{"L4":` + list(sdk.MaxPorts+1, port) + `}`, "L4", "1025 entries, at most 1024"},
	{"L4Miss over MaxPorts", `{"L4Miss":` + list(sdk.MaxPorts+1, port) + `}`, "L4Miss", "at most 1024"},
	{"L4Range over MaxPortRanges", `{"L4Range":` + list(sdk.MaxPortRanges+1, prange) + `}`, "L4Range", "257 entries, at most 256"},
	{"L4MissRange over MaxPortRanges", `{"L4MissRange":` + list(sdk.MaxPortRanges+1, prange) + `}`, "L4MissRange", "at most 256"},
	{"L7 over MaxL7Tokens", `{"L7":` + list(sdk.MaxL7Tokens+1, func(int) string { return "GET" }) + `}`, "L7", "33 entries, at most 32"},
	{"L7Miss over MaxL7Tokens", `{"L7Miss":` + list(sdk.MaxL7Tokens+1, func(int) string { return "PUT" }) + `}`, "L7Miss", "at most 32"},
	{"NIC over MaxNICs", `{"NIC":` + list(sdk.MaxNICs+1, func(i int) string { return fmt.Sprint("eth", i) }) + `}`, "NIC", "65 entries, at most 64"},
	{"L4CLASS over its limit", `{"L4CLASS":` + list(9, func(int) string { return "TCP" }) + `}`, "L4CLASS", "9 entries, at most 8"},
	{"hosts over their limit", `{"id":"a","selector":{"hosts":` + list(1025, func(i int) string { return fmt.Sprint("h", i) }) + `},"spec":{}}`, "selector.hosts", "at most 1024"},
	{"name too long", `{"id":"a","name":"` + strings.Repeat("名", 129) + `","spec":{}}`, "name", "129 characters, at most 128"},
	{"owner too long", `{"id":"a","owner":"` + strings.Repeat("o", 129) + `","spec":{}}`, "owner", "at most 128"},
	{"label name too long", `{"id":"a","selector":{"labels":{"` + strings.Repeat("k", 64) + `":"v"}},"spec":{}}`, "selector.labels." + strings.Repeat("k", 64), "label names are 1 to 63 characters"},
	{"empty label name", `{"id":"a","selector":{"labels":{"":"v"}},"spec":{}}`, "selector.labels", "label names are 1 to 63 characters"},
	{"empty host", `{"id":"a","selector":{"hosts":["web1",""]},"spec":{}}`, "selector.hosts[1]", `"" is not a host name or glob`},
	{"bad host glob", `{"id":"a","selector":{"hosts":"web["},"spec":{}}`, "selector.hosts", "not a host name or glob"},
	// Ids.
	{"empty id", `{"id":"","spec":{}}`, "id", `"": want 1 to 64 letters, digits`},
	{"id with a space", `{"id":"web prod","spec":{}}`, "id", "want 1 to 64 letters, digits, '.', '_' or '-'"},
	{"id starting with a dash", `{"id":"-web","spec":{}}`, "id", "starting with a letter or digit"},
	{"id too long", `{"id":"` + strings.Repeat("a", 65) + `","spec":{}}`, "id", "want 1 to 64"},
	{"id not a string", `{"id":5,"spec":{}}`, "id", "want a string"},
	// Expiry.
	{"expires not a time", `{"id":"a","expires":"tomorrow","spec":{}}`, "expires", `"tomorrow" is not an RFC 3339 time`},
	{"expires a date only", `{"id":"a","expires":"2030-01-01","spec":{}}`, "expires", "not an RFC 3339 time"},
	{"expires without a zone", `{"id":"a","expires":"2030-01-01T00:00:00","spec":{}}`, "expires", "not an RFC 3339 time"},
	{"expires a number", `{"id":"a","expires":1700000000,"spec":{}}`, "expires", "want a string"},
	{"expires beyond year 9999 in UTC", `{"id":"a","expires":"9999-12-31T23:00:00-02:00","spec":{}}`, "expires", "outside the years 0000 to 9999"},
	// Payload.
	{"payload_bytes negative", `{"id":"a","options":{"payload_bytes":-1},"spec":{}}`, "options.payload_bytes", "want a whole number from 0 to 4096"},
	{"payload_bytes over the cap", `{"id":"a","options":{"payload_bytes":4097},"spec":{}}`, "options.payload_bytes", "from 0 to 4096"},
	{"payload_bytes fractional", `{"id":"a","options":{"payload_bytes":1.5},"spec":{}}`, "options.payload_bytes", "want a whole number"},
	{"payload_bytes a string", `{"id":"a","options":{"payload_bytes":"512"},"spec":{}}`, "options.payload_bytes", "want a whole number"},
	// Structure.
	{"wrapped without a spec", `{"id":"a","name":"x"}`, "spec", "required in the wrapped form"},
}

func TestRejectsBadInput(t *testing.T) {
	if len(badDocs) < 30 {
		t.Fatalf("only %d bad inputs", len(badDocs))
	}
	for _, tt := range badDocs {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sdk.ParseSubscription([]byte(tt.doc))
			fields := fieldErrors(t, err)
			if !reflect.DeepEqual(s, sdk.Subscription{}) {
				t.Errorf("a rejected document returned a subscription: %+v", s)
			}
			if len(fields) != 1 {
				t.Fatalf("want exactly one rejected field, got %d: %v", len(fields), err)
			}
			f := fields[0]
			if f.Path != tt.path {
				t.Errorf("path = %q, want %q (%v)", f.Path, tt.path, err)
			}
			if !strings.Contains(f.Reason, tt.reasonPart) {
				t.Errorf("reason = %q, want it to say %q", f.Reason, tt.reasonPart)
			}
			if !strings.Contains(err.Error(), f.Reason) {
				t.Errorf("Error() = %q leaves out the reason %q", err.Error(), f.Reason)
			}
			// The set reader rejects it too, naming the same field; it takes arrays, so an
			// array is not an error there.
			if strings.HasPrefix(tt.doc, "[") {
				return
			}
			_, err = sdk.ParseSubscriptions([]byte(tt.doc))
			if fields := fieldErrors(t, err); len(fields) != 1 || (tt.path != "" && fields[0].Path != tt.path) {
				t.Errorf("ParseSubscriptions: %v; want the one field %q", err, tt.path)
			}
		})
	}
}

func TestRejectsBadSets(t *testing.T) {
	many := func(n int) string {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf(`{"id":"s%d","spec":{}}`, i)
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	tests := []struct {
		name, doc  string
		paths      []string
		reasonPart string
	}{
		{"duplicate ids in an array", `[{"id":"a","spec":{}},{"id":"b","spec":{}},{"id":"a","spec":{}}]`,
			[]string{"[2].id"}, `"a" is also the id of subscription 0`},
		{"duplicate ids in subscriptions", `{"subscriptions":[{"id":"x","spec":{}},{"id":"x","spec":{"L4":[1]}}]}`,
			[]string{"subscriptions[1].id"}, `"x" is also the id of subscription 0`},
		{"explicit default twice", `[{"id":"default","spec":{}},{"id":"default","spec":{}}]`,
			[]string{"[1].id"}, "is also the id"},
		{"several without ids", `[{"L4":[80]},{"spec":{"L4":[53]}}]`,
			[]string{"[0].id", "[1].id"}, "required when a document holds several subscriptions"},
		{"more than MaxSubscriptions", many(sdk.MaxSubscriptions + 1), []string{""}, "65 subscriptions, at most 64"},
		{"more than MaxSubscriptions in subscriptions", `{"subscriptions":` + many(sdk.MaxSubscriptions+1) + `}`,
			[]string{"subscriptions"}, "at most 64"},
		{"subscriptions not an array", `{"subscriptions":{}}`, []string{"subscriptions"}, "want an array"},
		{"bad field inside a set", `[{"id":"a","spec":{"L4":["x"]}},{"id":"b","spec":{"L3":["1.2.3.4/8"]}}]`,
			[]string{"[0].spec.L4[0]", "[1].spec.L3[0]"}, ""},
		{"bad field inside subscriptions", `{"subscriptions":[{"id":"a","spec":{"L7":["FTP"]}}]}`,
			[]string{"subscriptions[0].spec.L7[0]"}, "unknown L7 token"},
		{"item not an object", `[{"id":"a","spec":{}},7]`, []string{"[1]"}, "want a JSON object"},
		{"not JSON", `[{"id":"a"`, []string{""}, "not a JSON array"},
		{"empty input", ``, []string{""}, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subs, err := sdk.ParseSubscriptions([]byte(tt.doc))
			if subs != nil {
				t.Errorf("a rejected set returned subscriptions: %+v", subs)
			}
			fields := fieldErrors(t, err)
			var paths []string
			for _, f := range fields {
				paths = append(paths, f.Path)
				if !strings.Contains(f.Reason, tt.reasonPart) {
					t.Errorf("%s: reason %q, want it to say %q", f.Path, f.Reason, tt.reasonPart)
				}
			}
			if !reflect.DeepEqual(paths, tt.paths) {
				t.Errorf("paths = %q, want %q (%v)", paths, tt.paths, err)
			}
		})
	}
	// Exactly MaxSubscriptions is fine.
	if subs, err := sdk.ParseSubscriptions([]byte(many(sdk.MaxSubscriptions))); err != nil || len(subs) != sdk.MaxSubscriptions {
		t.Errorf("a set of MaxSubscriptions: %d, %v", len(subs), err)
	}
}

// TestReportsEveryBadField checks that one document's bad fields are all reported at once, in
// the same order every time, so a user fixes them in one pass.
func TestReportsEveryBadField(t *testing.T) {
	doc := `{
		"id": "bad id",
		"expires": "soon",
		"zzz": 1,
		"aaa": 2,
		"selector": {"hosts": [""], "labels": {"": "x"}, "what": 1},
		"options": {"payload_bytes": 99999, "frames": 1, "more": true},
		"spec": {
			"NIC": ["eth["],
			"L3": ["10.0.0.0/8", "1.1.1.1", "nope"],
			"L3Match": ["10.0.0.0/40"],
			"L3Miss": ["x"],
			"L3MissRange": ["y"],
			"L4CLASS": ["TCP", "IGMP"],
			"L4": ["80", "70000"],
			"L4Range": ["1-2", "9-3"],
			"L4Miss": ["a"],
			"L4MissRange": "b",
			"L7": ["HTTP", "SMTP"],
			"L7Miss": ["GETS"],
			"l3": [],
			"Extra": 1
		}
	}`
	want := []string{
		"aaa", "zzz", "id", "expires",
		"selector.hosts[0]", "selector.labels", "selector.what",
		"options.frames", "options.more", "options.payload_bytes",
		"spec.Extra", "spec.l3",
		"spec.NIC[0]", "spec.L3[0]", "spec.L3[2]", "spec.L3Match[0]", "spec.L3Miss[0]", "spec.L3MissRange[0]",
		"spec.L4CLASS[1]", "spec.L4[1]", "spec.L4Range[1]", "spec.L4Miss[0]", "spec.L4MissRange",
		"spec.L7[1]", "spec.L7Miss[0]",
	}
	var first []string
	for run := 0; run < 20; run++ {
		_, err := sdk.ParseSubscription([]byte(doc))
		var got []string
		for _, f := range fieldErrors(t, err) {
			got = append(got, f.Path)
		}
		if run == 0 {
			first = got
			if !reflect.DeepEqual(sortedCopy(got), sortedCopy(want)) {
				t.Fatalf("rejected fields\n got %q\nwant %q\n(%v)", got, want, err)
			}
		} else if !reflect.DeepEqual(got, first) {
			t.Fatalf("error order changed between runs:\n%q\n%q", first, got)
		}
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

func TestSpecUnmarshalRejects(t *testing.T) {
	var s sdk.Spec
	err := json.Unmarshal([]byte(`{"L4Range":"9-1"}`), &s)
	fields := fieldErrors(t, err)
	if len(fields) != 1 || fields[0].Path != "L4Range" {
		t.Errorf("json.Unmarshal into Spec: %v", err)
	}
	var sub sdk.Subscription
	err = json.Unmarshal([]byte(`{"id":"a","spec":{"L3":["bad"]}}`), &sub)
	if fields := fieldErrors(t, err); fields[0].Path != "spec.L3[0]" {
		t.Errorf("json.Unmarshal into Subscription: %v", err)
	}
}

// TestValidateBuiltInCode covers subscriptions written in Go rather than parsed: Validate and
// ValidateSet apply the parser's rules to them.
func TestValidateBuiltInCode(t *testing.T) {
	good := sdk.Subscription{ID: "ok", Spec: sdk.Spec{
		L3Match: prefixes("10.0.0.0/8"), L4Range: []sdk.PortRange{{80, 90}}, L4Class: []sdk.Transport{sdk.TransportTCP},
	}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	tests := []struct {
		name string
		sub  sdk.Subscription
		path string
	}{
		{"range start after end", sdk.Subscription{ID: "a", Spec: sdk.Spec{L4Range: []sdk.PortRange{{10, 5}}}}, "spec.L4Range[0]"},
		{"zero address", sdk.Subscription{ID: "a", Spec: sdk.Spec{L3: []netip.Addr{{}}}}, "spec.L3[0]"},
		{"zero prefix", sdk.Subscription{ID: "a", Spec: sdk.Spec{L3MissRange: []netip.Prefix{{}}}}, "spec.L3MissRange[0]"},
		{"unnamed transport", sdk.Subscription{ID: "a", Spec: sdk.Spec{L4Class: []sdk.Transport{99}}}, "spec.L4CLASS[0]"},
		{"unknown L7 token", sdk.Subscription{ID: "a", Spec: sdk.Spec{L7: []string{"FTP"}}}, "spec.L7[0]"},
		{"no id", sdk.Subscription{Spec: sdk.Spec{}}, "id"},
		{"payload over the cap", sdk.Subscription{ID: "a", Options: sdk.Options{PayloadBytes: 1 << 20}}, "options.payload_bytes"},
		{"bad NIC glob", sdk.Subscription{ID: "a", Spec: sdk.Spec{NIC: []string{"[x"}}}, "spec.NIC[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields := fieldErrors(t, tt.sub.Validate())
			if fields[0].Path != tt.path {
				t.Errorf("Validate: path %q, want %q (%v)", fields[0].Path, tt.path, fields)
			}
			setFields := fieldErrors(t, sdk.ValidateSet([]sdk.Subscription{good, tt.sub}))
			if want := "[1]." + tt.path; setFields[0].Path != want {
				t.Errorf("ValidateSet: path %q, want %q", setFields[0].Path, want)
			}
		})
	}
	t.Run("duplicate ids", func(t *testing.T) {
		fields := fieldErrors(t, sdk.ValidateSet([]sdk.Subscription{good, good}))
		if len(fields) != 1 || fields[0].Path != "[1].id" || !strings.Contains(fields[0].Reason, `"ok" is used twice`) {
			t.Errorf("ValidateSet(dup) = %v", fields)
		}
	})
	t.Run("too many", func(t *testing.T) {
		set := make([]sdk.Subscription, sdk.MaxSubscriptions+1)
		for i := range set {
			set[i] = sdk.Subscription{ID: fmt.Sprint("s", i)}
		}
		fields := fieldErrors(t, sdk.ValidateSet(set))
		if len(fields) != 1 || fields[0].Path != "" || !strings.Contains(fields[0].Reason, "65 subscriptions, at most 64") {
			t.Errorf("ValidateSet(65) = %v", fields)
		}
		if err := sdk.ValidateSet(set[:sdk.MaxSubscriptions]); err != nil {
			t.Errorf("ValidateSet(64) = %v", err)
		}
	})
}
