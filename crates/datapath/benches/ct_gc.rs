//! CT garbage collection: a table of 100k or 1M entries with one in three
//! expired; the collection (scan, re-check, delete) against a plain scan.
//!
//! `cargo bench -p membrane-datapath --bench ct_gc` (root).

use std::{ops::ControlFlow, time::Duration, time::Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use membrane_datapath::{
    batch::create_map,
    benchkit::{ct_entries, LRU_HASH},
    ct_gc::{self, GcOptions},
    maps::conntrack::{CtMap, CtTable},
};

fn ct_gc(c: &mut Criterion) {
    let mut g = c.benchmark_group("ct_gc");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in [100_000usize, 1_000_000] {
        let now = 100_000;
        let data = create_map("bench_gc", LRU_HASH, 16, 64, (n + n / 4 + 1024) as u32, 0)
            .expect("create map (root and BPF needed)");
        let map = CtMap::new(&data, CtTable::Tcp).expect("wrap");
        let (keys, values) = ct_entries(n, now, 3);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("collect_1_in_3_expired", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    map.insert(&keys, &values).expect("fill");
                    let t = Instant::now();
                    let report = ct_gc::run(
                        &[&map],
                        GcOptions {
                            now: Some(now),
                            ..GcOptions::default()
                        },
                    )
                    .expect("gc");
                    total += t.elapsed();
                    assert_eq!(report.scanned, n);
                }
                total
            })
        });
        g.bench_function(BenchmarkId::new("scan_only_baseline", n), |b| {
            map.insert(&keys, &values).expect("fill");
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    map.for_each_chunk(|_, _| ControlFlow::Continue(()))
                        .expect("scan");
                }
                t.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ct_gc);
criterion_main!(benches);
