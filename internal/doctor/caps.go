package doctor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// Capability numbers (linux/capability.h) of the capabilities Quanyu cares about.
const (
	CapNetAdmin    = 12
	CapNetRaw      = 13
	CapSysPtrace   = 19
	CapSysAdmin    = 21
	CapSysResource = 24
	CapPerfmon     = 38
	CapBPF         = 39
)

var capNames = map[int]string{
	CapNetAdmin: "CAP_NET_ADMIN", CapNetRaw: "CAP_NET_RAW", CapSysPtrace: "CAP_SYS_PTRACE",
	CapSysAdmin: "CAP_SYS_ADMIN", CapSysResource: "CAP_SYS_RESOURCE", CapPerfmon: "CAP_PERFMON", CapBPF: "CAP_BPF",
}

// CapName is the capability's name as the man pages spell it.
func CapName(c int) string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return fmt.Sprintf("cap_%d", c)
}

// CapSet is a set of capabilities, bit n for capability n, as /proc/PID/status prints it.
type CapSet uint64

// Has reports whether c is in the set.
func (s CapSet) Has(c int) bool { return s&(1<<uint(c)) != 0 }

// Count is the number of capabilities in the set.
func (s CapSet) Count() int { return bits.OnesCount64(uint64(s)) }

// Process is what decides the capabilities of this process and of the programs it starts.
type Process struct {
	EUID                                                 int
	Inheritable, Permitted, Effective, Bounding, Ambient CapSet
	// NoNewPrivs is set by NoNewPrivileges=yes, allowPrivilegeEscalation: false or setpriv
	// --no-new-privs: file capabilities no longer raise what an exec'd program gets.
	NoNewPrivs bool
}

// ParseStatus reads the capability sets and NoNewPrivs from the text of /proc/PID/status.
func ParseStatus(text string, euid int) (Process, error) {
	p := Process{EUID: euid}
	sets := map[string]*CapSet{"CapInh": &p.Inheritable, "CapPrm": &p.Permitted, "CapEff": &p.Effective,
		"CapBnd": &p.Bounding, "CapAmb": &p.Ambient}
	seen := 0
	for _, line := range strings.Split(text, "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		if key == "NoNewPrivs" {
			p.NoNewPrivs = value == "1"
			continue
		}
		set, ok := sets[key]
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(value, 16, 64)
		if err != nil {
			return Process{}, fmt.Errorf("reading %s %q: %w", key, value, err)
		}
		*set = CapSet(v)
		seen++
	}
	if seen != len(sets) {
		return Process{}, errors.New("reading capabilities: CapInh, CapPrm, CapEff, CapBnd or CapAmb is missing")
	}
	return p, nil
}

// FileCaps are the capabilities an executable carries in its security.capability attribute
// (setcap).
type FileCaps struct {
	Permitted, Inheritable CapSet
	// Effective is setcap's "e": the permitted set becomes effective at exec.
	Effective bool
}

// vfs_cap_data (linux/capability.h): a 32-bit magic with the revision and the effective flag, then
// permitted and inheritable words, low 32 bits first; revision 3 adds the namespace's root uid.
const (
	vfsCapRevisionMask   = 0xFF000000
	vfsCapRevision1      = 0x01000000
	vfsCapRevision2      = 0x02000000
	vfsCapRevision3      = 0x03000000
	vfsCapFlagsEffective = 0x000001
)

// ParseFileCaps decodes a security.capability extended attribute.
func ParseFileCaps(raw []byte) (FileCaps, error) {
	if len(raw) < 4 {
		return FileCaps{}, fmt.Errorf("security.capability is %d bytes, too short", len(raw))
	}
	magic := binary.LittleEndian.Uint32(raw)
	var words int
	switch magic & vfsCapRevisionMask {
	case vfsCapRevision1:
		words = 1
	case vfsCapRevision2, vfsCapRevision3:
		words = 2
	default:
		return FileCaps{}, fmt.Errorf("security.capability revision %#x is unknown", magic&vfsCapRevisionMask)
	}
	if len(raw) < 4+8*words {
		return FileCaps{}, fmt.Errorf("security.capability is %d bytes, too short for revision %d", len(raw), magic>>24)
	}
	fc := FileCaps{Effective: magic&vfsCapFlagsEffective != 0}
	for i := 0; i < words; i++ {
		perm := binary.LittleEndian.Uint32(raw[4+8*i:])
		inh := binary.LittleEndian.Uint32(raw[8+8*i:])
		fc.Permitted |= CapSet(perm) << (32 * i)
		fc.Inheritable |= CapSet(inh) << (32 * i)
	}
	return fc, nil
}

// ExecCaps are the effective capabilities a program this process starts will run with: the agent's
// plugins are separate executables, and capture happens in them, so what matters is what survives
// exec (capabilities(7), "Transformation of capabilities during execve"). file is the program's
// own file capabilities, nil for none.
//
//   - As root (effective uid 0) a program gets the bounding set (and the inheritable set).
//   - Otherwise, a program with file capabilities gets (inheritable ∩ file inheritable) ∪ (file
//     permitted ∩ bounding), effective only with the file's "e" flag; ambient ones are dropped.
//   - Otherwise it gets the ambient set: what systemd's AmbientCapabilities= hands down.
//
// With no_new_privs, exec never adds to what the process already has permitted.
func ExecCaps(p Process, file *FileCaps) CapSet {
	var out CapSet
	switch {
	case p.EUID == 0:
		out = p.Bounding | p.Inheritable
	case file != nil:
		out = (p.Inheritable & file.Inheritable) | (file.Permitted & p.Bounding)
		if !file.Effective {
			out = 0
		}
	default:
		out = p.Ambient
	}
	if p.NoNewPrivs {
		out &= p.Permitted
	}
	return out
}
