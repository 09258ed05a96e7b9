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
	__u32 src_identity;
	__u32 dst_identity;
	__u16 src_ep;
	__u16 dst_ep;
	__u32 policy_cookie;
	__be16 proxy_port;
	__u8  event_type;         /* enum mbr_event_type */
	__u8  verdict;            /* enum mbr_verdict */
	__u8  drop_reason;
	__u8  direction;          /* enum mbr_traffic_direction */
	__u8  ct_status;
	__u8  flags;              /* MBR_EV_F_* */
};

/* Counts an event the ring buffer had no room for. */
static __always_inline void event_lost(void)
{
	metrics_add(MBR_METRICS_REASON_EVENTS_LOST, MBR_TRAFFIC_UNKNOWN, sizeof(struct flow_event));
}

/*
 * Writes one flow event for the packet `pkt` (NULL before the IP header was
 * parsed). A full ring buffer loses the event and counts it; the packet's
 * fate never depends on it.
 */
static __always_inline void event_emit(const struct __sk_buff *skb, const struct mbr_pkt *pkt,
				       const struct mbr_event_info *info)
{
	struct flow_event *ev = bpf_ringbuf_reserve(&mbr_events, sizeof(*ev), 0);

	if (!ev) {
		event_lost();
		return;
	}
	ev->timestamp_ns = bpf_ktime_get_ns();
	if (pkt) {
		ev->saddr = pkt->saddr;
		ev->daddr = pkt->daddr;
		ev->proto = pkt->proto;
		ev->tcp_flags = pkt->tcp_flags;
		ev->icmp_type = pkt->icmp_type;
		ev->icmp_code = pkt->icmp_code;
		if (pkt->proto == IPPROTO_ICMP) {
			ev->sport = 0;
			ev->dport = 0;
		} else {
			ev->sport = pkt->sport;
			ev->dport = pkt->dport;
		}
	} else {
		ev->saddr = 0;
		ev->daddr = 0;
		ev->proto = 0;
		ev->tcp_flags = 0;
		ev->icmp_type = 0;
		ev->icmp_code = 0;
		ev->sport = 0;
		ev->dport = 0;
	}
	ev->src_identity = info->src_identity;
	ev->dst_identity = info->dst_identity;
	ev->ifindex = skb->ifindex;
	ev->src_ep = info->src_ep;
	ev->dst_ep = info->dst_ep;
	ev->pkt_len = skb->len;
	ev->event_type = info->event_type;
	ev->verdict = info->verdict;
	ev->drop_reason = info->drop_reason;
	ev->direction = info->direction;
	ev->ct_status = info->ct_status;
	ev->flags = info->flags;
	ev->proxy_port = info->proxy_port;
	ev->policy_cookie = info->policy_cookie;
	ev->reserved[0] = 0;
	ev->reserved[1] = 0;
	bpf_ringbuf_submit(ev, 0);
}

#endif /* MEMBRANE_LIB_EVENTS_H */
