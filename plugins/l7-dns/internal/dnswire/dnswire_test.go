package dnswire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func name(s string) dnsmessage.Name { return dnsmessage.MustNewName(s) }

func rh(n string, typ dnsmessage.Type) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: name(n), Type: typ, Class: dnsmessage.ClassINET, TTL: 300}
}

func response(q string, typ dnsmessage.Type, answers ...dnsmessage.Resource) dnsmessage.Message {
	return dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 0xbeef, Response: true, RecursionDesired: true, RecursionAvailable: true},
		Questions: []dnsmessage.Question{{Name: name(q), Type: typ, Class: dnsmessage.ClassINET}},
		Answers:   answers,
	}
}

// typeCases has one answer of every type the parser turns into text, and two it prints in the
// generic form. want is written out by hand; the test also derives it from dnsmessage.
var typeCases = []struct {
	name string
	typ  dnsmessage.Type
	body dnsmessage.ResourceBody
	want string
}{
	{"A", dnsmessage.TypeA, &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}, "192.0.2.1"},
	{"AAAA", dnsmessage.TypeAAAA, &dnsmessage.AAAAResource{AAAA: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}}, "2001:db8::1"},
	{"AAAA v4-mapped", dnsmessage.TypeAAAA,
		&dnsmessage.AAAAResource{AAAA: [16]byte{10: 0xff, 11: 0xff, 12: 192, 13: 0, 14: 2, 15: 1}}, "::ffff:192.0.2.1"},
	{"CNAME", dnsmessage.TypeCNAME, &dnsmessage.CNAMEResource{CNAME: name("Target.Example.com.")}, "Target.Example.com"},
	{"NS", dnsmessage.TypeNS, &dnsmessage.NSResource{NS: name("ns1.example.com.")}, "ns1.example.com"},
	{"PTR", dnsmessage.TypePTR, &dnsmessage.PTRResource{PTR: name("host.example.net.")}, "host.example.net"},
	{"MX", dnsmessage.TypeMX, &dnsmessage.MXResource{Pref: 10, MX: name("mx.example.com.")}, "10 mx.example.com"},
	{"TXT", dnsmessage.TypeTXT, &dnsmessage.TXTResource{TXT: []string{"v=spf1 -all", `say "hi"\`, "caf\xc3\xa9\n"}},
		`"v=spf1 -all" "say \"hi\"\\" "caf\195\169\010"`},
	{"TXT empty string", dnsmessage.TypeTXT, &dnsmessage.TXTResource{TXT: []string{""}}, `""`},
	{"SRV", dnsmessage.TypeSRV,
		&dnsmessage.SRVResource{Priority: 10, Weight: 5, Port: 5060, Target: name("sip.example.com.")}, "10 5 5060 sip.example.com"},
	{"SOA", dnsmessage.TypeSOA, &dnsmessage.SOAResource{NS: name("ns.example.com."), MBox: name("hostmaster.example.com."),
		Serial: 2024010101, Refresh: 7200, Retry: 3600, Expire: 1209600, MinTTL: 300},
		"ns.example.com hostmaster.example.com 2024010101 7200 3600 1209600 300"},
	{"root target", dnsmessage.TypeNS, &dnsmessage.NSResource{NS: name(".")}, "."},
	{"HINFO generic", dnsmessage.Type(13),
		&dnsmessage.UnknownResource{Type: 13, Data: []byte{3, 'a', 'b', 'c', 0}}, `HINFO \# 5 0361626300`},
	{"unassigned generic", dnsmessage.Type(65280),
		&dnsmessage.UnknownResource{Type: 65280, Data: nil}, `TYPE65280 \# 0`},
}

func TestParseEveryType(t *testing.T) {
	for _, tc := range typeCases {
		t.Run(tc.name, func(t *testing.T) {
			msg := build(t, response("www.Example.com.", tc.typ, dnsmessage.Resource{Header: rh("www.Example.com.", tc.typ), Body: tc.body}))
			m, err := Parse(msg)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			_, qs, as, ok := oracle(msg)
			if !ok {
				t.Fatal("dnsmessage rejects the message it built")
			}
			if len(m.Questions) != 1 || m.Questions[0].Name != present(qs[0].Name) || m.Questions[0].Name != "www.Example.com" ||
				m.Questions[0].Type != uint16(qs[0].Type) || m.Questions[0].Class != ClassINET {
				t.Errorf("question %+v, dnsmessage says %v", m.Questions, qs)
			}
			if len(m.Answers) != 1 {
				t.Fatalf("answers %+v", m.Answers)
			}
			a := m.Answers[0]
			if a.Data != tc.want || a.BadData {
				t.Errorf("data %q (bad %v), want %q", a.Data, a.BadData, tc.want)
			}
			if want, ok := oracleText(as[0]); ok && a.Data != want {
				t.Errorf("data %q, dnsmessage's value prints as %q", a.Data, want)
			}
			if a.Name != "www.Example.com" || a.Type != uint16(tc.typ) || a.TTL != 300 || a.Class != ClassINET {
				t.Errorf("record header %+v", a)
			}
		})
	}
}

func TestHeaderAgreesWithDNSMessage(t *testing.T) {
	for _, h := range []dnsmessage.Header{
		{ID: 1},
		{ID: 0xffff, Response: true, OpCode: 5, Authoritative: true, Truncated: true, RCode: dnsmessage.RCodeNameError},
		{ID: 7, RecursionDesired: true, RecursionAvailable: true, AuthenticData: true, CheckingDisabled: true, OpCode: 4},
	} {
		msg := build(t, dnsmessage.Message{Header: h})
		m, err := Parse(msg)
		if err != nil {
			t.Fatal(err)
		}
		got := m.Header
		if got.ID != h.ID || got.Response != h.Response || got.Opcode != uint8(h.OpCode) ||
			got.Authoritative != h.Authoritative || got.Truncated != h.Truncated ||
			got.RecursionDesired != h.RecursionDesired || got.RecursionAvailable != h.RecursionAvailable ||
			got.AuthenticData != h.AuthenticData || got.CheckingDisabled != h.CheckingDisabled ||
			uint16(got.RCode) != uint16(h.RCode) {
			t.Errorf("header %+v from %+v", got, h)
		}
	}
	if OpcodeString(5) != "UPDATE" || OpcodeString(4) != "NOTIFY" || OpcodeString(3) != "3" ||
		RCodeString(3) != "NXDOMAIN" || RCodeString(23) != "BADCOOKIE" || RCodeString(12) != "12" ||
		TypeString(65) != "HTTPS" || TypeString(65280) != "TYPE65280" {
		t.Error("names of opcodes, response codes or types are wrong")
	}
}

// The extended response code is the OPT record's upper TTL byte over the header's four bits:
// BADCOOKIE (23) is 7 in the header and 1 in OPT, and read from the header alone would be
// YXRRSET.
func TestExtendedRCodeFromOPT(t *testing.T) {
	m := response("example.com.", dnsmessage.TypeA)
	m.Header.RCode = 7
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(1232, dnsmessage.RCode(23), false); err != nil {
		t.Fatal(err)
	}
	m.Authorities = []dnsmessage.Resource{{Header: rh("example.com.", dnsmessage.TypeNS), Body: &dnsmessage.NSResource{NS: name("ns.example.com.")}}}
	m.Additionals = []dnsmessage.Resource{{Header: opt, Body: &dnsmessage.OPTResource{}}}
	got, err := Parse(build(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if !got.EDNS || got.RCode() != 23 || RCodeString(got.RCode()) != "BADCOOKIE" {
		t.Fatalf("EDNS %v, rcode %d", got.EDNS, got.RCode())
	}
}

// Compression: dnsmessage's builder points repeated suffixes back at their first occurrence,
// in owner names and inside record data alike; the message must read exactly as the same
// message built without compression.
func TestCompressionPointers(t *testing.T) {
	m := response("a.b.example.com.", dnsmessage.TypeA,
		dnsmessage.Resource{Header: rh("a.b.example.com.", dnsmessage.TypeCNAME), Body: &dnsmessage.CNAMEResource{CNAME: name("c.b.example.com.")}},
		dnsmessage.Resource{Header: rh("c.b.example.com.", dnsmessage.TypeMX), Body: &dnsmessage.MXResource{Pref: 5, MX: name("mx.b.example.com.")}},
		dnsmessage.Resource{Header: rh("c.b.example.com.", dnsmessage.TypeSOA), Body: &dnsmessage.SOAResource{NS: name("ns.example.com."),
			MBox: name("admin.b.example.com."), Serial: 1, Refresh: 2, Retry: 3, Expire: 4, MinTTL: 5}},
		dnsmessage.Resource{Header: rh("c.b.example.com.", dnsmessage.TypeA), Body: &dnsmessage.AResource{A: [4]byte{198, 51, 100, 7}}},
	)
	compressed := build(t, m)
	plain, err := buildWith(m, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(compressed) >= len(plain) || !bytes.Contains(compressed, []byte{0xC0, HeaderLen}) {
		t.Fatalf("the builder did not compress: %d bytes against %d", len(compressed), len(plain))
	}
	got, err := Parse(compressed)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Parse(plain)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("compressed reads\n%+v\nuncompressed\n%+v", got, want)
	}
	data := []string{"c.b.example.com", "5 mx.b.example.com", "ns.example.com admin.b.example.com 1 2 3 4 5", "198.51.100.7"}
	owners := []string{"a.b.example.com", "c.b.example.com", "c.b.example.com", "c.b.example.com"}
	for i, a := range got.Answers {
		if a.Data != data[i] || a.Name != owners[i] {
			t.Errorf("answer %d: %s %q, want %s %q", i, a.Name, a.Data, owners[i], data[i])
		}
	}
}

// wire writes raw messages, for the shapes dnsmessage's Builder refuses to make (loops, long
// labels, forward pointers, bad record data).
type wire struct{ b []byte }

func newWire(flags, qd, an, ns, ar uint16) *wire {
	w := &wire{b: make([]byte, HeaderLen)}
	binary.BigEndian.PutUint16(w.b[0:], 0x1234)
	binary.BigEndian.PutUint16(w.b[2:], flags)
	binary.BigEndian.PutUint16(w.b[4:], qd)
	binary.BigEndian.PutUint16(w.b[6:], an)
	binary.BigEndian.PutUint16(w.b[8:], ns)
	binary.BigEndian.PutUint16(w.b[10:], ar)
	return w
}

func (w *wire) off() int { return len(w.b) }

// labels writes labels without the terminating zero; end or ptr finishes the name.
func (w *wire) labels(ls ...string) *wire {
	for _, l := range ls {
		w.b = append(w.b, byte(len(l)))
		w.b = append(w.b, l...)
	}
	return w
}
func (w *wire) end() *wire          { w.b = append(w.b, 0); return w }
func (w *wire) ptr(off int) *wire   { w.b = append(w.b, 0xC0|byte(off>>8), byte(off)); return w }
func (w *wire) raw(b ...byte) *wire { w.b = append(w.b, b...); return w }
func (w *wire) u16(v uint16) *wire  { w.b = binary.BigEndian.AppendUint16(w.b, v); return w }

// question finishes a question whose name was just written.
func (w *wire) question(typ uint16) *wire { return w.u16(typ).u16(ClassINET) }

// rr finishes a record whose owner name was just written.
func (w *wire) rr(typ uint16, data ...byte) *wire {
	w.u16(typ).u16(ClassINET).raw(0, 0, 0, 60).u16(uint16(len(data)))
	return w.raw(data...)
}

// Pointer chains and forward pointers are legal (dnsmessage reads them), so they must read:
// answer 1's data holds two bare pointers, answer 2's owner goes through both (four pointers
// in all), and its CNAME data points forward at answer 3's owner.
func TestPointerChainsAndForwardPointers(t *testing.T) {
	w := newWire(0x8180, 1, 3, 0, 0)
	example := w.off()
	w.labels("example", "com").end().question(TypeA)
	www := w.off()
	w.labels("www").ptr(example)
	hop1 := w.off() + 10 // the record data starts after type, class, TTL and length
	w.rr(65280, 0xC0, byte(www), 0xC0, byte(hop1))
	hop2 := hop1 + 2
	w.ptr(hop2)
	cname := w.off() + 10
	mail := cname + 2
	w.rr(TypeCNAME, 0xC0, byte(mail))
	w.labels("mail").ptr(example).rr(TypeA, 192, 0, 2, 25)

	m, err := Parse(w.b)
	if err != nil {
		t.Fatal(err)
	}
	_, _, as, ok := oracle(w.b)
	if !ok || len(as) != 3 {
		t.Fatal("dnsmessage rejects the message")
	}
	want := []Record{
		{Name: "www.example.com", Type: 65280, Class: 1, TTL: 60, Data: `TYPE65280 \# 4 c01dc02d`},
		{Name: "www.example.com", Type: TypeCNAME, Class: 1, TTL: 60, Data: "mail.example.com"},
		{Name: "mail.example.com", Type: TypeA, Class: 1, TTL: 60, Data: "192.0.2.25"},
	}
	if !reflect.DeepEqual(m.Answers, want) {
		t.Fatalf("answers\n got %+v\nwant %+v", m.Answers, want)
	}
	if present(as[1].Header.Name) != "www.example.com" || present(as[1].Body.(*dnsmessage.CNAMEResource).CNAME) != "mail.example.com" {
		t.Fatalf("dnsmessage reads %v", as[1])
	}
}

// Loops and oversized names fail with the error that says so, after whatever came before; and
// dnsmessage refuses the same messages, so none of them is a valid message read wrongly.
func TestMalformedNames(t *testing.T) {
	long := func(n int) []string { // n labels of 63 bytes
		ls := make([]string, n)
		for i := range ls {
			ls[i] = strings.Repeat("x", 63)
		}
		return ls
	}
	cases := []struct {
		name    string
		msg     func() []byte
		want    error
		section string
	}{
		{"pointer to itself", func() []byte {
			w := newWire(0, 1, 0, 0, 0)
			return w.ptr(HeaderLen).question(TypeA).b
		}, ErrPointerLoop, "question"},
		{"two pointers in a cycle", func() []byte {
			w := newWire(0x8000, 1, 1, 0, 0)
			w.labels("ok").end().question(TypeA)
			a := w.off()
			w.ptr(a+2).ptr(a).rr(TypeA, 1, 2, 3, 4)
			return w.b
		}, ErrPointerLoop, "answer"},
		{"loop through a label grows past 255", func() []byte {
			w := newWire(0, 1, 0, 0, 0)
			return w.labels("loop").ptr(HeaderLen).question(TypeA).b
		}, ErrNameTooLong, "question"},
		{"256 bytes in place", func() []byte {
			// Four labels of 63 and one of 3: 4*64 + 4 + 1 = 261 bytes.
			w := newWire(0, 1, 0, 0, 0)
			return w.labels(append(long(4), "abc")...).end().question(TypeA).b
		}, ErrNameTooLong, "question"},
		{"256 bytes through a pointer", func() []byte {
			// 3*64 + 62 + 1 = 255 bytes is the longest name; one more label through a pointer.
			w := newWire(0x8000, 1, 1, 0, 0)
			q := w.off()
			w.labels(append(long(3), strings.Repeat("y", 61))...).end().question(TypeA)
			return w.labels("z").ptr(q).rr(TypeA, 1, 2, 3, 4).b
		}, ErrNameTooLong, "answer"},
		{"label of 64 bytes", func() []byte {
			w := newWire(0, 1, 0, 0, 0)
			return w.raw(64).raw(bytes.Repeat([]byte{'a'}, 64)...).end().question(TypeA).b
		}, ErrLabelType, "question"},
		{"reserved label type 0x80", func() []byte {
			w := newWire(0, 1, 0, 0, 0)
			return w.raw(0x80, 1).end().question(TypeA).b
		}, ErrLabelType, "question"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.msg()
			m, err := Parse(msg)
			var pe *Error
			if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Section != tc.section {
				t.Fatalf("error %v, want %v in the %s section", err, tc.want, tc.section)
			}
			if tc.section == "answer" && (len(m.Questions) != 1 || m.Questions[0].Name == "") {
				t.Errorf("the question before the fault is lost: %+v", m.Questions)
			}
			if _, _, _, ok := oracle(msg); ok {
				t.Error("dnsmessage accepts it")
			}
		})
	}

	// The longest legal name, 255 bytes, reads (and dnsmessage agrees).
	w := newWire(0, 1, 0, 0, 0)
	w.labels(append(long(3), strings.Repeat("y", 61))...).end().question(TypeA)
	m, err := Parse(w.b)
	_, qs, _, ok := oracle(w.b)
	if err != nil || !ok || len(m.Questions[0].Name) != 3*64+61 || m.Questions[0].Name != present(qs[0].Name) {
		t.Fatalf("255-byte name: %v, dnsmessage ok %v", err, ok)
	}
}

// Escapes keep a label's dot from passing for a separator and keep the text ASCII.
func TestNameEscapes(t *testing.T) {
	w := newWire(0, 1, 0, 0, 0)
	w.labels("a.b", `back\slash`, "sp ace", "caf\xc3\xa9", "UPPER").end().question(TypeTXT)
	m, err := Parse(w.b)
	if err != nil {
		t.Fatal(err)
	}
	if want := `a\.b.back\\slash.sp\032ace.caf\195\169.UPPER`; m.Questions[0].Name != want {
		t.Fatalf("name %q, want %q", m.Questions[0].Name, want)
	}
	w = newWire(0, 1, 0, 0, 0)
	w.end().question(TypeNS)
	if m, err := Parse(w.b); err != nil || m.Questions[0].Name != "." {
		t.Fatalf("root: %q %v", m.Questions[0].Name, err)
	}
}

// A record whose data does not fit its type is kept in the generic form and marked; the
// records after it still read, since its length bounds it.
func TestBadRecordData(t *testing.T) {
	w := newWire(0x8180, 1, 4, 0, 0)
	q := w.off()
	w.labels("example", "com").end().question(TypeA)
	w.ptr(q).rr(TypeA, 192, 0, 2, 1, 99)                       // five bytes
	w.ptr(q).rr(TypeCNAME, 3, 'f', 'o', 'o', 0xC0, byte(q), 0) // a byte after the name
	w.ptr(q).rr(TypeMX, 0, 10, 0xC0, byte(q+100))              // points past the end
	w.ptr(q).rr(TypeA, 192, 0, 2, 2)
	m, err := Parse(w.b)
	var pe *Error
	if !errors.Is(err, ErrRData) || !errors.As(err, &pe) || pe.Section != "answer" || pe.Index != 0 {
		t.Fatalf("error %v, want ErrRData at answer 0", err)
	}
	want := []struct {
		data string
		bad  bool
	}{{`A \# 5 c000020163`, true}, {`CNAME \# 7 03666f6fc00c00`, true}, {`MX \# 4 000ac070`, true}, {"192.0.2.2", false}}
	if len(m.Answers) != len(want) {
		t.Fatalf("answers %+v", m.Answers)
	}
	for i, a := range m.Answers {
		if a.Data != want[i].data || a.BadData != want[i].bad {
			t.Errorf("answer %d: %q bad=%v, want %q bad=%v", i, a.Data, a.BadData, want[i].data, want[i].bad)
		}
	}
}

// richMessage has something in every section: a question, answers of several types with
// compressed names, an authority record and an OPT record.
func richMessage(tb testing.TB) []byte {
	m := response("www.example.com.", dnsmessage.TypeA,
		dnsmessage.Resource{Header: rh("www.example.com.", dnsmessage.TypeCNAME), Body: &dnsmessage.CNAMEResource{CNAME: name("web.example.com.")}},
		dnsmessage.Resource{Header: rh("web.example.com.", dnsmessage.TypeA), Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}},
		dnsmessage.Resource{Header: rh("web.example.com.", dnsmessage.TypeA), Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 2}}},
		dnsmessage.Resource{Header: rh("web.example.com.", dnsmessage.TypeTXT), Body: &dnsmessage.TXTResource{TXT: []string{"one", "two"}}},
		dnsmessage.Resource{Header: rh("web.example.com.", dnsmessage.TypeMX), Body: &dnsmessage.MXResource{Pref: 1, MX: name("mx.example.com.")}},
	)
	m.Authorities = []dnsmessage.Resource{{Header: rh("example.com.", dnsmessage.TypeNS), Body: &dnsmessage.NSResource{NS: name("ns.example.com.")}}}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(4096, dnsmessage.RCodeSuccess, true); err != nil {
		tb.Fatal(err)
	}
	m.Additionals = []dnsmessage.Resource{{Header: opt, Body: &dnsmessage.OPTResource{}}}
	return build(tb, m)
}

// Cut at every byte, the message reads as a prefix of itself: no panic, ErrTruncated, and the
// questions and answers read are the first ones of the whole message, unchanged.
func TestTruncatedAtEveryByte(t *testing.T) {
	msg := richMessage(t)
	full, err := Parse(msg)
	if err != nil || len(full.Answers) != 5 || !full.EDNS {
		t.Fatalf("whole message: %v, %+v", err, full)
	}
	for n := range len(msg) {
		// Capacity n as well as length, so that not even a reslice reaches the bytes after the cut.
		m, err := Parse(msg[:n:n])
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d: error %v, want ErrTruncated", n, err)
		}
		if len(m.Questions) > len(full.Questions) || !slices.Equal(m.Questions, full.Questions[:len(m.Questions)]) {
			t.Fatalf("cut at %d: questions %+v are not a prefix", n, m.Questions)
		}
		if len(m.Answers) > len(full.Answers) || !slices.Equal(m.Answers, full.Answers[:len(m.Answers)]) {
			t.Fatalf("cut at %d: answers %+v are not a prefix", n, m.Answers)
		}
		if n >= HeaderLen && m.Header != full.Header {
			t.Fatalf("cut at %d: header %+v", n, m.Header)
		}
	}
}

// Counts larger than the data: what is there reads, and the error says the data ran out.
func TestCountsLargerThanData(t *testing.T) {
	msg := build(t, response("example.com.", dnsmessage.TypeA,
		dnsmessage.Resource{Header: rh("example.com.", dnsmessage.TypeA), Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}},
		dnsmessage.Resource{Header: rh("example.com.", dnsmessage.TypeA), Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 2}}}))
	for _, tc := range []struct {
		field     int // offset of the count in the header
		count     uint16
		section   string
		questions int
		answers   int
	}{
		// The answers' bytes read as more questions before the data runs out: a reader cannot
		// tell, and only the first question is the real one.
		{4, 65535, "question", 4, 0},
		{6, 5, "answer", 1, 2},
		{8, 1, "authority", 1, 2},
		{10, 300, "additional", 1, 2},
	} {
		bad := bytes.Clone(msg)
		binary.BigEndian.PutUint16(bad[tc.field:], tc.count)
		m, err := Parse(bad)
		var pe *Error
		if !errors.Is(err, ErrTruncated) || !errors.As(err, &pe) || pe.Section != tc.section {
			t.Errorf("count at %d = %d: error %v, want ErrTruncated in %s", tc.field, tc.count, err, tc.section)
		}
		if len(m.Questions) != tc.questions || m.Questions[0].Name != "example.com" || len(m.Answers) != tc.answers ||
			(tc.answers > 0 && m.Answers[1].Data != "192.0.2.2") {
			t.Errorf("count at %d = %d: read %d questions, answers %+v", tc.field, tc.count, len(m.Questions), m.Answers)
		}
	}
}

// Entries past the bounds are counted and checked, not kept.
func TestBounds(t *testing.T) {
	msg := richMessage(t)
	p := Parser{MaxAnswers: 2}
	var m Message
	if err := p.Parse(msg, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Answers) != 2 || m.AnswersSeen != 5 || m.Answers[1].Data != "192.0.2.1" || !m.EDNS {
		t.Fatalf("kept %d of %d answers: %+v", len(m.Answers), m.AnswersSeen, m.Answers)
	}
	// A Parser and Message reused for a smaller message hold nothing of the larger one.
	small := build(t, dnsmessage.Message{Header: dnsmessage.Header{ID: 9}})
	if err := p.Parse(small, &m); err != nil || len(m.Answers) != 0 || len(m.Questions) != 0 || m.EDNS || m.Header.ID != 9 {
		t.Fatalf("reused: %v %+v", err, m)
	}
}
