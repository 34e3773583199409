package lab

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// startDNS serves the lab's zone on a loopback port (UDP and TCP) and counts the queries each
// way.
func startDNS(t *testing.T) (addr string, udp, tcp *atomic.Int64) {
	t.Helper()
	s, err := newDNSServer("lab", []string{"web=10.177.0.10", "api=10.177.0.20", "DNS=10.177.0.53"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Skipf("the UDP port is taken for TCP: %v", err)
	}
	udp, tcp = &atomic.Int64{}, &atomic.Int64{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.serve(ctx, countingPacketConn{pc, udp}, countingListener{ln, tcp})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return pc.LocalAddr().String(), udp, tcp
}

type countingPacketConn struct {
	net.PacketConn
	n *atomic.Int64
}

func (c countingPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.n.Add(1)
	}
	return n, a, err
}

func TestNewDNSServerRejectsBadRecords(t *testing.T) {
	for _, r := range []string{"web", "web=", "=10.0.0.1", "web=fd00::1", "web=nope"} {
		if _, err := newDNSServer("lab", []string{r}, nil); err == nil {
			t.Errorf("record %q accepted", r)
		}
	}
}

// TestDNSAnswers asks with the Go resolver, an independent client, over UDP and TCP.
func TestDNSAnswers(t *testing.T) {
	addr, _, _ := startDNS(t)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := r.LookupNetIP(ctx, "ip4", "api.lab.")
			if err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("10.177.0.20") {
				t.Errorf("api.lab: %v %v, want 10.177.0.20", got, err)
			}
			if got, err := r.LookupNetIP(ctx, "ip4", "dns.LAB."); err != nil || len(got) != 1 {
				t.Errorf("dns.LAB (names are case-insensitive): %v %v", got, err)
			}
			_, err = r.LookupNetIP(ctx, "ip4", "nope.lab.")
			var dnsErr *net.DNSError
			if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
				t.Errorf("nope.lab: %v, want not found", err)
			}
			// Both A and AAAA: the AAAA query gets NODATA, which must not fail the lookup.
			if got, err := r.LookupNetIP(ctx, "ip", "web.lab."); err != nil || len(got) != 1 {
				t.Errorf("web.lab, A and AAAA: %v %v", got, err)
			}
		})
	}
}

// TestDNSAnswerCodes checks the response codes and sections message by message.
func TestDNSAnswerCodes(t *testing.T) {
	s, err := newDNSServer("lab", []string{"web=10.177.0.10"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		typ     dnsmessage.Type
		rcode   dnsmessage.RCode
		answers int
	}{
		{"web.lab.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, 1},
		{"web.lab.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, 0},
		{"web.lab.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, 0},
		{"api.lab.", dnsmessage.TypeA, dnsmessage.RCodeNameError, 0},
		{"example.com.", dnsmessage.TypeA, dnsmessage.RCodeNameError, 0},
	} {
		q, err := buildQuery(0x1234, tc.name, tc.typ)
		if err != nil {
			t.Fatal(err)
		}
		raw, ok := s.answer(q)
		if !ok {
			t.Fatalf("%s %s: no answer", tc.name, tc.typ)
		}
		var m dnsmessage.Message
		if err := m.Unpack(raw); err != nil {
			t.Fatalf("%s %s: answer does not parse: %v", tc.name, tc.typ, err)
		}
		if m.ID != 0x1234 || !m.Response || !m.Authoritative || m.RCode != tc.rcode || len(m.Answers) != tc.answers ||
			len(m.Questions) != 1 || m.Questions[0].Name.String() != tc.name {
			t.Errorf("%s %s: %+v", tc.name, tc.typ, m)
		}
		if tc.answers == 1 {
			a, ok := m.Answers[0].Body.(*dnsmessage.AResource)
			if !ok || a.A != [4]byte{10, 177, 0, 10} || m.Answers[0].Header.TTL != dnsTTL {
				t.Errorf("%s: answer %+v", tc.name, m.Answers[0])
			}
		}
	}
	// No question is a format error; a response or garbage gets no answer at all.
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7})
	empty, _ := b.Finish()
	if raw, ok := s.answer(empty); !ok {
		t.Error("no answer to a query without a question")
	} else {
		var m dnsmessage.Message
		if err := m.Unpack(raw); err != nil || m.RCode != dnsmessage.RCodeFormatError {
			t.Errorf("query without a question: %+v %v, want FORMERR", m.Header, err)
		}
	}
	if _, ok := s.answer([]byte{1, 2, 3}); ok {
		t.Error("garbage answered")
	}
}

// TestResolverCachesAndUsesTCP: the services' resolver asks once per name per ttl, and every
// n-th query goes over TCP.
func TestResolverCachesAndUsesTCP(t *testing.T) {
	addr, udp, tcp := startDNS(t)
	now := time.Unix(1000, 0)
	r := newResolver(addr, 10*time.Second, 2)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	for range 3 {
		a, err := r.lookup(ctx, "web.lab")
		if err != nil || a != netip.MustParseAddr("10.177.0.10") {
			t.Fatalf("web.lab: %v %v", a, err)
		}
	}
	if n := udp.Load() + tcp.Load(); n != 1 {
		t.Errorf("%d queries for three lookups within the ttl, want 1", n)
	}
	now = now.Add(10 * time.Second)
	if _, err := r.lookup(ctx, "web.lab"); err != nil {
		t.Fatal(err)
	}
	if udp.Load() != 1 || tcp.Load() != 1 {
		t.Errorf("after the ttl: %d over UDP, %d connections over TCP; want 1 and 1", udp.Load(), tcp.Load())
	}
	if a, err := r.lookup(ctx, "10.1.2.3"); err != nil || a != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("an address looks up as itself: %v %v", a, err)
	}
	if _, err := r.lookup(ctx, "nope.lab"); err == nil {
		t.Error("nope.lab resolved")
	}
}
