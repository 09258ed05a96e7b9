//! `bpf_lxc` through BPF_PROG_TEST_RUN: crafted frames against the contract of
//! `ebpf/README.md` (conntrack, ipcache, policy, events, metrics, drop
//! reasons). Each test loads its own unpinned copy of the object, so tests
//! share no state. The endpoint under test sits on the loopback device
//! (ifindex 1), which is the interface the kernel runs test packets on.
//!
//! Root and BPF are required; without them these tests FAIL (see
//! `common::require_kernel`).

mod common;

use std::{net::Ipv4Addr, time::Duration};

use aya::maps::{Array, HashMap as AyaHashMap, MapData, RingBuf};
use common::require_kernel;
use membrane_datapath::{
    loader::LoadOptions,
    maps::{
        abi::{self, TrafficDirection},
        config::{ConfigMap, DatapathConfig},
        conntrack::{
            CtEntry, CtKey, CT_F_FWD_CLOSING, CT_F_PROXY_REDIRECT, CT_F_REV_CLOSING,
            CT_F_SEEN_REPLY,
        },
        endpoint::{
            cache_slot, ipv4_to_map, EndpointCache, EndpointInfo, EndpointsByIfindex,
            EndpointsByIp, CACHE_SLOTS, EP_F_AUDIT, EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED,
        },
        events::{FlowEvent, EV_F_IS_REPLY},
        ipcache::{Ipcache, IpcacheEntry},
        metrics::{Metrics, REASON_EVENTS_LOST},
        policy::{PolicyEntry, PolicyKey, PolicyMap, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    },
    objects::BPF_LXC,
    testrun::{
        ethernet, icmp_echo, icmp_error_frame, icmp_message, tcp_frame, tcp_segment, udp_datagram,
        udp_frame, Harness, Ipv4Packet, ETH_P_ARP, ETH_P_IPV6, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST,
        TCP_SYN,
    },
};

/// TCX_NEXT / TC_ACT_UNSPEC: passed on.
const PASS: i32 = -1;
/// TC_ACT_SHOT.
const DROP: i32 = 2;

const EGRESS: TrafficDirection = TrafficDirection::Egress;
const INGRESS: TrafficDirection = TrafficDirection::Ingress;

/// The endpoint under test: on lo, ep id 7, identity 1000.
const POD: [u8; 4] = [10, 251, 0, 10];
const EP_ID: u16 = 7;
const POD_ID: u32 = 1000;
/// A peer in the ipcache with identity 2000.
const PEER: [u8; 4] = [10, 251, 0, 20];
const PEER_ID: u32 = 2000;
/// Not in the ipcache: the world.
const WORLD_HOST: [u8; 4] = [8, 8, 8, 8];
const LO: u32 = 1;

struct Dp {
    h: Harness,
}

impl Dp {
    fn load(test: &str) -> Option<Self> {
        Self::load_with(test, LoadOptions::default())
    }

    fn load_with(test: &str, options: LoadOptions) -> Option<Self> {
        if !require_kernel(test) {
            return None;
        }
        let h = Harness::load_with(&BPF_LXC, &options).expect("load bpf_lxc");
        let mut dp = Self { h };
        dp.ipcache(PEER, 32, PEER_ID);
        Some(dp)
    }

    /// The endpoint on lo with `flags`.
    fn endpoint(&mut self, flags: u16) -> EndpointInfo {
        let ep = EndpointInfo::new(LO, POD_ID, Ipv4Addr::from(POD), EP_ID, flags);
        EndpointsByIfindex::try_from(self.h.ebpf_mut().map_mut("mbr_ep_ifindex").unwrap())
            .unwrap()
            .insert(&ep)
            .unwrap();
        EndpointsByIp::try_from(self.h.ebpf_mut().map_mut("mbr_ep_ip").unwrap())
            .unwrap()
            .insert(&ep)
            .unwrap();
        ep
    }

    /// Writes `ep` into `mbr_ep_ifindex` only, as an agent changing an
    /// endpoint does (the datapath's cache is not touched).
    fn set_endpoint_entry(&mut self, ep: &EndpointInfo) {
        EndpointsByIfindex::try_from(self.h.ebpf_mut().map_mut("mbr_ep_ifindex").unwrap())
            .unwrap()
            .insert(ep)
            .unwrap();
    }

    /// What the datapath's endpoint cache holds for lo.
    fn cached_endpoint(&self) -> Option<EndpointInfo> {
        self.cached_endpoint_of(LO)
    }

    /// What the datapath's endpoint cache holds for interface `ifindex`.
    fn cached_endpoint_of(&self, ifindex: u32) -> Option<EndpointInfo> {
        EndpointCache::try_from(self.h.ebpf().map("mbr_ep_cache").unwrap())
            .unwrap()
            .get(ifindex)
            .unwrap()
    }

    /// The raw slot `index` of the endpoint cache.
    fn cache_slot_content(&self, index: u32) -> EndpointInfo {
        let cache: Array<&MapData, EndpointInfo> =
            Array::try_from(self.h.ebpf().map("mbr_ep_cache").unwrap()).unwrap();
        cache.get(&index, 0).unwrap()
    }

    fn ipcache(&mut self, addr: [u8; 4], len: u8, identity: u32) {
        Ipcache::try_from(self.h.ebpf_mut().map_mut("mbr_ipcache").unwrap())
            .unwrap()
            .insert(Ipv4Addr::from(addr), len, &IpcacheEntry::new(identity))
            .unwrap();
    }

    /// Both policy maps, as the agent writes them.
    fn policy(&self) -> PolicyMap<&MapData> {
        let ebpf = self.h.ebpf();
        PolicyMap::from_maps(
            ebpf.map("mbr_policy_exact").unwrap(),
            ebpf.map("mbr_policy").unwrap(),
        )
        .unwrap()
    }

    fn allow(&mut self, dir: TrafficDirection, identity: u32, proto: u8, port: u16, cookie: u32) {
        self.policy()
            .insert(
                &PolicyKey::exact(EP_ID, dir, identity, proto, port),
                &PolicyEntry::allow(cookie),
            )
            .unwrap();
    }

    fn config(&mut self, config: &DatapathConfig) {
        ConfigMap::try_from(self.h.ebpf_mut().map_mut("mbr_config").unwrap())
            .unwrap()
            .set(config)
            .unwrap();
    }

    /// A packet leaving the pod (tc ingress of its veth).
    fn egress(&mut self, frame: &[u8]) -> i32 {
        self.h
            .run_tc_on("mbr_from_cont", frame, LO, 1)
            .expect("test run")
            .verdict
    }

    /// A packet entering the pod (tc egress of its veth).
    fn ingress(&mut self, frame: &[u8]) -> i32 {
        self.h
            .run_tc_on("mbr_to_cont", frame, LO, 1)
            .expect("test run")
            .verdict
    }

    fn events(&mut self) -> Vec<FlowEvent> {
        let mut ring = RingBuf::try_from(self.h.ebpf_mut().map_mut("mbr_events").unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), std::mem::size_of::<FlowEvent>(), "record size");
            // SAFETY: FlowEvent is plain old data of exactly this size.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) });
        }
        out
    }

    fn ct_map(&self, proto: u8) -> AyaHashMap<&MapData, CtKey, CtEntry> {
        let name = if proto == IPPROTO_TCP {
            "mbr_ct_tcp"
        } else {
            "mbr_ct_any"
        };
        AyaHashMap::try_from(self.h.ebpf().map(name).unwrap()).unwrap()
    }

    fn ct(&self, key: &CtKey) -> Option<CtEntry> {
        self.ct_map(key.proto).get(key, 0).ok()
    }

    fn ct_count(&self) -> usize {
        self.ct_map(IPPROTO_TCP).keys().count() + self.ct_map(IPPROTO_UDP).keys().count()
    }

    fn set_ct(&mut self, key: &CtKey, entry: &CtEntry) {
        let name = if key.proto == IPPROTO_TCP {
            "mbr_ct_tcp"
        } else {
            "mbr_ct_any"
        };
        let mut map: AyaHashMap<&mut MapData, CtKey, CtEntry> =
            AyaHashMap::try_from(self.h.ebpf_mut().map_mut(name).unwrap()).unwrap();
        map.insert(key, entry, 0).unwrap();
    }

    fn metric(&self, reason: u8, direction: u8) -> (u64, u64) {
        Metrics::try_from(self.h.ebpf().map("mbr_metrics").unwrap())
            .unwrap()
            .get(reason, direction)
            .unwrap()
            .map_or((0, 0), |c| (c.packets, c.bytes))
    }
}

fn ct_key(
    s: [u8; 4],
    d: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    dir: TrafficDirection,
) -> CtKey {
    CtKey {
        saddr: ipv4_to_map(Ipv4Addr::from(s)),
        daddr: ipv4_to_map(Ipv4Addr::from(d)),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        direction: dir.raw(),
        pad: 0,
    }
}

fn addr(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

fn kinds(events: &[FlowEvent]) -> Vec<(u8, u8, u8)> {
    events
        .iter()
        .map(|e| (e.event_type, e.verdict, e.drop_reason))
        .collect()
}

#[test]
fn an_allowed_connection_passes_and_is_tracked_and_reported() {
    let Some(mut dp) = Dp::load("an_allowed_connection_passes_and_is_tracked_and_reported") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 0xc00c1e);
    let syn = tcp_frame(POD, PEER, 40000, 80, TCP_SYN);
    assert_eq!(dp.egress(&syn), PASS);

    let entry = dp
        .ct(&ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS))
        .expect("CT entry");
    assert_eq!((entry.fwd_packets, entry.fwd_bytes), (1, syn.len() as u64));
    assert_eq!(
        (entry.src_identity, entry.dst_identity, entry.ep_id),
        (POD_ID, PEER_ID, EP_ID)
    );
    assert_eq!(entry.fwd_tcp_flags, TCP_SYN);
    assert_eq!(
        entry.expires - entry.created,
        60,
        "SYN only: the default syn timeout"
    );

    let events = dp.events();
    assert_eq!(
        kinds(&events),
        [
            (abi::EVENT_POLICY_VERDICT, abi::VERDICT_FORWARDED, 0),
            (abi::EVENT_TRACE, abi::VERDICT_FORWARDED, 0)
        ]
    );
    let e = events[0];
    assert!(e.timestamp_ns > 0);
    assert_eq!(
        (addr(e.saddr), addr(e.daddr)),
        (Ipv4Addr::from(POD), Ipv4Addr::from(PEER))
    );
    assert_eq!((u16::from_be(e.sport), u16::from_be(e.dport)), (40000, 80));
    assert_eq!((e.src_identity, e.dst_identity), (POD_ID, PEER_ID));
    assert_eq!((e.src_ep, e.dst_ep), (EP_ID, 0));
    assert_eq!((e.ifindex, e.pkt_len), (LO, syn.len() as u32));
    assert_eq!((e.proto, e.tcp_flags), (IPPROTO_TCP, TCP_SYN));
    assert_eq!(
        (e.direction, e.ct_status, e.flags),
        (EGRESS.raw(), abi::CT_NEW, 0)
    );
    assert_eq!((e.policy_cookie, e.proxy_port), (0xc00c1e, 0));
    assert_eq!(events[1].ct_status, abi::CT_NEW);

    assert_eq!(dp.metric(0, EGRESS.raw()), (1, syn.len() as u64));
}

#[test]
fn no_allow_entry_drops_with_policy_denied() {
    let Some(mut dp) = Dp::load("no_allow_entry_drops_with_policy_denied") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    let frame = tcp_frame(POD, PEER, 40000, 81, TCP_SYN);
    assert_eq!(dp.egress(&frame), DROP);
    assert_eq!(dp.ct_count(), 0, "a dropped packet creates no connection");
    let events = dp.events();
    assert_eq!(
        kinds(&events),
        [
            (
                abi::EVENT_POLICY_VERDICT,
                abi::VERDICT_DROPPED,
                abi::DROP_POLICY_DENIED
            ),
            (
                abi::EVENT_DROP,
                abi::VERDICT_DROPPED,
                abi::DROP_POLICY_DENIED
            )
        ]
    );
    assert_eq!(events[1].dst_identity, PEER_ID);
    assert_eq!(
        dp.metric(abi::DROP_POLICY_DENIED, EGRESS.raw()),
        (1, frame.len() as u64)
    );
    assert_eq!(dp.metric(0, EGRESS.raw()), (0, 0));
}

#[test]
fn an_explicit_deny_overrides_an_allow() {
    let Some(mut dp) = Dp::load("an_explicit_deny_overrides_an_allow") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    // Allow for the peer, deny TCP to anyone: the deny wins.
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    dp.policy()
        .insert(
            &PolicyKey::any_port(EP_ID, EGRESS, 0, IPPROTO_TCP),
            &PolicyEntry::deny(99),
        )
        .unwrap();
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), DROP);
    let events = dp.events();
    assert_eq!(events[1].drop_reason, abi::DROP_POLICY_DENY);
    assert_eq!(events[1].policy_cookie, 99);

    // Deny for the peer, allow for anyone: the deny wins too.
    let Some(mut dp) = Dp::load("an_explicit_deny_overrides_an_allow") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.policy()
        .insert(
            &PolicyKey::any_proto(EP_ID, EGRESS, PEER_ID),
            &PolicyEntry::deny(5),
        )
        .unwrap();
    dp.allow(EGRESS, 0, IPPROTO_TCP, 80, 1);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), DROP);
    assert_eq!(dp.events()[0].drop_reason, abi::DROP_POLICY_DENY);
    assert_eq!(dp.metric(abi::DROP_POLICY_DENY, EGRESS.raw()).0, 1);
    // Another peer is still allowed by the any-peer entry.
    dp.ipcache([10, 251, 0, 30], 32, 3000);
    assert_eq!(
        dp.egress(&tcp_frame(POD, [10, 251, 0, 30], 40000, 80, TCP_SYN)),
        PASS
    );
}

#[test]
fn replies_pass_without_policy_and_update_the_entry() {
    let Some(mut dp) = Dp::load("replies_pass_without_policy_and_update_the_entry") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED | EP_F_INGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    // No ingress policy at all: the reply passes because it is a reply.
    let synack = tcp_frame(PEER, POD, 80, 40000, TCP_SYN | TCP_ACK);
    assert_eq!(dp.ingress(&synack), PASS);
    let key = ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS);
    let entry = dp.ct(&key).unwrap();
    assert_eq!(
        (entry.rev_packets, entry.rev_bytes),
        (1, synack.len() as u64)
    );
    assert_eq!(entry.rev_tcp_flags, TCP_SYN | TCP_ACK);
    assert_ne!(entry.flags & CT_F_SEEN_REPLY, 0);
    assert_eq!(dp.ct_count(), 1, "a reply creates no entry");
    // Established traffic both ways.
    for _ in 0..3 {
        assert_eq!(
            dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK | TCP_PSH)),
            PASS
        );
        assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_ACK)), PASS);
    }
    let entry = dp.ct(&key).unwrap();
    assert_eq!((entry.fwd_packets, entry.rev_packets), (4, 4));
    assert_eq!(entry.fwd_tcp_flags, TCP_SYN | TCP_ACK | TCP_PSH);
    assert_eq!(dp.metric(0, INGRESS.raw()).0, 4);
    assert_eq!(dp.metric(abi::DROP_POLICY_DENIED, INGRESS.raw()).0, 0);
}

#[test]
fn a_packet_that_only_looks_like_a_reply_goes_through_policy() {
    let Some(mut dp) = Dp::load("a_packet_that_only_looks_like_a_reply_goes_through_policy") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED | EP_F_INGRESS_ENFORCED);
    // Source port 80, SYN+ACK, no connection: NEW, and denied.
    assert_eq!(
        dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_SYN | TCP_ACK)),
        DROP
    );
    assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_ACK)), DROP);
    // The pod "answering" a connection nobody made.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 80, 40000, TCP_ACK)), DROP);
    let events = dp.events();
    assert!(events
        .iter()
        .all(|e| e.ct_status == abi::CT_NEW && e.drop_reason == abi::DROP_POLICY_DENIED));
    assert_eq!(dp.metric(abi::DROP_POLICY_DENIED, INGRESS.raw()).0, 2);
    assert_eq!(dp.ct_count(), 0);

    // A reply of another endpoint's connection is no reply for this one.
    let mut foreign = CtEntry {
        expires: u32::MAX,
        ep_id: EP_ID + 1,
        ..CtEntry::default()
    };
    dp.set_ct(&ct_key(POD, PEER, 40001, 80, IPPROTO_TCP, EGRESS), &foreign);
    assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 80, 40001, TCP_ACK)), DROP);
    // An expired entry of this endpoint is no entry either.
    foreign.ep_id = EP_ID;
    foreign.expires = 1;
    dp.set_ct(&ct_key(POD, PEER, 40002, 80, IPPROTO_TCP, EGRESS), &foreign);
    assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 80, 40002, TCP_ACK)), DROP);
    // A live one is.
    foreign.expires = u32::MAX;
    dp.set_ct(&ct_key(POD, PEER, 40003, 80, IPPROTO_TCP, EGRESS), &foreign);
    assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 80, 40003, TCP_ACK)), PASS);
}

#[test]
fn an_unknown_peer_is_the_world() {
    let Some(mut dp) = Dp::load("an_unknown_peer_is_the_world") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, abi::ID_WORLD, IPPROTO_TCP, 443, 1);
    dp.allow(EGRESS, 3000, IPPROTO_TCP, 8443, 2);
    assert_eq!(
        dp.egress(&tcp_frame(POD, WORLD_HOST, 40000, 443, TCP_SYN)),
        PASS
    );
    let events = dp.events();
    assert_eq!(events[0].dst_identity, abi::ID_WORLD);
    let entry = dp
        .ct(&ct_key(POD, WORLD_HOST, 40000, 443, IPPROTO_TCP, EGRESS))
        .unwrap();
    assert_eq!(entry.dst_identity, abi::ID_WORLD);
    // A policy for another identity does not admit the world.
    assert_eq!(
        dp.egress(&tcp_frame(POD, WORLD_HOST, 40001, 8443, TCP_SYN)),
        DROP
    );
    assert_eq!(dp.events()[0].dst_identity, abi::ID_WORLD);
    // A covering prefix gives the world host that identity.
    dp.ipcache([8, 8, 0, 0], 16, 3000);
    assert_eq!(
        dp.egress(&tcp_frame(POD, WORLD_HOST, 40002, 8443, TCP_SYN)),
        PASS
    );
    assert_eq!(dp.events()[0].dst_identity, 3000);
}

#[test]
fn icmp_echo_and_related_errors_pass() {
    let Some(mut dp) = Dp::load("icmp_echo_and_related_errors_pass") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED | EP_F_INGRESS_ENFORCED);
    dp.policy()
        .insert(
            &PolicyKey::icmp(EP_ID, EGRESS, PEER_ID, 8),
            &PolicyEntry::allow(8),
        )
        .unwrap();
    dp.allow(EGRESS, PEER_ID, IPPROTO_UDP, 53, 53);

    // Echo request out, reply in (no ingress policy: it passes as a reply).
    assert_eq!(dp.egress(&icmp_echo(POD, PEER, 0x4242, 1, false)), PASS);
    assert!(
        dp.ct(&ct_key(POD, PEER, 0x4242, 0, IPPROTO_ICMP, EGRESS))
            .is_some(),
        "echo tuple (id, 0)"
    );
    assert_eq!(dp.ingress(&icmp_echo(PEER, POD, 0x4242, 1, true)), PASS);
    let entry = dp
        .ct(&ct_key(POD, PEER, 0x4242, 0, IPPROTO_ICMP, EGRESS))
        .unwrap();
    assert_eq!((entry.fwd_packets, entry.rev_packets), (1, 1));
    // Another echo id is another flow; an unsolicited reply is dropped.
    assert_eq!(dp.ingress(&icmp_echo(PEER, POD, 0x4343, 1, true)), DROP);
    // An echo request to the pod is not allowed in.
    assert_eq!(dp.ingress(&icmp_echo(PEER, POD, 0x4242, 1, false)), DROP);

    // UDP out, then a destination-unreachable from a router quoting it: related.
    let query = Ipv4Packet::new(POD, PEER, 17, udp_datagram(5353, 53, 20));
    assert_eq!(dp.egress(&query.frame()), PASS);
    let router = [10, 251, 0, 1];
    let unreachable = icmp_error_frame(router, POD, 3, 3, &query);
    assert_eq!(dp.ingress(&unreachable), PASS);
    let time_exceeded = icmp_error_frame(router, POD, 11, 0, &query);
    assert_eq!(dp.ingress(&time_exceeded), PASS);
    // Quoting a datagram nobody sent: not related, and no policy lets it in.
    let other = Ipv4Packet::new(POD, PEER, 17, udp_datagram(5354, 53, 20));
    assert_eq!(
        dp.ingress(&icmp_error_frame(router, POD, 3, 3, &other)),
        DROP
    );
    // An error about the echo flow is related too.
    let echo = Ipv4Packet::new(
        POD,
        PEER,
        1,
        icmp_message(8, 0, [0x42, 0x42, 0, 1], &[0; 8]),
    );
    assert_eq!(
        dp.ingress(&icmp_error_frame(router, POD, 11, 0, &echo)),
        PASS
    );
    // A TCP error about a connection the pod accepted, sent by the pod.
    dp.allow(INGRESS, PEER_ID, IPPROTO_TCP, 8080, 1);
    let inbound = Ipv4Packet::new(PEER, POD, 6, tcp_segment(33000, 8080, TCP_SYN, 0));
    assert_eq!(dp.ingress(&inbound.frame()), PASS);
    assert_eq!(
        dp.egress(&icmp_error_frame(POD, PEER, 3, 1, &inbound)),
        PASS
    );

    assert_eq!(dp.metric(abi::DROP_POLICY_DENIED, INGRESS.raw()).0, 3);
    let drops: Vec<_> = dp
        .events()
        .into_iter()
        .filter(|e| e.event_type == abi::EVENT_DROP)
        .collect();
    assert_eq!(drops.len(), 3);
    assert!(drops
        .iter()
        .all(|e| e.proto == IPPROTO_ICMP && e.sport == 0 && e.dport == 0));
}

#[test]
fn malformed_and_truncated_packets_are_dropped_with_their_reasons() {
    let Some(mut dp) = Dp::load("malformed_and_truncated_packets_are_dropped_with_their_reasons")
    else {
        return;
    };
    dp.endpoint(0); // no enforcement: these drops do not depend on policy
    let good = Ipv4Packet::new(POD, PEER, 6, tcp_segment(40000, 80, TCP_SYN, 0));
    let reason_of = |dp: &mut Dp, frame: &[u8]| -> u8 {
        assert_eq!(dp.egress(frame), DROP, "frame {frame:02x?}");
        let events = dp.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].event_type, abi::EVENT_DROP);
        events[0].drop_reason
    };

    // (An IPv4 header cut below 20 bytes cannot be test-run: the kernel
    // refuses such input with EINVAL. traffic.rs sends one through a veth.)
    // Wrong version, IHL below 5, IHL beyond the datagram.
    let mut p = good.clone();
    p.version = 6;
    assert_eq!(reason_of(&mut dp, &p.frame()), abi::DROP_INVALID_PACKET);
    p = good.clone();
    p.ihl = Some(4);
    assert_eq!(reason_of(&mut dp, &p.frame()), abi::DROP_INVALID_PACKET);
    p = good.clone();
    p.ihl = Some(15);
    p.payload.truncate(8);
    assert_eq!(reason_of(&mut dp, &p.frame()), abi::DROP_INVALID_PACKET);
    // Total length beyond the frame, and below the header.
    p = good.clone();
    p.tot_len = Some(200);
    assert_eq!(reason_of(&mut dp, &p.frame()), abi::DROP_INVALID_PACKET);
    p = good.clone();
    p.tot_len = Some(16);
    assert_eq!(reason_of(&mut dp, &p.frame()), abi::DROP_INVALID_PACKET);

    // Truncated L4 headers.
    p = good.clone();
    p.payload.truncate(10);
    assert_eq!(reason_of(&mut dp, &p.frame()), abi::DROP_CT_INVALID_HDR);
    let udp = Ipv4Packet::new(POD, PEER, 17, vec![0x13, 0x88, 0, 53]);
    assert_eq!(reason_of(&mut dp, &udp.frame()), abi::DROP_CT_INVALID_HDR);
    let icmp = Ipv4Packet::new(POD, PEER, 1, vec![8, 0, 0, 0]);
    assert_eq!(reason_of(&mut dp, &icmp.frame()), abi::DROP_CT_INVALID_HDR);
    // A TCP data offset below 5.
    let mut seg = tcp_segment(40000, 80, TCP_SYN, 0);
    seg[12] = 4 << 4;
    assert_eq!(
        reason_of(&mut dp, &Ipv4Packet::new(POD, PEER, 6, seg).frame()),
        abi::DROP_CT_INVALID_HDR
    );
    // An ICMP error whose quoted packet is cut short.
    let quoted = Ipv4Packet::new(PEER, POD, 17, udp_datagram(53, 5353, 0));
    let mut err = icmp_message(3, 3, [0; 4], &quoted.bytes()[..24]);
    let csum = membrane_datapath::testrun::checksum(&err);
    err[2..4].copy_from_slice(&csum.to_be_bytes());
    assert_eq!(
        reason_of(&mut dp, &Ipv4Packet::new(POD, PEER, 1, err).frame()),
        abi::DROP_CT_INVALID_HDR
    );
    // The L4 header claimed by tot_len but padded by Ethernet is not read.
    p = good.clone();
    p.tot_len = Some(20 + 12);
    assert_eq!(reason_of(&mut dp, &p.frame()), abi::DROP_CT_INVALID_HDR);

    assert_eq!(dp.metric(abi::DROP_INVALID_PACKET, EGRESS.raw()).0, 5);
    assert_eq!(dp.metric(abi::DROP_CT_INVALID_HDR, EGRESS.raw()).0, 6);
    assert_eq!(dp.ct_count(), 0);
}

#[test]
fn garbage_never_crashes_and_never_reads_past_the_end() {
    let Some(mut dp) = Dp::load("garbage_never_crashes_and_never_reads_past_the_end") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED | EP_F_INGRESS_ENFORCED);
    // A deterministic pseudo-random sweep: every length from a bare Ethernet
    // header up, IPv4 EtherType, random header bytes with a few fields pinned
    // so that the parser gets deep. (The kernel refuses to test-run IPv4
    // frames shorter than an IPv4 header; those get another EtherType.)
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut runs = 0;
    for len in 14..140usize {
        for variant in 0..12 {
            let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let ethertype: u16 = if len >= 34 { 0x0800 } else { 0x88b5 };
            frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
            if len >= 34 && variant % 2 == 0 {
                frame[14] = 0x45;
            }
            if len > 23 && variant % 3 == 0 {
                frame[23] = [1u8, 6, 17][variant % 3];
            }
            if len > 17 && variant % 4 == 0 {
                let tot = (len - 14) as u16;
                frame[16..18].copy_from_slice(&tot.to_be_bytes());
            }
            for verdict in [dp.egress(&frame), dp.ingress(&frame)] {
                assert!(
                    verdict == PASS || verdict == DROP,
                    "verdict {verdict} for {frame:02x?}"
                );
            }
            runs += 2;
        }
    }
    dp.events();
    assert!(runs > 3000);
}

#[test]
fn non_ipv4_traffic_follows_enforcement() {
    let Some(mut dp) = Dp::load("non_ipv4_traffic_follows_enforcement") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    let arp = ethernet(ETH_P_ARP, &[0u8; 28]);
    let ipv6 = ethernet(ETH_P_IPV6, &[0x60u8; 40]);
    assert_eq!(dp.egress(&arp), PASS, "ARP always passes");
    assert_eq!(
        dp.egress(&ipv6),
        DROP,
        "IPv6 is dropped where policy is enforced"
    );
    assert_eq!(dp.ingress(&ipv6), PASS, "and passes where it is not");
    let events = dp.events();
    assert_eq!(
        kinds(&events),
        [(
            abi::EVENT_DROP,
            abi::VERDICT_DROPPED,
            abi::DROP_UNSUPPORTED_L3
        )]
    );
    assert_eq!(events[0].proto, 0);
    assert_eq!(dp.metric(abi::DROP_UNSUPPORTED_L3, EGRESS.raw()).0, 1);

    // An interface that is no endpoint: everything passes, counted as unknown.
    let Some(mut dp) = Dp::load("non_ipv4_traffic_follows_enforcement") else {
        return;
    };
    assert_eq!(dp.egress(&ipv6), PASS);
    assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 1, 2, TCP_SYN)), PASS);
    assert_eq!(dp.metric(0, abi::TRAFFIC_UNKNOWN).0, 2);
    assert!(dp.events().is_empty());
}

#[test]
fn port_ranges_match_exactly_at_their_edges() {
    let Some(mut dp) = Dp::load("port_ranges_match_exactly_at_their_edges") else {
        return;
    };
    dp.endpoint(EP_F_INGRESS_ENFORCED);
    let n = dp
        .policy()
        .insert_port_range(
            EP_ID,
            INGRESS,
            PEER_ID,
            IPPROTO_TCP,
            (1000, 2000),
            &PolicyEntry::allow(1),
        )
        .unwrap();
    assert_eq!(n, 8);
    dp.policy()
        .insert_port_range(
            EP_ID,
            INGRESS,
            0,
            IPPROTO_UDP,
            (65535, 65535),
            &PolicyEntry::allow(2),
        )
        .unwrap();
    let mut sport = 30000;
    let mut tcp = |dp: &mut Dp, port: u16| {
        sport += 1;
        dp.ingress(&tcp_frame(PEER, POD, sport, port, TCP_SYN))
    };
    assert_eq!(tcp(&mut dp, 999), DROP);
    assert_eq!(tcp(&mut dp, 1000), PASS);
    assert_eq!(tcp(&mut dp, 1023), PASS);
    assert_eq!(tcp(&mut dp, 1024), PASS);
    assert_eq!(tcp(&mut dp, 1999), PASS);
    assert_eq!(tcp(&mut dp, 2000), PASS);
    assert_eq!(tcp(&mut dp, 2001), DROP);
    assert_eq!(tcp(&mut dp, 0), DROP);
    assert_eq!(tcp(&mut dp, 65535), DROP);
    assert_eq!(dp.ingress(&udp_frame(PEER, POD, 1, 65535, 4)), PASS);
    assert_eq!(dp.ingress(&udp_frame(PEER, POD, 1, 65534, 4)), DROP);
    // The whole range is one any-port entry.
    dp.policy()
        .insert_port_range(
            EP_ID,
            INGRESS,
            PEER_ID,
            IPPROTO_UDP,
            (0, 65535),
            &PolicyEntry::allow(3),
        )
        .unwrap();
    for port in [0, 1, 80, 65534, 65535] {
        assert_eq!(
            dp.ingress(&udp_frame(PEER, POD, 7, port, 4)),
            PASS,
            "udp {port}"
        );
    }
    // Protocol matters: TCP 65535 is still denied.
    assert_eq!(tcp(&mut dp, 65535), DROP);
}

/// The policy verdict of a new TCP connection from the peer to `port`
/// (ingress): the program's verdict, the first event's drop reason and the
/// deciding cookie. Each call uses a fresh source port (a new connection).
fn ingress_decision(dp: &mut Dp, sport: &mut u16, port: u16) -> (i32, u8, u32) {
    *sport += 1;
    let verdict = dp.ingress(&tcp_frame(PEER, POD, *sport, port, TCP_SYN));
    let events = dp.events();
    let first = events.first().expect("a policy verdict event");
    assert_eq!(first.event_type, abi::EVENT_POLICY_VERDICT);
    (verdict, first.drop_reason, first.policy_cookie)
}

#[test]
fn exact_entries_decide_from_the_hash_with_the_trie_semantics() {
    let Some(mut dp) = Dp::load("exact_entries_decide_from_the_hash_with_the_trie_semantics")
    else {
        return;
    };
    dp.endpoint(EP_F_INGRESS_ENFORCED);
    let mut sport = 20000;
    // An exact allow lands in the hash (not the trie) and allows.
    let allow = PolicyKey::exact(EP_ID, INGRESS, PEER_ID, IPPROTO_TCP, 80);
    dp.policy().insert(&allow, &PolicyEntry::allow(1)).unwrap();
    assert_eq!(dp.policy().exact().dump().unwrap().len(), 1);
    assert!(dp.policy().trie().dump().unwrap().is_empty());
    assert_eq!(ingress_decision(&mut dp, &mut sport, 80), (PASS, 0, 1));
    assert_eq!(
        ingress_decision(&mut dp, &mut sport, 81),
        (DROP, abi::DROP_POLICY_DENIED, 0)
    );

    // The peer's exact deny (hash) beats an any-peer allow (trie).
    let any_peer = PolicyKey::any_port(EP_ID, INGRESS, 0, IPPROTO_TCP);
    dp.policy()
        .insert(&any_peer, &PolicyEntry::allow(2))
        .unwrap();
    let deny = PolicyKey::exact(EP_ID, INGRESS, PEER_ID, IPPROTO_TCP, 443);
    dp.policy().insert(&deny, &PolicyEntry::deny(3)).unwrap();
    assert_eq!(
        ingress_decision(&mut dp, &mut sport, 443),
        (DROP, abi::DROP_POLICY_DENY, 3)
    );
    assert_eq!(ingress_decision(&mut dp, &mut sport, 444), (PASS, 0, 2));

    // An any-peer exact deny (hash) beats the peer's exact allow (hash).
    let any_deny = PolicyKey::exact(EP_ID, INGRESS, 0, IPPROTO_TCP, 80);
    dp.policy()
        .insert(&any_deny, &PolicyEntry::deny(4))
        .unwrap();
    assert_eq!(
        ingress_decision(&mut dp, &mut sport, 80),
        (DROP, abi::DROP_POLICY_DENY, 4)
    );
    dp.policy().remove(&any_deny).unwrap();

    // Within one identity the longest prefix decides, as in one trie: the
    // peer's any-port deny (trie) does not override its exact allow (hash)...
    let peer_any_port = PolicyKey::any_port(EP_ID, INGRESS, PEER_ID, IPPROTO_TCP);
    dp.policy()
        .insert(&peer_any_port, &PolicyEntry::deny(5))
        .unwrap();
    assert_eq!(ingress_decision(&mut dp, &mut sport, 80), (PASS, 0, 1));
    // ... and denies every other port, over the any-peer allow.
    assert_eq!(
        ingress_decision(&mut dp, &mut sport, 8080),
        (DROP, abi::DROP_POLICY_DENY, 5)
    );
}

#[test]
fn a_range_in_the_trie_keeps_its_edges_next_to_exact_entries() {
    let Some(mut dp) = Dp::load("a_range_in_the_trie_keeps_its_edges_next_to_exact_entries") else {
        return;
    };
    dp.endpoint(EP_F_INGRESS_ENFORCED);
    let policy = dp.policy();
    // 1000..=2000: one exact prefix (2000, the hash) and seven shorter ones (the trie).
    let n = policy
        .insert_port_range(
            EP_ID,
            INGRESS,
            PEER_ID,
            IPPROTO_TCP,
            (1000, 2000),
            &PolicyEntry::allow(1),
        )
        .unwrap();
    assert_eq!(n, 8);
    assert_eq!(policy.exact().dump().unwrap().len(), 1);
    assert_eq!(policy.trie().dump().unwrap().len(), 7);
    // An exact deny inside the range and an exact allow outside it.
    policy
        .insert(
            &PolicyKey::exact(EP_ID, INGRESS, PEER_ID, IPPROTO_TCP, 1500),
            &PolicyEntry::deny(2),
        )
        .unwrap();
    policy
        .insert(
            &PolicyKey::exact(EP_ID, INGRESS, PEER_ID, IPPROTO_TCP, 3000),
            &PolicyEntry::allow(3),
        )
        .unwrap();
    drop(policy);
    let mut sport = 20000;
    for (port, expected) in [
        (999, (DROP, abi::DROP_POLICY_DENIED, 0)),
        (1000, (PASS, 0, 1)),
        (1499, (PASS, 0, 1)),
        (1500, (DROP, abi::DROP_POLICY_DENY, 2)),
        (1501, (PASS, 0, 1)),
        (1999, (PASS, 0, 1)),
        (2000, (PASS, 0, 1)),
        (2001, (DROP, abi::DROP_POLICY_DENIED, 0)),
        (3000, (PASS, 0, 3)),
        (3001, (DROP, abi::DROP_POLICY_DENIED, 0)),
    ] {
        assert_eq!(
            ingress_decision(&mut dp, &mut sport, port),
            expected,
            "port {port}"
        );
    }
}

#[test]
fn a_stale_full_key_in_the_trie_is_shadowed_and_removed_with_the_exact_entry() {
    let Some(mut dp) =
        Dp::load("a_stale_full_key_in_the_trie_is_shadowed_and_removed_with_the_exact_entry")
    else {
        return;
    };
    dp.endpoint(EP_F_INGRESS_ENFORCED);
    let key = PolicyKey::exact(EP_ID, INGRESS, PEER_ID, IPPROTO_TCP, 80);
    // What a build without mbr_policy_exact wrote: the full key in the trie.
    dp.policy()
        .trie()
        .update(&[key], &[PolicyEntry::allow(1)])
        .unwrap();
    let mut sport = 20000;
    assert_eq!(
        ingress_decision(&mut dp, &mut sport, 80),
        (PASS, 0, 1),
        "a hash miss falls through to the trie"
    );
    // This build writes the same key to the hash, which shadows the trie's.
    dp.policy().insert(&key, &PolicyEntry::deny(2)).unwrap();
    assert_eq!(
        ingress_decision(&mut dp, &mut sport, 80),
        (DROP, abi::DROP_POLICY_DENY, 2)
    );
    assert_eq!(
        dp.policy().lookup(&key).unwrap(),
        Some(PolicyEntry::deny(2))
    );
    assert_eq!(
        dp.policy().entries().unwrap(),
        [(key, PolicyEntry::deny(2))],
        "one entry per key, the hash's"
    );
    // Removing the key removes both copies: nothing allows any more.
    assert!(dp.policy().remove(&key).unwrap());
    assert!(dp.policy().exact().dump().unwrap().is_empty());
    assert!(dp.policy().trie().dump().unwrap().is_empty());
    assert_eq!(
        ingress_decision(&mut dp, &mut sport, 80),
        (DROP, abi::DROP_POLICY_DENIED, 0)
    );
    assert!(!dp.policy().remove(&key).unwrap(), "already gone");
}

fn timeouts() -> DatapathConfig {
    DatapathConfig {
        ct_tcp_syn_timeout: 100,
        ct_tcp_established_timeout: 1000,
        ct_tcp_close_timeout: 7,
        ct_nontcp_timeout: 50,
        flow_report_interval: 5,
        flags: 0,
    }
}

/// `expires - now`, with now read from the entry's `created` plus the
/// seconds that may have passed.
fn lifetime(entry: &CtEntry) -> u32 {
    entry.expires - entry.created
}

#[test]
fn tcp_states_get_their_lifetimes() {
    let Some(mut dp) = Dp::load("tcp_states_get_their_lifetimes") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.config(&timeouts());
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    let key = ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS);
    let near = |value: u32, expected: u32| value >= expected && value <= expected + 2;

    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(lifetime(&dp.ct(&key).unwrap()), 100, "SYN only");
    // Retransmitted SYN: still the SYN timeout.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert!(near(lifetime(&dp.ct(&key).unwrap()), 100));
    assert_eq!(
        dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_SYN | TCP_ACK)),
        PASS
    );
    let e = dp.ct(&key).unwrap();
    assert!(near(lifetime(&e), 1000), "established after a reply: {e:?}");
    // FIN one way: closing flag, still established.
    assert_eq!(
        dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_FIN | TCP_ACK)),
        PASS
    );
    let e = dp.ct(&key).unwrap();
    assert_eq!(
        e.flags & (CT_F_FWD_CLOSING | CT_F_REV_CLOSING),
        CT_F_FWD_CLOSING
    );
    assert!(near(lifetime(&e), 1000));
    // FIN the other way: the close timeout.
    assert_eq!(
        dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_FIN | TCP_ACK)),
        PASS
    );
    let e = dp.ct(&key).unwrap();
    assert_eq!(
        e.flags & (CT_F_FWD_CLOSING | CT_F_REV_CLOSING),
        CT_F_FWD_CLOSING | CT_F_REV_CLOSING
    );
    assert!(near(lifetime(&e), 7), "{e:?}");
    // The last ACK still passes.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK)), PASS);

    // An RST alone closes.
    let key2 = ct_key(POD, PEER, 40001, 80, IPPROTO_TCP, EGRESS);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40001, 80, TCP_SYN)), PASS);
    assert_eq!(
        dp.ingress(&tcp_frame(PEER, POD, 80, 40001, TCP_SYN | TCP_ACK)),
        PASS
    );
    assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 80, 40001, TCP_RST)), PASS);
    let e = dp.ct(&key2).unwrap();
    assert_ne!(e.flags & CT_F_REV_CLOSING, 0);
    assert!(near(lifetime(&e), 7), "{e:?}");

    // A new SYN on the tuple of a closed connection is a new connection:
    // with the allow gone, it is denied.
    dp.policy()
        .remove(&PolicyKey::exact(EP_ID, EGRESS, PEER_ID, IPPROTO_TCP, 80))
        .unwrap();
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40001, 80, TCP_SYN)), DROP);
    // while an established connection carries on.
    let key3 = ct_key(POD, PEER, 40002, 80, IPPROTO_TCP, EGRESS);
    dp.set_ct(
        &key3,
        &CtEntry {
            expires: u32::MAX,
            ep_id: EP_ID,
            ..CtEntry::default()
        },
    );
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40002, 80, TCP_ACK)), PASS);

    // UDP: the non-TCP timeout, refreshed by replies.
    dp.allow(EGRESS, PEER_ID, IPPROTO_UDP, 53, 1);
    assert_eq!(dp.egress(&udp_frame(POD, PEER, 5353, 53, 10)), PASS);
    let ukey = ct_key(POD, PEER, 5353, 53, IPPROTO_UDP, EGRESS);
    assert_eq!(lifetime(&dp.ct(&ukey).unwrap()), 50);
    assert_eq!(dp.ingress(&udp_frame(PEER, POD, 53, 5353, 10)), PASS);
    let e = dp.ct(&ukey).unwrap();
    assert!(near(lifetime(&e), 50));
    assert_ne!(e.flags & CT_F_SEEN_REPLY, 0);
}

#[test]
fn zero_config_means_the_defaults() {
    let Some(mut dp) = Dp::load("zero_config_means_the_defaults") else {
        return;
    };
    dp.endpoint(0);
    assert_eq!(dp.egress(&udp_frame(POD, PEER, 1, 2, 0)), PASS);
    assert_eq!(
        lifetime(
            &dp.ct(&ct_key(POD, PEER, 1, 2, IPPROTO_UDP, EGRESS))
                .unwrap()
        ),
        60
    );
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 1, 2, TCP_SYN)), PASS);
    assert_eq!(
        dp.ingress(&tcp_frame(PEER, POD, 2, 1, TCP_SYN | TCP_ACK)),
        PASS
    );
    let e = dp
        .ct(&ct_key(POD, PEER, 1, 2, IPPROTO_TCP, EGRESS))
        .unwrap();
    assert!(lifetime(&e) >= 21600 && lifetime(&e) <= 21602, "{e:?}");
    // Unenforced: only a trace event for the new flow, no policy verdict.
    let events = dp.events();
    assert_eq!(
        kinds(&events),
        [(abi::EVENT_TRACE, abi::VERDICT_FORWARDED, 0); 2]
    );
}

#[test]
fn established_events_are_aggregated_per_interval() {
    let Some(mut dp) = Dp::load("established_events_are_aggregated_per_interval") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(dp.events().len(), 2, "policy verdict + trace");
    // Within the interval: nothing.
    assert_eq!(
        dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_SYN | TCP_ACK)),
        PASS
    );
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK)), PASS);
    assert!(dp.events().is_empty());

    // Make the last report old: the next two packets give one event.
    let key = ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS);
    let mut e = dp.ct(&key).unwrap();
    let created = e.created;
    e.last_report = created.saturating_sub(10);
    dp.set_ct(&key, &e);
    assert_eq!(
        dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK | TCP_PSH)),
        PASS
    );
    assert_eq!(
        dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK | TCP_PSH)),
        PASS
    );
    let events = dp.events();
    assert_eq!(
        kinds(&events),
        [(abi::EVENT_TRACE, abi::VERDICT_FORWARDED, 0)]
    );
    assert_eq!(events[0].ct_status, abi::CT_ESTABLISHED);
    assert_eq!(
        (events[0].src_identity, events[0].dst_identity),
        (POD_ID, PEER_ID)
    );
    assert!(dp.ct(&key).unwrap().last_report >= created);

    // A reply after the interval: one event flagged as reply.
    let mut e = dp.ct(&key).unwrap();
    e.last_report = 0;
    dp.set_ct(&key, &e);
    assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_ACK)), PASS);
    assert_eq!(dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_ACK)), PASS);
    let events = dp.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].ct_status, events[0].flags),
        (abi::CT_REPLY, EV_F_IS_REPLY)
    );
    assert_eq!(
        (events[0].src_identity, events[0].dst_identity),
        (PEER_ID, POD_ID)
    );
    assert_eq!(events[0].direction, INGRESS.raw());
}

#[test]
fn metrics_count_every_packet() {
    let Some(mut dp) = Dp::load("metrics_count_every_packet") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_UDP, 53, 1);
    let ok = udp_frame(POD, PEER, 5353, 53, 30);
    let denied = udp_frame(POD, PEER, 5353, 54, 30);
    for _ in 0..5 {
        assert_eq!(dp.egress(&ok), PASS);
    }
    for _ in 0..3 {
        assert_eq!(dp.egress(&denied), DROP);
    }
    for _ in 0..4 {
        assert_eq!(dp.ingress(&udp_frame(PEER, POD, 53, 5353, 10)), PASS);
    }
    // Repetitions of one test run count too.
    dp.h.run_tc_on("mbr_from_cont", &ok, LO, 10).unwrap();
    assert_eq!(dp.metric(0, EGRESS.raw()), (15, 15 * ok.len() as u64));
    assert_eq!(
        dp.metric(abi::DROP_POLICY_DENIED, EGRESS.raw()),
        (3, 3 * denied.len() as u64)
    );
    assert_eq!(dp.metric(0, INGRESS.raw()).0, 4);
    let all = Metrics::try_from(dp.h.ebpf().map("mbr_metrics").unwrap())
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
}

#[test]
fn a_full_ring_buffer_loses_events_not_packets() {
    let options = LoadOptions {
        max_entries: vec![("mbr_events".to_owned(), 4096)],
    };
    let Some(mut dp) = Dp::load_with("a_full_ring_buffer_loses_events_not_packets", options) else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    for i in 0..100u16 {
        assert_eq!(
            dp.egress(&tcp_frame(POD, PEER, 20000 + i, 80, TCP_SYN)),
            DROP
        );
    }
    let lost = Metrics::try_from(dp.h.ebpf().map("mbr_metrics").unwrap())
        .unwrap()
        .events_lost()
        .unwrap();
    let kept = dp.events().len() as u64;
    assert_eq!(kept + lost, 200, "kept {kept}, lost {lost}");
    assert!(
        lost > 100,
        "a 4 KiB ring holds about 50 events: lost {lost}"
    );
    assert_eq!(dp.metric(REASON_EVENTS_LOST, 0).0, lost);
    assert_eq!(dp.metric(abi::DROP_POLICY_DENIED, EGRESS.raw()).0, 100);
}

#[test]
fn audit_mode_reports_and_passes() {
    let Some(mut dp) = Dp::load("audit_mode_reports_and_passes") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED | EP_F_AUDIT);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    let events = dp.events();
    assert_eq!(
        kinds(&events),
        [
            (
                abi::EVENT_POLICY_VERDICT,
                abi::VERDICT_AUDIT,
                abi::DROP_POLICY_DENIED
            ),
            (abi::EVENT_TRACE, abi::VERDICT_FORWARDED, 0)
        ]
    );
    assert!(dp
        .ct(&ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS))
        .is_some());
    assert_eq!(dp.egress(&ethernet(ETH_P_IPV6, &[0x60; 40])), PASS);
    assert_eq!(dp.events()[0].verdict, abi::VERDICT_AUDIT);
    assert_eq!(dp.metric(0, EGRESS.raw()).0, 2);
}

#[test]
fn a_redirect_is_recorded_and_passes() {
    let Some(mut dp) = Dp::load("a_redirect_is_recorded_and_passes") else {
        return;
    };
    dp.endpoint(EP_F_INGRESS_ENFORCED);
    dp.policy()
        .insert(
            &PolicyKey::exact(EP_ID, INGRESS, 0, IPPROTO_TCP, 8080),
            &PolicyEntry::redirect(15001, 77),
        )
        .unwrap();
    dp.allow(INGRESS, PEER_ID, IPPROTO_TCP, 8080, 1);
    assert_eq!(
        dp.ingress(&tcp_frame(PEER, POD, 33000, 8080, TCP_SYN)),
        PASS
    );
    let events = dp.events();
    assert_eq!(
        kinds(&events),
        [
            (abi::EVENT_POLICY_VERDICT, abi::VERDICT_REDIRECTED, 0),
            (abi::EVENT_TRACE, abi::VERDICT_REDIRECTED, 0)
        ]
    );
    assert_eq!(
        (u16::from_be(events[0].proxy_port), events[0].policy_cookie),
        (15001, 77)
    );
    let e = dp
        .ct(&ct_key(PEER, POD, 33000, 8080, IPPROTO_TCP, INGRESS))
        .unwrap();
    assert_eq!(
        (e.flags & CT_F_PROXY_REDIRECT, u16::from_be(e.proxy_port)),
        (CT_F_PROXY_REDIRECT, 15001)
    );
    assert_eq!((e.src_identity, e.dst_identity), (PEER_ID, POD_ID));
}

#[test]
fn a_spoofed_source_is_dropped() {
    let Some(mut dp) = Dp::load("a_spoofed_source_is_dropped") else {
        return;
    };
    dp.endpoint(0);
    assert_eq!(
        dp.egress(&tcp_frame([10, 251, 0, 99], PEER, 40000, 80, TCP_SYN)),
        DROP
    );
    assert_eq!(dp.events()[0].drop_reason, abi::DROP_INVALID_SOURCE_IP);
    assert_eq!(dp.metric(abi::DROP_INVALID_SOURCE_IP, EGRESS.raw()).0, 1);
}

#[test]
fn fragments_follow_their_first_fragment() {
    let Some(mut dp) = Dp::load("fragments_follow_their_first_fragment") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_UDP, 4789, 1);
    let mut first = Ipv4Packet::new(POD, PEER, 17, udp_datagram(5000, 4789, 64));
    first.id = 0x7777;
    first.frag_off = 0x2000; // MF, offset 0
    assert_eq!(dp.egress(&first.frame()), PASS);
    let mut later = Ipv4Packet::new(POD, PEER, 17, vec![0xee; 64]);
    later.id = 0x7777;
    later.frag_off = 9; // offset 72 bytes, last fragment
    assert_eq!(dp.egress(&later.frame()), PASS);
    let e = dp
        .ct(&ct_key(POD, PEER, 5000, 4789, IPPROTO_UDP, EGRESS))
        .unwrap();
    assert_eq!(
        e.fwd_packets, 2,
        "the later fragment counted on the connection"
    );
    // A later fragment of a datagram whose first fragment was not seen.
    later.id = 0x8888;
    assert_eq!(dp.egress(&later.frame()), DROP);
    assert_eq!(
        dp.events().last().unwrap().drop_reason,
        abi::DROP_FRAG_NOT_SUPPORTED
    );
    // A first fragment that policy denies does not open the door for the rest.
    let mut denied = Ipv4Packet::new(POD, PEER, 17, udp_datagram(5000, 9999, 64));
    denied.id = 0x9999;
    denied.frag_off = 0x2000;
    assert_eq!(dp.egress(&denied.frame()), DROP);
    later.id = 0x9999;
    assert_eq!(dp.egress(&later.frame()), DROP);

    // Without enforcement, an unknown later fragment passes.
    let Some(mut dp) = Dp::load("fragments_follow_their_first_fragment") else {
        return;
    };
    dp.endpoint(0);
    assert_eq!(dp.egress(&later.frame()), PASS);
}

/// A TCP frame whose IP header carries 4 bytes of options (NOPs): a shape
/// the fast path leaves to the pipeline.
fn tcp_frame_with_ip_options(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    Ipv4Packet {
        options: vec![1, 1, 1, 1],
        ..Ipv4Packet::new(src, dst, 6, tcp_segment(sport, dport, flags, 0))
    }
    .frame()
}

#[test]
fn tracked_packets_are_accounted_once_whichever_path_takes_them() {
    let Some(mut dp) = Dp::load("tracked_packets_are_accounted_once_whichever_path_takes_them")
    else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    let key = ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS);
    let syn = tcp_frame(POD, PEER, 40000, 80, TCP_SYN);
    assert_eq!(dp.egress(&syn), PASS);
    assert_eq!(dp.events().len(), 2, "policy verdict + trace");
    let mut fwd = (1u64, syn.len() as u64);
    let mut rev = (0u64, 0u64);
    let check = |dp: &Dp, fwd: (u64, u64), rev: (u64, u64), what: &str| {
        let e = dp.ct(&key).unwrap();
        assert_eq!((e.fwd_packets, e.fwd_bytes), fwd, "forward after {what}");
        assert_eq!((e.rev_packets, e.rev_bytes), rev, "reply after {what}");
        assert_eq!(
            dp.metric(0, EGRESS.raw()),
            fwd,
            "egress metrics after {what}"
        );
        assert_eq!(
            dp.metric(0, INGRESS.raw()),
            rev,
            "ingress metrics after {what}"
        );
    };

    // Replies and forward packets, in the common shape (the fast path) and
    // with IP options (the pipeline): each counted once, on the entry and
    // in the metrics.
    let steps: [(bool, Vec<u8>, &str); 5] = [
        (
            true,
            tcp_frame(PEER, POD, 80, 40000, TCP_SYN | TCP_ACK),
            "SYN-ACK",
        ),
        (false, tcp_frame(POD, PEER, 40000, 80, TCP_ACK), "ACK"),
        (
            false,
            tcp_frame_with_ip_options(POD, PEER, 40000, 80, TCP_ACK),
            "ACK with IP options",
        ),
        (
            true,
            tcp_frame_with_ip_options(PEER, POD, 80, 40000, TCP_ACK),
            "reply with IP options",
        ),
        (
            true,
            tcp_frame(PEER, POD, 80, 40000, TCP_ACK | TCP_PSH),
            "reply",
        ),
    ];
    for (reply, frame, what) in &steps {
        if *reply {
            assert_eq!(dp.ingress(frame), PASS, "{what}");
            rev = (rev.0 + 1, rev.1 + frame.len() as u64);
        } else {
            assert_eq!(dp.egress(frame), PASS, "{what}");
            fwd = (fwd.0 + 1, fwd.1 + frame.len() as u64);
        }
        check(&dp, fwd, rev, what);
    }
    assert!(dp.events().is_empty(), "nothing is due within the interval");
    let e = dp.ct(&key).unwrap();
    assert_eq!(e.fwd_tcp_flags, TCP_SYN | TCP_ACK);
    assert_eq!(e.rev_tcp_flags, TCP_SYN | TCP_ACK | TCP_PSH);

    // A due report: the packet is reported once and counted once.
    let mut e = dp.ct(&key).unwrap();
    e.last_report = e.created.saturating_sub(10);
    dp.set_ct(&key, &e);
    let ack = tcp_frame(POD, PEER, 40000, 80, TCP_ACK);
    assert_eq!(dp.egress(&ack), PASS);
    fwd = (fwd.0 + 1, fwd.1 + ack.len() as u64);
    check(&dp, fwd, rev, "a reported ACK");
    let events = dp.events();
    assert_eq!(
        kinds(&events),
        [(abi::EVENT_TRACE, abi::VERDICT_FORWARDED, 0)]
    );
    assert_eq!(events[0].ct_status, abi::CT_ESTABLISHED);

    // UDP both ways, after the first datagram created the entry.
    dp.allow(EGRESS, PEER_ID, IPPROTO_UDP, 53, 1);
    let ukey = ct_key(POD, PEER, 5353, 53, IPPROTO_UDP, EGRESS);
    let query = udp_frame(POD, PEER, 5353, 53, 30);
    let answer = udp_frame(PEER, POD, 53, 5353, 90);
    for _ in 0..3 {
        assert_eq!(dp.egress(&query), PASS);
        assert_eq!(dp.ingress(&answer), PASS);
    }
    let e = dp.ct(&ukey).unwrap();
    assert_eq!(
        (e.fwd_packets, e.fwd_bytes, e.rev_packets, e.rev_bytes),
        (3, 3 * query.len() as u64, 3, 3 * answer.len() as u64)
    );
    assert_ne!(e.flags & CT_F_SEEN_REPLY, 0);
}

#[test]
fn a_config_change_reaches_the_next_tracked_packet() {
    let Some(mut dp) = Dp::load("a_config_change_reaches_the_next_tracked_packet") else {
        return;
    };
    dp.endpoint(0);
    let key = ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS);
    let near = |value: u32, expected: u32| value >= expected && value <= expected + 2;
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(
        dp.ingress(&tcp_frame(PEER, POD, 80, 40000, TCP_SYN | TCP_ACK)),
        PASS
    );
    let ack = tcp_frame(POD, PEER, 40000, 80, TCP_ACK);
    for established in [1000, 2000, 0] {
        dp.config(&DatapathConfig {
            ct_tcp_established_timeout: established,
            ..DatapathConfig::default()
        });
        assert_eq!(dp.egress(&ack), PASS);
        let e = dp.ct(&key).unwrap();
        let expected = if established == 0 { 21600 } else { established };
        assert!(near(lifetime(&e), expected), "{established}: {e:?}");
    }
    // The report interval too: with the last report 1 s before the
    // connection was created, an interval of 1 s makes the next packet's
    // report due; with the default 5 s, a report at creation is not.
    assert_eq!(dp.events().len(), 1, "the new connection's trace");
    for (interval, back, reports) in [(0, 0, 0), (1, 1, 1)] {
        dp.config(&DatapathConfig {
            flow_report_interval: interval,
            ..DatapathConfig::default()
        });
        let mut e = dp.ct(&key).unwrap();
        e.last_report = e.created.saturating_sub(back);
        dp.set_ct(&key, &e);
        assert_eq!(dp.egress(&ack), PASS);
        assert_eq!(dp.events().len(), reports, "interval {interval}");
    }
}

#[test]
fn the_established_path_is_cheap() {
    let Some(mut dp) = Dp::load("the_established_path_is_cheap") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    let ack = tcp_frame(POD, PEER, 40000, 80, TCP_ACK);
    let run = dp.h.run_tc_on("mbr_from_cont", &ack, LO, 100_000).unwrap();
    assert_eq!(run.verdict, PASS);
    println!("established path: {:?} per packet", run.duration);
    // A generous bound that only catches a pathological regression; the
    // budget against the empty program is measured by the benches.
    assert!(
        run.duration < Duration::from_micros(2),
        "{:?}",
        run.duration
    );
}

#[test]
fn the_endpoint_cache_holds_what_the_packets_used() {
    let Some(mut dp) = Dp::load("the_endpoint_cache_holds_what_the_packets_used") else {
        return;
    };
    let ep = dp.endpoint(EP_F_EGRESS_ENFORCED);
    assert_eq!(dp.cached_endpoint(), None, "nothing cached before a packet");
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(dp.cached_endpoint(), Some(ep));
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK)), PASS);
    assert_eq!(dp.cached_endpoint(), Some(ep));

    // User space can empty a slot (an endpoint's removal does), not fill one.
    let mut cache =
        EndpointCache::try_from(dp.h.ebpf_mut().map_mut("mbr_ep_cache").unwrap()).unwrap();
    assert_eq!(cache.get(LO).unwrap(), Some(ep));
    assert_eq!(
        cache.get(CACHE_SLOTS + LO).unwrap(),
        None,
        "the same slot, another interface"
    );
    assert_eq!(cache.get(0).unwrap(), None);
    assert!(
        !cache.evict(CACHE_SLOTS + LO).unwrap(),
        "not the slot holder"
    );
    assert_eq!(cache.get(LO).unwrap(), Some(ep));
    assert!(cache.evict(LO).unwrap());
    assert!(!cache.evict(LO).unwrap(), "already empty");
    assert_eq!(dp.cached_endpoint(), None);
    assert_eq!(
        dp.cache_slot_content(cache_slot(LO)),
        EndpointInfo::default()
    );
    // The interface's next packet, finding the slot empty, reads the
    // authority and fills it again.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK)), PASS);
    assert_eq!(dp.cached_endpoint(), Some(ep));
}

#[test]
fn new_flows_follow_the_agent_not_the_cache() {
    let Some(mut dp) = Dp::load("new_flows_follow_the_agent_not_the_cache") else {
        return;
    };
    let enforced = dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40001, 81, TCP_SYN)), DROP);
    assert_eq!(dp.cached_endpoint(), Some(enforced));

    // The agent lifts enforcement: the next new flow sees it although the
    // cache still held the enforcing entry, and the cache follows.
    let open = EndpointInfo {
        flags: 0,
        ..enforced
    };
    dp.set_endpoint_entry(&open);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40002, 81, TCP_SYN)), PASS);
    assert_eq!(dp.cached_endpoint(), Some(open));
    // The connection opened before carries on.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK)), PASS);

    // And back: enforcement applies to the very next new flow.
    dp.set_endpoint_entry(&enforced);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40003, 81, TCP_SYN)), DROP);
    assert_eq!(dp.cached_endpoint(), Some(enforced));
    // Non-IPv4 decisions read the agent's flags too.
    let ipv6 = ethernet(ETH_P_IPV6, &[0x60; 40]);
    dp.set_endpoint_entry(&open);
    assert_eq!(dp.egress(&ipv6), PASS);
    dp.set_endpoint_entry(&enforced);
    assert_eq!(dp.egress(&ipv6), DROP);
}

#[test]
fn a_removed_endpoint_is_not_served_from_the_cache() {
    let Some(mut dp) = Dp::load("a_removed_endpoint_is_not_served_from_the_cache") else {
        return;
    };
    dp.endpoint(EP_F_EGRESS_ENFORCED);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 81, TCP_SYN)), DROP);
    assert!(dp.cached_endpoint().is_some());
    EndpointsByIfindex::try_from(dp.h.ebpf_mut().map_mut("mbr_ep_ifindex").unwrap())
        .unwrap()
        .remove(LO)
        .unwrap();
    // No entry: passed on as no endpoint's, counted under direction unknown.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40001, 81, TCP_SYN)), PASS);
    assert_eq!(dp.metric(0, 0).0, 1, "reason 0, direction unknown");
    assert_eq!(dp.cached_endpoint(), None, "the slot was emptied");
}

#[test]
fn an_address_change_is_confirmed_before_a_spoofing_drop() {
    let Some(mut dp) = Dp::load("an_address_change_is_confirmed_before_a_spoofing_drop") else {
        return;
    };
    let old = dp.endpoint(0);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(dp.cached_endpoint(), Some(old));
    let new_addr = [10, 251, 0, 11];
    let moved = EndpointInfo {
        ipv4: ipv4_to_map(Ipv4Addr::from(new_addr)),
        ..old
    };
    dp.set_endpoint_entry(&moved);
    // The cache still says POD: the new address is confirmed, not dropped.
    assert_eq!(
        dp.egress(&tcp_frame(new_addr, PEER, 40001, 80, TCP_SYN)),
        PASS
    );
    assert_eq!(dp.cached_endpoint(), Some(moved));
    // The old address is now someone else's.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40002, 80, TCP_SYN)), DROP);
    assert_eq!(
        dp.events().last().unwrap().drop_reason,
        abi::DROP_INVALID_SOURCE_IP
    );
}

#[test]
fn an_endpoint_id_change_is_looked_up_again() {
    let Some(mut dp) = Dp::load("an_endpoint_id_change_is_looked_up_again") else {
        return;
    };
    let ep = dp.endpoint(EP_F_EGRESS_ENFORCED);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(dp.cached_endpoint(), Some(ep));
    // The agent renumbers the endpoint; a connection of the new id exists
    // (no policy of the new id allows anything, so only conntrack can pass
    // its packets). The cache still holds the old id: its lookup misses,
    // and the lookup with the confirmed id finds the connection.
    let renumbered = EndpointInfo {
        ep_id: EP_ID + 1,
        ..ep
    };
    dp.set_endpoint_entry(&renumbered);
    let key = ct_key(POD, PEER, 40001, 80, IPPROTO_TCP, EGRESS);
    let mut entry = dp
        .ct(&ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS))
        .unwrap();
    entry.ep_id = EP_ID + 1;
    dp.set_ct(&key, &entry);
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40001, 80, TCP_ACK)), PASS);
    assert_eq!(dp.ct(&key).unwrap().fwd_packets, entry.fwd_packets + 1);
    assert_eq!(dp.cached_endpoint(), Some(renumbered));
    // The old id's connection no longer vouches for the endpoint's packets.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK)), DROP);
}

/// A veth pair whose first end has a chosen ifindex, in the root network
/// namespace (a test run needs the interface it claims to run on; the
/// kernel of these machines has no dummy devices), deleted on drop.
struct IndexedLink {
    name: String,
}

impl IndexedLink {
    fn create(name: &str, ifindex: u32) -> Self {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", name])
            .output();
        let out = std::process::Command::new("ip")
            .args([
                "link",
                "add",
                name,
                "index",
                &ifindex.to_string(),
                "type",
                "veth",
                "peer",
                "name",
                &format!("{name}p"),
            ])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip link add {name} index {ifindex}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            name: name.to_owned(),
        }
    }
}

impl Drop for IndexedLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

#[test]
fn interfaces_sharing_a_cache_slot_take_turns() {
    let Some(mut dp) = Dp::load("interfaces_sharing_a_cache_slot_take_turns") else {
        return;
    };
    // An interface whose ifindex has lo's slot.
    let other_ifindex = CACHE_SLOTS + LO;
    let _link = IndexedLink::create("mbrcache0", other_ifindex);
    let other_addr = [10, 251, 0, 30];
    let other_ep_id = EP_ID + 2;
    let a = dp.endpoint(EP_F_EGRESS_ENFORCED);
    let b = EndpointInfo::new(
        other_ifindex,
        POD_ID + 1,
        Ipv4Addr::from(other_addr),
        other_ep_id,
        EP_F_EGRESS_ENFORCED,
    );
    dp.set_endpoint_entry(&b);
    // A may reach the peer on 80 and 81, B only on 80.
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 80, 1);
    dp.allow(EGRESS, PEER_ID, IPPROTO_TCP, 81, 2);
    dp.policy()
        .insert(
            &PolicyKey::exact(other_ep_id, EGRESS, PEER_ID, IPPROTO_TCP, 80),
            &PolicyEntry::allow(3),
        )
        .unwrap();
    let on_b = |dp: &mut Dp, frame: &[u8]| {
        dp.h.run_tc_on("mbr_from_cont", frame, other_ifindex, 1)
            .expect("test run")
            .verdict
    };

    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(dp.cached_endpoint(), Some(a));
    // B's packet finds A in the slot: B's own entry decides (its address,
    // its policy), and B takes the slot over.
    assert_eq!(
        on_b(&mut dp, &tcp_frame(other_addr, PEER, 40000, 80, TCP_SYN)),
        PASS
    );
    assert_eq!(dp.cached_endpoint_of(other_ifindex), Some(b));
    assert_eq!(dp.cached_endpoint(), None);
    assert_eq!(dp.cache_slot_content(cache_slot(LO)), b);
    assert_eq!(
        on_b(&mut dp, &tcp_frame(other_addr, PEER, 40001, 81, TCP_SYN)),
        DROP
    );
    // A's packets are judged as A's, whoever holds the slot.
    assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40001, 81, TCP_SYN)), PASS);
    assert_eq!(dp.cached_endpoint(), Some(a));
    assert_eq!(
        on_b(&mut dp, &tcp_frame(POD, PEER, 40002, 80, TCP_SYN)),
        DROP,
        "A's address from B"
    );
    // Both connections carry on, each under its own endpoint.
    for _ in 0..3 {
        assert_eq!(dp.egress(&tcp_frame(POD, PEER, 40000, 80, TCP_ACK)), PASS);
        assert_eq!(
            on_b(&mut dp, &tcp_frame(other_addr, PEER, 40000, 80, TCP_ACK)),
            PASS
        );
    }
    let a_conn = dp
        .ct(&ct_key(POD, PEER, 40000, 80, IPPROTO_TCP, EGRESS))
        .unwrap();
    let b_conn = dp
        .ct(&ct_key(other_addr, PEER, 40000, 80, IPPROTO_TCP, EGRESS))
        .unwrap();
    assert_eq!((a_conn.ep_id, a_conn.fwd_packets), (EP_ID, 4));
    assert_eq!((b_conn.ep_id, b_conn.fwd_packets), (other_ep_id, 4));
}
