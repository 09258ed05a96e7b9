/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * clock.h - "now" in CLOCK_MONOTONIC seconds, the unit of every time in the
 * conntrack entries (user space compares them with clock_gettime).
 *
 * Reading the clock is a helper call, and calls are what the per-packet
 * budget cannot afford (on CPUs with return-stack mitigations a call and its
 * return cost more than the rest of the established path). So each CPU
 * caches the last reading together with the jiffies value it was taken at:
 * bpf_jiffies64() is inlined by the verifier, and while jiffies stand still
 * the cached seconds are exact to within one tick.
 * Rust twin: crates/datapath/src/maps/clock.rs.
 */
#ifndef MEMBRANE_LIB_CLOCK_H
#define MEMBRANE_LIB_CLOCK_H

#include "common.h"

#define MBR_NSEC_PER_SEC 1000000000ULL

struct clock_cache {              /* 16 bytes, per CPU */
	__u64 jiffies;            /* bpf_jiffies64() at the last reading */
	__u64 seconds;            /* CLOCK_MONOTONIC seconds at that reading */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct clock_cache);
	__uint(max_entries, 1);
} mbr_clock SEC(".maps");

/* CLOCK_MONOTONIC seconds, at most one tick old. */
static __always_inline __u32 clock_now(void)
{
	__u32 zero = 0;
	struct clock_cache *cache = bpf_map_lookup_elem(&mbr_clock, &zero);
	__u64 jiffies = bpf_jiffies64();
	__u64 seconds;

	if (cache && cache->jiffies == jiffies)
		return cache->seconds;
	seconds = bpf_ktime_get_coarse_ns() / MBR_NSEC_PER_SEC;
	if (cache) {
		cache->jiffies = jiffies;
		cache->seconds = seconds;
	}
	return seconds;
}

#endif /* MEMBRANE_LIB_CLOCK_H */
