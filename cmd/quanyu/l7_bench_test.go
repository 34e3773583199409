package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
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
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w := pcapgo.NewWriter(bw)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return err
	}
	clientMAC, serverMAC := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	clientIP, serverIP := net.IPv4(10, 0, 0, 1).To4(), net.IPv4(10, 0, 0, 2).To4()
	now := time.Unix(1_700_000_000, 0)
	buf := gopacket.NewSerializeBuffer()
	seq := make([][2]uint32, conns)
	write := func(c int, fromClient bool, flags func(*layers.TCP), payload []byte) error {
		eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: serverMAC, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: clientIP, DstIP: serverIP}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(40000 + c), DstPort: 8080, Window: 65535}
		dir := 0
		if !fromClient {
			eth.SrcMAC, eth.DstMAC = serverMAC, clientMAC
			ip.SrcIP, ip.DstIP = serverIP, clientIP
			tcp.SrcPort, tcp.DstPort = tcp.DstPort, tcp.SrcPort
			dir = 1
		}
		tcp.Seq, tcp.Ack = seq[c][dir], seq[c][1-dir]
		flags(tcp)
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			return err
		}
		opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
		if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
			return err
		}
		seq[c][dir] += uint32(len(payload))
		if tcp.SYN || tcp.FIN {
			seq[c][dir]++
		}
		now = now.Add(5 * time.Microsecond)
		data := buf.Bytes()
		return w.WritePacket(gopacket.CaptureInfo{Timestamp: now, CaptureLength: len(data), Length: len(data)}, data)
	}
	syn := func(t *layers.TCP) { t.SYN = true; t.Ack = 0 }
	synAck := func(t *layers.TCP) { t.SYN, t.ACK = true, true }
	ack := func(t *layers.TCP) { t.ACK = true }
	psh := func(t *layers.TCP) { t.ACK, t.PSH = true, true }
	fin := func(t *layers.TCP) { t.ACK, t.FIN = true, true }
	for c := range conns {
		seq[c] = [2]uint32{uint32(c) * 1000003, uint32(c) * 7919}
		for _, p := range []struct {
			fromClient bool
			flags      func(*layers.TCP)
		}{{true, syn}, {false, synAck}, {true, ack}} {
			if err := write(c, p.fromClient, p.flags, nil); err != nil {
				return err
			}
		}
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	for i := range perConn {
		for c := range conns {
			req := fmt.Appendf(nil, "GET /api/v1/items/%d HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n", i)
			if err := write(c, true, psh, req); err != nil {
				return err
			}
			if err := write(c, false, psh, resp); err != nil {
				return err
			}
		}
	}
	for c := range conns {
		for _, fromClient := range []bool{true, false} {
			if err := write(c, fromClient, fin, nil); err != nil {
				return err
			}
		}
		if err := write(c, true, ack, nil); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}
