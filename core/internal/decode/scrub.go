package decode

import (
	"bytes"
	"regexp"
)

// httpStart matches the start of an HTTP/1.x message: a request line or a status line.
var httpStart = regexp.MustCompile(`\A(?:[!#$%&'*+.^_|~0-9A-Za-z-]{1,32} [^\r\n]*HTTP/1\.[0-9]|HTTP/1\.[0-9] [0-9]{3})`)

// userInfo matches the user-info of an absolute URI.
var userInfo = regexp.MustCompile(`://[^/@\s]*@`)

// ScrubFrame makes a flow event's L7 frame (the first payload bytes of a packet, sent when a
// subscription asks for frames) safe to leave the host. An HTTP message keeps its start line only,
// with URL user-info and the query string removed: its headers may carry credentials
// (Authorization, Cookie, API keys), which never leave the host, whatever the configuration. Other
// payloads are returned as they are.
func ScrubFrame(frame []byte) []byte {
	if !httpStart.Match(frame) {
		return frame
	}
	line := frame
	if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	line = userInfo.ReplaceAll(line, []byte("://"))
	if i := bytes.IndexByte(line, '?'); i >= 0 {
		end := bytes.IndexByte(line[i:], ' ')
		if end < 0 {
			line = line[:i]
		} else {
			line = append(append([]byte(nil), line[:i]...), line[i+end:]...)
		}
	}
	return append([]byte(nil), line...)
}
