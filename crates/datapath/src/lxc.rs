//! The endpoint datapath (`ebpf/bpf_lxc.c`) on a node: load it once per pin
//! directory, adopt it on every later start, attach it to endpoints, detach
//! them, list them, and reach its maps.
//!
//! # Lifecycle
//!
//! [`Lxc::open`] is what an agent calls at start. Under the pin directory's
//! lock it finds one of three states:
//!
//! - nothing pinned: the object is loaded, its maps created (sizes from
//!   [`MapSizes`]) and pinned under `<pin>/maps`, its programs pinned under
//!   `<pin>/progs`, and the build marker `<pin>/progs/mbr_lxc_build_<id>`
//!   written ([`LoadOutcome::Loaded`]);
//! - this build pinned (its marker present): everything is adopted from the
//!   pins, nothing is loaded, flushed or re-attached ([`LoadOutcome::Adopted`]).
//!   Conntrack entries, policy and attachments carry on untouched;
//! - another build pinned (programs present, marker of another build or
//!   none): the object is loaded against the pinned maps (adopted, never
//!   recreated: their layout is checked first and a mismatch is refused), and
//!   every attachment moves to the new programs: a tcx link gets its program
//!   replaced with `BPF_LINK_UPDATE`, atomically, so that every packet runs
//!   either the old or the new program; a netlink cls_bpf filter (kernels
//!   without tcx) is re-attached, which leaves a window of microseconds
//!   without a filter. Then the program pins and the marker are swapped
//!   ([`LoadOutcome::Upgraded`]). An interrupted upgrade is finished by the
//!   next `open`.
//!
//! The build id is a hash of the embedded object's bytes, so a program that
//! differs in any instruction (or even in debug info) is replaced, and an
//! identical one never is. Sizes of pinned maps are what they are: a
//! [`MapSizes`] change takes effect only for maps that get created.
//!
//! # Default deny from the first packet
//!
//! The programs pass the packets of an interface that has no entry in
//! `mbr_ep_ifindex` (a safety net for a mistaken attach). So the endpoint's
//! entries, with its enforcement flags, must be in the maps *before* the
//! programs are attached: [`Lxc::attach`] refuses an interface without an
//! endpoint entry, and [`Lxc::attach_endpoint`] writes the entries first and
//! attaches second. Detaching goes the other way round: links first, entries
//! after ([`Lxc::detach_endpoint`]). The endpoint's policy entries must be
//! written before the attach too (the agent does); until they are, an
//! enforcing endpoint drops everything (default deny).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData},
    programs::SchedClassifier,
};

use crate::{
    attach::{self, AttachMode, Attached, TcAttachment, Via},
    bpffs::{exists, PinDir},
    error::{DatapathError, Result},
    loader::{self, LoadOptions, MapPins},
    maps::{
        self,
        config::ConfigMap,
        endpoint::{
            self as ep_map, EndpointCache, EndpointInfo, EndpointsByIfindex, EndpointsByIp,
        },
        ipcache::Ipcache,
        metrics::Metrics,
        packet_counter::Direction,
        policy::PolicyMap,
    },
    objects::{EmbeddedObject, BPF_LXC},
    sys::{self, DirLock},
};

/// The endpoint programs and the tc hook of the host-side veth each runs on.
pub const PROGRAMS: [(&str, Direction); 2] = [
    ("mbr_from_cont", Direction::Ingress),
    ("mbr_to_cont", Direction::Egress),
];

/// Prefix of the build marker pin in `<pin>/progs`.
pub const BUILD_MARKER_PREFIX: &str = "mbr_lxc_build_";

/// The object this module loads.
pub const OBJECT: &EmbeddedObject = &BPF_LXC;

/// The id of the embedded `bpf_lxc` object: FNV-1a (64 bit) of its bytes, as
/// 16 hex digits.
pub fn build_id() -> String {
    build_id_of(OBJECT.bytes)
}

fn build_id_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `max_entries` of the maps `bpf_lxc` creates; `None` keeps the object's
/// default (see `ebpf/README.md`). Applies only to maps that do not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapSizes {
    /// `mbr_ep_ifindex` and `mbr_ep_ip`.
    pub endpoints: Option<u32>,
    /// `mbr_ipcache`.
    pub ipcache: Option<u32>,
    /// `mbr_policy_exact` and `mbr_policy`, each (an entry lives in one of them).
    pub policy: Option<u32>,
    /// `mbr_ct_tcp`.
    pub ct_tcp: Option<u32>,
    /// `mbr_ct_any`.
    pub ct_any: Option<u32>,
    /// `mbr_metrics`.
    pub metrics: Option<u32>,
    /// `mbr_frag4`.
    pub fragments: Option<u32>,
    /// `mbr_events`, in bytes: a power of two, at least one page.
    pub events_bytes: Option<u32>,
}

impl MapSizes {
    /// The loader's overrides, validated.
    pub fn load_options(&self) -> Result<LoadOptions> {
        let mut max_entries = Vec::new();
        let mut push = |names: &[&str], size: Option<u32>| -> Result<()> {
            if let Some(size) = size {
                if size == 0 {
                    return Err(DatapathError::invalid(
                        "map size",
                        format!("{}: must be above 0", names.join(", ")),
                    ));
                }
                for name in names {
                    max_entries.push(((*name).to_owned(), size));
                }
            }
            Ok(())
        };
        push(&[ep_map::BY_IFINDEX_MAP, ep_map::BY_IP_MAP], self.endpoints)?;
        push(&[maps::ipcache::MAP_NAME], self.ipcache)?;
        push(
            &[maps::policy::EXACT_MAP_NAME, maps::policy::MAP_NAME],
            self.policy,
        )?;
        push(&[maps::conntrack::TCP_MAP], self.ct_tcp)?;
        push(&[maps::conntrack::ANY_MAP], self.ct_any)?;
        push(&[maps::metrics::MAP_NAME], self.metrics)?;
        push(&[maps::fragments::MAP_NAME], self.fragments)?;
        if let Some(bytes) = self.events_bytes {
            // SAFETY: sysconf has no preconditions.
            let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
            if !bytes.is_power_of_two() || bytes < page {
                return Err(DatapathError::invalid(
                    "map size",
                    format!(
                        "{}: {bytes} bytes; a ring buffer is a power of two of at least one page ({page})",
                        maps::events::MAP_NAME
                    ),
                ));
            }
        }
        push(&[maps::events::MAP_NAME], self.events_bytes)?;
        Ok(LoadOptions { max_entries })
    }
}

/// Where the datapath lives and how to attach it.
#[derive(Debug, Clone)]
pub struct LxcOptions {
    /// Pin directory, inside `bpffs_root`.
    pub pin_dir: PathBuf,
    /// Where bpffs is (or gets) mounted.
    pub bpffs_root: PathBuf,
    /// Sizes of maps that get created.
    pub sizes: MapSizes,
    /// tcx, netlink, or tcx with netlink fallback.
    pub mode: AttachMode,
}

impl LxcOptions {
    /// The defaults for `pin_dir`: bpffs at `/sys/fs/bpf`, default sizes, auto mode.
    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        Self {
            pin_dir: pin_dir.into(),
            bpffs_root: PathBuf::from(crate::DEFAULT_BPFFS_ROOT),
            sizes: MapSizes::default(),
            mode: AttachMode::Auto,
        }
    }
}

/// What [`Lxc::open`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Nothing was pinned: loaded, pinned.
    Loaded,
    /// This build was pinned: adopted, nothing loaded.
    Adopted,
    /// Another build was pinned: loaded against the pinned maps, and every
    /// attachment moved to the new programs.
    Upgraded,
}

impl LoadOutcome {
    /// `"loaded"`, `"adopted"` or `"upgraded"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Loaded => "loaded",
            Self::Adopted => "adopted",
            Self::Upgraded => "upgraded",
        }
    }
}

/// One endpoint interface with the datapath attached, as recorded in the pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAttachment {
    /// Interface index (loader's network namespace).
    pub ifindex: u32,
    /// Interface name, if the interface still exists.
    pub iface: Option<String>,
    /// The endpoint entry of that ifindex, if any.
    pub endpoint: Option<EndpointInfo>,
    /// The program attachments (normally two: ingress and egress).
    pub attachments: Vec<TcAttachment>,
}

/// What a detach removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LxcDetachReport {
    /// Attachments removed from their hooks.
    pub detached: Vec<TcAttachment>,
    /// Whether endpoint entries were removed.
    pub endpoint_removed: bool,
}

/// The endpoint datapath of one pin directory: its programs and maps, opened
/// from the pins.
pub struct Lxc {
    pins: PinDir,
    mode: AttachMode,
    outcome: LoadOutcome,
    build_id: String,
    programs: Vec<(&'static str, Direction, SchedClassifier)>,
    maps: BTreeMap<String, Map>,
    /// Kernel id and `max_entries` of each map, read when it was opened.
    map_info: BTreeMap<String, (u32, u32)>,
}

impl std::fmt::Debug for Lxc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lxc")
            .field("pin_dir", &self.pins.path())
            .field("outcome", &self.outcome)
            .field("build_id", &self.build_id)
            .field("maps", &self.maps.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn lock(pins: &PinDir) -> Result<DirLock> {
    DirLock::acquire(pins.path().parent().unwrap_or(pins.path()))
}

fn marker_path(pins: &PinDir, id: &str) -> PathBuf {
    pins.program(&format!("{BUILD_MARKER_PREFIX}{id}"))
}

/// Build markers present in `<pin>/progs`, by id.
fn markers(pins: &PinDir) -> Result<Vec<String>> {
    let dir = pins.progs_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DatapathError::io("list", dir.display().to_string(), e)),
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(BUILD_MARKER_PREFIX))
                .map(str::to_owned)
        })
        .collect();
    out.sort();
    Ok(out)
}

fn is_ours(a: &TcAttachment) -> bool {
    PROGRAMS.iter().any(|(name, _)| *name == a.program)
}

fn program_of<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .ok_or_else(|| {
            DatapathError::invalid(
                "program",
                format!("{name} is not in object {}", OBJECT.name),
            )
        })?
        .try_into()
        .map_err(|e| DatapathError::op("type", format!("program {name}"), &e))
}

fn pin_program(prog: &mut SchedClassifier, name: &str, path: &Path) -> Result<()> {
    loader::remove_pin(path)?;
    prog.pin(path)
        .map_err(|e| DatapathError::op("pin program", format!("{name} at {}", path.display()), &e))
}

impl Lxc {
    /// Loads the endpoint datapath into `opts.pin_dir`, or adopts it from
    /// there, or upgrades it there (see the module documentation).
    pub fn open(opts: &LxcOptions) -> Result<Self> {
        let load_options = opts.sizes.load_options()?;
        let pins = PinDir::new(&opts.pin_dir, &opts.bpffs_root)?;
        pins.prepare(&opts.bpffs_root)?;
        let _lock = lock(&pins)?;
        pins.prepare(&opts.bpffs_root)?;

        let id = build_id();
        let programs_pinned = PROGRAMS.iter().all(|(name, _)| exists(&pins.program(name)));
        let found = markers(&pins)?;
        let outcome = if programs_pinned && found.contains(&id) {
            LoadOutcome::Adopted
        } else if programs_pinned || !found.is_empty() {
            LoadOutcome::Upgraded
        } else {
            LoadOutcome::Loaded
        };

        if outcome != LoadOutcome::Adopted {
            let mut ebpf = loader::load_with(OBJECT, MapPins::Dir(&pins), &load_options)?;
            if outcome == LoadOutcome::Upgraded {
                Self::move_attachments(&mut ebpf, &pins, opts.mode)?;
            }
            for (name, _) in PROGRAMS {
                pin_program(program_of(&mut ebpf, name)?, name, &pins.program(name))?;
            }
            let (first, _) = PROGRAMS[0];
            pin_program(
                program_of(&mut ebpf, first)?,
                first,
                &marker_path(&pins, &id),
            )?;
            for old in found.iter().filter(|m| **m != id) {
                loader::remove_pin(&marker_path(&pins, old))?;
            }
            // The pins hold everything now; reopen from them below.
        }

        let mut lxc = Self {
            pins,
            mode: opts.mode,
            outcome,
            build_id: id,
            programs: Vec::new(),
            maps: BTreeMap::new(),
            map_info: BTreeMap::new(),
        };
        lxc.open_pins()?;
        Ok(lxc)
    }

    /// Opens every map and program from the pins and checks that the
    /// programs use those maps.
    fn open_pins(&mut self) -> Result<()> {
        let names = OBJECT.map_names().map_err(|e| {
            DatapathError::op("read maps of", format!("object {}", OBJECT.name), &e)
        })?;
        for name in names {
            let binding = maps::binding(&name).ok_or_else(|| {
                DatapathError::invalid("map", format!("map {name} has no Rust binding"))
            })?;
            let path = self.pins.map(&name);
            let data = maps::open_pinned(&path, &binding).map_err(|e| match e {
                DatapathError::NotPinned { path, .. } => DatapathError::Incompatible {
                    object: format!("programs of {}", OBJECT.name),
                    path,
                    detail: format!(
                        "the programs are pinned but map {name} is not; purge the pin directory to reset it"
                    ),
                },
                other => other,
            })?;
            let info = data
                .info()
                .map_err(|e| DatapathError::op("get info of", format!("map {name}"), &e))?;
            self.map_info
                .insert(name.clone(), (info.id(), info.max_entries()));
            let map = Map::from_map_data(data)
                .map_err(|e| DatapathError::op("open", format!("map {name}"), &e))?;
            self.maps.insert(name, map);
        }
        let ep_map_id = self
            .map_info
            .get(ep_map::BY_IFINDEX_MAP)
            .map(|(id, _)| *id)
            .unwrap_or_default();
        for (name, hook) in PROGRAMS {
            let prog = loader::open_pinned_program_using(
                name,
                &self.pins.program(name),
                ep_map_id,
                &self.pins.map(ep_map::BY_IFINDEX_MAP),
                "purge the pin directory to reset it",
            )?;
            self.programs.push((name, hook, prog));
        }
        Ok(())
    }

    /// Moves every recorded attachment of our programs to the programs of
    /// `ebpf` (an upgrade).
    fn move_attachments(ebpf: &mut aya::Ebpf, pins: &PinDir, mode: AttachMode) -> Result<()> {
        for attachment in attach::list(pins)?.into_iter().filter(is_ours) {
            let name = attachment.program.clone();
            let prog = program_of(ebpf, &name)?;
            match attachment.via {
                Via::Tcx => {
                    let path = attachment.pin_path(pins);
                    let link = sys::bpf_obj_get(&path).map_err(|e| {
                        DatapathError::io("open pinned link", attachment.to_string(), e)
                    })?;
                    let prog_fd = prog.fd().map_err(|e| {
                        DatapathError::op("get fd of", format!("program {name}"), &e)
                    })?;
                    match sys::bpf_link_update(link.as_fd(), prog_fd.as_fd()) {
                        Ok(()) => {}
                        // The interface is gone and its link with it: drop the record.
                        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {
                            loader::remove_pin(&path)?;
                        }
                        Err(e) => {
                            return Err(DatapathError::io(
                                "replace program of tcx link",
                                attachment.to_string(),
                                e,
                            ))
                        }
                    }
                }
                Via::Netlink => {
                    let Some(iface) = sys::ifname_from_index(attachment.ifindex) else {
                        loader::remove_pin(&attachment.pin_path(pins))?;
                        continue;
                    };
                    attach::detach(&attachment, pins)?;
                    let netlink = match mode {
                        AttachMode::Tcx => AttachMode::Tcx,
                        _ => AttachMode::Netlink,
                    };
                    attach::attach(
                        prog,
                        &name,
                        &iface,
                        attachment.ifindex,
                        attachment.hook,
                        netlink,
                        pins,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// What `open` found and did.
    pub const fn outcome(&self) -> LoadOutcome {
        self.outcome
    }

    /// The build id of the programs in use (this build's, after `open`).
    pub fn build_id(&self) -> &str {
        &self.build_id
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        self.pins.path()
    }

    /// Kernel ids of the programs, by name.
    pub fn program_ids(&self) -> Result<Vec<(&'static str, u32)>> {
        self.programs
            .iter()
            .map(|(name, _, prog)| {
                prog.info()
                    .map(|info| (*name, info.id()))
                    .map_err(|e| DatapathError::op("get info of", format!("program {name}"), &e))
            })
            .collect()
    }

    /// `max_entries` of every map as the kernel has it (pinned sizes).
    pub fn map_sizes(&self) -> Vec<(String, u32)> {
        self.map_info
            .iter()
            .map(|(name, (_, max_entries))| (name.clone(), *max_entries))
            .collect()
    }

    /// Kernel ids of the maps, by name.
    pub fn map_ids(&self) -> Vec<(String, u32)> {
        self.map_info
            .iter()
            .map(|(name, (id, _))| (name.clone(), *id))
            .collect()
    }

    /// One of the datapath's maps, by name (`mbr_ct_tcp`, `mbr_events`...).
    pub fn map(&self, name: &str) -> Result<&Map> {
        self.maps
            .get(name)
            .ok_or_else(|| DatapathError::invalid("map", format!("{name} is not a map of bpf_lxc")))
    }

    /// One of the datapath's maps, mutably.
    pub fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.maps
            .get_mut(name)
            .ok_or_else(|| DatapathError::invalid("map", format!("{name} is not a map of bpf_lxc")))
    }

    /// `mbr_ep_ifindex`, typed.
    pub fn endpoints_by_ifindex(&mut self) -> Result<EndpointsByIfindex<&mut MapData>> {
        EndpointsByIfindex::try_from(self.map_mut(ep_map::BY_IFINDEX_MAP)?)
    }

    /// `mbr_ep_cache` (the programs' copy of endpoint entries), typed.
    pub fn endpoint_cache(&mut self) -> Result<EndpointCache<&mut MapData>> {
        EndpointCache::try_from(self.map_mut(ep_map::CACHE_MAP)?)
    }

    /// `mbr_ep_ip`, typed.
    pub fn endpoints_by_ip(&mut self) -> Result<EndpointsByIp<&mut MapData>> {
        EndpointsByIp::try_from(self.map_mut(ep_map::BY_IP_MAP)?)
    }

    /// `mbr_ipcache`, typed.
    pub fn ipcache(&mut self) -> Result<Ipcache<&mut MapData>> {
        Ipcache::try_from(self.map_mut(maps::ipcache::MAP_NAME)?)
    }

    /// `mbr_policy_exact` and `mbr_policy`, as the pair the datapath reads.
    pub fn policy(&self) -> Result<PolicyMap<&MapData>> {
        PolicyMap::from_maps(
            self.map(maps::policy::EXACT_MAP_NAME)?,
            self.map(maps::policy::MAP_NAME)?,
        )
    }

    /// `mbr_config`, typed.
    pub fn config(&mut self) -> Result<ConfigMap<&mut MapData>> {
        ConfigMap::try_from(self.map_mut(maps::config::MAP_NAME)?)
    }

    /// `mbr_metrics`, typed.
    pub fn metrics(&self) -> Result<Metrics<&MapData>> {
        Metrics::try_from(self.map(maps::metrics::MAP_NAME)?)
    }

    /// Writes an endpoint into both endpoint maps (by ifindex and by IP).
    /// The ifindex entry is what the programs key on; write it before
    /// attaching.
    pub fn upsert_endpoint(&mut self, endpoint: &EndpointInfo) -> Result<()> {
        endpoint.validate()?;
        if endpoint.ipv4 != 0 {
            self.endpoints_by_ip()?.insert(endpoint)?;
        }
        self.endpoints_by_ifindex()?.insert(endpoint)
    }

    /// Removes the endpoint of `ifindex` from both endpoint maps; false if
    /// there was none. Detach first ([`Self::detach_endpoint`] does both).
    pub fn remove_endpoint(&mut self, ifindex: u32) -> Result<bool> {
        let Some(endpoint) = self.endpoints_by_ifindex()?.get(ifindex)? else {
            return Ok(false);
        };
        self.endpoints_by_ifindex()?.remove(ifindex)?;
        // The programs would empty the slot themselves at the interface's
        // next packet that is not a tracked connection's; there is none
        // after a detach, and an interface that reappears under this
        // ifindex must not start from this endpoint's copy.
        self.endpoint_cache()?.evict(ifindex)?;
        if endpoint.ipv4 != 0 {
            // Only if that address still belongs to this endpoint.
            let mut by_ip = self.endpoints_by_ip()?;
            if by_ip
                .get(endpoint.ipv4_addr())?
                .is_some_and(|e| e.ifindex == ifindex)
            {
                by_ip.remove(endpoint.ipv4_addr())?;
            }
        }
        Ok(true)
    }

    /// Writes `endpoint` (whose `ifindex` must be `iface`'s) into the
    /// endpoint maps, then attaches both programs to `iface`. Idempotent.
    pub fn attach_endpoint(
        &mut self,
        iface: &str,
        endpoint: &EndpointInfo,
    ) -> Result<Vec<Attached>> {
        let ifindex = sys::ifindex_from_name(iface)?;
        if endpoint.ifindex != ifindex {
            return Err(DatapathError::invalid(
                "endpoint",
                format!(
                    "endpoint {} names ifindex {}, but {iface} is ifindex {ifindex}",
                    endpoint.ep_id, endpoint.ifindex
                ),
            ));
        }
        self.upsert_endpoint(endpoint)?;
        self.attach(iface)
    }

    /// Attaches both programs to the host-side veth `iface`, whose endpoint
    /// entry must already be in `mbr_ep_ifindex`. Idempotent. On failure,
    /// what this call attached is detached again.
    pub fn attach(&mut self, iface: &str) -> Result<Vec<Attached>> {
        let ifindex = sys::ifindex_from_name(iface)?;
        if self.endpoints_by_ifindex()?.get(ifindex)?.is_none() {
            return Err(DatapathError::invalid(
                "endpoint",
                format!(
                    "{iface} (ifindex {ifindex}) has no entry in {}: write the endpoint first \
                     (upsert_endpoint / attach_endpoint), so that its policy applies from the first packet",
                    ep_map::BY_IFINDEX_MAP
                ),
            ));
        }
        let _lock = lock(&self.pins)?;
        let mut done: Vec<Attached> = Vec::new();
        for (name, hook, prog) in &mut self.programs {
            match attach::attach(prog, name, iface, ifindex, *hook, self.mode, &self.pins) {
                Ok(attached) => done.push(attached),
                Err(e) => {
                    for attached in done.iter().filter(|a| a.created) {
                        let _undo = attach::detach(&attached.attachment, &self.pins);
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Detaches both programs from interface `ifindex` (links only; the
    /// endpoint entries stay). Idempotent.
    pub fn detach(&mut self, ifindex: u32) -> Result<Vec<TcAttachment>> {
        let _lock = lock(&self.pins)?;
        let mut detached = Vec::new();
        for attachment in attach::list(&self.pins)?
            .into_iter()
            .filter(|a| a.ifindex == ifindex && is_ours(a))
        {
            attach::detach(&attachment, &self.pins)?;
            detached.push(attachment);
        }
        let _ = fs::remove_dir(self.pins.interface_links(ifindex));
        Ok(detached)
    }

    /// Detaches the programs from interface `ifindex`, then removes its
    /// endpoint entries.
    pub fn detach_endpoint(&mut self, ifindex: u32) -> Result<LxcDetachReport> {
        let detached = self.detach(ifindex)?;
        let endpoint_removed = self.remove_endpoint(ifindex)?;
        Ok(LxcDetachReport {
            detached,
            endpoint_removed,
        })
    }

    /// Every interface with the datapath attached, with its endpoint entry.
    pub fn attached(&mut self) -> Result<Vec<EndpointAttachment>> {
        let mut by_ifindex: BTreeMap<u32, Vec<TcAttachment>> = BTreeMap::new();
        for a in attach::list(&self.pins)?.into_iter().filter(is_ours) {
            by_ifindex.entry(a.ifindex).or_default().push(a);
        }
        let endpoints = self.endpoints_by_ifindex()?;
        let mut out = Vec::new();
        for (ifindex, attachments) in by_ifindex {
            out.push(EndpointAttachment {
                ifindex,
                iface: sys::ifname_from_index(ifindex),
                endpoint: endpoints.get(ifindex)?,
                attachments,
            });
        }
        Ok(out)
    }
}

/// The attachments of the endpoint programs recorded in `pin_dir`, without
/// opening anything (for a CLI).
pub fn attachments(pin_dir: &Path, bpffs_root: &Path) -> Result<Vec<TcAttachment>> {
    let pins = PinDir::new(pin_dir, bpffs_root)?;
    Ok(attach::list(&pins)?.into_iter().filter(is_ours).collect())
}

/// What [`purge`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Attachments removed from their hooks.
    pub detached: Vec<TcAttachment>,
    /// Pins (and empty directories) removed.
    pub removed: Vec<PathBuf>,
}

/// Removes the endpoint datapath from `pin_dir` entirely: detaches every
/// attachment, unpins programs, build markers and every map of `bpf_lxc`
/// (conntrack, policy and endpoints are gone), removes empty directories.
/// Never part of a restart or an upgrade; for uninstall and tests.
pub fn purge(pin_dir: &Path, bpffs_root: &Path) -> Result<PurgeReport> {
    let pins = PinDir::new(pin_dir, bpffs_root)?;
    let mut report = PurgeReport::default();
    if !exists(pins.path()) {
        return Ok(report);
    }
    let _lock = lock(&pins)?;
    for attachment in attach::list(&pins)?.into_iter().filter(is_ours) {
        attach::detach(&attachment, &pins)?;
        report.removed.push(attachment.pin_path(&pins));
        report.detached.push(attachment);
    }
    let mut names: Vec<String> = PROGRAMS.iter().map(|(n, _)| (*n).to_owned()).collect();
    names.extend(
        markers(&pins)?
            .into_iter()
            .map(|id| format!("{BUILD_MARKER_PREFIX}{id}")),
    );
    for name in names {
        let path = pins.program(&name);
        if loader::remove_pin(&path)? {
            report.removed.push(path);
        }
    }
    let map_names = OBJECT
        .map_names()
        .map_err(|e| DatapathError::op("read maps of", format!("object {}", OBJECT.name), &e))?;
    for name in map_names {
        let path = pins.map(&name);
        if loader::remove_pin(&path)? {
            report.removed.push(path);
        }
    }
    report.removed.extend(pins.remove_empty_dirs());
    Ok(report)
}

/// A one-line summary of an endpoint attachment, for logs and examples.
pub fn describe(a: &EndpointAttachment) -> String {
    let mut s = format!(
        "ifindex {} ({})",
        a.ifindex,
        a.iface.as_deref().unwrap_or("gone")
    );
    if let Some(ep) = &a.endpoint {
        let _ = write!(
            s,
            " endpoint {} identity {} ip {} flags {:#x}",
            ep.ep_id,
            ep.identity,
            ep.ipv4_addr(),
            ep.flags
        );
    }
    for at in &a.attachments {
        let _ = write!(s, " [{} {} {}]", at.via.mode_name(), at.hook, at.program);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_is_stable_and_content_addressed() {
        assert_eq!(build_id(), build_id());
        assert_eq!(build_id().len(), 16);
        assert_ne!(build_id_of(b"a"), build_id_of(b"b"));
        assert_eq!(build_id_of(b""), "cbf29ce484222325");
    }

    #[test]
    fn map_sizes_are_validated() {
        let opts = MapSizes {
            ct_tcp: Some(16),
            endpoints: Some(8),
            policy: Some(32),
            ..MapSizes::default()
        }
        .load_options()
        .expect("valid");
        assert!(opts.max_entries.contains(&("mbr_ct_tcp".to_owned(), 16)));
        assert!(opts.max_entries.contains(&("mbr_ep_ip".to_owned(), 8)));
        // An entry lives in one of the two policy maps: each gets the size.
        assert!(opts.max_entries.contains(&("mbr_policy".to_owned(), 32)));
        assert!(opts
            .max_entries
            .contains(&("mbr_policy_exact".to_owned(), 32)));
        let err = MapSizes {
            events_bytes: Some(5000),
            ..MapSizes::default()
        }
        .load_options()
        .expect_err("not a power of two");
        assert!(err.to_string().contains("power of two"), "{err}");
        assert!(MapSizes {
            policy: Some(0),
            ..MapSizes::default()
        }
        .load_options()
        .is_err());
    }
}
