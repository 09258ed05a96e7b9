//! The packet counter slice, end to end: load `ebpf/packet_counter.c` once
//! per pin directory, attach it to both tc hooks of an interface, read the
//! pinned counters from any process, and detach.
//!
//! Everything lives in the pin directory (see [`crate::bpffs`]); no state is
//! kept in the process. Attach and detach take an advisory lock on the pin
//! directory, so concurrent callers serialise instead of racing on pins.

use std::path::{Path, PathBuf};

use aya::{programs::SchedClassifier, Ebpf};

use crate::{
    attach::{self, AttachMode, Attached, TcAttachment},
    bpffs::{exists, PinDir},
    error::{DatapathError, Result},
    loader::{self, MapPins},
    maps::{
        self,
        packet_counter::{self as map, Direction, PacketCount, PacketCounters},
    },
    objects::PACKET_COUNTER,
    sys::{self, DirLock},
};

/// The counter's programs and the hook each is written for.
pub const PROGRAMS: [(&str, Direction); 2] = [
    ("mbr_cnt_ingress", Direction::Ingress),
    ("mbr_cnt_egress", Direction::Egress),
];

/// What to attach, and where to keep the pins.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// Interface to count (e.g. the host side of a pod's veth).
    pub iface: String,
    /// Pin directory, inside `bpffs_root`.
    pub pin_dir: PathBuf,
    /// Where bpffs is (or gets) mounted.
    pub bpffs_root: PathBuf,
    /// tcx, netlink, or tcx with netlink fallback.
    pub mode: AttachMode,
}

/// What [`attach`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachReport {
    /// The interface.
    pub iface: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Whether the programs were loaded by this call (false: reused from pins).
    pub loaded: bool,
    /// The ingress and egress attachments.
    pub attachments: Vec<Attached>,
    /// Pin path of the counters map.
    pub map_pin: PathBuf,
}

/// Attaches the counter to both hooks of `opts.iface`. Loads and pins the
/// programs and the map on first use; later calls reuse the pinned programs,
/// so every interface shares one map. Idempotent per interface. On failure,
/// whatever this call created (attachments, program and map pins, empty
/// directories) is removed again; what existed before is left alone.
pub fn attach(opts: &AttachOptions) -> Result<AttachReport> {
    let ifindex = sys::ifindex_from_name(&opts.iface)?;
    let pins = PinDir::new(&opts.pin_dir, &opts.bpffs_root)?;
    pins.prepare(&opts.bpffs_root)?;
    let _lock = lock(&pins)?;
    // Directories may have been removed by a detach that held the lock while
    // we waited for it.
    pins.prepare(&opts.bpffs_root)?;

    let map_pin = pins.map(map::MAP_NAME);
    let map_existed = exists(&map_pin);
    let mut programs = match Programs::open_or_load(&pins) {
        Ok(programs) => programs,
        Err(e) => {
            pins.remove_empty_dirs();
            return Err(e);
        }
    };
    let mut done: Vec<Attached> = Vec::new();
    for (name, hook) in PROGRAMS {
        let result = programs.get_mut(name).and_then(|prog| {
            attach::attach(prog, name, &opts.iface, ifindex, hook, opts.mode, &pins)
        });
        match result {
            Ok(attached) => done.push(attached),
            Err(e) => {
                // Leave everything as it was: undo what this call created.
                for attached in done.iter().filter(|a| a.created) {
                    let _undo = attach::detach(&attached.attachment, &pins);
                }
                if programs.loaded() {
                    drop(programs);
                    for (name, _) in PROGRAMS {
                        let _undo = loader::remove_pin(&pins.program(name));
                    }
                    if !map_existed {
                        let _undo = loader::remove_pin(&map_pin);
                    }
                }
                pins.remove_empty_dirs();
                return Err(e);
            }
        }
    }
    Ok(AttachReport {
        iface: opts.iface.clone(),
        ifindex,
        loaded: programs.loaded(),
        attachments: done,
        map_pin,
    })
}

/// Serialises attach and detach across processes. The lock is on the pin
/// directory's parent, which detach never removes (it may remove the pin
/// directory itself).
fn lock(pins: &PinDir) -> Result<DirLock> {
    DirLock::acquire(pins.path().parent().unwrap_or(pins.path()))
}

/// Reads every counter from the map pinned in `pin_dir`, summed over CPUs.
/// Works from any process; needs only the pins.
pub fn read(pin_dir: &Path, bpffs_root: &Path) -> Result<Vec<PacketCount>> {
    let pins = PinDir::new(pin_dir, bpffs_root)?;
    PacketCounters::from_pin(&pins.map(map::MAP_NAME))?.read_all()
}

/// What to detach.
#[derive(Debug, Clone)]
pub struct DetachOptions {
    /// Only this interface; `None` detaches every interface.
    pub iface: Option<String>,
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// bpffs mount point.
    pub bpffs_root: PathBuf,
}

/// What [`detach`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetachReport {
    /// Attachments removed from their hooks.
    pub detached: Vec<TcAttachment>,
    /// Pins (and empty pin directories) removed.
    pub removed: Vec<PathBuf>,
}

/// Detaches the counter from one interface, or from all. When no interface
/// keeps it attached, the programs and the counters map are unpinned too (the
/// counts are gone) and empty pin directories removed. Idempotent: detaching
/// what is not attached succeeds and reports nothing.
pub fn detach(opts: &DetachOptions) -> Result<DetachReport> {
    let pins = PinDir::new(&opts.pin_dir, &opts.bpffs_root)?;
    let mut report = DetachReport::default();
    if !exists(pins.path()) {
        return Ok(report);
    }
    let only = opts
        .iface
        .as_deref()
        .map(sys::ifindex_from_name)
        .transpose()?;
    let _lock = lock(&pins)?;

    let ours = |a: &TcAttachment| PROGRAMS.iter().any(|(name, _)| *name == a.program);
    for attachment in attach::list(&pins)?.into_iter().filter(ours) {
        if only.is_some_and(|ifindex| ifindex != attachment.ifindex) {
            continue;
        }
        attach::detach(&attachment, &pins)?;
        report.removed.push(attachment.pin_path(&pins));
        report.detached.push(attachment);
    }

    if !attach::list(&pins)?.iter().any(ours) {
        for (name, _) in PROGRAMS {
            let path = pins.program(name);
            if loader::remove_pin(&path)? {
                report.removed.push(path);
            }
        }
        let map_names = PACKET_COUNTER
            .map_names()
            .map_err(|e| DatapathError::op("read maps of", "object packet_counter", &e))?;
        for name in map_names {
            let path = pins.map(&name);
            if loader::remove_pin(&path)? {
                report.removed.push(path);
            }
        }
    }
    report.removed.extend(pins.remove_empty_dirs());
    Ok(report)
}

/// The attachments of the counter recorded in `pin_dir`.
pub fn attachments(pin_dir: &Path, bpffs_root: &Path) -> Result<Vec<TcAttachment>> {
    let pins = PinDir::new(pin_dir, bpffs_root)?;
    Ok(attach::list(&pins)?
        .into_iter()
        .filter(|a| PROGRAMS.iter().any(|(name, _)| *name == a.program))
        .collect())
}

/// The counter's programs: either freshly loaded (and now pinned) or opened
/// from their pins.
enum Programs {
    Loaded(Ebpf),
    Pinned(Vec<(&'static str, SchedClassifier)>),
}

impl Programs {
    fn open_or_load(pins: &PinDir) -> Result<Self> {
        let all_pinned = PROGRAMS.iter().all(|(name, _)| exists(&pins.program(name)));
        if all_pinned {
            let map_path = pins.map(map::MAP_NAME);
            let map_data = maps::open_pinned(&map_path, &map::binding()).map_err(|e| match e {
                DatapathError::NotPinned { path, .. } => DatapathError::Incompatible {
                    object: "programs of packet_counter".to_owned(),
                    path,
                    detail: "the programs are pinned but their map is not; detach to reset the pin directory".to_owned(),
                },
                other => other,
            })?;
            let map_id = map_data
                .info()
                .map_err(|e| {
                    DatapathError::op("get info of", format!("map {}", map::MAP_NAME), &e)
                })?
                .id();
            let mut programs = Vec::new();
            for (name, _) in PROGRAMS {
                let prog = loader::open_pinned_program_using(
                    name,
                    &pins.program(name),
                    map_id,
                    &map_path,
                    "detach to reset the pin directory",
                )?;
                programs.push((name, prog));
            }
            return Ok(Self::Pinned(programs));
        }

        let mut ebpf = loader::load(&PACKET_COUNTER, MapPins::Dir(pins))?;
        for (name, _) in PROGRAMS {
            let path = pins.program(name);
            // A partial set of pins (an interrupted earlier run) is replaced.
            loader::remove_pin(&path)?;
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| {
                    DatapathError::invalid(
                        "program",
                        format!("{name} is not in object packet_counter"),
                    )
                })?
                .try_into()
                .map_err(|e| DatapathError::op("type", format!("program {name}"), &e))?;
            prog.pin(&path).map_err(|e| {
                DatapathError::op("pin program", format!("{name} at {}", path.display()), &e)
            })?;
        }
        Ok(Self::Loaded(ebpf))
    }

    fn loaded(&self) -> bool {
        matches!(self, Self::Loaded(_))
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        let missing =
            || DatapathError::invalid("program", format!("{name} is not in object packet_counter"));
        match self {
            Self::Loaded(ebpf) => ebpf
                .program_mut(name)
                .ok_or_else(missing)?
                .try_into()
                .map_err(|e| DatapathError::op("type", format!("program {name}"), &e)),
            Self::Pinned(programs) => programs
                .iter_mut()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| p)
                .ok_or_else(missing),
        }
    }
}
