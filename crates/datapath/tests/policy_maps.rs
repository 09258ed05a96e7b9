//! Kernel tests (root, real BPF) of [`PolicyMap`], the pair of
//! `mbr_policy_exact` (hash, full-length keys) and `mbr_policy` (LPM trie,
//! shorter prefixes), on an unpinned copy of `bpf_lxc`'s maps. What the
//! datapath decides from them is tested in `packets.rs`.
//!
//! Without root or BPF these tests FAIL with an explanation (see
//! `common::require_kernel`); they never pass silently.

mod common;

use aya::maps::MapData;
use common::require_kernel;
use membrane_datapath::{
    maps::{
        abi::TrafficDirection,
        policy::{
            PolicyEntry, PolicyKey, PolicyMap, IPPROTO_TCP, IPPROTO_UDP, PREFIX_ANY_PORT,
            PREFIX_FULL,
        },
    },
    objects::BPF_LXC,
    testrun::Harness,
};

const EGRESS: TrafficDirection = TrafficDirection::Egress;

fn load(test: &str) -> Option<Harness> {
    require_kernel(test).then(|| Harness::load(&BPF_LXC).expect("load bpf_lxc"))
}

fn pair(h: &Harness) -> PolicyMap<&MapData> {
    PolicyMap::from_maps(
        h.ebpf().map("mbr_policy_exact").expect("map"),
        h.ebpf().map("mbr_policy").expect("map"),
    )
    .expect("typed")
}

/// A mix: exact ports, any-port, any-protocol and a port range.
fn mixed() -> (Vec<PolicyKey>, Vec<PolicyEntry>) {
    let mut keys = vec![
        PolicyKey::exact(1, EGRESS, 7, IPPROTO_TCP, 80),
        PolicyKey::exact(1, EGRESS, 0, IPPROTO_UDP, 53),
        PolicyKey::any_port(1, EGRESS, 7, IPPROTO_UDP),
        PolicyKey::any_proto(2, EGRESS, 9),
        PolicyKey::icmp(2, EGRESS, 0, 8),
    ];
    keys.extend(
        membrane_datapath::maps::policy::port_range_keys(1, EGRESS, 7, IPPROTO_TCP, 1000, 2000)
            .expect("range"),
    );
    let values = (0..keys.len() as u32).map(PolicyEntry::allow).collect();
    (keys, values)
}

#[test]
fn a_mixed_batch_is_routed_by_prefix_length() {
    let Some(h) = load("a_mixed_batch_is_routed_by_prefix_length") else {
        return;
    };
    let policy = pair(&h);
    let (keys, values) = mixed();
    assert_eq!(policy.update(&keys, &values).expect("update"), keys.len());

    let exact = policy.exact().dump().expect("dump");
    let trie = policy.trie().dump().expect("dump");
    // Three exact ports plus the range's last port (2000, a full-length prefix).
    assert_eq!(exact.len(), 4, "{exact:?}");
    assert!(exact.iter().all(|(k, _)| k.prefixlen == PREFIX_FULL));
    assert_eq!(trie.len(), keys.len() - 4, "{trie:?}");
    assert!(trie.iter().all(|(k, _)| k.prefixlen < PREFIX_FULL));

    // Every entry reads back through the pair, once.
    let mut expected: Vec<(PolicyKey, PolicyEntry)> =
        keys.iter().copied().zip(values.iter().copied()).collect();
    expected.sort_by_key(|(k, _)| {
        (
            k.ep_id,
            k.direction,
            k.identity,
            k.proto,
            k.port(),
            k.prefixlen,
        )
    });
    assert_eq!(policy.entries().expect("entries"), expected);
    for (k, v) in &expected {
        assert_eq!(policy.lookup(k).expect("lookup"), Some(*v), "{k:?}");
    }
    // A full-length lookup inside the range finds the trie's prefix.
    assert_eq!(
        policy
            .lookup(&PolicyKey::exact(1, EGRESS, 7, IPPROTO_TCP, 1500))
            .expect("lookup")
            .map(|e| e.action),
        Some(PolicyEntry::allow(0).action)
    );

    // Deleting the whole mix through the pair empties both maps.
    let report = policy.delete(&keys).expect("delete");
    assert_eq!((report.deleted, report.missing), (keys.len(), 0));
    assert!(policy.exact().dump().expect("dump").is_empty());
    assert!(policy.trie().dump().expect("dump").is_empty());
    let again = policy.delete(&keys).expect("delete");
    assert_eq!((again.deleted, again.missing), (0, keys.len()));
}

#[test]
fn a_full_key_in_both_maps_is_dumped_once_and_deleted_from_both() {
    let Some(h) = load("a_full_key_in_both_maps_is_dumped_once_and_deleted_from_both") else {
        return;
    };
    let policy = pair(&h);
    let stale = PolicyKey::exact(3, EGRESS, 5, IPPROTO_TCP, 22);
    let only_trie = PolicyKey::exact(3, EGRESS, 5, IPPROTO_TCP, 23);
    // Full keys in the trie, as a build without the hash wrote them.
    policy
        .trie()
        .update(
            &[stale, only_trie],
            &[PolicyEntry::allow(1), PolicyEntry::allow(2)],
        )
        .expect("old write");
    policy
        .insert(&stale, &PolicyEntry::deny(3))
        .expect("insert");

    assert_eq!(
        policy.entries().expect("entries"),
        [
            (stale, PolicyEntry::deny(3)),
            (only_trie, PolicyEntry::allow(2))
        ],
        "the hash's entry wins on the duplicate key"
    );
    assert_eq!(
        policy.lookup(&only_trie).expect("lookup"),
        Some(PolicyEntry::allow(2))
    );

    let report = policy.delete(&[stale, only_trie]).expect("delete");
    assert_eq!(
        (report.deleted, report.missing),
        (2, 0),
        "each key counts once"
    );
    assert!(policy.entries().expect("entries").is_empty());

    // remove_endpoint clears an endpoint from both maps, and only it.
    let (keys, values) = mixed();
    policy.update(&keys, &values).expect("update");
    policy
        .trie()
        .update(&[stale], &[PolicyEntry::allow(1)])
        .expect("old write");
    let of_1 = keys.iter().filter(|k| k.ep_id == 1).count();
    assert_eq!(policy.remove_endpoint(1).expect("remove"), of_1);
    assert_eq!(policy.remove_endpoint(3).expect("remove"), 1);
    let left = policy.entries().expect("entries");
    assert_eq!(left.len(), keys.len() - of_1);
    assert!(left.iter().all(|(k, _)| k.ep_id == 2));
}

#[test]
fn a_malformed_key_in_a_batch_writes_nothing() {
    let Some(h) = load("a_malformed_key_in_a_batch_writes_nothing") else {
        return;
    };
    let policy = pair(&h);
    let (mut keys, mut values) = mixed();
    for bad in [
        // Out of range prefix lengths, either side of the valid ones.
        PolicyKey {
            prefixlen: PREFIX_FULL + 1,
            ..PolicyKey::exact(1, EGRESS, 7, IPPROTO_TCP, 81)
        },
        PolicyKey {
            prefixlen: 40,
            ..PolicyKey::exact(1, EGRESS, 7, IPPROTO_TCP, 0)
        },
        // Port bits beyond the prefix.
        PolicyKey {
            prefixlen: PREFIX_ANY_PORT + 8,
            ..PolicyKey::exact(1, EGRESS, 7, IPPROTO_TCP, 0x1234)
        },
    ] {
        keys.push(bad);
        values.push(PolicyEntry::allow(99));
        let err = policy.update(&keys, &values).expect_err("refused");
        assert!(err.to_string().contains("policy key"), "{err}");
        assert!(policy.exact().dump().expect("dump").is_empty(), "{bad:?}");
        assert!(policy.trie().dump().expect("dump").is_empty(), "{bad:?}");
        keys.pop();
        values.pop();
    }
    // A bad value is refused the same way.
    values[0] = PolicyEntry::redirect(0, 1);
    assert!(policy.update(&keys, &values).is_err());
    assert!(policy.entries().expect("entries").is_empty());
    // Mismatched lengths too.
    assert!(policy.update(&keys, &values[1..]).is_err());
}
