package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The agent refuses what it cannot do, before capturing anything, and says why.
func TestAgentRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badSub := write("bad.json", `{"L4Range":"6000-5000","L3":["10.0.0.300"]}`)
	noNIC := write("nic.json", `{"id":"x","spec":{"NIC":["no-such-nic0"]}}`)
	badCfg := write("bad.yaml", "capture:\n  snaplen: 3\n")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"bad subscription", []string{"agent", "--subscription", badSub},
			[]string{"L4Range: \"6000-5000\": start 6000 is greater than end 5000", "L3[0]"}},
		{"missing interface", []string{"agent", "--subscription", noNIC}, []string{`no interface "no-such-nic0"`}},
		{"bad config", []string{"agent", "--config", badCfg}, []string{"capture.snaplen"}},
		{"unknown capture backend", []string{"agent", "--capture", "nope"}, []string{"plugin capture-nope not found", "capture-mmap"}},
		{"stray argument", []string{"agent", "eth0"}, []string{"unexpected arguments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "missing interface" || tc.name == "unknown capture backend" {
				if os.Geteuid() != 0 {
					t.Skip("reaches the capture set-up, which needs root (CI runs as root)")
				}
			}
			var stderr bytes.Buffer
			cmd := quanyu(t, tc.args...)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err == nil {
				t.Fatalf("agent accepted it; stdout:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	out, err := quanyu(t, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "quanyu ") {
		t.Fatalf("version: %q, %v", out, err)
	}
	out, err = quanyu(t, "help").Output()
	if err != nil || !strings.Contains(string(out), "replay") || !strings.Contains(string(out), "agent") {
		t.Fatalf("help: %q, %v", out, err)
	}
	if err := quanyu(t, "frobnicate").Run(); err == nil {
		t.Fatal("an unknown command succeeded")
	}
}
