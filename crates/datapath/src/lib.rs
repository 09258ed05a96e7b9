//! Membrane's datapath in user space.
//!
//! The eBPF programs are C under `ebpf/`, compiled by `build.rs` and embedded
//! here ([`objects`]). This crate loads them with aya, owns their maps through
//! typed wrappers ([`maps`]), attaches them to interfaces ([`attach`]), keeps
//! everything pinned in bpffs ([`bpffs`]) so that the datapath outlives the
//! process that set it up, and checks that every struct crossing the
//! kernel/user boundary has the same layout on both sides ([`layout`]).
//!
//! It is pure Rust, with no Node dependency: `crates/node` is the thin N-API
//! face of it, and tests and benches use it directly.
//!
//! The first vertical slice is [`packet_counter`]: per-interface,
//! per-direction packet and byte counters, attached with tcx (or netlink
//! `cls_bpf` where tcx is refused) and read from the pinned map by any
//! process.

pub mod attach;
pub mod batch;
pub mod benchkit;
pub mod bpffs;
pub mod btf;
pub mod ct_gc;
pub mod error;
pub mod flows;
pub mod layout;
pub mod loader;
pub mod lxc;
pub mod maps;
pub mod objects;
pub mod packet_counter;
pub mod sys;
pub mod testrun;

pub use error::{DatapathError, Result};

/// Version of this crate, reported by `datapathInfo()`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version of the aya library that loads the programs.
pub const AYA_VERSION: &str = "0.14.0";

/// Where bpffs is mounted, and mounted by Membrane when absent.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf";

/// The directory under bpffs that holds every pinned map, program and link
/// of a node (the agent's `pinDir` default).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/membrane";
