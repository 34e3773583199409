package api

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	good := []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"0", 0, "0s"},
		{"0s", 0, "0s"},
		{"30s", 30 * time.Second, "30s"},
		{"1m", time.Minute, "1m"},
		{"90s", 90 * time.Second, "1m30s"},
		{"1.5h", 90 * time.Minute, "1h30m"},
		{"24h", day, "24h"},
		{"1d", day, "24h"},
		{"7d", 7 * day, "168h"},
		{"30d", 30 * day, "720h"},
		{"1d12h", day + 12*time.Hour, "36h"},
		{"1d0.5s", day + 500*time.Millisecond, "24h500ms"},
		{"250ms", 250 * time.Millisecond, "250ms"},
		{"1m0.5s", time.Minute + 500*time.Millisecond, "1m500ms"},
		{"1500us", 1500 * time.Microsecond, "1.5ms"},
		{"2µs", 2 * time.Microsecond, "2us"},
		{"1h1ns", time.Hour + 1, "1h1ns"},
		{"36500d", 36500 * day, "876000h"},
	}
	for _, g := range good {
		t.Run(g.in, func(t *testing.T) {
			d, err := parseDuration(g.in)
			if err != nil || d != g.want {
				t.Fatalf("parseDuration(%q) = %v, %v; want %v", g.in, d, err, g.want)
			}
			out := formatDuration(d)
			if out != g.out {
				t.Errorf("formatDuration(%v) = %q, want %q", d, out, g.out)
			}
			// Go's own parser is the oracle for every form without days.
			if back, err := time.ParseDuration(out); err != nil || back != d {
				t.Errorf("time.ParseDuration(%q) = %v, %v; want %v", out, back, err, d)
			}
		})
	}
	for _, bad := range []string{"", "d", "1", "-1s", "-0.5h", "1d-1h", "1d+1h", "1.5d", "1w", "1 m", "1m ",
		"36501d", "36500d1ns", "99999999999999999999d", "9999999999h", "1e3s", "s", "1dd"} {
		if d, err := parseDuration(bad); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", bad, d)
		}
	}
	// "+1s" is Go syntax for a positive duration; it is accepted and written without the sign.
	if d, err := parseDuration("+1s"); err != nil || formatDuration(d) != "1s" {
		t.Errorf(`parseDuration("+1s") = %v, %v`, d, err)
	}
}

func TestFormatDurationRoundTrips(t *testing.T) {
	for _, d := range []time.Duration{1, 999, time.Microsecond, time.Millisecond + 1, time.Second - 1,
		time.Minute - 1, time.Hour - 1, 25*time.Hour + 1, 36500 * 24 * time.Hour, -time.Second} {
		out := formatDuration(d)
		back, err := time.ParseDuration(out)
		if err != nil || back != d {
			t.Errorf("formatDuration(%d) = %q, which reads back as %v, %v", d, out, back, err)
		}
	}
}
