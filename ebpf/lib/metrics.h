/*
 * metrics.h - per-CPU packet and byte counters by drop reason and direction
 * (reason 0 = forwarded). Key {reason 0xff, direction 0} counts flow events
 * lost because the ring buffer was full.
 *
 * The map is a PERCPU_ARRAY indexed by the 32-bit value of struct
 * metrics_key (reason | direction << 8): an array lookup is inlined by the
 * verifier, a hash lookup is a function call, and every packet pays it.
 * Rust twins: crates/datapath/src/maps/metrics.rs.
 */
#ifndef MEMBRANE_LIB_METRICS_H
#define MEMBRANE_LIB_METRICS_H

#include "common.h"

#define MBR_METRICS_REASON_EVENTS_LOST 0xff
/* Directions 0 (unknown), 1 (ingress), 2 (egress), 256 reasons each. */
#define MBR_METRICS_ENTRIES (3 * 256)

struct metrics_key {              /* 4 bytes; as a __u32, the map index */
	__u8  reason;             /* 0 = forwarded, else enum mbr_drop_reason */
	__u8  direction;          /* enum mbr_traffic_direction */
	__u16 pad;
};

struct metrics_value {            /* 16 bytes, per CPU */
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, MBR_METRICS_ENTRIES);
} mbr_metrics SEC(".maps");

/* Keeps struct metrics_key in the object's BTF (no map uses it as its key
 * type), where the layout check finds it. */
struct metrics_key *mbr_metrics_key_btf __attribute__((unused));

/*
 * Adds one packet of `bytes` bytes to {reason, direction}. Per-CPU values:
 * no other CPU writes this slot, so plain adds suffice.
 */
static __always_inline void metrics_add(__u8 reason, __u8 direction, __u32 bytes)
{
	__u32 index = (__u32)reason | ((__u32)direction << 8);
	struct metrics_value *value = bpf_map_lookup_elem(&mbr_metrics, &index);

	if (value) {
		value->packets += 1;
		value->bytes += bytes;
	}
}

#endif /* MEMBRANE_LIB_METRICS_H */
