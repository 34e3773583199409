package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// BenchmarkReplayHTTP measures the whole capture → decoder → sink path in its three processes:
// `quanyu replay` of a generated capture of keep-alive HTTP transactions, the capture plugin
// reading and sampling the packets, the agent routing the samples to the HTTP decoder plugin and
// the JSON records going to stdout. One op is the whole file.
//
//	go test ./cmd/quanyu -run '^$' -bench ReplayHTTP -benchtime 5x
func BenchmarkReplayHTTP(b *testing.B) {
	const conns, perConn = 64, 1600 // 102 400 transactions
	pcap := filepath.Join(b.TempDir(), "http.pcap")
	if err := writeHTTPCapture(pcap, conns, perConn); err != nil {
		b.Fatal(err)
	}
	quanyu(b, "version").Run() // build outside the clock
	var txs int
	b.ResetTimer()
	for range b.N {
		cmd := quanyu(b, "replay", pcap)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		n, err := countL7(out)
		if werr := cmd.Wait(); err != nil || werr != nil {
			b.Fatalf("replay: %v %v\n%s", err, werr, stderr.String())
		}
		if n != conns*perConn {
			b.Fatalf("%d L7 records for %d transactions\n%s", n, conns*perConn, stderr.String())
		}
		txs += n
	}
	b.StopTimer()
	b.ReportMetric(float64(txs)/b.Elapsed().Seconds(), "transactions/s")
}

func countL7(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	n := 0
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), []byte(`{"type":"l7"`)) {
			n++
		}
	}
	return n, sc.Err()
}

// writeHTTPCapture writes conns keep-alive connections that open with a handshake, carry perConn
// request/response pairs each, interleaved as concurrent clients would, and close with FINs.
func writeHTTPCapture(path string, conns, perConn int) error {
	w, err := newTCPCapture(path, time.Unix(1_700_000_000, 0), 5*time.Microsecond)
	if err != nil {
		return err
	}
	convs := make([]tcpConv, conns)
	for c := range convs {
		convs[c] = tcpConv{
			clientMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, serverMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
			clientIP: net.IPv4(10, 0, 0, 1).To4(), serverIP: net.IPv4(10, 0, 0, 2).To4(),
			clientPort: layers.TCPPort(40000 + c), server: 8080,
			seq: [2]uint32{uint32(c) * 1000003, uint32(c) * 7919},
		}
	}
	for c := range convs {
		for _, p := range []struct {
			fromClient bool
			flags      func(*layers.TCP)
		}{{true, tcpSYN}, {false, tcpSYNACK}, {true, tcpACK}} {
			if err := w.packet(&convs[c], p.fromClient, p.flags, nil); err != nil {
				return err
			}
		}
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	for i := range perConn {
		for c := range convs {
			req := fmt.Appendf(nil, "GET /api/v1/items/%d HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n", i)
			if err := w.packet(&convs[c], true, tcpPSH, req); err != nil {
				return err
			}
			if err := w.packet(&convs[c], false, tcpPSH, resp); err != nil {
				return err
			}
		}
	}
	for c := range convs {
		for _, fromClient := range []bool{true, false} {
			if err := w.packet(&convs[c], fromClient, tcpFIN, nil); err != nil {
				return err
			}
		}
		if err := w.packet(&convs[c], true, tcpACK, nil); err != nil {
			return err
		}
	}
	return w.close()
}
