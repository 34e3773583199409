package otlpsink

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"

	s "github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/sdk"
)

// The mapping of records to attributes follows internal/otlpschema, whose decoders read them
// back; a change here without one there breaks the round-trip tests.
//
// The mapping is written once, against attrWriter, and has two writers: log records (flows,
// the bulk) are encoded straight into the OTLP protobuf wire format (wire.go), because building
// message structs and marshalling them with protobuf-go cost ~13 µs a flow record
// (bench/RESULTS.md); HTTP L7 records become SDK spans, whose attributes the SDK takes as
// attribute.KeyValue.

// attrWriter receives one record's attributes, in order.
type attrWriter interface {
	putStr(key, v string)
	putInt(key string, v int64)
	putBool(key string, v bool)
	putBytes(key string, v []byte)
	putStrs(key string, v []string)
	putUint16s(key string, v []uint16)
	// putAddr and putMAC write the address's text as a string; they are here so that the log
	// record encoder can write it without making a string of it first.
	putAddr(key string, v netip.Addr)
	putMAC(key string, v net.HardwareAddr)
}

// attrBuilder is the mapping, over whichever writer.
type attrBuilder struct{ attrWriter }

// The following leave out zero values (see otlpschema's encoding rules).

func (b attrBuilder) str(key, v string) {
	if v != "" {
		b.putStr(key, v)
	}
}

func (b attrBuilder) num(key string, v int64) {
	if v != 0 {
		b.putInt(key, v)
	}
}

func (b attrBuilder) strs(key string, v []string) {
	if len(v) > 0 {
		b.putStrs(key, v)
	}
}

func (b attrBuilder) uint16s(key string, v []uint16) {
	if len(v) > 0 {
		b.putUint16s(key, v)
	}
}

// addr leaves out an invalid address (an endpoint without one).
func (b attrBuilder) addr(key string, v netip.Addr) {
	if v.IsValid() {
		b.putAddr(key, v)
	}
}

func (b attrBuilder) mac(key string, v net.HardwareAddr) {
	if len(v) > 0 {
		b.putMAC(key, v)
	}
}

func (b attrBuilder) bytes(key string, v []byte) {
	if len(v) > 0 {
		b.putBytes(key, v)
	}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// timeUnixNano is a record's OTLP time: 0 for the zero time (and, as the SDK has it, for
// times before 1970, which a fixed64 cannot hold).
func timeUnixNano(t time.Time) uint64 {
	return uint64(max(unixNano(t), 0))
}

// addrString is the endpoint's address, "" when it has none.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func networkType(a netip.Addr) string {
	switch {
	case a.Is4() || a.Is4In6():
		return "ipv4"
	case a.Is6():
		return "ipv6"
	}
	return ""
}

// endpoints writes source.* and destination.* (always, ports included) and network.transport.
func (b attrBuilder) endpoints(t sdk.Transport, client, server sdk.Endpoint) {
	b.addr(s.AttrSourceAddress, client.Addr)
	b.putInt(s.AttrSourcePort, int64(client.Port))
	b.addr(s.AttrDestinationAddress, server.Addr)
	b.putInt(s.AttrDestinationPort, int64(server.Port))
	b.putStr(s.AttrNetworkTransport, s.TransportName(t))
	b.str(s.AttrNetworkType, networkType(client.Addr))
}

// hostOverride writes host.name on a record only when it is not the resource's.
func (b attrBuilder) hostOverride(recordHost, resourceHost string) {
	if recordHost != resourceHost {
		b.putStr(s.ResourceHostName, recordHost)
	}
}

func (b attrBuilder) flow(f *sdk.Flow, host string) {
	b.hostOverride(f.Host, host)
	b.str(s.AttrInterfaceName, f.NIC)
	b.num(s.AttrInterfaceIdx, int64(f.IfIndex))
	b.str(s.AttrNetns, f.Netns)
	b.endpoints(f.Transport, f.Client, f.Server)
	b.mac(s.AttrSourceMAC, f.ClientMAC)
	b.mac(s.AttrDestinationMAC, f.ServerMAC)
	b.uint16s(s.AttrVLAN, f.VLAN)
	b.str(s.AttrCommunityID, f.CommunityID)
	b.strs(s.AttrSubscriptions, f.Subscriptions)
	b.num(s.AttrFlowStart, unixNano(f.Start))
	b.putInt(s.AttrPacketsToServer, int64(f.ClientToServer.Packets))
	b.putInt(s.AttrBytesToServer, int64(f.ClientToServer.IPBytes))
	b.putInt(s.AttrPacketsToClient, int64(f.ServerToClient.Packets))
	b.putInt(s.AttrBytesToClient, int64(f.ServerToClient.IPBytes))
	b.putBool(s.AttrFinal, f.Final)
	b.num(s.AttrTCPFlags, int64(f.TCPFlags))
	b.num(s.AttrRTT, int64(f.RTT))
	b.num(s.AttrRetransmits, int64(f.Retransmits))
	b.str(s.AttrEndReason, f.EndReason)
	if f.L7 != nil {
		// The protocol is always written: it is what tells a summary of zeros from none.
		b.putStr(s.AttrFlowL7Protocol, f.L7.Protocol)
		b.num(s.AttrFlowL7Transactions, int64(f.L7.Transactions))
		b.num(s.AttrFlowL7Errors, int64(f.L7.Errors))
		b.num(s.AttrFlowL7Partial, int64(f.L7.Partial))
	}
}

func (b attrBuilder) event(e *sdk.Event, host string) {
	b.hostOverride(e.Host, host)
	b.str(s.AttrEventKind, e.Kind)
	b.str(s.AttrInterfaceName, e.NIC)
	b.endpoints(e.Transport, e.Client, e.Server)
	b.str(s.AttrCommunityID, e.CommunityID)
	b.strs(s.AttrSubscriptions, e.Subscriptions)
	b.bytes(s.AttrL3Frame, e.L3Frame)
	b.bytes(s.AttrL4Frame, e.L4Frame)
	b.bytes(s.AttrL7Frame, e.L7Frame)
}

// l7 writes an L7 record's attributes; span selects the span form (HTTP), else the log record
// form (see otlpschema: how Method and Host travel differs).
func (b attrBuilder) l7(r *sdk.L7, span bool) {
	b.putStr(s.AttrL7Protocol, r.Protocol)
	b.endpoints(r.Transport, r.Client, r.Server)
	if span {
		b.putStr(s.AttrHTTPMethod, r.Method)
		server := r.Host
		if server == "" {
			server = addrString(r.Server.Addr)
		} else if _, err := netip.ParseAddr(r.Host); err == nil {
			b.str(s.AttrL7Host, r.Host)
		}
		b.str(s.AttrServerAddress, server)
		b.putInt(s.AttrServerPort, int64(r.Server.Port))
		b.str(s.AttrClientAddress, addrString(r.Client.Addr))
		b.putInt(s.AttrClientPort, int64(r.Client.Port))
	} else {
		b.str(s.AttrL7Method, r.Method)
		b.str(s.AttrL7Host, r.Host)
	}
	b.str(s.AttrURLPath, r.Path)
	b.num(s.AttrHTTPStatus, int64(r.Status))
	b.num(s.AttrRequestBytes, int64(r.RequestBytes))
	b.num(s.AttrResponseBytes, int64(r.ResponseBytes))
	b.putInt(s.AttrL7Latency, int64(r.Latency))
	b.str(s.AttrInterfaceName, r.NIC)
	b.str(s.AttrCommunityID, r.CommunityID)
	if r.Partial {
		b.putBool(s.AttrL7Partial, true)
	}
	b.str(s.AttrL7Error, r.Error)
	b.strs(s.AttrL7Flags, r.Flags)
	b.str(s.AttrProtocolVersion, r.Version)
	b.str(s.AttrUserAgent, r.UserAgent)
	b.str(s.AttrContentType, r.ContentType)
	b.str(s.AttrDNSQuery, r.Query)
	b.str(s.AttrDNSQType, r.QType)
	b.str(s.AttrDNSRCode, r.RCode)
	b.strs(s.AttrDNSAnswers, r.Answers)
	b.strs(s.AttrSubscriptions, r.Subscriptions)
	if len(r.Attributes) > 0 {
		// Sorted, so the same record always gives the same attribute order.
		keys := make([]string, 0, len(r.Attributes))
		for key := range r.Attributes {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		for _, key := range keys {
			b.putStr(s.AttrL7Attributes+"."+key, r.Attributes[key])
		}
	}
}

// inventoryJSON is the inventory's JSON: sdk.MarshalInventoryLine's fields without its
// "type", which is what encoding/json gives for the plain struct.
func inventoryJSON(inv *sdk.Inventory, log *slog.Logger) []byte {
	raw, err := json.Marshal(inv)
	if err != nil {
		// An inventory is plain data; this cannot happen short of a bug, and the record still
		// goes out, its body saying nothing rather than something wrong.
		log.Error("encoding an inventory", "err", err)
		raw = []byte(`{}`)
	}
	return raw
}

// spanAttrs collects an HTTP L7 record's span attributes for the SDK's tracer.
type spanAttrs struct{ kvs []attribute.KeyValue }

var _ attrWriter = (*spanAttrs)(nil)

func (w *spanAttrs) putStr(key, v string)       { w.kvs = append(w.kvs, attribute.String(key, v)) }
func (w *spanAttrs) putInt(key string, v int64) { w.kvs = append(w.kvs, attribute.Int64(key, v)) }
func (w *spanAttrs) putBool(key string, v bool) { w.kvs = append(w.kvs, attribute.Bool(key, v)) }
func (w *spanAttrs) putStrs(key string, v []string) {
	w.kvs = append(w.kvs, attribute.StringSlice(key, v))
}

func (w *spanAttrs) putUint16s(key string, v []uint16) {
	ints := make([]int64, len(v))
	for i, x := range v {
		ints[i] = int64(x)
	}
	w.kvs = append(w.kvs, attribute.Int64Slice(key, ints))
}

func (w *spanAttrs) putAddr(key string, v netip.Addr)      { w.putStr(key, v.String()) }
func (w *spanAttrs) putMAC(key string, v net.HardwareAddr) { w.putStr(key, v.String()) }

// putBytes has no SDK attribute to map to; the span mapping (l7) writes no bytes.
func (w *spanAttrs) putBytes(key string, _ []byte) {
	panic("otlpsink: no span attribute for bytes (" + key + ")")
}

// spanAttributes are an HTTP L7 record's span attributes, as the log record form's mapping
// gives them (span form).
func spanAttributes(r *sdk.L7) []attribute.KeyValue {
	// Room for the 31 attributes the span form can write and the record's own (Attributes): the
	// SDK keeps the slice, so it is one allocation a span rather than several.
	w := spanAttrs{kvs: make([]attribute.KeyValue, 0, 31+len(r.Attributes))}
	attrBuilder{&w}.l7(r, true)
	return w.kvs
}
