package api_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// exampleEntry is the catalog entry of the design, with every field.
const exampleEntry = `{"app": "web", "description": "public web front",
	"owner": {"name": "Web team on call", "team": "frontend", "contact": "web-oncall@example.com"},
	"match": [{"cidr": "10.77.0.2/32", "ports": ["80", "8080-8090"]},
	          {"address": "2001:db8::10"},
	          {"process": "nginx"}],
	"labels": {"tier": "front", "k8s.io/name": "web"}}`

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestParseCatalogEntryExample(t *testing.T) {
	c, err := api.ParseCatalogEntry([]byte(exampleEntry))
	if err != nil {
		t.Fatalf("the example is rejected: %v", err)
	}
	want := api.CatalogEntry{
		App:         "web",
		Description: "public web front",
		Owner:       api.Owner{Name: "Web team on call", Team: "frontend", Contact: "web-oncall@example.com"},
		// Sorted: items without a range first, then IPv4 before IPv6.
		Match: []api.MatchItem{
			{Process: "nginx"},
			{Prefix: pfx("10.77.0.2/32"), Ports: []sdk.PortRange{{First: 80, Last: 80}, {First: 8080, Last: 8090}}},
			{Prefix: pfx("2001:db8::10/128")},
		},
		Labels: map[string]string{"tier": "front", "k8s.io/name": "web"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("ParseCatalogEntry(example) =\n%+v\nwant\n%+v", c, want)
	}
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"app":"web","description":"public web front",` +
		`"owner":{"name":"Web team on call","team":"frontend","contact":"web-oncall@example.com"},` +
		`"match":[{"process":"nginx"},{"address":"10.77.0.2","ports":["80","8080-8090"]},{"address":"2001:db8::10"}],` +
		`"labels":{"k8s.io/name":"web","tier":"front"}}`
	if string(out) != wantJSON {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, wantJSON)
	}
	var viaJSON api.CatalogEntry
	if err := json.Unmarshal([]byte(exampleEntry), &viaJSON); err != nil || !reflect.DeepEqual(viaJSON, want) {
		t.Errorf("json.Unmarshal = %+v, %v", viaJSON, err)
	}
}

// entryWith is a minimal valid entry with the match items given.
func entryWith(match string) string {
	return `{"app":"a","owner":{"name":"n","contact":"c"},"match":[` + match + `]}`
}

func TestCatalogNormalises(t *testing.T) {
	tests := []struct {
		name  string
		match string
		want  []api.MatchItem
	}{
		{"host bits cleared", `{"cidr":"10.77.1.9/16"}`, []api.MatchItem{{Prefix: pfx("10.77.0.0/16")}}},
		{"a /32 CIDR is an address", `{"cidr":"10.0.0.1/32"}`, []api.MatchItem{{Prefix: pfx("10.0.0.1/32")}}},
		{"a bare address in cidr is a range of one", `{"cidr":"10.0.0.1"}`, []api.MatchItem{{Prefix: pfx("10.0.0.1/32")}}},
		{"IPv4-mapped address", `{"address":"::ffff:10.0.0.1"}`, []api.MatchItem{{Prefix: pfx("10.0.0.1/32")}}},
		{"IPv4-mapped CIDR", `{"cidr":"::ffff:10.1.2.3/104"}`, []api.MatchItem{{Prefix: pfx("10.0.0.0/8")}}},
		{"IPv4-mapped CIDR shorter than 96 bits stays IPv6", `{"cidr":"::ffff:0:0/95"}`, []api.MatchItem{{Prefix: pfx("::fffe:0:0/95")}}},
		{"IPv6 in any case", `{"address":"2001:DB8:0::1"}`, []api.MatchItem{{Prefix: pfx("2001:db8::1/128")}}},
		{"ports sorted and merged", `{"address":"10.0.0.1","ports":["82-90",81,"80"," 443 ","100-200","150-300","443"]}`,
			[]api.MatchItem{{Prefix: pfx("10.0.0.1/32"), Ports: []sdk.PortRange{{First: 80, Last: 90}, {First: 100, Last: 300}, {First: 443, Last: 443}}}}},
		{"ports 0 and 65535", `{"address":"10.0.0.1","ports":["0","65535"]}`,
			[]api.MatchItem{{Prefix: pfx("10.0.0.1/32"), Ports: []sdk.PortRange{{First: 0, Last: 0}, {First: 65535, Last: 65535}}}}},
		{"a single port string", `{"address":"10.0.0.1","ports":"8080-8090"}`,
			[]api.MatchItem{{Prefix: pfx("10.0.0.1/32"), Ports: []sdk.PortRange{{First: 8080, Last: 8090}}}}},
		{"a single port number", `{"address":"10.0.0.1","ports":53}`,
			[]api.MatchItem{{Prefix: pfx("10.0.0.1/32"), Ports: []sdk.PortRange{{First: 53, Last: 53}}}}},
		{"empty and null ports are any port", `{"address":"10.0.0.1","ports":[]},{"address":"10.0.0.2","ports":null}`,
			[]api.MatchItem{{Prefix: pfx("10.0.0.1/32")}, {Prefix: pfx("10.0.0.2/32")}}},
		{"duplicates dropped", `{"cidr":"10.0.0.0/8"},{"cidr":"10.1.0.0/8"},{"process":"x"},{"process":"x"}`,
			[]api.MatchItem{{Process: "x"}, {Prefix: pfx("10.0.0.0/8")}}},
		{"process with ports and address", `{"process":"sshd","ports":["22"],"cidr":"0.0.0.0/0"}`,
			[]api.MatchItem{{Prefix: pfx("0.0.0.0/0"), Ports: []sdk.PortRange{{First: 22, Last: 22}}, Process: "sshd"}}},
		{"process names keep their case and inner spaces", `{"process":"Web Content"},{"process":"进程"}`,
			[]api.MatchItem{{Process: "Web Content"}, {Process: "进程"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := api.ParseCatalogEntry([]byte(entryWith(tt.match)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Match, tt.want) {
				t.Errorf("Match = %+v, want %+v", c.Match, tt.want)
			}
			roundTrip(t, c, api.ParseCatalogEntry, (*api.CatalogEntry).Validate)
		})
	}
}

// TestCatalogCIDRMatchesNet checks the canonical CIDR against the net package, which works out
// the network independently of net/netip.
func TestCatalogCIDRMatchesNet(t *testing.T) {
	for _, cidr := range []string{"172.10.2.33/24", "10.255.255.255/8", "1.2.3.4/0", "203.0.113.200/27",
		"2001:db8:abcd:12::1/48", "2001:db8::ffff/127", "fe80::1:2:3:4/10", "::/0"} {
		c, err := api.ParseCatalogEntry([]byte(entryWith(fmt.Sprintf(`{"cidr":%q}`, cidr))))
		if err != nil {
			t.Fatal(err)
		}
		_, ipnet, _ := net.ParseCIDR(cidr)
		if got := c.Match[0].Prefix.String(); got != ipnet.String() {
			t.Errorf("%s: cidr %s, net.ParseCIDR says %s", cidr, got, ipnet)
		}
	}
}

func TestCatalogFields(t *testing.T) {
	c, err := api.ParseCatalogEntry([]byte(`{"app":"A.b_c-9","description":"line one\n\tline two",
		"owner":{"name":"Ops","contact":"+86 10 1234 5678 ext. 9 (24/7) — https://ops.example/页"},
		"match":[{"process":"x"}],"labels":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.App != "A.b_c-9" || c.Description != "line one\n\tline two" || c.Owner.Team != "" ||
		c.Owner.Contact != "+86 10 1234 5678 ext. 9 (24/7) — https://ops.example/页" || c.Labels != nil {
		t.Errorf("got %+v", c)
	}
	// Limits are inclusive.
	long := func(n int) string { return strings.Repeat("é", n) }
	doc := fmt.Sprintf(`{"app":%q,"description":%q,"owner":{"name":%q,"team":%q,"contact":%q},"match":[{"process":%q}],"labels":{%s}}`,
		strings.Repeat("a", api.MaxIDLength), long(api.MaxTextLength), long(api.MaxNameLength), long(api.MaxNameLength),
		long(api.MaxContactLength), long(api.MaxProcessLength), manyKeys(api.MaxMapEntries))
	c, err = api.ParseCatalogEntry([]byte(doc))
	if err != nil {
		t.Fatalf("an entry at every limit is rejected: %v", err)
	}
	roundTrip(t, c, api.ParseCatalogEntry, (*api.CatalogEntry).Validate)
	items := make([]string, api.MaxMatchItems)
	for i := range items {
		items[i] = fmt.Sprintf(`{"address":"10.0.%d.%d","ports":[%s]}`, i/256, i%256, many(`"1"`, api.MaxMatchPorts))
	}
	if _, err := api.ParseCatalogEntry([]byte(entryWith(strings.Join(items, ",")))); err != nil {
		t.Errorf("%d match items of %d ports rejected: %v", api.MaxMatchItems, api.MaxMatchPorts, err)
	}
}

func TestCatalogRejects(t *testing.T) {
	owner := `"owner":{"name":"n","contact":"c"}`
	match := `"match":[{"process":"p"}]`
	e := func(fields ...string) string { return "{" + strings.Join(fields, ",") + "}" }
	app := `"app":"web"`
	cases := []badCase{
		{"not an object", `"web"`, []string{""}},
		{"null", `null`, []string{""}},
		{"unknown field", e(app, owner, match, `"name":"web"`), []string{"name"}},
		{"app missing", e(owner, match), []string{"app"}},
		{"app with a space", e(`"app":"web app"`, owner, match), []string{"app"}},
		{"app too long", e(fmt.Sprintf(`"app":%q`, strings.Repeat("a", 65)), owner, match), []string{"app"}},
		{"app not a string", e(`"app":5`, owner, match), []string{"app"}},
		{"app starts with -", e(`"app":"-web"`, owner, match), []string{"app"}},
		{"app empty", e(`"app":""`, owner, match), []string{"app"}},
		{"description with a bell", e(app, owner, match, `"description":"ding\u0007"`), []string{"description"}},
		{"description too long", e(app, owner, match, fmt.Sprintf(`"description":%q`, strings.Repeat("x", 1025))), []string{"description"}},
		{"owner missing", e(app, match), []string{"owner"}},
		{"owner a string", e(app, match, `"owner":"ops"`), []string{"owner"}},
		{"owner name missing", e(app, match, `"owner":{"contact":"c"}`), []string{"owner.name"}},
		{"owner name blank", e(app, match, `"owner":{"name":"  ","contact":"c"}`), []string{"owner.name"}},
		{"owner name too long", e(app, match, fmt.Sprintf(`"owner":{"name":%q,"contact":"c"}`, strings.Repeat("n", 129))), []string{"owner.name"}},
		{"owner contact missing", e(app, match, `"owner":{"name":"n"}`), []string{"owner.contact"}},
		{"owner contact too long", e(app, match, fmt.Sprintf(`"owner":{"name":"n","contact":%q}`, strings.Repeat("c", 257))), []string{"owner.contact"}},
		{"owner contact with a newline", e(app, match, `"owner":{"name":"n","contact":"a@x\nBcc: b@x"}`), []string{"owner.contact"}},
		{"owner contact with DEL", e(app, match, `"owner":{"name":"n","contact":"a\u007f"}`), []string{"owner.contact"}},
		{"owner unknown field", e(app, match, `"owner":{"name":"n","contact":"c","email":"e"}`), []string{"owner.email"}},
		{"owner team not a string", e(app, match, `"owner":{"name":"n","contact":"c","team":["t"]}`), []string{"owner.team"}},
		{"match missing", e(app, owner), []string{"match"}},
		{"match empty", e(app, owner, `"match":[]`), []string{"match"}},
		{"match null", e(app, owner, `"match":null`), []string{"match"}},
		{"match an object", e(app, owner, `"match":{"process":"p"}`), []string{"match"}},
		{"match over the limit", e(app, owner, `"match":[`+many(`{"process":"p"}`, api.MaxMatchItems+1)+`]`), []string{"match"}},
		{"match item a string", e(app, owner, `"match":[{"process":"p"},"10.0.0.1"]`), []string{"match[1]"}},
		{"match item empty", e(app, owner, `"match":[{}]`), []string{"match[0]"}},
		{"match item with ports only", e(app, owner, `"match":[{"ports":["80"]}]`), []string{"match[0]"}},
		{"match item with cidr and address", e(app, owner, `"match":[{"cidr":"10.0.0.0/8","address":"10.0.0.1"}]`), []string{"match[0].address"}},
		{"match item unknown field", e(app, owner, `"match":[{"address":"10.0.0.1","port":"80"}]`), []string{"match[0].port"}},
		{"cidr too long", e(app, owner, `"match":[{"process":"p"},{"cidr":"10.0.0.0/33"}]`), []string{"match[1].cidr"}},
		{"cidr with a zone", e(app, owner, `"match":[{"cidr":"fe80::1%eth0/64"}]`), []string{"match[0].cidr"}},
		{"cidr not an address", e(app, owner, `"match":[{"cidr":"web.example.com/24"}]`), []string{"match[0].cidr"}},
		{"cidr a number", e(app, owner, `"match":[{"cidr":10}]`), []string{"match[0].cidr"}},
		{"address is a CIDR", e(app, owner, `"match":[{"address":"10.0.0.0/8"}]`), []string{"match[0].address"}},
		{"address out of range", e(app, owner, `"match":[{"address":"10.0.0.256"}]`), []string{"match[0].address"}},
		{"address with a zone", e(app, owner, `"match":[{"address":"fe80::1%eth0"}]`), []string{"match[0].address"}},
		{"address empty", e(app, owner, `"match":[{"address":""}]`), []string{"match[0].address"}},
		{"port a name", e(app, owner, `"match":[{"process":"p"},{"address":"10.0.0.1","ports":["http"]}]`), []string{"match[1].ports[0]"}},
		{"port out of range", e(app, owner, `"match":[{"address":"10.0.0.1","ports":["80","65536"]}]`), []string{"match[0].ports[1]"}},
		{"port range reversed", e(app, owner, `"match":[{"address":"10.0.0.1","ports":["90-80"]}]`), []string{"match[0].ports[0]"}},
		{"port range half open", e(app, owner, `"match":[{"address":"10.0.0.1","ports":["8080-"]}]`), []string{"match[0].ports[0]"}},
		{"port negative", e(app, owner, `"match":[{"address":"10.0.0.1","ports":[-1]}]`), []string{"match[0].ports[0]"}},
		{"port fractional", e(app, owner, `"match":[{"address":"10.0.0.1","ports":[80.5]}]`), []string{"match[0].ports[0]"}},
		{"port true", e(app, owner, `"match":[{"address":"10.0.0.1","ports":[true,"x"]}]`), []string{"match[0].ports[0]", "match[0].ports[1]"}},
		{"single port bad", e(app, owner, `"match":[{"address":"10.0.0.1","ports":"x"}]`), []string{"match[0].ports"}},
		{"ports an object", e(app, owner, `"match":[{"address":"10.0.0.1","ports":{"80":1}}]`), []string{"match[0].ports"}},
		{"ports over the limit", e(app, owner, `"match":[{"address":"10.0.0.1","ports":[`+many("1", api.MaxMatchPorts+1)+`]}]`), []string{"match[0].ports"}},
		{"process empty", e(app, owner, `"match":[{"process":""}]`), []string{"match[0].process"}},
		{"process too long", e(app, owner, fmt.Sprintf(`"match":[{"process":%q}]`, strings.Repeat("p", 65))), []string{"match[0].process"}},
		{"process with a tab", e(app, owner, `"match":[{"process":"a\tb"}]`), []string{"match[0].process"}},
		{"process with a trailing space", e(app, owner, `"match":[{"process":"nginx "}]`), []string{"match[0].process"}},
		{"process not a string", e(app, owner, `"match":[{"process":1}]`), []string{"match[0].process"}},
		{"labels a list", e(app, owner, match, `"labels":["a"]`), []string{"labels"}},
		{"label key with a space", e(app, owner, match, `"labels":{"a b":"c"}`), []string{"labels.a b"}},
		{"label key empty", e(app, owner, match, `"labels":{"":"c"}`), []string{"labels"}},
		{"label key too long", e(app, owner, match, fmt.Sprintf(`"labels":{%q:"c"}`, strings.Repeat("k", 64))), []string{"labels." + strings.Repeat("k", 64)}},
		{"label value too long", e(app, owner, match, fmt.Sprintf(`"labels":{"k":%q}`, strings.Repeat("v", 1025))), []string{"labels.k"}},
		{"label value not a string", e(app, owner, match, `"labels":{"k":1}`), []string{"labels.k"}},
		{"labels over the limit", e(app, owner, match, `"labels":{`+manyKeys(api.MaxMapEntries+1)+`}`), []string{"labels"}},
		{"every field at once", `{"app":"","owner":{"name":"","contact":""},"match":[{"cidr":"x"},{"address":"y","ports":["z"]}],"labels":{"":""},"x":1}`,
			[]string{"app", "owner.name", "owner.contact", "match[0].cidr", "match[1].address", "match[1].ports[0]", "labels", "x"}},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d bad entries", len(cases))
	}
	runBad(t, cases, api.ParseCatalogEntry)
}

func TestCatalogSetRejects(t *testing.T) {
	a := `{"app":"a","owner":{"name":"n","contact":"c"},"match":[{"cidr":"10.0.0.0/8"},{"address":"10.1.1.1","ports":["80","81"]}]}`
	b := `{"app":"b","owner":{"name":"n","contact":"c"},"match":[{"process":"p"},{"cidr":"10.9.9.9/8"}]}`
	c := `{"app":"c","owner":{"name":"n","contact":"c"},"match":[{"process":"q"},{"address":"10.1.1.1","ports":["80-81"]}]}`
	d := `{"app":"d","owner":{"name":"n","contact":"c"},"match":[{"address":"10.1.1.1","ports":["80"]},{"process":"p","ports":["80"]}]}`
	runBad(t, []badCase{
		// 10.9.9.9/8 is 10.0.0.0/8 once normalised: the path names the item as written.
		{"same range claimed twice", "[" + a + "," + b + "]", []string{"[1].match[1]"}},
		{"same range and ports claimed twice, wrapped", `{"catalog":[` + a + "," + c + "]}", []string{"catalog[1].match[1]"}},
		{"three claims", "[" + a + "," + b + "," + c + "]", []string{"[1].match[1]", "[2].match[1]"}},
		{"duplicate app", "[" + a + "," + strings.Replace(b, `"app":"b"`, `"app":"a"`, 1) + "]", []string{"[1].app"}},
	}, api.ParseCatalog)
	// Overlaps that are not the same item are fine: Lookup resolves them.
	if _, err := api.ParseCatalog([]byte("[" + a + "," + d + "]")); err != nil {
		t.Errorf("overlapping but different items rejected: %v", err)
	}
	if _, err := api.ParseCatalog([]byte("[" + b + "," + d + "]")); err != nil {
		t.Errorf("a process with and without ports rejected: %v", err)
	}
}

func TestCatalogValidate(t *testing.T) {
	good := api.CatalogEntry{App: "db", Owner: api.Owner{Name: "DBA", Contact: "dba@x"},
		Match: []api.MatchItem{{Prefix: pfx("10.1.2.3/24"), Ports: []sdk.PortRange{{First: 5432, Last: 5432}}}}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	bad := []struct {
		name  string
		edit  func(*api.CatalogEntry)
		paths []string
	}{
		{"no app", func(c *api.CatalogEntry) { c.App = "" }, []string{"app"}},
		{"no contact", func(c *api.CatalogEntry) { c.Owner.Contact = "" }, []string{"owner.contact"}},
		{"no match", func(c *api.CatalogEntry) { c.Match = nil }, []string{"match"}},
		{"an item of nothing", func(c *api.CatalogEntry) { c.Match = append(c.Match, api.MatchItem{}) }, []string{"match[1]"}},
		{"ports only", func(c *api.CatalogEntry) {
			c.Match = []api.MatchItem{{Ports: []sdk.PortRange{{First: 1, Last: 2}}}}
		}, []string{"match[0]"}},
		{"reversed range", func(c *api.CatalogEntry) {
			c.Match[0].Ports = []sdk.PortRange{{First: 9, Last: 1}}
		}, []string{"match[0].ports[0]"}},
		{"bad process", func(c *api.CatalogEntry) { c.Match[0].Process = "\x00" }, []string{"match[0].process"}},
		{"bad label", func(c *api.CatalogEntry) { c.Labels = map[string]string{"a\x01": ""} }, []string{"labels.a\x01"}},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			c := good
			c.Match = []api.MatchItem{good.Match[0]}
			b.edit(&c)
			checkPaths(t, c.Validate(), b.paths...)
		})
	}
	other := api.CatalogEntry{App: "db2", Owner: good.Owner, Match: []api.MatchItem{{Prefix: pfx("10.1.2.0/24"), Ports: []sdk.PortRange{{First: 5432, Last: 5432}}}}}
	checkPaths(t, api.ValidateCatalog([]api.CatalogEntry{good, other}), "[1].match[0]")
	checkPaths(t, api.ValidateCatalog([]api.CatalogEntry{good, good}), "[1].app")
	if err := api.ValidateCatalog(nil); err != nil {
		t.Errorf("ValidateCatalog(nil) = %v", err)
	}
}

func TestCatalogEntryMatches(t *testing.T) {
	c, err := api.ParseCatalogEntry([]byte(exampleEntry))
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	tests := []struct {
		addr    netip.Addr
		port    uint16
		process string
		want    bool
	}{
		{ip("10.77.0.2"), 80, "", true},
		{ip("10.77.0.2"), 8085, "", true},
		{ip("10.77.0.2"), 8090, "", true},
		{ip("10.77.0.2"), 8091, "", false}, // the port narrows the address
		{ip("10.77.0.2"), 443, "", false},
		{ip("10.77.0.3"), 80, "", false},
		{ip("::ffff:10.77.0.2"), 80, "", true}, // IPv4-mapped is IPv4
		{ip("2001:db8::10"), 1, "", true},      // no ports: any port
		{ip("2001:db8::10%eth0"), 1, "", true}, // the zone is not matched
		{ip("2001:db8::11"), 1, "", false},
		{ip("192.0.2.1"), 9, "nginx", true}, // the process alone
		{netip.Addr{}, 0, "nginx", true},
		{ip("192.0.2.1"), 9, "Nginx", false}, // names are compared exactly
		{ip("192.0.2.1"), 9, "nginx ", false},
		{netip.Addr{}, 80, "", false},
	}
	for _, tt := range tests {
		if got := c.Matches(tt.addr, tt.port, tt.process); got != tt.want {
			t.Errorf("Matches(%v, %d, %q) = %v, want %v", tt.addr, tt.port, tt.process, got, tt.want)
		}
	}
	// Every condition of one item must hold.
	both := api.CatalogEntry{Match: []api.MatchItem{{Prefix: pfx("10.0.0.0/8"), Ports: []sdk.PortRange{{First: 22, Last: 22}}, Process: "sshd"}}}
	for _, tt := range []struct {
		addr    string
		port    uint16
		process string
		want    bool
	}{{"10.1.1.1", 22, "sshd", true}, {"10.1.1.1", 22, "", false}, {"10.1.1.1", 23, "sshd", false}, {"11.1.1.1", 22, "sshd", false}} {
		if got := both.Matches(ip(tt.addr), tt.port, tt.process); got != tt.want {
			t.Errorf("address+port+process item: Matches(%s, %d, %q) = %v, want %v", tt.addr, tt.port, tt.process, got, tt.want)
		}
	}
	// An item that names nothing (only code can build one) matches nothing rather than everything.
	empty := api.CatalogEntry{Match: []api.MatchItem{{}, {Ports: []sdk.PortRange{{First: 0, Last: 65535}}}}}
	if empty.Matches(ip("10.0.0.1"), 80, "") || empty.Matches(netip.Addr{}, 0, "") {
		t.Error("an item without a range or process matched")
	}
}
