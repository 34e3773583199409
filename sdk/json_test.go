package sdk_test

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
)

// An event written as a JSON line reads back equal, frames included: the alert history keeps
// flow traces as JSON and reads them back.
func TestEventJSONRoundTrip(t *testing.T) {
	e := sdk.Event{Kind: sdk.EventStart, Time: time.Date(2026, 11, 26, 1, 2, 3, 456789000, time.UTC), Host: "h1", NIC: "eth0",
		Transport: sdk.TransportTCP, Client: sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 40000},
		Server: sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}, CommunityID: "1:abc",
		Subscriptions: []string{"a", "evidence-1"}, L3Frame: []byte{0x45, 0, 0, 60}, L4Frame: []byte{1, 2}, L7Frame: []byte("GET")}
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back sdk.Event
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, e) {
		t.Errorf("read back %+v\nwant %+v\nfrom %s", back, e, raw)
	}
	if err := json.Unmarshal([]byte(`{"type":"flow"}`), &back); err == nil {
		t.Error("a flow line read as an event")
	}
}
