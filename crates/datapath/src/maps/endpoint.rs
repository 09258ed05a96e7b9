//! `mbr_ep_ifindex` and `mbr_ep_ip`: the local endpoints, by the ifindex of
//! their host-side veth and by IPv4 address (`ebpf/lib/endpoint.h`).

use std::{
    borrow::{Borrow, BorrowMut},
    net::Ipv4Addr,
};

use aya::maps::{Array, HashMap, MapData, MapType};

use super::{
    abi::TrafficDirection,
    typed::{map_error, optional, removed, typed_wrapper},
};
use crate::{
    c_struct,
    error::{DatapathError, Result},
    layout::MapBinding,
};

/// ifindex -> [`EndpointInfo`].
pub const BY_IFINDEX_MAP: &str = "mbr_ep_ifindex";
/// IPv4 address (network order, as a `u32` holding the wire bytes) -> [`EndpointInfo`].
pub const BY_IP_MAP: &str = "mbr_ep_ip";
/// Both are `BPF_MAP_TYPE_HASH`.
pub const MAP_TYPE: MapType = MapType::Hash;
/// The datapath's own copy of the `mbr_ep_ifindex` entries it used, a
/// direct-mapped array: interface `ifindex` has slot `ifindex %`
/// [`CACHE_SLOTS`], valid when it holds that ifindex (0: empty). Written by
/// the programs only (user space may empty a slot, never fill one):
/// `ebpf/lib/endpoint.h`.
pub const CACHE_MAP: &str = "mbr_ep_cache";
/// The `mbr_ep_cache` slot of interface `ifindex`.
pub const fn cache_slot(ifindex: u32) -> u32 {
    ifindex % CACHE_SLOTS
}
/// `mbr_ep_cache` is a `BPF_MAP_TYPE_ARRAY`.
pub const CACHE_MAP_TYPE: MapType = MapType::Array;
/// Slots of `mbr_ep_cache` (C `MBR_EP_CACHE_SLOTS`, a power of two).
pub const CACHE_SLOTS: u32 = 16_384;

/// `endpoint_info.flags`: ingress policy applies (otherwise everything is allowed in).
pub const EP_F_INGRESS_ENFORCED: u16 = 0x1;
/// `endpoint_info.flags`: egress policy applies.
pub const EP_F_EGRESS_ENFORCED: u16 = 0x2;
/// `endpoint_info.flags`: would-be drops are reported as AUDIT and passed.
pub const EP_F_AUDIT: u16 = 0x4;

c_struct! {
    /// A local endpoint (C `struct endpoint_info`).
    pub struct EndpointInfo = "endpoint_info" {
        /// ifindex of the host-side veth.
        pub ifindex: u32,
        /// Security identity of the pod.
        pub identity: u32,
        /// IPv4 address, network byte order (`u32::from_ne_bytes(ip.octets())`).
        pub ipv4: u32,
        /// Endpoint id, 1..=65535: the key of its policy entries.
        pub ep_id: u16,
        /// `EP_F_*`.
        pub flags: u16,
        /// The pod's MAC.
        pub mac: [u8; 6],
        /// The host-side veth's MAC.
        pub node_mac: [u8; 6],
        /// Always zero.
        pub reserved: u32,
    }
}

/// Bindings of the endpoint maps and the datapath's cache, for the layout check.
pub fn bindings() -> [MapBinding; 3] {
    [
        MapBinding::new::<u32, EndpointInfo>(BY_IFINDEX_MAP, MAP_TYPE),
        MapBinding::new::<u32, EndpointInfo>(BY_IP_MAP, MAP_TYPE),
        MapBinding::new::<u32, EndpointInfo>(CACHE_MAP, CACHE_MAP_TYPE),
    ]
}

impl EndpointInfo {
    /// An endpoint: host-side veth `ifindex`, security `identity`, address
    /// `ipv4`, endpoint id `ep_id` (1..=65535) and `EP_F_*` flags; MACs zero.
    pub fn new(ifindex: u32, identity: u32, ipv4: Ipv4Addr, ep_id: u16, flags: u16) -> Self {
        Self {
            ifindex,
            identity,
            ipv4: ipv4_to_map(ipv4),
            ep_id,
            flags,
            ..Self::default()
        }
    }

    /// The endpoint's address.
    pub fn ipv4_addr(&self) -> Ipv4Addr {
        ipv4_from_map(self.ipv4)
    }

    /// Whether policy is enforced for traffic in `direction`.
    pub const fn enforces(&self, direction: TrafficDirection) -> bool {
        let flag = match direction {
            TrafficDirection::Ingress => EP_F_INGRESS_ENFORCED,
            TrafficDirection::Egress => EP_F_EGRESS_ENFORCED,
        };
        self.flags & flag != 0
    }

    /// Checks what the datapath relies on: a nonzero endpoint id, an
    /// ifindex, known flag bits and zeroed reserved bytes.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(DatapathError::invalid("endpoint", detail));
        if self.ep_id == 0 {
            return bad("endpoint id 0 is reserved; use 1..=65535".to_owned());
        }
        if self.ifindex == 0 {
            return bad(format!("endpoint {} has ifindex 0", self.ep_id));
        }
        let known = EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED | EP_F_AUDIT;
        if self.flags & !known != 0 {
            return bad(format!(
                "endpoint {} has unknown flag bits {:#x}",
                self.ep_id,
                self.flags & !known
            ));
        }
        if self.reserved != 0 {
            return bad(format!("endpoint {}: reserved must be 0", self.ep_id));
        }
        Ok(())
    }
}

/// An IPv4 address as the maps store it: the wire bytes in a `u32`.
pub fn ipv4_to_map(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// The inverse of [`ipv4_to_map`].
pub fn ipv4_from_map(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

/// Typed `mbr_ep_ifindex`: host-side veth ifindex -> endpoint.
pub struct EndpointsByIfindex<T> {
    map: HashMap<T, u32, EndpointInfo>,
}

typed_wrapper!(
    EndpointsByIfindex,
    HashMap<u32, EndpointInfo>,
    BY_IFINDEX_MAP,
    bindings()[0]
);

impl<T: Borrow<MapData>> EndpointsByIfindex<T> {
    /// The endpoint on interface `ifindex`.
    pub fn get(&self, ifindex: u32) -> Result<Option<EndpointInfo>> {
        optional(self.map.get(&ifindex, 0), "look up", BY_IFINDEX_MAP)
    }

    /// Every endpoint, sorted by ifindex.
    pub fn entries(&self) -> Result<Vec<(u32, EndpointInfo)>> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            out.push(entry.map_err(|e| map_error("iterate", BY_IFINDEX_MAP, &e))?);
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }
}

impl<T: BorrowMut<MapData>> EndpointsByIfindex<T> {
    /// Writes the endpoint under its `ifindex` (after validating it).
    pub fn insert(&mut self, endpoint: &EndpointInfo) -> Result<()> {
        endpoint.validate()?;
        self.map
            .insert(endpoint.ifindex, endpoint, 0)
            .map_err(|e| map_error("update", BY_IFINDEX_MAP, &e))
    }

    /// Removes the endpoint of `ifindex`; false if there was none.
    pub fn remove(&mut self, ifindex: u32) -> Result<bool> {
        removed(self.map.remove(&ifindex), BY_IFINDEX_MAP)
    }
}

/// Typed `mbr_ep_cache`: the datapath's copy of the endpoints it used,
/// by ifindex. User space reads it and empties slots, never fills them.
pub struct EndpointCache<T> {
    map: Array<T, EndpointInfo>,
}

typed_wrapper!(EndpointCache, Array<EndpointInfo>, CACHE_MAP, bindings()[2]);

impl<T: Borrow<MapData>> EndpointCache<T> {
    /// The cached endpoint of `ifindex`: None when its slot is empty or
    /// holds another interface's endpoint.
    pub fn get(&self, ifindex: u32) -> Result<Option<EndpointInfo>> {
        if ifindex == 0 {
            return Ok(None);
        }
        let slot = self
            .map
            .get(&cache_slot(ifindex), 0)
            .map_err(|e| map_error("look up", CACHE_MAP, &e))?;
        Ok((slot.ifindex == ifindex).then_some(slot))
    }
}

impl<T: BorrowMut<MapData>> EndpointCache<T> {
    /// Empties the slot of `ifindex` if it holds that interface's endpoint;
    /// whether it did. The programs refill it from `mbr_ep_ifindex` when the
    /// interface next has a packet that is not a tracked connection's.
    pub fn evict(&mut self, ifindex: u32) -> Result<bool> {
        if self.get(ifindex)?.is_none() {
            return Ok(false);
        }
        self.map
            .set(cache_slot(ifindex), EndpointInfo::default(), 0)
            .map_err(|e| map_error("update", CACHE_MAP, &e))?;
        Ok(true)
    }
}

/// Typed `mbr_ep_ip`: endpoint IPv4 address -> endpoint.
pub struct EndpointsByIp<T> {
    map: HashMap<T, u32, EndpointInfo>,
}

typed_wrapper!(
    EndpointsByIp,
    HashMap<u32, EndpointInfo>,
    BY_IP_MAP,
    bindings()[1]
);

impl<T: Borrow<MapData>> EndpointsByIp<T> {
    /// The local endpoint with address `addr`.
    pub fn get(&self, addr: Ipv4Addr) -> Result<Option<EndpointInfo>> {
        optional(self.map.get(&ipv4_to_map(addr), 0), "look up", BY_IP_MAP)
    }

    /// Every endpoint, sorted by address.
    pub fn entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            let (k, v) = entry.map_err(|e| map_error("iterate", BY_IP_MAP, &e))?;
            out.push((ipv4_from_map(k), v));
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }
}

impl<T: BorrowMut<MapData>> EndpointsByIp<T> {
    /// Writes the endpoint under its address (after validating it).
    pub fn insert(&mut self, endpoint: &EndpointInfo) -> Result<()> {
        endpoint.validate()?;
        if endpoint.ipv4 == 0 {
            return Err(DatapathError::invalid(
                "endpoint",
                format!("endpoint {} has no IPv4 address", endpoint.ep_id),
            ));
        }
        self.map
            .insert(endpoint.ipv4, endpoint, 0)
            .map_err(|e| map_error("update", BY_IP_MAP, &e))
    }

    /// Removes the endpoint with address `addr`; false if there was none.
    pub fn remove(&mut self, addr: Ipv4Addr) -> Result<bool> {
        removed(self.map.remove(&ipv4_to_map(addr)), BY_IP_MAP)
    }
}

// ---- Batch operations (crates/datapath/src/batch.rs) ----------------------------

impl<T: std::borrow::Borrow<aya::maps::MapData>> EndpointsByIfindex<T> {
    /// The same map with batch operations: many entries per syscall
    /// (`BatchMap::update`, `delete`, `lookup`, `dump`, `for_each_chunk`).
    pub fn batch(
        &self,
    ) -> crate::error::Result<crate::batch::BatchMap<u32, EndpointInfo, &aya::maps::MapData>> {
        use aya::maps::IterableMap as _;
        crate::batch::BatchMap::new(self.map.map(), BY_IFINDEX_MAP)
    }
}

// ---- Batch operations (crates/datapath/src/batch.rs) ----------------------------

impl<T: std::borrow::Borrow<aya::maps::MapData>> EndpointsByIp<T> {
    /// The same map with batch operations: many entries per syscall
    /// (`BatchMap::update`, `delete`, `lookup`, `dump`, `for_each_chunk`).
    pub fn batch(
        &self,
    ) -> crate::error::Result<crate::batch::BatchMap<u32, EndpointInfo, &aya::maps::MapData>> {
        use aya::maps::IterableMap as _;
        crate::batch::BatchMap::new(self.map.map(), BY_IP_MAP)
    }
}
