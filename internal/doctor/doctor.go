// Package doctor checks a host for what Quanyu needs and says how to fix what is missing. Each
// check probes for real where it can (it loads a BPF program, attaches one with TCX, opens an
// AF_PACKET ring, binds the default ports) rather than guessing from version numbers, and each
// result names the capture backends it matters to. From those the report tells which backend the
// agent would run with: its configured one, else its fallback, else none.
//
// Everything the checks ask of the machine goes through Host, so the decisions — what is a
// failure, what only a warning, which backend wins — are tested with a fake host, and the real
// probes are tested on a real one.
package doctor

import (
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Status is a check's verdict.
type Status string

const (
	// OK: present and working.
	OK Status = "OK"
	// Warn: missing or unknown, but nothing the capture needs; or not probed here, with what the
	// capture will have looking sufficient.
	Warn Status = "WARN"
	// Fail: what needs it (NeededBy) will not run.
	Fail Status = "FAIL"
)

// NeedAgent marks a check every capture backend needs (the agent does not start without it).
// The other NeededBy values are backend names: "ebpf", "mmap".
const NeedAgent = "agent"

// Backend names the checks refer to.
const (
	BackendEBPF = "ebpf"
	BackendMmap = "mmap"
)

// Check is one line of the report.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Found is what was found, in a sentence.
	Found string `json:"found"`
	// Fix says exactly what to do when Status is not OK.
	Fix string `json:"fix,omitempty"`
	// NeededBy are the backends (or NeedAgent) a Fail stops; empty when nothing the agent runs
	// depends on it (the lab's tools, mix's and analysis's ports and directories).
	NeededBy []string `json:"needed_by,omitempty"`
}

// Capture is the verdict: the backend the agent would run with.
type Capture struct {
	// Backend is the one the agent would use; empty when none can run.
	Backend string `json:"backend"`
	// Attach is how the eBPF program would be attached, "tcx" or "tc", when Backend is ebpf.
	Attach string `json:"attach,omitempty"`
	// Ready tells, for the configured backend and fallback, whether all they need is present.
	Ready   map[string]bool `json:"ready"`
	Summary string          `json:"summary"`
}

// Report is the result of Run.
type Report struct {
	Checks  []Check `json:"checks"`
	Capture Capture `json:"capture"`
	// OK is true when at least one of the configured capture backends can run: the exit code.
	OK bool `json:"ok"`
}

// Check returns the named check, or false.
func (r *Report) Check(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// Host is everything the checks ask of the machine. Errors follow cilium/ebpf's features
// package: nil means available, an error wrapping ebpf.ErrNotSupported means the kernel lacks it,
// a permission error (EPERM, EACCES) means this process may not use it, anything else is
// inconclusive.
type Host interface {
	// KernelRelease is uname's release ("6.8.0-45-generic").
	KernelRelease() (string, error)
	// Process is this process's capability sets (/proc/self/status) and effective uid.
	Process() (Process, error)
	// FileCaps is an executable's file capabilities (setcap); nil when it has none.
	FileCaps(path string) (*FileCaps, error)
	// ProbeProgram loads a sched_cls BPF program, the type of the capture program.
	ProbeProgram() error
	// ProbeMap creates a map of the type.
	ProbeMap(ebpf.MapType) error
	// ProbeHelper loads a sched_cls program calling the helper.
	ProbeHelper(asm.BuiltinFunc) error
	// ProbeTCX attaches a do-nothing sched_cls program to lo's TCX ingress and detaches it.
	ProbeTCX() error
	// ProbeAFPacket opens an AF_PACKET socket, sets TPACKET_V3 and maps a small receive ring.
	ProbeAFPacket() error
	// Memlock is RLIMIT_MEMLOCK's soft and hard limit (unix.RLIM_INFINITY for none).
	Memlock() (cur, max uint64, err error)
	Stat(path string) (fs.FileInfo, error)
	ReadLink(path string) (string, error)
	LookPath(name string) (string, error)
	FileSHA256(path string) (string, error)
	// Writable tells whether dir can be written, or, when it does not exist yet, created: it
	// returns the existing directory it tested (dir, or its nearest existing parent).
	Writable(dir string) (tested string, err error)
	// Listen binds addr (TCP) and closes it at once.
	Listen(addr string) error
	// PortOwner names the process listening on the TCP port ("quanyu mix (pid 42)"); "" when
	// it cannot be told (another user's process, seen without privilege).
	PortOwner(port int) (string, error)
}

// Options are what the agent is configured to run, and what else to look at.
type Options struct {
	// Backend and Fallback are capture.backend and capture.fallback.
	Backend, Fallback string
	// PluginDir is where the agent finds its plugins (already resolved: flag, environment,
	// configuration, else beside the binary).
	PluginDir string
	// Plugins are the agent's other plugins, by name: sink-stdout, l7-http, …
	Plugins []string
	// Checksums are plugin_checksums: plugin name → SHA-256 (hex).
	Checksums map[string]string
	// StateDirs are the directories mix and analysis keep their databases in.
	StateDirs []StateDir
	// Ports are the default listening ports on 127.0.0.1.
	Ports []Port
	// Tools are optional programs the lab and the tests use.
	Tools []Tool
}

// StateDir is one program's data directory.
type StateDir struct {
	Program, Dir string
}

// Port is a default listening port and whose it is.
type Port struct {
	Port int
	// Who listens there by default: "mix (gRPC)".
	Who string
	// Setting moves it: "listen (--listen) in mix's configuration".
	Setting string
}

// Tool is an optional program.
type Tool struct {
	Name, Why, Package string
}

// The capabilities the capture plugins need, as the README and the code say: the eBPF capture
// loads a sched_cls program (CAP_BPF with CAP_NET_ADMIN), whose pointer arithmetic the verifier
// allows only with CAP_PERFMON, creates maps (CAP_BPF) and attaches with TCX or TC (CAP_NET_ADMIN);
// the AF_PACKET capture opens packet sockets (CAP_NET_RAW). CAP_SYS_ADMIN stands in for CAP_BPF
// and CAP_PERFMON, as it did before they existed.
var (
	ebpfCaps = []int{CapBPF, CapPerfmon, CapNetAdmin}
	mmapCaps = []int{CapNetRaw}
)

// AgentCapabilities are the capabilities the capture plugins need, by name (CAP_BPF, …): what
// the deployment files grant the agent, and nothing more.
func AgentCapabilities() []string {
	var out []string
	for _, c := range append(slices.Clone(ebpfCaps), mmapCaps...) {
		out = append(out, CapName(c))
	}
	return out
}

// capsFix names every way of granting the capabilities. setcap goes on the capture plugins, not
// on quanyu: they are the programs that capture, and a non-root exec does not pass capabilities on.
const capsFix = "run the agent as root, or grant it CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_NET_RAW " +
	"(AmbientCapabilities= in its systemd unit, securityContext.capabilities.add in Kubernetes, " +
	"or setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep on quanyu-capture-ebpf and quanyu-capture-mmap)"

const fallbackNote = "until then the agent falls back to the mmap capture (capture.fallback)"

// run is one doctor's pass over a host.
type run struct {
	h      Host
	o      Options
	checks []Check

	release    string
	releaseErr error
	kernel     version
	kernelOK   bool
	proc       Process
	procErr    error
	// execCaps are the capabilities each capture plugin will run with.
	execCaps map[string]CapSet
	attach   string
}

// Run checks the host and decides which capture backend the agent would use.
func Run(h Host, o Options) Report {
	r := &run{h: h, o: o, execCaps: map[string]CapSet{}}
	r.readKernel()
	r.readCaps()

	r.checkKernel()
	bpfLoaded := r.checkBPF()
	r.checkBPFMaps(bpfLoaded)
	r.checkBPFHelpers(bpfLoaded)
	r.checkAttach(bpfLoaded)
	r.checkBTF()
	r.checkMemlock()
	r.checkAFPacket()
	r.checkNetns()
	r.checkCaps()
	r.checkPlugins()
	r.checkStateDirs()
	r.checkPorts()
	r.checkTools()
	return r.verdict()
}

func (r *run) add(c Check) { r.checks = append(r.checks, c) }

// version is a kernel's major.minor.patch.
type version [3]int

func (v version) atLeast(major, minor int) bool {
	return v[0] > major || (v[0] == major && v[1] >= minor)
}

func (v version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// releaseVersion is the version at the start of a kernel release string.
var releaseVersion = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseKernelRelease reads the version at the start of a release string: "6.8.0-45-generic" is
// 6.8.0, "5.15.167.4-microsoft-standard-WSL2" is 5.15.167, "6.1-rc3" is 6.1.0.
func ParseKernelRelease(rel string) (major, minor, patch int, ok bool) {
	m := releaseVersion.FindStringSubmatch(rel)
	if m == nil {
		return 0, 0, 0, false
	}
	var v [3]int
	for i, s := range m[1:] {
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, 0, 0, false
		}
		v[i] = n
	}
	return v[0], v[1], v[2], true
}

func (r *run) readKernel() {
	r.release, r.releaseErr = r.h.KernelRelease()
	if r.releaseErr != nil {
		return
	}
	if a, b, c, ok := ParseKernelRelease(r.release); ok {
		r.kernel, r.kernelOK = version{a, b, c}, true
	}
}

func (r *run) readCaps() {
	r.proc, r.procErr = r.h.Process()
	if r.procErr != nil {
		return
	}
	for _, backend := range []string{BackendEBPF, BackendMmap} {
		var file *FileCaps
		if fc, err := r.h.FileCaps(r.pluginPath("capture-" + backend)); err == nil {
			file = fc
		}
		r.execCaps[backend] = ExecCaps(r.proc, file)
	}
}

func (r *run) pluginPath(name string) string {
	return filepath.Join(r.o.PluginDir, "quanyu-"+name)
}

// hasCap reports whether the backend's plugin will have the capability (or CAP_SYS_ADMIN where
// that stands in for it).
func (r *run) hasCap(backend string, c int) bool {
	set := r.execCaps[backend]
	if set.Has(c) {
		return true
	}
	return (c == CapBPF || c == CapPerfmon) && set.Has(CapSysAdmin)
}

func (r *run) capsEnough(backend string, caps []int) bool {
	if r.procErr != nil {
		return false
	}
	for _, c := range caps {
		if !r.hasCap(backend, c) {
			return false
		}
	}
	return true
}

// blockers are the failed checks that stop a backend.
func (r *run) blockers(backend string) []Check {
	var out []Check
	for _, c := range r.checks {
		if c.Status == Fail && (slices.Contains(c.NeededBy, backend) || slices.Contains(c.NeededBy, NeedAgent)) {
			out = append(out, c)
		}
	}
	return out
}

func why(blocked []Check) string {
	parts := make([]string, len(blocked))
	for i, c := range blocked {
		parts[i] = c.Name
	}
	return "failed: " + strings.Join(parts, ", ")
}

// verdict decides the backend as the agent does: the configured one if it can run, else the
// fallback if that can.
func (r *run) verdict() Report {
	backends := r.backends()
	// What only an unconfigured backend needs cannot stop the agent: say so instead of failing.
	for i, c := range r.checks {
		if c.Status != Fail || len(c.NeededBy) == 0 || slices.Contains(c.NeededBy, NeedAgent) ||
			slices.ContainsFunc(c.NeededBy, func(b string) bool { return slices.Contains(backends, b) }) {
			continue
		}
		r.checks[i].Status = Warn
		r.checks[i].Found += fmt.Sprintf(" (the agent is not configured to use %s: capture.backend, capture.fallback)",
			strings.Join(c.NeededBy, ", "))
	}
	rep := Report{Checks: r.checks, Capture: Capture{Ready: map[string]bool{}}}
	for _, b := range backends {
		rep.Capture.Ready[b] = len(r.blockers(b)) == 0
	}
	describe := func(b string) string {
		if b == BackendEBPF && r.attach != "" {
			return fmt.Sprintf("ebpf (attached with %s)", strings.ToUpper(r.attach))
		}
		return b
	}
	switch {
	case len(backends) == 0:
		rep.Capture.Summary = "no capture backend is configured (capture.backend)"
	case rep.Capture.Ready[backends[0]]:
		rep.Capture.Backend = backends[0]
		rep.Capture.Summary = "the agent would capture with " + describe(backends[0])
		if len(backends) > 1 {
			if rep.Capture.Ready[backends[1]] {
				rep.Capture.Summary += fmt.Sprintf("; its fallback %s could run too", backends[1])
			} else {
				rep.Capture.Summary += fmt.Sprintf("; its fallback %s could not (%s)", backends[1], why(r.blockers(backends[1])))
			}
		}
	case len(backends) > 1 && rep.Capture.Ready[backends[1]]:
		rep.Capture.Backend = backends[1]
		rep.Capture.Summary = fmt.Sprintf("%s unavailable (%s): the agent falls back to the %s capture (capture.fallback)",
			backends[0], why(r.blockers(backends[0])), describe(backends[1]))
	default:
		var parts []string
		for _, b := range backends {
			parts = append(parts, fmt.Sprintf("%s %s", b, why(r.blockers(b))))
		}
		rep.Capture.Summary = "no capture backend can run here: " + strings.Join(parts, "; ")
	}
	if rep.Capture.Backend == BackendEBPF {
		rep.Capture.Attach = r.attach
	}
	rep.OK = rep.Capture.Backend != ""
	return rep
}

// WriteText prints one line per check — status, name, what was found and, when not OK, the fix —
// then the verdict.
func (rep *Report) WriteText(w io.Writer) error {
	width := 0
	for _, c := range rep.Checks {
		width = max(width, len(c.Name))
	}
	var b strings.Builder
	for _, c := range rep.Checks {
		fmt.Fprintf(&b, "%-4s  %-*s  %s", c.Status, width, c.Name, c.Found)
		if c.Fix != "" {
			fmt.Fprintf(&b, ". Fix: %s", c.Fix)
		}
		b.WriteByte('\n')
	}
	verdict := OK
	if !rep.OK {
		verdict = Fail
	}
	fmt.Fprintf(&b, "\n%-4s  %-*s  %s\n", verdict, width, "capture", rep.Capture.Summary)
	_, err := io.WriteString(w, b.String())
	return err
}
