//! Running work inside a pod's network namespace. setns(2) switches only the
//! calling thread, so the work runs on a dedicated thread that enters the
//! namespace and ends with it; the main thread never leaves the host namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// An open handle on a network namespace (a /var/run/netns/* bind mount or /proc/PID/ns/net).
pub struct NetNs {
    file: File,
}

/// Why a namespace path cannot be used.
#[derive(Debug)]
pub enum NetNsError {
    /// Nothing at the path: the sandbox is gone or never existed.
    Missing(io::Error),
    /// Something else: not a network namespace, no permission, ...
    Unusable(String),
}

impl NetNs {
    pub fn open(path: &str) -> Result<NetNs, NetNsError> {
        let file = File::open(Path::new(path)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetNsError::Missing(e),
            _ => NetNsError::Unusable(format!("cannot open {path}: {e}")),
        })?;
        // A network namespace file lives on nsfs; anything else is not a netns.
        // SAFETY: statfs into a zeroed struct of the right type.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open for the duration of the call.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            return Err(NetNsError::Unusable(format!(
                "cannot stat {path}: {}",
                io::Error::last_os_error()
            )));
        }
        const NSFS_MAGIC: i64 = 0x6e736673;
        const PROC_SUPER_MAGIC: i64 = 0x9fa0;
        let magic = st.f_type as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NetNsError::Unusable(format!("{path} is not a network namespace (filesystem magic {magic:#x}); pass the path of a netns such as /var/run/netns/NAME")));
        }
        Ok(NetNs { file })
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Runs `work` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let fd = self.file.try_clone()?;
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                // SAFETY: fd is an open namespace file; setns affects only this thread.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot enter the network namespace: {e}"),
                    ));
                }
                drop(fd);
                work()
            })?
            .join()
            .map_err(|_| io::Error::other("the network namespace worker thread panicked"))?
    }
}
