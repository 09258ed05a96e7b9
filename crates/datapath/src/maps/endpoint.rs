//! `mbr_ep_ifindex` and `mbr_ep_ip`: the local endpoints, by the ifindex of
//! their host-side veth and by IPv4 address (`ebpf/lib/endpoint.h`).

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// ifindex -> [`EndpointInfo`].
pub const BY_IFINDEX_MAP: &str = "mbr_ep_ifindex";
/// IPv4 address (network order, as a `u32` holding the wire bytes) -> [`EndpointInfo`].
pub const BY_IP_MAP: &str = "mbr_ep_ip";
/// Both are `BPF_MAP_TYPE_HASH`.
pub const MAP_TYPE: MapType = MapType::Hash;

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

/// Bindings of both endpoint maps, for the layout check.
pub fn bindings() -> [MapBinding; 2] {
    [
        MapBinding::new::<u32, EndpointInfo>(BY_IFINDEX_MAP, MAP_TYPE),
        MapBinding::new::<u32, EndpointInfo>(BY_IP_MAP, MAP_TYPE),
    ]
}
