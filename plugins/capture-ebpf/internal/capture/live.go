package capture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/quanyu/quanyu/plugins/capture-ebpf/internal/filter"
	"github.com/quanyu/quanyu/plugins/capture-ebpf/internal/kern"
	"github.com/quanyu/quanyu/plugins/internal/batcher"
	"github.com/quanyu/quanyu/plugins/internal/nicscope"
	"github.com/quanyu/quanyu/sdk"
)

// live is one running capture. One mutex guards the user-space state: the scanner, the event
// reader and the manager each take it for short stretches; the kernel side never waits on it.
type live struct {
	c      *Capture
	k      *kernel
	snd    *batcher.Batcher
	writer *filter.Writer

	mu         sync.Mutex
	cfg        *config
	matcher    *sdk.Matcher
	agentNames []string
	attached   map[string]*attachment
	ifnames    map[uint32]string // ifindex → name, for records
	skipped    map[string]bool
	flows      map[kern.CaptureFlowKey]*flowState
	user       userCounters
	matcherGen uint64

	// scan buffers, reused
	ncpu      int
	keyBuf    []kern.CaptureFlowKey
	valBuf    []kern.CaptureFlowStats
	lastFull  uint64 // kernel map-full count at the previous scan
	evictWant bool   // the kernel said its flow map is full
}

type userCounters struct {
	records, events, samples, unsubscribed, evicted, attachErrors, scanErrors uint64
	scans, scanNanos                                                          uint64
}

func (c *Capture) runLive(ctx context.Context, k *kernel, out sdk.Emitter) error {
	cfg, changed := c.current()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting CPUs for the per-CPU flow map: %w", err)
	}
	const chunk = 4096
	l := &live{
		c: c, k: k, snd: batcher.New(cfg.sdk.BatchSize, false), writer: filter.NewWriter(filter.MapsOf(&k.objs)),
		cfg: cfg, attached: map[string]*attachment{}, ifnames: map[uint32]string{}, skipped: map[string]bool{},
		flows: map[kern.CaptureFlowKey]*flowState{}, matcherGen: ^uint64(0),
		ncpu: ncpu, keyBuf: make([]kern.CaptureFlowKey, chunk), valBuf: make([]kern.CaptureFlowStats, chunk*ncpu),
	}
	sendDone := make(chan error, 1)
	go func() { sendDone <- l.snd.Run(ctx, out) }()

	events, err := newEventReader(l)
	if err != nil {
		l.snd.Close()
		<-sendDone
		return err
	}
	eventsDone := make(chan struct{})
	go func() {
		defer close(eventsDone)
		events.run()
	}()

	if err := l.sync(cfg); err != nil {
		c.log.Warn("attaching to interfaces", "err", err)
	}
	scan := time.NewTicker(time.Duration(cfg.opts.ScanIntervalMS) * time.Millisecond)
	defer scan.Stop()
	flush := time.NewTicker(cfg.sdk.FlushInterval)
	defer flush.Stop()
	rescan := time.NewTicker(time.Duration(cfg.opts.RescanIntervalMS) * time.Millisecond)
	defer rescan.Stop()
	// Health's counters are read from the kernel every second, not only at each scan: they are
	// what an operator (and the agent's stats) watch between scans.
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
				c.log.Warn("applying subscriptions", "err", err)
			}
			c.log.Info("subscriptions applied", "subscriptions", len(cfg.sdk.Subscriptions), "interfaces", len(l.attached))
		case <-scan.C:
			l.scan(false)
			l.publish()
		case <-events.full:
			l.mu.Lock()
			l.evictWant = true
			l.mu.Unlock()
			l.scan(false)
		case <-flush.C:
			l.snd.Flush()
		case <-publish.C:
			l.publish()
		case <-rescan.C:
			if err := l.sync(cfg); err != nil {
				c.log.Warn("re-reading interfaces", "err", err)
			}
		}
	}
	// Detach first, so the last scan sees every flow complete; then report them all.
	l.mu.Lock()
	for name, a := range l.attached {
		a.detach()
		delete(l.attached, name)
	}
	l.mu.Unlock()
	events.stop()
	<-eventsDone
	l.scan(true)
	l.publish()
	l.snd.Close()
	err = <-sendDone
	l.publish()
	events.close()
	k.close()
	c.mu.Lock()
	c.kernel = nil
	c.mu.Unlock()
	return err
}

// sync makes the attachments match the interfaces the configuration watches, and the kernel's
// filter match the subscriptions (a new generation) or the interfaces (NIC masks).
func (l *live) sync(cfg *config) error {
	host, err := nicscope.ReadHost()
	if err != nil {
		return err
	}
	index := host.Index
	subs, agentNames := nicscope.Scope(&cfg.sdk, host.Names)
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	switch {
	case cfg.gen != l.matcherGen:
		set := filter.Compile(subs, index)
		if err := l.writer.Swap(set); err != nil {
			return fmt.Errorf("writing the subscriptions into the kernel: %w", err)
		}
		l.cfg, l.matcherGen, l.agentNames = cfg, cfg.gen, agentNames
		old := l.matcher
		l.matcher = sdk.NewMatcher(subs)
		l.rematch(old)
	case !slices.Equal(agentNames, l.agentNames) || len(index) != len(l.ifnames):
		set := filter.Compile(subs, index)
		if err := l.writer.UpdateNICs(set.NICs); err != nil {
			errs = append(errs, fmt.Errorf("updating interface masks: %w", err))
		}
		l.agentNames = agentNames
		l.matcher = sdk.NewMatcher(subs)
	}
	l.ifnames = map[uint32]string{}
	for name, idx := range index {
		l.ifnames[idx] = name
	}
	want := host.Watch(subs, l.skipped, l.c.log)
	for name, a := range l.attached {
		if !want[name] || int(index[name]) != a.ifindex {
			a.detach()
			delete(l.attached, name)
		}
	}
	for name := range want {
		if _, ok := l.attached[name]; ok {
			continue
		}
		a, err := l.k.attach(name, int(index[name]), cfg.opts.Attach)
		if err != nil {
			l.user.attachErrors++
			errs = append(errs, err)
			continue
		}
		l.attached[name] = a
		mode := "tc"
		if len(a.links) > 0 {
			mode = "tcx"
		}
		l.c.log.Info("capturing", "nic", name, "attach", mode)
	}
	return errors.Join(errs...)
}

// rematch applies a new subscription set to the flows already tracked, as the AF_PACKET capture
// does: a flow the new set leaves out ends now ("unsubscribed", with the ids it had under the old
// set), the others carry the new ids. Called with l.mu held.
func (l *live) rematch(old *sdk.Matcher) {
	clk := now()
	var gone []kern.CaptureFlowKey
	var m merged
	for key, st := range l.flows {
		mask := l.matcher.Match(l.meta(&key, st.fragmented))
		if mask != 0 {
			st.mask = mask
			continue
		}
		if old != nil && l.lookup(key, &m) {
			l.emitAs(key, st, &m, clk, true, sdk.EndUnsubscribed, old.IDs(st.mask))
		}
		gone = append(gone, key)
	}
	l.remove(gone)
}

func (l *live) meta(key *kern.CaptureFlowKey, fragmented bool) *sdk.PacketMeta {
	a, b := addrOf(key.AddrA), addrOf(key.AddrB)
	return &sdk.PacketMeta{NIC: l.ifnames[key.Ifindex], Src: a, Dst: b, Transport: sdk.Transport(key.Proto),
		SrcPort: key.PortA, DstPort: key.PortB, PortsUnknown: fragmented && key.PortA == 0 && key.PortB == 0}
}

// lookup reads one flow's per-CPU values and merges them.
func (l *live) lookup(key kern.CaptureFlowKey, m *merged) bool {
	vals := l.valBuf[:l.ncpu]
	if err := l.k.objs.Flows.Lookup(key, vals); err != nil {
		return false
	}
	m.merge(vals)
	return true
}

// remove deletes ended flows from the kernel and from the state.
func (l *live) remove(keys []kern.CaptureFlowKey) {
	if len(keys) == 0 {
		return
	}
	if _, err := l.k.objs.Flows.BatchDelete(keys, nil); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		// A key another path already deleted fails the batch; delete one by one instead.
		for _, k := range keys {
			_ = l.k.objs.Flows.Delete(k)
		}
	}
	for _, k := range keys {
		_ = l.k.objs.L7flows.Delete(k)
		delete(l.flows, k)
	}
}

// publish stores a snapshot of every counter for Health.
func (l *live) publish() {
	c := map[string]uint64{}
	if kc, err := l.k.counters(); err == nil {
		c["packets"] = kc[kern.CaptureCounterCOUNT_PACKETS]
		c["accounted"] = kc[kern.CaptureCounterCOUNT_ACCOUNTED]
		c["filtered"] = kc[kern.CaptureCounterCOUNT_FILTERED]
		c["non_ip"] = kc[kern.CaptureCounterCOUNT_NOT_IP]
		c["arp"] = kc[kern.CaptureCounterCOUNT_ARP]
		c["parse_error"] = kc[kern.CaptureCounterCOUNT_PARSE_ERROR]
		c["drop.map_full"] = kc[kern.CaptureCounterCOUNT_MAP_FULL]
		c["drop.ring_full"] = kc[kern.CaptureCounterCOUNT_RING_FULL]
		c["flows.created"] = kc[kern.CaptureCounterCOUNT_FLOWS_CREATED]
		c["fragment.orphan"] = kc[kern.CaptureCounterCOUNT_FRAG_ORPHAN]
		c["samples.kernel"] = kc[kern.CaptureCounterCOUNT_SAMPLES]
		c["sample_bytes"] = kc[kern.CaptureCounterCOUNT_SAMPLE_BYTES]
		c["events.kernel"] = kc[kern.CaptureCounterCOUNT_EVENTS]
		c["drop.l7_map_full"] = kc[kern.CaptureCounterCOUNT_L7FULL]
		c["parse_error.too_many_ipv6_ext"] = kc[kern.CaptureCounterCOUNT_EXT_HEADERS]
	}
	l.mu.Lock()
	c["flows.tracked"] = uint64(len(l.flows))
	c["records"] = l.user.records
	c["events"] = l.user.events
	c["samples"] = l.user.samples
	c["flows.unsubscribed"] = l.user.unsubscribed
	c["flow_table.evicted"] = l.user.evicted
	c["attach.errors"] = l.user.attachErrors
	c["scan.errors"] = l.user.scanErrors
	c["scan.count"] = l.user.scans
	c["scan.time_us"] = l.user.scanNanos / 1000
	c["interfaces.watched"] = uint64(len(l.attached))
	c["interfaces.not_ethernet"] = uint64(len(l.skipped))
	c["filter.version"] = uint64(l.writer.Active())
	l.mu.Unlock()
	l.snd.Counters(c)
	l.c.snapshot.Store(&c)
}
