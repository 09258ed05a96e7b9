//! `mbr_policy_exact` and `mbr_policy`: per endpoint and direction, peer
//! identity (or any), protocol (or any), destination port prefix (or any) ->
//! allow / deny / redirect (`ebpf/lib/policy.h`; lookup order in
//! `ebpf/README.md`). [`PolicyMap`] is the pair.

use std::borrow::Borrow;

use aya::maps::{Map, MapData, MapType};

use super::abi::TrafficDirection;
use crate::{
    batch::{map_data_of, pod_bytes, BatchMap, DeleteReport},
    bpffs::PinDir,
    c_struct,
    error::{DatapathError, Result},
    layout::MapBinding,
};

/// The trie's name: every entry whose key is shorter than [`PREFIX_FULL`].
pub const MAP_NAME: &str = "mbr_policy";
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const MAP_TYPE: MapType = MapType::LpmTrie;
/// The hash's name: the entries whose key is full length ([`PREFIX_FULL`]).
pub const EXACT_MAP_NAME: &str = "mbr_policy_exact";
/// `BPF_MAP_TYPE_HASH`.
pub const EXACT_MAP_TYPE: MapType = MapType::Hash;

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

/// The binding of the trie `mbr_policy`, for the layout check.
pub fn binding() -> MapBinding {
    MapBinding::new::<PolicyKey, PolicyEntry>(MAP_NAME, MAP_TYPE)
}

/// The binding of the hash `mbr_policy_exact`, for the layout check.
pub fn exact_binding() -> MapBinding {
    MapBinding::new::<PolicyKey, PolicyEntry>(EXACT_MAP_NAME, EXACT_MAP_TYPE)
}

/// Both maps' bindings.
pub fn bindings() -> [MapBinding; 2] {
    [exact_binding(), binding()]
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

/// Whether `key` belongs in `mbr_policy_exact` (a full-length key) rather
/// than in the trie `mbr_policy`.
pub const fn is_exact(key: &PolicyKey) -> bool {
    key.prefixlen == PREFIX_FULL
}

/// The policy as the datapath sees it: `mbr_policy_exact` (hash, full-length
/// keys) in front of `mbr_policy` (LPM trie, every shorter prefix).
///
/// Writes go by prefix length: a full-length key to the hash, any other to
/// the trie. Removing a full-length key removes it from both maps, because
/// the trie may still hold one written by an older build (the datapath reads
/// it only when the hash has no entry for the key, so it stays correct until
/// then). Reads merge both maps, the hash's entry winning on a duplicate key.
/// Every operation takes `&self`: the kernel objects are shared anyway, and
/// both maps can be borrowed together from one owner.
pub struct PolicyMap<T = MapData> {
    exact: BatchMap<PolicyKey, PolicyEntry, T>,
    trie: BatchMap<PolicyKey, PolicyEntry, T>,
}

impl PolicyMap<MapData> {
    /// Opens both maps pinned in `pins`, checking they are this build's.
    pub fn from_pins(pins: &PinDir) -> Result<Self> {
        Ok(Self {
            exact: BatchMap::open_pinned(&pins.map(EXACT_MAP_NAME), &exact_binding())?,
            trie: BatchMap::open_pinned(&pins.map(MAP_NAME), &binding())?,
        })
    }
}

impl<'a> PolicyMap<&'a MapData> {
    /// Both maps of a loaded object (or any owner of aya `Map`s).
    pub fn from_maps(exact: &'a Map, trie: &'a Map) -> Result<Self> {
        Self::new(map_data_of(exact), map_data_of(trie))
    }
}

fn check_type<T: Borrow<MapData>>(
    map: &BatchMap<PolicyKey, PolicyEntry, T>,
    binding: &MapBinding,
) -> Result<()> {
    match super::binding_mismatch(map.raw().map_data(), binding)? {
        None => Ok(()),
        Some(detail) => Err(DatapathError::invalid(
            "map types",
            format!("map {}: {detail}", binding.name),
        )),
    }
}

impl<T: Borrow<MapData>> PolicyMap<T> {
    /// The pair from the two maps' data, checking types and sizes.
    pub fn new(exact: T, trie: T) -> Result<Self> {
        let exact = BatchMap::new(exact, EXACT_MAP_NAME)?;
        let trie = BatchMap::new(trie, MAP_NAME)?;
        check_type(&exact, &exact_binding())?;
        check_type(&trie, &binding())?;
        Ok(Self { exact, trie })
    }

    /// `mbr_policy_exact` alone (full-length keys).
    pub fn exact(&self) -> &BatchMap<PolicyKey, PolicyEntry, T> {
        &self.exact
    }

    /// `mbr_policy` alone (the LPM trie).
    pub fn trie(&self) -> &BatchMap<PolicyKey, PolicyEntry, T> {
        &self.trie
    }

    /// What one datapath lookup with `key` finds: for a full-length key,
    /// its exact entry, else the trie's longest stored prefix of it; for a
    /// shorter key, the trie's longest prefix within that length.
    pub fn lookup(&self, key: &PolicyKey) -> Result<Option<PolicyEntry>> {
        if is_exact(key) {
            if let Some(entry) = self.exact.get(key)? {
                return Ok(Some(entry));
            }
        }
        self.trie.get(key)
    }

    /// Every entry of both maps (the hash's on a duplicate key), sorted by key.
    pub fn entries(&self) -> Result<Vec<(PolicyKey, PolicyEntry)>> {
        let exact = self.exact.dump()?;
        let shadowed: std::collections::HashSet<PolicyKey> =
            exact.iter().map(|(k, _)| *k).collect();
        let mut out: Vec<(PolicyKey, PolicyEntry)> = self
            .trie
            .dump()?
            .into_iter()
            .filter(|(k, _)| !shadowed.contains(k))
            .collect();
        out.extend(exact);
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

    /// Writes (or replaces) one entry, in the map its prefix length selects.
    pub fn insert(&self, key: &PolicyKey, entry: &PolicyEntry) -> Result<()> {
        self.update(std::slice::from_ref(key), std::slice::from_ref(entry))
            .map(|_| ())
    }

    /// Writes `keys[i] -> values[i]`, each in the map its prefix length
    /// selects, a batch per map. Every key and value is validated before
    /// anything is written. Returns how many entries were written.
    pub fn update(&self, keys: &[PolicyKey], values: &[PolicyEntry]) -> Result<usize> {
        if keys.len() != values.len() {
            return Err(DatapathError::invalid(
                "policy update",
                format!("{} keys but {} values", keys.len(), values.len()),
            ));
        }
        for (key, value) in keys.iter().zip(values) {
            key.validate()?;
            value.validate()?;
        }
        let (mut exact_k, mut exact_v, mut trie_k, mut trie_v) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, value) in keys.iter().zip(values) {
            if is_exact(key) {
                exact_k.push(*key);
                exact_v.push(*value);
            } else {
                trie_k.push(*key);
                trie_v.push(*value);
            }
        }
        let mut written = 0;
        if !exact_k.is_empty() {
            written += self.exact.update(&exact_k, &exact_v)?;
        }
        if !trie_k.is_empty() {
            written += self.trie.update(&trie_k, &trie_v)?;
        }
        Ok(written)
    }

    /// Removes exactly `key` (a full-length key from both maps); false if it
    /// was in neither.
    pub fn remove(&self, key: &PolicyKey) -> Result<bool> {
        Ok(self.delete(std::slice::from_ref(key))?.deleted > 0)
    }

    /// Removes `keys`: full-length keys from both maps, others from the
    /// trie. A key counts as deleted if either map held it, as missing if
    /// neither did.
    pub fn delete(&self, keys: &[PolicyKey]) -> Result<DeleteReport> {
        let exact: Vec<PolicyKey> = keys.iter().copied().filter(is_exact).collect();
        let mut report = DeleteReport::default();
        if !exact.is_empty() {
            // A full-length key counts once, deleted if either map held it.
            let mut not_in_hash = vec![false; exact.len()];
            self.exact
                .raw()
                .delete_raw_tracking(pod_bytes(&exact), &mut |i| not_in_hash[i] = true)?;
            let mut in_neither = 0;
            self.trie
                .raw()
                .delete_raw_tracking(pod_bytes(&exact), &mut |i| {
                    if not_in_hash[i] {
                        in_neither += 1;
                    }
                })?;
            report.deleted += exact.len() - in_neither;
            report.missing += in_neither;
        }
        let shorter: Vec<PolicyKey> = keys.iter().copied().filter(|k| !is_exact(k)).collect();
        if !shorter.is_empty() {
            let r = self.trie.delete(&shorter)?;
            report.deleted += r.deleted;
            report.missing += r.missing;
        }
        Ok(report)
    }

    /// Writes `entry` for the ports `lo..=hi` of `proto` as their minimal set
    /// of prefixes; returns how many keys were written.
    pub fn insert_port_range(
        &self,
        ep_id: u16,
        direction: TrafficDirection,
        identity: u32,
        proto: u8,
        (lo, hi): (u16, u16),
        entry: &PolicyEntry,
    ) -> Result<usize> {
        let keys = port_range_keys(ep_id, direction, identity, proto, lo, hi)?;
        self.update(&keys, &vec![*entry; keys.len()])
    }

    /// Removes every entry of endpoint `ep_id` from both maps; returns how many keys.
    pub fn remove_endpoint(&self, ep_id: u16) -> Result<usize> {
        let keys: Vec<PolicyKey> = self
            .entries()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ep_id == ep_id)
            .collect();
        Ok(self.delete(&keys)?.deleted)
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
