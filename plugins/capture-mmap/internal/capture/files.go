package capture

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/quanyu/quanyu/plugins/capture-mmap/internal/flowtable"
	"github.com/quanyu/quanyu/plugins/internal/batcher"
	"github.com/quanyu/quanyu/plugins/internal/nicscope"
	"github.com/quanyu/quanyu/sdk"
)

// packetSource is what pcapgo's readers have in common.
type packetSource interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// countingReader counts the bytes read from a file, for progress.
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

// runFiles replays files in order through one flow table: parts of one capture continue each
// other. Time is the packets' own; every flow ends with reason "input" when the last file ends.
func (c *Capture) runFiles(ctx context.Context, cfg *config, out sdk.Emitter) error {
	snd := batcher.New(cfg.sdk.BatchSize, true)
	subs, _ := nicscope.Scope(&cfg.sdk, nil)
	// A file has no live interface: NIC-less subscriptions match every packet of it, and NIC
	// patterns are matched against the interface names a pcapng file records.
	for i := range subs {
		if len(cfg.sdk.Subscriptions[i].Spec.NIC) == 0 {
			subs[i].Spec.NIC = nil
		}
	}
	table, err := flowtable.New(cfg.table, sdk.NewMatcher(subs), snd.AddFlow)
	if err != nil {
		return fmt.Errorf("building the flow table: %w", err)
	}
	table.OnSample(snd.AddSample)
	// No flow events from a file: they are for what happens now (start and close notices, frames
	// for evidence), and each flow's record already says when it started and how it ended.
	sendDone := make(chan error, 1)
	go func() { sendDone <- snd.Run(ctx, out) }()

	var total, read atomic.Uint64
	for _, f := range cfg.sdk.Files {
		if st, err := os.Stat(f); err == nil {
			total.Add(uint64(st.Size()))
		}
	}
	r := &replay{c: c, table: table, snd: snd, total: &total, read: &read}
	var runErr error
	for _, f := range cfg.sdk.Files {
		if runErr = r.file(ctx, f); runErr != nil {
			break
		}
	}
	table.Flush(sdk.EndInput)
	r.publish()
	snd.Close()
	sendErr := <-sendDone
	r.publish()
	if runErr != nil {
		return runErr
	}
	return sendErr
}

type replay struct {
	c           *Capture
	table       *flowtable.Table
	snd         *batcher.Batcher
	total, read *atomic.Uint64
	frame       []byte // scratch for link types rewritten to Ethernet
	truncated   uint64
	unsupported uint64
	lastTick    time.Time
	lastPublish time.Time
}

func (r *replay) publish() {
	c := r.table.Counters()
	c["file.bytes_total"] = r.total.Load()
	c["file.bytes_read"] = r.read.Load()
	c["file.truncated"] = r.truncated
	c["drop.unsupported_link_type"] = r.unsupported
	r.snd.Counters(c)
	r.c.snapshot.Store(&c)
}

// errStopped ends a replay early on Shutdown or a cancelled context.
var errStopped = errors.New("replay stopped")

func (r *replay) file(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(countingReader{f, r.read}, 1<<20)
	src, linkOf, err := openCapture(br)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	for n := 0; ; n++ {
		if n&1023 == 0 {
			select {
			case <-ctx.Done():
				return errStopped
			case <-r.c.shutdown:
				return nil
			default:
			}
		}
		data, ci, err := src.ZeroCopyReadPacketData()
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			// A capture cut off mid-packet (a tcpdump killed hard): keep what came before.
			r.truncated++
			r.c.log.Warn("capture file ends inside a packet; the rest is ignored", "file", path)
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		lt, nic := linkOf(ci.InterfaceIndex)
		frame, ok := r.ethernet(lt, data)
		if !ok {
			r.unsupported++
			continue
		}
		ts := ci.Timestamp
		r.table.AddFrame(ci.InterfaceIndex, nic, ts, frame, -1)
		if ts.Sub(r.lastTick) >= tickInterval {
			r.table.Tick(ts)
			r.lastTick = ts
		}
		if now := time.Now(); now.Sub(r.lastPublish) >= time.Second {
			r.publish()
			r.lastPublish = now
		}
	}
}

// openCapture reads a pcap or pcapng header and returns the packet source and, per interface
// index, its link type and name (pcap files have one unnamed interface).
func openCapture(br *bufio.Reader) (packetSource, func(int) (layers.LinkType, string), error) {
	magic, err := br.Peek(4)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the file header: %w", err)
	}
	if binary.LittleEndian.Uint32(magic) == 0x0A0D0D0A {
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, nil, fmt.Errorf("not a valid pcapng file: %w", err)
		}
		return ng, func(i int) (layers.LinkType, string) {
			ifc, err := ng.Interface(i)
			if err != nil {
				return ng.LinkType(), ""
			}
			return ifc.LinkType, ifc.Name
		}, nil
	}
	pr, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, nil, fmt.Errorf("neither pcap nor pcapng: %w", err)
	}
	lt := pr.LinkType()
	return pr, func(int) (layers.LinkType, string) { return lt, "" }, nil
}

// Link types other than Ethernet are rewritten into an Ethernet frame with zero addresses and the
// right EtherType, in a reused buffer, so one parser serves every capture a user may have: raw IP
// (tcpdump on a tunnel), Linux cooked v1 and v2 (tcpdump -i any), BSD loopback.
func (r *replay) ethernet(lt layers.LinkType, data []byte) ([]byte, bool) {
	var etherType uint16
	var payload []byte
	switch lt {
	case layers.LinkTypeEthernet:
		return data, true
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, 12, 14:
		if len(data) == 0 {
			return nil, false
		}
		etherType, payload = ipEtherType(data[0]>>4), data
	case layers.LinkTypeLinuxSLL:
		if len(data) < 16 {
			return nil, false
		}
		etherType, payload = binary.BigEndian.Uint16(data[14:16]), data[16:]
	case layers.LinkTypeLinuxSLL2:
		if len(data) < 20 {
			return nil, false
		}
		etherType, payload = binary.BigEndian.Uint16(data[0:2]), data[20:]
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		if len(data) < 5 {
			return nil, false
		}
		etherType, payload = ipEtherType(data[4]>>4), data[4:]
	default:
		return nil, false
	}
	if etherType == 0 {
		return nil, false
	}
	var noAddresses [12]byte
	r.frame = append(r.frame[:0], noAddresses[:]...)
	r.frame = binary.BigEndian.AppendUint16(r.frame, etherType)
	r.frame = append(r.frame, payload...)
	return r.frame, true
}

func ipEtherType(version byte) uint16 {
	switch version {
	case 4:
		return 0x0800
	case 6:
		return 0x86DD
	}
	return 0
}
