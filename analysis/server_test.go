package analysis

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix"
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

// The UI reaches mix's admin API through analysis: mix's answers come back as they are (a 400
// naming the bad field included), with the configured token, and an unreachable mix is a 502.
func TestMixProxy(t *testing.T) {
	mcfg := mix.Default()
	mcfg.Listen, mcfg.HTTPListen, mcfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	mcfg.Tokens = []mix.Token{{Name: "ui", Token: "ui-admin-token-0123456789", Role: mix.RoleAdmin}}
	mixCtx, stopMix := context.WithCancel(context.Background())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := mix.New(mixCtx, mcfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	mixDone := make(chan error, 1)
	go func() { mixDone <- m.Run(mixCtx) }()
	mixStopped := false
	t.Cleanup(func() {
		if !mixStopped {
			stopMix()
			<-mixDone
		}
	})
	ctx, cancel := context.WithCancel(context.Background())

	cfg := Default()
	cfg.OTLP.GRPCListen, cfg.OTLP.HTTPListen, cfg.HTTPListen = "", "", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Mix.HTTPAddress, cfg.Mix.AdminToken = m.HTTPAddr(), "ui-admin-token-0123456789"
	srv, err := New(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	_, _, api := srv.Addrs()

	post := func(body string) (int, string) {
		resp, err := http.Post("http://"+api+"/api/v1/mix/subscriptions", "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	if code, body := post(`{"id":"bad","spec":{"L4":["99999"]}}`); code != http.StatusBadRequest || !bytes.Contains([]byte(body), []byte(`"path"`)) {
		t.Errorf("invalid subscription: %d %s; want 400 with the field named", code, body)
	}
	if code, body := post(`{"id":"web","spec":{"L4":["80"]}}`); code/100 != 2 {
		t.Errorf("valid subscription: %d %s", code, body)
	}
	resp, err := http.Get("http://" + api + "/api/v1/mix/subscriptions")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(raw, []byte(`"web"`)) {
		t.Errorf("list through the proxy: %s %s", resp.Status, raw)
	}

	// mix gone: a 502 that says what could not be reached.
	stopMix()
	<-mixDone
	mixStopped = true
	resp, err = http.Get("http://" + api + "/api/v1/mix/agents")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !bytes.Contains(raw, []byte("cannot reach mix")) {
		t.Errorf("after mix stopped: %s %s; want 502 saying mix cannot be reached", resp.Status, raw)
	}
}

// The UI is served from the binary: the page, its script, client routes; nothing else.
func TestServesUI(t *testing.T) {
	srv := startServer(t)
	_, _, api := srv.Addrs()
	get := func(path string) (int, string, string) {
		resp, err := http.Get("http://" + api + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(raw)
	}
	for _, path := range []string{"/", "/flows"} {
		if code, ct, body := get(path); code != http.StatusOK || !bytes.Contains([]byte(ct), []byte("text/html")) || !bytes.Contains([]byte(body), []byte("app.js")) {
			t.Errorf("GET %s: %d %s", path, code, ct)
		}
	}
	if code, ct, _ := get("/app.js"); code != http.StatusOK || !bytes.Contains([]byte(ct), []byte("javascript")) {
		t.Errorf("GET /app.js: %d %s", code, ct)
	}
	if code, _, _ := get("/missing.js"); code != http.StatusNotFound {
		t.Errorf("GET /missing.js: %d, want 404", code)
	}
	if code, _, body := get("/api/v1/nothing"); code != http.StatusNotFound || !bytes.Contains([]byte(body), []byte("no API")) {
		t.Errorf("GET /api/v1/nothing: %d %s", code, body)
	}
}

// The alert API answers an empty history plainly, and names a bad parameter.
func TestAlertAPIParameters(t *testing.T) {
	srv := startServer(t)
	_, _, api := srv.Addrs()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + api + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/api/v1/alerts", 200, `{"active":[],"history":[]}`},
		{"/api/v1/events?since=1h&limit=5", 200, `{"events":[]}`},
		{"/api/v1/forecasts?target=app:api", 200, `{"forecasts":[]}`},
		{"/api/v1/alerts?state=burning", 400, `state: \"burning\" is not firing or resolved`},
		{"/api/v1/alerts?since=-1h", 400, "since"},
		{"/api/v1/events?limit=0", 400, "limit"},
		{"/api/v1/forecasts", 400, "target: required"},
		{"/api/v1/alerts/nope-1", 404, `no alert \"nope-1\"`},
		{"/favicon.ico", 204, ""},
	} {
		code, body := get(c.path)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("GET %s: %d %s; want %d with %q", c.path, code, body, c.code, c.body)
		}
	}
}
