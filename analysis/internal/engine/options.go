package engine

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
)

// Options configure an Engine. Zero fields take the defaults of Default.
type Options struct {
	Store store.Store      // required
	Now   func() time.Time // nil: time.Now
	Log   *slog.Logger     // nil: slog.Default()

	// Retention of rollups per resolution, and of flow records, events and L7 records.
	Retention10s    time.Duration // default 6h
	Retention1m     time.Duration // default 7d
	Retention1h     time.Duration // default 90d
	RecordRetention time.Duration // default 24h

	// FlushInterval is how often closed buckets and received records go to the store.
	FlushInterval time.Duration // default 1s
	// Lateness is how long a 10 s bucket stays open after it ends, for records that arrive
	// late: a conversation's last record arrives one idle timeout after its last packet. A
	// record older still is counted in the oldest open bucket (rollup.late).
	Lateness time.Duration // default 90s
	// MergeIdle is how long a conversation is remembered after its last record, to merge the
	// observations of several agents and to count it once.
	MergeIdle time.Duration // default 3m
	// L7Tolerance is how far apart two agents' times of one request may be for them to be one
	// request.
	L7Tolerance time.Duration // default 1s

	MaxConversations  int // conversations tracked for merging; default 262144
	MaxL7Tracked      int // recent requests tracked for merging; default 262144
	MaxKeysPerBucket  int // rollup keys per level in one 10 s bucket; default 100000
	MaxPendingRecords int // records waiting for the store; default 200000
	MaxNodeAddresses  int // node–address pairs remembered; default 100000
	MaxAgents         int // default 10000
	MaxServiceGraph   int // service-graph edges; default 100000
}

// Default gives the default options (without a store).
func Default() Options {
	return Options{
		Retention10s:      6 * time.Hour,
		Retention1m:       7 * 24 * time.Hour,
		Retention1h:       90 * 24 * time.Hour,
		RecordRetention:   24 * time.Hour,
		FlushInterval:     time.Second,
		Lateness:          90 * time.Second,
		MergeIdle:         3 * time.Minute,
		L7Tolerance:       time.Second,
		MaxConversations:  262144,
		MaxL7Tracked:      262144,
		MaxKeysPerBucket:  100000,
		MaxPendingRecords: 200000,
		MaxNodeAddresses:  100000,
		MaxAgents:         10000,
		MaxServiceGraph:   100000,
	}
}

// withDefaults fills zero fields from Default.
func (o Options) withDefaults() Options {
	d := Default()
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	seti := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	set(&o.Retention10s, d.Retention10s)
	set(&o.Retention1m, d.Retention1m)
	set(&o.Retention1h, d.Retention1h)
	set(&o.RecordRetention, d.RecordRetention)
	set(&o.FlushInterval, d.FlushInterval)
	set(&o.Lateness, d.Lateness)
	set(&o.MergeIdle, d.MergeIdle)
	set(&o.L7Tolerance, d.L7Tolerance)
	seti(&o.MaxConversations, d.MaxConversations)
	seti(&o.MaxL7Tracked, d.MaxL7Tracked)
	seti(&o.MaxKeysPerBucket, d.MaxKeysPerBucket)
	seti(&o.MaxPendingRecords, d.MaxPendingRecords)
	seti(&o.MaxNodeAddresses, d.MaxNodeAddresses)
	seti(&o.MaxAgents, d.MaxAgents)
	seti(&o.MaxServiceGraph, d.MaxServiceGraph)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// Validate names the first option that is wrong.
func (o Options) Validate() error {
	if o.Store == nil {
		return fmt.Errorf("engine option store: required")
	}
	durations := []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"retention_10s", o.Retention10s, 10 * time.Minute},
		{"retention_1m", o.Retention1m, 2 * time.Hour},
		{"retention_1h", o.Retention1h, 2 * time.Hour},
		{"record_retention", o.RecordRetention, time.Minute},
		{"flush_interval", o.FlushInterval, 10 * time.Millisecond},
		{"lateness", o.Lateness, 0},
		{"merge_idle", o.MergeIdle, time.Second},
		{"l7_tolerance", o.L7Tolerance, 0},
	}
	for _, d := range durations {
		if d.v < d.min {
			return fmt.Errorf("engine option %s: %v, want at least %v", d.name, d.v, d.min)
		}
	}
	if o.Retention1m < o.Retention10s {
		return fmt.Errorf("engine option retention_1m: %v, shorter than retention_10s (%v)", o.Retention1m, o.Retention10s)
	}
	if o.Retention1h < o.Retention1m {
		return fmt.Errorf("engine option retention_1h: %v, shorter than retention_1m (%v)", o.Retention1h, o.Retention1m)
	}
	if o.FlushInterval > 10*time.Second {
		return fmt.Errorf("engine option flush_interval: %v, want at most 10s (the finest bucket)", o.FlushInterval)
	}
	limits := []struct {
		name string
		v    int
	}{
		{"max_conversations", o.MaxConversations}, {"max_l7_tracked", o.MaxL7Tracked},
		{"max_keys_per_bucket", o.MaxKeysPerBucket}, {"max_pending_records", o.MaxPendingRecords},
		{"max_node_addresses", o.MaxNodeAddresses}, {"max_agents", o.MaxAgents},
		{"max_service_graph", o.MaxServiceGraph},
	}
	for _, l := range limits {
		if l.v < 1 {
			return fmt.Errorf("engine option %s: %d, want at least 1", l.name, l.v)
		}
	}
	return nil
}

func (o Options) retention(r store.Resolution) time.Duration {
	switch r {
	case store.Res10s:
		return o.Retention10s
	case store.Res1m:
		return o.Retention1m
	}
	return o.Retention1h
}
