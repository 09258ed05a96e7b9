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
 *   endpoint (skb->ifindex; cached) -> L2 -> IPv4 parse -> [source check] -> fragments
 *     -> conntrack: ESTABLISHED / REPLY / RELATED  -> update, maybe report, pass
 *                   NEW -> ipcache(peer) -> policy -> CT create -> events -> pass / drop
 *
 * Most packets belong to tracked TCP/UDP connections and need none of it but
 * the conntrack update, so a fast path runs first (handle_fast): it passes
 * such a packet when the cached endpoint, a header read in place and one
 * conntrack lookup (two for a reply) suffice, and leaves everything else, and
 * every report, to the pipeline.
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
#include "lib/clock.h"
#include "lib/conntrack.h"
#include "lib/fragments.h"
#include "lib/metrics.h"
#include "lib/events.h"

/* Everything the steps of one packet share. */
struct mbr_ctx {
	struct __sk_buff *skb;
	const struct endpoint_info *ep;
	struct mbr_pkt pkt;
	__u32 len;
	__u8 dir;                 /* MBR_TRAFFIC_INGRESS / _EGRESS */
	__u8 parsed;              /* pkt holds at least the IP addresses */
	__u8 cached;              /* ep is the cache's copy, not yet confirmed */
};

/* Whether policy applies to the packet's direction. Read from the endpoint
 * when needed (only off the tracked path, always after endpoint_confirm). */
static __always_inline int ctx_enforced(const struct mbr_ctx *c)
{
	return (c->ep->flags & (c->dir == MBR_TRAFFIC_EGRESS ? MBR_EP_F_EGRESS_ENFORCED :
								    MBR_EP_F_INGRESS_ENFORCED)) != 0;
}

/* Whether would-be drops pass as AUDIT. */
static __always_inline int ctx_audit(const struct mbr_ctx *c)
{
	return (c->ep->flags & MBR_EP_F_AUDIT) != 0;
}

/*
 * Replaces a cached endpoint with the authoritative entry (refreshing the
 * cache). Everything beyond passing a tracked connection's packet calls
 * this first. 0, or MBR_NOT_AN_ENDPOINT when the interface has no entry
 * (any more).
 */
#define MBR_NOT_AN_ENDPOINT 0x100

static __always_inline int endpoint_confirm(struct mbr_ctx *c)
{
	const struct endpoint_info *ep;

	if (!c->cached)
		return 0;
	c->cached = 0;
	ep = endpoint_by_ifindex(c->skb->ifindex);
	if (!ep)
		return MBR_NOT_AN_ENDPOINT;
	c->ep = ep;
	return 0;
}

/* Starts the event(s) about the current packet. */
static __always_inline void event_start(const struct mbr_ctx *c, struct mbr_event_info *info,
					__u32 peer_identity)
{
	__builtin_memset(info, 0, sizeof(*info));
	info->direction = c->dir;
	info->local_identity = c->ep->identity;
	info->local_ep = c->ep->ep_id;
	info->peer_identity = peer_identity;
}

/* Sends the event(s) started with event_start: one of `type`, and the
 * second one set in info->then_* if any. */
static __always_inline void event_send(const struct mbr_ctx *c, struct mbr_event_info *info,
				       __u8 type, __u8 verdict, __u8 reason)
{
	info->event_type = type;
	info->verdict = verdict;
	info->drop_reason = reason;
	event_emit(c->skb, c->parsed ? &c->pkt : NULL, info);
}

/*
 * The steps below return what happens to the packet: MBR_DROP_NONE to pass
 * it, a drop reason to drop it, MBR_NOT_AN_ENDPOINT to pass it as no
 * endpoint's. The entry points turn that into the tc verdict and count the
 * packet once, at a single exit.
 */

static __always_inline int pass(const struct mbr_ctx *c __attribute__((unused)))
{
	return MBR_DROP_NONE;
}

/* Drops the packet for a reason that is not a policy decision: one DROP event. */
static __always_inline int drop(const struct mbr_ctx *c, __u8 reason, __u32 peer_identity)
{
	struct mbr_event_info info;

	event_start(c, &info, peer_identity);
	event_send(c, &info, MBR_EVENT_DROP, MBR_VERDICT_DROPPED, reason);
	return reason;
}

/* A drop that policy enforcement decides (unsupported L3, fragments without
 * state): passed and reported as AUDIT for an endpoint in audit mode. */
static __always_inline int enforce_drop(const struct mbr_ctx *c, __u8 reason)
{
	struct mbr_event_info info;

	if (ctx_audit(c)) {
		event_start(c, &info, 0);
		event_send(c, &info, MBR_EVENT_POLICY_VERDICT, MBR_VERDICT_AUDIT, reason);
		return pass(c);
	}
	return drop(c, reason, 0);
}

/* A packet of a tracked connection: account it, report it at most once per
 * interval, pass it. No ipcache or policy lookup. */
static __always_inline int handle_tracked(struct mbr_ctx *c, struct ct_entry *e, __u8 status,
					  __u32 now, const struct datapath_config *cfg)
{
	__u32 last = e->last_report;

	if (status != MBR_CT_RELATED)
		ct_update(e, c->pkt.proto, c->pkt.tcp_flags, status == MBR_CT_REPLY, c->len, now,
			  cfg);

	if (now - last >= config_report_interval(cfg) &&
	    __sync_val_compare_and_swap(&e->last_report, last, now) == last) {
		/* Whether the endpoint initiated the connection: known from the
		 * lookup that hit, except for RELATED (either lookup). */
		int local_initiator = status == MBR_CT_ESTABLISHED ? c->dir == MBR_TRAFFIC_EGRESS :
				      status == MBR_CT_REPLY       ? c->dir == MBR_TRAFFIC_INGRESS :
								     e->src_identity == c->ep->identity;
		__u32 peer = local_initiator ? e->dst_identity : e->src_identity;
		__u8 verdict = (e->flags & MBR_CT_F_PROXY_REDIRECT) ? MBR_VERDICT_REDIRECTED :
								      MBR_VERDICT_FORWARDED;
		struct mbr_event_info info;

		event_start(c, &info, peer);
		info.ct_status = status;
		info.flags = status == MBR_CT_REPLY ? MBR_EV_F_IS_REPLY : 0;
		info.proxy_port = e->proxy_port;
		event_send(c, &info, MBR_EVENT_TRACE, verdict, 0);
	}
	if (c->pkt.frag == MBR_FRAG_FIRST)
		frag_remember(&c->pkt);
	return pass(c);
}

/* The first packet of a connection (or an untracked ICMP packet): peer
 * identity, policy when enforced, conntrack entry, events. */
static __always_inline int handle_new(struct mbr_ctx *c, __u32 now, const struct datapath_config *cfg)
{
	const struct endpoint_info *ep = c->ep;
	struct mbr_event_info info;
	struct policy_result r = {};
	__u8 verdict = MBR_VERDICT_FORWARDED, trace_verdict;
	__u8 ct_flags = 0;
	__u32 peer, src_id, dst_id;

	peer = ipcache_identity(c->dir == MBR_TRAFFIC_EGRESS ? c->pkt.daddr : c->pkt.saddr);

	if (ctx_enforced(c)) {
		policy_decide(ep->ep_id, c->dir, peer, c->pkt.proto, c->pkt.policy_port, &r);
		if (r.drop_reason) {
			if (!ctx_audit(c)) {
				/* The policy verdict, then the drop. */
				event_start(c, &info, peer);
				info.policy_cookie = r.cookie;
				info.then_type = MBR_EVENT_DROP;
				info.then_verdict = MBR_VERDICT_DROPPED;
				info.then_reason = r.drop_reason;
				event_send(c, &info, MBR_EVENT_POLICY_VERDICT, MBR_VERDICT_DROPPED,
					   r.drop_reason);
				return r.drop_reason;
			}
			verdict = MBR_VERDICT_AUDIT;
		} else if (r.action == MBR_POLICY_REDIRECT) {
			verdict = MBR_VERDICT_REDIRECTED;
			ct_flags = MBR_CT_F_PROXY_REDIRECT;
		} else {
			r.proxy_port = 0;
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
		if (ct_create(&c->pkt, c->dir, ep->ep_id, src_id, dst_id, ct_flags, r.proxy_port,
			      c->len, now, cfg) < 0)
			return drop(c, MBR_DROP_CT_MAP_INSERT_FAIL, peer);
	}

	/* Where policy applies, its verdict, then the trace of the forward. */
	event_start(c, &info, peer);
	info.policy_cookie = r.cookie;
	info.proxy_port = r.proxy_port;
	trace_verdict = verdict == MBR_VERDICT_REDIRECTED ? MBR_VERDICT_REDIRECTED :
							    MBR_VERDICT_FORWARDED;
	if (ctx_enforced(c)) {
		info.then_type = MBR_EVENT_TRACE;
		info.then_verdict = trace_verdict;
		event_send(c, &info, MBR_EVENT_POLICY_VERDICT, verdict,
			   verdict == MBR_VERDICT_AUDIT ? r.drop_reason : 0);
	} else {
		event_send(c, &info, MBR_EVENT_TRACE, trace_verdict, 0);
	}
	if (c->pkt.frag == MBR_FRAG_FIRST)
		frag_remember(&c->pkt);
	return pass(c);
}

/* Whether ct_lookup's answer lets the packet pass as tracked: an entry was
 * found, and the packet does not reopen the finished connection it names. */
static __always_inline int ct_passes(const struct mbr_pkt *pkt, const struct ct_entry *e,
				     __u8 status)
{
	return e && status != MBR_CT_NEW &&
	       !(status == MBR_CT_ESTABLISHED && ct_tcp_reopens(pkt->proto, pkt->tcp_flags, e));
}

/* handle_fast's answer when it passed the packet; a negative one leaves the
 * packet to the pipeline, and a positive one, an endpoint id, too, saying
 * that lookups with that id found no live entry either way. */
#define MBR_FAST_PASSED   0
#define MBR_FAST_DECLINED (-1)

/*
 * The fast path: the packet of a tracked TCP or UDP connection that needs
 * nothing but its conntrack update. It runs on the cached endpoint and a
 * tuple read in place (parse_tracked_shape), and makes the decisions of the
 * pipeline in the same order, for exactly these packets:
 * the source check (a mismatch goes to the pipeline, which confirms the
 * endpoint first), the conntrack lookup (ct_lookup's ESTABLISHED, then
 * REPLY) and the report interval (a due report is the pipeline's). So the
 * packets it passes are those the pipeline would pass with only
 * handle_tracked's accounting, and it changes nothing for the others.
 * A pure SYN goes to the pipeline untouched: it almost always opens a
 * connection (which the pipeline would otherwise look up again), and when
 * it does not, it may reopen a finished one (ct_tcp_reopens).
 * The answer is a single scalar so that the hot path keeps no state for the
 * pipeline on the stack.
 */
static __always_inline int handle_fast(struct __sk_buff *skb, const __u8 dir)
{
	const struct endpoint_info *ep = endpoint_cached(skb->ifindex);
	const struct datapath_config *cfg;
	struct mbr_tuple t;
	struct ct_key k;
	struct ct_entry *e;
	__u32 now;
	int reply = 0;

	if (!ep || parse_tracked_shape(skb, &t))
		return MBR_FAST_DECLINED;
	if (t.proto == IPPROTO_TCP && (t.tcp_flags & (MBR_TCP_SYN | MBR_TCP_ACK)) == MBR_TCP_SYN)
		return MBR_FAST_DECLINED;
	if (dir == MBR_TRAFFIC_EGRESS && ep->ipv4 && t.saddr != ep->ipv4)
		return MBR_FAST_DECLINED;
	/* The key first: its stores free the registers the tuple used. */
	ct_key_set(&k, t.saddr, t.daddr, t.sport, t.dport, t.proto, dir);
	cfg = config_get();
	if (!cfg)
		return MBR_FAST_DECLINED;
	now = clock_now();

	e = ct_live(&k, now, ep->ep_id);
	if (!e) {
		/* The reply key from the forward one on the stack: nothing of
		 * the tuple has to survive the first lookup in registers. */
		ct_key_reverse(&k, ct_opposite(dir));
		e = ct_live(&k, now, ep->ep_id);
		if (!e)
			return ep->ep_id ? ep->ep_id : MBR_FAST_DECLINED;
		reply = 1;
	}
	if (now - e->last_report >= config_report_interval(cfg))
		return MBR_FAST_DECLINED;
	ct_update(e, t.proto, t.tcp_flags, reply, skb->len, now, cfg);
	return MBR_FAST_PASSED;
}

/*
 * The pipeline, for every packet the fast path left to it (`fast`, its
 * answer).
 *
 * The endpoint comes from the cache when it has the interface (no function
 * call), else from mbr_ep_ifindex. A cached endpoint only ever lets a
 * tracked connection's packet pass; every other outcome (a drop, a new
 * connection, non-IPv4, fragments) confirms it against mbr_ep_ifindex
 * first, so policy flags are always the agent's latest.
 */
static __always_inline int handle_slow(struct __sk_buff *skb, const __u8 dir, int fast)
{
	struct mbr_ctx c;
	const struct endpoint_info *ep;
	const struct datapath_config *cfg;
	struct datapath_config defaults = {};
	struct ct_entry *e;
	__u32 now;
	__u8 status;
	int reason;

	c.skb = skb;
	c.dir = dir;
	c.len = skb->len;
	c.parsed = 0;
	c.cached = 0;
	ep = endpoint_cached(skb->ifindex);
	if (ep) {
		c.cached = 1;
	} else {
		ep = endpoint_by_ifindex(skb->ifindex);
		if (!ep)
			/* Not an endpoint's veth: never attached so by the agent. */
			return MBR_NOT_AN_ENDPOINT;
	}
	c.ep = ep;

	switch (parse_l2(skb)) {
	case MBR_L3_IPV4:
		break;
	case MBR_L3_ARP:
		return pass(&c);
	default:
		if (endpoint_confirm(&c))
			return MBR_NOT_AN_ENDPOINT;
		if (!ctx_enforced(&c))
			return pass(&c);
		return enforce_drop(&c, MBR_DROP_UNSUPPORTED_L3);
	}

	reason = parse_ipv4(skb, &c.pkt);
	if (reason && endpoint_confirm(&c))
		return MBR_NOT_AN_ENDPOINT;
	if (reason == MBR_DROP_INVALID_PACKET)
		return drop(&c, reason, 0);
	c.parsed = 1;
	if (reason)
		return drop(&c, reason, 0);

	/* A pod speaks only with its own address: a spoofed source would borrow
	 * another workload's identity and connections. */
	if (dir == MBR_TRAFFIC_EGRESS && c.ep->ipv4 && c.pkt.saddr != c.ep->ipv4) {
		if (endpoint_confirm(&c))
			return MBR_NOT_AN_ENDPOINT;
		if (c.ep->ipv4 && c.pkt.saddr != c.ep->ipv4)
			return drop(&c, MBR_DROP_INVALID_SOURCE_IP, 0);
	}

	if (c.pkt.frag == MBR_FRAG_NONFIRST && frag_recall(&c.pkt)) {
		if (endpoint_confirm(&c))
			return MBR_NOT_AN_ENDPOINT;
		if (!ctx_enforced(&c))
			return pass(&c);
		return enforce_drop(&c, MBR_DROP_FRAG_NOT_SUPPORTED);
	}

	cfg = config_get();
	if (!cfg)
		cfg = &defaults;
	now = clock_now();

	/* The fast path looked this packet up in both directions with this
	 * endpoint id and found nothing live: that is ct_lookup's answer. */
	if (fast > 0 && c.ep->ep_id == fast) {
		e = NULL;
		status = MBR_CT_NEW;
	} else {
		status = ct_lookup(&c.pkt, dir, c.ep->ep_id, now, &e);
	}
	if (ct_passes(&c.pkt, e, status))
		return handle_tracked(&c, e, status, now, cfg);

	if (c.cached) {
		__u16 cached_ep_id = c.ep->ep_id;

		if (endpoint_confirm(&c))
			return MBR_NOT_AN_ENDPOINT;
		/* The cache was behind: look again as the endpoint it is now. */
		if (c.ep->ep_id != cached_ep_id) {
			status = ct_lookup(&c.pkt, dir, c.ep->ep_id, now, &e);
			if (ct_passes(&c.pkt, e, status))
				return handle_tracked(&c, e, status, now, cfg);
		}
	}
	return handle_new(&c, now, cfg);
}

/* Counts the packet under its outcome (metrics), returns the tc verdict. */
static __always_inline int finish(struct __sk_buff *skb, __u8 dir, int outcome)
{
	if (outcome == MBR_NOT_AN_ENDPOINT) {
		metrics_add(MBR_DROP_NONE, MBR_TRAFFIC_UNKNOWN, skb->len);
		return MBR_TC_PASS_ON;
	}
	metrics_add((__u8)outcome, dir, skb->len);
	return outcome == MBR_DROP_NONE ? MBR_TC_PASS_ON : TC_ACT_SHOT;
}

/* Every packet: the fast path, else the pipeline; counted once either way. */
static __always_inline int handle(struct __sk_buff *skb, const __u8 dir)
{
	int fast = handle_fast(skb, dir);

	if (fast == MBR_FAST_PASSED)
		/* Its own finish: the metrics index is a constant here. */
		return finish(skb, dir, MBR_DROP_NONE);
	return finish(skb, dir, handle_slow(skb, dir, fast));
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
