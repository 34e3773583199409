// Package packet decodes the headers of an Ethernet frame into a reusable Packet without
// allocating: the capture loop calls Decode once per frame on one Packet, and everything the flow
// table needs (L2 addresses and VLAN tags, the IP header, the transport ports and TCP state) is
// read straight from the frame bytes.
//
// The parser walks Ethernet, up to two 802.1Q/802.1ad tags, then ARP (recognised only), IPv4 or
// IPv6 (with a bounded chain of extension headers), then TCP, UDP, SCTP, ICMP or ICMPv6. IP
// lengths come from the IP header, never from the captured length, because a capture is cut at a
// snap length. A bad frame gives one of a small set of reasons (Error); it never panics and never
// allocates, so a reason can be counted per frame.
package packet

import (
	"encoding/binary"
	"net/netip"
)

// Kind is what a frame carries at the network layer.
type Kind uint8

// Frame kinds.
const (
	KindOther Kind = iota // neither IP nor ARP (LLDP, STP, 802.3 LLC, …): counted as non-IP
	KindARP               // recognised, not parsed further
	KindIPv4
	KindIPv6
)

func (k Kind) String() string {
	switch k {
	case KindARP:
		return "arp"
	case KindIPv4:
		return "ipv4"
	case KindIPv6:
		return "ipv6"
	}
	return "other"
}

// EtherTypes the parser knows.
const (
	EtherTypeIPv4   = 0x0800
	EtherTypeARP    = 0x0806
	EtherTypeVLAN   = 0x8100 // 802.1Q customer tag
	EtherTypeQinQ   = 0x88a8 // 802.1ad service tag
	EtherTypeQinQ91 = 0x9100 // pre-standard service tag, still common on switches
	EtherTypeIPv6   = 0x86dd
)

// IP protocol numbers the parser looks into.
const (
	ProtoHopByHop = 0
	ProtoICMP     = 1
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDestOpts = 60
	ProtoSCTP     = 132
)

// Limits that keep a hostile frame from making the parser loop.
const (
	// MaxFrameVLANs is how many VLAN tags are read from the frame itself.
	MaxFrameVLANs = 2
	// MaxVLANs is the room in Packet.VLANs: an outer tag the capture already stripped, plus the
	// tags left in the frame.
	MaxVLANs = MaxFrameVLANs + 1
	// MaxIPv6ExtHeaders bounds the extension-header chain; a longer chain is an error, which also
	// stops header loops.
	MaxIPv6ExtHeaders = 8
	// NoVLAN tells Decode that the capture stripped no VLAN tag.
	NoVLAN = -1
)

// Error is why a frame could not be decoded. The zero value, OK, means it could. Names are stable
// (String) because callers count them as "parse_error.<name>".
type Error uint8

// Decode errors.
const (
	OK Error = iota
	ErrTruncatedEthernet
	ErrTruncatedVLAN
	ErrTooManyVLANs
	ErrTruncatedIPv4
	ErrBadIPVersion
	ErrBadIPv4HeaderLength
	ErrBadIPv4TotalLength
	ErrTruncatedIPv6
	ErrTooManyIPv6Ext
	ErrTruncatedIPv6Ext
	ErrTruncatedTCP
	ErrBadTCPOffset
	ErrTruncatedUDP
	ErrTruncatedSCTP
	ErrTruncatedICMP
	// NumErrors is one more than the largest Error: callers size counter arrays with it.
	NumErrors
)

var errorNames = [NumErrors]string{
	OK:                     "ok",
	ErrTruncatedEthernet:   "truncated_ethernet",
	ErrTruncatedVLAN:       "truncated_vlan",
	ErrTooManyVLANs:        "too_many_vlans",
	ErrTruncatedIPv4:       "truncated_ipv4",
	ErrBadIPVersion:        "bad_ip_version",
	ErrBadIPv4HeaderLength: "bad_ipv4_header_length",
	ErrBadIPv4TotalLength:  "bad_ipv4_total_length",
	ErrTruncatedIPv6:       "truncated_ipv6",
	ErrTooManyIPv6Ext:      "too_many_ipv6_ext",
	ErrTruncatedIPv6Ext:    "truncated_ipv6_ext",
	ErrTruncatedTCP:        "truncated_tcp",
	ErrBadTCPOffset:        "bad_tcp_offset",
	ErrTruncatedUDP:        "truncated_udp",
	ErrTruncatedSCTP:       "truncated_sctp",
	ErrTruncatedICMP:       "truncated_icmp",
}

// String gives the reason's stable snake_case name.
func (e Error) String() string {
	if e < NumErrors {
		return errorNames[e]
	}
	return "unknown"
}

// Error makes a reason usable as an error value where one is wanted (it is not returned as one,
// so that checking it costs no interface conversion on the hot path).
func (e Error) Error() string { return "decoding frame: " + e.String() }

// Packet is one decoded frame. Decode overwrites every field, so one Packet serves a whole
// capture. Offsets and lengths are into the frame given to Decode; the Packet keeps no reference
// to it.
type Packet struct {
	Kind Kind

	DstMAC, SrcMAC [6]byte
	// VLANs holds the VLAN ids, outer first (a tag the capture stripped comes first); NumVLANs
	// says how many are valid.
	VLANs    [MaxVLANs]uint16
	NumVLANs int
	// EtherType is the type after the VLAN tags.
	EtherType uint16

	// L3Offset is where the IP (or ARP) header starts.
	L3Offset int
	Src, Dst netip.Addr
	// Protocol is the upper-layer protocol: for IPv6, the one after the extension headers.
	Protocol uint8
	// IPBytes is the packet's length on the wire by its IP header (IPv4 total length; IPv6
	// payload length + 40), whatever the capture kept. Only where the header gives no length (an
	// IPv4 total length of 0, as segmentation offload leaves it; an IPv6 jumbogram) is it the
	// captured length.
	IPBytes int
	// IPHeaderLen is the IPv4 header with options, or the IPv6 header with its extension headers.
	IPHeaderLen int
	TTL         uint8 // IPv4 TTL or IPv6 hop limit

	// Fragment information: Fragment is set for any fragment (including an IPv6 atomic fragment,
	// one with a fragment header at offset 0 and no more fragments to follow). FragOffset is in
	// bytes. FragID is the IPv4 identification or the IPv6 fragment identification.
	Fragment      bool
	MoreFragments bool
	FragOffset    uint16
	FragID        uint32

	// Transport header fields; ports are 0 where the transport has none or the packet is a
	// non-first fragment.
	SrcPort, DstPort uint16
	TCPSeq, TCPAck   uint32
	TCPFlags         uint8
	TCPWindow        uint16
	ICMPType         uint8
	ICMPCode         uint8

	// L4Offset and L4Len locate the transport header within the captured frame (L4Len is 0 for a
	// non-first fragment or a protocol the parser does not read). PayloadOffset and PayloadLen
	// locate what follows it, as far as the capture kept it; PayloadWireLen is the payload's
	// length by the IP header, which is more than PayloadLen when the capture was cut.
	L4Offset       int
	L4Len          int
	PayloadOffset  int
	PayloadLen     int
	PayloadWireLen int
}

// NonFirstFragment reports whether the packet is a fragment other than the first: its transport
// header is in another packet.
func (p *Packet) NonFirstFragment() bool { return p.FragOffset != 0 }

// FirstFragment reports whether the packet starts a fragmented datagram (offset 0, more to come).
func (p *Packet) FirstFragment() bool { return p.FragOffset == 0 && p.MoreFragments }

// Decode parses an Ethernet frame. outerVLAN is a VLAN id the capture already took off the frame
// (AF_PACKET moves the outer tag into its metadata) or NoVLAN; it is reported first. On an error
// the fields decoded so far stay set, which lets callers tell where a frame went wrong.
func (p *Packet) Decode(frame []byte, outerVLAN int) Error {
	*p = Packet{}
	if outerVLAN >= 0 {
		p.VLANs[0] = uint16(outerVLAN) & 0x0fff
		p.NumVLANs = 1
	}
	if len(frame) < 14 {
		return ErrTruncatedEthernet
	}
	copy(p.DstMAC[:], frame[0:6])
	copy(p.SrcMAC[:], frame[6:12])
	etherType := binary.BigEndian.Uint16(frame[12:14])
	off := 14
	for tags := 0; isVLANType(etherType); tags++ {
		if tags == MaxFrameVLANs {
			p.EtherType = etherType
			return ErrTooManyVLANs
		}
		if len(frame) < off+4 {
			return ErrTruncatedVLAN
		}
		p.VLANs[p.NumVLANs] = binary.BigEndian.Uint16(frame[off:]) & 0x0fff
		p.NumVLANs++
		etherType = binary.BigEndian.Uint16(frame[off+2:])
		off += 4
	}
	p.EtherType = etherType
	p.L3Offset = off
	switch etherType {
	case EtherTypeIPv4:
		p.Kind = KindIPv4
		return p.decodeIPv4(frame, off)
	case EtherTypeIPv6:
		p.Kind = KindIPv6
		return p.decodeIPv6(frame, off)
	case EtherTypeARP:
		p.Kind = KindARP
	}
	return OK
}

func isVLANType(t uint16) bool {
	return t == EtherTypeVLAN || t == EtherTypeQinQ || t == EtherTypeQinQ91
}

func (p *Packet) decodeIPv4(frame []byte, off int) Error {
	if len(frame) < off+20 {
		return ErrTruncatedIPv4
	}
	h := frame[off:]
	if h[0]>>4 != 4 {
		return ErrBadIPVersion
	}
	hlen := int(h[0]&0x0f) * 4
	if hlen < 20 {
		return ErrBadIPv4HeaderLength
	}
	if len(h) < hlen {
		return ErrTruncatedIPv4
	}
	total := int(binary.BigEndian.Uint16(h[2:4]))
	if total == 0 {
		// A sender using TCP segmentation offload hands the NIC one large segment whose total
		// length is left 0; captured on the sending host it shows so. The captured length is then
		// the best measure there is (as Wireshark also assumes).
		total = len(h)
	}
	if total < hlen {
		return ErrBadIPv4TotalLength
	}
	p.IPBytes = total
	p.IPHeaderLen = hlen
	p.TTL = h[8]
	p.Protocol = h[9]
	p.Src = netip.AddrFrom4([4]byte(h[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(h[16:20]))
	frag := binary.BigEndian.Uint16(h[6:8])
	p.MoreFragments = frag&0x2000 != 0
	p.FragOffset = (frag & 0x1fff) * 8
	p.FragID = uint32(binary.BigEndian.Uint16(h[4:6]))
	p.Fragment = p.MoreFragments || p.FragOffset != 0
	return p.decodeL4(frame, off+hlen, off+total)
}

func (p *Packet) decodeIPv6(frame []byte, off int) Error {
	if len(frame) < off+40 {
		return ErrTruncatedIPv6
	}
	h := frame[off:]
	if h[0]>>4 != 6 {
		return ErrBadIPVersion
	}
	plen := int(binary.BigEndian.Uint16(h[4:6]))
	next := h[6]
	p.TTL = h[7]
	p.Src = netip.AddrFrom16([16]byte(h[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(h[24:40]))
	if plen == 0 && next == ProtoHopByHop {
		// A jumbogram carries its length in a hop-by-hop option; like a TSO segment, the captured
		// length is the best measure available.
		plen = len(h) - 40
	}
	p.IPBytes = 40 + plen
	end := off + p.IPBytes // end of the packet on the wire
	cur := off + 40
	for n := 0; ; n++ {
		switch next {
		case ProtoHopByHop, ProtoRouting, ProtoDestOpts, ProtoAH, ProtoFragment:
		default:
			p.Protocol = next
			p.IPHeaderLen = cur - off
			return p.decodeL4(frame, cur, end)
		}
		if n == MaxIPv6ExtHeaders {
			p.Protocol = next
			return ErrTooManyIPv6Ext
		}
		// Every extension header starts with next header and a length; the fragment header's
		// length field is reserved and it is always 8 bytes; AH counts 4-byte units minus 2, the
		// others 8-byte units not counting the first 8.
		if len(frame) < cur+8 || cur+8 > end {
			return ErrTruncatedIPv6Ext
		}
		var size int
		switch next {
		case ProtoFragment:
			size = 8
			fo := binary.BigEndian.Uint16(frame[cur+2:])
			p.Fragment = true
			p.FragOffset = fo &^ 7 // the offset is in the upper 13 bits, in 8-byte units
			p.MoreFragments = fo&1 != 0
			p.FragID = binary.BigEndian.Uint32(frame[cur+4:])
		case ProtoAH:
			size = (int(frame[cur+1]) + 2) * 4
		default:
			size = (int(frame[cur+1]) + 1) * 8
		}
		if len(frame) < cur+size || cur+size > end {
			return ErrTruncatedIPv6Ext
		}
		next = frame[cur]
		cur += size
		if p.FragOffset != 0 {
			// The rest of a non-first fragment is the middle of the original payload: the next
			// header field names the upper layer, and no header follows here.
			p.Protocol = next
			p.IPHeaderLen = cur - off
			return p.decodeL4(frame, cur, end)
		}
	}
}

// decodeL4 reads the transport header that starts at off in a packet that ends at wireEnd by its
// IP header (the frame may end earlier, cut by the snap length, or later, with Ethernet padding).
func (p *Packet) decodeL4(frame []byte, off, wireEnd int) Error {
	capEnd := min(len(frame), wireEnd)
	p.L4Offset = min(off, capEnd)
	if p.FragOffset != 0 {
		// The transport header is in the first fragment; what is here is payload.
		p.PayloadOffset = p.L4Offset
		p.PayloadLen = capEnd - p.L4Offset
		p.PayloadWireLen = max(wireEnd-off, 0)
		return OK
	}
	wireLen := wireEnd - off   // length of the transport segment by the IP header
	have := max(capEnd-off, 0) // how much of it the capture kept
	hdr := 0
	switch p.Protocol {
	case ProtoTCP:
		if have < 20 {
			return ErrTruncatedTCP
		}
		t := frame[off:]
		p.SrcPort = binary.BigEndian.Uint16(t[0:2])
		p.DstPort = binary.BigEndian.Uint16(t[2:4])
		p.TCPSeq = binary.BigEndian.Uint32(t[4:8])
		p.TCPAck = binary.BigEndian.Uint32(t[8:12])
		p.TCPFlags = t[13]
		p.TCPWindow = binary.BigEndian.Uint16(t[14:16])
		hdr = int(t[12]>>4) * 4
		if hdr < 20 || hdr > wireLen {
			return ErrBadTCPOffset
		}
	case ProtoUDP:
		if have < 8 {
			return ErrTruncatedUDP
		}
		p.SrcPort = binary.BigEndian.Uint16(frame[off:])
		p.DstPort = binary.BigEndian.Uint16(frame[off+2:])
		hdr = 8
	case ProtoSCTP:
		if have < 12 {
			return ErrTruncatedSCTP
		}
		p.SrcPort = binary.BigEndian.Uint16(frame[off:])
		p.DstPort = binary.BigEndian.Uint16(frame[off+2:])
		hdr = 12
	case ProtoICMP, ProtoICMPv6:
		if have < 4 {
			return ErrTruncatedICMP
		}
		p.ICMPType = frame[off]
		p.ICMPCode = frame[off+1]
		// Every ICMP message has 4 more header bytes (identifier and sequence for echo, unused
		// or a pointer for errors) before its body.
		hdr = min(8, wireLen)
	}
	p.L4Len = min(hdr, have)
	p.PayloadOffset = off + p.L4Len
	p.PayloadLen = capEnd - p.PayloadOffset
	p.PayloadWireLen = wireLen - hdr
	return OK
}
