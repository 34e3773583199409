// Package sdk is what a Quanyu plugin author imports: the records that flow through the agent
// (flows, events, payload samples, L7 records, counters), the subscription language with its
// reference matcher, the three plugin interfaces (capture, decoder, sink) and Serve, which makes
// a plugin's main a single call.
//
// The agent core uses the same package from the other side of the process boundary: the
// go-plugin handshake, the plugin set and the gRPC conversions live here, and the protobuf
// messages stay internal.
package sdk
