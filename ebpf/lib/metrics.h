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

#endif /* MEMBRANE_LIB_METRICS_H */
