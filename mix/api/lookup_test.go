package api_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/sdk"
)

// overlapping is a catalog whose items overlap in every way the lookup order distinguishes.
const overlapping = `[
	{"app":"all-v4","owner":{"name":"n","contact":"c"},"match":[{"cidr":"0.0.0.0/0"}]},
	{"app":"net","owner":{"name":"n","contact":"c"},"match":[{"cidr":"10.0.0.0/8"}]},
	{"app":"sub","owner":{"name":"n","contact":"c"},"match":[{"cidr":"10.1.0.0/16"}]},
	{"app":"host","owner":{"name":"n","contact":"c"},"match":[{"address":"10.1.2.3"}]},
	{"app":"host-http","owner":{"name":"n","contact":"c"},"match":[{"address":"10.1.2.3","ports":["80","8080-8090"]}]},
	{"app":"host-8080","owner":{"name":"n","contact":"c"},"match":[{"address":"10.1.2.3","ports":["8080"]}]},
	{"app":"host-nginx","owner":{"name":"n","contact":"c"},"match":[{"address":"10.1.2.3","process":"nginx"}]},
	{"app":"sub-ssh","owner":{"name":"n","contact":"c"},"match":[{"cidr":"10.1.0.0/16","ports":["22"],"process":"sshd"}]},
	{"app":"b-range","owner":{"name":"n","contact":"c"},"match":[{"address":"10.5.5.5","ports":["1005-1014"]}]},
	{"app":"a-range","owner":{"name":"n","contact":"c"},"match":[{"address":"10.5.5.5","ports":["1000-1009"]}]},
	{"app":"nginx","owner":{"name":"n","contact":"c"},"match":[{"process":"nginx"}]},
	{"app":"nginx-tls","owner":{"name":"n","contact":"c"},"match":[{"process":"nginx","ports":["443"]}]},
	{"app":"v6","owner":{"name":"n","contact":"c"},"match":[{"cidr":"2001:db8::/32"}]},
	{"app":"v6-host","owner":{"name":"n","contact":"c"},"match":[{"address":"2001:db8::10"},{"cidr":"2001:db8:1::/48","ports":["53"]}]}
]`

func TestCatalogLookup(t *testing.T) {
	entries, err := api.ParseCatalog([]byte(overlapping))
	if err != nil {
		t.Fatal(err)
	}
	withAll, err := api.NewCatalog(entries)
	if err != nil {
		t.Fatal(err)
	}
	// The same catalog without the IPv4 catch-all, so that process-only items can win for IPv4.
	withoutAll, err := api.NewCatalog(entries[1:])
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	tests := []struct {
		name    string
		c       *api.Catalog
		addr    netip.Addr
		port    uint16
		process string
		want    string // "" for no application
	}{
		{"longest prefix: /8", withAll, ip("10.9.9.9"), 1, "", "net"},
		{"longest prefix: /16", withAll, ip("10.1.9.9"), 1, "", "sub"},
		{"longest prefix: /32", withAll, ip("10.1.2.3"), 22, "", "host"},
		{"the catch-all", withAll, ip("192.0.2.1"), 1, "", "all-v4"},
		{"a port-qualified /16 loses to a /32", withAll, ip("10.1.2.3"), 22, "sshd", "host"},
		{"a port-qualified /16 wins within the /16", withAll, ip("10.1.7.7"), 22, "sshd", "sub-ssh"},
		{"its process must match", withAll, ip("10.1.7.7"), 22, "bash", "sub"},
		{"a process-qualified /32 over a plain /32", withAll, ip("10.1.2.3"), 22, "nginx", "host-nginx"},
		{"ports over process at one prefix", withAll, ip("10.1.2.3"), 80, "nginx", "host-http"},
		{"ports over no ports", withAll, ip("10.1.2.3"), 8085, "", "host-http"},
		{"the narrower port range", withAll, ip("10.1.2.3"), 8080, "", "host-8080"},
		{"outside every port range", withAll, ip("10.1.2.3"), 8091, "", "host"},
		{"IPv4-mapped is IPv4", withAll, ip("::ffff:10.1.2.3"), 8080, "", "host-8080"},
		{"equal widths: the app that sorts first", withAll, ip("10.5.5.5"), 1007, "", "a-range"},
		{"only the second range", withAll, ip("10.5.5.5"), 1012, "", "b-range"},
		{"only the first range", withAll, ip("10.5.5.5"), 1001, "", "a-range"},
		{"an address item beats a process-only item", withAll, ip("192.0.2.1"), 443, "nginx", "all-v4"},
		{"process with port", withoutAll, ip("192.0.2.1"), 443, "nginx", "nginx-tls"},
		{"process without port", withoutAll, ip("192.0.2.1"), 80, "nginx", "nginx"},
		{"process and no address", withoutAll, netip.Addr{}, 443, "nginx", "nginx-tls"},
		{"nothing", withoutAll, ip("192.0.2.1"), 80, "", ""},
		{"no address, no process", withAll, netip.Addr{}, 80, "", ""},
		{"unknown process", withoutAll, ip("192.0.2.1"), 80, "apache", ""},
		{"IPv6 /32", withAll, ip("2001:db8::11"), 1, "", "v6"},
		{"IPv6 /128", withAll, ip("2001:db8::10"), 1, "", "v6-host"},
		{"IPv6 with a zone", withAll, ip("2001:db8::10%eth0"), 1, "", "v6-host"},
		{"IPv6 /48 with port", withAll, ip("2001:db8:1::5"), 53, "", "v6-host"},
		{"IPv6 /48 other port", withAll, ip("2001:db8:1::5"), 54, "", "v6"},
		{"IPv4 catch-all does not cover IPv6", withAll, ip("2001:db9::1"), 1, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := tt.c.Lookup(tt.addr, tt.port, tt.process)
			got := ""
			if ok {
				got = e.App
				if !e.Matches(tt.addr, tt.port, tt.process) {
					t.Errorf("Lookup gave %q, which does not match", got)
				}
			} else if e != nil {
				t.Errorf("Lookup gave an entry with false")
			}
			if got != tt.want {
				t.Errorf("Lookup(%v, %d, %q) = %q, want %q", tt.addr, tt.port, tt.process, got, tt.want)
			}
		})
	}
	if withAll.Len() != len(entries) {
		t.Errorf("Len() = %d, want %d", withAll.Len(), len(entries))
	}
	if e, ok := withAll.Entry("v6-host"); !ok || e.App != "v6-host" || len(e.Match) != 2 {
		t.Errorf("Entry(v6-host) = %+v, %v", e, ok)
	}
	if _, ok := withAll.Entry("nope"); ok {
		t.Error("Entry(nope) found something")
	}
}

func TestNewCatalogRejects(t *testing.T) {
	entries, err := api.ParseCatalog([]byte(overlapping))
	if err != nil {
		t.Fatal(err)
	}
	dup := append(entries, entries[1])
	if _, err := api.NewCatalog(dup); err == nil {
		t.Error("NewCatalog accepted an app twice")
	} else {
		checkPaths(t, err, fmt.Sprintf("[%d].app", len(entries)))
	}
	bad := []api.CatalogEntry{{App: "x", Owner: api.Owner{Name: "n", Contact: "c"}, Match: []api.MatchItem{{}}}}
	if _, err := api.NewCatalog(bad); err == nil {
		t.Error("NewCatalog accepted an item that names nothing")
	}
	// The catalog keeps its own copy.
	c, err := api.NewCatalog(entries)
	if err != nil {
		t.Fatal(err)
	}
	entries[1].Match[0].Prefix = pfx("192.0.2.0/24")
	if e, ok := c.Lookup(netip.MustParseAddr("10.9.9.9"), 1, ""); !ok || e.App != "net" {
		t.Errorf("a change to the caller's entries reached the catalog: %v", e)
	}
	empty, err := api.NewCatalog(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := empty.Lookup(netip.MustParseAddr("10.0.0.1"), 1, "x"); ok || empty.Len() != 0 {
		t.Error("an empty catalog found something")
	}
}

// bruteForce is the lookup order of Catalog's documentation, applied by trying every item of
// every entry: the oracle for the indexed lookup.
func bruteForce(entries []api.CatalogEntry, addr netip.Addr, port uint16, process string) string {
	type rank struct {
		hasRange bool
		bits     int
		width    int // ports in the range that holds the port; 1<<17 for no ports
		proc     bool
		app      string
	}
	better := func(a, b rank) bool {
		switch {
		case a.hasRange != b.hasRange:
			return a.hasRange
		case a.bits != b.bits:
			return a.bits > b.bits
		case a.width != b.width:
			return a.width < b.width
		case a.proc != b.proc:
			return a.proc
		}
		return a.app < b.app
	}
	var best *rank
	for _, e := range entries {
		for _, m := range e.Match {
			one := api.CatalogEntry{Match: []api.MatchItem{m}}
			if !one.Matches(addr, port, process) {
				continue
			}
			r := rank{hasRange: m.Prefix.IsValid(), bits: m.Prefix.Bits(), width: 1 << 17, proc: m.Process != "", app: e.App}
			for _, pr := range m.Ports {
				if pr.Contains(port) {
					r.width = int(pr.Last) - int(pr.First) + 1
				}
			}
			if best == nil || better(r, *best) {
				best = &r
			}
		}
	}
	if best == nil {
		return ""
	}
	return best.app
}

// randomCatalog builds n entries whose items overlap often: ranges drawn from a small space,
// a few processes, narrow and wide port ranges.
func randomCatalog(rng *rand.Rand, n int) []api.CatalogEntry {
	procs := []string{"nginx", "sshd", "java", "envoy"}
	claimed := map[string]bool{}
	var out []api.CatalogEntry
	for i := 0; len(out) < n; i++ {
		e := api.CatalogEntry{App: fmt.Sprintf("app%04d", rng.IntN(100000)), Owner: api.Owner{Name: "n", Contact: "c"}}
		for range 1 + rng.IntN(3) {
			var m api.MatchItem
			switch rng.IntN(5) {
			case 0: // process only
				m.Process = procs[rng.IntN(len(procs))]
			case 1: // IPv6
				a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.IntN(4))})
				m.Prefix, _ = a.Prefix(64 + rng.IntN(65))
			default:
				a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(2)), byte(rng.IntN(3)), byte(rng.IntN(4))})
				m.Prefix, _ = a.Prefix(8 + rng.IntN(25))
			}
			if rng.IntN(3) == 0 {
				lo := uint16(rng.IntN(20))
				m.Ports = []sdk.PortRange{{First: lo, Last: lo + uint16(rng.IntN(10))}}
			}
			if m.Prefix.IsValid() && rng.IntN(4) == 0 {
				m.Process = procs[rng.IntN(len(procs))]
			}
			one := api.CatalogEntry{App: "x", Owner: e.Owner, Match: []api.MatchItem{m}}
			if err := one.Validate(); err != nil {
				panic(err)
			}
			key := fmt.Sprintf("%v|%v|%s", m.Prefix, m.Ports, m.Process)
			if !claimed[key] {
				claimed[key] = true
				e.Match = append(e.Match, m)
			}
		}
		dupApp := false
		for _, o := range out {
			dupApp = dupApp || o.App == e.App
		}
		if len(e.Match) > 0 && !dupApp {
			out = append(out, e)
		}
	}
	return out
}

// TestCatalogLookupAgainstBruteForce compares the indexed lookup with trying every item, on
// random catalogs full of overlaps and endpoints drawn from the same small space.
func TestCatalogLookupAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	procs := []string{"", "nginx", "sshd", "java", "envoy", "other"}
	for round := range 20 {
		entries := randomCatalog(rng, 5+rng.IntN(60))
		c, err := api.NewCatalog(entries)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for range 2000 {
			var addr netip.Addr
			switch rng.IntN(4) {
			case 0:
				addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.IntN(5))})
			case 1:
				// none
			default:
				addr = netip.AddrFrom4([4]byte{10, byte(rng.IntN(3)), byte(rng.IntN(4)), byte(rng.IntN(5))})
			}
			port := uint16(rng.IntN(32))
			proc := procs[rng.IntN(len(procs))]
			want := bruteForce(entries, addr, port, proc)
			got := ""
			if e, ok := c.Lookup(addr, port, proc); ok {
				got = e.App
			}
			if got != want {
				t.Fatalf("round %d: Lookup(%v, %d, %q) = %q, trying every item gives %q", round, addr, port, proc, got, want)
			}
		}
	}
}

// thousandApps is a catalog of 1,000 applications, each with a /24, a /32 with ports and a
// process, and the endpoints to look up: hits at each level and misses.
func thousandApps(tb testing.TB) (*api.Catalog, []endpoint) {
	var b strings.Builder
	b.WriteString("[")
	for i := range 1000 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"app":"app%d","owner":{"name":"team %d","contact":"t%d@example.com"},"match":[`+
			`{"cidr":"10.%d.%d.0/24"},{"address":"10.%d.%d.7","ports":["80","8000-8100"]},{"process":"svc%d"},`+
			`{"cidr":"2001:db8:%x::/48"}]}`, i, i, i, i/250, i%250, i/250, i%250, i, i)
	}
	b.WriteString("]")
	entries, err := api.ParseCatalog([]byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	c, err := api.NewCatalog(entries)
	if err != nil {
		tb.Fatal(err)
	}
	var eps []endpoint
	for i := 0; i < 1000; i += 7 {
		eps = append(eps,
			endpoint{netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i % 250), 7}), 8080, ""},
			endpoint{netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i % 250), 9}), 443, ""},
			endpoint{netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 80, fmt.Sprintf("svc%d", i)},
			endpoint{netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1}), 53, ""},
			endpoint{netip.AddrFrom4([4]byte{172, 16, 0, byte(i)}), 80, "unknown"},
		)
	}
	return c, eps
}

type endpoint struct {
	addr    netip.Addr
	port    uint16
	process string
}

func TestCatalogLookupAllocatesNothing(t *testing.T) {
	c, eps := thousandApps(t)
	hits := 0
	for _, ep := range eps {
		if _, ok := c.Lookup(ep.addr, ep.port, ep.process); ok {
			hits++
		}
	}
	if want := len(eps) * 4 / 5; hits != want {
		t.Errorf("%d of %d endpoints found, want %d", hits, len(eps), want)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, ep := range eps {
			c.Lookup(ep.addr, ep.port, ep.process)
		}
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates %.1f times per %d lookups", allocs, len(eps))
	}
}

// BenchmarkCatalogLookup1000 looks up endpoints in a catalog of 1,000 applications (4,000 match
// items); one op is one lookup.
func BenchmarkCatalogLookup1000(b *testing.B) {
	c, eps := thousandApps(b)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		ep := &eps[i%len(eps)]
		c.Lookup(ep.addr, ep.port, ep.process)
		i++
	}
}

// BenchmarkNewCatalog1000 builds the catalog of 1,000 applications, validation included.
func BenchmarkNewCatalog1000(b *testing.B) {
	c, _ := thousandApps(b)
	entries := make([]api.CatalogEntry, 0, c.Len())
	for i := range 1000 {
		e, _ := c.Entry(fmt.Sprintf("app%d", i))
		entries = append(entries, *e)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := api.NewCatalog(entries); err != nil {
			b.Fatal(err)
		}
	}
}
