package core

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// procCPUms agrees with the kernel's other account of this process's CPU time (getrusage).
func TestProcCPUms(t *testing.T) {
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); { // something to count
	}
	ms, err := procCPUms(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	want := uint64(ru.Utime.Nano()/1e6 + ru.Stime.Nano()/1e6)
	// /proc counts in 10 ms ticks and was read first: it may be up to a few ticks behind.
	if ms > want+10 || ms+50 < want || ms < 40 {
		t.Errorf("/proc/self/stat says %d ms, getrusage %d ms, after a 50 ms busy loop", ms, want)
	}
	if _, err := procCPUms(0); err == nil {
		t.Error("pid 0 gave no error")
	}
	if _, err := procCPUms(1 << 30); err == nil {
		t.Error("a pid that does not exist gave no error")
	}
}
