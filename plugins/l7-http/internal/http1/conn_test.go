package http1

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// t0 is the fixed clock of the tests: sample times are t0 plus a millisecond per sample.
var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// conv drives one Conn: client and server sends advance their own sequence numbers the way TCP
// does, so a test states only what it changes (a gap, a cut, a retransmission).
type conv struct {
	t          *testing.T
	sh         *Shared
	c          *Conn
	cseq, sseq uint32
	now        time.Time
	got        []Transaction
}

func newConv(t *testing.T) *conv {
	sh := NewShared()
	return &conv{t: t, sh: sh, c: NewConn(sh), cseq: 1000, sseq: 5000, now: t0}
}

func (v *conv) tick() time.Time {
	v.now = v.now.Add(time.Millisecond)
	return v.now
}

// send is one sample: data captured out of wireLen bytes at seq.
func (v *conv) send(client bool, seq uint32, data string, wireLen int) {
	v.got = v.c.Packet(client, seq, []byte(data), wireLen, v.tick(), v.got)
}

func (v *conv) client(data string) {
	v.send(true, v.cseq, data, len(data))
	v.cseq += uint32(len(data))
}

func (v *conv) server(data string) {
	v.send(false, v.sseq, data, len(data))
	v.sseq += uint32(len(data))
}

// clientCut sends data of which only the first n bytes were captured.
func (v *conv) clientCut(data string, n int) {
	v.send(true, v.cseq, data[:n], len(data))
	v.cseq += uint32(len(data))
}

func (v *conv) serverCut(data string, n int) {
	v.send(false, v.sseq, data[:n], len(data))
	v.sseq += uint32(len(data))
}

func (v *conv) end() { v.got = v.c.End(true, v.got) }

// take returns the transactions reported so far and forgets them.
func (v *conv) take() []Transaction {
	got := v.got
	v.got = nil
	return got
}

// summary is the part of a Transaction most tests compare.
type summary struct {
	Method, Path, Host string
	Status             int
	Req, Resp          uint64
	Partial            bool
	Error              string
	Flags              Flags
}

func sum(txs []Transaction) []summary {
	out := []summary{}
	for _, tx := range txs {
		out = append(out, summary{tx.Method, tx.Path, tx.Host, tx.Status, tx.RequestBytes, tx.ResponseBytes,
			tx.Partial, tx.Error, tx.Flags})
	}
	return out
}

func (v *conv) expect(want ...summary) {
	v.t.Helper()
	if want == nil {
		want = []summary{}
	}
	if got := sum(v.take()); !reflect.DeepEqual(got, want) {
		v.t.Fatalf("transactions\n got %+v\nwant %+v", got, want)
	}
}

const (
	getReq  = "GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test/1.0\r\nAccept: */*\r\n\r\n"
	resp200 = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello"
)

var okIndex = summary{Method: "GET", Path: "/index.html", Host: "example.com", Status: 200, Resp: 5}

func TestSimpleExchange(t *testing.T) {
	v := newConv(t)
	v.client(getReq)
	v.expect()
	v.server(resp200)
	got := v.take()
	if !reflect.DeepEqual(sum(got), []summary{okIndex}) {
		t.Fatalf("got %+v", sum(got))
	}
	tx := got[0]
	if tx.Version != "1.1" || tx.UserAgent != "test/1.0" || tx.ContentType != "text/html" ||
		!tx.RequestTime.Equal(t0.Add(time.Millisecond)) || !tx.ResponseTime.Equal(t0.Add(2*time.Millisecond)) {
		t.Fatalf("fields: %+v", tx)
	}
	if c := v.sh.Counters; c.Requests != 1 || c.Responses != 1 || c.Transactions != 1 || c.Partial != 0 {
		t.Fatalf("counters: %+v", c)
	}
}

func TestMessages(t *testing.T) {
	for _, tc := range []struct {
		name           string
		client, server []string // samples in order: client first, then server
		want           []summary
	}{{
		name:   "absolute-form with user-info",
		client: []string{"GET http://user:secret@example.com:8080/a/b?x=1 HTTP/1.1\r\n\r\n"},
		server: []string{"HTTP/1.1 204 No Content\r\n\r\n"},
		want:   []summary{{Method: "GET", Path: "/a/b?x=1", Host: "example.com:8080", Status: 204}},
	}, {
		name:   "Host header wins over the authority and loses its user-info",
		client: []string{"GET http://a.example/p HTTP/1.1\r\nHost: user:pw@b.example\r\n\r\n"},
		server: []string{"HTTP/1.1 204 No Content\r\n\r\n"},
		want:   []summary{{Method: "GET", Path: "/p", Host: "b.example", Status: 204}},
	}, {
		name:   "asterisk-form and LF line ends",
		client: []string{"OPTIONS * HTTP/1.1\nHost: h\n\n"},
		server: []string{"HTTP/1.1 200 OK\nContent-Length: 0\n\n"},
		want:   []summary{{Method: "OPTIONS", Path: "*", Host: "h", Status: 200}},
	}, {
		name:   "request body by Content-Length",
		client: []string{"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello", " world"},
		server: []string{"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"},
		want:   []summary{{Method: "POST", Path: "/f", Host: "h", Status: 201, Req: 11}},
	}, {
		name: "chunked with extensions and trailers",
		client: []string{"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" +
			"5;ext=1\r\nhello\r\n0\r\n\r\n"},
		server: []string{"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
			"4 ; name=\"v\"\r\nwiki\r\n", "5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n"},
		want: []summary{{Method: "POST", Path: "/u", Host: "h", Status: 200, Req: 5, Resp: 23}},
	}, {
		name:   "HEAD response has no body whatever its Content-Length",
		client: []string{"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"},
		server: []string{"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		want: []summary{{Method: "HEAD", Path: "/", Host: "h", Status: 200},
			{Method: "GET", Path: "/", Host: "h", Status: 200, Resp: 2}},
	}, {
		name:   "204 and 304 have no body",
		client: []string{"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"},
		server: []string{"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n" +
			"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"},
		want: []summary{{Method: "GET", Path: "/a", Status: 204}, {Method: "GET", Path: "/b", Status: 304},
			{Method: "GET", Path: "/c", Status: 200, Resp: 3}},
	}, {
		name:   "empty lines between requests are skipped",
		client: []string{"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\n\r\nGET /n HTTP/1.1\r\n\r\n"},
		server: []string{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		want:   []summary{{Method: "POST", Path: "/", Status: 200, Req: 2}, {Method: "GET", Path: "/n", Status: 200}},
	}, {
		name:   "any token is a method",
		client: []string{"CCM_POST /x HTTP/1.1\r\n\r\nM-SEARCH * HTTP/1.1\r\n\r\n"},
		server: []string{"HTTP/1.1 405 Nope\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		want:   []summary{{Method: "CCM_POST", Path: "/x", Status: 405}, {Method: "M-SEARCH", Path: "*", Status: 200}},
	}, {
		name:   "duplicate equal Content-Length values are one length",
		client: []string{"PUT / HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc"},
		server: []string{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		want:   []summary{{Method: "PUT", Path: "/", Status: 200, Req: 3}},
	}, {
		name:   "a response body without length runs until close",
		client: []string{"GET / HTTP/1.0\r\n\r\n"},
		server: []string{"HTTP/1.0 200 OK\r\n\r\nsome", " bytes"},
		want:   []summary{{Method: "GET", Path: "/", Status: 200, Resp: 10}},
	}, {
		name:   "a response Transfer-Encoding not ending in chunked runs until close",
		client: []string{"GET / HTTP/1.1\r\n\r\n"},
		server: []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n123"},
		want:   []summary{{Method: "GET", Path: "/", Status: 200, Resp: 3}},
	}, {
		name:   "server whitespace before a colon is removed",
		client: []string{"GET / HTTP/1.1\r\n\r\n"},
		server: []string{"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
		want:   []summary{{Method: "GET", Path: "/", Status: 200, Resp: 2}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			v := newConv(t)
			for _, s := range tc.client {
				v.client(s)
			}
			for _, s := range tc.server {
				v.server(s)
			}
			v.end()
			v.expect(tc.want...)
		})
	}
}

// Framing that cannot be read unambiguously is flagged, the message partial, and the side
// starts again at the next sample that begins with a message.
func TestAmbiguousFraming(t *testing.T) {
	next := summary{Method: "GET", Path: "/next", Status: 200, Resp: 2}
	for _, tc := range []struct {
		name   string
		req    string
		resp   string
		want   summary
		client bool // the ambiguity is in the request
	}{{
		name:   "Transfer-Encoding and Content-Length in a request",
		req:    "POST /smuggle HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
		resp:   "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
		want:   summary{Method: "POST", Path: "/smuggle", Status: 400, Partial: true, Flags: FlagCLAndChunked},
		client: true,
	}, {
		name: "Transfer-Encoding and Content-Length in a response",
		req:  "GET /x HTTP/1.1\r\n\r\n",
		resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		want: summary{Method: "GET", Path: "/x", Status: 200, Partial: true, Flags: FlagCLAndChunked},
	}, {
		name: "bare LF in a chunk size",
		req:  "GET /x HTTP/1.1\r\n\r\n",
		resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
		want: summary{Method: "GET", Path: "/x", Status: 200, Partial: true, Flags: FlagBareLFChunkSize},
	}, {
		name: "bare LF after chunk data",
		req:  "GET /x HTTP/1.1\r\n\r\n",
		resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
		want: summary{Method: "GET", Path: "/x", Status: 200, Resp: 3, Partial: true, Flags: FlagBareLFChunkEnd},
	}, {
		name:   "conflicting Content-Length",
		req:    "POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		resp:   "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
		want:   summary{Method: "POST", Path: "/x", Status: 400, Partial: true, Flags: FlagConflictingCL},
		client: true,
	}, {
		name: "invalid Content-Length",
		req:  "GET /x HTTP/1.1\r\n\r\n",
		resp: "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n0123456789abcdef",
		want: summary{Method: "GET", Path: "/x", Status: 200, Partial: true, Flags: FlagInvalidCL},
	}, {
		name:   "a request Transfer-Encoding not ending in chunked",
		req:    "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\nabc",
		resp:   "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
		want:   summary{Method: "POST", Path: "/x", Status: 400, Partial: true, Flags: FlagInvalidTE},
		client: true,
	}, {
		name:   "Content-Length continued on the next line",
		req:    "POST /x HTTP/1.1\r\nContent-Length: 1\r\n 0\r\n\r\n0123456789",
		resp:   "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
		want:   summary{Method: "POST", Path: "/x", Status: 400, Partial: true, Flags: FlagObsFoldFraming},
		client: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			v := newConv(t)
			v.client(tc.req)
			v.server(tc.resp)
			v.expect(tc.want)
			// Both sides find the next exchange, since it begins a sample.
			v.client("GET /next HTTP/1.1\r\n\r\n")
			v.server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			v.expect(next)
			for i, name := range flagNames {
				if tc.want.Flags&(1<<i) != 0 && v.sh.Counters.Flags[i] != 1 {
					t.Errorf("flag.%s counted %d times", name, v.sh.Counters.Flags[i])
				}
			}
			if v.sh.Counters.Desyncs != 1 {
				t.Errorf("desyncs %d, want 1", v.sh.Counters.Desyncs)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	t.Run("request line at a message boundary", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /a HTTP/1.1\r\n\r\n")
		v.server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		v.client("GET/ HTTP/1.1\r\nHost: h\r\n\r\n")
		v.server("HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		v.expect(summary{Method: "GET", Path: "/a", Status: 200},
			summary{Status: 400, Partial: true, Error: ErrRequestLine})
	})
	t.Run("header line without a colon", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /a HTTP/1.1\r\nHost h\r\n\r\n")
		v.server("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		v.expect(summary{Method: "GET", Path: "/a", Status: 400, Partial: true, Error: ErrHeaderLine})
	})
	t.Run("request header with whitespace before the colon", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /a HTTP/1.1\r\nHost : h\r\n\r\n")
		v.end()
		v.expect(summary{Method: "GET", Path: "/a", Partial: true, Error: ErrHeaderLine})
	})
	t.Run("chunk size", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /a HTTP/1.1\r\n\r\n")
		v.server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
		v.expect(summary{Method: "GET", Path: "/a", Status: 200, Partial: true, Error: ErrChunkSize})
	})
	t.Run("chunk data longer than its size", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /a HTTP/1.1\r\n\r\n")
		v.server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n")
		v.expect(summary{Method: "GET", Path: "/a", Status: 200, Resp: 2, Partial: true, Error: ErrChunkEnd})
	})
	t.Run("status line", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
		v.server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 2xx Broken\r\n\r\n")
		v.expect(summary{Method: "GET", Path: "/a", Status: 200},
			summary{Method: "GET", Path: "/b", Partial: true, Error: ErrStatusLine})
		if v.sh.Counters.Malformed != 1 {
			t.Fatalf("malformed %d", v.sh.Counters.Malformed)
		}
	})
}

func TestInterimResponses(t *testing.T) {
	v := newConv(t)
	v.client("POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	v.server("HTTP/1.1 100 Continue\r\n\r\n")
	v.expect()
	v.client("data")
	v.server("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	got := v.take()
	if want := []summary{{Method: "POST", Path: "/up", Host: "h", Status: 200, Req: 4, Resp: 2}}; !reflect.DeepEqual(sum(got), want) {
		t.Fatalf("got %+v", sum(got))
	}
	// The latency runs to the final response (the fourth sample), not to 100 Continue.
	if lat := got[0].ResponseTime.Sub(got[0].RequestTime); lat != 3*time.Millisecond {
		t.Fatalf("latency %v, want 3ms", lat)
	}
	if v.sh.Counters.Interim != 2 || v.sh.Counters.Responses != 1 {
		t.Fatalf("counters %+v", v.sh.Counters)
	}
}

func TestUpgradeAndConnect(t *testing.T) {
	t.Run("101 Switching Protocols", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		v.server("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
		v.expect(summary{Method: "GET", Path: "/chat", Host: "h", Status: 101})
		v.client("\x81\x85GET / HTTP/1.1\r\n\r\n") // frames, even ones that look like requests
		v.server("HTTP/1.1 200 OK\r\n\r\n")
		v.end()
		v.expect()
		if v.sh.Counters.Upgrades != 1 || v.sh.Counters.Requests != 1 {
			t.Fatalf("counters %+v", v.sh.Counters)
		}
	})
	t.Run("CONNECT tunnel", func(t *testing.T) {
		v := newConv(t)
		v.client("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
		v.client("\x16\x03\x01\x00\xa5\x01\x00\x00") // a ClientHello sent before the answer
		v.server("HTTP/1.1 200 Connection Established\r\n\r\n")
		v.expect(summary{Method: "CONNECT", Path: "example.com:443", Host: "example.com:443", Status: 200})
		v.client("GET / HTTP/1.1\r\n\r\n")
		v.server("\x16\x03\x03\x00\x5a\x02")
		v.end()
		v.expect()
		if v.sh.Counters.Tunnels != 1 {
			t.Fatalf("tunnels %d", v.sh.Counters.Tunnels)
		}
	})
	t.Run("failed CONNECT", func(t *testing.T) {
		v := newConv(t)
		v.client("CONNECT example.com:443 HTTP/1.1\r\n\r\n")
		v.server("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
		v.client("GET http://example.com/ HTTP/1.1\r\n\r\n")
		v.server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		v.expect(summary{Method: "CONNECT", Path: "example.com:443", Status: 407},
			summary{Method: "GET", Path: "/", Host: "example.com", Status: 200})
	})
	t.Run("HTTP/2 prior knowledge", func(t *testing.T) {
		v := newConv(t)
		v.client("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04")
		v.server("\x00\x00\x00\x04\x00\x00\x00\x00\x00")
		v.end()
		v.expect()
		if v.sh.Counters.HTTP2Preface != 1 {
			t.Fatalf("counters %+v", v.sh.Counters)
		}
	})
}

// Five pipelined requests in one segment; their responses arrive split in two samples at every
// byte position, and are paired in order each time.
func TestPipeliningAtEveryCut(t *testing.T) {
	var reqs, resps strings.Builder
	var want []summary
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&reqs, "GET /r%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
		if i == 3 {
			body := "4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\nT: v\r\n\r\n"
			fmt.Fprintf(&resps, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s", body)
			want = append(want, summary{Method: "GET", Path: "/r3", Host: "h", Status: 200, Resp: 7})
			continue
		}
		body := strings.Repeat("x", i)
		fmt.Fprintf(&resps, "HTTP/1.1 %d OK\r\nContent-Length: %d\r\n\r\n%s", 210+i, i, body)
		want = append(want, summary{Method: "GET", Path: fmt.Sprintf("/r%d", i), Host: "h", Status: 210 + i, Resp: uint64(i)})
	}
	r := resps.String()
	for cut := 0; cut <= len(r); cut++ {
		v := newConv(t)
		v.client(reqs.String())
		if cut > 0 {
			v.server(r[:cut])
		}
		if cut < len(r) {
			v.server(r[cut:])
		}
		if got := sum(v.take()); !reflect.DeepEqual(got, want) {
			t.Fatalf("cut at %d (%q | %q):\n got %+v\nwant %+v", cut, r[:cut], r[cut:], got, want)
		}
		if v.c.Pending() != 0 || v.sh.Counters.Desyncs != 0 {
			t.Fatalf("cut at %d: %d pending, %d desyncs", cut, v.c.Pending(), v.sh.Counters.Desyncs)
		}
	}
	// The same for the requests, cut at every byte while the responses come whole.
	q := reqs.String()
	for cut := 1; cut < len(q); cut++ {
		v := newConv(t)
		v.client(q[:cut])
		v.client(q[cut:])
		v.server(r)
		if got := sum(v.take()); !reflect.DeepEqual(got, want) {
			t.Fatalf("request cut at %d:\n got %+v\nwant %+v", cut, got, want)
		}
	}
}

// A sample cut short (WireLen more than its data) is fine inside a body of known length, and
// makes the message partial inside headers or chunk framing.
func TestTruncatedSamples(t *testing.T) {
	t.Run("inside a Content-Length body", func(t *testing.T) {
		v := newConv(t)
		v.client(getReq)
		resp := "HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + strings.Repeat("b", 3000)
		v.serverCut(resp, 2048)
		v.client(getReq)
		v.server(resp200)
		v.expect(summary{Method: "GET", Path: "/index.html", Host: "example.com", Status: 200, Resp: 3000}, okIndex)
		if c := v.sh.Counters; c.Truncated != 1 || c.TruncatedBytes != uint64(len(resp)-2048) || c.Desyncs != 0 {
			t.Fatalf("counters %+v", c)
		}
	})
	t.Run("inside chunk data", func(t *testing.T) {
		v := newConv(t)
		v.client(getReq)
		v.serverCut("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n"+strings.Repeat("c", 0x800), 100)
		v.server("\r\n0\r\n\r\n")
		v.expect(summary{Method: "GET", Path: "/index.html", Host: "example.com", Status: 200, Resp: 0x800})
	})
	t.Run("past the chunk data into framing", func(t *testing.T) {
		v := newConv(t)
		v.client(getReq)
		v.serverCut("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n"+strings.Repeat("c", 16)+"\r\n5\r\nhello\r\n0\r\n\r\n", 60)
		v.expect(summary{Method: "GET", Path: "/index.html", Host: "example.com", Status: 200, Resp: 16, Partial: true})
	})
	t.Run("inside request headers", func(t *testing.T) {
		v := newConv(t)
		req := "GET /big HTTP/1.1\r\nHost: h\r\nCookie: " + strings.Repeat("k", 3000) + "\r\n\r\n"
		v.clientCut(req, 2048)
		v.server(resp200)
		v.client(getReq) // the next request begins a sample, so it is found again
		v.server(resp200)
		v.expect(summary{Method: "GET", Path: "/big", Host: "h", Status: 200, Resp: 5, Partial: true}, okIndex)
	})
	t.Run("inside the request line", func(t *testing.T) {
		v := newConv(t)
		req := "GET /" + strings.Repeat("p", 3000) + " HTTP/1.1\r\nHost: h\r\n\r\n"
		v.clientCut(req, 20)
		v.server(resp200)
		v.expect(summary{Method: "GET", Path: "/" + strings.Repeat("p", 15), Status: 200, Resp: 5, Partial: true})
	})
	t.Run("inside response headers", func(t *testing.T) {
		v := newConv(t)
		v.client(getReq)
		resp := "HTTP/1.1 200 OK\r\nSet-Cookie: " + strings.Repeat("s", 3000) + "\r\nContent-Length: 2\r\n\r\nok"
		v.serverCut(resp, 2048)
		v.expect(summary{Method: "GET", Path: "/index.html", Host: "example.com", Status: 200, Partial: true})
	})
}

func TestRetransmissionsAndOverlaps(t *testing.T) {
	v := newConv(t)
	req := getReq
	v.send(true, v.cseq, req[:30], 30)
	v.send(true, v.cseq, req[:30], 30) // the same segment again
	v.send(true, v.cseq+10, req[10:50], 40)
	v.send(true, v.cseq+50, req[50:], len(req)-50)
	v.send(true, v.cseq, req, len(req)) // the whole request again, later
	v.cseq += uint32(len(req))
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("b", 100) // 140 bytes
	v.send(false, v.sseq, resp[:70], 70)
	v.send(false, v.sseq, resp[:10], 50) // a retransmission, cut short
	// Overlapping and cut: 60 to 70 are old, 70 to 80 new, 80 to 100 new but not captured.
	v.send(false, v.sseq+60, resp[60:80], 40)
	v.send(false, v.sseq+100, resp[100:], len(resp)-100)
	v.expect(summary{Method: "GET", Path: "/index.html", Host: "example.com", Status: 200, Resp: 100})
	c := v.sh.Counters
	if c.Retransmits != 3 || c.Overlaps != 2 || c.Desyncs != 0 || c.TruncatedBytes != 20 {
		t.Fatalf("counters %+v", c)
	}
}

func TestGaps(t *testing.T) {
	t.Run("inside a body of known length", func(t *testing.T) {
		v := newConv(t)
		v.client(getReq)
		resp := "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("d", 100)
		v.send(false, v.sseq, resp[:50], 50)
		v.send(false, v.sseq+80, resp[80:], len(resp)-80) // 30 bytes lost
		v.sseq += uint32(len(resp))
		v.client(getReq)
		v.server(resp200)
		v.expect(summary{Method: "GET", Path: "/index.html", Host: "example.com", Status: 200, Resp: 100}, okIndex)
		if c := v.sh.Counters; c.Gaps != 1 || c.GapBytes != 30 {
			t.Fatalf("counters %+v", c)
		}
	})
	t.Run("inside headers", func(t *testing.T) {
		v := newConv(t)
		v.client(getReq)
		v.send(false, v.sseq, resp200[:20], 20)
		v.send(false, v.sseq+30, resp200[30:], len(resp200)-30)
		v.sseq += uint32(len(resp200))
		v.expect(summary{Method: "GET", Path: "/index.html", Host: "example.com", Status: 200, Partial: true})
		v.client(getReq)
		v.server(resp200)
		v.expect(okIndex)
	})
	t.Run("a whole request lost between keep-alive exchanges", func(t *testing.T) {
		v := newConv(t)
		v.client(getReq)
		v.server(resp200)
		v.cseq += uint32(len(getReq)) // lost
		v.server(resp200)             // its response finds no request
		v.client(getReq)
		v.server(resp200)
		v.expect(okIndex, okIndex)
		if c := v.sh.Counters; c.Orphans != 1 || c.Gaps != 1 {
			t.Fatalf("counters %+v", c)
		}
	})
	t.Run("sequence numbers wrap", func(t *testing.T) {
		v := newConv(t)
		v.cseq, v.sseq = 1<<32-10, 1<<32-3
		v.client(getReq[:7])
		v.client(getReq[7:])
		v.server(resp200[:20])
		v.server(resp200[20:])
		v.expect(okIndex)
		if v.sh.Counters.Gaps != 0 || v.sh.Counters.Retransmits != 0 {
			t.Fatalf("counters %+v", v.sh.Counters)
		}
	})
}

func TestMidStreamPickup(t *testing.T) {
	v := newConv(t)
	// The capture starts inside a POST body and the end of its response.
	v.client("more body bytes of an upload that started before the capture\r\n")
	v.client("hello world: this line looks like a request line\r\nbut is not\r\n")
	v.server("st of a response body</html>")
	v.server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") // answers the upload
	v.expect()
	v.client(getReq)
	v.server(resp200)
	v.expect(okIndex)
	c := v.sh.Counters
	if c.Orphans != 1 || c.FalseStarts != 1 || c.Requests != 2 || c.Transactions != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestFlowEnd(t *testing.T) {
	t.Run("requests without responses", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nPOST /3 HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")
		v.server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		v.expect(summary{Method: "GET", Path: "/1", Status: 200})
		v.end()
		v.expect(summary{Method: "GET", Path: "/2", Partial: true},
			summary{Method: "POST", Path: "/3", Req: 5, Partial: true})
		if v.c.Pending() != 0 {
			t.Fatal("requests left after End")
		}
	})
	t.Run("a response delimited by the close", func(t *testing.T) {
		v := newConv(t)
		v.client("GET / HTTP/1.0\r\n\r\n")
		v.server("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nabc")
		v.expect()
		v.end()
		v.expect(summary{Method: "GET", Path: "/", Status: 200, Resp: 3})
	})
	t.Run("evicted instead of ended", func(t *testing.T) {
		v := newConv(t)
		v.client("GET / HTTP/1.0\r\n\r\n")
		v.server("HTTP/1.0 200 OK\r\n\r\nabc")
		v.got = v.c.End(false, v.got)
		v.expect(summary{Method: "GET", Path: "/", Status: 200, Resp: 3, Partial: true})
	})
	t.Run("a request line without its end", func(t *testing.T) {
		v := newConv(t)
		v.client("GET /unfinished HTTP/1.1")
		v.end()
		v.expect(summary{Method: "GET", Path: "/unfinished", Partial: true})
	})
}

func TestBounds(t *testing.T) {
	t.Run("header block over the limit", func(t *testing.T) {
		v := newConv(t)
		v.sh.MaxHeaderBytes = 256
		v.client("GET /h HTTP/1.1\r\nHost: h\r\n")
		for i := 0; i < 10; i++ {
			v.client(fmt.Sprintf("X-Filler-%d: %s\r\n", i, strings.Repeat("f", 40)))
		}
		v.client("\r\n")
		v.server(resp200)
		v.client(getReq)
		v.server(resp200)
		v.expect(summary{Method: "GET", Path: "/h", Host: "h", Status: 200, Resp: 5, Partial: true}, okIndex)
		if v.sh.Counters.HeaderOverflow != 1 {
			t.Fatalf("counters %+v", v.sh.Counters)
		}
	})
	t.Run("pending requests over the limit", func(t *testing.T) {
		v := newConv(t)
		v.sh.MaxPending = 3
		for i := 1; i <= 5; i++ {
			v.client(fmt.Sprintf("GET /%d HTTP/1.1\r\n\r\n", i))
		}
		v.expect(summary{Method: "GET", Path: "/1", Partial: true}, summary{Method: "GET", Path: "/2", Partial: true})
		v.server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		v.expect(summary{Method: "GET", Path: "/3", Status: 200})
		if v.sh.Counters.PendingOverflow != 2 {
			t.Fatalf("counters %+v", v.sh.Counters)
		}
	})
	t.Run("multiple Host headers", func(t *testing.T) {
		v := newConv(t)
		v.client("GET / HTTP/1.1\r\nHost: first\r\nHost: second\r\n\r\n")
		v.server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		v.expect(summary{Method: "GET", Path: "/", Host: "first", Status: 200, Flags: FlagMultipleHost})
	})
	t.Run("folded User-Agent and Host", func(t *testing.T) {
		v := newConv(t)
		v.client("GET / HTTP/1.1\r\nHost: user:pass\r\n @h\r\nUser-Agent: a\r\n\tb\r\n\r\n")
		v.server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		got := v.take()
		if len(got) != 1 || got[0].Host != "" || got[0].UserAgent != "a b" || got[0].Partial {
			t.Fatalf("got %+v", got)
		}
	})
}
