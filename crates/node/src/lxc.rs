//! The endpoint datapath (`bpf_lxc`) of a node for JavaScript: load it once
//! per pin directory (later calls adopt it), attach it to endpoints, detach
//! them, list them. See `membrane_datapath::lxc`.
//!
//! Each call opens the pinned datapath with `Lxc::open` (about 2 ms when it
//! is adopted), does its work and closes it again: nothing is held between
//! calls, and any process can pick up where another left off. Inputs are
//! checked before the task starts; a bad one rejects with code `EINVAL` and
//! `object` naming the field (`endpoint.mac`, `sizes.eventsBytes`...).

use std::{net::Ipv4Addr, path::PathBuf};

use membrane_datapath::{
    attach::{AttachMode, Attached},
    bpffs::PinDir,
    lxc::{self, EndpointAttachment, LoadOutcome, Lxc, LxcDetachReport, LxcOptions, MapSizes},
    maps::endpoint::{ipv4_from_map, EndpointInfo},
    DatapathError,
};
use napi::{bindgen_prelude::*, Env, Task};
use napi_derive::napi;

use crate::{attachment_info, bpffs_root_or_default, Failure, TcAttachmentInfo};

/// `max_entries` of the maps `openDatapath` creates (maps already pinned
/// keep their size). Omitted: the object's default (see `ebpf/README.md`).
#[napi(object)]
pub struct DatapathMapSizes {
    /// `mbr_ep_ifindex` and `mbr_ep_ip`.
    pub endpoints: Option<u32>,
    /// `mbr_ipcache`.
    pub ipcache: Option<u32>,
    /// `mbr_policy_exact` and `mbr_policy`, each.
    pub policy: Option<u32>,
    /// `mbr_ct_tcp`.
    pub ct_tcp: Option<u32>,
    /// `mbr_ct_any`.
    pub ct_any: Option<u32>,
    /// `mbr_events` ring buffer, in bytes: a power of two, at least one page.
    pub events_bytes: Option<u32>,
}

/// Options of `openDatapath`.
#[napi(object)]
pub struct OpenDatapathOptions {
    /// Pin directory (absolute, inside `bpffsRoot`), e.g. `/sys/fs/bpf/membrane`.
    pub pin_dir: String,
    /// Where bpffs is mounted; mounted there if absent. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
    /// Sizes of the maps that get created.
    pub sizes: Option<DatapathMapSizes>,
    /// How later attachments are made: `'auto'` (default: tcx, falling back
    /// to netlink cls_bpf), `'tcx'` or `'netlink'`. Also used to move
    /// attachments during an upgrade.
    #[napi(ts_type = "'auto' | 'tcx' | 'netlink'")]
    pub mode: Option<String>,
}

/// One map of the datapath as the kernel has it.
#[napi(object)]
pub struct DatapathMapInfo {
    /// Map name, e.g. `mbr_policy`.
    pub name: String,
    /// Its `max_entries` (for `mbr_events`: bytes).
    pub max_entries: u32,
}

/// Result of `openDatapath`.
#[napi(object)]
pub struct OpenDatapathResult {
    /// `'loaded'`: nothing was pinned, loaded and pinned now; `'adopted'`:
    /// this build was pinned, nothing loaded; `'upgraded'`: another build
    /// was pinned, loaded against its maps and every attachment moved.
    #[napi(ts_type = "'loaded' | 'adopted' | 'upgraded'")]
    pub outcome: String,
    /// Id of the embedded `bpf_lxc` object (16 hex digits).
    pub build_id: String,
    /// Every map, by name.
    pub maps: Vec<DatapathMapInfo>,
}

/// Where the datapath is pinned.
#[napi(object)]
pub struct DatapathTarget {
    /// Pin directory given to `openDatapath`.
    pub pin_dir: String,
    /// Where bpffs is mounted. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
}

/// A local endpoint (C `struct endpoint_info`), addresses as text.
#[napi(object)]
pub struct EndpointSpec {
    /// ifindex of the host-side veth.
    pub ifindex: u32,
    /// Security identity of the pod.
    pub identity: u32,
    /// The pod's IPv4 address, dotted (`"10.0.0.5"`).
    pub ipv4: String,
    /// Endpoint id, 1..=65535: the key of its policy entries.
    pub ep_id: u32,
    /// `EP_F_*`: 1 ingress enforced, 2 egress enforced, 4 audit.
    pub flags: u32,
    /// The pod's MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The host-side veth's MAC, `aa:bb:cc:dd:ee:ff`.
    pub node_mac: String,
}

/// Options of `attachEndpoint`.
#[napi(object)]
pub struct AttachEndpointOptions {
    /// Pin directory of an opened datapath.
    pub pin_dir: String,
    /// Where bpffs is mounted. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
    /// Host-side veth of the endpoint; its ifindex must be `endpoint.ifindex`.
    pub iface: String,
    /// The endpoint entry written before the programs are attached.
    pub endpoint: EndpointSpec,
}

/// One attachment made (or found) by `attachEndpoint`.
#[napi(object)]
pub struct EndpointAttachResult {
    /// The hook.
    #[napi(ts_type = "'ingress' | 'egress'")]
    pub direction: String,
    /// The mechanism.
    #[napi(ts_type = "'tcx' | 'netlink'")]
    pub mode: String,
    /// Kernel program name (`mbr_from_cont`, `mbr_to_cont`).
    pub program: String,
    /// The pin that records (and, for tcx, holds) the attachment.
    pub pin_path: String,
    /// Interface index.
    pub ifindex: u32,
    /// Whether this call created it (false: it was already attached).
    pub created: bool,
}

/// Options of `detachEndpoint`.
#[napi(object)]
pub struct DetachEndpointOptions {
    /// Pin directory of an opened datapath.
    pub pin_dir: String,
    /// Where bpffs is mounted. Default `/sys/fs/bpf`.
    pub bpffs_root: Option<String>,
    /// ifindex of the endpoint's host-side veth.
    pub ifindex: u32,
}

/// Result of `detachEndpoint`.
#[napi(object)]
pub struct DetachEndpointResult {
    /// Attachments removed from their hooks.
    pub detached: Vec<TcAttachmentInfo>,
    /// Whether the endpoint entries were removed (false: there were none).
    pub endpoint_removed: bool,
}

/// An endpoint entry as read back from `mbr_ep_ifindex`.
#[napi(object)]
pub struct EndpointEntry {
    /// ifindex of the host-side veth.
    pub ifindex: u32,
    /// Security identity.
    pub identity: u32,
    /// IPv4 address, dotted.
    pub ipv4: String,
    /// Endpoint id.
    pub ep_id: u32,
    /// `EP_F_*`.
    pub flags: u32,
    /// The pod's MAC.
    pub mac: String,
    /// The host-side veth's MAC.
    pub node_mac: String,
}

/// One interface with the endpoint datapath attached.
#[napi(object)]
pub struct EndpointAttachmentInfo {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name; absent if the interface is gone.
    pub iface: Option<String>,
    /// Its endpoint entry, if any.
    pub endpoint: Option<EndpointEntry>,
    /// The program attachments (normally ingress and egress).
    pub attachments: Vec<TcAttachmentInfo>,
}

/// Result of `purgeDatapath`.
#[napi(object)]
pub struct PurgeDatapathResult {
    /// Attachments removed from their hooks.
    pub detached: Vec<TcAttachmentInfo>,
    /// Pins and empty directories removed.
    pub removed: Vec<String>,
}

fn parse_mac(what: &'static str, value: &str) -> std::result::Result<[u8; 6], DatapathError> {
    let bad = || {
        DatapathError::invalid(
            what,
            format!("{value:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        )
    };
    let mut out = [0u8; 6];
    let mut parts = value.split(':');
    for byte in &mut out {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn endpoint_info(spec: &EndpointSpec) -> std::result::Result<EndpointInfo, DatapathError> {
    let ipv4: Ipv4Addr = spec.ipv4.parse().map_err(|_| {
        DatapathError::invalid(
            "endpoint.ipv4",
            format!("{:?} is not a dotted IPv4 address", spec.ipv4),
        )
    })?;
    let ep_id = u16::try_from(spec.ep_id)
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| {
            DatapathError::invalid(
                "endpoint.epId",
                format!("{} is not in 1..=65535", spec.ep_id),
            )
        })?;
    let flags = u16::try_from(spec.flags).map_err(|_| {
        DatapathError::invalid("endpoint.flags", format!("{:#x} is not a u16", spec.flags))
    })?;
    if spec.ifindex == 0 {
        return Err(DatapathError::invalid(
            "endpoint.ifindex",
            "must be above 0",
        ));
    }
    let mut info = EndpointInfo::new(spec.ifindex, spec.identity, ipv4, ep_id, flags);
    info.mac = parse_mac("endpoint.mac", &spec.mac)?;
    info.node_mac = parse_mac("endpoint.nodeMac", &spec.node_mac)?;
    info.validate()?;
    Ok(info)
}

fn endpoint_entry(info: &EndpointInfo) -> EndpointEntry {
    EndpointEntry {
        ifindex: info.ifindex,
        identity: info.identity,
        ipv4: ipv4_from_map(info.ipv4).to_string(),
        ep_id: u32::from(info.ep_id),
        flags: u32::from(info.flags),
        mac: format_mac(&info.mac),
        node_mac: format_mac(&info.node_mac),
    }
}

fn lxc_options(pin_dir: String, bpffs_root: Option<String>) -> LxcOptions {
    let mut opts = LxcOptions::new(PathBuf::from(pin_dir));
    opts.bpffs_root = bpffs_root_or_default(bpffs_root);
    opts
}

/// What every endpoint datapath call starts from: where the datapath is,
/// and an input error found while converting the options (reported as the
/// task's rejection, so that callers see one failure path).
struct LxcCall {
    options: LxcOptions,
    invalid: Option<DatapathError>,
}

impl LxcCall {
    fn new(options: LxcOptions) -> Self {
        Self {
            options,
            invalid: None,
        }
    }

    fn check(&mut self) -> std::result::Result<(), DatapathError> {
        self.invalid.take().map_or(Ok(()), Err)
    }

    fn open(&mut self) -> std::result::Result<Lxc, DatapathError> {
        self.check()?;
        Lxc::open(&self.options)
    }

    fn pins(&self) -> std::result::Result<PinDir, DatapathError> {
        PinDir::new(&self.options.pin_dir, &self.options.bpffs_root)
    }
}

/// One background task type per call: `$compute` runs on the libuv thread
/// pool, `$resolve` converts its output on the main thread.
macro_rules! lxc_task {
    (
        $(#[$doc:meta])*
        $name:ident { $($field:ident: $ty:ty),* $(,)? } -> ($output:ty, $js:ty),
        compute($c:ident) $compute:block,
        resolve($r:ident, $out:pat_param) $resolve:block
    ) => {
        $(#[$doc])*
        pub struct $name {
            call: LxcCall,
            $($field: $ty,)*
            failure: Failure,
        }

        #[napi]
        impl Task for $name {
            type Output = $output;
            type JsValue = $js;

            fn compute(&mut self) -> Result<Self::Output> {
                let $c = &mut *self;
                let result: std::result::Result<$output, DatapathError> = (|| $compute)();
                result.map_err(|e| self.failure.record(e))
            }

            fn resolve(&mut self, _env: Env, $out: Self::Output) -> Result<Self::JsValue> {
                let $r = &*self;
                let _ = $r;
                Ok($resolve)
            }

            fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
                Err(self.failure.take_js_error(&env, err))
            }
        }
    };
}

lxc_task! {
    /// Background job of `openDatapath`.
    OpenDatapathTask {} -> ((LoadOutcome, String, Vec<(String, u32)>), OpenDatapathResult),
    compute(t) {
        let dp = t.call.open()?;
        Ok((dp.outcome(), dp.build_id().to_owned(), dp.map_sizes()))
    },
    resolve(_t, (outcome, build_id, maps)) {
        OpenDatapathResult {
            outcome: outcome.as_str().to_owned(),
            build_id,
            maps: maps
                .into_iter()
                .map(|(name, max_entries)| DatapathMapInfo { name, max_entries })
                .collect(),
        }
    }
}

lxc_task! {
    /// Background job of `attachEndpoint`.
    AttachEndpointTask { iface: String, endpoint: EndpointInfo } -> ((Vec<Attached>, PinDir), Vec<EndpointAttachResult>),
    compute(t) {
        let mut dp = t.call.open()?;
        Ok((dp.attach_endpoint(&t.iface, &t.endpoint)?, t.call.pins()?))
    },
    resolve(_t, (list, pins)) {
        list.iter()
            .map(|a| {
                let info = attachment_info(&a.attachment, &pins);
                EndpointAttachResult {
                    direction: info.direction,
                    mode: info.mode,
                    program: info.program,
                    pin_path: info.pin_path,
                    ifindex: info.ifindex,
                    created: a.created,
                }
            })
            .collect()
    }
}

lxc_task! {
    /// Background job of `detachEndpoint`.
    DetachEndpointTask { ifindex: u32 } -> ((LxcDetachReport, PinDir), DetachEndpointResult),
    compute(t) {
        let mut dp = t.call.open()?;
        Ok((dp.detach_endpoint(t.ifindex)?, t.call.pins()?))
    },
    resolve(_t, (report, pins)) {
        DetachEndpointResult {
            detached: report.detached.iter().map(|a| attachment_info(a, &pins)).collect(),
            endpoint_removed: report.endpoint_removed,
        }
    }
}

lxc_task! {
    /// Background job of `listEndpointAttachments`.
    ListEndpointAttachmentsTask {} -> ((Vec<EndpointAttachment>, PinDir), Vec<EndpointAttachmentInfo>),
    compute(t) {
        let mut dp = t.call.open()?;
        Ok((dp.attached()?, t.call.pins()?))
    },
    resolve(_t, (list, pins)) {
        list.iter()
            .map(|e| EndpointAttachmentInfo {
                ifindex: e.ifindex,
                iface: e.iface.clone(),
                endpoint: e.endpoint.as_ref().map(endpoint_entry),
                attachments: e.attachments.iter().map(|a| attachment_info(a, &pins)).collect(),
            })
            .collect()
    }
}

lxc_task! {
    /// Background job of `purgeDatapath`.
    PurgeDatapathTask {} -> ((lxc::PurgeReport, PinDir), PurgeDatapathResult),
    compute(t) {
        t.call.check()?;
        let o = &t.call.options;
        Ok((lxc::purge(&o.pin_dir, &o.bpffs_root)?, t.call.pins()?))
    },
    resolve(_t, (report, pins)) {
        PurgeDatapathResult {
            detached: report.detached.iter().map(|a| attachment_info(a, &pins)).collect(),
            removed: report.removed.iter().map(|p| p.display().to_string()).collect(),
        }
    }
}

fn parse_mode(mode: Option<&str>) -> (AttachMode, Option<DatapathError>) {
    match AttachMode::parse(mode.unwrap_or("auto")) {
        Ok(mode) => (mode, None),
        Err(e) => (AttachMode::Auto, Some(e)),
    }
}

/// Loads the endpoint datapath (`bpf_lxc`) into `options.pinDir` and pins
/// its programs and maps there, or adopts it when this build is already
/// pinned (nothing is loaded, flushed or re-attached), or upgrades another
/// build in place. Call it at agent start; every other call of this family
/// needs it to have run once.
#[napi]
pub fn open_datapath(options: OpenDatapathOptions) -> AsyncTask<OpenDatapathTask> {
    let (mode, invalid) = parse_mode(options.mode.as_deref());
    let mut opts = lxc_options(options.pin_dir, options.bpffs_root);
    opts.mode = mode;
    if let Some(s) = options.sizes {
        opts.sizes = MapSizes {
            endpoints: s.endpoints,
            ipcache: s.ipcache,
            policy: s.policy,
            ct_tcp: s.ct_tcp,
            ct_any: s.ct_any,
            events_bytes: s.events_bytes,
            ..MapSizes::default()
        };
    }
    AsyncTask::new(OpenDatapathTask {
        call: LxcCall {
            options: opts,
            invalid,
        },
        failure: Failure::default(),
    })
}

/// Writes `options.endpoint` into the endpoint maps, then attaches both
/// endpoint programs to `options.iface` (its host-side veth). Idempotent.
/// Write the endpoint's policy entries first: an enforcing endpoint drops
/// everything until they are there (default deny).
#[napi]
pub fn attach_endpoint(options: AttachEndpointOptions) -> AsyncTask<AttachEndpointTask> {
    let mut call = LxcCall::new(lxc_options(options.pin_dir, options.bpffs_root));
    let endpoint = endpoint_info(&options.endpoint).unwrap_or_else(|e| {
        call.invalid = Some(e);
        EndpointInfo::default()
    });
    AsyncTask::new(AttachEndpointTask {
        call,
        iface: options.iface,
        endpoint,
        failure: Failure::default(),
    })
}

/// Detaches the endpoint programs from interface `options.ifindex`, then
/// removes its endpoint entries. Idempotent.
#[napi]
pub fn detach_endpoint(options: DetachEndpointOptions) -> AsyncTask<DetachEndpointTask> {
    AsyncTask::new(DetachEndpointTask {
        call: LxcCall::new(lxc_options(options.pin_dir, options.bpffs_root)),
        ifindex: options.ifindex,
        failure: Failure::default(),
    })
}

/// Every interface with the endpoint datapath attached, with its endpoint entry.
#[napi]
pub fn list_endpoint_attachments(
    options: DatapathTarget,
) -> AsyncTask<ListEndpointAttachmentsTask> {
    AsyncTask::new(ListEndpointAttachmentsTask {
        call: LxcCall::new(lxc_options(options.pin_dir, options.bpffs_root)),
        failure: Failure::default(),
    })
}

/// Removes the endpoint datapath from `options.pinDir` entirely: detaches
/// every attachment, unpins programs, build markers and every map
/// (conntrack, policy, endpoints are gone). For uninstall and tests, never
/// part of a restart or an upgrade. Idempotent.
#[napi]
pub fn purge_datapath(options: DatapathTarget) -> AsyncTask<PurgeDatapathTask> {
    AsyncTask::new(PurgeDatapathTask {
        call: LxcCall::new(lxc_options(options.pin_dir, options.bpffs_root)),
        failure: Failure::default(),
    })
}
