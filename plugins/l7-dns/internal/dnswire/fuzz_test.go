package dnswire

import (
	"errors"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// seeds are the unit tests' messages, whole and cut.
func seeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, tc := range typeCases {
		out = append(out, build(tb, response("www.Example.com.", tc.typ,
			dnsmessage.Resource{Header: rh("www.Example.com.", tc.typ), Body: tc.body})))
	}
	rich := richMessage(tb)
	out = append(out, rich, rich[:len(rich)/2], rich[:HeaderLen+3])
	w := newWire(0, 1, 0, 0, 0)
	out = append(out, w.ptr(HeaderLen).question(TypeA).b) // a pointer loop
	w = newWire(0x8180, 1, 1, 0, 0)
	q := w.off()
	w.labels("example", "com").end().question(TypeA)
	out = append(out, w.ptr(q).rr(TypeA, 192, 0, 2, 1, 99).b) // bad record data
	return out
}

// FuzzParse: no input panics, the counts Parse reports are consistent, and whenever dnsmessage
// accepts the header, every question and every answer, Parse reads the same questions and the
// same number of answers, with the same text for the types it prints.
//
// One difference is allowed and checked narrowly: dnsmessage does not check that the last
// answer's data length stays inside the message when the type's own fields fit (an A record
// claiming 10 bytes with 4 left), and this parser reports that record as cut.
func FuzzParse(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		p := Parser{MaxQuestions: 1 << 16, MaxAnswers: 1 << 16}
		var m Message
		err := p.Parse(msg, &m)
		var pe *Error
		if err != nil && !errors.As(err, &pe) {
			t.Fatalf("error %v is not an *Error", err)
		}
		if len(m.Questions) != m.QuestionsSeen || len(m.Answers) != m.AnswersSeen ||
			m.QuestionsSeen > int(m.Header.QDCount) || m.AnswersSeen > int(m.Header.ANCount) {
			t.Fatalf("counts: %d/%d questions, %d/%d answers of %+v", len(m.Questions), m.QuestionsSeen,
				len(m.Answers), m.AnswersSeen, m.Header)
		}
		if (err == nil || errors.Is(err, ErrRData)) &&
			(m.QuestionsSeen != int(m.Header.QDCount) || m.AnswersSeen != int(m.Header.ANCount)) {
			t.Fatalf("no fatal error, yet %d of %d questions and %d of %d answers", m.QuestionsSeen,
				m.Header.QDCount, m.AnswersSeen, m.Header.ANCount)
		}

		h, qs, as, ok := oracle(msg)
		if !ok {
			return
		}
		if h.ID != m.Header.ID || h.Response != m.Header.Response || uint16(h.RCode) != uint16(m.Header.RCode) {
			t.Fatalf("header %+v, dnsmessage %+v", m.Header, h)
		}
		if pe != nil && pe.Section == "question" {
			t.Fatalf("dnsmessage reads the questions, Parse fails: %v", err)
		}
		if len(qs) != len(m.Questions) {
			t.Fatalf("%d questions, dnsmessage %d", len(m.Questions), len(qs))
		}
		for i, q := range qs {
			if m.Questions[i].Name != present(q.Name) || m.Questions[i].Type != uint16(q.Type) ||
				m.Questions[i].Class != uint16(q.Class) {
				t.Fatalf("question %d: %+v, dnsmessage %v", i, m.Questions[i], q)
			}
		}
		n := len(as)
		if pe != nil && pe.Section == "answer" && !errors.Is(err, ErrRData) {
			if !errors.Is(err, ErrTruncated) || pe.Index != len(as)-1 || len(m.Answers) != len(as)-1 {
				t.Fatalf("dnsmessage reads %d answers, Parse %d and fails: %v", len(as), len(m.Answers), err)
			}
			n--
		} else if len(m.Answers) != len(as) {
			t.Fatalf("%d answers, dnsmessage %d", len(m.Answers), len(as))
		}
		for i, a := range as[:n] {
			got := m.Answers[i]
			if got.Type != uint16(a.Header.Type) || got.Name != present(a.Header.Name) {
				t.Fatalf("answer %d: %+v, dnsmessage %v", i, got, a.Header)
			}
			if want, ok := oracleText(a); ok && !got.BadData && got.Data != want {
				t.Fatalf("answer %d: data %q, dnsmessage's value prints as %q", i, got.Data, want)
			}
		}
	})
}
