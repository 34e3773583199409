package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUpDownInProcess brings a lab up as `quanyu up` does (in-process, not detached): every
// service answers from the host side, the services carry --parent-pid, and Down leaves nothing.
func TestUpDownInProcess(t *testing.T) {
	tl := newTestLab(t)
	ctx := context.Background()
	l, err := Up(ctx, tl.opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Up(ctx, tl.opts); !errors.Is(err, ErrExists) {
		t.Errorf("a second Up with the same prefix: got %v, want ErrExists", err)
	}
	if got, want := len(l.Interfaces()), len(roles); got != want {
		t.Fatalf("%d interfaces, want %d", got, want)
	}
	for _, name := range l.Interfaces() {
		if _, err := net.InterfaceByName(name); err != nil {
			t.Errorf("interface %s: %v", name, err)
		}
	}
	st, err := Status(ctx, tl.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Up {
		t.Errorf("status: not up: %+v", st)
	}
	for _, h := range l.Hosts() {
		p, ok := readProc(h.PID)
		if !ok {
			t.Fatalf("%s: pid %d is not running", h.Name, h.PID)
		}
		if !servesLab(p.cmdline, tl.opts.Prefix) || !slices.Contains(p.cmdline, "--parent-pid") {
			t.Errorf("%s: command line %q: want lab serve with --lab %s and --parent-pid", h.Name, p.cmdline, tl.opts.Prefix)
		}
	}
	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Down(ctx); err != nil {
		t.Errorf("a second Down: %v", err)
	}
	assertGone(t, tl.opts)
}

// TestServicesExitWithTheirCaller kills a process that called Up (not detached) with SIGKILL,
// so that it runs no Down: its services must notice their parent is gone and exit on their own.
func TestServicesExitWithTheirCaller(t *testing.T) {
	tl := newTestLab(t)
	spec, _ := json.Marshal(map[string]string{"Prefix": tl.opts.Prefix, "CIDR": tl.opts.CIDR.String(), "StateDir": tl.opts.StateDir})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "QYLAB_TEST_UP="+string(spec))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the caller of Up said nothing: %v", err)
	}
	var hosts []Host
	if err := json.Unmarshal([]byte(line), &hosts); err != nil {
		t.Fatalf("the caller of Up: %s", line)
	}
	for _, h := range hosts {
		if !running(h.PID, h.Start) {
			t.Fatalf("%s is not running before its caller is killed", h.Name)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	// They poll their parent every second.
	if !waitFor(context.Background(), 5*time.Second, func() bool { return len(labProcesses(tl.opts.Prefix)) == 0 }) {
		t.Fatalf("services still run 5s after their caller died: %v", labProcesses(tl.opts.Prefix))
	}
	web := filepath.Join(tl.opts.StateDir, tl.opts.Prefix+"-web.log")
	if raw, _ := os.ReadFile(web); !strings.Contains(string(raw), "parent process is gone") {
		t.Errorf("web's log does not say why it stopped:\n%s", raw)
	}
	if _, err := Down(context.Background(), tl.opts); err != nil {
		t.Fatal(err)
	}
	assertGone(t, tl.opts)
}

// TestUpNeedsRoot runs Up as an unprivileged user: the error says what to do.
func TestUpNeedsRoot(t *testing.T) {
	tl := newTestLab(t)
	// The unprivileged user needs to reach a copy of this binary.
	dir, err := os.MkdirTemp("", "qylab-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "labtest")
	raw, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(map[string]string{"Prefix": tl.opts.Prefix, "CIDR": tl.opts.CIDR.String(), "StateDir": dir + "/state"})
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "QYLAB_TEST_UP="+string(spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	got, _ := cmd.CombinedOutput()
	if !strings.Contains(string(got), ErrNotRoot.Error()) {
		t.Errorf("Up as uid 65534 said %q, want %q", got, ErrNotRoot)
	}
}

// TestUpFailureLeavesNothing: a service that does not start fails Up, which removes what it made.
func TestUpFailureLeavesNothing(t *testing.T) {
	tl := newTestLab(t)
	o := tl.opts
	o.Exe = "/bin/false"
	_, err := Up(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "dns's service exited") {
		t.Fatalf("Up with a service that exits: %v, want the dns service named", err)
	}
	assertGone(t, o)
}
