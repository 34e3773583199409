// Package http1 follows HTTP/1.0 and HTTP/1.1 conversations through the payload samples the
// capture takes of each TCP packet, and reports one Transaction per request and its response.
//
// A Conn has two sides, the client's (requests) and the server's (responses). A side follows its
// byte stream by sequence number: bytes already seen are trimmed, a jump forward is a gap of
// known length, and the bytes a sample was cut short of are a hole of known length. Known bytes
// go through a small state machine (start line, headers, body of known length, chunked body,
// body until close) that never buffers a body, only an unfinished line, up to a bound. A gap or
// hole is harmless inside a body of known length; anywhere else the side loses its place,
// reports the message it was reading as partial and waits for a sample that begins with a start
// line. Requests join a bounded queue when their request line is read; each final response is
// paired with the oldest request not yet answered, so keep-alive and pipelining pair correctly,
// and a transaction is reported once both its request and its final response have ended.
package http1

import (
	"bytes"
	"time"
)

// Transaction is one request and its final response, as much of them as was seen.
type Transaction struct {
	Method      string
	Path        string // the request-target; for absolute-form, its path and query
	Host        string // the Host header, else the absolute-form URI's authority; never user-info
	Version     string // of the request line: "1.1"; empty when the line had none
	UserAgent   string
	ContentType string // the response's, else the request's
	Status      int    // the final response's status; 0 when none was seen

	// RequestBytes and ResponseBytes are body lengths: the bytes of a body with a
	// Content-Length, the sum of the chunk sizes of a chunked one, the bytes until the
	// connection closed for a response without either. Bytes not captured but known to be
	// there (sample cut short, packet lost inside a body of known length) count.
	RequestBytes  uint64
	ResponseBytes uint64

	RequestTime  time.Time // the sample holding the request's first byte
	ResponseTime time.Time // the sample holding the final response's first byte; zero if none

	Partial bool   // something was not seen; what is known is reported
	Error   string // the message was malformed (one of the Err texts)
	Flags   Flags
}

// Error texts of malformed messages.
const (
	ErrRequestLine = "malformed request line"
	ErrStatusLine  = "malformed status line"
	ErrHeaderLine  = "malformed header line"
	ErrChunkSize   = "malformed chunk size"
	ErrChunkEnd    = "chunk data not followed by CRLF"
)

type state uint8

const (
	stLost        state = iota // out of step: waiting for a sample that begins with a start line
	stStart                    // the next byte begins a start line (empty lines are skipped)
	stHeaders                  // reading header lines
	stBody                     // a body with remain bytes to come
	stChunkSize                // reading a chunk-size line
	stChunkData                // chunk data with remain bytes to come
	stChunkEnd                 // the CRLF after chunk data
	stTrailers                 // trailer lines after the last chunk
	stUntilClose               // a response body that ends when the connection does
	stAwaitTunnel              // client: a CONNECT was sent; nothing is parsed until its answer
	stTunnel                   // no longer HTTP/1 (upgrade, CONNECT tunnel, HTTP/2): ignored
)

// A sample cannot hold more than this on the wire (segmentation offload makes packets of up to
// 64 KiB, BIG TCP more); a larger WireLen is a broken sample and is taken as its data's length.
const maxWireLen = 1 << 20

// A sample entirely behind the stream by more than this is not a retransmission but a new stream
// on the same flow key (a connection reusing the ports without a FlowEnd in between).
const maxBehind = 64 << 20

// side is one direction of a connection.
type side struct {
	client bool
	st     state
	seqOK  bool   // next is known
	next   uint32 // sequence number of the next byte expected

	// probe holds a lost side's last sample when all of it could be the beginning of a start
	// line ("HTTP/1." or "GE"), so that a start line split over a connection's first two
	// samples is still found.
	probe     []byte
	probeTime time.Time

	line  []byte // an unfinished line, carried over to the next sample
	lineN int    // bytes of the current start line and headers, trailers or chunk-size line
	sawCR bool   // stChunkEnd: the CR was seen

	// The message being read.
	inMsg bool      // its start line was read
	begin time.Time // the sample holding its first byte
	// tentative marks a request found while looking for a message start: until its header
	// block ends cleanly it may be body bytes that happen to begin with a word and a space.
	// plausible says whether its request line looks like one (see plausible).
	tentative, plausible bool
	orphan               bool // response: no request to pair with
	interim              bool // response: 1xx other than 101
	status               int
	hostSeen             bool
	last                 hdr // the kind of the last header line, for obs-fold

	// Framing: what the Content-Length and Transfer-Encoding fields said.
	clSeen, clBad, clConflict bool
	cl                        int64
	te, chunkedSeen           bool
	chunkedLast, chunkedTwice bool
	foldedFraming             bool
	remain                    uint64 // bytes of the body or the chunk still to come
	body                      uint64 // body bytes so far
}

// resetMessage forgets the message being read.
func (s *side) resetMessage() {
	s.inMsg, s.tentative, s.plausible, s.orphan, s.interim, s.hostSeen = false, false, false, false, false, false
	s.status, s.last = 0, hdrOther
	s.clSeen, s.clBad, s.clConflict, s.cl = false, false, false, 0
	s.te, s.chunkedSeen, s.chunkedLast, s.chunkedTwice, s.foldedFraming = false, false, false, false, false
	s.remain, s.body, s.lineN, s.sawCR = 0, 0, 0, false
	s.line = s.line[:0]
}

// Conn is one TCP connection's HTTP/1 state. The zero Conn is not usable: call Init.
type Conn struct {
	sh       *Shared
	cli, srv side
	q        queue
	answered int // entries at the front of q whose final response has ended
	out      []Transaction

	// recent holds the last string of each kind the connection reported. A keep-alive
	// connection repeats its host, user agent and content types, and comparing with the last
	// one is cheaper than the shared table's hash lookup.
	recent [recentKinds]string
}

// Kinds of recent strings.
const (
	recentMethod = iota
	recentVersion
	recentHost
	recentUserAgent
	recentRequestType
	recentResponseType
	recentKinds
)

// str returns b as a string, without allocating when it was seen before.
func (c *Conn) str(kind int, b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if last := c.recent[kind]; last == string(b) {
		return last
	}
	s := c.sh.strings.get(b)
	c.recent[kind] = s
	return s
}

// NewConn makes a connection's state.
func NewConn(sh *Shared) *Conn {
	c := &Conn{}
	c.Init(sh)
	return c
}

// Init readies a Conn for a new connection. Both sides start out of step: a capture may join
// a connection at any point, so each side waits for a sample that begins with a start line.
func (c *Conn) Init(sh *Shared) {
	*c = Conn{sh: sh}
	c.cli = side{client: true, st: stLost}
	c.srv = side{st: stLost}
}

// Pending is the number of requests held.
func (c *Conn) Pending() int { return c.q.n }

// Packet reads one sample of the connection: data is the start of the TCP payload of a packet
// whose first byte has sequence number seq, wireLen the payload's length on the wire. It appends
// the transactions the sample completes to out and returns it.
func (c *Conn) Packet(fromClient bool, seq uint32, data []byte, wireLen int, t time.Time, out []Transaction) []Transaction {
	c.out = out
	c.packet(fromClient, seq, data, wireLen, t)
	out, c.out = c.out, nil
	return out
}

func (c *Conn) packet(fromClient bool, seq uint32, data []byte, wireLen int, t time.Time) {
	cnt := &c.sh.Counters
	s := &c.srv
	if fromClient {
		s = &c.cli
	}
	if wireLen < len(data) || wireLen > maxWireLen {
		cnt.BadWireLen++
		wireLen = len(data)
	}
	if wireLen == 0 {
		return
	}
	hole := wireLen - len(data)
	if hole > 0 {
		cnt.Truncated++
	}
	atStart := true
	if s.seqOK {
		d := int32(seq - s.next)
		end := int32(seq + uint32(wireLen) - s.next)
		switch {
		case d < 0 && end <= 0 && -int64(d) > maxBehind:
			cnt.SeqJumps++
			c.lose(s)
			s.seqOK, s.probe = false, s.probe[:0]
		case d < 0 && end <= 0:
			cnt.Retransmits++
			return
		case d < 0:
			cnt.Overlaps++
			trim := int(-int64(d))
			if trim <= len(data) {
				data = data[trim:]
			} else {
				hole -= trim - len(data)
				data = nil
			}
			atStart = false
		case d > 0:
			cnt.Gaps++
			cnt.GapBytes += uint64(d)
			c.skip(s, uint64(d))
		}
	}
	s.seqOK = true
	s.next = seq + uint32(wireLen)
	if len(data) > 0 {
		c.feed(s, data, t, atStart)
	}
	if hole > 0 {
		cnt.TruncatedBytes += uint64(hole)
		c.skip(s, uint64(hole))
	}
}

// End reports everything the connection still holds and leaves it empty: requests without a
// response are partial with status 0. closed says the connection is known to have ended (a
// FlowEnd or an idle timeout), which is what ends a response delimited by the connection's
// close; otherwise (an eviction) such a response is partial too.
func (c *Conn) End(closed bool, out []Transaction) []Transaction {
	c.out = out
	if closed && c.srv.st == stUntilClose {
		c.endMessage(&c.srv)
	}
	c.abandon(&c.cli)
	c.abandon(&c.srv)
	for c.q.n > 0 {
		p := c.q.at(0)
		if !p.reqDone || !p.respDone {
			p.tx.Partial = true
		}
		c.report(p)
		c.q.pop()
	}
	c.answered = 0
	for _, s := range []*side{&c.cli, &c.srv} {
		s.st, s.seqOK, s.probe = stLost, false, s.probe[:0]
	}
	out, c.out = c.out, nil
	return out
}

// feed runs a side's known bytes through its state machine. atStart says b begins where the
// sample began, which is the only place a side that lost its place may start again.
func (c *Conn) feed(s *side, b []byte, t time.Time, atStart bool) {
	cnt := &c.sh.Counters
	for len(b) > 0 {
		switch s.st {
		case stTunnel:
			return
		case stAwaitTunnel:
			// The client spoke before the CONNECT was answered (a TLS ClientHello sent
			// optimistically, say). That is not HTTP; if the CONNECT fails, the next request
			// is found the way a lost side finds it.
			s.st = stLost
			continue
		case stLost:
			if len(s.probe) > 0 {
				// The bytes continue the probe (any gap would have dropped it).
				joined := append(s.probe, b[:min(len(b), maxProbe)]...)
				if s.begins(joined) {
					probe := append([]byte(nil), s.probe...)
					s.probe = s.probe[:0]
					c.resync(s)
					c.feed(s, probe, s.probeTime, false)
					continue
				}
				if len(b) < maxProbe && s.mayBegin(joined) {
					s.probe = joined
					return
				}
				cnt.SkippedBytes += uint64(len(s.probe))
				s.probe = s.probe[:0]
			}
			if atStart && s.begins(b) {
				c.resync(s)
				continue
			}
			if atStart && len(b) < maxProbe && s.mayBegin(b) {
				s.probe, s.probeTime = append(s.probe[:0], b...), t
				return
			}
			cnt.SkippedBytes += uint64(len(b))
			return
		case stBody, stChunkData:
			n := min(uint64(len(b)), s.remain)
			s.remain -= n
			s.body += n
			b = b[n:]
			if s.remain == 0 {
				if s.st == stBody {
					c.endMessage(s)
				} else {
					s.st, s.sawCR = stChunkEnd, false
				}
			}
		case stUntilClose:
			s.body += uint64(len(b))
			return
		case stChunkEnd:
			c.chunkEnd(s, b[0])
			b = b[1:]
		default:
			// stStart, stHeaders, stChunkSize, stTrailers: line by line, staying in this loop
			// while lines follow one another.
			for len(b) > 0 && (s.st == stHeaders || s.st == stStart || s.st == stChunkSize || s.st == stTrailers) {
				if s.st == stStart && len(s.line) == 0 {
					s.begin = t
				}
				line, rest, bareLF, ok := c.readLine(s, b)
				if !ok {
					return
				}
				b = rest
				// The line is complete: the carried-over part is no longer an unfinished
				// line (which abandon would read as a start line cut short). line keeps its
				// bytes.
				s.line = s.line[:0]
				c.handleLine(s, line, bareLF)
			}
		}
		atStart = false
	}
}

// maxProbe bounds a probe: the longest start of a start line that does not yet show whether it
// is one (a method of maxMethod characters, or "HTTP/1.1 20"), with room for empty lines.
const maxProbe = 64

// begins reports whether b begins with a start line of the side's kind, and mayBegin whether all
// of b could be the beginning of one.
func (s *side) begins(b []byte) bool {
	if s.client {
		return beginsRequest(b)
	}
	return beginsStatus(b)
}

func (s *side) mayBegin(b []byte) bool {
	if s.client {
		return mayBeginRequest(b)
	}
	return mayBeginStatus(b)
}

// resync puts a lost side back in step, at the start of a message.
func (c *Conn) resync(s *side) {
	c.sh.Counters.Resyncs++
	s.resetMessage()
	s.st = stStart
	s.tentative = s.client
}

// readLine takes the next complete line from b, joined to the start of it carried over from
// earlier samples; without a line end in b it keeps b for the next sample and reports !ok. The
// line is returned without its CRLF or LF; bareLF says which one ended it. Lines past the
// header bound make the message partial.
func (c *Conn) readLine(s *side, b []byte) (line, rest []byte, bareLF, ok bool) {
	limit := c.sh.MaxHeaderBytes
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if s.lineN+len(s.line)+len(b) > limit {
			c.overflow(s, b)
			return nil, nil, false, false
		}
		s.line = append(s.line, b...)
		return nil, nil, false, false
	}
	if s.lineN+len(s.line)+i+1 > limit {
		c.overflow(s, b[:i])
		return nil, nil, false, false
	}
	if len(s.line) > 0 {
		s.line = append(s.line, b[:i]...)
		line = s.line
	} else {
		line = b[:i]
	}
	s.lineN += len(line) + 1
	bareLF = true
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line, bareLF = line[:n-1], false
	}
	return line, b[i+1:], bareLF, true
}

// overflow gives up on a header block (or line) longer than the bound. A start line cut by the
// bound still says what it can (see abandon), so the part of it that fits is kept for that.
func (c *Conn) overflow(s *side, b []byte) {
	c.sh.Counters.HeaderOverflow++
	if s.st == stStart {
		if room := c.sh.MaxHeaderBytes - len(s.line); room > 0 {
			s.line = append(s.line, b[:min(room, len(b))]...)
		}
	}
	c.lose(s)
}

func (c *Conn) handleLine(s *side, line []byte, bareLF bool) {
	switch s.st {
	case stStart:
		if len(line) == 0 {
			s.lineN = 0
			return
		}
		if s.client {
			c.requestLine(s, line, true)
		} else {
			c.statusLine(s, line)
		}
	case stHeaders:
		if len(line) == 0 {
			if s.client {
				c.endRequestHeaders(s)
			} else {
				c.endResponseHeaders(s)
			}
			return
		}
		c.header(s, line)
	case stChunkSize:
		n, ok := parseChunkSize(line)
		switch {
		case !ok:
			c.malformed(s, ErrChunkSize)
		case bareLF:
			c.flag(s, FlagBareLFChunkSize)
			c.lose(s)
		case n == 0:
			s.st, s.lineN = stTrailers, 0
		default:
			s.st, s.remain, s.lineN = stChunkData, n, 0
		}
	case stTrailers:
		// Trailer fields are not looked at: nothing reported comes from them.
		if len(line) == 0 {
			c.endMessage(s)
		}
	}
}

// requestLine starts a request. complete is false for a line cut short (by a gap, a sample's
// end or the header bound), which is read for what it says and reported partial.
func (c *Conn) requestLine(s *side, line []byte, complete bool) {
	cnt := &c.sh.Counters
	rl, ok := parseRequestLine(line)
	if !complete && (!ok || s.tentative && !plausible(rl)) {
		// A cut line that does not even hold a method says nothing, and one found while
		// looking for a message start is believed only if it looks like a request line.
		if ok {
			cnt.FalseStarts++
		}
		return
	}
	if !ok {
		s.st = stLost
		if s.tentative {
			cnt.FalseStarts++
			return
		}
		// The side was in step with the stream, so a request began here: a malformed one. It
		// is queued so that the server's answer (a 400, typically) pairs with it.
		cnt.Requests++
		cnt.Malformed++
		cnt.Desyncs++
		p := c.push(s.begin)
		p.tx.Error, p.tx.Partial, p.reqDone = ErrRequestLine, true, true
		return
	}
	if complete && string(rl.method) == "PRI" && string(rl.version) == "2.0" && string(rl.target) == "*" {
		// The HTTP/2 connection preface: the rest of the connection is HTTP/2 frames.
		cnt.HTTP2Preface++
		c.tunnel()
		return
	}
	cnt.Requests++
	s.plausible = plausible(rl)
	p := c.push(s.begin)
	p.tx.Method = c.str(recentMethod, rl.method)
	path, host := splitTarget(rl.target, complete)
	if len(path) == 1 && path[0] == '/' {
		p.tx.Path = "/"
	} else {
		p.tx.Path = string(path)
	}
	p.tx.Host = c.str(recentHost, host)
	p.tx.Version = c.str(recentVersion, rl.version)
	p.head = p.tx.Method == "HEAD"
	p.connect = p.tx.Method == "CONNECT"
	if !complete {
		p.tx.Partial, p.reqDone = true, true
		return
	}
	s.inMsg = true
	s.st = stHeaders
}

// statusLine starts a response and pairs it with the oldest unanswered request.
func (c *Conn) statusLine(s *side, line []byte) {
	cnt := &c.sh.Counters
	sl, ok := parseStatusLine(line)
	if !ok {
		cnt.Malformed++
		cnt.Desyncs++
		if c.answered < c.q.n {
			p := c.q.at(c.answered)
			p.tx.Error, p.tx.Partial, p.respDone = ErrStatusLine, true, true
			c.answered++
			c.markUncertain()
			c.emit()
		}
		s.st = stLost
		return
	}
	s.inMsg, s.st, s.status = true, stHeaders, sl.status
	s.interim = sl.status < 200 && sl.status != 101
	if c.answered >= c.q.n || s.begin.Before(c.q.at(c.answered).tx.RequestTime) {
		// No request waits, or the oldest one began after this response did (its status line
		// was split over samples while the request came): it answers a request not seen.
		s.orphan = true
		cnt.Orphans++
		return
	}
	if s.interim {
		cnt.Interim++
		return
	}
	cnt.Responses++
	p := c.q.at(c.answered)
	p.tx.Status, p.tx.ResponseTime = sl.status, s.begin
	if p.connect && (sl.status < 200 || sl.status >= 300) && c.cli.st == stAwaitTunnel {
		// The CONNECT failed and the client has not spoken since: its next request, if any,
		// begins at its next byte.
		c.cli.st = stStart
	}
}

// plausible reports whether a request line read while looking for a message start is more
// likely a request than body text that begins with a word and a space: it has an HTTP version,
// or an upper-case method and a target of a request's shape ("/…", "*" or "scheme://…").
func plausible(rl requestLine) bool {
	if rl.version != nil {
		return true
	}
	for _, c := range rl.method {
		if !('A' <= c && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	t := rl.target
	return len(t) > 0 && (t[0] == '/' || t[0] == '*' || hasScheme(t))
}

// req is the request the client side is reading, resp the final response the server side is
// reading; nil when there is none to report into.
func (c *Conn) req() *pending {
	if c.cli.inMsg && c.q.n > 0 {
		return c.q.at(c.q.n - 1)
	}
	return nil
}

func (c *Conn) resp() *pending {
	if c.srv.inMsg && !c.srv.orphan && !c.srv.interim && c.answered < c.q.n {
		return c.q.at(c.answered)
	}
	return nil
}

func (c *Conn) current(s *side) *pending {
	if s.client {
		return c.req()
	}
	return c.resp()
}

// header reads one header line. Only the fields in hdr are looked at; nothing is kept of the
// others.
func (c *Conn) header(s *side, line []byte) {
	if isOWS(line[0]) {
		c.fold(s, line)
		return
	}
	// One pass finds the colon and checks that the name before it is a token.
	i := 0
	for i < len(line) && tchar[line[i]] {
		i++
	}
	name := line[:i]
	if i == len(line) || line[i] != ':' || i == 0 {
		// RFC 9112 §5.1: whitespace before the colon makes a request invalid, while a proxy
		// removes it from a response.
		colon := bytes.IndexByte(line, ':')
		if s.client || colon <= 0 {
			c.malformed(s, ErrHeaderLine)
			return
		}
		if name = trimOWS(line[:colon]); !isToken(name) {
			c.malformed(s, ErrHeaderLine)
			return
		}
		i = colon
	}
	if s.last = classify(name); s.last == hdrOther {
		return
	}
	value := trimOWS(line[i+1:])
	p := c.current(s)
	switch s.last {
	case hdrHost:
		if !s.client || p == nil {
			break
		}
		if s.hostSeen {
			c.flag(s, FlagMultipleHost)
			break
		}
		s.hostSeen = true
		p.tx.Host = c.str(recentHost, hostHeader(value))
	case hdrUserAgent:
		if s.client && p != nil {
			p.tx.UserAgent = c.str(recentUserAgent, value)
		}
	case hdrContentType:
		if p == nil {
			break
		}
		if s.client {
			p.reqCT = c.str(recentRequestType, value)
		} else {
			p.tx.ContentType = c.str(recentResponseType, value)
		}
	case hdrContentLength:
		s.contentLength(value)
	case hdrTransferEncoding:
		s.transferEncoding(value)
	}
}

// fold handles obs-fold, a header line continued on the next one (RFC 9112 §5.2). A continued
// Content-Length or Transfer-Encoding is a framing ambiguity. A continued Host is dropped: its
// first line may have held user-info whose '@' only comes now. User-Agent and Content-Type are
// unfolded with a space, as the RFC says a recipient may. Any other line, or whitespace right
// after the start line, is passed over.
func (c *Conn) fold(s *side, line []byte) {
	cont := trimOWS(line)
	p := c.current(s)
	switch s.last {
	case hdrContentLength, hdrTransferEncoding:
		s.foldedFraming = true
	case hdrHost:
		if p != nil && s.client {
			p.tx.Host = ""
		}
	case hdrUserAgent:
		if p != nil && s.client && len(cont) > 0 {
			p.tx.UserAgent = p.tx.UserAgent + " " + string(cont)
		}
	case hdrContentType:
		if p != nil && len(cont) > 0 {
			if s.client {
				p.reqCT = p.reqCT + " " + string(cont)
			} else {
				p.tx.ContentType = p.tx.ContentType + " " + string(cont)
			}
		}
	}
}

// framingFlags are the ambiguities in a message's framing headers. A request's
// Transfer-Encoding must end in chunked; a response's may not, and is then read until close.
func (s *side) framingFlags() Flags {
	var f Flags
	if s.te && (s.clSeen || s.clBad) {
		f |= FlagCLAndChunked
	}
	if s.clBad {
		f |= FlagInvalidCL
	}
	if s.clConflict {
		f |= FlagConflictingCL
	}
	if s.chunkedTwice || s.client && s.te && !s.chunkedLast {
		f |= FlagInvalidTE
	}
	if s.foldedFraming {
		f |= FlagObsFoldFraming
	}
	return f
}

func (c *Conn) endRequestHeaders(s *side) {
	s.tentative = false
	s.lineN = 0
	if f := s.framingFlags(); f != 0 {
		c.flag(s, f)
		c.lose(s)
		return
	}
	switch {
	case s.te:
		s.st = stChunkSize
	case s.clSeen && s.cl > 0:
		s.st, s.remain = stBody, uint64(s.cl)
	default:
		c.endMessage(s)
	}
}

func (c *Conn) endResponseHeaders(s *side) {
	cnt := &c.sh.Counters
	s.lineN = 0
	var head, connect bool
	if !s.orphan && c.answered < c.q.n {
		p := c.q.at(c.answered)
		head, connect = p.head, p.connect
	}
	switch {
	case s.status == 101:
		// Switching Protocols answers the request and ends HTTP/1 on the connection.
		cnt.Upgrades++
		c.finishResponse(s)
		c.tunnel()
	case s.interim || head || s.status == 204 || s.status == 304:
		c.endMessage(s)
	case connect && s.status >= 200 && s.status < 300:
		cnt.Tunnels++
		c.finishResponse(s)
		c.tunnel()
	default:
		if f := s.framingFlags(); f != 0 {
			c.flag(s, f)
			c.lose(s)
			return
		}
		switch {
		case s.te && s.chunkedLast:
			s.st = stChunkSize
		case s.te:
			s.st = stUntilClose
		case s.clSeen && s.cl > 0:
			s.st, s.remain = stBody, uint64(s.cl)
		case s.clSeen:
			c.endMessage(s)
		default:
			s.st = stUntilClose
		}
	}
}

// chunkEnd reads the CRLF after chunk data one byte at a time, since it may straddle samples.
func (c *Conn) chunkEnd(s *side, b byte) {
	switch {
	case !s.sawCR && b == '\r':
		s.sawCR = true
	case b == '\n' && s.sawCR:
		s.st, s.sawCR, s.lineN = stChunkSize, false, 0
	case b == '\n':
		c.flag(s, FlagBareLFChunkEnd)
		c.lose(s)
	default:
		c.malformed(s, ErrChunkEnd)
	}
}

// endMessage is the clean end of the message a side was reading.
func (c *Conn) endMessage(s *side) {
	if s.client {
		if p := c.req(); p != nil {
			p.tx.RequestBytes, p.reqDone = s.body, true
			connect := p.connect
			s.resetMessage()
			s.st = stStart
			if connect {
				s.st = stAwaitTunnel
			}
		} else {
			s.resetMessage()
			s.st = stStart
		}
	} else {
		c.finishResponse(s)
		s.resetMessage()
		s.st = stStart
	}
	c.emit()
}

// finishResponse records the end of a final response into its request.
func (c *Conn) finishResponse(s *side) {
	if p := c.resp(); p != nil {
		p.tx.ResponseBytes, p.respDone = s.body, true
		c.answered++
	}
}

// tunnel ends HTTP/1 parsing of the connection. The answered request is reported as it is; a
// request the client was still sending is partial.
func (c *Conn) tunnel() {
	c.abandon(&c.cli)
	c.srv.resetMessage()
	c.cli.st, c.srv.st = stTunnel, stTunnel
	c.emit()
}

// malformed reports the message a side was reading as malformed and loses the side's place.
func (c *Conn) malformed(s *side, why string) {
	if s.client && s.tentative && !s.plausible {
		// Not a malformed request but body bytes that began with a word and a space: abandon
		// drops it and counts a false start.
		c.lose(s)
		return
	}
	c.sh.Counters.Malformed++
	if p := c.current(s); p != nil && p.tx.Error == "" {
		p.tx.Error = why
	}
	c.lose(s)
}

// flag sets flags on the message a side is reading, and counts them.
func (c *Conn) flag(s *side, f Flags) {
	for i := 0; i < flagCount; i++ {
		if f&(1<<i) != 0 {
			c.sh.Counters.Flags[i]++
		}
	}
	if p := c.current(s); p != nil {
		p.tx.Flags |= f
	}
}

// skip accounts for n bytes of a side that were not captured (a gap or a sample cut short).
func (c *Conn) skip(s *side, n uint64) {
	for n > 0 {
		switch s.st {
		case stLost:
			s.probe = s.probe[:0]
			return
		case stTunnel:
			return
		case stAwaitTunnel:
			s.st = stLost
			return
		case stUntilClose:
			s.body += n
			return
		case stBody, stChunkData:
			k := min(n, s.remain)
			s.remain -= k
			s.body += k
			n -= k
			if s.remain == 0 {
				if s.st == stBody {
					c.endMessage(s)
				} else {
					s.st, s.sawCR = stChunkEnd, false
				}
			}
		default:
			// The bytes were framing (a start line, headers, a chunk-size line) or may have
			// begun the next message: the side's place is lost.
			c.lose(s)
			return
		}
	}
}

// lose puts a side out of step with its stream: the message it was reading is reported
// partial, and it waits for a sample that begins with a start line.
func (c *Conn) lose(s *side) {
	if s.st == stLost || s.st == stTunnel {
		return
	}
	c.sh.Counters.Desyncs++
	c.abandon(s)
	if !s.client {
		c.markUncertain()
	}
	s.st = stLost
}

// markUncertain marks every unanswered request: the server side lost its place while they
// waited, so whole responses may have gone with it.
func (c *Conn) markUncertain() {
	for i := c.answered; i < c.q.n; i++ {
		c.q.at(i).uncertain = true
	}
}

// abandon ends the message a side was reading, as partial, leaving the side's state to the
// caller. A request found while looking for a message start whose request line is not
// plausible is dropped instead: it was more likely body bytes than a request.
func (c *Conn) abandon(s *side) {
	if s.st == stStart && len(s.line) > 0 && s.client && !s.inMsg {
		c.requestLine(s, s.line, false)
	}
	if s.inMsg {
		if s.client {
			if p := c.req(); p != nil {
				if s.tentative && !s.plausible {
					c.sh.Counters.FalseStarts++
					c.dropNewest()
				} else {
					p.tx.Partial, p.tx.RequestBytes, p.reqDone = true, s.body, true
				}
			}
		} else if p := c.resp(); p != nil {
			p.tx.Partial, p.tx.ResponseBytes, p.respDone = true, s.body, true
			c.answered++
		}
	}
	s.resetMessage()
	c.emit()
}

// dropNewest removes the newest request, unpairing a response that was paired with it.
func (c *Conn) dropNewest() {
	i := c.q.n - 1
	if i < c.answered {
		c.answered--
	} else if i == c.answered && c.srv.inMsg && !c.srv.interim {
		c.srv.orphan = true
	}
	c.q.popTail()
}

// push queues a new request. When MaxPending requests already wait, the oldest is reported
// without its response: so many newer requests mean its response is not coming (the server's
// side is not captured, or out of step).
func (c *Conn) push(t time.Time) *pending {
	for c.q.n > 0 && c.q.n >= max(c.sh.MaxPending, 1) {
		c.sh.Counters.PendingOverflow++
		p := c.q.at(0)
		p.tx.Partial = true
		if c.answered > 0 {
			c.answered--
		} else if c.srv.inMsg && !c.srv.interim {
			c.srv.orphan = true
		}
		c.report(p)
		c.q.pop()
	}
	p := c.q.push()
	p.tx.RequestTime = t
	return p
}

// emit reports the transactions at the front of the queue whose request and response have both
// ended, in order.
func (c *Conn) emit() {
	for c.q.n > 0 {
		p := c.q.at(0)
		if !p.reqDone || !p.respDone {
			return
		}
		c.report(p)
		c.q.pop()
		if c.answered > 0 {
			c.answered--
		}
	}
}

func (c *Conn) report(p *pending) {
	tx := p.tx
	if tx.ContentType == "" {
		tx.ContentType = p.reqCT
	}
	if p.uncertain {
		tx.Partial = true
	}
	c.sh.Counters.Transactions++
	if tx.Partial {
		c.sh.Counters.Partial++
	}
	c.out = append(c.out, tx)
}
