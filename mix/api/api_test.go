package api_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// badCase is a rejected document and the exact paths of the fields it must be rejected for.
type badCase struct {
	name  string
	doc   string
	paths []string
}

// checkPaths asserts that err is a *sdk.ValidationError whose fields are exactly paths (in any
// order), each with a reason.
func checkPaths(t *testing.T, err error, paths ...string) {
	t.Helper()
	var ve *sdk.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *sdk.ValidationError", err, err)
	}
	got := make([]string, len(ve.Fields))
	for i, f := range ve.Fields {
		got[i] = f.Path
		if f.Reason == "" {
			t.Errorf("field %q rejected without a reason", f.Path)
		}
	}
	want := slices.Clone(paths)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("rejected paths %q, want %q\nerror: %v", got, want, err)
	}
}

// runBad runs a table of rejected documents through parse.
func runBad[T any](t *testing.T, cases []badCase, parse func([]byte) (T, error)) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.doc] {
			t.Errorf("case %q repeats a document", c.name)
		}
		seen[c.doc] = true
		t.Run(c.name, func(t *testing.T) {
			v, err := parse([]byte(c.doc))
			if err == nil {
				t.Fatalf("accepted %s as %+v", c.doc, v)
			}
			checkPaths(t, err, c.paths...)
		})
	}
}

// roundTrip checks what every accepted value must satisfy: it writes out and reads back to an
// equal value, writing is stable, and Validate accepts it.
func roundTrip[T any](t *testing.T, v T, parse func([]byte) (T, error), validate func(*T) error) {
	t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal(%+v): %v", v, err)
	}
	back, err := parse(out)
	if err != nil {
		t.Fatalf("the parser rejects what it wrote: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, v) {
		t.Fatalf("re-parsing changed the value:\n got %+v\nwant %+v\nvia %s", back, v, out)
	}
	again, err := json.Marshal(back)
	if err != nil || string(again) != string(out) {
		t.Fatalf("writing is not stable:\n%s\n%s (%v)", out, again, err)
	}
	if err := validate(&v); err != nil {
		t.Fatalf("Validate() of an accepted value: %v", err)
	}
}

// many is n copies of item joined by commas.
func many(item string, n int) string {
	return strings.TrimSuffix(strings.Repeat(item+",", n), ",")
}

// manyKeys is an object body of n distinct keys with string values.
func manyKeys(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"k%d":"v"`, i)
	}
	return strings.Join(parts, ",")
}

// TestSetForms checks the three shapes every set parser reads and the paths each gives, on
// each resource, so that a mistake in one resource's wiring shows.
func TestSetForms(t *testing.T) {
	type parser struct {
		name, plural, id string
		good             []string // two valid items with distinct ids
		bad              string   // an item with a bad field ...
		badField         string   // ... at this path within the item
		parse            func([]byte) (int, error)
	}
	count := func(f func([]byte) ([]api.Rule, error)) func([]byte) (int, error) {
		return func(b []byte) (int, error) { v, err := f(b); return len(v), err }
	}
	parsers := []parser{
		{"catalog", "catalog", "app",
			[]string{`{"app":"a","owner":{"name":"A","contact":"a@x"},"match":[{"process":"a"}]}`,
				`{"app":"b","owner":{"name":"B","contact":"b@x"},"match":[{"process":"b"}]}`},
			`{"app":"c","owner":{"name":"C","contact":"c@x"},"match":[{"process":"c"},{"cidr":"10.0.0.0/40"}]}`,
			"match[1].cidr",
			func(b []byte) (int, error) { v, err := api.ParseCatalog(b); return len(v), err }},
		{"rules", "rules", "id",
			[]string{`{"id":"a","kind":"forecast","metric":"request_rate","level":"node","severity":"info"}`,
				`{"id":"b","kind":"forecast","metric":"request_rate","level":"node","severity":"info"}`},
			`{"id":"c","kind":"forecast","metric":"request_rate","level":"node","severity":"info","selector":{"cidr":"10.0.0.0/99"}}`,
			"selector.cidr", count(api.ParseRules)},
		{"receivers", "receivers", "id",
			[]string{`{"id":"a","kind":"webhook","url":"http://a.example"}`,
				`{"id":"b","kind":"webhook","url":"http://b.example"}`},
			`{"id":"c","kind":"webhook","url":"ftp://c.example"}`, "url",
			func(b []byte) (int, error) { v, err := api.ParseReceivers(b); return len(v), err }},
	}
	for _, p := range parsers {
		a, b := p.good[0], p.good[1]
		t.Run(p.name, func(t *testing.T) {
			for _, ok := range []struct {
				doc  string
				want int
			}{
				{a, 1}, {" [" + a + "," + b + "] ", 2}, {`{"` + p.plural + `":[` + a + "," + b + "]}", 2},
				{`[]`, 0}, {`{"` + p.plural + `":[]}`, 0},
			} {
				n, err := p.parse([]byte(ok.doc))
				if err != nil || n != ok.want {
					t.Errorf("parse(%s) = %d items, %v; want %d", ok.doc, n, err, ok.want)
				}
			}
			for _, bad := range []badCase{
				{"lone item", p.bad, []string{p.badField}},
				{"array", "[" + a + "," + b + "," + p.bad + "]", []string{"[2]." + p.badField}},
				{"wrapped", `{"` + p.plural + `":[` + a + "," + p.bad + "]}", []string{p.plural + "[1]." + p.badField}},
				{"duplicate id in array", "[" + a + "," + b + "," + a + "]", []string{"[2]." + p.id}},
				{"duplicate id wrapped", `{"` + p.plural + `":[` + a + "," + a + "]}", []string{p.plural + "[1]." + p.id}},
				{"item not an object", "[" + a + ",7]", []string{"[1]"}},
				{"wrapped with another key", `{"` + p.plural + `":[` + a + `],"version":2}`, []string{"version"}},
				{"wrapped not an array", `{"` + p.plural + `":{}}`, []string{p.plural}},
				{"not JSON", `{"` + p.plural, []string{""}},
				{"a string", `"x"`, []string{""}},
				{"null", `null`, []string{""}},
				{"broken array", `[` + a, []string{""}},
			} {
				t.Run(bad.name, func(t *testing.T) {
					n, err := p.parse([]byte(bad.doc))
					if err == nil {
						t.Fatalf("accepted %s (%d items)", bad.doc, n)
					}
					checkPaths(t, err, bad.paths...)
				})
			}
		})
	}
}

func TestSetLimits(t *testing.T) {
	rule := `{"id":"r%d","kind":"forecast","metric":"request_rate","level":"node","severity":"info"}`
	items := make([]string, api.MaxRules+1)
	for i := range items {
		items[i] = fmt.Sprintf(rule, i)
	}
	if _, err := api.ParseRules([]byte("[" + strings.Join(items[:api.MaxRules], ",") + "]")); err != nil {
		t.Errorf("%d rules rejected: %v", api.MaxRules, err)
	}
	_, err := api.ParseRules([]byte(`{"rules":[` + strings.Join(items, ",") + "]}"))
	checkPaths(t, err, "rules")

	recv := make([]string, api.MaxReceivers+1)
	for i := range recv {
		recv[i] = fmt.Sprintf(`{"id":"r%d","kind":"webhook","url":"http://h"}`, i)
	}
	_, err = api.ParseReceivers([]byte("[" + strings.Join(recv, ",") + "]"))
	checkPaths(t, err, "")

	entries := make([]string, api.MaxCatalogEntries+1)
	for i := range entries {
		entries[i] = fmt.Sprintf(`{"app":"a%d","owner":{"name":"n","contact":"c"},"match":[{"process":"p%d"}]}`, i, i)
	}
	if _, err := api.ParseCatalog([]byte("[" + strings.Join(entries[:api.MaxCatalogEntries], ",") + "]")); err != nil {
		t.Errorf("%d catalog entries rejected: %v", api.MaxCatalogEntries, err)
	}
	_, err = api.ParseCatalog([]byte("[" + strings.Join(entries, ",") + "]"))
	checkPaths(t, err, "")
}

// TestEncodingJSON checks that the types decode through encoding/json with the parsers' rules,
// also where they sit inside other values.
func TestEncodingJSON(t *testing.T) {
	var items []api.MatchItem
	if err := json.Unmarshal([]byte(`[{"cidr":"10.1.2.3/8","ports":["81","80"]}]`), &items); err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Prefix.String() != "10.0.0.0/8" || len(items[0].Ports) != 1 || items[0].Ports[0].Last != 81 {
		t.Errorf("decoded %+v", items)
	}
	if err := json.Unmarshal([]byte(`[{"ports":["80"]}]`), &items); err == nil {
		t.Error("a match item of ports alone decoded")
	}
	var sel struct{ S api.RuleSelector }
	if err := json.Unmarshal([]byte(`{"S":{"method":"get","transport":"udp"}}`), &sel); err != nil ||
		sel.S.Method != "GET" || sel.S.Transport != sdk.TransportUDP {
		t.Errorf("decoded %+v, %v", sel, err)
	}
	if err := json.Unmarshal([]byte(`{"S":{"app":"x"}}`), &sel); err == nil {
		t.Error("a selector with an unknown field decoded")
	}
	var all struct {
		Rules     []api.Rule
		Receivers []api.Receiver
		Catalog   []api.CatalogEntry
		Predict   api.PredictionSettings
	}
	doc := `{"Rules":[` + forecast("") + `],"Receivers":[{"id":"r","kind":"webhook","url":"http://h"}],` +
		`"Catalog":[` + exampleEntry + `],"Predict":{"band":2}}`
	if err := json.Unmarshal([]byte(doc), &all); err != nil {
		t.Fatal(err)
	}
	if all.Rules[0].Direction != api.DirectionBoth || !all.Receivers[0].SendResolved ||
		all.Catalog[0].Owner.Team != "frontend" || all.Predict.Band != 2 || all.Predict.Season != api.DefaultPredictionSettings().Season {
		t.Errorf("decoded %+v", all)
	}
}
