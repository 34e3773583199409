package capture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/afpacket"
	"golang.org/x/net/bpf"

	"github.com/quanyu/quanyu/plugins/capture-mmap/internal/cbpf"
	"github.com/quanyu/quanyu/plugins/capture-mmap/internal/flowtable"
	"github.com/quanyu/quanyu/plugins/internal/batcher"
	"github.com/quanyu/quanyu/plugins/internal/nicscope"
	"github.com/quanyu/quanyu/sdk"
)

// rejectAll is the filter a socket has from its creation until its subscriptions' filter
// replaces it.
var rejectAll = []bpf.RawInstruction{{Op: 0x06, K: 0}} // ret #0

// tickInterval is how often the flow table is checked for idle, closed and long flows: the
// timeouts are seconds long, and an idle agent should not wake up for nothing.
const tickInterval = time.Second

// pollTimeout is the longest a reader waits for a packet before it looks whether it should stop.
const pollTimeout = 250 * time.Millisecond

// live is one live capture: the table every interface feeds, and a reader per interface.
type live struct {
	c   *Capture
	snd *batcher.Batcher

	mu    sync.Mutex // guards table: readers account under it, the manager ticks under it
	table *flowtable.Table

	readers    map[string]*reader
	closed     closedRing // counters of sockets already closed
	agentNames []string   // interfaces the NIC-less subscriptions cover now
	matcherGen uint64     // configuration generation the table's matcher was built from
	wg         sync.WaitGroup
	inexact    map[string]string // interface → why its filter is wider than the subscriptions
	skipped    map[string]bool   // watched interfaces that cannot be captured, already reported
	errors     atomic.Uint64     // sockets that failed to open or read
}

// reader owns one interface's socket.
type reader struct {
	name    string
	tp      *afpacket.TPacket
	stop    atomic.Bool
	failed  atomic.Bool // the socket broke (interface went down or away): reopen at the next rescan
	done    chan struct{}
	program []string // subscription ids compiled into the socket's filter
	gen     uint64

	ringPackets, ringDrops, ringFreezes uint64 // last read from the kernel
}

func (c *Capture) runLive(ctx context.Context, out sdk.Emitter) error {
	cfg, changed := c.current()
	l := &live{c: c, snd: batcher.New(cfg.sdk.BatchSize, false), readers: map[string]*reader{},
		inexact: map[string]string{}, skipped: map[string]bool{}, matcherGen: ^uint64(0)}
	var err error
	l.table, err = flowtable.New(cfg.table, sdk.NewMatcher(nil), l.snd.AddFlow)
	if err != nil {
		return fmt.Errorf("building the flow table: %w", err)
	}
	l.table.OnSample(l.snd.AddSample)
	l.table.OnEvent(l.snd.AddEvent)
	sendDone := make(chan error, 1)
	go func() { sendDone <- l.snd.Run(ctx, out) }()

	if err := l.sync(cfg); err != nil {
		c.log.Warn("opening capture sockets", "err", err)
	}
	tick := time.NewTicker(tickInterval)
	defer tick.Stop()
	flush := time.NewTicker(cfg.sdk.FlushInterval)
	defer flush.Stop()
	rescan := time.NewTicker(time.Duration(cfg.opts.RescanIntervalMS) * time.Millisecond)
	defer rescan.Stop()
	publish := time.NewTicker(time.Second)
	defer publish.Stop()
	l.publish()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-c.shutdown:
			break loop
		case <-changed:
			cfg, changed = c.current()
			if err := l.sync(cfg); err != nil {
				c.log.Warn("applying subscriptions to capture sockets", "err", err)
			}
			c.log.Info("subscriptions applied", "subscriptions", len(cfg.sdk.Subscriptions), "interfaces", len(l.readers))
		case now := <-tick.C:
			l.mu.Lock()
			l.table.Tick(now)
			l.mu.Unlock()
		case <-flush.C:
			l.snd.Flush()
		case <-rescan.C:
			if err := l.sync(cfg); err != nil {
				c.log.Warn("re-reading interfaces", "err", err)
			}
		case <-publish.C:
			l.publish()
		}
	}
	// Every reader drains its ring at once, then each is closed.
	for _, r := range l.readers {
		r.stop.Store(true)
	}
	for name := range l.readers {
		l.stopReader(name)
	}
	l.wg.Wait()
	l.mu.Lock()
	l.table.Flush(sdk.EndShutdown)
	l.mu.Unlock()
	l.snd.Flush()
	l.publish()
	l.snd.Close()
	err = <-sendDone
	l.publish()
	return err
}

// sync makes the set of open sockets match the interfaces the configuration watches, and gives
// every socket the filter of the current subscriptions.
func (l *live) sync(cfg *config) error {
	host, err := nicscope.ReadHost()
	if err != nil {
		return err
	}
	subs, agentNames := nicscope.Scope(&cfg.sdk, host.Names)
	// The table's matcher changes with the subscriptions and with the interfaces the NIC-less
	// ones cover (a container's veth appearing).
	if cfg.gen != l.matcherGen || !slices.Equal(agentNames, l.agentNames) {
		l.mu.Lock()
		err := l.table.SetMatcher(sdk.NewMatcher(subs))
		l.mu.Unlock()
		if err != nil {
			return fmt.Errorf("applying subscriptions to the flow table: %w", err)
		}
		l.matcherGen, l.agentNames = cfg.gen, agentNames
		for _, r := range l.readers {
			r.gen = ^uint64(0) // the filters must be recompiled too
		}
	}
	want := host.Watch(subs, l.skipped, l.c.log)
	for name, r := range l.readers {
		if !want[name] || r.failed.Load() {
			l.stopReader(name)
		}
	}
	var errs []error
	for name := range want {
		r, ok := l.readers[name]
		if ok && r.gen == cfg.gen {
			continue
		}
		prog, err := cbpf.Compile(subs, name, cbpf.Options{SnapLen: uint32(cfg.sdk.SnapLen)})
		if err != nil {
			errs = append(errs, fmt.Errorf("compiling the socket filter for %s: %w", name, err))
			continue
		}
		if prog.Exact {
			delete(l.inexact, name)
		} else if l.inexact[name] != prog.Reason {
			l.inexact[name] = prog.Reason
			l.c.log.Warn("socket filter is wider than the subscriptions; user space filters the rest",
				"nic", name, "reason", prog.Reason)
		}
		if !ok {
			r, err = l.open(name, cfg)
			if err != nil {
				l.errors.Add(1)
				errs = append(errs, err)
				continue
			}
		}
		// SO_ATTACH_FILTER replaces the socket's filter in one step: no moment without one.
		if err := r.tp.SetBPF(prog.Instructions); err != nil {
			errs = append(errs, fmt.Errorf("attaching the socket filter to %s: %w", name, err))
			if !ok {
				r.tp.Close()
			}
			continue
		}
		r.gen, r.program = cfg.gen, prog.Subscriptions
		if !ok {
			l.readers[name] = r
			l.wg.Add(1)
			go l.read(r)
			l.c.log.Info("capturing", "nic", name, "filter_instructions", len(prog.Instructions), "exact", prog.Exact)
		}
	}
	return errors.Join(errs...)
}

func (l *live) open(name string, cfg *config) (*reader, error) {
	o := cfg.opts
	tp, err := afpacket.NewTPacket(
		afpacket.OptInterface(name),
		afpacket.TPacketVersion3,
		afpacket.OptBlockSize(o.BlockSize),
		afpacket.OptNumBlocks(o.NumBlocks),
		// V3 packs packets of any size into blocks; the frame size only has to divide the block.
		afpacket.OptFrameSize(4096),
		afpacket.OptBlockTimeout(time.Duration(o.BlockTimeoutMS)*time.Millisecond),
		afpacket.OptPollTimeout(pollTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("opening an AF_PACKET ring on %s: %w", name, err)
	}
	// Until the subscription filter is attached, the socket takes nothing: a new socket must not
	// let through, even briefly, traffic no subscription wants.
	if err := tp.SetBPF(rejectAll); err != nil {
		tp.Close()
		return nil, fmt.Errorf("attaching the initial filter to %s: %w", name, err)
	}
	if o.Promiscuous {
		if err := tp.SetPromiscuous(true); err != nil {
			tp.Close()
			return nil, fmt.Errorf("setting %s promiscuous: %w", name, err)
		}
	}
	return &reader{name: name, tp: tp, done: make(chan struct{})}, nil
}

func (l *live) stopReader(name string) {
	r := l.readers[name]
	r.stop.Store(true)
	<-r.done
	l.sampleRing(r)
	l.closed.packets += r.ringPackets
	l.closed.drops += r.ringDrops
	l.closed.freezes += r.ringFreezes
	r.tp.Close()
	delete(l.readers, name)
	delete(l.inexact, name)
}

// read accounts every frame of one interface until stopped. The frame's bytes are the ring's own
// memory (no copy) and are done with before the next read.
func (l *live) read(r *reader) {
	defer l.wg.Done()
	defer close(r.done)
	var drainBy time.Time
	for {
		if r.stop.Load() {
			// Stopping: what is already in the ring was captured and is accounted, until the ring
			// is empty (a poll times out) or, under unending traffic, for drainTime at most.
			if drainBy.IsZero() {
				drainBy = time.Now().Add(drainTime)
			} else if time.Now().After(drainBy) {
				return
			}
		}
		data, ci, err := r.tp.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, afpacket.ErrTimeout) {
				if r.stop.Load() {
					return
				}
				continue
			}
			l.errors.Add(1)
			l.c.log.Warn("reading from interface stopped; it is reopened when it is back", "nic", r.name, "err", err)
			l.drainAfterError(r)
			r.failed.Store(true)
			return
		}
		l.account(r, data, ci)
	}
}

// account adds one frame from the ring to the flow table.
func (l *live) account(r *reader, data []byte, ci gopacket.CaptureInfo) {
	vlan := -1
	for _, a := range ci.AncillaryData {
		if v, ok := a.(afpacket.AncillaryVLAN); ok {
			vlan = v.VLAN
		}
	}
	l.mu.Lock()
	l.table.AddFrame(ci.InterfaceIndex, r.name, ci.Timestamp, data, vlan)
	l.mu.Unlock()
}

// drainAfterError accounts what the ring still holds when its socket reports an error (the
// interface went down): the kernel captured those packets, and the block they are in is handed
// over by its timeout, after the error.
func (l *live) drainAfterError(r *reader) {
	deadline := time.Now().Add(drainTime)
	for time.Now().Before(deadline) {
		time.Sleep(blockSettle)
		data, ci, err := r.tp.ZeroCopyReadPacketData()
		if err != nil {
			return
		}
		for err == nil {
			l.account(r, data, ci)
			data, ci, err = r.tp.ZeroCopyReadPacketData()
		}
	}
}

// blockSettle is longer than any block timeout a configuration allows to be worth waiting for.
const blockSettle = 50 * time.Millisecond

// drainTime bounds how long a stopping reader keeps reading what its ring holds.
const drainTime = time.Second

// sampleRing reads the kernel's counters of a socket: packets it passed the filter and drops
// because the ring was full. The kernel resets them on every read; afpacket accumulates.
func (l *live) sampleRing(r *reader) {
	_, v3, err := r.tp.SocketStats()
	if err != nil {
		return
	}
	r.ringPackets, r.ringDrops, r.ringFreezes = uint64(v3.Packets()), uint64(v3.Drops()), uint64(v3.QueueFreezes())
}

// closedRing keeps the counters of sockets already closed, so totals never go backwards.
type closedRing struct{ packets, drops, freezes uint64 }

// publish stores a snapshot of every counter for Health.
func (l *live) publish() {
	l.mu.Lock()
	c := l.table.Counters()
	l.mu.Unlock()
	pk, dr, fr := l.closed.packets, l.closed.drops, l.closed.freezes
	for _, r := range l.readers {
		l.sampleRing(r)
		pk += r.ringPackets
		dr += r.ringDrops
		fr += r.ringFreezes
	}
	c["ring.packets"] = pk
	c["drop.ring"] = dr
	c["ring.queue_freezes"] = fr
	c["interfaces.watched"] = uint64(len(l.readers))
	c["filter.inexact"] = uint64(len(l.inexact))
	c["interfaces.not_ethernet"] = uint64(len(l.skipped))
	c["socket.errors"] = l.errors.Load()
	l.snd.Counters(c)
	l.c.snapshot.Store(&c)
}
