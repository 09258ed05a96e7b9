//! `mbr_policy`: per endpoint and direction, peer identity (or any), protocol
//! (or any), destination port prefix (or any) -> allow / deny / redirect
//! (`ebpf/lib/policy.h`; lookup order in `ebpf/README.md`).

use std::borrow::{Borrow, BorrowMut};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    MapData, MapType,
};

use super::{
    abi::TrafficDirection,
    typed::{map_error, optional, removed, typed_wrapper},
};
use crate::{
    c_struct,
    error::{DatapathError, Result},
    layout::MapBinding,
};

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

/// The bits of a port that a key of `prefixlen` matches (0..=16), if it is
/// a port-matching key.
const fn port_bits_of(prefixlen: u32) -> Option<u32> {
    if prefixlen >= PREFIX_ANY_PORT && prefixlen <= PREFIX_FULL {
        Some(prefixlen - PREFIX_ANY_PORT)
    } else {
        None
    }
}

impl PolicyKey {
    /// A key matching protocol `proto` and the ports whose first `port_bits`
    /// bits (0..=16) equal those of `port` (host order).
    pub fn new(
        ep_id: u16,
        direction: TrafficDirection,
        identity: u32,
        proto: u8,
        port: u16,
        port_bits: u8,
    ) -> Self {
        Self {
            prefixlen: PREFIX_ANY_PORT + u32::from(port_bits.min(16)),
            ep_id,
            direction: direction.raw(),
            pad0: 0,
            identity,
            proto,
            pad1: 0,
            dport: port.to_be(),
        }
    }

    /// Exactly `proto`/`port`.
    pub fn exact(
        ep_id: u16,
        direction: TrafficDirection,
        identity: u32,
        proto: u8,
        port: u16,
    ) -> Self {
        Self::new(ep_id, direction, identity, proto, port, 16)
    }

    /// Protocol `proto`, any port.
    pub fn any_port(ep_id: u16, direction: TrafficDirection, identity: u32, proto: u8) -> Self {
        Self::new(ep_id, direction, identity, proto, 0, 0)
    }

    /// Any protocol, any port (an L3-only rule).
    pub fn any_proto(ep_id: u16, direction: TrafficDirection, identity: u32) -> Self {
        Self {
            prefixlen: PREFIX_ANY_PROTO,
            ..Self::new(ep_id, direction, identity, 0, 0, 0)
        }
    }

    /// ICMP messages of type `icmp_type` (the datapath matches ICMP by type
    /// in the port field).
    pub fn icmp(ep_id: u16, direction: TrafficDirection, identity: u32, icmp_type: u8) -> Self {
        Self::exact(
            ep_id,
            direction,
            identity,
            IPPROTO_ICMP,
            u16::from(icmp_type),
        )
    }

    /// The port, host order.
    pub const fn port(&self) -> u16 {
        u16::from_be(self.dport)
    }

    /// The traffic direction, if valid.
    pub const fn traffic_direction(&self) -> Option<TrafficDirection> {
        TrafficDirection::from_raw(self.direction)
    }

    /// Checks what the datapath's lookup relies on: a known prefix length,
    /// protocol wildcarded only together with the port, no bits beyond the
    /// prefix, an endpoint id, a direction, zero padding.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(DatapathError::invalid("policy key", detail));
        if self.ep_id == 0 {
            return bad("endpoint id 0 is reserved".to_owned());
        }
        if self.traffic_direction().is_none() {
            return bad(format!(
                "direction {} is neither ingress (1) nor egress (2)",
                self.direction
            ));
        }
        if self.pad0 != 0 || self.pad1 != 0 {
            return bad("padding must be zero".to_owned());
        }
        if self.prefixlen == PREFIX_ANY_PROTO {
            if self.proto != 0 || self.dport != 0 {
                return bad(format!(
                    "prefix length {PREFIX_ANY_PROTO} (any protocol) needs protocol 0 and port 0, got {}/{}",
                    self.proto,
                    self.port()
                ));
            }
            return Ok(());
        }
        let Some(bits) = port_bits_of(self.prefixlen) else {
            return bad(format!(
                "prefix length {} is none of {PREFIX_ANY_PROTO} (any protocol) or {PREFIX_ANY_PORT}..={PREFIX_FULL} (port prefix)",
                self.prefixlen
            ));
        };
        let mask = if bits == 0 {
            0
        } else {
            u16::MAX << (16 - bits)
        };
        if self.port() & !mask != 0 {
            return bad(format!(
                "port {} has bits beyond its {bits}-bit prefix",
                self.port()
            ));
        }
        Ok(())
    }
}

/// `IPPROTO_ICMP`.
pub const IPPROTO_ICMP: u8 = 1;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u8 = 17;
/// `IPPROTO_SCTP`.
pub const IPPROTO_SCTP: u8 = 132;

impl PolicyEntry {
    /// Allow, reported with `cookie`.
    pub const fn allow(cookie: u32) -> Self {
        Self {
            action: POLICY_ALLOW,
            flags: 0,
            proxy_port: 0,
            cookie,
        }
    }

    /// Deny (wins over any allow), reported with `cookie`.
    pub const fn deny(cookie: u32) -> Self {
        Self {
            action: POLICY_DENY,
            flags: 0,
            proxy_port: 0,
            cookie,
        }
    }

    /// Allow through the proxy listening on `proxy_port` (host order).
    pub const fn redirect(proxy_port: u16, cookie: u32) -> Self {
        Self {
            action: POLICY_REDIRECT,
            flags: 0,
            proxy_port: proxy_port.to_be(),
            cookie,
        }
    }

    fn validate(&self) -> Result<()> {
        match self.action {
            POLICY_ALLOW | POLICY_DENY => Ok(()),
            POLICY_REDIRECT if self.proxy_port != 0 => Ok(()),
            POLICY_REDIRECT => Err(DatapathError::invalid(
                "policy entry",
                "a redirect needs a proxy port",
            )),
            other => Err(DatapathError::invalid(
                "policy entry",
                format!("action {other} is none of allow (1), deny (2), redirect (3)"),
            )),
        }
    }
}

/// The minimal set of port prefixes that covers exactly the ports `lo..=hi`:
/// each item is `(prefixlen, port)`, with `prefixlen` the policy key's
/// (`PREFIX_ANY_PORT + bits`, 80..=96) and `port` in host order. At most
/// 30 items; `0..=65535` is the single any-port prefix `(80, 0)`.
pub fn port_range_prefixes(lo: u16, hi: u16) -> Result<Vec<(u32, u16)>> {
    if lo > hi {
        return Err(DatapathError::invalid(
            "port range",
            format!("{lo}-{hi}: the first port is above the last"),
        ));
    }
    let mut out = Vec::new();
    let mut start = u32::from(lo);
    let end = u32::from(hi);
    while start <= end {
        // The largest aligned block that starts at `start` and ends within the range.
        let mut size: u32 = if start == 0 {
            1 << 16
        } else {
            1 << start.trailing_zeros()
        };
        while start + size - 1 > end {
            size >>= 1;
        }
        let bits = 16 - size.trailing_zeros();
        out.push((PREFIX_ANY_PORT + bits, start as u16));
        start += size;
    }
    Ok(out)
}

/// The keys of a port-range rule: one per prefix of [`port_range_prefixes`].
pub fn port_range_keys(
    ep_id: u16,
    direction: TrafficDirection,
    identity: u32,
    proto: u8,
    lo: u16,
    hi: u16,
) -> Result<Vec<PolicyKey>> {
    Ok(port_range_prefixes(lo, hi)?
        .into_iter()
        .map(|(prefixlen, port)| PolicyKey {
            prefixlen,
            ..PolicyKey::exact(ep_id, direction, identity, proto, port)
        })
        .collect())
}

/// The part of [`PolicyKey`] after `prefixlen`, as aya's `lpm_trie::Key<K>`
/// wants it (12 bytes, the trie's data).
#[repr(C)]
#[derive(Clone, Copy)]
struct PolicyKeyData {
    ep_id: u16,
    direction: u8,
    pad0: u8,
    identity: u32,
    proto: u8,
    pad1: u8,
    dport: u16,
}

// SAFETY: repr(C), integers only, no padding (asserted below).
unsafe impl aya::Pod for PolicyKeyData {}

const _: () = assert!(std::mem::size_of::<PolicyKeyData>() + 4 == std::mem::size_of::<PolicyKey>());

impl From<&PolicyKey> for Key<PolicyKeyData> {
    fn from(k: &PolicyKey) -> Self {
        Key::new(
            k.prefixlen,
            PolicyKeyData {
                ep_id: k.ep_id,
                direction: k.direction,
                pad0: k.pad0,
                identity: k.identity,
                proto: k.proto,
                pad1: k.pad1,
                dport: k.dport,
            },
        )
    }
}

impl From<Key<PolicyKeyData>> for PolicyKey {
    fn from(k: Key<PolicyKeyData>) -> Self {
        let d = k.data();
        Self {
            prefixlen: k.prefix_len(),
            ep_id: d.ep_id,
            direction: d.direction,
            pad0: d.pad0,
            identity: d.identity,
            proto: d.proto,
            pad1: d.pad1,
            dport: d.dport,
        }
    }
}

/// Typed `mbr_policy`.
pub struct PolicyMap<T> {
    map: LpmTrie<T, PolicyKeyData, PolicyEntry>,
}

typed_wrapper!(PolicyMap, LpmTrie<PolicyKeyData, PolicyEntry>, MAP_NAME, binding());

impl<T: Borrow<MapData>> PolicyMap<T> {
    /// What one datapath lookup with `key` finds: the entry of the longest
    /// stored prefix of `key` (pass an exact key, prefix length 96).
    pub fn lookup(&self, key: &PolicyKey) -> Result<Option<PolicyEntry>> {
        optional(self.map.get(&Key::from(key), 0), "look up", MAP_NAME)
    }

    /// Every entry, sorted by key.
    pub fn entries(&self) -> Result<Vec<(PolicyKey, PolicyEntry)>> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            let (key, value) = entry.map_err(|e| map_error("iterate", MAP_NAME, &e))?;
            out.push((PolicyKey::from(key), value));
        }
        out.sort_by_key(|(k, _)| {
            (
                k.ep_id,
                k.direction,
                k.identity,
                k.proto,
                k.port(),
                k.prefixlen,
            )
        });
        Ok(out)
    }
}

impl<T: BorrowMut<MapData>> PolicyMap<T> {
    /// Writes (or replaces) one entry.
    pub fn insert(&mut self, key: &PolicyKey, entry: &PolicyEntry) -> Result<()> {
        key.validate()?;
        entry.validate()?;
        self.map
            .insert(&Key::from(key), entry, 0)
            .map_err(|e| map_error("update", MAP_NAME, &e))
    }

    /// Removes exactly `key`; false if it was not there.
    pub fn remove(&mut self, key: &PolicyKey) -> Result<bool> {
        removed(self.map.remove(&Key::from(key)), MAP_NAME)
    }

    /// Writes `entry` for the ports `lo..=hi` of `proto` as their minimal set
    /// of prefixes; returns how many keys were written.
    pub fn insert_port_range(
        &mut self,
        ep_id: u16,
        direction: TrafficDirection,
        identity: u32,
        proto: u8,
        (lo, hi): (u16, u16),
        entry: &PolicyEntry,
    ) -> Result<usize> {
        let keys = port_range_keys(ep_id, direction, identity, proto, lo, hi)?;
        for key in &keys {
            self.insert(key, entry)?;
        }
        Ok(keys.len())
    }

    /// Removes every entry of endpoint `ep_id`; returns how many.
    pub fn remove_endpoint(&mut self, ep_id: u16) -> Result<usize> {
        let mut keys = Vec::new();
        for key in self.map.keys() {
            let key = key.map_err(|e| map_error("iterate", MAP_NAME, &e))?;
            if key.data().ep_id == ep_id {
                keys.push(key);
            }
        }
        let mut n = 0;
        for key in &keys {
            if removed(self.map.remove(key), MAP_NAME)? {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports_of(prefixes: &[(u32, u16)]) -> Vec<u32> {
        let mut all = Vec::new();
        for &(prefixlen, port) in prefixes {
            let bits = prefixlen - PREFIX_ANY_PORT;
            let size = 1u32 << (16 - bits);
            assert_eq!(u32::from(port) % size, 0, "unaligned prefix {port}/{bits}");
            all.extend(u32::from(port)..u32::from(port) + size);
        }
        all
    }

    #[test]
    fn port_ranges_become_minimal_prefixes() {
        assert_eq!(port_range_prefixes(0, 65535).unwrap(), [(80, 0)]);
        assert_eq!(port_range_prefixes(1, 1).unwrap(), [(96, 1)]);
        assert_eq!(port_range_prefixes(80, 80).unwrap(), [(96, 80)]);
        assert_eq!(port_range_prefixes(65535, 65535).unwrap(), [(96, 65535)]);
        assert_eq!(port_range_prefixes(0, 0).unwrap(), [(96, 0)]);
        assert_eq!(
            port_range_prefixes(1000, 2000).unwrap(),
            [
                (93, 1000),
                (92, 1008),
                (87, 1024),
                (88, 1536),
                (89, 1792),
                (90, 1920),
                (92, 1984),
                (96, 2000),
            ]
        );
        assert_eq!(port_range_prefixes(1, 65535).unwrap().len(), 16);
        assert_eq!(port_range_prefixes(0, 65534).unwrap().len(), 16);
        assert_eq!(
            port_range_prefixes(1, 65534).unwrap().len(),
            30,
            "the worst case"
        );
        assert_eq!(port_range_prefixes(32768, 65535).unwrap(), [(81, 32768)]);
        assert!(port_range_prefixes(2, 1).is_err());
    }

    #[test]
    fn prefixes_cover_exactly_the_range() {
        for (lo, hi) in [
            (0, 65535),
            (1, 1),
            (1000, 2000),
            (1, 65534),
            (443, 8443),
            (65534, 65535),
            (7, 9),
        ] {
            let covered = ports_of(&port_range_prefixes(lo, hi).unwrap());
            let expected: Vec<u32> = (u32::from(lo)..=u32::from(hi)).collect();
            assert_eq!(covered, expected, "{lo}-{hi}");
        }
    }

    #[test]
    fn keys_validate() {
        let dir = TrafficDirection::Ingress;
        for key in port_range_keys(7, dir, 42, IPPROTO_TCP, 1000, 2000).unwrap() {
            key.validate().unwrap();
        }
        PolicyKey::any_proto(7, dir, 0).validate().unwrap();
        PolicyKey::any_port(7, dir, 0, IPPROTO_UDP)
            .validate()
            .unwrap();
        PolicyKey::icmp(7, dir, 2, 8).validate().unwrap();
        let mut bad = PolicyKey::new(7, dir, 1, IPPROTO_TCP, 1001, 12);
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("bits beyond"));
        bad = PolicyKey {
            prefixlen: 70,
            ..PolicyKey::exact(7, dir, 1, IPPROTO_TCP, 1)
        };
        assert!(bad.validate().is_err());
        bad = PolicyKey {
            prefixlen: PREFIX_ANY_PROTO,
            ..PolicyKey::exact(7, dir, 1, IPPROTO_TCP, 1)
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("any protocol"));
        bad = PolicyKey::exact(0, dir, 1, IPPROTO_TCP, 1);
        assert!(bad.validate().is_err());
        assert!(PolicyEntry::redirect(0, 1).validate().is_err());
    }
}

// ---- Batch operations (crates/datapath/src/batch.rs) ----------------------------

impl<T: std::borrow::Borrow<aya::maps::MapData>> PolicyMap<T> {
    /// The same map with batch operations: many entries per syscall
    /// (`BatchMap::update`, `delete`, `lookup`, `dump`, `for_each_chunk`).
    pub fn batch(
        &self,
    ) -> crate::error::Result<crate::batch::BatchMap<PolicyKey, PolicyEntry, &aya::maps::MapData>>
    {
        use aya::maps::IterableMap as _;
        crate::batch::BatchMap::new(self.map.map(), MAP_NAME)
    }
}
