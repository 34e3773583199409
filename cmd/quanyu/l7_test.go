package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/oracle"
	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/sdk"
)

// Acceptance: `quanyu replay` on the HTTP captures gives the transactions tshark finds, in order
// within each connection: the five pipelined GETs and every method of methods.pcap included.
func TestReplayHTTPMatchesOracle(t *testing.T) {
	testdata := testbin.SharedTestdata(t)
	cases, err := oracle.Cases(testdata)
	if err != nil {
		t.Fatal(err)
	}
	tested := 0
	for name, pcap := range cases {
		exp, err := oracle.Load(testdata, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(exp.HTTP) == 0 {
			continue
		}
		tested++
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := quanyu(t, "replay", pcap)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("quanyu replay %s: %v\n%s", pcap, err, stderr.String())
			}
			recs := parseRecords(t, out)
			diffs, extra := oracle.CompareHTTP(recs.l7, exp)
			for _, d := range diffs {
				t.Error(d)
			}
			for _, e := range extra {
				t.Logf("a connection tshark did not dissect as HTTP: %v", e)
			}
			// Every flow with HTTP records carries their summary.
			withL7 := map[string]uint64{}
			for _, r := range recs.l7 {
				withL7[r.CommunityID]++
				if r.CommunityID == "" || r.Time.IsZero() || r.Protocol == "HTTP" && r.Transport != sdk.TransportTCP {
					t.Errorf("record without its flow's identity: %+v", r)
				}
			}
			summed := map[string]uint64{}
			for _, f := range recs.flows {
				if f.L7 != nil {
					summed[f.CommunityID] += f.L7.Transactions
				}
			}
			for cid, n := range withL7 {
				if summed[cid] != n {
					t.Errorf("flow %s: %d L7 records, its flow records' summaries say %d", cid, n, summed[cid])
				}
			}
		})
	}
	if tested < 5 {
		t.Fatalf("only %d captures with HTTP transactions in the oracle; the test data is incomplete", tested)
	}
}

// httpCase is one request the live test sends and what it expects back.
type httpCase struct {
	method, path string
	status       int
	reqBody      int  // bytes of request body
	chunkedReq   bool // send the body chunked
	respBody     int  // bytes the server's response body holds (chunked or not)
	conn         string
	elapsed      time.Duration // client-measured: request written to response headers read
}

const (
	canaryUserInfo = "CANARY-USERINFO-5ce1"
	canaryQuery    = "CANARY-QUERY-77f0"
)

// canaryHeaders are the headers that must never leave the host, each with its own canary.
var canaryHeaders = map[string]string{
	"Authorization":       "Bearer CANARY-AUTHORIZATION-1a2b",
	"Proxy-Authorization": "Basic CANARY-PROXY-AUTH-3c4d",
	"Cookie":              "session=CANARY-COOKIE-5e6f",
	"X-Api-Key":           "CANARY-X-API-KEY-7a8b",
	"Api-Key":             "CANARY-API-KEY-9c0d",
	"X-Auth-Token":        "CANARY-AUTH-TOKEN-e1f2",
}

const canarySetCookie = "id=CANARY-SET-COOKIE-a3b4"

// httpServer serves /status/N (status N, a 100-byte body unless bodiless), /chunked (three flushed
// 1000-byte chunks) and /echo (201, the request body's length back). Every response sets a
// cookie canary.
func httpServer(t *testing.T, l *lab, port int) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.Header().Set("Set-Cookie", canarySetCookie)
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(code)
		if code != http.StatusNoContent && code != http.StatusNotModified && r.Method != http.MethodHead {
			_, _ = w.Write(bytes.Repeat([]byte{'s'}, 100))
		}
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", canarySetCookie)
		for range 3 {
			_, _ = w.Write(bytes.Repeat([]byte{'c'}, 1000))
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		body := strconv.FormatInt(n, 10)
		w.Header().Set("Set-Cookie", canarySetCookie)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, body)
	})
	var ln net.Listener
	if err := l.b.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.ipB, uint16(port)).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// exchangeHTTP runs the live test's requests from namespace a: a keep-alive connection, one
// connection per request, pipelined requests on a raw connection, and a request with canaries.
// It returns what was sent, with the client-measured times.
func exchangeHTTP(t *testing.T, l *lab, port int) []httpCase {
	t.Helper()
	base := "http://" + netip.AddrPortFrom(l.ipB, uint16(port)).String()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := l.a.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	var cases []httpCase
	do := func(client *http.Client, c httpCase) {
		var body io.Reader
		if c.reqBody > 0 {
			body = bytes.NewReader(bytes.Repeat([]byte{'b'}, c.reqBody))
			if c.chunkedReq {
				body = io.MultiReader(body) // unknown length: the client sends it chunked
			}
		}
		req, err := http.NewRequest(c.method, base+c.path, body)
		if err != nil {
			t.Fatal(err)
		}
		if c.reqBody > 0 && !c.chunkedReq {
			req.ContentLength = int64(c.reqBody)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		c.elapsed = time.Since(start)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Fatalf("%s %s: status %d, want %d", c.method, c.path, resp.StatusCode, c.status)
		}
		cases = append(cases, c)
	}

	keepAlive := &http.Client{Transport: &http.Transport{DialContext: dial, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	for _, c := range []httpCase{
		{method: "GET", path: "/status/200", status: 200, respBody: 100},
		{method: "POST", path: "/echo", status: 201, reqBody: 500, respBody: 3},
		{method: "PUT", path: "/status/204", status: 204, reqBody: 10},
		{method: "GET", path: "/chunked", status: 200, respBody: 3000},
		{method: "DELETE", path: "/status/202", status: 202, respBody: 100},
		{method: "HEAD", path: "/status/200", status: 200},
		{method: "PATCH", path: "/status/200", status: 200, reqBody: 20, respBody: 100},
		{method: "OPTIONS", path: "/status/204", status: 204},
	} {
		c.conn = "keep-alive"
		do(keepAlive, c)
	}
	keepAlive.CloseIdleConnections()

	oneShot := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	for _, c := range []httpCase{
		{method: "GET", path: "/status/404", status: 404, respBody: 100},
		{method: "DELETE", path: "/status/200", status: 200, respBody: 100},
		{method: "POST", path: "/echo", status: 201, reqBody: 1234, chunkedReq: true, respBody: 4},
	} {
		c.conn = "one-shot"
		do(oneShot, c)
	}

	// Pipelined: three requests in one write, then the three responses, in order.
	conn, err := dial(context.Background(), "tcp4", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	pipelined := []httpCase{
		{method: "GET", path: "/status/200", status: 200, respBody: 100},
		{method: "DELETE", path: "/status/204", status: 204},
		{method: "GET", path: "/chunked", status: 200, respBody: 3000},
	}
	var burst bytes.Buffer
	for _, c := range pipelined {
		fmt.Fprintf(&burst, "%s %s HTTP/1.1\r\nHost: pipelined.test\r\nUser-Agent: quanyu-test\r\n\r\n", c.method, c.path)
	}
	start := time.Now()
	if _, err := conn.Write(burst.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for _, c := range pipelined {
		req := &http.Request{Method: c.method}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("pipelined %s %s: %v", c.method, c.path, err)
		}
		c.elapsed = time.Since(start)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Fatalf("pipelined %s %s: status %d", c.method, c.path, resp.StatusCode)
		}
		c.conn = "pipelined"
		cases = append(cases, c)
	}
	conn.Close()

	// Canaries: an absolute-form request line with user-info and a query string, and every
	// sensitive header.
	conn, err = dial(context.Background(), "tcp4", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET http://user:%s@%s/status/200?token=%s HTTP/1.1\r\nHost: %s\r\n", canaryUserInfo,
		strings.TrimPrefix(base, "http://"), canaryQuery, strings.TrimPrefix(base, "http://"))
	for _, k := range slices.Sorted(maps.Keys(canaryHeaders)) {
		fmt.Fprintf(&req, "%s: %s\r\n", k, canaryHeaders[k])
	}
	req.WriteString("Connection: close\r\n\r\n")
	start = time.Now()
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	conn.Close()
	cases = append(cases, httpCase{method: "GET", path: "/status/200", status: resp.StatusCode, respBody: 100,
		conn: "canary", elapsed: elapsed})
	return cases
}

// Acceptance: live, between two namespaces, with each capture backend, the client's requests
// come out as exactly as many L7 records with their methods, paths, statuses and body sizes, with
// latencies within what the client measured; the subscription with L7Miss DELETE names exactly the
// records that are not DELETEs; and no canary secret appears anywhere in the agent's output.
func TestLiveHTTP(t *testing.T) {
	for _, backend := range []string{"mmap", "ebpf"} {
		t.Run(backend, func(t *testing.T) { testLiveHTTP(t, backend) })
	}
}

func testLiveHTTP(t *testing.T, backend string) {
	l := newLab(t)
	const port = 8123 // no decoder claims it by port: HTTP is found by content
	httpServer(t, l, port)
	sub := filepath.Join(t.TempDir(), "sub.json")
	if err := os.WriteFile(sub, []byte(`[
		{"id":"all","spec":{"L7":["HTTP"],"L4":[8123]},"options":{"frames":true}},
		{"id":"nodelete","spec":{"L7":["HTTP"],"L7Miss":["DELETE"],"L4":[8123]}}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, l.a, l.la.Name, "--capture", backend, "--subscription", sub)
	cases := exchangeHTTP(t, l, port)
	time.Sleep(time.Second) // the last samples cross the ring and the pipeline
	recs := agent.stop(t)

	// No canary, in any form, anywhere: records, stats, log.
	output := agent.out.String() + agent.logText()
	canaries := []string{canaryUserInfo, canaryQuery, canarySetCookie, "CANARY-SET-COOKIE"}
	for _, v := range canaryHeaders {
		canaries = append(canaries, v, strings.Fields(v)[len(strings.Fields(v))-1])
	}
	for _, c := range canaries {
		for _, form := range []string{c, base64.StdEncoding.EncodeToString([]byte(c))} {
			if strings.Contains(output, form) {
				t.Errorf("canary %q appears in the agent's output", form)
			}
		}
	}

	var got []sdk.L7
	for _, r := range recs.l7 {
		if r.Protocol == "HTTP" && r.Server.Port == port {
			got = append(got, r)
		}
	}
	if len(got) != len(cases) {
		for _, r := range recs.l7 {
			t.Logf("record: %s %s %d partial=%v flags=%v subs=%v", r.Method, r.Path, r.Status, r.Partial, r.Flags, r.Subscriptions)
		}
		t.Fatalf("%d HTTP records, want exactly %d (one per request); stats %v", len(got), len(cases), recs.stats)
	}
	// Records come per connection in request order; connections in the order they ended. Match
	// each case to the first unused record with its method, path and status.
	used := make([]bool, len(got))
	for _, c := range cases {
		found := -1
		for i, r := range got {
			if !used[i] && r.Method == c.method && r.Path == c.path && r.Status == c.status {
				found = i
				break
			}
		}
		if found < 0 {
			t.Errorf("%s request %s %s → %d: no record", c.conn, c.method, c.path, c.status)
			continue
		}
		used[found] = true
		r := got[found]
		if r.Partial || len(r.Flags) > 0 || r.Error != "" {
			t.Errorf("%s %s %s: partial %v, flags %v, error %q on a clean exchange", c.conn, c.method, c.path, r.Partial, r.Flags, r.Error)
		}
		if r.RequestBytes != uint64(c.reqBody) || r.ResponseBytes != uint64(c.respBody) {
			t.Errorf("%s %s %s: body bytes %d/%d, want %d/%d", c.conn, c.method, c.path, r.RequestBytes, r.ResponseBytes, c.reqBody, c.respBody)
		}
		// The agent sees the request leave after the client started it and the response arrive
		// before the client read it: its latency is inside the client's (latency_us is whole
		// microseconds, so it may read 0 only for a sub-microsecond answer, which veth never gives).
		// (Both ends are CLOCK_MONOTONIC; the eBPF capture maps the kernel's to wall time with one
		// offset kept for the process, so the request's and the response's times are on one scale.)
		if r.Latency <= 0 || r.Latency > c.elapsed {
			t.Errorf("%s %s %s: latency %v, want in (0, %v] (client-measured)", c.conn, c.method, c.path, r.Latency, c.elapsed)
		}
		wantSubs := []string{"all", "nodelete"}
		if c.method == "DELETE" {
			wantSubs = []string{"all"}
		}
		if !slices.Equal(r.Subscriptions, wantSubs) {
			t.Errorf("%s %s %s: subscriptions %v, want %v", c.conn, c.method, c.path, r.Subscriptions, wantSubs)
		}
		if r.Version != "1.1" || r.Host == "" {
			t.Errorf("%s %s %s: version %q host %q", c.conn, c.method, c.path, r.Version, r.Host)
		}
	}
	t.Logf("%s: %d requests, %d records; e.g. %s %s → %d in %v (client measured %v)", backend, len(cases), len(got),
		got[0].Method, got[0].Path, got[0].Status, got[0].Latency, cases[0].elapsed)
	// The flows' summaries count the same transactions.
	var summed uint64
	for _, f := range recs.flows {
		if f.L7 != nil && f.Server.Port == port {
			if f.L7.Protocol != "HTTP" {
				t.Errorf("flow summary protocol %q", f.L7.Protocol)
			}
			summed += f.L7.Transactions
		}
	}
	if summed != uint64(len(cases)) {
		t.Errorf("flow summaries count %d transactions, want %d", summed, len(cases))
	}
}

// Acceptance: the DNS captures give their queries and answers. The values are facts of the
// captures, read independently with golang.org/x/net/dns/dnsmessage by the decoder's own pcap
// test (plugins/l7-dns/internal/decoder); here they must come out of `quanyu replay` whole.
func TestReplayDNS(t *testing.T) {
	testdata := testbin.SharedTestdata(t)
	type want struct {
		query, qtype, rcode string
		answers             []string // an answer ending in "…" is matched as a prefix
		partial             bool
		flags               []string
		latency             time.Duration
	}
	const padding = "txtpadding_3230.n1.netalyzr.icsi.berkeley.edu"
	for file, wants := range map[string][]want{
		// One response with no query in the capture: reported from its question, partial.
		"dns53.pcap": {{query: "us.v27.distributed.net", qtype: "A", rcode: "NOERROR", partial: true, flags: []string{"no_query"},
			answers: []string{"206.109.64.186", "216.1.205.81", "205.149.163.211", "134.53.131.135", "134.53.131.192",
				"128.104.18.148", "204.152.186.139", "63.77.33.226"}}},
		"ipv6-fragmented-dns.pcap": {
			{query: "txtpadding_323.n1.netalyzr.icsi.berkeley.edu", qtype: "TXT", rcode: "NOERROR", latency: 79300 * time.Microsecond,
				answers: []string{`"This TXT record should be ignored" "As it is just padding" "XXXX…`}},
			// The first query's answer was lost (only its last fragment is in the capture); the
			// client asked again 5 s later, past the query timeout.
			{query: padding, qtype: "TXT", partial: true, flags: []string{"no_response"}},
			// The retry's 3,230-byte answer came in three IPv6 fragments: the decoder sees the
			// first, which holds the header and question but not the whole TXT record.
			{query: padding, qtype: "TXT", rcode: "NOERROR", partial: true, flags: []string{"counts_exceed_data"},
				latency: 82502 * time.Microsecond},
		},
	} {
		t.Run(file, func(t *testing.T) {
			out, err := quanyu(t, "replay", filepath.Join(testdata, "pcaps", "zeek", file)).Output()
			if err != nil {
				t.Fatalf("replay %s: %v", file, err)
			}
			var got []sdk.L7
			for _, r := range parseRecords(t, out).l7 {
				if r.Protocol == "DNS" {
					got = append(got, r)
				}
			}
			if len(got) != len(wants) {
				t.Fatalf("%d DNS records, want %d: %+v", len(got), len(wants), got)
			}
			for i, w := range wants {
				r := got[i]
				if r.Query != w.query || r.QType != w.qtype || r.RCode != w.rcode || r.Partial != w.partial ||
					!slices.Equal(r.Flags, w.flags) || r.Latency != w.latency || r.Method != "QUERY" {
					t.Errorf("record %d: %s %s %s partial=%v flags=%v latency=%v; want %s %s %s partial=%v flags=%v latency=%v",
						i, r.Query, r.QType, r.RCode, r.Partial, r.Flags, r.Latency, w.query, w.qtype, w.rcode, w.partial, w.flags, w.latency)
				}
				if len(r.Answers) != len(w.answers) {
					t.Errorf("record %d: answers %q, want %q", i, r.Answers, w.answers)
					continue
				}
				for j, a := range w.answers {
					if p, ok := strings.CutSuffix(a, "…"); ok && strings.HasPrefix(r.Answers[j], p) || a == r.Answers[j] {
						continue
					}
					t.Errorf("record %d answer %d: %q, want %q", i, j, r.Answers[j], a)
				}
			}
		})
	}
}
