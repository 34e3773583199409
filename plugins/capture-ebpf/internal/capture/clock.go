package capture

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// clock converts the kernel's monotonic timestamps (bpf_ktime_get_ns) to wall-clock time.
type clock struct {
	wall time.Time
	mono int64
}

// Mapping kernel time to wall time needs the two clocks read together, and no two reads are
// quite together: read afresh for every ring record, the mapping moved by a microsecond or so
// from one record to the next, and a request and its response were placed with that error
// between them. So one offset (wall − monotonic) is kept for the process and replaced only when
// a careful reading differs from it by more than clockTolerance: a step of the wall clock
// (settimeofday, a leap second), not the noise of reading — NTP's slewing moves both clocks
// alike. A reading whose two monotonic reads, either side of the wall read, lie far apart (the
// thread was preempted between them) is not trusted at all.
const (
	clockTolerance = 20 * time.Microsecond
	clockMaxSpread = 10 * time.Microsecond
)

// clockOffset is the kept offset in nanoseconds; 0 until the first reading (a real offset is
// the time since 1970 less the time since boot, never 0).
var clockOffset atomic.Int64

func now() clock {
	var before, after unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	wall := time.Now().UnixNano()
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &after)
	mono := after.Nano()
	off := keepOffset(clockOffset.Load(), wall-(before.Nano()+mono)/2, mono-before.Nano())
	clockOffset.Store(off)
	return clock{wall: time.Unix(0, mono+off), mono: mono}
}

// keepOffset decides the offset to use given the kept one (0: none yet), a new reading and the
// spread of the monotonic reads around it.
func keepOffset(kept, reading, spread int64) int64 {
	switch {
	case kept == 0:
		return reading
	case spread > int64(clockMaxSpread):
		return kept
	case reading-kept > int64(clockTolerance) || kept-reading > int64(clockTolerance):
		return reading
	}
	return kept
}

func (c clock) at(mono uint64) time.Time {
	if mono == 0 {
		return time.Time{}
	}
	return c.wall.Add(time.Duration(int64(mono) - c.mono)).UTC()
}
