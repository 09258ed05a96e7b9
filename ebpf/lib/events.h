/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * events.h - flow events into a ring buffer: drops, policy verdicts of new
 * connections, and established traffic at most once per flow per interval.
 * Rust twin: crates/datapath/src/maps/events.rs (FlowEvent).
 */
#ifndef MEMBRANE_LIB_EVENTS_H
#define MEMBRANE_LIB_EVENTS_H

#include "common.h"
#include "abi.h"
#include "endpoint.h"
#include "metrics.h"
#include "parse.h"

#ifndef MBR_EVENTS_BYTES
#define MBR_EVENTS_BYTES (4 * 1024 * 1024)
#endif

/* flow_event.flags */
#define MBR_EV_F_IS_REPLY 0x1

struct flow_event {               /* 64 bytes */
	__u64 timestamp_ns;       /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 ifindex;
	__u16 src_ep;             /* local endpoint ids; 0 when not local */
	__u16 dst_ep;
	__u32 pkt_len;
	__u8  event_type;         /* enum mbr_event_type */
	__u8  verdict;            /* enum mbr_verdict */
	__u8  drop_reason;        /* enum mbr_drop_reason */
	__u8  proto;
	__u8  tcp_flags;
	__u8  direction;          /* enum mbr_traffic_direction */
	__u8  ct_status;          /* enum mbr_ct_status */
	__u8  flags;              /* MBR_EV_F_* */
	__be16 proxy_port;
	__u8  icmp_type;
	__u8  icmp_code;
	__u32 policy_cookie;      /* cookie of the deciding policy entry; 0 if none */
	__u32 reserved[2];
};

/*
 * clang puts a type into BTF only when a global, a function signature or a
 * map definition uses it; ring-buffer records are none of these. This unused
 * global keeps struct flow_event in the object's BTF, where the layout check
 * and the decoders find it.
 */
struct flow_event *mbr_flow_event_btf __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MBR_EVENTS_BYTES);
} mbr_events SEC(".maps");

/* What an event says beyond the packet itself. */
struct mbr_event_info {
	__u32 local_identity;     /* the endpoint's */
	__u32 peer_identity;
	__u32 policy_cookie;
	__u16 local_ep;
	__be16 proxy_port;
	__u8  direction;          /* enum mbr_traffic_direction */
	__u8  ct_status;
	__u8  flags;              /* MBR_EV_F_* */
	__u8  event_type;         /* enum mbr_event_type */
	__u8  verdict;            /* enum mbr_verdict */
	__u8  drop_reason;
	/* A second event about the same packet (a policy verdict is followed by
	 * a trace or a drop): its type (0: none), verdict and drop reason. */
	__u8  then_type;
	__u8  then_verdict;
	__u8  then_reason;
	__u8  pad[3];
};

/* Counts an event the ring buffer had no room for. */
static __always_inline void event_lost(void)
{
	metrics_add(MBR_METRICS_REASON_EVENTS_LOST, MBR_TRAFFIC_UNKNOWN, sizeof(struct flow_event));
}

/*
 * Writes the flow event(s) of one packet `pkt` (NULL before its IP header
 * was parsed). A full ring buffer loses the event and counts it; the
 * packet's fate never depends on it.
 *
 * Out of line (a BPF-to-BPF call) and at most one call per packet: events
 * are the uncommon path, and one copy of this code instead of one per call
 * site keeps the programs small. The record is built on the stack and copied
 * with bpf_ringbuf_output (one helper call instead of reserve + submit).
 */
static __noinline __attribute__((unused)) void
event_emit(const struct __sk_buff *skb, const struct mbr_pkt *pkt, const struct mbr_event_info *info)
{
	struct flow_event ev;
	__u16 peer_ep = 0;

	__builtin_memset(&ev, 0, sizeof(ev));
	ev.timestamp_ns = bpf_ktime_get_ns();
	if (pkt) {
		ev.saddr = pkt->saddr;
		ev.daddr = pkt->daddr;
		ev.proto = pkt->proto;
		ev.tcp_flags = pkt->tcp_flags;
		ev.icmp_type = pkt->icmp_type;
		ev.icmp_code = pkt->icmp_code;
		if (pkt->proto != IPPROTO_ICMP) {
			ev.sport = pkt->sport;
			ev.dport = pkt->dport;
		}
		peer_ep = endpoint_id_by_ip(info->direction == MBR_TRAFFIC_EGRESS ? pkt->daddr :
										    pkt->saddr);
	}
	if (info->direction == MBR_TRAFFIC_EGRESS) {
		ev.src_identity = info->local_identity;
		ev.dst_identity = info->peer_identity;
		ev.src_ep = info->local_ep;
		ev.dst_ep = peer_ep;
	} else {
		ev.src_identity = info->peer_identity;
		ev.dst_identity = info->local_identity;
		ev.src_ep = peer_ep;
		ev.dst_ep = info->local_ep;
	}
	ev.ifindex = skb->ifindex;
	ev.pkt_len = skb->len;
	ev.event_type = info->event_type;
	ev.verdict = info->verdict;
	ev.drop_reason = info->drop_reason;
	ev.direction = info->direction;
	ev.ct_status = info->ct_status;
	ev.flags = info->flags;
	ev.proxy_port = info->proxy_port;
	ev.policy_cookie = info->policy_cookie;
	if (bpf_ringbuf_output(&mbr_events, &ev, sizeof(ev), 0))
		event_lost();
	if (info->then_type) {
		ev.event_type = info->then_type;
		ev.verdict = info->then_verdict;
		ev.drop_reason = info->then_reason;
		if (bpf_ringbuf_output(&mbr_events, &ev, sizeof(ev), 0))
			event_lost();
	}
}

#endif /* MEMBRANE_LIB_EVENTS_H */
