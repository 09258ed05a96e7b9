//! Batch (one thread, and split over threads where the map type allows it)
//! vs. per-entry map operations on a conntrack table (LRU hash) and the
//! policy maps (exact-entry hash, LPM trie), 10k to 1M entries, in entries
//! per second.
//!
//! `cargo bench -p membrane-datapath --bench map_ops` (root; real BPF maps,
//! created for the run and gone after it).

use std::{ops::ControlFlow, time::Duration, time::Instant};

use aya::{maps::MapData, Pod};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use membrane_datapath::{
    batch::{BatchMap, BatchOp},
    benchkit::{create_bench_map, ct_entries, policy_entries, policy_trie_entries, MapKind},
};

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

fn run_kind<K: Pod, V: Pod>(c: &mut Criterion, kind: MapKind, n: usize, keys: &[K], values: &[V]) {
    let data: MapData = create_bench_map(kind, n).expect("create map (root and BPF needed)");
    let parallel = BatchMap::<K, V, &MapData>::new(&data, kind.as_str()).expect("wrap");
    let batch = BatchMap::<K, V, &MapData>::new(&data, kind.as_str())
        .expect("wrap")
        .with_write_threads(1);
    let single = BatchMap::<K, V, &MapData>::new(&data, kind.as_str()).expect("wrap");
    for op in [
        BatchOp::Update,
        BatchOp::Delete,
        BatchOp::Lookup,
        BatchOp::LookupAndDelete,
    ] {
        single.raw().force_per_entry(op);
    }
    let mut g = c.benchmark_group(format!("map_ops/{}", kind.as_str()));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(n as u64));
    for (label, map) in [
        ("batch", &batch),
        ("parallel", &parallel),
        ("per_entry", &single),
    ] {
        g.bench_function(BenchmarkId::new(format!("insert/{label}"), n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    batch.clear().expect("clear");
                    let t = Instant::now();
                    map.update(keys, values).expect("update");
                    total += t.elapsed();
                }
                total
            })
        });
        // Dumps and lookups have no parallel path.
        if label != "parallel" {
            g.bench_function(BenchmarkId::new(format!("lookup/{label}"), n), |b| {
                batch.update(keys, values).expect("fill");
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        if label == "batch" {
                            map.for_each_chunk(|_, _| ControlFlow::Continue(()))
                                .expect("dump");
                        } else {
                            map.lookup(keys).expect("lookup");
                        }
                    }
                    t.elapsed()
                })
            });
        }
        g.bench_function(BenchmarkId::new(format!("delete/{label}"), n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    batch.update(keys, values).expect("fill");
                    let t = Instant::now();
                    map.delete(keys).expect("delete");
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn map_ops(c: &mut Criterion) {
    for n in SIZES {
        let (k, v) = ct_entries(n, 1000, 0);
        run_kind(c, MapKind::Ct, n, &k, &v);
        let (k, v) = policy_entries(n);
        run_kind(c, MapKind::Policy, n, &k, &v);
        let (k, v) = policy_trie_entries(n);
        run_kind(c, MapKind::PolicyTrie, n, &k, &v);
    }
}

criterion_group!(benches, map_ops);
criterion_main!(benches);
