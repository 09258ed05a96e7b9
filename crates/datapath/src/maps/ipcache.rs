//! `mbr_ipcache`: IP prefix -> security identity, longest prefix wins; a miss
//! is the world (`ebpf/lib/ipcache.h`).

use std::{
    borrow::{Borrow, BorrowMut},
    net::Ipv4Addr,
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    MapData, MapType,
};

use super::{
    endpoint::{ipv4_from_map, ipv4_to_map},
    typed::{map_error, optional, removed, typed_wrapper},
};
use crate::{
    c_struct,
    error::{DatapathError, Result},
    layout::MapBinding,
};

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

impl IpcacheEntry {
    /// An entry for a prefix of identity `identity`, routed natively.
    pub const fn new(identity: u32) -> Self {
        Self {
            identity,
            tunnel_endpoint: 0,
            flags: 0,
            pad: [0; 3],
        }
    }
}

/// Checks that `addr/prefix_len` is a valid prefix: length at most 32 and no
/// bit set beyond the prefix (`10.0.0.1/24` is refused, write `10.0.0.0/24`).
pub fn validate_prefix(addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
    if prefix_len > 32 {
        return Err(DatapathError::invalid(
            "ipcache prefix",
            format!("{addr}/{prefix_len}: prefix length above 32"),
        ));
    }
    let bits = u32::from(addr);
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    };
    if bits & !mask != 0 {
        return Err(DatapathError::invalid(
            "ipcache prefix",
            format!(
                "{addr}/{prefix_len} has host bits set; the prefix is {}/{prefix_len}",
                Ipv4Addr::from(bits & mask)
            ),
        ));
    }
    Ok(())
}

/// Typed `mbr_ipcache`: IPv4 prefix -> identity, longest prefix wins.
pub struct Ipcache<T> {
    map: LpmTrie<T, u32, IpcacheEntry>,
}

typed_wrapper!(Ipcache, LpmTrie<u32, IpcacheEntry>, MAP_NAME, binding());

fn trie_key(addr: Ipv4Addr, prefix_len: u8) -> Key<u32> {
    Key::new(u32::from(prefix_len), ipv4_to_map(addr))
}

impl<T: Borrow<MapData>> Ipcache<T> {
    /// What the datapath sees for `addr`: the entry of the longest prefix
    /// that contains it, `None` for the world.
    pub fn lookup(&self, addr: Ipv4Addr) -> Result<Option<IpcacheEntry>> {
        optional(self.map.get(&trie_key(addr, 32), 0), "look up", MAP_NAME)
    }

    /// Every prefix with its entry, sorted by address then length.
    pub fn entries(&self) -> Result<Vec<(Ipv4Addr, u8, IpcacheEntry)>> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            let (key, value) = entry.map_err(|e| map_error("iterate", MAP_NAME, &e))?;
            let prefix_len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
            out.push((ipv4_from_map(key.data()), prefix_len, value));
        }
        out.sort_by_key(|(addr, len, _)| (*addr, *len));
        Ok(out)
    }
}

impl<T: BorrowMut<MapData>> Ipcache<T> {
    /// Writes (or replaces) the entry of `addr/prefix_len`.
    pub fn insert(&mut self, addr: Ipv4Addr, prefix_len: u8, entry: &IpcacheEntry) -> Result<()> {
        validate_prefix(addr, prefix_len)?;
        self.map
            .insert(&trie_key(addr, prefix_len), entry, 0)
            .map_err(|e| map_error("update", MAP_NAME, &e))
    }

    /// Removes exactly `addr/prefix_len`; false if it was not there.
    pub fn remove(&mut self, addr: Ipv4Addr, prefix_len: u8) -> Result<bool> {
        validate_prefix(addr, prefix_len)?;
        removed(self.map.remove(&trie_key(addr, prefix_len)), MAP_NAME)
    }
}

// ---- Batch operations (crates/datapath/src/batch.rs) ----------------------------

impl<T: std::borrow::Borrow<aya::maps::MapData>> Ipcache<T> {
    /// The same map with batch operations: many entries per syscall
    /// (`BatchMap::update`, `delete`, `lookup`, `dump`, `for_each_chunk`).
    pub fn batch(
        &self,
    ) -> crate::error::Result<crate::batch::BatchMap<IpcacheKey, IpcacheEntry, &aya::maps::MapData>>
    {
        use aya::maps::IterableMap as _;
        crate::batch::BatchMap::new(self.map.map(), MAP_NAME)
    }
}
