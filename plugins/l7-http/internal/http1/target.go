package http1

import "bytes"

// Credentials never leave the parser. A request-target can carry them as user-info
// ("http://user:pass@host/p"), and so can a Host header written by a careless client; both are
// cut here, before anything is kept. Where the text is too damaged to tell user-info from a host
// or a path (a password containing '/', a line cut short inside the authority), the uncertain
// part is dropped rather than reported.

// splitTarget returns the path to report for a request-target and the host its authority names
// (nil when it names none). complete is false when the request line was cut short, so the end of
// the target was not seen.
//
//   - origin-form "/p?q" and asterisk-form "*" are reported as they are;
//   - absolute-form "scheme://user:pass@host:port/p?q" gives the path "/p?q" and the host
//     "host:port"; an empty path is "/";
//   - a target beginning with "//" is read as an authority as well;
//   - any other target (authority-form "host:443" for CONNECT, or the odd "HTTP/1.1") is
//     reported as it is, except that anything up to an '@' before its first '/' is cut.
func splitTarget(t []byte, complete bool) (path, host []byte) {
	var rest []byte
	switch {
	case hasScheme(t):
		rest = t[bytes.Index(t, []byte("://"))+3:]
	case len(t) >= 2 && t[0] == '/' && t[1] == '/':
		rest = t[2:]
	default:
		if len(t) > 0 && t[0] != '/' {
			slash := bytes.IndexByte(t, '/')
			if slash < 0 {
				slash = len(t)
			}
			if at := bytes.LastIndexByte(t[:slash], '@'); at >= 0 {
				return t[at+1:], nil
			}
		}
		return t, nil
	}
	end := authorityEnd(rest)
	if end == len(rest) && !complete {
		// The line ended inside the authority: an '@' may have been about to come.
		return nil, nil
	}
	auth, tail := rest[:end], rest[end:]
	hostport := auth
	if at := bytes.LastIndexByte(auth, '@'); at >= 0 {
		hostport = auth[at+1:]
	}
	if !validHostPort(hostport) {
		// "user:pa/ss@host/p": the authority ended at a '/' inside the password. Look for the
		// user-info's '@' in what was taken for the path, before any query.
		q := len(tail)
		if i := bytes.IndexAny(tail, "?#"); i >= 0 {
			q = i
		}
		at := bytes.LastIndexByte(tail[:q], '@')
		if at < 0 {
			// No user-info anywhere: the authority is just malformed.
			return withRoot(tail), nil
		}
		after := tail[at+1:]
		end = authorityEnd(after)
		if end == len(after) && !complete {
			return nil, nil
		}
		hostport, tail = after[:end], after[end:]
		if !validHostPort(hostport) {
			return withRoot(tail), nil
		}
	}
	if len(hostport) == 0 {
		hostport = nil
	}
	return withRoot(tail), hostport
}

var root = []byte{'/'}

// withRoot gives an absolute-form URI's path: "/" when it is empty, "/?q" when only a query
// follows the authority.
func withRoot(p []byte) []byte {
	if len(p) == 0 {
		return root
	}
	if p[0] != '/' {
		// Only "?..." or "#..." can follow an authority here.
		out := make([]byte, 0, len(p)+1)
		return append(append(out, '/'), p...)
	}
	return p
}

// hasScheme reports whether t begins with scheme "://", scheme = ALPHA *(ALPHA / DIGIT / "+" /
// "-" / ".").
func hasScheme(t []byte) bool {
	for i, c := range t {
		switch {
		case 'a' <= c|0x20 && c|0x20 <= 'z':
		case i > 0 && (isDigit(c) || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			return len(t) >= i+3 && t[i+1] == '/' && t[i+2] == '/'
		default:
			return false
		}
	}
	return false
}

// authorityEnd is where an authority ends: the first '/', '?' or '#', else the end.
func authorityEnd(b []byte) int {
	for i, c := range b {
		if c == '/' || c == '?' || c == '#' {
			return i
		}
	}
	return len(b)
}

// validHostPort reports whether b is host [":" port] with host an IP literal in brackets or a
// reg-name (unreserved, sub-delims and %-escapes) and port digits. User-info has the same
// characters plus ':' and '@', so a valid host:port cannot be a remnant of a password with more
// than one ':' or a non-numeric "port".
func validHostPort(b []byte) bool {
	host, port := b, []byte(nil)
	if len(b) > 0 && b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 {
			return false
		}
		host, port = b[1:end], b[end+1:]
		for _, c := range host {
			if !(isHex(c) || c == ':' || c == '.' || c == '%' || c == 'v' || c == 'V') {
				return false
			}
		}
		if len(port) > 0 {
			if port[0] != ':' {
				return false
			}
			port = port[1:]
		}
	} else {
		if i := bytes.IndexByte(b, ':'); i >= 0 {
			host, port = b[:i], b[i+1:]
		}
		for _, c := range host {
			if !regName[c] {
				return false
			}
		}
	}
	for _, c := range port {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'f' }

// regName marks the characters of RFC 3986's reg-name.
var regName = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=%" {
		t[c] = true
	}
	return t
}()

// hostHeader cuts user-info from a Host header's value ("user:pass@host" → "host").
func hostHeader(v []byte) []byte {
	if at := bytes.LastIndexByte(v, '@'); at >= 0 {
		return v[at+1:]
	}
	return v
}
