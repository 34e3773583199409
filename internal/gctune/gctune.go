// Package gctune sets the garbage collector for Quanyu's long-running processes.
//
// The agent and its plugins keep small heaps (a few MiB of flow and decoder state) and allocate
// quickly while records flow, so at Go's default GOGC=100 they collect many times a second: on
// the capture → decoder path that was a third of the CPU (bench/RESULTS.md). Letting the heap
// grow to five times the live data, under a soft memory limit, removes most of those cycles and
// keeps the process's memory bounded.
package gctune

import (
	"os"
	"runtime/debug"
)

const (
	// Percent is GOGC for Quanyu's processes.
	Percent = 400
	// Limit is the soft memory limit (GOMEMLIMIT): above it the collector works harder whatever
	// GOGC says. Far above what the agent or a plugin needs; it only stops Percent from letting a
	// large live heap grow five-fold.
	Limit = 512 << 20
)

// Apply sets Percent and Limit, except where the operator set GOGC or GOMEMLIMIT: theirs win.
func Apply() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(Percent)
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		debug.SetMemoryLimit(Limit)
	}
}
