package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/quanyu/quanyu/internal/doctor"
	"github.com/quanyu/quanyu/internal/testbin"
)

// doctorRun is one `quanyu doctor` run: its lines by check name, its output and exit code.
type doctorRun struct {
	lines          map[string]string // check name → "STATUS rest of the line"
	stdout, stderr string
	code           int
}

// runDoctorCmd runs `quanyu doctor ARGS`, under setpriv with the given options when there are any.
func runDoctorCmd(t *testing.T, setpriv []string, args ...string) doctorRun {
	t.Helper()
	cmd := quanyu(t, append([]string{"doctor"}, args...)...)
	if len(setpriv) > 0 {
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Fatalf("setpriv (util-linux) is needed to withhold capabilities: %v", err)
		}
		wrapped := exec.Command("setpriv", append(append(setpriv, "--"), cmd.Args...)...)
		wrapped.Env = cmd.Env
		cmd = wrapped
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := doctorRun{lines: map[string]string{}, stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running quanyu doctor: %v", err)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			r.lines[f[1]] = f[0] + " " + strings.Join(f[2:], " ")
		}
	}
	return r
}

// want asserts the check's line starts with the status and holds every fragment.
func (r doctorRun) want(t *testing.T, check string, status doctor.Status, fragments ...string) {
	t.Helper()
	line, ok := r.lines[check]
	if !ok {
		t.Errorf("no %s line in:\n%s", check, r.stdout)
		return
	}
	if !strings.HasPrefix(line, string(status)+" ") {
		t.Errorf("%s: %q, want %s", check, line, status)
	}
	for _, f := range fragments {
		if !strings.Contains(line, f) {
			t.Errorf("%s: %q does not say %q", check, line, f)
		}
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("probes BPF, TCX and AF_PACKET for real, which needs root (CI runs as root)")
	}
}

// kernelHasTCX reports whether the running kernel is 6.6 or later, where TCX must work.
func kernelHasTCX(t *testing.T) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	major, minor, _, ok := doctor.ParseKernelRelease(unix.ByteSliceToString(u.Release[:]))
	if !ok {
		t.Fatalf("cannot read the kernel release %q", u.Release)
	}
	return major > 6 || (major == 6 && minor >= 6)
}

// As root on this machine every capture requirement is met, probed for real: a BPF program
// loads, TCX attaches (TC where the kernel predates it), an AF_PACKET ring opens.
func TestDoctorAsRoot(t *testing.T) {
	needRoot(t)
	r := runDoctorCmd(t, nil)
	if r.code != 0 {
		t.Fatalf("exit code %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r.want(t, "bpf", doctor.OK, "sched_cls BPF program")
	r.want(t, "bpf.maps", doctor.OK, "ring buffer", "LPM trie")
	r.want(t, "bpf.helpers", doctor.OK, "bpf_ringbuf_reserve", "bpf_ktime_get_coarse_ns")
	attach := "TC clsact"
	if kernelHasTCX(t) {
		attach = "TCX"
	}
	r.want(t, "bpf.attach", doctor.OK, attach)
	r.want(t, "af_packet", doctor.OK, "TPACKET_V3")
	// The kernel's BTF is the host's to have or not; doctor must say what is there.
	if _, err := os.Stat(doctor.BTFPath); err == nil {
		r.want(t, "bpf.btf", doctor.OK, doctor.BTFPath+" present")
	} else {
		r.want(t, "bpf.btf", doctor.Warn, "does not need it")
	}
	for _, c := range []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"} {
		r.want(t, c, doctor.OK, "quanyu-capture-ebpf will have it")
	}
	r.want(t, "CAP_NET_RAW", doctor.OK, "quanyu-capture-mmap will have it")
	r.want(t, "plugin.capture-ebpf", doctor.OK, "quanyu-capture-ebpf")
	r.want(t, "capture", doctor.OK, "the agent would capture with ebpf (attached with "+strings.ToUpper(strings.Fields(attach)[0]))

	// --json says the same to a program.
	j := runDoctorCmd(t, nil, "--json")
	var rep doctor.Report
	if err := json.Unmarshal([]byte(j.stdout), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, j.stdout)
	}
	wantAttach := "tc"
	if kernelHasTCX(t) {
		wantAttach = "tcx"
	}
	if j.code != 0 || !rep.OK || rep.Capture.Backend != "ebpf" || rep.Capture.Attach != wantAttach || !rep.Capture.Ready["mmap"] {
		t.Errorf("--json: exit %d, capture %+v", j.code, rep.Capture)
	}
	if c, ok := rep.Check("CAP_BPF"); !ok || c.Status != doctor.OK || len(c.NeededBy) != 1 || c.NeededBy[0] != "ebpf" {
		t.Errorf("--json CAP_BPF: %+v", c)
	}
}

// nobody runs the binaries testbin built in a directory only root may enter.
func openToNobody(t *testing.T) {
	t.Helper()
	if err := os.Chmod(testbin.Build(t), 0o755); err != nil {
		t.Fatal(err)
	}
}

// With every capability withheld and an unprivileged user, nothing can capture: the missing
// capabilities are failures that say how to grant them, and doctor exits 1.
func TestDoctorWithCapabilitiesWithheld(t *testing.T) {
	needRoot(t)
	openToNobody(t)
	nobody := []string{"--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
		"--reuid=65534", "--regid=65534", "--clear-groups"}
	r := runDoctorCmd(t, nobody)
	if r.code != 1 {
		t.Fatalf("exit code %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	fix := "run the agent as root, or grant it CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_NET_RAW " +
		"(AmbientCapabilities= in its systemd unit, securityContext.capabilities.add in Kubernetes, or setcap"
	for _, c := range []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"} {
		r.want(t, c, doctor.Fail, "missing: quanyu-capture-ebpf would run without it", fix,
			"falls back to the mmap capture (capture.fallback)")
	}
	r.want(t, "CAP_NET_RAW", doctor.Fail, "missing: quanyu-capture-mmap would run without it", fix)
	r.want(t, "bpf", doctor.Fail, "permission denied", "operation not permitted")
	r.want(t, "af_packet", doctor.Fail, "permission denied", "operation not permitted")
	r.want(t, "capture", doctor.Fail, "no capture backend can run here", "ebpf failed:", "mmap failed:")
	if !strings.Contains(r.stderr, "no capture backend can run on this host") {
		t.Errorf("stderr does not say why doctor failed: %q", r.stderr)
	}

	j := runDoctorCmd(t, nobody, "--json")
	var rep doctor.Report
	if err := json.Unmarshal([]byte(j.stdout), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, j.stdout)
	}
	if j.code != 1 || rep.OK || rep.Capture.Backend != "" {
		t.Errorf("--json: exit %d, capture %+v", j.code, rep.Capture)
	}
}

// An unprivileged user with exactly the capabilities the deployment files grant, as ambient
// capabilities under no_new_privs (what systemd's AmbientCapabilities= and NoNewPrivileges=yes
// make): enough for the eBPF capture. With CAP_NET_RAW alone, the agent falls back to mmap.
func TestDoctorWithTheDeployedCapabilities(t *testing.T) {
	needRoot(t)
	openToNobody(t)
	as := func(caps string) []string {
		return []string{"--inh-caps=-all," + caps, "--ambient-caps=-all," + caps, "--bounding-set=-all," + caps,
			"--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"}
	}
	r := runDoctorCmd(t, as("+bpf,+perfmon,+net_admin,+net_raw"))
	if r.code != 0 {
		t.Fatalf("exit code %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, c := range []string{"bpf", "bpf.attach", "af_packet", "CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_NET_RAW"} {
		r.want(t, c, doctor.OK)
	}
	r.want(t, "capture", doctor.OK, "the agent would capture with ebpf")

	r = runDoctorCmd(t, as("+net_raw"))
	if r.code != 0 {
		t.Fatalf("CAP_NET_RAW alone: exit code %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r.want(t, "CAP_BPF", doctor.Fail, "missing")
	r.want(t, "af_packet", doctor.OK)
	r.want(t, "capture", doctor.OK, "ebpf unavailable", "the agent falls back to the mmap capture (capture.fallback)")
}
