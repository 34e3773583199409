// Package otlpschema is the contract between the agent's sink-otlp plugin and analysis: how
// Quanyu's records travel as OpenTelemetry signals. Names follow the OpenTelemetry semantic
// conventions where they have one (source.*, destination.*, network.*, http.*, url.*, server.*,
// client.*) and use quanyu.* for the rest; every name is here, in one place.
//
// The mapping:
//   - a flow record is a log record with event name EventFlow; its time is the flow window's
//     end, its attributes below, no body;
//   - a flow event is a log record with event name EventFlowEvent;
//   - an inventory is a log record with event name EventInventory and the inventory's JSON
//     (sdk.MarshalInventoryLine without the type field) as a string body;
//   - an HTTP L7 record is a server span (kind SERVER) named "METHOD" (the path is not in the
//     name: it would make span names high-cardinality) from the request's first byte to the
//     response's first byte; other L7 records (DNS) are log records with event name EventL7;
//   - per-edge counters are metrics (MetricEdge*), with low-cardinality attributes only.
//
// The resource of every signal carries ResourceServiceName = ServiceAgent, host.name, and
// AttrAgentID. A record whose Host is not the resource's carries its own host.name attribute.
// Decode* read what sink-otlp writes back into sdk records, and are what analysis uses on
// everything it receives, whoever sent it.
//
// Encoding rules both sides keep:
//   - times are Unix nanoseconds; a zero time.Time is written as 0 (or left out) and read back
//     as the zero time; times read back are in UTC;
//   - an attribute whose value is the zero value (empty string or list, 0, false) may be left
//     out, and a missing attribute reads back as the zero value (lists as nil); the exceptions
//     are the flow counts, the endpoints and network.transport, always written;
//   - an L7 record's server.address (on spans) is its Host, else the server's IP. When the Host
//     is itself an address literal, or the record is a log record, AttrL7Host carries it, so a
//     reader can tell "Host: 10.0.0.1" from no Host at all;
//   - an L7 record's Method is http.request.method on spans and AttrL7Method on log records (a
//     DNS opcode is not an HTTP method);
//   - metrics: MetricEdgeFlows counts the conversations that ended (flow records with Final
//     set); MetricEdgeBytes and MetricEdgePackets add every flow record's counts. Their only
//     attributes are AttrSourceAddress, AttrDestinationAddress, AttrDestinationPort and
//     AttrNetworkTransport (and AttrIODirection): no Community ID, path or port of the client.
package otlpschema

// Resource attributes.
const (
	ResourceServiceName = "service.name" // semconv
	ResourceHostName    = "host.name"    // semconv
	AttrAgentID         = "quanyu.agent.id"
	ServiceAgent        = "quanyu-agent"
	ScopeName           = "github.com/quanyu/quanyu/plugins/sink-otlp"
)

// Event names of log records (the LogRecord's event_name field, and also the attribute
// "event.name" for receivers that predate the field).
const (
	AttrEventName  = "event.name"
	EventFlow      = "network.flow"
	EventFlowEvent = "network.flow.event"
	EventInventory = "quanyu.inventory"
	EventL7        = "quanyu.l7"
)

// Attributes of flow records, flow events and L7 records. Ints are OTLP int values, strings
// string values, lists OTLP arrays.
const (
	// Observation point.
	AttrInterfaceName = "network.interface.name" // semconv; string
	AttrInterfaceIdx  = "quanyu.interface.index" // int
	AttrNetns         = "quanyu.netns"           // string

	// Endpoints: the client (initiator) is the source, the server the destination.
	AttrSourceAddress      = "source.address"      // semconv; string, an IP address
	AttrSourcePort         = "source.port"         // semconv; int
	AttrDestinationAddress = "destination.address" // semconv; string, an IP address
	AttrDestinationPort    = "destination.port"    // semconv; int
	AttrNetworkTransport   = "network.transport"   // semconv; "tcp", "udp", "icmp", "icmpv6", "sctp", or the protocol number as a string
	AttrNetworkType        = "network.type"        // semconv; "ipv4" or "ipv6"
	AttrSourceMAC          = "quanyu.source.mac"   // string, aa:bb:…
	AttrDestinationMAC     = "quanyu.destination.mac"
	AttrVLAN               = "quanyu.vlan" // int array, outer first

	AttrCommunityID   = "quanyu.community_id"  // string, "1:…"
	AttrSubscriptions = "quanyu.subscriptions" // string array

	// Flow figures.
	AttrFlowStart          = "quanyu.flow.start"                     // int, Unix nanoseconds of the window's first packet
	AttrPacketsToServer    = "quanyu.flow.client_to_server.packets"  // int
	AttrBytesToServer      = "quanyu.flow.client_to_server.ip_bytes" // int
	AttrPacketsToClient    = "quanyu.flow.server_to_client.packets"  // int
	AttrBytesToClient      = "quanyu.flow.server_to_client.ip_bytes" // int
	AttrTCPFlags           = "quanyu.flow.tcp_flags"                 // int, the TCP flag bits seen
	AttrRTT                = "quanyu.flow.rtt_ns"                    // int
	AttrRetransmits        = "quanyu.flow.retransmits"               // int
	AttrFinal              = "quanyu.flow.final"                     // bool
	AttrEndReason          = "quanyu.flow.end_reason"                // string
	AttrFlowL7Protocol     = "quanyu.flow.l7.protocol"               // string
	AttrFlowL7Transactions = "quanyu.flow.l7.transactions"           // int
	AttrFlowL7Errors       = "quanyu.flow.l7.errors"                 // int
	AttrFlowL7Partial      = "quanyu.flow.l7.partial"                // int

	// Flow events.
	AttrEventKind = "quanyu.flow.event.kind" // string: start, end, reset, timeout
	AttrL3Frame   = "quanyu.frame.l3"        // bytes
	AttrL4Frame   = "quanyu.frame.l4"        // bytes
	AttrL7Frame   = "quanyu.frame.l7"        // bytes

	// L7 records (HTTP spans and L7 log records).
	AttrL7Protocol      = "quanyu.l7.protocol"        // string: HTTP, DNS
	AttrHTTPMethod      = "http.request.method"       // semconv; string
	AttrURLPath         = "url.path"                  // semconv; string
	AttrHTTPStatus      = "http.response.status_code" // semconv; int
	AttrServerAddress   = "server.address"            // semconv; string: the Host header, else the server's IP
	AttrServerPort      = "server.port"               // semconv; int
	AttrClientAddress   = "client.address"            // semconv; string
	AttrClientPort      = "client.port"               // semconv; int
	AttrProtocolVersion = "network.protocol.version"  // semconv; string: "1.1"
	AttrUserAgent       = "user_agent.original"       // semconv; string
	AttrContentType     = "quanyu.http.content_type"  // string
	AttrRequestBytes    = "http.request.body.size"    // semconv; int
	AttrResponseBytes   = "http.response.body.size"   // semconv; int
	AttrL7Latency       = "quanyu.l7.latency_ns"      // int (spans: end − start as well)
	AttrL7Partial       = "quanyu.l7.partial"         // bool
	AttrL7Error         = "error.type"                // semconv; string
	AttrL7Flags         = "quanyu.l7.flags"           // string array
	AttrDNSQuery        = "dns.question.name"         // semconv; string
	AttrDNSQType        = "quanyu.dns.question.type"  // string
	AttrDNSRCode        = "quanyu.dns.response_code"  // string
	AttrDNSAnswers      = "quanyu.dns.answers"        // string array
	AttrL7Attributes    = "quanyu.l7.attributes"      // prefix: quanyu.l7.attributes.<key> = string
	AttrL7Method        = "quanyu.l7.method"          // string: the method of an L7 log record (DNS: QUERY, …)
	AttrL7Host          = "quanyu.l7.host"            // string: the Host, where server.address cannot carry it (see above)

	// Read from other senders' HTTP server spans only; sink-otlp does not write them.
	AttrHTTPMethodOriginal  = "http.request.method_original" // semconv; the method when http.request.method is "_OTHER"
	AttrNetworkPeerAddress  = "network.peer.address"         // semconv; the client's IP on a server span
	AttrNetworkPeerPort     = "network.peer.port"            // semconv
	AttrNetworkLocalAddress = "network.local.address"        // semconv; the server's IP on a server span
	AttrNetworkLocalPort    = "network.local.port"           // semconv
)

// Metrics: per edge (client address → server address:port, transport), cumulative sums.
const (
	MetricEdgeFlows   = "quanyu.edge.flows"    // {flow}
	MetricEdgeBytes   = "quanyu.edge.bytes"    // By, with AttrIODirection
	MetricEdgePackets = "quanyu.edge.packets"  // {packet}, with AttrIODirection
	AttrIODirection   = "network.io.direction" // semconv: "transmit" (client → server), "receive" (server → client)
)
