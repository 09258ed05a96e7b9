//! `mbr_policy`: per endpoint and direction, peer identity (or any), protocol
//! (or any), destination port prefix (or any) -> allow / deny / redirect
//! (`ebpf/lib/policy.h`; lookup order in `ebpf/README.md`).

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// The map's name.
pub const MAP_NAME: &str = "mbr_policy";
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const MAP_TYPE: MapType = MapType::LpmTrie;

/// `policy_entry.action`: allow.
pub const POLICY_ALLOW: u8 = 1;
/// `policy_entry.action`: deny (wins over any allow).
pub const POLICY_DENY: u8 = 2;
/// `policy_entry.action`: allow through the proxy at `proxy_port`.
pub const POLICY_REDIRECT: u8 = 3;

/// `prefixlen` that matches endpoint, direction and identity: any protocol and port.
pub const PREFIX_ANY_PROTO: u32 = 64;
/// `prefixlen` that also matches the protocol: any port.
pub const PREFIX_ANY_PORT: u32 = 80;
/// `prefixlen` of an exact port.
pub const PREFIX_FULL: u32 = 96;

c_struct! {
    /// Key (C `struct policy_key`). The LPM runs over the 12 bytes after
    /// `prefixlen`, in field order.
    pub struct PolicyKey = "policy_key" {
        /// [`PREFIX_ANY_PROTO`], [`PREFIX_ANY_PORT`], or 80 + n for the first n bits of `dport`.
        pub prefixlen: u32,
        /// The endpoint the entry belongs to.
        pub ep_id: u16,
        /// Traffic direction: 1 ingress, 2 egress.
        pub direction: u8,
        /// Always zero.
        pub pad0: u8,
        /// Peer identity; 0 = any peer.
        pub identity: u32,
        /// IP protocol number; for ICMP the port holds the ICMP type.
        pub proto: u8,
        /// Always zero.
        pub pad1: u8,
        /// Destination port, network byte order.
        pub dport: u16,
    }
}

c_struct! {
    /// Value (C `struct policy_entry`).
    pub struct PolicyEntry = "policy_entry" {
        /// `POLICY_*`.
        pub action: u8,
        /// Reserved.
        pub flags: u8,
        /// Proxy port for [`POLICY_REDIRECT`], network byte order.
        pub proxy_port: u16,
        /// Rule id chosen by the agent; reported in flow events.
        pub cookie: u32,
    }
}

/// The binding for the layout check.
pub fn binding() -> MapBinding {
    MapBinding::new::<PolicyKey, PolicyEntry>(MAP_NAME, MAP_TYPE)
}
