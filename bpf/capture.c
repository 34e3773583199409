//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// Quanyu's in-kernel capture. One program, attached with TCX (or TC clsact) to ingress and egress
// of every watched interface. Per packet:
//   1. Parse Ethernet, up to two VLAN tags (the outer one may already be in skb metadata), IPv4 or
//      IPv6 (walking at most eight extension headers), then the ports (TCP, UDP, SCTP) or the ICMP
//      type. A non-first fragment takes the ports of its first fragment from a small LRU map.
//   2. Build the conversation key with its endpoints in a fixed order, so both directions of a
//      conversation share one entry of the per-CPU flow map.
//   3. Only when the key is new are the subscriptions consulted (double-buffered LPM tries, port
//      arrays, transport and interface masks, see match()); a match creates the entry with the
//      mask of matched subscriptions and sends a start event; no match is counted and forgotten.
//   4. Count packets and IP bytes per direction, TCP flags, handshake times and retransmissions.
//      FIN and RST send events; flows an L7 subscription covers send their first payload bytes.
// The program never drops or changes a packet: it returns TC_ACT_UNSPEC (TCX_NEXT), "carry on".
// User space reads the flow map in batches, reports windows and ends, and deletes ended flows.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "flow.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

// Types only user space uses; referenced here so that they reach BTF, and bpf2go, from which
// the Go side takes its constants.
const enum counter *unused_counter __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const struct event_header *unused_event_header __attribute__((unused));
const struct frame_event *unused_frame_event __attribute__((unused));
const struct sample_event *unused_sample_event __attribute__((unused));

#define MAX_VLANS 2
#define MAX_IPV6_EXT 8
#define RING_WAKEUP_BYTES (256 * 1024)
#define FULL_EVENT_GAP_NS 100000000ULL // at most one "map full" event per CPU every 100 ms

#define ETH_P_8021AD_ 0x88A8
#define ETH_P_QINQ9100 0x9100

#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_AH_ 51
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_DSTOPTS_ 60
#define IPPROTO_SCTP_ 132

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

// Sizes are set by user space before loading (flow table size, ring size); these are defaults.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} flows SEC(".maps");

struct frag_key {
	__u32 src[4];
	__u32 dst[4];
	__u32 id;
	__u8 proto;
	__u8 pad[3];
};

struct frag_ports {
	__u16 sport;
	__u16 dport;
};

// Recently seen first fragments: an LRU map, since a datagram whose later fragments never come
// must not hold its entry forever. A later fragment that finds nothing counts as an orphan.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_VERSIONS);
	__type(key, __u32);
	__type(value, struct filter_set);
} sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u64);
} incl_v4 SEC(".maps"), excl_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6_key);
	__type(value, __u64);
} incl_v6 SEC(".maps"), excl_v6 SEC(".maps");

// Subscriptions by port: index version << 16 | port.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_VERSIONS << 16);
	__type(key, __u32);
	__type(value, __u64);
} port_incl SEC(".maps"), port_excl SEC(".maps");

// Subscriptions by transport: index version << 8 | IP protocol.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_VERSIONS << 8);
	__type(key, __u32);
	__type(value, __u64);
} protos SEC(".maps");

// Subscriptions by interface.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_VERSIONS * 4096);
	__type(key, struct nic_key);
	__type(value, __u64);
} nics SEC(".maps");

// Flows an L7 subscription covers, shared by every CPU: their subscriptions and sampled bytes.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, struct l7_state);
} l7flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

// Where a sample event is put together before it is copied into the ring at its real length.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample_event);
} sample_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_full SEC(".maps");

static __always_inline void count(__u32 which, __u64 n) {
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		*c += n;
}

// What the parser learns of a packet.
struct packet {
	__u32 src[4];
	__u32 dst[4];
	__u32 ip_bytes;
	__u32 payload_len; // transport payload on the wire
	__u32 seq;
	__u32 frag_id;
	__u16 sport;
	__u16 dport;
	__u16 vlan[MAX_VLANS];
	__u16 l3_off;
	__u16 l4_off;
	__u16 l7_off;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 nvlan;
	__u8 frag_first; // first fragment of a fragmented datagram
	__u8 frag_later; // a fragment other than the first: no transport header here
	__u8 ports_unknown; // a later fragment whose first fragment was not seen: ports 0, not known
	__u8 src_mac[6];
	__u8 dst_mac[6];
};

// Everything about the packet being handled, passed by pointer (BPF calls take five arguments).
struct state {
	struct packet p;
	struct flow_key key;
	__u64 now;
	__u8 dir; // 0: from a, 1: from b
	__u8 pad[7];
};

enum parse_result {
	PARSE_OK,
	PARSE_NOT_IP,
	PARSE_ARP,
	PARSE_ERROR,
	PARSE_EXT_HEADERS,
};

static __always_inline void map_v4(__u32 *dst, __u32 addr) {
	dst[0] = 0;
	dst[1] = 0;
	dst[2] = bpf_htonl(0x0000ffff);
	dst[3] = addr;
}

static __always_inline int parse_l4(struct __sk_buff *skb, struct packet *p, __u32 ip_end) {
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = p->l4_off;
	if (off > 1024)
		return PARSE_ERROR;
	__u8 *l4 = data + off;
	if (p->frag_later) {
		p->l7_off = off;
		return PARSE_OK;
	}
	switch (p->proto) {
	case IPPROTO_TCP_: {
		if ((void *)(l4 + 20) > data_end || off + 20 > ip_end)
			return PARSE_ERROR;
		__u32 doff = (l4[12] >> 4) * 4;
		if (doff < 20 || off + doff > ip_end)
			return PARSE_ERROR;
		p->sport = bpf_ntohs(*(__u16 *)l4);
		p->dport = bpf_ntohs(*(__u16 *)(l4 + 2));
		p->seq = bpf_ntohl(*(__u32 *)(l4 + 4));
		p->tcp_flags = l4[13];
		p->l7_off = off + doff;
		p->payload_len = ip_end - (off + doff);
		return PARSE_OK;
	}
	case IPPROTO_UDP_:
		if ((void *)(l4 + 8) > data_end || off + 8 > ip_end)
			return PARSE_ERROR;
		p->sport = bpf_ntohs(*(__u16 *)l4);
		p->dport = bpf_ntohs(*(__u16 *)(l4 + 2));
		p->l7_off = off + 8;
		p->payload_len = ip_end - (off + 8);
		return PARSE_OK;
	case IPPROTO_SCTP_:
		if ((void *)(l4 + 12) > data_end || off + 12 > ip_end)
			return PARSE_ERROR;
		p->sport = bpf_ntohs(*(__u16 *)l4);
		p->dport = bpf_ntohs(*(__u16 *)(l4 + 2));
		p->l7_off = off + 12;
		p->payload_len = ip_end - (off + 12);
		return PARSE_OK;
	case IPPROTO_ICMP_:
	case IPPROTO_ICMPV6_:
		if ((void *)(l4 + 4) > data_end || off + 4 > ip_end)
			return PARSE_ERROR;
		p->icmp_type = l4[0];
		p->icmp_code = l4[1];
		p->l7_off = off + 4;
		return PARSE_OK;
	}
	p->l7_off = off;
	return PARSE_OK;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct packet *p) {
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = p->l3_off;
	if (off > 64)
		return PARSE_ERROR;
	__u8 *ip = data + off;
	if ((void *)(ip + 20) > data_end)
		return PARSE_ERROR;
	if ((ip[0] >> 4) != 4)
		return PARSE_ERROR;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	if (ihl < 20)
		return PARSE_ERROR;
	__u32 tot = bpf_ntohs(*(__u16 *)(ip + 2));
	if (tot == 0) // left at 0 by segmentation offload: the skb's length is the best measure
		tot = skb->len - off;
	if (tot < ihl)
		return PARSE_ERROR;
	p->ip_bytes = tot;
	p->proto = ip[9];
	map_v4(p->src, *(__u32 *)(ip + 12));
	map_v4(p->dst, *(__u32 *)(ip + 16));
	__u16 frag = bpf_ntohs(*(__u16 *)(ip + 6));
	__u16 frag_off = frag & 0x1fff;
	p->frag_id = bpf_ntohs(*(__u16 *)(ip + 4));
	p->frag_later = frag_off != 0;
	p->frag_first = frag_off == 0 && (frag & 0x2000);
	p->l4_off = off + ihl;
	return parse_l4(skb, p, off + tot);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct packet *p) {
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = p->l3_off;
	if (off > 64)
		return PARSE_ERROR;
	__u8 *ip = data + off;
	if ((void *)(ip + 40) > data_end)
		return PARSE_ERROR;
	if ((ip[0] >> 4) != 6)
		return PARSE_ERROR;
	__u32 plen = bpf_ntohs(*(__u16 *)(ip + 4));
	__u8 next = ip[6];
	if (plen == 0 && next == IPPROTO_HOPOPTS_) // a jumbogram: its length is in an option
		plen = skb->len - off - 40;
	p->ip_bytes = 40 + plen;
	__builtin_memcpy(p->src, ip + 8, 16);
	__builtin_memcpy(p->dst, ip + 24, 16);
	__u32 ip_end = off + 40 + plen;
	__u32 cur = off + 40;
#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT + 1; i++) {
		if (next != IPPROTO_HOPOPTS_ && next != IPPROTO_ROUTING_ && next != IPPROTO_DSTOPTS_ &&
		    next != IPPROTO_AH_ && next != IPPROTO_FRAGMENT_)
			break;
		if (i == MAX_IPV6_EXT)
			return PARSE_EXT_HEADERS;
		if (cur > 1024)
			return PARSE_ERROR;
		__u8 *h = data + cur;
		if ((void *)(h + 8) > data_end || cur + 8 > ip_end)
			return PARSE_ERROR;
		__u32 size;
		if (next == IPPROTO_FRAGMENT_) {
			size = 8;
			__u16 fo = bpf_ntohs(*(__u16 *)(h + 2));
			p->frag_id = bpf_ntohl(*(__u32 *)(h + 4));
			p->frag_later = (fo & 0xfff8) != 0;
			p->frag_first = (fo & 0xfff8) == 0 && (fo & 1);
		} else if (next == IPPROTO_AH_) {
			size = ((__u32)h[1] + 2) * 4;
		} else {
			size = ((__u32)h[1] + 1) * 8;
		}
		if (cur + size > ip_end)
			return PARSE_ERROR;
		next = h[0];
		cur += size;
		if (p->frag_later)
			break; // the rest is the middle of the payload: no header follows
	}
	p->proto = next;
	p->l4_off = cur;
	return parse_l4(skb, p, ip_end);
}

static __noinline int parse(struct __sk_buff *skb, struct packet *p) {
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_ERROR;
	__builtin_memcpy(p->src_mac, eth->h_source, 6);
	__builtin_memcpy(p->dst_mac, eth->h_dest, 6);
	__u16 type = bpf_ntohs(eth->h_proto);
	__u32 off = sizeof(*eth);
	if (skb->vlan_present) {
		p->vlan[0] = skb->vlan_tci & 0x0fff;
		p->nvlan = 1;
	}
#pragma unroll
	for (int i = 0; i < MAX_VLANS; i++) {
		if (type != ETH_P_8021Q && type != ETH_P_8021AD_ && type != ETH_P_QINQ9100)
			break;
		__u8 *tag = data + off;
		if ((void *)(tag + 4) > data_end)
			return PARSE_ERROR;
		__u16 id = bpf_ntohs(*(__u16 *)tag) & 0x0fff;
		if (p->nvlan == 0) {
			p->vlan[0] = id;
			p->nvlan = 1;
		} else if (p->nvlan == 1) {
			p->vlan[1] = id;
			p->nvlan = 2;
		}
		type = bpf_ntohs(*(__u16 *)(tag + 2));
		off += 4;
	}
	p->l3_off = off;
	if (type == ETH_P_IP)
		return parse_ipv4(skb, p);
	if (type == ETH_P_IPV6)
		return parse_ipv6(skb, p);
	if (type == ETH_P_ARP)
		return PARSE_ARP;
	if (type == ETH_P_8021Q || type == ETH_P_8021AD_ || type == ETH_P_QINQ9100)
		return PARSE_ERROR; // more tags than the program walks
	return PARSE_NOT_IP;
}

// Non-first fragments carry no transport header: their ports are those of the first fragment.
static __always_inline void fragments(struct packet *p) {
	if (!p->frag_first && !p->frag_later)
		return;
	struct frag_key fk = {};
	__builtin_memcpy(fk.src, p->src, 16);
	__builtin_memcpy(fk.dst, p->dst, 16);
	fk.id = p->frag_id;
	fk.proto = p->proto;
	if (p->frag_first) {
		struct frag_ports ports = {.sport = p->sport, .dport = p->dport};
		bpf_map_update_elem(&frags, &fk, &ports, BPF_ANY);
		return;
	}
	struct frag_ports *ports = bpf_map_lookup_elem(&frags, &fk);
	if (ports) {
		p->sport = ports->sport;
		p->dport = ports->dport;
	} else {
		p->ports_unknown = 1;
		count(COUNT_FRAG_ORPHAN, 1);
	}
}

// addr_less reports whether endpoint (a, pa) sorts before (b, pb): address, then port.
static __always_inline int endpoint_less(const __u32 *a, __u16 pa, const __u32 *b, __u16 pb) {
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 x = bpf_ntohl(a[i]), y = bpf_ntohl(b[i]);
		if (x != y)
			return x < y;
	}
	return pa < pb;
}

static __always_inline __u64 lpm_v4(void *map, __u32 version, __u32 addr) {
	struct lpm_v4_key k = {.prefixlen = 64, .version = version, .addr = addr};
	__u64 *m = bpf_map_lookup_elem(map, &k);
	return m ? *m : 0;
}

static __always_inline __u64 lpm_v6(void *map, __u32 version, const __u32 *addr) {
	struct lpm_v6_key k = {.prefixlen = 160, .version = version};
	__builtin_memcpy(k.addr, addr, 16);
	__u64 *m = bpf_map_lookup_elem(map, &k);
	return m ? *m : 0;
}

static __always_inline __u64 array_mask(void *map, __u32 index) {
	__u64 *m = bpf_map_lookup_elem(map, &index);
	return m ? *m : 0;
}

static __always_inline int is_v4(const __u32 *a) {
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

// lpm looks an address up in the trie of its own family. An IPv6 packet may carry IPv4-mapped
// addresses (::ffff:a.b.c.d), which the subscription language takes for the IPv4 addresses they
// stand for (sdk.Matcher), so each end is looked up on its own, not by the family of the other.
static __always_inline __u64 lpm(void *map_v4, void *map_v6, __u32 version, const __u32 *addr) {
	if (is_v4(addr))
		return lpm_v4(map_v4, version, addr[3]);
	return lpm_v6(map_v6, version, addr);
}

// match gives the subscriptions a new conversation falls under, in the active version of the
// set: the semantics of sdk.Matcher (ARCHITECTURE §3), one step per field, stopping at zero.
static __always_inline __u64 match(struct __sk_buff *skb, struct packet *p, struct filter_set **set_out) {
	__u32 zero = 0;
	struct capture_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return 0;
	__u32 v = cfg->active & 1;
	struct filter_set *set = bpf_map_lookup_elem(&sets, &v);
	if (!set)
		return 0;
	*set_out = set;
	struct nic_key nk = {.version = v, .ifindex = skb->ifindex};
	__u64 *nic = bpf_map_lookup_elem(&nics, &nk);
	if (!nic)
		return 0;
	__u64 m = *nic & array_mask(&protos, v << 8 | p->proto);
	if (!m)
		return 0;
	__u64 incl = set->addr_any;
	if (m & ~incl)
		incl |= lpm(&incl_v4, &incl_v6, v, p->src) | lpm(&incl_v4, &incl_v6, v, p->dst);
	__u64 excl = lpm(&excl_v4, &excl_v6, v, p->src) | lpm(&excl_v4, &excl_v6, v, p->dst);
	m &= incl & ~excl;
	// A later fragment carries no ports. When its first fragment was seen, it has that
	// fragment's ports and they are judged as the first fragment's were (it may have been
	// filtered out for them); otherwise the port conditions do not apply (PortsUnknown).
	if (!m || p->ports_unknown)
		return m;
	__u32 sp = v << 16 | p->sport, dp = v << 16 | p->dport;
	if (m & ~set->port_any)
		m &= set->port_any | array_mask(&port_incl, sp) | array_mask(&port_incl, dp);
	m &= ~(array_mask(&port_excl, sp) | array_mask(&port_excl, dp));
	return m;
}

static __always_inline __u64 ring_flags(void) {
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= RING_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP
										   : BPF_RB_NO_WAKEUP;
}

static __always_inline void fill_header(struct event_header *h, __u8 kind, __u8 dir, __u64 now, __u64 subs,
					const struct flow_key *key) {
	h->ts_ns = now;
	h->subs = subs;
	__builtin_memcpy(&h->key, key, sizeof(*key));
	h->kind = kind;
	h->dir = dir;
	h->seq = 0;
	h->wire_len = 0;
	h->data_len = 0;
	h->l4_off = 0;
	h->l7_off = 0;
	h->tcp_flags = 0;
	h->icmp_type = 0;
	h->icmp_code = 0;
	__builtin_memset(h->pad, 0, sizeof(h->pad));
}

// send_event sends a start, FIN or reset event; with frames, the first bytes of the headers.
static __noinline void send_event(struct __sk_buff *skb, struct state *s, __u8 kind, __u64 subs, int frames) {
	struct packet *p = &s->p;
	if (!frames) {
		struct event_header *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
		if (!h) {
			count(COUNT_RING_FULL, 1);
			return;
		}
		fill_header(h, kind, s->dir, bpf_ktime_get_ns(), subs, &s->key);
		h->tcp_flags = p->tcp_flags;
		h->icmp_type = p->icmp_type;
		h->icmp_code = p->icmp_code;
		bpf_ringbuf_submit(h, ring_flags());
		count(COUNT_EVENTS, 1);
		return;
	}
	struct frame_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNT_RING_FULL, 1);
		return;
	}
	fill_header(&e->h, kind, s->dir, bpf_ktime_get_ns(), subs, &s->key);
	e->h.tcp_flags = p->tcp_flags;
	e->h.icmp_type = p->icmp_type;
	e->h.icmp_code = p->icmp_code;
	__u32 avail = skb->len > p->l3_off ? skb->len - p->l3_off : 0;
	__u64 n = avail & 0x1ff;
	if (avail > FRAME_BYTES)
		n = FRAME_BYTES;
	asm volatile("" : "+r"(n));
	if (n > FRAME_BYTES)
		n = FRAME_BYTES;
	if (n > 0 && bpf_skb_load_bytes(skb, p->l3_off, e->data, n) == 0) {
		e->h.data_len = n;
		e->h.wire_len = p->ip_bytes;
		e->h.l4_off = p->l4_off - p->l3_off;
		e->h.l7_off = p->l7_off - p->l3_off;
	}
	bpf_ringbuf_submit(e, ring_flags());
	count(COUNT_EVENTS, 1);
}

// sample sends the start of a packet's payload for the decoders: every payload-carrying packet of
// a flow an L7 subscription covers, cut at the subscription's payload_bytes. Per packet, not per
// flow, so a keep-alive connection's hundredth request is seen like its first. The event is built
// in a per-CPU scratch buffer and copied into the ring at its real length: reserving the largest
// size for every sample would fill the ring with unused bytes.
static __noinline void sample(struct __sk_buff *skb, struct state *s, struct filter_set *set) {
	struct packet *p = &s->p;
	__u8 dir = s->dir & 1;
	struct l7_state *st = bpf_map_lookup_elem(&l7flows, &s->key);
	if (!st)
		return;
	__u32 n = p->payload_len;
	if (n > set->payload_bytes)
		n = set->payload_bytes;
	__u32 have = skb->len > p->l7_off ? skb->len - p->l7_off : 0;
	if (n > have)
		n = have;
	if (n > SAMPLE_BYTES)
		n = SAMPLE_BYTES;
	if (n == 0)
		return;
	__u32 zero = 0;
	struct sample_event *e = bpf_map_lookup_elem(&sample_scratch, &zero);
	if (!e)
		return;
	fill_header(&e->h, EVENT_SAMPLE, dir, bpf_ktime_get_ns(), st->subs, &s->key);
	e->h.seq = p->seq;
	e->h.wire_len = p->payload_len;
	// The verifier wants the length provably within 1..SAMPLE_BYTES in the register passed;
	// the empty asm keeps clang from folding the clamp into the arithmetic above.
	__u64 len = n & (2 * SAMPLE_BYTES - 1);
	asm volatile("" : "+r"(len));
	if (len > SAMPLE_BYTES)
		len = SAMPLE_BYTES;
	if (len < 1 || bpf_skb_load_bytes(skb, p->l7_off, e->data, len) != 0)
		return;
	e->h.data_len = len;
	if (bpf_ringbuf_output(&events, e, sizeof(e->h) + len, ring_flags()) != 0) {
		count(COUNT_RING_FULL, 1);
		return;
	}
	__sync_fetch_and_add(&st->sampled[dir], len);
	count(COUNT_SAMPLES, 1);
	count(COUNT_SAMPLE_BYTES, len);
}

static __always_inline void report_full(__u64 now) {
	__u32 zero = 0;
	__u64 *last = bpf_map_lookup_elem(&last_full, &zero);
	if (!last || now - *last < FULL_EVENT_GAP_NS)
		return;
	*last = now;
	struct event_header *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
	if (!h)
		return;
	struct flow_key none = {};
	fill_header(h, EVENT_FULL, 0, now, 0, &none);
	bpf_ringbuf_submit(h, BPF_RB_FORCE_WAKEUP);
}

SEC("tc")
int quanyu_capture(struct __sk_buff *skb) {
	count(COUNT_PACKETS, 1);
	struct state s = {};
	struct packet *pp = &s.p;
	int parsed = parse(skb, pp);
	if (parsed == PARSE_ERROR && skb->data_end - skb->data < skb->len) {
		// The headers run past the skb's linear part (some drivers, some tunnels): pull them in
		// and parse again. Pulling is not done up front, since it can copy the packet (a TCP
		// segment the stack keeps for retransmission is shared) and most packets do not need it.
		__u32 want = skb->len < 192 ? skb->len : 192;
		if (bpf_skb_pull_data(skb, want) == 0) {
			__builtin_memset(pp, 0, sizeof(*pp));
			parsed = parse(skb, pp);
		}
	}
	switch (parsed) {
	case PARSE_OK:
		break;
	case PARSE_ARP:
		count(COUNT_ARP, 1);
		return TC_ACT_UNSPEC;
	case PARSE_NOT_IP:
		count(COUNT_NOT_IP, 1);
		return TC_ACT_UNSPEC;
	case PARSE_EXT_HEADERS:
		count(COUNT_EXT_HEADERS, 1);
		count(COUNT_PARSE_ERROR, 1);
		return TC_ACT_UNSPEC;
	default:
		count(COUNT_PARSE_ERROR, 1);
		return TC_ACT_UNSPEC;
	}
	fragments(pp);

	struct flow_key *key = &s.key;
	if (endpoint_less(pp->dst, pp->dport, pp->src, pp->sport)) {
		__builtin_memcpy(key->addr_a, pp->dst, 16);
		__builtin_memcpy(key->addr_b, pp->src, 16);
		key->port_a = pp->dport;
		key->port_b = pp->sport;
		s.dir = 1;
	} else {
		__builtin_memcpy(key->addr_a, pp->src, 16);
		__builtin_memcpy(key->addr_b, pp->dst, 16);
		key->port_a = pp->sport;
		key->port_b = pp->dport;
		s.dir = 0;
	}
	key->ifindex = skb->ifindex;
	key->proto = pp->proto;
	__u8 dir = s.dir;
	// Every packet stamps the flow's last time with the coarse clock (a few nanoseconds, tick
	// resolution: plenty for timeouts); the fine clock is read only where precision matters, the
	// flow's first packet, the handshake and events.
	s.now = bpf_ktime_get_coarse_ns();
	__u64 now = s.now;
	struct filter_set *set = NULL;
	struct flow_stats *st = bpf_map_lookup_elem(&flows, key);
	if (!st) {
		__u64 subs = match(skb, pp, &set);
		if (!subs || !set) {
			count(COUNT_FILTERED, 1);
			return TC_ACT_UNSPEC;
		}
		struct flow_stats init = {};
		init.subs = subs;
		long err = bpf_map_update_elem(&flows, key, &init, BPF_NOEXIST);
		if (err == 0) {
			count(COUNT_FLOWS_CREATED, 1);
			if (subs & set->l7) {
				struct l7_state l7 = {.subs = subs & set->l7};
				if (bpf_map_update_elem(&l7flows, key, &l7, BPF_NOEXIST) == -7 /* E2BIG */)
					count(COUNT_L7_FULL, 1);
			}
			send_event(skb, &s, EVENT_START, subs, (subs & set->frames) != 0);
		} else if (err != -17 /* EEXIST: another CPU created it first */) {
			count(COUNT_MAP_FULL, 1);
			report_full(now);
			return TC_ACT_UNSPEC;
		}
		st = bpf_map_lookup_elem(&flows, key);
		if (!st)
			return TC_ACT_UNSPEC;
	}
	count(COUNT_ACCOUNTED, 1);

	__u8 d = dir & 1;
	if (st->packets[0] + st->packets[1] == 0) { // this CPU's first packet of the flow
		st->first_ns = bpf_ktime_get_ns();
		st->first_dir = dir;
		st->icmp_type = pp->icmp_type;
		st->icmp_code = pp->icmp_code;
		st->nvlan = pp->nvlan;
		st->vlan[0] = pp->vlan[0];
		st->vlan[1] = pp->vlan[1];
		if (pp->ports_unknown)
			st->fragmented = 1;
	}
	__u8 mac_bit = d ? SEEN_MAC_B : SEEN_MAC_A;
	if (!(st->seen & mac_bit)) {
		if (d == 0) {
			__builtin_memcpy(st->mac_a, pp->src_mac, 6);
			__builtin_memcpy(st->mac_b, pp->dst_mac, 6);
		} else {
			__builtin_memcpy(st->mac_b, pp->src_mac, 6);
			__builtin_memcpy(st->mac_a, pp->dst_mac, 6);
		}
		st->seen |= mac_bit;
	}
	st->last_ns = now;
	st->packets[d]++;
	st->bytes[d] += pp->ip_bytes;

	if (pp->proto == IPPROTO_TCP_ && !pp->frag_later) {
		__u8 f = pp->tcp_flags;
		st->flags[d] |= f;
		if ((f & (TCP_SYN | TCP_ACK)) == TCP_SYN && !(st->seen & SEEN_SYN)) {
			st->syn_ns = bpf_ktime_get_ns();
			st->syn_dir = dir + 1;
			st->seen |= SEEN_SYN;
		}
		if ((f & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) && !(st->seen & SEEN_SYNACK)) {
			st->synack_ns = bpf_ktime_get_ns();
			st->synack_dir = dir + 1;
			st->seen |= SEEN_SYNACK;
		}
		__u8 ack_bit = d ? SEEN_ACK_B : SEEN_ACK_A;
		if ((f & (TCP_SYN | TCP_ACK)) == TCP_ACK && !(st->seen & ack_bit)) {
			st->ack_ns[d] = bpf_ktime_get_ns();
			st->seen |= ack_bit;
		}
		// A segment is a retransmission when all its bytes were already seen this way.
		__u32 end = pp->seq + pp->payload_len + ((f & TCP_SYN) ? 1 : 0) + ((f & TCP_FIN) ? 1 : 0);
		__u8 seq_bit = d ? SEEN_SEQ_B : SEEN_SEQ_A;
		if (st->seen & seq_bit) {
			__s32 ahead = (__s32)(end - st->seq_end[d]);
			if (pp->payload_len > 0 && ahead <= 0)
				st->retrans++;
			if (ahead > 0)
				st->seq_end[d] = end;
		} else {
			st->seq_end[d] = end;
			st->seen |= seq_bit;
		}
		if (f & (TCP_FIN | TCP_RST)) {
			__u8 bit = (f & TCP_RST) ? CLOSED_RST : (d ? CLOSED_FIN_B : CLOSED_FIN_A);
			if (!(st->closed & bit)) {
				st->closed |= bit;
				if (set == NULL) {
					__u32 zero = 0;
					struct capture_config *cfg = bpf_map_lookup_elem(&config, &zero);
					__u32 v = cfg ? cfg->active & 1 : 0;
					set = bpf_map_lookup_elem(&sets, &v);
				}
				__u64 subs = st->subs;
				send_event(skb, &s, (f & TCP_RST) ? EVENT_RESET : EVENT_FIN, subs, set && (subs & set->frames));
			}
		}
	}

	if (pp->payload_len > 0) {
		// Only sets with L7 subscriptions sample; the config says so without a lookup of the set.
		__u32 zero = 0;
		struct capture_config *cfg = bpf_map_lookup_elem(&config, &zero);
		if (cfg && cfg->sampling) {
			if (set == NULL) {
				__u32 v = cfg->active & 1;
				set = bpf_map_lookup_elem(&sets, &v);
			}
			if (set && set->l7)
				sample(skb, &s, set);
		}
	}
	return TC_ACT_UNSPEC;
}
