/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bench_floor.c - the floor of the BPF_PROG_TEST_RUN benchmarks: a tc program
 * that does nothing and passes every packet. What a real program costs per
 * packet is reported as a ratio to this one, measured in the same run, so
 * the per-run overhead of the kernel's test harness (skb setup, the timer)
 * cancels out. Never attached to an interface.
 */
#include "lib/common.h"

SEC("classifier/bench")
int mbr_bench_floor(struct __sk_buff *skb __attribute__((unused)))
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
