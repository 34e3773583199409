package doctor

// The checks, in the order the report lists them. Each adds one line (or one per item) and
// records NeededBy, from which the verdict decides the backend.

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

func (r *run) checkKernel() {
	rel := r.release
	c := Check{Name: "kernel", NeededBy: []string{BackendEBPF}}
	switch {
	case r.releaseErr != nil:
		c.Status, c.Found = Warn, fmt.Sprintf("reading the kernel release: %v", r.releaseErr)
		c.Fix, c.NeededBy = "nothing to do if the checks below pass; uname -r names the kernel", nil
	case !r.kernelOK:
		c.Status, c.Found = Warn, fmt.Sprintf("%s: not a version this check can read", rel)
		c.Fix, c.NeededBy = "nothing to do if the BPF checks below pass", nil
	case !r.kernel.atLeast(5, 11):
		c.Status = Fail
		c.Found = fmt.Sprintf("%s: the eBPF capture needs 5.11 or later (BPF ring buffers, bpf_ktime_get_coarse_ns)", rel)
		c.Fix = "upgrade the kernel to 5.11 or later (6.6 or later for TCX); " + fallbackNote
	default:
		c.Status = OK
		attach := "TCX (6.6+)"
		if !r.kernel.atLeast(6, 6) {
			attach = "TC clsact (TCX needs 6.6)"
		}
		c.Found = fmt.Sprintf("%s: new enough for the eBPF capture (5.11+); attaching with %s", rel, attach)
	}
	r.add(c)
}

func denied(err error) bool {
	return errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

func unsupported(err error) bool { return errors.Is(err, ebpf.ErrNotSupported) }

// deniedCheck is the verdict on a probe this process was not allowed to make: a failure, unless
// the capture plugin will run with what it needs, in which case only the probe is missing.
func (r *run) deniedCheck(c Check, what string, err error, backend string, caps []int) Check {
	if r.capsEnough(backend, caps) {
		c.Status = Warn
		c.Found = fmt.Sprintf("not probed: this process may not %s (%v), but quanyu-capture-%s will run with %s",
			what, err, backend, capList(caps))
		c.Fix = "run quanyu doctor as root to probe the kernel itself"
		return c
	}
	c.Status = Fail
	c.Found = fmt.Sprintf("permission denied: this process may not %s (%v)", what, err)
	c.Fix = capsFix + "; " + fallbackNote
	if backend == BackendMmap {
		c.Fix = capsFix
	}
	return c
}

func capList(caps []int) string {
	names := make([]string, len(caps))
	for i, c := range caps {
		names[i] = CapName(c)
	}
	switch len(names) {
	case 1:
		return names[0]
	default:
		return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
	}
}

// checkBPF loads a program of the capture program's type. It proves the kernel has BPF and that
// this process may use it; the verifier's stricter rules without CAP_PERFMON are the capability
// checks' business, since a probe program this small passes them anyway.
func (r *run) checkBPF() bool {
	err := r.h.ProbeProgram()
	c := Check{Name: "bpf", NeededBy: []string{BackendEBPF}}
	switch {
	case err == nil:
		c.Status, c.Found = OK, "a sched_cls BPF program (the capture program's type) loads"
	case unsupported(err):
		c.Status, c.Found = Fail, fmt.Sprintf("the kernel does not load sched_cls BPF programs: %v", err)
		c.Fix = "a kernel with CONFIG_BPF_SYSCALL and CONFIG_NET_CLS_BPF (or CONFIG_NET_XGRESS); " + fallbackNote
	case denied(err):
		c = r.deniedCheck(c, "load BPF programs", err, BackendEBPF, ebpfCaps)
	default:
		c.Status, c.Found = Fail, fmt.Sprintf("loading a sched_cls BPF program: %v", err)
		c.Fix = "see the error; " + fallbackNote
	}
	r.add(c)
	return err == nil
}

func notProbed(name string) Check {
	return Check{Name: name, Status: Warn, Found: "not probed: no BPF program could be loaded here (see bpf)",
		Fix: "fix bpf first", NeededBy: []string{BackendEBPF}}
}

// The map types and helpers the capture program uses (bpf/capture.c), with the kernel that
// brought each: a kernel that lacks one rejects the whole program.
var (
	neededMaps = []struct {
		t           ebpf.MapType
		name, since string
	}{
		{ebpf.RingBuf, "ring buffer", "5.8"},
		{ebpf.LPMTrie, "LPM trie", "4.11"},
		{ebpf.PerCPUHash, "per-CPU hash", "4.6"},
		{ebpf.LRUHash, "LRU hash", "4.10"},
		{ebpf.PerCPUArray, "per-CPU array", "4.6"},
		{ebpf.Hash, "hash", "3.19"},
		{ebpf.Array, "array", "3.19"},
	}
	neededHelpers = []struct {
		f           asm.BuiltinFunc
		name, since string
	}{
		{asm.FnRingbufReserve, "bpf_ringbuf_reserve", "5.8"},
		{asm.FnRingbufSubmit, "bpf_ringbuf_submit", "5.8"},
		{asm.FnRingbufOutput, "bpf_ringbuf_output", "5.8"},
		{asm.FnRingbufQuery, "bpf_ringbuf_query", "5.8"},
		{asm.FnKtimeGetCoarseNs, "bpf_ktime_get_coarse_ns", "5.11"},
		{asm.FnSkbLoadBytes, "bpf_skb_load_bytes", "4.5"},
		{asm.FnSkbPullData, "bpf_skb_pull_data", "4.9"},
		{asm.FnKtimeGetNs, "bpf_ktime_get_ns", "4.1"},
	}
)

func (r *run) checkBPFMaps(loaded bool) {
	r.checkFeatures(loaded, "bpf.maps", "map types", len(neededMaps), func(i int) (string, string, error) {
		m := neededMaps[i]
		return m.name, m.since, r.h.ProbeMap(m.t)
	})
}

func (r *run) checkBPFHelpers(loaded bool) {
	r.checkFeatures(loaded, "bpf.helpers", "helpers", len(neededHelpers), func(i int) (string, string, error) {
		hp := neededHelpers[i]
		return hp.name, hp.since, r.h.ProbeHelper(hp.f)
	})
}

// checkFeatures probes n kernel features, each giving its name, the kernel that brought it and
// the probe's answer, and reports them as one check: present, missing, or not answered.
func (r *run) checkFeatures(loaded bool, name, what string, n int, probe func(i int) (feature, since string, err error)) {
	if !loaded {
		r.add(notProbed(name))
		return
	}
	var have, missing, broken []string
	for i := range n {
		feature, since, err := probe(i)
		switch {
		case err == nil:
			have = append(have, feature)
		case unsupported(err):
			missing = append(missing, fmt.Sprintf("%s (%s+)", feature, since))
		default:
			broken = append(broken, fmt.Sprintf("%s: %v", feature, err))
		}
	}
	r.add(probeList(name, what, have, missing, broken))
}

func probeList(name, what string, have, missing, broken []string) Check {
	c := Check{Name: name, NeededBy: []string{BackendEBPF}}
	switch {
	case len(missing) > 0:
		c.Status = Fail
		c.Found = fmt.Sprintf("the kernel lacks the %s %s", what, strings.Join(missing, ", "))
		c.Fix = "a kernel of 5.11 or later; " + fallbackNote
	case len(broken) > 0:
		c.Status = Fail
		c.Found = fmt.Sprintf("probing %s failed: %s", what, strings.Join(broken, "; "))
		c.Fix = "see the errors; " + fallbackNote
	default:
		c.Status, c.Found = OK, fmt.Sprintf("%s present: %s", what, strings.Join(have, ", "))
	}
	return c
}

func (r *run) checkAttach(loaded bool) {
	if !loaded {
		r.add(notProbed("bpf.attach"))
		return
	}
	err := r.h.ProbeTCX()
	c := Check{Name: "bpf.attach", NeededBy: []string{BackendEBPF}}
	switch {
	case err == nil:
		c.Status, c.Found, r.attach = OK, "TCX: a test program attached to lo's ingress and detached", "tcx"
	case unsupported(err):
		// The capture attaches with TC clsact where TCX is missing: the program type loaded,
		// so TC can run it, and the qdisc needs CAP_NET_ADMIN, which the capability checks cover.
		c.Status, c.Found, r.attach = OK, "TC clsact: this kernel has no TCX (6.6+), so the capture attaches with TC", "tc"
	case denied(err):
		c = r.deniedCheck(c, "attach BPF programs to interfaces", err, BackendEBPF, ebpfCaps)
		if c.Status == Warn {
			r.attach = "tcx"
			if r.kernelOK && !r.kernel.atLeast(6, 6) {
				r.attach = "tc"
			}
		}
	default:
		c.Status, c.Found = Fail, fmt.Sprintf("attaching a test program with TCX to lo: %v", err)
		c.Fix = "see the error; " + fallbackNote
	}
	r.add(c)
}

// BTFPath is the kernel's own type information.
const BTFPath = "/sys/kernel/btf/vmlinux"

func (r *run) checkBTF() {
	c := Check{Name: "bpf.btf"}
	info, err := r.h.Stat(BTFPath)
	if err != nil {
		// The capture program reads packets, not kernel structures: it has no CO-RE relocations
		// and loads without the kernel's BTF. Tools such as bpftool want it, hence the warning.
		c.Status = Warn
		c.Found = fmt.Sprintf("%s is missing (%v); the capture does not need it (its program has no CO-RE relocations)", BTFPath, err)
		c.Fix = "optional, for bpftool and other eBPF tools: a kernel built with CONFIG_DEBUG_INFO_BTF=y"
	} else {
		c.Status = OK
		c.Found = fmt.Sprintf("%s present (%.1f MiB)", BTFPath, float64(info.Size())/(1<<20))
	}
	r.add(c)
}

func (r *run) checkMemlock() {
	c := Check{Name: "bpf.memlock", Status: OK}
	cur, _, err := r.h.Memlock()
	limit := "unlimited"
	if err != nil {
		limit = fmt.Sprintf("unknown (%v)", err)
	} else if cur != unix.RLIM_INFINITY {
		limit = fmt.Sprintf("%d KiB", cur/1024)
	}
	switch {
	case !r.kernelOK || r.kernel.atLeast(5, 11):
		// cilium/ebpf's rlimit.RemoveMemlock, which the capture calls, does nothing on these
		// kernels; CAP_SYS_RESOURCE, which it would need to raise the limit, is not needed either.
		c.Found = fmt.Sprintf("RLIMIT_MEMLOCK %s; not used for BPF memory, which kernels since 5.11 charge to the memory cgroup", limit)
	case err == nil && cur == unix.RLIM_INFINITY:
		c.Found = "RLIMIT_MEMLOCK unlimited (this kernel charges BPF memory to it)"
	default:
		c.Status = Warn
		c.Found = fmt.Sprintf("RLIMIT_MEMLOCK %s, and this kernel charges BPF memory to it; the eBPF capture needs 5.11 anyway", limit)
		c.Fix = "LimitMEMLOCK=infinity in the agent's systemd unit, or CAP_SYS_RESOURCE"
	}
	r.add(c)
}

func (r *run) checkAFPacket() {
	err := r.h.ProbeAFPacket()
	c := Check{Name: "af_packet", NeededBy: []string{BackendMmap}}
	switch {
	case err == nil:
		c.Status, c.Found = OK, "an AF_PACKET socket with a TPACKET_V3 receive ring opens and maps"
	case denied(err):
		c = r.deniedCheck(c, "open AF_PACKET sockets", err, BackendMmap, mmapCaps)
	case errors.Is(err, unix.EAFNOSUPPORT):
		c.Status, c.Found = Fail, fmt.Sprintf("the kernel has no AF_PACKET sockets: %v", err)
		c.Fix = "a kernel with CONFIG_PACKET"
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT):
		c.Status, c.Found = Fail, fmt.Sprintf("the kernel refuses TPACKET_V3 rings: %v", err)
		c.Fix = "a kernel of 3.2 or later"
	default:
		c.Status, c.Found = Fail, fmt.Sprintf("opening an AF_PACKET TPACKET_V3 ring: %v", err)
		c.Fix = "see the error"
	}
	r.add(c)
}

func (r *run) checkNetns() {
	c := Check{Name: "netns", Status: OK}
	ns, nsErr := r.h.ReadLink("/proc/self/ns/net")
	ip, ipErr := r.h.LookPath("ip")
	switch {
	case nsErr != nil:
		c.Status = Warn
		c.Found = fmt.Sprintf("/proc/self/ns/net: %v; the lab (network namespaces joined by veth pairs) cannot run", nsErr)
		c.Fix = "a kernel with CONFIG_NET_NS and /proc mounted; only the lab and the tests need it"
	case ipErr != nil:
		c.Status = Warn
		c.Found = fmt.Sprintf("network namespaces work (%s), but ip (iproute2) is not on PATH; the lab needs it", ns)
		c.Fix = "apt-get install iproute2 (only the lab and the tests need it)"
	default:
		c.Found = fmt.Sprintf("network namespaces work (%s); ip at %s", ns, ip)
	}
	r.add(c)
}

func (r *run) checkCaps() {
	if r.procErr != nil {
		r.add(Check{Name: "capabilities", Status: Fail, NeededBy: []string{BackendEBPF, BackendMmap},
			Found: fmt.Sprintf("reading this process's capabilities: %v", r.procErr), Fix: "a Linux /proc; " + capsFix})
		return
	}
	for _, need := range []struct {
		backend string
		caps    []int
		why     map[int]string
	}{
		{BackendEBPF, ebpfCaps, map[int]string{
			CapBPF:      "loading the capture program and creating its maps",
			CapPerfmon:  "the capture program's pointer arithmetic, which the verifier refuses without it",
			CapNetAdmin: "loading a network program and attaching it with TCX or TC"}},
		{BackendMmap, mmapCaps, map[int]string{CapNetRaw: "opening AF_PACKET sockets"}},
	} {
		for _, cp := range need.caps {
			r.add(r.capCheck(need.backend, cp, need.why[cp]))
		}
	}
	// The agent itself (not a plugin) reads the inventory: entering another network namespace
	// needs CAP_SYS_ADMIN, and finding containers' namespaces through /proc/PID/ns/net needs
	// CAP_SYS_PTRACE for other users' processes.
	c := Check{Name: "CAP_SYS_ADMIN", Status: OK}
	switch eff := r.proc.Effective; {
	case eff.Has(CapSysAdmin) && eff.Has(CapSysPtrace):
		c.Found = "present, with CAP_SYS_PTRACE: the inventory lists every network namespace's interfaces"
	default:
		c.Status = Warn
		c.Found = "missing (or CAP_SYS_PTRACE is): inventory records list this network namespace's interfaces only"
		c.Fix = "optional: run as root, or add CAP_SYS_ADMIN and CAP_SYS_PTRACE, to inventory containers' namespaces too"
	}
	r.add(c)
}

func (r *run) capCheck(backend string, cp int, why string) Check {
	name := CapName(cp)
	c := Check{Name: name, NeededBy: []string{backend}}
	plugin := "quanyu-capture-" + backend
	switch {
	case r.execCaps[backend].Has(cp):
		c.Status, c.Found = OK, fmt.Sprintf("%s will have it (%s)", plugin, why)
	case r.hasCap(backend, cp):
		c.Status, c.Found = OK, fmt.Sprintf("%s will have it through CAP_SYS_ADMIN (%s)", plugin, why)
	default:
		c.Status = Fail
		if r.proc.Effective.Has(cp) {
			// The classic trap: setcap on bin/quanyu. The plugins are other executables, and
			// without root an exec keeps only ambient and the new file's own capabilities.
			c.Found = fmt.Sprintf("missing for %s: this process has it, but the plugin is another program and, "+
				"not running as root, gets only ambient capabilities or its own file capabilities (needed for %s)", plugin, why)
		} else {
			c.Found = fmt.Sprintf("missing: %s would run without it (needed for %s)", plugin, why)
		}
		c.Fix = capsFix
		if backend == BackendEBPF {
			c.Fix += "; " + fallbackNote
		}
	}
	return c
}

const pluginFix = "build them with make build (bin/plugins beside bin/quanyu), or point the agent at them: " +
	"--plugin-dir DIR, QUANYU_AGENT_PLUGIN_DIR or plugin_dir in its configuration"

// pluginProblem says what is wrong with one plugin binary, or "".
func (r *run) pluginProblem(name string) string {
	path := r.pluginPath(name)
	info, err := r.h.Stat(path)
	switch {
	case err != nil:
		return fmt.Sprintf("%s: %v", path, err)
	case info.IsDir() || info.Mode()&0o111 == 0:
		return fmt.Sprintf("%s is not an executable file", path)
	}
	if want, ok := r.o.Checksums[name]; ok {
		got, err := r.h.FileSHA256(path)
		if err != nil {
			return fmt.Sprintf("%s: reading it to check its checksum: %v", path, err)
		}
		if !strings.EqualFold(got, want) {
			return fmt.Sprintf("%s has SHA-256 %s, but plugin_checksums pins %s", path, got, want)
		}
	}
	return ""
}

func (r *run) checkPlugins() {
	for _, b := range r.backends() {
		name := "capture-" + b
		c := Check{Name: "plugin." + name, NeededBy: []string{b}, Status: OK, Found: r.pluginPath(name)}
		if p := r.pluginProblem(name); p != "" {
			c.Status, c.Found, c.Fix = Fail, p, pluginFix
			if strings.Contains(p, "plugin_checksums") {
				c.Fix = "rebuild the plugin from the same release, or update plugin_checksums." + name
			}
		}
		r.add(c)
	}
	if len(r.o.Plugins) == 0 {
		return
	}
	c := Check{Name: "plugins", NeededBy: []string{NeedAgent}, Status: OK}
	var problems []string
	for _, name := range r.o.Plugins {
		if p := r.pluginProblem(name); p != "" {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		c.Status, c.Found, c.Fix = Fail, strings.Join(problems, "; "), pluginFix
	} else {
		c.Found = fmt.Sprintf("%s in %s", strings.Join(r.o.Plugins, ", "), r.o.PluginDir)
	}
	r.add(c)
}

// backends are the configured capture backend and its fallback, without repeats.
func (r *run) backends() []string {
	out := []string{}
	for _, b := range []string{r.o.Backend, r.o.Fallback} {
		if b != "" && !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out
}

func (r *run) checkStateDirs() {
	for _, sd := range r.o.StateDirs {
		c := Check{Name: "state." + sd.Program, Status: OK}
		tested, err := r.h.Writable(sd.Dir)
		switch {
		case err != nil:
			c.Status = Warn
			c.Found = fmt.Sprintf("%s cannot be written or created: %v", sd.Dir, err)
			c.Fix = fmt.Sprintf("%s keeps its database there: set data_dir (--data-dir), or run %s as a user that may "+
				"write it (the systemd units use StateDirectory=)", sd.Program, sd.Program)
		case tested == sd.Dir:
			c.Found = fmt.Sprintf("%s is writable", sd.Dir)
		default:
			c.Found = fmt.Sprintf("%s does not exist yet; %s is writable, so %s creates it at its first start", sd.Dir, tested, sd.Program)
		}
		r.add(c)
	}
}

func (r *run) checkPorts() {
	for _, p := range r.o.Ports {
		addr := fmt.Sprintf("127.0.0.1:%d", p.Port)
		c := Check{Name: fmt.Sprintf("port.%d", p.Port), Status: OK}
		err := r.h.Listen(addr)
		if err == nil {
			c.Found = fmt.Sprintf("%s is free for %s", addr, p.Who)
			r.add(c)
			continue
		}
		owner, _ := r.h.PortOwner(p.Port)
		switch {
		case strings.HasPrefix(owner, "quanyu"):
			c.Found = fmt.Sprintf("%s is in use by %s, Quanyu itself: %s is already running", addr, owner, p.Who)
		case owner != "":
			c.Status = Warn
			c.Found = fmt.Sprintf("%s is in use by %s; %s cannot listen there", addr, owner, p.Who)
			c.Fix = fmt.Sprintf("stop that program, or move %s: %s", p.Who, p.Setting)
		default:
			c.Status = Warn
			c.Found = fmt.Sprintf("%s is taken (%v) by a process this user cannot see; %s cannot listen there", addr, err, p.Who)
			c.Fix = fmt.Sprintf("run quanyu doctor as root to name it, then stop it or move %s: %s", p.Who, p.Setting)
		}
		r.add(c)
	}
}

func (r *run) checkTools() {
	for _, t := range r.o.Tools {
		c := Check{Name: "tool." + t.Name, Status: OK}
		if path, err := r.h.LookPath(t.Name); err == nil {
			c.Found = fmt.Sprintf("%s (%s)", path, t.Why)
		} else {
			c.Status = Warn
			c.Found = fmt.Sprintf("not on PATH; optional: %s", t.Why)
			c.Fix = "apt-get install " + t.Package
		}
		r.add(c)
	}
}
