//! `mbr_metrics`: per-CPU packet and byte counters by drop reason and
//! traffic direction (`ebpf/lib/metrics.h`). A per-CPU array indexed by
//! [`MetricsKey::index`] (`reason | direction << 8`); readers sum the CPUs.

use std::borrow::Borrow;

use aya::maps::{MapData, MapType, PerCpuArray, PerCpuValues};

use super::typed::{map_error, typed_wrapper};
use crate::{c_struct, error::Result, layout::MapBinding};

/// The map's name.
pub const MAP_NAME: &str = "mbr_metrics";
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const MAP_TYPE: MapType = MapType::PerCpuArray;
/// Entries: 256 reasons for each of the directions 0 (unknown), 1, 2.
pub const MAX_ENTRIES: u32 = 3 * 256;
/// `metrics_key.reason` that counts flow events lost to a full ring buffer.
pub const REASON_EVENTS_LOST: u8 = 0xff;

c_struct! {
    /// Key (C `struct metrics_key`).
    pub struct MetricsKey = "metrics_key" {
        /// 0 = forwarded, else a drop reason.
        pub reason: u8,
        /// Traffic direction: 0 unknown, 1 ingress, 2 egress.
        pub direction: u8,
        /// Always zero.
        pub pad: u16,
    }
}

c_struct! {
    /// Value, one per CPU (C `struct metrics_value`).
    pub struct MetricsValue = "metrics_value" {
        /// Packets.
        pub packets: u64,
        /// Bytes.
        pub bytes: u64,
    }
}

/// The binding for the layout check (the key is the `u32` index;
/// [`MetricsKey`] is checked as a struct on its own).
pub fn binding() -> MapBinding {
    MapBinding::new::<u32, MetricsValue>(MAP_NAME, MAP_TYPE)
}

impl MetricsKey {
    /// The key of `{reason, direction}`.
    pub const fn new(reason: u8, direction: u8) -> Self {
        Self {
            reason,
            direction,
            pad: 0,
        }
    }

    /// The array index: `reason | direction << 8` (on little-endian hosts,
    /// the struct's bytes read as a `u32`).
    pub const fn index(&self) -> u32 {
        self.reason as u32 | (self.direction as u32) << 8
    }

    /// The key of array index `index`, if it is one.
    pub const fn from_index(index: u32) -> Option<Self> {
        if index >= MAX_ENTRIES {
            return None;
        }
        Some(Self::new((index & 0xff) as u8, (index >> 8) as u8))
    }
}

/// One counter, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricCount {
    /// 0 = forwarded, [`REASON_EVENTS_LOST`], or a drop reason.
    pub reason: u8,
    /// Traffic direction: 0 unknown, 1 ingress, 2 egress.
    pub direction: u8,
    /// Packets (events, for [`REASON_EVENTS_LOST`]).
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Typed `mbr_metrics`.
pub struct Metrics<T> {
    map: PerCpuArray<T, MetricsValue>,
}

typed_wrapper!(Metrics, PerCpuArray<MetricsValue>, MAP_NAME, binding());

fn sum(per_cpu: &PerCpuValues<MetricsValue>) -> (u64, u64) {
    per_cpu.iter().fold((0u64, 0u64), |(p, b), v| {
        (p.wrapping_add(v.packets), b.wrapping_add(v.bytes))
    })
}

impl<T: Borrow<MapData>> Metrics<T> {
    /// The counter of `{reason, direction}`, if it has counted anything.
    pub fn get(&self, reason: u8, direction: u8) -> Result<Option<MetricCount>> {
        let index = MetricsKey::new(reason, direction).index();
        if index >= self.map.len() {
            return Ok(None);
        }
        let per_cpu = self
            .map
            .get(&index, 0)
            .map_err(|e| map_error("look up", MAP_NAME, &e))?;
        let (packets, bytes) = sum(&per_cpu);
        Ok((packets != 0 || bytes != 0).then_some(MetricCount {
            reason,
            direction,
            packets,
            bytes,
        }))
    }

    /// Every counter that has counted something, sorted by reason then direction.
    pub fn read_all(&self) -> Result<Vec<MetricCount>> {
        let mut out = Vec::new();
        for (index, per_cpu) in self.map.iter().enumerate() {
            let per_cpu = per_cpu.map_err(|e| map_error("iterate", MAP_NAME, &e))?;
            let (packets, bytes) = sum(&per_cpu);
            let Some(key) = MetricsKey::from_index(index as u32) else {
                continue;
            };
            if packets != 0 || bytes != 0 {
                out.push(MetricCount {
                    reason: key.reason,
                    direction: key.direction,
                    packets,
                    bytes,
                });
            }
        }
        out.sort_by_key(|c| (c.reason, c.direction));
        Ok(out)
    }

    /// Flow events lost because the ring buffer was full.
    pub fn events_lost(&self) -> Result<u64> {
        Ok(self.get(REASON_EVENTS_LOST, 0)?.map_or(0, |c| c.packets))
    }
}
