//! Shared helpers of the kernel tests: the privilege gate and throw-away
//! network interfaces.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::process::Command;

/// Fails the test, loudly, when this process cannot use BPF: not root, or
/// bpf(2) refused. Never a silent pass. Outside CI (`CI` unset), a developer
/// may opt out explicitly with `MEMBRANE_SKIP_KERNEL_TESTS=1`, in which case
/// this returns `false` after printing why; under `CI=true` that opt-out is
/// ignored.
pub fn require_kernel(test: &str) -> bool {
    let problem = kernel_problem();
    let Some(problem) = problem else { return true };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let opted_out = std::env::var("MEMBRANE_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1");
    if opted_out && !ci {
        eprintln!("SKIPPED {test}: {problem} (MEMBRANE_SKIP_KERNEL_TESTS=1)");
        return false;
    }
    panic!(
        "{test} needs BPF but {problem}. Run the tests as root on Linux >= 6.6 \
         (sudo -E cargo test ...). {}",
        if ci {
            "CI=true: failing, not skipping."
        } else {
            "To skip kernel tests on a dev machine set MEMBRANE_SKIP_KERNEL_TESTS=1."
        }
    );
}

fn kernel_problem() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the process is not root".to_owned());
    }
    // BPF_PROG_LOAD of nothing: EINVAL/E2BIG means bpf(2) works, EPERM or
    // ENOSYS means it does not.
    let mut attr = [0u8; 128];
    // SAFETY: a zeroed bpf_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5, /* BPF_PROG_LOAD */
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error();
    if rc < 0 && matches!(errno, Some(libc::EPERM) | Some(libc::ENOSYS)) {
        return Some(format!(
            "bpf(2) is unavailable ({})",
            std::io::Error::last_os_error()
        ));
    }
    None
}

/// A veth pair in the root network namespace, deleted on drop. IPv6 is off
/// on both ends so the kernel sends no unsolicited packets (DAD, MLD, RS).
pub struct VethPair {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
}

impl VethPair {
    /// Creates `<prefix>a` / `<prefix>b` (prefix at most 14 bytes), up.
    pub fn create(prefix: &str) -> Self {
        let pair = Self {
            a: format!("{prefix}a"),
            b: format!("{prefix}b"),
        };
        let _ = Command::new("ip").args(["link", "del", &pair.a]).output();
        run(
            "ip",
            &[
                "link", "add", &pair.a, "type", "veth", "peer", "name", &pair.b,
            ],
        );
        for name in [&pair.a, &pair.b] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
            run("ip", &["link", "set", name, "up"]);
        }
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.a]).output();
    }
}

/// Runs a command and panics with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a test expects of frames it injects with [`send_frames_expecting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // each test binary uses the variants it needs
pub enum Injected {
    /// Every `sendto` succeeds.
    Delivered,
    /// The tc egress hook may drop them: the kernel then reports ENOBUFS.
    MayBeDropped,
}

/// Sends `count` copies of `frame` out of interface `ifindex` through an
/// AF_PACKET socket (so they pass that interface's tc egress hook and arrive
/// at its veth peer's tc ingress hook).
#[allow(dead_code)]
pub fn send_frames(ifindex: u32, frame: &[u8], count: usize) {
    send_frames_expecting(ifindex, frame, count, Injected::Delivered);
}

/// [`send_frames`], with what the caller expects of each `sendto`.
pub fn send_frames_expecting(ifindex: u32, frame: &[u8], count: usize, expect: Injected) {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "socket(AF_PACKET): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: sockaddr_ll is plain old data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    for _ in 0..count {
        // SAFETY: frame and addr are valid for the sizes passed.
        let sent = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        let err = std::io::Error::last_os_error();
        let dropped_at_hook =
            expect == Injected::MayBeDropped && err.raw_os_error() == Some(libc::ENOBUFS);
        assert!(
            sent == frame.len() as isize || dropped_at_hook,
            "sendto: {err}"
        );
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
}

/// Creates a BPF hash map with the given key/value sizes and pins it at
/// `path` (raw bpf(2): tests need maps that this build would never create).
pub fn pin_foreign_hash_map(path: &std::path::Path, key_size: u32, value_size: u32) {
    use std::os::unix::ffi::OsStrExt as _;
    let mut attr = [0u8; 128];
    // BPF_MAP_CREATE attr: map_type, key_size, value_size, max_entries (u32 each).
    for (i, v) in [1u32 /* HASH */, key_size, value_size, 16]
        .iter()
        .enumerate()
    {
        attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: a valid bpf_attr buffer of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, /* BPF_MAP_CREATE */
            attr.as_mut_ptr(),
            128u32,
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut attr = [0u8; 128];
    attr[..8].copy_from_slice(&(c_path.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    // SAFETY: as above; BPF_OBJ_PIN reads pathname and bpf_fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            6, /* BPF_OBJ_PIN */
            attr.as_mut_ptr(),
            128u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_OBJ_PIN {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is ours; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}
