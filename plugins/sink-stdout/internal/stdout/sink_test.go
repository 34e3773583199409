package stdout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/plugintest"
)

func batch() *sdk.Batch {
	t0 := time.Date(2013, 3, 7, 21, 42, 6, 869344000, time.UTC)
	return &sdk.Batch{
		Flows: []sdk.Flow{{Host: "h1", NIC: "eth0", Start: t0, End: t0.Add(211628 * time.Microsecond),
			Transport:      sdk.TransportTCP,
			Client:         sdk.Endpoint{Addr: netip.MustParseAddr("141.142.228.5"), Port: 59856},
			Server:         sdk.Endpoint{Addr: netip.MustParseAddr("192.150.187.43"), Port: 80},
			ClientToServer: sdk.Counts{Packets: 7, IPBytes: 512}, ServerToClient: sdk.Counts{Packets: 7, IPBytes: 5379},
			TCPFlags: sdk.FlagSYN | sdk.FlagACK | sdk.FlagPSH | sdk.FlagFIN, CommunityID: "1:yvyB8h+3dnggTZW0UEITWCst97w=",
			Subscriptions: []string{"default"}, Final: true, EndReason: sdk.EndFIN}},
		Events: []sdk.Event{{Kind: sdk.EventStart, Time: t0, NIC: "eth0", Transport: sdk.TransportTCP,
			Server: sdk.Endpoint{Addr: netip.MustParseAddr("192.150.187.43"), Port: 80}, L3Frame: []byte{0x45}}},
		Stats: []sdk.Stats{{Source: "agent", Time: t0, Counters: map[string]uint64{"x": 1}}},
	}
}

// The schema of the issue, field by field.
func TestJSONLinesSchema(t *testing.T) {
	var out bytes.Buffer
	s := NewWriter(&out)
	if err := s.Write(context.Background(), batch()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want flow, event and stats lines, got:\n%s", out.String())
	}
	want := `{"type":"flow","host":"h1","nic":"eth0","netns":"","start":"2013-03-07T21:42:06.869344Z",` +
		`"end":"2013-03-07T21:42:07.080972Z","transport":"TCP","client":{"addr":"141.142.228.5","port":59856},` +
		`"server":{"addr":"192.150.187.43","port":80},"client_to_server":{"packets":7,"ip_bytes":512},` +
		`"server_to_client":{"packets":7,"ip_bytes":5379},"tcp_flags":["SYN","ACK","PSH","FIN"],"rtt_us":0,` +
		`"retransmits":0,"vlan":[],"community_id":"1:yvyB8h+3dnggTZW0UEITWCst97w=","subscriptions":["default"],` +
		`"final":true,"end_reason":"fin"}`
	if lines[0] != want {
		t.Fatalf("flow line\n got %s\nwant %s", lines[0], want)
	}
	var back sdk.Flow
	if err := json.Unmarshal([]byte(lines[0]), &back); err != nil {
		t.Fatal(err)
	}
	if back.ServerToClient.IPBytes != 5379 || back.TCPFlags != batch().Flows[0].TCPFlags || !back.Final {
		t.Fatalf("flow line does not read back: %+v", back)
	}
	for i, typ := range []string{"flow", "event", "stats"} {
		if got, _ := sdk.RecordType([]byte(lines[i])); got != typ {
			t.Errorf("line %d has type %q, want %q", i, got, typ)
		}
	}
}

// The seed's message: exactly the seed's eight fields; counters go to the log, not stdout.
func TestSeedFormat(t *testing.T) {
	var out bytes.Buffer
	s := NewWriter(&out)
	if err := s.Configure(context.Background(), sdk.SinkConfig{Options: []byte(`{"format":"seed"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), batch()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		`{"NIC":"eth0","L3":"192.150.187.43","L3Frame":"","L4Class":"TCP","L4":"80","L4Frame":"","L7":"","L7Frame":""}`,
		`{"NIC":"eth0","L3":"192.150.187.43","L3Frame":"RQ==","L4Class":"TCP","L4":"80","L4Frame":"","L7":"","L7Frame":""}`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), strings.Join(want, "\n"))
	}
	h, _ := s.Health(context.Background())
	if h.Counters["records_skipped"] != 1 {
		t.Errorf("the stats record should be counted as skipped: %v", h.Counters)
	}
}

func TestBadOptionsRejectedThroughPlugin(t *testing.T) {
	sink := plugintest.Sink(t, NewWriter(&bytes.Buffer{}))
	for opts, path := range map[string]string{
		`{"format":"xml"}`: "plugins.sink-stdout.format",
		`{"colour":true}`:  "plugins.sink-stdout",
	} {
		err := sink.Configure(context.Background(), sdk.SinkConfig{Options: []byte(opts)})
		if !errors.Is(err, sdk.ErrRejected) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: want a rejection naming %s, got %v", opts, path, err)
		}
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// A failed write is an error the agent counts, and the sink says it is degraded.
func TestWriteFailureReported(t *testing.T) {
	s := NewWriter(failingWriter{})
	if err := s.Write(context.Background(), batch()); err == nil {
		t.Fatal("write to a failing output succeeded")
	}
	h, _ := s.Health(context.Background())
	if h.Status != sdk.HealthDegraded || h.Counters["write_errors"] != 1 {
		t.Fatalf("health %+v", h)
	}
}
