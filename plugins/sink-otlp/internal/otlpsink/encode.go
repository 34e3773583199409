package otlpsink

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"

	s "github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/sdk"
)

// The mapping of records to attributes follows internal/otlpschema, whose decoders read them
// back; a change here without one there breaks the round-trip tests.
//
// Log records are built directly as OTLP protobuf messages: the SDK's log records cost about
// 20 µs each to build, before its exporter converts them, where flows come by the tens of
// thousands a second (bench/RESULTS.md). A flow record is ~30 attributes, ~90 small messages;
// they are taken from an arena that the next request reuses, so the messages cost no
// allocation once the arena has grown to a request's size. HTTP L7 records become SDK spans:
// their attributes are built the same way and converted.

// slabChunk is how many messages of one type a slab allocates at a time.
const slabChunk = 4096

// slab hands out zeroed values of T from chunks it keeps: reset makes every one reusable.
type slab[T any] struct {
	chunks [][]T
	c, i   int // the next free value is chunks[c][i]
}

// take returns n contiguous zeroed values, valid until reset.
func (s *slab[T]) take(n int) []T {
	if s.c < len(s.chunks) && s.i+n > len(s.chunks[s.c]) {
		s.c, s.i = s.c+1, 0
	}
	if s.c == len(s.chunks) {
		s.chunks = append(s.chunks, make([]T, max(n, slabChunk)))
	}
	out := s.chunks[s.c][s.i : s.i+n : s.i+n]
	s.i += n
	return out
}

func (s *slab[T]) get() *T { return &s.take(1)[0] }

// reset zeroes what was handed out (so that it holds no records' strings) and starts over.
func (s *slab[T]) reset() {
	for c := 0; c < s.c && c < len(s.chunks); c++ {
		clear(s.chunks[c])
	}
	if s.c < len(s.chunks) {
		clear(s.chunks[s.c][:s.i])
	}
	s.c, s.i = 0, 0
}

// arena holds the messages of the log records built since its last reset.
type arena struct {
	records   slab[logspb.LogRecord]
	kvs       slab[commonpb.KeyValue]
	attrs     slab[*commonpb.KeyValue] // the records' attribute lists
	values    slab[commonpb.AnyValue]
	items     slab[*commonpb.AnyValue] // the arrays' elements
	arrays    slab[commonpb.ArrayValue]
	strs      slab[commonpb.AnyValue_StringValue]
	ints      slab[commonpb.AnyValue_IntValue]
	bools     slab[commonpb.AnyValue_BoolValue]
	bytesVals slab[commonpb.AnyValue_BytesValue]
	arrs      slab[commonpb.AnyValue_ArrayValue]
}

func (a *arena) reset() {
	a.records.reset()
	a.kvs.reset()
	a.attrs.reset()
	a.values.reset()
	a.items.reset()
	a.arrays.reset()
	a.strs.reset()
	a.ints.reset()
	a.bools.reset()
	a.bytesVals.reset()
	a.arrs.reset()
}

// The value constructors. AnyValue's oneof has an unexported type, hence one each.

func (a *arena) strValue(v string) *commonpb.AnyValue {
	w := a.strs.get()
	w.StringValue = v
	av := a.values.get()
	av.Value = w
	return av
}

func (a *arena) intValue(v int64) *commonpb.AnyValue {
	w := a.ints.get()
	w.IntValue = v
	av := a.values.get()
	av.Value = w
	return av
}

func (a *arena) boolValue(v bool) *commonpb.AnyValue {
	w := a.bools.get()
	w.BoolValue = v
	av := a.values.get()
	av.Value = w
	return av
}

func (a *arena) bytesValue(v []byte) *commonpb.AnyValue {
	w := a.bytesVals.get()
	w.BytesValue = v
	av := a.values.get()
	av.Value = w
	return av
}

func (a *arena) arrayValue(items []*commonpb.AnyValue) *commonpb.AnyValue {
	arr := a.arrays.get()
	arr.Values = items
	w := a.arrs.get()
	w.ArrayValue = arr
	av := a.values.get()
	av.Value = w
	return av
}

// attrBuilder builds one record's attributes at a time in its arena.
type attrBuilder struct {
	a   arena
	kvs []*commonpb.KeyValue // the record being built
}

func (b *attrBuilder) put(key string, v *commonpb.AnyValue) {
	kv := b.a.kvs.get()
	kv.Key, kv.Value = key, v
	b.kvs = append(b.kvs, kv)
}

func (b *attrBuilder) putStr(key, v string)       { b.put(key, b.a.strValue(v)) }
func (b *attrBuilder) putInt(key string, v int64) { b.put(key, b.a.intValue(v)) }
func (b *attrBuilder) putBool(key string, v bool) { b.put(key, b.a.boolValue(v)) }

// The following leave out zero values (see otlpschema's encoding rules).

func (b *attrBuilder) str(key, v string) {
	if v != "" {
		b.putStr(key, v)
	}
}

func (b *attrBuilder) num(key string, v int64) {
	if v != 0 {
		b.putInt(key, v)
	}
}

func (b *attrBuilder) strs(key string, v []string) {
	if len(v) == 0 {
		return
	}
	items := b.a.items.take(len(v))
	for i, x := range v {
		items[i] = b.a.strValue(x)
	}
	b.put(key, b.a.arrayValue(items))
}

func (b *attrBuilder) uint16s(key string, v []uint16) {
	if len(v) == 0 {
		return
	}
	items := b.a.items.take(len(v))
	for i, x := range v {
		items[i] = b.a.intValue(int64(x))
	}
	b.put(key, b.a.arrayValue(items))
}

func (b *attrBuilder) bytes(key string, v []byte) {
	if len(v) > 0 {
		b.put(key, b.a.bytesValue(v))
	}
}

// done hands out the attributes built since the last call, as a list of their own.
func (b *attrBuilder) done() []*commonpb.KeyValue {
	out := b.a.attrs.take(len(b.kvs))
	copy(out, b.kvs)
	clear(b.kvs)
	b.kvs = b.kvs[:0]
	return out
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
func (b *attrBuilder) endpoints(t sdk.Transport, client, server sdk.Endpoint) {
	b.str(s.AttrSourceAddress, addrString(client.Addr))
	b.putInt(s.AttrSourcePort, int64(client.Port))
	b.str(s.AttrDestinationAddress, addrString(server.Addr))
	b.putInt(s.AttrDestinationPort, int64(server.Port))
	b.putStr(s.AttrNetworkTransport, s.TransportName(t))
	b.str(s.AttrNetworkType, networkType(client.Addr))
}

// hostOverride writes host.name on a record only when it is not the resource's.
func (b *attrBuilder) hostOverride(recordHost, resourceHost string) {
	if recordHost != resourceHost {
		b.putStr(s.ResourceHostName, recordHost)
	}
}

func (b *attrBuilder) flow(f *sdk.Flow, host string) {
	b.hostOverride(f.Host, host)
	b.str(s.AttrInterfaceName, f.NIC)
	b.num(s.AttrInterfaceIdx, int64(f.IfIndex))
	b.str(s.AttrNetns, f.Netns)
	b.endpoints(f.Transport, f.Client, f.Server)
	if len(f.ClientMAC) > 0 {
		b.str(s.AttrSourceMAC, f.ClientMAC.String())
	}
	if len(f.ServerMAC) > 0 {
		b.str(s.AttrDestinationMAC, f.ServerMAC.String())
	}
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

func (b *attrBuilder) event(e *sdk.Event, host string) {
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
func (b *attrBuilder) l7(r *sdk.L7, span bool) {
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

// logBuffer holds the log records built since the last export, and the arena they are built
// in; the arena is reused once every record has been consumed (exported or dropped).
type logBuffer struct {
	attrBuilder
	host     string // the resource's host.name
	observed uint64 // observed_time_unix_nano of the records being built
	recs     []*logspb.LogRecord
	kinds    []kind
}

func (l *logBuffer) len() int { return len(l.recs) }

// consume forgets the first n records, which must no longer be in use.
func (l *logBuffer) consume(n int) {
	if n >= len(l.recs) {
		clear(l.recs)
		l.recs, l.kinds = l.recs[:0], l.kinds[:0]
		l.a.reset()
		return
	}
	l.recs = append(l.recs[:0], l.recs[n:]...)
	l.kinds = append(l.kinds[:0], l.kinds[n:]...)
}

// add makes a log record of the attributes built since the last one. The event name is also
// the first attribute, for receivers that predate the field.
func (l *logBuffer) add(k kind, event string, t time.Time, body *commonpb.AnyValue) {
	l.putStr(s.AttrEventName, event)
	name := l.kvs[len(l.kvs)-1]
	copy(l.kvs[1:], l.kvs) // shifts the others up, over the name's slot
	l.kvs[0] = name
	r := l.a.records.get()
	r.TimeUnixNano = timeUnixNano(t)
	r.ObservedTimeUnixNano = l.observed
	r.EventName = event
	r.Attributes = l.done()
	r.Body = body
	l.recs = append(l.recs, r)
	l.kinds = append(l.kinds, k)
}

func (l *logBuffer) addFlow(f *sdk.Flow) {
	l.flow(f, l.host)
	l.add(kindFlow, s.EventFlow, f.End, nil)
}

func (l *logBuffer) addEvent(e *sdk.Event) {
	l.event(e, l.host)
	l.add(kindEvent, s.EventFlowEvent, e.Time, nil)
}

func (l *logBuffer) addL7(r *sdk.L7) {
	l.l7(r, false)
	l.add(kindL7, s.EventL7, r.Time, nil)
}

// addInventory carries the inventory's JSON: sdk.MarshalInventoryLine's fields without its
// "type", which is what encoding/json gives for the plain struct.
func (l *logBuffer) addInventory(inv *sdk.Inventory, log *slog.Logger) {
	raw, err := json.Marshal(inv)
	if err != nil {
		// An inventory is plain data; this cannot happen short of a bug, and the record still
		// goes out, its body saying nothing rather than something wrong.
		log.Error("encoding an inventory", "err", err)
		raw = []byte(`{}`)
	}
	l.add(kindInventory, s.EventInventory, inv.Time, l.a.strValue(string(raw)))
}

// spanAttributes are an HTTP L7 record's span attributes, for the SDK's tracer. They are built
// as for a log record, then converted, so that both forms share one mapping.
func (b *attrBuilder) spanAttributes(r *sdk.L7) []attribute.KeyValue {
	b.l7(r, true)
	out := make([]attribute.KeyValue, 0, len(b.kvs))
	for _, kv := range b.kvs {
		out = append(out, sdkAttribute(kv))
	}
	clear(b.kvs)
	b.kvs = b.kvs[:0]
	b.a.reset()
	return out
}

// sdkAttribute converts the kinds of attribute value l7 writes.
func sdkAttribute(kv *commonpb.KeyValue) attribute.KeyValue {
	switch v := kv.GetValue().GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return attribute.String(kv.Key, v.StringValue)
	case *commonpb.AnyValue_IntValue:
		return attribute.Int64(kv.Key, v.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return attribute.Bool(kv.Key, v.BoolValue)
	case *commonpb.AnyValue_ArrayValue:
		items := v.ArrayValue.GetValues()
		out := make([]string, len(items))
		for i, item := range items {
			out[i] = item.GetStringValue()
		}
		return attribute.StringSlice(kv.Key, out)
	}
	// l7 writes no other kind of value.
	panic("otlpsink: no span attribute for " + kv.Key)
}
