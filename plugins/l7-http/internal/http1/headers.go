package http1

// hdr is a header field the parser looks at. Every other field, credentials included, is
// skipped without being copied anywhere.
type hdr uint8

const (
	hdrOther hdr = iota
	hdrHost
	hdrUserAgent
	hdrContentType
	hdrContentLength
	hdrTransferEncoding
)

// classify names a header field, ignoring letter case.
func classify(name []byte) hdr {
	switch len(name) {
	case 4:
		if equalFold(name, "host") {
			return hdrHost
		}
	case 10:
		if equalFold(name, "user-agent") {
			return hdrUserAgent
		}
	case 12:
		if equalFold(name, "content-type") {
			return hdrContentType
		}
	case 14:
		if equalFold(name, "content-length") {
			return hdrContentLength
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return hdrTransferEncoding
		}
	}
	return hdrOther
}

// equalFold compares b with lower, a lower-case word of letters and '-'. Setting bit 0x20 folds
// case exactly for letters: only 'C' and 'c' become 'c'. For '-' it also turns CR into '-', but
// b is a token (a header name) wherever lower holds a '-', and a token has no CR.
func equalFold(name []byte, lower string) bool {
	if len(name) != len(lower) {
		return false
	}
	for i, c := range name {
		if c|0x20 != lower[i] {
			return false
		}
	}
	return true
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

// trimOWS drops optional whitespace around a field value or list element.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// maxContentLength bounds a Content-Length to 18 decimal digits, so it fits an int64 without
// overflow checks; nothing real is near it.
const maxContentLengthDigits = 18

// contentLength reads one Content-Length field value into the side's framing state. RFC 9110
// allows a list of identical values ("42, 42", sent by some proxies that merge fields) and so
// does this; values that differ, here or across fields, conflict, and anything but digits is
// invalid.
func (s *side) contentLength(v []byte) {
	if len(v) == 0 {
		s.clBad = true
		return
	}
	for len(v) > 0 {
		var elem []byte
		elem, v = cutByte(v, ',')
		elem = trimOWS(elem)
		n, ok := parseDecimal(elem)
		switch {
		case !ok:
			s.clBad = true
		case s.clSeen && n != s.cl:
			s.clConflict = true
		default:
			s.clSeen, s.cl = true, n
		}
	}
}

func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > maxContentLengthDigits {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// transferEncoding reads one Transfer-Encoding field value: a list of codings, each possibly
// with parameters. What framing needs is whether chunked is the last coding and whether it
// appears more than once.
func (s *side) transferEncoding(v []byte) {
	for len(v) > 0 {
		var elem []byte
		elem, v = cutByte(v, ',')
		name, _ := cutByte(elem, ';')
		name = trimOWS(name)
		if len(name) == 0 {
			continue // RFC 9110 list syntax allows empty elements.
		}
		s.te = true
		chunked := equalFold(name, "chunked")
		if chunked && s.chunkedSeen {
			s.chunkedTwice = true
		}
		s.chunkedSeen = s.chunkedSeen || chunked
		s.chunkedLast = chunked
	}
}

func cutByte(b []byte, sep byte) (before, after []byte) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

// maxChunkSize bounds one chunk to 1 TiB: a larger size is taken for garbage rather than data,
// and the bound keeps body counters far from overflow.
const maxChunkSize = 1 << 40

// parseChunkSize reads a chunk-size line: hex digits, optional whitespace, then nothing or
// chunk extensions after ';' (which are not looked at).
func parseChunkSize(line []byte) (uint64, bool) {
	var n uint64
	i := 0
	for ; i < len(line) && isHex(line[i]); i++ {
		c := line[i] | 0x20
		d := uint64(c - '0')
		if c >= 'a' {
			d = uint64(c-'a') + 10
		}
		n = n<<4 | d
		if n > maxChunkSize {
			return 0, false
		}
	}
	if i == 0 {
		return 0, false
	}
	rest := line[i:]
	for len(rest) > 0 && isOWS(rest[0]) {
		rest = rest[1:]
	}
	if len(rest) > 0 && rest[0] != ';' {
		return 0, false
	}
	return n, true
}
