//! The plugin's own configuration fields (beside the spec's cniVersion, name,
//! type), the runtime arguments in CNI_ARGS, and the rules for container ids and
//! interface names. Pure: everything here is validated input, nothing is done.
//!
//! Network configuration fields (see deploy/cni/README.md):
//!   mtu          integer 68..=65535, default 1500: both ends of the veth pair
//!   agentSocket  absolute path, default /var/run/membrane/agent.sock
//!   logFile      absolute path, optional: one line per command appended
//!   dns          optional, copied into the ADD result (nameservers, domain, search, options)

use crate::agent::PodRef;
use crate::spec::{CniError, ErrorCode};
use serde_json::Value;

pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/membrane/agent.sock";
const MIN_MTU: u64 = 68;
const MAX_MTU: u64 = 65535;
/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub mtu: u32,
    pub agent_socket: String,
    pub log_file: Option<String>,
    pub dns: Option<Value>,
}

fn invalid(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg, details)
}

fn absolute_path(raw: &Value, field: &str) -> Result<String, CniError> {
    match raw.as_str() {
        Some(s) if s.starts_with('/') && !s.contains('\0') => Ok(s.to_string()),
        _ => Err(invalid(
            format!("network configuration field {field:?} must be an absolute path"),
            format!("got {raw}"),
        )),
    }
}

/// Reads mtu, agentSocket, logFile and dns from the network configuration object.
pub fn plugin_config(raw: &Value) -> Result<PluginConfig, CniError> {
    let mtu = match raw.get("mtu") {
        None => DEFAULT_MTU,
        Some(v) => match v.as_u64() {
            Some(n) if (MIN_MTU..=MAX_MTU).contains(&n) => n as u32,
            _ => return Err(invalid(format!("network configuration field \"mtu\" must be an integer from {MIN_MTU} to {MAX_MTU}"), format!("got {v}"))),
        },
    };
    let agent_socket = match raw.get("agentSocket") {
        None => DEFAULT_AGENT_SOCKET.to_string(),
        Some(v) => absolute_path(v, "agentSocket")?,
    };
    let log_file = raw
        .get("logFile")
        .map(|v| absolute_path(v, "logFile"))
        .transpose()?;
    let dns = match raw.get("dns") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            for key in ["nameservers", "search", "options"] {
                if let Some(list) = v.get(key) {
                    if !list
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string))
                    {
                        return Err(invalid(format!("network configuration field \"dns.{key}\" must be a list of strings"), format!("got {list}")));
                    }
                }
            }
            if v.get("domain").is_some_and(|d| !d.is_string()) {
                return Err(invalid(
                    "network configuration field \"dns.domain\" must be a string",
                    "",
                ));
            }
            Some(v.clone())
        }
        Some(v) => {
            return Err(invalid(
                "network configuration field \"dns\" must be an object",
                format!("got {v}"),
            ))
        }
    };
    Ok(PluginConfig {
        mtu,
        agent_socket,
        log_file,
        dns,
    })
}

fn invalid_env(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, msg, details)
}

/// CNI_CONTAINERID: the spec's rule (alphanumeric first, then alphanumerics, '_', '.', '-').
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        || id.len() > 1024
    {
        return Err(invalid_env(
            format!("CNI_CONTAINERID {id:?} is not a valid container id"),
            "it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// CNI_IFNAME: a Linux interface name.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if name.is_empty() || name.len() > MAX_IFNAME_LEN || name == "." || name == ".." || bad_char {
        return Err(invalid_env(
            format!("CNI_IFNAME {name:?} is not a valid interface name"),
            format!("at most {MAX_IFNAME_LEN} bytes, not \".\" or \"..\", without '/', ':' or whitespace"),
        ));
    }
    Ok(())
}

/// CNI_NETNS must be an absolute path.
pub fn validate_netns_path(path: &str) -> Result<(), CniError> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(invalid_env(
            format!("CNI_NETNS {path:?} is not an absolute path"),
            "pass the path of the pod's network namespace, e.g. /var/run/netns/NAME",
        ));
    }
    Ok(())
}

/// CNI_ARGS: "K=V;K=V". Returns the pairs in order.
pub fn parse_cni_args(raw: &str) -> Result<Vec<(String, String)>, CniError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    raw.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.contains('=') => Ok((k.to_string(), v.to_string())),
            _ => Err(invalid_env(
                format!("CNI_ARGS has a malformed pair {pair:?}"),
                "CNI_ARGS is a list of KEY=VALUE pairs separated by ';'",
            )),
        })
        .collect()
}

/// The pod from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, optional K8S_POD_UID).
pub fn pod_ref(args: &[(String, String)]) -> Result<PodRef, CniError> {
    let get = |key: &str| {
        args.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match (get("K8S_POD_NAMESPACE"), get("K8S_POD_NAME")) {
        (Some(namespace), Some(name)) => Ok(PodRef { namespace, name, uid: get("K8S_POD_UID") }),
        _ => Err(invalid_env(
            "CNI_ARGS does not name the pod",
            "membrane-cni needs K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS (container runtimes for Kubernetes set them)",
        )),
    }
}

/// GC's `cni.dev/valid-attachments`: the (containerID, ifname) pairs the runtime
/// still uses. Also read under `cni.dev/attachments` (the name an early 1.1 text
/// used, still sent by libcni). Absent means none is valid: that is how libcni
/// (and cnitool) ask to collect every attachment of the network.
pub fn valid_attachments(raw: &Value) -> Result<Vec<(String, String)>, CniError> {
    let Some(list) = raw
        .get("cni.dev/valid-attachments")
        .or_else(|| raw.get("cni.dev/attachments"))
        .filter(|v| !v.is_null())
    else {
        return Ok(Vec::new());
    };
    let items = list.as_array().ok_or_else(|| {
        invalid(
            "\"cni.dev/valid-attachments\" must be a list",
            format!("got {list}"),
        )
    })?;
    items
        .iter()
        .map(|item| {
            let field = |k: &str| item.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
            match (field("containerID"), field("ifname")) {
                (Some(c), Some(i)) => Ok((c, i)),
                _ => Err(invalid("every entry of \"cni.dev/valid-attachments\" needs string fields containerID and ifname", format!("got {item}"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_when_fields_are_absent() {
        let c = plugin_config(&json!({"cniVersion": "1.1.0"})).unwrap();
        assert_eq!(
            c,
            PluginConfig {
                mtu: 1500,
                agent_socket: DEFAULT_AGENT_SOCKET.into(),
                log_file: None,
                dns: None
            }
        );
    }

    #[test]
    fn fields_are_read() {
        let c = plugin_config(&json!({"mtu": 9000, "agentSocket": "/run/a.sock", "logFile": "/var/log/cni.log", "dns": {"nameservers": ["10.96.0.10"]}})).unwrap();
        assert_eq!(
            (c.mtu, c.agent_socket.as_str(), c.log_file.as_deref()),
            (9000, "/run/a.sock", Some("/var/log/cni.log"))
        );
        assert!(c.dns.is_some());
    }

    #[test]
    fn malformed_fields_are_invalid_config_naming_the_field() {
        for (conf, field) in [
            (json!({"mtu": 10}), "mtu"),
            (json!({"mtu": 70000}), "mtu"),
            (json!({"mtu": "1500"}), "mtu"),
            (json!({"mtu": 1500.5}), "mtu"),
            (json!({"agentSocket": "relative.sock"}), "agentSocket"),
            (json!({"agentSocket": 3}), "agentSocket"),
            (json!({"logFile": ""}), "logFile"),
            (json!({"dns": "8.8.8.8"}), "dns"),
            (
                json!({"dns": {"nameservers": "10.0.0.1"}}),
                "dns.nameservers",
            ),
            (json!({"dns": {"domain": 1}}), "dns.domain"),
        ] {
            let err = plugin_config(&conf).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidNetworkConfig as u32, "{conf}");
            assert!(err.msg.contains(field), "{conf}: {}", err.msg);
        }
    }

    #[test]
    fn container_ids_follow_the_spec() {
        for ok in ["abc", "0123456789abcdef", "cnitool-0a1b", "a_b.c-d"] {
            validate_container_id(ok).unwrap();
        }
        for bad in ["", "-abc", ".x", "a/b", "a b", "a;b", "é"] {
            assert_eq!(
                validate_container_id(bad).unwrap_err().code,
                ErrorCode::InvalidEnvironment as u32,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn interface_names_follow_linux_rules() {
        for ok in ["eth0", "net1", "a23456789012345"] {
            validate_ifname(ok).unwrap();
        }
        for bad in ["", ".", "..", "a2345678901234567", "e/0", "e 0", "e:0"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
        assert!(validate_netns_path("relative/ns").is_err());
        validate_netns_path("/var/run/netns/x").unwrap();
    }

    #[test]
    fn cni_args_parse_and_name_the_pod() {
        let args = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert_eq!(
            pod_ref(&args).unwrap(),
            PodRef {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: Some("u-1".into())
            }
        );
        assert!(parse_cni_args("").unwrap().is_empty());
        for bad in ["novalue", "=x", "a=b=c", "a=1;;b=2"] {
            assert_eq!(
                parse_cni_args(bad).unwrap_err().code,
                ErrorCode::InvalidEnvironment as u32,
                "{bad:?}"
            );
        }
        let err = pod_ref(&parse_cni_args("K8S_POD_NAME=x").unwrap()).unwrap_err();
        assert!(err.details.contains("K8S_POD_NAMESPACE"));
    }

    #[test]
    fn valid_attachments_are_read_and_malformed_lists_rejected() {
        let v = valid_attachments(
            &json!({"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
        )
        .unwrap();
        assert_eq!(v, vec![("c1".to_string(), "eth0".to_string())]);
        assert!(valid_attachments(&json!({"cni.dev/valid-attachments": []}))
            .unwrap()
            .is_empty());
        assert!(valid_attachments(&json!({})).unwrap().is_empty());
        assert_eq!(
            valid_attachments(
                &json!({"cni.dev/attachments": [{"containerID": "c2", "ifname": "net1"}]})
            )
            .unwrap(),
            vec![("c2".to_string(), "net1".to_string())]
        );
        for bad in [
            json!({"cni.dev/valid-attachments": {}}),
            json!({"cni.dev/valid-attachments": [{"containerID": "c1"}]}),
            json!({"cni.dev/valid-attachments": [1]}),
        ] {
            assert_eq!(
                valid_attachments(&bad).unwrap_err().code,
                ErrorCode::InvalidNetworkConfig as u32,
                "{bad}"
            );
        }
    }
}
