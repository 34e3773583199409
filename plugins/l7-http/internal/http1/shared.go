package http1

// Shared is what every connection of one decoder shares: the limits, the counters and a table
// of strings seen before. A Shared and its connections are used from one goroutine at a time.
type Shared struct {
	// MaxHeaderBytes bounds a start line and its header block, a chunk-size line and a trailer
	// block; past it the message is reported partial.
	MaxHeaderBytes int
	// MaxPending bounds the requests a connection holds while waiting for their responses.
	MaxPending int

	Counters Counters
	strings  interner
}

// Default limits.
const (
	DefaultMaxHeaderBytes = 8 << 10
	DefaultMaxPending     = 64
)

// NewShared makes the shared state with the default limits.
func NewShared() *Shared {
	return &Shared{MaxHeaderBytes: DefaultMaxHeaderBytes, MaxPending: DefaultMaxPending,
		strings: interner{m: make(map[string]string, 256)}}
}

// Counters count what the parser saw, and everything it skipped or could not read, by reason.
type Counters struct {
	Requests        uint64 // request lines read, malformed ones and false starts included
	Responses       uint64 // final status lines read (1xx other than 101 not included)
	Interim         uint64 // 1xx responses other than 101, paired with a request
	Transactions    uint64 // transactions reported
	Partial         uint64 // transactions reported partial
	Malformed       uint64 // messages reported with an Error
	Gaps            uint64 // jumps forward in a side's sequence numbers (lost packets)
	GapBytes        uint64
	Truncated       uint64 // samples cut short (WireLen more than the data)
	TruncatedBytes  uint64
	Retransmits     uint64 // samples holding only bytes already seen
	Overlaps        uint64 // samples partly holding bytes already seen, trimmed
	SeqJumps        uint64 // samples so far behind the stream that they start it anew
	Desyncs         uint64 // times a side lost its place in the stream
	Resyncs         uint64 // times a side found a message to begin reading at, a connection's first included
	SkippedBytes    uint64 // bytes passed over while a side looked for a message start
	FalseStarts     uint64 // request-like lines found while looking, which turned out not to be requests
	Orphans         uint64 // responses with no request to pair with (the request was not seen)
	HeaderOverflow  uint64 // header blocks or lines longer than MaxHeaderBytes
	PendingOverflow uint64 // requests reported without response because MaxPending newer ones came
	Upgrades        uint64 // 101 Switching Protocols: the connection is no longer HTTP/1
	Tunnels         uint64 // successful CONNECTs: the connection is no longer HTTP/1
	HTTP2Preface    uint64 // "PRI * HTTP/2.0": HTTP/2 with prior knowledge, not parsed
	BadWireLen      uint64 // samples whose WireLen was impossible, taken as the data's length
	Flags           [flagCount]uint64
}

// Each calls fn with every counter's stable name and value.
func (c *Counters) Each(fn func(name string, v uint64)) {
	fn("requests", c.Requests)
	fn("responses", c.Responses)
	fn("interim_responses", c.Interim)
	fn("transactions", c.Transactions)
	fn("partial", c.Partial)
	fn("malformed", c.Malformed)
	fn("gaps", c.Gaps)
	fn("gap_bytes", c.GapBytes)
	fn("truncated_samples", c.Truncated)
	fn("truncated_bytes", c.TruncatedBytes)
	fn("retransmits", c.Retransmits)
	fn("overlaps_trimmed", c.Overlaps)
	fn("seq_jumps", c.SeqJumps)
	fn("desyncs", c.Desyncs)
	fn("resyncs", c.Resyncs)
	fn("resync_skipped_bytes", c.SkippedBytes)
	fn("resync_false_starts", c.FalseStarts)
	fn("orphan_responses", c.Orphans)
	fn("header_overflow", c.HeaderOverflow)
	fn("pending_overflow", c.PendingOverflow)
	fn("upgrades", c.Upgrades)
	fn("connect_tunnels", c.Tunnels)
	fn("http2_prior_knowledge", c.HTTP2Preface)
	fn("bad_wire_len", c.BadWireLen)
	for i, n := range c.Flags {
		fn("flag."+flagNames[i], n)
	}
}

// interner returns one string for each distinct method, version, host, user agent and content
// type, so that repeated values cost no allocation. The table is bounded: when it is full it
// starts again empty, which costs only the allocations it was saving.
type interner struct {
	m map[string]string
}

const (
	maxInterned    = 4096
	maxInternedLen = 128
)

func (in *interner) get(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if in.m == nil {
		in.m = make(map[string]string, 256)
	}
	s := string(b)
	if len(b) <= maxInternedLen {
		if len(in.m) >= maxInterned {
			clear(in.m)
		}
		in.m[s] = s
	}
	return s
}
