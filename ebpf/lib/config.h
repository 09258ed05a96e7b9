/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * config.h - node-wide datapath settings the agent can change at run time
 * (a map, not a compile-time constant: no reload). A zero field means the
 * built-in default.
 * Rust twin: crates/datapath/src/maps/config.rs.
 */
#ifndef MEMBRANE_LIB_CONFIG_H
#define MEMBRANE_LIB_CONFIG_H

#include "common.h"

#define MBR_DEFAULT_CT_TCP_SYN_TIMEOUT         60
#define MBR_DEFAULT_CT_TCP_ESTABLISHED_TIMEOUT 21600
#define MBR_DEFAULT_CT_TCP_CLOSE_TIMEOUT       10
#define MBR_DEFAULT_CT_NONTCP_TIMEOUT          60
#define MBR_DEFAULT_FLOW_REPORT_INTERVAL       5

struct datapath_config {          /* 24 bytes */
	__u32 ct_tcp_syn_timeout;         /* seconds */
	__u32 ct_tcp_established_timeout;
	__u32 ct_tcp_close_timeout;
	__u32 ct_nontcp_timeout;          /* UDP, ICMP */
	__u32 flow_report_interval;       /* at most one event per flow per interval (established traffic) */
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct datapath_config);
	__uint(max_entries, 1);
} mbr_config SEC(".maps");

/* The settings in effect: the map's values, defaults for zero fields. */
struct mbr_settings {
	__u32 ct_tcp_syn;
	__u32 ct_tcp_established;
	__u32 ct_tcp_close;
	__u32 ct_nontcp;
	__u32 report_interval;
};

static __always_inline __u32 config_or(__u32 value, __u32 fallback)
{
	return value ? value : fallback;
}

static __always_inline void config_load(struct mbr_settings *s)
{
	__u32 zero = 0;
	const struct datapath_config *c = bpf_map_lookup_elem(&mbr_config, &zero);

	if (!c) {
		/* Cannot happen for an ARRAY map at index 0; keep the verifier happy. */
		s->ct_tcp_syn = MBR_DEFAULT_CT_TCP_SYN_TIMEOUT;
		s->ct_tcp_established = MBR_DEFAULT_CT_TCP_ESTABLISHED_TIMEOUT;
		s->ct_tcp_close = MBR_DEFAULT_CT_TCP_CLOSE_TIMEOUT;
		s->ct_nontcp = MBR_DEFAULT_CT_NONTCP_TIMEOUT;
		s->report_interval = MBR_DEFAULT_FLOW_REPORT_INTERVAL;
		return;
	}
	s->ct_tcp_syn = config_or(c->ct_tcp_syn_timeout, MBR_DEFAULT_CT_TCP_SYN_TIMEOUT);
	s->ct_tcp_established =
		config_or(c->ct_tcp_established_timeout, MBR_DEFAULT_CT_TCP_ESTABLISHED_TIMEOUT);
	s->ct_tcp_close = config_or(c->ct_tcp_close_timeout, MBR_DEFAULT_CT_TCP_CLOSE_TIMEOUT);
	s->ct_nontcp = config_or(c->ct_nontcp_timeout, MBR_DEFAULT_CT_NONTCP_TIMEOUT);
	s->report_interval = config_or(c->flow_report_interval, MBR_DEFAULT_FLOW_REPORT_INTERVAL);
}

#endif /* MEMBRANE_LIB_CONFIG_H */
