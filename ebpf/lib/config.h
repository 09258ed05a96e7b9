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

#endif /* MEMBRANE_LIB_CONFIG_H */
