//! The parts of the CNI specification (1.1) that every command shares: the
//! versions we speak, the well-known error codes, and the error object.

use serde::Serialize;

/// The CNI versions this plugin accepts in a network configuration.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version this plugin answers with when the caller names none.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Error codes reserved by the specification (1-99). Codes from 100 are ours.
/// The whole list is declared; not every command uses every code yet.
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
    /// Ours: the command is part of the spec but this build does not carry it out yet.
    CommandNotAvailable = 100,
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
        CniError { cni_version: CURRENT_VERSION.to_string(), code: code as u32, msg: msg.into(), details: details.into() }
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
