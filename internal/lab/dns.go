package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsTTL is the TTL of the lab's answers; the services keep answers for --dns-ttl themselves.
const dnsTTL = 10

// dnsServer answers for one zone: A queries for its names with their addresses, other types
// for its names with no answer (NODATA, so a resolver asking for AAAA too is not told the name
// does not exist), and NXDOMAIN for any other name. It is authoritative and does not recurse.
type dnsServer struct {
	records map[string]netip.Addr // by lowercase absolute name ("web.lab.")
	log     *slog.Logger
}

// newDNSServer reads records of the form name=ip, name without the domain.
func newDNSServer(domain string, records []string, log *slog.Logger) (*dnsServer, error) {
	s := &dnsServer{records: map[string]netip.Addr{}, log: log}
	for _, r := range records {
		name, addr, ok := strings.Cut(r, "=")
		a, err := netip.ParseAddr(addr)
		if !ok || name == "" || err != nil || !a.Is4() {
			return nil, fmt.Errorf("--record %q: want name=IPv4 address", r)
		}
		s.records[strings.ToLower(name+"."+domain+".")] = a
	}
	return s, nil
}

// answer builds the response to a query; ok is false for a message not worth answering (not a
// query, or too broken to read its header).
func (s *dnsServer) answer(req []byte) (resp []byte, ok bool) {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil || h.Response {
		return nil, false
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, Authoritative: true,
		RecursionDesired: h.RecursionDesired}
	q, err := p.Question()
	var answer *dnsmessage.AResource
	switch {
	case err != nil:
		rh.RCode = dnsmessage.RCodeFormatError
	case h.OpCode != 0:
		rh.RCode = dnsmessage.RCodeNotImplemented
	default:
		a, known := s.records[strings.ToLower(q.Name.String())]
		switch {
		case !known:
			rh.RCode = dnsmessage.RCodeNameError
		case q.Class == dnsmessage.ClassINET && (q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL):
			answer = &dnsmessage.AResource{A: a.As4()}
		}
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	if rh.RCode != dnsmessage.RCodeFormatError {
		if err := b.Question(q); err != nil {
			return nil, false
		}
	}
	if answer != nil {
		if err := b.StartAnswers(); err != nil {
			return nil, false
		}
		rr := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		if err := b.AResource(rr, *answer); err != nil {
			return nil, false
		}
	}
	out, err := b.Finish()
	return out, err == nil
}

// runDNS serves the zone over UDP and TCP on the same port.
func runDNS(ctx context.Context, c serveConfig, log *slog.Logger) error {
	s, err := newDNSServer("lab", c.records, log)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", c.listen)
	if err != nil {
		return fmt.Errorf("listening on udp %s: %w", c.listen, err)
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("listening on tcp %s: %w", c.listen, err)
	}
	log.Info("serving", "addr", c.listen, "records", len(s.records))
	return s.serve(ctx, pc, ln)
}

// serve answers on pc and ln until ctx ends.
func (s *dnsServer) serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		_ = pc.Close()
		_ = ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.serveTCP(ctx, ln)
	}()
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading a UDP query: %w", err)
		}
		if resp, ok := s.answer(buf[:n]); ok {
			_, _ = pc.WriteTo(resp, from)
		}
	}
}

// serveTCP answers length-prefixed queries (RFC 1035 section 4.2.2), several per connection.
func (s *dnsServer) serveTCP(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("accepting a TCP connection", "err", err)
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
			defer stop()
			for {
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				var l [2]byte
				if _, err := io.ReadFull(conn, l[:]); err != nil {
					return
				}
				req := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(conn, req); err != nil {
					return
				}
				resp, ok := s.answer(req)
				if !ok {
					return
				}
				out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
				if _, err := conn.Write(append(out, resp...)); err != nil {
					return
				}
			}
		}()
	}
}
