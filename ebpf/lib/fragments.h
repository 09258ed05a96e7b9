/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * fragments.h - the ports of fragmented IPv4 datagrams. Only the first
 * fragment carries the L4 header; when it passes, its ports are remembered
 * under (saddr, daddr, IP id, protocol) so that the datagram's later
 * fragments get the same conntrack and policy treatment. A later fragment
 * with no remembered first fragment (lost, reordered, or evicted) is dropped
 * with MBR_DROP_FRAG_NOT_SUPPORTED where policy is enforced.
 * Rust twins: crates/datapath/src/maps/fragments.rs.
 */
#ifndef MEMBRANE_LIB_FRAGMENTS_H
#define MEMBRANE_LIB_FRAGMENTS_H

#include "common.h"
#include "parse.h"

#ifndef MBR_FRAGMENTS_MAX
#define MBR_FRAGMENTS_MAX 8192
#endif

struct frag_key {                 /* 12 bytes */
	__be32 saddr;
	__be32 daddr;
	__be16 id;                /* IPv4 identification */
	__u8  proto;
	__u8  pad;
};

struct frag_entry {               /* 8 bytes */
	__be16 sport;             /* the first fragment's conntrack tuple ports */
	__be16 dport;
	__be16 policy_port;
	__u8  icmp_type;
	__u8  icmp_code;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_entry);
	__uint(max_entries, MBR_FRAGMENTS_MAX);
} mbr_frag4 SEC(".maps");

static __always_inline void frag_key_of(struct frag_key *k, const struct mbr_pkt *pkt)
{
	k->saddr = pkt->saddr;
	k->daddr = pkt->daddr;
	k->id = pkt->ip_id;
	k->proto = pkt->proto;
	k->pad = 0;
}

/* Remembers the ports of a first fragment that passed. Best effort. */
static __always_inline void frag_remember(const struct mbr_pkt *pkt)
{
	struct frag_key k;
	struct frag_entry v = {
		.sport = pkt->sport,
		.dport = pkt->dport,
		.policy_port = pkt->policy_port,
		.icmp_type = pkt->icmp_type,
		.icmp_code = pkt->icmp_code,
	};

	frag_key_of(&k, pkt);
	bpf_map_update_elem(&mbr_frag4, &k, &v, BPF_ANY);
}

/* Fills in the ports of a later fragment from its first fragment: 0, or -1
 * when the first fragment was not seen. */
static __always_inline int frag_recall(struct mbr_pkt *pkt)
{
	struct frag_key k;
	const struct frag_entry *v;

	frag_key_of(&k, pkt);
	v = bpf_map_lookup_elem(&mbr_frag4, &k);
	if (!v)
		return -1;
	pkt->sport = v->sport;
	pkt->dport = v->dport;
	pkt->policy_port = v->policy_port;
	pkt->icmp_type = v->icmp_type;
	pkt->icmp_code = v->icmp_code;
	if (pkt->proto == IPPROTO_ICMP)
		pkt->icmp_kind = (v->icmp_type == MBR_ICMP_ECHO || v->icmp_type == MBR_ICMP_ECHOREPLY) ?
					 MBR_ICMP_KIND_ECHO :
					 MBR_ICMP_KIND_OTHER;
	return 0;
}

#endif /* MEMBRANE_LIB_FRAGMENTS_H */
