/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ipcache.h - every known IP prefix of the cluster and its security identity.
 * A miss means the world (MBR_ID_WORLD).
 * Rust twins: crates/datapath/src/maps/ipcache.rs.
 */
#ifndef MEMBRANE_LIB_IPCACHE_H
#define MEMBRANE_LIB_IPCACHE_H

#include "common.h"
#include "abi.h"

#ifndef MBR_IPCACHE_MAX
#define MBR_IPCACHE_MAX 512000
#endif

struct ipcache_key {              /* 8 bytes */
	__u32 prefixlen;          /* LPM: bits of addr that must match */
	__be32 addr;
};

struct ipcache_entry {            /* 12 bytes */
	__u32 identity;
	__be32 tunnel_endpoint;   /* 0: local or natively routed (overlay comes later) */
	__u8  flags;
	__u8  pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_entry);
	__uint(max_entries, MBR_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mbr_ipcache SEC(".maps");

/* The security identity of `addr`: longest matching prefix, world on a miss. */
static __always_inline __u32 ipcache_identity(__be32 addr)
{
	struct ipcache_key key = { .prefixlen = 32, .addr = addr };
	const struct ipcache_entry *entry = bpf_map_lookup_elem(&mbr_ipcache, &key);

	return entry ? entry->identity : MBR_ID_WORLD;
}

#endif /* MEMBRANE_LIB_IPCACHE_H */
