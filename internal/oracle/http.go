package oracle

import (
	"fmt"
	"slices"
	"strings"

	"github.com/quanyu/quanyu/sdk"
)

// HTTPTransaction is what the oracle and the agent are compared on: method, path (the URI
// without its query string, which the agent cuts by default), host and status.
type HTTPTransaction struct {
	Method, Path, Host string
	Status             int
}

func (h HTTPTransaction) String() string {
	return fmt.Sprintf("%s %s (host %q) → %d", h.Method, h.Path, h.Host, h.Status)
}

// CompareHTTP checks the agent's HTTP records against tshark's transactions. tshark numbers
// connections (streams) in order of first appearance; the agent ties records to connections by
// Community ID. Each of tshark's connections must match, transaction by transaction and in
// order, one connection of the agent's. The agent may find more (connections tshark did not
// dissect as HTTP): those are returned separately for the test to log.
func CompareHTTP(recs []sdk.L7, exp *Expected) (diffs []string, extra [][]HTTPTransaction) {
	var order []string
	got := map[string][]HTTPTransaction{}
	for _, r := range recs {
		if r.Protocol != "HTTP" {
			continue
		}
		if _, ok := got[r.CommunityID]; !ok {
			order = append(order, r.CommunityID)
		}
		got[r.CommunityID] = append(got[r.CommunityID], HTTPTransaction{r.Method, r.Path, r.Host, r.Status})
	}
	var streams []int
	want := map[int][]HTTPTransaction{}
	for _, h := range exp.HTTP {
		if _, ok := want[h.Stream]; !ok {
			streams = append(streams, h.Stream)
		}
		path, _, _ := strings.Cut(h.URI, "?")
		want[h.Stream] = append(want[h.Stream], HTTPTransaction{h.Method, path, h.Host, h.Status})
	}
	used := map[string]bool{}
	for _, s := range streams {
		found := ""
		for _, cid := range order {
			if !used[cid] && slices.Equal(got[cid], want[s]) {
				found = cid
				break
			}
		}
		if found == "" {
			diffs = append(diffs, fmt.Sprintf("tshark's connection %d: %v; no connection of the agent's has exactly these", s, want[s]))
			continue
		}
		used[found] = true
	}
	for _, cid := range order {
		if !used[cid] {
			extra = append(extra, got[cid])
		}
	}
	if len(diffs) > 0 {
		for _, cid := range order {
			diffs = append(diffs, fmt.Sprintf("  agent's connection %s: %v", cid, got[cid]))
		}
	}
	return diffs, extra
}
