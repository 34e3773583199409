package flowtable

import (
	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/internal/testpcap"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/quanyu/quanyu/internal/oracle"
	"github.com/quanyu/quanyu/internal/packet"
	"github.com/quanyu/quanyu/sdk"
)

// replay feeds a pcap through a table as the capture engine does (Tick on packet time, Flush at
// the end) and returns the records and the counters.
func replay(t *testing.T, path string, cfg Config) ([]sdk.Flow, map[string]uint64) {
	t.Helper()
	var recs []sdk.Flow
	tbl, err := New(cfg, matchAll(), func(f sdk.Flow) { recs = append(recs, f) })
	if err != nil {
		t.Fatal(err)
	}
	frames, _ := testpcap.Read(t, path)
	for _, fr := range frames {
		tbl.Tick(fr.TS)
		tbl.AddFrame(1, "", fr.TS, fr.Data, packet.NoVLAN)
	}
	tbl.Flush(sdk.EndInput)
	if tbl.Len() != 0 {
		t.Errorf("%d flows left after Flush", tbl.Len())
	}
	return recs, tbl.Counters()
}

func matchAll() *sdk.Matcher { return sdk.NewMatcher([]sdk.Subscription{{ID: "all"}}) }

// TestOracle replays every shared pcap and compares the flows with tshark's answer in
// expected/<name>.json (internal/oracle holds the comparison every level of the project uses),
// and checks that every frame is accounted exactly once.
func TestOracle(t *testing.T) {
	td := testbin.SharedTestdata(t)
	cases, err := oracle.Cases(td)
	if err != nil {
		t.Fatal(err)
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			want, err := oracle.Load(td, name)
			if err != nil {
				t.Fatal(err)
			}
			recs, counters := replay(t, path, DefaultConfig())
			for _, d := range oracle.Compare(recs, want) {
				t.Error(d)
			}
			// tshark counts ARP among its non-IP frames.
			if n := counters["non_ip"] + counters["arp"]; n != want.NonIPFrames {
				t.Errorf("non-IP frames: %d (arp %d + other %d), oracle %d", n, counters["arp"], counters["non_ip"], want.NonIPFrames)
			}
			var accounted uint64
			for k, v := range counters {
				if strings.HasPrefix(k, "parse_error.") {
					accounted += v
					if v != 0 {
						t.Errorf("counter %s = %d", k, v)
					}
				}
			}
			accounted += counters["packets"] + counters["filtered"] + counters["arp"] + counters["non_ip"]
			if accounted != counters["frames"] {
				t.Errorf("frames %d, but packets+filtered+arp+non_ip+parse errors = %d", counters["frames"], accounted)
			}
		})
	}
}

// TestOracleCommunityID checks the Community IDs of the three captures whose values Zeek's
// baselines state (listed in the test data README).
func TestOracleCommunityID(t *testing.T) {
	td := testbin.SharedTestdata(t)
	readme, err := os.ReadFile(filepath.Join(td, "README.md"))
	if err != nil {
		t.Fatalf("reading the test data README: %v", err)
	}
	re := regexp.MustCompile("`communityid/(\\w+)\\.pcap`[^`]*`(1:[A-Za-z0-9+/=]+)`")
	matches := re.FindAllStringSubmatch(string(readme), -1)
	if len(matches) != 3 {
		t.Fatalf("found %d Community ID values in %s, want the three for tcp, udp and icmp", len(matches), filepath.Join(td, "README.md"))
	}
	for _, m := range matches {
		name, want := m[1], m[2]
		t.Run(name, func(t *testing.T) {
			recs, _ := replay(t, filepath.Join(td, "pcaps", "zeek", "communityid", name+".pcap"), DefaultConfig())
			if len(recs) == 0 {
				t.Fatal("no records")
			}
			for _, r := range recs {
				if r.CommunityID != want {
					t.Errorf("%v %v -> %v: Community ID %s, want %s", r.Transport, r.Client, r.Server, r.CommunityID, want)
				}
			}
		})
	}
}
