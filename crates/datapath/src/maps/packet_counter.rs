//! `mbr_pkt_counts`: per-interface, per-direction packet and byte counters
//! (`ebpf/lib/counters.h`). A per-CPU hash map; readers sum the CPUs.

use std::{borrow::Borrow, path::Path};

use aya::maps::{Map, MapData, MapType, PerCpuHashMap};

use crate::{
    c_struct,
    error::{DatapathError, Result},
    layout::MapBinding,
};

/// The map's name in C and in the pin directory.
pub const MAP_NAME: &str = "mbr_pkt_counts";

/// `BPF_MAP_TYPE_PERCPU_HASH`.
pub const MAP_TYPE: MapType = MapType::PerCpuHash;

c_struct! {
    /// Key of `mbr_pkt_counts`: which hook counted (C `struct pkt_counter_key`).
    pub struct PacketCounterKey = "pkt_counter_key" {
        /// `skb->ifindex` at the hook, in the loader's network namespace.
        pub ifindex: u32,
        /// A [`Direction`] as its raw value.
        pub direction: u8,
        /// Always zero.
        pub pad: [u8; 3],
    }
}

c_struct! {
    /// Value of `mbr_pkt_counts`, one per CPU (C `struct pkt_counter_value`).
    pub struct PacketCounterValue = "pkt_counter_value" {
        /// Packets seen.
        pub packets: u64,
        /// Bytes seen: `skb->len` at the hook (L2 frame without FCS).
        pub bytes: u64,
    }
}

/// The binding the layout check verifies against the object's BTF.
pub fn binding() -> MapBinding {
    MapBinding::new::<PacketCounterKey, PacketCounterValue>(MAP_NAME, MAP_TYPE)
}

/// Which tc hook of an interface saw a packet (C `enum mbr_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Direction {
    /// tc ingress: received by the interface (on a pod's host-side veth:
    /// leaving the pod).
    Ingress = 0,
    /// tc egress: transmitted by the interface (entering the pod).
    Egress = 1,
}

impl Direction {
    /// Both directions, ingress first.
    pub const ALL: [Self; 2] = [Self::Ingress, Self::Egress];

    /// `"ingress"` or `"egress"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    /// The direction with raw value `raw`, if any.
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PacketCounterKey {
    /// The key of `(ifindex, direction)`.
    pub const fn new(ifindex: u32, direction: Direction) -> Self {
        Self {
            ifindex,
            direction: direction as u8,
            pad: [0; 3],
        }
    }
}

/// The counters of one (interface, direction), summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketCount {
    /// Interface index (loader's network namespace).
    pub ifindex: u32,
    /// Hook.
    pub direction: Direction,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Typed `mbr_pkt_counts`. `T` is `MapData` (owned, e.g. opened from a pin),
/// `&MapData` or `&mut MapData` (borrowed from a loaded `aya::Ebpf`).
pub struct PacketCounters<T> {
    map: PerCpuHashMap<T, PacketCounterKey, PacketCounterValue>,
}

impl PacketCounters<MapData> {
    /// Opens the map pinned at `path`, checking that it is this build's map.
    pub fn from_pin(path: &Path) -> Result<Self> {
        let data = super::open_pinned(path, &binding())?;
        let map = Map::from_map_data(data)
            .map_err(|e| DatapathError::op("open", format!("map {MAP_NAME}"), &e))?;
        let map = PerCpuHashMap::try_from(map)
            .map_err(|e| DatapathError::op("type", format!("map {MAP_NAME}"), &e))?;
        Ok(Self { map })
    }
}

impl<'a> PacketCounters<&'a MapData> {
    /// Wraps the map of a loaded object.
    pub fn from_map(map: &'a Map) -> Result<Self> {
        let map = PerCpuHashMap::try_from(map)
            .map_err(|e| DatapathError::op("type", format!("map {MAP_NAME}"), &e))?;
        Ok(Self { map })
    }
}

impl<T: Borrow<MapData>> PacketCounters<T> {
    /// Every counter, summed over CPUs, sorted by interface then direction.
    pub fn read_all(&self) -> Result<Vec<PacketCount>> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            let (key, per_cpu) =
                entry.map_err(|e| DatapathError::op("iterate", format!("map {MAP_NAME}"), &e))?;
            let Some(direction) = Direction::from_raw(key.direction) else {
                return Err(DatapathError::Incompatible {
                    object: format!("map {MAP_NAME}"),
                    path: String::new(),
                    detail: format!(
                        "entry with unknown direction {} for ifindex {}",
                        key.direction, key.ifindex
                    ),
                });
            };
            let (packets, bytes) = per_cpu.iter().fold((0u64, 0u64), |(p, b), v| {
                (p.wrapping_add(v.packets), b.wrapping_add(v.bytes))
            });
            out.push(PacketCount {
                ifindex: key.ifindex,
                direction,
                packets,
                bytes,
            });
        }
        out.sort_by_key(|c| (c.ifindex, c.direction));
        Ok(out)
    }

    /// The counters of one (interface, direction), or `None` if it has seen
    /// no packet yet.
    pub fn get(&self, ifindex: u32, direction: Direction) -> Result<Option<PacketCount>> {
        match self.map.get(&PacketCounterKey::new(ifindex, direction), 0) {
            Ok(per_cpu) => {
                let (packets, bytes) = per_cpu.iter().fold((0u64, 0u64), |(p, b), v| {
                    (p.wrapping_add(v.packets), b.wrapping_add(v.bytes))
                });
                Ok(Some(PacketCount {
                    ifindex,
                    direction,
                    packets,
                    bytes,
                }))
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::op("look up", format!("map {MAP_NAME}"), &e)),
        }
    }
}
