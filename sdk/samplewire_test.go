package sdk

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk/internal/pb"
)

func wireSamples() []Sample {
	c := Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 40000}
	s := Endpoint{Addr: netip.MustParseAddr("2001:db8::2"), Port: 80}
	t0 := time.Unix(1_700_000_000, 123).UTC()
	return []Sample{
		{CommunityID: "1:a", NIC: "eth0", Transport: TransportTCP, Client: c, Server: s, FromClient: true, Time: t0,
			Seq: 7, Data: []byte("GET / HTTP/1.1\r\n\r\n"), WireLen: 18, Subscriptions: []string{"web"}},
		{CommunityID: "1:b", NIC: "eth0", Transport: TransportUDP, Client: c, Server: s, FromClient: true, Time: t0,
			Data: []byte{1, 2, 3}, WireLen: 1400, Subscriptions: []string{"dns", "all"}},
		{CommunityID: "1:a", NIC: "eth0", Transport: TransportTCP, Client: c, Server: s, Time: t0.Add(time.Millisecond),
			Seq: 1 << 31, Data: []byte("HTTP/1.1 200 OK\r\n\r\n"), WireLen: 19, Subscriptions: []string{"web"}},
		// The same conversation under another subscription set (after a push) is a flow of its own.
		{CommunityID: "1:a", NIC: "eth0", Transport: TransportTCP, Client: c, Server: s, Time: t0.Add(2 * time.Millisecond),
			Subscriptions: []string{"web", "new"}, FlowEnd: true},
	}
}

func TestSamplesRoundTrip(t *testing.T) {
	in := wireSamples()
	p, flows := samplesToPB(in)
	if len(p.Flows) != 3 || len(flows) != 3 {
		t.Fatalf("%d flows packed, want 3 (two conversations, one under two subscription sets)", len(p.Flows))
	}
	out, _, err := samplesFromPB(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	// The data must not alias beyond its own sample: appending to one sample's data cannot
	// overwrite the next sample's header.
	_ = append(out[0].Data, 'x')
	if again, _, err := samplesFromPB(p); err != nil || !reflect.DeepEqual(again, in) {
		t.Fatalf("append to a sample's data changed the batch: %v", err)
	}
}

func TestSamplesFromPBRejectsBrokenBatches(t *testing.T) {
	good, _ := samplesToPB(wireSamples())
	cases := map[string]func(p *pb.SampleBatch){
		"short header":   func(p *pb.SampleBatch) { p.Packed = p.Packed[:10] },
		"data past end":  func(p *pb.SampleBatch) { p.Packed = p.Packed[:sampleHeaderBytes+3] },
		"flow out range": func(p *pb.SampleBatch) { p.Packed[0] = 9 },
		"unknown flags":  func(p *pb.SampleBatch) { p.Packed[4] = 0x80 },
		"bad address":    func(p *pb.SampleBatch) { p.Flows[0].Client.Addr = []byte{1, 2, 3} },
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			p, _ := samplesToPB(wireSamples())
			breakIt(p)
			if _, _, err := samplesFromPB(p); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, _, err := samplesFromPB(good); err != nil {
		t.Fatal(err)
	}
}

func TestL7CrossesWithoutIdentity(t *testing.T) {
	in := wireSamples()
	_, flows := samplesToPB(in)
	own := L7{Protocol: "HTTP", Method: "GET", Path: "/", Status: 200, CommunityID: "1:a", NIC: "eth0",
		Transport: TransportTCP, Client: in[0].Client, Server: in[0].Server, Subscriptions: []string{"web"}}
	// A record held from an earlier batch (its flow is not in this one) keeps its identity.
	other := own
	other.CommunityID = "1:zzz"
	recs := []L7{own, other}
	p := l7sToPB(recs, flows)
	if p.Records[0].Flow != 1 || p.Records[0].CommunityId != "" || p.Records[0].Client != nil {
		t.Fatalf("record of a batch flow crossed with its identity: %+v", p.Records[0])
	}
	if p.Records[1].Flow != 0 || p.Records[1].CommunityId != "1:zzz" {
		t.Fatalf("record of another flow lost its identity: %+v", p.Records[1])
	}
	out, err := l7sFromPB(p, flows)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, recs) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, recs)
	}
	p.Records[0].Flow = 99
	if _, err := l7sFromPB(p, flows); err == nil || !strings.Contains(err.Error(), "flow 99") {
		t.Fatalf("flow out of range: %v", err)
	}
}

// FuzzSamplesFromPB feeds arbitrary packed bytes: they are rejected with an error or unpack into
// samples that pack back to the same bytes.
func FuzzSamplesFromPB(f *testing.F) {
	p, _ := samplesToPB(wireSamples())
	f.Add(p.Packed)
	f.Add([]byte{})
	f.Add(make([]byte, sampleHeaderBytes))
	f.Fuzz(func(t *testing.T, packed []byte) {
		batch := &pb.SampleBatch{Flows: p.Flows, Packed: packed}
		samples, _, err := samplesFromPB(batch)
		if err != nil {
			return
		}
		again, _ := samplesToPB(samples)
		if string(again.Packed) != string(packed) && len(samples) > 0 {
			// Flow indexes renumber when a batch uses only some flows; compare the samples instead.
			back, _, err := samplesFromPB(again)
			if err != nil || !reflect.DeepEqual(back, samples) {
				t.Fatalf("repacking changed the samples: %v", err)
			}
		}
	})
}
