package doctor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// System is the running machine, probed for real.
func System() Host { return system{} }

type system struct{}

var _ Host = system{}

func (system) KernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

func (system) Process() (Process, error) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return Process{}, fmt.Errorf("reading capabilities: %w", err)
	}
	return ParseStatus(string(raw), os.Geteuid())
}

func (system) FileCaps(path string) (*FileCaps, error) {
	buf := make([]byte, 64)
	n, err := unix.Getxattr(path, "security.capability", buf)
	if errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the file capabilities of %s: %w", path, err)
	}
	fc, err := ParseFileCaps(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("file capabilities of %s: %w", path, err)
	}
	return &fc, nil
}

// The probes use cilium/ebpf's feature tests, as the capture plugin itself is built on that
// library: they create a map, or load a minimal program, of the kind asked about.

func (system) ProbeProgram() error { return features.HaveProgramType(ebpf.SchedCLS) }

func (system) ProbeMap(t ebpf.MapType) error { return features.HaveMapType(t) }

func (system) ProbeHelper(f asm.BuiltinFunc) error {
	return features.HaveProgramHelper(ebpf.SchedCLS, f)
}

// ProbeTCX does what the capture plugin does at start to learn whether it can use TCX: attach
// to the loopback device's ingress and let go at once. The probe program returns TCX_NEXT (-1),
// so while attached it leaves every packet to whatever comes after it.
func (system) ProbeTCX() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("loading the probe program: %w", err)
	}
	defer prog.Close()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("finding the loopback device: %w", err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("attaching with TCX to lo: %w", err)
	}
	return l.Close()
}

// ProbeAFPacket sets up what the mmap capture's ring needs (gopacket's afpacket does the same
// calls): a packet socket, TPACKET_V3, a receive ring, and its mapping. The socket is bound to no
// protocol, so no packet is ever queued to it.
func (system) ProbeAFPacket() error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening an AF_PACKET socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fmt.Errorf("setting TPACKET_V3: %w", err)
	}
	page := uint32(os.Getpagesize())
	req := unix.TpacketReq3{Block_size: page, Block_nr: 1, Frame_size: page, Frame_nr: 1, Retire_blk_tov: 10}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("setting up a TPACKET_V3 receive ring: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, int(page), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping the receive ring: %w", err)
	}
	return unix.Munmap(mem)
}

func (system) Memlock() (uint64, uint64, error) {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &l); err != nil {
		return 0, 0, fmt.Errorf("reading RLIMIT_MEMLOCK: %w", err)
	}
	return l.Cur, l.Max, nil
}

func (system) Stat(path string) (fs.FileInfo, error) { return os.Stat(path) }

func (system) ReadLink(path string) (string, error) { return os.Readlink(path) }

func (system) LookPath(name string) (string, error) { return exec.LookPath(name) }

func (system) FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Writable writes and removes a file in dir. A directory that does not exist yet is tested
// through its nearest existing parent, without creating anything: the kernel's access check,
// with the effective ids, says whether the program could create it.
func (system) Writable(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if errors.Is(err, fs.ErrNotExist) && filepath.Dir(d) != d {
			continue
		}
		if err != nil {
			return d, err
		}
		if !info.IsDir() {
			return d, fmt.Errorf("%s is not a directory", d)
		}
		if d != dir {
			if err := unix.Faccessat(unix.AT_FDCWD, d, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
				return d, fmt.Errorf("%s: %w", d, err)
			}
			return d, nil
		}
		f, err := os.CreateTemp(d, ".quanyu-doctor-*")
		if err != nil {
			return d, err
		}
		f.Close()
		return d, os.Remove(f.Name())
	}
}

func (system) Listen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

// PortOwner finds the listening socket's inode in /proc/net/tcp{,6}, then the process holding
// that socket among /proc/*/fd. Without privilege only this user's processes can be looked into.
func (system) PortOwner(port int) (string, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		file, err := os.Open(f)
		if err != nil {
			continue
		}
		for _, ino := range ListeningInodes(file, port) {
			inodes["socket:["+ino+"]"] = true
		}
		file.Close()
	}
	if len(inodes) == 0 {
		return "", nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return "", fmt.Errorf("listing processes: %w", err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err == nil && inodes[target] {
				return describeProcess(pid), nil
			}
		}
	}
	return "", nil
}

// describeProcess names a process by its command line's first two words ("quanyu mix").
func describeProcess(pid int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if err != nil || len(args) == 0 || args[0] == "" {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return fmt.Sprintf("%s (pid %d)", strings.TrimSpace(string(comm)), pid)
	}
	name := filepath.Base(args[0])
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		name += " " + args[1]
	}
	return fmt.Sprintf("%s (pid %d)", name, pid)
}
