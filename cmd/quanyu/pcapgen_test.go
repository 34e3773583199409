package main

import (
	"bufio"
	"net"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// tcpCapture writes generated TCP conversations to a pcap file, keeping each conversation's
// sequence numbers right so that the capture's flow table and the decoders read it as real
// traffic. Packets are step apart in capture time.
type tcpCapture struct {
	f    *os.File
	bw   *bufio.Writer
	w    *pcapgo.Writer
	buf  gopacket.SerializeBuffer
	now  time.Time
	step time.Duration
}

// tcpConv is one conversation in a tcpCapture.
type tcpConv struct {
	clientMAC, serverMAC net.HardwareAddr
	clientIP, serverIP   net.IP // 4 bytes
	clientPort, server   layers.TCPPort
	seq                  [2]uint32 // next sequence number: client's, server's
}

// TCP flag settings for tcpCapture.packet.
var (
	tcpSYN    = func(t *layers.TCP) { t.SYN = true; t.Ack = 0 }
	tcpSYNACK = func(t *layers.TCP) { t.SYN, t.ACK = true, true }
	tcpACK    = func(t *layers.TCP) { t.ACK = true }
	tcpPSH    = func(t *layers.TCP) { t.ACK, t.PSH = true, true }
	tcpFIN    = func(t *layers.TCP) { t.ACK, t.FIN = true, true }
)

func newTCPCapture(path string, start time.Time, step time.Duration) (*tcpCapture, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	c := &tcpCapture{f: f, bw: bufio.NewWriterSize(f, 1<<20), buf: gopacket.NewSerializeBuffer(), now: start, step: step}
	c.w = pcapgo.NewWriter(c.bw)
	if err := c.w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

// packet writes one segment of conv in the given direction, with flags set by set.
func (c *tcpCapture) packet(conv *tcpConv, fromClient bool, set func(*layers.TCP), payload []byte) error {
	eth := &layers.Ethernet{SrcMAC: conv.clientMAC, DstMAC: conv.serverMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: conv.clientIP, DstIP: conv.serverIP}
	tcp := &layers.TCP{SrcPort: conv.clientPort, DstPort: conv.server, Window: 65535}
	dir := 0
	if !fromClient {
		eth.SrcMAC, eth.DstMAC = eth.DstMAC, eth.SrcMAC
		ip.SrcIP, ip.DstIP = ip.DstIP, ip.SrcIP
		tcp.SrcPort, tcp.DstPort = tcp.DstPort, tcp.SrcPort
		dir = 1
	}
	tcp.Seq, tcp.Ack = conv.seq[dir], conv.seq[1-dir]
	set(tcp)
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return err
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(c.buf, opts, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		return err
	}
	conv.seq[dir] += uint32(len(payload))
	if tcp.SYN || tcp.FIN {
		conv.seq[dir]++
	}
	c.now = c.now.Add(c.step)
	data := c.buf.Bytes()
	return c.w.WritePacket(gopacket.CaptureInfo{Timestamp: c.now, CaptureLength: len(data), Length: len(data)}, data)
}

// close flushes and closes the file.
func (c *tcpCapture) close() error {
	if err := c.bw.Flush(); err != nil {
		c.f.Close()
		return err
	}
	return c.f.Close()
}
