package core

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// cpuCounters are the CPU time the agent has used, in milliseconds of user and system time since
// it started: its own process, and its plugin processes together (each as long as it has run —
// a restarted plugin starts again from zero). Operators hold the agent to a CPU budget; these say
// what it spends, in the stats records and in mix's agent list.
func (a *Agent) cpuCounters(c map[string]uint64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		c["cpu.agent_ms"] = uint64(ru.Utime.Nano()/1e6 + ru.Stime.Nano()/1e6)
	}
	var plugins uint64
	for _, p := range a.host.Plugins() {
		if ms, err := procCPUms(p.Pid()); err == nil {
			plugins += ms
		}
	}
	c["cpu.plugins_ms"] = plugins
}

// procCPUms reads a process's user and system time from /proc/PID/stat. The kernel gives them in
// USER_HZ ticks, which Linux fixes at 100 a second for this interface whatever the kernel's HZ.
func procCPUms(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("no process")
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	s := string(raw)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, fmt.Errorf("reading /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[end+1:])
	// After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("reading /proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("reading /proc/%d/stat: bad times", pid)
	}
	return (utime + stime) * 10, nil
}
