//! Kernel tests (root, real BPF) of updates and deletes split over threads
//! (`RawMap::with_write_threads` / `with_parallel_min`): contents, the
//! threshold, and the failure contract of `BatchError` (`done` is a fully
//! written prefix, `written` counts every entry written).
//!
//! The thresholds are lowered and the thread count raised above the machine's
//! CPUs so that small maps are split into several slices of several chunks.
//!
//! Without root or BPF these tests FAIL with an explanation (see
//! `common::require_kernel`); they never pass silently.

mod common;

use std::collections::HashMap;

use common::require_kernel;
use membrane_datapath::{
    batch::{create_map, BatchMap, BPF_NOEXIST},
    maps::{
        conntrack::{CtEntry, CtKey},
        policy::{PolicyEntry, PolicyKey},
    },
};

const HASH: u32 = 1;
const LRU_HASH: u32 = 9;
const LPM_TRIE: u32 = 11;
const NO_PREALLOC: u32 = 1;

/// 16-byte keys and 8-byte values: the shape of the exact policy entries.
type Key = [u64; 2];

fn key(i: usize) -> Key {
    [i as u64, !(i as u64)]
}

fn value(i: usize) -> u64 {
    (i as u64) * 3 + 1
}

/// A hash map of `max` entries, split into 4 slices of 500-entry chunks from
/// 2000 entries on.
fn hash_map(name: &str, max: u32, flags: u32) -> BatchMap<Key, u64> {
    let data = create_map(name, HASH, 16, 8, max, flags).expect("create");
    BatchMap::<Key, u64>::new(data, name)
        .expect("wrap")
        .with_chunk(500)
        .with_write_threads(4)
        .with_parallel_min(2000)
}

fn contents(map: &BatchMap<Key, u64>) -> HashMap<Key, u64> {
    let dumped = map.dump().expect("dump");
    let n = dumped.len();
    let m: HashMap<Key, u64> = dumped.into_iter().collect();
    assert_eq!(m.len(), n, "a dump returned a key twice");
    m
}

#[test]
fn parallel_hash_write_then_dump_equals_input() {
    if !require_kernel("parallel_hash_write_then_dump_equals_input") {
        return;
    }
    for flags in [0, NO_PREALLOC] {
        let n = 20_000;
        let map = hash_map("t_par_hash", 30_000, flags);
        assert_eq!(map.raw().threads_for(n), 4);
        let keys: Vec<Key> = (0..n).map(key).collect();
        let values: Vec<u64> = (0..n).map(value).collect();
        assert_eq!(map.update(&keys, &values).expect("update"), n);
        let expected: HashMap<Key, u64> =
            keys.iter().copied().zip(values.iter().copied()).collect();
        assert_eq!(contents(&map), expected, "flags {flags}");

        // Replacing every value in parallel replaces every value.
        let doubled: Vec<u64> = values.iter().map(|v| v * 2).collect();
        assert_eq!(map.update(&keys, &doubled).expect("replace"), n);
        assert!(contents(&map)
            .iter()
            .all(|(k, v)| *v == value(k[0] as usize) * 2));

        let report = map.delete(&keys).expect("delete");
        assert_eq!((report.deleted, report.missing), (n, 0));
        assert!(contents(&map).is_empty());
    }
}

#[test]
fn parallel_lru_write_then_dump_equals_input() {
    if !require_kernel("parallel_lru_write_then_dump_equals_input") {
        return;
    }
    let n = 30_000u32;
    // Room to spare: an LRU hash evicts before it is full (per-CPU free lists).
    let data = create_map("t_par_ct", LRU_HASH, 16, 64, n * 2, 0).expect("create");
    let map = BatchMap::<CtKey, CtEntry>::new(data, "t_par_ct")
        .expect("wrap")
        .with_chunk(1000)
        .with_write_threads(3)
        .with_parallel_min(4000);
    assert_eq!(map.raw().threads_for(n as usize), 3);
    let keys: Vec<CtKey> = (0..n)
        .map(|i| CtKey {
            saddr: u32::from_ne_bytes([10, 2, (i >> 8) as u8, i as u8]),
            daddr: u32::from_ne_bytes([10, 3, (i >> 16) as u8, 1]),
            sport: (1024 + (i % 60_000) as u16).to_be(),
            dport: 443u16.to_be(),
            proto: 6,
            direction: 2,
            pad: 0,
        })
        .collect();
    let values: Vec<CtEntry> = (0..n)
        .map(|i| CtEntry {
            expires: i,
            fwd_bytes: u64::from(i) << 8,
            ..CtEntry::default()
        })
        .collect();
    assert_eq!(map.update(&keys, &values).expect("update"), n as usize);
    let dumped = map.dump().expect("dump");
    assert_eq!(dumped.len(), n as usize);
    let mut seen = vec![false; n as usize];
    for (k, v) in dumped {
        let i = v.expires as usize;
        assert_eq!(k, keys[i]);
        assert_eq!(v.fwd_bytes, (i as u64) << 8);
        assert!(!seen[i], "entry {i} twice");
        seen[i] = true;
    }
    let report = map.delete(&keys).expect("delete");
    assert_eq!(report.deleted, n as usize);
    assert!(map.dump().expect("dump").is_empty());
}

#[test]
fn threshold_boundary_behaves_the_same() {
    if !require_kernel("threshold_boundary_behaves_the_same") {
        return;
    }
    for (n, slices) in [(3999, 1), (4000, 2), (4001, 2)] {
        let data = create_map("t_par_edge", HASH, 16, 8, 8192, 0).expect("create");
        let map = BatchMap::<Key, u64>::new(data, "t_par_edge")
            .expect("wrap")
            .with_chunk(256)
            .with_write_threads(2)
            .with_parallel_min(4000);
        assert_eq!(map.raw().threads_for(n), slices, "n = {n}");
        let keys: Vec<Key> = (0..n).map(key).collect();
        let values: Vec<u64> = (0..n).map(value).collect();
        assert_eq!(map.update(&keys, &values).expect("update"), n);
        let expected: HashMap<Key, u64> = keys.iter().copied().zip(values).collect();
        assert_eq!(contents(&map), expected, "n = {n}");
        let report = map.delete(&keys).expect("delete");
        assert_eq!((report.deleted, report.missing), (n, 0), "n = {n}");
        assert!(contents(&map).is_empty(), "n = {n}");
    }
}

#[test]
fn failing_slice_reports_a_written_prefix_and_the_total_written() {
    if !require_kernel("failing_slice_reports_a_written_prefix_and_the_total_written") {
        return;
    }
    let n = 20_000;
    // One key of each failing position already exists: BPF_NOEXIST stops
    // its slice there with EEXIST. Positions in the first, a middle and the
    // last slice (slices of 5000).
    for taken in [1_234, 12_345, 19_999] {
        let map = hash_map("t_par_fail", 30_000, 0);
        map.update(&[key(taken)], &[7]).expect("prefill");
        let keys: Vec<Key> = (0..n).map(key).collect();
        let values: Vec<u64> = (0..n).map(value).collect();
        let err = map
            .update_with_flags(&keys, &values, BPF_NOEXIST)
            .expect_err("EEXIST");
        assert_eq!(err.error.errno(), Some(libc::EEXIST), "{err}");
        let msg = err.to_string();
        // BPF_NOEXIST goes entry by entry (the batch command refuses it).
        assert!(
            msg.contains("map t_par_fail") && msg.contains("update") && msg.contains("EEXIST"),
            "{msg}"
        );
        assert!(msg.contains(&format!("after {taken} of {n}")), "{msg}");
        // Slices before the failing one ran to completion: the prefix is
        // exactly the entries before the existing key.
        assert_eq!((err.done, err.total), (taken, n), "{err}");
        assert!(err.written >= err.done, "{err}");

        let map_now = contents(&map);
        assert_eq!(
            map_now.get(&key(taken)),
            Some(&7),
            "the existing entry is untouched"
        );
        for i in 0..taken {
            assert_eq!(
                map_now.get(&key(i)),
                Some(&value(i)),
                "entry {i} of the prefix"
            );
        }
        // `written` is exactly what the map gained.
        assert_eq!(map_now.len() - 1, err.written, "{err}");
        assert!(map_now
            .iter()
            .all(|(k, v)| k[0] as usize == taken || *v == value(k[0] as usize)));
    }
}

#[test]
fn failing_batch_slice_reports_a_written_prefix() {
    if !require_kernel("failing_batch_slice_reports_a_written_prefix") {
        return;
    }
    // An LPM trie refuses a prefix longer than its key (EINVAL) inside
    // BPF_MAP_UPDATE_BATCH, at a chosen entry. Tries are not split by
    // default; forcing it here exercises the batch path of the contract.
    let n = 20_000;
    for bad in [777, 13_001] {
        let data = create_map("t_par_lpm", LPM_TRIE, 16, 8, 30_000, NO_PREALLOC).expect("create");
        let map = BatchMap::<PolicyKey, PolicyEntry>::new(data, "t_par_lpm")
            .expect("wrap")
            .with_chunk(500)
            .with_write_threads(4)
            .with_parallel_min(2000);
        assert_eq!(map.raw().threads_for(n), 4);
        let mut keys: Vec<PolicyKey> = (0..n)
            .map(|i| PolicyKey {
                prefixlen: 96,
                ep_id: 1,
                direction: 2,
                identity: i as u32,
                proto: 6,
                dport: 80u16.to_be(),
                ..PolicyKey::default()
            })
            .collect();
        keys[bad].prefixlen = 200;
        let values: Vec<PolicyEntry> = (0..n)
            .map(|i| PolicyEntry {
                cookie: i as u32,
                ..PolicyEntry::default()
            })
            .collect();
        let err = map.update(&keys, &values).expect_err("bad prefix");
        assert_eq!(err.error.errno(), Some(libc::EINVAL), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("map t_par_lpm") && msg.contains("batch update") && msg.contains("EINVAL"),
            "{msg}"
        );
        assert_eq!((err.done, err.total), (bad, n), "{err}");
        let dumped = map.dump().expect("dump");
        assert_eq!(dumped.len(), err.written, "{err}");
        let mut written = vec![false; n];
        for (k, v) in dumped {
            assert_eq!(k.identity, v.cookie);
            written[k.identity as usize] = true;
        }
        assert!(written[..bad].iter().all(|w| *w), "the prefix is written");
        assert!(!written[bad]);
    }
}

#[test]
fn full_hash_without_prealloc_reports_e2big_and_what_was_written() {
    if !require_kernel("full_hash_without_prealloc_reports_e2big_and_what_was_written") {
        return;
    }
    let n = 20_000;
    let map = hash_map("t_par_full", 10_000, NO_PREALLOC);
    let keys: Vec<Key> = (0..n).map(key).collect();
    let values: Vec<u64> = (0..n).map(value).collect();
    let err = map.update(&keys, &values).expect_err("map too small");
    assert_eq!(err.error.errno(), Some(libc::E2BIG), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("map t_par_full") && msg.contains("batch update") && msg.contains("E2BIG"),
        "{msg}"
    );
    assert!(err.written >= err.done && err.written <= n, "{err}");
    let map_now = contents(&map);
    assert_eq!(map_now.len(), err.written, "{err}");
    for i in 0..err.done {
        assert_eq!(
            map_now.get(&key(i)),
            Some(&value(i)),
            "entry {i} of the prefix"
        );
    }
    assert!(map_now.iter().all(|(k, v)| *v == value(k[0] as usize)));
}

#[test]
fn parallel_delete_counts_and_reports_missing_keys_in_order() {
    if !require_kernel("parallel_delete_counts_and_reports_missing_keys_in_order") {
        return;
    }
    let n = 20_000;
    let map = hash_map("t_par_del", 30_000, 0);
    let keys: Vec<Key> = (0..n).map(key).collect();
    let values: Vec<u64> = (0..n).map(value).collect();
    map.update(&keys, &values).expect("fill");
    // Every 7th key of the delete list was never written; they fall into
    // every slice and at chunk edges.
    let del: Vec<Key> = (0..n + n / 6)
        .map(|j| {
            if j % 7 == 3 {
                key(1_000_000 + j)
            } else {
                key(j - j / 7 - usize::from(j % 7 > 3))
            }
        })
        .collect();
    let expected_missing: Vec<usize> = (0..del.len()).filter(|j| j % 7 == 3).collect();
    let mut missing = Vec::new();
    let report = map
        .raw()
        .delete_raw_tracking(membrane_datapath::batch::pod_bytes(&del), &mut |i| {
            missing.push(i)
        })
        .expect("delete");
    assert_eq!(missing, expected_missing);
    assert_eq!(report.missing, expected_missing.len());
    assert_eq!(report.deleted + report.missing, del.len());
    let left = contents(&map);
    assert_eq!(left.len(), n - report.deleted);
    for (k, _) in left {
        assert!(!del.contains(&k), "{k:?} was to be deleted");
    }
}
