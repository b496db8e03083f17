// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pepc_xdp.c: the pepc data plane.
 *
 * One XDP program that evaluates the compiled policy of the active
 * generation. Everything policy-specific lives in maps; the generated
 * header only fixes the binary layout (structs, capacities, enums), so one
 * object serves every policy of a given layout and an apply never reloads
 * the program.
 *
 * Per packet:
 *   1. parse Ethernet, up to two VLAN tags, IPv4 (options, fragments) or
 *      IPv6 (extension headers, fragments), the TCP/UDP ports and the
 *      ICMPv6 type; anything the matcher cannot see passes untouched and
 *      is counted (non_ip, err_*), an IPv6 header chain it cannot walk is
 *      dropped (err_ip6_ext);
 *   2. read pepc_ctrl[0].active_gen ONCE and use that generation's maps for
 *      the rest of the packet;
 *   3. tuple space search: walk the masks in ascending best rank, look up
 *      the masked packet fields in the rules hash (unless the generation's
 *      Bloom filter says no entry has them), keep the smallest rank, stop
 *      as soon as no later mask can beat it;
 *   4. apply the winner's action (or the generation's default action) and
 *      count it per rule slot and globally.
 *
 * pepc/simulate/frames.py mirrors the parser byte for byte and the kernel tests hold
 * the two (and pepc.simulate.evaluate) to the same answers.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pepc_policy.h"

#define NSEC_PER_SEC 1000000000ULL

/*
 * Token-bucket arithmetic stays exact in u64 (no 128-bit math) for rates
 * and bursts up to 2^40 bytes, the language's cap (docs/decisions.md);
 * larger values in a map behave as 2^40.
 */
#define PEPC_RATE_MAX (1ULL << 40)
#define PEPC_BURST_MAX (1ULL << 40)

/*
 * The mask prefilter (pepc/compiler/bloom.py has the whole story): per generation,
 * a Bloom filter over the rule-map keys in PEPC_BLOOM_WORDS u64 words, and
 * at index PEPC_BLOOM_WORDS a marker. The filter is trusted only while the
 * marker equals the generation's policy digest (first 8 bytes) ^ SCHEME,
 * so a writer that ignores the filter can make it useless, never wrong.
 * Keep in step with pepc/compiler/bloom.py (SCHEME, K1..K4, words, position()).
 */
#define PEPC_BLOOM_SCHEME 0x70657063626C6D01ULL
#define PEPC_BLOOM_WORDS PEPC_MAX_ENTRIES
#define PEPC_BLOOM_K1 0x9E3779B97F4A7C15ULL
#define PEPC_BLOOM_K2 0xC2B2AE3D27D4EB4FULL
#define PEPC_BLOOM_K3 0x165667B19E3779F9ULL
#define PEPC_BLOOM_K4 0xD6E8FEB86659FD93ULL
/* The IPv6 prefilter (pepc_bloom6_<gen>, over pepc_rules6_<gen>): the same
 * sizing and bit choice, a hash over the six u64 words of the 48-byte key
 * and a marker of its own (pepc/compiler/bloom.py: SCHEME6, K5..K7, hash64_6). */
#define PEPC_BLOOM6_SCHEME 0x70657063626C3601ULL
#define PEPC_BLOOM_K5 0x94D049BB133111EBULL
#define PEPC_BLOOM_K6 0xBF58476D1CE4E5B9ULL
#define PEPC_BLOOM_K7 0xFF51AFD7ED558CCDULL

/*
 * The direct table (pepc/compiler/direct.py has the whole story): per generation,
 * the rule map once more as an open-addressing array the program reads
 * inline, where a hash-map lookup is a call into the kernel. A key's home
 * is the low half of the prefilter's hash scaled to PEPC_DIRECT_HOMES; the
 * key sits there or within PEPC_DIRECT_DEPTH entries after it, else an
 * empty entry comes first (no such key) or its home entry says OVERFLOW
 * (ask the rule map). Trusted only while the marker (the element after the
 * last probe-able one) matches the generation's policy digest ^ SCHEME.
 * Keep in step with pepc/compiler/direct.py (SCHEME, DEPTH, sizing, flags).
 */
#define PEPC_DIRECT_SCHEME 0x7065706364697201ULL
#define PEPC_DIRECT_HOMES (2 * PEPC_MAX_ENTRIES)
#define PEPC_DIRECT_DEPTH 3
#define PEPC_DIRECT_USED 1
#define PEPC_DIRECT_OVERFLOW 2
/* The IPv6 direct table (pepc_direct6_<gen>, over pepc_rules6_<gen>): the
 * same sizing, depth and flags, entries of struct pepc_direct6, homes from
 * the IPv6 prefilter's hash, a marker of its own (pepc/compiler/direct.py SCHEME6). */
#define PEPC_DIRECT6_SCHEME 0x7065706364693601ULL

/* 802.1Q / 802.1ad tag; not part of the UAPI headers. */
struct pepc_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* ------------------------------------------------------------------ maps */

/*
 * Why two maps per generation instead of a generation field in the key:
 * an apply rewrites the inactive generation while packets keep reading the
 * active one, then flips pepc_ctrl[0].active_gen with one map write. With
 * separate maps the writer never touches a map the fast path is reading,
 * the masks array of each generation can be rewritten in place, and the
 * hash key stays 20 bytes (no generation byte to hash on every lookup).
 * A map-in-map swap would do the same with an extra indirection per lookup.
 */
#define PEPC_GENERATION_MAPS(n)                                         \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, PEPC_MAX_MASKS);                    \
		__type(key, __u32);                                     \
		__type(value, struct pepc_mask);                        \
	} pepc_masks_##n SEC(".maps");                                  \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, PEPC_MAX_ENTRIES);                  \
		__type(key, struct pepc_rule_key);                      \
		__type(value, struct pepc_rule_val);                    \
	} pepc_rules_##n SEC(".maps");                                  \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, PEPC_MAX_RULES);                    \
		__type(key, __u32);                                     \
		__type(value, struct pepc_slot);                        \
	} pepc_slots_##n SEC(".maps");                                  \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, PEPC_BLOOM_WORDS + 1);              \
		__type(key, __u32);                                     \
		__type(value, __u64);                                   \
	} pepc_bloom_##n SEC(".maps");                                  \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, PEPC_DIRECT_HOMES + PEPC_DIRECT_DEPTH + 1); \
		__type(key, __u32);                                     \
		__type(value, struct pepc_direct);                      \
	} pepc_direct_##n SEC(".maps");                                 \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, PEPC_MAX_MASKS);                    \
		__type(key, __u32);                                     \
		__type(value, struct pepc_mask6);                       \
	} pepc_masks6_##n SEC(".maps");                                 \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, PEPC_MAX_ENTRIES);                  \
		__type(key, struct pepc_rule6_key);                     \
		__type(value, struct pepc_rule_val);                    \
	} pepc_rules6_##n SEC(".maps");                                 \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, PEPC_BLOOM_WORDS + 1);              \
		__type(key, __u32);                                     \
		__type(value, __u64);                                   \
	} pepc_bloom6_##n SEC(".maps");                                 \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, PEPC_DIRECT_HOMES + PEPC_DIRECT_DEPTH + 1); \
		__type(key, __u32);                                     \
		__type(value, struct pepc_direct6);                     \
	} pepc_direct6_##n SEC(".maps");

PEPC_GENERATION_MAPS(0)
PEPC_GENERATION_MAPS(1)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pepc_ctrl);
} pepc_ctrl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct pepc_gen);
} pepc_gen SEC(".maps");

/* Indexed by rule slot; slots are stable across applies, so the counters,
 * buckets and budgets below belong to a rule, not to a generation. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PEPC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct pepc_rule_stats);
} pepc_stats SEC(".maps");

/*
 * Token buckets are shared by all CPUs (a per-CPU bucket would let N CPUs
 * pass N times the rate). Refill and charge are a read-modify-write of two
 * fields, so they run under bpf_spin_lock; the critical section is a few
 * arithmetic instructions and only RATE_LIMIT hits take it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PEPC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct pepc_rl_state);
} pepc_rl SEC(".maps");

/* Event budgets are per CPU on purpose: the cap protects userspace from a
 * flood, it need not be exact, and a shared budget would need a lock. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PEPC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct pepc_evbudget);
} pepc_evbudget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PEPC_CNT__MAX);
	__type(key, __u32);
	__type(value, __u64);
} pepc_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PEPC_RING_BYTES);
} pepc_events SEC(".maps");

/* --------------------------------------------------------------- helpers */

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&pepc_counters, &idx);

	if (c)
		*c += 1; /* per-CPU value: no atomics needed */
}

static __always_inline int verdict(int v)
{
	count(v == XDP_DROP ? PEPC_CNT_DROP : PEPC_CNT_PASS);
	return v;
}

/* What the matcher sees of a packet (pepc.policy.semantics.Packet). Addresses and
 * ports stay in network byte order, like the masks and keys. */
struct pepc_pkt {
	__be32 src;
	__be32 dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 has_ports;
	__u8 v6; /* IPv6: the addresses are src6/dst6 (src/dst stay 0) */
	__u8 guarded; /* the lockout guard protects it (pepc.policy.semantics.GUARDED_ICMPV6_TYPES) */
	__be32 src6[4];
	__be32 dst6[4];
} __attribute__((aligned(8)));

/* What parse() decides for a frame. */
#define PEPC_PARSE_PASS 0 /* pass without evaluation (the reason is counted) */
#define PEPC_PARSE_EVAL 1 /* evaluate *pkt against the policy */
#define PEPC_PARSE_DROP 2 /* drop without evaluation (the reason is counted) */

/*
 * IPv6 extension headers walked to reach the upper-layer header. Six is
 * the longest chain RFC 8200's recommended order allows (hop-by-hop,
 * destination options, routing, fragment, AH, destination options, each
 * once); a longer or truncated chain is dropped (err_ip6_ext), because
 * passing or evaluating it without its upper layer would let an attacker
 * hide a blocked TCP port behind padding headers (docs/decisions.md).
 */
#define PEPC_IP6_MAX_EXT 6
#define PEPC_IP6_HLEN 40
/* No header the walk reads starts this far into the IPv6 packet (XDP
 * frames are at most a page), so the bound never decides anything; it
 * only lets the verifier see that the cursor stays inside 64 KiB. */
#define PEPC_IP6_MAX_OFF 0xff00

#define PEPC_NH_HOPOPTS 0
#define PEPC_NH_ROUTING 43
#define PEPC_NH_FRAGMENT 44
#define PEPC_NH_AH 51
#define PEPC_NH_DSTOPTS 60
#define PEPC_NH_ICMPV6 58

/* pepc.policy.semantics.GUARDED_ICMPV6_TYPES: packet too big, MLD, ND/RA */
static __always_inline int guarded_icmp6(__u8 type)
{
	return type == 2 || (type >= 130 && type <= 137) || type == 143;
}

static __always_inline int parse_ip4(void *cursor, void *data_end, struct pepc_pkt *pkt)
{
	struct iphdr *iph = cursor;
	__u32 hlen, tot_len;
	__u16 frag;

	count(PEPC_CNT_IPV4);
	if ((void *)(iph + 1) > data_end) {
		count(PEPC_CNT_ERR_IP_TRUNCATED);
		return PEPC_PARSE_PASS;
	}
	if (iph->version != 4 || iph->ihl < 5) {
		count(PEPC_CNT_ERR_IP_BAD_HEADER);
		return PEPC_PARSE_PASS;
	}
	hlen = iph->ihl * 4;
	if (cursor + hlen > data_end) {
		count(PEPC_CNT_ERR_IP_TRUNCATED);
		return PEPC_PARSE_PASS;
	}
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < hlen) {
		count(PEPC_CNT_ERR_IP_BAD_HEADER);
		return PEPC_PARSE_PASS;
	}

	pkt->src = iph->saddr;
	pkt->dst = iph->daddr;
	pkt->proto = iph->protocol;

	frag = bpf_ntohs(iph->frag_off);
	if (frag & 0x3fff) /* MF or a fragment offset */
		count(PEPC_CNT_FRAGMENTS);

	/* Ports exist only in the first fragment of TCP and UDP. Only the
	 * first four L4 bytes are read (both protocols start with the two
	 * ports), so a tiny first fragment that still carries the ports is
	 * matched on them. The IP total length bounds the L4 data too: bytes
	 * past it are Ethernet padding, not ports. */
	if ((pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP) && !(frag & 0x1fff)) {
		__be16 *ports = cursor + hlen;

		if ((void *)(ports + 2) > data_end || hlen + 4 > tot_len) {
			count(PEPC_CNT_ERR_L4_TRUNCATED);
		} else {
			pkt->sport = ports[0];
			pkt->dport = ports[1];
			pkt->has_ports = 1;
		}
	}
	return PEPC_PARSE_EVAL;
}

/*
 * IPv6: the fixed header, then up to PEPC_IP6_MAX_EXT extension headers
 * to the upper-layer header. Every byte read lies inside both the frame
 * and the IPv6 payload length (bytes past it are padding). `off` counts
 * from the start of the IPv6 header.
 */
static __always_inline int parse_ip6(void *l3, void *data_end, struct pepc_pkt *pkt)
{
	struct ipv6hdr_words {
		__be32 vtc_flow;
		__be16 payload_len;
		__u8 nexthdr;
		__u8 hop_limit;
		__be32 saddr[4];
		__be32 daddr[4];
	} *ip6 = l3;
	__u32 off = PEPC_IP6_HLEN, end, hlen;
	__u8 nh, *p;
	int fragment = 0, later = 0;

	count(PEPC_CNT_IPV6);
	if ((void *)(ip6 + 1) > data_end) {
		count(PEPC_CNT_ERR_IP6_TRUNCATED);
		return PEPC_PARSE_PASS;
	}
	if ((bpf_ntohl(ip6->vtc_flow) >> 28) != 6) {
		count(PEPC_CNT_ERR_IP6_BAD_HEADER);
		return PEPC_PARSE_PASS;
	}
	end = PEPC_IP6_HLEN + (__u32)bpf_ntohs(ip6->payload_len);
	nh = ip6->nexthdr;

#pragma unroll
	for (int i = 0; i < PEPC_IP6_MAX_EXT + 1; i++) {
		if (nh != PEPC_NH_HOPOPTS && nh != PEPC_NH_ROUTING && nh != PEPC_NH_FRAGMENT &&
		    nh != PEPC_NH_DSTOPTS && nh != PEPC_NH_AH)
			break; /* the upper-layer header */
		if (i == PEPC_IP6_MAX_EXT || off > PEPC_IP6_MAX_OFF)
			goto bad_chain;
		p = l3 + off;
		if (off + 8 > end || (void *)(p + 8) > data_end)
			goto bad_chain; /* every extension header is at least 8 bytes */
		if (nh == PEPC_NH_FRAGMENT) {
			__u16 fo = ((__u16)p[2] << 8) | p[3];

			if (fo & 0xfff9) /* an offset or M: a fragment */
				fragment = 1;
			nh = p[0];
			off += 8;
			if (fo & 0xfff8) {
				/* a non-first fragment: what follows is data */
				later = 1;
				break;
			}
			continue;
		}
		hlen = nh == PEPC_NH_AH ? ((__u32)p[1] + 2) * 4 : ((__u32)p[1] + 1) * 8;
		if (off + hlen > end || (void *)(p + hlen) > data_end)
			goto bad_chain;
		nh = p[0];
		off += hlen;
	}

	__builtin_memcpy(pkt->src6, ip6->saddr, 16);
	__builtin_memcpy(pkt->dst6, ip6->daddr, 16);
	pkt->v6 = 1;
	pkt->proto = nh;
	if (fragment)
		count(PEPC_CNT_FRAGMENTS);
	if (later || off > PEPC_IP6_MAX_OFF)
		return PEPC_PARSE_EVAL;

	p = l3 + off;
	if (nh == IPPROTO_TCP || nh == IPPROTO_UDP) {
		if (off + 4 > end || (void *)(p + 4) > data_end) {
			count(PEPC_CNT_ERR_L4_TRUNCATED);
		} else {
			pkt->sport = *(__be16 *)p;
			pkt->dport = *(__be16 *)(p + 2);
			pkt->has_ports = 1;
		}
	} else if (nh == PEPC_NH_ICMPV6) {
		if (off + 1 > end || (void *)(p + 1) > data_end)
			count(PEPC_CNT_ERR_L4_TRUNCATED);
		else
			pkt->guarded = guarded_icmp6(p[0]);
	}
	return PEPC_PARSE_EVAL;

bad_chain:
	count(PEPC_CNT_ERR_IP6_EXT);
	return PEPC_PARSE_DROP;
}

/*
 * Parse the frame into *pkt (zeroed by the caller). Returns a
 * PEPC_PARSE_* decision; the reason for PASS or DROP is already counted.
 * pepc/simulate/frames.py:parse_frame is the same function in Python; keep them in
 * step.
 */
static __always_inline int parse(void *data, void *data_end, struct pepc_pkt *pkt)
{
	struct ethhdr *eth = data;
	struct pepc_vlan_hdr *vlan;
	void *cursor;
	__be16 proto;

	if ((void *)(eth + 1) > data_end) {
		count(PEPC_CNT_ERR_ETH_TRUNCATED);
		return PEPC_PARSE_PASS;
	}
	proto = eth->h_proto;
	cursor = eth + 1;

	/* Up to two tags (QinQ); a third tag is "not IP" below. */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		vlan = cursor;
		if ((void *)(vlan + 1) > data_end) {
			count(PEPC_CNT_ERR_VLAN_TRUNCATED);
			return PEPC_PARSE_PASS;
		}
		proto = vlan->encap_proto;
		cursor = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP))
		return parse_ip4(cursor, data_end, pkt);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ip6(cursor, data_end, pkt);
	count(PEPC_CNT_NON_IP);
	return PEPC_PARSE_PASS;
}

/* ---------------------------------------------------------------- lookup */

struct pepc_lookup {
	struct pepc_pkt pkt;
	__u32 n_masks;
	__u64 best_rank; /* ~0: no match yet */
	__u64 digest; /* first 8 bytes of the generation's policy digest */
	__u32 slot;
	__u8 action;
	__u8 bloom; /* the generation's prefilter is valid */
	__u8 direct; /* the generation's direct table is valid */
};

/*
 * One step of the tuple space search. Returns 1 to stop the walk.
 * `masks`/`rules` are compile-time constants in each caller below, so the
 * verifier sees one map per call site and can inline the array lookup.
 */
/*
 * The hash key is built a word at a time, not a field at a time: a mask
 * keeps its field masks and prefix lengths in the key's own order, so
 * three loads, two ANDs and a shift make the key, and the hash function
 * reads back whole words it just stored (byte stores followed by a wide
 * load stall the CPU's store forwarding). The asserts pin down the layout
 * this relies on; pepc/compiler/layout.py is little-endian by contract.
 */
union pepc_key {
	struct pepc_rule_key key;
	struct {
		__u64 shape; /* src/dst/sport/dport/proto plen, proto, padding */
		__u64 addrs; /* src, dst */
		__u32 ports; /* sport, dport */
	} w;
};
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "pepc's layout is little-endian");
_Static_assert(__builtin_offsetof(struct pepc_gen, policy_digest) % 8 == 0, "policy digest is read as a u64");
_Static_assert(__builtin_offsetof(struct pepc_rule_key, proto_plen) == 4 &&
		       __builtin_offsetof(struct pepc_rule_key, proto) == 5 &&
		       __builtin_offsetof(struct pepc_rule_key, src) == 8 &&
		       __builtin_offsetof(struct pepc_rule_key, dst) == 12 &&
		       __builtin_offsetof(struct pepc_rule_key, sport) == 16 &&
		       __builtin_offsetof(struct pepc_rule_key, dport) == 18,
	       "rule key layout");
_Static_assert(__builtin_offsetof(struct pepc_mask, dst_mask) == __builtin_offsetof(struct pepc_mask, src_mask) + 4 &&
		       __builtin_offsetof(struct pepc_mask, src_mask) % 8 == 0 &&
		       __builtin_offsetof(struct pepc_mask, dport_mask) == __builtin_offsetof(struct pepc_mask, sport_mask) + 2 &&
		       __builtin_offsetof(struct pepc_mask, src_plen) % 4 == 0 &&
		       __builtin_offsetof(struct pepc_mask, dst_plen) == __builtin_offsetof(struct pepc_mask, src_plen) + 1 &&
		       __builtin_offsetof(struct pepc_mask, sport_plen) == __builtin_offsetof(struct pepc_mask, src_plen) + 2 &&
		       __builtin_offsetof(struct pepc_mask, dport_plen) == __builtin_offsetof(struct pepc_mask, src_plen) + 3,
	       "mask layout");

static __always_inline void take(struct pepc_lookup *lk, __u64 rank, __u32 slot, __u8 action)
{
	if (rank < lk->best_rank) {
		lk->best_rank = rank;
		lk->slot = slot;
		lk->action = action;
	}
}

static __always_inline int same_key(struct pepc_direct *e, union pepc_key *k)
{
	return e->key_shape == k->w.shape && e->key_addrs == k->w.addrs && e->key_ports == k->w.ports;
}

static __always_inline long lookup_mask(__u32 i, struct pepc_lookup *lk, void *masks, void *rules, void *bloom, void *direct)
{
	struct pepc_direct *first, *e;
	struct pepc_rule_val *val;
	struct pepc_mask *m;
	union pepc_key k;
	__u64 h, *word;
	__u32 w, at;

	m = bpf_map_lookup_elem(masks, &i);
	/* Masks are sorted by the best rank they hold: once one cannot beat
	 * the current winner, none after it can. */
	if (!m || m->best_rank >= lk->best_rank)
		return 1;
	if ((m->sport_plen || m->dport_plen) && !lk->pkt.has_ports)
		return 0;

	/* key = the mask's shape + (packet fields & the mask's field masks);
	 * the key's padding bytes come out zero (they are hashed too) */
	k.w.shape = *(__u32 *)&m->src_plen | (__u64)m->proto_plen << 32;
	if (m->proto_plen)
		k.w.shape |= (__u64)lk->pkt.proto << 40;
	k.w.addrs = *(__u64 *)&lk->pkt.src & *(__u64 *)&m->src_mask;
	k.w.ports = *(__u32 *)&lk->pkt.sport & *(__u32 *)&m->sport_mask;

	h = k.w.shape * PEPC_BLOOM_K1 ^ k.w.addrs * PEPC_BLOOM_K2 ^ (__u64)k.w.ports * PEPC_BLOOM_K3;
	h ^= h >> 32;
	h *= PEPC_BLOOM_K4;
	h ^= h >> 32;
	if (lk->bloom) {
		/* no bit, no entry: skip the (much dearer) lookups */
		w = ((h >> 32) * PEPC_BLOOM_WORDS) >> 32; /* uniform in [0, WORDS) without a division */
		word = bpf_map_lookup_elem(bloom, &w);
		if (!word || !(*word & (1ULL << (h & 63))))
			return 0;
	}

	if (lk->direct) {
		at = ((h & 0xffffffffULL) * PEPC_DIRECT_HOMES) >> 32;
		first = bpf_map_lookup_elem(direct, &at);
		if (!first || !(first->flags & PEPC_DIRECT_USED))
			return 0; /* an empty home: no key has it */
		if (same_key(first, &k)) {
			take(lk, first->rank, first->slot, first->action);
			return 0;
		}
#pragma unroll
		for (__u32 j = 1; j <= PEPC_DIRECT_DEPTH; j++) {
			at++;
			e = bpf_map_lookup_elem(direct, &at);
			if (!e || !(e->flags & PEPC_DIRECT_USED))
				break;
			if (same_key(e, &k)) {
				take(lk, e->rank, e->slot, e->action);
				return 0;
			}
		}
		if (!(first->flags & PEPC_DIRECT_OVERFLOW))
			return 0;
	}

	val = bpf_map_lookup_elem(rules, &k.key);
	if (val)
		take(lk, val->rank, val->slot, val->action);
	return 0;
}

/*
 * The walk. The first PEPC_UNROLL masks are unrolled inline: on kernels
 * with costly returns (retpolines, SRSO "safe RET") a call per mask is a
 * third of a mask's cost, and most policies have few masks. The rest go
 * through bpf_loop: the verifier checks a bpf_loop callback once, whatever
 * the trip count, so verification stays fast at 128 masks and still works
 * at 1024 or more, where an open-coded loop would be explored iteration by
 * iteration into the verifier's complexity limit. Since kernel 5.19 the
 * verifier inlines a bpf_loop call whose callback is fixed into a plain
 * loop with a direct call per iteration.
 */
#define PEPC_UNROLL 8

static long lookup_gen0(__u32 i, void *ctx)
{
	return lookup_mask(i + PEPC_UNROLL, ctx, &pepc_masks_0, &pepc_rules_0, &pepc_bloom_0, &pepc_direct_0);
}

static long lookup_gen1(__u32 i, void *ctx)
{
	return lookup_mask(i + PEPC_UNROLL, ctx, &pepc_masks_1, &pepc_rules_1, &pepc_bloom_1, &pepc_direct_1);
}

static __always_inline void walk(struct pepc_lookup *lk, void *masks, void *rules, void *bloom, void *direct, void *more)
{
	__u32 at = PEPC_BLOOM_WORDS;
	__u64 *mark = bpf_map_lookup_elem(bloom, &at);
	struct pepc_direct *dmark;

	lk->bloom = mark && *mark == (lk->digest ^ PEPC_BLOOM_SCHEME);
	at = PEPC_DIRECT_HOMES + PEPC_DIRECT_DEPTH;
	dmark = bpf_map_lookup_elem(direct, &at);
	lk->direct = dmark && dmark->key_shape == (lk->digest ^ PEPC_DIRECT_SCHEME);
#pragma unroll
	for (__u32 i = 0; i < PEPC_UNROLL; i++) {
		if (i >= lk->n_masks || lookup_mask(i, lk, masks, rules, bloom, direct))
			return;
	}
	if (lk->n_masks > PEPC_UNROLL)
		bpf_loop(lk->n_masks - PEPC_UNROLL, more, lk, 0);
}

/* One function per generation, so that each bpf_loop call site has one
 * fixed callback: left to itself clang merges `gen ? loop(cb1) :
 * loop(cb0)` into one call with a selected callback, which the verifier
 * cannot inline. Each also sees one map per lookup site, so the verifier
 * inlines the masks array lookups. */
static __noinline int walk_gen0(struct pepc_lookup *lk)
{
	walk(lk, &pepc_masks_0, &pepc_rules_0, &pepc_bloom_0, &pepc_direct_0, lookup_gen0);
	return 0;
}

static __noinline int walk_gen1(struct pepc_lookup *lk)
{
	walk(lk, &pepc_masks_1, &pepc_rules_1, &pepc_bloom_1, &pepc_direct_1, lookup_gen1);
	return 0;
}

/*
 * IPv6: the same search over pepc_masks6/pepc_rules6, with a 48-byte key
 * built from six words (addresses and their masks are 16 bytes at
 * 8-aligned offsets, so each is two u64 loads and ANDs). A hit is read
 * from the IPv6 direct table like an IPv4 one: a 48-byte key through the
 * kernel's hash map costs more than the whole rest of the walk.
 */
union pepc_key6 {
	struct pepc_rule6_key key;
	struct {
		__u64 shape; /* src/dst/sport/dport/proto plen, proto, padding */
		__u64 src[2];
		__u64 dst[2];
		__u64 ports; /* sport, dport, then 4 bytes of padding (zero) */
	} w;
};
_Static_assert(sizeof(struct pepc_rule6_key) == 48 &&
		       __builtin_offsetof(struct pepc_rule6_key, proto_plen) == 4 &&
		       __builtin_offsetof(struct pepc_rule6_key, proto) == 5 &&
		       __builtin_offsetof(struct pepc_rule6_key, src) == 8 &&
		       __builtin_offsetof(struct pepc_rule6_key, dst) == 24 &&
		       __builtin_offsetof(struct pepc_rule6_key, sport) == 40 &&
		       __builtin_offsetof(struct pepc_rule6_key, dport) == 42,
	       "IPv6 rule key layout");
_Static_assert(__builtin_offsetof(struct pepc_mask6, src_mask) % 8 == 0 &&
		       __builtin_offsetof(struct pepc_mask6, dst_mask) == __builtin_offsetof(struct pepc_mask6, src_mask) + 16 &&
		       __builtin_offsetof(struct pepc_mask6, dport_mask) == __builtin_offsetof(struct pepc_mask6, sport_mask) + 2 &&
		       __builtin_offsetof(struct pepc_mask6, sport_mask) % 4 == 0 &&
		       __builtin_offsetof(struct pepc_mask6, src_plen) % 4 == 0 &&
		       __builtin_offsetof(struct pepc_mask6, dst_plen) == __builtin_offsetof(struct pepc_mask6, src_plen) + 1 &&
		       __builtin_offsetof(struct pepc_mask6, sport_plen) == __builtin_offsetof(struct pepc_mask6, src_plen) + 2 &&
		       __builtin_offsetof(struct pepc_mask6, dport_plen) == __builtin_offsetof(struct pepc_mask6, src_plen) + 3,
	       "IPv6 mask layout");
_Static_assert(__builtin_offsetof(struct pepc_pkt, src6) % 8 == 0 && __builtin_offsetof(struct pepc_pkt, dst6) % 8 == 0,
	       "IPv6 addresses are read as u64 words");

_Static_assert(sizeof(struct pepc_direct6) == 72 && __builtin_offsetof(struct pepc_direct6, key_src) == 8 &&
		       __builtin_offsetof(struct pepc_direct6, key_ports) == 40 && __builtin_offsetof(struct pepc_direct6, flags) == 48,
	       "IPv6 direct entry layout");

/* One branch, not six: each branch is a state the verifier explores, per
 * probe, per unrolled mask. */
static __always_inline int same_key6(struct pepc_direct6 *e, union pepc_key6 *k)
{
	return !((e->key_shape ^ k->w.shape) | (e->key_src[0] ^ k->w.src[0]) | (e->key_src[1] ^ k->w.src[1]) |
		 (e->key_dst[0] ^ k->w.dst[0]) | (e->key_dst[1] ^ k->w.dst[1]) | (e->key_ports ^ k->w.ports));
}

static __always_inline long lookup_mask6(__u32 i, struct pepc_lookup *lk, void *masks, void *rules, void *bloom, void *direct)
{
	struct pepc_direct6 *first, *e;
	struct pepc_rule_val *val;
	struct pepc_mask6 *m;
	union pepc_key6 k;
	__u64 h, *word;
	__u32 w, at;

	m = bpf_map_lookup_elem(masks, &i);
	if (!m || m->best_rank >= lk->best_rank)
		return 1;
	if ((m->sport_plen || m->dport_plen) && !lk->pkt.has_ports)
		return 0;
	/* the lockout guard: a guarded packet is matched only on its protocol
	 * (then 58, i.e. by ICMPV6 rules), never by a protocol wildcard */
	if (lk->pkt.guarded && !m->proto_plen)
		return 0;

	k.w.shape = *(__u32 *)&m->src_plen | (__u64)m->proto_plen << 32;
	if (m->proto_plen)
		k.w.shape |= (__u64)lk->pkt.proto << 40;
	k.w.src[0] = *(__u64 *)&lk->pkt.src6[0] & *(__u64 *)&m->src_mask[0];
	k.w.src[1] = *(__u64 *)&lk->pkt.src6[2] & *(__u64 *)&m->src_mask[8];
	k.w.dst[0] = *(__u64 *)&lk->pkt.dst6[0] & *(__u64 *)&m->dst_mask[0];
	k.w.dst[1] = *(__u64 *)&lk->pkt.dst6[2] & *(__u64 *)&m->dst_mask[8];
	k.w.ports = *(__u32 *)&lk->pkt.sport & *(__u32 *)&m->sport_mask;

	h = k.w.shape * PEPC_BLOOM_K1 ^ k.w.src[0] * PEPC_BLOOM_K2 ^ k.w.src[1] * PEPC_BLOOM_K5 ^
	    k.w.dst[0] * PEPC_BLOOM_K6 ^ k.w.dst[1] * PEPC_BLOOM_K7 ^ k.w.ports * PEPC_BLOOM_K3;
	h ^= h >> 32;
	h *= PEPC_BLOOM_K4;
	h ^= h >> 32;
	if (lk->bloom) {
		w = ((h >> 32) * PEPC_BLOOM_WORDS) >> 32;
		word = bpf_map_lookup_elem(bloom, &w);
		if (!word || !(*word & (1ULL << (h & 63))))
			return 0;
	}

	if (lk->direct) {
		at = ((h & 0xffffffffULL) * PEPC_DIRECT_HOMES) >> 32;
		first = bpf_map_lookup_elem(direct, &at);
		if (!first || !(first->flags & PEPC_DIRECT_USED))
			return 0;
		if (same_key6(first, &k)) {
			take(lk, first->rank, first->slot, first->action);
			return 0;
		}
#pragma unroll
		for (__u32 j = 1; j <= PEPC_DIRECT_DEPTH; j++) {
			at++;
			e = bpf_map_lookup_elem(direct, &at);
			if (!e || !(e->flags & PEPC_DIRECT_USED))
				break;
			if (same_key6(e, &k)) {
				take(lk, e->rank, e->slot, e->action);
				return 0;
			}
		}
		if (!(first->flags & PEPC_DIRECT_OVERFLOW))
			return 0;
	}

	val = bpf_map_lookup_elem(rules, &k.key);
	if (val)
		take(lk, val->rank, val->slot, val->action);
	return 0;
}


static long lookup6_gen0(__u32 i, void *ctx)
{
	return lookup_mask6(i + PEPC_UNROLL, ctx, &pepc_masks6_0, &pepc_rules6_0, &pepc_bloom6_0, &pepc_direct6_0);
}

static long lookup6_gen1(__u32 i, void *ctx)
{
	return lookup_mask6(i + PEPC_UNROLL, ctx, &pepc_masks6_1, &pepc_rules6_1, &pepc_bloom6_1, &pepc_direct6_1);
}

/*
 * The IPv6 walks are global functions, which the verifier checks once
 * each, for any argument; a static one it checks again for every state the
 * caller reaches it in, and the IPv6 parser (extension headers, fragments,
 * ICMPv6 types) reaches it in many: with the direct-table probes unrolled
 * over 8 masks that is past the verifier's limits (E2BIG), where the global
 * form verifies in a few seconds.
 */
/* Flags, then the first PEPC_UNROLL masks; 1 when the walk is over. */
static __always_inline int walk6(struct pepc_lookup *lk, void *masks, void *rules, void *bloom, void *direct)
{
	__u32 at = PEPC_BLOOM_WORDS;
	__u64 *mark = bpf_map_lookup_elem(bloom, &at);
	struct pepc_direct6 *dmark;

	lk->bloom = mark && *mark == (lk->digest ^ PEPC_BLOOM6_SCHEME);
	at = PEPC_DIRECT_HOMES + PEPC_DIRECT_DEPTH;
	dmark = bpf_map_lookup_elem(direct, &at);
	lk->direct = dmark && dmark->key_shape == (lk->digest ^ PEPC_DIRECT6_SCHEME);
#pragma unroll
	for (__u32 i = 0; i < PEPC_UNROLL; i++) {
		if (i >= lk->n_masks || lookup_mask6(i, lk, masks, rules, bloom, direct))
			return 1;
	}
	return lk->n_masks <= PEPC_UNROLL;
}

/* The masks past the unrolled ones: bpf_loop wants its context on the
 * stack, so the lookup state is copied there and the result back. */
static __always_inline void walk6_more(struct pepc_lookup *in, void *more)
{
	struct pepc_lookup lk;

	__builtin_memcpy(&lk, in, sizeof(lk));
	bpf_loop(lk.n_masks - PEPC_UNROLL, more, &lk, 0);
	in->best_rank = lk.best_rank;
	in->slot = lk.slot;
	in->action = lk.action;
}

__noinline int walk6_gen0(struct pepc_lookup *lk)
{
	if (lk && !walk6(lk, &pepc_masks6_0, &pepc_rules6_0, &pepc_bloom6_0, &pepc_direct6_0))
		walk6_more(lk, lookup6_gen0);
	return 0;
}

__noinline int walk6_gen1(struct pepc_lookup *lk)
{
	if (lk && !walk6(lk, &pepc_masks6_1, &pepc_rules6_1, &pepc_bloom6_1, &pepc_direct6_1))
		walk6_more(lk, lookup6_gen1);
	return 0;
}

/* ------------------------------------------------------------ rate limit */

/*
 * floor(ns * rate / 1e9) for rate < 2^41, exact in u64: whole seconds
 * first, then the sub-second part with the rate split at bit 20 so that no
 * product exceeds 2^51. Callers bound ns so the first product fits.
 */
static __always_inline __u64 bytes_in(__u64 ns, __u64 rate)
{
	__u64 rem = ns % NSEC_PER_SEC;   /* < 2^30 */
	__u64 q = rem * (rate >> 20);    /* < 2^51 */
	__u64 low = rem * (rate & 0xfffff); /* < 2^50 */

	return (ns / NSEC_PER_SEC) * rate + ((q / NSEC_PER_SEC) << 20) +
	       (((q % NSEC_PER_SEC) << 20) + low) / NSEC_PER_SEC;
}

/*
 * floor(bytes * 1e9 / rate), the time it takes to earn `bytes`, exact in
 * u64 for rate < 2^41 and bytes earned within one bucket: 1e9 = 1953125 *
 * 512, and every intermediate stays below 2^62.
 */
static __always_inline __u64 ns_for(__u64 bytes, __u64 rate)
{
	__u64 x = (bytes % rate) * 1953125;   /* < 2^61 */

	return (bytes / rate) * NSEC_PER_SEC + (x / rate) * 512 + (x % rate) * 512 / rate;
}

/* Returns XDP_PASS when `len` bytes fit the rule's bucket, else XDP_DROP. */
static __always_inline int rate_limit(__u32 gen, __u32 slot, __u64 len)
{
	struct pepc_rl_state *b;
	struct pepc_slot *s;
	__u64 rate, burst, now;
	int v = XDP_DROP;

	s = gen ? bpf_map_lookup_elem(&pepc_slots_1, &slot) : bpf_map_lookup_elem(&pepc_slots_0, &slot);
	b = bpf_map_lookup_elem(&pepc_rl, &slot);
	if (!s || !b)
		return XDP_PASS; /* unreachable: slot < max_rules was checked */
	rate = s->rate_bps < PEPC_RATE_MAX ? s->rate_bps : PEPC_RATE_MAX;
	burst = s->burst_bytes < PEPC_BURST_MAX ? s->burst_bytes : PEPC_BURST_MAX;
	now = bpf_ktime_get_ns(); /* no helper calls under the lock */

	bpf_spin_lock(&b->lock);
	if (b->last_ns == 0 || b->tokens >= burst) {
		/* new bucket (the reconciler zeroes a slot it hands out) or
		 * full: time that passes adds nothing */
		b->tokens = burst;
		b->last_ns = now;
	} else if (now > b->last_ns && rate) {
		__u64 elapsed = now - b->last_ns;
		__u64 need = burst - b->tokens;
		__u64 add = need;

		/* bytes_in() cannot overflow once elapsed is bounded by the
		 * time to fill the bucket */
		if (elapsed / NSEC_PER_SEC <= need / rate)
			add = bytes_in(elapsed, rate);
		if (add >= need) {
			b->tokens = burst;
			b->last_ns = now;
		} else if (add) {
			/* advance the clock only by the time the whole bytes
			 * took, so fractions of a byte are not lost between
			 * closely spaced packets */
			b->tokens += add;
			b->last_ns += ns_for(add, rate);
		}
	}
	if (b->tokens >= len) {
		b->tokens -= len;
		v = XDP_PASS;
	}
	bpf_spin_unlock(&b->lock);
	return v;
}

/* ---------------------------------------------------------------- events */

static __always_inline void log_event(struct pepc_lookup *lk, __u32 cap, __u64 len)
{
	struct pepc_evbudget *budget;
	struct pepc_event *ev;
	__u64 now = bpf_ktime_get_ns();

	budget = bpf_map_lookup_elem(&pepc_evbudget, &lk->slot);
	if (!budget)
		return;
	if (now - budget->window_ns >= NSEC_PER_SEC) {
		budget->window_ns = now;
		budget->count = 0;
		budget->suppressed = 0;
	}
	if (budget->count >= cap) {
		budget->suppressed++;
		count(PEPC_CNT_EVENTS_SUPPRESSED);
		return;
	}
	budget->count++;

	ev = bpf_ringbuf_reserve(&pepc_events, sizeof(*ev), 0);
	if (!ev) {
		count(PEPC_CNT_EVENTS_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = now;
	ev->slot = lk->slot;
	ev->src = lk->pkt.src;
	ev->dst = lk->pkt.dst;
	ev->family = lk->pkt.v6 ? 6 : 4;
	if (lk->pkt.v6) {
		__builtin_memcpy(ev->src6, lk->pkt.src6, 16);
		__builtin_memcpy(ev->dst6, lk->pkt.dst6, 16);
	}
	ev->sport = lk->pkt.sport;
	ev->dport = lk->pkt.dport;
	ev->proto = lk->pkt.proto;
	ev->action = PEPC_ACTION_LOG_ONLY;
	ev->len = len;
	bpf_ringbuf_submit(ev, 0);
	count(PEPC_CNT_EVENTS_SENT);
}

/* --------------------------------------------------------------- program */

SEC("xdp")
int pepc_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct pepc_lookup lk = { .best_rank = ~0ULL };
	struct pepc_rule_stats *st;
	struct pepc_ctrl *ctrl;
	struct pepc_gen *g;
	__u32 zero = 0, gen, n;
	int v;

	count(PEPC_CNT_PACKETS);
	v = parse(data, data_end, &lk.pkt);
	if (v != PEPC_PARSE_EVAL)
		return verdict(v == PEPC_PARSE_DROP ? XDP_DROP : XDP_PASS);

	ctrl = bpf_map_lookup_elem(&pepc_ctrl, &zero);
	if (!ctrl)
		return verdict(XDP_PASS);
	/* The one read of the generation: everything below uses `gen`, so a
	 * flip in the middle of this packet cannot mix two policies. */
	gen = *(volatile __u32 *)&ctrl->active_gen & 1;
	g = bpf_map_lookup_elem(&pepc_gen, &gen);
	if (!g)
		return verdict(XDP_PASS);

	lk.digest = *(__u64 *)g->policy_digest;
	if (lk.pkt.v6) {
		n = g->n_masks6 < PEPC_MAX_MASKS ? g->n_masks6 : PEPC_MAX_MASKS;
		lk.n_masks = n;
		if (gen)
			walk6_gen1(&lk);
		else
			walk6_gen0(&lk);
	} else {
		n = g->n_masks < PEPC_MAX_MASKS ? g->n_masks : PEPC_MAX_MASKS;
		lk.n_masks = n;
		if (gen)
			walk_gen1(&lk);
		else
			walk_gen0(&lk);
	}

	if (lk.best_rank == ~0ULL) {
		/* the lockout guard: ND, MLD and packet-too-big that no rule
		 * names pass whatever the default action */
		if (lk.pkt.guarded) {
			count(PEPC_CNT_GUARD_PASS);
			return verdict(XDP_PASS);
		}
		if (g->default_action == PEPC_ACTION_BLOCK) {
			count(PEPC_CNT_DEFAULT_DROP);
			return verdict(XDP_DROP);
		}
		count(PEPC_CNT_DEFAULT_PASS);
		return verdict(XDP_PASS);
	}

	switch (lk.action) {
	case PEPC_ACTION_BLOCK:
		count(PEPC_CNT_BLOCK);
		v = XDP_DROP;
		break;
	case PEPC_ACTION_LOG_ONLY:
		count(PEPC_CNT_LOG_ONLY);
		log_event(&lk, g->event_cap, len);
		v = XDP_PASS;
		break;
	case PEPC_ACTION_RATE_LIMIT:
		v = rate_limit(gen, lk.slot, len);
		count(v == XDP_PASS ? PEPC_CNT_RATE_LIMIT_PASS : PEPC_CNT_RATE_LIMIT_DROP);
		break;
	default: /* PEPC_ACTION_ALLOW */
		count(PEPC_CNT_ALLOW);
		v = XDP_PASS;
		break;
	}

	st = bpf_map_lookup_elem(&pepc_stats, &lk.slot);
	if (st) {
		st->packets++;
		st->bytes += len;
		if (v == XDP_DROP)
			st->drops++;
	}
	return verdict(v);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
