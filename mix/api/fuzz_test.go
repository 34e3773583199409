package api_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// The fuzz targets check, for every input: a rejection is a *sdk.ValidationError whose fields
// all have reasons; an accepted value writes out and reads back to an equal value, writes the
// same way twice, and passes Validate.

func checkRejected(t *testing.T, err error) {
	t.Helper()
	var ve *sdk.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *sdk.ValidationError", err, err)
	}
	if len(ve.Fields) == 0 {
		t.Fatal("ValidationError without fields")
	}
	for _, f := range ve.Fields {
		if f.Reason == "" {
			t.Fatalf("field %q rejected without a reason", f.Path)
		}
	}
}

// checkSet checks an accepted set: each item round-trips, the set validates, and the set
// written as an array reads back equal.
func checkSet[T any](t *testing.T, vs []T, parseOne func([]byte) (T, error), validate func(*T) error,
	parseSet func([]byte) ([]T, error), validateSet func([]T) error) {
	t.Helper()
	for _, v := range vs {
		roundTrip(t, v, parseOne, validate)
	}
	if err := validateSet(vs); err != nil {
		t.Fatalf("validating an accepted set: %v", err)
	}
	out, err := json.Marshal(vs)
	if err != nil {
		t.Fatal(err)
	}
	if vs == nil {
		out = []byte("[]")
	}
	back, err := parseSet(out)
	if err != nil {
		t.Fatalf("the set parser rejects what it wrote: %v\n%s", err, out)
	}
	if len(vs) > 0 && !reflect.DeepEqual(back, vs) {
		t.Fatalf("re-parsing changed the set:\n got %+v\nwant %+v", back, vs)
	}
}

var fuzzEndpoints = []struct {
	addr    netip.Addr
	port    uint16
	process string
}{
	{netip.MustParseAddr("10.77.0.2"), 80, ""},
	{netip.MustParseAddr("::ffff:10.0.0.1"), 8080, "nginx"},
	{netip.MustParseAddr("2001:db8::10"), 0, ""},
	{netip.MustParseAddr("fe80::1%eth0"), 65535, "a"},
	{netip.Addr{}, 443, "p"},
	{netip.MustParseAddr("0.0.0.0"), 1, "x"},
}

var catalogSeeds = []string{
	exampleEntry, overlapping,
	`{"catalog":[` + exampleEntry + `]}`,
	entryWith(`{"cidr":"::ffff:10.1.2.3/104","ports":["1-2",3,"5-9"]},{"process":"p","ports":"0"}`),
	`[{"app":"a","owner":{"name":"n","contact":"c"},"match":[{"cidr":"10.0.0.0/8"}]},` +
		`{"app":"b","owner":{"name":"n","contact":"c"},"match":[{"cidr":"10.9.0.0/8"}]}]`,
	`{"app":"","owner":{"name":"","contact":""},"match":[{"cidr":"x"},{"address":"y","ports":["z"]}],"labels":{"":""},"x":1}`,
}

func FuzzParseCatalogEntry(f *testing.F) {
	for _, s := range catalogSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := api.ParseCatalogEntry(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		roundTrip(t, c, api.ParseCatalogEntry, (*api.CatalogEntry).Validate)
		// A lone entry is a catalog; its lookups agree with Matches.
		cat, err := api.NewCatalog([]api.CatalogEntry{c})
		if err != nil {
			t.Fatalf("NewCatalog of an accepted entry: %v", err)
		}
		for _, ep := range fuzzEndpoints {
			_, found := cat.Lookup(ep.addr, ep.port, ep.process)
			if found != c.Matches(ep.addr, ep.port, ep.process) {
				t.Fatalf("Lookup(%v, %d, %q) found %v, Matches says otherwise", ep.addr, ep.port, ep.process, found)
			}
		}
	})
}

func FuzzParseCatalog(f *testing.F) {
	for _, s := range catalogSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := api.ParseCatalog(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		checkSet(t, entries, api.ParseCatalogEntry, (*api.CatalogEntry).Validate, api.ParseCatalog, api.ValidateCatalog)
		cat, err := api.NewCatalog(entries)
		if err != nil {
			t.Fatalf("NewCatalog of an accepted catalog: %v", err)
		}
		for _, ep := range fuzzEndpoints {
			want := bruteForce(entries, ep.addr, ep.port, ep.process)
			got := ""
			if e, ok := cat.Lookup(ep.addr, ep.port, ep.process); ok {
				got = e.App
			}
			if got != want {
				t.Fatalf("Lookup(%v, %d, %q) = %q, trying every item gives %q", ep.addr, ep.port, ep.process, got, want)
			}
		}
	})
}

var ruleSeeds = []string{
	exampleRule, exampleForecast,
	`{"rules":[` + exampleRule + `,` + exampleForecast + `]}`,
	rule(`"for":"1d12h","selector":{"port":0,"cidr":"::ffff:1.2.3.4"}`),
	forecast(`"band":1e-300,"direction":"BOTH"`),
	newEdge(`"selector":{"server_app":"db","port":"5432-5433"},"labels":{"page":"db"}`),
	newEdge(`"metric":"request_rate","for":"1m","level":"node"`),
	`{"id":"x","kind":"threshold","metric":"m","level":"l","severity":"s","band":1,"selector":{"cidr":"x","port":"y"}}`,
}

func FuzzParseRule(f *testing.F) {
	for _, s := range ruleSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := api.ParseRule(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		roundTrip(t, r, api.ParseRule, (*api.Rule).Validate)
		if (r.Kind == api.KindThreshold) != (r.Op != "") || r.Kind == api.KindForecast && r.Direction == "" {
			t.Fatalf("accepted a rule whose fields do not fit its kind: %+v", r)
		}
	})
}

func FuzzParseRules(f *testing.F) {
	for _, s := range ruleSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := api.ParseRules(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		checkSet(t, rs, api.ParseRule, (*api.Rule).Validate, api.ParseRules, api.ValidateRules)
	})
}

func FuzzParsePredictionSettings(f *testing.F) {
	f.Add([]byte(examplePrediction))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"season":"7d","min_history":"1d0.5s","method":"EWMA","alpha":1e-9}`))
	f.Add([]byte(`{"season":"1s","band":0,"min_history":"x","method":"","alpha":2,"beta":0,"gamma":1,"x":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := api.ParsePredictionSettings(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		roundTrip(t, s, api.ParsePredictionSettings, (*api.PredictionSettings).Validate)
		if s.Season < api.MinSeason || s.Season > api.MaxSeason || s.Band <= 0 || s.Alpha <= 0 || s.Alpha >= 1 {
			t.Fatalf("accepted settings out of bounds: %+v", s)
		}
	})
}

var receiverSeeds = []string{
	exampleReceiver,
	`{"id":"r","kind":"webhook","url":"http://h/","repeat_interval":"90m"}`,
	`{"id":"r","kind":"alertmanager","url":"http://h/","repeat_interval":"0s"}`,
	`[{"id":"am","kind":"alertmanager","url":"http://[::1]:9093"},{"id":"w","kind":"webhook","url":"https://u:p@h/a%20b?x=1"}]`,
	`{"receivers":[{"id":"w","kind":"webhook","url":"http://h/","headers":{"x-a":"1"}}]}`,
	`{"id":"r","kind":"webhook","url":"http:h/hook#x","headers":{"Host":"a","X-A":"1","x-a":"2"}}`,
}

func FuzzParseReceiver(f *testing.F) {
	for _, s := range receiverSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := api.ParseReceiver(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		roundTrip(t, r, api.ParseReceiver, (*api.Receiver).Validate)
	})
}

func FuzzParseReceivers(f *testing.F) {
	for _, s := range receiverSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := api.ParseReceivers(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		checkSet(t, rs, api.ParseReceiver, (*api.Receiver).Validate, api.ParseReceivers, api.ValidateReceivers)
	})
}
