/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bpf_lxc.c - the per-endpoint datapath, loaded once per node and attached to
 * the host-side veth of every endpoint:
 *   mbr_from_cont  tc ingress of the veth: packets leaving the pod (egress policy)
 *   mbr_to_cont    tc egress of the veth: packets entering the pod (ingress policy)
 * Per-endpoint configuration lives in maps keyed by ifindex / endpoint id.
 * The contract (maps, lookups, events, drop reasons) is ebpf/README.md.
 *
 * One pipeline serves both hooks, specialised by the traffic direction:
 *
 *   endpoint (skb->ifindex) -> L2 -> IPv4 parse -> [source check] -> fragments
 *     -> conntrack: ESTABLISHED / REPLY / RELATED  -> update, maybe report, pass
 *                   NEW -> ipcache(peer) -> policy -> CT create -> events -> pass / drop
 *
 * Packets that pass return MBR_TC_PASS_ON, never TC_ACT_OK: under tcx an OK
 * would end the chain and skip programs attached after ours.
 */
#include "lib/common.h"
#include "lib/abi.h"
#include "lib/parse.h"
#include "lib/endpoint.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/config.h"
#include "lib/conntrack.h"
#include "lib/fragments.h"
#include "lib/metrics.h"
#include "lib/events.h"

#define MBR_NSEC_PER_SEC 1000000000ULL

/* Everything the steps of one packet share. */
struct mbr_ctx {
	struct __sk_buff *skb;
	const struct endpoint_info *ep;
	struct mbr_pkt pkt;
	__u32 len;
	__u8 dir;                 /* MBR_TRAFFIC_INGRESS / _EGRESS */
	__u8 enforced;            /* policy applies in dir */
	__u8 audit;               /* would-be drops pass as AUDIT */
	__u8 parsed;              /* pkt holds at least the IP addresses */
};

/* Fills identities and endpoint ids of an event: the local side is the
 * endpoint, the other side the peer. */
static __always_inline void fill_sides(const struct mbr_ctx *c, struct mbr_event_info *info,
				       __u32 peer_identity)
{
	__u16 peer_ep = 0;

	if (c->parsed)
		peer_ep = endpoint_id_by_ip(c->dir == MBR_TRAFFIC_EGRESS ? c->pkt.daddr :
									   c->pkt.saddr);
	if (c->dir == MBR_TRAFFIC_EGRESS) {
		info->src_identity = c->ep->identity;
		info->dst_identity = peer_identity;
		info->src_ep = c->ep->ep_id;
		info->dst_ep = peer_ep;
	} else {
		info->src_identity = peer_identity;
		info->dst_identity = c->ep->identity;
		info->src_ep = peer_ep;
		info->dst_ep = c->ep->ep_id;
	}
}

static __always_inline void emit(const struct mbr_ctx *c, __u8 type, __u8 verdict, __u8 reason,
				 __u8 ct_status, __u8 flags, __u32 peer_identity, __u32 cookie,
				 __be16 proxy_port)
{
	struct mbr_event_info info = {
		.policy_cookie = cookie,
		.proxy_port = proxy_port,
		.event_type = type,
		.verdict = verdict,
		.drop_reason = reason,
		.direction = c->dir,
		.ct_status = ct_status,
		.flags = flags,
	};

	fill_sides(c, &info, peer_identity);
	event_emit(c->skb, c->parsed ? &c->pkt : NULL, &info);
}

static __always_inline int pass(const struct mbr_ctx *c)
{
	metrics_add(MBR_DROP_NONE, c->dir, c->len);
	return MBR_TC_PASS_ON;
}

/* Drops the packet for `reason` (not a policy decision): one DROP event. */
static __always_inline int drop(const struct mbr_ctx *c, __u8 reason, __u32 peer_identity)
{
	emit(c, MBR_EVENT_DROP, MBR_VERDICT_DROPPED, reason, MBR_CT_NEW, 0, peer_identity, 0, 0);
	metrics_add(reason, c->dir, c->len);
	return TC_ACT_SHOT;
}

/* A drop that policy enforcement decides (unsupported L3, fragments without
 * state): passed and reported as AUDIT for an endpoint in audit mode. */
static __always_inline int enforce_drop(const struct mbr_ctx *c, __u8 reason)
{
	if (c->audit) {
		emit(c, MBR_EVENT_POLICY_VERDICT, MBR_VERDICT_AUDIT, reason, MBR_CT_NEW, 0, 0, 0, 0);
		return pass(c);
	}
	return drop(c, reason, 0);
}

/* A packet of a tracked connection: account it, report it at most once per
 * interval, pass it. No ipcache or policy lookup. */
static __always_inline int handle_tracked(struct mbr_ctx *c, struct ct_entry *e, __u8 status,
					  __u32 now, const struct mbr_settings *cfg)
{
	__u32 last = e->last_report;

	if (status != MBR_CT_RELATED)
		ct_update(e, &c->pkt, status == MBR_CT_REPLY, c->len, now, cfg);

	if (now - last >= cfg->report_interval &&
	    __sync_val_compare_and_swap(&e->last_report, last, now) == last) {
		__u32 peer = e->src_identity == c->ep->identity ? e->dst_identity : e->src_identity;
		__u8 verdict = (e->flags & MBR_CT_F_PROXY_REDIRECT) ? MBR_VERDICT_REDIRECTED :
								      MBR_VERDICT_FORWARDED;

		emit(c, MBR_EVENT_TRACE, verdict, 0, status,
		     status == MBR_CT_REPLY ? MBR_EV_F_IS_REPLY : 0, peer, 0, e->proxy_port);
	}
	if (c->pkt.frag == MBR_FRAG_FIRST)
		frag_remember(&c->pkt);
	return pass(c);
}

/* The first packet of a connection (or an untracked ICMP packet): peer
 * identity, policy when enforced, conntrack entry, events. */
static __always_inline int handle_new(struct mbr_ctx *c, __u32 now, const struct mbr_settings *cfg)
{
	const struct endpoint_info *ep = c->ep;
	struct policy_result r = {};
	__u8 verdict = MBR_VERDICT_FORWARDED;
	__u8 ct_flags = 0;
	__be16 proxy_port = 0;
	__u32 peer, src_id, dst_id;

	peer = ipcache_identity(c->dir == MBR_TRAFFIC_EGRESS ? c->pkt.daddr : c->pkt.saddr);

	if (c->enforced) {
		policy_decide(ep->ep_id, c->dir, peer, c->pkt.proto, c->pkt.policy_port, &r);
		if (r.drop_reason) {
			if (!c->audit) {
				emit(c, MBR_EVENT_POLICY_VERDICT, MBR_VERDICT_DROPPED, r.drop_reason,
				     MBR_CT_NEW, 0, peer, r.cookie, 0);
				return drop(c, r.drop_reason, peer);
			}
			verdict = MBR_VERDICT_AUDIT;
		} else if (r.action == MBR_POLICY_REDIRECT) {
			verdict = MBR_VERDICT_REDIRECTED;
			proxy_port = r.proxy_port;
			ct_flags = MBR_CT_F_PROXY_REDIRECT;
		}
	}

	/* ICMP errors that quote nothing tracked and other ICMP messages are
	 * decided per packet; everything else becomes a connection. */
	if (c->pkt.icmp_kind != MBR_ICMP_KIND_ERROR && c->pkt.icmp_kind != MBR_ICMP_KIND_OTHER) {
		if (c->dir == MBR_TRAFFIC_EGRESS) {
			src_id = ep->identity;
			dst_id = peer;
		} else {
			src_id = peer;
			dst_id = ep->identity;
		}
		if (ct_create(&c->pkt, c->dir, ep->ep_id, src_id, dst_id, ct_flags, proxy_port,
			      c->len, now, cfg) < 0)
			return drop(c, MBR_DROP_CT_MAP_INSERT_FAIL, peer);
	}

	if (c->enforced)
		emit(c, MBR_EVENT_POLICY_VERDICT, verdict, verdict == MBR_VERDICT_AUDIT ? r.drop_reason : 0,
		     MBR_CT_NEW, 0, peer, r.cookie, proxy_port);
	emit(c, MBR_EVENT_TRACE,
	     verdict == MBR_VERDICT_REDIRECTED ? MBR_VERDICT_REDIRECTED : MBR_VERDICT_FORWARDED, 0,
	     MBR_CT_NEW, 0, peer, r.cookie, proxy_port);
	if (c->pkt.frag == MBR_FRAG_FIRST)
		frag_remember(&c->pkt);
	return pass(c);
}

static __always_inline int handle(struct __sk_buff *skb, const __u8 dir)
{
	struct mbr_ctx c = { .skb = skb, .dir = dir, .len = skb->len };
	const struct endpoint_info *ep;
	struct mbr_settings cfg;
	struct ct_entry *e;
	__u32 now;
	__u8 status;
	int reason;

	ep = endpoint_by_ifindex(skb->ifindex);
	if (!ep) {
		/* Not an endpoint's veth: never attached so by the agent. */
		metrics_add(MBR_DROP_NONE, MBR_TRAFFIC_UNKNOWN, c.len);
		return MBR_TC_PASS_ON;
	}
	c.ep = ep;
	c.enforced = (ep->flags & (dir == MBR_TRAFFIC_EGRESS ? MBR_EP_F_EGRESS_ENFORCED :
							       MBR_EP_F_INGRESS_ENFORCED)) != 0;
	c.audit = (ep->flags & MBR_EP_F_AUDIT) != 0;

	switch (parse_l2(skb)) {
	case MBR_L3_IPV4:
		break;
	case MBR_L3_ARP:
		return pass(&c);
	default:
		if (!c.enforced)
			return pass(&c);
		return enforce_drop(&c, MBR_DROP_UNSUPPORTED_L3);
	}

	reason = parse_ipv4(skb, &c.pkt);
	if (reason == MBR_DROP_INVALID_PACKET)
		return drop(&c, reason, 0);
	c.parsed = 1;
	if (reason)
		return drop(&c, reason, 0);

	/* A pod speaks only with its own address: a spoofed source would borrow
	 * another workload's identity and connections. */
	if (dir == MBR_TRAFFIC_EGRESS && ep->ipv4 && c.pkt.saddr != ep->ipv4)
		return drop(&c, MBR_DROP_INVALID_SOURCE_IP, 0);

	if (c.pkt.frag == MBR_FRAG_NONFIRST && frag_recall(&c.pkt)) {
		if (!c.enforced)
			return pass(&c);
		return enforce_drop(&c, MBR_DROP_FRAG_NOT_SUPPORTED);
	}

	config_load(&cfg);
	now = bpf_ktime_get_coarse_ns() / MBR_NSEC_PER_SEC;

	status = ct_lookup(&c.pkt, dir, ep->ep_id, now, &e);
	if (e && status != MBR_CT_NEW &&
	    !(status == MBR_CT_ESTABLISHED && ct_tcp_reopens(&c.pkt, e)))
		return handle_tracked(&c, e, status, now, &cfg);
	return handle_new(&c, now, &cfg);
}

/* tc ingress of the host-side veth: packets leaving the pod. */
SEC(MBR_SECTION_TC_INGRESS)
int mbr_from_cont(struct __sk_buff *skb)
{
	return handle(skb, MBR_TRAFFIC_EGRESS);
}

/* tc egress of the host-side veth: packets entering the pod. */
SEC(MBR_SECTION_TC_EGRESS)
int mbr_to_cont(struct __sk_buff *skb)
{
	return handle(skb, MBR_TRAFFIC_INGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
