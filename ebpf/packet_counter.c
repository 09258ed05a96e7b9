/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * packet_counter.c - counts the packets and bytes that pass an interface's tc
 * hooks, per interface and direction, into mbr_pkt_counts.
 *
 * Loaded once per node; the same two programs are attached to every
 * interface that is counted (tcx, or cls_bpf on kernels without tcx). They
 * never drop, redirect or modify a packet, and never end the tc chain: the
 * verdict is always MBR_TC_PASS_ON.
 *
 * This is the seed of per-endpoint metrics: the key will grow an endpoint id
 * once endpoints exist in the datapath.
 */
#include "lib/common.h"
#include "lib/counters.h"

/* tc ingress: packets the interface receives (leaving a pod, on its veth). */
SEC(MBR_SECTION_TC_INGRESS)
int mbr_cnt_ingress(struct __sk_buff *skb)
{
	pkt_counter_account(skb, MBR_DIR_INGRESS);
	return MBR_TC_PASS_ON;
}

/* tc egress: packets the interface transmits (entering a pod, on its veth). */
SEC(MBR_SECTION_TC_EGRESS)
int mbr_cnt_egress(struct __sk_buff *skb)
{
	pkt_counter_account(skb, MBR_DIR_EGRESS);
	return MBR_TC_PASS_ON;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
