package mix

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// DialOptions say how a client (an agent, analysis, the CLI) reaches mix.
type DialOptions struct {
	Address string // host:port of mix's gRPC listener
	Token   string // bearer token
	// CA turns TLS on: the CA file mix's certificate must chain to.
	CA string
	// Cert and Key are a client certificate, for mTLS.
	Cert, Key  string
	ServerName string
}

// bearer puts the token on every call. Over plaintext it is only allowed to loopback addresses,
// which mix's own configuration check enforces on the server side.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// Dial makes a gRPC connection to mix (connecting lazily, as gRPC does).
func Dial(o DialOptions) (*grpc.ClientConn, error) {
	if o.Address == "" {
		return nil, fmt.Errorf("no mix address")
	}
	creds := insecure.NewCredentials()
	if o.CA != "" || o.Cert != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
		if o.CA != "" {
			raw, err := os.ReadFile(o.CA)
			if err != nil {
				return nil, fmt.Errorf("reading mix's CA %s: %w", o.CA, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(raw) {
				return nil, fmt.Errorf("mix's CA %s holds no PEM certificate", o.CA)
			}
			cfg.RootCAs = pool
		}
		if o.Cert != "" {
			cert, err := tls.LoadX509KeyPair(o.Cert, o.Key)
			if err != nil {
				return nil, fmt.Errorf("reading the client certificate %s: %w", o.Cert, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxBody), grpc.MaxCallSendMsgSize(maxBody)),
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(o.Token)))
	}
	conn, err := grpc.NewClient(o.Address, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to mix at %s: %w", o.Address, err)
	}
	return conn, nil
}
