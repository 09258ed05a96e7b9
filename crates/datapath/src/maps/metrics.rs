//! `mbr_metrics`: per-CPU packet and byte counters by drop reason and
//! traffic direction (`ebpf/lib/metrics.h`).

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// The map's name.
pub const MAP_NAME: &str = "mbr_metrics";
/// `BPF_MAP_TYPE_PERCPU_HASH`.
pub const MAP_TYPE: MapType = MapType::PerCpuHash;
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

/// The binding for the layout check.
pub fn binding() -> MapBinding {
    MapBinding::new::<MetricsKey, MetricsValue>(MAP_NAME, MAP_TYPE)
}
