package flowtable

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/quanyu/quanyu/internal/packet"
	"github.com/quanyu/quanyu/sdk"
)

// oracle is the shape of expected/<name>.json, written by testdata/tools/oracle.py from tshark.
type oracle struct {
	Flows []struct {
		Transport int            `json:"transport"`
		A         oracleEndpoint `json:"a"`
		B         oracleEndpoint `json:"b"`
		Initiator *string        `json:"initiator"`
		AToB      oracleCounts   `json:"a_to_b"`
		BToA      oracleCounts   `json:"b_to_a"`
	} `json:"flows"`
	NonIPFrames uint64 `json:"non_ip_frames"`
}

type oracleEndpoint struct {
	Addr string `json:"addr"`
	Port uint16 `json:"port"`
}

type oracleCounts struct {
	Packets uint64 `json:"packets"`
	IPBytes uint64 `json:"ip_bytes"`
}

// conv is a conversation as the oracle keys it: transport and the unordered endpoint pair.
type conv struct {
	transport int
	lo, hi    sdk.Endpoint
}

func convOf(transport int, x, y sdk.Endpoint) conv {
	if y.Addr.Less(x.Addr) || y.Addr == x.Addr && y.Port < x.Port {
		x, y = y, x
	}
	return conv{transport, x, y}
}

func (c conv) String() string {
	return fmt.Sprintf("%s %s <-> %s", sdk.Transport(c.transport), netip.AddrPortFrom(c.lo.Addr, c.lo.Port), netip.AddrPortFrom(c.hi.Addr, c.hi.Port))
}

func endpointOfOracle(t *testing.T, e oracleEndpoint) sdk.Endpoint {
	t.Helper()
	a, err := netip.ParseAddr(e.Addr)
	if err != nil {
		t.Fatalf("oracle address %q: %v", e.Addr, err)
	}
	return sdk.Endpoint{Addr: a, Port: e.Port}
}

// replay feeds a pcap through a table as the capture engine does (Tick on packet time, Flush at
// the end) and returns the records and the counters.
func replay(t *testing.T, path string, cfg Config) ([]sdk.Flow, map[string]uint64) {
	t.Helper()
	var recs []sdk.Flow
	tbl, err := New(cfg, matchAll(), func(f sdk.Flow) { recs = append(recs, f) })
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range readFrames(t, path) {
		tbl.Tick(fr.ts)
		tbl.AddFrame(1, "", fr.ts, fr.data, packet.NoVLAN)
	}
	tbl.Flush(sdk.EndInput)
	if tbl.Len() != 0 {
		t.Errorf("%d flows left after Flush", tbl.Len())
	}
	return recs, tbl.Counters()
}

func matchAll() *sdk.Matcher { return sdk.NewMatcher([]sdk.Subscription{{ID: "all"}}) }

// TestOracle replays every shared pcap and compares the flows with tshark's answer in
// expected/<name>.json: the same conversations, per-direction packets and IP bytes (summed over
// our records of a conversation), our client equal to the oracle's initiator where it names one,
// and the same number of non-IP frames.
func TestOracle(t *testing.T) {
	td := testdataDir(t)
	root := filepath.Join(td, "pcaps", "zeek")
	for _, path := range pcapFiles(t) {
		rel, _ := filepath.Rel(root, path)
		name := strings.TrimSuffix(strings.ReplaceAll(filepath.ToSlash(rel), "/", "_"), ".pcap")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(td, "expected", name+".json"))
			if err != nil {
				t.Fatalf("reading the oracle for %s: %v", rel, err)
			}
			var want oracle
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatalf("parsing the oracle for %s: %v", rel, err)
			}
			recs, counters := replay(t, path, DefaultConfig())

			// Sum our records per conversation and per sending endpoint.
			type sums struct{ from map[sdk.Endpoint]sdk.Counts }
			got := map[conv]*sums{}
			for _, r := range recs {
				c := convOf(int(r.Transport), r.Client, r.Server)
				s := got[c]
				if s == nil {
					s = &sums{from: map[sdk.Endpoint]sdk.Counts{}}
					got[c] = s
				}
				s.from[r.Client] = s.from[r.Client].Add(r.ClientToServer)
				s.from[r.Server] = s.from[r.Server].Add(r.ServerToClient)
			}
			seen := map[conv]bool{}
			for _, w := range want.Flows {
				a, b := endpointOfOracle(t, w.A), endpointOfOracle(t, w.B)
				c := convOf(w.Transport, a, b)
				seen[c] = true
				s := got[c]
				if s == nil {
					t.Errorf("%v: in the oracle, not in our records", c)
					continue
				}
				if g := s.from[a]; g != (sdk.Counts{Packets: w.AToB.Packets, IPBytes: w.AToB.IPBytes}) {
					t.Errorf("%v: from %v we count %+v, oracle %+v", c, a, g, w.AToB)
				}
				if g := s.from[b]; g != (sdk.Counts{Packets: w.BToA.Packets, IPBytes: w.BToA.IPBytes}) {
					t.Errorf("%v: from %v we count %+v, oracle %+v", c, b, g, w.BToA)
				}
				if w.Initiator != nil {
					init := a
					if *w.Initiator == "b" {
						init = b
					}
					for _, r := range recs {
						if convOf(int(r.Transport), r.Client, r.Server) == c && r.Client != init {
							t.Errorf("%v: a record names %v the client, the oracle's initiator is %v", c, r.Client, init)
						}
					}
				}
			}
			for c := range got {
				if !seen[c] {
					t.Errorf("%v: in our records, not in the oracle", c)
				}
			}
			if len(got) != len(want.Flows) {
				t.Errorf("%d conversations, oracle %d", len(got), len(want.Flows))
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
	td := testdataDir(t)
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
