package http1

// pending is a request waiting for its response, or for its own end, before it is reported.
type pending struct {
	tx       Transaction
	reqCT    string // the request's Content-Type, reported when the response has none
	reqDone  bool   // the request ended (or was given up)
	respDone bool   // its final response ended (or was given up)
	head     bool   // HEAD: the response has no body whatever its headers say
	connect  bool   // CONNECT: a 2xx response turns the connection into a tunnel
	// uncertain is set when the server side lost its place while this request was unanswered:
	// whole responses may have been lost with it, so the response paired next may not be this
	// request's. It makes the transaction partial.
	uncertain bool
}

// queue is a ring of pending requests, oldest first. It grows up to the connection's limit and
// keeps its memory between requests.
type queue struct {
	buf  []pending
	head int
	n    int
}

// at is the i-th entry from the oldest. It wraps with a comparison rather than a modulo, which
// costs a division on every lookup.
func (q *queue) at(i int) *pending {
	j := q.head + i
	if j >= len(q.buf) {
		j -= len(q.buf)
	}
	return &q.buf[j]
}

func (q *queue) push() *pending {
	if q.n == len(q.buf) {
		grown := make([]pending, max(2, 2*len(q.buf)))
		for i := 0; i < q.n; i++ {
			grown[i] = *q.at(i)
		}
		q.buf, q.head = grown, 0
	}
	p := q.at(q.n)
	*p = pending{}
	q.n++
	return p
}

// pop drops the oldest entry, clearing it so its strings can be collected.
func (q *queue) pop() {
	q.buf[q.head] = pending{}
	if q.head++; q.head == len(q.buf) {
		q.head = 0
	}
	q.n--
}

// popTail drops the newest entry.
func (q *queue) popTail() {
	*q.at(q.n - 1) = pending{}
	q.n--
}
