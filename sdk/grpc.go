package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quanyu/quanyu/sdk/internal/pb"
)

// Handshake is the go-plugin handshake between the agent and its plugins. A plugin binary started
// by anything else (a person at a shell) says it is a plugin and exits.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "QUANYU_PLUGIN",
	MagicCookieValue: "quanyu-agent-plugin-v1",
}

// MaxMessageBytes bounds one gRPC message between the agent and a plugin (a batch of samples can
// run to a few MiB).
const MaxMessageBytes = 64 << 20

// HTTP/2 flow-control windows between the agent and its plugins. gRPC's default (64 KiB, grown
// by estimates of the link's bandwidth-delay product) makes a batch of a few hundred KiB wait for
// several window updates on each call; over a local socket the only cost of a large window is
// memory that bounded batches already bound.
const (
	StreamWindowBytes = 8 << 20
	ConnWindowBytes   = 32 << 20
)

// ErrRejected marks a configuration a plugin refused; the message says why.
var ErrRejected = errors.New("configuration rejected")

// ErrUnavailable marks a plugin that cannot work on this host at all (a capture backend the
// kernel or the process's capabilities do not allow); the agent may fall back to another.
var ErrUnavailable = errors.New("unavailable on this host")

// PluginSet is the host's view: one go-plugin Plugin per kind, dispensed by the kind's name.
func PluginSet() plugin.PluginSet {
	return plugin.PluginSet{
		string(KindCapture): &capturePlugin{},
		string(KindDecoder): &decoderPlugin{},
		string(KindSink):    &sinkPlugin{},
	}
}

// NewPluginSet is the plugin's view: impl served under the name of every kind it implements.
func NewPluginSet(impl any) (plugin.PluginSet, error) {
	set := plugin.PluginSet{}
	if c, ok := impl.(Capture); ok {
		set[string(KindCapture)] = &capturePlugin{impl: c}
	}
	if d, ok := impl.(Decoder); ok {
		set[string(KindDecoder)] = &decoderPlugin{impl: d}
	}
	if s, ok := impl.(Sink); ok {
		set[string(KindSink)] = &sinkPlugin{impl: s}
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("%T implements none of sdk.Capture, sdk.Decoder, sdk.Sink", impl)
	}
	return set, nil
}

// toStatus maps a plugin's error onto the wire: validation failures keep their text and become
// InvalidArgument so the host can tell a rejected configuration from a broken plugin.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if errors.As(err, &ve) || errors.Is(err, ErrRejected) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if errors.Is(err, ErrUnavailable) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

func fromStatus(what string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return fmt.Errorf("%s: %w: %s", what, ErrRejected, strings.TrimPrefix(st.Message(), ErrRejected.Error()+": "))
	case codes.FailedPrecondition:
		return fmt.Errorf("%s: %w: %s", what, ErrUnavailable, strings.TrimPrefix(st.Message(), ErrUnavailable.Error()+": "))
	case codes.Canceled:
		return fmt.Errorf("%s: %w", what, context.Canceled)
	}
	return fmt.Errorf("%s: %s", what, st.Message())
}

// ---- capture ----

type capturePlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Capture
}

func (p *capturePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterCaptureServer(s, &captureServer{impl: p.impl})
	return nil
}

func (p *capturePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &captureClient{c: pb.NewCaptureClient(c)}, nil
}

type captureServer struct {
	pb.UnimplementedCaptureServer
	impl Capture
}

func (s *captureServer) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.PluginInfo, error) {
	i, err := s.impl.Info(ctx)
	return infoToPB(i), toStatus(err)
}

func (s *captureServer) Configure(ctx context.Context, req *pb.CaptureConfig) (*pb.ConfigureResponse, error) {
	cfg, err := captureConfigFromPB(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.ConfigureResponse{}, toStatus(s.impl.Configure(ctx, cfg))
}

func (s *captureServer) Health(ctx context.Context, _ *pb.HealthRequest) (*pb.HealthStatus, error) {
	h, err := s.impl.Health(ctx)
	return healthToPB(h), toStatus(err)
}

func (s *captureServer) Run(_ *pb.RunRequest, stream pb.Capture_RunServer) error {
	return toStatus(s.impl.Run(stream.Context(), emitterFunc(func(_ context.Context, b *Batch) error {
		msg, err := batchToPB(b)
		if err != nil {
			return err
		}
		return stream.Send(msg)
	})))
}

func (s *captureServer) Shutdown(ctx context.Context, _ *pb.ShutdownRequest) (*pb.ShutdownResponse, error) {
	return &pb.ShutdownResponse{}, toStatus(s.impl.Shutdown(ctx))
}

type emitterFunc func(ctx context.Context, b *Batch) error

func (f emitterFunc) Emit(ctx context.Context, b *Batch) error { return f(ctx, b) }

type captureClient struct {
	c pb.CaptureClient
}

var _ Capture = (*captureClient)(nil)

func (c *captureClient) Info(ctx context.Context) (Info, error) {
	resp, err := c.c.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus("asking for plugin info", err)
	}
	return infoFromPB(resp), nil
}

func (c *captureClient) Configure(ctx context.Context, cfg CaptureConfig) error {
	req, err := captureConfigToPB(cfg)
	if err != nil {
		return err
	}
	_, err = c.c.Configure(ctx, req)
	return fromStatus("configuring capture", err)
}

func (c *captureClient) Health(ctx context.Context) (Health, error) {
	resp, err := c.c.Health(ctx, &pb.HealthRequest{})
	if err != nil {
		return Health{}, fromStatus("asking capture health", err)
	}
	return healthFromPB(resp), nil
}

func (c *captureClient) Run(ctx context.Context, out Emitter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.Run(ctx, &pb.RunRequest{}, grpc.MaxCallRecvMsgSize(MaxMessageBytes))
	if err != nil {
		return fromStatus("starting capture", err)
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fromStatus("receiving from capture", err)
		}
		b, err := batchFromPB(msg)
		if err != nil {
			return fmt.Errorf("decoding capture batch: %w", err)
		}
		if err := out.Emit(ctx, b); err != nil {
			return err
		}
	}
}

func (c *captureClient) Shutdown(ctx context.Context) error {
	_, err := c.c.Shutdown(ctx, &pb.ShutdownRequest{})
	return fromStatus("shutting capture down", err)
}

// ---- decoder ----

type decoderPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Decoder
}

func (p *decoderPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterDecoderServer(s, &decoderServer{impl: p.impl})
	return nil
}

func (p *decoderPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &decoderClient{c: pb.NewDecoderClient(c)}, nil
}

type decoderServer struct {
	pb.UnimplementedDecoderServer
	impl Decoder
}

func (s *decoderServer) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.PluginInfo, error) {
	i, err := s.impl.Info(ctx)
	return infoToPB(i), toStatus(err)
}

func (s *decoderServer) Configure(ctx context.Context, req *pb.DecoderConfig) (*pb.ConfigureResponse, error) {
	subs, err := subsFromJSON(req.SubscriptionsJson)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	err = s.impl.Configure(ctx, DecoderConfig{Subscriptions: subs, Options: req.OptionsJson})
	return &pb.ConfigureResponse{}, toStatus(err)
}

func (s *decoderServer) Health(ctx context.Context, _ *pb.HealthRequest) (*pb.HealthStatus, error) {
	h, err := s.impl.Health(ctx)
	return healthToPB(h), toStatus(err)
}

func (s *decoderServer) Decode(ctx context.Context, req *pb.SampleBatch) (*pb.L7Batch, error) {
	samples, flows, err := samplesFromPB(req)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "unpacking samples: %v", err)
	}
	recs, err := s.impl.Decode(ctx, samples)
	if err != nil {
		return nil, toStatus(err)
	}
	return l7sToPB(recs, flows), nil
}

func (s *decoderServer) Shutdown(ctx context.Context, _ *pb.ShutdownRequest) (*pb.ShutdownResponse, error) {
	return &pb.ShutdownResponse{}, toStatus(s.impl.Shutdown(ctx))
}

type decoderClient struct {
	c pb.DecoderClient
}

var _ Decoder = (*decoderClient)(nil)

func (c *decoderClient) Info(ctx context.Context) (Info, error) {
	resp, err := c.c.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus("asking for plugin info", err)
	}
	return infoFromPB(resp), nil
}

func (c *decoderClient) Configure(ctx context.Context, cfg DecoderConfig) error {
	subs, err := subsToJSON(cfg.Subscriptions)
	if err != nil {
		return err
	}
	_, err = c.c.Configure(ctx, &pb.DecoderConfig{SubscriptionsJson: subs, OptionsJson: cfg.Options})
	return fromStatus("configuring decoder", err)
}

func (c *decoderClient) Health(ctx context.Context) (Health, error) {
	resp, err := c.c.Health(ctx, &pb.HealthRequest{})
	if err != nil {
		return Health{}, fromStatus("asking decoder health", err)
	}
	return healthFromPB(resp), nil
}

func (c *decoderClient) Decode(ctx context.Context, samples []Sample) ([]L7, error) {
	req, flows := samplesToPB(samples)
	resp, err := c.c.Decode(ctx, req, grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes))
	if err != nil {
		return nil, fromStatus("decoding samples", err)
	}
	out, err := l7sFromPB(resp, flows)
	if err != nil {
		return nil, fmt.Errorf("decoder returned a bad answer: %w", err)
	}
	return out, nil
}

func (c *decoderClient) Shutdown(ctx context.Context) error {
	_, err := c.c.Shutdown(ctx, &pb.ShutdownRequest{})
	return fromStatus("shutting decoder down", err)
}

// ---- sink ----

type sinkPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Sink
}

func (p *sinkPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServer(s, &sinkServer{impl: p.impl})
	return nil
}

func (p *sinkPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &sinkClient{c: pb.NewSinkClient(c)}, nil
}

type sinkServer struct {
	pb.UnimplementedSinkServer
	impl Sink
}

func (s *sinkServer) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.PluginInfo, error) {
	i, err := s.impl.Info(ctx)
	return infoToPB(i), toStatus(err)
}

func (s *sinkServer) Configure(ctx context.Context, req *pb.SinkConfig) (*pb.ConfigureResponse, error) {
	err := s.impl.Configure(ctx, SinkConfig{Host: req.Host, AgentID: req.AgentId, Options: req.OptionsJson})
	return &pb.ConfigureResponse{}, toStatus(err)
}

func (s *sinkServer) Health(ctx context.Context, _ *pb.HealthRequest) (*pb.HealthStatus, error) {
	h, err := s.impl.Health(ctx)
	return healthToPB(h), toStatus(err)
}

func (s *sinkServer) Write(ctx context.Context, req *pb.Batch) (*pb.WriteResponse, error) {
	b, err := batchFromPB(req)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decoding batch: %v", err)
	}
	return &pb.WriteResponse{}, toStatus(s.impl.Write(ctx, b))
}

func (s *sinkServer) Shutdown(ctx context.Context, _ *pb.ShutdownRequest) (*pb.ShutdownResponse, error) {
	return &pb.ShutdownResponse{}, toStatus(s.impl.Shutdown(ctx))
}

type sinkClient struct {
	c pb.SinkClient
}

var _ Sink = (*sinkClient)(nil)

func (c *sinkClient) Info(ctx context.Context) (Info, error) {
	resp, err := c.c.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus("asking for plugin info", err)
	}
	return infoFromPB(resp), nil
}

func (c *sinkClient) Configure(ctx context.Context, cfg SinkConfig) error {
	_, err := c.c.Configure(ctx, &pb.SinkConfig{Host: cfg.Host, AgentId: cfg.AgentID, OptionsJson: cfg.Options})
	return fromStatus("configuring sink", err)
}

func (c *sinkClient) Health(ctx context.Context) (Health, error) {
	resp, err := c.c.Health(ctx, &pb.HealthRequest{})
	if err != nil {
		return Health{}, fromStatus("asking sink health", err)
	}
	return healthFromPB(resp), nil
}

func (c *sinkClient) Write(ctx context.Context, b *Batch) error {
	msg, err := batchToPB(b)
	if err != nil {
		return err
	}
	_, err = c.c.Write(ctx, msg, grpc.MaxCallSendMsgSize(MaxMessageBytes))
	return fromStatus("writing to sink", err)
}

func (c *sinkClient) Shutdown(ctx context.Context) error {
	_, err := c.c.Shutdown(ctx, &pb.ShutdownRequest{})
	return fromStatus("shutting sink down", err)
}
