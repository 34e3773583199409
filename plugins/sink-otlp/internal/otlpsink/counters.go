package otlpsink

import (
	"errors"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
)

// Drop reasons, as they appear in Health (dropped.<reason>).
const (
	dropQueueFull     = "queue_full"     // Write found the queue full: the collector is slower than the records
	dropExportFailed  = "export_failed"  // an export failed after its retries
	dropRejected      = "rejected"       // the collector answered with a partial success rejecting them
	dropShutdown      = "shutdown"       // still queued when a shutdown or reconfiguration ran out of time
	dropNotConfigured = "not_configured" // written before the first Configure
)

var dropReasons = []string{dropQueueFull, dropExportFailed, dropRejected, dropShutdown, dropNotConfigured}

// kind is what a record was, for the sent.* counters.
type kind uint8

const (
	kindFlow kind = iota
	kindEvent
	kindL7
	kindInventory
	numKinds
)

var kindNames = [numKinds]string{"flows", "events", "l7", "inventory"}

// counters are the sink's, across configurations.
type counters struct {
	sent         [numKinds]atomic.Uint64
	retried      atomic.Uint64
	exportErrors atomic.Uint64
	skipped      atomic.Uint64 // stats records and samples: not part of the OTLP mapping
	edgesFull    atomic.Uint64 // flow records left out of the edge sums: maxEdges edges already summed
	dropped      map[string]*atomic.Uint64

	mu       sync.Mutex
	lastErr  error // the last export's error; nil once an export succeeds
	lastDrop uint64
}

func newCounters() *counters {
	c := &counters{dropped: map[string]*atomic.Uint64{}}
	for _, r := range dropReasons {
		c.dropped[r] = &atomic.Uint64{}
	}
	return c
}

func (c *counters) drop(reason string, n uint64) {
	if n > 0 {
		c.dropped[reason].Add(n)
	}
}

// retries adds the attempts of one export beyond its first.
func (c *counters) retries(attempts uint64) {
	if attempts > 1 {
		c.retried.Add(attempts - 1)
	}
}

func (c *counters) exportFailed(err error) {
	c.exportErrors.Add(1)
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

func (c *counters) exportOK() {
	c.mu.Lock()
	c.lastErr = nil
	c.mu.Unlock()
}

func (c *counters) totalDropped() uint64 {
	var n uint64
	for _, d := range c.dropped {
		n += d.Load()
	}
	return n
}

func (c *counters) snapshot() map[string]uint64 {
	m := map[string]uint64{
		"retried":            c.retried.Load(),
		"export.errors":      c.exportErrors.Load(),
		"skipped":            c.skipped.Load(),
		"metrics.edges_full": c.edgesFull.Load(),
	}
	for k, name := range kindNames {
		m["sent."+name] = c.sent[k].Load()
	}
	for r, d := range c.dropped {
		m["dropped."+r] = d.Load()
	}
	return m
}

// partialRe reads the rejected count out of the SDK trace exporters' partial-success error,
// whose type is internal to them: "OTLP partial success: … (N spans rejected)".
var partialRe = regexp.MustCompile(`OTLP partial success: .*\((\d+) \w+ rejected\)`)

// partialRejected says how many records a partial success rejected; ok is false when err is
// not one.
func partialRejected(err error) (n uint64, ok bool) {
	var p *partialSuccess
	if errors.As(err, &p) {
		return uint64(max(p.rejected, 0)), true
	}
	m := partialRe.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, false
	}
	n, perr := strconv.ParseUint(m[1], 10, 64)
	return n, perr == nil
}
