package capture

import (
	"errors"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/quanyu/quanyu/plugins/capture-ebpf/internal/kern"
	"github.com/quanyu/quanyu/sdk"
	"github.com/quanyu/quanyu/sdk/communityid"
)

// eventPoll is how long the reader waits for a wake-up. The kernel wakes it only when a quarter
// MiB is waiting (batched wake-ups, so a busy ring costs few system calls); below that, the
// reader picks the events up on this period.
const eventPoll = 200 * time.Millisecond

// eventReader turns the kernel's ring buffer into flow events and payload samples.
type eventReader struct {
	l    *live
	rd   *ringbuf.Reader
	full chan struct{} // the kernel's flow map is full: evict now
	quit chan struct{}
}

func newEventReader(l *live) (*eventReader, error) {
	rd, err := ringbuf.NewReader(l.k.objs.Events)
	if err != nil {
		return nil, unavailable("opening the event ring buffer", err)
	}
	return &eventReader{l: l, rd: rd, full: make(chan struct{}, 1), quit: make(chan struct{})}, nil
}

func (r *eventReader) stop() {
	close(r.quit)
	_ = r.rd.Flush()
}

func (r *eventReader) close() { _ = r.rd.Close() }

const headerSize = int(unsafe.Sizeof(kern.CaptureEventHeader{}))

func (r *eventReader) run() {
	var rec ringbuf.Record
	for {
		select {
		case <-r.quit:
			// Take what the ring still holds, then stop.
			r.rd.SetDeadline(time.Now())
			for r.rd.ReadInto(&rec) == nil {
				r.handle(rec.RawSample)
			}
			return
		default:
		}
		r.rd.SetDeadline(time.Now().Add(eventPoll))
		err := r.rd.ReadInto(&rec)
		switch {
		case err == nil:
			r.handle(rec.RawSample)
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
		case errors.Is(err, ringbuf.ErrClosed):
			return
		default:
			r.l.c.log.Warn("reading the event ring", "err", err)
			time.Sleep(eventPoll)
		}
	}
}

// header decodes an event header from the ring's bytes (the kernel's layout, host order).
func header(raw []byte) (kern.CaptureEventHeader, bool) {
	var h kern.CaptureEventHeader
	if len(raw) < headerSize {
		return h, false
	}
	h = *(*kern.CaptureEventHeader)(unsafe.Pointer(&raw[0]))
	return h, true
}

func (r *eventReader) handle(raw []byte) {
	h, ok := header(raw)
	if !ok {
		return
	}
	data := raw[headerSize:]
	if int(h.DataLen) <= len(data) {
		data = data[:h.DataLen]
	}
	l := r.l
	switch kern.CaptureEventKind(h.Kind) {
	case kern.CaptureEventKindEVENT_FULL:
		select {
		case r.full <- struct{}{}:
		default:
		}
		return
	}
	clk := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.matcher == nil {
		return
	}
	st := l.flows[h.Key]
	if st == nil {
		// The first word of a flow: decide its client from this packet if it is the first one.
		st = &flowState{}
		st.mask = l.matcher.Match(l.meta(&h.Key, false))
		if kern.CaptureEventKind(h.Kind) == kern.CaptureEventKindEVENT_START {
			st.clientIsA = decideClient(&h.Key, h.Dir == 0, h.TcpFlags)
			st.decided = true
			st.windowStart = h.TsNs
			st.deadline = h.TsNs + uint64(l.cfg.sdk.ActiveTimeout)
		}
		l.flows[h.Key] = st
	}
	if st.cid == "" && st.decided {
		st.cid = eventCommunityID(&h)
	}
	if st.mask == 0 {
		return // the subscriptions changed under it; rematch or the next scan ends it
	}
	at := clk.at(h.TsNs)
	switch kern.CaptureEventKind(h.Kind) {
	case kern.CaptureEventKindEVENT_START:
		l.addEvent(h.Key, st, sdk.EventStart, at, data, &h)
	case kern.CaptureEventKindEVENT_FIN:
		st.fins |= 1 << (h.Dir & 1)
		if st.fins == 3 && !st.ended {
			st.ended = true
			l.addEvent(h.Key, st, sdk.EventEnd, at, data, &h)
		}
	case kern.CaptureEventKindEVENT_RESET:
		if !st.ended {
			st.ended = true
			l.addEvent(h.Key, st, sdk.EventReset, at, data, &h)
		}
	case kern.CaptureEventKindEVENT_SAMPLE:
		a := sdk.Endpoint{Addr: addrOf(h.Key.AddrA), Port: h.Key.PortA}
		b := sdk.Endpoint{Addr: addrOf(h.Key.AddrB), Port: h.Key.PortB}
		client, server := a, b
		fromClient := h.Dir == 0
		if !st.clientIsA {
			client, server, fromClient = b, a, !fromClient
		}
		l.user.samples++
		l.snd.AddSample(sdk.Sample{CommunityID: st.cid, NIC: l.ifnames[h.Key.Ifindex], Transport: sdk.Transport(h.Key.Proto),
			Client: client, Server: server, FromClient: fromClient, Time: at, Seq: h.Seq,
			Data: append([]byte(nil), data...), WireLen: int(h.WireLen), Subscriptions: l.matcher.IDs(st.mask)})
	}
}

// addEvent emits a flow event, with its frames when the kernel sent them. Called with l.mu held.
func (l *live) addEvent(key kern.CaptureFlowKey, st *flowState, kind string, at time.Time, data []byte, h *kern.CaptureEventHeader) {
	e := l.event(key, st, kind, at)
	if len(data) > 0 && int(h.L4Off) <= len(data) {
		l7 := min(int(h.L7Off), len(data))
		l4 := min(int(h.L4Off), l7)
		e.L3Frame = append([]byte(nil), data[:l4]...)
		e.L4Frame = append([]byte(nil), data[l4:l7]...)
		e.L7Frame = append([]byte(nil), data[l7:]...)
	}
	l.user.events++
	l.snd.AddEvent(e)
}

// eventCommunityID computes a flow's Community ID from its first packet's event.
func eventCommunityID(h *kern.CaptureEventHeader) string {
	a, b := addrOf(h.Key.AddrA), addrOf(h.Key.AddrB)
	if h.Key.Proto == uint8(sdk.TransportICMP) || h.Key.Proto == uint8(sdk.TransportICMPv6) {
		src, dst := a, b
		if h.Dir == 1 {
			src, dst = b, a
		}
		return communityid.String(communityid.ICMPHash(0, src, dst, h.Key.Proto, h.IcmpType, h.IcmpCode))
	}
	return communityid.String(communityid.Hash(0, a, b, h.Key.Proto, h.Key.PortA, h.Key.PortB))
}
