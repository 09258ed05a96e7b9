//! `membrane-cni`: the CNI plugin binary a container runtime calls for each pod.
//!
//! Today it speaks the protocol frame (environment, configuration, VERSION and
//! spec-shaped errors). ADD, DEL, CHECK, STATUS and GC need the agent's endpoint
//! API and answer with a clear "not available" error until it lands.

mod request;
mod spec;

use request::{parse_request, Command};
use spec::{CniError, ErrorCode, VersionResult, CURRENT_VERSION, SUPPORTED_VERSIONS};
use std::io::{Read, Write};
use std::process::ExitCode;

fn run(stdin: &[u8]) -> Result<String, CniError> {
    let req = parse_request(|k| std::env::var(k).ok(), stdin)?;
    match req.command {
        Command::Version => Ok(serde_json::to_string(&VersionResult { cni_version: CURRENT_VERSION, supported_versions: SUPPORTED_VERSIONS }).unwrap_or_default()),
        other => {
            let version = req.netconf.map(|n| n.cni_version).unwrap_or_else(|| CURRENT_VERSION.to_string());
            Err(CniError::new(
                ErrorCode::CommandNotAvailable,
                format!("membrane-cni cannot run {other:?} yet"),
                "pod networking through the agent's endpoint API is not available in this build",
            )
            .with_version(&version))
        }
    }
}

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if std::env::var("CNI_COMMAND").as_deref() != Ok("VERSION") {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let err = CniError::new(ErrorCode::IoFailure, "cannot read the network configuration from stdin", e.to_string());
            return emit(&serde_json::to_string(&err).unwrap_or_default(), false);
        }
    }
    match run(&stdin) {
        Ok(out) => emit(&out, true),
        Err(err) => emit(&serde_json::to_string(&err).unwrap_or_default(), false),
    }
}

fn emit(json: &str, ok: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{json}");
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
