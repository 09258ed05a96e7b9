//! Batch map operations, CT garbage collection and map layouts for
//! JavaScript.
//!
//! Entries cross as `Buffer`s of packed C structs (the layouts of
//! `mapLayouts()`, little-endian host order, network-order fields as the C
//! side has them): one call moves a whole batch, and the Rust side hands the
//! buffers to `bpf(2)` without copying. The TypeScript codecs in
//! `ts/datapath/maps.ts` pack and unpack them. A `Buffer` given to a call must
//! not be modified until its promise settles.
//!
//! Maps are addressed by pin directory and name; each call opens the pin,
//! checks the map against this build's binding (type, key and value size)
//! and closes it again, so nothing is held between calls.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use membrane_datapath::{
    batch::{BatchError, RawMap},
    bpffs::PinDir,
    ct_gc::{self, GcOptions, GcReport},
    layout::TypeLayout,
    loader::{self, LoadOptions, MapPins},
    maps::{self, conntrack::proto_name},
    objects, DatapathError,
};
use napi::{bindgen_prelude::*, Env, Task};
use napi_derive::napi;

use crate::{bpffs_root_or_default, errors::to_js_error_with};

/// Which pinned map a batch call works on.
#[napi(object)]
pub struct MapTarget {
    /// Pin directory, e.g. `/sys/fs/bpf/membrane`.
    pub pin_dir: String,
    /// Map name, e.g. `mbr_policy` (see `mapLayouts()`).
    pub map: String,
    /// Where bpffs is mounted. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
}

/// Result of `mapUpdate`.
#[napi(object)]
pub struct MapUpdateResult {
    /// Entries written.
    pub written: u32,
    /// Time spent in the kernel calls (Rust side), nanoseconds.
    pub elapsed_ns: f64,
}

/// Result of `mapDelete`.
#[napi(object)]
pub struct MapDeleteResult {
    /// Entries removed.
    pub deleted: u32,
    /// Keys that were not in the map.
    pub missing: u32,
    /// Time spent in the kernel calls, nanoseconds.
    pub elapsed_ns: f64,
}

/// Result of `mapLookup`.
#[napi(object)]
pub struct MapLookupResult {
    /// One value per key (zeros where not found), `valueStride` bytes each.
    pub values: Buffer,
    /// One byte per key: 1 found, 0 not.
    pub found: Buffer,
    /// Keys found.
    pub count: u32,
    /// Bytes per value.
    pub value_stride: u32,
}

/// Result of `mapDump`.
#[napi(object)]
pub struct MapDumpResult {
    /// Packed keys, `keySize` bytes each.
    pub keys: Buffer,
    /// Packed values, `valueStride` bytes each.
    pub values: Buffer,
    /// Entries.
    pub count: u32,
    /// Bytes per key.
    pub key_size: u32,
    /// Bytes per value (per-CPU maps: rounded up to 8, times the number of possible CPUs).
    pub value_stride: u32,
    /// Time spent in the kernel calls, nanoseconds.
    pub elapsed_ns: f64,
}

/// One field of a C struct.
#[napi(object)]
pub struct FieldLayoutInfo {
    /// C member name.
    pub name: String,
    /// Byte offset.
    pub offset: u32,
    /// Byte size.
    pub size: u32,
}

/// A key or value type.
#[napi(object)]
pub struct TypeLayoutInfo {
    /// C type name (`policy_key`, `__u32`).
    pub c_name: String,
    /// Size in bytes (one CPU's slot for per-CPU values).
    pub size: u32,
    /// Fields (empty for scalars).
    pub fields: Vec<FieldLayoutInfo>,
}

/// A map of the datapath and its key and value layouts.
#[napi(object)]
pub struct MapLayoutInfo {
    /// Map name.
    pub name: String,
    /// `BPF_MAP_TYPE_*` name, e.g. `LpmTrie`.
    pub map_type: String,
    /// Whether values are per CPU.
    pub per_cpu: bool,
    /// Key layout.
    pub key: TypeLayoutInfo,
    /// Value layout.
    pub value: TypeLayoutInfo,
}

fn type_info(t: &TypeLayout) -> TypeLayoutInfo {
    TypeLayoutInfo {
        c_name: t.c_name.to_owned(),
        size: t.size as u32,
        fields: t
            .fields
            .iter()
            .map(|f| FieldLayoutInfo {
                name: f.name.to_owned(),
                offset: f.offset as u32,
                size: f.size as u32,
            })
            .collect(),
    }
}

/// The maps of the datapath with their key and value layouts, from the Rust
/// mirrors that the BTF layout check keeps equal to the C structs. The
/// TypeScript codecs check themselves against this.
#[napi]
pub fn map_layouts() -> Vec<MapLayoutInfo> {
    maps::map_bindings()
        .iter()
        .map(|b| MapLayoutInfo {
            name: b.name.to_owned(),
            map_type: format!("{:?}", b.map_type),
            per_cpu: format!("{:?}", b.map_type).contains("PerCpu"),
            key: type_info(&b.key),
            value: type_info(&b.value),
        })
        .collect()
}

/// How far a batch got before failing: `done` (a fully written prefix),
/// `written` (every entry written, `>= done` when large batches run as
/// concurrent slices), `total`. See `membrane_datapath::batch::BatchError`.
type BatchProgress = (usize, usize, usize);

/// A failure with, for partial batch failures, how far the batch got.
#[derive(Default)]
pub(crate) struct BatchFailure(Option<(DatapathError, Option<BatchProgress>)>);

impl BatchFailure {
    fn record(&mut self, e: DatapathError) -> Error {
        let message = e.to_string();
        self.0 = Some((e, None));
        Error::new(Status::GenericFailure, message)
    }

    fn record_batch(&mut self, e: BatchError) -> Error {
        let message = e.to_string();
        self.0 = Some((e.error, Some((e.done, e.written, e.total))));
        Error::new(Status::GenericFailure, message)
    }

    fn take_js_error(&mut self, env: &Env, err: Error) -> Error {
        match self.0.take() {
            Some((e, Some((done, written, total)))) => to_js_error_with(
                env,
                &e,
                &[
                    ("done", done as f64),
                    ("written", written as f64),
                    ("total", total as f64),
                ],
            ),
            Some((e, None)) => to_js_error_with(env, &e, &[]),
            None => err,
        }
    }
}

fn open_target(
    pin_dir: &str,
    bpffs_root: &PathBuf,
    map: &str,
) -> membrane_datapath::Result<RawMap> {
    let binding = maps::binding(map).ok_or_else(|| {
        let known: Vec<&str> = maps::map_bindings().iter().map(|b| b.name).collect();
        DatapathError::invalid(
            "map name",
            format!("{map:?} is not a datapath map; known: {}", known.join(", ")),
        )
    })?;
    let pins = PinDir::new(pin_dir, bpffs_root)?;
    RawMap::open_pinned(&pins.map(map), &binding)
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// What a map batch job does.
pub enum MapJob {
    /// Update with flags.
    Update {
        /// Keys.
        keys: Buffer,
        /// Values.
        values: Buffer,
        /// `BPF_*` flags.
        flags: u64,
    },
    /// Delete.
    Delete {
        /// Keys.
        keys: Buffer,
    },
    /// Look up given keys.
    Lookup {
        /// Keys.
        keys: Buffer,
    },
    /// Dump everything.
    Dump,
}

/// Output of a map job.
pub enum MapOutput {
    /// Of an update.
    Update(MapUpdateResult),
    /// Of a delete.
    Delete(MapDeleteResult),
    /// Of a lookup.
    Lookup(Vec<u8>, Vec<u8>, u32, u32),
    /// Of a dump.
    Dump(MapDumpResult),
}

/// Background job of the map batch calls.
pub struct MapTask {
    pin_dir: String,
    bpffs_root: PathBuf,
    map: String,
    job: MapJob,
    failure: BatchFailure,
}

impl MapTask {
    fn new(target: MapTarget, job: MapJob) -> AsyncTask<Self> {
        AsyncTask::new(Self {
            pin_dir: target.pin_dir,
            bpffs_root: bpffs_root_or_default(target.bpffs_root),
            map: target.map,
            job,
            failure: BatchFailure::default(),
        })
    }

    fn run(&mut self) -> std::result::Result<MapOutput, Error> {
        let raw = open_target(&self.pin_dir, &self.bpffs_root, &self.map)
            .map_err(|e| self.failure.record(e))?;
        match &self.job {
            MapJob::Update {
                keys,
                values,
                flags,
            } => {
                let t = Instant::now();
                let written = raw
                    .update_raw(keys, values, *flags)
                    .map_err(|e| self.failure.record_batch(e))?;
                Ok(MapOutput::Update(MapUpdateResult {
                    written: written as u32,
                    elapsed_ns: ns(t.elapsed()),
                }))
            }
            MapJob::Delete { keys } => {
                let t = Instant::now();
                let r = raw
                    .delete_raw(keys)
                    .map_err(|e| self.failure.record_batch(e))?;
                Ok(MapOutput::Delete(MapDeleteResult {
                    deleted: r.deleted as u32,
                    missing: r.missing as u32,
                    elapsed_ns: ns(t.elapsed()),
                }))
            }
            MapJob::Lookup { keys } => {
                if keys.len() % raw.key_size() != 0 {
                    return Err(self.failure.record(DatapathError::invalid(
                        "batch lookup input",
                        format!(
                            "map {}: {} key bytes are not a multiple of the key size {}",
                            self.map,
                            keys.len(),
                            raw.key_size()
                        ),
                    )));
                }
                let n = keys.len() / raw.key_size();
                let mut values = vec![0u8; n * raw.value_stride()];
                let mut found = vec![false; n];
                let count = raw
                    .lookup_raw(keys, &mut values, &mut found)
                    .map_err(|e| self.failure.record(e))?;
                let found = found.into_iter().map(u8::from).collect();
                Ok(MapOutput::Lookup(
                    values,
                    found,
                    count as u32,
                    raw.value_stride() as u32,
                ))
            }
            MapJob::Dump => {
                let t = Instant::now();
                let (keys, values, count) = raw.dump_raw().map_err(|e| self.failure.record(e))?;
                Ok(MapOutput::Dump(MapDumpResult {
                    keys: keys.into(),
                    values: values.into(),
                    count: count as u32,
                    key_size: raw.key_size() as u32,
                    value_stride: raw.value_stride() as u32,
                    elapsed_ns: ns(t.elapsed()),
                }))
            }
        }
    }
}

#[napi]
impl Task for MapTask {
    type Output = MapOutput;
    type JsValue = Either4<MapUpdateResult, MapDeleteResult, MapLookupResult, MapDumpResult>;

    fn compute(&mut self) -> Result<Self::Output> {
        self.run()
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(match output {
            MapOutput::Update(r) => Either4::A(r),
            MapOutput::Delete(r) => Either4::B(r),
            MapOutput::Lookup(values, found, count, value_stride) => Either4::C(MapLookupResult {
                values: values.into(),
                found: found.into(),
                count,
                value_stride,
            }),
            MapOutput::Dump(r) => Either4::D(r),
        })
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// Writes `keys[i] -> values[i]` into a pinned map in batches
/// (`BPF_MAP_UPDATE_BATCH`, per entry where the map type refuses batches).
/// `keys` and `values` are packed structs. `flags`: 0 any (default), 1 only
/// create, 2 only replace (those two entry by entry). Large batches are
/// written by several threads (contiguous slices; hash maps, not LPM tries).
/// A failure rejects with the errno as `code`, the map in `object`, and
/// `done` (entries `[0, done)` written), `written` (all entries written,
/// including any after the failing one by concurrent slices) and `total`.
#[napi(ts_return_type = "Promise<MapUpdateResult>")]
pub fn map_update(
    target: MapTarget,
    keys: Buffer,
    values: Buffer,
    flags: Option<u32>,
) -> AsyncTask<MapTask> {
    MapTask::new(
        target,
        MapJob::Update {
            keys,
            values,
            flags: u64::from(flags.unwrap_or(0)),
        },
    )
}

/// Deletes packed `keys` from a pinned map in batches; keys not present are
/// counted as `missing`, not errors.
#[napi(ts_return_type = "Promise<MapDeleteResult>")]
pub fn map_delete(target: MapTarget, keys: Buffer) -> AsyncTask<MapTask> {
    MapTask::new(target, MapJob::Delete { keys })
}

/// Looks up packed `keys` (one syscall per key, all in one call). On LPM
/// tries this is the datapath's longest-prefix match capped at each key's
/// prefix length.
#[napi(ts_return_type = "Promise<MapLookupResult>")]
pub fn map_lookup(target: MapTarget, keys: Buffer) -> AsyncTask<MapTask> {
    MapTask::new(target, MapJob::Lookup { keys })
}

/// Every entry of a pinned map (`BPF_MAP_LOOKUP_BATCH` chunks).
#[napi(ts_return_type = "Promise<MapDumpResult>")]
pub fn map_dump(target: MapTarget) -> AsyncTask<MapTask> {
    MapTask::new(target, MapJob::Dump)
}

// ---- CT GC --------------------------------------------------------------------------

/// Options of `ctGc`.
#[napi(object)]
pub struct CtGcOptions {
    /// Pin directory.
    pub pin_dir: String,
    /// Where bpffs is mounted. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
    /// CLOCK_MONOTONIC seconds to compare `expires` with; default now.
    pub now: Option<u32>,
}

/// One CT table's part of a collection.
#[napi(object)]
pub struct CtGcTableReport {
    /// `tcp` or `any`.
    #[napi(ts_type = "'tcp' | 'any'")]
    pub table: String,
    /// Entries scanned.
    pub scanned: u32,
    /// Seen expired by the scan.
    pub expired: u32,
    /// Deleted.
    pub deleted: u32,
    /// Live again at the re-check: kept.
    pub refreshed: u32,
    /// Gone before the delete.
    pub vanished: u32,
}

/// Counts of one IP protocol.
#[napi(object)]
pub struct CtGcProtoReport {
    /// IP protocol number.
    pub proto: u32,
    /// `TCP`, `UDP`, `ICMP`, ...
    pub name: String,
    /// Entries scanned.
    pub scanned: u32,
    /// Entries deleted.
    pub deleted: u32,
}

/// Result of `ctGc`.
#[napi(object)]
pub struct CtGcReport {
    /// The CLOCK_MONOTONIC seconds used.
    pub now: u32,
    /// Entries scanned.
    pub scanned: u32,
    /// Entries deleted.
    pub deleted: u32,
    /// Duration of the pass, milliseconds.
    pub duration_ms: f64,
    /// Per table.
    pub tables: Vec<CtGcTableReport>,
    /// Per IP protocol.
    pub by_proto: Vec<CtGcProtoReport>,
}

/// Background job of `ctGc`.
pub struct CtGcTask {
    pin_dir: String,
    bpffs_root: PathBuf,
    now: Option<u32>,
    failure: BatchFailure,
}

#[napi]
impl Task for CtGcTask {
    type Output = GcReport;
    type JsValue = CtGcReport;

    fn compute(&mut self) -> Result<Self::Output> {
        let pins =
            PinDir::new(&self.pin_dir, &self.bpffs_root).map_err(|e| self.failure.record(e))?;
        ct_gc::run_pinned(
            &pins,
            GcOptions {
                now: self.now,
                ..GcOptions::default()
            },
        )
        .map_err(|e| self.failure.record(e))
    }

    fn resolve(&mut self, _env: Env, r: Self::Output) -> Result<Self::JsValue> {
        Ok(CtGcReport {
            now: r.now,
            scanned: r.scanned as u32,
            deleted: r.deleted as u32,
            duration_ms: r.duration.as_secs_f64() * 1e3,
            tables: r
                .tables
                .iter()
                .map(|(t, s)| CtGcTableReport {
                    table: t.as_str().to_owned(),
                    scanned: s.scanned as u32,
                    expired: s.expired as u32,
                    deleted: s.deleted as u32,
                    refreshed: s.refreshed as u32,
                    vanished: s.vanished as u32,
                })
                .collect(),
            by_proto: r
                .by_proto
                .iter()
                .map(|(p, c)| CtGcProtoReport {
                    proto: u32::from(*p),
                    name: proto_name(*p).to_owned(),
                    scanned: c.scanned as u32,
                    deleted: c.deleted as u32,
                })
                .collect(),
        })
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// One conntrack garbage collection over `mbr_ct_tcp` and `mbr_ct_any`
/// pinned under `pinDir`: deletes entries whose `expires` is before `now`
/// (re-checking each right before its delete, so an entry the datapath
/// refreshed meanwhile is kept).
#[napi]
pub fn ct_gc(options: CtGcOptions) -> AsyncTask<CtGcTask> {
    AsyncTask::new(CtGcTask {
        pin_dir: options.pin_dir,
        bpffs_root: bpffs_root_or_default(options.bpffs_root),
        now: options.now,
        failure: BatchFailure::default(),
    })
}

/// CLOCK_MONOTONIC in seconds: the clock of conntrack's `expires`.
#[napi]
pub fn monotonic_seconds() -> u32 {
    ct_gc::monotonic_seconds()
}

// ---- test support ------------------------------------------------------------------

/// Options of `testOnlyPinDatapathMaps`.
#[napi(object)]
pub struct PinMapsOptions {
    /// Pin directory (created).
    pub pin_dir: String,
    /// Where bpffs is mounted. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
    /// `max_entries` of `mbr_ct_tcp` and `mbr_ct_any` (default: the object's).
    pub ct_entries: Option<u32>,
    /// `max_entries` of `mbr_policy_exact` and `mbr_policy`, each (default: the object's).
    pub policy_entries: Option<u32>,
}

/// Background job of `testOnlyPinDatapathMaps`.
pub struct PinMapsTask {
    options: PinMapsOptions,
    bpffs_root: PathBuf,
    failure: BatchFailure,
}

#[napi]
impl Task for PinMapsTask {
    type Output = Vec<String>;
    type JsValue = Vec<String>;

    fn compute(&mut self) -> Result<Self::Output> {
        let run = || -> membrane_datapath::Result<Vec<String>> {
            let pins = PinDir::new(&self.options.pin_dir, &self.bpffs_root)?;
            pins.prepare(&self.bpffs_root)?;
            let mut max_entries = Vec::new();
            if let Some(n) = self.options.ct_entries {
                max_entries.push((maps::conntrack::TCP_MAP.to_owned(), n));
                max_entries.push((maps::conntrack::ANY_MAP.to_owned(), n));
            }
            if let Some(n) = self.options.policy_entries {
                max_entries.push((maps::policy::EXACT_MAP_NAME.to_owned(), n));
                max_entries.push((maps::policy::MAP_NAME.to_owned(), n));
            }
            // Loading pins every map; the programs are unloaded again when
            // the object is dropped, the pinned maps stay.
            let ebpf = loader::load_with(
                &objects::BPF_LXC,
                MapPins::Dir(&pins),
                &LoadOptions { max_entries },
            )?;
            let names = ebpf.maps().map(|(n, _)| n.to_owned()).collect();
            Ok(names)
        };
        run().map_err(|e| self.failure.record(e))
    }

    fn resolve(&mut self, _env: Env, names: Self::Output) -> Result<Self::JsValue> {
        Ok(names)
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// TEST ONLY: creates and pins every map of `bpf_lxc` under `pinDir`
/// without attaching anything (what the node loader does before it
/// attaches), so tests and benchmarks can exercise the batch calls on real
/// pinned maps. Remove the pin directory to free them.
#[napi]
pub fn test_only_pin_datapath_maps(options: PinMapsOptions) -> AsyncTask<PinMapsTask> {
    let bpffs_root = bpffs_root_or_default(options.bpffs_root.clone());
    AsyncTask::new(PinMapsTask {
        options,
        bpffs_root,
        failure: BatchFailure::default(),
    })
}
