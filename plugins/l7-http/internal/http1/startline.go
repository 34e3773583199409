package http1

import "bytes"

// maxMethod is the longest method accepted. RFC 9110 sets no limit, but registered methods are
// at most 17 characters, and a bound keeps text that merely starts with a word from passing for
// a request line when a side looks for the next message (see beginsRequest).
const maxMethod = 32

// tchar marks RFC 9110's token characters.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

// requestLine is a request line split into its parts.
type requestLine struct {
	method, target []byte
	version        []byte // "1.1" for HTTP/1.1; nil when the line has no HTTP/x.y version
}

// parseRequestLine splits a request line (without its line end) the way tshark does, since
// tshark is the oracle the tests compare with: the method is everything up to the first space,
// the request-target everything after it up to the next space or the end of the line, and the
// version is what follows only if it is exactly HTTP/x.y. So "OPTIONS HTTP/1.1" asks for the
// target "HTTP/1.1" with no version, "OPTIONS  HTTP/1.1" (two spaces) for the empty target with
// version 1.1, and "OPTIONS" alone for the empty target. The method must be a token of at most
// maxMethod characters; nothing else is required, so odd lines are reported as they were sent.
func parseRequestLine(line []byte) (requestLine, bool) {
	var rl requestLine
	method, rest, spaced := cutByte2(line, ' ')
	if len(method) > maxMethod || !isToken(method) {
		return rl, false
	}
	rl.method = method
	if !spaced {
		return rl, true
	}
	target, after, spaced := cutByte2(rest, ' ')
	rl.target = target
	if spaced && isVersion(after) {
		rl.version = after[len("HTTP/"):]
	}
	return rl, true
}

// cutByte2 is bytes.Cut for one byte, with IndexByte's speed.
func cutByte2(b []byte, sep byte) (before, after []byte, found bool) {
	if i := bytes.IndexByte(b, sep); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

// isVersion reports whether b is exactly HTTP/DIGIT.DIGIT.
func isVersion(b []byte) bool {
	return len(b) == 8 && string(b[:5]) == "HTTP/" && isDigit(b[5]) && b[6] == '.' && isDigit(b[7])
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// beginsRequest reports whether a sample's data begins with something parseRequestLine accepts,
// after any empty lines: 1 to maxMethod token characters followed by a space or a line end. It
// decides where a side that lost its place (or joined a connection late) starts again.
func beginsRequest(b []byte) bool {
	b = skipEmptyLines(b)
	for i, c := range b {
		switch {
		case c == ' ' || c == '\r' || c == '\n':
			return i > 0
		case !tchar[c] || i == maxMethod:
			return false
		}
	}
	return false
}

// statusLine is a status line's parts.
type statusLine struct {
	version []byte // "1.1" for HTTP/1.1
	status  int
}

// parseStatusLine reads HTTP/x.y SP 3DIGIT, then a space or the end of the line; the reason
// phrase is not looked at.
func parseStatusLine(line []byte) (statusLine, bool) {
	if len(line) < 12 || !isVersion(line[:8]) || line[8] != ' ' ||
		!isDigit(line[9]) || !isDigit(line[10]) || !isDigit(line[11]) || line[9] == '0' {
		return statusLine{}, false
	}
	if len(line) > 12 && line[12] != ' ' && line[12] != '\t' {
		return statusLine{}, false
	}
	code := int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	return statusLine{version: line[5:8], status: code}, true
}

// beginsStatus reports whether a sample's data begins with HTTP/1.x and a status code, which is
// where a server side that lost its place starts again.
func beginsStatus(b []byte) bool {
	b = skipEmptyLines(b)
	return len(b) >= 12 && string(b[:7]) == "HTTP/1." && isDigit(b[7]) && b[8] == ' ' &&
		isDigit(b[9]) && isDigit(b[10]) && isDigit(b[11])
}

// mayBeginRequest reports whether all of b could be the beginning of what beginsRequest
// accepts: empty lines, then token characters only.
func mayBeginRequest(b []byte) bool {
	b = skipEmptyLines(b)
	if len(b) > maxMethod {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

// mayBeginStatus reports whether all of b could be the beginning of what beginsStatus accepts.
func mayBeginStatus(b []byte) bool {
	const pattern = "HTTP/1.# ###" // '#' is a digit
	b = skipEmptyLines(b)
	if len(b) >= len(pattern) {
		return false
	}
	for i, c := range b {
		if pattern[i] == '#' && !isDigit(c) || pattern[i] != '#' && c != pattern[i] {
			return false
		}
	}
	return true
}

// skipEmptyLines drops leading CRLF and LF: RFC 9112 asks a recipient to ignore empty lines
// before a request line (old clients send an extra CRLF after a body).
func skipEmptyLines(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	return b
}
