package sdk

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/quanyu/quanyu/sdk/internal/pb"
)

// Samples cross a plugin boundary packed (see SampleBatch in plugin.proto): a batch of a
// thousand samples from a few dozen conversations sends each conversation's identity once and
// each sample as 25 bytes of header and its data, and the receiver parses it without an
// allocation per sample. The data of the received samples aliases the batch's packed bytes,
// which protobuf has already copied out of the transport's buffers.

const (
	sampleHeaderBytes = 25

	sampleFromClient = 1 << 0
	sampleFlowEnd    = 1 << 1
)

// sampleFlow is one conversation's identity as a SampleBatch carries it once.
type sampleFlow struct {
	CommunityID   string
	NIC           string
	Transport     Transport
	Client        Endpoint
	Server        Endpoint
	Subscriptions []string
}

// flowKey is the comparable part of a sampleFlow, for finding a flow already in the batch.
type flowKey struct {
	communityID, nic string
	transport        Transport
	client, server   Endpoint
}

func (f *sampleFlow) key() flowKey {
	return flowKey{f.CommunityID, f.NIC, f.Transport, f.Client, f.Server}
}

func sampleIdentity(s *Sample) sampleFlow {
	return sampleFlow{s.CommunityID, s.NIC, s.Transport, s.Client, s.Server, s.Subscriptions}
}

// owns reports whether r belongs to the conversation f, so that it can cross without its identity.
func (f *sampleFlow) owns(r *L7) bool {
	return r.CommunityID == f.CommunityID && r.NIC == f.NIC && r.Transport == f.Transport &&
		r.Client == f.Client && r.Server == f.Server && slices.Equal(r.Subscriptions, f.Subscriptions)
}

// samplesToPB packs samples, returning the flows in the order of their indexes.
func samplesToPB(samples []Sample) (*pb.SampleBatch, []sampleFlow) {
	out := &pb.SampleBatch{}
	if len(samples) == 0 {
		return out, nil
	}
	size := 0
	for i := range samples {
		size += sampleHeaderBytes + len(samples[i].Data)
	}
	var flows []sampleFlow
	index := make(map[flowKey]int)
	packed := make([]byte, 0, size)
	for i := range samples {
		s := &samples[i]
		id := sampleIdentity(s)
		k := id.key()
		n, ok := index[k]
		if !ok || !slices.Equal(flows[n].Subscriptions, s.Subscriptions) {
			n = len(flows)
			flows = append(flows, id)
			index[k] = n
			out.Flows = append(out.Flows, &pb.SampleFlow{
				CommunityId: s.CommunityID, Nic: s.NIC, Transport: uint32(s.Transport),
				Client: endpointToPB(s.Client), Server: endpointToPB(s.Server), Subscriptions: s.Subscriptions,
			})
		}
		var flags byte
		if s.FromClient {
			flags |= sampleFromClient
		}
		if s.FlowEnd {
			flags |= sampleFlowEnd
		}
		packed = binary.LittleEndian.AppendUint32(packed, uint32(n))
		packed = append(packed, flags)
		packed = binary.LittleEndian.AppendUint64(packed, uint64(nanos(s.Time)))
		packed = binary.LittleEndian.AppendUint32(packed, s.Seq)
		packed = binary.LittleEndian.AppendUint32(packed, uint32(min(max(s.WireLen, 0), 1<<32-1)))
		packed = binary.LittleEndian.AppendUint32(packed, uint32(len(s.Data)))
		packed = append(packed, s.Data...)
	}
	out.Packed = packed
	return out, flows
}

// samplesFromPB unpacks a SampleBatch. Anything that does not add up — a flow index out of
// range, a length past the end, unknown flags — fails the whole batch: the peer is broken.
func samplesFromPB(p *pb.SampleBatch) ([]Sample, []sampleFlow, error) {
	if p == nil {
		return nil, nil, nil
	}
	flows := make([]sampleFlow, len(p.Flows))
	for i, f := range p.Flows {
		flows[i] = sampleFlow{CommunityID: f.CommunityId, NIC: f.Nic, Transport: Transport(f.Transport), Subscriptions: f.Subscriptions}
		var err error
		if flows[i].Client, err = endpointFromPB(f.Client); err != nil {
			return nil, nil, fmt.Errorf("sample flow %d client: %w", i, err)
		}
		if flows[i].Server, err = endpointFromPB(f.Server); err != nil {
			return nil, nil, fmt.Errorf("sample flow %d server: %w", i, err)
		}
	}
	var samples []Sample
	b := p.Packed
	for off := 0; off < len(b); {
		if len(b)-off < sampleHeaderBytes {
			return nil, nil, fmt.Errorf("sample %d at byte %d: %d bytes left, a header needs %d", len(samples), off, len(b)-off, sampleHeaderBytes)
		}
		h := b[off : off+sampleHeaderBytes]
		n := binary.LittleEndian.Uint32(h[0:])
		flags := h[4]
		dataLen := binary.LittleEndian.Uint32(h[21:])
		switch {
		case uint64(n) >= uint64(len(flows)):
			return nil, nil, fmt.Errorf("sample %d: flow %d of %d", len(samples), n, len(flows))
		case flags&^(sampleFromClient|sampleFlowEnd) != 0:
			return nil, nil, fmt.Errorf("sample %d: unknown flags %#x", len(samples), flags)
		case uint64(dataLen) > uint64(len(b)-off-sampleHeaderBytes):
			return nil, nil, fmt.Errorf("sample %d: %d bytes of data, %d left", len(samples), dataLen, len(b)-off-sampleHeaderBytes)
		}
		if samples == nil {
			// Most samples are a few hundred bytes; the guess only saves growing the slice.
			samples = make([]Sample, 0, len(b)/(sampleHeaderBytes+256)+1)
		}
		f := &flows[n]
		start := off + sampleHeaderBytes
		end := start + int(dataLen)
		var data []byte
		if dataLen > 0 {
			data = b[start:end:end]
		}
		samples = append(samples, Sample{
			CommunityID: f.CommunityID, NIC: f.NIC, Transport: f.Transport, Client: f.Client, Server: f.Server,
			Subscriptions: f.Subscriptions,
			FromClient:    flags&sampleFromClient != 0, FlowEnd: flags&sampleFlowEnd != 0,
			Time: fromNanos(int64(binary.LittleEndian.Uint64(h[5:]))), Seq: binary.LittleEndian.Uint32(h[13:]),
			WireLen: int(binary.LittleEndian.Uint32(h[17:])), Data: data,
		})
		off = end
	}
	return samples, flows, nil
}

// l7sToPB converts a decoder's answer, leaving out the identity of records that belong to a flow
// of the request (almost all of them).
func l7sToPB(recs []L7, flows []sampleFlow) *pb.L7Batch {
	out := &pb.L7Batch{Records: make([]*pb.L7, len(recs))}
	var index map[string][]int // community ID and NIC → flows; several when subscriptions changed
	for i := range recs {
		r := &recs[i]
		if len(flows) > 0 && index == nil {
			index = make(map[string][]int, len(flows))
			for n := range flows {
				k := flows[n].CommunityID + "\x00" + flows[n].NIC
				index[k] = append(index[k], n)
			}
		}
		n := -1
		for _, c := range index[r.CommunityID+"\x00"+r.NIC] {
			if flows[c].owns(r) {
				n = c
				break
			}
		}
		if n < 0 {
			out.Records[i] = l7ToPB(r)
			continue
		}
		bare := *r
		bare.CommunityID, bare.NIC, bare.Transport, bare.Client, bare.Server, bare.Subscriptions = "", "", 0, Endpoint{}, Endpoint{}, nil
		out.Records[i] = l7ToPB(&bare)
		out.Records[i].Client, out.Records[i].Server = nil, nil
		out.Records[i].Flow = uint32(n + 1)
	}
	return out
}

// l7sFromPB converts a decoder's answer, giving records that name a flow of the request its identity.
func l7sFromPB(p *pb.L7Batch, flows []sampleFlow) ([]L7, error) {
	out := make([]L7, len(p.Records))
	for i, r := range p.Records {
		var err error
		if out[i], err = l7FromPB(r); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		if r.Flow == 0 {
			continue
		}
		if uint64(r.Flow) > uint64(len(flows)) {
			return nil, fmt.Errorf("record %d: flow %d of %d", i, r.Flow, len(flows))
		}
		f := &flows[r.Flow-1]
		out[i].CommunityID, out[i].NIC, out[i].Transport = f.CommunityID, f.NIC, f.Transport
		out[i].Client, out[i].Server, out[i].Subscriptions = f.Client, f.Server, f.Subscriptions
	}
	return out, nil
}
