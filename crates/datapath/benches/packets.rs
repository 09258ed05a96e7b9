//! ns/packet through BPF_PROG_TEST_RUN: the empty program (floor) and
//! bpf_lxc's new-flow, established, reply (`mbr_to_cont`) and denied paths with
//! 10 / 10k / 500k ipcache entries and 10 / 50k policy entries.
//!
//! Criterion's iteration count is the test run's `repeat`, so the time per
//! iteration is the kernel-measured time per packet. New flows are single
//! runs, each with a fresh source port (a repeated run would find the CT
//! entry its first repetition created), summed.
//!
//! `cargo bench -p membrane-datapath --bench packets` (root).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use membrane_datapath::{
    benchkit::{
        drain_events, flush_ct_tables, tcp_frame, LxcBench, Repeats, BENCH_ALLOWED_PORT,
        BENCH_DENIED_PORT, BENCH_EP_IP, BENCH_PEER_IP,
    },
    objects,
    testrun::Harness,
};

fn repeated(h: &mut Harness, prog: &str, frame: &[u8], iters: u64) -> Duration {
    let r = h
        .run_tc(prog, frame, iters.clamp(1, u64::from(u32::MAX)) as u32)
        .expect("test run");
    r.duration * iters as u32
}

fn packets(c: &mut Criterion) {
    let mut g = c.benchmark_group("packets");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let ack = tcp_frame(BENCH_EP_IP, BENCH_PEER_IP, 60_001, BENCH_ALLOWED_PORT, 0x10);
    let mut floor =
        Harness::load(&objects::BENCH_FLOOR).expect("load bench_floor (root and BPF needed)");
    g.bench_function("floor", |b| {
        b.iter_custom(|iters| repeated(&mut floor, "mbr_bench_floor", &ack, iters))
    });

    let mut lxc = LxcBench::load().expect("load bpf_lxc");
    for policy in [10usize, 50_000] {
        lxc.set_policy(policy).expect("policy");
        for ipcache in [10usize, 10_000, 500_000] {
            lxc.set_ipcache(ipcache).expect("ipcache");
            let case = format!("ipcache={ipcache},policy={policy}");
            lxc.flush_ct().expect("flush");
            // Checks the verdicts of every path once.
            lxc.measure(
                Repeats {
                    repeat: 1000,
                    rounds: 1,
                },
                100,
            )
            .expect("bpf_lxc paths");
            let h = lxc.harness_mut();
            let syn = tcp_frame(BENCH_EP_IP, BENCH_PEER_IP, 60_001, BENCH_ALLOWED_PORT, 0x02);
            h.run_tc("mbr_from_cont", &syn, 1).expect("create");
            g.bench_function(BenchmarkId::new("established", &case), |b| {
                b.iter_custom(|iters| repeated(h, "mbr_from_cont", &ack, iters))
            });
            let denied = tcp_frame(BENCH_EP_IP, BENCH_PEER_IP, 60_002, BENCH_DENIED_PORT, 0x02);
            let reply = tcp_frame(BENCH_PEER_IP, BENCH_EP_IP, BENCH_ALLOWED_PORT, 60_001, 0x10);
            g.bench_function(BenchmarkId::new("reply", &case), |b| {
                b.iter_custom(|iters| repeated(h, "mbr_to_cont", &reply, iters))
            });
            g.bench_function(BenchmarkId::new("denied", &case), |b| {
                // Every repetition writes events: drained first, so none
                // is lost for want of room (a reader would be attached).
                b.iter_custom(|iters| {
                    drain_events(h).expect("drain");
                    repeated(h, "mbr_from_cont", &denied, iters)
                })
            });
            let mut port = 0u32;
            g.bench_function(BenchmarkId::new("new_flow", &case), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        port = (port + 1) % 50_000;
                        if port.is_multiple_of(1000) {
                            drain_events(h).expect("drain");
                        }
                        if port == 0 {
                            // Every source port used once: start over with no entries.
                            flush_ct_tables(h).expect("flush");
                        }
                        let f = tcp_frame(
                            BENCH_EP_IP,
                            BENCH_PEER_IP,
                            10_000 + port as u16,
                            BENCH_ALLOWED_PORT,
                            0x02,
                        );
                        total += h.run_tc("mbr_from_cont", &f, 1).expect("test run").duration;
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, packets);
criterion_main!(benches);
