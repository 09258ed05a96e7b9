//! The one error type of the datapath crate.
//!
//! Every error names the operation that failed (`op`), the kernel object it
//! was about (`object`: a map, program, link, interface or path) and, when the
//! kernel said no, the errno. The N-API layer turns these fields into
//! properties of the JavaScript error, so callers can branch on `code`
//! (`"EPERM"`, `"ENOENT"`, ...) without parsing messages.

use std::{error::Error as StdError, fmt::Write as _, io};

use crate::{layout::LayoutError, sys::errno_name};

/// Result with [`DatapathError`] as the error.
pub type Result<T, E = DatapathError> = std::result::Result<T, E>;

/// An error of the datapath: what was attempted, on what, and why it failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// A kernel operation (a `bpf(2)` command, netlink, mount, a bpffs file
    /// operation) or an aya call on top of one failed.
    #[error("{op} {object}: {detail}")]
    Op {
        /// What was attempted, e.g. `"attach tcx ingress"`, `"pin map"`.
        op: &'static str,
        /// What it was attempted on, e.g. `"program mbr_cnt_ingress on veth0 (ifindex 7)"`.
        object: String,
        /// The errno the kernel returned, when there is one.
        errno: Option<i32>,
        /// The full cause chain, innermost last.
        detail: String,
    },

    /// The caller passed something unusable; nothing was changed.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which input, e.g. `"interface name"`, `"pin directory"`.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },

    /// A pinned object that the operation needs does not exist.
    #[error("{object} is not pinned at {path}: {hint}")]
    NotPinned {
        /// The object, e.g. `"map mbr_pkt_counts"`.
        object: String,
        /// Where it was looked for.
        path: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// Something is pinned where this build expects its own object, but it
    /// does not match (another version's map with a different key size, a
    /// half-removed set of pins).
    #[error("pinned {object} at {path} does not match this build: {detail}")]
    Incompatible {
        /// The object, e.g. `"map mbr_pkt_counts"`.
        object: String,
        /// Its pin path.
        path: String,
        /// How it differs.
        detail: String,
    },

    /// A Rust mirror of a kernel struct disagrees with the BTF of the object.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl DatapathError {
    /// A failed operation from an [`io::Error`] (errno taken from it).
    pub fn io(op: &'static str, object: impl Into<String>, error: io::Error) -> Self {
        Self::Op {
            op,
            object: object.into(),
            errno: error.raw_os_error(),
            detail: error.to_string(),
        }
    }

    /// A failed operation from any error, aya's included: the message is the
    /// whole `source()` chain and the errno the first OS error found in it.
    pub fn op(
        op: &'static str,
        object: impl Into<String>,
        error: &(dyn StdError + 'static),
    ) -> Self {
        Self::Op {
            op,
            object: object.into(),
            errno: find_errno(error),
            detail: chain_message(error),
        }
    }

    /// An invalid input.
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }

    /// The errno behind this error, if the kernel returned one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Op { errno, .. } => *errno,
            Self::Invalid { .. } => Some(libc::EINVAL),
            Self::NotPinned { .. } => Some(libc::ENOENT),
            Self::Incompatible { .. } | Self::Layout(_) => None,
        }
    }

    /// A stable code for programs: the errno name (`"EPERM"`) when there is
    /// an errno, else `"EINCOMPATIBLE"` or `"ELAYOUT"`.
    pub fn code(&self) -> String {
        match (self, self.errno()) {
            (Self::Incompatible { .. }, _) => "EINCOMPATIBLE".to_owned(),
            (Self::Layout(_), _) => "ELAYOUT".to_owned(),
            (_, Some(errno)) => {
                errno_name(errno).map_or_else(|| format!("E{errno}"), str::to_owned)
            }
            (_, None) => "EDATAPATH".to_owned(),
        }
    }

    /// The operation that failed (`"invalid input"` for bad input).
    pub fn operation(&self) -> &str {
        match self {
            Self::Op { op, .. } => op,
            Self::Invalid { .. } => "validate input",
            Self::NotPinned { .. } => "open pinned object",
            Self::Incompatible { .. } => "adopt pinned object",
            Self::Layout(_) => "check BTF layout",
        }
    }

    /// The object the failed operation was about.
    pub fn object(&self) -> String {
        match self {
            Self::Op { object, .. }
            | Self::NotPinned { object, .. }
            | Self::Incompatible { object, .. } => object.clone(),
            Self::Invalid { what, .. } => (*what).to_owned(),
            Self::Layout(e) => e.c_type.clone(),
        }
    }
}

/// Joins an error and its sources: `"a: b: c"`, skipping a source whose text
/// the previous message already contains (thiserror's `transparent`).
pub fn chain_message(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut current = error.source();
    while let Some(source) = current {
        let text = source.to_string();
        if !text.is_empty() && !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        current = source.source();
    }
    out
}

/// The first OS errno in an error's `source()` chain.
pub fn find_errno(error: &(dyn StdError + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(errno) = io.raw_os_error() {
                return Some(errno);
            }
        }
        if let Some(nl) = e.downcast_ref::<aya::sys::NetlinkError>() {
            if let Some(errno) = nl.raw_os_error() {
                return Some(errno);
            }
        }
        if let Some(sys) = e.downcast_ref::<aya::sys::SyscallError>() {
            if let Some(errno) = sys.io_error.raw_os_error() {
                return Some(errno);
            }
        }
        if let Some(aya::programs::ProgramError::LoadError { io_error, .. }) =
            e.downcast_ref::<aya::programs::ProgramError>()
        {
            if let Some(errno) = io_error.raw_os_error() {
                return Some(errno);
            }
        }
        current = e.source();
    }
    None
}
