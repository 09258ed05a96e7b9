/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * abi.h - the numbers that cross the kernel/user boundary of bpf_lxc: traffic
 * directions, verdicts, event types, conntrack statuses, drop reasons,
 * reserved identities. Numbers follow Hubble's flow.proto where the meaning
 * matches, so the agent passes them through unchanged. ebpf/README.md is the
 * contract in prose; crates/datapath/src/maps/ mirrors every struct.
 */
#ifndef MEMBRANE_LIB_ABI_H
#define MEMBRANE_LIB_ABI_H

/* Direction of traffic relative to an endpoint (Hubble TrafficDirection). */
enum mbr_traffic_direction {
	MBR_TRAFFIC_UNKNOWN = 0,
	MBR_TRAFFIC_INGRESS = 1, /* entering the endpoint */
	MBR_TRAFFIC_EGRESS  = 2, /* leaving the endpoint */
};

/* Hubble Verdict. */
enum mbr_verdict {
	MBR_VERDICT_FORWARDED  = 1,
	MBR_VERDICT_DROPPED    = 2,
	MBR_VERDICT_AUDIT      = 4,
	MBR_VERDICT_REDIRECTED = 5,
};

/* Hubble / monitor MessageType. */
enum mbr_event_type {
	MBR_EVENT_DROP           = 1,
	MBR_EVENT_TRACE          = 4,
	MBR_EVENT_POLICY_VERDICT = 5,
};

/* Result of a conntrack lookup (Hubble TraceReason is this + 1). */
enum mbr_ct_status {
	MBR_CT_NEW         = 0,
	MBR_CT_ESTABLISHED = 1,
	MBR_CT_REPLY       = 2,
	MBR_CT_RELATED     = 3,
};

/* Drop reasons: Hubble DropReason numbers. 0 = not dropped. */
enum mbr_drop_reason {
	MBR_DROP_NONE                = 0,
	MBR_DROP_INVALID_SOURCE_IP   = 132, /* a pod sent with an address not its own */
	MBR_DROP_POLICY_DENIED       = 133, /* no allow entry matched */
	MBR_DROP_INVALID_PACKET      = 134, /* malformed IPv4 header */
	MBR_DROP_CT_INVALID_HDR      = 135, /* truncated L4 header */
	MBR_DROP_CT_UNKNOWN_L4       = 137, /* L4 protocol conntrack cannot track */
	MBR_DROP_UNSUPPORTED_L3      = 139, /* IPv6 and other L3 protocols */
	MBR_DROP_UNKNOWN_ICMP_TYPE   = 144,
	MBR_DROP_CT_MAP_INSERT_FAIL  = 155,
	MBR_DROP_FRAG_NOT_SUPPORTED  = 157, /* non-first fragment without state */
	MBR_DROP_POLICY_DENY         = 181, /* an explicit deny entry matched */
};

/* Reserved identities (Cilium numbering). 0 in a policy key means "any peer". */
#define MBR_ID_UNKNOWN        0
#define MBR_ID_HOST           1
#define MBR_ID_WORLD          2
#define MBR_ID_UNMANAGED      3
#define MBR_ID_HEALTH         4
#define MBR_ID_INIT           5
#define MBR_ID_REMOTE_NODE    6
#define MBR_ID_KUBE_APISERVER 7
#define MBR_ID_INGRESS        8

#endif /* MEMBRANE_LIB_ABI_H */
