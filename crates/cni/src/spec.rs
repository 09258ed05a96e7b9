//! The parts of the CNI specification (1.1) that every command shares: the
//! versions we speak, the well-known error codes, and the error object.

use serde::Serialize;

/// The CNI versions this plugin accepts in a network configuration.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version this plugin answers with when the caller names none.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Error codes: 1-99 are the specification's, 100 and up are ours.
///
///   1  incompatible cniVersion          7  invalid network configuration (incl. prevResult)
///   2  unsupported field                11 try again later: the agent is not reachable or answers 503
///   3  container unknown: CNI_NETNS     50 plugin not available (STATUS: agent down or not ready)
///      does not exist                   100 the agent refused the request (its code and message in details)
///   4  invalid CNI_* environment        101 the agent's answer is not understood
///   5  I/O failure                      102 the kernel refused a link, address, route or neighbour change
///   6  decode failure (stdin not JSON)  103 CHECK found the pod's network differs from what ADD set up
/// The whole list is declared; DecodeFailure etc. are produced by request parsing.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    ContainerUnknown = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodeFailure = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    AgentRejected = 100,
    AgentBadResponse = 101,
    KernelRefused = 102,
    CheckFailed = 103,
}

/// The error object of the specification, printed on stdout with a non-zero exit.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            cni_version: CURRENT_VERSION.to_string(),
            code: code as u32,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn with_version(mut self, version: &str) -> Self {
        self.cni_version = version.to_string();
        self
    }
}

/// The answer to VERSION.
#[derive(Debug, Serialize)]
pub struct VersionResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: &'static [&'static str],
}
