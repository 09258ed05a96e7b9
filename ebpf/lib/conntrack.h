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

#endif /* MEMBRANE_LIB_CONNTRACK_H */
