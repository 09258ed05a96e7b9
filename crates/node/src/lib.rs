//! Membrane's N-API addon: the thin, batch-oriented face of
//! `membrane-datapath` for the TypeScript agent and CLI.
//!
//! Conventions:
//! - Every function that does kernel I/O returns a Promise (an `AsyncTask`
//!   on the libuv thread pool), so the event loop never waits on bpf(2) or
//!   netlink.
//! - One call moves a whole batch (all counters, all attachments), never one
//!   entry per crossing.
//! - Counters are u64 in the kernel and cross as `bigint`: byte counters of a
//!   busy interface pass 2^53 in days, where `number` would silently lose
//!   precision.
//! - Failures reject with an `Error` whose `code` is the errno name (`EPERM`,
//!   `ENOENT`, ...) or `EINCOMPATIBLE`/`ELAYOUT`, with `errno`, `op` and
//!   `object` properties naming what failed.

mod errors;
mod flows;
mod lxc;
mod maps;

use std::path::PathBuf;

use membrane_datapath::{
    attach as dp_attach,
    bpffs::PinDir,
    maps::packet_counter::PacketCount,
    objects::OBJECTS,
    packet_counter::{self, AttachReport, DetachReport},
    sys, DatapathError, DEFAULT_BPFFS_ROOT,
};
use napi::{bindgen_prelude::*, Env, Task};
use napi_derive::napi;

use crate::errors::to_js_error;

/// Options of `attachPacketCounter`.
#[napi(object)]
pub struct AttachPacketCounterOptions {
    /// Interface to count, e.g. the host side of a pod's veth.
    pub iface: String,
    /// Pin directory (absolute, inside `bpffsRoot`), e.g. `/sys/fs/bpf/membrane`.
    pub pin_dir: String,
    /// Where bpffs is mounted; mounted there if absent. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
    /// `'auto'` (default): tcx, falling back to netlink cls_bpf if the kernel
    /// refuses tcx. `'tcx'` or `'netlink'` force one mechanism.
    #[napi(ts_type = "'auto' | 'tcx' | 'netlink'")]
    pub mode: Option<String>,
}

/// One program attached to one hook of one interface.
#[napi(object)]
pub struct TcAttachmentInfo {
    /// Interface index (root network namespace of the loader).
    pub ifindex: u32,
    /// The hook.
    #[napi(ts_type = "'ingress' | 'egress'")]
    pub direction: String,
    /// The mechanism: a pinned tcx link, or a netlink cls_bpf filter.
    #[napi(ts_type = "'tcx' | 'netlink'")]
    pub mode: String,
    /// Kernel program name.
    pub program: String,
    /// The pin that records (and, for tcx, holds) the attachment.
    pub pin_path: String,
}

/// Result of `attachPacketCounter`.
#[napi(object)]
pub struct AttachPacketCounterResult {
    /// The interface.
    pub iface: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Whether this call loaded the programs (false: reused the pinned ones).
    pub loaded: bool,
    /// Whether this call created at least one attachment (false: already attached).
    pub created: bool,
    /// Pin path of the counters map.
    pub map_pin: String,
    /// Ingress and egress attachments.
    pub attachments: Vec<TcAttachmentInfo>,
}

/// Packets and bytes seen at one hook of one interface, summed over CPUs.
#[napi(object)]
pub struct PacketCounter {
    /// Interface index.
    pub ifindex: u32,
    /// The hook: ingress = received by the interface, egress = sent by it.
    #[napi(ts_type = "'ingress' | 'egress'")]
    pub direction: String,
    /// Packets (u64).
    pub packets: BigInt,
    /// Bytes: L2 frame length without FCS (u64).
    pub bytes: BigInt,
}

/// Options of `detachPacketCounter`.
#[napi(object)]
pub struct DetachPacketCounterOptions {
    /// Only this interface; omitted: every interface.
    pub iface: Option<String>,
    /// Pin directory.
    pub pin_dir: String,
    /// Where bpffs is mounted. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
}

/// Result of `detachPacketCounter`.
#[napi(object)]
pub struct DetachPacketCounterResult {
    /// Attachments removed from their hooks.
    pub detached: Vec<TcAttachmentInfo>,
    /// Pins and empty directories removed.
    pub removed: Vec<String>,
}

/// A program on a tcx hook of an interface.
#[napi(object)]
pub struct TcxProgramInfo {
    /// The hook.
    #[napi(ts_type = "'ingress' | 'egress'")]
    pub direction: String,
    /// Kernel program id.
    pub id: u32,
    /// Kernel program name.
    pub name: String,
}

/// An eBPF object embedded in the addon.
#[napi(object)]
pub struct DatapathObjectInfo {
    /// File stem of its source, e.g. `packet_counter`.
    pub name: String,
    /// Source path in the repository.
    pub source: String,
    /// Size of the ELF object in bytes.
    pub size: u32,
    /// Programs (entry points).
    pub programs: Vec<String>,
    /// Maps it defines.
    pub maps: Vec<String>,
}

/// Versions and contents of the datapath.
#[napi(object)]
pub struct DatapathInfo {
    /// Version of membrane-datapath.
    pub version: String,
    /// Version of aya.
    pub aya_version: String,
    /// Running kernel (`uname -r`).
    pub kernel_release: String,
    /// Default bpffs mount point.
    pub default_bpffs_root: String,
    /// Default pin directory.
    pub default_pin_dir: String,
    /// The embedded eBPF objects.
    pub objects: Vec<DatapathObjectInfo>,
}

fn bpffs_root_or_default(value: Option<String>) -> PathBuf {
    PathBuf::from(value.unwrap_or_else(|| DEFAULT_BPFFS_ROOT.to_owned()))
}

fn attachment_info(a: &dp_attach::TcAttachment, pins: &PinDir) -> TcAttachmentInfo {
    TcAttachmentInfo {
        ifindex: a.ifindex,
        direction: a.hook.as_str().to_owned(),
        mode: a.via.mode_name().to_owned(),
        program: a.program.clone(),
        pin_path: a.pin_path(pins).display().to_string(),
    }
}

/// Holds the structured error of a failed job until `reject` can turn it
/// into a JS error on the main thread.
#[derive(Default)]
struct Failure(Option<DatapathError>);

impl Failure {
    /// Records `e` and returns the plain napi error that makes napi call `reject`.
    fn record(&mut self, e: DatapathError) -> Error {
        let message = e.to_string();
        self.0 = Some(e);
        Error::new(Status::GenericFailure, message)
    }

    /// The rich JS error if one was recorded, else napi's own.
    fn take_js_error(&mut self, env: &Env, err: Error) -> Error {
        match self.0.take() {
            Some(failure) => to_js_error(env, &failure),
            None => err,
        }
    }
}

/// Background job of `attachPacketCounter`.
pub struct AttachTask {
    options: packet_counter::AttachOptions,
    /// An input error found while converting the options, reported as the
    /// task's rejection so that callers see one failure path.
    invalid: Option<DatapathError>,
    failure: Failure,
}

#[napi]
impl Task for AttachTask {
    type Output = (AttachReport, PinDir);
    type JsValue = AttachPacketCounterResult;

    fn compute(&mut self) -> Result<Self::Output> {
        if let Some(invalid) = self.invalid.take() {
            return Err(self.failure.record(invalid));
        }
        let o = &self.options;
        packet_counter::attach(o)
            .and_then(|report| Ok((report, PinDir::new(&o.pin_dir, &o.bpffs_root)?)))
            .map_err(|e| self.failure.record(e))
    }

    fn resolve(&mut self, _env: Env, (report, pins): Self::Output) -> Result<Self::JsValue> {
        Ok(AttachPacketCounterResult {
            created: report.attachments.iter().any(|a| a.created),
            attachments: report
                .attachments
                .iter()
                .map(|a| attachment_info(&a.attachment, &pins))
                .collect(),
            iface: report.iface,
            ifindex: report.ifindex,
            loaded: report.loaded,
            map_pin: report.map_pin.display().to_string(),
        })
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// Attaches the packet counter to the ingress and egress tc hooks of
/// `options.iface` and pins everything under `options.pinDir`, so that the
/// attachment outlives this process. Loads the programs on first use and
/// reuses the pinned ones afterwards; all interfaces share one counters map.
/// Idempotent per interface.
#[napi]
pub fn attach_packet_counter(options: AttachPacketCounterOptions) -> AsyncTask<AttachTask> {
    // An invalid mode is reported by the task, as a rejection with code EINVAL.
    let mode = options.mode.as_deref().unwrap_or("auto");
    let (mode, invalid) = match dp_attach::AttachMode::parse(mode) {
        Ok(mode) => (mode, None),
        Err(e) => (dp_attach::AttachMode::Auto, Some(e)),
    };
    AsyncTask::new(AttachTask {
        options: packet_counter::AttachOptions {
            iface: options.iface,
            pin_dir: PathBuf::from(options.pin_dir),
            bpffs_root: bpffs_root_or_default(options.bpffs_root),
            mode,
        },
        invalid,
        failure: Failure::default(),
    })
}

/// Background job of `readPacketCounters`.
pub struct ReadTask {
    pin_dir: PathBuf,
    bpffs_root: PathBuf,
    failure: Failure,
}

#[napi]
impl Task for ReadTask {
    type Output = Vec<PacketCount>;
    type JsValue = Vec<PacketCounter>;

    fn compute(&mut self) -> Result<Self::Output> {
        packet_counter::read(&self.pin_dir, &self.bpffs_root).map_err(|e| self.failure.record(e))
    }

    fn resolve(&mut self, _env: Env, counts: Self::Output) -> Result<Self::JsValue> {
        Ok(counts
            .into_iter()
            .map(|c| PacketCounter {
                ifindex: c.ifindex,
                direction: c.direction.as_str().to_owned(),
                packets: BigInt::from(c.packets),
                bytes: BigInt::from(c.bytes),
            })
            .collect())
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// Reads every packet counter from the map pinned under `pinDir`, summed
/// over CPUs, sorted by ifindex then direction. Needs only the pins: any
/// process can read what another attached. Rejects with code `ENOENT` when
/// nothing is pinned there.
#[napi]
pub fn read_packet_counters(pin_dir: String, bpffs_root: Option<String>) -> AsyncTask<ReadTask> {
    AsyncTask::new(ReadTask {
        pin_dir: PathBuf::from(pin_dir),
        bpffs_root: bpffs_root_or_default(bpffs_root),
        failure: Failure::default(),
    })
}

/// Background job of `detachPacketCounter`.
pub struct DetachTask {
    options: packet_counter::DetachOptions,
    failure: Failure,
}

#[napi]
impl Task for DetachTask {
    type Output = (DetachReport, PinDir);
    type JsValue = DetachPacketCounterResult;

    fn compute(&mut self) -> Result<Self::Output> {
        let o = &self.options;
        packet_counter::detach(o)
            .and_then(|report| Ok((report, PinDir::new(&o.pin_dir, &o.bpffs_root)?)))
            .map_err(|e| self.failure.record(e))
    }

    fn resolve(&mut self, _env: Env, (report, pins): Self::Output) -> Result<Self::JsValue> {
        Ok(DetachPacketCounterResult {
            detached: report
                .detached
                .iter()
                .map(|a| attachment_info(a, &pins))
                .collect(),
            removed: report
                .removed
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        })
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// Detaches the packet counter from `options.iface`, or from every
/// interface when `iface` is omitted, removing the link pins. Once no
/// interface has it attached, the programs and the counters map are unpinned
/// and empty pin directories removed. Idempotent.
#[napi]
pub fn detach_packet_counter(options: DetachPacketCounterOptions) -> AsyncTask<DetachTask> {
    AsyncTask::new(DetachTask {
        options: packet_counter::DetachOptions {
            iface: options.iface,
            pin_dir: PathBuf::from(options.pin_dir),
            bpffs_root: bpffs_root_or_default(options.bpffs_root),
        },
        failure: Failure::default(),
    })
}

/// Background job of `listPacketCounterAttachments`.
pub struct ListAttachmentsTask {
    pin_dir: PathBuf,
    bpffs_root: PathBuf,
    failure: Failure,
}

#[napi]
impl Task for ListAttachmentsTask {
    type Output = (Vec<dp_attach::TcAttachment>, PinDir);
    type JsValue = Vec<TcAttachmentInfo>;

    fn compute(&mut self) -> Result<Self::Output> {
        packet_counter::attachments(&self.pin_dir, &self.bpffs_root)
            .and_then(|list| Ok((list, PinDir::new(&self.pin_dir, &self.bpffs_root)?)))
            .map_err(|e| self.failure.record(e))
    }

    fn resolve(&mut self, _env: Env, (list, pins): Self::Output) -> Result<Self::JsValue> {
        Ok(list.iter().map(|a| attachment_info(a, &pins)).collect())
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// The packet counter's attachments recorded under `pinDir` (empty if none).
#[napi]
pub fn list_packet_counter_attachments(
    pin_dir: String,
    bpffs_root: Option<String>,
) -> AsyncTask<ListAttachmentsTask> {
    AsyncTask::new(ListAttachmentsTask {
        pin_dir: PathBuf::from(pin_dir),
        bpffs_root: bpffs_root_or_default(bpffs_root),
        failure: Failure::default(),
    })
}

/// Background job of `listTcxPrograms`.
pub struct TcxQueryTask {
    iface: String,
    failure: Failure,
}

#[napi]
impl Task for TcxQueryTask {
    type Output = Vec<dp_attach::TcxProgram>;
    type JsValue = Vec<TcxProgramInfo>;

    fn compute(&mut self) -> Result<Self::Output> {
        dp_attach::query_tcx(&self.iface).map_err(|e| self.failure.record(e))
    }

    fn resolve(&mut self, _env: Env, list: Self::Output) -> Result<Self::JsValue> {
        Ok(list
            .into_iter()
            .map(|p| TcxProgramInfo {
                direction: p.hook.as_str().to_owned(),
                id: p.id,
                name: p.name,
            })
            .collect())
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// The programs on the tcx ingress and egress hooks of `iface`, whoever
/// attached them, in run order.
#[napi]
pub fn list_tcx_programs(iface: String) -> AsyncTask<TcxQueryTask> {
    AsyncTask::new(TcxQueryTask {
        iface,
        failure: Failure::default(),
    })
}

/// Versions, the running kernel, and the eBPF objects embedded in the addon
/// with their programs and maps. No kernel I/O beyond `uname`.
#[napi]
pub fn datapath_info() -> Result<DatapathInfo> {
    let mut objects = Vec::with_capacity(OBJECTS.len());
    for object in OBJECTS {
        let invalid = |e: membrane_datapath::btf::BtfError| {
            Error::new(
                Status::GenericFailure,
                format!("object {}: {e}", object.name),
            )
        };
        objects.push(DatapathObjectInfo {
            name: object.name.to_owned(),
            source: object.source.to_owned(),
            size: u32::try_from(object.bytes.len()).unwrap_or(u32::MAX),
            programs: object.program_names().map_err(invalid)?,
            maps: object.map_names().map_err(invalid)?,
        });
    }
    Ok(DatapathInfo {
        version: membrane_datapath::VERSION.to_owned(),
        aya_version: membrane_datapath::AYA_VERSION.to_owned(),
        kernel_release: sys::kernel_release(),
        default_bpffs_root: DEFAULT_BPFFS_ROOT.to_owned(),
        default_pin_dir: membrane_datapath::DEFAULT_PIN_DIR.to_owned(),
        objects,
    })
}
