package mix

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// principal is who makes a request: the token's name (the author of what they change) and role.
type principal struct {
	Name string
	Role string
}

var errUnauthenticated = errors.New("a valid bearer token is required (Authorization: Bearer <token>)")

type authorizer struct {
	tokens []Token
	mtls   bool
}

// identify finds the principal of a request from its bearer token. Without configured tokens
// every request is the local operator (mix then listens on loopback only, or demands client
// certificates, which TLS has already checked).
func (a *authorizer) identify(authorization string, certCN string) (principal, error) {
	if len(a.tokens) == 0 {
		if a.mtls && certCN != "" {
			return principal{Name: "cert:" + certCN, Role: RoleAdmin}, nil
		}
		return principal{Name: "local", Role: RoleAdmin}, nil
	}
	token, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok || token == "" {
		return principal{}, errUnauthenticated
	}
	for _, t := range a.tokens {
		// Constant time, so the comparison does not tell how much of a guess was right.
		if subtle.ConstantTimeCompare([]byte(t.Token), []byte(token)) == 1 {
			return principal{Name: t.Name, Role: t.Role}, nil
		}
	}
	return principal{}, errors.New("the bearer token is not one mix knows")
}

// allows reports whether a role may perform an operation of the given class.
func allows(role, class string) bool {
	switch class {
	case "watch":
		return role == RoleAgent || role == RoleAdmin
	case "read":
		return role == RoleViewer || role == RoleAdmin
	case "write":
		return role == RoleAdmin
	}
	return false
}

// methodClass classifies the gRPC methods.
var methodClass = map[string]string{
	"/quanyu.mix.v1.Mix/Watch":   "watch",
	"/quanyu.mix.v1.Mix/Apply":   "write",
	"/quanyu.mix.v1.Mix/Delete":  "write",
	"/quanyu.mix.v1.Mix/Get":     "read",
	"/quanyu.mix.v1.Mix/List":    "read",
	"/quanyu.mix.v1.Mix/History": "read",
	"/quanyu.mix.v1.Mix/Agents":  "read",
}

type principalKey struct{}

func principalOf(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

func certCNFromGRPC(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		return ti.State.PeerCertificates[0].Subject.CommonName
	}
	return ""
}

func (a *authorizer) grpcCheck(ctx context.Context, method string) (context.Context, error) {
	var authorization string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			authorization = v[0]
		}
	}
	p, err := a.identify(authorization, certCNFromGRPC(ctx))
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	class, ok := methodClass[method]
	if !ok || !allows(p.Role, class) {
		return nil, status.Errorf(codes.PermissionDenied, "%s (role %s) may not call %s", p.Name, p.Role, method)
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

func (a *authorizer) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.grpcCheck(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s authedStream) Context() context.Context { return s.ctx }

func (a *authorizer) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.grpcCheck(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, authedStream{ss, ctx})
	}
}

// http wraps a handler of the given class with the same rules.
func (a *authorizer) http(class string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cn := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		p, err := a.identify(r.Header.Get("Authorization"), cn)
		if err != nil {
			writeError(w, http.StatusUnauthorized, err, nil)
			return
		}
		if !allows(p.Role, class) {
			writeError(w, http.StatusForbidden, fmt.Errorf("%s (role %s) may not %s", p.Name, p.Role, class), nil)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

// certs serves the server certificate and the client CA, reading the files again when they
// change (certificates are renewed in place without restarting mix).
type certs struct {
	cfg TLSConfig

	mu       sync.Mutex
	checked  time.Time
	certMod  time.Time
	caMod    time.Time
	cert     *tls.Certificate
	clientCA *x509.CertPool
}

func modTime(path string) time.Time {
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// load reads the files if they changed since the last read (looked at most once a second).
func (c *certs) load() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && time.Since(c.checked) < time.Second {
		return nil
	}
	c.checked = time.Now()
	if m := later(modTime(c.cfg.Cert), modTime(c.cfg.Key)); c.cert == nil || m.After(c.certMod) {
		cert, err := tls.LoadX509KeyPair(c.cfg.Cert, c.cfg.Key)
		if err != nil {
			if c.cert != nil {
				return nil // a half-written renewal: keep serving the previous pair
			}
			return fmt.Errorf("reading the TLS certificate %s and key %s: %w", c.cfg.Cert, c.cfg.Key, err)
		}
		c.cert, c.certMod = &cert, m
	}
	if c.cfg.ClientCA != "" {
		if m := modTime(c.cfg.ClientCA); c.clientCA == nil || m.After(c.caMod) {
			raw, err := os.ReadFile(c.cfg.ClientCA)
			if err != nil {
				if c.clientCA != nil {
					return nil
				}
				return fmt.Errorf("reading the client CA %s: %w", c.cfg.ClientCA, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(raw) {
				if c.clientCA != nil {
					return nil
				}
				return fmt.Errorf("the client CA %s holds no PEM certificate", c.cfg.ClientCA)
			}
			c.clientCA, c.caMod = pool, m
		}
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// tlsConfig gives the server's TLS configuration, or nil without TLS.
func (c *certs) tlsConfig() (*tls.Config, error) {
	if c.cfg.Cert == "" {
		return nil, nil
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if err := c.load(); err != nil {
				return nil, err
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*c.cert},
				NextProtos: []string{"h2", "http/1.1"}}
			if c.clientCA != nil {
				cfg.ClientCAs = c.clientCA
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return cfg, nil
		},
	}, nil
}
