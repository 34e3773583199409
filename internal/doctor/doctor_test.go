package doctor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// fakeHost answers the checks from its fields; the zero value of each probe is "works".
type fakeHost struct {
	release  string
	proc     Process
	procErr  error
	fileCaps map[string]*FileCaps
	program  error
	maps     map[ebpf.MapType]error
	helpers  map[asm.BuiltinFunc]error
	tcx      error
	afpacket error
	memlock  uint64
	files    map[string]os.FileMode // Stat: present files and their modes
	sums     map[string]string
	paths    map[string]string // LookPath
	netns    error
	writable map[string]string // dir → the directory Writable tested; missing: an error
	busy     map[int]string    // port → owner ("" for unknown)
}

var _ Host = (*fakeHost)(nil)

type fakeInfo struct {
	name string
	mode os.FileMode
}

func (i fakeInfo) Name() string       { return i.name }
func (i fakeInfo) Size() int64        { return 5 << 20 }
func (i fakeInfo) Mode() os.FileMode  { return i.mode }
func (i fakeInfo) ModTime() time.Time { return time.Time{} }
func (i fakeInfo) IsDir() bool        { return i.mode.IsDir() }
func (i fakeInfo) Sys() any           { return nil }

func (h *fakeHost) KernelRelease() (string, error) { return h.release, nil }
func (h *fakeHost) Process() (Process, error)      { return h.proc, h.procErr }
func (h *fakeHost) FileCaps(p string) (*FileCaps, error) {
	return h.fileCaps[p], nil
}
func (h *fakeHost) ProbeProgram() error                 { return h.program }
func (h *fakeHost) ProbeMap(t ebpf.MapType) error       { return h.maps[t] }
func (h *fakeHost) ProbeHelper(f asm.BuiltinFunc) error { return h.helpers[f] }
func (h *fakeHost) ProbeTCX() error                     { return h.tcx }
func (h *fakeHost) ProbeAFPacket() error                { return h.afpacket }
func (h *fakeHost) Memlock() (uint64, uint64, error)    { return h.memlock, h.memlock, nil }
func (h *fakeHost) Stat(p string) (fs.FileInfo, error) {
	if m, ok := h.files[p]; ok {
		return fakeInfo{name: p, mode: m}, nil
	}
	return nil, &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
}
func (h *fakeHost) ReadLink(string) (string, error) { return "net:[4026531840]", h.netns }
func (h *fakeHost) LookPath(name string) (string, error) {
	if p, ok := h.paths[name]; ok {
		return p, nil
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}
func (h *fakeHost) FileSHA256(p string) (string, error) { return h.sums[p], nil }
func (h *fakeHost) Writable(dir string) (string, error) {
	if t, ok := h.writable[dir]; ok {
		return t, nil
	}
	return dir, fs.ErrPermission
}
func (h *fakeHost) Listen(addr string) error {
	for port := range h.busy {
		if strings.HasSuffix(addr, fmt.Sprintf(":%d", port)) {
			return unix.EADDRINUSE
		}
	}
	return nil
}
func (h *fakeHost) PortOwner(port int) (string, error) { return h.busy[port], nil }

var (
	allCaps   = caps(CapBPF, CapPerfmon, CapNetAdmin, CapNetRaw, CapSysAdmin, CapSysPtrace, CapSysResource)
	agentCaps = caps(CapBPF, CapPerfmon, CapNetAdmin, CapNetRaw)
	denial    = fmt.Errorf("load program: %w", unix.EPERM)
	missing   = fmt.Errorf("feature: %w", ebpf.ErrNotSupported)
)

const pluginDir = "/opt/quanyu/plugins"

// healthy is a root host on a 6.8 kernel with every plugin in place.
func healthy() *fakeHost {
	return &fakeHost{
		release: "6.8.0-45-generic",
		proc:    Process{EUID: 0, Permitted: allCaps, Effective: allCaps, Bounding: allCaps},
		memlock: 8 << 20,
		files: map[string]os.FileMode{
			BTFPath:                            0o444,
			pluginDir + "/quanyu-capture-ebpf": 0o755,
			pluginDir + "/quanyu-capture-mmap": 0o755,
			pluginDir + "/quanyu-sink-stdout":  0o755,
			pluginDir + "/quanyu-l7-http":      0o755,
		},
		paths:    map[string]string{"ip": "/usr/sbin/ip", "tshark": "/usr/bin/tshark"},
		writable: map[string]string{"/var/lib/quanyu/mix": "/var/lib"},
	}
}

func options() Options {
	return Options{
		Backend: BackendEBPF, Fallback: BackendMmap, PluginDir: pluginDir,
		Plugins:   []string{"sink-stdout", "l7-http"},
		StateDirs: []StateDir{{Program: "mix", Dir: "/var/lib/quanyu/mix"}},
		Ports:     []Port{{Port: 7070, Who: "mix (gRPC)", Setting: "listen (--listen)"}},
		Tools:     []Tool{{Name: "tshark", Why: "tests", Package: "tshark"}},
	}
}

// want asserts a check's status and that its text holds every fragment.
func want(t *testing.T, rep Report, name string, status Status, fragments ...string) {
	t.Helper()
	c, ok := rep.Check(name)
	if !ok {
		t.Errorf("no %s check", name)
		return
	}
	if c.Status != status {
		t.Errorf("%s: %s (%s; fix: %s), want %s", name, c.Status, c.Found, c.Fix, status)
	}
	text := c.Found + " " + c.Fix
	for _, f := range fragments {
		if !strings.Contains(text, f) {
			t.Errorf("%s: %q does not say %q", name, text, f)
		}
	}
	if status != OK && c.Fix == "" {
		t.Errorf("%s is %s but gives no fix", name, status)
	}
}

func TestHealthyRootHostUsesEBPFWithTCX(t *testing.T) {
	rep := Run(healthy(), options())
	for _, c := range rep.Checks {
		if c.Status != OK {
			t.Errorf("%s: %s %s", c.Name, c.Status, c.Found)
		}
	}
	if !rep.OK || rep.Capture.Backend != BackendEBPF || rep.Capture.Attach != "tcx" {
		t.Errorf("capture %+v", rep.Capture)
	}
	if !rep.Capture.Ready[BackendEBPF] || !rep.Capture.Ready[BackendMmap] {
		t.Errorf("ready %v", rep.Capture.Ready)
	}
	want(t, rep, "CAP_BPF", OK, "quanyu-capture-ebpf will have it")
	want(t, rep, "CAP_NET_RAW", OK, "quanyu-capture-mmap will have it")
	want(t, rep, "state.mix", OK, "/var/lib is writable", "creates it")
}

func TestKernelWithoutTCXAttachesWithTC(t *testing.T) {
	h := healthy()
	h.release, h.tcx = "6.1.0-26-amd64", missing
	rep := Run(h, options())
	want(t, rep, "kernel", OK, "TC clsact (TCX needs 6.6)")
	want(t, rep, "bpf.attach", OK, "TC clsact")
	if rep.Capture.Backend != BackendEBPF || rep.Capture.Attach != "tc" || !strings.Contains(rep.Capture.Summary, "TC") {
		t.Errorf("capture %+v", rep.Capture)
	}
}

func TestOldKernelFallsBackToMmap(t *testing.T) {
	h := healthy()
	h.release = "5.4.0-200-generic"
	h.maps = map[ebpf.MapType]error{ebpf.RingBuf: missing}
	h.helpers = map[asm.BuiltinFunc]error{asm.FnKtimeGetCoarseNs: missing, asm.FnRingbufReserve: missing}
	h.tcx = missing
	rep := Run(h, options())
	want(t, rep, "kernel", Fail, "needs 5.11", "falls back to the mmap capture (capture.fallback)")
	want(t, rep, "bpf.maps", Fail, "ring buffer (5.8+)")
	want(t, rep, "bpf.helpers", Fail, "bpf_ktime_get_coarse_ns (5.11+)", "bpf_ringbuf_reserve (5.8+)")
	want(t, rep, "bpf.memlock", Warn, "charges BPF memory to it", "LimitMEMLOCK=infinity")
	if !rep.OK || rep.Capture.Backend != BackendMmap || rep.Capture.Attach != "" {
		t.Errorf("capture %+v", rep.Capture)
	}
	for _, f := range []string{"ebpf unavailable", "kernel", "bpf.maps", "falls back to the mmap capture (capture.fallback)"} {
		if !strings.Contains(rep.Capture.Summary, f) {
			t.Errorf("summary %q does not say %q", rep.Capture.Summary, f)
		}
	}
}

func TestNoCapabilitiesNoBackend(t *testing.T) {
	h := healthy()
	h.proc = Process{EUID: 65534}
	h.program, h.afpacket = denial, fmt.Errorf("socket: %w", unix.EPERM)
	rep := Run(h, options())
	for _, name := range []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_NET_RAW"} {
		want(t, rep, name, Fail, "missing", "run the agent as root", "AmbientCapabilities=", "setcap")
	}
	want(t, rep, "bpf", Fail, "permission denied")
	want(t, rep, "af_packet", Fail, "permission denied", "CAP_NET_RAW")
	want(t, rep, "bpf.maps", Warn, "not probed")
	want(t, rep, "CAP_SYS_ADMIN", Warn, "this network namespace's interfaces only")
	if rep.OK || rep.Capture.Backend != "" {
		t.Errorf("capture %+v", rep.Capture)
	}
	if !strings.Contains(rep.Capture.Summary, "no capture backend can run") {
		t.Errorf("summary %q", rep.Capture.Summary)
	}
}

func TestOnlyNetRawRunsMmap(t *testing.T) {
	h := healthy()
	raw := caps(CapNetRaw)
	h.proc = Process{EUID: 993, Permitted: raw, Effective: raw, Inheritable: raw, Ambient: raw, Bounding: raw, NoNewPrivs: true}
	h.program = denial
	rep := Run(h, options())
	want(t, rep, "CAP_NET_RAW", OK)
	want(t, rep, "CAP_BPF", Fail, "falls back to the mmap capture")
	if !rep.OK || rep.Capture.Backend != BackendMmap {
		t.Errorf("capture %+v", rep.Capture)
	}
}

// A user without capabilities runs doctor, but the plugins carry file capabilities: the probes
// are refused here, yet the agent will capture, so the probes are warnings, not failures.
func TestProbesDeniedButPluginsHaveFileCapabilities(t *testing.T) {
	h := healthy()
	h.proc = Process{EUID: 1000, Bounding: allCaps}
	h.fileCaps = map[string]*FileCaps{
		pluginDir + "/quanyu-capture-ebpf": {Permitted: agentCaps, Effective: true},
		pluginDir + "/quanyu-capture-mmap": {Permitted: caps(CapNetRaw), Effective: true},
	}
	h.program, h.afpacket = denial, fmt.Errorf("socket: %w", unix.EPERM)
	rep := Run(h, options())
	want(t, rep, "bpf", Warn, "not probed", "quanyu-capture-ebpf will run with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN", "run quanyu doctor as root")
	want(t, rep, "af_packet", Warn, "not probed", "CAP_NET_RAW")
	want(t, rep, "CAP_BPF", OK)
	if !rep.OK || rep.Capture.Backend != BackendEBPF {
		t.Errorf("capture %+v", rep.Capture)
	}
}

// setcap on bin/quanyu gives the agent process the capabilities, and its plugins none: the probes
// pass in this process, and still the capture would fail.
func TestCapabilitiesOnQuanyuOnlyDoNotReachThePlugins(t *testing.T) {
	h := healthy()
	h.proc = Process{EUID: 1000, Permitted: agentCaps, Effective: agentCaps, Bounding: allCaps}
	rep := Run(h, options())
	want(t, rep, "CAP_BPF", Fail, "this process has it, but the plugin is another program", "quanyu-capture-ebpf")
	want(t, rep, "CAP_NET_RAW", Fail, "this process has it")
	want(t, rep, "bpf", OK)
	if rep.OK {
		t.Errorf("capture %+v", rep.Capture)
	}
}

func TestSysAdminStandsInForBPFAndPerfmon(t *testing.T) {
	h := healthy()
	set := caps(CapSysAdmin, CapNetAdmin, CapNetRaw)
	h.proc = Process{EUID: 0, Permitted: set, Effective: set, Bounding: set}
	rep := Run(h, options())
	want(t, rep, "CAP_BPF", OK, "through CAP_SYS_ADMIN")
	want(t, rep, "CAP_PERFMON", OK, "through CAP_SYS_ADMIN")
	if rep.Capture.Backend != BackendEBPF {
		t.Errorf("capture %+v", rep.Capture)
	}
}

func TestPlugins(t *testing.T) {
	t.Run("capture plugin missing: the fallback runs", func(t *testing.T) {
		h := healthy()
		delete(h.files, pluginDir+"/quanyu-capture-ebpf")
		rep := Run(h, options())
		want(t, rep, "plugin.capture-ebpf", Fail, "quanyu-capture-ebpf", "make build", "--plugin-dir", "QUANYU_AGENT_PLUGIN_DIR")
		if rep.Capture.Backend != BackendMmap {
			t.Errorf("capture %+v", rep.Capture)
		}
	})
	t.Run("a sink missing stops every backend", func(t *testing.T) {
		h := healthy()
		delete(h.files, pluginDir+"/quanyu-sink-stdout")
		rep := Run(h, options())
		want(t, rep, "plugins", Fail, "quanyu-sink-stdout")
		if rep.OK || !strings.Contains(rep.Capture.Summary, "plugins") {
			t.Errorf("capture %+v", rep.Capture)
		}
	})
	t.Run("not executable", func(t *testing.T) {
		h := healthy()
		h.files[pluginDir+"/quanyu-capture-mmap"] = 0o644
		want(t, Run(h, options()), "plugin.capture-mmap", Fail, "not an executable file")
	})
	t.Run("checksum pinned and different", func(t *testing.T) {
		h := healthy()
		h.sums = map[string]string{pluginDir + "/quanyu-capture-ebpf": strings.Repeat("b", 64)}
		o := options()
		o.Checksums = map[string]string{"capture-ebpf": strings.Repeat("A", 64)}
		want(t, Run(h, o), "plugin.capture-ebpf", Fail, "plugin_checksums pins", "update plugin_checksums.capture-ebpf")
		h.sums[pluginDir+"/quanyu-capture-ebpf"] = strings.Repeat("a", 64)
		want(t, Run(h, o), "plugin.capture-ebpf", OK)
	})
}

// With mmap configured and no fallback, what eBPF lacks does not matter.
func TestMmapOnlyIgnoresEBPF(t *testing.T) {
	h := healthy()
	raw := caps(CapNetRaw)
	h.proc = Process{EUID: 0, Permitted: raw, Effective: raw, Bounding: raw}
	h.program = denial
	delete(h.files, pluginDir+"/quanyu-capture-ebpf")
	o := options()
	o.Backend, o.Fallback = BackendMmap, ""
	rep := Run(h, o)
	if _, ok := rep.Check("plugin.capture-ebpf"); ok {
		t.Error("the eBPF plugin was checked though not configured")
	}
	want(t, rep, "CAP_BPF", Warn, "not configured to use ebpf")
	want(t, rep, "bpf", Warn, "not configured to use ebpf")
	want(t, rep, "CAP_NET_RAW", OK)
	if !rep.OK || rep.Capture.Backend != BackendMmap || len(rep.Capture.Ready) != 1 {
		t.Errorf("capture %+v", rep.Capture)
	}
	if strings.Contains(rep.Capture.Summary, "fallback") {
		t.Errorf("summary %q mentions a fallback", rep.Capture.Summary)
	}
}

func TestPorts(t *testing.T) {
	for _, tc := range []struct {
		owner     string
		status    Status
		fragments []string
	}{
		{"quanyu mix (pid 42)", OK, []string{"quanyu mix (pid 42)", "already running"}},
		{"nginx (pid 7)", Warn, []string{"nginx (pid 7)", "cannot listen", "listen (--listen)"}},
		{"", Warn, []string{"cannot see", "run quanyu doctor as root"}},
	} {
		h := healthy()
		h.busy = map[int]string{7070: tc.owner}
		want(t, Run(h, options()), "port.7070", tc.status, tc.fragments...)
	}
	want(t, Run(healthy(), options()), "port.7070", OK, "127.0.0.1:7070 is free")
}

func TestStateDirs(t *testing.T) {
	h := healthy()
	h.writable["/var/lib/quanyu/mix"] = "/var/lib/quanyu/mix"
	want(t, Run(h, options()), "state.mix", OK, "/var/lib/quanyu/mix is writable")
	delete(h.writable, "/var/lib/quanyu/mix")
	want(t, Run(h, options()), "state.mix", Warn, "cannot be written", "data_dir", "StateDirectory=")
}

func TestInformationalChecksDoNotDecide(t *testing.T) {
	h := healthy()
	delete(h.files, BTFPath)
	delete(h.paths, "tshark")
	delete(h.paths, "ip")
	h.busy = map[int]string{7070: "nginx (pid 7)"}
	rep := Run(h, options())
	want(t, rep, "bpf.btf", Warn, "does not need it", "CONFIG_DEBUG_INFO_BTF")
	want(t, rep, "tool.tshark", Warn, "apt-get install tshark")
	want(t, rep, "netns", Warn, "apt-get install iproute2")
	if !rep.OK || rep.Capture.Backend != BackendEBPF {
		t.Errorf("capture %+v", rep.Capture)
	}
}

func TestTextAndJSON(t *testing.T) {
	h := healthy()
	h.proc = Process{EUID: 65534}
	h.program, h.afpacket = denial, fmt.Errorf("socket: %w", unix.EPERM)
	rep := Run(h, options())
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(rep.Checks)+2 { // a blank line, then the verdict
		t.Fatalf("%d lines for %d checks:\n%s", len(lines), len(rep.Checks), buf.String())
	}
	for i, c := range rep.Checks {
		f := strings.Fields(lines[i])
		if len(f) < 3 || f[0] != string(c.Status) || f[1] != c.Name {
			t.Errorf("line %d %q does not start with %s %s", i, lines[i], c.Status, c.Name)
		}
		if c.Fix != "" && !strings.HasSuffix(lines[i], ". Fix: "+c.Fix) {
			t.Errorf("line %d %q does not end with its fix", i, lines[i])
		}
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "FAIL  capture") {
		t.Errorf("verdict line %q", last)
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Checks []struct {
			Name, Status, Found, Fix string
			NeededBy                 []string `json:"needed_by"`
		}
		Capture struct {
			Backend string
			Ready   map[string]bool
			Summary string
		}
		OK bool
	}
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.OK || back.Capture.Backend != "" || back.Capture.Ready["mmap"] || len(back.Checks) != len(rep.Checks) {
		t.Errorf("JSON %s", raw)
	}
	if back.Checks[0].Name != "kernel" || len(back.Checks[0].NeededBy) != 1 || back.Checks[0].NeededBy[0] != "ebpf" {
		t.Errorf("first check in JSON: %+v", back.Checks[0])
	}
}
