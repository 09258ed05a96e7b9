//! `mbr_config`: node-wide datapath settings, changeable at run time
//! (`ebpf/lib/config.h`). A zero field means the built-in default.

use std::borrow::{Borrow, BorrowMut};

use aya::maps::{Array, MapData, MapType};

use super::typed::{map_error, typed_wrapper};
use crate::{c_struct, error::Result, layout::MapBinding};

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

/// Built-in defaults, used by the datapath for zero fields.
pub const DEFAULTS: DatapathConfig = DatapathConfig {
    ct_tcp_syn_timeout: 60,
    ct_tcp_established_timeout: 21600,
    ct_tcp_close_timeout: 10,
    ct_nontcp_timeout: 60,
    flow_report_interval: 5,
    flags: 0,
};

impl DatapathConfig {
    /// The settings the datapath applies: zero fields replaced by [`DEFAULTS`].
    pub const fn effective(&self) -> Self {
        const fn or(v: u32, d: u32) -> u32 {
            if v == 0 {
                d
            } else {
                v
            }
        }
        Self {
            ct_tcp_syn_timeout: or(self.ct_tcp_syn_timeout, DEFAULTS.ct_tcp_syn_timeout),
            ct_tcp_established_timeout: or(
                self.ct_tcp_established_timeout,
                DEFAULTS.ct_tcp_established_timeout,
            ),
            ct_tcp_close_timeout: or(self.ct_tcp_close_timeout, DEFAULTS.ct_tcp_close_timeout),
            ct_nontcp_timeout: or(self.ct_nontcp_timeout, DEFAULTS.ct_nontcp_timeout),
            flow_report_interval: or(self.flow_report_interval, DEFAULTS.flow_report_interval),
            flags: self.flags,
        }
    }
}

/// Typed `mbr_config`.
pub struct ConfigMap<T> {
    map: Array<T, DatapathConfig>,
}

typed_wrapper!(ConfigMap, Array<DatapathConfig>, MAP_NAME, binding());

impl<T: Borrow<MapData>> ConfigMap<T> {
    /// The stored settings (zeros mean defaults; see [`DatapathConfig::effective`]).
    pub fn get(&self) -> Result<DatapathConfig> {
        self.map
            .get(&0, 0)
            .map_err(|e| map_error("look up", MAP_NAME, &e))
    }
}

impl<T: BorrowMut<MapData>> ConfigMap<T> {
    /// Replaces the settings; the datapath uses them from its next packet.
    pub fn set(&mut self, config: &DatapathConfig) -> Result<()> {
        if config.flags != 0 {
            return Err(crate::error::DatapathError::invalid(
                "datapath config",
                format!("flags {:#x}: no flag is defined yet", config.flags),
            ));
        }
        self.map
            .set(0, config, 0)
            .map_err(|e| map_error("update", MAP_NAME, &e))
    }
}
