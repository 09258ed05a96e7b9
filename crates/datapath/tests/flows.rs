//! Kernel test (root, real BPF) of the flow reader: the fixture program
//! `ebpf/test_flow_events.c` writes one real `flow_event` per test run into
//! its ring buffer; the reader decodes them.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use aya::maps::MapData;
use common::require_kernel;
use membrane_datapath::{
    batch::map_data_of,
    flows::{EventType, FlowReader, TraceReason, Verdict, L4},
    objects::TEST_FLOW_EVENTS,
    testrun::Harness,
};

/// A TCP frame whose IPv4 header carries the event the fixture should write.
fn frame(tos: u8, id: u16, ttl: u8, flags: u8) -> Vec<u8> {
    let mut f = membrane_datapath::benchkit::tcp_frame(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        40_000,
        8080,
        flags,
    );
    f[14 + 1] = tos;
    f[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
    f[14 + 8] = ttl;
    f
}

#[test]
fn reads_and_decodes_real_ring_buffer_records() {
    if !require_kernel("reads_and_decodes_real_ring_buffer_records") {
        return;
    }
    let mut h = Harness::load(&TEST_FLOW_EVENTS).expect("load fixture");
    let id = map_data_of(h.ebpf().map("mbr_events").expect("ring buffer"))
        .info()
        .expect("info")
        .id();
    let mut reader =
        FlowReader::from_map_data(MapData::from_id(id).expect("open by id")).expect("reader");

    // Nothing yet: the timeout elapses.
    let t = std::time::Instant::now();
    assert!(reader
        .read_batch(10, Duration::from_millis(50))
        .expect("read")
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(45));

    // A policy drop at egress (verdict 2, ct NEW, direction 2, type 1, reason 133).
    let drop = frame(2 << 4 | 2, 1 << 8 | 133, 5, 0x02);
    h.run_tc("mbr_test_events", &drop, 3).expect("run");
    // A forwarded reply at ingress (verdict 1, ct REPLY, direction 1, type 4).
    let reply = frame(1 << 4 | 2 << 2 | 1, 4 << 8, 6, 0x12);
    h.run_tc("mbr_test_events", &reply, 2).expect("run");

    let flows = reader
        .read_batch(100, Duration::from_secs(1))
        .expect("read");
    assert_eq!(flows.len(), 5, "{flows:#?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("epoch")
        .as_nanos() as u64;
    for f in &flows[..3] {
        assert_eq!(f.verdict, Verdict::Dropped);
        assert_eq!(f.event_type, EventType::Drop);
        assert_eq!(f.drop_reason_desc(), Some("POLICY_DENIED"));
        assert_eq!(f.traffic_direction.as_str(), "EGRESS");
        assert_eq!(f.source, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(f.source_identity, 1005);
        assert_eq!(f.policy_cookie, 0xc0ffee);
        assert!(
            matches!(
                f.l4,
                L4::Tcp {
                    source_port: 40_000,
                    destination_port: 8080,
                    ..
                }
            ),
            "{:?}",
            f.l4
        );
        assert!(!f.is_reply);
        assert!(
            now.abs_diff(f.time_ns) < 5_000_000_000,
            "wall clock {} vs now {now}",
            f.time_ns
        );
    }
    for f in &flows[3..] {
        assert_eq!(f.verdict.as_str(), "FORWARDED");
        assert_eq!(f.trace_reason, Some(TraceReason::Reply));
        assert!(f.is_reply);
        assert_eq!(f.summary(), "TCP Flags: SYN, ACK");
    }
    assert_eq!(reader.stats().decoded, 5);

    // A record the contract does not define is skipped and counted.
    h.run_tc("mbr_test_events", &frame(3 << 4, 9 << 8, 1, 0), 1)
        .expect("run");
    h.run_tc("mbr_test_events", &drop, 1).expect("run");
    let flows = reader
        .read_batch(100, Duration::from_secs(1))
        .expect("read");
    assert_eq!(flows.len(), 1);
    assert_eq!(reader.stats().malformed, 1);

    // Compact reads through the same decoder; max is honoured.
    h.run_tc("mbr_test_events", &drop, 10).expect("run");
    let mut out = Vec::new();
    assert_eq!(
        reader
            .read_compact(4, Duration::from_secs(1), &mut out)
            .expect("compact"),
        4
    );
    assert_eq!(out.len(), 4 * 64);
    assert_eq!(
        reader
            .read_compact(100, Duration::from_secs(1), &mut out)
            .expect("compact"),
        6
    );
}
