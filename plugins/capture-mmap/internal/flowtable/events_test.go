package flowtable

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// Flow events, as the eBPF capture gives them: start at a flow's first packet, end when FINs have
// gone both ways, reset at a RST, timeout at an idle end; each names the flow's client, server,
// Community ID and subscriptions, and carries the packet's headers (IP, transport, the start of
// the payload: FrameBytes from the IP header on) when a subscription of the flow asks for frames.
// The frames are compared with the test's own frames, cut where gopacket put the layers.
func TestFlowEvents(t *testing.T) {
	m := mustSubs(t, `[{"id":"all","spec":{}},{"id":"web-frames","spec":{"L4":[80]},"options":{"frames":true}}]`)
	h := newHarness(t, testConfig(), m)
	var events []sdk.Event
	h.tbl.OnEvent(func(e sdk.Event) { events = append(events, e) })

	web, webSrv := ap("10.0.0.1:40000"), ap("10.0.0.2:80")
	ssh, sshSrv := ap("10.0.0.1:40001"), ap("10.0.0.3:22")
	dns, dnsSrv := ap("10.0.0.1:40002"), ap("10.0.0.4:53")
	syn := tcpFrame(t, web, webSrv, fSYN, 100, 0, 0)
	h.add(0, syn)
	h.add(10*ms, tcpFrame(t, webSrv, web, fSYN|fACK, 900, 101, 0))
	h.add(20*ms, tcpFrame(t, web, webSrv, fACK|fPSH, 101, 901, 300)) // a payload longer than the frame keeps
	h.add(30*ms, tcpFrame(t, web, webSrv, fFIN|fACK, 401, 901, 0))
	lastFIN := tcpFrame(t, webSrv, web, fFIN|fACK, 901, 402, 0)
	h.add(40*ms, lastFIN)
	h.add(50*ms, tcpFrame(t, web, webSrv, fACK, 402, 902, 0)) // after the close: no event
	h.add(100*ms, tcpFrame(t, ssh, sshSrv, fSYN, 5, 0, 0))
	h.add(110*ms, tcpFrame(t, sshSrv, ssh, fRST|fACK, 0, 6, 0))
	h.add(200*ms, udpFrame(t, dns, dnsSrv, 40))
	h.tick(200*ms + 30*time.Second) // dns idles out

	type want struct {
		kind           string
		at             time.Duration
		client, server sdk.Endpoint
		subs           []string
		frame          []byte // the packet whose headers the event carries; nil: none
	}
	ep := func(s string) sdk.Endpoint { a := ap(s); return sdk.Endpoint{Addr: a.Addr(), Port: a.Port()} }
	wants := []want{
		{sdk.EventStart, 0, ep("10.0.0.1:40000"), ep("10.0.0.2:80"), []string{"all", "web-frames"}, syn},
		{sdk.EventEnd, 40 * ms, ep("10.0.0.1:40000"), ep("10.0.0.2:80"), []string{"all", "web-frames"}, lastFIN},
		{sdk.EventStart, 100 * ms, ep("10.0.0.1:40001"), ep("10.0.0.3:22"), []string{"all"}, nil},
		{sdk.EventReset, 110 * ms, ep("10.0.0.1:40001"), ep("10.0.0.3:22"), []string{"all"}, nil},
		{sdk.EventStart, 200 * ms, ep("10.0.0.1:40002"), ep("10.0.0.4:53"), []string{"all"}, nil},
		{sdk.EventTimeout, 200 * ms, ep("10.0.0.1:40002"), ep("10.0.0.4:53"), []string{"all"}, nil},
	}
	if len(events) != len(wants) {
		t.Fatalf("%d events, want %d: %+v", len(events), len(wants), events)
	}
	recs := map[sdk.Endpoint]sdk.Flow{} // by client, for the Community IDs
	h.tbl.Flush(sdk.EndShutdown)
	for _, r := range h.take() {
		recs[r.Client] = r
	}
	for i, w := range wants {
		e := events[i]
		if e.Kind != w.kind || !e.Time.Equal(base.Add(w.at)) || e.Client != w.client || e.Server != w.server ||
			!slices.Equal(e.Subscriptions, w.subs) || e.NIC != "eth0" || e.Transport == 0 {
			t.Errorf("event %d: %s at %v, %v → %v, subscriptions %v, nic %q; want %s at %v, %v → %v, %v",
				i, e.Kind, e.Time.Sub(base), e.Client, e.Server, e.Subscriptions, e.NIC, w.kind, w.at, w.client, w.server, w.subs)
		}
		if r, ok := recs[w.client]; !ok || e.CommunityID == "" || e.CommunityID != r.CommunityID {
			t.Errorf("event %d: Community ID %q, the flow record's %q", i, e.CommunityID, r.CommunityID)
		}
		if w.frame == nil {
			if e.L3Frame != nil || e.L4Frame != nil || e.L7Frame != nil {
				t.Errorf("event %d: frames without a subscription asking for them", i)
			}
			continue
		}
		// Ethernet is 14 bytes, IPv4 20 and TCP 20 here (gopacket writes no options).
		ip, tcp := w.frame[14:34], w.frame[34:54]
		if !bytes.Equal(e.L3Frame, ip) || !bytes.Equal(e.L4Frame, tcp) || len(e.L7Frame) != 0 {
			t.Errorf("event %d: frames %x | %x | %x, want %x | %x | none", i, e.L3Frame, e.L4Frame, e.L7Frame, ip, tcp)
		}
	}
	if n := h.counter("events"); n != uint64(len(wants)) {
		t.Errorf("events counter %d, want %d", n, len(wants))
	}
}

// An event with frames carries at most FrameBytes from the IP header on: a packet with payload
// gives the start of its payload as the L7 frame.
func TestFlowEventFramesAreCut(t *testing.T) {
	h := newHarness(t, testConfig(), mustSubs(t, `[{"id":"f","spec":{},"options":{"frames":true}}]`))
	var events []sdk.Event
	h.tbl.OnEvent(func(e sdk.Event) { events = append(events, e) })
	frame := udpFrame(t, ap("10.0.0.1:5000"), ap("10.0.0.2:53"), 500)
	for i := range frame[42:] {
		frame[42+i] = byte(i) // a payload whose bytes say where they were
	}
	h.add(0, frame)
	if len(events) != 1 {
		t.Fatalf("%d events, want a start", len(events))
	}
	e := events[0]
	if !bytes.Equal(e.L3Frame, frame[14:34]) || !bytes.Equal(e.L4Frame, frame[34:42]) ||
		!bytes.Equal(e.L7Frame, frame[42:14+FrameBytes]) {
		t.Errorf("frames of %d, %d and %d bytes, want 20, 8 and %d from the packet", len(e.L3Frame), len(e.L4Frame), len(e.L7Frame), FrameBytes-28)
	}
}
