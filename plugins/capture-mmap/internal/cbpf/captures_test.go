package cbpf

import (
	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/internal/testpcap"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/quanyu/quanyu/internal/testframes"
	"github.com/quanyu/quanyu/sdk"
)

func readCapture(t *testing.T, path string) ([][]byte, layers.LinkType) {
	t.Helper()
	frames, lt := testpcap.Read(t, path)
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = f.Data
	}
	return out, lt
}

// TestPublicCaptures runs the real frames of the shared captures (VLAN and QinQ, IPv4 and IPv6
// fragments, DNS, HTTP, TLS, ICMP) through programs for subscriptions built from each capture's
// own addresses and ports, against the reference matcher.
func TestPublicCaptures(t *testing.T) {
	seed := testSeed(t)
	root := filepath.Join(testbin.SharedTestdata(t), "pcaps")
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".pcap") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no .pcap files under %s", root)
	}
	slices.Sort(files)
	g := testframes.NewGen(seed)
	total, accepted, rejected := 0, 0, 0
	verdicts := map[verdict]int{}
	for _, path := range files {
		name, _ := filepath.Rel(root, path)
		t.Run(name, func(t *testing.T) {
			frames, link := readCapture(t, path)
			if link != layers.LinkTypeEthernet {
				t.Skipf("link type %v: the filter is for Ethernet frames", link)
			}
			// The capture's own values are the targets the subscriptions are made of.
			tg := &testframes.Targets{}
			for _, frame := range frames {
				v, meta := readFrame(frame)
				verdicts[v]++
				if v != decide {
					continue
				}
				crossCheck(t, frame, meta)
				for _, a := range []netip.Addr{meta.Src.Unmap(), meta.Dst.Unmap()} {
					if a.Is4() {
						tg.V4 = append(tg.V4, a)
					} else {
						tg.V6 = append(tg.V6, a)
					}
				}
				tg.Ports = append(tg.Ports, meta.SrcPort, meta.DstPort)
			}
			for set := range 30 {
				subs := []sdk.Subscription{g.SubscriptionFrom(tg, "a"), g.SubscriptionFrom(tg, "b")}
				if set == 0 {
					subs = []sdk.Subscription{{ID: "all"}}
				}
				prog, err := Compile(subs, "eth0", Options{SnapLen: 150})
				if err != nil {
					t.Fatal(err)
				}
				vm := newVM(t, prog)
				m := sdk.NewMatcher(subs)
				for i, frame := range frames {
					w, v, meta := want(m, prog, 150, "eth0", frame)
					got := runVM(t, vm, frame)
					if got != w {
						t.Fatalf("frame %d: filter returns %d, want %d (%v, %+v)\nset %s\n%x", i, got, w, v, meta, setJSON(subs), frame)
					}
					if got != 0 {
						accepted++
					} else {
						rejected++
					}
				}
			}
			total += len(frames)
		})
	}
	t.Logf("%d frames from %d captures (%v: %d, %v: %d, %v: %d); over all sets %d accepted, %d rejected",
		total, len(files), decide, verdicts[decide], mustAccept, verdicts[mustAccept], mustReject, verdicts[mustReject],
		accepted, rejected)
	if verdicts[decide] < total*9/10 || accepted < total || rejected < total {
		t.Errorf("the captures should be mostly well-formed IP and the sets should both pass and drop frames")
	}
}
