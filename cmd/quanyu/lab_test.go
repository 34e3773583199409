package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/quanyu/quanyu/internal/testnet"
	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/mix/mixpb"
)

// labCLI is one test's lab, driven through the quanyu binary. Its prefix and range are its own
// (not a real lab's qylab and 10.177.0.0/24, nor another test's), so tests never meet.
type labCLI struct {
	prefix, stateDir string
	cidr             netip.Prefix
}

func newLabCLI(t *testing.T) *labCLI {
	t.Helper()
	testnet.RequireRoot(t)
	l := &labCLI{prefix: fmt.Sprintf("qyt%04x", rand.IntN(0x10000)), stateDir: t.TempDir()}
	for range 100 {
		l.cidr = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 178, byte(rand.IntN(256)), 0}), 24)
		if !hostHasAddrIn(l.cidr) {
			break
		}
	}
	t.Cleanup(func() {
		if out, err := l.run(t, "down"); err != nil {
			t.Errorf("cleaning up the lab: %v\n%s", err, out)
		}
	})
	return l
}

func hostHasAddrIn(p netip.Prefix) bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && p.Contains(ip) {
				return true
			}
		}
	}
	return false
}

// run runs `quanyu lab VERB ARGS… --prefix P --state-dir D`.
func (l *labCLI) run(t *testing.T, verb string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"lab", verb, "--prefix", l.prefix, "--state-dir", l.stateDir}, args...)
	out, err := quanyu(t, full...).CombinedOutput()
	return string(out), err
}

// addr is a host's address in the lab: web .10, api .20, db .30, cache .40, dns .53.
func (l *labCLI) addr(offset int) string {
	a := l.cidr.Addr().As4()
	a[3] = byte(offset)
	return netip.AddrFrom4(a).String()
}

// assertNothingLeft scans the system, not the lab's own bookkeeping, for anything with the
// lab's prefix: a namespace, a link, a running process, the state file.
func (l *labCLI) assertNothingLeft(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.prefix) {
			t.Errorf("namespace %s is left", e.Name())
		}
	}
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		if strings.HasPrefix(ifc.Name, l.prefix) {
			t.Errorf("link %s is left", ifc.Name)
		}
	}
	for _, pid := range labPIDs(l.prefix) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Errorf("process %d is left: %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	if _, err := os.Stat(filepath.Join(l.stateDir, l.prefix+".json")); err == nil {
		t.Error("the state file is left")
	}
}

// labPIDs are the live (not zombie) processes whose command line names the prefix.
func labPIDs(prefix string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmdline), "\x00"+prefix+"\x00") {
			continue
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}

func labHTTP(t *testing.T, method, url, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// labStats is GET /stats of web or api.
func labStats(t *testing.T, url string) (requests int64, byRoute map[string]int64) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Requests int64            `json:"requests"`
		ByRoute  map[string]int64 `json:"by_route"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s.Requests, s.ByRoute
}

// labDNS asks the lab's DNS server over UDP, building and reading the messages with dnsmessage.
func labDNS(t *testing.T, server, name string) (dnsmessage.RCode, []netip.Addr) {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0xbeef, RecursionDesired: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no DNS answer for %s: %v", name, err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil || m.ID != 0xbeef {
		t.Fatalf("DNS answer for %s: %v %+v", name, err, m.Header)
	}
	var addrs []netip.Addr
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			addrs = append(addrs, netip.AddrFrom4(r.A))
		}
	}
	return m.RCode, addrs
}

// labKV sends line-protocol requests on one connection and returns the answers.
func labKV(t *testing.T, addr string, reqs ...string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	var out []string
	for _, req := range reqs {
		if _, err := fmt.Fprintf(c, "%s\n", req); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %q: %v", addr, req, err)
		}
		out = append(out, strings.TrimSpace(line))
	}
	return out
}

// TestLabUpStatusDown brings a lab up with its catalog written into a real mix, checks each
// service answers as documented and that the client's traffic reaches web and api, reads
// `lab status`, then takes the lab down and finds nothing of it left.
func TestLabUpStatusDown(t *testing.T) {
	l := newLabCLI(t)
	m := startMix(t)
	out, err := l.run(t, "up", "--cidr", l.cidr.String(), "--client-rate", "20",
		"--web-error-ratio", "0", "--api-error-ratio", "0", "--mix", m.addr, "--token", opsToken)
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	for _, want := range []string{"The lab is up", l.prefix + "-web", "catalog web applied", "catalog client applied"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab up does not say %q:\n%s", want, out)
		}
	}
	web, apiURL := "http://"+l.addr(10), "http://"+l.addr(20)+":8080"

	t.Run("web and api answer", func(t *testing.T) {
		for _, tc := range []struct {
			method, url, body string
			want              int
		}{
			{"GET", web + "/", "", 200},
			{"GET", web + "/products", "", 200},
			{"GET", web + "/products/4", "", 200},
			{"GET", web + "/products/999", "", 404},
			{"GET", web + "/no-such-page", "", 404},
			{"POST", web + "/cart", `{"product_id": 3, "quantity": 2}`, 201},
			{"GET", apiURL + "/v1/products", "", 200},
			{"GET", apiURL + "/v1/products/12", "", 200},
			{"DELETE", apiURL + "/v1/orders/no-such-order", "", 404},
		} {
			if got := labHTTP(t, tc.method, tc.url, tc.body); got != tc.want {
				t.Errorf("%s %s: %d, want %d", tc.method, tc.url, got, tc.want)
			}
		}
	})
	t.Run("dns answers", func(t *testing.T) {
		server := net.JoinHostPort(l.addr(53), "53")
		if rcode, addrs := labDNS(t, server, "api.lab."); rcode != dnsmessage.RCodeSuccess || len(addrs) != 1 || addrs[0].String() != l.addr(20) {
			t.Errorf("api.lab: %v %v, want %s", rcode, addrs, l.addr(20))
		}
		if rcode, _ := labDNS(t, server, "nope.lab."); rcode != dnsmessage.RCodeNameError {
			t.Errorf("nope.lab: %v, want NXDOMAIN", rcode)
		}
		// Over TCP, with the Go resolver as the client.
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", server)
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if addrs, err := r.LookupNetIP(ctx, "ip4", "db.lab."); err != nil || len(addrs) != 1 || addrs[0].String() != l.addr(30) {
			t.Errorf("db.lab over TCP: %v %v, want %s", addrs, err, l.addr(30))
		}
	})
	t.Run("db and cache store", func(t *testing.T) {
		for _, addr := range []string{net.JoinHostPort(l.addr(30), "5432"), net.JoinHostPort(l.addr(40), "6379")} {
			got := labKV(t, addr, "SET labtest:k hello lab", "GET labtest:k", "DEL labtest:k", "GET labtest:k")
			want := []string{"OK", "VALUE hello lab", "OK", "NOTFOUND"}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("%s: %q, want %q", addr, got, want)
			}
		}
		// api wrote the products into db when it started.
		if got := labKV(t, net.JoinHostPort(l.addr(30), "5432"), "GET product:1"); !strings.HasPrefix(got[0], "VALUE {") {
			t.Errorf("db's product:1: %q", got)
		}
	})
	t.Run("the client sends traffic", func(t *testing.T) {
		// The test itself sent 6 requests to web and 3 to api; the rest is the client's (20/s),
		// arriving at web and passed on by web to api.
		deadline := time.Now().Add(20 * time.Second)
		for {
			webN, routes := labStats(t, web+"/stats")
			apiN, _ := labStats(t, apiURL+"/stats")
			if webN >= 6+40 && apiN >= 3+20 && len(routes) >= 4 {
				t.Logf("web answered %d requests, api %d; web's routes: %v", webN, apiN, routes)
				break
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(l.stateDir, l.prefix+"-client.log"))
				t.Fatalf("after 20s web answered %d requests (%v), api %d; the client's log:\n%s", webN, routes, apiN, log)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	t.Run("status", func(t *testing.T) {
		out, err := l.run(t, "status")
		if err != nil {
			t.Fatalf("lab status: %v\n%s", err, out)
		}
		wants := []string{"is up", "Capture on: " + l.prefix + "-dns"}
		for _, h := range []struct {
			name   string
			offset int
		}{{"web", 10}, {"api", 20}, {"db", 30}, {"cache", 40}, {"dns", 53}, {"client", 100}} {
			wants = append(wants, h.name+" ", l.addr(h.offset))
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("lab status does not say %q:\n%s", want, out)
			}
		}
		out, err = l.run(t, "status", "-o", "json")
		if err != nil {
			t.Fatalf("lab status -o json: %v\n%s", err, out)
		}
		var st struct {
			Up    bool `json:"up"`
			Hosts []struct {
				Name    string `json:"name"`
				PID     int    `json:"pid"`
				Running bool   `json:"running"`
				Answers bool   `json:"answers"`
			} `json:"hosts"`
			Interfaces []string `json:"interfaces"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("lab status -o json: %v\n%s", err, out)
		}
		if !st.Up || len(st.Hosts) != 6 || len(st.Interfaces) != 6 {
			t.Errorf("lab status -o json: %+v", st)
		}
		for _, h := range st.Hosts {
			if !h.Running || !h.Answers || h.PID == 0 {
				t.Errorf("host %+v does not run and answer", h)
			}
		}
	})
	t.Run("catalog in mix", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := m.client(t).List(ctx, &mixpb.ListRequest{Kind: "catalog"})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]struct {
			owner  string
			offset int
		}{"web": {"Storefront team", 10}, "api": {"Orders team", 20}, "db": {"Data team", 30},
			"cache": {"Platform team", 40}, "dns": {"Network team", 53}, "client": {"Load generator", 100}}
		if len(resp.Objects) != len(want) {
			t.Fatalf("mix holds %d applications, want %d", len(resp.Objects), len(want))
		}
		for _, o := range resp.Objects {
			e, err := api.ParseCatalogEntry(o.Json)
			if err != nil {
				t.Fatalf("%s: %v", o.Id, err)
			}
			w, ok := want[e.App]
			addr := netip.MustParseAddr(l.addr(w.offset))
			if !ok || e.Owner.Name != w.owner || !e.Matches(addr, 80, "") || e.Matches(addr.Next(), 80, "") {
				t.Errorf("application %s: owner %+v, match %+v; want %s matching %s alone", e.App, e.Owner, e.Match, w.owner, addr)
			}
		}
	})

	out, err = l.run(t, "down")
	if err != nil {
		t.Fatalf("lab down: %v\n%s", err, out)
	}
	for _, want := range []string{"removed namespace " + l.prefix + "-web", "removed bridge " + l.prefix + "0",
		"removed link " + l.prefix + "-client", "(client)", "The lab is down."} {
		if !strings.Contains(out, want) {
			t.Errorf("lab down does not say %q:\n%s", want, out)
		}
	}
	l.assertNothingLeft(t)
	if out, err := l.run(t, "down"); err != nil || !strings.Contains(out, "Nothing to remove") {
		t.Errorf("a second lab down: %v\n%s", err, out)
	}
	if out, err := l.run(t, "status"); err != nil || !strings.Contains(out, "is down") {
		t.Errorf("lab status after down: %v\n%s", err, out)
	}
}

// TestLabDownAfterCrash: the services killed with SIGKILL and the state file gone, as after a
// crash and a careless clean-up; `lab down` still finds and removes everything by prefix.
func TestLabDownAfterCrash(t *testing.T) {
	l := newLabCLI(t)
	if out, err := l.run(t, "up", "--cidr", l.cidr.String()); err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(l.stateDir, l.prefix+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Hosts []struct {
			Name string `json:"name"`
			PID  int    `json:"pid"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || len(st.Hosts) != 6 {
		t.Fatalf("state file: %v\n%s", err, raw)
	}
	for _, h := range st.Hosts {
		if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
			t.Errorf("killing %s (pid %d): %v", h.Name, h.PID, err)
		}
	}
	if err := os.Remove(filepath.Join(l.stateDir, l.prefix+".json")); err != nil {
		t.Fatal(err)
	}
	out, err := l.run(t, "status")
	if err != nil || !strings.Contains(out, "some of it is left") || !strings.Contains(out, "bridge "+l.prefix+"0") {
		t.Errorf("lab status after the crash: %v\n%s", err, out)
	}
	out, err = l.run(t, "down")
	if err != nil {
		t.Fatalf("lab down: %v\n%s", err, out)
	}
	for _, want := range []string{"removed namespace " + l.prefix + "-dns", "removed bridge " + l.prefix + "0", "The lab is down."} {
		if !strings.Contains(out, want) {
			t.Errorf("lab down does not say %q:\n%s", want, out)
		}
	}
	l.assertNothingLeft(t)
}

// TestLabRefusesBadInput needs no root: each error names what is wrong.
func TestLabRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lab"}, "Usage: quanyu lab up|down|status"},
		{[]string{"lab", "sideways"}, "Usage: quanyu lab up|down|status"},
		{[]string{"lab", "up", "--prefix", "Bad-Prefix"}, `prefix "Bad-Prefix"`},
		{[]string{"lab", "up", "--cidr", "10.177.0.0/28"}, "cidr 10.177.0.0/28"},
		{[]string{"lab", "up", "--cidr", "nonsense"}, `--cidr "nonsense"`},
		{[]string{"lab", "serve", "mail"}, `no service "mail"`},
	} {
		out, err := quanyu(t, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("quanyu %s: %v, want an error with %q:\n%s", strings.Join(tc.args, " "), err, tc.want, out)
		}
	}
}
