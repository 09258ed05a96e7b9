//! Reads a CNI invocation: the CNI_* environment and the network configuration
//! on stdin, validated into a typed request. Pure: the caller supplies both.

use crate::config::{validate_container_id, validate_ifname, validate_netns_path};
use crate::spec::{CniError, ErrorCode, SUPPORTED_VERSIONS};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(raw: &str) -> Result<Command, CniError> {
        match raw {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "VERSION" => Ok(Command::Version),
            "STATUS" => Ok(Command::Status),
            "GC" => Ok(Command::Gc),
            "" => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                "CNI_COMMAND is not set",
                "set CNI_COMMAND to ADD, DEL, CHECK, VERSION, STATUS or GC",
            )),
            other => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_COMMAND={other} is not a CNI command"),
                "expected ADD, DEL, CHECK, VERSION, STATUS or GC",
            )),
        }
    }

    /// Whether the spec requires CNI_CONTAINERID, CNI_IFNAME (and, for ADD/CHECK, CNI_NETNS).
    fn needs_container(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// The network configuration fields every command needs; the rest stays raw for later use.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    pub raw: Value,
}

pub fn parse_netconf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::DecodeFailure,
            "the network configuration on stdin is not valid JSON",
            e.to_string(),
        )
    })?;
    let obj = raw.as_object().ok_or_else(|| {
        CniError::new(
            ErrorCode::DecodeFailure,
            "the network configuration must be a JSON object",
            "",
        )
    })?;
    let field = |name: &str| -> Result<String, CniError> {
        match obj.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("network configuration field {name:?} must be a non-empty string"),
                "",
            )),
            None => Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("network configuration has no {name:?} field"),
                "",
            )),
        }
    };
    let cni_version = field("cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("cniVersion {cni_version} is not supported"),
            format!("supported versions: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    Ok(NetConf {
        name: field("name")?,
        plugin_type: field("type")?,
        cni_version,
        raw,
    })
}

/// One validated invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// CNI_ARGS as given (parsed by the commands that need it).
    pub args: String,
    pub netconf: Option<NetConf>,
}

pub fn parse_request(
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Request, CniError> {
    let command = Command::parse(&env("CNI_COMMAND").unwrap_or_default())?;
    if command == Command::Version {
        return Ok(Request {
            command,
            container_id: None,
            netns: None,
            ifname: None,
            args: String::new(),
            netconf: None,
        });
    }
    let netconf = parse_netconf(stdin)?;
    let version = netconf.cni_version.clone();
    let required = |name: &str| -> Result<String, CniError> {
        env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("{name} is not set"),
                format!("CNI_COMMAND={command:?} needs {name}"),
            )
            .with_version(&version)
        })
    };
    let (container_id, ifname, netns) = if command.needs_container() {
        let netns = if command == Command::Del {
            env("CNI_NETNS").filter(|v| !v.is_empty())
        } else {
            Some(required("CNI_NETNS")?)
        };
        let container_id = required("CNI_CONTAINERID")?;
        let ifname = required("CNI_IFNAME")?;
        let versioned = |e: CniError| e.with_version(&version);
        validate_container_id(&container_id).map_err(versioned)?;
        validate_ifname(&ifname).map_err(versioned)?;
        if let Some(path) = &netns {
            validate_netns_path(path).map_err(versioned)?;
        }
        (Some(container_id), Some(ifname), netns)
    } else {
        (None, None, None)
    };
    Ok(Request {
        command,
        container_id,
        netns,
        ifname,
        args: env("CNI_ARGS").unwrap_or_default(),
        netconf: Some(netconf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CONF: &[u8] = br#"{"cniVersion":"1.1.0","name":"membrane","type":"membrane-cni"}"#;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn version_needs_no_config() {
        let req = parse_request(env(&[("CNI_COMMAND", "VERSION")]), b"").unwrap();
        assert_eq!(req.command, Command::Version);
    }

    #[test]
    fn unknown_or_missing_command_is_an_environment_error() {
        assert_eq!(
            parse_request(env(&[("CNI_COMMAND", "ATTACH")]), CONF)
                .unwrap_err()
                .code,
            ErrorCode::InvalidEnvironment as u32
        );
        assert_eq!(
            parse_request(env(&[]), CONF).unwrap_err().code,
            ErrorCode::InvalidEnvironment as u32
        );
    }

    #[test]
    fn malformed_config_is_a_decode_error() {
        let err = parse_request(env(&[("CNI_COMMAND", "ADD")]), b"{not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::DecodeFailure as u32);
        let err = parse_request(env(&[("CNI_COMMAND", "ADD")]), b"[1,2]").unwrap_err();
        assert_eq!(err.code, ErrorCode::DecodeFailure as u32);
    }

    #[test]
    fn unknown_version_is_incompatible() {
        let conf = br#"{"cniVersion":"9.9.9","name":"m","type":"membrane-cni"}"#;
        let err = parse_request(env(&[("CNI_COMMAND", "ADD")]), conf).unwrap_err();
        assert_eq!(err.code, ErrorCode::IncompatibleVersion as u32);
        assert!(err.details.contains("1.1.0"));
    }

    #[test]
    fn missing_fields_are_named() {
        let err = parse_request(
            env(&[("CNI_COMMAND", "ADD")]),
            br#"{"cniVersion":"1.1.0","type":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidNetworkConfig as u32);
        assert!(err.msg.contains("\"name\""));
    }

    #[test]
    fn add_needs_netns_but_del_does_not() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ];
        let err = parse_request(env(&base), CONF).unwrap_err();
        assert!(err.msg.contains("CNI_NETNS"));
        let del = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ];
        let req = parse_request(env(&del), CONF).unwrap();
        assert_eq!(req.netns, None);
    }

    #[test]
    fn container_id_ifname_and_netns_are_validated() {
        let with = |k: &'static str, v: &'static str| {
            let mut pairs = vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/var/run/netns/p"),
            ];
            pairs.retain(|(key, _)| *key != k);
            pairs.push((k, v));
            parse_request(env(&pairs), CONF)
        };
        assert!(with("CNI_ARGS", "K8S_POD_NAME=x").is_ok());
        for (k, v) in [
            ("CNI_CONTAINERID", "../x"),
            ("CNI_IFNAME", "much-too-long-ifname"),
            ("CNI_NETNS", "netns/p"),
        ] {
            let err = with(k, v).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment as u32, "{k}={v}");
            assert!(err.msg.contains(k), "{}", err.msg);
        }
    }

    #[test]
    fn status_and_gc_need_no_container() {
        for cmd in ["STATUS", "GC"] {
            let req = parse_request(env(&[("CNI_COMMAND", cmd)]), CONF).unwrap();
            assert_eq!(req.container_id, None);
            assert!(req.netconf.is_some());
        }
    }
}
