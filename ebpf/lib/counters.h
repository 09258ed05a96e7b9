/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * counters.h - per-interface, per-direction packet and byte counters.
 *
 * The map mbr_pkt_counts is node state: the agent pins it under its pin
 * directory (maps/mbr_pkt_counts) and any process can read it from there.
 * Values are per-CPU, so the datapath never contends on a shared cache line;
 * readers sum the CPUs.
 *
 * Rust twins: crates/datapath/src/maps/packet_counter.rs
 * (PacketCounterKey, PacketCounterValue); the layout test keeps them equal.
 */
#ifndef MEMBRANE_LIB_COUNTERS_H
#define MEMBRANE_LIB_COUNTERS_H

#include "common.h"

/* One entry per (interface, direction) that carried traffic. */
#define PKT_COUNTER_MAX_ENTRIES 8192

/* Key: which hook counted. 8 bytes, no implicit padding. */
struct pkt_counter_key {
	__u32 ifindex;   /* skb->ifindex at the hook, in the loader's netns */
	__u8  direction; /* enum mbr_direction */
	__u8  pad[3];    /* always zero: hash keys compare all bytes */
};

/* Value, one per CPU. 16 bytes. */
struct pkt_counter_value {
	__u64 packets;
	__u64 bytes; /* skb->len at the hook: the L2 frame, without FCS */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct pkt_counter_key);
	__type(value, struct pkt_counter_value);
	__uint(max_entries, PKT_COUNTER_MAX_ENTRIES);
	/* Entries appear once per interface: allocate on insert rather than
	 * reserving max_entries x nr_cpus values up front. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mbr_pkt_counts SEC(".maps");

/*
 * Adds one packet of skb->len bytes to the counter of (ifindex, direction).
 * Never fails the packet: if the map is full the packet goes uncounted.
 */
static __always_inline void pkt_counter_account(const struct __sk_buff *skb, __u8 direction)
{
	struct pkt_counter_key key = {
		.ifindex = skb->ifindex,
		.direction = direction,
		.pad = { 0, 0, 0 },
	};
	struct pkt_counter_value *value;
	struct pkt_counter_value first = {
		.packets = 1,
		.bytes = skb->len,
	};
	long err;

	value = bpf_map_lookup_elem(&mbr_pkt_counts, &key);
	if (value) {
		/* Per-CPU slot: no other CPU writes it, no atomics needed. */
		value->packets += 1;
		value->bytes += skb->len;
		return;
	}

	err = bpf_map_update_elem(&mbr_pkt_counts, &key, &first, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* Another CPU created the entry between our lookup and insert;
		 * our slot in it is zero, so account there. */
		value = bpf_map_lookup_elem(&mbr_pkt_counts, &key);
		if (value) {
			value->packets += 1;
			value->bytes += skb->len;
		}
	}
}

#endif /* MEMBRANE_LIB_COUNTERS_H */
