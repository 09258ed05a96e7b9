//! `mbr_ct_tcp` and `mbr_ct_any`: connection tracking (`ebpf/lib/conntrack.h`;
//! lookups in `ebpf/README.md`).

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// TCP connections.
pub const TCP_MAP: &str = "mbr_ct_tcp";
/// UDP, ICMP and other protocols.
pub const ANY_MAP: &str = "mbr_ct_any";
/// Both are `BPF_MAP_TYPE_LRU_HASH`.
pub const MAP_TYPE: MapType = MapType::LruHash;

/// `ct_entry.flags`: a packet in the reply direction was seen.
pub const CT_F_SEEN_REPLY: u8 = 0x1;
/// `ct_entry.flags`: FIN or RST from the initiator.
pub const CT_F_FWD_CLOSING: u8 = 0x2;
/// `ct_entry.flags`: FIN or RST from the responder.
pub const CT_F_REV_CLOSING: u8 = 0x4;
/// `ct_entry.flags`: the connection goes through the proxy.
pub const CT_F_PROXY_REDIRECT: u8 = 0x8;

c_struct! {
    /// Key (C `struct ct_key`): the tuple of the connection's first packet.
    pub struct CtKey = "ct_key" {
        /// Initiator, network order.
        pub saddr: u32,
        /// Responder, network order.
        pub daddr: u32,
        /// Network order; ICMP echo: the echo id.
        pub sport: u16,
        /// Network order; ICMP echo: 0.
        pub dport: u16,
        /// IP protocol number.
        pub proto: u8,
        /// 2 (egress): created at an endpoint's egress; 1 (ingress): at its ingress.
        pub direction: u8,
        /// Always zero.
        pub pad: u16,
    }
}

c_struct! {
    /// Value (C `struct ct_entry`).
    pub struct CtEntry = "ct_entry" {
        /// Initiator -> responder packets.
        pub fwd_packets: u64,
        /// Initiator -> responder bytes.
        pub fwd_bytes: u64,
        /// Responder -> initiator packets.
        pub rev_packets: u64,
        /// Responder -> initiator bytes.
        pub rev_bytes: u64,
        /// CLOCK_MONOTONIC seconds after which the entry is dead.
        pub expires: u32,
        /// CLOCK_MONOTONIC seconds at creation.
        pub created: u32,
        /// CLOCK_MONOTONIC seconds of the last flow event for this entry.
        pub last_report: u32,
        /// Identity of the initiator.
        pub src_identity: u32,
        /// Identity of the responder.
        pub dst_identity: u32,
        /// The local endpoint that created the entry.
        pub ep_id: u16,
        /// Service reverse-NAT index; 0 = none.
        pub rev_nat_index: u16,
        /// OR of TCP flags seen from the initiator.
        pub fwd_tcp_flags: u8,
        /// OR of TCP flags seen from the responder.
        pub rev_tcp_flags: u8,
        /// `CT_F_*`.
        pub flags: u8,
        /// Always zero.
        pub pad: u8,
        /// Proxy port, network order, when redirected.
        pub proxy_port: u16,
        /// Always zero.
        pub pad2: u16,
    }
}

/// Bindings of both CT maps, for the layout check.
pub fn bindings() -> [MapBinding; 2] {
    [
        MapBinding::new::<CtKey, CtEntry>(TCP_MAP, MAP_TYPE),
        MapBinding::new::<CtKey, CtEntry>(ANY_MAP, MAP_TYPE),
    ]
}
