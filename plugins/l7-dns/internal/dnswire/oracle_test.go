package dnswire

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// This file is the independent side of the tests: messages are built with dnsmessage's Builder
// and read back with its Parser, and the text the parser under test should give is derived
// from dnsmessage's typed values by the presentation rules of RFC 1035 section 5.1, not by the
// code under test.

// build encodes m with dnsmessage's Builder, with name compression on.
func build(tb testing.TB, m dnsmessage.Message) []byte {
	tb.Helper()
	msg, err := buildErr(m)
	if err != nil {
		tb.Fatalf("building a test message with dnsmessage: %v", err)
	}
	return msg
}

func buildErr(m dnsmessage.Message) ([]byte, error) {
	return buildWith(m, true)
}

func buildWith(m dnsmessage.Message, compress bool) ([]byte, error) {
	b := dnsmessage.NewBuilder(nil, m.Header)
	if compress {
		b.EnableCompression()
	}
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, q := range m.Questions {
		if err := b.Question(q); err != nil {
			return nil, err
		}
	}
	sections := []struct {
		start func() error
		rs    []dnsmessage.Resource
	}{{b.StartAnswers, m.Answers}, {b.StartAuthorities, m.Authorities}, {b.StartAdditionals, m.Additionals}}
	for _, s := range sections {
		if err := s.start(); err != nil {
			return nil, err
		}
		for _, r := range s.rs {
			if err := addResource(&b, r); err != nil {
				return nil, fmt.Errorf("adding %v: %w", r.Header.Type, err)
			}
		}
	}
	return b.Finish()
}

func addResource(b *dnsmessage.Builder, r dnsmessage.Resource) error {
	switch body := r.Body.(type) {
	case *dnsmessage.AResource:
		return b.AResource(r.Header, *body)
	case *dnsmessage.AAAAResource:
		return b.AAAAResource(r.Header, *body)
	case *dnsmessage.CNAMEResource:
		return b.CNAMEResource(r.Header, *body)
	case *dnsmessage.NSResource:
		return b.NSResource(r.Header, *body)
	case *dnsmessage.PTRResource:
		return b.PTRResource(r.Header, *body)
	case *dnsmessage.MXResource:
		return b.MXResource(r.Header, *body)
	case *dnsmessage.TXTResource:
		return b.TXTResource(r.Header, *body)
	case *dnsmessage.SRVResource:
		return b.SRVResource(r.Header, *body)
	case *dnsmessage.SOAResource:
		return b.SOAResource(r.Header, *body)
	case *dnsmessage.OPTResource:
		return b.OPTResource(r.Header, *body)
	case *dnsmessage.UnknownResource:
		return b.UnknownResource(r.Header, *body)
	}
	return fmt.Errorf("no builder for %T", r.Body)
}

// oracle parses msg with dnsmessage; ok is false unless the header, every question and every
// answer were accepted.
func oracle(msg []byte) (h dnsmessage.Header, qs []dnsmessage.Question, as []dnsmessage.Resource, ok bool) {
	var p dnsmessage.Parser
	var err error
	if h, err = p.Start(msg); err != nil {
		return h, nil, nil, false
	}
	if qs, err = p.AllQuestions(); err != nil {
		return h, nil, nil, false
	}
	if as, err = p.AllAnswers(); err != nil {
		return h, qs, nil, false
	}
	return h, qs, as, true
}

// present gives a dnsmessage name in presentation form without the trailing dot. dnsmessage
// refuses labels holding a dot, so splitting its text at dots gives back the labels.
func present(n dnsmessage.Name) string {
	s := strings.TrimSuffix(n.String(), ".")
	if s == "" {
		return "."
	}
	labels := strings.Split(s, ".")
	for i, l := range labels {
		var b strings.Builder
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case c == '\\':
				b.WriteString(`\\`)
			case c <= ' ' || c >= 0x7F:
				fmt.Fprintf(&b, `\%03d`, c)
			default:
				b.WriteByte(c)
			}
		}
		labels[i] = b.String()
	}
	return strings.Join(labels, ".")
}

// quoted gives a character-string in presentation form.
func quoted(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c >= 0x7F:
			fmt.Fprintf(&b, `\%03d`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// oracleText is the text a record's data should have, from dnsmessage's typed value; ok is false
// for types whose text the parser does not build (it prints those in the generic form).
func oracleText(r dnsmessage.Resource) (string, bool) {
	switch b := r.Body.(type) {
	case *dnsmessage.AResource:
		return netip.AddrFrom4(b.A).String(), true
	case *dnsmessage.AAAAResource:
		return netip.AddrFrom16(b.AAAA).String(), true
	case *dnsmessage.CNAMEResource:
		return present(b.CNAME), true
	case *dnsmessage.NSResource:
		return present(b.NS), true
	case *dnsmessage.PTRResource:
		return present(b.PTR), true
	case *dnsmessage.MXResource:
		return fmt.Sprintf("%d %s", b.Pref, present(b.MX)), true
	case *dnsmessage.SRVResource:
		return fmt.Sprintf("%d %d %d %s", b.Priority, b.Weight, b.Port, present(b.Target)), true
	case *dnsmessage.SOAResource:
		return fmt.Sprintf("%s %s %d %d %d %d %d", present(b.NS), present(b.MBox), b.Serial, b.Refresh,
			b.Retry, b.Expire, b.MinTTL), true
	case *dnsmessage.TXTResource:
		parts := make([]string, len(b.TXT))
		for i, s := range b.TXT {
			parts[i] = quoted(s)
		}
		return strings.Join(parts, " "), true
	}
	return "", false
}
