package sdk

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// The JSON Lines schema of records (sink-stdout, quanyu replay). Every line is an object with a
// "type": "flow", "event", "l7", "stats" or "inventory". Times are RFC 3339 with nanoseconds in
// UTC, durations are whole microseconds, addresses are text.

type endpointJSON struct {
	Addr string `json:"addr"`
	Port uint16 `json:"port"`
}

func endpointOut(e Endpoint) endpointJSON {
	if !e.Addr.IsValid() {
		return endpointJSON{Port: e.Port}
	}
	return endpointJSON{Addr: e.Addr.String(), Port: e.Port}
}

func (e endpointJSON) in() (Endpoint, error) {
	if e.Addr == "" {
		return Endpoint{Port: e.Port}, nil
	}
	a, err := netip.ParseAddr(e.Addr)
	if err != nil {
		return Endpoint{}, fmt.Errorf("address %q: %w", e.Addr, err)
	}
	return Endpoint{Addr: a, Port: e.Port}, nil
}

type countsJSON struct {
	Packets uint64 `json:"packets"`
	IPBytes uint64 `json:"ip_bytes"`
}

type flowJSON struct {
	Type           string       `json:"type"`
	Host           string       `json:"host"`
	NIC            string       `json:"nic"`
	Netns          string       `json:"netns"`
	Start          string       `json:"start"`
	End            string       `json:"end"`
	Transport      string       `json:"transport"`
	Client         endpointJSON `json:"client"`
	Server         endpointJSON `json:"server"`
	ClientToServer countsJSON   `json:"client_to_server"`
	ServerToClient countsJSON   `json:"server_to_client"`
	TCPFlags       []string     `json:"tcp_flags"`
	RTTMicros      int64        `json:"rtt_us"`
	Retransmits    uint32       `json:"retransmits"`
	VLAN           []uint16     `json:"vlan"`
	ClientMAC      string       `json:"client_mac,omitempty"`
	ServerMAC      string       `json:"server_mac,omitempty"`
	CommunityID    string       `json:"community_id"`
	Subscriptions  []string     `json:"subscriptions"`
	Final          bool         `json:"final"`
	EndReason      string       `json:"end_reason,omitempty"`
	L7             *l7SumJSON   `json:"l7,omitempty"`
}

type l7SumJSON struct {
	Protocol     string `json:"protocol"`
	Transactions uint64 `json:"transactions"`
	Errors       uint64 `json:"errors"`
	Partial      uint64 `json:"partial"`
}

func timeOut(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func timeIn(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func macOut(m net.HardwareAddr) string {
	if len(m) == 0 {
		return ""
	}
	return m.String()
}

func transportIn(s string) (Transport, error) {
	if t, ok := ParseTransport(s); ok {
		return t, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("transport %q", s)
	}
	return Transport(n), nil
}

// MarshalJSON writes a flow record line.
func (f Flow) MarshalJSON() ([]byte, error) {
	vlan := f.VLAN
	if vlan == nil {
		vlan = []uint16{}
	}
	subs := f.Subscriptions
	if subs == nil {
		subs = []string{}
	}
	return json.Marshal(flowJSON{
		Type: "flow", Host: f.Host, NIC: f.NIC, Netns: f.Netns,
		Start: timeOut(f.Start), End: timeOut(f.End), Transport: f.Transport.String(),
		Client: endpointOut(f.Client), Server: endpointOut(f.Server),
		ClientToServer: countsJSON(f.ClientToServer), ServerToClient: countsJSON(f.ServerToClient),
		TCPFlags: f.TCPFlags.Names(), RTTMicros: f.RTT.Microseconds(), Retransmits: f.Retransmits,
		VLAN: vlan, ClientMAC: macOut(f.ClientMAC), ServerMAC: macOut(f.ServerMAC),
		CommunityID: f.CommunityID, Subscriptions: subs, Final: f.Final, EndReason: f.EndReason,
		L7: (*l7SumJSON)(f.L7),
	})
}

// UnmarshalJSON reads a flow record line.
func (f *Flow) UnmarshalJSON(data []byte) error {
	var j flowJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	if j.Type != "flow" {
		return fmt.Errorf("record type %q, want flow", j.Type)
	}
	out := Flow{
		Host: j.Host, NIC: j.NIC, Netns: j.Netns,
		ClientToServer: Counts(j.ClientToServer), ServerToClient: Counts(j.ServerToClient),
		RTT: time.Duration(j.RTTMicros) * time.Microsecond, Retransmits: j.Retransmits,
		CommunityID: j.CommunityID, Subscriptions: j.Subscriptions, Final: j.Final, EndReason: j.EndReason,
		L7: (*L7Summary)(j.L7),
	}
	if len(j.VLAN) > 0 {
		out.VLAN = j.VLAN
	}
	var err error
	if out.Start, err = timeIn(j.Start); err != nil {
		return fmt.Errorf("flow start: %w", err)
	}
	if out.End, err = timeIn(j.End); err != nil {
		return fmt.Errorf("flow end: %w", err)
	}
	if out.Transport, err = transportIn(j.Transport); err != nil {
		return fmt.Errorf("flow: %w", err)
	}
	if out.Client, err = j.Client.in(); err != nil {
		return fmt.Errorf("flow client: %w", err)
	}
	if out.Server, err = j.Server.in(); err != nil {
		return fmt.Errorf("flow server: %w", err)
	}
	var ok bool
	if out.TCPFlags, ok = ParseTCPFlags(j.TCPFlags); !ok {
		return fmt.Errorf("flow tcp_flags %v", j.TCPFlags)
	}
	for _, m := range []struct {
		s   string
		dst *net.HardwareAddr
	}{{j.ClientMAC, &out.ClientMAC}, {j.ServerMAC, &out.ServerMAC}} {
		if m.s == "" {
			continue
		}
		if *m.dst, err = net.ParseMAC(m.s); err != nil {
			return fmt.Errorf("flow mac: %w", err)
		}
	}
	*f = out
	return nil
}

type eventJSON struct {
	Type          string       `json:"type"`
	Kind          string       `json:"kind"`
	Time          string       `json:"time"`
	Host          string       `json:"host"`
	NIC           string       `json:"nic"`
	Transport     string       `json:"transport"`
	Client        endpointJSON `json:"client"`
	Server        endpointJSON `json:"server"`
	CommunityID   string       `json:"community_id"`
	Subscriptions []string     `json:"subscriptions"`
	L3Frame       []byte       `json:"l3_frame,omitempty"`
	L4Frame       []byte       `json:"l4_frame,omitempty"`
	L7Frame       []byte       `json:"l7_frame,omitempty"`
}

// MarshalJSON writes an event record line; frames are base64.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(eventJSON{
		Type: "event", Kind: e.Kind, Time: timeOut(e.Time), Host: e.Host, NIC: e.NIC,
		Transport: e.Transport.String(), Client: endpointOut(e.Client), Server: endpointOut(e.Server),
		CommunityID: e.CommunityID, Subscriptions: e.Subscriptions,
		L3Frame: e.L3Frame, L4Frame: e.L4Frame, L7Frame: e.L7Frame,
	})
}

// UnmarshalJSON reads an event record line, as MarshalJSON writes it.
func (e *Event) UnmarshalJSON(data []byte) error {
	var j eventJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	if j.Type != "event" {
		return fmt.Errorf("record type %q, want event", j.Type)
	}
	out := Event{Kind: j.Kind, Host: j.Host, NIC: j.NIC, CommunityID: j.CommunityID, Subscriptions: j.Subscriptions,
		L3Frame: j.L3Frame, L4Frame: j.L4Frame, L7Frame: j.L7Frame}
	var err error
	if out.Time, err = timeIn(j.Time); err != nil {
		return fmt.Errorf("event time: %w", err)
	}
	if out.Transport, err = transportIn(j.Transport); err != nil {
		return fmt.Errorf("event: %w", err)
	}
	if out.Client, err = j.Client.in(); err != nil {
		return fmt.Errorf("event client: %w", err)
	}
	if out.Server, err = j.Server.in(); err != nil {
		return fmt.Errorf("event server: %w", err)
	}
	*e = out
	return nil
}

type l7JSON struct {
	Type          string            `json:"type"`
	Protocol      string            `json:"protocol"`
	Time          string            `json:"time"`
	NIC           string            `json:"nic,omitempty"`
	Method        string            `json:"method,omitempty"`
	Host          string            `json:"host,omitempty"`
	Path          string            `json:"path,omitempty"`
	Version       string            `json:"version,omitempty"`
	Status        int               `json:"status,omitempty"`
	UserAgent     string            `json:"user_agent,omitempty"`
	ContentType   string            `json:"content_type,omitempty"`
	Query         string            `json:"query,omitempty"`
	QType         string            `json:"qtype,omitempty"`
	RCode         string            `json:"rcode,omitempty"`
	Answers       []string          `json:"answers,omitempty"`
	RequestBytes  uint64            `json:"request_bytes"`
	ResponseBytes uint64            `json:"response_bytes"`
	LatencyMicros int64             `json:"latency_us"`
	Transport     string            `json:"transport"`
	Client        endpointJSON      `json:"client"`
	Server        endpointJSON      `json:"server"`
	CommunityID   string            `json:"community_id"`
	Partial       bool              `json:"partial"`
	Flags         []string          `json:"flags,omitempty"`
	Error         string            `json:"error,omitempty"`
	Attributes    map[string]string `json:"attributes,omitempty"`
	Subscriptions []string          `json:"subscriptions"`
}

// MarshalJSON writes an L7 record line. Latency is in whole microseconds (latency_us).
func (r L7) MarshalJSON() ([]byte, error) {
	subs := r.Subscriptions
	if subs == nil {
		subs = []string{}
	}
	return json.Marshal(l7JSON{
		Type: "l7", Protocol: r.Protocol, Time: timeOut(r.Time), NIC: r.NIC, Method: r.Method, Host: r.Host,
		Path: r.Path, Version: r.Version, Status: r.Status, UserAgent: r.UserAgent, ContentType: r.ContentType,
		Query: r.Query, QType: r.QType, RCode: r.RCode, Answers: r.Answers,
		RequestBytes: r.RequestBytes, ResponseBytes: r.ResponseBytes,
		LatencyMicros: r.Latency.Microseconds(), Transport: r.Transport.String(),
		Client: endpointOut(r.Client), Server: endpointOut(r.Server), CommunityID: r.CommunityID,
		Partial: r.Partial, Flags: r.Flags, Error: r.Error, Attributes: r.Attributes, Subscriptions: subs,
	})
}

// UnmarshalJSON reads an L7 record line.
func (r *L7) UnmarshalJSON(data []byte) error {
	var j l7JSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	if j.Type != "l7" {
		return fmt.Errorf("record type %q, want l7", j.Type)
	}
	out := L7{
		Protocol: j.Protocol, NIC: j.NIC, Method: j.Method, Host: j.Host, Path: j.Path, Version: j.Version,
		Status: j.Status, UserAgent: j.UserAgent, ContentType: j.ContentType, Query: j.Query, QType: j.QType,
		RCode: j.RCode, Answers: j.Answers, RequestBytes: j.RequestBytes, ResponseBytes: j.ResponseBytes,
		Latency: time.Duration(j.LatencyMicros) * time.Microsecond, CommunityID: j.CommunityID,
		Partial: j.Partial, Flags: j.Flags, Error: j.Error, Attributes: j.Attributes, Subscriptions: j.Subscriptions,
	}
	var err error
	if out.Time, err = timeIn(j.Time); err != nil {
		return fmt.Errorf("l7 time: %w", err)
	}
	if out.Transport, err = transportIn(j.Transport); err != nil {
		return fmt.Errorf("l7: %w", err)
	}
	if out.Client, err = j.Client.in(); err != nil {
		return fmt.Errorf("l7 client: %w", err)
	}
	if out.Server, err = j.Server.in(); err != nil {
		return fmt.Errorf("l7 server: %w", err)
	}
	*r = out
	return nil
}

type statsJSON struct {
	Type     string            `json:"type"`
	Source   string            `json:"source"`
	Time     string            `json:"time"`
	Counters map[string]uint64 `json:"counters"`
}

// MarshalJSON writes a stats record line.
func (s Stats) MarshalJSON() ([]byte, error) {
	c := s.Counters
	if c == nil {
		c = map[string]uint64{}
	}
	return json.Marshal(statsJSON{Type: "stats", Source: s.Source, Time: timeOut(s.Time), Counters: c})
}

// UnmarshalJSON reads a stats record line.
func (s *Stats) UnmarshalJSON(data []byte) error {
	var j statsJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	if j.Type != "stats" {
		return fmt.Errorf("record type %q, want stats", j.Type)
	}
	t, err := timeIn(j.Time)
	if err != nil {
		return fmt.Errorf("stats time: %w", err)
	}
	*s = Stats{Source: j.Source, Time: t, Counters: j.Counters}
	return nil
}

// MarshalInventoryLine writes an inventory record line: the inventory's fields with
// "type":"inventory".
func MarshalInventoryLine(inv *Inventory) ([]byte, error) {
	type alias Inventory // no methods: plain struct encoding
	return json.Marshal(struct {
		Type string `json:"type"`
		*alias
	}{"inventory", (*alias)(inv)})
}

// RecordType reads the "type" of a JSON record line.
func RecordType(line []byte) (string, error) {
	var probe struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(line, &probe); err != nil {
		return "", err
	}
	return probe.Type, nil
}
