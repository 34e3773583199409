package lab

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string // part of the error; "" for none
	}{
		{"defaults", Options{}, ""},
		{"longest prefix", Options{Prefix: "abcdefgh"}, ""},
		{"prefix too long", Options{Prefix: "abcdefghi"}, "prefix"},
		{"uppercase", Options{Prefix: "QyLab"}, "lowercase"},
		{"starts with a digit", Options{Prefix: "1lab"}, "starting with a letter"},
		{"dash", Options{Prefix: "qy-lab"}, "lowercase"},
		{"wide range", Options{CIDR: netip.MustParsePrefix("10.176.0.0/16")}, ""},
		{"range too narrow", Options{CIDR: netip.MustParsePrefix("10.177.0.0/25")}, "/24"},
		{"IPv6 range", Options{CIDR: netip.MustParsePrefix("fd00::/64")}, "IPv4"},
		{"host bits", Options{CIDR: netip.MustParsePrefix("10.177.0.5/24")}, "10.177.0.0/24"},
		{"error ratio", Options{WebErrorRatio: ptr(1.5)}, "web error ratio"},
		{"client users", Options{ClientUsers: -1}, "client users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.StateDir = t.TempDir()
			_, err := tc.o.withDefaults()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// TestPlan checks the default lab's layout, and that a lab of the longest prefix still has
// link names the kernel takes (at most 15 bytes).
func TestPlan(t *testing.T) {
	o, err := Options{StateDir: "/state"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ ns, veth, addr string }{
		"web":    {"qylab-web", "qylab-web", "10.177.0.10"},
		"api":    {"qylab-api", "qylab-api", "10.177.0.20"},
		"db":     {"qylab-db", "qylab-db", "10.177.0.30"},
		"cache":  {"qylab-cache", "qylab-cache", "10.177.0.40"},
		"dns":    {"qylab-dns", "qylab-dns", "10.177.0.53"},
		"client": {"qylab-client", "qylab-client", "10.177.0.100"},
	}
	hosts := plan(o)
	if len(hosts) != len(want) {
		t.Fatalf("%d hosts, want %d", len(hosts), len(want))
	}
	for _, h := range hosts {
		w := want[h.Name]
		if h.Namespace != w.ns || h.Veth != w.veth || h.Addr.String() != w.addr || h.Log != "/state/qylab-"+h.Name+".log" {
			t.Errorf("%s: %+v, want %+v", h.Name, h, w)
		}
	}
	if b := (names{o.Prefix}).bridge(); b != "qylab0" {
		t.Errorf("bridge %s, want qylab0", b)
	}
	long, _ := Options{Prefix: "abcdefgh", StateDir: "/s"}.withDefaults()
	for _, h := range plan(long) {
		if len(h.Veth) > 15 {
			t.Errorf("link name %s is longer than 15 bytes", h.Veth)
		}
	}
	wide, _ := Options{CIDR: netip.MustParsePrefix("10.176.0.0/16"), StateDir: "/s"}.withDefaults()
	if a := plan(wide)[0].Addr; a.String() != "10.176.0.53" {
		t.Errorf("dns in 10.176.0.0/16 at %s, want 10.176.0.53", a)
	}
}

// TestCatalogIsMixs checks the lab's catalog with mix's own parser: valid, one application per
// host, each matching its host's address and owned as documented.
func TestCatalogIsMixs(t *testing.T) {
	o, _ := Options{StateDir: "/s"}.withDefaults()
	l := &Lab{opts: o, state: state{Prefix: o.Prefix, Hosts: plan(o)}}
	if err := api.ValidateCatalog(l.Catalog()); err != nil {
		t.Fatalf("mix refuses the lab's catalog: %v", err)
	}
	doc, err := l.CatalogJSON()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := api.ParseCatalog(doc)
	if err != nil {
		t.Fatalf("mix refuses the lab's catalog document: %v\n%s", err, doc)
	}
	owners := map[string]string{"web": "Storefront team", "api": "Orders team", "db": "Data team",
		"cache": "Platform team", "dns": "Network team", "client": "Load generator"}
	if len(entries) != len(owners) {
		t.Fatalf("%d applications, want %d", len(entries), len(owners))
	}
	for _, e := range entries {
		var h Host
		for _, x := range l.Hosts() {
			if x.Name == e.App {
				h = x
			}
		}
		if !e.Matches(h.Addr, 80, "") || e.Matches(h.Addr.Next(), 80, "") {
			t.Errorf("%s should match %s and only it: %+v", e.App, h.Addr, e.Match)
		}
		if e.Owner.Name != owners[e.App] || e.Owner.Contact == "" {
			t.Errorf("%s is owned by %+v, want %s with a contact", e.App, e.Owner, owners[e.App])
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	o, _ := Options{StateDir: dir, Prefix: "qyx"}.withDefaults()
	s := state{Prefix: "qyx", CIDR: o.CIDR, Bridge: "qyx0", BridgeAddr: netip.MustParsePrefix("10.177.0.1/24"),
		Created: time.Unix(1700000000, 0).UTC(), Hosts: plan(o)}
	s.Hosts[0].PID, s.Hosts[0].Start = 1234, 5678
	if err := writeState(dir, s); err != nil {
		t.Fatal(err)
	}
	got, ok, err := readState(dir, "qyx")
	if err != nil || !ok {
		t.Fatalf("reading back: %v %v", ok, err)
	}
	a, _ := json.Marshal(s)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Errorf("read back\n%s\nwant\n%s", b, a)
	}
	if _, ok, err := readState(dir, "other"); ok || err != nil {
		t.Errorf("another prefix's state: %v %v, want none", ok, err)
	}
	if err := os.WriteFile(stateFile(dir, "bad"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readState(dir, "bad"); err == nil {
		t.Error("a damaged state file reads without error")
	}
}

func TestServesLab(t *testing.T) {
	for _, tc := range []struct {
		cmdline []string
		want    bool
	}{
		{[]string{"/usr/bin/quanyu", "lab", "serve", "web", "--lab", "qylab", "--netns", "qylab-web"}, true},
		{[]string{"/usr/bin/quanyu", "lab", "serve", "web", "--lab=qylab"}, true},
		{[]string{"/usr/bin/quanyu", "lab", "serve", "web", "--lab", "qylab2"}, false},
		{[]string{"/usr/bin/quanyu", "lab", "serve", "web"}, false},
		{[]string{"/usr/bin/quanyu", "lab", "down", "--lab", "qylab"}, false},
		{[]string{"vim", "serve", "--lab", "qylab"}, false},
		{nil, false},
	} {
		if got := servesLab(tc.cmdline, "qylab"); got != tc.want {
			t.Errorf("servesLab(%q) = %v, want %v", tc.cmdline, got, tc.want)
		}
	}
}

// TestRunningKnowsPidReuse: a pid with another start time is another process.
func TestRunningKnowsPidReuse(t *testing.T) {
	p, ok := readProc(os.Getpid())
	if !ok || p.start == 0 || p.state == 0 {
		t.Fatalf("reading this process: %+v %v", p, ok)
	}
	if !running(p.pid, p.start) {
		t.Error("this process is not running")
	}
	if running(p.pid, p.start+1) {
		t.Error("this process with another start time counts as running")
	}
}
