//! `mbr_ipcache`: IP prefix -> security identity, longest prefix wins; a miss
//! is the world (`ebpf/lib/ipcache.h`).

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// The map's name.
pub const MAP_NAME: &str = "mbr_ipcache";
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const MAP_TYPE: MapType = MapType::LpmTrie;

c_struct! {
    /// Key (C `struct ipcache_key`): an IPv4 prefix.
    pub struct IpcacheKey = "ipcache_key" {
        /// Bits of `addr` that must match (0..=32).
        pub prefixlen: u32,
        /// Network byte order.
        pub addr: u32,
    }
}

c_struct! {
    /// Value (C `struct ipcache_entry`).
    pub struct IpcacheEntry = "ipcache_entry" {
        /// Security identity of the prefix.
        pub identity: u32,
        /// Node that hosts the prefix, network order; 0 = local or routed natively.
        pub tunnel_endpoint: u32,
        /// Reserved for flags.
        pub flags: u8,
        /// Always zero.
        pub pad: [u8; 3],
    }
}

/// The binding for the layout check.
pub fn binding() -> MapBinding {
    MapBinding::new::<IpcacheKey, IpcacheEntry>(MAP_NAME, MAP_TYPE)
}
