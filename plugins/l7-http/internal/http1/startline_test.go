package http1

import "testing"

// The odd request lines of http/methods.pcap, split as tshark splits them (the oracle of the
// decoder's pcap test), and a few more.
func TestParseRequestLine(t *testing.T) {
	for _, tc := range []struct {
		line                    string
		ok                      bool
		method, target, version string
	}{
		{"GET / HTTP/1.1", true, "GET", "/", "1.1"},
		{"OPTIONS * HTTP/1.1", true, "OPTIONS", "*", "1.1"},
		{"OPTIONS HTTP/1.1", true, "OPTIONS", "HTTP/1.1", ""},
		{"OPTIONS  HTTP/1.1", true, "OPTIONS", "", "1.1"},
		{"OPTIONS", true, "OPTIONS", "", ""},
		{"GET / HTTP/1.", true, "GET", "/", ""},
		{"GET /HTTP/1.1", true, "GET", "/HTTP/1.1", ""},
		{"CCM_POST / HTTP/1.1", true, "CCM_POST", "/", "1.1"},
		{"GET / HTTP/1.0", true, "GET", "/", "1.0"},
		{"GET / HTTP/1.1 extra", true, "GET", "/", ""},
		{"GET http://h/p?q HTTP/1.1", true, "GET", "http://h/p?q", "1.1"},
		{"OPTIONSHTTP/1.1", false, "", "", ""},
		{"GET/ HTTP/1.1", false, "", "", ""},
		{"\xc3\x83\xc3\x82\xc3\x83 / HTTP/1.", false, "", "", ""},
		{" GET / HTTP/1.1", false, "", "", ""},
		{"", false, "", "", ""},
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG / HTTP/1.1", false, "", "", ""}, // 33 characters
	} {
		rl, ok := parseRequestLine([]byte(tc.line))
		if ok != tc.ok || string(rl.method) != tc.method || string(rl.target) != tc.target || string(rl.version) != tc.version {
			t.Errorf("%q: ok %v method %q target %q version %q, want %v %q %q %q", tc.line, ok, rl.method,
				rl.target, rl.version, tc.ok, tc.method, tc.target, tc.version)
		}
		// What a side looking for a message start takes for a request line is exactly what
		// parses as one.
		if got := beginsRequest([]byte(tc.line + "\r\n")); got != tc.ok {
			t.Errorf("%q: beginsRequest %v, want %v", tc.line, got, tc.ok)
		}
	}
}

func TestBeginsRequest(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{"GET / HTTP/1.1\r\n", true},
		{"\r\nGET / HTTP/1.1\r\n", true},
		{"GET", false}, // no space or line end yet: not enough to start on
		{"{\"json\": 1}", false},
		{"name=value&x=y", false},
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false},
		{"", false},
	} {
		if got := beginsRequest([]byte(tc.data)); got != tc.want {
			t.Errorf("beginsRequest(%q) = %v, want %v", tc.data, got, tc.want)
		}
	}
}

func TestParseStatusLine(t *testing.T) {
	for _, tc := range []struct {
		line    string
		ok      bool
		version string
		status  int
	}{
		{"HTTP/1.1 200 OK", true, "1.1", 200},
		{"HTTP/1.0 304 Not Modified", true, "1.0", 304},
		{"HTTP/1.1 100", true, "1.1", 100},
		{"HTTP/1.1 404\tNot Found", true, "1.1", 404},
		{"HTTP/2.0 200 OK", true, "2.0", 200},
		{"HTTP/1.1 20 OK", false, "", 0},
		{"HTTP/1.1 2000 OK", false, "", 0},
		{"HTTP/1.1 099 x", false, "", 0},
		{"HTTP/1.1  200 OK", false, "", 0},
		{"http/1.1 200 OK", false, "", 0},
		{"ICY 200 OK", false, "", 0},
	} {
		sl, ok := parseStatusLine([]byte(tc.line))
		if ok != tc.ok || string(sl.version) != tc.version || sl.status != tc.status {
			t.Errorf("%q: ok %v version %q status %d, want %v %q %d", tc.line, ok, sl.version, sl.status,
				tc.ok, tc.version, tc.status)
		}
	}
}

// User-info never survives splitTarget, however the target is damaged.
func TestSplitTarget(t *testing.T) {
	for _, tc := range []struct {
		target   string
		complete bool
		path     string
		host     string
	}{
		{"/p?q", true, "/p?q", ""},
		{"*", true, "*", ""},
		{"HTTP/1.1", true, "HTTP/1.1", ""},
		{"", true, "", ""},
		{"http://user:pass@host:8080/p?q", true, "/p?q", "host:8080"},
		{"HTTP://USER@Host/x", true, "/x", "Host"},
		{"http://host", true, "/", "host"},
		{"http://host?x=1", true, "/?x=1", "host"},
		{"http://[2001:db8::1]:80/p", true, "/p", "[2001:db8::1]:80"},
		{"https://a:b@c@host/p", true, "/p", "host"},
		{"http://host/users/@me", true, "/users/@me", "host"},
		// A '/' inside the password ends the authority early, leaving "user:pa" as host:port.
		{"http://user:pa/ss@host/p", true, "/p", "host"},
		{"http://user:pa/ss/p", true, "/ss/p", ""},
		// The line was cut inside the authority: the '@' may have been about to come.
		{"http://user:pa", false, "", ""},
		{"http://host/p", false, "/p", "host"},
		{"//user:pass@host/p", true, "/p", "host"},
		{"user:pass@host:443", true, "host:443", ""},
		{"host:443", true, "host:443", ""},
	} {
		path, host := splitTarget([]byte(tc.target), tc.complete)
		if string(path) != tc.path || string(host) != tc.host {
			t.Errorf("splitTarget(%q, %v) = %q, %q; want %q, %q", tc.target, tc.complete, path, host, tc.path, tc.host)
		}
	}
}

func TestChunkSizeAndContentLength(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    uint64
		ok   bool
	}{
		{"1a", 26, true},
		{"1A;name=value", 26, true},
		{"10 ; ext", 16, true},
		{"0", 0, true},
		{"000000000000000000010", 16, true},
		{"", 0, false},
		{"x", 0, false},
		{"-1", 0, false},
		{"10 x", 0, false},
		{"ffffffffffffffffff", 0, false},
	} {
		n, ok := parseChunkSize([]byte(tc.line))
		if n != tc.n || ok != tc.ok {
			t.Errorf("parseChunkSize(%q) = %d, %v; want %d, %v", tc.line, n, ok, tc.n, tc.ok)
		}
	}
	for _, tc := range []struct {
		values               []string
		seen, bad, conflicts bool
		n                    int64
	}{
		{[]string{"42"}, true, false, false, 42},
		{[]string{"42, 42"}, true, false, false, 42},
		{[]string{"42", "42"}, true, false, false, 42},
		{[]string{"42", "43"}, true, false, true, 42},
		{[]string{"42, 43"}, true, false, true, 42},
		{[]string{"+42"}, false, true, false, 0},
		{[]string{""}, false, true, false, 0},
		{[]string{"1234567890123456789"}, false, true, false, 0},
	} {
		var s side
		for _, v := range tc.values {
			s.contentLength([]byte(v))
		}
		if s.clSeen != tc.seen || s.clBad != tc.bad || s.clConflict != tc.conflicts || s.cl != tc.n {
			t.Errorf("Content-Length %q: seen %v bad %v conflict %v n %d", tc.values, s.clSeen, s.clBad, s.clConflict, s.cl)
		}
	}
}
