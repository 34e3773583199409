// Package dnswire parses DNS messages (RFC 1035) from the bytes a capture saw, which may be cut
// short or hostile.
//
// Parse reads the header, the question section and the answer section, turning names and
// answer data into presentation text; it then walks the authority and additional sections only
// to find the EDNS OPT record, whose extended RCODE changes the meaning of the header's. Every
// read is checked against the data. When the data ends early (a sample cut by the capture, the
// first fragment of a fragmented datagram) Parse keeps what it read and returns an error
// matching ErrTruncated, so the caller can report a prefix. Compression pointers may point
// anywhere in the message, as dnsmessage allows, but one name follows at most maxPointers of
// them and may not exceed 255 bytes: together these break loops and bound the work per name.
package dnswire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the size of the fixed header that starts every message.
const HeaderLen = 12

// Defaults for Parser's bounds.
const (
	DefaultMaxQuestions = 4
	DefaultMaxAnswers   = 32
)

const (
	// maxNameWire is RFC 1035's limit on a name's encoded length, terminating zero included.
	maxNameWire = 255
	// maxPointers bounds the compression pointers one name follows. An encoder never needs a
	// chain this long (each hop of a real chain adds a label), and dnsmessage stops at 10, so
	// every name dnsmessage reads, this parser reads too.
	maxPointers = 64
	// maxHexRData bounds the bytes shown of data printed in the generic form, so one large
	// record (a DNSKEY, a padded TXT) cannot make the text of an answer unbounded.
	maxHexRData = 64
	// nameCacheSize is how many decoded names Parse remembers by offset: answers usually
	// point at the question's name or at the previous answer's data.
	nameCacheSize = 8
)

// Errors Parse wraps in *Error; match them with errors.Is.
var (
	// ErrTruncated: the data ended before the message did (or before its counts say it does).
	ErrTruncated = errors.New("message ends early")
	// ErrPointerLoop: a name followed more compression pointers than any encoder writes.
	ErrPointerLoop = errors.New("too many compression pointers (a loop)")
	// ErrNameTooLong: a name is longer than 255 bytes on the wire.
	ErrNameTooLong = errors.New("name longer than 255 bytes")
	// ErrLabelType: a label length byte is over 63, that is one of the reserved label types.
	ErrLabelType = errors.New("label length over 63 (reserved label type)")
	// ErrRData: a record's data does not have the shape its type requires. The record's bounds
	// are still known, so parsing goes on; see Record.BadData.
	ErrRData = errors.New("record data does not fit its type")
)

// Error says where in the message parsing stopped or found a fault.
type Error struct {
	Section string // "header", "question", "answer", "authority" or "additional"
	Index   int    // the question's or record's position in its section, from 0
	Err     error
}

func (e *Error) Error() string {
	if e.Section == "header" {
		return "parsing DNS header: " + e.Err.Error()
	}
	return fmt.Sprintf("parsing DNS %s %d: %v", e.Section, e.Index, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Header is the fixed header.
type Header struct {
	ID                 uint16
	Response           bool // QR
	Opcode             uint8
	Authoritative      bool
	Truncated          bool // TC: the sender cut the message to fit; a client retries over TCP
	RecursionDesired   bool
	RecursionAvailable bool
	AuthenticData      bool
	CheckingDisabled   bool
	RCode              uint8 // the header's four bits; Message.RCode adds the EDNS extension
	QDCount            uint16
	ANCount            uint16
	NSCount            uint16
	ARCount            uint16
}

// Question is one entry of the question section.
type Question struct {
	Name  string // presentation form, no trailing dot; the root is "."
	Type  uint16
	Class uint16
}

// Record is one answer record.
type Record struct {
	Name  string
	Type  uint16
	Class uint16
	TTL   uint32
	// Data is the record data as text: an address in canonical form, a name without its
	// trailing dot, "10 mx.example.com" for MX, quoted strings for TXT, and for other types the
	// type's mnemonic followed by RFC 3597's generic form, `HINFO \# 5 0361626300`.
	Data string
	// BadData reports data that did not fit its type (an A record of five bytes, a name running
	// past the record's end); Data then holds the generic form.
	BadData bool
}

// Message is what Parse read. Parse reuses its slices, so a caller that keeps a Message's
// contents past the next Parse into it copies them.
type Message struct {
	Header    Header
	Questions []Question // at most Parser.MaxQuestions
	Answers   []Record   // at most Parser.MaxAnswers
	// QuestionsSeen and AnswersSeen count the entries whose bounds were found, kept or not:
	// fewer than the header's counts when the data ended early.
	QuestionsSeen int
	AnswersSeen   int
	// EDNS is set when an OPT record was found; ExtRCode is then the upper eight bits of the
	// twelve-bit response code it carries.
	EDNS     bool
	ExtRCode uint8
}

// RCode is the response code: the header's four bits, extended by the OPT record if any.
func (m *Message) RCode() uint16 {
	return uint16(m.ExtRCode)<<4 | uint16(m.Header.RCode)
}

func (m *Message) reset() {
	m.Header = Header{}
	m.Questions = m.Questions[:0]
	m.Answers = m.Answers[:0]
	m.QuestionsSeen, m.AnswersSeen = 0, 0
	m.EDNS, m.ExtRCode = false, 0
}

// Parser parses messages. It keeps scratch space between calls, so one Parser serves one
// goroutine; its zero value uses the default bounds.
type Parser struct {
	// MaxQuestions and MaxAnswers bound what Parse keeps; entries past them are checked and
	// counted but not turned into text.
	MaxQuestions int
	MaxAnswers   int

	text  []byte
	names [nameCacheSize]cachedName
	nname int
}

// cachedName is a name already turned into text in the current message, by the offset it
// starts at, with the pointers followed to read it.
type cachedName struct {
	off  int
	hops int
	s    string
}

// Parse parses a message, a convenience for callers that parse one message now and then.
func Parse(msg []byte) (Message, error) {
	var p Parser
	var m Message
	err := p.Parse(msg, &m)
	return m, err
}

// Parse reads msg into m. The error is nil, or an *Error: ErrTruncated when the data ended
// early, another fault that stopped parsing, or ErrRData for the first answer whose data did not
// fit its type (parsing went on past it). Whatever the error, m holds what was read before it.
func (p *Parser) Parse(msg []byte, m *Message) error {
	m.reset()
	p.nname = 0
	maxQ, maxA := p.MaxQuestions, p.MaxAnswers
	if maxQ <= 0 {
		maxQ = DefaultMaxQuestions
	}
	if maxA <= 0 {
		maxA = DefaultMaxAnswers
	}
	if len(msg) < HeaderLen {
		return &Error{Section: "header", Err: ErrTruncated}
	}
	m.Header = parseHeader(msg)
	h := &m.Header
	off := HeaderLen

	for i := range int(h.QDCount) {
		var q Question
		var next int
		var err error
		if i < maxQ {
			q.Name, next, err = p.name(msg, off)
		} else {
			next, err = skipName(msg, off)
		}
		if err == nil && next+4 > len(msg) {
			err = ErrTruncated
		}
		if err != nil {
			return &Error{Section: "question", Index: i, Err: err}
		}
		if i < maxQ {
			q.Type = binary.BigEndian.Uint16(msg[next:])
			q.Class = binary.BigEndian.Uint16(msg[next+2:])
			m.Questions = append(m.Questions, q)
		}
		m.QuestionsSeen++
		off = next + 4
	}

	var soft error
	for i := range int(h.ANCount) {
		var r Record
		var next int
		var err error
		keep := i < maxA
		if keep {
			r.Name, next, err = p.name(msg, off)
		} else {
			next, err = skipName(msg, off)
		}
		if err == nil && next+10 > len(msg) {
			err = ErrTruncated
		}
		if err != nil {
			return &Error{Section: "answer", Index: i, Err: err}
		}
		r.Type = binary.BigEndian.Uint16(msg[next:])
		r.Class = binary.BigEndian.Uint16(msg[next+2:])
		r.TTL = binary.BigEndian.Uint32(msg[next+4:])
		start := next + 10
		end := start + int(binary.BigEndian.Uint16(msg[next+8:]))
		if end > len(msg) {
			return &Error{Section: "answer", Index: i, Err: ErrTruncated}
		}
		if keep {
			if err := p.rdata(msg, start, end, &r); err != nil && soft == nil {
				soft = &Error{Section: "answer", Index: i, Err: err}
			}
			m.Answers = append(m.Answers, r)
		}
		m.AnswersSeen++
		off = end
	}

	for i := range int(h.NSCount) {
		next, _, _, err := skipRecord(msg, off)
		if err != nil {
			return &Error{Section: "authority", Index: i, Err: err}
		}
		off = next
	}
	for i := range int(h.ARCount) {
		next, typ, ttl, err := skipRecord(msg, off)
		if err != nil {
			return &Error{Section: "additional", Index: i, Err: err}
		}
		// RFC 6891 allows one OPT record; should a message carry more, the first one counts.
		if typ == TypeOPT && !m.EDNS {
			m.EDNS, m.ExtRCode = true, uint8(ttl>>24)
		}
		off = next
	}
	return soft
}

func parseHeader(msg []byte) Header {
	flags := binary.BigEndian.Uint16(msg[2:])
	return Header{
		ID:                 binary.BigEndian.Uint16(msg[0:]),
		Response:           flags&0x8000 != 0,
		Opcode:             uint8(flags>>11) & 0xF,
		Authoritative:      flags&0x0400 != 0,
		Truncated:          flags&0x0200 != 0,
		RecursionDesired:   flags&0x0100 != 0,
		RecursionAvailable: flags&0x0080 != 0,
		AuthenticData:      flags&0x0020 != 0,
		CheckingDisabled:   flags&0x0010 != 0,
		RCode:              uint8(flags & 0xF),
		QDCount:            binary.BigEndian.Uint16(msg[4:]),
		ANCount:            binary.BigEndian.Uint16(msg[6:]),
		NSCount:            binary.BigEndian.Uint16(msg[8:]),
		ARCount:            binary.BigEndian.Uint16(msg[10:]),
	}
}

// PlausibleHeader reports whether the first bytes of b could start a DNS message of n bytes:
// a known opcode, the reserved Z bit clear, at most one question, and counts that fit in n
// bytes (a question takes at least 5, a record at least 11). A stream reader uses it to find a
// message boundary again after losing one.
func PlausibleHeader(b []byte, n int) bool {
	if len(b) < HeaderLen || n < HeaderLen {
		return false
	}
	h := parseHeader(b)
	switch h.Opcode {
	case 0, 1, 2, 4, 5, 6:
	default:
		return false
	}
	if binary.BigEndian.Uint16(b[2:])&0x0040 != 0 || h.QDCount > 1 {
		return false
	}
	return 5*int(h.QDCount)+11*(int(h.ANCount)+int(h.NSCount)+int(h.ARCount)) <= n-HeaderLen
}

// skipRecord finds the end of the record at off without reading its owner name or data, and
// returns its type and TTL (an OPT record keeps flags in its TTL).
func skipRecord(msg []byte, off int) (next int, typ uint16, ttl uint32, err error) {
	next, err = skipName(msg, off)
	if err != nil {
		return 0, 0, 0, err
	}
	if next+10 > len(msg) {
		return 0, 0, 0, ErrTruncated
	}
	typ = binary.BigEndian.Uint16(msg[next:])
	ttl = binary.BigEndian.Uint32(msg[next+4:])
	end := next + 10 + int(binary.BigEndian.Uint16(msg[next+8:]))
	if end > len(msg) {
		return 0, 0, 0, ErrTruncated
	}
	return end, typ, ttl, nil
}
