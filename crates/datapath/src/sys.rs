//! Small, safe wrappers over the libc calls the datapath needs beyond aya:
//! interface name/index lookups, `uname`, advisory locks, `BPF_LINK_DETACH`,
//! and errno names.

use std::{
    ffi::{CStr, CString},
    fs::File,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use crate::error::{DatapathError, Result};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Checks an interface name the way the kernel does (`dev_valid_name`).
pub fn validate_ifname(name: &str) -> Result<()> {
    let bad = |detail: String| Err(DatapathError::invalid("interface name", detail));
    if name.is_empty() {
        return bad("empty".to_owned());
    }
    if name.len() > IFNAME_MAX {
        return bad(format!("{name:?} is longer than {IFNAME_MAX} bytes"));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return bad(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// The ifindex of a named interface in the caller's network namespace.
pub fn ifindex_from_name(name: &str) -> Result<u32> {
    validate_ifname(name)?;
    let c_name =
        CString::new(name).map_err(|_| DatapathError::invalid("interface name", "contains NUL"))?;
    // SAFETY: c_name is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(DatapathError::io(
            "look up interface",
            format!("interface {name}"),
            io::Error::last_os_error(),
        ));
    }
    Ok(index)
}

/// The name of an interface by ifindex, or `None` when no such interface
/// exists (any more) in the caller's network namespace.
pub fn ifname_from_index(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; uname fills it in.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_owned();
    }
    // SAFETY: uname NUL-terminates release.
    unsafe { CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// An exclusive advisory lock (`flock(2)`) on a directory, held until drop.
/// Serialises attach and detach of concurrent processes on one pin directory.
#[derive(Debug)]
pub struct DirLock {
    file: File,
}

impl DirLock {
    /// Blocks until the lock on `dir` is ours.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let object = format!("directory {}", dir.display());
        let file = File::open(dir)
            .map_err(|e| DatapathError::io("open for locking", object.clone(), e))?;
        loop {
            // SAFETY: the fd is open for the lifetime of `file`.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self { file });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(DatapathError::io("lock", object, err));
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the fd releases the lock too; unlock explicitly to be prompt.
        // SAFETY: the fd is still open.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// `BPF_OBJ_GET` from `enum bpf_cmd` (linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
/// `BPF_LINK_DETACH` from `enum bpf_cmd` (linux/bpf.h, since 5.9).
const BPF_LINK_DETACH: libc::c_long = 34;
/// `BPF_LINK_UPDATE` from `enum bpf_cmd` (linux/bpf.h, since 5.7).
const BPF_LINK_UPDATE: libc::c_long = 29;

/// Size of the `union bpf_attr` prefix we pass; the kernel requires unused
/// trailing bytes to be zero, which a zeroed buffer guarantees.
const BPF_ATTR_SIZE: usize = 128;

fn bpf(cmd: libc::c_long, attr: &mut [u8; BPF_ATTR_SIZE]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised bpf_attr buffer of the size passed;
    // the commands used here only read from it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            BPF_ATTR_SIZE as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens the BPF object (map, program or link) pinned at `path`.
pub fn bpf_obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // union bpf_attr, obj_get variant: { __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags; }
    let mut attr = [0u8; BPF_ATTR_SIZE];
    attr[..8].copy_from_slice(&(c_path.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: BPF_OBJ_GET returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Forces a BPF link off its hook, even while other processes still hold
/// file descriptors to it (closing the last fd would also detach it, but only
/// when nobody else holds one).
pub fn bpf_link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    // union bpf_attr, link_detach variant: { __u32 link_fd; }
    let fd =
        u32::try_from(link.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let mut attr = [0u8; BPF_ATTR_SIZE];
    attr[..4].copy_from_slice(&fd.to_ne_bytes());
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// Atomically replaces the program of a BPF link (tcx, XDP, cgroup...): the
/// hook runs either the old or the new program for every packet, never none.
pub fn bpf_link_update(link: BorrowedFd<'_>, new_prog: BorrowedFd<'_>) -> io::Result<()> {
    // union bpf_attr, link_update variant:
    // { __u32 link_fd; __u32 new_prog_fd; __u32 flags; __u32 old_prog_fd; }
    let link_fd =
        u32::try_from(link.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let prog_fd = u32::try_from(new_prog.as_raw_fd())
        .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let mut attr = [0u8; BPF_ATTR_SIZE];
    attr[..4].copy_from_slice(&link_fd.to_ne_bytes());
    attr[4..8].copy_from_slice(&prog_fd.to_ne_bytes());
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// The symbolic name of an errno value, for error codes.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECANCELED => "ECANCELED",
        // Kernel-internal ENOTSUPP, which bpf(2) leaks to user space.
        524 => "ENOTSUPP",
        _ => return None,
    })
}
