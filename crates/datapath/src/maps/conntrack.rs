//! `mbr_ct_tcp` and `mbr_ct_any`: connection tracking (`ebpf/lib/conntrack.h`;
//! lookups in `ebpf/README.md`).

use aya::maps::MapType;

use crate::{c_struct, layout::MapBinding};

/// TCP connections.
pub const TCP_MAP: &str = "mbr_ct_tcp";
/// UDP, ICMP and other protocols.
pub const ANY_MAP: &str = "mbr_ct_any";
/// Both are `BPF_MAP_TYPE_LRU_HASH`.
pub const MAP_TYPE: MapType = MapType::LruHash;

/// `ct_entry.flags`: a packet in the reply direction was seen.
pub const CT_F_SEEN_REPLY: u8 = 0x1;
/// `ct_entry.flags`: FIN or RST from the initiator.
pub const CT_F_FWD_CLOSING: u8 = 0x2;
/// `ct_entry.flags`: FIN or RST from the responder.
pub const CT_F_REV_CLOSING: u8 = 0x4;
/// `ct_entry.flags`: the connection goes through the proxy.
pub const CT_F_PROXY_REDIRECT: u8 = 0x8;

c_struct! {
    /// Key (C `struct ct_key`): the tuple of the connection's first packet.
    pub struct CtKey = "ct_key" {
        /// Initiator, network order.
        pub saddr: u32,
        /// Responder, network order.
        pub daddr: u32,
        /// Network order; ICMP echo: the echo id.
        pub sport: u16,
        /// Network order; ICMP echo: 0.
        pub dport: u16,
        /// IP protocol number.
        pub proto: u8,
        /// 2 (egress): created at an endpoint's egress; 1 (ingress): at its ingress.
        pub direction: u8,
        /// Always zero.
        pub pad: u16,
    }
}

c_struct! {
    /// Value (C `struct ct_entry`).
    pub struct CtEntry = "ct_entry" {
        /// Initiator -> responder packets.
        pub fwd_packets: u64,
        /// Initiator -> responder bytes.
        pub fwd_bytes: u64,
        /// Responder -> initiator packets.
        pub rev_packets: u64,
        /// Responder -> initiator bytes.
        pub rev_bytes: u64,
        /// CLOCK_MONOTONIC seconds after which the entry is dead.
        pub expires: u32,
        /// CLOCK_MONOTONIC seconds at creation.
        pub created: u32,
        /// CLOCK_MONOTONIC seconds of the last flow event for this entry.
        pub last_report: u32,
        /// Identity of the initiator.
        pub src_identity: u32,
        /// Identity of the responder.
        pub dst_identity: u32,
        /// The local endpoint that created the entry.
        pub ep_id: u16,
        /// Service reverse-NAT index; 0 = none.
        pub rev_nat_index: u16,
        /// OR of TCP flags seen from the initiator.
        pub fwd_tcp_flags: u8,
        /// OR of TCP flags seen from the responder.
        pub rev_tcp_flags: u8,
        /// `CT_F_*`.
        pub flags: u8,
        /// Always zero.
        pub pad: u8,
        /// Proxy port, network order, when redirected.
        pub proxy_port: u16,
        /// Always zero.
        pub pad2: u16,
    }
}

/// Bindings of both CT maps, for the layout check.
pub fn bindings() -> [MapBinding; 2] {
    [
        MapBinding::new::<CtKey, CtEntry>(TCP_MAP, MAP_TYPE),
        MapBinding::new::<CtKey, CtEntry>(ANY_MAP, MAP_TYPE),
    ]
}

// ---- Typed access: entry helpers, batch dump / insert / delete ---------------

use std::{borrow::Borrow, fmt, net::Ipv4Addr, ops::ControlFlow, path::Path};

use aya::maps::MapData;

use crate::{
    batch::{BatchError, BatchMap, DeleteReport},
    bpffs::PinDir,
    error::Result,
};

/// `ct_key.direction` / traffic direction: created at an endpoint's ingress.
pub const DIR_INGRESS: u8 = 1;
/// `ct_key.direction` / traffic direction: created at an endpoint's egress.
pub const DIR_EGRESS: u8 = 2;

/// TCP flag bits as in the TCP header (and `fwd_tcp_flags`/`rev_tcp_flags`).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// Which of the two CT maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CtTable {
    /// `mbr_ct_tcp`.
    Tcp,
    /// `mbr_ct_any`: UDP, ICMP and the rest.
    Any,
}

impl CtTable {
    /// Both tables.
    pub const ALL: [Self; 2] = [Self::Tcp, Self::Any];

    /// The map's name.
    pub const fn map_name(self) -> &'static str {
        match self {
            Self::Tcp => TCP_MAP,
            Self::Any => ANY_MAP,
        }
    }

    /// The table a connection of IP protocol `proto` lives in.
    pub const fn for_proto(proto: u8) -> Self {
        if proto == 6 {
            Self::Tcp
        } else {
            Self::Any
        }
    }

    /// `"tcp"` or `"any"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Any => "any",
        }
    }
}

/// Name of an IP protocol number as `bpf ct list` prints it.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        58 => "ICMPv6",
        132 => "SCTP",
        _ => "OTHER",
    }
}

impl CtKey {
    /// A key from host-order ports and addresses.
    pub fn new(
        saddr: Ipv4Addr,
        daddr: Ipv4Addr,
        sport: u16,
        dport: u16,
        proto: u8,
        direction: u8,
    ) -> Self {
        Self {
            saddr: u32::from_ne_bytes(saddr.octets()),
            daddr: u32::from_ne_bytes(daddr.octets()),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            direction,
            pad: 0,
        }
    }

    /// The initiator's address.
    pub fn source(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.saddr.to_ne_bytes())
    }

    /// The responder's address.
    pub fn destination(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.daddr.to_ne_bytes())
    }

    /// Source port, host order.
    pub fn source_port(&self) -> u16 {
        u16::from_be(self.sport)
    }

    /// Destination port, host order.
    pub fn destination_port(&self) -> u16 {
        u16::from_be(self.dport)
    }

    /// `"OUT"` for a connection created at an endpoint's egress, `"IN"` at
    /// its ingress (the words of `bpf ct list`), `"?"` otherwise.
    pub fn direction_word(&self) -> &'static str {
        match self.direction {
            DIR_EGRESS => "OUT",
            DIR_INGRESS => "IN",
            _ => "?",
        }
    }

    /// The table this key belongs in.
    pub fn table(&self) -> CtTable {
        CtTable::for_proto(self.proto)
    }
}

/// The state of a TCP connection as far as conntrack knows it, with the
/// names of Linux conntrack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// Nothing meaningful seen (e.g. a mid-stream packet).
    None,
    /// Only the initiator's SYN.
    SynSent,
    /// The responder answered with SYN, not yet acknowledged.
    SynRecv,
    /// Both directions seen, no close.
    Established,
    /// The initiator closed (FIN).
    FinWait,
    /// The responder closed (FIN).
    CloseWait,
    /// Both closed.
    TimeWait,
    /// Reset.
    Close,
}

impl TcpState {
    /// Upper-case name: `"ESTABLISHED"`, `"SYN_SENT"`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::Established => "ESTABLISHED",
            Self::FinWait => "FIN_WAIT",
            Self::CloseWait => "CLOSE_WAIT",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CtEntry {
    /// Whether the entry is dead at `now` (CLOCK_MONOTONIC seconds, the
    /// clock of `bpf_ktime_get_ns`): the datapath treats it as absent.
    pub const fn is_expired(&self, now: u32) -> bool {
        self.expires < now
    }

    /// Seconds left before expiry at `now` (0 once expired).
    pub const fn remaining(&self, now: u32) -> u32 {
        self.expires.saturating_sub(now)
    }

    /// Whether a packet of the reply direction was seen.
    pub const fn seen_reply(&self) -> bool {
        self.flags & CT_F_SEEN_REPLY != 0
    }

    /// The TCP state derived from the flags seen each way (meaningful for
    /// entries of `mbr_ct_tcp`).
    pub fn tcp_state(&self) -> TcpState {
        use tcp_flags::{ACK, RST, SYN};
        let fwd_closing = self.flags & CT_F_FWD_CLOSING != 0;
        let rev_closing = self.flags & CT_F_REV_CLOSING != 0;
        if (self.fwd_tcp_flags | self.rev_tcp_flags) & RST != 0 {
            TcpState::Close
        } else if fwd_closing && rev_closing {
            TcpState::TimeWait
        } else if fwd_closing {
            TcpState::FinWait
        } else if rev_closing {
            TcpState::CloseWait
        } else if !self.seen_reply() && self.rev_packets == 0 {
            if self.fwd_tcp_flags & SYN != 0 {
                TcpState::SynSent
            } else {
                TcpState::None
            }
        } else if self.rev_tcp_flags & SYN != 0 && self.fwd_tcp_flags & ACK == 0 {
            TcpState::SynRecv
        } else {
            TcpState::Established
        }
    }

    /// [`tcp_state`](Self::tcp_state) as its name.
    pub fn tcp_state_name(&self) -> &'static str {
        self.tcp_state().as_str()
    }

    /// Names of the set `CT_F_*` flags.
    pub fn flag_names(&self) -> Vec<&'static str> {
        [
            (CT_F_SEEN_REPLY, "SeenReply"),
            (CT_F_FWD_CLOSING, "FwdClosing"),
            (CT_F_REV_CLOSING, "RevClosing"),
            (CT_F_PROXY_REDIRECT, "ProxyRedirect"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.flags & bit != 0)
        .map(|(_, name)| name)
        .collect()
    }
}

/// One line per entry in the manner of `bpf ct list`:
/// `TCP OUT 10.0.0.1:41234 -> 10.0.0.2:80 expires=… state=ESTABLISHED …`.
pub fn describe(key: &CtKey, entry: &CtEntry, now: u32) -> String {
    let mut line = format!(
        "{} {} {}:{} -> {}:{} expires={} remaining={}s",
        proto_name(key.proto),
        key.direction_word(),
        key.source(),
        key.source_port(),
        key.destination(),
        key.destination_port(),
        entry.expires,
        entry.remaining(now),
    );
    if key.proto == 6 {
        line.push_str(&format!(" state={}", entry.tcp_state_name()));
    }
    line.push_str(&format!(
        " FwdPackets={} FwdBytes={} RevPackets={} RevBytes={} FwdFlagsSeen=0x{:02x} RevFlagsSeen=0x{:02x} Flags=0x{:02x} [ {} ] SrcIdentity={} DstIdentity={} EpID={} RevNAT={} Created={} LastReport={}",
        entry.fwd_packets,
        entry.fwd_bytes,
        entry.rev_packets,
        entry.rev_bytes,
        entry.fwd_tcp_flags,
        entry.rev_tcp_flags,
        entry.flags,
        entry.flag_names().join(" "),
        entry.src_identity,
        entry.dst_identity,
        entry.ep_id,
        entry.rev_nat_index,
        entry.created,
        entry.last_report,
    ));
    if entry.proxy_port != 0 {
        line.push_str(&format!(" ProxyPort={}", u16::from_be(entry.proxy_port)));
    }
    line
}

/// Typed handle on one CT map, with batch operations.
pub struct CtMap<T = MapData> {
    table: CtTable,
    map: BatchMap<CtKey, CtEntry, T>,
}

impl CtMap<MapData> {
    /// Opens `table` from the pin directory (`<pin dir>/maps/<name>`).
    pub fn open(pins: &PinDir, table: CtTable) -> Result<Self> {
        Self::from_pin(&pins.map(table.map_name()), table)
    }

    /// Opens `table` pinned at `path`, checked against this build's binding.
    pub fn from_pin(path: &Path, table: CtTable) -> Result<Self> {
        let binding = MapBinding::new::<CtKey, CtEntry>(table.map_name(), MAP_TYPE);
        Ok(Self {
            table,
            map: BatchMap::open_pinned(path, &binding)?,
        })
    }
}

impl<T: Borrow<MapData>> CtMap<T> {
    /// Wraps a map (e.g. `batch::map_data_of(ebpf.map("mbr_ct_tcp"))`).
    pub fn new(data: T, table: CtTable) -> Result<Self> {
        Ok(Self {
            table,
            map: BatchMap::new(data, table.map_name())?,
        })
    }

    /// Which table.
    pub fn table(&self) -> CtTable {
        self.table
    }

    /// The batch handle underneath.
    pub fn batch(&self) -> &BatchMap<CtKey, CtEntry, T> {
        &self.map
    }

    /// Every entry.
    pub fn dump(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        self.map.dump()
    }

    /// Walks the table chunk by chunk (one batch syscall each).
    pub fn for_each_chunk<F>(&self, f: F) -> Result<usize>
    where
        F: FnMut(&[CtKey], &[CtEntry]) -> ControlFlow<()>,
    {
        self.map.for_each_chunk(f)
    }

    /// Inserts or replaces entries.
    pub fn insert(
        &self,
        keys: &[CtKey],
        entries: &[CtEntry],
    ) -> std::result::Result<usize, BatchError> {
        self.map.update(keys, entries)
    }

    /// Deletes entries; absent keys count as missing.
    pub fn delete(&self, keys: &[CtKey]) -> std::result::Result<DeleteReport, BatchError> {
        self.map.delete(keys)
    }

    /// Looks up each key.
    pub fn lookup(&self, keys: &[CtKey]) -> Result<Vec<Option<CtEntry>>> {
        self.map.lookup(keys)
    }

    /// Removes every entry (a CT flush); returns how many.
    pub fn flush(&self) -> Result<usize> {
        self.map.clear()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_accessors_and_direction_words() {
        let k = CtKey::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            41234,
            80,
            6,
            DIR_EGRESS,
        );
        assert_eq!(k.source(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(k.destination_port(), 80);
        assert_eq!(k.source_port(), 41234);
        assert_eq!(k.sport, 41234u16.to_be());
        assert_eq!(k.direction_word(), "OUT");
        assert_eq!(
            CtKey {
                direction: DIR_INGRESS,
                ..k
            }
            .direction_word(),
            "IN"
        );
        assert_eq!(CtKey { direction: 0, ..k }.direction_word(), "?");
        assert_eq!(k.table(), CtTable::Tcp);
        assert_eq!(CtKey { proto: 17, ..k }.table(), CtTable::Any);
    }

    #[test]
    fn expiry_is_strictly_after() {
        let e = CtEntry {
            expires: 100,
            ..CtEntry::default()
        };
        assert!(!e.is_expired(99));
        assert!(!e.is_expired(100));
        assert!(e.is_expired(101));
        assert_eq!(e.remaining(90), 10);
        assert_eq!(e.remaining(200), 0);
    }

    #[test]
    fn tcp_states() {
        use tcp_flags::*;
        let syn = CtEntry {
            fwd_tcp_flags: SYN,
            ..CtEntry::default()
        };
        assert_eq!(syn.tcp_state_name(), "SYN_SENT");
        let synack = CtEntry {
            fwd_tcp_flags: SYN,
            rev_tcp_flags: SYN | ACK,
            rev_packets: 1,
            flags: CT_F_SEEN_REPLY,
            ..CtEntry::default()
        };
        assert_eq!(synack.tcp_state(), TcpState::SynRecv);
        let est = CtEntry {
            fwd_tcp_flags: SYN | ACK,
            ..synack
        };
        assert_eq!(est.tcp_state(), TcpState::Established);
        let fin = CtEntry {
            flags: CT_F_SEEN_REPLY | CT_F_FWD_CLOSING,
            ..est
        };
        assert_eq!(fin.tcp_state(), TcpState::FinWait);
        let closing = CtEntry {
            flags: CT_F_SEEN_REPLY | CT_F_REV_CLOSING,
            ..est
        };
        assert_eq!(closing.tcp_state(), TcpState::CloseWait);
        let both = CtEntry {
            flags: CT_F_SEEN_REPLY | CT_F_FWD_CLOSING | CT_F_REV_CLOSING,
            ..est
        };
        assert_eq!(both.tcp_state(), TcpState::TimeWait);
        let rst = CtEntry {
            rev_tcp_flags: RST | ACK,
            ..est
        };
        assert_eq!(rst.tcp_state(), TcpState::Close);
        assert_eq!(CtEntry::default().tcp_state(), TcpState::None);
    }

    #[test]
    fn describe_reads_like_ct_list() {
        let k = CtKey::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            41234,
            80,
            6,
            DIR_EGRESS,
        );
        let e = CtEntry {
            expires: 500,
            fwd_tcp_flags: 0x12,
            rev_tcp_flags: 0x12,
            flags: CT_F_SEEN_REPLY,
            rev_packets: 1,
            ..CtEntry::default()
        };
        let line = describe(&k, &e, 400);
        assert!(line.starts_with("TCP OUT 10.0.0.1:41234 -> 10.0.0.2:80 expires=500 remaining=100s state=ESTABLISHED"), "{line}");
        assert!(line.contains("[ SeenReply ]"), "{line}");
    }
}
