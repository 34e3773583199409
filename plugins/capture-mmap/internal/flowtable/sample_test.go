package flowtable

import (
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// Flows an L7 subscription covers hand out the start of every payload-carrying packet, in
// order, with the direction seen from the client, the TCP sequence number and the payload's real
// length; other flows and payload-less packets give none.
func TestSamples(t *testing.T) {
	subs, err := sdk.ParseSubscriptions([]byte(`[
		{"id":"web","spec":{"L7":["HTTP"],"L4":[80]},"options":{"payload_bytes":100}},
		{"id":"all","spec":{}}]`))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, testConfig(), sdk.NewMatcher(subs))
	var got []sdk.Sample
	h.tbl.OnSample(func(s sdk.Sample) { got = append(got, s) })
	cl, sv := ap("10.0.0.1:40000"), ap("10.0.0.2:80")
	h.add(0, tcpFrame(t, cl, sv, fSYN, 1000, 0, 0))
	h.add(time.Millisecond, tcpFrame(t, sv, cl, fSYN|fACK, 5000, 1001, 0))
	h.add(2*time.Millisecond, tcpFrame(t, cl, sv, fACK, 1001, 5001, 0))
	h.add(3*time.Millisecond, tcpFrame(t, cl, sv, fACK|fPSH, 1001, 5001, 40))
	h.add(4*time.Millisecond, tcpFrame(t, sv, cl, fACK|fPSH, 5001, 1041, 300))
	// Another flow, not on port 80: only "all" covers it, and it asks for no L7.
	h.add(5*time.Millisecond, tcpFrame(t, ap("10.0.0.1:40001"), ap("10.0.0.2:81"), fACK|fPSH, 1, 1, 50))
	if len(got) != 2 {
		t.Fatalf("got %d samples, want 2 (the two payload packets on port 80): %+v", len(got), got)
	}
	req, resp := got[0], got[1]
	if !req.FromClient || req.Seq != 1001 || len(req.Data) != 40 || req.WireLen != 40 {
		t.Errorf("request sample: from client %v, seq %d, %d bytes of %d", req.FromClient, req.Seq, len(req.Data), req.WireLen)
	}
	if resp.FromClient || resp.Seq != 5001 || len(resp.Data) != 100 || resp.WireLen != 300 {
		t.Errorf("response sample: from client %v, seq %d, %d bytes of %d; want cut at payload_bytes 100 of 300",
			resp.FromClient, resp.Seq, len(resp.Data), resp.WireLen)
	}
	if req.Client.Port != 40000 || req.Server.Port != 80 || req.CommunityID == "" || req.NIC != "eth0" {
		t.Errorf("request sample endpoints %v → %v, community id %q, nic %q", req.Client, req.Server, req.CommunityID, req.NIC)
	}
	if len(req.Subscriptions) != 2 || !req.Time.Equal(base.Add(3*time.Millisecond)) {
		t.Errorf("request sample subscriptions %v, time %v", req.Subscriptions, req.Time)
	}
	if h.counter("samples") != 2 {
		t.Errorf("samples counter %d, want 2", h.counter("samples"))
	}
}
