package doctor

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The probes that need no privilege, on this machine: the process's own capabilities, a port
// this test holds, and directories it owns.
func TestSystemHost(t *testing.T) {
	h := System()
	p, err := h.Process()
	if err != nil {
		t.Fatal(err)
	}
	if p.EUID != os.Geteuid() || p.Effective&^p.Permitted != 0 {
		t.Errorf("process %+v: effective capabilities beyond the permitted ones", p)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if err := h.Listen(ln.Addr().String()); err == nil {
		t.Errorf("binding %s, which this test holds, succeeded", ln.Addr())
	}
	owner, err := h.PortOwner(port)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("(pid %d)", os.Getpid()); !strings.HasSuffix(owner, want) {
		t.Errorf("port %d: owner %q, want this process %s", port, owner, want)
	}
	if owner, err := h.PortOwner(1); err != nil || owner != "" {
		t.Errorf("port 1, with no listener: %q %v", owner, err)
	}

	dir := t.TempDir()
	if tested, err := h.Writable(dir); err != nil || tested != dir {
		t.Errorf("Writable(%s) = %s, %v", dir, tested, err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("Writable left %v behind", left)
	}
	if tested, err := h.Writable(filepath.Join(dir, "a", "b")); err != nil || tested != dir {
		t.Errorf("Writable of a directory yet to be made = %s, %v; want its existing parent %s", tested, err, dir)
	}
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Writable(filepath.Join(file, "sub")); err == nil {
		t.Error("a directory under a regular file was called writable")
	}
	if fc, err := h.FileCaps(file); err != nil || fc != nil {
		t.Errorf("a file without capabilities: %+v, %v", fc, err)
	}
}
