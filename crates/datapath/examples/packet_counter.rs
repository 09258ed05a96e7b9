//! Command-line driver of the packet counter slice, for manual checks:
//!
//! ```text
//! packet_counter attach <iface> <pin dir> [auto|tcx|netlink]
//! packet_counter read <pin dir>
//! packet_counter detach <pin dir> [iface]
//! ```

use std::{path::PathBuf, process::ExitCode};

use membrane_datapath::{
    attach::AttachMode,
    packet_counter::{self, AttachOptions, DetachOptions},
    DEFAULT_BPFFS_ROOT,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(DEFAULT_BPFFS_ROOT);
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["attach", iface, pin_dir, rest @ ..] => {
            AttachMode::parse(rest.first().copied().unwrap_or("auto")).and_then(|mode| {
                packet_counter::attach(&AttachOptions {
                    iface: (*iface).to_owned(),
                    pin_dir: PathBuf::from(pin_dir),
                    bpffs_root: root.clone(),
                    mode,
                })
                .map(|r| println!("{r:#?}"))
            })
        }
        ["read", pin_dir] => packet_counter::read(&PathBuf::from(pin_dir), &root).map(|counts| {
            for c in counts {
                println!(
                    "ifindex={} direction={} packets={} bytes={}",
                    c.ifindex, c.direction, c.packets, c.bytes
                );
            }
        }),
        ["detach", pin_dir, rest @ ..] => packet_counter::detach(&DetachOptions {
            iface: rest.first().map(|s| (*s).to_owned()),
            pin_dir: PathBuf::from(pin_dir),
            bpffs_root: root.clone(),
        })
        .map(|r| println!("{r:#?}")),
        _ => {
            eprintln!("usage: packet_counter attach <iface> <pin dir> [auto|tcx|netlink] | read <pin dir> | detach <pin dir> [iface]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
