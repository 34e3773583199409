// Package oracle compares flow records with the answers an independent tool (tshark, through
// ../shared/testdata/tools/oracle.py) gives for the public test captures. Tests at every level —
// the flow table, the replay command — use it, so they hold the code to one definition.
package oracle

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/quanyu/quanyu/sdk"
)

// Expected is the shape of expected/<name>.json.
type Expected struct {
	Flows       []Flow `json:"flows"`
	HTTP        []HTTP `json:"http"`
	NonIPFrames uint64 `json:"non_ip_frames"`
	Pcap        string `json:"pcap"`
}

// Flow is one conversation: "a" sent the first packet; "initiator" ("a", "b" or null) sent the
// SYN without ACK.
type Flow struct {
	Transport int      `json:"transport"`
	A         Endpoint `json:"a"`
	B         Endpoint `json:"b"`
	Initiator *string  `json:"initiator"`
	AToB      Counts   `json:"a_to_b"`
	BToA      Counts   `json:"b_to_a"`
}

// Endpoint is an address and port as text.
type Endpoint struct {
	Addr string `json:"addr"`
	Port uint16 `json:"port"`
}

// Counts are one direction's packets and IP bytes.
type Counts struct {
	Packets uint64 `json:"packets"`
	IPBytes uint64 `json:"ip_bytes"`
}

// HTTP is one request with its response status where tshark paired one.
type HTTP struct {
	Method string `json:"method"`
	Host   string `json:"host"`
	URI    string `json:"uri"`
	Status int    `json:"status"`
	Stream int    `json:"stream"`
}

// Cases lists every capture under <testdata>/pcaps/zeek with its expected file: the name is the
// path under pcaps/zeek with '/' turned to '_' and .pcap dropped (http/get.pcap → http_get).
func Cases(testdata string) (map[string]string, error) {
	root := filepath.Join(testdata, "pcaps", "zeek")
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".pcap") {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[strings.ReplaceAll(strings.TrimSuffix(rel, ".pcap"), string(filepath.Separator), "_")] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing captures under %s: %w", root, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no .pcap files under %s", root)
	}
	return out, nil
}

// Load reads <testdata>/expected/<name>.json.
func Load(testdata, name string) (*Expected, error) {
	p := filepath.Join(testdata, "expected", name+".json")
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading the oracle's answer: %w", err)
	}
	var e Expected
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", p, err)
	}
	return &e, nil
}

// Key is a conversation as the oracle keys it: transport and the unordered endpoint pair.
type Key struct {
	Transport int
	Lo, Hi    sdk.Endpoint
}

// KeyOf orders the endpoints.
func KeyOf(transport int, x, y sdk.Endpoint) Key {
	if y.Addr.Less(x.Addr) || y.Addr == x.Addr && y.Port < x.Port {
		x, y = y, x
	}
	return Key{transport, x, y}
}

func (k Key) String() string {
	return fmt.Sprintf("%s %s <-> %s", sdk.Transport(k.Transport), netip.AddrPortFrom(k.Lo.Addr, k.Lo.Port),
		netip.AddrPortFrom(k.Hi.Addr, k.Hi.Port))
}

func (e Endpoint) parse() (sdk.Endpoint, error) {
	a, err := netip.ParseAddr(e.Addr)
	if err != nil {
		return sdk.Endpoint{}, fmt.Errorf("oracle address %q: %w", e.Addr, err)
	}
	return sdk.Endpoint{Addr: a, Port: e.Port}, nil
}

// total is one conversation summed over its records, per direction by endpoint.
type total struct {
	from    map[sdk.Endpoint]sdk.Counts
	clients map[sdk.Endpoint]bool
	records []sdk.Flow
}

// endings checks how a conversation's records end: the last is final, and a final record before
// it can only be an idle timeout (a gap longer than capture.idle_timeout splits a conversation in
// two, as a NetFlow exporter's inactive timeout does; tshark keys by the endpoints alone).
func (t *total) endings(k Key) []string {
	recs := t.records
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].End.Before(recs[j].End) })
	var diffs []string
	if last := recs[len(recs)-1]; !last.Final {
		diffs = append(diffs, fmt.Sprintf("%s: the last of %d records is not final", k, len(recs)))
	}
	for _, r := range recs[:len(recs)-1] {
		if r.Final && r.EndReason != sdk.EndIdle {
			diffs = append(diffs, fmt.Sprintf("%s: a final record (%s) before the conversation's last record", k, r.EndReason))
		}
	}
	return diffs
}

// Compare checks records against the oracle: the same conversations, and for each the same
// transport, endpoints and per-direction packets and IP bytes (records of one conversation
// summed: "the sum over its records is its total"), records ending as a conversation's should
// (see endings), and the oracle's initiator as the client where it names one. It returns every difference.
func Compare(flows []sdk.Flow, exp *Expected) []string {
	var diffs []string
	got := map[Key]*total{}
	for _, f := range flows {
		k := KeyOf(int(f.Transport), f.Client, f.Server)
		t := got[k]
		if t == nil {
			t = &total{from: map[sdk.Endpoint]sdk.Counts{}, clients: map[sdk.Endpoint]bool{}}
			got[k] = t
		}
		t.from[f.Client] = t.from[f.Client].Add(f.ClientToServer)
		t.from[f.Server] = t.from[f.Server].Add(f.ServerToClient)
		t.clients[f.Client] = true
		t.records = append(t.records, f)
	}
	seen := map[Key]bool{}
	for i, of := range exp.Flows {
		a, err := of.A.parse()
		if err != nil {
			diffs = append(diffs, err.Error())
			continue
		}
		b, err := of.B.parse()
		if err != nil {
			diffs = append(diffs, err.Error())
			continue
		}
		k := KeyOf(of.Transport, a, b)
		seen[k] = true
		t := got[k]
		if t == nil {
			diffs = append(diffs, fmt.Sprintf("oracle flow %d %s: no record", i, k))
			continue
		}
		if g := t.from[a]; g != (sdk.Counts{Packets: of.AToB.Packets, IPBytes: of.AToB.IPBytes}) {
			diffs = append(diffs, fmt.Sprintf("%s: from %v %d packets / %d IP bytes, oracle %d / %d",
				k, a, g.Packets, g.IPBytes, of.AToB.Packets, of.AToB.IPBytes))
		}
		if g := t.from[b]; g != (sdk.Counts{Packets: of.BToA.Packets, IPBytes: of.BToA.IPBytes}) {
			diffs = append(diffs, fmt.Sprintf("%s: from %v %d packets / %d IP bytes, oracle %d / %d",
				k, b, g.Packets, g.IPBytes, of.BToA.Packets, of.BToA.IPBytes))
		}
		diffs = append(diffs, t.endings(k)...)
		if of.Initiator != nil {
			want := a
			if *of.Initiator == "b" {
				want = b
			}
			if len(t.clients) != 1 || !t.clients[want] {
				diffs = append(diffs, fmt.Sprintf("%s: client %v, oracle's initiator %v", k, keys(t.clients), want))
			}
		}
	}
	var extra []string
	for k := range got {
		if !seen[k] {
			extra = append(extra, k.String())
		}
	}
	sort.Strings(extra)
	for _, k := range extra {
		diffs = append(diffs, fmt.Sprintf("%s: recorded, but not in the oracle", k))
	}
	return diffs
}

func keys(m map[sdk.Endpoint]bool) []sdk.Endpoint {
	out := make([]sdk.Endpoint, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
