package decoder

import (
	"encoding/binary"
	"time"

	"github.com/quanyu/quanyu/plugins/l7-dns/internal/dnswire"
	"github.com/quanyu/quanyu/sdk"
)

// DNS over TCP (RFC 1035 section 4.2.2, RFC 7766) sends each message after a two-byte length,
// and a segment may hold several messages or part of one. A stream follows one direction by
// sequence number, so it always knows which stream bytes a sample holds:
//
//   - bytes before the next expected one were seen already (a retransmission) and are skipped;
//   - bytes missing (a gap in the capture, or the cut tail of a sample) inside a message whose
//     length is known leave the message with a hole: it is reported from the prefix before the
//     hole, Partial, and the next message still starts where the length says;
//   - bytes missing where a length prefix was lose the boundary: the stream then skips samples
//     until one starts with a plausible length and header, and carries on from there.
//
// Buffering is bounded per message and in all; a message past either bound is reported from
// the prefix kept, Partial.

const (
	// maxMessageBuffer bounds the bytes kept of one TCP message. Reports use the header, the
	// question and at most max_answers answers, which fit well within it for all but zone
	// transfers.
	maxMessageBuffer = 16 << 10
	// maxBuffered bounds the bytes kept over all TCP streams.
	maxBuffered = 64 << 20
	// keepBufferCap is the largest buffer a stream keeps for its next message; a larger one is
	// freed, so one big message does not pin memory in an idle flow.
	keepBufferCap = 4 << 10
)

// stream is one direction of a TCP flow.
type stream struct {
	started bool   // a sample of this direction was seen, so next means something
	synced  bool   // next is at a message boundary or inside the current message
	next    uint32 // the sequence number of the next stream byte not yet accounted for
	inMsg   bool   // a message has begun and not ended
	start   uint32 // the sequence number of the current message's length prefix
	length  int    // the current message's length from its prefix; -1 until both bytes came
	buf     []byte // the message's bytes, prefix included, up to the first hole
	hole    bool   // bytes of the current message are missing (or past the buffering bounds)
	at      time.Time
}

// feed takes one TCP sample of the flow.
func (d *Decoder) feed(fl *flow, s *sdk.Sample) {
	dir := 1
	if s.FromClient {
		dir = 0
	}
	st := &fl.tcp[dir]
	data := s.Data
	wire := max(s.WireLen, len(data))
	first := !st.started
	if first {
		st.started, st.next = true, s.Seq
	}
	atStart := true // data[0] is the sample's first byte, where a message may begin
	if diff := int32(s.Seq - st.next); diff < 0 {
		seen := int(-int64(diff))
		if seen >= wire {
			d.c.inc(cTCPRetransSegments)
			d.c.add(cTCPRetransBytes, wire)
			return
		}
		d.c.add(cTCPRetransBytes, seen)
		wire -= seen
		data = data[min(seen, len(data)):]
		atStart = false
	} else if diff > 0 {
		d.c.inc(cTCPGaps)
		d.skip(fl, dir, int(diff))
	}
	if !st.synced {
		if !atStart || !plausibleStart(data, first) {
			d.c.inc(cTCPResyncSkipped)
			st.next += uint32(wire)
			return
		}
		st.synced = true
	}
	d.consume(fl, dir, data, s.Time)
	d.skip(fl, dir, wire-len(data))
}

// plausibleStart reports whether b could begin a length-prefixed DNS message. A direction's
// first sample is taken as a start unless the bytes it has say otherwise, since a stream starts
// with a message and some senders write the length prefix, or even one byte of it, in a segment
// of its own. Later, finding a boundary again, the length and the whole header must be there
// and look like a message's.
func plausibleStart(b []byte, first bool) bool {
	if len(b) < 2+dnswire.HeaderLen && !first {
		return false
	}
	if len(b) < 2 {
		return len(b) == 1
	}
	n := int(binary.BigEndian.Uint16(b))
	if n < dnswire.HeaderLen {
		return false
	}
	return len(b) < 2+dnswire.HeaderLen || dnswire.PlausibleHeader(b[2:], n)
}

// consume takes stream bytes present in the capture, starting at st.next.
func (d *Decoder) consume(fl *flow, dir int, data []byte, at time.Time) {
	st := &fl.tcp[dir]
	for len(data) > 0 {
		if !st.inMsg {
			st.inMsg, st.start, st.length, st.hole, st.at = true, st.next, -1, false, at
		}
		if st.length < 0 {
			take := min(2-len(st.buf), len(data))
			st.buf = append(st.buf, data[:take]...)
			d.buffered += take
			st.next += uint32(take)
			data = data[take:]
			if len(st.buf) < 2 {
				continue
			}
			if st.length = int(binary.BigEndian.Uint16(st.buf)); st.length < dnswire.HeaderLen {
				d.c.inc(cTCPBadLength)
				d.desync(st)
				st.next += uint32(len(data))
				return
			}
			continue
		}
		remaining := int(st.start + uint32(2+st.length) - st.next)
		take := min(remaining, len(data))
		if !st.hole {
			d.hold(st, data[:take])
		}
		st.next += uint32(take)
		data = data[take:]
		if take == remaining {
			d.finishMessage(fl, dir)
		}
	}
}

// skip accounts for n stream bytes at st.next that the capture does not have.
func (d *Decoder) skip(fl *flow, dir int, n int) {
	if n <= 0 {
		return
	}
	d.c.add(cTCPMissingBytes, n)
	st := &fl.tcp[dir]
	switch {
	case !st.synced:
	case !st.inMsg:
		// The missing bytes begin a message, so its length is missing with them.
		d.desync(st)
	case st.length < 0:
		d.c.inc(cTCPMessagesLost)
		d.desync(st)
	default:
		st.hole = true
		remaining := int(st.start + uint32(2+st.length) - st.next)
		if n < remaining {
			st.next += uint32(n)
			return
		}
		st.next += uint32(remaining)
		n -= remaining
		d.finishMessage(fl, dir)
		if n > 0 {
			d.desync(st)
		}
	}
	st.next += uint32(n)
}

// hold keeps b as part of the current message, within the buffering bounds; what does not fit
// makes a hole.
func (d *Decoder) hold(st *stream, b []byte) {
	room := min(maxMessageBuffer-len(st.buf), maxBuffered-d.buffered)
	if len(b) > room {
		b = b[:max(room, 0)]
		st.hole = true
		d.c.inc(cTCPBufferCut)
	}
	st.buf = append(st.buf, b...)
	d.buffered += len(b)
}

// finishMessage hands the current message to the pairing, whole or from its prefix.
func (d *Decoder) finishMessage(fl *flow, dir int) {
	st := &fl.tcp[dir]
	in := msgIn{data: st.buf[2:], size: st.length, cut: st.hole, at: st.at, fromClient: dir == 0}
	d.message(fl.key, &fl.meta, in)
	d.release(st)
}

// flushStream reports the message in progress when the flow ends: what was captured of it is
// all there will be.
func (d *Decoder) flushStream(fl *flow, dir int) {
	st := &fl.tcp[dir]
	if st.synced && st.inMsg {
		if st.length < 0 {
			d.c.inc(cTCPMessagesLost)
		} else {
			st.hole = true
			d.finishMessage(fl, dir)
		}
	}
	d.release(st)
}

func (d *Decoder) desync(st *stream) {
	d.c.inc(cTCPDesync)
	d.release(st)
	st.synced = false
}

// release drops the current message's bytes.
func (d *Decoder) release(st *stream) {
	d.buffered -= len(st.buf)
	if cap(st.buf) > keepBufferCap {
		st.buf = nil
	} else {
		st.buf = st.buf[:0]
	}
	st.inMsg = false
}
