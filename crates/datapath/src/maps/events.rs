//! `mbr_events`: the ring buffer of flow events (`ebpf/lib/events.h`).

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// The map's name.
pub const MAP_NAME: &str = "mbr_events";
/// `BPF_MAP_TYPE_RINGBUF`.
pub const MAP_TYPE: MapType = MapType::RingBuf;

/// `flow_event.flags`: the packet belongs to the reply direction of its connection.
pub const EV_F_IS_REPLY: u8 = 0x1;

c_struct! {
    /// One ring-buffer record (C `struct flow_event`).
    pub struct FlowEvent = "flow_event" {
        /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
        pub timestamp_ns: u64,
        /// Network order.
        pub saddr: u32,
        /// Network order.
        pub daddr: u32,
        /// Network order.
        pub sport: u16,
        /// Network order.
        pub dport: u16,
        /// Identity of the source.
        pub src_identity: u32,
        /// Identity of the destination.
        pub dst_identity: u32,
        /// Interface whose hook saw the packet.
        pub ifindex: u32,
        /// Local endpoint id of the source; 0 when not local.
        pub src_ep: u16,
        /// Local endpoint id of the destination; 0 when not local.
        pub dst_ep: u16,
        /// Length of the packet.
        pub pkt_len: u32,
        /// 1 drop, 4 trace, 5 policy verdict.
        pub event_type: u8,
        /// 1 forwarded, 2 dropped, 4 audit, 5 redirected.
        pub verdict: u8,
        /// Drop reason (Hubble numbering), 0 when not dropped.
        pub drop_reason: u8,
        /// IP protocol number.
        pub proto: u8,
        /// TCP flags of the packet.
        pub tcp_flags: u8,
        /// Traffic direction: 1 ingress, 2 egress.
        pub direction: u8,
        /// 0 new, 1 established, 2 reply, 3 related.
        pub ct_status: u8,
        /// `EV_F_*`.
        pub flags: u8,
        /// Proxy port, network order, when redirected.
        pub proxy_port: u16,
        /// ICMP type, for ICMP packets.
        pub icmp_type: u8,
        /// ICMP code, for ICMP packets.
        pub icmp_code: u8,
        /// Cookie of the policy entry that decided; 0 if none.
        pub policy_cookie: u32,
        /// Always zero.
        pub reserved: [u32; 2],
    }
}

/// The binding for the layout check (a ring buffer has no key or value type).
pub fn binding() -> MapBinding {
    MapBinding::keyless(MAP_NAME, MAP_TYPE)
}
