package dnswire

// name reads the name at off as text and returns it with the offset just past it in place (a
// pointer ends a name in place, wherever it leads). A name that is only a pointer to a name
// read before in this message reuses that name's string: answers nearly always point at the
// question, and this keeps a typical response down to one string per distinct name.
func (p *Parser) name(msg []byte, off int) (string, int, error) {
	if off+1 < len(msg) && msg[off]&0xC0 == 0xC0 {
		target := int(msg[off]&0x3F)<<8 | int(msg[off+1])
		for i := range min(p.nname, nameCacheSize) {
			if c := &p.names[i]; c.off == target && c.hops < maxPointers {
				return c.s, off + 2, nil
			}
		}
	}
	text, next, hops, err := appendName(p.text[:0], msg, off)
	p.text = text
	if err != nil {
		return "", 0, err
	}
	s := string(text)
	p.names[p.nname%nameCacheSize] = cachedName{off: off, hops: hops, s: s}
	p.nname++
	return s, next, nil
}

// appendName appends the presentation form of the name at off to dst: labels joined by dots,
// no trailing dot, "." for the root, and the escapes of RFC 1035 section 5.1 for a dot or
// backslash inside a label and for bytes outside printable ASCII (as \DDD), so that a label
// holding a dot cannot pass for two labels and the text is always ASCII. It returns the offset
// just past the name in place and the number of pointers followed.
func appendName(dst, msg []byte, off int) ([]byte, int, int, error) {
	start := len(dst)
	pos, next, hops, wire := off, -1, 0, 0
	for {
		if pos >= len(msg) {
			return dst, 0, hops, ErrTruncated
		}
		c := int(msg[pos])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				if next < 0 {
					next = pos + 1
				}
				if len(dst) == start {
					dst = append(dst, '.')
				}
				return dst, next, hops, nil
			}
			end := pos + 1 + c
			if end > len(msg) {
				return dst, 0, hops, ErrTruncated
			}
			// The label, its length byte and the terminating zero still to come must fit.
			if wire += c + 1; wire+1 > maxNameWire {
				return dst, 0, hops, ErrNameTooLong
			}
			if len(dst) > start {
				dst = append(dst, '.')
			}
			dst = appendLabel(dst, msg[pos+1:end])
			pos = end
		case 0xC0:
			if pos+1 >= len(msg) {
				return dst, 0, hops, ErrTruncated
			}
			if next < 0 {
				next = pos + 2
			}
			if hops++; hops > maxPointers {
				return dst, 0, hops, ErrPointerLoop
			}
			pos = (c&0x3F)<<8 | int(msg[pos+1])
		default:
			return dst, 0, hops, ErrLabelType
		}
	}
}

// skipName returns the offset just past the name at off without following its pointer, the way
// a reader skips a record it does not keep.
func skipName(msg []byte, off int) (int, error) {
	for pos := off; ; {
		if pos >= len(msg) {
			return 0, ErrTruncated
		}
		c := int(msg[pos])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return pos + 1, nil
			}
			pos += 1 + c
		case 0xC0:
			if pos+1 >= len(msg) {
				return 0, ErrTruncated
			}
			return pos + 2, nil
		default:
			return 0, ErrLabelType
		}
	}
}

func appendLabel(dst, label []byte) []byte {
	plain := true
	for _, b := range label {
		if b == '.' || b == '\\' || b < 0x21 || b > 0x7E {
			plain = false
			break
		}
	}
	if plain {
		return append(dst, label...)
	}
	for _, b := range label {
		switch {
		case b == '.' || b == '\\':
			dst = append(dst, '\\', b)
		case b < 0x21 || b > 0x7E:
			dst = appendDecimalEscape(dst, b)
		default:
			dst = append(dst, b)
		}
	}
	return dst
}

// appendDecimalEscape appends \DDD, the presentation escape for any byte.
func appendDecimalEscape(dst []byte, b byte) []byte {
	return append(dst, '\\', '0'+b/100, '0'+b/10%10, '0'+b%10)
}
