//! The ADD result in the shape of the configuration's cniVersion, and the
//! reading of prevResult (the cached ADD result a runtime passes to CHECK and DEL).
//!
//! Result (1.1.0): interfaces [host veth (no sandbox), pod interface (sandbox =
//! CNI_NETNS, mtu)], ips [{address ipv4/32, gateway 169.254.1.1, interface: 1}],
//! routes [default via the gateway, the gateway's /32 on-link (scope 253)], dns.
//! 1.0.0 has no interface mtu and no route scope; 0.3.x/0.4.0 also carry
//! "version": "4" on each IP.

use crate::spec::{CniError, ErrorCode};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// Everything ADD wired, as the result reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host_iface: String,
    pub host_mac: String,
    pub ifname: String,
    pub pod_mac: String,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

const POD_INTERFACE_INDEX: usize = 1;

fn is_legacy(version: &str) -> bool {
    version.starts_with("0.")
}

pub fn add_result(version: &str, a: &Attachment, dns: Option<&Value>) -> Value {
    let legacy = is_legacy(version);
    let v11 = version == "1.1.0";
    let mut pod_iface = json!({ "name": a.ifname, "mac": a.pod_mac, "sandbox": a.netns });
    if v11 {
        pod_iface["mtu"] = json!(a.mtu);
    }
    let mut ip = json!({ "address": format!("{}/32", a.ipv4), "gateway": a.gateway.to_string(), "interface": POD_INTERFACE_INDEX });
    if legacy {
        ip["version"] = json!("4");
    }
    let mut routes = vec![json!({ "dst": "0.0.0.0/0", "gw": a.gateway.to_string() })];
    if v11 {
        routes.push(
            json!({ "dst": format!("{}/32", a.gateway), "scope": crate::netlink::RT_SCOPE_LINK }),
        );
    }
    json!({
        "cniVersion": version,
        "interfaces": [ { "name": a.host_iface, "mac": a.host_mac }, pod_iface ],
        "ips": [ ip ],
        "routes": routes,
        "dns": dns.cloned().unwrap_or_else(|| json!({})),
    })
}

/// What a prevResult says about one attachment: the pod interface and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub ipv4: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
}

fn bad_prev(msg: impl Into<String>) -> CniError {
    CniError::new(
        ErrorCode::InvalidNetworkConfig,
        msg,
        "prevResult must be the result of this plugin's ADD for the same container and interface",
    )
}

/// Finds CNI_IFNAME in CNI_NETNS among prevResult's interfaces and the IPv4 address on it.
pub fn expected_from_prev_result(
    prev: &Value,
    ifname: &str,
    netns: &str,
) -> Result<Expected, CniError> {
    let interfaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_prev("prevResult has no interfaces list"))?;
    let index = interfaces
        .iter()
        .position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname)
                && i.get("sandbox").and_then(Value::as_str) == Some(netns)
        })
        .ok_or_else(|| {
            bad_prev(format!(
                "prevResult has no interface {ifname:?} in sandbox {netns:?}"
            ))
        })?;
    let mtu = interfaces[index]
        .get("mtu")
        .and_then(Value::as_u64)
        .map(|m| m as u32);
    let ips = prev
        .get("ips")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_prev("prevResult has no ips list"))?;
    let ip = ips
        .iter()
        .find(|ip| ip.get("interface").and_then(Value::as_u64) == Some(index as u64))
        .ok_or_else(|| {
            bad_prev(format!(
                "prevResult has no address on interface {index} ({ifname})"
            ))
        })?;
    let address = ip
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_prev("prevResult ip has no address"))?;
    let (addr, len) = address.split_once('/').ok_or_else(|| {
        bad_prev(format!(
            "prevResult address {address:?} is not in CIDR form"
        ))
    })?;
    let ipv4: Ipv4Addr = addr
        .parse()
        .map_err(|_| bad_prev(format!("prevResult address {address:?} is not IPv4")))?;
    let prefix_len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
        bad_prev(format!(
            "prevResult address {address:?} has a bad prefix length"
        ))
    })?;
    let gateway = match ip.get("gateway") {
        None => None,
        Some(g) => Some(
            g.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad_prev(format!("prevResult gateway {g} is not IPv4")))?,
        ),
    };
    Ok(Expected {
        ipv4,
        prefix_len,
        gateway,
        mtu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment() -> Attachment {
        Attachment {
            host_iface: "mbr0123456789a".into(),
            host_mac: "02:00:00:00:00:01".into(),
            ifname: "eth0".into(),
            pod_mac: "02:00:00:00:00:02".into(),
            netns: "/var/run/netns/p1".into(),
            ipv4: Ipv4Addr::new(10, 244, 0, 7),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            mtu: 1450,
        }
    }

    #[test]
    fn v1_1_result_has_every_field() {
        let r = add_result("1.1.0", &attachment(), None);
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(
            r["interfaces"][0],
            json!({"name": "mbr0123456789a", "mac": "02:00:00:00:00:01"})
        );
        assert_eq!(
            r["interfaces"][1],
            json!({"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/var/run/netns/p1", "mtu": 1450})
        );
        assert_eq!(
            r["ips"],
            json!([{"address": "10.244.0.7/32", "gateway": "169.254.1.1", "interface": 1}])
        );
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "169.254.1.1/32", "scope": 253}])
        );
        assert_eq!(r["dns"], json!({}));
    }

    #[test]
    fn older_versions_get_their_shape() {
        let r = add_result(
            "1.0.0",
            &attachment(),
            Some(&json!({"nameservers": ["10.96.0.10"]})),
        );
        assert!(r["interfaces"][1].get("mtu").is_none());
        assert_eq!(r["routes"].as_array().unwrap().len(), 1);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
        let r = add_result("0.4.0", &attachment(), None);
        assert_eq!(r["ips"][0]["version"], "4");
    }

    #[test]
    fn prev_result_round_trips() {
        let r = add_result("1.1.0", &attachment(), None);
        let e = expected_from_prev_result(&r, "eth0", "/var/run/netns/p1").unwrap();
        assert_eq!(
            e,
            Expected {
                ipv4: Ipv4Addr::new(10, 244, 0, 7),
                prefix_len: 32,
                gateway: Some(Ipv4Addr::new(169, 254, 1, 1)),
                mtu: Some(1450)
            }
        );
    }

    #[test]
    fn malformed_prev_results_are_invalid_config() {
        let good = add_result("1.1.0", &attachment(), None);
        let mut cases = vec![
            json!({}),
            json!({"interfaces": "x"}),
            json!({"interfaces": [], "ips": []}),
        ];
        let mut other_ns = good.clone();
        other_ns["interfaces"][1]["sandbox"] = json!("/var/run/netns/other");
        cases.push(other_ns);
        let mut no_ip = good.clone();
        no_ip["ips"][0]["interface"] = json!(0);
        cases.push(no_ip);
        for (addr, gw) in [
            ("10.244.0.7", "169.254.1.1"),
            ("nope/32", "169.254.1.1"),
            ("10.244.0.7/40", "169.254.1.1"),
            ("10.244.0.7/32", "fe80::1"),
        ] {
            let mut c = good.clone();
            c["ips"][0]["address"] = json!(addr);
            c["ips"][0]["gateway"] = json!(gw);
            cases.push(c);
        }
        for c in cases {
            let err = expected_from_prev_result(&c, "eth0", "/var/run/netns/p1").unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidNetworkConfig as u32, "{c}");
        }
    }
}
