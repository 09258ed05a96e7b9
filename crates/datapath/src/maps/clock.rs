//! `mbr_clock`: each CPU's cached reading of CLOCK_MONOTONIC seconds, keyed
//! by the jiffies value it was taken at (`ebpf/lib/clock.h`). Internal to
//! the datapath; user space never writes it.

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// The map's name.
pub const MAP_NAME: &str = "mbr_clock";
/// `BPF_MAP_TYPE_PERCPU_ARRAY` with one entry.
pub const MAP_TYPE: MapType = MapType::PerCpuArray;

c_struct! {
    /// Value, one per CPU (C `struct clock_cache`).
    pub struct ClockCache = "clock_cache" {
        /// `bpf_jiffies64()` at the last reading.
        pub jiffies: u64,
        /// CLOCK_MONOTONIC seconds at that reading.
        pub seconds: u64,
    }
}

/// The binding for the layout check.
pub fn binding() -> MapBinding {
    MapBinding::new::<u32, ClockCache>(MAP_NAME, MAP_TYPE)
}
