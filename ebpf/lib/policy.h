/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * policy.h - per-endpoint, per-direction policy: peer identity (or any),
 * protocol (or any), port prefix (or any) -> allow / deny / redirect.
 * Two maps hold the entries: exact ports (prefixlen 96) in the hash
 * mbr_policy_exact, every shorter prefix in the LPM trie mbr_policy.
 * Lookup order and combination: ebpf/README.md, "Policy".
 * Rust twins: crates/datapath/src/maps/policy.rs.
 */
#ifndef MEMBRANE_LIB_POLICY_H
#define MEMBRANE_LIB_POLICY_H

#include "common.h"
#include "abi.h"

#ifndef MBR_POLICY_MAX
#define MBR_POLICY_MAX 65536
#endif

/* policy_entry.action */
#define MBR_POLICY_ALLOW    1
#define MBR_POLICY_DENY     2
#define MBR_POLICY_REDIRECT 3

/* prefixlen values: the data after prefixlen is 12 bytes = 96 bits. */
#define MBR_POLICY_PREFIX_ANY_PROTO 64  /* ep_id, direction, pad0, identity */
#define MBR_POLICY_PREFIX_ANY_PORT  80  /* + proto, pad1 */
#define MBR_POLICY_PREFIX_FULL      96  /* + all 16 bits of dport */

struct policy_key {               /* 16 bytes */
	__u32 prefixlen;
	__u16 ep_id;
	__u8  direction;          /* enum mbr_traffic_direction */
	__u8  pad0;
	__u32 identity;           /* peer identity; 0 = any peer */
	__u8  proto;              /* IPPROTO_*; for ICMP, dport holds the ICMP type */
	__u8  pad1;
	__be16 dport;
};

struct policy_entry {             /* 8 bytes */
	__u8  action;             /* MBR_POLICY_* */
	__u8  flags;
	__be16 proxy_port;        /* for MBR_POLICY_REDIRECT */
	__u32 cookie;             /* rule id chosen by the agent, reported in events */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(max_entries, MBR_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mbr_policy SEC(".maps");

/* The entries whose key is full length (prefixlen MBR_POLICY_PREFIX_FULL):
 * the common case (one port). A hash lookup costs the same at any size,
 * while the trie's grows with its entries; inserts are several times faster
 * too. Preallocated: inserts never allocate, and 64k entries are a few MiB. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(max_entries, MBR_POLICY_MAX);
} mbr_policy_exact SEC(".maps");

/* The outcome of a policy decision. */
struct policy_result {
	__u8  action;             /* MBR_POLICY_ALLOW / _DENY / _REDIRECT, 0 = nothing matched */
	__u8  drop_reason;        /* MBR_DROP_POLICY_DENY / _DENIED when not allowed, else 0 */
	__be16 proxy_port;        /* for MBR_POLICY_REDIRECT */
	__u32 cookie;             /* the deciding entry's cookie; 0 when nothing matched */
};

static __always_inline void policy_take(struct policy_result *r, const struct policy_entry *e)
{
	r->action = e->action;
	r->proxy_port = e->proxy_port;
	r->cookie = e->cookie;
}

/*
 * The entry that decides for one identity: the most specific stored prefix of
 * the full-length `key`. A full-length entry is always the longest prefix, so
 * an exact hit decides without the trie; a miss falls through to the trie
 * (which may also hold a full-length key written by an older build).
 * Both lookups stay direct calls on a constant map (the verifier inlines the
 * hash lookup): they are sequential, never alternatives clang could merge into
 * one call site on a selected map pointer (see ct_map_lookup).
 */
static __always_inline const struct policy_entry *policy_lookup(const struct policy_key *key)
{
	const struct policy_entry *e = bpf_map_lookup_elem(&mbr_policy_exact, key);

	if (e)
		return e;
	return bpf_map_lookup_elem(&mbr_policy, key);
}

/*
 * Decides a new connection of endpoint `ep_id` in `direction` with a peer of
 * identity `peer`, protocol `proto` and policy port `port` (network order;
 * the ICMP type for ICMP). Two longest-prefix lookups (policy_lookup), the
 * peer's identity then "any peer" (0), combined as deny > redirect (peer-specific first) >
 * allow > nothing (default deny). A deny from the first lookup decides
 * without the second.
 */
static __always_inline void policy_decide(__u16 ep_id, __u8 direction, __u32 peer, __u8 proto,
					  __be16 port, struct policy_result *r)
{
	struct policy_key key = {
		.prefixlen = MBR_POLICY_PREFIX_FULL,
		.ep_id = ep_id,
		.direction = direction,
		.pad0 = 0,
		.identity = peer,
		.proto = proto,
		.pad1 = 0,
		.dport = port,
	};
	const struct policy_entry *specific, *any = NULL;

	r->action = 0;
	r->drop_reason = 0;
	r->proxy_port = 0;
	r->cookie = 0;

	specific = policy_lookup(&key);
	if (specific && specific->action == MBR_POLICY_DENY)
		goto deny_specific;
	if (peer != MBR_ID_UNKNOWN) {
		key.identity = MBR_ID_UNKNOWN;
		any = policy_lookup(&key);
		if (any && any->action == MBR_POLICY_DENY) {
			policy_take(r, any);
			r->drop_reason = MBR_DROP_POLICY_DENY;
			return;
		}
	}
	if (specific && specific->action == MBR_POLICY_REDIRECT) {
		policy_take(r, specific);
		return;
	}
	if (any && any->action == MBR_POLICY_REDIRECT) {
		policy_take(r, any);
		return;
	}
	if (specific && specific->action == MBR_POLICY_ALLOW) {
		policy_take(r, specific);
		return;
	}
	if (any && any->action == MBR_POLICY_ALLOW) {
		policy_take(r, any);
		return;
	}
	r->drop_reason = MBR_DROP_POLICY_DENIED;
	return;

deny_specific:
	policy_take(r, specific);
	r->drop_reason = MBR_DROP_POLICY_DENY;
}

#endif /* MEMBRANE_LIB_POLICY_H */
