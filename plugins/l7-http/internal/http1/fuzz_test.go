package http1

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// fuzzSeeds are exchanges from the unit tests: whole conversations, client bytes then server
// bytes.
var fuzzSeeds = []struct{ client, server string }{
	{getReq, resp200},
	{"GET http://user:pw@h:8080/p?q HTTP/1.1\r\nHost: u:p@h\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n"},
	{"OPTIONS\nHost: www.google.com\n\n", "HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"},
	{"OPTIONS  HTTP/1.1\r\n\r\nGET / HTTP/1.\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n"},
	{"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n"},
	{"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"},
	{"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	{"POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"},
	{"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\nGET /4 HTTP/1.1\r\n\r\nGET /5 HTTP/1.1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 201 OK\r\nContent-Length: 0\r\n\r\n" +
			"HTTP/1.1 202 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 203 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nclose"},
	{"CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01", "HTTP/1.1 200 Established\r\n\r\n\x16\x03\x03"},
	{"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", "HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello"},
	{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "\x00\x00\x00\x04"},
	{"GET / HTTP/1.1\r\nHost: a\r\n b\r\nContent-Length: 1\r\n 0\r\n\r\n", "HTTP/1.1 400 x\r\nContent-Length : 0\r\n\r\n"},
}

// split cuts the two streams into samples as the fuzzer's cut bytes say: each cut byte's low
// bit picks the side, the rest the sample's length.
func split(client, server []byte, cuts []byte) (samples []struct {
	client bool
	data   []byte
}) {
	for _, c := range cuts {
		src := &server
		if c&1 == 1 {
			src = &client
		}
		n := min(int(c>>1)+1, len(*src))
		if n == 0 {
			continue
		}
		samples = append(samples, struct {
			client bool
			data   []byte
		}{c&1 == 1, (*src)[:n]})
		*src = (*src)[n:]
	}
	if len(client) > 0 {
		samples = append(samples, struct {
			client bool
			data   []byte
		}{true, client})
	}
	if len(server) > 0 {
		samples = append(samples, struct {
			client bool
			data   []byte
		}{false, server})
	}
	return samples
}

// run feeds the samples to a new connection, then ends it.
func run(t *testing.T, samples []struct {
	client bool
	data   []byte
}) ([]Transaction, Counters) {
	sh := NewShared()
	c := NewConn(sh)
	var cseq, sseq uint32 = 7, 1 << 31
	var out []Transaction
	now := t0
	for _, s := range samples {
		now = now.Add(time.Millisecond)
		seq := &sseq
		if s.client {
			seq = &cseq
		}
		out = c.Packet(s.client, *seq, s.data, len(s.data), now, out)
		*seq += uint32(len(s.data))
	}
	out = c.End(true, out)
	if c.Pending() != 0 {
		t.Fatalf("%d requests held after End", c.Pending())
	}
	checkTransactions(t, out, sh.Counters)
	return out, sh.Counters
}

// checkTransactions holds every report to what must be true of any input.
func checkTransactions(t *testing.T, txs []Transaction, cnt Counters) {
	t.Helper()
	if uint64(len(txs)) > cnt.Requests || cnt.Transactions != uint64(len(txs)) {
		t.Fatalf("%d transactions reported (%d counted) for %d requests", len(txs), cnt.Transactions, cnt.Requests)
	}
	for _, tx := range txs {
		switch {
		case tx.Status == 0 && !tx.Partial:
			t.Fatalf("a transaction without a response is not partial: %+v", tx)
		case tx.Status != 0 && (tx.Status < 100 || tx.Status > 999):
			t.Fatalf("status %d", tx.Status)
		case strings.Contains(tx.Host, "@"):
			t.Fatalf("user-info in the host %q", tx.Host)
		case tx.Method == "" && tx.Error == "":
			t.Fatalf("a well-formed transaction without a method: %+v", tx)
		case tx.Method != "" && (!isToken([]byte(tx.Method)) || len(tx.Method) > maxMethod):
			t.Fatalf("method %q", tx.Method)
		case tx.Version != "" && len(tx.Version) != 3:
			t.Fatalf("version %q", tx.Version)
		case tx.Flags&framing != 0 && !tx.Partial:
			t.Fatalf("ambiguous framing not partial: %+v", tx)
		case !tx.ResponseTime.IsZero() && tx.ResponseTime.Before(tx.RequestTime) && tx.Status != 0:
			// Both come from one clock here, and a response is paired with an earlier request.
			t.Fatalf("response at %v before its request at %v", tx.ResponseTime, tx.RequestTime)
		}
	}
}

// FuzzParse sends arbitrary bytes as the two sides of a connection, cut into samples at points
// the fuzzer chooses. Beyond never panicking, a conversation that was read without losing its
// place must give the same transactions however it was cut.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s.client), []byte(s.server), []byte{})
		f.Add([]byte(s.client), []byte(s.server), []byte{3, 2, 9, 0, 255, 17, 5, 4})
	}
	f.Fuzz(func(t *testing.T, client, server, cuts []byte) {
		whole, wc := run(t, split(client, server, nil))
		// The same bytes cut up, all the client's first so that pairing is as in one piece.
		var clientCuts, serverCuts []byte
		for _, c := range cuts {
			if c&1 == 1 {
				clientCuts = append(clientCuts, c)
			} else {
				serverCuts = append(serverCuts, c)
			}
		}
		pieces, pc := run(t, append(split(client, nil, clientCuts), split(nil, server, serverCuts)...))
		if wc.Desyncs+pc.Desyncs+wc.SkippedBytes+pc.SkippedBytes+wc.HeaderOverflow+pc.HeaderOverflow+
			wc.FalseStarts+pc.FalseStarts == 0 && !reflect.DeepEqual(sum(whole), sum(pieces)) {
			t.Fatalf("cut into samples (cuts %v), the conversation reads differently:\nwhole  %+v\npieces %+v",
				cuts, sum(whole), sum(pieces))
		}
		// And interleaved as the fuzzer says.
		run(t, split(client, server, cuts))
	})
}
