package analysis

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// rawCodec sends bytes as they are, so a test can put anything on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func startServer(t *testing.T) *Server {
	t.Helper()
	cfg := Default()
	cfg.OTLP.GRPCListen, cfg.OTLP.HTTPListen, cfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.OTLP.MaxRequestBytes = 64 << 10
	cfg.DataDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("analysis stopped with %v", err)
		}
	})
	return srv
}

// Malformed and oversized OTLP over gRPC is refused with a status that says so; a well-formed
// request is accepted; the graph stays as it was.
func TestGRPCRefusesBadOTLP(t *testing.T) {
	srv := startServer(t)
	grpcAddr, _, api := srv.Addrs()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const method = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
	call := func(body []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var out []byte
		return conn.Invoke(ctx, method, body, &out, grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(1<<30))
	}
	if err := call([]byte{0xff, 0xff, 0xff, 0x01}); status.Code(err) == codes.OK {
		t.Error("a body that is not protobuf was accepted")
	} else {
		t.Logf("malformed: %v", err)
	}
	if err := call(bytes.Repeat([]byte{0}, 65<<10)); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized: %v, want ResourceExhausted", err)
	}
	if _, err := collogspb.NewLogsServiceClient(conn).Export(context.Background(), &collogspb.ExportLogsServiceRequest{}); err != nil {
		t.Errorf("an empty, well-formed request: %v", err)
	}
	resp, err := http.Get("http://" + api + "/api/v1/graph?since=1h")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var g struct {
		Nodes, Edges []json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil || len(g.Nodes) != 0 || len(g.Edges) != 0 {
		t.Errorf("graph after bad requests: %+v %v", g, err)
	}
	// A bad query parameter is named.
	resp2, err := http.Get("http://" + api + "/api/v1/graph?since=yesterday")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("since")) {
		t.Errorf("since=yesterday: %s %s", resp2.Status, body)
	}
}
