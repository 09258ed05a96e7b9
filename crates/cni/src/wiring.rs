//! The kernel side of a pod attachment: the veth pair, the pod's /32 behind a
//! link-local gateway, and the host's route and neighbour entry back to it.
//!
//! Pod namespace: CNI_IFNAME up with ipv4/32, "169.254.1.1 dev IF scope link",
//! "default via 169.254.1.1 dev IF", a permanent neighbour 169.254.1.1 -> host-side MAC,
//! IPv6 off on the interface, lo up.
//! Host namespace: the host-side veth up, IPv4 forwarding on and IPv6 off on it
//! (per-device sysctls, never global), "ipv4/32 dev HOST scope link", and a
//! permanent neighbour ipv4 -> pod-side MAC.

use crate::netlink::{self, Link, Socket, VethSpec, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE};
use crate::netns::NetNs;
use std::io;
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct Plan {
    pub host_iface: String,
    pub host_alias: String,
    pub ifname: String,
    pub ipv4: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    pub host_index: i32,
    pub host_mac: [u8; 6],
    pub pod_mac: [u8; 6],
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Adds what was being done to a kernel error: "create veth mbr..: File exists".
fn step<T>(what: impl FnOnce() -> String, r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", what())))
}

fn mac_of(link: &Link) -> io::Result<[u8; 6]> {
    link.mac
        .ok_or_else(|| io::Error::other(format!("{} has no Ethernet address", link.name)))
}

/// Writes a per-device sysctl. A missing file for IPv6 means IPv6 is off in this kernel.
fn device_sysctl(family: &str, iface: &str, key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/net/{family}/conf/{iface}/{key}");
    match std::fs::write(&path, value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && family == "ipv6" => Ok(()),
        r => step(|| format!("write {value} to {path}"), r),
    }
}

/// Creates and configures both ends. On error the caller removes the host-side
/// veth (which takes the pod side with it).
pub fn wire(plan: &Plan, netns: &NetNs) -> io::Result<Wired> {
    let mut host = Socket::open()?;
    let spec = VethSpec {
        host_name: &plan.host_iface,
        peer_name: &plan.ifname,
        mtu: plan.mtu,
    };
    step(
        || {
            format!(
                "create veth {} with peer {} in the pod's namespace",
                plan.host_iface, plan.ifname
            )
        },
        host.apply(&netlink::veth_create_message(&spec, netns.fd())),
    )?;
    let host_link = host.link(&plan.host_iface)?.ok_or_else(|| {
        io::Error::other(format!(
            "{} vanished right after it was created",
            plan.host_iface
        ))
    })?;
    let host_mac = mac_of(&host_link)?;
    step(
        || format!("set the alias of {}", plan.host_iface),
        host.apply(&netlink::link_alias_message(
            host_link.index,
            &plan.host_alias,
        )),
    )?;

    let (ifname, ipv4, gateway) = (plan.ifname.clone(), plan.ipv4, plan.gateway);
    let pod_mac = netns.run(move || {
        let mut pod = Socket::open()?;
        if let Some(lo) = pod.link("lo")? {
            step(
                || "set lo up".into(),
                pod.apply(&netlink::link_up_message(lo.index)),
            )?;
        }
        let link = pod.link(&ifname)?.ok_or_else(|| {
            io::Error::other(format!(
                "{ifname} is not in the pod's namespace after creating the veth"
            ))
        })?;
        device_sysctl("ipv6", &ifname, "disable_ipv6", "1")?;
        step(
            || format!("add {ipv4}/32 to {ifname}"),
            pod.apply(&netlink::address_add_message(link.index, ipv4, 32)),
        )?;
        step(
            || format!("set {ifname} up"),
            pod.apply(&netlink::link_up_message(link.index)),
        )?;
        step(
            || format!("add route {gateway} dev {ifname} scope link"),
            pod.apply(&netlink::route_replace_message(
                gateway,
                32,
                link.index,
                None,
                RT_SCOPE_LINK,
            )),
        )?;
        step(
            || format!("add default route via {gateway}"),
            pod.apply(&netlink::route_replace_message(
                Ipv4Addr::UNSPECIFIED,
                0,
                link.index,
                Some(gateway),
                RT_SCOPE_UNIVERSE,
            )),
        )?;
        step(
            || format!("add neighbour {gateway} on {ifname}"),
            pod.apply(&netlink::neighbour_replace_message(
                link.index, gateway, host_mac,
            )),
        )?;
        mac_of(&link)
    })?;

    device_sysctl("ipv6", &plan.host_iface, "disable_ipv6", "1")?;
    device_sysctl("ipv4", &plan.host_iface, "forwarding", "1")?;
    step(
        || format!("set {} up", plan.host_iface),
        host.apply(&netlink::link_up_message(host_link.index)),
    )?;
    step(
        || format!("add route {}/32 dev {}", plan.ipv4, plan.host_iface),
        host.apply(&netlink::route_replace_message(
            plan.ipv4,
            32,
            host_link.index,
            None,
            RT_SCOPE_LINK,
        )),
    )?;
    step(
        || format!("add neighbour {} on {}", plan.ipv4, plan.host_iface),
        host.apply(&netlink::neighbour_replace_message(
            host_link.index,
            plan.ipv4,
            pod_mac,
        )),
    )?;
    Ok(Wired {
        host_index: host_link.index,
        host_mac,
        pod_mac,
    })
}

/// Removes the host-side veth (and with it the pod side). Ok(false) when absent.
pub fn unwire(host_iface: &str) -> io::Result<bool> {
    step(
        || format!("delete {host_iface}"),
        Socket::open()?.delete_link(host_iface),
    )
}

/// What removing an attachment's host link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unwired {
    Removed,
    Absent,
    /// A link has the name but its alias names another attachment: left alone.
    Foreign(String),
}

/// Removes the attachment's host-side veth when its alias says it is this attachment's.
pub fn unwire_attachment(
    host_iface: &str,
    container_id: &str,
    ifname: &str,
) -> io::Result<Unwired> {
    let mut s = Socket::open()?;
    let Some(link) = s.link(host_iface)? else {
        return Ok(Unwired::Absent);
    };
    if !crate::naming::alias_names_attachment(link.alias.as_deref(), container_id, ifname) {
        return Ok(Unwired::Foreign(link.alias.unwrap_or_default()));
    }
    let removed = step(|| format!("delete {host_iface}"), s.delete_link(host_iface))?;
    Ok(if removed {
        Unwired::Removed
    } else {
        Unwired::Absent
    })
}

/// What the kernel holds for an attachment, for CHECK.
#[derive(Debug, Clone)]
pub struct Observed {
    pub host: Option<Link>,
    pub host_routes: Vec<netlink::Route>,
    pub host_neighbours: Vec<netlink::Neighbour>,
    pub pod: Option<Link>,
    pub pod_addresses: Vec<netlink::Address>,
    pub pod_routes: Vec<netlink::Route>,
    pub pod_neighbours: Vec<netlink::Neighbour>,
}

pub fn observe(host_iface: &str, ifname: &str, netns: &NetNs) -> io::Result<Observed> {
    let mut host = Socket::open()?;
    let host_link = host.link(host_iface)?;
    let host_routes = host.routes()?;
    let host_neighbours = host.neighbours()?;
    let ifname = ifname.to_string();
    let (pod, pod_addresses, pod_routes, pod_neighbours) = netns.run(move || {
        let mut s = Socket::open()?;
        Ok((
            s.link(&ifname)?,
            s.addresses()?,
            s.routes()?,
            s.neighbours()?,
        ))
    })?;
    Ok(Observed {
        host: host_link,
        host_routes,
        host_neighbours,
        pod,
        pod_addresses,
        pod_routes,
        pod_neighbours,
    })
}

/// Every difference between what CHECK expects and what the kernel holds. Pure.
pub fn differences(
    o: &Observed,
    host_iface: &str,
    ifname: &str,
    ipv4: Ipv4Addr,
    gateway: Ipv4Addr,
    mtu: Option<u32>,
) -> Vec<String> {
    let mut out = Vec::new();
    let main = netlink::RT_TABLE_MAIN as u32;
    match &o.host {
        None => out.push(format!("host-side interface {host_iface} does not exist")),
        Some(h) => {
            if !h.up {
                out.push(format!("host-side interface {host_iface} is down"));
            }
            if h.kind.as_deref() != Some("veth") {
                out.push(format!("host-side interface {host_iface} is not a veth"));
            }
            if !o.host_routes.iter().any(|r| {
                r.table == main && r.dst == ipv4 && r.dst_len == 32 && r.oif == Some(h.index)
            }) {
                out.push(format!("host has no route {ipv4}/32 dev {host_iface}"));
            }
        }
    }
    // Each side reaches the other through a permanent neighbour entry for the other side's MAC.
    if let (Some(h), Some(p)) = (&o.host, &o.pod) {
        let has = |list: &[netlink::Neighbour], index: i32, ip: Ipv4Addr, mac: Option<[u8; 6]>| {
            list.iter().any(|n| {
                n.index == index && n.ip == ip && n.permanent && n.mac.is_some() && n.mac == mac
            })
        };
        if !has(&o.host_neighbours, h.index, ipv4, p.mac) {
            out.push(format!(
                "host has no permanent neighbour {ipv4} -> {ifname}'s MAC on {host_iface}"
            ));
        }
        if !has(&o.pod_neighbours, p.index, gateway, h.mac) {
            out.push(format!(
                "pod has no permanent neighbour {gateway} -> {host_iface}'s MAC on {ifname}"
            ));
        }
    }
    match &o.pod {
        None => out.push(format!(
            "interface {ifname} does not exist in the pod's namespace"
        )),
        Some(p) => {
            if !p.up {
                out.push(format!("{ifname} is down"));
            }
            if let Some(m) = mtu {
                if p.mtu != m {
                    out.push(format!("{ifname} has MTU {} instead of {m}", p.mtu));
                }
            }
            if !o
                .pod_addresses
                .iter()
                .any(|a| a.index == p.index && a.local == ipv4 && a.prefix_len == 32)
            {
                out.push(format!("{ifname} does not have {ipv4}/32"));
            }
            if !o.pod_routes.iter().any(|r| {
                r.table == main
                    && r.dst == gateway
                    && r.dst_len == 32
                    && r.oif == Some(p.index)
                    && r.scope == RT_SCOPE_LINK
            }) {
                out.push(format!(
                    "pod has no route {gateway} dev {ifname} scope link"
                ));
            }
            if !o.pod_routes.iter().any(|r| {
                r.table == main
                    && r.dst_len == 0
                    && r.gateway == Some(gateway)
                    && r.oif == Some(p.index)
            }) {
                out.push(format!(
                    "pod has no default route via {gateway} dev {ifname}"
                ));
            }
        }
    }
    out
}

/// Host-side links of `network` (by name shape and alias) not in `keep`. For GC.
pub fn stale_host_links<'a>(
    links: &'a [Link],
    alias_prefix: &str,
    keep: &[String],
) -> Vec<&'a Link> {
    links
        .iter()
        .filter(|l| crate::naming::is_host_iface_name(&l.name))
        .filter(|l| {
            l.alias
                .as_deref()
                .is_some_and(|a| a.starts_with(alias_prefix))
        })
        .filter(|l| !keep.contains(&l.name))
        .collect()
}

pub fn host_links() -> io::Result<Vec<Link>> {
    Socket::open()?.links()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{Address, Neighbour, Route};

    const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 9);

    fn link(index: i32, name: &str, kind: Option<&str>, alias: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            mtu: 1500,
            up: true,
            alias: alias.map(Into::into),
            kind: kind.map(Into::into),
        }
    }

    fn route(dst: Ipv4Addr, dst_len: u8, gateway: Option<Ipv4Addr>, oif: i32, scope: u8) -> Route {
        Route {
            dst,
            dst_len,
            gateway,
            oif: Some(oif),
            scope,
            table: 254,
        }
    }

    fn neighbour(index: i32, ip: Ipv4Addr, mac_of: i32) -> Neighbour {
        Neighbour {
            index,
            ip,
            mac: Some([2, 0, 0, 0, 0, mac_of as u8]),
            permanent: true,
        }
    }

    fn healthy() -> Observed {
        Observed {
            host: Some(link(7, "mbr0123456789a", Some("veth"), None)),
            host_routes: vec![route(IP, 32, None, 7, RT_SCOPE_LINK)],
            host_neighbours: vec![neighbour(7, IP, 2)],
            pod_neighbours: vec![neighbour(2, GW, 7)],
            pod: Some(link(2, "eth0", Some("veth"), None)),
            pod_addresses: vec![Address {
                index: 2,
                prefix_len: 32,
                local: IP,
            }],
            pod_routes: vec![
                route(GW, 32, None, 2, RT_SCOPE_LINK),
                route(Ipv4Addr::UNSPECIFIED, 0, Some(GW), 2, 0),
            ],
        }
    }

    #[test]
    fn a_healthy_attachment_has_no_differences() {
        assert!(differences(&healthy(), "mbr0123456789a", "eth0", IP, GW, Some(1500)).is_empty());
    }

    #[test]
    fn every_missing_piece_is_named() {
        let mut o = healthy();
        o.host = None;
        o.pod_routes.clear();
        o.pod_addresses[0].local = Ipv4Addr::new(10, 244, 0, 10);
        if let Some(p) = o.pod.as_mut() {
            p.up = false;
            p.mtu = 1400;
        }
        let d = differences(&o, "mbr0123456789a", "eth0", IP, GW, Some(1500));
        for needle in [
            "mbr0123456789a does not exist",
            "eth0 is down",
            "MTU 1400",
            "does not have 10.244.0.9/32",
            "scope link",
            "default route",
        ] {
            assert!(
                d.iter().any(|s| s.contains(needle)),
                "{needle} not in {d:?}"
            );
        }
        let mut o = healthy();
        o.host_neighbours[0].permanent = false;
        o.pod_neighbours[0].mac = Some([9; 6]);
        let d = differences(&o, "mbr0123456789a", "eth0", IP, GW, Some(1500));
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("host has no permanent neighbour 10.244.0.9")
                && d[1].contains("pod has no permanent neighbour 169.254.1.1"),
            "{d:?}"
        );

        let mut o = healthy();
        o.host_neighbours[0].permanent = false;
        o.pod_neighbours[0].mac = Some([9; 6]);
        let d = differences(&o, "mbr0123456789a", "eth0", IP, GW, Some(1500));
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("host has no permanent neighbour 10.244.0.9"),
            "{d:?}"
        );
        assert!(
            d[1].contains("pod has no permanent neighbour 169.254.1.1"),
            "{d:?}"
        );

        let mut o = healthy();
        o.pod = None;
        o.host_routes.clear();
        let d = differences(&o, "mbr0123456789a", "eth0", IP, GW, None);
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn gc_keeps_valid_foreign_and_other_network_links() {
        let links = vec![
            link(1, "lo", None, None),
            link(
                2,
                "mbr00000000001",
                Some("veth"),
                Some("membrane-cni:net:a/eth0"),
            ),
            link(
                3,
                "mbr00000000002",
                Some("veth"),
                Some("membrane-cni:net:b/eth0"),
            ),
            link(
                4,
                "mbr00000000003",
                Some("veth"),
                Some("membrane-cni:other:c/eth0"),
            ),
            link(5, "mbr00000000004", Some("veth"), None),
            link(
                6,
                "mbrnotours",
                Some("veth"),
                Some("membrane-cni:net:d/eth0"),
            ),
        ];
        let stale = stale_host_links(&links, "membrane-cni:net:", &["mbr00000000001".to_string()]);
        assert_eq!(stale.iter().map(|l| l.index).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn macs_are_lower_case_colon_separated() {
        assert_eq!(
            format_mac(&[0x0a, 0xbc, 0, 1, 0xff, 0x10]),
            "0a:bc:00:01:ff:10"
        );
    }
}
