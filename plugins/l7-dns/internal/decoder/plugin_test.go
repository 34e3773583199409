package decoder

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/plugintest"
)

// The decoder behind the real go-plugin gRPC transport, as the agent sees it: every field of the
// records and of Info survives the conversions, and a bad option is a rejection naming its key.
func TestThroughPluginTransport(t *testing.T) {
	ctx := context.Background()
	d := plugintest.Decoder(t, New())

	info, err := d.Info(ctx)
	if err != nil || info.Name != "l7-dns" || info.Kind != sdk.KindDecoder || len(info.Detect) != 1 ||
		info.Detect[0].Ports[0] != 53 || len(info.Detect[0].Transports) != 2 {
		t.Fatalf("info %+v, %v", info, err)
	}
	for opts, key := range map[string]string{
		`{"max_flows":-1}`:         "plugins.l7-dns.max_flows",
		`{"query_timeout":"soon"}`: "plugins.l7-dns.query_timeout",
		`{"colour":"blue"}`:        "plugins.l7-dns.colour",
	} {
		err := d.Configure(ctx, sdk.DecoderConfig{Options: []byte(opts)})
		if !errors.Is(err, sdk.ErrRejected) || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: want a rejection naming %s, got %v", opts, key, err)
		}
	}
	if err := d.Configure(ctx, sdk.DecoderConfig{Options: []byte(`{"max_answers":1,"query_timeout":"1s"}`)}); err != nil {
		t.Fatal(err)
	}

	recs, err := d.Decode(ctx, []sdk.Sample{
		udp(true, 0, dnsQuery(t, 1, "Plugin.Example", dnsmessage.TypeA)),
		udp(false, 3, dnsResp(t, 1, "plugin.example", dnsmessage.TypeA, 0, a("192.0.2.1"), a("192.0.2.2"))),
		udp(true, 10, dnsQuery(t, 2, "lost.example", dnsmessage.TypeAAAA)),
	})
	if err != nil || len(recs) != 1 {
		t.Fatalf("records %+v, %v", recs, err)
	}
	check(t, recs[0], want{query: "Plugin.Example", qtype: "A", rcode: "NOERROR", answers: []string{"192.0.2.1"},
		latencyMS: 3, flags: []string{"answers_cut"}})
	r := recs[0]
	if r.Client != client || r.Server != server || r.CommunityID != cid || r.NIC != "eth0" || r.Transport != sdk.TransportUDP ||
		!r.Time.Equal(t0) || r.Method != "QUERY" || r.RequestBytes == 0 || r.ResponseBytes == 0 || r.Subscriptions[0] != "dns" {
		t.Errorf("record through the transport: %+v", r)
	}

	// The timeout (1 s, as configured) reports the second query once a later sample comes.
	recs, err = d.Decode(ctx, []sdk.Sample{udp(false, 1500, dnsResp(t, 9, "other.example", dnsmessage.TypeA, 0))})
	if err != nil || len(recs) != 2 || recs[0].Query != "lost.example" || !recs[0].Partial || recs[1].Flags[0] != "no_query" {
		t.Fatalf("records %+v, %v", recs, err)
	}
	h, err := d.Health(ctx)
	if err != nil || h.Counters["records"] != 3 || h.Counters["queries.timeout"] != 1 || h.Counters["answers.cut"] != 1 ||
		h.Counters["responses.unmatched"] != 1 || h.Counters["samples"] != 4 {
		t.Fatalf("health %+v, %v", h, err)
	}
	for range 2 {
		if err := d.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
