// Package store keeps what analysis knows beyond memory: rollups at three resolutions, the
// raw flow records, flow events and L7 records of the last hours, and which addresses each
// graph node has had.
//
// The interface is shaped so that an embedded database and a column store can both stand behind
// it, passing the same tests (package storetest):
//   - writes come in batches;
//   - rollup rows are deltas: several rows may hold the same key and bucket, and a reader adds
//     them up (a SummingMergeTree in ClickHouse, plain rows here), so a bucket written in parts
//     (a restart, a late record) needs no read-modify-write;
//   - reads are by time range plus simple equality or range filters, and record pages are
//     keyset-paged by (time, id), never by offset;
//   - deletion is by time only (Prune), as partitions would be dropped.
//
// [SQLite] is the embedded implementation.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// ErrClosed is returned by every method of a closed store.
var ErrClosed = errors.New("store is closed")

// Resolution is the width of a rollup bucket.
type Resolution string

// The resolutions analysis keeps.
const (
	Res10s Resolution = "10s"
	Res1m  Resolution = "1m"
	Res1h  Resolution = "1h"
)

// Resolutions lists the resolutions, finest first.
var Resolutions = []Resolution{Res10s, Res1m, Res1h}

// Duration is the bucket width; 0 for an unknown resolution.
func (r Resolution) Duration() time.Duration {
	switch r {
	case Res10s:
		return 10 * time.Second
	case Res1m:
		return time.Minute
	case Res1h:
		return time.Hour
	}
	return 0
}

// ParseResolution reads "10s", "1m" or "1h".
func ParseResolution(s string) (Resolution, error) {
	r := Resolution(s)
	if r.Duration() == 0 {
		return "", fmt.Errorf("unknown resolution %q, want 10s, 1m or 1h", s)
	}
	return r, nil
}

// Level is what a rollup row's key holds.
type Level string

// Levels of rollups. App and L7 rows are keyed by graph node ids; L3 and L4 rows by addresses.
const (
	LevelApp Level = "app" // source node → target node, transport, server port
	LevelL3  Level = "l3"  // client address → server address
	LevelL4  Level = "l4"  // client address → server address, transport, server port
	LevelL7  Level = "l7"  // source node → target node, transport, server port, L7 protocol, method, path
)

// RollupKey identifies one rollup series.
type RollupKey struct {
	Level     Level
	Source    string // node id (app, l7) or client address (l3, l4)
	Target    string // node id (app, l7) or server address (l3, l4)
	Transport sdk.Transport
	Port      uint16 // the server's port
	Protocol  string // L7 protocol (l7 only)
	Method    string // l7 only
	Path      string // l7 only
}

// Bits of Figures.Protocols: the L7 protocols seen on the series.
const (
	ProtoHTTP uint8 = 1 << iota
	ProtoDNS
	ProtoOther
)

// ProtocolBit gives the Figures.Protocols bit of an L7 protocol name.
func ProtocolBit(p string) uint8 {
	switch p {
	case "":
		return 0
	case "HTTP":
		return ProtoHTTP
	case "DNS":
		return ProtoDNS
	}
	return ProtoOther
}

// Figures are the additive measures of a rollup row.
type Figures struct {
	Flows           uint64 // conversations first seen in the bucket
	PacketsToServer uint64
	PacketsToClient uint64
	BytesToServer   uint64 // IP bytes
	BytesToClient   uint64
	RTTSumNs        uint64 // sum of the conversations' non-zero handshake RTTs
	RTTCount        uint64 // conversations with a handshake RTT
	Retransmits     uint64
	Requests        uint64 // L7 transactions
	Errors          uint64 // HTTP 5xx, DNS rcodes other than NOERROR and NXDOMAIN, failed transactions
	Protocols       uint8  // Proto* bits
	Latency         Sketch // L7 latency
	RTT             Sketch // handshake RTTs of the conversations counted in RTTCount
}

// Add adds o to f.
func (f *Figures) Add(o *Figures) {
	f.Flows += o.Flows
	f.PacketsToServer += o.PacketsToServer
	f.PacketsToClient += o.PacketsToClient
	f.BytesToServer += o.BytesToServer
	f.BytesToClient += o.BytesToClient
	f.RTTSumNs += o.RTTSumNs
	f.RTTCount += o.RTTCount
	f.Retransmits += o.Retransmits
	f.Requests += o.Requests
	f.Errors += o.Errors
	f.Protocols |= o.Protocols
	f.Latency.Merge(&o.Latency)
	f.RTT.Merge(&o.RTT)
}

// Sub removes o from f, where o was added to f before. Protocols stay: a bit set is not
// counted.
func (f *Figures) Sub(o *Figures) {
	f.Flows -= o.Flows
	f.PacketsToServer -= o.PacketsToServer
	f.PacketsToClient -= o.PacketsToClient
	f.BytesToServer -= o.BytesToServer
	f.BytesToClient -= o.BytesToClient
	f.RTTSumNs -= o.RTTSumNs
	f.RTTCount -= o.RTTCount
	f.Retransmits -= o.Retransmits
	f.Requests -= o.Requests
	f.Errors -= o.Errors
	f.Latency.Sub(&o.Latency)
	f.RTT.Sub(&o.RTT)
}

// IsZero reports whether f counts nothing.
func (f *Figures) IsZero() bool {
	return f.Flows == 0 && f.PacketsToServer == 0 && f.PacketsToClient == 0 && f.RTTCount == 0 &&
		f.Retransmits == 0 && f.Requests == 0 && f.Latency.Count() == 0
}

// Rollup is one row: the figures of one key in one bucket. Rows are deltas (see the package
// comment).
type Rollup struct {
	Bucket time.Time // the bucket's start
	Key    RollupKey
	Figures
}

// RollupQuery selects rollup rows of one resolution and level.
type RollupQuery struct {
	Resolution Resolution
	Level      Level
	From, To   time.Time // bucket starts in [From, To)
	Source     string    // "" for any
	Target     string    // "" for any
}

// FlowRecord is a flow record as received, with the agent that sent it.
type FlowRecord struct {
	ID    uint64 // unique, assigned by the caller
	Agent string
	sdk.Flow
}

// EventRecord is a flow event as received.
type EventRecord struct {
	ID    uint64
	Agent string
	sdk.Event
}

// L7Record is an L7 record as received.
type L7Record struct {
	ID    uint64
	Agent string
	sdk.L7
}

// Records is a batch of records.
type Records struct {
	Flows  []FlowRecord
	Events []EventRecord
	L7     []L7Record
}

// Len is the number of records.
func (r *Records) Len() int { return len(r.Flows) + len(r.Events) + len(r.L7) }

// Cursor is the position after the last record of a page: the next page holds records strictly
// older, in (time, id) order.
type Cursor struct {
	Time time.Time
	ID   uint64
}

// FlowFilter selects flow records. A flow record's time is its End. Zero fields select all.
type FlowFilter struct {
	From, To    time.Time    // End in [From, To)
	NIC         string       // exact interface name
	Agent       string       // the agent that sent it
	Addr        netip.Addr   // client or server address
	Prefix      netip.Prefix // client or server address inside
	Transport   sdk.Transport
	Port        uint16 // client or server port (0: any)
	L7Method    string // conversations with an L7 record of this method in [From, To)
	CommunityID string
	After       *Cursor // page after this position
	Limit       int     // at most this many; required, at most MaxPage
}

// MaxPage bounds one page of records.
const MaxPage = 10000

// NodeAddress says that a graph node was last seen with an address at a time.
type NodeAddress struct {
	Node     string
	Addr     netip.Addr
	LastSeen time.Time
}

// Cutoffs says what Prune deletes: everything older than each time; a zero time deletes nothing
// of its kind.
type Cutoffs struct {
	Rollups map[Resolution]time.Time // bucket start before
	Records time.Time                // flow, event and L7 record time before
	Nodes   time.Time                // node addresses last seen before
	Alerts  time.Time                // alerts and events last updated before
}

// Kinds of AlertRecord.
const (
	KindAlert = "alert" // a rule's alert on one series, from pending to resolved
	KindEvent = "event" // something that happened once (a new edge)
)

// AlertRecord is one entry of the alert history.
type AlertRecord struct {
	ID          string // unique; writing an ID again replaces the entry
	Kind        string // KindAlert or KindEvent
	Fingerprint string // the series' identity: the same for every alert of one rule on one series
	Rule        string // "" for events
	State       string // pending, firing, resolved (alerts); the event's kind (events)
	Started     time.Time
	Updated     time.Time
	Body        []byte // the whole entry as JSON
}

// AlertQuery selects history entries, newest update first.
type AlertQuery struct {
	Kind        string    // "" for both
	State       string    // "" for any
	Fingerprint string    // "" for any
	Since       time.Time // updated at or after
	Limit       int       // required, at most MaxPage
}

// Store is the analysis store. Its lifecycle:
//
//  1. Open it (OpenSQLite);
//  2. call its methods from any number of goroutines;
//  3. Close it, which is safe twice; afterwards every method returns ErrClosed.
type Store interface {
	// WriteRollups adds rows at one resolution; a row with a key and bucket already present is
	// added to what readers get, not a replacement.
	WriteRollups(ctx context.Context, res Resolution, rows []Rollup) error
	// ReadRollups gives the rows that match, in no particular order and not summed.
	ReadRollups(ctx context.Context, q RollupQuery) ([]Rollup, error)

	// WriteRecords stores a batch of records.
	WriteRecords(ctx context.Context, r Records) error
	// QueryFlows gives flow records newest first (by End, then ID descending).
	QueryFlows(ctx context.Context, f FlowFilter) ([]FlowRecord, error)
	// Conversation gives every record of one community id with a time in [from, to) (zero
	// bounds: unbounded), each kind oldest first; at most limit of each kind.
	Conversation(ctx context.Context, communityID string, from, to time.Time, limit int) (Records, error)

	// WriteNodeAddresses records node addresses, keeping the latest LastSeen per pair.
	WriteNodeAddresses(ctx context.Context, nodes []NodeAddress) error
	// ReadNodeAddresses gives the pairs last seen at or after since.
	ReadNodeAddresses(ctx context.Context, since time.Time) ([]NodeAddress, error)

	// WriteAlerts adds or replaces history entries by ID.
	WriteAlerts(ctx context.Context, alerts []AlertRecord) error
	// ReadAlerts gives the entries that match, most recently updated first.
	ReadAlerts(ctx context.Context, q AlertQuery) ([]AlertRecord, error)

	// Prune deletes what is older than the cutoffs and says how many rows went.
	Prune(ctx context.Context, c Cutoffs) (int64, error)

	Close() error
}
