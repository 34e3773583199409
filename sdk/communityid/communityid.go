// Package communityid computes Community ID version 1 flow hashes
// (https://github.com/corelight/community-id-spec), the identifier Zeek, Suricata and many other
// tools attach to a conversation so that records of the same flow can be joined across tools.
//
// The hash is SHA-1 over seed, the two addresses, the protocol, a zero pad byte and, for
// transports with ports, the two ports, with the endpoints put in a canonical order so that both
// directions of a conversation hash alike. ICMP and ICMPv6 have no ports: their type and code take
// the ports' place, and message types that come in request/reply pairs are mapped so that a
// request and its reply hash alike. Hash works on a stack buffer and allocates nothing; String,
// which encodes the result for records, allocates its string.
package communityid

import (
	"crypto/sha1"
	"encoding/base64"
	"net/netip"
)

// Version is the Community ID version this package computes; it is the "1:" prefix of String.
const Version = 1

// IP protocol numbers the Community ID treats specially.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// hasPorts reports whether the protocol's hash input includes two 16-bit "ports". For ICMP and
// ICMPv6 those are the type and the mapped code (see ICMPPorts).
func hasPorts(proto uint8) bool {
	switch proto {
	case protoTCP, protoUDP, protoSCTP, protoICMP, protoICMPv6:
		return true
	}
	return false
}

// Hash computes the Community ID of a conversation from one of its packets, in either direction.
// For TCP, UDP and SCTP srcPort and dstPort are the ports; for ICMP and ICMPv6 use ICMPHash,
// which maps type and code as the specification says; other protocols ignore the ports. src and
// dst must be of the same family (4-in-6 mapped addresses are hashed as IPv4). Hash allocates
// nothing.
func Hash(seed uint16, src, dst netip.Addr, proto uint8, srcPort, dstPort uint16) [20]byte {
	return hash(seed, src, dst, proto, srcPort, dstPort, false)
}

// ICMPHash computes the Community ID of an ICMP (proto 1) or ICMPv6 (proto 58) packet from its
// type and code. Types that belong to a request/reply pair (echo, timestamp, router
// solicitation/advertisement, neighbour solicitation/advertisement, …) hash alike in both
// directions; other types are one-way and keep the packet's direction. For any other proto it is
// Hash with the type and code as ports.
func ICMPHash(seed uint16, src, dst netip.Addr, proto uint8, icmpType, icmpCode uint8) [20]byte {
	sp, dp, oneWay := ICMPPorts(proto, icmpType, icmpCode)
	return hash(seed, src, dst, proto, sp, dp, oneWay)
}

// ICMPPorts gives the "ports" the specification uses for an ICMP or ICMPv6 message: the type as
// the source port and, for a type with a counterpart (echo request ↔ echo reply and the like), the
// counterpart type as the destination port; otherwise the code, and oneWay is set, which tells the
// hash to keep the packet's direction instead of ordering the endpoints.
func ICMPPorts(proto uint8, icmpType, icmpCode uint8) (srcPort, dstPort uint16, oneWay bool) {
	var table *[256]int16
	switch proto {
	case protoICMP:
		table = &icmpCounterpart
	case protoICMPv6:
		table = &icmpv6Counterpart
	default:
		return uint16(icmpType), uint16(icmpCode), false
	}
	if c := table[icmpType]; c >= 0 {
		return uint16(icmpType), uint16(c), false
	}
	return uint16(icmpType), uint16(icmpCode), true
}

// icmpCounterpart and icmpv6Counterpart map a message type to its counterpart, -1 where there is
// none; the pairs are the specification's.
var icmpCounterpart, icmpv6Counterpart = counterparts([][2]uint8{
	{8, 0},   // echo request ↔ echo reply
	{13, 14}, // timestamp ↔ timestamp reply
	{15, 16}, // information request ↔ reply
	{10, 9},  // router solicitation ↔ advertisement
	{17, 18}, // address mask request ↔ reply
}), counterparts([][2]uint8{
	{128, 129}, // echo request ↔ echo reply
	{133, 134}, // router solicitation ↔ advertisement
	{135, 136}, // neighbour solicitation ↔ advertisement
	{130, 131}, // multicast listener query ↔ report
	{139, 140}, // node information query ↔ response (the specification's WRU pair)
	{144, 145}, // home agent address discovery request ↔ reply
})

func counterparts(pairs [][2]uint8) [256]int16 {
	var t [256]int16
	for i := range t {
		t[i] = -1
	}
	for _, p := range pairs {
		t[p[0]] = int16(p[1])
		t[p[1]] = int16(p[0])
	}
	return t
}

func hash(seed uint16, src, dst netip.Addr, proto uint8, sp, dp uint16, oneWay bool) [20]byte {
	src, dst = src.Unmap(), dst.Unmap()
	ports := hasPorts(proto)
	if !ports {
		sp, dp = 0, 0
	}
	// The endpoint that sorts first (by address bytes, then port) goes first, unless a one-way
	// ICMP message keeps the packet's direction.
	if !oneWay {
		if c := src.Compare(dst); c > 0 || (c == 0 && sp > dp) {
			src, dst, sp, dp = dst, src, dp, sp
		}
	}
	// seed(2) + two addresses (up to 16 each) + proto(1) + pad(1) + ports(4).
	var buf [2 + 16 + 16 + 1 + 1 + 4]byte
	buf[0], buf[1] = byte(seed>>8), byte(seed)
	n := 2
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		n += copy(buf[n:], a[:])
		n += copy(buf[n:], b[:])
	} else {
		a, b := src.As16(), dst.As16()
		n += copy(buf[n:], a[:])
		n += copy(buf[n:], b[:])
	}
	buf[n] = proto
	buf[n+1] = 0
	n += 2
	if ports {
		buf[n], buf[n+1], buf[n+2], buf[n+3] = byte(sp>>8), byte(sp), byte(dp>>8), byte(dp)
		n += 4
	}
	return sha1.Sum(buf[:n])
}

// String renders a hash as records carry it: "1:" followed by the standard base64 of the digest.
func String(h [20]byte) string {
	var out [2 + 28]byte // base64 of 20 bytes is 28 characters with padding
	out[0], out[1] = '0'+Version, ':'
	base64.StdEncoding.Encode(out[2:], h[:])
	return string(out[:])
}
