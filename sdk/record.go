package sdk

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Transport is an IP protocol number (6 for TCP, 17 for UDP, …).
type Transport uint8

// The transports the subscription language names.
const (
	TransportICMP   Transport = 1
	TransportTCP    Transport = 6
	TransportUDP    Transport = 17
	TransportICMPv6 Transport = 58
	TransportSCTP   Transport = 132
)

var transportNames = map[Transport]string{
	TransportICMP:   "ICMP",
	TransportTCP:    "TCP",
	TransportUDP:    "UDP",
	TransportICMPv6: "ICMPv6",
	TransportSCTP:   "SCTP",
}

// String gives the name records use: TCP, UDP, ICMP, ICMPv6, SCTP, or the protocol number.
func (t Transport) String() string {
	if n, ok := transportNames[t]; ok {
		return n
	}
	return strconv.Itoa(int(t))
}

// ParseTransport reads a transport name in any letter case (TCP, UDP, ICMP, ICMPv6 or ICMP6, SCTP).
func ParseTransport(s string) (Transport, bool) {
	for t, n := range transportNames {
		if strings.EqualFold(n, s) {
			return t, true
		}
	}
	if strings.EqualFold(s, "ICMP6") {
		return TransportICMPv6, true
	}
	return 0, false
}

// HasPorts reports whether the transport carries 16-bit ports in its first four bytes.
func (t Transport) HasPorts() bool {
	return t == TransportTCP || t == TransportUDP || t == TransportSCTP
}

// TCPFlags is the union of TCP flags seen, in the wire's bit order.
type TCPFlags uint8

// TCP flag bits as they appear in the TCP header.
const (
	FlagFIN TCPFlags = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
	FlagURG
	FlagECE
	FlagCWR
)

var flagNames = [8]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}

// Names lists the flags set, in the order SYN, ACK, PSH, FIN, RST, URG, ECE, CWR: the order in
// which a reader expects a conversation's flags.
func (f TCPFlags) Names() []string {
	names := make([]string, 0, 8)
	for _, bit := range []TCPFlags{FlagSYN, FlagACK, FlagPSH, FlagFIN, FlagRST, FlagURG, FlagECE, FlagCWR} {
		if f&bit != 0 {
			names = append(names, flagNames[bitIndex(bit)])
		}
	}
	return names
}

// ParseTCPFlags is the inverse of Names.
func ParseTCPFlags(names []string) (TCPFlags, bool) {
	var f TCPFlags
	for _, n := range names {
		i := -1
		for j, fn := range flagNames {
			if fn == n {
				i = j
			}
		}
		if i < 0 {
			return 0, false
		}
		f |= 1 << i
	}
	return f, true
}

func bitIndex(b TCPFlags) int {
	for i := 0; i < 8; i++ {
		if b == 1<<i {
			return i
		}
	}
	return 0
}

// Endpoint is one end of a conversation. ICMP uses port 0.
type Endpoint struct {
	Addr netip.Addr
	Port uint16
}

// Counts are packets and IP bytes (IP header included, link header excluded) in one direction.
type Counts struct {
	Packets uint64
	IPBytes uint64
}

// Add returns the sum of two counts.
func (c Counts) Add(o Counts) Counts {
	return Counts{Packets: c.Packets + o.Packets, IPBytes: c.IPBytes + o.IPBytes}
}

// End reasons of a final flow record.
const (
	EndFIN          = "fin"          // both sides closed
	EndRST          = "rst"          // reset
	EndIdle         = "idle"         // no packet within the idle timeout
	EndInput        = "input"        // the file being replayed ended
	EndShutdown     = "shutdown"     // the capture stopped
	EndEvicted      = "evicted"      // the flow table was full and this flow was the oldest
	EndUnsubscribed = "unsubscribed" // the subscription set changed and none covers the flow now
)

// Flow is one conversation in one time window, seen at one observation point. A conversation may
// be reported in several windows: counts are for the window, the sum over its records is its
// total, and its last record has Final set.
type Flow struct {
	Host    string
	NIC     string
	IfIndex int
	Netns   string

	Start time.Time // first packet of the window
	End   time.Time // last packet of the window

	Transport Transport
	Client    Endpoint // the initiator: from the SYN, else by port, else the first sender
	Server    Endpoint

	ClientToServer Counts
	ServerToClient Counts

	TCPFlags    TCPFlags      // every flag seen in the conversation up to the end of this record
	RTT         time.Duration // handshake: SYN to the ACK of the SYN-ACK, as seen here; 0 if unseen
	Retransmits uint32

	VLAN      []uint16 // outer first
	ClientMAC net.HardwareAddr
	ServerMAC net.HardwareAddr

	CommunityID   string
	Subscriptions []string
	Final         bool
	EndReason     string // set on final records

	// L7 is what the decoders made of the flow in this window; nil when no decoder claimed it.
	L7 *L7Summary
}

// L7Summary counts a flow's L7 transactions in one record's window.
type L7Summary struct {
	Protocol     string
	Transactions uint64
	Errors       uint64 // HTTP 5xx, DNS answers other than NOERROR and NXDOMAIN, malformed messages
	Partial      uint64 // transactions reported with Partial set
}

// Event kinds.
const (
	EventStart   = "start"
	EventEnd     = "end"
	EventReset   = "reset"
	EventTimeout = "timeout"
)

// Event is a point in a conversation's life, with the first bytes of its headers when the
// subscription asked for frames (the seed's L3Frame, L4Frame and L7Frame).
type Event struct {
	Kind          string
	Time          time.Time
	Host          string
	NIC           string
	Transport     Transport
	Client        Endpoint
	Server        Endpoint
	CommunityID   string
	Subscriptions []string
	L3Frame       []byte
	L4Frame       []byte
	L7Frame       []byte
}

// Sample is the start of one packet's payload, captured for decoders when an L7 subscription
// covers the flow: the first bytes of every payload-carrying packet, up to the subscription's
// payload_bytes. For TCP, Seq is the packet's sequence number, so a decoder knows which stream
// bytes Data holds (Seq to Seq+len(Data)) and which it skipped (up to Seq+WireLen).
//
// A sample with FlowEnd set and no Data is the core's, not the capture's: the flow ended, no
// more samples of it follow, and the decoder reports what it still holds and forgets the flow.
type Sample struct {
	CommunityID   string
	NIC           string
	Transport     Transport
	Client        Endpoint
	Server        Endpoint
	FromClient    bool
	Time          time.Time
	Seq           uint32
	Data          []byte
	WireLen       int // payload length on the wire; more than len(Data) when the sample was cut
	Subscriptions []string
	FlowEnd       bool
}

// L7 is one application-level transaction (an HTTP request and its response, a DNS query and its
// answer), tied to its flow by CommunityID. Credentials never reach it: decoders drop
// Authorization, Cookie and the like, and URL user-info, whatever the configuration.
type L7 struct {
	Protocol      string        // HTTP, DNS
	Method        string        // HTTP method; DNS: QUERY, or the opcode's name
	Host          string        // HTTP Host (no port user-info)
	Path          string        // HTTP path; the query string only when a subscription asks for it
	Status        int           // HTTP status code; 0 when no response was seen
	RequestBytes  uint64        // HTTP: the request's body; DNS: the query message
	ResponseBytes uint64        // HTTP: the response's body; DNS: the response message
	Latency       time.Duration // from the request's first byte to the response's first byte
	Time          time.Time     // the request's first byte
	Transport     Transport
	NIC           string
	Client        Endpoint
	Server        Endpoint
	CommunityID   string
	// Partial is set when part of the transaction was not captured (a sample cut short, a gap,
	// a flow picked up mid-message, a response that never came): what is known is reported.
	Partial bool
	Error   string // a transaction that failed as such (a malformed message), not a 5xx
	// Flags name ambiguities the decoder noticed and did not resolve by guessing, such as
	// "content_length_and_chunked" or "bare_lf_in_chunk_size".
	Flags []string

	// HTTP
	Version     string // "1.0", "1.1"
	UserAgent   string
	ContentType string // the response's, else the request's

	// DNS
	Query   string   // the question's name
	QType   string   // A, AAAA, …, or the number
	RCode   string   // NOERROR, NXDOMAIN, …, or the number
	Answers []string // the answers' data as text (addresses, names)

	Attributes    map[string]string
	Subscriptions []string
}

// Stats are a component's cumulative counters at a point in time. Counter names are dotted and
// stable: "packets", "drop.ring", "parse_error.truncated_ipv4", …; every drop has one.
type Stats struct {
	Source   string
	Time     time.Time
	Counters map[string]uint64
}

// Batch is what moves between pipeline stages and across plugin boundaries: never one record at a
// time.
type Batch struct {
	Flows     []Flow
	Events    []Event
	Samples   []Sample
	L7        []L7
	Stats     []Stats
	Inventory *Inventory
}

// Len is the number of records in the batch (counters and inventory not included).
func (b *Batch) Len() int {
	return len(b.Flows) + len(b.Events) + len(b.Samples) + len(b.L7)
}
