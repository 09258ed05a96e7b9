//! Batch operations on BPF maps: `BPF_MAP_{LOOKUP,LOOKUP_AND_DELETE,UPDATE,DELETE}_BATCH`
//! issued with `bpf(2)` on a map's file descriptor (aya 0.14 has none of them).
//!
//! One syscall moves a whole chunk of entries (default [`DEFAULT_CHUNK`]), so
//! filling a 1M-entry conntrack table or dumping it costs a few hundred
//! syscalls instead of a million.
//!
//! Layers:
//! - [`RawMap`]: untyped, on byte buffers of packed keys and values. The N-API
//!   layer hands JavaScript `Buffer`s of packed C structs straight to it.
//! - [`BatchMap<K, V>`] and [`PerCpuBatchMap<K, V>`]: typed over the
//!   `#[repr(C)]` mirrors of `crate::maps` (any `aya::Pod`).
//!
//! Behaviour common to every operation:
//! - **Chunking**: inputs and dumps are split into chunks; the kernel is
//!   never asked for more than one chunk at a time.
//! - **End of a dump**: the kernel answers `ENOENT` together with the last,
//!   possibly empty, chunk; that is the normal end, not an error.
//! - **Threads**: updates and deletes of [`PARALLEL_MIN_ENTRIES`] entries or
//!   more are shared by one thread per CPU (hash and LRU maps lock per
//!   bucket; LPM tries, one lock, stay on the caller's thread): the threads
//!   claim units of the input in order from a shared counter.
//! - **Partial failure**: a failed update or delete reports the prefix of the
//!   input done before the failing entry ([`BatchError::done`]), every entry
//!   done ([`BatchError::written`], which may include entries after the
//!   failing one, written by other threads) and the errno, in an error that
//!   names the map and the operation.
//! - **Fallback**: a map type whose kernel code refuses a batch command
//!   (`ENOTSUPP`/`EOPNOTSUPP`, or `EINVAL` where the same entry succeeds on
//!   its own) is served by per-entry commands (`BPF_MAP_*_ELEM`, dumps by
//!   `BPF_MAP_GET_NEXT_KEY` iteration). The outcome is remembered per handle,
//!   so the probe costs one failed syscall. [`RawMap::support`] tells which
//!   path each operation takes.
//! - **Deletes** skip keys that are already gone (`ENOENT`) and count them as
//!   [`DeleteReport::missing`]; with a datapath writing concurrently (LRU
//!   eviction, CT garbage collection) absence is an expected outcome.
//!
//! LPM tries: lookups of given keys are longest-prefix matches capped at the
//! key's own prefix length (the kernel's semantics, as the datapath sees the
//! map): a key that is absent but covered by a shorter prefix returns the
//! shorter prefix's value. Dumps return the exact stored entries.
//!
//! Per-CPU maps: each value in user buffers is `round_up(value_size, 8)` bytes
//! times the number of possible CPUs, CPU 0 first (the kernel's layout).

use std::{
    borrow::Borrow,
    fmt::Write as _,
    io,
    marker::PhantomData,
    ops::{ControlFlow, Range},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::atomic::{AtomicU8, AtomicUsize, Ordering},
};

use aya::{
    maps::{Map, MapData},
    Pod,
};

use crate::{
    error::{DatapathError, Result},
    layout::MapBinding,
    maps::open_pinned,
    sys::errno_name,
};

/// Entries per batch syscall unless the handle says otherwise.
pub const DEFAULT_CHUNK: usize = 8192;

/// Input size (entries) from which updates and deletes are split over
/// threads; each thread then gets at least half of it (4096 entries, about
/// 2 ms of kernel time at ~2M/s), so a thread's start-up (tens of
/// microseconds) stays small against its share.
pub const PARALLEL_MIN_ENTRIES: usize = 8 * 1024;

/// Most threads one update or delete uses.
pub const MAX_WRITE_THREADS: usize = 8;

/// `BPF_MAP_TYPE_LPM_TRIE`: one lock for the whole trie.
const MAP_TYPE_LPM_TRIE: u32 = 11;

/// Threads a large update or delete of a map of `map_type` uses by default:
/// the online CPUs (at most [`MAX_WRITE_THREADS`]) for maps that lock per
/// bucket (hashes, LRU hashes, arrays); one for an LPM trie, which takes one
/// lock per update (a forced split measured 0.7-1.4x depending on the run:
/// the bench's `policy-lpm-trie` parallel column; not enabled until it holds).
pub fn default_write_threads(map_type: u32) -> usize {
    if map_type == MAP_TYPE_LPM_TRIE {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_WRITE_THREADS)
}

/// The kernel-internal `ENOTSUPP`, which bpf(2) leaks to user space when a
/// map type has no batch implementation.
pub const ENOTSUPP: i32 = 524;

// `enum bpf_cmd` (linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

// `enum bpf_map_type` values that need special handling.
const MAP_TYPE_PERCPU_HASH: u32 = 5;
const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
const MAP_TYPE_PERCPU_CGROUP_STORAGE: u32 = 21;

/// `BPF_F_LOCK`: update a value's `bpf_spin_lock`-protected part under the lock.
pub const BPF_F_LOCK: u64 = 4;

/// Whether `BPF_MAP_UPDATE_BATCH` takes these element flags: the kernel's
/// generic batch update refuses (`EINVAL`) all but `BPF_F_LOCK`, so
/// [`BPF_NOEXIST`] and [`BPF_EXIST`] writes go entry by entry.
fn batch_update_accepts(flags: u64) -> bool {
    flags & !BPF_F_LOCK == 0
}

/// `BPF_ANY`: create or replace.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: replace only.
pub const BPF_EXIST: u64 = 2;

/// `union bpf_attr`, the variant of the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `union bpf_attr`, the variant of the `BPF_MAP_*_ELEM` and `GET_NEXT_KEY` commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// `union bpf_attr`, the first fields of the `BPF_MAP_CREATE` variant.
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// Issues one bpf(2) command; the errno on failure.
fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> std::result::Result<libc::c_long, i32> {
    loop {
        // SAFETY: `attr` is a valid, initialised `#[repr(C)]` prefix of
        // `union bpf_attr` of the size passed; the pointers inside it point to
        // buffers the caller keeps alive and sized for the command.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut A as *mut u8,
                std::mem::size_of::<A>() as libc::c_uint,
            )
        };
        if ret >= 0 {
            return Ok(ret);
        }
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR || cmd == BPF_MAP_LOOKUP_BATCH {
            // LOOKUP_BATCH reports EINTR for "entry vanished while read",
            // handled by its caller; other commands are simply restarted.
            return Err(errno);
        }
    }
}

/// A human description of an errno, naming it: `"ENOENT (No such file or directory)"`.
pub fn describe_errno(errno: i32) -> String {
    let name = errno_name(errno).map_or_else(|| format!("errno {errno}"), str::to_owned);
    if errno == ENOTSUPP {
        return format!("{name} (operation not supported for this map type)");
    }
    format!("{name} ({})", io::Error::from_raw_os_error(errno))
}

/// A failed batch operation: which entries were done before it failed.
///
/// Updates and deletes of large inputs run as concurrent slices (see
/// [`RawMap::update_raw`]); the contract holds for both paths:
/// - entries `[0, done)` of the input were all done (written, or deleted /
///   found missing), and entry `done` is the one that failed;
/// - entries after `done` may also have been done, by later slices that ran
///   concurrently: `written` counts every entry done, wherever it is
///   (`written >= done`; equal on the one-thread path, where nothing after
///   the failing entry is attempted).
///
/// A caller that must know the map's exact contents after a failure
/// therefore treats entries after `done` as unknown (re-reads them, or
/// rewrites them: updates and deletes are idempotent).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct BatchError {
    /// Length of the input prefix completed (written, deleted, read) before
    /// the failing entry.
    pub done: usize,
    /// Entries completed in all, `done` plus any done after the failing
    /// entry by concurrent slices.
    pub written: usize,
    /// Entries the caller asked for.
    pub total: usize,
    /// The failure, naming the map, the operation and the errno. Its message
    /// also says `after <done> of <total> entries`.
    pub error: DatapathError,
}

impl From<BatchError> for DatapathError {
    fn from(e: BatchError) -> Self {
        e.error
    }
}

/// What a batch delete did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Entries removed.
    pub deleted: usize,
    /// Keys that were not in the map (nothing to do).
    pub missing: usize,
}

/// How an operation is carried out on one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Support {
    /// Not tried yet: the next call tries the batch command.
    Unknown = 0,
    /// The batch command works.
    Batch = 1,
    /// The kernel refused the batch command; per-entry commands are used.
    PerEntry = 2,
}

impl Support {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Batch,
            2 => Self::PerEntry,
            _ => Self::Unknown,
        }
    }
}

/// The batchable operations, for [`RawMap::support`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    /// `BPF_MAP_LOOKUP_BATCH` (dumps).
    Lookup = 0,
    /// `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (draining dumps).
    LookupAndDelete = 1,
    /// `BPF_MAP_UPDATE_BATCH`.
    Update = 2,
    /// `BPF_MAP_DELETE_BATCH`.
    Delete = 3,
}

impl BatchOp {
    fn batch_name(self) -> &'static str {
        match self {
            Self::Lookup => "batch lookup",
            Self::LookupAndDelete => "batch lookup and delete",
            Self::Update => "batch update",
            Self::Delete => "batch delete",
        }
    }
}

/// The `MapData` inside any variant of aya's `Map` (aya 0.14 has no accessor).
pub fn map_data_of(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    }
}

/// Number of possible CPUs (`/sys/devices/system/cpu/possible`): the number
/// of slots of a per-CPU value.
pub fn possible_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(path, e)| DatapathError::io("read", path, e))
}

/// Creates an unpinned map with `bpf(BPF_MAP_CREATE)`, for tests and
/// benchmarks that need a map of a given size without loading a program.
/// `map_type` is the raw `enum bpf_map_type` value.
pub fn create_map(
    name: &str,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> Result<MapData> {
    let mut attr = CreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        ..CreateAttr::default()
    };
    for (dst, src) in attr.map_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let fd = sys_bpf(BPF_MAP_CREATE, &mut attr).map_err(|errno| DatapathError::Op {
        op: "create map",
        object: format!("map {name}"),
        errno: Some(errno),
        detail: describe_errno(errno),
    })?;
    // SAFETY: BPF_MAP_CREATE returned a new fd that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    MapData::from_fd(fd).map_err(|e| DatapathError::op("adopt", format!("map {name}"), &e))
}

/// A map handle for batch operations on packed byte buffers.
///
/// `T` is `MapData` (owned, e.g. opened from a pin), `&MapData` (borrowed
/// from a loaded `aya::Ebpf`, see [`map_data_of`]) or anything that borrows one.
pub struct RawMap<T = MapData> {
    data: T,
    name: String,
    map_type: u32,
    key_size: usize,
    value_size: usize,
    value_stride: usize,
    max_entries: u32,
    percpu: bool,
    chunk: usize,
    write_threads: usize,
    parallel_min: usize,
    support: SupportFlags,
}

impl<T> std::fmt::Debug for RawMap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMap")
            .field("name", &self.name)
            .field("map_type", &self.map_type)
            .field("key_size", &self.key_size)
            .field("value_size", &self.value_size)
            .field("value_stride", &self.value_stride)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl RawMap<MapData> {
    /// Opens the map pinned at `path`, checking it against `binding` (type,
    /// key and value size), so typed access to it is sound.
    pub fn open_pinned(path: &Path, binding: &MapBinding) -> Result<Self> {
        let data = open_pinned(path, binding)?;
        Self::new(data, binding.name)
    }
}

impl<T: Borrow<MapData>> RawMap<T> {
    /// Wraps a map; `name` is used in errors. Reads the map's metadata from
    /// the kernel.
    pub fn new(data: T, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let info = data
            .borrow()
            .info()
            .map_err(|e| DatapathError::op("get info of", format!("map {name}"), &e))?;
        let map_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        let key_size = info.key_size() as usize;
        let value_size = info.value_size() as usize;
        let percpu = matches!(
            map_type,
            MAP_TYPE_PERCPU_HASH
                | MAP_TYPE_PERCPU_ARRAY
                | MAP_TYPE_LRU_PERCPU_HASH
                | MAP_TYPE_PERCPU_CGROUP_STORAGE
        );
        let value_stride = if percpu {
            value_size.div_ceil(8) * 8 * possible_cpus()?
        } else {
            value_size
        };
        Ok(Self {
            data,
            name,
            map_type,
            key_size,
            value_size,
            value_stride,
            max_entries: info.max_entries(),
            percpu,
            chunk: DEFAULT_CHUNK,
            write_threads: default_write_threads(map_type),
            parallel_min: PARALLEL_MIN_ENTRIES,
            support: Default::default(),
        })
    }

    /// Sets the entries per syscall (at least 1).
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Sets how many threads may share one large update or delete (1: always
    /// the caller's thread alone). The default is [`default_write_threads`].
    pub fn with_write_threads(mut self, threads: usize) -> Self {
        self.write_threads = threads.max(1);
        self
    }

    /// Sets the input size from which updates and deletes are split over
    /// threads (default [`PARALLEL_MIN_ENTRIES`]); every slice gets at least
    /// half of it.
    pub fn with_parallel_min(mut self, entries: usize) -> Self {
        self.parallel_min = entries.max(2);
        self
    }

    /// The map's name, as used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw `enum bpf_map_type`.
    pub fn map_type(&self) -> u32 {
        self.map_type
    }

    /// Key size in bytes.
    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// Value size in bytes as the map declares it (one CPU's slot).
    pub fn value_size(&self) -> usize {
        self.value_size
    }

    /// Bytes per value in user buffers: the value size, or for per-CPU maps
    /// `round_up(value_size, 8) * possible CPUs`.
    pub fn value_stride(&self) -> usize {
        self.value_stride
    }

    /// Whether values are per CPU.
    pub fn is_percpu(&self) -> bool {
        self.percpu
    }

    /// The map's capacity.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Entries per syscall.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Threads a large update or delete may use.
    pub fn write_threads(&self) -> usize {
        self.write_threads
    }

    /// Input size from which updates and deletes use several threads.
    pub fn parallel_min(&self) -> usize {
        self.parallel_min
    }

    /// Threads an update or delete of `total` entries uses.
    pub fn threads_for(&self, total: usize) -> usize {
        self.plan(total).threads
    }

    fn plan(&self, total: usize) -> Plan {
        parallel_plan(total, self.write_threads, self.parallel_min, self.chunk)
    }

    /// The wrapped map.
    pub fn map_data(&self) -> &MapData {
        self.data.borrow()
    }

    /// How `op` is carried out on this map so far.
    pub fn support(&self, op: BatchOp) -> Support {
        self.support.get(op)
    }

    /// Forces per-entry commands for `op` (benchmarks compare both paths).
    pub fn force_per_entry(&self, op: BatchOp) {
        self.set_support(op, Support::PerEntry);
    }

    fn set_support(&self, op: BatchOp, s: Support) {
        self.support.set(op, s);
    }

    fn fd(&self) -> u32 {
        self.data.borrow().fd().as_fd_raw()
    }

    fn object(&self) -> String {
        format!("map {}", self.name)
    }

    fn fail(&self, op: &'static str, errno: i32, done: usize, total: usize) -> BatchError {
        self.fail_written(op, errno, done, done, total)
    }

    /// A failure after the first `done` entries, with `written` entries done
    /// in all (see [`BatchError`]).
    fn fail_written(
        &self,
        op: &'static str,
        errno: i32,
        done: usize,
        written: usize,
        total: usize,
    ) -> BatchError {
        let mut detail = format!("{} after {done} of {total} entries", describe_errno(errno));
        if written > done {
            let _ = write!(
                detail,
                " ({} more after the failing one, by concurrent slices)",
                written - done
            );
        }
        BatchError {
            done,
            written,
            total,
            error: DatapathError::Op {
                op,
                object: self.object(),
                errno: Some(errno),
                detail,
            },
        }
    }

    fn check_buffers(
        &self,
        what: &'static str,
        keys: &[u8],
        values: Option<&[u8]>,
    ) -> Result<usize> {
        if keys.len() % self.key_size != 0 {
            return Err(DatapathError::invalid(
                what,
                format!(
                    "map {}: {} key bytes are not a multiple of the key size {}",
                    self.name,
                    keys.len(),
                    self.key_size
                ),
            ));
        }
        let count = keys.len() / self.key_size;
        if let Some(values) = values {
            if values.len() != count * self.value_stride {
                return Err(DatapathError::invalid(
                    what,
                    format!(
                        "map {}: {} keys need {} value bytes ({} per value), got {}",
                        self.name,
                        count,
                        count * self.value_stride,
                        self.value_stride,
                        values.len()
                    ),
                ));
            }
        }
        Ok(count)
    }

    /// Whether a failed first batch attempt means "no batch support here".
    fn refuses_batch(errno: i32) -> bool {
        matches!(errno, ENOTSUPP | libc::EOPNOTSUPP | libc::ENOSYS)
    }

    // ---- per-entry primitives ------------------------------------------------

    fn slice_worker(&self) -> SliceWorker<'_> {
        SliceWorker {
            fd: self.fd(),
            key_size: self.key_size,
            value_stride: self.value_stride,
            chunk: self.chunk,
            support: &self.support,
        }
    }

    fn elem_lookup(&self, key: *const u8, value: *mut u8) -> std::result::Result<(), i32> {
        let mut attr = ElemAttr {
            map_fd: self.fd(),
            key: key as u64,
            value_or_next_key: value as u64,
            ..ElemAttr::default()
        };
        sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
    }

    /// `BPF_MAP_GET_NEXT_KEY`; `Ok(false)` at the end.
    fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> std::result::Result<bool, i32> {
        let mut attr = ElemAttr {
            map_fd: self.fd(),
            key: key.map_or(0, |k| k.as_ptr() as u64),
            value_or_next_key: next.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        match sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- update ---------------------------------------------------------------

    /// Writes `keys[i] -> values[i]` (packed, `key_size` and
    /// [`value_stride`](Self::value_stride) bytes each) with `flags`
    /// ([`BPF_ANY`], [`BPF_NOEXIST`], [`BPF_EXIST`]; the last two one
    /// `UPDATE_ELEM` per entry, as the batch command refuses them). Returns
    /// the number of entries written (all of them).
    ///
    /// Inputs of at least [`parallel_min`](Self::parallel_min) entries are
    /// split into contiguous slices written concurrently on the same map
    /// (see [`BatchError`] for what a failure then means).
    pub fn update_raw(
        &self,
        keys: &[u8],
        values: &[u8],
        flags: u64,
    ) -> std::result::Result<usize, BatchError> {
        let total = self
            .check_buffers("batch update input", keys, Some(values))
            .map_err(|error| BatchError {
                done: 0,
                written: 0,
                total: 0,
                error,
            })?;
        let worker = self.slice_worker();
        let outcomes = run_units(total, self.plan(total), |range, stop| {
            worker.update_slice(keys, values, flags, range, stop)
        });
        let mut written = 0;
        let mut prefix = 0;
        let mut failure = None;
        for (range, outcome) in outcomes {
            written += outcome.done;
            if failure.is_none() {
                prefix = range.start + outcome.done;
                failure = outcome.failure;
            }
        }
        match failure {
            None => Ok(total),
            Some((op, errno)) => Err(self.fail_written(op, errno, prefix, written, total)),
        }
    }

    // ---- delete ---------------------------------------------------------------

    /// Deletes the packed `keys`. Keys not in the map are skipped and counted
    /// as missing; any other failure stops with the number deleted so far.
    /// Large inputs are split over threads like [`update_raw`](Self::update_raw).
    pub fn delete_raw(&self, keys: &[u8]) -> std::result::Result<DeleteReport, BatchError> {
        self.delete_raw_tracking(keys, &mut |_| {})
    }

    /// [`delete_raw`](Self::delete_raw), calling `on_missing` with the index
    /// of each key that was not in the map (in increasing order, after the
    /// deletes).
    pub fn delete_raw_tracking(
        &self,
        keys: &[u8],
        on_missing: &mut dyn FnMut(usize),
    ) -> std::result::Result<DeleteReport, BatchError> {
        let total = self
            .check_buffers("batch delete input", keys, None)
            .map_err(|error| BatchError {
                done: 0,
                written: 0,
                total: 0,
                error,
            })?;
        let worker = self.slice_worker();
        let outcomes = run_units(total, self.plan(total), |range, stop| {
            worker.delete_slice(keys, range, stop)
        });
        let mut report = DeleteReport::default();
        let mut prefix = 0;
        let mut failure = None;
        for (range, outcome) in outcomes {
            // `done` counts keys handled: deleted or found missing.
            report.deleted += outcome.done - outcome.missing.len();
            report.missing += outcome.missing.len();
            for i in outcome.missing {
                on_missing(i);
            }
            if failure.is_none() {
                prefix = range.start + outcome.done;
                failure = outcome.failure;
            }
        }
        match failure {
            None => Ok(report),
            Some((op, errno)) => {
                Err(self.fail_written(op, errno, prefix, report.deleted + report.missing, total))
            }
        }
    }

    // ---- lookup of given keys ---------------------------------------------------

    /// Looks up each packed key; writes its value into `values_out` (same
    /// index, [`value_stride`](Self::value_stride) bytes each) and sets
    /// `found[i]`. The kernel has no batch command for given keys: this is one
    /// syscall per key, on the caller's thread (the point is one crossing from
    /// the caller). Returns the number found.
    pub fn lookup_raw(
        &self,
        keys: &[u8],
        values_out: &mut [u8],
        found: &mut [bool],
    ) -> Result<usize> {
        let total = self.check_buffers("batch lookup input", keys, Some(values_out))?;
        if found.len() != total {
            return Err(DatapathError::invalid(
                "batch lookup input",
                format!("{} found flags for {total} keys", found.len()),
            ));
        }
        let mut hits = 0;
        for i in 0..total {
            let k = keys[i * self.key_size..].as_ptr();
            let v = values_out[i * self.value_stride..].as_mut_ptr();
            match self.elem_lookup(k, v) {
                Ok(()) => {
                    found[i] = true;
                    hits += 1;
                }
                Err(libc::ENOENT) => found[i] = false,
                Err(errno) => return Err(self.fail("lookup", errno, i, total).error),
            }
        }
        Ok(hits)
    }

    /// Looks up one packed key; `Ok(false)` when absent.
    pub fn lookup_one_raw(&self, key: &[u8], value_out: &mut [u8]) -> Result<bool> {
        if key.len() != self.key_size || value_out.len() != self.value_stride {
            return Err(DatapathError::invalid(
                "lookup input",
                format!(
                    "map {}: key of {} bytes (expected {}), value buffer of {} (expected {})",
                    self.name,
                    key.len(),
                    self.key_size,
                    value_out.len(),
                    self.value_stride
                ),
            ));
        }
        match self.elem_lookup(key.as_ptr(), value_out.as_mut_ptr()) {
            Ok(()) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(errno) => Err(self.fail("lookup", errno, 0, 1).error),
        }
    }

    // ---- dumps ------------------------------------------------------------------

    /// Walks the whole map chunk by chunk (`BPF_MAP_LOOKUP_BATCH`, or
    /// `GET_NEXT_KEY` + lookup where batch lookup is refused). `f` gets each
    /// chunk as packed keys, packed values and the entry count, and may stop
    /// the walk. With `delete`, every returned entry is also removed
    /// (`LOOKUP_AND_DELETE_BATCH`, or per entry). Returns the entries visited.
    ///
    /// A walk is not a snapshot: entries written concurrently may or may not
    /// appear; hash maps return no entry twice unless it was deleted and
    /// re-added during the walk.
    pub fn for_each_chunk_raw<F>(&self, delete: bool, mut f: F) -> Result<usize>
    where
        F: FnMut(&[u8], &[u8], usize) -> ControlFlow<()>,
    {
        let op = if delete {
            BatchOp::LookupAndDelete
        } else {
            BatchOp::Lookup
        };
        let mut chunk = self.chunk;
        let mut keys = AlignedBuf::new(chunk * self.key_size);
        let mut values = AlignedBuf::new(chunk * self.value_stride);
        // The batch token: a u32 bucket index for hash maps, a key for others.
        let token_len = self.key_size.max(8);
        let mut in_token = AlignedBuf::new(token_len);
        let mut out_token = AlignedBuf::new(token_len);
        let mut first = true;
        let mut visited = 0usize;
        let mut retries = 0;
        loop {
            if self.support(op) == Support::PerEntry {
                return self.walk_per_entry(delete, chunk, visited, &mut f);
            }
            let cmd = if delete {
                BPF_MAP_LOOKUP_AND_DELETE_BATCH
            } else {
                BPF_MAP_LOOKUP_BATCH
            };
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { in_token.as_ptr() as u64 },
                out_batch: out_token.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: chunk as u32,
                map_fd: self.fd(),
                ..BatchAttr::default()
            };
            let result = sys_bpf(cmd, &mut attr);
            // On success, ENOENT (end) and EINTR the kernel wrote the count;
            // early failures leave our input there, which means nothing read.
            let n = match result {
                Ok(_) | Err(libc::ENOENT) | Err(libc::EINTR) => (attr.count as usize).min(chunk),
                Err(_) => 0,
            };
            let end = match result {
                Ok(_) => false,
                Err(libc::ENOENT) => true,
                Err(libc::ENOSPC) if n == 0 => {
                    // A hash bucket holds more entries than fit: grow and retry.
                    if chunk >= 1 << 20 {
                        return Err(self
                            .fail(op.batch_name(), libc::ENOSPC, visited, visited)
                            .error);
                    }
                    chunk *= 2;
                    keys = AlignedBuf::new(chunk * self.key_size);
                    values = AlignedBuf::new(chunk * self.value_stride);
                    continue;
                }
                Err(libc::EINTR) if retries < 16 => {
                    // Generic batch lookup: an entry vanished between its key
                    // and its value; what was read before it is valid.
                    retries += 1;
                    false
                }
                Err(errno)
                    if first
                        && n == 0
                        && self.support(op) == Support::Unknown
                        && (Self::refuses_batch(errno) || errno == libc::EINVAL) =>
                {
                    self.set_support(op, Support::PerEntry);
                    continue;
                }
                Err(errno) => {
                    return Err(self.fail(op.batch_name(), errno, visited, visited).error)
                }
            };
            self.set_support(op, Support::Batch);
            if n > 0 {
                visited += n;
                let flow = f(
                    &keys.bytes()[..n * self.key_size],
                    &values.bytes()[..n * self.value_stride],
                    n,
                );
                if flow.is_break() {
                    return Ok(visited);
                }
                // The next call continues after what this one returned.
                std::mem::swap(&mut in_token, &mut out_token);
                first = false;
            }
            if end {
                return Ok(visited);
            }
        }
    }

    /// The per-entry fallback of [`for_each_chunk_raw`](Self::for_each_chunk_raw):
    /// `GET_NEXT_KEY` + `LOOKUP_ELEM` per entry. With `delete`, each chunk is
    /// removed (batch delete where supported) after `f` saw it, and the next
    /// chunk starts over from the first remaining key.
    fn walk_per_entry<F>(
        &self,
        delete: bool,
        chunk: usize,
        mut visited: usize,
        f: &mut F,
    ) -> Result<usize>
    where
        F: FnMut(&[u8], &[u8], usize) -> ControlFlow<()>,
    {
        let mut keys = AlignedBuf::new(chunk * self.key_size);
        let mut values = AlignedBuf::new(chunk * self.value_stride);
        let mut cursor = vec![0u8; self.key_size];
        let mut have_cursor = false;
        // A walk that keeps restarting (keys deleted under it) is bounded.
        let limit = (self.max_entries as usize).saturating_mul(4).max(1 << 16);
        let mut steps = 0usize;
        loop {
            let mut n = 0;
            let mut end = false;
            while n < chunk {
                let next = &mut keys.bytes_mut()[n * self.key_size..(n + 1) * self.key_size];
                match self.next_key(have_cursor.then_some(cursor.as_slice()), next) {
                    Ok(true) => {}
                    Ok(false) => {
                        end = true;
                        break;
                    }
                    Err(errno) => {
                        return Err(self.fail("get next key", errno, visited, visited).error)
                    }
                }
                steps += 1;
                if steps > limit {
                    // Keys keep vanishing under the walk (each GET_NEXT_KEY on
                    // a deleted key restarts from the first one).
                    return Err(self
                        .fail("get next key", libc::EAGAIN, visited, visited)
                        .error);
                }
                cursor.copy_from_slice(next);
                have_cursor = true;
                let v = values.bytes_mut()[n * self.value_stride..].as_mut_ptr();
                match self.elem_lookup(cursor.as_ptr(), v) {
                    Ok(()) => n += 1,
                    Err(libc::ENOENT) => {} // deleted since its key was read
                    Err(errno) => {
                        return Err(self.fail("lookup", errno, visited + n, visited + n).error)
                    }
                }
            }
            if n > 0 {
                visited += n;
                let flow = f(
                    &keys.bytes()[..n * self.key_size],
                    &values.bytes()[..n * self.value_stride],
                    n,
                );
                if delete {
                    self.delete_raw(&keys.bytes()[..n * self.key_size])
                        .map_err(DatapathError::from)?;
                    have_cursor = false;
                }
                if flow.is_break() {
                    return Ok(visited);
                }
            }
            if end {
                return Ok(visited);
            }
        }
    }

    /// The whole map as packed keys and values, and the entry count.
    pub fn dump_raw(&self) -> Result<(Vec<u8>, Vec<u8>, usize)> {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let count = self.for_each_chunk_raw(false, |k, v, _| {
            keys.extend_from_slice(k);
            values.extend_from_slice(v);
            ControlFlow::Continue(())
        })?;
        Ok((keys, values, count))
    }

    /// Removes every entry, returning how many were removed
    /// (`LOOKUP_AND_DELETE_BATCH`, or chunks read then batch-deleted where
    /// the map type has no such command, e.g. LPM tries).
    pub fn clear(&self) -> Result<usize> {
        self.for_each_chunk_raw(true, |_, _, _| ControlFlow::Continue(()))
    }
}

/// How each [`BatchOp`] is carried out on one map so far, learnt from the
/// kernel's first answers; shared by a [`RawMap`] and its slice workers.
#[derive(Default)]
struct SupportFlags([AtomicU8; 4]);

impl SupportFlags {
    fn get(&self, op: BatchOp) -> Support {
        Support::from_u8(self.0[op as usize].load(Ordering::Relaxed))
    }

    fn set(&self, op: BatchOp, s: Support) {
        self.0[op as usize].store(s as u8, Ordering::Relaxed);
    }
}

/// What the slices of a parallel update or delete need of a [`RawMap`]: plain
/// numbers, the fd and the shared support flags, so it is `Sync` whatever
/// the map handle `T` is. Borrowed from the `RawMap`, which keeps the fd open.
struct SliceWorker<'a> {
    fd: u32,
    key_size: usize,
    value_stride: usize,
    chunk: usize,
    support: &'a SupportFlags,
}

impl SliceWorker<'_> {
    fn support(&self, op: BatchOp) -> Support {
        self.support.get(op)
    }

    fn set_support(&self, op: BatchOp, s: Support) {
        self.support.set(op, s);
    }

    fn fd(&self) -> u32 {
        self.fd
    }

    fn refuses_batch(errno: i32) -> bool {
        RawMap::<MapData>::refuses_batch(errno)
    }

    fn elem_update(
        &self,
        key: *const u8,
        value: *const u8,
        flags: u64,
    ) -> std::result::Result<(), i32> {
        elem_update_fd(self.fd, key, value, flags)
    }

    fn elem_delete(&self, key: *const u8) -> std::result::Result<(), i32> {
        elem_delete_fd(self.fd, key)
    }

    /// Writes the entries of `range`, stopping between chunks when `stop`
    /// says an earlier slice failed.
    fn update_slice(
        &self,
        keys: &[u8],
        values: &[u8],
        flags: u64,
        range: Range<usize>,
        stop: &dyn Fn() -> bool,
    ) -> SliceOutcome {
        let mut pos = range.start;
        while pos < range.end {
            if stop() {
                break;
            }
            if self.support(BatchOp::Update) == Support::PerEntry || !batch_update_accepts(flags) {
                return self.update_per_entry(
                    keys,
                    values,
                    flags,
                    pos..range.end,
                    stop,
                    range.start,
                );
            }
            let n = (range.end - pos).min(self.chunk);
            let mut attr = BatchAttr {
                keys: keys[pos * self.key_size..].as_ptr() as u64,
                values: values[pos * self.value_stride..].as_ptr() as u64,
                count: n as u32,
                map_fd: self.fd(),
                elem_flags: flags,
                ..BatchAttr::default()
            };
            match sys_bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
                Ok(_) => {
                    self.set_support(BatchOp::Update, Support::Batch);
                    pos += n;
                }
                Err(errno) => {
                    let written = processed_before_error(attr.count, n);
                    if written == 0 && self.support(BatchOp::Update) == Support::Unknown {
                        if Self::refuses_batch(errno) {
                            self.set_support(BatchOp::Update, Support::PerEntry);
                            continue;
                        }
                        if errno == libc::EINVAL {
                            // Is it the command or the entry? Try the entry alone.
                            let k = keys[pos * self.key_size..].as_ptr();
                            let v = values[pos * self.value_stride..].as_ptr();
                            if self.elem_update(k, v, flags).is_ok() {
                                self.set_support(BatchOp::Update, Support::PerEntry);
                                pos += 1;
                                continue;
                            }
                        }
                    }
                    return SliceOutcome::failed(
                        pos + written - range.start,
                        "batch update",
                        errno,
                    );
                }
            }
        }
        SliceOutcome::ok(pos - range.start)
    }

    fn update_per_entry(
        &self,
        keys: &[u8],
        values: &[u8],
        flags: u64,
        rest: Range<usize>,
        stop: &dyn Fn() -> bool,
        slice_start: usize,
    ) -> SliceOutcome {
        for pos in rest.clone() {
            // Checked every chunk's worth of entries, like the batch path.
            if (pos - rest.start).is_multiple_of(self.chunk) && stop() {
                return SliceOutcome::ok(pos - slice_start);
            }
            let k = keys[pos * self.key_size..].as_ptr();
            let v = values[pos * self.value_stride..].as_ptr();
            if let Err(errno) = self.elem_update(k, v, flags) {
                return SliceOutcome::failed(pos - slice_start, "update", errno);
            }
        }
        SliceOutcome::ok(rest.end - slice_start)
    }

    /// Deletes the keys of `range`; see [`update_slice`](Self::update_slice).
    fn delete_slice(
        &self,
        keys: &[u8],
        range: Range<usize>,
        stop: &dyn Fn() -> bool,
    ) -> SliceOutcome {
        let mut out = SliceOutcome::ok(0);
        let mut pos = range.start;
        while pos < range.end {
            if stop() {
                break;
            }
            if self.support(BatchOp::Delete) == Support::PerEntry {
                return self.delete_per_entry(keys, pos..range.end, stop, range.start, out);
            }
            let n = (range.end - pos).min(self.chunk);
            let mut attr = BatchAttr {
                keys: keys[pos * self.key_size..].as_ptr() as u64,
                count: n as u32,
                map_fd: self.fd(),
                ..BatchAttr::default()
            };
            match sys_bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
                Ok(_) => {
                    self.set_support(BatchOp::Delete, Support::Batch);
                    pos += n;
                }
                Err(errno) => {
                    let removed = processed_before_error(attr.count, n);
                    if errno == libc::ENOENT && removed < n {
                        // Key number `removed` of the chunk is absent: skip it.
                        self.set_support(BatchOp::Delete, Support::Batch);
                        out.missing.push(pos + removed);
                        pos += removed + 1;
                        continue;
                    }
                    if removed == 0 && self.support(BatchOp::Delete) == Support::Unknown {
                        if Self::refuses_batch(errno) {
                            self.set_support(BatchOp::Delete, Support::PerEntry);
                            continue;
                        }
                        if errno == libc::EINVAL {
                            let k = keys[pos * self.key_size..].as_ptr();
                            match self.elem_delete(k) {
                                Ok(()) => {
                                    self.set_support(BatchOp::Delete, Support::PerEntry);
                                    pos += 1;
                                    continue;
                                }
                                Err(libc::ENOENT) => {
                                    self.set_support(BatchOp::Delete, Support::PerEntry);
                                    out.missing.push(pos);
                                    pos += 1;
                                    continue;
                                }
                                Err(_) => {}
                            }
                        }
                    }
                    out.done = pos + removed - range.start;
                    out.failure = Some(("batch delete", errno));
                    return out;
                }
            }
        }
        out.done = pos - range.start;
        out
    }

    fn delete_per_entry(
        &self,
        keys: &[u8],
        rest: Range<usize>,
        stop: &dyn Fn() -> bool,
        slice_start: usize,
        mut out: SliceOutcome,
    ) -> SliceOutcome {
        for pos in rest.clone() {
            if (pos - rest.start).is_multiple_of(self.chunk) && stop() {
                out.done = pos - slice_start;
                return out;
            }
            match self.elem_delete(keys[pos * self.key_size..].as_ptr()) {
                Ok(()) => {}
                Err(libc::ENOENT) => out.missing.push(pos),
                Err(errno) => {
                    out.done = pos - slice_start;
                    out.failure = Some(("delete", errno));
                    return out;
                }
            }
        }
        out.done = rest.end - slice_start;
        out
    }
}

/// `BPF_MAP_UPDATE_ELEM` on `fd`.
fn elem_update_fd(
    fd: u32,
    key: *const u8,
    value: *const u8,
    flags: u64,
) -> std::result::Result<(), i32> {
    let mut attr = ElemAttr {
        map_fd: fd,
        key: key as u64,
        value_or_next_key: value as u64,
        flags,
        ..ElemAttr::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_DELETE_ELEM` on `fd`.
fn elem_delete_fd(fd: u32, key: *const u8) -> std::result::Result<(), i32> {
    let mut attr = ElemAttr {
        map_fd: fd,
        key: key as u64,
        ..ElemAttr::default()
    };
    sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// Smallest share of work a thread claims at a time in a parallel update or
/// delete: one syscall of at least this many entries keeps the claim and
/// syscall costs (about a microsecond) small against the work (~0.2 ms).
const MIN_UNIT: usize = 512;

/// Units of work per thread: enough that a thread which starts late (a
/// thread takes 0.1-1 ms to start on this VM, longer when the other CPU is
/// busy) or runs slower just claims fewer of them.
const UNITS_PER_THREAD: usize = 8;

/// How an update or delete of `total` entries is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Threads, the caller's included. 1 below `parallel_min` entries; above
    /// it at most the configured count, each with at least `parallel_min / 2`
    /// entries' worth of input.
    threads: usize,
    /// Entries per unit of work: threads claim contiguous units in input
    /// order (`k * unit ..`). The whole input when there is one thread.
    unit: usize,
}

fn parallel_plan(total: usize, threads: usize, parallel_min: usize, chunk: usize) -> Plan {
    let threads = if total < parallel_min {
        1
    } else {
        threads.min(total / (parallel_min / 2).max(1)).max(1)
    };
    let unit = if threads == 1 {
        total.max(1)
    } else {
        (total / (threads * UNITS_PER_THREAD))
            .max(MIN_UNIT)
            .min(chunk)
            .max(1)
    };
    Plan { threads, unit }
}

/// What one slice of an update or delete did.
struct SliceOutcome {
    /// Entries of the slice done from its start (written, or deleted or
    /// found missing), before the failure if any.
    done: usize,
    /// Indices (in the whole input) of keys a delete found absent.
    missing: Vec<usize>,
    /// The operation and errno that stopped the slice.
    failure: Option<(&'static str, i32)>,
}

impl SliceOutcome {
    fn ok(done: usize) -> Self {
        Self {
            done,
            missing: Vec::new(),
            failure: None,
        }
    }

    fn failed(done: usize, op: &'static str, errno: i32) -> Self {
        Self {
            done,
            missing: Vec::new(),
            failure: Some((op, errno)),
        }
    }
}

/// Runs `f` over the input of `total` entries as `plan` says and returns
/// the outcomes in input order, each with its index range.
///
/// With several threads, the caller's thread and `plan.threads - 1` scoped
/// threads claim units in input order from a shared counter until none is
/// left, so work is balanced whenever each thread gets to run. When unit `k`
/// fails, no unit after it is claimed any more and those in progress stop at
/// their next chunk boundary (their entries are beyond the reported prefix
/// anyway), while every unit before `k` has been claimed and runs to
/// completion: the reported prefix is as long as it can be. Units never
/// claimed are absent from the result (all of them after the failing one).
fn run_units<F>(total: usize, plan: Plan, f: F) -> Vec<(Range<usize>, SliceOutcome)>
where
    F: Fn(Range<usize>, &dyn Fn() -> bool) -> SliceOutcome + Sync,
{
    if plan.threads <= 1 {
        return vec![(0..total, f(0..total, &|| false))];
    }
    let unit = plan.unit.max(1);
    let units = total.div_ceil(unit);
    let next = AtomicUsize::new(0);
    let first_failed = AtomicUsize::new(usize::MAX);
    let work = || {
        let mut outcomes = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= units || first_failed.load(Ordering::Relaxed) < k {
                return outcomes;
            }
            let stop = || first_failed.load(Ordering::Relaxed) < k;
            let range = k * unit..((k + 1) * unit).min(total);
            let out = f(range.clone(), &stop);
            if out.failure.is_some() {
                first_failed.fetch_min(k, Ordering::Relaxed);
            }
            outcomes.push((range, out));
        }
    };
    let mut outcomes = std::thread::scope(|scope| {
        let work = &work;
        // A thread that cannot be started just leaves more units to the others.
        let helpers: Vec<_> = (1..plan.threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("mbr-map-batch".to_owned())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        let mut all = work();
        for h in helpers {
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    outcomes.sort_unstable_by_key(|(range, _)| range.start);
    outcomes
}

/// Entries an update or delete batch completed before failing. The kernel
/// writes the count back when it stops at an entry; a failure before the
/// first entry (bad flags, a map type without batch support) leaves the
/// caller's input count in place, which therefore means none.
fn processed_before_error(count: u32, asked: usize) -> usize {
    let count = count as usize;
    if count >= asked {
        0
    } else {
        count
    }
}

/// Helper trait: the raw fd number of aya's `MapFd`, as bpf_attr wants it.
trait AsFdRaw {
    fn as_fd_raw(&self) -> u32;
}

impl AsFdRaw for aya::maps::MapFd {
    fn as_fd_raw(&self) -> u32 {
        use std::os::fd::AsFd as _;
        self.as_fd().as_raw_fd() as u32
    }
}

/// A byte buffer aligned to 8 (so typed views of keys and values are aligned).
struct AlignedBuf {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0u64; len.div_ceil(8).max(1)],
            len,
        }
    }

    fn as_ptr(&self) -> *const u8 {
        self.words.as_ptr().cast()
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr().cast()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.len) }
    }
}

// ---- typed layer ----------------------------------------------------------------

/// The bytes of a slice of plain-old-data values.
pub fn pod_bytes<T: Pod>(items: &[T]) -> &[u8] {
    // SAFETY: Pod types are `Copy`, have no padding (the mirrors prove it at
    // compile time) and any initialised value is valid to read as bytes.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast(), std::mem::size_of_val(items)) }
}

/// Reads packed values of `T` out of bytes (any alignment).
pub fn pod_vec<T: Pod>(bytes: &[u8]) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    bytes
        .chunks_exact(size)
        // SAFETY: each chunk has exactly size_of::<T>() bytes and every bit
        // pattern is a valid Pod value.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<T>()) })
        .collect()
}

/// Views aligned packed bytes as a slice of `T` without copying, if the
/// alignment allows (always, for buffers from this module).
fn pod_view<T: Pod>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if size == 0
        || bytes.len() % size != 0
        || (bytes.as_ptr() as usize) % std::mem::align_of::<T>() != 0
    {
        return None;
    }
    // SAFETY: length and alignment checked; Pod accepts every bit pattern.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len() / size) })
}

fn check_sizes<K, V>(raw_key: usize, raw_value: usize, name: &str) -> Result<()> {
    if raw_key != std::mem::size_of::<K>() || raw_value != std::mem::size_of::<V>() {
        return Err(DatapathError::invalid(
            "map types",
            format!(
                "map {name} has {raw_key}-byte keys and {raw_value}-byte values; {} is {} bytes and {} is {}",
                std::any::type_name::<K>(),
                std::mem::size_of::<K>(),
                std::any::type_name::<V>(),
                std::mem::size_of::<V>()
            ),
        ));
    }
    Ok(())
}

/// A typed map with batch operations (non-per-CPU maps).
pub struct BatchMap<K, V, T = MapData> {
    raw: RawMap<T>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Pod, V: Pod> BatchMap<K, V, MapData> {
    /// Opens the map pinned at `path`, checked against `binding`.
    pub fn open_pinned(path: &Path, binding: &MapBinding) -> Result<Self> {
        Self::from_raw(RawMap::open_pinned(path, binding)?)
    }
}

impl<K: Pod, V: Pod, T: Borrow<MapData>> BatchMap<K, V, T> {
    /// Wraps a map whose key and value sizes match `K` and `V`.
    pub fn new(data: T, name: impl Into<String>) -> Result<Self> {
        Self::from_raw(RawMap::new(data, name)?)
    }

    /// Wraps a raw handle, checking sizes.
    pub fn from_raw(raw: RawMap<T>) -> Result<Self> {
        if raw.is_percpu() {
            return Err(DatapathError::invalid(
                "map types",
                format!("map {} is per-CPU: use PerCpuBatchMap", raw.name()),
            ));
        }
        check_sizes::<K, V>(raw.key_size(), raw.value_size(), raw.name())?;
        Ok(Self {
            raw,
            _types: PhantomData,
        })
    }

    /// The untyped handle.
    pub fn raw(&self) -> &RawMap<T> {
        &self.raw
    }

    /// Sets the entries per syscall.
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.raw = self.raw.with_chunk(chunk);
        self
    }

    /// Sets the threads of large updates and deletes; see [`RawMap::with_write_threads`].
    pub fn with_write_threads(mut self, threads: usize) -> Self {
        self.raw = self.raw.with_write_threads(threads);
        self
    }

    /// Sets the parallel threshold; see [`RawMap::with_parallel_min`].
    pub fn with_parallel_min(mut self, entries: usize) -> Self {
        self.raw = self.raw.with_parallel_min(entries);
        self
    }

    /// Writes `keys[i] -> values[i]` (create or replace).
    pub fn update(&self, keys: &[K], values: &[V]) -> std::result::Result<usize, BatchError> {
        self.update_with_flags(keys, values, BPF_ANY)
    }

    /// Writes with explicit `BPF_*` flags.
    pub fn update_with_flags(
        &self,
        keys: &[K],
        values: &[V],
        flags: u64,
    ) -> std::result::Result<usize, BatchError> {
        if keys.len() != values.len() {
            return Err(BatchError {
                done: 0,
                written: 0,
                total: keys.len(),
                error: DatapathError::invalid(
                    "batch update input",
                    format!(
                        "map {}: {} keys but {} values",
                        self.raw.name(),
                        keys.len(),
                        values.len()
                    ),
                ),
            });
        }
        self.raw
            .update_raw(pod_bytes(keys), pod_bytes(values), flags)
    }

    /// Writes `(key, value)` pairs.
    pub fn update_pairs(&self, entries: &[(K, V)]) -> std::result::Result<usize, BatchError> {
        let (keys, values): (Vec<K>, Vec<V>) = entries.iter().copied().unzip();
        self.update(&keys, &values)
    }

    /// Deletes `keys`; absent keys are counted as missing.
    pub fn delete(&self, keys: &[K]) -> std::result::Result<DeleteReport, BatchError> {
        self.raw.delete_raw(pod_bytes(keys))
    }

    /// Looks up each key (see the module notes on LPM tries).
    pub fn lookup(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        let mut values = vec![V::zeroed_pod(); keys.len()];
        let mut found = vec![false; keys.len()];
        let bytes = pod_bytes_mut(&mut values);
        self.raw.lookup_raw(pod_bytes(keys), bytes, &mut found)?;
        Ok(values
            .into_iter()
            .zip(found)
            .map(|(v, f)| f.then_some(v))
            .collect())
    }

    /// Looks up one key.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let mut value = V::zeroed_pod();
        let found = self.raw.lookup_one_raw(
            pod_bytes(std::slice::from_ref(key)),
            pod_bytes_mut(std::slice::from_mut(&mut value)),
        )?;
        Ok(found.then_some(value))
    }

    /// Walks the map chunk by chunk; see [`RawMap::for_each_chunk_raw`].
    pub fn for_each_chunk<F>(&self, mut f: F) -> Result<usize>
    where
        F: FnMut(&[K], &[V]) -> ControlFlow<()>,
    {
        self.raw
            .for_each_chunk_raw(false, |k, v, _| typed_chunk(k, v, &mut f))
    }

    /// Walks and removes every entry chunk by chunk.
    pub fn drain_chunks<F>(&self, mut f: F) -> Result<usize>
    where
        F: FnMut(&[K], &[V]) -> ControlFlow<()>,
    {
        self.raw
            .for_each_chunk_raw(true, |k, v, _| typed_chunk(k, v, &mut f))
    }

    /// Every entry.
    pub fn dump(&self) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        self.for_each_chunk(|k, v| {
            out.extend(k.iter().copied().zip(v.iter().copied()));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// An iterator over every entry, fetching one chunk at a time.
    pub fn iter(&self) -> DumpIter<'_, K, V, T> {
        DumpIter::new(self)
    }

    /// Removes every entry; returns how many.
    pub fn clear(&self) -> Result<usize> {
        self.raw.clear()
    }
}

fn typed_chunk<K: Pod, V: Pod, F>(k: &[u8], v: &[u8], f: &mut F) -> ControlFlow<()>
where
    F: FnMut(&[K], &[V]) -> ControlFlow<()>,
{
    match (pod_view::<K>(k), pod_view::<V>(v)) {
        (Some(keys), Some(values)) => f(keys, values),
        _ => {
            let keys = pod_vec::<K>(k);
            let values = pod_vec::<V>(v);
            f(&keys, &values)
        }
    }
}

/// A zeroed value of a Pod type.
trait ZeroedPod: Pod {
    fn zeroed_pod() -> Self {
        // SAFETY: every bit pattern, zero included, is a valid Pod value.
        unsafe { std::mem::zeroed() }
    }
}
impl<T: Pod> ZeroedPod for T {}

fn pod_bytes_mut<T: Pod>(items: &mut [T]) -> &mut [u8] {
    // SAFETY: as pod_bytes; writes of any bytes leave valid Pod values.
    unsafe {
        std::slice::from_raw_parts_mut(items.as_mut_ptr().cast(), std::mem::size_of_val(items))
    }
}

/// Iterator over a map's entries, one batch syscall per chunk.
///
/// Not a snapshot (see [`RawMap::for_each_chunk_raw`]). Errors end the
/// iteration after being yielded once.
pub struct DumpIter<'a, K, V, T> {
    map: &'a BatchMap<K, V, T>,
    keys: Vec<K>,
    values: Vec<V>,
    pos: usize,
    state: IterState,
    in_token: Vec<u64>,
    out_token: Vec<u64>,
}

enum IterState {
    Start,
    More,
    End,
    PerEntry(Option<Vec<u8>>),
}

impl<'a, K: Pod, V: Pod, T: Borrow<MapData>> DumpIter<'a, K, V, T> {
    fn new(map: &'a BatchMap<K, V, T>) -> Self {
        let words = map.raw.key_size().max(8).div_ceil(8);
        Self {
            map,
            keys: Vec::new(),
            values: Vec::new(),
            pos: 0,
            state: if map.raw.support(BatchOp::Lookup) == Support::PerEntry {
                IterState::PerEntry(None)
            } else {
                IterState::Start
            },
            in_token: vec![0; words],
            out_token: vec![0; words],
        }
    }

    fn fill(&mut self) -> Result<()> {
        let raw = &self.map.raw;
        let chunk = raw.chunk();
        self.keys = vec![K::zeroed_pod(); chunk];
        self.values = vec![V::zeroed_pod(); chunk];
        self.pos = 0;
        loop {
            match &mut self.state {
                IterState::End => {
                    self.keys.clear();
                    self.values.clear();
                    return Ok(());
                }
                IterState::PerEntry(cursor) => {
                    let mut n = 0;
                    let mut next = vec![0u8; raw.key_size()];
                    while n < chunk {
                        match raw.next_key(cursor.as_deref(), &mut next) {
                            Ok(true) => {}
                            Ok(false) => {
                                self.state = IterState::End;
                                break;
                            }
                            Err(errno) => return Err(raw.fail("get next key", errno, 0, 0).error),
                        }
                        *cursor = Some(next.clone());
                        let vb = pod_bytes_mut(&mut self.values[n..n + 1]);
                        match raw.elem_lookup(next.as_ptr(), vb.as_mut_ptr()) {
                            Ok(()) => {
                                self.keys[n] = pod_vec::<K>(&next)[0];
                                n += 1;
                            }
                            Err(libc::ENOENT) => {}
                            Err(errno) => return Err(raw.fail("lookup", errno, 0, 0).error),
                        }
                    }
                    self.keys.truncate(n);
                    self.values.truncate(n);
                    return Ok(());
                }
                IterState::Start | IterState::More => {
                    let first = matches!(self.state, IterState::Start);
                    let mut attr = BatchAttr {
                        in_batch: if first {
                            0
                        } else {
                            self.in_token.as_ptr() as u64
                        },
                        out_batch: self.out_token.as_mut_ptr() as u64,
                        keys: self.keys.as_mut_ptr() as u64,
                        values: self.values.as_mut_ptr() as u64,
                        count: chunk as u32,
                        map_fd: raw.fd(),
                        ..BatchAttr::default()
                    };
                    let result = sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
                    let n = match result {
                        Ok(_) | Err(libc::ENOENT) | Err(libc::EINTR) => {
                            (attr.count as usize).min(chunk)
                        }
                        Err(_) => 0,
                    };
                    match result {
                        Ok(_) => {}
                        Err(libc::ENOENT) => self.state = IterState::End,
                        Err(libc::EINTR) => {}
                        Err(errno)
                            if first
                                && n == 0
                                && (RawMap::<T>::refuses_batch(errno) || errno == libc::EINVAL) =>
                        {
                            raw.set_support(BatchOp::Lookup, Support::PerEntry);
                            self.state = IterState::PerEntry(None);
                            continue;
                        }
                        Err(errno) => return Err(raw.fail("batch lookup", errno, 0, 0).error),
                    }
                    if n > 0 {
                        std::mem::swap(&mut self.in_token, &mut self.out_token);
                        if matches!(self.state, IterState::Start) {
                            self.state = IterState::More;
                        }
                    } else if !matches!(self.state, IterState::End) {
                        continue;
                    }
                    self.keys.truncate(n);
                    self.values.truncate(n);
                    return Ok(());
                }
            }
        }
    }
}

impl<K: Pod, V: Pod, T: Borrow<MapData>> Iterator for DumpIter<'_, K, V, T> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pos < self.keys.len() {
                let item = (self.keys[self.pos], self.values[self.pos]);
                self.pos += 1;
                return Some(Ok(item));
            }
            if matches!(self.state, IterState::End) {
                return None;
            }
            if let Err(e) = self.fill() {
                self.state = IterState::End;
                self.keys.clear();
                return Some(Err(e));
            }
            if self.keys.is_empty() && matches!(self.state, IterState::End) {
                return None;
            }
        }
    }
}

/// A typed per-CPU map with batch operations: each value is one `V` per
/// possible CPU.
pub struct PerCpuBatchMap<K, V, T = MapData> {
    raw: RawMap<T>,
    cpus: usize,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Pod, V: Pod, T: Borrow<MapData>> PerCpuBatchMap<K, V, T> {
    /// Wraps a per-CPU map whose key and value sizes match `K` and `V`.
    pub fn new(data: T, name: impl Into<String>) -> Result<Self> {
        let raw = RawMap::new(data, name)?;
        if !raw.is_percpu() {
            return Err(DatapathError::invalid(
                "map types",
                format!("map {} is not per-CPU: use BatchMap", raw.name()),
            ));
        }
        check_sizes::<K, V>(raw.key_size(), raw.value_size(), raw.name())?;
        let cpus = possible_cpus()?;
        Ok(Self {
            raw,
            cpus,
            _types: PhantomData,
        })
    }

    /// The untyped handle.
    pub fn raw(&self) -> &RawMap<T> {
        &self.raw
    }

    /// Number of per-CPU slots in each value.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    fn slot(&self) -> usize {
        std::mem::size_of::<V>().div_ceil(8) * 8
    }

    /// Writes `keys[i] -> values[i]`, each value a slice of one `V` per CPU.
    pub fn update(&self, keys: &[K], values: &[Vec<V>]) -> std::result::Result<usize, BatchError> {
        let slot = self.slot();
        let mut packed = vec![0u8; values.len() * self.raw.value_stride()];
        for (i, per_cpu) in values.iter().enumerate() {
            if per_cpu.len() != self.cpus {
                return Err(BatchError {
                    done: 0,
                    written: 0,
                    total: keys.len(),
                    error: DatapathError::invalid(
                        "batch update input",
                        format!(
                            "map {}: value {i} has {} CPU slots, expected {}",
                            self.raw.name(),
                            per_cpu.len(),
                            self.cpus
                        ),
                    ),
                });
            }
            for (cpu, v) in per_cpu.iter().enumerate() {
                let at = i * self.raw.value_stride() + cpu * slot;
                packed[at..at + std::mem::size_of::<V>()]
                    .copy_from_slice(pod_bytes(std::slice::from_ref(v)));
            }
        }
        self.raw.update_raw(pod_bytes(keys), &packed, BPF_ANY)
    }

    /// Every entry, each value one `V` per CPU.
    pub fn dump(&self) -> Result<Vec<(K, Vec<V>)>> {
        let slot = self.slot();
        let stride = self.raw.value_stride();
        let size = std::mem::size_of::<V>();
        let mut out = Vec::new();
        self.raw.for_each_chunk_raw(false, |k, v, n| {
            let keys = pod_vec::<K>(k);
            for (i, key) in keys.into_iter().enumerate().take(n) {
                let per_cpu = (0..self.cpus)
                    .map(|cpu| {
                        let at = i * stride + cpu * slot;
                        pod_vec::<V>(&v[at..at + size])[0]
                    })
                    .collect();
                out.push((key, per_cpu));
            }
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Deletes `keys`.
    pub fn delete(&self, keys: &[K]) -> std::result::Result<DeleteReport, BatchError> {
        self.raw.delete_raw(pod_bytes(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<BatchAttr>(), 56);
        assert_eq!(std::mem::offset_of!(BatchAttr, count), 32);
        assert_eq!(std::mem::offset_of!(BatchAttr, map_fd), 36);
        assert_eq!(std::mem::offset_of!(BatchAttr, elem_flags), 40);
        assert_eq!(std::mem::size_of::<ElemAttr>(), 32);
        assert_eq!(std::mem::offset_of!(ElemAttr, key), 8);
        assert_eq!(std::mem::offset_of!(CreateAttr, map_name), 28);
    }

    #[test]
    fn errno_descriptions_name_the_errno() {
        assert!(describe_errno(libc::ENOENT).starts_with("ENOENT ("));
        assert!(describe_errno(ENOTSUPP).starts_with("ENOTSUPP"));
        assert!(describe_errno(4242).starts_with("errno 4242"));
    }

    #[test]
    fn parallel_plans_split_large_inputs_into_units() {
        let plan = |total, threads, min, chunk| {
            let p = parallel_plan(total, threads, min, chunk);
            (p.threads, p.unit)
        };
        // Below the threshold: one thread, the whole input.
        assert_eq!(plan(8191, 2, 8192, 8192), (1, 8191));
        assert_eq!(plan(0, 2, 8192, 8192), (1, 1));
        // From it: each thread has at least half the threshold.
        assert_eq!(plan(8192, 2, 8192, 8192).0, 2);
        assert_eq!(plan(8192, 8, 8192, 8192).0, 2);
        assert_eq!(plan(12_288, 8, 8192, 8192).0, 3);
        assert_eq!(plan(1_000_000, 8, 8192, 8192).0, 8);
        assert_eq!(plan(1_000_000, 1, 8192, 8192), (1, 1_000_000));
        // Units: several per thread, at least MIN_UNIT, at most a chunk.
        assert_eq!(plan(10_000, 2, 8192, 8192).1, 625);
        assert_eq!(plan(8192, 2, 8192, 8192).1, MIN_UNIT);
        assert_eq!(plan(1_000_000, 2, 8192, 8192).1, 8192);
        assert_eq!(plan(20_000, 4, 2000, 500).1, 500);
    }

    #[test]
    fn units_cover_the_input_once_in_order_and_stop_after_a_failure() {
        let plan = Plan {
            threads: 3,
            unit: 10,
        };
        let out = run_units(95, plan, |r, _| SliceOutcome::ok(r.len()));
        let ranges: Vec<_> = out.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(
            ranges,
            (0..10)
                .map(|k| k * 10..(k * 10 + 10).min(95))
                .collect::<Vec<_>>()
        );
        // Unit 4 (entries 40..50) fails at its third entry: every unit
        // before it is complete, none after it is claimed once that is seen.
        let out = run_units(95, plan, |r, _| {
            if r.start == 40 {
                SliceOutcome::failed(2, "test", libc::EIO)
            } else {
                SliceOutcome::ok(r.len())
            }
        });
        let failed: Vec<_> = out.iter().filter(|(_, o)| o.failure.is_some()).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 40..50);
        assert!(out.iter().filter(|(r, _)| r.start < 40).count() == 4);
        assert!(out.windows(2).all(|w| w[0].0.end == w[1].0.start));
    }

    #[test]
    fn lpm_tries_are_written_by_one_thread() {
        assert_eq!(default_write_threads(MAP_TYPE_LPM_TRIE), 1);
        assert!(default_write_threads(1) >= 1);
        assert!(default_write_threads(1) <= MAX_WRITE_THREADS);
    }

    #[test]
    fn pod_round_trip() {
        let v: Vec<u32> = vec![1, 2, 0xdead_beef];
        let bytes = pod_bytes(&v).to_vec();
        assert_eq!(bytes.len(), 12);
        assert_eq!(pod_vec::<u32>(&bytes), v);
        assert_eq!(pod_vec::<u32>(&bytes[..7]), vec![1]);
    }
}
