//! Flow events: the ring-buffer reader and the decoder of `struct flow_event`
//! records into typed [`Flow`]s with Hubble's vocabulary.
//!
//! - [`decode`] turns one record into a [`Flow`]: addresses as `Ipv4Addr`,
//!   ports in host order, verdict / drop reason / event type / traffic
//!   direction / trace reason as enums whose names are Hubble's
//!   (`FORWARDED`, `POLICY_DENIED`, `EGRESS`, ...), TCP flags decoded, and the
//!   CLOCK_MONOTONIC timestamp converted to wall-clock time.
//! - A record that is too short, or whose event type or verdict is not one
//!   the contract defines, is **malformed**: counted ([`FlowStats`]) and
//!   skipped, never a panic. Longer records are accepted (the first 64 bytes
//!   are decoded), so a newer datapath that appends fields stays readable.
//! - [`FlowReader`] reads the pinned `mbr_events` ring buffer in batches:
//!   [`read_batch`](FlowReader::read_batch) drains up to `max` records and,
//!   when there are none, waits on epoll up to a timeout.
//! - [`CompactFlow`] is a fixed 64-byte, host-order, decoded form for
//!   crossing into JavaScript in one buffer (the TypeScript side expands it).

use std::{
    fmt, io,
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};

use crate::{
    bpffs::PinDir,
    error::{DatapathError, Result},
    maps::{
        self,
        events::{FlowEvent, EV_F_IS_REPLY, MAP_NAME},
    },
};

/// Size of one `struct flow_event` record.
pub const RECORD_SIZE: usize = std::mem::size_of::<FlowEvent>();

/// Hubble `Verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The packet was passed on.
    Forwarded,
    /// The packet was dropped.
    Dropped,
    /// Would have been dropped; passed because the endpoint is in audit mode.
    Audit,
    /// Sent to a proxy.
    Redirected,
}

impl Verdict {
    /// From the datapath's number (Hubble's numbering).
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Forwarded),
            2 => Some(Self::Dropped),
            4 => Some(Self::Audit),
            5 => Some(Self::Redirected),
            _ => None,
        }
    }

    /// Hubble's number.
    pub const fn raw(self) -> u8 {
        match self {
            Self::Forwarded => 1,
            Self::Dropped => 2,
            Self::Audit => 4,
            Self::Redirected => 5,
        }
    }

    /// Hubble's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "FORWARDED",
            Self::Dropped => "DROPPED",
            Self::Audit => "AUDIT",
            Self::Redirected => "REDIRECTED",
        }
    }
}

/// Hubble `DropReason` name of a datapath drop reason (the numbers are
/// shared), `DROP_REASON_UNKNOWN` for numbers outside the table.
pub const fn drop_reason_name(reason: u8) -> &'static str {
    match reason {
        130 => "INVALID_SOURCE_MAC",
        131 => "INVALID_DESTINATION_MAC",
        132 => "INVALID_SOURCE_IP",
        133 => "POLICY_DENIED",
        134 => "INVALID_PACKET_DROPPED",
        135 => "CT_TRUNCATED_OR_INVALID_HEADER",
        136 => "CT_MISSING_TCP_ACK_FLAG",
        137 => "CT_UNKNOWN_L4_PROTOCOL",
        138 => "CT_CANNOT_CREATE_ENTRY_FROM_PACKET",
        139 => "UNSUPPORTED_L3_PROTOCOL",
        140 => "MISSED_TAIL_CALL",
        141 => "ERROR_WRITING_TO_PACKET",
        142 => "UNKNOWN_L4_PROTOCOL",
        143 => "UNKNOWN_ICMPV4_CODE",
        144 => "UNKNOWN_ICMPV4_TYPE",
        145 => "UNKNOWN_ICMPV6_CODE",
        146 => "UNKNOWN_ICMPV6_TYPE",
        147 => "ERROR_RETRIEVING_TUNNEL_KEY",
        148 => "ERROR_RETRIEVING_TUNNEL_OPTIONS",
        149 => "INVALID_GENEVE_OPTION",
        150 => "UNKNOWN_L3_TARGET_ADDRESS",
        151 => "STALE_OR_UNROUTABLE_IP",
        152 => "NO_MATCHING_LOCAL_CONTAINER_FOUND",
        153 => "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
        154 => "ERROR_WHILE_CORRECTING_L4_CHECKSUM",
        155 => "CT_MAP_INSERTION_FAILED",
        156 => "INVALID_IPV6_EXTENSION_HEADER",
        157 => "IP_FRAGMENTATION_NOT_SUPPORTED",
        158 => "SERVICE_BACKEND_NOT_FOUND",
        181 => "POLICY_DENY",
        _ => "DROP_REASON_UNKNOWN",
    }
}

/// Monitor message type (Hubble `event_type.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A dropped packet.
    Drop,
    /// A forwarded packet.
    Trace,
    /// The policy decision of a new connection.
    PolicyVerdict,
}

impl EventType {
    /// From the datapath's number.
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Drop),
            4 => Some(Self::Trace),
            5 => Some(Self::PolicyVerdict),
            _ => None,
        }
    }

    /// The monitor's number.
    pub const fn raw(self) -> u8 {
        match self {
            Self::Drop => 1,
            Self::Trace => 4,
            Self::PolicyVerdict => 5,
        }
    }

    /// `hubble observe --type` name: `drop`, `trace`, `policy-verdict`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Trace => "trace",
            Self::PolicyVerdict => "policy-verdict",
        }
    }
}

/// Hubble `TrafficDirection`, relative to the local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficDirection {
    /// Not attributable (e.g. an interface with no endpoint).
    Unknown,
    /// Into the endpoint.
    Ingress,
    /// Out of the endpoint.
    Egress,
}

impl TrafficDirection {
    /// From the datapath's number; `None` beyond the enum.
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::Unknown),
            1 => Some(Self::Ingress),
            2 => Some(Self::Egress),
            _ => None,
        }
    }

    /// Hubble's number.
    pub const fn raw(self) -> u8 {
        self as u8
    }

    /// Hubble's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "TRAFFIC_DIRECTION_UNKNOWN",
            Self::Ingress => "INGRESS",
            Self::Egress => "EGRESS",
        }
    }
}

/// Hubble `TraceReason`: the conntrack result of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceReason {
    /// First packet of a connection.
    New,
    /// A packet of a known connection, initiator to responder.
    Established,
    /// A packet of a known connection, responder to initiator.
    Reply,
    /// An ICMP error about a known connection.
    Related,
}

impl TraceReason {
    /// From the datapath's `ct_status` (Hubble's number is that + 1).
    pub const fn from_ct_status(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::New),
            1 => Some(Self::Established),
            2 => Some(Self::Reply),
            3 => Some(Self::Related),
            _ => None,
        }
    }

    /// Hubble's number (1..=4).
    pub const fn raw(self) -> u8 {
        match self {
            Self::New => 1,
            Self::Established => 2,
            Self::Reply => 3,
            Self::Related => 4,
        }
    }

    /// Hubble's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Established => "ESTABLISHED",
            Self::Reply => "REPLY",
            Self::Related => "RELATED",
        }
    }
}

/// Hubble `TraceObservationPoint` of the datapath's hooks: where a
/// forwarded packet was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObservationPoint {
    /// Leaving an endpoint (the veth's tc ingress).
    FromEndpoint,
    /// Entering an endpoint (the veth's tc egress).
    ToEndpoint,
}

impl ObservationPoint {
    /// Hubble's number (`FROM_ENDPOINT = 5`, `TO_ENDPOINT = 101`).
    pub const fn raw(self) -> u8 {
        match self {
            Self::FromEndpoint => 5,
            Self::ToEndpoint => 101,
        }
    }

    /// Hubble's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FromEndpoint => "FROM_ENDPOINT",
            Self::ToEndpoint => "TO_ENDPOINT",
        }
    }
}

/// TCP flags of a packet (the header's flag byte).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// Flag names in Hubble's order with their bits.
    pub const NAMES: [(u8, &'static str); 8] = [
        (0x01, "FIN"),
        (0x02, "SYN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x10, "ACK"),
        (0x20, "URG"),
        (0x40, "ECE"),
        (0x80, "CWR"),
    ];

    /// Whether `bit` is set.
    pub const fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Names of the set flags, Hubble's order (`["SYN", "ACK"]`).
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, name)| *name)
            .collect()
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// The L4 part of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP, ports in host order.
    Tcp {
        /// Source port.
        source_port: u16,
        /// Destination port.
        destination_port: u16,
        /// Flags of the packet.
        flags: TcpFlags,
    },
    /// UDP, ports in host order.
    Udp {
        /// Source port.
        source_port: u16,
        /// Destination port.
        destination_port: u16,
    },
    /// ICMPv4.
    Icmpv4 {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
    },
    /// Another protocol (no L4 decoding).
    Other {
        /// IP protocol number.
        proto: u8,
    },
}

/// One decoded flow event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The datapath's CLOCK_MONOTONIC timestamp.
    pub monotonic_ns: u64,
    /// Message type.
    pub event_type: EventType,
    /// Verdict.
    pub verdict: Verdict,
    /// Drop reason number (Hubble numbering), 0 when not dropped.
    pub drop_reason: u8,
    /// Direction relative to the local endpoint.
    pub traffic_direction: TrafficDirection,
    /// Conntrack result; `None` for a number outside the contract.
    pub trace_reason: Option<TraceReason>,
    /// Whether the packet belongs to the reply direction of its connection.
    pub is_reply: bool,
    /// Where a forwarded packet was seen (`None` when the direction is unknown).
    pub observation_point: Option<ObservationPoint>,
    /// Source address.
    pub source: Ipv4Addr,
    /// Destination address.
    pub destination: Ipv4Addr,
    /// L4 details.
    pub l4: L4,
    /// IP protocol number.
    pub proto: u8,
    /// Identity of the source.
    pub source_identity: u32,
    /// Identity of the destination.
    pub destination_identity: u32,
    /// Local endpoint id of the source, 0 when not local.
    pub source_endpoint: u16,
    /// Local endpoint id of the destination, 0 when not local.
    pub destination_endpoint: u16,
    /// Interface whose hook saw the packet.
    pub ifindex: u32,
    /// Packet length.
    pub pkt_len: u32,
    /// Proxy port (host order) when redirected, else 0.
    pub proxy_port: u16,
    /// Cookie of the policy entry that decided; 0 if none.
    pub policy_cookie: u32,
}

impl Flow {
    /// The drop reason's Hubble name, `None` when not dropped.
    pub fn drop_reason_desc(&self) -> Option<&'static str> {
        (self.drop_reason != 0).then(|| drop_reason_name(self.drop_reason))
    }

    /// Source port, when the protocol has ports.
    pub fn source_port(&self) -> Option<u16> {
        match self.l4 {
            L4::Tcp { source_port, .. } | L4::Udp { source_port, .. } => Some(source_port),
            _ => None,
        }
    }

    /// Destination port, when the protocol has ports.
    pub fn destination_port(&self) -> Option<u16> {
        match self.l4 {
            L4::Tcp {
                destination_port, ..
            }
            | L4::Udp {
                destination_port, ..
            } => Some(destination_port),
            _ => None,
        }
    }

    /// Hubble's `Summary` line, e.g. `TCP Flags: SYN, ACK`.
    pub fn summary(&self) -> String {
        match self.l4 {
            L4::Tcp { flags, .. } => format!("TCP Flags: {flags}"),
            L4::Udp { .. } => "UDP".to_owned(),
            L4::Icmpv4 { icmp_type, code } => format!("ICMPv4 type {icmp_type} code {code}"),
            L4::Other { proto } => format!("IP protocol {proto}"),
        }
    }
}

/// Why a record was not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Fewer bytes than a `flow_event`.
    #[error("record of {0} bytes, shorter than a flow_event ({RECORD_SIZE})")]
    Short(usize),
    /// An event type the contract does not define.
    #[error("unknown event type {0}")]
    EventType(u8),
    /// A verdict the contract does not define.
    #[error("unknown verdict {0}")]
    Verdict(u8),
    /// A traffic direction beyond the enum.
    #[error("unknown traffic direction {0}")]
    Direction(u8),
}

/// Converts CLOCK_MONOTONIC nanoseconds to wall-clock (CLOCK_REALTIME)
/// nanoseconds. The offset between the clocks is measured once and
/// re-measured every [`refresh`](Self::REFRESH) (NTP slews the wall clock; a
/// step of it shows up at the next refresh).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
    measured: Instant,
}

impl WallClock {
    /// How often [`maybe_refresh`](Self::maybe_refresh) re-measures.
    pub const REFRESH: Duration = Duration::from_secs(1);

    /// Measures the offset now.
    pub fn new() -> Self {
        Self {
            offset_ns: measure_offset(),
            measured: Instant::now(),
        }
    }

    /// A fixed offset (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self {
            offset_ns,
            measured: Instant::now(),
        }
    }

    /// Re-measures if the last measurement is older than [`Self::REFRESH`].
    pub fn maybe_refresh(&mut self) {
        if self.measured.elapsed() >= Self::REFRESH {
            *self = Self::new();
        }
    }

    /// REALTIME minus MONOTONIC, nanoseconds.
    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// Wall-clock nanoseconds since the epoch of a monotonic timestamp.
    pub fn to_wall_ns(&self, monotonic_ns: u64) -> u64 {
        let wall = i128::from(monotonic_ns) + self.offset_ns;
        wall.clamp(0, i128::from(u64::MAX)) as u64
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// REALTIME - MONOTONIC, from the tightest of a few bracketed samples.
fn measure_offset() -> i128 {
    let mut best: Option<(i128, i128)> = None;
    for _ in 0..3 {
        let m1 = clock_ns(libc::CLOCK_MONOTONIC);
        let r = clock_ns(libc::CLOCK_REALTIME);
        let m2 = clock_ns(libc::CLOCK_MONOTONIC);
        let width = m2 - m1;
        let offset = r - (m1 + width / 2);
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset));
        }
    }
    best.map_or(0, |(_, offset)| offset)
}

/// Reads the `FlowEvent` at the start of `bytes` (any alignment).
pub fn parse_record(bytes: &[u8]) -> std::result::Result<FlowEvent, Malformed> {
    if bytes.len() < RECORD_SIZE {
        return Err(Malformed::Short(bytes.len()));
    }
    // SAFETY: at least RECORD_SIZE bytes; FlowEvent is Pod (any bit pattern).
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], clock: &WallClock) -> std::result::Result<Flow, Malformed> {
    decode_event(&parse_record(bytes)?, clock)
}

/// Decodes one `FlowEvent`.
pub fn decode_event(ev: &FlowEvent, clock: &WallClock) -> std::result::Result<Flow, Malformed> {
    let event_type =
        EventType::from_raw(ev.event_type).ok_or(Malformed::EventType(ev.event_type))?;
    let verdict = Verdict::from_raw(ev.verdict).ok_or(Malformed::Verdict(ev.verdict))?;
    let traffic_direction =
        TrafficDirection::from_raw(ev.direction).ok_or(Malformed::Direction(ev.direction))?;
    let trace_reason = TraceReason::from_ct_status(ev.ct_status);
    let l4 = match ev.proto {
        6 => L4::Tcp {
            source_port: u16::from_be(ev.sport),
            destination_port: u16::from_be(ev.dport),
            flags: TcpFlags(ev.tcp_flags),
        },
        17 => L4::Udp {
            source_port: u16::from_be(ev.sport),
            destination_port: u16::from_be(ev.dport),
        },
        1 => L4::Icmpv4 {
            icmp_type: ev.icmp_type,
            code: ev.icmp_code,
        },
        proto => L4::Other { proto },
    };
    let observation_point = match traffic_direction {
        TrafficDirection::Egress => Some(ObservationPoint::FromEndpoint),
        TrafficDirection::Ingress => Some(ObservationPoint::ToEndpoint),
        TrafficDirection::Unknown => None,
    };
    Ok(Flow {
        time_ns: clock.to_wall_ns(ev.timestamp_ns),
        monotonic_ns: ev.timestamp_ns,
        event_type,
        verdict,
        drop_reason: ev.drop_reason,
        traffic_direction,
        trace_reason,
        is_reply: ev.flags & EV_F_IS_REPLY != 0 || trace_reason == Some(TraceReason::Reply),
        observation_point,
        source: Ipv4Addr::from(ev.saddr.to_ne_bytes()),
        destination: Ipv4Addr::from(ev.daddr.to_ne_bytes()),
        l4,
        proto: ev.proto,
        source_identity: ev.src_identity,
        destination_identity: ev.dst_identity,
        source_endpoint: ev.src_ep,
        destination_endpoint: ev.dst_ep,
        ifindex: ev.ifindex,
        pkt_len: ev.pkt_len,
        proxy_port: u16::from_be(ev.proxy_port),
        policy_cookie: ev.policy_cookie,
    })
}

/// The decoded form that crosses into JavaScript: 64 bytes, little-endian
/// host order, fixed offsets. The TypeScript expander
/// (`ts/datapath/flows.ts`) reads exactly this layout.
///
/// | offset | type | field |
/// |---|---|---|
/// | 0 | u32 | wall-clock time: whole seconds since the epoch |
/// | 4 | u32 | wall-clock time: nanoseconds within the second |
/// | 8 | u32 | source IPv4 as a number (`a.b.c.d` = a<<24 \| ...) |
/// | 12 | u32 | destination IPv4 |
/// | 16 | u16 | source port (host order; 0 without ports) |
/// | 18 | u16 | destination port |
/// | 20 | u32 | source identity |
/// | 24 | u32 | destination identity |
/// | 28 | u32 | ifindex |
/// | 32 | u16 | source endpoint |
/// | 34 | u16 | destination endpoint |
/// | 36 | u32 | packet length |
/// | 40 | u8 | event type (1 drop, 4 trace, 5 policy verdict) |
/// | 41 | u8 | verdict (Hubble number) |
/// | 42 | u8 | drop reason (Hubble number, 0 none) |
/// | 43 | u8 | IP protocol |
/// | 44 | u8 | TCP flags |
/// | 45 | u8 | traffic direction (Hubble number) |
/// | 46 | u8 | trace reason (Hubble number, 0 unknown) |
/// | 47 | u8 | bit 0: is_reply |
/// | 48 | u16 | proxy port (host order) |
/// | 50 | u8 | ICMP type |
/// | 51 | u8 | ICMP code |
/// | 52 | u32 | policy cookie |
/// | 56 | u8 | observation point (Hubble number, 0 unknown) |
/// | 57 | 7 bytes | zero |
pub struct CompactFlow;

impl CompactFlow {
    /// Bytes per record.
    pub const SIZE: usize = 64;

    /// Appends `flow` to `out`.
    pub fn encode(flow: &Flow, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + Self::SIZE, 0);
        let b = &mut out[start..];
        let secs = (flow.time_ns / 1_000_000_000) as u32;
        let nanos = (flow.time_ns % 1_000_000_000) as u32;
        b[0..4].copy_from_slice(&secs.to_le_bytes());
        b[4..8].copy_from_slice(&nanos.to_le_bytes());
        b[8..12].copy_from_slice(&u32::from(flow.source).to_le_bytes());
        b[12..16].copy_from_slice(&u32::from(flow.destination).to_le_bytes());
        let (sport, dport, tcp_flags, icmp_type, icmp_code) = match flow.l4 {
            L4::Tcp {
                source_port,
                destination_port,
                flags,
            } => (source_port, destination_port, flags.0, 0, 0),
            L4::Udp {
                source_port,
                destination_port,
            } => (source_port, destination_port, 0, 0, 0),
            L4::Icmpv4 { icmp_type, code } => (0, 0, 0, icmp_type, code),
            L4::Other { .. } => (0, 0, 0, 0, 0),
        };
        b[16..18].copy_from_slice(&sport.to_le_bytes());
        b[18..20].copy_from_slice(&dport.to_le_bytes());
        b[20..24].copy_from_slice(&flow.source_identity.to_le_bytes());
        b[24..28].copy_from_slice(&flow.destination_identity.to_le_bytes());
        b[28..32].copy_from_slice(&flow.ifindex.to_le_bytes());
        b[32..34].copy_from_slice(&flow.source_endpoint.to_le_bytes());
        b[34..36].copy_from_slice(&flow.destination_endpoint.to_le_bytes());
        b[36..40].copy_from_slice(&flow.pkt_len.to_le_bytes());
        b[40] = flow.event_type.raw();
        b[41] = flow.verdict.raw();
        b[42] = flow.drop_reason;
        b[43] = flow.proto;
        b[44] = tcp_flags;
        b[45] = flow.traffic_direction.raw();
        b[46] = flow.trace_reason.map_or(0, TraceReason::raw);
        b[47] = u8::from(flow.is_reply);
        b[48..50].copy_from_slice(&flow.proxy_port.to_le_bytes());
        b[50] = icmp_type;
        b[51] = icmp_code;
        b[52..56].copy_from_slice(&flow.policy_cookie.to_le_bytes());
        b[56] = flow.observation_point.map_or(0, ObservationPoint::raw);
    }
}

/// Counters of a reader or decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Records decoded into flows.
    pub decoded: u64,
    /// Records skipped as malformed.
    pub malformed: u64,
    /// The last malformation seen, if any.
    pub last_malformed: Option<Malformed>,
}

/// Decodes a sequence of records with one clock and one set of counters
/// (the reader's path, also used to decode synthetic records in tests and
/// benchmarks).
#[derive(Debug, Default)]
pub struct Decoder {
    clock: WallClock,
    stats: FlowStats,
}

impl Decoder {
    /// A decoder with a freshly measured clock offset.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with a fixed clock (tests).
    pub fn with_clock(clock: WallClock) -> Self {
        Self {
            clock,
            stats: FlowStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// The clock.
    pub fn clock(&self) -> &WallClock {
        &self.clock
    }

    /// Re-measures the clock offset if due.
    pub fn maybe_refresh(&mut self) {
        self.clock.maybe_refresh();
    }

    /// Decodes one record, counting it; `None` when malformed.
    pub fn decode(&mut self, bytes: &[u8]) -> Option<Flow> {
        match decode(bytes, &self.clock) {
            Ok(flow) => {
                self.stats.decoded += 1;
                Some(flow)
            }
            Err(e) => {
                self.stats.malformed += 1;
                self.stats.last_malformed = Some(e);
                None
            }
        }
    }
}

/// Reads flow events from the `mbr_events` ring buffer.
pub struct FlowReader {
    ring: RingBuf<MapData>,
    epoll: OwnedFd,
    decoder: Decoder,
}

impl FlowReader {
    /// Opens the ring buffer pinned in `pins`.
    pub fn open(pins: &PinDir) -> Result<Self> {
        Self::from_pin(&pins.map(MAP_NAME))
    }

    /// Opens the ring buffer pinned at `path`.
    pub fn from_pin(path: &Path) -> Result<Self> {
        let data = maps::open_pinned(path, &maps::events::binding())?;
        Self::from_map_data(data)
    }

    /// Reads a ring buffer map (e.g. one of a loaded object, `Ebpf::take_map`).
    pub fn from_map(map: Map) -> Result<Self> {
        let ring = RingBuf::try_from(map)
            .map_err(|e| DatapathError::op("open ring buffer", format!("map {MAP_NAME}"), &e))?;
        Self::from_ring(ring)
    }

    /// Reads a ring buffer map given as `MapData`.
    pub fn from_map_data(data: MapData) -> Result<Self> {
        let map = Map::from_map_data(data)
            .map_err(|e| DatapathError::op("open", format!("map {MAP_NAME}"), &e))?;
        Self::from_map(map)
    }

    fn from_ring(ring: RingBuf<MapData>) -> Result<Self> {
        // SAFETY: epoll_create1 has no preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(DatapathError::io(
                "epoll_create1",
                "flow reader",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: a new fd that nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: both fds are open; event is valid.
        let rc = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                ring.as_fd().as_raw_fd(),
                &mut event,
            )
        };
        if rc != 0 {
            return Err(DatapathError::io(
                "epoll_ctl add",
                format!("map {MAP_NAME}"),
                io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            ring,
            epoll,
            decoder: Decoder::new(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> FlowStats {
        self.decoder.stats()
    }

    /// Hands up to `max` raw records to `f`, waiting up to `timeout` when the
    /// buffer is empty. Returns how many records were handed over (possibly 0
    /// after the timeout). Each record is consumed after `f` returns.
    pub fn read_raw<F: FnMut(&[u8])>(
        &mut self,
        max: usize,
        timeout: Duration,
        mut f: F,
    ) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        loop {
            while n < max {
                let Some(item) = self.ring.next() else { break };
                f(&item);
                n += 1;
            }
            if n > 0 || n >= max {
                return Ok(n);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            self.wait(left)?;
        }
    }

    /// Decodes up to `max` flows, waiting up to `timeout` for the first.
    /// Malformed records are counted and skipped.
    pub fn read_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Flow>> {
        self.decoder.maybe_refresh();
        let mut out = Vec::with_capacity(max.min(4096));
        let decoder = &mut self.decoder;
        let ring = &mut self.ring;
        let epoll = &self.epoll;
        let deadline = Instant::now() + timeout;
        loop {
            let mut taken = 0;
            while taken < max && out.len() < max {
                let Some(item) = ring.next() else { break };
                taken += 1;
                if let Some(flow) = decoder.decode(&item) {
                    out.push(flow);
                }
            }
            if !out.is_empty() || max == 0 {
                return Ok(out);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            wait_epoll(epoll, left)?;
        }
    }

    /// [`read_batch`](Self::read_batch) straight into the compact form
    /// ([`CompactFlow`]) appended to `out`; returns the number of flows.
    pub fn read_compact(
        &mut self,
        max: usize,
        timeout: Duration,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        self.decoder.maybe_refresh();
        let decoder = &mut self.decoder;
        let ring = &mut self.ring;
        let epoll = &self.epoll;
        let deadline = Instant::now() + timeout;
        let mut flows = 0;
        loop {
            while flows < max {
                let Some(item) = ring.next() else { break };
                if let Some(flow) = decoder.decode(&item) {
                    CompactFlow::encode(&flow, out);
                    flows += 1;
                }
            }
            if flows > 0 || max == 0 {
                return Ok(flows);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            wait_epoll(epoll, left)?;
        }
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        wait_epoll(&self.epoll, timeout)
    }
}

fn wait_epoll(epoll: &OwnedFd, timeout: Duration) -> Result<()> {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
    // SAFETY: the epoll fd is open and `events` has room for 1 event.
    let rc = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(());
        }
        return Err(DatapathError::io(
            "epoll_wait",
            format!("map {MAP_NAME}"),
            err,
        ));
    }
    Ok(())
}

/// Test support: `count` synthetic `flow_event` records, as the datapath
/// would write them (network-order addresses and ports), cycling through
/// verdicts, event types, protocols and directions. Deterministic per `seed`.
pub fn synthetic_records(count: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * RECORD_SIZE);
    let base_ns = crate::ct_gc::monotonic_ns();
    for i in 0..count {
        let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
        let (event_type, verdict, drop_reason) = match i % 4 {
            0 => (5u8, 1u8, 0u8),
            1 => (4, 1, 0),
            2 => (1, 2, 133),
            _ => (1, 2, 181),
        };
        let proto = [6u8, 17, 1][i % 3];
        let ev = FlowEvent {
            timestamp_ns: base_ns + i as u64,
            saddr: u32::from_ne_bytes([10, 0, (x >> 8) as u8, x as u8]),
            daddr: u32::from_ne_bytes([10, 1, (x >> 16) as u8, (x >> 24) as u8]),
            sport: if proto == 1 {
                0
            } else {
                (1024 + (x % 60000) as u16).to_be()
            },
            dport: if proto == 1 { 0 } else { 8080u16.to_be() },
            src_identity: 1000 + (x % 5000),
            dst_identity: 2000 + (x % 7),
            ifindex: 7,
            src_ep: (x % 100) as u16,
            dst_ep: 0,
            pkt_len: 60 + (x % 1400),
            event_type,
            verdict,
            drop_reason,
            proto,
            tcp_flags: if proto == 6 { 0x02 } else { 0 },
            direction: 1 + (i % 2) as u8,
            ct_status: (i % 3) as u8,
            flags: if i % 3 == 2 { EV_F_IS_REPLY } else { 0 },
            proxy_port: 0,
            icmp_type: if proto == 1 { 8 } else { 0 },
            icmp_code: 0,
            policy_cookie: x % 64,
            reserved: [0; 2],
        };
        out.extend_from_slice(crate::batch::pod_bytes(std::slice::from_ref(&ev)));
    }
    out
}

/// Decodes a buffer of packed records (each [`RECORD_SIZE`] bytes) into the
/// compact form; the test-and-benchmark twin of
/// [`FlowReader::read_compact`], through the same [`Decoder`].
pub fn decode_records_compact(records: &[u8], decoder: &mut Decoder, out: &mut Vec<u8>) -> usize {
    let mut n = 0;
    for record in records.chunks(RECORD_SIZE) {
        if let Some(flow) = decoder.decode(record) {
            CompactFlow::encode(&flow, out);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> FlowEvent {
        FlowEvent {
            timestamp_ns: 5_000_000_000,
            saddr: u32::from_ne_bytes([10, 0, 1, 116]),
            daddr: u32::from_ne_bytes([10, 0, 1, 117]),
            sport: 38160u16.to_be(),
            dport: 8080u16.to_be(),
            src_identity: 60176,
            dst_identity: 4242,
            ifindex: 9,
            src_ep: 4070,
            dst_ep: 0,
            pkt_len: 74,
            event_type: 1,
            verdict: 2,
            drop_reason: 133,
            proto: 6,
            tcp_flags: 0x02,
            direction: 2,
            ct_status: 0,
            flags: 0,
            proxy_port: 0,
            icmp_type: 0,
            icmp_code: 0,
            policy_cookie: 0,
            reserved: [0; 2],
        }
    }

    fn bytes(ev: &FlowEvent) -> Vec<u8> {
        crate::batch::pod_bytes(std::slice::from_ref(ev)).to_vec()
    }

    #[test]
    fn decodes_a_policy_drop_with_hubble_names() {
        let clock = WallClock::with_offset(1_700_000_000_000_000_000);
        let flow = decode(&bytes(&event()), &clock).expect("decode");
        assert_eq!(flow.verdict.as_str(), "DROPPED");
        assert_eq!(flow.drop_reason_desc(), Some("POLICY_DENIED"));
        assert_eq!(flow.event_type, EventType::Drop);
        assert_eq!(flow.traffic_direction.as_str(), "EGRESS");
        assert_eq!(flow.source, Ipv4Addr::new(10, 0, 1, 116));
        assert_eq!(flow.source_port(), Some(38160));
        assert_eq!(flow.destination_port(), Some(8080));
        assert_eq!(flow.summary(), "TCP Flags: SYN");
        assert_eq!(flow.trace_reason, Some(TraceReason::New));
        assert!(!flow.is_reply);
        assert_eq!(flow.time_ns, 1_700_000_005_000_000_000);
        assert_eq!(flow.observation_point, Some(ObservationPoint::FromEndpoint));
    }

    #[test]
    fn reply_and_names() {
        let clock = WallClock::with_offset(0);
        let ev = FlowEvent {
            ct_status: 2,
            event_type: 4,
            verdict: 1,
            drop_reason: 0,
            direction: 1,
            tcp_flags: 0x12,
            ..event()
        };
        let flow = decode(&bytes(&ev), &clock).expect("decode");
        assert!(flow.is_reply);
        assert_eq!(flow.trace_reason.map(TraceReason::as_str), Some("REPLY"));
        assert_eq!(flow.drop_reason_desc(), None);
        assert_eq!(flow.summary(), "TCP Flags: SYN, ACK");
        assert_eq!(flow.observation_point.map(ObservationPoint::raw), Some(101));
        assert_eq!(drop_reason_name(181), "POLICY_DENY");
        assert_eq!(drop_reason_name(1), "DROP_REASON_UNKNOWN");
        for (raw, name) in [
            (1, "FORWARDED"),
            (2, "DROPPED"),
            (4, "AUDIT"),
            (5, "REDIRECTED"),
        ] {
            assert_eq!(Verdict::from_raw(raw).map(Verdict::as_str), Some(name));
        }
    }

    #[test]
    fn malformed_records_are_counted_not_fatal() {
        let mut decoder = Decoder::with_clock(WallClock::with_offset(0));
        assert!(decoder.decode(&[0u8; 10]).is_none());
        assert!(decoder
            .decode(&bytes(&FlowEvent {
                event_type: 9,
                ..event()
            }))
            .is_none());
        assert!(decoder
            .decode(&bytes(&FlowEvent {
                verdict: 3,
                ..event()
            }))
            .is_none());
        assert!(decoder
            .decode(&bytes(&FlowEvent {
                direction: 7,
                ..event()
            }))
            .is_none());
        let mut longer = bytes(&event());
        longer.extend_from_slice(&[0xff; 16]);
        assert!(
            decoder.decode(&longer).is_some(),
            "longer records decode their known prefix"
        );
        let stats = decoder.stats();
        assert_eq!((stats.decoded, stats.malformed), (1, 4));
        assert_eq!(stats.last_malformed, Some(Malformed::Direction(7)));
        // Arbitrary bytes never panic.
        let mut x = 0x1234_5678u32;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decoder.decode(&junk);
        }
    }

    #[test]
    fn compact_layout() {
        let clock = WallClock::with_offset(10);
        let flow = decode(&bytes(&event()), &clock).expect("decode");
        let mut out = Vec::new();
        CompactFlow::encode(&flow, &mut out);
        assert_eq!(out.len(), CompactFlow::SIZE);
        assert_eq!(u32::from_le_bytes(out[0..4].try_into().unwrap()), 5);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 10);
        assert_eq!(
            u32::from_le_bytes(out[8..12].try_into().unwrap()),
            u32::from(Ipv4Addr::new(10, 0, 1, 116))
        );
        assert_eq!(u16::from_le_bytes(out[16..18].try_into().unwrap()), 38160);
        assert_eq!(
            (out[40], out[41], out[42], out[43], out[44], out[45], out[46], out[47]),
            (1, 2, 133, 6, 2, 2, 1, 0)
        );
        assert_eq!(out[56], 5);
    }

    #[test]
    fn synthetic_records_decode() {
        let records = synthetic_records(1000, 7);
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        assert_eq!(
            decode_records_compact(&records, &mut decoder, &mut out),
            1000
        );
        assert_eq!(out.len(), 64_000);
        assert_eq!(decoder.stats().malformed, 0);
    }

    #[test]
    fn wall_clock_tracks_realtime() {
        let clock = WallClock::new();
        let mono = crate::ct_gc::monotonic_ns();
        let wall = clock.to_wall_ns(mono);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos() as u64;
        assert!(now.abs_diff(wall) < 50_000_000, "{now} vs {wall}");
    }
}
