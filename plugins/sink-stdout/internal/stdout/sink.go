// Package stdout is the sink that prints records, one JSON object per line: the record schema
// of the sdk (format "json", the default) or the seed's own message (format "seed").
package stdout

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/quanyu/quanyu/internal/version"
	"github.com/quanyu/quanyu/sdk"
)

// Options are the sink's settings (plugins.sink-stdout in the agent's configuration).
type Options struct {
	// Format is "json" (the record schema) or "seed" (NIC, L3, L3Frame, L4Class, L4, L4Frame, L7,
	// L7Frame).
	Format string `json:"format"`
}

// Sink writes to the agent's standard output.
type Sink struct {
	mu     sync.Mutex
	w      *bufio.Writer
	format string

	records atomic.Uint64
	skipped atomic.Uint64
	errors  atomic.Uint64
}

var _ sdk.Sink = (*Sink)(nil)

// New makes a sink writing to the file descriptor the agent passed (see the plugin host), else to
// this process's standard output.
func New() *Sink {
	var out io.Writer = os.Stdout
	if fd, err := strconv.Atoi(os.Getenv("QUANYU_PLUGIN_STDOUT_FD")); err == nil && fd > 2 {
		out = os.NewFile(uintptr(fd), "agent-stdout")
	}
	return NewWriter(out)
}

// NewWriter makes a sink writing to w (tests).
func NewWriter(w io.Writer) *Sink {
	return &Sink{w: bufio.NewWriterSize(w, 64<<10), format: "json"}
}

func (s *Sink) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Kind: sdk.KindSink, Name: "stdout", Version: version.Version}, nil
}

func (s *Sink) Configure(_ context.Context, cfg sdk.SinkConfig) error {
	opts := Options{Format: "json"}
	if len(cfg.Options) > 0 {
		dec := json.NewDecoder(bytes.NewReader(cfg.Options))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&opts); err != nil {
			return &sdk.ValidationError{Fields: []sdk.FieldError{{Path: "plugins.sink-stdout", Reason: err.Error()}}}
		}
	}
	if opts.Format != "json" && opts.Format != "seed" {
		return &sdk.ValidationError{Fields: []sdk.FieldError{{Path: "plugins.sink-stdout.format",
			Reason: fmt.Sprintf("%q is not json or seed", opts.Format)}}}
	}
	s.mu.Lock()
	s.format = opts.Format
	s.mu.Unlock()
	return nil
}

func (s *Sink) Health(context.Context) (sdk.Health, error) {
	h := sdk.Health{Status: sdk.HealthOK, Counters: map[string]uint64{
		"records_written": s.records.Load(), "records_skipped": s.skipped.Load(), "write_errors": s.errors.Load(),
	}}
	if s.errors.Load() > 0 {
		h.Status, h.Message = sdk.HealthDegraded, "writes to standard output failed"
	}
	return h, nil
}

// Write prints the batch and flushes, so a reader of the agent's output sees records as they come.
func (s *Sink) Write(_ context.Context, b *sdk.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.format == "seed" {
		err = s.writeSeed(b)
	} else {
		err = s.writeJSON(b)
	}
	if err == nil {
		err = s.w.Flush()
	}
	if err != nil {
		s.errors.Add(1)
		return fmt.Errorf("writing records to standard output: %w", err)
	}
	return nil
}

// line writes one record. It calls the record's MarshalJSON itself: through json.Marshal the
// output would be parsed again to be validated and compacted, which was a quarter of this
// plugin's CPU.
func (s *Sink) line(v any) error {
	var raw []byte
	var err error
	if m, ok := v.(json.Marshaler); ok {
		raw, err = m.MarshalJSON()
	} else {
		raw, err = json.Marshal(v)
	}
	if err != nil {
		return err
	}
	raw = append(raw, '\n')
	_, err = s.w.Write(raw)
	if err == nil {
		s.records.Add(1)
	}
	return err
}

func (s *Sink) writeJSON(b *sdk.Batch) error {
	if b.Inventory != nil {
		raw, err := sdk.MarshalInventoryLine(b.Inventory)
		if err != nil {
			return err
		}
		if _, err := s.w.Write(append(raw, '\n')); err != nil {
			return err
		}
		s.records.Add(1)
	}
	for i := range b.Flows {
		if err := s.line(b.Flows[i]); err != nil {
			return err
		}
	}
	for i := range b.Events {
		if err := s.line(b.Events[i]); err != nil {
			return err
		}
	}
	for i := range b.L7 {
		if err := s.line(b.L7[i]); err != nil {
			return err
		}
	}
	for i := range b.Stats {
		if err := s.line(b.Stats[i]); err != nil {
			return err
		}
	}
	return nil
}

// seedMessage is the seed's message: one observed conversation, named by its server side (the
// address and port a subscription watches), with frames where the subscription asked for them.
type seedMessage struct {
	NIC     string `json:"NIC"`
	L3      string `json:"L3"`
	L3Frame string `json:"L3Frame"`
	L4Class string `json:"L4Class"`
	L4      string `json:"L4"`
	L4Frame string `json:"L4Frame"`
	L7      string `json:"L7"`
	L7Frame string `json:"L7Frame"`
}

func addrString(e sdk.Endpoint) string {
	if !e.Addr.IsValid() {
		return ""
	}
	return e.Addr.String()
}

func frame(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

func (s *Sink) writeSeed(b *sdk.Batch) error {
	for _, f := range b.Flows {
		if err := s.line(seedMessage{NIC: f.NIC, L3: addrString(f.Server), L4Class: f.Transport.String(),
			L4: strconv.Itoa(int(f.Server.Port))}); err != nil {
			return err
		}
	}
	for _, e := range b.Events {
		if err := s.line(seedMessage{NIC: e.NIC, L3: addrString(e.Server), L4Class: e.Transport.String(),
			L4: strconv.Itoa(int(e.Server.Port)), L3Frame: frame(e.L3Frame), L4Frame: frame(e.L4Frame),
			L7Frame: frame(e.L7Frame)}); err != nil {
			return err
		}
	}
	for _, r := range b.L7 {
		if err := s.line(seedMessage{NIC: r.NIC, L3: addrString(r.Server), L4Class: r.Transport.String(),
			L4: strconv.Itoa(int(r.Server.Port)), L7: r.Method}); err != nil {
			return err
		}
	}
	// The seed's message has no place for counters or inventory; they go to the log instead, so
	// nothing the agent reports is lost in this format.
	for _, st := range b.Stats {
		s.skipped.Add(1)
		slog.Info("stats", "source", st.Source, "counters", st.Counters)
	}
	if b.Inventory != nil {
		s.skipped.Add(1)
		slog.Info("inventory", "interfaces", len(b.Inventory.Interfaces), "namespaces", len(b.Inventory.Namespaces))
	}
	return nil
}

// Shutdown flushes what is buffered.
func (s *Sink) Shutdown(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Flush()
}
