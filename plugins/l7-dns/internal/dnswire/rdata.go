package dnswire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// rdata sets r.Data from the record data at msg[start:end]. Names inside it may point anywhere
// in msg, but must end in place at the data's end (or, for SOA, where the fixed fields begin).
// When the data does not fit the type, r gets the generic form and BadData, and the error says
// why; the caller goes on with the next record, since the record's length still bounds it.
func (p *Parser) rdata(msg []byte, start, end int, r *Record) error {
	rd := msg[start:end]
	var err error
	switch r.Type {
	case TypeA:
		if len(rd) == 4 {
			r.Data = netip.AddrFrom4([4]byte(rd)).String()
			return nil
		}
		err = fmt.Errorf("%w: A data of %d bytes", ErrRData, len(rd))
	case TypeAAAA:
		if len(rd) == 16 {
			r.Data = netip.AddrFrom16([16]byte(rd)).String()
			return nil
		}
		err = fmt.Errorf("%w: AAAA data of %d bytes", ErrRData, len(rd))
	case TypeNS, TypeCNAME, TypePTR, TypeDNAME:
		var s string
		var next int
		if s, next, err = p.name(msg, start); err == nil {
			if next == end {
				r.Data = s
				return nil
			}
			err = errNameNotAtEnd
		}
	case TypeMX:
		b := p.text[:0]
		if len(rd) < 3 {
			err = errShort
			break
		}
		b = strconv.AppendUint(b, uint64(binary.BigEndian.Uint16(rd)), 10)
		b = append(b, ' ')
		if b, err = appendNameAt(b, msg, start+2, end); err == nil {
			p.text = b
			r.Data = string(b)
			return nil
		}
	case TypeSRV:
		b := p.text[:0]
		if len(rd) < 7 {
			err = errShort
			break
		}
		for i := 0; i < 6; i += 2 {
			b = strconv.AppendUint(b, uint64(binary.BigEndian.Uint16(rd[i:])), 10)
			b = append(b, ' ')
		}
		if b, err = appendNameAt(b, msg, start+6, end); err == nil {
			p.text = b
			r.Data = string(b)
			return nil
		}
	case TypeSOA:
		b := p.text[:0]
		var next int
		if b, next, _, err = appendName(b, msg, start); err != nil {
			break
		}
		b = append(b, ' ')
		if b, next, _, err = appendName(b, msg, next); err != nil {
			break
		}
		if next+20 != end {
			err = errNameNotAtEnd
			break
		}
		for i := next; i < end; i += 4 {
			b = append(b, ' ')
			b = strconv.AppendUint(b, uint64(binary.BigEndian.Uint32(msg[i:])), 10)
		}
		p.text = b
		r.Data = string(b)
		return nil
	case TypeTXT:
		b := p.text[:0]
		for i := 0; i < len(rd); {
			n := int(rd[i])
			if i+1+n > len(rd) {
				err = errShort
				break
			}
			if i > 0 {
				b = append(b, ' ')
			}
			b = appendQuoted(b, rd[i+1:i+1+n])
			i += 1 + n
		}
		if err == nil {
			p.text = b
			r.Data = string(b)
			return nil
		}
	default:
		r.Data = p.generic(r.Type, rd)
		return nil
	}
	r.Data, r.BadData = p.generic(r.Type, rd), true
	switch {
	case errors.Is(err, ErrRData):
		return err
	case errors.Is(err, ErrTruncated):
		// The record's bytes are all there, so a name that runs out of them is the record's
		// fault, not a cut message's.
		return fmt.Errorf("%w: %s data: name runs past the message", ErrRData, TypeString(r.Type))
	default:
		return fmt.Errorf("%w: %s data: %w", ErrRData, TypeString(r.Type), err)
	}
}

var (
	errNameNotAtEnd = errors.New("name does not end where the data does")
	errShort        = errors.New("data too short")
)

// appendNameAt appends the name at off, which must end in place exactly at end.
func appendNameAt(dst, msg []byte, off, end int) ([]byte, error) {
	dst, next, _, err := appendName(dst, msg, off)
	if err == nil && next != end {
		err = errNameNotAtEnd
	}
	return dst, err
}

// generic gives the type's mnemonic and RFC 3597's generic form of rd, with at most
// maxHexRData bytes in hex followed by "..." when there are more.
func (p *Parser) generic(typ uint16, rd []byte) string {
	const hexdigits = "0123456789abcdef"
	b := append(p.text[:0], TypeString(typ)...)
	b = append(b, ` \# `...)
	b = strconv.AppendInt(b, int64(len(rd)), 10)
	if len(rd) > 0 {
		b = append(b, ' ')
		for _, c := range rd[:min(len(rd), maxHexRData)] {
			b = append(b, hexdigits[c>>4], hexdigits[c&0xF])
		}
		if len(rd) > maxHexRData {
			b = append(b, "..."...)
		}
	}
	p.text = b
	return string(b)
}

// appendQuoted appends a character-string in presentation form: in double quotes, with a quote
// or backslash escaped and bytes outside printable ASCII as \DDD.
func appendQuoted(dst, s []byte) []byte {
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20 || c > 0x7E:
			dst = appendDecimalEscape(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
