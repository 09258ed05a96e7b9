//! `mbr_config`: node-wide datapath settings, changeable at run time
//! (`ebpf/lib/config.h`). A zero field means the built-in default.

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// The map's name.
pub const MAP_NAME: &str = "mbr_config";
/// `BPF_MAP_TYPE_ARRAY` with one entry at index 0.
pub const MAP_TYPE: MapType = MapType::Array;

c_struct! {
    /// The settings (C `struct datapath_config`); seconds.
    pub struct DatapathConfig = "datapath_config" {
        /// TCP connection that has seen only a SYN (default 60).
        pub ct_tcp_syn_timeout: u32,
        /// Established TCP connection (default 21600).
        pub ct_tcp_established_timeout: u32,
        /// TCP connection after FIN both ways or RST (default 10).
        pub ct_tcp_close_timeout: u32,
        /// UDP, ICMP and other flows (default 60).
        pub ct_nontcp_timeout: u32,
        /// At most one event per flow per interval for established traffic (default 5).
        pub flow_report_interval: u32,
        /// Reserved.
        pub flags: u32,
    }
}

/// The binding for the layout check.
pub fn binding() -> MapBinding {
    MapBinding::new::<u32, DatapathConfig>(MAP_NAME, MAP_TYPE)
}
