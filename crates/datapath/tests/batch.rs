//! Kernel tests (root, real BPF) of the batch map operations, the CT typed
//! wrapper and garbage collection, on maps created for the test (no pins).
//!
//! Without root or BPF these tests FAIL with an explanation (see
//! `common::require_kernel`); they never pass silently.

mod common;

use std::ops::ControlFlow;

use common::require_kernel;
use membrane_datapath::{
    batch::{create_map, BatchMap, BatchOp, PerCpuBatchMap, RawMap, Support},
    maps::{
        conntrack::{CtEntry, CtKey},
        ipcache::{IpcacheEntry, IpcacheKey},
        metrics::{MetricsKey, MetricsValue},
        policy::{PolicyEntry, PolicyKey},
    },
};

const HASH: u32 = 1;
const PERCPU_HASH: u32 = 5;
const LRU_HASH: u32 = 9;
const LPM_TRIE: u32 = 11;
const NO_PREALLOC: u32 = 1;

fn ct_key(i: u32) -> CtKey {
    CtKey {
        saddr: u32::from_ne_bytes([10, 0, (i >> 8) as u8, i as u8]),
        daddr: u32::from_ne_bytes([10, 1, (i >> 16) as u8, 1]),
        sport: (1024 + (i % 60000) as u16).to_be(),
        dport: 80u16.to_be(),
        proto: 6,
        direction: 2,
        pad: 0,
    }
}

#[test]
fn lru_hash_batch_update_dump_lookup_delete() {
    if !require_kernel("lru_hash_batch_update_dump_lookup_delete") {
        return;
    }
    let n = 20_000u32;
    let data = create_map("t_ct", LRU_HASH, 16, 64, n * 2, 0).expect("create");
    let map = BatchMap::<CtKey, CtEntry>::new(data, "t_ct")
        .expect("wrap")
        .with_chunk(1000);
    let keys: Vec<CtKey> = (0..n).map(ct_key).collect();
    let values: Vec<CtEntry> = (0..n)
        .map(|i| CtEntry {
            expires: i,
            fwd_packets: u64::from(i),
            ..CtEntry::default()
        })
        .collect();
    assert_eq!(map.update(&keys, &values).expect("update"), n as usize);
    assert_eq!(map.raw().support(BatchOp::Update), Support::Batch);

    let dumped = map.dump().expect("dump");
    assert_eq!(dumped.len(), n as usize);
    assert_eq!(map.raw().support(BatchOp::Lookup), Support::Batch);
    for (k, v) in &dumped {
        let i = u32::from(v.expires);
        assert_eq!(*k, ct_key(i));
        assert_eq!(v.fwd_packets, u64::from(i));
    }
    assert_eq!(map.iter().count(), n as usize);

    let looked = map.lookup(&[ct_key(5), ct_key(n + 5)]).expect("lookup");
    assert_eq!(looked[0].map(|v| v.expires), Some(5));
    assert_eq!(looked[1], None);

    // Delete half, plus keys that are absent: they count as missing.
    let mut del: Vec<CtKey> = (0..n).step_by(2).map(ct_key).collect();
    del.insert(10, ct_key(n + 1));
    del.push(ct_key(n + 2));
    let report = map.delete(&del).expect("delete");
    assert_eq!(report.deleted, (n / 2) as usize);
    assert_eq!(report.missing, 2);
    assert_eq!(map.dump().expect("dump").len(), (n / 2) as usize);

    let mut chunks = 0;
    let seen = map
        .for_each_chunk(|k, v| {
            assert_eq!(k.len(), v.len());
            chunks += 1;
            ControlFlow::Continue(())
        })
        .expect("walk");
    assert_eq!(seen, (n / 2) as usize);
    assert!(chunks >= 10, "{chunks} chunks of at most 1000");

    assert_eq!(map.clear().expect("clear"), (n / 2) as usize);
    assert!(map.dump().expect("dump").is_empty());
}

#[test]
fn lpm_trie_batch_ops_and_exact_dump() {
    if !require_kernel("lpm_trie_batch_ops_and_exact_dump") {
        return;
    }
    let data = create_map("t_ipc", LPM_TRIE, 8, 12, 10_000, NO_PREALLOC).expect("create");
    let map = BatchMap::<IpcacheKey, IpcacheEntry>::new(data, "t_ipc")
        .expect("wrap")
        .with_chunk(512);
    let mut keys = vec![IpcacheKey {
        prefixlen: 8,
        addr: u32::from_ne_bytes([10, 0, 0, 0]),
    }];
    let mut values = vec![IpcacheEntry {
        identity: 2,
        ..IpcacheEntry::default()
    }];
    for i in 0..3000u32 {
        keys.push(IpcacheKey {
            prefixlen: 32,
            addr: u32::from_ne_bytes([10, 1, (i >> 8) as u8, i as u8]),
        });
        values.push(IpcacheEntry {
            identity: 1000 + i,
            ..IpcacheEntry::default()
        });
    }
    assert_eq!(map.update(&keys, &values).expect("update"), keys.len());
    eprintln!(
        "lpm support after update: {:?}",
        map.raw().support(BatchOp::Update)
    );
    let mut dumped = map.dump().expect("dump");
    eprintln!(
        "lpm lookup support: {:?}",
        map.raw().support(BatchOp::Lookup)
    );
    assert_eq!(dumped.len(), keys.len());
    dumped.sort_by_key(|(k, _)| (k.prefixlen, u32::from_be(k.addr)));
    assert_eq!(dumped[0].0.prefixlen, 8);
    assert_eq!(
        dumped[0].1.identity, 2,
        "the /8 keeps its own value in a dump"
    );
    // Longest-prefix lookup capped at the key's prefix length.
    let probe = IpcacheKey {
        prefixlen: 32,
        addr: u32::from_ne_bytes([10, 9, 9, 9]),
    };
    assert_eq!(map.get(&probe).expect("get").map(|v| v.identity), Some(2));
    assert_eq!(map.iter().count(), keys.len());
    let report = map.delete(&keys[1..]).expect("delete");
    assert_eq!(report.deleted, 3000);
    eprintln!(
        "lpm delete support: {:?}",
        map.raw().support(BatchOp::Delete)
    );
    assert_eq!(map.dump().expect("dump").len(), 1);
    assert_eq!(map.clear().expect("clear"), 1);
}

#[test]
fn policy_lpm_partial_failure_names_map_op_errno() {
    if !require_kernel("policy_lpm_partial_failure_names_map_op_errno") {
        return;
    }
    let data = create_map("t_pol", LPM_TRIE, 16, 8, 100, NO_PREALLOC).expect("create");
    let map = BatchMap::<PolicyKey, PolicyEntry>::new(data, "t_pol").expect("wrap");
    let mut keys: Vec<PolicyKey> = (0..10u16)
        .map(|p| PolicyKey {
            prefixlen: 96,
            ep_id: 1,
            direction: 2,
            identity: 7,
            proto: 6,
            dport: p.to_be(),
            ..PolicyKey::default()
        })
        .collect();
    keys[4].prefixlen = 200; // beyond the trie's 96 bits: EINVAL
    let values = vec![
        PolicyEntry {
            action: 1,
            ..PolicyEntry::default()
        };
        10
    ];
    let err = map.update(&keys, &values).expect_err("bad prefix");
    assert_eq!(err.done, 4, "{err}");
    assert_eq!(err.error.errno(), Some(libc::EINVAL));
    let msg = err.to_string();
    assert!(
        msg.contains("map t_pol") && msg.contains("update") && msg.contains("EINVAL"),
        "{msg}"
    );
    assert!(msg.contains("after 4 of 10"), "{msg}");
    assert_eq!(map.dump().expect("dump").len(), 4);
}

#[test]
fn percpu_hash_batch_round_trip() {
    if !require_kernel("percpu_hash_batch_round_trip") {
        return;
    }
    let data = create_map("t_met", PERCPU_HASH, 4, 16, 64, 0).expect("create");
    let map = PerCpuBatchMap::<MetricsKey, MetricsValue>::new(data, "t_met").expect("wrap");
    let cpus = map.cpus();
    let keys: Vec<MetricsKey> = (0..10u8)
        .map(|r| MetricsKey {
            reason: r,
            direction: 1,
            pad: 0,
        })
        .collect();
    let values: Vec<Vec<MetricsValue>> = (0..10u64)
        .map(|r| {
            (0..cpus as u64)
                .map(|c| MetricsValue {
                    packets: r * 100 + c,
                    bytes: 1,
                })
                .collect()
        })
        .collect();
    map.update(&keys, &values).expect("update");
    let mut dumped = map.dump().expect("dump");
    dumped.sort_by_key(|(k, _)| k.reason);
    assert_eq!(dumped.len(), 10);
    for (k, per_cpu) in dumped {
        assert_eq!(per_cpu.len(), cpus);
        for (c, v) in per_cpu.iter().enumerate() {
            assert_eq!(v.packets, u64::from(k.reason) * 100 + c as u64);
        }
    }
    assert_eq!(map.delete(&keys).expect("delete").deleted, 10);
}

#[test]
fn hash_map_raw_buffers_and_size_checks() {
    if !require_kernel("hash_map_raw_buffers_and_size_checks") {
        return;
    }
    let data = create_map("t_ep", HASH, 4, 32, 1024, NO_PREALLOC).expect("create");
    let raw = RawMap::new(data, "t_ep").expect("wrap");
    let keys: Vec<u8> = (1u32..=3).flat_map(|k| k.to_ne_bytes()).collect();
    let values = vec![7u8; 3 * 32];
    assert_eq!(raw.update_raw(&keys, &values, 0).expect("update"), 3);
    let err = raw
        .update_raw(&keys, &values[..50], 0)
        .expect_err("short values");
    assert_eq!(err.error.errno(), Some(libc::EINVAL));
    let (k, v, n) = raw.dump_raw().expect("dump");
    assert_eq!((k.len(), v.len(), n), (12, 96, 3));
    assert!(
        BatchMap::<u64, u32, &_>::new(raw.map_data(), "t_ep").is_err(),
        "wrong key type is refused"
    );
}

#[test]
fn per_entry_fallback_paths_match_batch_results() {
    if !require_kernel("per_entry_fallback_paths_match_batch_results") {
        return;
    }
    for (name, map_type, flags) in [
        ("t_fb_lru", LRU_HASH, 0),
        ("t_fb_lpm", LPM_TRIE, NO_PREALLOC),
    ] {
        let data = create_map(name, map_type, 16, 64, 4096, flags).expect("create");
        let map = BatchMap::<CtKey, CtEntry>::new(data, name)
            .expect("wrap")
            .with_chunk(100);
        for op in [
            BatchOp::Lookup,
            BatchOp::LookupAndDelete,
            BatchOp::Update,
            BatchOp::Delete,
        ] {
            map.raw().force_per_entry(op);
        }
        // LPM keys need a prefix length in the first 4 bytes: saddr holds it.
        let keys: Vec<CtKey> = (0..1000u32)
            .map(|i| {
                let mut k = ct_key(i);
                if map_type == LPM_TRIE {
                    k.saddr = 96;
                }
                k
            })
            .collect();
        let values: Vec<CtEntry> = (0..1000u32)
            .map(|i| CtEntry {
                expires: i,
                ..CtEntry::default()
            })
            .collect();
        assert_eq!(map.update(&keys, &values).expect("update"), 1000, "{name}");
        assert_eq!(map.dump().expect("dump").len(), 1000, "{name}");
        assert_eq!(map.iter().count(), 1000, "{name}");
        let report = map.delete(&keys[..300]).expect("delete");
        assert_eq!((report.deleted, report.missing), (300, 0), "{name}");
        let report = map.delete(&keys[..10]).expect("delete again");
        assert_eq!((report.deleted, report.missing), (0, 10), "{name}");
        assert_eq!(map.clear().expect("clear"), 700, "{name}");
        assert!(map.dump().expect("dump").is_empty(), "{name}");
        assert_eq!(map.raw().support(BatchOp::Update), Support::PerEntry);
    }
}

mod gc {
    use super::*;
    use membrane_datapath::{
        ct_gc::{self, GcOptions},
        maps::conntrack::{CtMap, CtTable},
    };

    fn fill(map: &CtMap, n: u32, proto: u8, now: u32) -> Vec<CtKey> {
        let keys: Vec<CtKey> = (0..n).map(|i| CtKey { proto, ..ct_key(i) }).collect();
        // Every third entry expired, the others live.
        let values: Vec<CtEntry> = (0..n)
            .map(|i| CtEntry {
                expires: if i % 3 == 0 { now - 1 } else { now + 60 },
                ..CtEntry::default()
            })
            .collect();
        map.insert(&keys, &values).expect("insert");
        keys
    }

    #[test]
    fn gc_deletes_expired_entries_only() {
        if !require_kernel("gc_deletes_expired_entries_only") {
            return;
        }
        let now = 10_000;
        let tcp = CtMap::new(
            create_map("t_gc_tcp", LRU_HASH, 16, 64, 20_000, 0).expect("create"),
            CtTable::Tcp,
        )
        .expect("wrap");
        let any = CtMap::new(
            create_map("t_gc_any", LRU_HASH, 16, 64, 20_000, 0).expect("create"),
            CtTable::Any,
        )
        .expect("wrap");
        fill(&tcp, 9000, 6, now);
        fill(&any, 3000, 17, now);
        let report = ct_gc::run(
            &[&tcp, &any],
            GcOptions {
                now: Some(now),
                ..GcOptions::default()
            },
        )
        .expect("gc");
        assert_eq!(report.scanned, 12_000);
        assert_eq!(report.deleted, 4000);
        assert_eq!(report.tables[&CtTable::Tcp].deleted, 3000);
        assert_eq!(report.tables[&CtTable::Any].expired, 1000);
        assert_eq!(report.by_proto[&6].scanned, 9000);
        assert_eq!(report.by_proto[&6].deleted, 3000);
        assert_eq!(report.by_proto[&17].deleted, 1000);
        assert!(tcp
            .dump()
            .expect("dump")
            .iter()
            .all(|(_, e)| !e.is_expired(now)));
        assert_eq!(tcp.dump().expect("dump").len(), 6000);
        // A second pass finds nothing to do.
        let again = ct_gc::run(
            &[&tcp, &any],
            GcOptions {
                now: Some(now),
                ..GcOptions::default()
            },
        )
        .expect("gc");
        assert_eq!((again.scanned, again.deleted), (8000, 0));
    }

    #[test]
    fn gc_keeps_entries_refreshed_between_scan_and_delete() {
        if !require_kernel("gc_keeps_entries_refreshed_between_scan_and_delete") {
            return;
        }
        let now = 10_000;
        let tcp = CtMap::new(
            create_map("t_gc_race", LRU_HASH, 16, 64, 4096, 0).expect("create"),
            CtTable::Tcp,
        )
        .expect("wrap");
        fill(&tcp, 3000, 6, now);
        let mut refreshed = 0;
        let mut vanished = 0;
        // Play the datapath: between the scan and the delete, refresh every
        // other candidate and remove every fifth.
        let report = ct_gc::run_with_hook(
            &[&tcp],
            GcOptions {
                now: Some(now),
                recheck_batch: 64,
                ..GcOptions::default()
            },
            &mut |candidates| {
                for (i, key) in candidates.iter().enumerate() {
                    if i % 5 == 4 {
                        tcp.delete(&[*key]).expect("delete");
                        vanished += 1;
                    } else if i % 2 == 0 {
                        tcp.insert(
                            &[*key],
                            &[CtEntry {
                                expires: now + 30,
                                ..CtEntry::default()
                            }],
                        )
                        .expect("refresh");
                        refreshed += 1;
                    }
                }
            },
        )
        .expect("gc");
        assert_eq!(report.tables[&CtTable::Tcp].expired, 1000);
        assert_eq!(report.tables[&CtTable::Tcp].refreshed, refreshed);
        assert_eq!(report.tables[&CtTable::Tcp].vanished, vanished);
        assert_eq!(report.deleted, 1000 - refreshed - vanished);
        let left = tcp.dump().expect("dump");
        assert_eq!(left.len(), 2000 + refreshed);
        assert!(
            left.iter().all(|(_, e)| !e.is_expired(now)),
            "refreshed entries survive"
        );
    }
}

#[test]
fn typed_wrappers_expose_batch_operations() {
    if !require_kernel("typed_wrappers_expose_batch_operations") {
        return;
    }
    use membrane_datapath::{
        maps::{
            endpoint::{EndpointInfo, EndpointsByIfindex},
            ipcache::Ipcache,
            policy::PolicyMap,
        },
        objects::BPF_LXC,
        testrun::Harness,
    };
    let h = Harness::load(&BPF_LXC).expect("load bpf_lxc");
    let ebpf = h.ebpf();
    let policy = PolicyMap::from_maps(
        ebpf.map("mbr_policy_exact").expect("map"),
        ebpf.map("mbr_policy").expect("map"),
    )
    .expect("typed");
    let keys: Vec<PolicyKey> = (0..100u16)
        .map(|p| PolicyKey {
            prefixlen: 96,
            ep_id: 1,
            direction: 2,
            identity: 7,
            proto: 6,
            dport: p.to_be(),
            ..PolicyKey::default()
        })
        .collect();
    policy
        .update(
            &keys,
            &vec![
                PolicyEntry {
                    action: 1,
                    ..PolicyEntry::default()
                };
                100
            ],
        )
        .expect("update");
    assert_eq!(policy.exact().dump().expect("dump").len(), 100);
    let ipcache = Ipcache::try_from(ebpf.map("mbr_ipcache").expect("map")).expect("typed");
    ipcache
        .batch()
        .expect("batch")
        .update(
            &[IpcacheKey {
                prefixlen: 24,
                addr: u32::from_ne_bytes([10, 0, 0, 0]),
            }],
            &[IpcacheEntry {
                identity: 9,
                ..IpcacheEntry::default()
            }],
        )
        .expect("update");
    let eps =
        EndpointsByIfindex::try_from(ebpf.map("mbr_ep_ifindex").expect("map")).expect("typed");
    eps.batch()
        .expect("batch")
        .update(
            &[5],
            &[EndpointInfo {
                ifindex: 5,
                ..EndpointInfo::default()
            }],
        )
        .expect("update");
    assert_eq!(eps.batch().expect("batch").dump().expect("dump").len(), 1);
}
