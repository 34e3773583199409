package otlpschema

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/quanyu/quanyu/sdk"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// Batch is what one OTLP resource holds, in Quanyu's records.
type Batch struct {
	Agent     string // AttrAgentID of the resource; "" from senders other than sink-otlp
	Host      string // host.name of the resource
	Flows     []sdk.Flow
	Events    []sdk.Event
	L7        []sdk.L7
	Inventory []sdk.Inventory
}

func (b *Batch) empty() bool {
	return len(b.Flows) == 0 && len(b.Events) == 0 && len(b.L7) == 0 && len(b.Inventory) == 0
}

// rejects counts the records that did not decode and keeps the first reason.
type rejects struct {
	n   int64
	err error
}

func (r *rejects) add(where string, err error) {
	r.n++
	if r.err == nil {
		r.err = fmt.Errorf("%s: %w", where, err)
	}
}

// DecodeLogs reads the flow records, flow events, L7 records and inventories of an OTLP logs
// request. Log records that are not Quanyu's (another event name, none) are skipped and not
// counted as rejected. A Quanyu record that does not decode (an attribute of the wrong type, an
// address that does not parse) is rejected: rejected counts them and err describes the first,
// for the OTLP partial-success answer; the rest of the request is still read.
func DecodeLogs(req *collogspb.ExportLogsServiceRequest) (out []Batch, rejected int64, err error) {
	var rej rejects
	for ri, rl := range req.GetResourceLogs() {
		b := resourceBatch(rl.GetResource())
		for si, sl := range rl.GetScopeLogs() {
			for li, lr := range sl.GetLogRecords() {
				if err := decodeLogRecord(&b, lr); err != nil {
					rej.add(fmt.Sprintf("resource %d, scope %d, log record %d", ri, si, li), err)
				}
			}
		}
		if !b.empty() {
			out = append(out, b)
		}
	}
	return out, rej.n, rej.err
}

// DecodeTraces reads HTTP L7 records from the server spans of an OTLP traces request: those
// sink-otlp writes, and those of any instrumented HTTP server that carries the semantic
// conventions' http.request.method (client and server addresses from client.address /
// server.address / network.peer.address where present). Other spans are skipped.
//
// A span from another sender has Protocol HTTP, Transport TCP unless network.transport says
// otherwise, Latency end − start, and no Error when its error.type only restates the status
// code (as the conventions have it for 5xx).
func DecodeTraces(req *coltracepb.ExportTraceServiceRequest) (out []Batch, rejected int64, err error) {
	var rej rejects
	for ri, rs := range req.GetResourceSpans() {
		b := resourceBatch(rs.GetResource())
		for si, ss := range rs.GetScopeSpans() {
			for pi, sp := range ss.GetSpans() {
				if sp.GetKind() != tracepb.Span_SPAN_KIND_SERVER || !hasKey(sp.GetAttributes(), AttrHTTPMethod) {
					continue
				}
				r, err := decodeSpan(sp)
				if err != nil {
					rej.add(fmt.Sprintf("resource %d, scope %d, span %d", ri, si, pi), err)
					continue
				}
				b.L7 = append(b.L7, r)
			}
		}
		if !b.empty() {
			out = append(out, b)
		}
	}
	return out, rej.n, rej.err
}

// resourceBatch starts a batch from a resource's attributes. A resource attribute of the wrong
// type is treated as absent: it names the sender, not a record, and rejecting every record for
// it would lose data a reader can still use.
func resourceBatch(res *resourcepb.Resource) Batch {
	var b Batch
	for _, kv := range res.GetAttributes() {
		s, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_StringValue)
		if !ok {
			continue
		}
		switch kv.GetKey() {
		case AttrAgentID:
			b.Agent = s.StringValue
		case ResourceHostName:
			b.Host = s.StringValue
		}
	}
	return b
}

func hasKey(kvs []*commonpb.KeyValue, key string) bool {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return true
		}
	}
	return false
}

// eventName is the record's event_name, else its event.name attribute (senders that predate
// the field).
func eventName(lr *logspb.LogRecord) string {
	if n := lr.GetEventName(); n != "" {
		return n
	}
	for _, kv := range lr.GetAttributes() {
		if kv.GetKey() == AttrEventName {
			if s, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_StringValue); ok {
				return s.StringValue
			}
		}
	}
	return ""
}

func decodeLogRecord(b *Batch, lr *logspb.LogRecord) error {
	switch eventName(lr) {
	case EventFlow:
		f, err := decodeFlow(lr, b.Host)
		if err != nil {
			return fmt.Errorf("%s: %w", EventFlow, err)
		}
		b.Flows = append(b.Flows, f)
	case EventFlowEvent:
		e, err := decodeEvent(lr, b.Host)
		if err != nil {
			return fmt.Errorf("%s: %w", EventFlowEvent, err)
		}
		b.Events = append(b.Events, e)
	case EventL7:
		r, err := decodeL7Log(lr)
		if err != nil {
			return fmt.Errorf("%s: %w", EventL7, err)
		}
		b.L7 = append(b.L7, r)
	case EventInventory:
		inv, err := decodeInventory(lr)
		if err != nil {
			return fmt.Errorf("%s: %w", EventInventory, err)
		}
		b.Inventory = append(b.Inventory, inv)
	}
	return nil
}

// unixTime reads an OTLP fixed64 time; 0 is the zero time.
func unixTime(n uint64) (time.Time, error) {
	if n == 0 {
		return time.Time{}, nil
	}
	if n > math.MaxInt64 {
		return time.Time{}, fmt.Errorf("time %d out of range", n)
	}
	return time.Unix(0, int64(n)).UTC(), nil
}

func decodeFlow(lr *logspb.LogRecord, host string) (sdk.Flow, error) {
	f := sdk.Flow{Host: host}
	var err error
	if f.End, err = unixTime(lr.GetTimeUnixNano()); err != nil {
		return f, fmt.Errorf("time_unix_nano: %w", err)
	}
	var l7 sdk.L7Summary
	var hasL7 bool
	var ep endpoints
	for _, kv := range lr.GetAttributes() {
		v := kv.GetValue()
		var n uint64
		switch k := kv.GetKey(); k {
		case ResourceHostName:
			f.Host, err = str(v)
		case AttrInterfaceName:
			f.NIC, err = str(v)
		case AttrInterfaceIdx:
			n, err = uintIn(v, math.MaxInt32)
			f.IfIndex = int(n)
		case AttrNetns:
			f.Netns, err = str(v)
		case AttrNetworkTransport:
			f.Transport, err = transport(v)
		case AttrSourceMAC:
			f.ClientMAC, err = mac(v)
		case AttrDestinationMAC:
			f.ServerMAC, err = mac(v)
		case AttrVLAN:
			f.VLAN, err = vlans(v)
		case AttrCommunityID:
			f.CommunityID, err = str(v)
		case AttrSubscriptions:
			f.Subscriptions, err = strs(v)
		case AttrFlowStart:
			f.Start, err = unixNanoAttr(v)
		case AttrPacketsToServer:
			f.ClientToServer.Packets, err = uintIn(v, math.MaxInt64)
		case AttrBytesToServer:
			f.ClientToServer.IPBytes, err = uintIn(v, math.MaxInt64)
		case AttrPacketsToClient:
			f.ServerToClient.Packets, err = uintIn(v, math.MaxInt64)
		case AttrBytesToClient:
			f.ServerToClient.IPBytes, err = uintIn(v, math.MaxInt64)
		case AttrTCPFlags:
			n, err = uintIn(v, math.MaxUint8)
			f.TCPFlags = sdk.TCPFlags(n)
		case AttrRTT:
			n, err = uintIn(v, math.MaxInt64)
			f.RTT = time.Duration(n)
		case AttrRetransmits:
			n, err = uintIn(v, math.MaxUint32)
			f.Retransmits = uint32(n)
		case AttrFinal:
			f.Final, err = boolean(v)
		case AttrEndReason:
			f.EndReason, err = str(v)
		case AttrFlowL7Protocol:
			hasL7 = true
			l7.Protocol, err = str(v)
		case AttrFlowL7Transactions:
			hasL7 = true
			l7.Transactions, err = uintIn(v, math.MaxInt64)
		case AttrFlowL7Errors:
			hasL7 = true
			l7.Errors, err = uintIn(v, math.MaxInt64)
		case AttrFlowL7Partial:
			hasL7 = true
			l7.Partial, err = uintIn(v, math.MaxInt64)
		default:
			err = ep.read(k, v)
		}
		if err != nil {
			return f, fmt.Errorf("attribute %s: %w", kv.GetKey(), err)
		}
	}
	if f.Client, f.Server, err = ep.resolve(false); err != nil {
		return f, err
	}
	if hasL7 {
		f.L7 = &l7
	}
	return f, nil
}

func decodeEvent(lr *logspb.LogRecord, host string) (sdk.Event, error) {
	e := sdk.Event{Host: host}
	var err error
	if e.Time, err = unixTime(lr.GetTimeUnixNano()); err != nil {
		return e, fmt.Errorf("time_unix_nano: %w", err)
	}
	var ep endpoints
	for _, kv := range lr.GetAttributes() {
		v := kv.GetValue()
		switch k := kv.GetKey(); k {
		case ResourceHostName:
			e.Host, err = str(v)
		case AttrEventKind:
			e.Kind, err = str(v)
		case AttrInterfaceName:
			e.NIC, err = str(v)
		case AttrNetworkTransport:
			e.Transport, err = transport(v)
		case AttrCommunityID:
			e.CommunityID, err = str(v)
		case AttrSubscriptions:
			e.Subscriptions, err = strs(v)
		case AttrL3Frame:
			e.L3Frame, err = byteString(v)
		case AttrL4Frame:
			e.L4Frame, err = byteString(v)
		case AttrL7Frame:
			e.L7Frame, err = byteString(v)
		default:
			err = ep.read(k, v)
		}
		if err != nil {
			return e, fmt.Errorf("attribute %s: %w", kv.GetKey(), err)
		}
	}
	if e.Client, e.Server, err = ep.resolve(false); err != nil {
		return e, err
	}
	return e, nil
}

func decodeInventory(lr *logspb.LogRecord) (sdk.Inventory, error) {
	var inv sdk.Inventory
	body, ok := lr.GetBody().GetValue().(*commonpb.AnyValue_StringValue)
	if !ok {
		return inv, fmt.Errorf("body: want a JSON string, got %s", typeName(lr.GetBody()))
	}
	if err := json.Unmarshal([]byte(body.StringValue), &inv); err != nil {
		return inv, fmt.Errorf("body: %w", err)
	}
	return inv, nil
}

func decodeL7Log(lr *logspb.LogRecord) (sdk.L7, error) {
	var l l7Reader
	var err error
	if l.r.Time, err = unixTime(lr.GetTimeUnixNano()); err != nil {
		return l.r, fmt.Errorf("time_unix_nano: %w", err)
	}
	for _, kv := range lr.GetAttributes() {
		if err := l.read(kv.GetKey(), kv.GetValue()); err != nil {
			return l.r, fmt.Errorf("attribute %s: %w", kv.GetKey(), err)
		}
	}
	return l.finish(false)
}

func decodeSpan(sp *tracepb.Span) (sdk.L7, error) {
	var l l7Reader
	var err error
	if l.r.Time, err = unixTime(sp.GetStartTimeUnixNano()); err != nil {
		return l.r, fmt.Errorf("start_time_unix_nano: %w", err)
	}
	end, err := unixTime(sp.GetEndTimeUnixNano())
	if err != nil {
		return l.r, fmt.Errorf("end_time_unix_nano: %w", err)
	}
	for _, kv := range sp.GetAttributes() {
		if err := l.read(kv.GetKey(), kv.GetValue()); err != nil {
			return l.r, fmt.Errorf("attribute %s: %w", kv.GetKey(), err)
		}
	}
	if !l.hasLatency && !l.r.Time.IsZero() && end.After(l.r.Time) {
		l.r.Latency = end.Sub(l.r.Time)
	}
	return l.finish(true)
}

// l7Reader gathers an L7 record's attributes; finish resolves the ones that more than one
// attribute may carry (addresses, host, method).
type l7Reader struct {
	r  sdk.L7
	ep endpoints

	method, methodOriginal, l7Method string
	hasHost, hasProtocol             bool
	hasTransport, hasLatency         bool
}

func (l *l7Reader) read(k string, v *commonpb.AnyValue) error {
	var err error
	var n uint64
	switch k {
	case AttrL7Protocol:
		l.hasProtocol = true
		l.r.Protocol, err = str(v)
	case AttrHTTPMethod:
		l.method, err = str(v)
	case AttrHTTPMethodOriginal:
		l.methodOriginal, err = str(v)
	case AttrL7Method:
		l.l7Method, err = str(v)
	case AttrL7Host:
		l.hasHost = true
		l.r.Host, err = str(v)
	case AttrURLPath:
		l.r.Path, err = str(v)
	case AttrHTTPStatus:
		n, err = uintIn(v, 999)
		l.r.Status = int(n)
	case AttrRequestBytes:
		l.r.RequestBytes, err = uintIn(v, math.MaxInt64)
	case AttrResponseBytes:
		l.r.ResponseBytes, err = uintIn(v, math.MaxInt64)
	case AttrL7Latency:
		l.hasLatency = true
		n, err = uintIn(v, math.MaxInt64)
		l.r.Latency = time.Duration(n)
	case AttrNetworkTransport:
		l.hasTransport = true
		l.r.Transport, err = transport(v)
	case AttrInterfaceName:
		l.r.NIC, err = str(v)
	case AttrCommunityID:
		l.r.CommunityID, err = str(v)
	case AttrL7Partial:
		l.r.Partial, err = boolean(v)
	case AttrL7Error:
		l.r.Error, err = str(v)
	case AttrL7Flags:
		l.r.Flags, err = strs(v)
	case AttrProtocolVersion:
		l.r.Version, err = str(v)
	case AttrUserAgent:
		l.r.UserAgent, err = str(v)
	case AttrContentType:
		l.r.ContentType, err = str(v)
	case AttrDNSQuery:
		l.r.Query, err = str(v)
	case AttrDNSQType:
		l.r.QType, err = str(v)
	case AttrDNSRCode:
		l.r.RCode, err = str(v)
	case AttrDNSAnswers:
		l.r.Answers, err = strs(v)
	case AttrSubscriptions:
		l.r.Subscriptions, err = strs(v)
	default:
		if key, ok := strings.CutPrefix(k, AttrL7Attributes+"."); ok {
			var s string
			if s, err = str(v); err == nil {
				if l.r.Attributes == nil {
					l.r.Attributes = map[string]string{}
				}
				l.r.Attributes[key] = s
			}
			break
		}
		err = l.ep.read(k, v)
	}
	return err
}

func (l *l7Reader) finish(span bool) (sdk.L7, error) {
	var err error
	if l.r.Client, l.r.Server, err = l.ep.resolve(span); err != nil {
		return l.r, err
	}
	if !l.hasHost && span && l.ep.server.set {
		// server.address is the Host header unless it is the server's address.
		if _, err := netip.ParseAddr(l.ep.server.addr); err != nil {
			l.r.Host = l.ep.server.addr
		}
	}
	switch {
	case !span && l.l7Method != "":
		l.r.Method = l.l7Method
	case l.method == "_OTHER" && l.methodOriginal != "":
		l.r.Method = l.methodOriginal
	default:
		l.r.Method = l.method
	}
	if span && !l.hasProtocol {
		l.r.Protocol = "HTTP"
		if l.r.Error != "" && l.r.Error == strconv.Itoa(l.r.Status) {
			l.r.Error = ""
		}
	}
	if span && !l.hasTransport {
		l.r.Transport = sdk.TransportTCP
	}
	return l.r, nil
}

// endpoint is one address attribute and its port, as read.
type endpoint struct {
	addr    string
	port    uint64
	set     bool // the address attribute was present
	hasPort bool
}

// endpoints holds every attribute that may name the client or the server: source.* and
// destination.* (sink-otlp's, always IPs), client.* and server.* (semconv; server.address may be
// a host name), network.peer.* and network.local.* (semconv, IPs).
type endpoints struct {
	source, destination, client, server, peer, local endpoint
}

func (e *endpoints) read(k string, v *commonpb.AnyValue) error {
	var dst *endpoint
	port := false
	switch k {
	case AttrSourceAddress:
		dst = &e.source
	case AttrSourcePort:
		dst, port = &e.source, true
	case AttrDestinationAddress:
		dst = &e.destination
	case AttrDestinationPort:
		dst, port = &e.destination, true
	case AttrClientAddress:
		dst = &e.client
	case AttrClientPort:
		dst, port = &e.client, true
	case AttrServerAddress:
		dst = &e.server
	case AttrServerPort:
		dst, port = &e.server, true
	case AttrNetworkPeerAddress:
		dst = &e.peer
	case AttrNetworkPeerPort:
		dst, port = &e.peer, true
	case AttrNetworkLocalAddress:
		dst = &e.local
	case AttrNetworkLocalPort:
		dst, port = &e.local, true
	default:
		return nil // not ours: other senders' attributes are ignored
	}
	var err error
	if port {
		dst.port, err = uintIn(v, math.MaxUint16)
		dst.hasPort = true
	} else {
		dst.addr, err = str(v)
		dst.set = true
	}
	return err
}

// resolve picks the client and server: source/destination first, then (spans) client/server
// where they are addresses, then network.peer/network.local.
func (e *endpoints) resolve(span bool) (client, server sdk.Endpoint, err error) {
	cands := func(own, semconv, net endpoint) []endpoint {
		if !span {
			return []endpoint{own}
		}
		return []endpoint{own, semconv, net}
	}
	pick := func(name string, cs []endpoint) (sdk.Endpoint, error) {
		var out sdk.Endpoint
		gotAddr, gotPort := false, false
		for i, c := range cs {
			if c.set && !gotAddr && c.addr != "" {
				a, err := netip.ParseAddr(c.addr)
				switch {
				case err == nil:
					out.Addr, gotAddr = a, true
				case i == 1:
					// client.address and server.address may be names: not an error.
				default:
					return out, fmt.Errorf("%s address %q: %w", name, c.addr, err)
				}
			}
			if c.hasPort && !gotPort {
				out.Port, gotPort = uint16(c.port), true
			}
		}
		return out, nil
	}
	if client, err = pick("client", cands(e.source, e.client, e.peer)); err != nil {
		return client, server, err
	}
	server, err = pick("server", cands(e.destination, e.server, e.local))
	return client, server, err
}

// Value readers: each says what it wanted when the type is wrong.

var errRange = errors.New("out of range")

func typeName(v *commonpb.AnyValue) string {
	switch v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return "a string"
	case *commonpb.AnyValue_BoolValue:
		return "a bool"
	case *commonpb.AnyValue_IntValue:
		return "an int"
	case *commonpb.AnyValue_DoubleValue:
		return "a double"
	case *commonpb.AnyValue_ArrayValue:
		return "an array"
	case *commonpb.AnyValue_KvlistValue:
		return "a map"
	case *commonpb.AnyValue_BytesValue:
		return "bytes"
	}
	return "no value"
}

func str(v *commonpb.AnyValue) (string, error) {
	s, ok := v.GetValue().(*commonpb.AnyValue_StringValue)
	if !ok {
		return "", fmt.Errorf("want a string, got %s", typeName(v))
	}
	return s.StringValue, nil
}

func boolean(v *commonpb.AnyValue) (bool, error) {
	b, ok := v.GetValue().(*commonpb.AnyValue_BoolValue)
	if !ok {
		return false, fmt.Errorf("want a bool, got %s", typeName(v))
	}
	return b.BoolValue, nil
}

func uintIn(v *commonpb.AnyValue, max uint64) (uint64, error) {
	i, ok := v.GetValue().(*commonpb.AnyValue_IntValue)
	if !ok {
		return 0, fmt.Errorf("want an int, got %s", typeName(v))
	}
	if i.IntValue < 0 || uint64(i.IntValue) > max {
		return 0, fmt.Errorf("%d: %w (0 to %d)", i.IntValue, errRange, max)
	}
	return uint64(i.IntValue), nil
}

func byteString(v *commonpb.AnyValue) ([]byte, error) {
	b, ok := v.GetValue().(*commonpb.AnyValue_BytesValue)
	if !ok {
		return nil, fmt.Errorf("want bytes, got %s", typeName(v))
	}
	if len(b.BytesValue) == 0 {
		return nil, nil
	}
	return b.BytesValue, nil
}

func unixNanoAttr(v *commonpb.AnyValue) (time.Time, error) {
	i, ok := v.GetValue().(*commonpb.AnyValue_IntValue)
	if !ok {
		return time.Time{}, fmt.Errorf("want an int, got %s", typeName(v))
	}
	if i.IntValue == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, i.IntValue).UTC(), nil
}

func array(v *commonpb.AnyValue) ([]*commonpb.AnyValue, error) {
	a, ok := v.GetValue().(*commonpb.AnyValue_ArrayValue)
	if !ok {
		return nil, fmt.Errorf("want an array, got %s", typeName(v))
	}
	return a.ArrayValue.GetValues(), nil
}

func strs(v *commonpb.AnyValue) ([]string, error) {
	vs, err := array(v)
	if err != nil || len(vs) == 0 {
		return nil, err
	}
	out := make([]string, len(vs))
	for i, e := range vs {
		if out[i], err = str(e); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
	}
	return out, nil
}

func vlans(v *commonpb.AnyValue) ([]uint16, error) {
	vs, err := array(v)
	if err != nil || len(vs) == 0 {
		return nil, err
	}
	out := make([]uint16, len(vs))
	for i, e := range vs {
		n, err := uintIn(e, math.MaxUint16)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out[i] = uint16(n)
	}
	return out, nil
}

func mac(v *commonpb.AnyValue) (net.HardwareAddr, error) {
	s, err := str(v)
	if err != nil || s == "" {
		return nil, err
	}
	m, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("MAC %q: %w", s, err)
	}
	return m, nil
}

// transport reads network.transport: a name in any case, a protocol number, "quic" (UDP), or
// the non-IP "unix" and "pipe" (no transport).
func transport(v *commonpb.AnyValue) (sdk.Transport, error) {
	s, err := str(v)
	if err != nil {
		return 0, err
	}
	if t, ok := sdk.ParseTransport(s); ok {
		return t, nil
	}
	switch strings.ToLower(s) {
	case "quic":
		return sdk.TransportUDP, nil
	case "unix", "pipe":
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("transport %q is not a name or protocol number", s)
	}
	return sdk.Transport(n), nil
}

// TransportName is how network.transport spells a transport: "tcp", "udp", "icmp", "icmpv6",
// "sctp", else the protocol number.
func TransportName(t sdk.Transport) string {
	switch t {
	case sdk.TransportTCP:
		return "tcp"
	case sdk.TransportUDP:
		return "udp"
	case sdk.TransportICMP:
		return "icmp"
	case sdk.TransportICMPv6:
		return "icmpv6"
	case sdk.TransportSCTP:
		return "sctp"
	}
	return strconv.Itoa(int(t))
}
