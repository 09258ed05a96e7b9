/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * test_flow_events.c - a test fixture, never attached to an interface: for
 * every packet it is run on (BPF_PROG_TEST_RUN), it writes one flow_event
 * into mbr_events describing the packet, so that the ring-buffer reader and
 * the flow decoder can be tested end to end on real kernel records without
 * the full datapath.
 *
 * The test chooses the event's verdict and reasons through header fields of
 * the IPv4 packet it crafts:
 *   tos  = verdict << 4 | ct_status << 2 | traffic direction
 *   id   = event_type << 8 | drop_reason   (network order)
 *   ttl  = src_identity - 1000
 * Identities: src = 1000 + ttl, dst = 2000; endpoints: src 11, dst 0;
 * policy_cookie = 0xc0ffee; flags: EV_F_IS_REPLY when ct_status is REPLY.
 */
#include "lib/common.h"
#include "lib/abi.h"
#include "lib/events.h"

#include <bpf/bpf_endian.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>

#define TEST_ETH_HLEN 14

SEC("classifier/test")
int mbr_test_events(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + TEST_ETH_HLEN;
	struct flow_event *ev;
	__u8 *l4;

	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl != 5)
		return MBR_TC_PASS_ON;
	l4 = (__u8 *)(ip + 1);

	ev = bpf_ringbuf_reserve(&mbr_events, sizeof(*ev), 0);
	if (!ev)
		return MBR_TC_PASS_ON;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->timestamp_ns = bpf_ktime_get_ns();
	ev->saddr = ip->saddr;
	ev->daddr = ip->daddr;
	ev->proto = ip->protocol;
	if (ip->protocol == IPPROTO_TCP && (void *)(l4 + 14) <= data_end) {
		ev->sport = *(__be16 *)l4;
		ev->dport = *(__be16 *)(l4 + 2);
		ev->tcp_flags = l4[13];
	} else if (ip->protocol == IPPROTO_UDP && (void *)(l4 + 4) <= data_end) {
		ev->sport = *(__be16 *)l4;
		ev->dport = *(__be16 *)(l4 + 2);
	} else if (ip->protocol == IPPROTO_ICMP && (void *)(l4 + 2) <= data_end) {
		ev->icmp_type = l4[0];
		ev->icmp_code = l4[1];
	}
	ev->src_identity = 1000 + ip->ttl;
	ev->dst_identity = 2000;
	ev->ifindex = skb->ifindex;
	ev->src_ep = 11;
	ev->pkt_len = skb->len;
	ev->verdict = ip->tos >> 4;
	ev->ct_status = (ip->tos >> 2) & 3;
	ev->direction = ip->tos & 3;
	ev->event_type = bpf_ntohs(ip->id) >> 8;
	ev->drop_reason = bpf_ntohs(ip->id) & 0xff;
	ev->flags = ev->ct_status == MBR_CT_REPLY ? MBR_EV_F_IS_REPLY : 0;
	ev->policy_cookie = 0xc0ffee;
	bpf_ringbuf_submit(ev, 0);
	return MBR_TC_PASS_ON;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
