package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quanyu/quanyu/internal/oracle"
	"github.com/quanyu/quanyu/internal/testbin"
)

// Acceptance: `quanyu replay` on every public capture gives, for every flow tshark finds, the same
// transport, endpoints, and per-direction packets and IP bytes; the client is tshark's initiator
// where it names one.
func TestReplayMatchesOracle(t *testing.T) {
	testdata := testbin.SharedTestdata(t)
	cases, err := oracle.Cases(testdata)
	if err != nil {
		t.Fatal(err)
	}
	for name, pcap := range cases {
		t.Run(name, func(t *testing.T) {
			exp, err := oracle.Load(testdata, name)
			if err != nil {
				t.Fatal(err)
			}
			cmd := quanyu(t, "replay", pcap)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("quanyu replay %s: %v\n%s", pcap, err, stderr.String())
			}
			recs := parseRecords(t, out)
			for _, d := range oracle.Compare(recs.flows, exp) {
				t.Error(d)
			}
			capture, ok := recs.stats["capture-mmap"]
			if !ok {
				t.Fatalf("no stats record from the capture plugin")
			}
			if got := capture.Counters["non_ip"] + capture.Counters["arp"]; got != exp.NonIPFrames {
				t.Errorf("non-IP frames: %d (arp %d), oracle %d", got, capture.Counters["arp"], exp.NonIPFrames)
			}
			for k, v := range capture.Counters {
				if strings.HasPrefix(k, "parse_error.") && v > 0 {
					t.Errorf("%s = %d on a well-formed capture", k, v)
				}
			}
			if capture.Counters["drop.emit_queue_full"] != 0 {
				t.Errorf("replay dropped records: %v", capture.Counters)
			}
		})
	}
}

// The three Community ID vectors stated in the test data's README (computed by Zeek).
func TestReplayCommunityID(t *testing.T) {
	testdata := testbin.SharedTestdata(t)
	for file, want := range map[string]string{
		"communityid/tcp.pcap":  "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
		"communityid/udp.pcap":  "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
		"communityid/icmp.pcap": "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
	} {
		out, err := quanyu(t, "replay", filepath.Join(testdata, "pcaps", "zeek", file)).Output()
		if err != nil {
			t.Fatalf("replay %s: %v", file, err)
		}
		recs := parseRecords(t, out)
		found := false
		for _, f := range recs.flows {
			if f.CommunityID == want {
				found = true
			}
		}
		if !found {
			ids := []string{}
			for _, f := range recs.flows {
				ids = append(ids, f.CommunityID)
			}
			t.Errorf("%s: no flow with Community ID %s; got %v", file, want, ids)
		}
	}
}

// --format seed prints the seed's message shape and nothing else on stdout: one message for the
// conversation and one for its HTTP transaction, which names the method in L7.
func TestReplaySeedFormat(t *testing.T) {
	testdata := testbin.SharedTestdata(t)
	out, err := quanyu(t, "replay", "--format", "seed", filepath.Join(testdata, "pcaps", "zeek", "http", "get.pcap")).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want two seed messages (the conversation, its GET), got %d lines:\n%s", len(lines), out)
	}
	seen := map[string]bool{}
	for _, line := range lines {
		var m map[string]string
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"NIC": "", "L3": "192.150.187.43", "L3Frame": "", "L4Class": "TCP", "L4": "80",
			"L4Frame": "", "L7": m["L7"], "L7Frame": ""}
		for k, v := range want {
			if got, ok := m[k]; !ok || got != v {
				t.Errorf("%s = %q (present %v), want %q", k, got, ok, v)
			}
		}
		if len(m) != len(want) {
			t.Errorf("seed message has extra fields: %v", m)
		}
		seen[m["L7"]] = true
	}
	if !seen[""] || !seen["GET"] {
		t.Errorf("want a message with L7 \"\" (the flow) and one with \"GET\"; got %v", seen)
	}
}

func TestReplayBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "not-a-capture.pcap")
	if err := writeFile(bad, "this is not a capture file"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"replay"}, "no files to replay"},
		{[]string{"replay", filepath.Join(dir, "missing.pcap")}, "no such file"},
		{[]string{"replay", bad}, "neither pcap nor pcapng"},
		{[]string{"replay", "--format", "xml", bad}, "plugins.sink-stdout.format"},
	} {
		var stderr bytes.Buffer
		cmd := quanyu(t, tc.args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		if err == nil {
			t.Errorf("%v: succeeded, want an error", tc.args)
			continue
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr does not say %q:\n%s", tc.args, tc.want, stderr.String())
		}
	}
}
