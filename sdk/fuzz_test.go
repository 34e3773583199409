package sdk_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/quanyu/quanyu/sdk"
)

// fuzzPackets are run through the matcher of every accepted subscription: matching must not
// panic whatever the subscription holds.
var fuzzPackets = []sdk.PacketMeta{
	{NIC: "eth0", Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("172.10.2.9"), Transport: sdk.TransportTCP, SrcPort: 40000, DstPort: 8080},
	{NIC: "", Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("::ffff:10.0.0.1"), Transport: sdk.TransportUDP, SrcPort: 53, DstPort: 5000},
	{NIC: "veth0", Src: netip.MustParseAddr("0.0.0.0"), Dst: netip.MustParseAddr("255.255.255.255"), Transport: sdk.TransportICMP},
	{NIC: "lo", Transport: sdk.TransportTCP, PortsUnknown: true}, // zero addresses
}

// checkAccepted holds for every document the parser accepts: it has an id, it writes out and
// reads back to an equal value (normalisation is idempotent), writing is stable, it passes
// Validate, and a matcher built from it runs.
func checkAccepted(t *testing.T, s sdk.Subscription) {
	t.Helper()
	if s.ID == "" {
		t.Fatalf("accepted subscription without an id: %+v", s)
	}
	out, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("Marshal(%+v): %v", s, err)
	}
	back, err := sdk.ParseSubscription(out)
	if err != nil {
		t.Fatalf("the parser rejects what it wrote: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, s) {
		t.Fatalf("re-parsing changed the subscription:\n got %+v\nwant %+v\nvia %s", back, s, out)
	}
	again, err := json.Marshal(back)
	if err != nil || string(again) != string(out) {
		t.Fatalf("writing is not stable:\n%s\n%s (%v)", out, again, err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate() of an accepted subscription: %v", err)
	}
	m := sdk.NewMatcher([]sdk.Subscription{s})
	for i := range fuzzPackets {
		if mask := m.Match(&fuzzPackets[i]); mask > 1 {
			t.Fatalf("one subscription gave mask %#x", mask)
		}
	}
}

// checkRejected holds for every rejected document: a *sdk.ValidationError with at least one
// field, each with a reason.
func checkRejected(t *testing.T, err error) {
	t.Helper()
	var ve *sdk.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *sdk.ValidationError", err, err)
	}
	if len(ve.Fields) == 0 {
		t.Fatalf("ValidationError without fields")
	}
	for _, f := range ve.Fields {
		if f.Reason == "" {
			t.Fatalf("field %q rejected without a reason", f.Path)
		}
	}
}

func addFuzzSeeds(f *testing.F) {
	f.Add(readSeed(f))
	for _, d := range validDocs {
		f.Add([]byte(d))
	}
	for _, d := range badDocs {
		// The documents over the list limits are large; the fuzzer learns little from them.
		if len(d.doc) < 4096 {
			f.Add([]byte(d.doc))
		}
	}
}

func FuzzParseSubscription(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := sdk.ParseSubscription(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		checkAccepted(t, s)
	})
}

func FuzzParseSubscriptions(f *testing.F) {
	addFuzzSeeds(f)
	f.Add([]byte(`[{"id":"a","spec":{"L4":[80]}},{"id":"b","spec":{"L3Match":["10.0.0.0/8"]}}]`))
	f.Add([]byte(`{"subscriptions":[{"id":"a","spec":{}},{"id":"a","spec":{}}]}`))
	f.Add([]byte(`[{"L4":[80]},{"L4":[81]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		subs, err := sdk.ParseSubscriptions(data)
		if err != nil {
			checkRejected(t, err)
			return
		}
		if len(subs) > sdk.MaxSubscriptions {
			t.Fatalf("accepted %d subscriptions", len(subs))
		}
		for _, s := range subs {
			checkAccepted(t, s)
		}
		if err := sdk.ValidateSet(subs); err != nil {
			t.Fatalf("ValidateSet of an accepted set: %v", err)
		}
		out, err := sdk.MarshalSubscriptions(subs)
		if err != nil {
			t.Fatal(err)
		}
		back, err := sdk.ParseSubscriptions(out)
		if err != nil {
			t.Fatalf("the set reader rejects what it wrote: %v\n%s", err, out)
		}
		if len(subs) > 0 && !reflect.DeepEqual(back, subs) {
			t.Fatalf("re-parsing changed the set:\n got %+v\nwant %+v", back, subs)
		}
		m := sdk.NewMatcher(subs)
		for i := range fuzzPackets {
			if mask := m.Match(&fuzzPackets[i]); len(subs) < 64 && mask>>len(subs) != 0 {
				t.Fatalf("mask %#x names subscriptions beyond the %d given", mask, len(subs))
			}
		}
	})
}
