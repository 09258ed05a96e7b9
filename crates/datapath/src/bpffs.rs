//! bpffs: making sure it is mounted, and where things are pinned in it.
//!
//! Everything Membrane pins lives under one pin directory (default
//! `/sys/fs/bpf/membrane`), laid out as:
//!
//! ```text
//! <pin dir>/maps/<map name>                      maps, adopted by name on load
//! <pin dir>/progs/<program name>                 loaded programs, reused to attach more interfaces
//! <pin dir>/links/<ifindex>/<via>-<hook>-<program>
//!                                                an attachment of a program to an interface's hook:
//!                                                via `tcx`, a pinned tcx link; via `tc`, a netlink
//!                                                cls_bpf filter, recorded by a pin of the program
//!                                                (such filters have no link object to pin)
//! ```
//!
//! The ifindex is the one in the loader's network namespace. No name below
//! the bpffs root may contain a `.`: bpffs reserves those for entries the
//! kernel makes (`maps.debug`) and refuses them with EPERM. Pins keep maps,
//! programs and attachments alive after the process that made them exits;
//! removing a pin (and closing every fd) is what releases them.

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Component, Path, PathBuf},
};

use crate::error::{DatapathError, Result};

/// `BPF_FS_MAGIC` from linux/magic.h: the `f_type` of a bpffs mount.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` exists and lies on a bpffs mount.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statfs is plain old data, filled in by the call.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and stat is writable.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's integer type differs between libcs"
    )]
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at `root` unless a bpffs is already mounted there. Returns
/// whether it mounted one. Needs CAP_SYS_ADMIN when it has to mount.
pub fn ensure_mounted(root: &Path) -> Result<bool> {
    let object = format!("bpffs at {}", root.display());
    match is_bpffs(root) {
        Ok(true) => return Ok(false),
        Ok(false) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(root)
                .map_err(|e| DatapathError::io("create mount point", object.clone(), e))?;
        }
        Err(e) => return Err(DatapathError::io("statfs", object, e)),
    }
    let target = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| DatapathError::invalid("bpffs root", "contains NUL"))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration
    // of the call; flags 0 is a plain new mount.
    let rc = unsafe {
        libc::mount(
            c"bpffs".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(DatapathError::io(
            "mount",
            object,
            io::Error::last_os_error(),
        ));
    }
    Ok(true)
}

/// A pin directory and the paths of everything pinned in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// A pin directory at `path`, which must be absolute, free of `..`, and
    /// strictly inside `bpffs_root`. Touches nothing.
    pub fn new(path: impl AsRef<Path>, bpffs_root: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bpffs_root = bpffs_root.as_ref();
        let invalid = |detail: String| DatapathError::invalid("pin directory", detail);
        for (what, p) in [("pin directory", path), ("bpffs root", bpffs_root)] {
            if !p.is_absolute() {
                return Err(DatapathError::invalid(
                    what,
                    format!("{} is not an absolute path", p.display()),
                ));
            }
            if p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            {
                return Err(DatapathError::invalid(
                    what,
                    format!("{} contains . or ..", p.display()),
                ));
            }
        }
        let rel = path.strip_prefix(bpffs_root).map_err(|_| {
            invalid(format!(
                "{} is not inside the bpffs root {}",
                path.display(),
                bpffs_root.display()
            ))
        })?;
        if let Some(dotted) = rel
            .components()
            .find(|c| c.as_os_str().as_bytes().contains(&b'.'))
        {
            return Err(invalid(format!(
                "{}: bpffs refuses names containing '.' ({:?})",
                path.display(),
                dotted.as_os_str()
            )));
        }
        if rel.as_os_str().is_empty() {
            return Err(invalid(format!(
                "{} is the bpffs root itself; use a directory under it such as {}/membrane",
                path.display(),
                bpffs_root.display()
            )));
        }
        Ok(Self {
            root: path.to_path_buf(),
        })
    }

    /// Mounts bpffs at `bpffs_root` if needed and creates the directory
    /// skeleton. Idempotent.
    pub fn prepare(&self, bpffs_root: &Path) -> Result<()> {
        ensure_mounted(bpffs_root)?;
        for dir in [self.maps_dir(), self.progs_dir(), self.links_dir()] {
            fs::create_dir_all(&dir).map_err(|e| {
                DatapathError::io("create pin directory", dir.display().to_string(), e)
            })?;
        }
        match is_bpffs(&self.root) {
            Ok(true) => Ok(()),
            Ok(false) => Err(DatapathError::invalid(
                "pin directory",
                format!("{} is not on a bpffs mount", self.root.display()),
            )),
            Err(e) => Err(DatapathError::io(
                "statfs",
                self.root.display().to_string(),
                e,
            )),
        }
    }

    /// The pin directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<pin dir>/maps`.
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// `<pin dir>/maps/<name>`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// `<pin dir>/progs`.
    pub fn progs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }

    /// `<pin dir>/progs/<name>`.
    pub fn program(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    /// `<pin dir>/links`.
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// `<pin dir>/links/<ifindex>`.
    pub fn interface_links(&self, ifindex: u32) -> PathBuf {
        self.links_dir().join(ifindex.to_string())
    }

    /// Removes the directories of the layout that are empty, deepest first,
    /// and the pin directory itself if it ends up empty. Returns what it removed.
    pub fn remove_empty_dirs(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        if let Ok(entries) = fs::read_dir(self.links_dir()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() && fs::remove_dir(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        for dir in [
            self.links_dir(),
            self.progs_dir(),
            self.maps_dir(),
            self.root.clone(),
        ] {
            if fs::remove_dir(&dir).is_ok() {
                removed.push(dir);
            }
        }
        removed
    }
}

/// Whether something exists at `path` (a pin, a directory); errors other
/// than "not found" count as existing, so callers then fail on open with the
/// real errno instead of silently recreating.
pub fn exists(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dir_must_be_inside_bpffs() {
        assert!(PinDir::new("/sys/fs/bpf/membrane", "/sys/fs/bpf").is_ok());
        assert!(PinDir::new("/sys/fs/bpf/a/b", "/sys/fs/bpf").is_ok());
        for bad in [
            "relative/dir",
            "/tmp/membrane",
            "/sys/fs/bpf",
            "/sys/fs/bpf/../x",
            "/sys/fs/bpfx",
            "/sys/fs/bpf/a.b",
        ] {
            let err = PinDir::new(bad, "/sys/fs/bpf").expect_err(bad);
            assert!(err.to_string().contains("pin directory"), "{bad}: {err}");
        }
    }

    #[test]
    fn layout_paths() {
        let pins = PinDir::new("/sys/fs/bpf/m", "/sys/fs/bpf").expect("valid pin dir");
        assert_eq!(
            pins.map("mbr_pkt_counts"),
            Path::new("/sys/fs/bpf/m/maps/mbr_pkt_counts")
        );
        assert_eq!(
            pins.program("mbr_cnt_ingress"),
            Path::new("/sys/fs/bpf/m/progs/mbr_cnt_ingress")
        );
        assert_eq!(pins.interface_links(7), Path::new("/sys/fs/bpf/m/links/7"));
    }
}
