package decoder

import (
	"container/heap"
	"errors"
	"slices"
	"time"

	"github.com/quanyu/quanyu/plugins/l7-dns/internal/dnswire"
	"github.com/quanyu/quanyu/sdk"
)

// Flags the decoder sets on records.
const (
	flagTruncated     = "truncated"           // the response has TC set: the answer did not fit, the client should retry over TCP
	flagAnswersCut    = "answers_cut"         // more answers than max_answers; the rest are counted, not reported
	flagCountsExceed  = "counts_exceed_data"  // a whole UDP payload ended before its counts: a fragment, or malformed
	flagRetransmitted = "query_retransmitted" // the query was sent again (same ID and question) before the response
	flagNoResponse    = "no_response"
	flagNoQuery       = "no_query"
)

// query is a query waiting for its response, with its record filled in as far as the query
// goes.
type query struct {
	flow       *flow
	index      int // in Decoder.waiting
	id         uint16
	fromClient bool
	hasQ       bool // the query's question was read
	question   dnswire.Question
	at         time.Time
	rec        sdk.L7
}

// msgIn is one DNS message cut out of a flow's samples.
type msgIn struct {
	data       []byte // the message's bytes as captured
	size       int    // its length on the wire; over TCP, without the two-byte length prefix
	cut        bool   // some of its bytes were not captured
	at         time.Time
	fromClient bool
}

// parsed is what a message contributes to its transaction's record.
type parsed struct {
	partial bool
	err     string
	flags   []string
}

// message parses one message and pairs it: a query waits in its flow, a response completes the
// query it answers or is reported alone.
func (d *Decoder) message(key flowKey, meta *flowMeta, in msgIn) {
	if len(in.data) < dnswire.HeaderLen {
		d.c.inc(cSkipShort)
		return
	}
	err := d.parser.Parse(in.data, &d.msg)
	m := &d.msg
	var p parsed
	p.partial = in.cut
	truncated := errors.Is(err, dnswire.ErrTruncated)
	if truncated {
		d.c.inc(cMsgTruncated)
	}
	switch {
	case err == nil:
	case truncated && in.cut:
		// The capture did not keep the whole message: report the prefix read.
	case truncated && meta.transport == sdk.TransportTCP:
		// The length prefix says the message is all here, so counts beyond it are its fault.
		p.err = err.Error()
	case truncated:
		// A whole UDP payload that ends early is either malformed or the first fragment of
		// a fragmented datagram (the capture sees only the first fragment's payload); the two
		// look the same, so the prefix is reported as partial and the doubt as a flag.
		p.partial = true
		p.flags = append(p.flags, flagCountsExceed)
	default:
		p.err = err.Error()
	}
	if p.err != "" {
		d.c.inc(cMsgMalformed)
	}
	if m.Header.Truncated {
		p.flags = append(p.flags, flagTruncated)
	}
	if m.Header.Response {
		d.response(key, meta, in, &p)
	} else {
		d.query(key, meta, in, &p)
	}
}

func (d *Decoder) query(key flowKey, meta *flowMeta, in msgIn, p *parsed) {
	m := &d.msg
	q := &query{id: m.Header.ID, fromClient: in.fromClient, at: in.at, rec: meta.record(in.at)}
	if len(m.Questions) > 0 {
		q.hasQ, q.question = true, m.Questions[0]
		q.rec.Query, q.rec.QType = q.question.Name, dnswire.TypeString(q.question.Type)
	}
	fl := d.flowFor(key)
	for _, w := range fl.pending {
		if w.id == q.id && w.fromClient == q.fromClient && w.hasQ == q.hasQ && sameQuestion(w.question, q.question) {
			// A client that hears nothing sends the same query again; the response that
			// comes answers either, so the transaction keeps the first one's time.
			d.c.inc(cQueriesDuplicate)
			if !slices.Contains(w.rec.Flags, flagRetransmitted) {
				w.rec.Flags = append(w.rec.Flags, flagRetransmitted)
			}
			return
		}
	}
	if len(fl.pending) >= d.opts.MaxPending {
		d.unanswered(fl.pending[0], cQueriesPendingFull)
	}
	q.flow = fl
	q.rec.Method = dnswire.OpcodeString(m.Header.Opcode)
	q.rec.RequestBytes = uint64(in.size)
	q.rec.Partial = p.partial
	if p.err != "" {
		q.rec.Error = "query: " + p.err
	}
	q.rec.Flags = append(q.rec.Flags, p.flags...)
	fl.pending = append(fl.pending, q)
	heap.Push(&d.waiting, q)
}

func (d *Decoder) response(key flowKey, meta *flowMeta, in msgIn, p *parsed) {
	m := &d.msg
	var rq dnswire.Question
	hasQ := len(m.Questions) > 0
	if hasQ {
		rq = m.Questions[0]
	}
	var q *query
	fl := d.flows[key]
	if fl != nil {
		for _, w := range fl.pending {
			// A response without a question (some error responses carry none, and a cut one
			// may lose it) is paired by ID alone.
			if w.id == m.Header.ID && w.fromClient != in.fromClient && (!hasQ || !w.hasQ || sameQuestion(w.question, rq)) {
				q = w
				break
			}
		}
	}
	var rec sdk.L7
	if q != nil {
		d.forget(q)
		rec = q.rec
		if rec.Query == "" && hasQ {
			rec.Query, rec.QType = rq.Name, dnswire.TypeString(rq.Type)
		}
		if latency := in.at.Sub(q.at); latency > 0 {
			rec.Latency = latency
		}
		if fl.idle() {
			d.removeFlow(fl)
		}
	} else {
		d.c.inc(cResponsesUnmatched)
		rec = meta.record(in.at)
		rec.Method = dnswire.OpcodeString(m.Header.Opcode)
		if hasQ {
			rec.Query, rec.QType = rq.Name, dnswire.TypeString(rq.Type)
		}
		rec.Partial = true
		rec.Flags = append(rec.Flags, flagNoQuery)
	}
	rec.RCode = dnswire.RCodeString(m.RCode())
	rec.ResponseBytes = uint64(in.size)
	if len(m.Answers) > 0 {
		rec.Answers = make([]string, len(m.Answers))
		for i, a := range m.Answers {
			rec.Answers[i] = a.Data
		}
	}
	if cut := m.AnswersSeen - len(m.Answers); cut > 0 {
		d.c.add(cAnswersCut, cut)
		p.flags = append(p.flags, flagAnswersCut)
	}
	rec.Partial = rec.Partial || p.partial
	if p.err != "" {
		if rec.Error != "" {
			rec.Error += "; "
		}
		rec.Error += "response: " + p.err
	}
	rec.Flags = append(rec.Flags, p.flags...)
	d.emit(rec)
}

// unanswered reports a waiting query without a response, counted under why, and forgets it.
// Its flow stays; the caller removes it if it has become idle.
func (d *Decoder) unanswered(q *query, why counter) {
	d.forget(q)
	d.c.inc(why)
	rec := q.rec
	rec.Partial = true
	rec.Flags = append(rec.Flags, flagNoResponse)
	d.emit(rec)
}

// forget takes a query out of its flow and out of the timeout heap.
func (d *Decoder) forget(q *query) {
	if i := slices.Index(q.flow.pending, q); i >= 0 {
		q.flow.pending = slices.Delete(q.flow.pending, i, i+1)
	}
	if q.index >= 0 && q.index < len(d.waiting) && d.waiting[q.index] == q {
		heap.Remove(&d.waiting, q.index)
	}
}

func (d *Decoder) emit(rec sdk.L7) {
	d.c.inc(cRecords)
	if rec.Partial {
		d.c.inc(cRecordsPartial)
	}
	if rec.Error != "" {
		d.c.inc(cRecordsError)
	}
	d.out = append(d.out, rec)
}

// sameQuestion compares questions as DNS does: names without regard to ASCII letter case
// (RFC 4343), types and classes exactly.
func sameQuestion(a, b dnswire.Question) bool {
	if a.Type != b.Type || a.Class != b.Class || len(a.Name) != len(b.Name) {
		return false
	}
	for i := 0; i < len(a.Name); i++ {
		x, y := a.Name[i], b.Name[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
