/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * metrics.h - per-CPU packet and byte counters by drop reason and direction
 * (reason 0 = forwarded). Key {reason 0xff, direction 0} counts flow events
 * lost because the ring buffer was full.
 * Rust twins: crates/datapath/src/maps/metrics.rs.
 */
#ifndef MEMBRANE_LIB_METRICS_H
#define MEMBRANE_LIB_METRICS_H

#include "common.h"

#define MBR_METRICS_REASON_EVENTS_LOST 0xff

struct metrics_key {              /* 4 bytes */
	__u8  reason;             /* 0 = forwarded, else enum mbr_drop_reason */
	__u8  direction;          /* enum mbr_traffic_direction */
	__u16 pad;
};

struct metrics_value {            /* 16 bytes, per CPU */
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, 1024);
} mbr_metrics SEC(".maps");

/*
 * Adds one packet of `bytes` bytes to {reason, direction}. Per-CPU values:
 * no other CPU writes this slot, so plain adds suffice. Never fails the
 * packet: with the map full, the packet goes uncounted.
 */
static __always_inline void metrics_add(__u8 reason, __u8 direction, __u32 bytes)
{
	struct metrics_key key = { .reason = reason, .direction = direction, .pad = 0 };
	struct metrics_value *value;
	struct metrics_value first = { .packets = 1, .bytes = bytes };

	value = bpf_map_lookup_elem(&mbr_metrics, &key);
	if (value) {
		value->packets += 1;
		value->bytes += bytes;
		return;
	}
	if (bpf_map_update_elem(&mbr_metrics, &key, &first, BPF_NOEXIST) == -EEXIST) {
		/* Created by another CPU since our lookup; our slot in it is zero. */
		value = bpf_map_lookup_elem(&mbr_metrics, &key);
		if (value) {
			value->packets += 1;
			value->bytes += bytes;
		}
	}
}

#endif /* MEMBRANE_LIB_METRICS_H */
