/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * policy.h - per-endpoint, per-direction policy: peer identity (or any),
 * protocol (or any), port prefix (or any) -> allow / deny / redirect.
 * Lookup order and combination: ebpf/README.md, "Policy".
 * Rust twins: crates/datapath/src/maps/policy.rs.
 */
#ifndef MEMBRANE_LIB_POLICY_H
#define MEMBRANE_LIB_POLICY_H

#include "common.h"

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

#endif /* MEMBRANE_LIB_POLICY_H */
