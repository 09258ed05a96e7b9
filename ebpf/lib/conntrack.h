/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * conntrack.h - connection tracking. One LRU map for TCP, one for everything
 * else, so a flood of UDP cannot evict TCP connections. Keys hold the tuple of
 * a connection's first packet; lookups: ebpf/README.md, "Conntrack".
 * Rust twins: crates/datapath/src/maps/conntrack.rs.
 */
#ifndef MEMBRANE_LIB_CONNTRACK_H
#define MEMBRANE_LIB_CONNTRACK_H

#include "common.h"
#include "abi.h"
#include "config.h"
#include "parse.h"

#ifndef MBR_CT_TCP_MAX
#define MBR_CT_TCP_MAX 524288
#endif
#ifndef MBR_CT_ANY_MAX
#define MBR_CT_ANY_MAX 262144
#endif

/* ct_entry.flags */
#define MBR_CT_F_SEEN_REPLY     0x1
#define MBR_CT_F_FWD_CLOSING    0x2
#define MBR_CT_F_REV_CLOSING    0x4
#define MBR_CT_F_PROXY_REDIRECT 0x8

struct ct_key {                   /* 16 bytes */
	__be32 saddr;             /* the initiator */
	__be32 daddr;
	__be16 sport;             /* ICMP echo: sport = echo id, dport = 0 */
	__be16 dport;
	__u8  proto;
	__u8  direction;          /* MBR_TRAFFIC_EGRESS: created at an endpoint's egress; INGRESS: at its ingress */
	__u16 pad;
};

struct ct_entry {                 /* 64 bytes */
	__u64 fwd_packets;        /* initiator -> responder */
	__u64 fwd_bytes;
	__u64 rev_packets;        /* responder -> initiator */
	__u64 rev_bytes;
	__u32 expires;            /* monotonic seconds; the entry is dead after */
	__u32 created;            /* monotonic seconds */
	__u32 last_report;        /* monotonic seconds of the last flow event */
	__u32 src_identity;       /* identity of the initiator */
	__u32 dst_identity;
	__u16 ep_id;              /* the local endpoint that created it */
	__u16 rev_nat_index;      /* 0: no service translation */
	__u8  fwd_tcp_flags;      /* OR of the TCP flags seen each way */
	__u8  rev_tcp_flags;
	__u8  flags;              /* MBR_CT_F_* */
	__u8  pad;
	__be16 proxy_port;
	__u16 pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, MBR_CT_TCP_MAX);
} mbr_ct_tcp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, MBR_CT_ANY_MAX);
} mbr_ct_any SEC(".maps");

static __always_inline __u8 ct_opposite(__u8 direction)
{
	return direction == MBR_TRAFFIC_EGRESS ? MBR_TRAFFIC_INGRESS : MBR_TRAFFIC_EGRESS;
}

/*
 * The entry of `key` in the map for its protocol.
 *
 * Each map must have call sites of its own: were clang to merge the two
 * lookups into one call with a selected map pointer (it does, to shrink
 * code), the verifier would see two maps at one call and fall back to the
 * generic, indirect lookup instead of inlining it. The empty asm after one
 * of them makes the two branches differ at their ends, which stops the merge.
 */
static __always_inline struct ct_entry *ct_map_lookup(const struct ct_key *key)
{
	struct ct_entry *e;

	if (key->proto == IPPROTO_TCP) {
		e = bpf_map_lookup_elem(&mbr_ct_tcp, key);
		barrier_var(e);
	} else {
		e = bpf_map_lookup_elem(&mbr_ct_any, key);
	}
	return e;
}

/*
 * A usable entry: present, not expired, and created by this endpoint (an
 * entry of another endpoint, e.g. one whose IP this endpoint spoofs or
 * inherited, never vouches for this endpoint's packets).
 */
static __always_inline struct ct_entry *ct_live(const struct ct_key *key, __u32 now, __u16 ep_id)
{
	struct ct_entry *e = ct_map_lookup(key);

	if (e && e->expires >= now && e->ep_id == ep_id)
		return e;
	return NULL;
}

static __always_inline void ct_key_set(struct ct_key *k, __be32 s, __be32 d, __be16 sp, __be16 dp,
				       __u8 proto, __u8 direction)
{
	k->saddr = s;
	k->daddr = d;
	k->sport = sp;
	k->dport = dp;
	k->proto = proto;
	k->direction = direction;
	k->pad = 0;
}

/* Turns the key of a packet into the key its reply would have been created
 * under (addresses and ports swapped) at `direction`. */
static __always_inline void ct_key_reverse(struct ct_key *k, __u8 direction)
{
	__be32 addr = k->saddr;
	__be16 port = k->sport;

	k->saddr = k->daddr;
	k->daddr = addr;
	k->sport = k->dport;
	k->dport = port;
	k->direction = direction;
}

/*
 * Conntrack lookup of `pkt` seen at `direction` of endpoint `ep_id`
 * (ebpf/README.md, "Conntrack"): ESTABLISHED (forward), REPLY, RELATED (an
 * ICMP error quoting a tracked packet) or NEW. *entry is the entry found.
 */
static __always_inline __u8 ct_lookup(const struct mbr_pkt *pkt, __u8 direction, __u16 ep_id,
				      __u32 now, struct ct_entry **entry)
{
	struct ct_key k;
	struct ct_entry *e;

	*entry = NULL;
	if (pkt->icmp_kind == MBR_ICMP_KIND_OTHER)
		return MBR_CT_NEW;
	if (pkt->icmp_kind == MBR_ICMP_KIND_ERROR) {
		/* The quoted packet went the other way: it is a forward packet of
		 * a connection created at the opposite direction, or a reply of
		 * one created at this direction. */
		ct_key_set(&k, pkt->inner_saddr, pkt->inner_daddr, pkt->inner_sport,
			   pkt->inner_dport, pkt->inner_proto, ct_opposite(direction));
		e = ct_live(&k, now, ep_id);
		if (!e) {
			ct_key_set(&k, pkt->inner_daddr, pkt->inner_saddr, pkt->inner_dport,
				   pkt->inner_sport, pkt->inner_proto, direction);
			e = ct_live(&k, now, ep_id);
		}
		if (!e)
			return MBR_CT_NEW;
		*entry = e;
		return MBR_CT_RELATED;
	}

	ct_key_set(&k, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto, direction);
	e = ct_live(&k, now, ep_id);
	if (e) {
		*entry = e;
		return MBR_CT_ESTABLISHED;
	}
	ct_key_set(&k, pkt->daddr, pkt->saddr, pkt->dport, pkt->sport, pkt->proto,
		   ct_opposite(direction));
	e = ct_live(&k, now, ep_id);
	if (e) {
		*entry = e;
		return MBR_CT_REPLY;
	}
	return MBR_CT_NEW;
}

/* Whether the connection is shutting down: an RST seen, or a FIN each way. */
static __always_inline int ct_tcp_closing(__u8 all_tcp_flags, __u8 ct_flags)
{
	return (all_tcp_flags & MBR_TCP_RST) ||
	       (ct_flags & (MBR_CT_F_FWD_CLOSING | MBR_CT_F_REV_CLOSING)) ==
		       (MBR_CT_F_FWD_CLOSING | MBR_CT_F_REV_CLOSING);
}

/* Lifetime in seconds of an entry in the given state. */
static __always_inline __u32 ct_lifetime(__u8 proto, __u8 all_tcp_flags, __u8 ct_flags,
					 const struct datapath_config *cfg)
{
	if (proto != IPPROTO_TCP)
		return config_ct_nontcp(cfg);
	if (ct_tcp_closing(all_tcp_flags, ct_flags))
		return config_ct_tcp_close(cfg);
	if (ct_flags & MBR_CT_F_SEEN_REPLY)
		return config_ct_tcp_established(cfg);
	return config_ct_tcp_syn(cfg);
}

/*
 * Whether a forward TCP packet opens a new connection on the tuple of a
 * finished one (a SYN after FIN/RST): then it goes through policy again.
 */
static __always_inline int ct_tcp_reopens(__u8 proto, __u8 tcp_flags, const struct ct_entry *e)
{
	return proto == IPPROTO_TCP && (tcp_flags & (MBR_TCP_SYN | MBR_TCP_ACK)) == MBR_TCP_SYN &&
	       ((e->fwd_tcp_flags | e->rev_tcp_flags) & MBR_TCP_RST ||
		(e->flags & (MBR_CT_F_FWD_CLOSING | MBR_CT_F_REV_CLOSING)));
}

/*
 * Accounts a packet (protocol `proto`, TCP flags `tcp_flags`) of an
 * existing connection: counters with atomic adds, TCP flags and state flags
 * with one atomic OR (only when a bit is new), lifetime refreshed. `reply`
 * selects the responder's direction.
 */
static __always_inline void ct_update(struct ct_entry *e, __u8 proto, __u8 tcp_flags, int reply,
				      __u32 bytes, __u32 now, const struct datapath_config *cfg)
{
	__u8 closing = (tcp_flags & (MBR_TCP_FIN | MBR_TCP_RST)) ? 1 : 0;
	__u32 *word = (__u32 *)&e->fwd_tcp_flags;
	__u32 old_word, add_word = 0;
	__u8 *add = (__u8 *)&add_word;
	__u8 *old;
	__u32 expires;

	if (reply) {
		__sync_fetch_and_add(&e->rev_packets, 1);
		__sync_fetch_and_add(&e->rev_bytes, bytes);
		add[1] = tcp_flags;
		add[2] = MBR_CT_F_SEEN_REPLY | (closing ? MBR_CT_F_REV_CLOSING : 0);
	} else {
		__sync_fetch_and_add(&e->fwd_packets, 1);
		__sync_fetch_and_add(&e->fwd_bytes, bytes);
		add[0] = tcp_flags;
		add[2] = closing ? MBR_CT_F_FWD_CLOSING : 0;
	}
	/* fwd_tcp_flags, rev_tcp_flags, flags and pad share one aligned u32
	 * (offsets 56..59): OR the new bits in atomically. */
	old_word = *word;
	if ((old_word | add_word) != old_word)
		__sync_fetch_and_or(word, add_word);
	old_word |= add_word;
	old = (__u8 *)&old_word;

	expires = now + ct_lifetime(proto, old[0] | old[1], old[2], cfg);
	if (e->expires != expires)
		e->expires = expires;
}

/*
 * Creates the entry of a new connection whose first packet is `pkt`, seen at
 * `direction` of endpoint `ep_id`. Overwrites an expired entry of the same
 * tuple. 0 or the error of the map update.
 */
static __always_inline long ct_create(const struct mbr_pkt *pkt, __u8 direction, __u16 ep_id,
				      __u32 src_identity, __u32 dst_identity, __u8 ct_flags,
				      __be16 proxy_port, __u32 bytes, __u32 now,
				      const struct datapath_config *cfg)
{
	struct ct_key k;
	struct ct_entry e = {};

	ct_key_set(&k, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto, direction);
	if (pkt->tcp_flags & (MBR_TCP_FIN | MBR_TCP_RST))
		ct_flags |= MBR_CT_F_FWD_CLOSING;
	e.fwd_packets = 1;
	e.fwd_bytes = bytes;
	e.created = now;
	e.last_report = now;
	e.src_identity = src_identity;
	e.dst_identity = dst_identity;
	e.ep_id = ep_id;
	e.fwd_tcp_flags = pkt->tcp_flags;
	e.flags = ct_flags;
	e.proxy_port = proxy_port;
	e.expires = now + ct_lifetime(pkt->proto, pkt->tcp_flags, ct_flags, cfg);
	long err;

	if (pkt->proto == IPPROTO_TCP) {
		err = bpf_map_update_elem(&mbr_ct_tcp, &k, &e, BPF_ANY);
		barrier_var(err); /* see ct_map_lookup */
	} else {
		err = bpf_map_update_elem(&mbr_ct_any, &k, &e, BPF_ANY);
	}
	return err;
}

#endif /* MEMBRANE_LIB_CONNTRACK_H */
