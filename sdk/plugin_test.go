package sdk_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/plugintest"
)

// sampleBatch has one of every record with every field set, so a round trip proves each field
// crosses the plugin boundary.
func sampleBatch() *sdk.Batch {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
	c := sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 40000}
	s := sdk.Endpoint{Addr: netip.MustParseAddr("2001:db8::1"), Port: 443}
	subs := []string{"default", "web"}
	return &sdk.Batch{
		Flows: []sdk.Flow{{
			Host: "h1", NIC: "eth0", IfIndex: 2, Netns: "ns1", Start: t0, End: t0.Add(time.Second),
			Transport: sdk.TransportTCP, Client: c, Server: s,
			ClientToServer: sdk.Counts{Packets: 7, IPBytes: 512}, ServerToClient: sdk.Counts{Packets: 7, IPBytes: 5379},
			TCPFlags: sdk.FlagSYN | sdk.FlagACK | sdk.FlagFIN, RTT: 1500 * time.Microsecond, Retransmits: 2,
			VLAN: []uint16{13, 10}, ClientMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, ServerMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
			CommunityID: "1:abc=", Subscriptions: subs, Final: true, EndReason: sdk.EndFIN,
		}},
		Events: []sdk.Event{{Kind: sdk.EventStart, Time: t0, Host: "h1", NIC: "eth0", Transport: sdk.TransportUDP,
			Client: c, Server: s, CommunityID: "1:x=", Subscriptions: subs,
			L3Frame: []byte{0x45, 0}, L4Frame: []byte{1, 2}, L7Frame: []byte("GET /")}},
		Samples: []sdk.Sample{{CommunityID: "1:x=", NIC: "eth0", Transport: sdk.TransportTCP, Client: c, Server: s,
			FromClient: true, Time: t0, Seq: 3, Data: []byte("GET / HTTP/1.1\r\n"), WireLen: 100, Subscriptions: subs}},
		L7: []sdk.L7{{Protocol: "HTTP", Method: "GET", Host: "example.org", Path: "/", Status: 200, RequestBytes: 10,
			ResponseBytes: 20, Latency: 3 * time.Millisecond, Time: t0, Transport: sdk.TransportTCP, NIC: "eth0",
			Client: c, Server: s, CommunityID: "1:x=", Partial: true, Error: "cut", Attributes: map[string]string{"a": "b"},
			Subscriptions: subs}},
		Stats: []sdk.Stats{{Source: "capture-test", Time: t0, Counters: map[string]uint64{"packets": 9}}},
		Inventory: &sdk.Inventory{Host: "h1", Time: t0, Interfaces: []sdk.Interface{{Index: 1, Name: "lo", MTU: 65536,
			State: "up", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}}}, Namespaces: []sdk.Namespace{}},
	}
}

type fakeSink struct {
	mu      sync.Mutex
	cfg     sdk.SinkConfig
	batches []*sdk.Batch
}

func (f *fakeSink) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Kind: sdk.KindSink, Name: "fake", Version: "1"}, nil
}
func (f *fakeSink) Configure(_ context.Context, cfg sdk.SinkConfig) error {
	if string(cfg.Options) == `{"bad":true}` {
		return &sdk.ValidationError{Fields: []sdk.FieldError{{Path: "plugins.fake.bad", Reason: "not allowed"}}}
	}
	f.cfg = cfg
	return nil
}
func (f *fakeSink) Health(context.Context) (sdk.Health, error) {
	return sdk.Health{Status: sdk.HealthOK, Counters: map[string]uint64{"batches": uint64(len(f.batches))}}, nil
}
func (f *fakeSink) Write(_ context.Context, b *sdk.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, b)
	return nil
}
func (f *fakeSink) Shutdown(context.Context) error { return nil }

func TestSinkRoundTrip(t *testing.T) {
	impl := &fakeSink{}
	sink := plugintest.Sink(t, impl)
	ctx := context.Background()
	info, err := sink.Info(ctx)
	if err != nil || info.Kind != sdk.KindSink || info.Name != "fake" {
		t.Fatalf("info %+v, %v", info, err)
	}
	if err := sink.Configure(ctx, sdk.SinkConfig{Host: "h1", AgentID: "agent-7", Options: []byte(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	if impl.cfg.Host != "h1" || impl.cfg.AgentID != "agent-7" || string(impl.cfg.Options) != `{"x":1}` {
		t.Fatalf("configuration arrived as %+v", impl.cfg)
	}
	err = sink.Configure(ctx, sdk.SinkConfig{Options: []byte(`{"bad":true}`)})
	if !errors.Is(err, sdk.ErrRejected) || !strings.Contains(err.Error(), "plugins.fake.bad") {
		t.Fatalf("a rejected configuration should come back as ErrRejected naming the field, got %v", err)
	}
	want := sampleBatch()
	if err := sink.Write(ctx, want); err != nil {
		t.Fatal(err)
	}
	if len(impl.batches) != 1 {
		t.Fatalf("sink got %d batches", len(impl.batches))
	}
	if got := impl.batches[0]; !reflect.DeepEqual(got, want) {
		t.Fatalf("batch changed crossing the boundary:\n got %+v\nwant %+v", got, want)
	}
	h, err := sink.Health(ctx)
	if err != nil || h.Counters["batches"] != 1 {
		t.Fatalf("health %+v, %v", h, err)
	}
}

type fakeCapture struct {
	cfg      sdk.CaptureConfig
	batches  int
	shutdown chan struct{}
}

func (f *fakeCapture) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Kind: sdk.KindCapture, Name: "fake", Capabilities: []string{"files"}}, nil
}
func (f *fakeCapture) Configure(_ context.Context, cfg sdk.CaptureConfig) error {
	f.cfg = cfg
	return nil
}
func (f *fakeCapture) Health(context.Context) (sdk.Health, error) {
	return sdk.Health{Status: sdk.HealthOK}, nil
}
func (f *fakeCapture) Run(ctx context.Context, out sdk.Emitter) error {
	for i := 0; i < f.batches; i++ {
		if err := out.Emit(ctx, sampleBatch()); err != nil {
			return err
		}
	}
	return nil
}
func (f *fakeCapture) Shutdown(context.Context) error { return nil }

type collect struct{ batches []*sdk.Batch }

func (c *collect) Emit(_ context.Context, b *sdk.Batch) error {
	c.batches = append(c.batches, b)
	return nil
}

func TestCaptureStreamsBatchesAndSubscriptions(t *testing.T) {
	impl := &fakeCapture{batches: 3}
	capture := plugintest.Capture(t, impl)
	ctx := context.Background()
	subs, err := sdk.ParseSubscriptions([]byte(`[{"id":"a","spec":{"L4":["80"]}},{"id":"b","spec":{"L3Match":["10.0.0.0/8"]}}]`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := sdk.CaptureConfig{Host: "h", Interfaces: []string{"eth*"}, Files: []string{"x.pcap"}, Subscriptions: subs,
		IdleTimeout: time.Minute, ActiveTimeout: 2 * time.Minute, FlushInterval: time.Second, BatchSize: 512,
		MaxFlows: 1000, SnapLen: 256, Options: []byte(`{"k":"v"}`), ExcludeInterfaces: []string{"lo"}}
	if err := capture.Configure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(impl.cfg, cfg) {
		t.Fatalf("configuration changed crossing the boundary:\n got %+v\nwant %+v", impl.cfg, cfg)
	}
	var c collect
	if err := capture.Run(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.batches) != 3 {
		t.Fatalf("host got %d batches, want 3", len(c.batches))
	}
	if !reflect.DeepEqual(c.batches[2], sampleBatch()) {
		t.Fatalf("streamed batch differs")
	}
}

type fakeDecoder struct{}

func (fakeDecoder) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Kind: sdk.KindDecoder, Name: "echo", Protocols: []string{"HTTP"}}, nil
}
func (fakeDecoder) Configure(context.Context, sdk.DecoderConfig) error { return nil }
func (fakeDecoder) Health(context.Context) (sdk.Health, error) {
	return sdk.Health{Status: sdk.HealthOK}, nil
}
func (fakeDecoder) Shutdown(context.Context) error { return nil }
func (fakeDecoder) Decode(_ context.Context, in []sdk.Sample) ([]sdk.L7, error) {
	out := make([]sdk.L7, len(in))
	for i, s := range in {
		out[i] = sdk.L7{Protocol: "HTTP", Method: strings.Fields(string(s.Data))[0], Client: s.Client, Server: s.Server,
			CommunityID: s.CommunityID, Subscriptions: s.Subscriptions}
	}
	return out, nil
}

func TestDecoderRoundTrip(t *testing.T) {
	dec := plugintest.Decoder(t, fakeDecoder{})
	info, err := dec.Info(context.Background())
	if err != nil || !reflect.DeepEqual(info.Protocols, []string{"HTTP"}) {
		t.Fatalf("info %+v, %v", info, err)
	}
	recs, err := dec.Decode(context.Background(), sampleBatch().Samples)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Method != "GET" || recs[0].Server.Addr != netip.MustParseAddr("2001:db8::1") {
		t.Fatalf("decoded %+v", recs)
	}
}

// A decoder's error reaches the host with its text.
func TestDecoderErrorReachesHost(t *testing.T) {
	dec := plugintest.Decoder(t, failingDecoder{})
	_, err := dec.Decode(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "failed on purpose") {
		t.Fatalf("want the decoder's error, got %v", err)
	}
}

type failingDecoder struct{ fakeDecoder }

func (failingDecoder) Decode(context.Context, []sdk.Sample) ([]sdk.L7, error) {
	return nil, errors.New("decoder failed on purpose")
}
