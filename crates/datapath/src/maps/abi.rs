//! The numbers that cross the kernel/user boundary of `bpf_lxc` (Rust twin of
//! `ebpf/lib/abi.h`): traffic directions, verdicts, event types, conntrack
//! statuses, drop reasons, reserved identities. Numbers follow Hubble's
//! `flow.proto` where the meaning matches.

/// Direction of traffic relative to an endpoint (C `enum mbr_traffic_direction`,
/// Hubble `TrafficDirection`). Not the tc hook: on a pod's veth, tc ingress
/// sees the pod's egress traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TrafficDirection {
    /// Entering the endpoint (`mbr_to_cont`).
    Ingress = 1,
    /// Leaving the endpoint (`mbr_from_cont`).
    Egress = 2,
}

impl TrafficDirection {
    /// Both directions, ingress first.
    pub const ALL: [Self; 2] = [Self::Ingress, Self::Egress];

    /// The raw value written into maps and events.
    pub const fn raw(self) -> u8 {
        self as u8
    }

    /// The direction of raw value `raw` (0, "unknown", is none).
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Ingress),
            2 => Some(Self::Egress),
            _ => None,
        }
    }

    /// `"ingress"` or `"egress"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

impl std::fmt::Display for TrafficDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `MBR_TRAFFIC_UNKNOWN`: metrics of packets on an interface that is no endpoint.
pub const TRAFFIC_UNKNOWN: u8 = 0;

/// Verdict (Hubble `Verdict`): forwarded.
pub const VERDICT_FORWARDED: u8 = 1;
/// Verdict: dropped.
pub const VERDICT_DROPPED: u8 = 2;
/// Verdict: would have been dropped, passed (endpoint in audit mode).
pub const VERDICT_AUDIT: u8 = 4;
/// Verdict: passed to a proxy port.
pub const VERDICT_REDIRECTED: u8 = 5;

/// Event type (Hubble `MessageType`): a dropped packet.
pub const EVENT_DROP: u8 = 1;
/// Event type: a forwarded packet (new connection, or established traffic at most once per interval).
pub const EVENT_TRACE: u8 = 4;
/// Event type: the policy verdict of a new connection.
pub const EVENT_POLICY_VERDICT: u8 = 5;

/// Conntrack status: the first packet of a connection.
pub const CT_NEW: u8 = 0;
/// Conntrack status: a forward packet of a known connection.
pub const CT_ESTABLISHED: u8 = 1;
/// Conntrack status: a packet of the responder.
pub const CT_REPLY: u8 = 2;
/// Conntrack status: an ICMP error about a known connection.
pub const CT_RELATED: u8 = 3;

/// Drop reason: a pod sent with a source address not its own.
pub const DROP_INVALID_SOURCE_IP: u8 = 132;
/// Drop reason: no policy entry allowed the connection (default deny).
pub const DROP_POLICY_DENIED: u8 = 133;
/// Drop reason: malformed IPv4 header (version, IHL, total length).
pub const DROP_INVALID_PACKET: u8 = 134;
/// Drop reason: truncated L4 header.
pub const DROP_CT_INVALID_HDR: u8 = 135;
/// Drop reason: L4 protocol conntrack cannot track.
pub const DROP_CT_UNKNOWN_L4: u8 = 137;
/// Drop reason: IPv6 and other L3 protocols, where policy is enforced.
pub const DROP_UNSUPPORTED_L3: u8 = 139;
/// Drop reason: unknown ICMP type.
pub const DROP_UNKNOWN_ICMP_TYPE: u8 = 144;
/// Drop reason: the conntrack entry could not be created.
pub const DROP_CT_MAP_INSERT_FAILED: u8 = 155;
/// Drop reason: a later fragment whose first fragment was not seen.
pub const DROP_FRAG_NOT_SUPPORTED: u8 = 157;
/// Drop reason: an explicit deny entry matched.
pub const DROP_POLICY_DENY: u8 = 181;

/// Reserved identity: unknown; in a policy key, "any peer".
pub const ID_UNKNOWN: u32 = 0;
/// Reserved identity: the local host.
pub const ID_HOST: u32 = 1;
/// Reserved identity: everything outside the cluster (an ipcache miss).
pub const ID_WORLD: u32 = 2;

/// The Hubble name of a drop reason (`DropReason` enum), for messages.
pub const fn drop_reason_name(reason: u8) -> &'static str {
    match reason {
        0 => "NONE",
        DROP_INVALID_SOURCE_IP => "INVALID_SOURCE_IP",
        DROP_POLICY_DENIED => "POLICY_DENIED",
        DROP_INVALID_PACKET => "INVALID_PACKET_DROPPED",
        DROP_CT_INVALID_HDR => "CT_TRUNCATED_OR_INVALID_HEADER",
        DROP_CT_UNKNOWN_L4 => "CT_UNKNOWN_L4_PROTOCOL",
        DROP_UNSUPPORTED_L3 => "UNSUPPORTED_L3_PROTOCOL",
        DROP_UNKNOWN_ICMP_TYPE => "UNKNOWN_ICMPV4_TYPE",
        DROP_CT_MAP_INSERT_FAILED => "CT_MAP_INSERTION_FAILED",
        DROP_FRAG_NOT_SUPPORTED => "IP_FRAGMENTATION_NOT_SUPPORTED",
        DROP_POLICY_DENY => "POLICY_DENY",
        _ => "UNKNOWN",
    }
}
