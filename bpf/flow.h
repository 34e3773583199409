// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// The one place the layout shared by the kernel program and user space is defined. bpf2go turns
// these structs into Go types (plugins/capture-ebpf/internal/kern), so the two sides cannot drift.
// Every struct is padded by hand to a multiple of 8 bytes with no implicit holes: the kernel
// compares hash keys byte by byte, and Go must see the same offsets.
#pragma once

#include <linux/types.h>

// The subscription set is double-buffered: every filter map holds two versions, keyed by
// version, and the program reads which one is active from the config map once per packet. User
// space fills the inactive version, flips the switch, then clears the old version, so a swap
// never shows the program a half-written set.
#define FILTER_VERSIONS 2

// A conversation at one observation point: the interface and the unordered pair of endpoints.
// The endpoint that sorts first (address, then port) is "a". IPv4 addresses are stored
// IPv4-mapped (::ffff:a.b.c.d) so both families sort and hash alike. Addresses are in network
// byte order, ports in host byte order.
struct flow_key {
	__u32 addr_a[4];
	__u32 addr_b[4];
	__u16 port_a;
	__u16 port_b;
	__u32 ifindex;
	__u8 proto;
	__u8 pad[7];
};

// What one CPU saw of a conversation: the flow map is per-CPU, so packets never contend for a
// value; user space sums the CPUs' values (and takes the earliest and latest times). The first
// 64 bytes are what every packet touches; the rest only the first packet each way and the TCP
// handshake, so a packet of an established flow reads and writes one cache line of the value.
struct flow_stats {
	// hot
	__u64 last_ns;     // monotonic clock, coarse (bpf_ktime_get_coarse_ns: tick resolution)
	__u64 packets[2];  // [0] packets from a, [1] from b
	__u64 bytes[2];    // IP bytes: IP header included, link header excluded
	__u32 seq_end[2];  // highest TCP sequence end seen each way (seq + payload + SYN/FIN)
	__u32 retrans;     // TCP segments carrying only bytes already seen that way
	__u8 flags[2];     // TCP flags seen each way
	__u8 seen;         // SEEN_* bits: what the cold part already holds
	__u8 closed;       // CLOSED_* bits
	// cold
	__u64 first_ns;    // monotonic clock, fine (bpf_ktime_get_ns), as are the times below
	__u64 syn_ns;      // first SYN without ACK
	__u64 synack_ns;   // first SYN with ACK
	__u64 ack_ns[2];   // first pure ACK (ACK without SYN) each way, for the handshake RTT
	__u64 subs;        // subscriptions the flow matched when it was created (on the creating CPU)
	__u16 vlan[2];     // outer first
	__u8 mac_a[6];
	__u8 mac_b[6];
	__u8 first_dir;    // direction of this CPU's first packet (0: from a)
	__u8 syn_dir;      // 0: none, 1: SYN sent by a, 2: by b
	__u8 synack_dir;   // likewise for the SYN-ACK
	__u8 nvlan;
	__u8 icmp_type;    // of this CPU's first packet (ICMP flows: Community ID)
	__u8 icmp_code;
	__u8 fragmented;   // 1: a non-first fragment of this flow had no first fragment (ports 0)
	__u8 pad[1];
};

#define SEEN_MAC_A 0x01
#define SEEN_MAC_B 0x02
#define SEEN_SYN 0x04
#define SEEN_SYNACK 0x08
#define SEEN_ACK_A 0x10
#define SEEN_ACK_B 0x20
#define SEEN_SEQ_A 0x40
#define SEEN_SEQ_B 0x80

#define CLOSED_FIN_A 1
#define CLOSED_FIN_B 2
#define CLOSED_RST 4

// Per-version filter state that is not per address or port.
struct filter_set {
	__u64 addr_any; // subscriptions with no address include list (L3, L3Match)
	__u64 port_any; // subscriptions with no port include list (L4, L4Range)
	__u64 l7;       // subscriptions with L7 protocols: their flows' payload is sampled
	__u64 frames;   // subscriptions asking for frames on events
	__u32 payload_bytes; // sampled per packet
	__u32 pad;
};

struct capture_config {
	__u32 active;   // the filter version in force, 0 or 1
	__u32 sampling; // 1 when the active version has L7 subscriptions: payload is sampled
};

struct lpm_v4_key {
	__u32 prefixlen; // 32 (the version) + the prefix length
	__u32 version;
	__u32 addr;
};

struct lpm_v6_key {
	__u32 prefixlen; // 32 (the version) + the prefix length
	__u32 version;
	__u32 addr[4];
};

struct nic_key {
	__u32 version;
	__u32 ifindex;
};

// State of a flow covered by an L7 subscription: its L7 subscriptions and the payload bytes
// sampled each way.
struct l7_state {
	__u64 subs;
	__u32 sampled[2];
};

// Events from the kernel to user space, through one ring buffer.
enum event_kind {
	EVENT_START = 1,  // a conversation began (its first packet matched a subscription)
	EVENT_FIN = 2,    // one side sent FIN (the first of that side's FINs this CPU saw)
	EVENT_RESET = 3,  // a RST
	EVENT_SAMPLE = 4, // payload, for the decoders
	EVENT_FULL = 5,   // the flow map is full: user space should evict now
};

#define FRAME_BYTES 192   // bytes of headers (from L3) an event carries with frames on
#define SAMPLE_BYTES 4096 // payload one sample event carries at most (options.payload_bytes' limit)

struct event_header {
	__u64 ts_ns;
	__u64 subs;
	struct flow_key key;
	__u32 seq;      // TCP sequence number of a sample
	__u32 wire_len; // payload length on the wire (samples) or L3 length (frames)
	__u16 data_len; // bytes of data that follow
	__u16 l4_off;   // frames: where the L4 header starts in data
	__u16 l7_off;   // frames: where the payload starts in data
	__u8 kind;
	__u8 dir;       // direction of the packet: 0 from a, 1 from b
	__u8 tcp_flags; // of the packet (a start event's packet is the conversation's first)
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 pad[5];
};

struct frame_event {
	struct event_header h;
	__u8 data[FRAME_BYTES];
};

struct sample_event {
	struct event_header h;
	__u8 data[SAMPLE_BYTES];
};

// Kernel-side counters, per CPU. Every packet the program sees lands in exactly one of
// COUNT_ACCOUNTED, COUNT_NOT_IP, COUNT_ARP, COUNT_FILTERED, COUNT_PARSE_ERROR or
// COUNT_MAP_FULL; the rest are details.
enum counter {
	COUNT_PACKETS = 0,     // every packet the program ran on
	COUNT_ACCOUNTED,       // counted in a flow
	COUNT_FILTERED,        // no subscription matched
	COUNT_NOT_IP,          // neither IP nor ARP
	COUNT_ARP,
	COUNT_PARSE_ERROR,     // truncated or inconsistent headers
	COUNT_MAP_FULL,        // a new flow found no room in the flow map
	COUNT_RING_FULL,       // an event found no room in the ring buffer
	COUNT_FLOWS_CREATED,
	COUNT_FRAG_ORPHAN,     // a non-first fragment whose first fragment was not seen
	COUNT_SAMPLES,         // payload samples sent
	COUNT_SAMPLE_BYTES,
	COUNT_EVENTS,          // events sent (all kinds)
	COUNT_L7_FULL,         // an L7 flow found no room in the sampling map
	COUNT_EXT_HEADERS,     // IPv6 packets with more extension headers than the program walks
	COUNT_MAX,
};
