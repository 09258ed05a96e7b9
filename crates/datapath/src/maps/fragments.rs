//! `mbr_frag4`: the ports of fragmented IPv4 datagrams, remembered from the
//! first fragment for the later ones (`ebpf/lib/fragments.h`). Written only
//! by the datapath; user space reads it for debugging.

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// The map's name.
pub const MAP_NAME: &str = "mbr_frag4";
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const MAP_TYPE: MapType = MapType::LruHash;

c_struct! {
    /// Key (C `struct frag_key`): one datagram.
    pub struct FragKey = "frag_key" {
        /// Network order.
        pub saddr: u32,
        /// Network order.
        pub daddr: u32,
        /// IPv4 identification, network order.
        pub id: u16,
        /// IP protocol number.
        pub proto: u8,
        /// Always zero.
        pub pad: u8,
    }
}

c_struct! {
    /// Value (C `struct frag_entry`): what the first fragment's L4 header said.
    pub struct FragEntry = "frag_entry" {
        /// Conntrack tuple source port, network order.
        pub sport: u16,
        /// Conntrack tuple destination port, network order.
        pub dport: u16,
        /// The port policy matched, network order (ICMP: the type).
        pub policy_port: u16,
        /// ICMP type, for ICMP.
        pub icmp_type: u8,
        /// ICMP code, for ICMP.
        pub icmp_code: u8,
    }
}

/// The binding for the layout check.
pub fn binding() -> MapBinding {
    MapBinding::new::<FragKey, FragEntry>(MAP_NAME, MAP_TYPE)
}
