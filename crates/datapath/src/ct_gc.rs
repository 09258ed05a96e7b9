//! Conntrack garbage collection over `mbr_ct_tcp` and `mbr_ct_any`.
//!
//! The datapath treats an entry whose `expires` lies in the past as absent
//! (and overwrites it when the flow's next packet comes); LRU eviction only
//! reclaims space under pressure. This pass deletes expired entries so the
//! tables hold live connections only and dumps stay meaningful.
//!
//! One pass per table:
//! 1. scan the table with `BPF_MAP_LOOKUP_BATCH`, chunk by chunk;
//! 2. collect the keys whose `expires < now` (CLOCK_MONOTONIC seconds, the
//!    clock of `bpf_ktime_get_ns()`);
//! 3. every [`GcOptions::recheck_batch`] candidates, **re-read** each one with a
//!    lookup and keep only those still expired: an entry the datapath refreshed
//!    or recreated since the scan (a new `expires` in the future) is left alone;
//! 4. batch-delete the confirmed keys.
//!
//! Steps 3 and 4 run on a second thread while the scan goes on (the scan and
//! the re-checks each cost about half of a pass; both are syscall-bound).
//!
//! What remains racy, and why it is acceptable: the kernel has no
//! "delete if unchanged" for hash maps, so a packet that recreates the entry
//! in the microseconds between its re-check (step 3) and the delete (step 4)
//! loses that fresh entry. The window is one sub-batch (by default 256 keys,
//! tens of microseconds), and only entries that were idle for their whole
//! timeout are exposed to it. The effect of losing one is the effect of
//! expiry itself: the next packet of that flow is NEW and goes through
//! policy again. Without the re-check the window would be the whole scan.

use std::{
    borrow::Borrow,
    collections::BTreeMap,
    ops::ControlFlow,
    time::{Duration, Instant},
};

use aya::maps::MapData;

use crate::{
    batch::pod_bytes,
    bpffs::PinDir,
    error::{DatapathError, Result},
    maps::conntrack::{CtEntry, CtKey, CtMap, CtTable},
};

/// CLOCK_MONOTONIC in whole seconds: the `now` of the CT's `expires`.
pub fn monotonic_seconds() -> u32 {
    (monotonic_ns() / 1_000_000_000) as u32
}

/// CLOCK_MONOTONIC in nanoseconds (`bpf_ktime_get_ns()` reads the same clock).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How to collect.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// The time to compare `expires` with; `None`: CLOCK_MONOTONIC now.
    pub now: Option<u32>,
    /// Candidates re-checked and deleted together (the race window, see the
    /// module notes). At least 1.
    pub recheck_batch: usize,
    /// Skip the re-check and delete what the scan saw expired (faster, with
    /// a race window as long as the scan; for benchmarks and tests).
    pub no_recheck: bool,
    /// Re-check and delete on a second thread while the scan goes on.
    pub pipeline: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            now: None,
            recheck_batch: 256,
            no_recheck: false,
            pipeline: true,
        }
    }
}

/// Counts for one IP protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtoCounts {
    /// Entries scanned.
    pub scanned: usize,
    /// Entries deleted.
    pub deleted: usize,
}

/// What one table's pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    /// Entries scanned.
    pub scanned: usize,
    /// Entries seen expired by the scan.
    pub expired: usize,
    /// Of those, entries deleted.
    pub deleted: usize,
    /// Of those, entries found live again at the re-check (refreshed or
    /// recreated by the datapath since the scan): kept.
    pub refreshed: usize,
    /// Of those, entries gone before the delete (evicted, or deleted by
    /// someone else).
    pub vanished: usize,
}

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The `now` used (CLOCK_MONOTONIC seconds).
    pub now: u32,
    /// Entries scanned over both tables.
    pub scanned: usize,
    /// Entries deleted over both tables.
    pub deleted: usize,
    /// Per table.
    pub tables: BTreeMap<CtTable, TableReport>,
    /// Per IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...).
    pub by_proto: BTreeMap<u8, ProtoCounts>,
    /// Wall time of the whole pass.
    pub duration: Duration,
}

impl GcReport {
    fn add(&mut self, table: CtTable, report: TableReport) {
        self.scanned += report.scanned;
        self.deleted += report.deleted;
        let entry = self.tables.entry(table).or_default();
        entry.scanned += report.scanned;
        entry.expired += report.expired;
        entry.deleted += report.deleted;
        entry.refreshed += report.refreshed;
        entry.vanished += report.vanished;
    }
}

/// Collects both tables of a pin directory.
pub fn run_pinned(pins: &PinDir, opts: GcOptions) -> Result<GcReport> {
    let tcp = CtMap::open(pins, CtTable::Tcp)?;
    let any = CtMap::open(pins, CtTable::Any)?;
    run(&[&tcp, &any], opts)
}

/// Collects the given tables.
pub fn run<T: Borrow<MapData> + Sync>(tables: &[&CtMap<T>], opts: GcOptions) -> Result<GcReport> {
    run_inner(tables, opts, None)
}

/// [`run`], calling `before_recheck` with each sub-batch of candidates
/// right before it is re-checked. For tests that play the datapath
/// refreshing entries in the middle of a collection.
#[doc(hidden)]
pub fn run_with_hook<T: Borrow<MapData> + Sync>(
    tables: &[&CtMap<T>],
    opts: GcOptions,
    before_recheck: &mut dyn FnMut(&[CtKey]),
) -> Result<GcReport> {
    run_inner(tables, opts, Some(before_recheck))
}

fn run_inner<T: Borrow<MapData> + Sync>(
    tables: &[&CtMap<T>],
    opts: GcOptions,
    mut before_recheck: Option<&mut dyn FnMut(&[CtKey])>,
) -> Result<GcReport> {
    let started = Instant::now();
    let now = opts.now.unwrap_or_else(monotonic_seconds);
    let mut report = GcReport {
        now,
        ..GcReport::default()
    };
    for map in tables {
        let hook = before_recheck
            .as_mut()
            .map(|h| &mut **h as &mut dyn FnMut(&[CtKey]));
        let table = collect_table(map, now, opts, &mut report.by_proto, hook)?;
        report.add(map.table(), table);
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// What the re-check and delete of candidates found.
#[derive(Default)]
struct Sweep {
    deleted: usize,
    refreshed: usize,
    vanished: usize,
    deleted_by_proto: BTreeMap<u8, usize>,
}

/// Re-checks `candidates` and deletes those still expired.
fn sweep<T: Borrow<MapData>>(
    map: &CtMap<T>,
    now: u32,
    no_recheck: bool,
    candidates: &[CtKey],
    confirmed: &mut Vec<CtKey>,
    out: &mut Sweep,
) -> Result<()> {
    confirmed.clear();
    let raw = map.batch().raw();
    if no_recheck {
        confirmed.extend_from_slice(candidates);
    } else {
        let mut value = CtEntry::default();
        for key in candidates {
            let found = raw.lookup_one_raw(
                pod_bytes(std::slice::from_ref(key)),
                value_bytes(&mut value),
            )?;
            if !found {
                out.vanished += 1;
            } else if value.is_expired(now) {
                confirmed.push(*key);
            } else {
                out.refreshed += 1;
            }
        }
    }
    let mut missing_at = Vec::new();
    let deleted = raw
        .delete_raw_tracking(pod_bytes(confirmed), &mut |i| missing_at.push(i))
        .map_err(DatapathError::from)?;
    out.deleted += deleted.deleted;
    out.vanished += deleted.missing;
    let mut missing = missing_at.into_iter().peekable();
    for (i, key) in confirmed.iter().enumerate() {
        if missing.peek() == Some(&i) {
            missing.next();
            continue;
        }
        *out.deleted_by_proto.entry(key.proto).or_default() += 1;
    }
    Ok(())
}

fn collect_table<T: Borrow<MapData> + Sync>(
    map: &CtMap<T>,
    now: u32,
    opts: GcOptions,
    by_proto: &mut BTreeMap<u8, ProtoCounts>,
    before_recheck: Option<&mut dyn FnMut(&[CtKey])>,
) -> Result<TableReport> {
    let mut report = TableReport::default();
    let batch = opts.recheck_batch.max(1);
    let mut candidates: Vec<CtKey> = Vec::with_capacity(batch);
    let mut scanned_by_proto: BTreeMap<u8, usize> = BTreeMap::new();
    let mut scan =
        |report: &mut TableReport, send: &mut dyn FnMut(Vec<CtKey>) -> bool| -> Result<()> {
            let mut stopped = false;
            map.for_each_chunk(|keys, values| {
                for (key, value) in keys.iter().zip(values) {
                    report.scanned += 1;
                    *scanned_by_proto.entry(key.proto).or_default() += 1;
                    if value.is_expired(now) {
                        report.expired += 1;
                        candidates.push(*key);
                        if candidates.len() >= batch
                            && !send(std::mem::replace(
                                &mut candidates,
                                Vec::with_capacity(batch),
                            ))
                        {
                            stopped = true;
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            })?;
            if !stopped && !candidates.is_empty() {
                send(std::mem::take(&mut candidates));
            }
            Ok(())
        };

    let mut no_hook = |_: &[CtKey]| {};
    let inline_hook = match before_recheck {
        Some(hook) => Some(hook),
        None if !opts.pipeline => Some(&mut no_hook as &mut dyn FnMut(&[CtKey])),
        None => None,
    };
    let swept = match inline_hook {
        // Inline: scan, and re-check + delete each sub-batch as it fills.
        Some(hook) => {
            let mut out = Sweep::default();
            let mut confirmed = Vec::with_capacity(batch);
            let mut failure = None;
            scan(&mut report, &mut |c: Vec<CtKey>| {
                hook(&c);
                match sweep(map, now, opts.no_recheck, &c, &mut confirmed, &mut out) {
                    Ok(()) => true,
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            out
        }
        // Pipelined: the scan goes on while a second thread re-checks and
        // deletes the sub-batches it has already produced.
        None => std::thread::scope(|s| -> Result<Sweep> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<CtKey>>(16);
            let worker = s.spawn(move || -> Result<Sweep> {
                let mut out = Sweep::default();
                let mut confirmed = Vec::with_capacity(batch);
                for c in rx {
                    sweep(map, now, opts.no_recheck, &c, &mut confirmed, &mut out)?;
                }
                Ok(out)
            });
            let scanned = scan(&mut report, &mut |c: Vec<CtKey>| tx.send(c).is_ok());
            drop(tx);
            let swept = worker
                .join()
                .map_err(|_| DatapathError::invalid("CT GC", "the delete worker panicked"))?;
            scanned?;
            swept
        })?,
    };
    report.deleted = swept.deleted;
    report.refreshed = swept.refreshed;
    report.vanished = swept.vanished;
    for (proto, n) in scanned_by_proto {
        by_proto.entry(proto).or_default().scanned += n;
    }
    for (proto, n) in swept.deleted_by_proto {
        by_proto.entry(proto).or_default().deleted += n;
    }
    Ok(report)
}

fn value_bytes(value: &mut CtEntry) -> &mut [u8] {
    // SAFETY: CtEntry is a padding-free Pod mirror; any bytes are a valid value.
    unsafe {
        std::slice::from_raw_parts_mut(
            (value as *mut CtEntry).cast::<u8>(),
            std::mem::size_of::<CtEntry>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_is_seconds_since_boot() {
        let a = monotonic_seconds();
        let ns = monotonic_ns();
        assert!(u64::from(a) <= ns / 1_000_000_000);
        assert!(ns / 1_000_000_000 - u64::from(a) <= 1);
    }
}
