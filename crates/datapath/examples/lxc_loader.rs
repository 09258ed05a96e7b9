//! A stand-in for the agent's datapath start, for manual checks and the
//! traffic tests: opens the endpoint datapath in a pin directory (loading it,
//! or adopting what a previous run pinned), writes endpoints and attaches the
//! programs to their interfaces, prints what it did, then stays alive until
//! killed (the datapath does not need it: everything is pinned).
//!
//! ```text
//! lxc_loader <pin dir> [--ct-tcp N] [--ct-any N] [--mode auto|tcx|netlink]
//!            [--endpoint <iface>,<ep id>,<identity>,<ipv4>,<flags>]... [--exit]
//! lxc_loader --purge <pin dir>
//! ```
//!
//! Output, one line each: `outcome <loaded|adopted|upgraded>`, `build <id>`,
//! `program <name> <id>`, `attached <iface> <created|kept>`, then `ready`.

use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode, str::FromStr};

use membrane_datapath::{
    attach::AttachMode,
    lxc::{self, Lxc, LxcOptions},
    maps::endpoint::EndpointInfo,
    sys, DatapathError, DEFAULT_BPFFS_ROOT,
};

fn parse<T: FromStr>(what: &'static str, value: &str) -> Result<T, DatapathError> {
    value
        .parse()
        .map_err(|_| DatapathError::invalid(what, format!("{value:?}")))
}

fn endpoint(spec: &str) -> Result<(String, EndpointInfo), DatapathError> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [iface, ep_id, identity, ip, flags] = parts.as_slice() else {
        return Err(DatapathError::invalid(
            "endpoint",
            format!("{spec:?}: expected <iface>,<ep id>,<identity>,<ipv4>,<flags>"),
        ));
    };
    let ifindex = sys::ifindex_from_name(iface)?;
    let ep = EndpointInfo::new(
        ifindex,
        parse("identity", identity)?,
        parse::<Ipv4Addr>("ipv4", ip)?,
        parse("endpoint id", ep_id)?,
        parse("flags", flags)?,
    );
    Ok(((*iface).to_owned(), ep))
}

fn run(args: &[String]) -> Result<bool, DatapathError> {
    if let [flag, pin_dir] = args {
        if flag == "--purge" {
            let report = lxc::purge(&PathBuf::from(pin_dir), &PathBuf::from(DEFAULT_BPFFS_ROOT))?;
            println!(
                "purged {} attachments, {} pins",
                report.detached.len(),
                report.removed.len()
            );
            return Ok(false);
        }
    }
    let mut it = args.iter();
    let pin_dir = it
        .next()
        .ok_or_else(|| DatapathError::invalid("arguments", "missing the pin directory"))?;
    let mut opts = LxcOptions::new(pin_dir);
    let mut endpoints = Vec::new();
    let mut stay = true;
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| DatapathError::invalid("arguments", format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--ct-tcp" => opts.sizes.ct_tcp = Some(parse("--ct-tcp", value()?)?),
            "--ct-any" => opts.sizes.ct_any = Some(parse("--ct-any", value()?)?),
            "--mode" => opts.mode = AttachMode::parse(value()?)?,
            "--endpoint" => endpoints.push(endpoint(value()?)?),
            "--exit" => stay = false,
            other => return Err(DatapathError::invalid("argument", other.to_owned())),
        }
    }

    let mut lxc = Lxc::open(&opts)?;
    println!("outcome {}", lxc.outcome().as_str());
    println!("build {}", lxc.build_id());
    for (name, id) in lxc.program_ids()? {
        println!("program {name} {id}");
    }
    for (iface, ep) in &endpoints {
        // Entries first, then the programs: policy applies from the first packet.
        let attached = lxc.attach_endpoint(iface, ep)?;
        let created = attached.iter().any(|a| a.created);
        println!(
            "attached {iface} {}",
            if created { "created" } else { "kept" }
        );
    }
    println!("ready");
    Ok(stay)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!(
            "usage: lxc_loader <pin dir> [--ct-tcp N] [--ct-any N] [--mode auto|tcx|netlink] \
             [--endpoint <iface>,<ep id>,<identity>,<ipv4>,<flags>]... [--exit] | --purge <pin dir>"
        );
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(true) => loop {
            std::thread::park();
        },
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
