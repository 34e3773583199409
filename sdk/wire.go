package sdk

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/quanyu/quanyu/sdk/internal/pb"
)

// Conversions between the Go records and their protobuf form. Times cross as Unix nanoseconds and
// addresses as 4 or 16 bytes; a zero time or address crosses as 0 or empty and comes back zero.

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func endpointToPB(e Endpoint) *pb.Endpoint {
	var addr []byte
	if e.Addr.IsValid() {
		addr = e.Addr.AsSlice()
	}
	return &pb.Endpoint{Addr: addr, Port: uint32(e.Port)}
}

func endpointFromPB(e *pb.Endpoint) (Endpoint, error) {
	if e == nil {
		return Endpoint{}, nil
	}
	var out Endpoint
	if len(e.Addr) > 0 {
		a, ok := netip.AddrFromSlice(e.Addr)
		if !ok {
			return out, fmt.Errorf("address of %d bytes", len(e.Addr))
		}
		out.Addr = a
	}
	if e.Port > 65535 {
		return out, fmt.Errorf("port %d out of range", e.Port)
	}
	out.Port = uint16(e.Port)
	return out, nil
}

func countsToPB(c Counts) *pb.Counts { return &pb.Counts{Packets: c.Packets, IpBytes: c.IPBytes} }

func countsFromPB(c *pb.Counts) Counts {
	if c == nil {
		return Counts{}
	}
	return Counts{Packets: c.Packets, IPBytes: c.IpBytes}
}

func flowToPB(f *Flow) *pb.Flow {
	vlan := make([]uint32, len(f.VLAN))
	for i, v := range f.VLAN {
		vlan[i] = uint32(v)
	}
	return &pb.Flow{
		Host: f.Host, Nic: f.NIC, Ifindex: int32(f.IfIndex), Netns: f.Netns,
		StartNs: nanos(f.Start), EndNs: nanos(f.End),
		Transport: uint32(f.Transport), Client: endpointToPB(f.Client), Server: endpointToPB(f.Server),
		ClientToServer: countsToPB(f.ClientToServer), ServerToClient: countsToPB(f.ServerToClient),
		TcpFlags: uint32(f.TCPFlags), RttNs: int64(f.RTT), Retransmits: f.Retransmits, Vlan: vlan,
		ClientMac: f.ClientMAC, ServerMac: f.ServerMAC,
		CommunityId: f.CommunityID, Subscriptions: f.Subscriptions, Final: f.Final, EndReason: f.EndReason,
		L7: l7SummaryToPB(f.L7),
	}
}

func l7SummaryToPB(s *L7Summary) *pb.L7Summary {
	if s == nil {
		return nil
	}
	return &pb.L7Summary{Protocol: s.Protocol, Transactions: s.Transactions, Errors: s.Errors, Partial: s.Partial}
}

func l7SummaryFromPB(p *pb.L7Summary) *L7Summary {
	if p == nil {
		return nil
	}
	return &L7Summary{Protocol: p.Protocol, Transactions: p.Transactions, Errors: p.Errors, Partial: p.Partial}
}

func flowFromPB(p *pb.Flow) (Flow, error) {
	f := Flow{
		Host: p.Host, NIC: p.Nic, IfIndex: int(p.Ifindex), Netns: p.Netns,
		Start: fromNanos(p.StartNs), End: fromNanos(p.EndNs), Transport: Transport(p.Transport),
		ClientToServer: countsFromPB(p.ClientToServer), ServerToClient: countsFromPB(p.ServerToClient),
		TCPFlags: TCPFlags(p.TcpFlags), RTT: time.Duration(p.RttNs), Retransmits: p.Retransmits,
		CommunityID: p.CommunityId, Subscriptions: p.Subscriptions, Final: p.Final, EndReason: p.EndReason,
		L7: l7SummaryFromPB(p.L7),
	}
	if p.Transport > 255 {
		return f, fmt.Errorf("transport %d out of range", p.Transport)
	}
	var err error
	if f.Client, err = endpointFromPB(p.Client); err != nil {
		return f, fmt.Errorf("flow client: %w", err)
	}
	if f.Server, err = endpointFromPB(p.Server); err != nil {
		return f, fmt.Errorf("flow server: %w", err)
	}
	if len(p.Vlan) > 0 {
		f.VLAN = make([]uint16, len(p.Vlan))
		for i, v := range p.Vlan {
			f.VLAN[i] = uint16(v)
		}
	}
	if len(p.ClientMac) > 0 {
		f.ClientMAC = net.HardwareAddr(p.ClientMac)
	}
	if len(p.ServerMac) > 0 {
		f.ServerMAC = net.HardwareAddr(p.ServerMac)
	}
	return f, nil
}

func eventToPB(e *Event) *pb.Event {
	return &pb.Event{
		Kind: e.Kind, TimeNs: nanos(e.Time), Host: e.Host, Nic: e.NIC, Transport: uint32(e.Transport),
		Client: endpointToPB(e.Client), Server: endpointToPB(e.Server), CommunityId: e.CommunityID,
		Subscriptions: e.Subscriptions, L3Frame: e.L3Frame, L4Frame: e.L4Frame, L7Frame: e.L7Frame,
	}
}

func eventFromPB(p *pb.Event) (Event, error) {
	e := Event{
		Kind: p.Kind, Time: fromNanos(p.TimeNs), Host: p.Host, NIC: p.Nic, Transport: Transport(p.Transport),
		CommunityID: p.CommunityId, Subscriptions: p.Subscriptions,
		L3Frame: p.L3Frame, L4Frame: p.L4Frame, L7Frame: p.L7Frame,
	}
	var err error
	if e.Client, err = endpointFromPB(p.Client); err != nil {
		return e, fmt.Errorf("event client: %w", err)
	}
	if e.Server, err = endpointFromPB(p.Server); err != nil {
		return e, fmt.Errorf("event server: %w", err)
	}
	return e, nil
}

func l7ToPB(r *L7) *pb.L7 {
	return &pb.L7{
		Protocol: r.Protocol, Method: r.Method, Host: r.Host, Path: r.Path, Status: int32(r.Status),
		RequestBytes: r.RequestBytes, ResponseBytes: r.ResponseBytes, LatencyNs: int64(r.Latency),
		TimeNs: nanos(r.Time), Transport: uint32(r.Transport), Nic: r.NIC,
		Client: endpointToPB(r.Client), Server: endpointToPB(r.Server), CommunityId: r.CommunityID,
		Partial: r.Partial, Error: r.Error, Attributes: r.Attributes, Subscriptions: r.Subscriptions,
		Flags: r.Flags, Version: r.Version, UserAgent: r.UserAgent, ContentType: r.ContentType,
		Query: r.Query, Qtype: r.QType, Rcode: r.RCode, Answers: r.Answers,
	}
}

func l7FromPB(p *pb.L7) (L7, error) {
	r := L7{
		Protocol: p.Protocol, Method: p.Method, Host: p.Host, Path: p.Path, Status: int(p.Status),
		RequestBytes: p.RequestBytes, ResponseBytes: p.ResponseBytes, Latency: time.Duration(p.LatencyNs),
		Time: fromNanos(p.TimeNs), Transport: Transport(p.Transport), NIC: p.Nic, CommunityID: p.CommunityId,
		Partial: p.Partial, Error: p.Error, Attributes: p.Attributes, Subscriptions: p.Subscriptions,
		Flags: p.Flags, Version: p.Version, UserAgent: p.UserAgent, ContentType: p.ContentType,
		Query: p.Query, QType: p.Qtype, RCode: p.Rcode, Answers: p.Answers,
	}
	var err error
	if r.Client, err = endpointFromPB(p.Client); err != nil {
		return r, fmt.Errorf("l7 client: %w", err)
	}
	if r.Server, err = endpointFromPB(p.Server); err != nil {
		return r, fmt.Errorf("l7 server: %w", err)
	}
	return r, nil
}

func batchToPB(b *Batch) (*pb.Batch, error) {
	out := &pb.Batch{
		Flows:  make([]*pb.Flow, len(b.Flows)),
		Events: make([]*pb.Event, len(b.Events)),
		L7:     make([]*pb.L7, len(b.L7)),
		Stats:  make([]*pb.Stats, len(b.Stats)),
	}
	for i := range b.Flows {
		out.Flows[i] = flowToPB(&b.Flows[i])
	}
	for i := range b.Events {
		out.Events[i] = eventToPB(&b.Events[i])
	}
	if len(b.Samples) > 0 {
		out.Samples, _ = samplesToPB(b.Samples)
	}
	for i := range b.L7 {
		out.L7[i] = l7ToPB(&b.L7[i])
	}
	for i, s := range b.Stats {
		out.Stats[i] = &pb.Stats{Source: s.Source, TimeNs: nanos(s.Time), Counters: s.Counters}
	}
	if b.Inventory != nil {
		raw, err := json.Marshal(b.Inventory)
		if err != nil {
			return nil, fmt.Errorf("encoding inventory: %w", err)
		}
		out.InventoryJson = raw
	}
	return out, nil
}

// batchFromPB converts a received batch. A record that does not convert makes the whole batch an
// error: the peer is broken, and guessing would hide it.
func batchFromPB(p *pb.Batch) (*Batch, error) {
	b := &Batch{}
	if n := len(p.Flows); n > 0 {
		b.Flows = make([]Flow, n)
		for i, f := range p.Flows {
			var err error
			if b.Flows[i], err = flowFromPB(f); err != nil {
				return nil, fmt.Errorf("flow %d: %w", i, err)
			}
		}
	}
	if n := len(p.Events); n > 0 {
		b.Events = make([]Event, n)
		for i, e := range p.Events {
			var err error
			if b.Events[i], err = eventFromPB(e); err != nil {
				return nil, fmt.Errorf("event %d: %w", i, err)
			}
		}
	}
	if p.Samples != nil {
		var err error
		if b.Samples, _, err = samplesFromPB(p.Samples); err != nil {
			return nil, fmt.Errorf("samples: %w", err)
		}
	}
	if n := len(p.L7); n > 0 {
		b.L7 = make([]L7, n)
		for i, r := range p.L7 {
			var err error
			if b.L7[i], err = l7FromPB(r); err != nil {
				return nil, fmt.Errorf("l7 record %d: %w", i, err)
			}
		}
	}
	for _, s := range p.Stats {
		b.Stats = append(b.Stats, Stats{Source: s.Source, Time: fromNanos(s.TimeNs), Counters: s.Counters})
	}
	if len(p.InventoryJson) > 0 {
		b.Inventory = &Inventory{}
		if err := json.Unmarshal(p.InventoryJson, b.Inventory); err != nil {
			return nil, fmt.Errorf("decoding inventory: %w", err)
		}
	}
	return b, nil
}

func infoToPB(i Info) *pb.PluginInfo {
	out := &pb.PluginInfo{Kind: string(i.Kind), Name: i.Name, Version: i.Version, Protocols: i.Protocols,
		Capabilities: i.Capabilities}
	for _, d := range i.Detect {
		pd := &pb.Detect{Protocol: d.Protocol, ClientPattern: d.ClientPattern, ServerPattern: d.ServerPattern}
		for _, p := range d.Ports {
			pd.Ports = append(pd.Ports, uint32(p))
		}
		for _, t := range d.Transports {
			pd.Transports = append(pd.Transports, uint32(t))
		}
		out.Detect = append(out.Detect, pd)
	}
	return out
}

func infoFromPB(p *pb.PluginInfo) Info {
	out := Info{Kind: Kind(p.Kind), Name: p.Name, Version: p.Version, Protocols: p.Protocols,
		Capabilities: p.Capabilities}
	for _, pd := range p.Detect {
		d := Detect{Protocol: pd.Protocol, ClientPattern: pd.ClientPattern, ServerPattern: pd.ServerPattern}
		for _, port := range pd.Ports {
			if port <= 65535 {
				d.Ports = append(d.Ports, uint16(port))
			}
		}
		for _, t := range pd.Transports {
			if t <= 255 {
				d.Transports = append(d.Transports, Transport(t))
			}
		}
		out.Detect = append(out.Detect, d)
	}
	return out
}

func healthToPB(h Health) *pb.HealthStatus {
	return &pb.HealthStatus{Status: string(h.Status), Message: h.Message, Counters: h.Counters}
}

func healthFromPB(p *pb.HealthStatus) Health {
	return Health{Status: HealthStatus(p.Status), Message: p.Message, Counters: p.Counters}
}

func subsToJSON(subs []Subscription) ([]byte, error) {
	raw, err := MarshalSubscriptions(subs)
	if err != nil {
		return nil, fmt.Errorf("encoding subscriptions: %w", err)
	}
	return raw, nil
}

// subsFromJSON re-parses the set on the plugin's side: a plugin never trusts that what reached it
// was validated.
func subsFromJSON(raw []byte) ([]Subscription, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("decoding subscriptions: %w", err)
	}
	if len(items) == 0 {
		return []Subscription{}, nil
	}
	return ParseSubscriptions(raw)
}

func captureConfigToPB(c CaptureConfig) (*pb.CaptureConfig, error) {
	subs, err := subsToJSON(c.Subscriptions)
	if err != nil {
		return nil, err
	}
	return &pb.CaptureConfig{
		Host: c.Host, Interfaces: c.Interfaces, ExcludeInterfaces: c.ExcludeInterfaces, Files: c.Files,
		SubscriptionsJson: subs, IdleTimeoutNs: int64(c.IdleTimeout), ActiveTimeoutNs: int64(c.ActiveTimeout),
		FlushIntervalNs: int64(c.FlushInterval), BatchSize: uint32(c.BatchSize), MaxFlows: uint32(c.MaxFlows),
		SnapLen: uint32(c.SnapLen), OptionsJson: c.Options,
	}, nil
}

func captureConfigFromPB(p *pb.CaptureConfig) (CaptureConfig, error) {
	subs, err := subsFromJSON(p.SubscriptionsJson)
	if err != nil {
		return CaptureConfig{}, err
	}
	return CaptureConfig{
		Host: p.Host, Interfaces: p.Interfaces, ExcludeInterfaces: p.ExcludeInterfaces, Files: p.Files,
		Subscriptions: subs, IdleTimeout: time.Duration(p.IdleTimeoutNs), ActiveTimeout: time.Duration(p.ActiveTimeoutNs),
		FlushInterval: time.Duration(p.FlushIntervalNs), BatchSize: int(p.BatchSize), MaxFlows: int(p.MaxFlows),
		SnapLen: int(p.SnapLen), Options: p.OptionsJson,
	}, nil
}
