/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * endpoint.h - local endpoints (pods on this node), found by the ifindex of
 * their host-side veth or by their IPv4 address. Written by the agent when an
 * endpoint is created, before its programs are attached.
 * Rust twins: crates/datapath/src/maps/endpoint.rs.
 */
#ifndef MEMBRANE_LIB_ENDPOINT_H
#define MEMBRANE_LIB_ENDPOINT_H

#include "common.h"

#ifndef MBR_ENDPOINTS_MAX
#define MBR_ENDPOINTS_MAX 65536
#endif

/* endpoint_info.flags */
#define MBR_EP_F_INGRESS_ENFORCED 0x1 /* ingress policy applies (else allow) */
#define MBR_EP_F_EGRESS_ENFORCED  0x2 /* egress policy applies (else allow) */
#define MBR_EP_F_AUDIT            0x4 /* report would-be drops as AUDIT, pass them */

struct endpoint_info {            /* 32 bytes */
	__u32 ifindex;            /* host-side veth */
	__u32 identity;           /* security identity of the pod */
	__be32 ipv4;
	__u16 ep_id;              /* 1..65535: key of its policy entries */
	__u16 flags;              /* MBR_EP_F_* */
	__u8  mac[6];             /* pod's MAC */
	__u8  node_mac[6];        /* host-side veth's MAC */
	__u32 reserved;
};

/* ifindex -> endpoint */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, MBR_ENDPOINTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mbr_ep_ifindex SEC(".maps");

/* IPv4 address (network order, stored as __u32) -> endpoint */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, MBR_ENDPOINTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mbr_ep_ip SEC(".maps");

/* The endpoint whose host-side veth has `ifindex`, or NULL. */
static __always_inline struct endpoint_info *endpoint_by_ifindex(__u32 ifindex)
{
	return bpf_map_lookup_elem(&mbr_ep_ifindex, &ifindex);
}

/* The endpoint id of the local endpoint with address `addr`, 0 if none. */
static __always_inline __u16 endpoint_id_by_ip(__be32 addr)
{
	__u32 key = addr;
	const struct endpoint_info *ep = bpf_map_lookup_elem(&mbr_ep_ip, &key);

	return ep ? ep->ep_id : 0;
}

#endif /* MEMBRANE_LIB_ENDPOINT_H */
