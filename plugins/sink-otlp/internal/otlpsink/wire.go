package otlpsink

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	s "github.com/quanyu/quanyu/internal/otlpschema"
	"github.com/quanyu/quanyu/sdk"
)

// Log records are encoded straight into the protobuf wire format of an
// ExportLogsServiceRequest, field by field from the sdk records: no message structs, no
// reflection. Every nested message's length is known before it is written (an attribute's is
// computed from its key and value), except a log record's, which is encoded in a scratch
// buffer and then appended behind its length. A request holds one resource (the agent) and one
// scope; its header, whose lengths depend on the records, is written last, in room left for it
// in front of them, so the records are never moved.
//
// What is written is what proto.Marshal writes for the same messages (wire_test.go decodes
// both and compares them), fields of a message in another order at most.

// Field numbers of the OTLP messages written here (opentelemetry-proto v1).
const (
	fRequestResourceLogs = 1 // ExportLogsServiceRequest.resource_logs
	fResourceLogsRes     = 1 // ResourceLogs.resource
	fResourceLogsScope   = 2 // ResourceLogs.scope_logs
	fScopeLogsScope      = 1 // ScopeLogs.scope
	fScopeLogsRecords    = 2 // ScopeLogs.log_records

	fLogTime     = 1  // LogRecord.time_unix_nano, fixed64
	fLogBody     = 5  // LogRecord.body, AnyValue
	fLogAttrs    = 6  // LogRecord.attributes, KeyValue
	fLogObserved = 11 // LogRecord.observed_time_unix_nano, fixed64
	fLogEvent    = 12 // LogRecord.event_name

	fKVKey   = 1 // KeyValue.key
	fKVValue = 2 // KeyValue.value

	fAnyString = 1 // AnyValue.string_value
	fAnyBool   = 2 // AnyValue.bool_value
	fAnyInt    = 3 // AnyValue.int_value
	fAnyArray  = 5 // AnyValue.array_value
	fAnyBytes  = 7 // AnyValue.bytes_value

	fArrayValues = 1 // ArrayValue.values
)

// tagLen is the size of every tag written here: field numbers below 16 take one byte.
const tagLen = 1

// tag is the one-byte tag of a field below 16.
func tag(f protowire.Number, t protowire.Type) byte { return byte(f)<<3 | byte(t) }

const (
	lenType    = protowire.BytesType
	varintType = protowire.VarintType
)

// appendVarint is protowire.AppendVarint with the short lengths, nearly all of them here, first.
func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<7:
		return append(b, byte(v))
	case v < 1<<14:
		return append(b, byte(v)|0x80, byte(v>>7))
	}
	return protowire.AppendVarint(b, v)
}

func appendLenField(b []byte, f protowire.Number, n int) []byte {
	return appendVarint(append(b, tag(f, lenType)), uint64(n))
}

func appendStringField[T string | []byte](b []byte, f protowire.Number, v T) []byte {
	return append(appendVarint(append(b, tag(f, lenType)), uint64(len(v))), v...)
}

// sizeStringAny is the size of an AnyValue holding the string (or bytes) of length n.
func sizeStringAny(n int) int { return tagLen + protowire.SizeBytes(n) }

// logEncoder writes log records into requests. Its methods are the attrWriter of log records:
// each appends one KeyValue to the record being encoded, which is written straight into the
// request (rec is the request's buf while a record is being encoded).
type logEncoder struct {
	host     string // the resource's host.name
	observed uint64 // observed_time_unix_nano of the records being encoded
	rec      []byte // the request's bytes, the record being encoded at their end
	recStart int    // where the record's fields start in rec
	text     []byte // scratch for addresses' text
	hdr      requestHeader
}

var _ attrWriter = (*logEncoder)(nil)

// kv appends a KeyValue's tag, length, key and the value's tag and length, for a value (an
// AnyValue) of anySize bytes.
func (e *logEncoder) kv(key string, anySize int) {
	kvSize := tagLen + protowire.SizeBytes(len(key)) + tagLen + protowire.SizeBytes(anySize)
	e.rec = appendLenField(e.rec, fLogAttrs, kvSize)
	e.rec = appendStringField(e.rec, fKVKey, key)
	e.rec = appendLenField(e.rec, fKVValue, anySize)
}

func (e *logEncoder) putStr(key, v string) {
	e.kv(key, sizeStringAny(len(v)))
	e.rec = appendStringField(e.rec, fAnyString, v)
}

// putText is putStr of a string's bytes.
func (e *logEncoder) putText(key string, v []byte) {
	e.kv(key, sizeStringAny(len(v)))
	e.rec = appendStringField(e.rec, fAnyString, v)
}

func (e *logEncoder) putAddr(key string, v netip.Addr) {
	e.text = v.AppendTo(e.text[:0])
	e.putText(key, e.text)
}

// putMAC writes what net.HardwareAddr.String does.
func (e *logEncoder) putMAC(key string, v net.HardwareAddr) {
	const hex = "0123456789abcdef"
	e.text = e.text[:0]
	for i, b := range v {
		if i > 0 {
			e.text = append(e.text, ':')
		}
		e.text = append(e.text, hex[b>>4], hex[b&0xF])
	}
	e.putText(key, e.text)
}

func (e *logEncoder) putBytes(key string, v []byte) {
	e.kv(key, sizeStringAny(len(v)))
	e.rec = appendStringField(e.rec, fAnyBytes, v)
}

func (e *logEncoder) putInt(key string, v int64) {
	e.kv(key, tagLen+protowire.SizeVarint(uint64(v)))
	e.rec = appendVarint(append(e.rec, tag(fAnyInt, varintType)), uint64(v))
}

func (e *logEncoder) putBool(key string, v bool) {
	e.kv(key, tagLen+1)
	e.rec = append(e.rec, tag(fAnyBool, varintType), byte(protowire.EncodeBool(v)))
}

// array appends an AnyValue holding an ArrayValue whose elements (AnyValues, with their tags
// and lengths) take elemsSize bytes; the caller appends the elements.
func (e *logEncoder) array(key string, elemsSize int) {
	e.kv(key, tagLen+protowire.SizeBytes(elemsSize))
	e.rec = appendLenField(e.rec, fAnyArray, elemsSize)
}

func (e *logEncoder) putStrs(key string, v []string) {
	size := 0
	for _, x := range v {
		size += tagLen + protowire.SizeBytes(sizeStringAny(len(x)))
	}
	e.array(key, size)
	for _, x := range v {
		e.rec = appendLenField(e.rec, fArrayValues, sizeStringAny(len(x)))
		e.rec = appendStringField(e.rec, fAnyString, x)
	}
}

func (e *logEncoder) putUint16s(key string, v []uint16) {
	size := 0
	for _, x := range v {
		size += tagLen + protowire.SizeBytes(tagLen+protowire.SizeVarint(uint64(x)))
	}
	e.array(key, size)
	for _, x := range v {
		e.rec = appendLenField(e.rec, fArrayValues, tagLen+protowire.SizeVarint(uint64(x)))
		e.rec = appendVarint(append(e.rec, tag(fAnyInt, varintType)), uint64(x))
	}
}

// begin starts a record in r: room for its tag and length, its times, its event name, and the
// event name again as the first attribute, for receivers that predate the field. Zero times
// are left out, as proto3 does.
func (e *logEncoder) begin(r *logRequest, event string, t uint64) {
	// Two bytes of length: a record is nearly always 128 bytes to 16 KiB long.
	e.rec = append(r.buf, tag(fScopeLogsRecords, lenType), 0, 0)
	e.recStart = len(e.rec)
	if t != 0 {
		e.rec = protowire.AppendFixed64(append(e.rec, tag(fLogTime, protowire.Fixed64Type)), t)
	}
	if e.observed != 0 {
		e.rec = protowire.AppendFixed64(append(e.rec, tag(fLogObserved, protowire.Fixed64Type)), e.observed)
	}
	e.rec = appendStringField(e.rec, fLogEvent, event)
	e.putStr(s.AttrEventName, event)
}

// end writes the record's length in front of it, moving the record when the length does not
// take two bytes, and adds the record to r.
func (e *logEncoder) end(r *logRequest, k kind) {
	b, start := e.rec, e.recStart
	n := len(b) - start
	switch {
	case n < 1<<7:
		copy(b[start-1:], b[start:])
		b = b[:len(b)-1]
		b[start-2] = byte(n)
	case n < 1<<14:
		b[start-2], b[start-1] = byte(n)|0x80, byte(n>>7)
	default:
		extra := protowire.SizeVarint(uint64(n)) - 2
		b = append(b, make([]byte, extra)...)
		copy(b[start+extra:], b[start:len(b)-extra])
		protowire.AppendVarint(b[:start-2], uint64(n))
	}
	r.buf, e.rec = b, nil
	r.kinds = append(r.kinds, k)
}

func (e *logEncoder) addFlow(r *logRequest, f *sdk.Flow) {
	e.begin(r, s.EventFlow, timeUnixNano(f.End))
	attrBuilder{e}.flow(f, e.host)
	e.end(r, kindFlow)
}

func (e *logEncoder) addEvent(r *logRequest, ev *sdk.Event) {
	e.begin(r, s.EventFlowEvent, timeUnixNano(ev.Time))
	attrBuilder{e}.event(ev, e.host)
	e.end(r, kindEvent)
}

func (e *logEncoder) addL7(r *logRequest, l7 *sdk.L7) {
	e.begin(r, s.EventL7, timeUnixNano(l7.Time))
	attrBuilder{e}.l7(l7, false)
	e.end(r, kindL7)
}

// addInventory carries the inventory's JSON as a string body.
func (e *logEncoder) addInventory(r *logRequest, inv *sdk.Inventory, raw []byte) {
	e.begin(r, s.EventInventory, timeUnixNano(inv.Time))
	e.rec = appendLenField(e.rec, fLogBody, sizeStringAny(len(raw)))
	e.rec = appendStringField(e.rec, fAnyString, raw)
	e.end(r, kindInventory)
}

// requestHeader is what precedes the records in every request of one pipeline: the resource
// and the scope, encoded once, and the room the lengths around them need.
type requestHeader struct {
	resource []byte // ResourceLogs.resource, with its tag and length
	scope    []byte // ScopeLogs.scope, with its tag and length
	room     int    // bytes kept in front of the records
}

func newRequestHeader(resAttrs []attribute.KeyValue) (requestHeader, error) {
	res := &resourcepb.Resource{}
	for _, kv := range resAttrs {
		res.Attributes = append(res.Attributes, &commonpb.KeyValue{Key: string(kv.Key),
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: kv.Value.AsString()}}})
	}
	rawRes, err := proto.Marshal(res)
	if err != nil {
		return requestHeader{}, fmt.Errorf("encoding the OTLP resource: %w", err)
	}
	rawScope, err := proto.Marshal(&commonpb.InstrumentationScope{Name: s.ScopeName})
	if err != nil {
		return requestHeader{}, fmt.Errorf("encoding the OTLP scope: %w", err)
	}
	var h requestHeader
	h.resource = protowire.AppendBytes(protowire.AppendTag(nil, fResourceLogsRes, protowire.BytesType), rawRes)
	h.scope = protowire.AppendBytes(protowire.AppendTag(nil, fScopeLogsScope, protowire.BytesType), rawScope)
	// Two tags and lengths (resource_logs, scope_logs) of at most a 5-byte varint each.
	h.room = len(h.resource) + len(h.scope) + 2*(tagLen+protowire.SizeVarint(1<<32-1))
	return h, nil
}

// logRequest is one export's encoded request and the kinds of its records, reused from one
// export to the next. While a transport holds its bytes (gRPC frees them when written, net/http
// closes the body), refs counts it, and the request is reused only once refs is back to 0.
type logRequest struct {
	buf   []byte // hdr.room bytes for the header, then the records
	wire  []byte // the encoded request, once sealed: a suffix of buf
	kinds []kind
	// zipped is the gzip-compressed request, made on the first attempt to send it over HTTP
	// and kept for the retries.
	zipped []byte
	zipOK  bool

	refs    atomic.Int32
	recycle func(*logRequest) // called when refs drops to 0
}

// minRequestBytes is the capacity a request starts with: past gRPC's pooling threshold (1 KiB),
// below which gRPC copies a message rather than holding it, and large enough for ~60 flows.
const minRequestBytes = 64 << 10

func (r *logRequest) reset(room int) {
	if cap(r.buf) < minRequestBytes {
		r.buf = make([]byte, 0, minRequestBytes)
	}
	r.buf = r.buf[:room]
	r.wire = nil
	r.kinds = r.kinds[:0]
	r.zipOK = false
}

func (r *logRequest) len() int { return len(r.kinds) }

// seal writes the header in front of the records.
func (r *logRequest) seal(h *requestHeader) {
	records := len(r.buf) - h.room
	scopeLogs := len(h.scope) + records
	resourceLogs := len(h.resource) + tagLen + protowire.SizeBytes(scopeLogs)
	var tmp [64]byte
	hdr := appendLenField(tmp[:0], fRequestResourceLogs, resourceLogs)
	hdr = append(hdr, h.resource...)
	hdr = appendLenField(hdr, fResourceLogsScope, scopeLogs)
	hdr = append(hdr, h.scope...)
	start := h.room - len(hdr)
	copy(r.buf[start:], hdr)
	r.wire = r.buf[start:]
}

// hold counts a transport's use of the request; release ends it.
func (r *logRequest) hold() { r.refs.Add(1) }

func (r *logRequest) release() {
	if r.refs.Add(-1) == 0 && r.recycle != nil {
		r.recycle(r)
	}
}

// Get and Put make the request the mem.BufferPool of its own bytes: gRPC calls Put when it no
// longer holds them.
func (r *logRequest) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

func (r *logRequest) Put(*[]byte) { r.release() }
