package sdk

import (
	"context"
	"encoding/json"
	"time"
)

// Kind is what a plugin does in the pipeline.
type Kind string

// The plugin kinds. A plugin binary is named quanyu-<kind>-<name> by convention (quanyu-capture-mmap,
// quanyu-sink-stdout, quanyu-l7-http) and serves exactly one kind.
const (
	KindCapture Kind = "capture"
	KindDecoder Kind = "decoder"
	KindSink    Kind = "sink"
)

// Info describes a plugin to the host.
type Info struct {
	Kind    Kind
	Name    string
	Version string
	// Protocols are the L7 protocol tokens a decoder recognises (HTTP, DNS, …).
	Protocols []string
	// Capabilities are free-form feature names (for capture: "live", "files", "frames").
	Capabilities []string
	// Detect says how a decoder recognises its protocols, so the agent routes each flow's samples
	// to the decoder that claims it without asking every decoder about every flow.
	Detect []Detect
}

// Detect is one protocol's recognition rule. The agent tries content first: a flow whose first
// payload in a direction matches a pattern of that direction is claimed, whatever its ports.
// Only when no decoder's content rule matches does a port claim it (the server's port), so a
// flow on a well-known port picked up mid-message still reaches its decoder, which finds the
// next message boundary itself.
type Detect struct {
	Protocol string // one of the decoder's Protocols
	// ClientPattern and ServerPattern are RE2 expressions matched at the start of a sample from
	// that side; empty matches nothing.
	ClientPattern string
	ServerPattern string
	Ports         []uint16
	Transports    []Transport // the transports the rule applies to; empty: TCP and UDP
}

// HealthStatus is a plugin's own judgement of itself.
type HealthStatus string

// Health states.
const (
	HealthOK       HealthStatus = "ok"
	HealthDegraded HealthStatus = "degraded" // working, but losing or skipping something
	HealthFailing  HealthStatus = "failing"  // not doing its job
)

// Health is what a plugin reports when the host asks.
type Health struct {
	Status   HealthStatus
	Message  string
	Counters map[string]uint64
}

// CaptureConfig is everything a capture plugin is told. The host may send a new one at any time
// (a new subscription set from mix); the plugin applies it without stopping the capture.
type CaptureConfig struct {
	Host string
	// Interfaces are the names or globs watched by subscriptions that name no NIC.
	Interfaces []string
	// ExcludeInterfaces are never watched unless a subscription names them exactly.
	ExcludeInterfaces []string
	// Files switches the plugin to replay: read these pcap/pcapng files in order, then end Run.
	Files         []string
	Subscriptions []Subscription
	IdleTimeout   time.Duration
	ActiveTimeout time.Duration
	FlushInterval time.Duration // the longest a record waits in a batch
	BatchSize     int           // records per batch, at least 512 for throughput
	MaxFlows      int
	SnapLen       int
	// Options are the plugin's own settings (the agent config's plugins.<name> section), as JSON.
	Options json.RawMessage
}

// DecoderConfig is what a decoder plugin is told; like CaptureConfig it may come again at any time.
type DecoderConfig struct {
	Subscriptions []Subscription
	Options       json.RawMessage
}

// SinkConfig is what a sink plugin is told.
type SinkConfig struct {
	Host string
	// AgentID is the name mix knows the agent by (identity.id, else the host name): what tells two
	// agents on one host apart downstream.
	AgentID string
	Options json.RawMessage
}

// Emitter takes the batches a capture plugin produces. Emit blocks while the host is busy (back
// pressure); a capture that cannot wait must drop and count what it drops.
type Emitter interface {
	Emit(ctx context.Context, b *Batch) error
}

// The lifecycle common to every plugin, in the order the host calls it:
//
//  1. Info: the host learns the kind, name, version and capabilities.
//  2. Configure: the configuration is validated and applied; an error rejects it and the previous
//     configuration (if any) stays in force. Configure may be called again at any time.
//  3. The kind's work: Capture.Run, Decoder.Decode, Sink.Write.
//  4. Health: at any time, from any goroutine.
//  5. Shutdown: flush what is held and release resources. It is safe without a prior Configure and
//     safe to call twice. After it, the host kills the process.

// Capture produces flows, events, samples and counters.
type Capture interface {
	Info(ctx context.Context) (Info, error)
	Configure(ctx context.Context, cfg CaptureConfig) error
	Health(ctx context.Context) (Health, error)
	// Run captures until ctx is cancelled (live) or the files end (replay), emitting batches of at
	// most BatchSize records at least every FlushInterval while there is something to send. It
	// returns nil when the input ended normally.
	Run(ctx context.Context, out Emitter) error
	Shutdown(ctx context.Context) error
}

// Decoder turns payload samples into L7 records.
type Decoder interface {
	Info(ctx context.Context) (Info, error)
	Configure(ctx context.Context, cfg DecoderConfig) error
	Health(ctx context.Context) (Health, error)
	// Decode takes samples in capture order and returns the L7 records they complete. A decoder
	// keeps per-flow state across calls; samples of one flow always go to the same decoder.
	// Calls may run concurrently (the agent splits a large batch by flow): all the samples a
	// batch has of one flow are in one call, and a flow's next call starts after that one ended.
	Decode(ctx context.Context, samples []Sample) ([]L7, error)
	Shutdown(ctx context.Context) error
}

// Sink takes batches out of the agent. Write should return quickly: a sink owns its bounded queue
// and its retries, and counts what it drops.
type Sink interface {
	Info(ctx context.Context) (Info, error)
	Configure(ctx context.Context, cfg SinkConfig) error
	Health(ctx context.Context) (Health, error)
	Write(ctx context.Context, b *Batch) error
	Shutdown(ctx context.Context) error
}
