/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bpf_lxc.c - the per-endpoint datapath, loaded once per node and attached to
 * the host-side veth of every endpoint:
 *   mbr_from_cont  tc ingress of the veth: packets leaving the pod (egress policy)
 *   mbr_to_cont    tc egress of the veth: packets entering the pod (ingress policy)
 * Per-endpoint configuration lives in maps keyed by ifindex / endpoint id.
 * The contract (maps, lookups, events) is ebpf/README.md.
 */
#include "lib/common.h"
#include "lib/abi.h"
#include "lib/endpoint.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/metrics.h"
#include "lib/config.h"
#include "lib/events.h"

/* The datapath logic is being written; until then both hooks pass packets on. */
SEC(MBR_SECTION_TC_INGRESS)
int mbr_from_cont(struct __sk_buff *skb __attribute__((unused)))
{
	struct flow_event *ev = bpf_ringbuf_reserve(&mbr_events, sizeof(*ev), 0);
	if (ev)
		bpf_ringbuf_discard(ev, 0);
	return MBR_TC_PASS_ON;
}

SEC(MBR_SECTION_TC_EGRESS)
int mbr_to_cont(struct __sk_buff *skb __attribute__((unused)))
{
	return MBR_TC_PASS_ON;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
