/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * endpoint.h - local endpoints (pods on this node), found by the ifindex of
 * their host-side veth or by their IPv4 address. Written by the agent when an
 * endpoint is created, before its programs are attached.
 *
 * mbr_ep_ifindex is the authority. It is a hash map, and a hash lookup is a
 * function call (two, with the key compare) that the established path
 * cannot afford on CPUs with return-stack mitigations. So the datapath keeps
 * its own copy of the entries it has used in mbr_ep_cache, a direct-mapped
 * array (whose lookup the verifier inlines): interface `ifindex` has slot
 * ifindex % MBR_EP_CACHE_SLOTS, and a slot is valid for the interface whose
 * ifindex it holds. Interfaces whose slots collide take turns (each miss
 * reads the authority and takes the slot over); as ifindexes are allocated
 * in sequence, live endpoints rarely collide. The cache is written only here, from the authoritative
 * entry, and serves only the established path (ownership of CT entries, the
 * source check, event identities); every decision that depends on policy
 * flags, and every packet the cache cannot pass on its own, reads the
 * authority first (endpoint_confirm), which also refreshes the slot. So the
 * cache can lag the agent's writes only for packets of tracked connections,
 * until the next packet of that interface that is not one.
 * Rust twins: crates/datapath/src/maps/endpoint.rs.
 */
#ifndef MEMBRANE_LIB_ENDPOINT_H
#define MEMBRANE_LIB_ENDPOINT_H

#include "common.h"

#ifndef MBR_ENDPOINTS_MAX
#define MBR_ENDPOINTS_MAX 65536
#endif
/* Slots of mbr_ep_cache; a power of two. */
#ifndef MBR_EP_CACHE_SLOTS
#define MBR_EP_CACHE_SLOTS 16384
#endif
_Static_assert((MBR_EP_CACHE_SLOTS & (MBR_EP_CACHE_SLOTS - 1)) == 0,
	       "MBR_EP_CACHE_SLOTS must be a power of two");

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

/* ifindex % MBR_EP_CACHE_SLOTS -> copy of the mbr_ep_ifindex entry of one
 * interface with that slot (its ifindex inside; 0: empty slot) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, MBR_EP_CACHE_SLOTS);
} mbr_ep_cache SEC(".maps");

/* IPv4 address (network order, stored as __u32) -> endpoint */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, MBR_ENDPOINTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mbr_ep_ip SEC(".maps");

static __always_inline struct endpoint_info *endpoint_cache_slot(__u32 ifindex)
{
	__u32 index = ifindex & (MBR_EP_CACHE_SLOTS - 1);

	return bpf_map_lookup_elem(&mbr_ep_cache, &index);
}

/* The cached endpoint of `ifindex`, or NULL when its slot holds none (or
 * another interface's). No function call. */
static __always_inline const struct endpoint_info *endpoint_cached(__u32 ifindex)
{
	const struct endpoint_info *slot = endpoint_cache_slot(ifindex);

	if (slot && ifindex != 0 && slot->ifindex == ifindex)
		return slot;
	return NULL;
}

/* Makes the cache slot of `ifindex` hold `ep`, or, when `ep` is NULL, no
 * longer hold that interface's entry. Writes only on a difference, which is
 * rare: an entry the agent changed, the first packet of an interface, or
 * interfaces whose slots collide taking turns. */
static __always_inline void endpoint_cache_refresh(__u32 ifindex, const struct endpoint_info *ep)
{
	struct endpoint_info *slot = endpoint_cache_slot(ifindex);
	const __u64 *want, *have;

	if (!slot)
		return;
	if (!ep) {
		if (slot->ifindex == ifindex)
			slot->ifindex = 0;
		return;
	}
	want = (const __u64 *)ep;
	have = (const __u64 *)slot;
	if (have[0] == want[0] && have[1] == want[1] && have[2] == want[2] &&
	    have[3] == want[3])
		return;
	/* Invalidate, fill, validate, so that a reader that starts after the
	 * first store sees no entry or the new one. A reader already past its
	 * ifindex check may mix old and new fields of the same interface's
	 * entry; the established path tolerates that (a mismatch of address
	 * or endpoint id sends the packet to the authority, see bpf_lxc.c). */
	slot->ifindex = 0;
	barrier();
	for (int i = 1; i < (int)(sizeof(*ep) / 4); i++)
		((__u32 *)slot)[i] = ((const __u32 *)ep)[i];
	barrier();
	slot->ifindex = ep->ifindex;
}

/* The endpoint whose host-side veth has `ifindex`, or NULL: the
 * authoritative entry (one hash lookup), which also refreshes the cache. */
static __always_inline const struct endpoint_info *endpoint_by_ifindex(__u32 ifindex)
{
	const struct endpoint_info *ep = bpf_map_lookup_elem(&mbr_ep_ifindex, &ifindex);

	/* An entry under another ifindex than its own is never cached. */
	endpoint_cache_refresh(ifindex, ep && ep->ifindex == ifindex ? ep : NULL);
	return ep;
}

/* The endpoint id of the local endpoint with address `addr`, 0 if none. */
static __always_inline __u16 endpoint_id_by_ip(__be32 addr)
{
	__u32 key = addr;
	const struct endpoint_info *ep = bpf_map_lookup_elem(&mbr_ep_ip, &key);

	return ep ? ep->ep_id : 0;
}

#endif /* MEMBRANE_LIB_ENDPOINT_H */
