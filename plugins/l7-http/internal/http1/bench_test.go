package http1

import (
	"testing"
	"time"
)

// A typical browser GET of about 300 bytes with a handful of headers, and a typical response
// head with a small body.
const (
	benchRequest = "GET /search?q=network+monitoring&hl=en HTTP/1.1\r\n" +
		"Host: www.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
		"Accept-Language: en-US,en;q=0.5\r\n" +
		"Accept-Encoding: gzip, deflate\r\n" +
		"Connection: keep-alive\r\n\r\n"
	benchResponse = "HTTP/1.1 200 OK\r\n" +
		"Date: Wed, 01 May 2024 12:00:00 GMT\r\n" +
		"Server: nginx/1.25.4\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n" +
		"Content-Length: 128\r\n" +
		"Cache-Control: private, max-age=0\r\n" +
		"Connection: keep-alive\r\n\r\n" +
		"<!doctype html><html><head><title>results</title></head><body><p>one hundred and twenty-eight bytes of body</p></body></html>..\n" // 128 bytes
)

// BenchmarkParseRequest reads one request per operation on a connection in step with its
// stream. The queued request is dropped after each, as if answered, so the queue stays empty.
func BenchmarkParseRequest(b *testing.B) {
	sh := NewShared()
	c := NewConn(sh)
	req := []byte(benchRequest)
	var seq uint32
	now := t0
	c.Packet(true, seq, req, len(req), now, nil) // in step from here on
	seq += uint32(len(req))
	c.q.pop()
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Packet(true, seq, req, len(req), now, nil)
		seq += uint32(len(req))
		c.q.pop()
	}
	b.StopTimer()
	if sh.Counters.Requests != uint64(b.N)+1 || sh.Counters.Desyncs != 0 || sh.Counters.Malformed != 0 {
		b.Fatalf("counters %+v", sh.Counters)
	}
}

// BenchmarkParseResponse reads one response per operation, paired with a waiting request, and
// reports the transaction.
func BenchmarkParseResponse(b *testing.B) {
	sh := NewShared()
	c := NewConn(sh)
	resp := []byte(benchResponse)
	var seq uint32
	now := t0
	out := make([]Transaction, 0, 1)
	waiting := func() {
		p := c.push(now)
		p.tx.Method, p.tx.Path, p.reqDone = "GET", "/", true
	}
	waiting()
	out = c.Packet(false, seq, resp, len(resp), now.Add(time.Millisecond), out[:0])
	seq += uint32(len(resp))
	b.SetBytes(int64(len(resp)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		waiting()
		out = c.Packet(false, seq, resp, len(resp), now, out[:0])
		seq += uint32(len(resp))
	}
	b.StopTimer()
	if len(out) != 1 || out[0].Status != 200 || out[0].ResponseBytes != 128 || out[0].Partial ||
		sh.Counters.Transactions != uint64(b.N)+1 || sh.Counters.Desyncs != 0 || sh.Counters.Malformed != 0 {
		b.Fatalf("last transaction %+v, counters %+v", out, sh.Counters)
	}
}
