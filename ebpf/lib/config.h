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

/*
 * The settings: the map's entry, read field by field where a value is used
 * (copying all of them costs every packet loads and stack stores for values
 * it does not need). NULL cannot happen for index 0 of an ARRAY, but the
 * verifier requires the check: callers treat NULL as all defaults.
 */
static __always_inline const struct datapath_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mbr_config, &zero);
}

static __always_inline __u32 config_or(__u32 value, __u32 fallback)
{
	return value ? value : fallback;
}

/* The values in effect: the field, or its default when zero. */
static __always_inline __u32 config_ct_tcp_syn(const struct datapath_config *c)
{
	return config_or(c->ct_tcp_syn_timeout, MBR_DEFAULT_CT_TCP_SYN_TIMEOUT);
}

static __always_inline __u32 config_ct_tcp_established(const struct datapath_config *c)
{
	return config_or(c->ct_tcp_established_timeout, MBR_DEFAULT_CT_TCP_ESTABLISHED_TIMEOUT);
}

static __always_inline __u32 config_ct_tcp_close(const struct datapath_config *c)
{
	return config_or(c->ct_tcp_close_timeout, MBR_DEFAULT_CT_TCP_CLOSE_TIMEOUT);
}

static __always_inline __u32 config_ct_nontcp(const struct datapath_config *c)
{
	return config_or(c->ct_nontcp_timeout, MBR_DEFAULT_CT_NONTCP_TIMEOUT);
}

static __always_inline __u32 config_report_interval(const struct datapath_config *c)
{
	return config_or(c->flow_report_interval, MBR_DEFAULT_FLOW_REPORT_INTERVAL);
}

#endif /* MEMBRANE_LIB_CONFIG_H */
