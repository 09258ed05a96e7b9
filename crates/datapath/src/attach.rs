//! Attaching tc programs to interfaces so that the attachment outlives the
//! process: tcx links pinned in bpffs (kernel 6.6+), or, where tcx is
//! refused, netlink cls_bpf filters on a clsact qdisc (kernel 4.5+).
//!
//! Each attachment is recorded under `<pin dir>/links/<ifindex>/` as
//! `<via>-<hook>-<program>` (see [`TcAttachment`]), which is how detach finds
//! them again from any process. (bpffs refuses names containing `.`, which it
//! reserves for kernel-made entries such as `maps.debug`.)

use std::{fmt, fs, io, os::fd::AsFd as _, path::PathBuf};

use aya::programs::{
    links::FdLink,
    tc::{self, NlOptions, TcAttachOptions, TcError},
    LinkOrder, SchedClassifier, TcAttachType,
};

use crate::{
    bpffs::{exists, PinDir},
    error::{find_errno, DatapathError, Result},
    maps::packet_counter::Direction,
    sys,
};

/// How to attach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// tcx, falling back to netlink cls_bpf if the kernel refuses tcx.
    #[default]
    Auto,
    /// tcx only.
    Tcx,
    /// netlink cls_bpf only.
    Netlink,
}

impl AttachMode {
    /// Parses `"auto"`, `"tcx"` or `"netlink"`.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "auto" => Ok(Self::Auto),
            "tcx" => Ok(Self::Tcx),
            "netlink" => Ok(Self::Netlink),
            other => Err(DatapathError::invalid(
                "attach mode",
                format!("{other:?}; use \"auto\", \"tcx\" or \"netlink\""),
            )),
        }
    }
}

/// The mechanism an attachment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    /// A tcx link (`BPF_LINK_TYPE_TCX`), pinned.
    Tcx,
    /// A netlink cls_bpf filter in direct-action mode.
    Netlink,
}

impl Via {
    /// `"tcx"` or `"tc"`, as in pin names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Netlink => "tc",
        }
    }

    /// `"tcx"` or `"netlink"`, as reported to users.
    pub const fn mode_name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
        }
    }
}

/// One program attached to one hook of one interface, as recorded in the pin
/// directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcAttachment {
    /// Interface index (loader's network namespace).
    pub ifindex: u32,
    /// Hook.
    pub hook: Direction,
    /// Mechanism.
    pub via: Via,
    /// Program name.
    pub program: String,
}

impl TcAttachment {
    /// The pin's file name: `<via>-<hook>-<program>`, e.g. `tcx-ingress-mbr_cnt_ingress`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-{}",
            self.via.as_str(),
            self.hook.as_str(),
            self.program
        )
    }

    /// The pin's path in `pins`.
    pub fn pin_path(&self, pins: &PinDir) -> PathBuf {
        pins.interface_links(self.ifindex).join(self.file_name())
    }

    /// Parses a pin file name found under `links/<ifindex>/`.
    pub fn parse(ifindex: u32, file_name: &str) -> Option<Self> {
        let mut parts = file_name.splitn(3, '-');
        let via = match parts.next()? {
            "tcx" => Via::Tcx,
            "tc" => Via::Netlink,
            _ => return None,
        };
        let hook = match parts.next()? {
            "ingress" => Direction::Ingress,
            "egress" => Direction::Egress,
            _ => return None,
        };
        let program = parts.next().filter(|p| !p.is_empty())?.to_owned();
        Some(Self {
            ifindex,
            hook,
            via,
            program,
        })
    }

    fn tc_attach_type(&self) -> TcAttachType {
        tc_attach_type(self.hook)
    }
}

impl fmt::Display for TcAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on ifindex {}",
            self.program,
            self.via.mode_name(),
            self.hook,
            self.ifindex
        )
    }
}

const fn tc_attach_type(hook: Direction) -> TcAttachType {
    match hook {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    }
}

/// Every attachment recorded in `pins`, sorted.
pub fn list(pins: &PinDir) -> Result<Vec<TcAttachment>> {
    let mut out = Vec::new();
    let links_dir = pins.links_dir();
    let entries = match fs::read_dir(&links_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(DatapathError::io(
                "list",
                links_dir.display().to_string(),
                e,
            ))
        }
    };
    for entry in entries.flatten() {
        let Some(ifindex) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let files = fs::read_dir(&dir)
            .map_err(|e| DatapathError::io("list", dir.display().to_string(), e))?;
        for file in files.flatten() {
            if let Some(attachment) = file
                .file_name()
                .to_str()
                .and_then(|n| TcAttachment::parse(ifindex, n))
            {
                out.push(attachment);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The result of [`attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The attachment.
    pub attachment: TcAttachment,
    /// Whether this call created it (false: it already existed and is live).
    pub created: bool,
}

/// Attaches `prog` (named `program`) to `hook` of interface `iface`/`ifindex`
/// and records it in `pins`. Idempotent: an existing, live attachment of the
/// same program to the same hook is kept and reported with `created: false`.
pub fn attach(
    prog: &mut SchedClassifier,
    program: &str,
    iface: &str,
    ifindex: u32,
    hook: Direction,
    mode: AttachMode,
    pins: &PinDir,
) -> Result<Attached> {
    let dir = pins.interface_links(ifindex);
    fs::create_dir_all(&dir)
        .map_err(|e| DatapathError::io("create pin directory", dir.display().to_string(), e))?;

    for via in [Via::Tcx, Via::Netlink] {
        let existing = TcAttachment {
            ifindex,
            hook,
            via,
            program: program.to_owned(),
        };
        let path = existing.pin_path(pins);
        if !exists(&path) {
            continue;
        }
        if via == Via::Netlink || tcx_is_live(prog, iface, hook)? {
            return Ok(Attached {
                attachment: existing,
                created: false,
            });
        }
        // A tcx link pin whose program is no longer on the hook (the
        // interface was recreated): drop the stale pin and attach afresh.
        crate::loader::remove_pin(&path)?;
    }

    match mode {
        AttachMode::Tcx => attach_tcx(prog, program, iface, ifindex, hook, pins),
        AttachMode::Netlink => attach_netlink(prog, program, iface, ifindex, hook, pins),
        AttachMode::Auto => match attach_tcx(prog, program, iface, ifindex, hook, pins) {
            Err(DatapathError::Op {
                errno: Some(errno), ..
            }) if tcx_refused(errno) => attach_netlink(prog, program, iface, ifindex, hook, pins),
            other => other,
        },
    }
}

/// Errnos with which a kernel without tcx refuses `BPF_LINK_CREATE` for
/// `BPF_TCX_*`: unknown attach type, or link type unsupported.
const fn tcx_refused(errno: i32) -> bool {
    errno == libc::EINVAL || errno == libc::EOPNOTSUPP || errno == 524 /* ENOTSUPP */
}

fn what(program: &str, iface: &str, ifindex: u32) -> String {
    format!("program {program} on {iface} (ifindex {ifindex})")
}

fn attach_tcx(
    prog: &mut SchedClassifier,
    program: &str,
    iface: &str,
    ifindex: u32,
    hook: Direction,
    pins: &PinDir,
) -> Result<Attached> {
    let op = match hook {
        Direction::Ingress => "attach tcx ingress",
        Direction::Egress => "attach tcx egress",
    };
    let link_id = prog
        .attach_with_options(
            iface,
            tc_attach_type(hook),
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| DatapathError::op(op, what(program, iface, ifindex), &e))?;
    let link = prog
        .take_link(link_id)
        .map_err(|e| DatapathError::op(op, what(program, iface, ifindex), &e))?;
    // From here on, dropping `link` detaches: any failure below rolls back.
    let fd_link = FdLink::try_from(link)
        .map_err(|e| DatapathError::op(op, what(program, iface, ifindex), &e))?;
    let attachment = TcAttachment {
        ifindex,
        hook,
        via: Via::Tcx,
        program: program.to_owned(),
    };
    let path = attachment.pin_path(pins);
    fd_link.pin(&path).map_err(|e| {
        DatapathError::op(
            "pin link",
            format!("{} at {}", what(program, iface, ifindex), path.display()),
            &e,
        )
    })?;
    Ok(Attached {
        attachment,
        created: true,
    })
}

fn attach_netlink(
    prog: &mut SchedClassifier,
    program: &str,
    iface: &str,
    ifindex: u32,
    hook: Direction,
    pins: &PinDir,
) -> Result<Attached> {
    let op = match hook {
        Direction::Ingress => "attach netlink cls_bpf ingress",
        Direction::Egress => "attach netlink cls_bpf egress",
    };
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => {}
        Err(e) if find_errno(&e) == Some(libc::EEXIST) => {}
        Err(TcError::AlreadyAttached) => {}
        Err(e) => {
            return Err(DatapathError::op(
                "add clsact qdisc",
                format!("interface {iface}"),
                &e,
            ))
        }
    }
    let link_id = prog
        .attach_with_options(
            iface,
            tc_attach_type(hook),
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .map_err(|e| DatapathError::op(op, what(program, iface, ifindex), &e))?;
    let link = prog
        .take_link(link_id)
        .map_err(|e| DatapathError::op(op, what(program, iface, ifindex), &e))?;
    let attachment = TcAttachment {
        ifindex,
        hook,
        via: Via::Netlink,
        program: program.to_owned(),
    };
    let path = attachment.pin_path(pins);
    if let Err(e) = prog.pin(&path) {
        // Dropping the link removes the filter again.
        drop(link);
        return Err(DatapathError::op(
            "pin attachment marker",
            format!("{} at {}", what(program, iface, ifindex), path.display()),
            &e,
        ));
    }
    // A netlink filter is not tied to any fd: it stays until removed by
    // `detach`. The link handle holds only (ifindex, priority, handle)
    // integers, so forgetting it leaks nothing; dropping it would remove the
    // filter.
    std::mem::forget(link);
    Ok(Attached {
        attachment,
        created: true,
    })
}

/// Whether `prog` is among the tcx programs on `hook` of `iface`.
fn tcx_is_live(prog: &SchedClassifier, iface: &str, hook: Direction) -> Result<bool> {
    let id = prog
        .info()
        .map_err(|e| DatapathError::op("get info of", "program".to_owned(), &e))?
        .id();
    let (_, programs) = SchedClassifier::query_tcx(iface, tc_attach_type(hook))
        .map_err(|e| DatapathError::op("query tcx", format!("interface {iface}"), &e))?;
    Ok(programs.iter().any(|p| p.id() == id))
}

/// A program found on a tcx hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcxProgram {
    /// Hook.
    pub hook: Direction,
    /// Kernel program id.
    pub id: u32,
    /// Kernel program name.
    pub name: String,
}

/// The tcx programs on both hooks of `iface`, in run order.
pub fn query_tcx(iface: &str) -> Result<Vec<TcxProgram>> {
    sys::validate_ifname(iface)?;
    let mut out = Vec::new();
    for hook in Direction::ALL {
        let (_, programs) = SchedClassifier::query_tcx(iface, tc_attach_type(hook))
            .map_err(|e| DatapathError::op("query tcx", format!("interface {iface}"), &e))?;
        out.extend(programs.into_iter().map(|p| TcxProgram {
            hook,
            id: p.id(),
            name: p.name_as_str().unwrap_or_default().to_owned(),
        }));
    }
    Ok(out)
}

/// Removes one recorded attachment from its hook and deletes its pin. An
/// attachment whose interface no longer exists only loses its pin (the
/// kernel removed the hook with the interface).
pub fn detach(attachment: &TcAttachment, pins: &PinDir) -> Result<()> {
    let path = attachment.pin_path(pins);
    let object = attachment.to_string();
    match attachment.via {
        Via::Tcx => {
            let link = match sys::bpf_obj_get(&path) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(DatapathError::io("open pinned link", object, e)),
            };
            sys::bpf_link_detach(link.as_fd())
                .map_err(|e| DatapathError::io("detach tcx link", object.clone(), e))?;
        }
        Via::Netlink => {
            if let Some(iface) = sys::ifname_from_index(attachment.ifindex) {
                match tc::qdisc_detach_program(
                    &iface,
                    attachment.tc_attach_type(),
                    &attachment.program,
                ) {
                    Ok(()) => {}
                    Err(TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e)
                        if find_errno(&e) == Some(libc::ENODEV)
                            || find_errno(&e) == Some(libc::ENOENT) => {}
                    Err(e) => return Err(DatapathError::op("detach netlink cls_bpf", object, &e)),
                }
            }
        }
    }
    crate::loader::remove_pin(&path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_pin_names_round_trip() {
        for via in [Via::Tcx, Via::Netlink] {
            for hook in Direction::ALL {
                let a = TcAttachment {
                    ifindex: 42,
                    hook,
                    via,
                    program: "mbr_cnt_ingress".to_owned(),
                };
                let name = a.file_name();
                assert!(!name.contains('.'), "bpffs refuses dots: {name}");
                assert_eq!(TcAttachment::parse(42, &name), Some(a));
            }
        }
        assert_eq!(TcAttachment::parse(1, "tcx-sideways-x"), None);
        assert_eq!(TcAttachment::parse(1, "xdp-ingress-x"), None);
        assert_eq!(TcAttachment::parse(1, "tcx-ingress-"), None);
    }

    #[test]
    fn attach_mode_parses() {
        assert_eq!(AttachMode::parse("auto").ok(), Some(AttachMode::Auto));
        assert_eq!(AttachMode::parse("tcx").ok(), Some(AttachMode::Tcx));
        assert_eq!(AttachMode::parse("netlink").ok(), Some(AttachMode::Netlink));
        let err = AttachMode::parse("xdp").expect_err("xdp is not a tc mode");
        assert_eq!(err.code(), "EINVAL");
        assert!(err.to_string().contains("attach mode"), "{err}");
    }
}
