package doctor

import (
	"encoding/hex"
	"strings"
	"testing"
)

func caps(cs ...int) CapSet {
	var s CapSet
	for _, c := range cs {
		s |= 1 << uint(c)
	}
	return s
}

func TestParseStatus(t *testing.T) {
	// As a root shell in a container without CAP_SYS_RESOURCE prints it.
	status := "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nUid:\t0\t0\t0\t0\n" +
		"CapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n" +
		"CapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n"
	p, err := ParseStatus(status, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{CapBPF, CapPerfmon, CapNetAdmin, CapNetRaw, CapSysAdmin} {
		if !p.Effective.Has(c) {
			t.Errorf("%s not read as effective", CapName(c))
		}
	}
	if p.Effective.Has(CapSysResource) || p.Ambient != 0 || p.NoNewPrivs || p.Bounding != p.Effective {
		t.Errorf("parsed %+v", p)
	}
	p, err = ParseStatus(strings.Replace(status, "NoNewPrivs:\t0", "NoNewPrivs:\t1", 1), 65534)
	if err != nil || !p.NoNewPrivs || p.EUID != 65534 {
		t.Errorf("NoNewPrivs 1: %+v %v", p, err)
	}
	if _, err := ParseStatus(strings.Replace(status, "CapAmb:", "Cap:", 1), 0); err == nil {
		t.Error("a status without CapAmb was accepted")
	}
	if _, err := ParseStatus(strings.Replace(status, "CapEff:\t000001fffeffffff", "CapEff:\tzz", 1), 0); err == nil {
		t.Error("a capability set that is not hex was accepted")
	}
}

func TestParseFileCaps(t *testing.T) {
	for _, tc := range []struct {
		name, xattr string
		want        FileCaps
		err         bool
	}{
		// Written by `setcap cap_bpf,cap_net_raw+ep FILE` (libcap 2.66), read back with getxattr.
		{name: "v2 permitted effective", xattr: "0100000200200000000000008000000000000000",
			want: FileCaps{Permitted: caps(CapBPF, CapNetRaw), Effective: true}},
		// Written by `setcap cap_net_admin+i FILE`.
		{name: "v2 inheritable", xattr: "0000000200000000001000000000000000000000",
			want: FileCaps{Inheritable: caps(CapNetAdmin)}},
		// Revision 3 (namespaced file capabilities) adds the root uid after the same words.
		{name: "v3", xattr: "010000030020000000000000800000000000000000000000",
			want: FileCaps{Permitted: caps(CapBPF, CapNetRaw), Effective: true}},
		{name: "v1", xattr: "010000010020000000000000", want: FileCaps{Permitted: caps(CapNetRaw), Effective: true}},
		{name: "short", xattr: "01000002002000", err: true},
		{name: "unknown revision", xattr: "0100000900200000000000008000000000000000", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := hex.DecodeString(tc.xattr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseFileCaps(raw)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %v", err, tc.err)
			}
			if !tc.err && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The capability rules of execve(2), for the cases the agent meets: root, systemd's ambient
// capabilities, setcap on a plugin, setcap on the wrong binary, and no_new_privs.
func TestExecCaps(t *testing.T) {
	all := caps(CapBPF, CapPerfmon, CapNetAdmin, CapNetRaw, CapSysAdmin, CapSysPtrace)
	agent := caps(CapBPF, CapPerfmon, CapNetAdmin, CapNetRaw)
	for _, tc := range []struct {
		name string
		p    Process
		file *FileCaps
		want CapSet
	}{
		{name: "root gets the bounding set", p: Process{EUID: 0, Permitted: all, Effective: all, Bounding: all}, want: all},
		{name: "root in a container with capabilities dropped", p: Process{EUID: 0, Permitted: agent, Effective: agent, Bounding: agent}, want: agent},
		{name: "root with no_new_privs keeps what it has", p: Process{EUID: 0, Permitted: agent, Bounding: all, NoNewPrivs: true}, want: agent},
		{name: "systemd ambient capabilities", p: Process{EUID: 993, Permitted: agent, Effective: agent, Inheritable: agent,
			Ambient: agent, Bounding: agent, NoNewPrivs: true}, want: agent},
		{name: "setcap on the plugin", p: Process{EUID: 1000, Bounding: all},
			file: &FileCaps{Permitted: agent, Effective: true}, want: agent},
		{name: "setcap without e", p: Process{EUID: 1000, Bounding: all}, file: &FileCaps{Permitted: agent}, want: 0},
		{name: "setcap on the plugin, bounding set limits", p: Process{EUID: 1000, Bounding: caps(CapNetRaw)},
			file: &FileCaps{Permitted: agent, Effective: true}, want: caps(CapNetRaw)},
		{name: "setcap on the plugin under no_new_privs", p: Process{EUID: 1000, Bounding: all, NoNewPrivs: true},
			file: &FileCaps{Permitted: agent, Effective: true}, want: 0},
		{name: "setcap on quanyu only: the plugin gets nothing", p: Process{EUID: 1000, Permitted: agent, Effective: agent, Bounding: all},
			want: 0},
		{name: "file capabilities replace ambient ones", p: Process{EUID: 1000, Permitted: agent, Ambient: agent, Inheritable: agent, Bounding: all},
			file: &FileCaps{Permitted: caps(CapNetRaw), Effective: true}, want: caps(CapNetRaw)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExecCaps(tc.p, tc.file); got != tc.want {
				t.Errorf("ExecCaps = %#x, want %#x", uint64(got), uint64(tc.want))
			}
		})
	}
}

func TestParseKernelRelease(t *testing.T) {
	for rel, want := range map[string][3]int{
		"6.8.0-45-generic":                   {6, 8, 0},
		"5.15.167.4-microsoft-standard-WSL2": {5, 15, 167},
		"6.1-rc3":                            {6, 1, 0},
		"4.19.0":                             {4, 19, 0},
	} {
		a, b, c, ok := ParseKernelRelease(rel)
		if !ok || [3]int{a, b, c} != want {
			t.Errorf("%s: %d.%d.%d %v, want %v", rel, a, b, c, ok, want)
		}
	}
	for _, rel := range []string{"", "six", "6", "v6.8"} {
		if _, _, _, ok := ParseKernelRelease(rel); ok {
			t.Errorf("%q read as a version", rel)
		}
	}
}

func TestListeningInodes(t *testing.T) {
	// /proc/net/tcp with a listener on 127.0.0.1:7070 (0x1B9E), one on *:8080 (0x1F90), and an
	// established connection from port 7070 that must not count.
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1B9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41240 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1B9E 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 41250 1 0000000000000000 20 4 30 10 -1
`
	if got := ListeningInodes(strings.NewReader(tcp), 7070); len(got) != 1 || got[0] != "41234" {
		t.Errorf("port 7070: %v, want [41234]", got)
	}
	if got := ListeningInodes(strings.NewReader(tcp), 8080); len(got) != 1 || got[0] != "41240" {
		t.Errorf("port 8080: %v, want [41240]", got)
	}
	if got := ListeningInodes(strings.NewReader(tcp), 4317); len(got) != 0 {
		t.Errorf("port 4317: %v, want none", got)
	}
}

func FuzzParseFileCaps(f *testing.F) {
	for _, s := range []string{"0100000200200000000000008000000000000000", "010000010020000000000000", "01"} {
		raw, _ := hex.DecodeString(s)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fc, err := ParseFileCaps(raw)
		if err != nil && fc != (FileCaps{}) {
			t.Errorf("an error with a result: %+v", fc)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add("CapInh:\t0\nCapPrm:\t1\nCapEff:\t1\nCapBnd:\tffff\nCapAmb:\t0\nNoNewPrivs:\t1\n")
	f.Fuzz(func(t *testing.T, text string) {
		p, err := ParseStatus(text, 0)
		if err == nil && p.Effective&^p.Permitted != 0 && !strings.Contains(text, "CapEff") {
			t.Errorf("effective capabilities from nowhere: %+v", p)
		}
	})
}

func FuzzListeningInodes(f *testing.F) {
	f.Add("sl local\n 0: 0100007F:1B9E 00000000:0000 0A 0:0 0:0 0 0 0 41234\n", 7070)
	f.Fuzz(func(t *testing.T, text string, port int) {
		for _, ino := range ListeningInodes(strings.NewReader(text), port) {
			if ino == "0" || ino == "" {
				t.Errorf("inode %q returned", ino)
			}
		}
	})
}
