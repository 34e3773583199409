package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is what /proc says of a process.
type proc struct {
	pid     int
	state   byte   // R, S, D, Z, …
	start   uint64 // start time in clock ticks since boot
	cmdline []string
}

// readProc reads a process's state, start time and command line; ok is false when it is gone.
func readProc(pid int) (proc, bool) {
	p := proc{pid: pid}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return p, false
	}
	// The command name, in parentheses, may hold spaces and parentheses itself: the fields
	// start after the last ')'. Field 3 is the state, field 22 the start time.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return p, false
	}
	fields := strings.Fields(string(raw[i+1:]))
	if len(fields) < 20 {
		return p, false
	}
	p.state = fields[0][0]
	p.start, _ = strconv.ParseUint(fields[19], 10, 64)
	if cl, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil {
		p.cmdline = strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
	}
	return p, true
}

// running reports whether the process is there and not a zombie, and (when start is not 0) is
// still the process that started then, not another that got the pid since.
func running(pid int, start uint64) bool {
	p, ok := readProc(pid)
	return ok && p.state != 'Z' && p.state != 'X' && (start == 0 || p.start == start)
}

// servesLab reports whether a command line is a `lab serve` of the lab with this prefix.
func servesLab(cmdline []string, prefix string) bool {
	serve, lab := false, false
	for i, a := range cmdline {
		if a == "serve" && i > 0 && cmdline[i-1] == "lab" {
			serve = true
		}
		if a == "--lab="+prefix || a == "-lab="+prefix ||
			(a == "--lab" || a == "-lab") && i+1 < len(cmdline) && cmdline[i+1] == prefix {
			lab = true
		}
	}
	return serve && lab
}

// labProcesses are the running `lab serve` processes of the lab with this prefix.
func labProcesses(prefix string) []proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		p, ok := readProc(pid)
		if ok && p.state != 'Z' && servesLab(p.cmdline, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// startServe starts a host's service in its namespace, its output to the host's log file.
func startServe(o Options, h Host, args []string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(h.Log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the log of %s: %w", h.Name, err)
	}
	defer logf.Close() // the child has its own copy
	full := append([]string{"netns", "exec", h.Namespace, o.Exe, "lab", "serve", h.Name,
		"--lab", o.Prefix, "--netns", h.Namespace}, args...)
	if !o.Detach {
		full = append(full, "--parent-pid", strconv.Itoa(os.Getpid()))
	}
	cmd := exec.Command("ip", full...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s's service: %w", h.Name, err)
	}
	return cmd, nil
}

// stopProcesses sends SIGTERM, gives the processes a few seconds to go, then SIGKILL; it
// returns the pids that were there to stop.
func stopProcesses(ctx context.Context, ps []proc) []proc {
	var live []proc
	for _, p := range ps {
		if syscall.Kill(p.pid, syscall.SIGTERM) == nil {
			live = append(live, p)
		}
	}
	gone := func() bool {
		for _, p := range live {
			if running(p.pid, p.start) {
				return false
			}
		}
		return true
	}
	if !waitFor(ctx, 5*time.Second, gone) {
		for _, p := range live {
			if running(p.pid, p.start) {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
		waitFor(ctx, 3*time.Second, gone)
	}
	return live
}

// waitFor polls cond until it holds, the timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
