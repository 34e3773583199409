package decode

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/quanyu/quanyu/core/internal/pluginhost"
	"github.com/quanyu/quanyu/internal/gctune"
	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/sdk"
)

// BenchmarkHTTPThroughPlugin measures the capture → decoder path as the agent runs it: batches
// of samples (a request and a response per transaction, on 64 keep-alive connections) through
// the stage, over gRPC to the real quanyu-l7-http plugin process and back as L7 records.
//
//	go test ./core/internal/decode -run '^$' -bench HTTPThroughPlugin -benchtime 200x
func BenchmarkHTTPThroughPlugin(b *testing.B) {
	gctune.Apply() // as the agent does; the plugin does it in sdk.Serve
	dir := testbin.Build(b)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	host := &pluginhost.Host{Dir: filepath.Join(dir, "plugins"), Log: quiet, PluginLog: quiet}
	subs, err := sdk.ParseSubscriptions([]byte(`{"id":"web","spec":{"L7":["HTTP"]}}`))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	p, err := host.Start(ctx, "l7-http", sdk.KindDecoder, pluginhost.Options{Configure: func(ctx context.Context, impl any) error {
		return impl.(sdk.Decoder).Configure(ctx, sdk.DecoderConfig{Subscriptions: subs})
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = host.StopAll(context.Background()) })
	stage, err := New(Options{Log: quiet}, []Decoder{{Name: "l7-http", Info: p.Info(), Current: func() sdk.Decoder {
		impl, _ := p.Current()
		d, _ := impl.(sdk.Decoder)
		return d
	}}})
	if err != nil {
		b.Fatal(err)
	}
	stage.SetSubscriptions(subs)

	const conns, perBatch = 64, 512 // transactions per batch: 1024 samples, the capture's batch size
	req := []byte("GET /api/v1/items?id=42 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	seq := make([][2]uint32, conns)
	server := sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 8080}
	clients, cids := make([]sdk.Endpoint, conns), make([]string, conns)
	for c := range conns {
		clients[c] = sdk.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: uint16(40000 + c)}
		cids[c] = fmt.Sprintf("conn-%d", c)
	}
	subs1 := []string{"web"}
	now := time.Unix(1_700_000_000, 0)
	// batch builds what the capture would hand over: new samples each time (the stage keeps none).
	batch := func() *sdk.Batch {
		bt := &sdk.Batch{Samples: make([]sdk.Sample, 0, 2*perBatch)}
		for i := range perBatch {
			c := i % conns
			now = now.Add(10 * time.Microsecond)
			bt.Samples = append(bt.Samples,
				sdk.Sample{CommunityID: cids[c], NIC: "eth0", Transport: sdk.TransportTCP, Client: clients[c], Server: server,
					FromClient: true, Time: now, Seq: seq[c][0], Data: req, WireLen: len(req), Subscriptions: subs1},
				sdk.Sample{CommunityID: cids[c], NIC: "eth0", Transport: sdk.TransportTCP, Client: clients[c], Server: server,
					FromClient: false, Time: now.Add(5 * time.Microsecond), Seq: seq[c][1], Data: resp, WireLen: len(resp),
					Subscriptions: subs1})
			seq[c][0] += uint32(len(req))
			seq[c][1] += uint32(len(resp))
		}
		return bt
	}
	// Warm up: the connections are claimed and the plugin's tables sized.
	stage.Process(ctx, batch())
	var records int
	b.ResetTimer()
	for range b.N {
		bt := batch()
		stage.Process(ctx, bt)
		records += len(bt.L7)
	}
	b.StopTimer()
	if records != b.N*perBatch {
		b.Fatalf("%d records for %d transactions", records, b.N*perBatch)
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "transactions/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(records), "ns/transaction")
}
