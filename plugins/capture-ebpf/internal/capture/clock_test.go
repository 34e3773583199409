package capture

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Successive readings map one kernel timestamp to one wall time, to the nanosecond: the request
// and the response of a call are placed on the same scale.
func TestClockMappingIsStable(t *testing.T) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	for range 10 { // a first reading may have been preempted; the next careful one replaces it
		now()
	}
	first := now().at(uint64(ts.Nano()))
	if d := time.Since(first); d < 0 || d > time.Second {
		t.Fatalf("a kernel timestamp of now mapped to %s, %s from now", first, d)
	}
	for i := range 10000 {
		if got := now().at(uint64(ts.Nano())); !got.Equal(first) {
			t.Fatalf("reading %d mapped the same timestamp to %s, %s from the first", i, got, got.Sub(first))
		}
	}
}

func TestKeepOffset(t *testing.T) {
	const kept = int64(1_700_000_000_000_000_000)
	for _, c := range []struct {
		name          string
		kept, reading int64
		spread        int64
		want          int64
	}{
		{"the first reading is taken", 0, kept + 5, 100, kept + 5},
		{"reading noise keeps the offset", kept, kept + 3_000, 200, kept},
		{"noise the other way too", kept, kept - 19_000, 200, kept},
		{"a clock step is followed", kept, kept + 2_000_000, 200, kept + 2_000_000},
		{"a small step past the tolerance is followed", kept, kept - 21_000, 200, kept - 21_000},
		{"a preempted reading is not trusted", kept, kept + 2_000_000, 50_000, kept},
	} {
		if got := keepOffset(c.kept, c.reading, c.spread); got != c.want {
			t.Errorf("%s: keepOffset(%d, %d, %d) = %d, want %d", c.name, c.kept, c.reading, c.spread, got, c.want)
		}
	}
}
