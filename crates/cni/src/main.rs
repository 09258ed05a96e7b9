//! `membrane-cni`: the CNI plugin binary a container runtime calls for each pod
//! (CNI spec 1.1: ADD, DEL, CHECK, STATUS, GC, VERSION).
//!
//! ADD allocates the pod's address from the agent, wires a veth pair (see
//! wiring.rs), registers the endpoint with the agent (which attaches the datapath
//! before it answers) and prints the result; any failure undoes every step. DEL
//! removes the endpoint and the link and succeeds when they are already gone,
//! also when the agent or the namespace is. Error codes: see spec.rs.

mod agent;
mod commands;
mod config;
mod naming;
mod netlink;
mod netns;
mod request;
mod result;
mod spec;
mod wiring;

use commands::Ctx;
use request::{parse_request, Command};
use spec::{CniError, ErrorCode, VersionResult, CURRENT_VERSION, SUPPORTED_VERSIONS};
use std::io::{Read, Write};
use std::process::ExitCode;

/// What a successful command prints: a JSON document, or nothing (DEL, CHECK, STATUS, GC).
enum Output {
    Json(String),
    Nothing,
}

/// Versions that know a command (CHECK since 0.4.0, STATUS and GC since 1.1.0).
fn command_supported(command: Command, version: &str) -> bool {
    match command {
        Command::Check => !version.starts_with("0.3."),
        Command::Status | Command::Gc => version == "1.1.0",
        _ => true,
    }
}

fn run(stdin: &[u8]) -> Result<Output, CniError> {
    let req = parse_request(|k| std::env::var(k).ok(), stdin)?;
    if req.command == Command::Version {
        return Ok(Output::Json(
            serde_json::to_string(&VersionResult {
                cni_version: CURRENT_VERSION,
                supported_versions: SUPPORTED_VERSIONS,
            })
            .unwrap_or_default(),
        ));
    }
    let netconf = req
        .netconf
        .as_ref()
        .expect("every command but VERSION has a configuration");
    let version = netconf.cni_version.clone();
    if !command_supported(req.command, &version) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("{:?} is not part of CNI {version}", req.command),
            "use cniVersion 1.1.0",
        )
        .with_version(&version));
    }
    let conf = config::plugin_config(&netconf.raw).map_err(|e| e.with_version(&version))?;
    let ctx = Ctx {
        req: &req,
        conf,
        version,
        network: netconf.name.clone(),
    };
    let outcome = match req.command {
        Command::Add => commands::add(&ctx).map(|v| Output::Json(v.to_string())),
        Command::Del => commands::del(&ctx).map(|_| Output::Nothing),
        Command::Check => commands::check(&ctx).map(|_| Output::Nothing),
        Command::Status => commands::status(&ctx).map(|_| Output::Nothing),
        Command::Gc => commands::gc(&ctx).map(|_| Output::Nothing),
        Command::Version => unreachable!("answered above"),
    };
    if let Err(e) = &outcome {
        ctx.log(&format!("error {}: {} {}", e.code, e.msg, e.details));
    }
    outcome
}

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if std::env::var("CNI_COMMAND").as_deref() != Ok("VERSION") {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let err = CniError::new(
                ErrorCode::IoFailure,
                "cannot read the network configuration from stdin",
                e.to_string(),
            );
            return emit(&serde_json::to_string(&err).unwrap_or_default(), false);
        }
    }
    match run(&stdin) {
        Ok(Output::Json(out)) => emit(&out, true),
        Ok(Output::Nothing) => ExitCode::SUCCESS,
        Err(err) => emit(&serde_json::to_string(&err).unwrap_or_default(), false),
    }
}

fn emit(json: &str, ok: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{json}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_exist_only_in_the_versions_that_define_them() {
        assert!(!command_supported(Command::Check, "0.3.1"));
        assert!(command_supported(Command::Check, "0.4.0"));
        assert!(!command_supported(Command::Status, "1.0.0"));
        assert!(command_supported(Command::Gc, "1.1.0"));
        assert!(command_supported(Command::Add, "0.3.0"));
    }
}
