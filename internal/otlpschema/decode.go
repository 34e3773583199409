package otlpschema

import (
	"errors"

	"github.com/quanyu/quanyu/sdk"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
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

// DecodeLogs reads the flow records, flow events, L7 records and inventories of an OTLP logs
// request. Log records that are not Quanyu's (another event name, none) are skipped and not
// counted as rejected. A Quanyu record that does not decode (an attribute of the wrong type, an
// address that does not parse) is rejected: rejected counts them and err describes the first,
// for the OTLP partial-success answer; the rest of the request is still read.
func DecodeLogs(req *collogspb.ExportLogsServiceRequest) (out []Batch, rejected int64, err error) {
	return nil, 0, errors.New("otlpschema: DecodeLogs not written yet")
}

// DecodeTraces reads HTTP L7 records from the server spans of an OTLP traces request: those
// sink-otlp writes, and those of any instrumented HTTP server that carries the semantic
// conventions' http.request.method (client and server addresses from client.address /
// server.address / network.peer.address where present). Other spans are skipped.
func DecodeTraces(req *coltracepb.ExportTraceServiceRequest) (out []Batch, rejected int64, err error) {
	return nil, 0, errors.New("otlpschema: DecodeTraces not written yet")
}
