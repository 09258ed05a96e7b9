//! The datapath's benchmarks in machine-readable form for `npm run bench`:
//! prints a JSON array of `{bench, metric, value, unit, baseline, ratio,
//! target}` on stdout (progress on stderr). Same measurements as the
//! criterion benches (`crates/datapath/src/benchkit.rs`), each once, sized to
//! finish in well under a minute.
//!
//! ```text
//! cargo run --release -p membrane-datapath --example bench_json -- [maps] [gc] [packets] [--quick]
//! ```
//! With no group named, all run. `--quick` uses smaller sizes (CI smoke).
//! Needs root and BPF.

use std::process::ExitCode;

use membrane_datapath::benchkit::{
    gc_records, map_op_records, map_op_records_named, measure_ct_gc, measure_map_ops,
    measure_packets_over_loads, measure_policy_hash_noprealloc_ops, packet_records, BenchRecord,
    MapKind, Repeats,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let groups: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let known = ["maps", "gc", "packets"];
    if let Some(bad) = groups.iter().find(|g| !known.contains(g)) {
        eprintln!(
            "bench_json: unknown group {bad:?}; known: {}",
            known.join(", ")
        );
        return ExitCode::from(2);
    }
    let wants = |g: &str| groups.is_empty() || groups.contains(&g);
    let mut records: Vec<BenchRecord> = Vec::new();
    let mut failed = false;

    if wants("maps") {
        let sizes: &[usize] = if quick {
            &[10_000]
        } else {
            &[10_000, 100_000, 1_000_000]
        };
        for kind in [MapKind::Ct, MapKind::Policy, MapKind::PolicyTrie] {
            for &n in sizes {
                eprintln!("bench_json: map ops {} n={n}", kind.as_str());
                match measure_map_ops(kind, n) {
                    Ok(r) => records.extend(map_op_records(kind, &r)),
                    Err(e) => {
                        eprintln!("bench_json: map ops {} n={n}: {e}", kind.as_str());
                        failed = true;
                    }
                }
            }
        }
        // The exact policy entries' hash created BPF_F_NO_PREALLOC, for comparison.
        {
            let label = "policy-exact-hash-noprealloc";
            for &n in sizes {
                eprintln!("bench_json: map ops {label} n={n}");
                match measure_policy_hash_noprealloc_ops(n) {
                    Ok(r) => records.extend(map_op_records_named(label, &r)),
                    Err(e) => {
                        eprintln!("bench_json: map ops {label} n={n}: {e}");
                        failed = true;
                    }
                }
            }
        }
    }
    if wants("gc") {
        let n = if quick { 100_000 } else { 1_000_000 };
        // One in three expired (a stress case) and one in ten (a steady state).
        for expired_every in [3, 10] {
            eprintln!("bench_json: CT GC n={n}, 1 in {expired_every} expired");
            match measure_ct_gc(n, expired_every) {
                Ok(m) => records.extend(gc_records(&m)),
                Err(e) => {
                    eprintln!("bench_json: CT GC: {e}");
                    failed = true;
                }
            }
        }
    }
    if wants("packets") {
        let (ipcache, policy): (&[usize], &[usize]) = if quick {
            (&[10, 10_000], &[10])
        } else {
            (&[10, 10_000, 500_000], &[10, 50_000])
        };
        eprintln!("bench_json: ns/packet ipcache={ipcache:?} policy={policy:?}");
        // Three loads of the programs, each case the median over them (the
        // JIT image's placement varies per load; see the function's docs).
        let loads = if quick { 1 } else { 3 };
        match measure_packets_over_loads(ipcache, policy, Repeats::default(), 2_000, loads) {
            Ok((floor, times)) => records.extend(packet_records(&floor, &times)),
            Err(e) => {
                eprintln!("bench_json: ns/packet: {e}");
                failed = true;
            }
        }
    }

    let body: Vec<String> = records.iter().map(BenchRecord::to_json).collect();
    println!("[{}]", body.join(",\n"));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
