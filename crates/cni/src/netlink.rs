//! A small synchronous rtnetlink client: just the messages the plugin needs
//! (veth pairs, links up/down/delete, IPv4 addresses, routes and permanent
//! neighbour entries, and dumps of links, addresses and routes for CHECK and GC).
//!
//! Messages are built by [`Message`] (pure, unit-tested byte layout) and sent on
//! a NETLINK_ROUTE socket bound in the network namespace of the calling thread.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// nlmsghdr types and flags
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

// rtnetlink message types
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;

// link attributes
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFF_UP: u32 = 0x1;

// address, route and neighbour attributes
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
pub const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const NUD_PERMANENT: u16 = 0x80;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;
const NDMSG_LEN: usize = 12;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink request under construction: header, fixed family struct, attributes.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    pub fn new(msg_type: u16, flags: u16) -> Message {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends raw bytes (a family header such as ifinfomsg), padded to 4 bytes.
    pub fn push(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.push(data)
    }

    pub fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    pub fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn begin_nested(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end_nested(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("end_nested without begin_nested");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The finished bytes with the length and sequence number filled in.
    pub fn finish(&self, seq: u32) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unclosed nested attribute");
        let mut out = self.buf.clone();
        let len = out.len() as u32;
        out[0..4].copy_from_slice(&len.to_ne_bytes());
        out[8..12].copy_from_slice(&seq.to_ne_bytes());
        out
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut b = [0u8; IFINFOMSG_LEN];
    b[0] = AF_UNSPEC;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn rtmsg(dst_len: u8, scope: u8) -> [u8; RTMSG_LEN] {
    [
        AF_INET,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        scope,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ]
}

/// A veth pair whose peer is created directly inside another network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub peer_name: &'a str,
    pub mtu: u32,
}

pub fn veth_create_message(spec: &VethSpec, peer_netns_fd: RawFd) -> Message {
    let mut m = Message::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    m.push(&ifinfomsg(0, 0, 0));
    m.attr_str(IFLA_IFNAME, spec.host_name)
        .attr_u32(IFLA_MTU, spec.mtu);
    m.begin_nested(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "veth")
        .begin_nested(IFLA_INFO_DATA)
        .begin_nested(VETH_INFO_PEER);
    m.push(&ifinfomsg(0, 0, 0));
    m.attr_str(IFLA_IFNAME, spec.peer_name)
        .attr_u32(IFLA_MTU, spec.mtu)
        .attr_u32(IFLA_NET_NS_FD, peer_netns_fd as u32);
    m.end_nested().end_nested().end_nested();
    m
}

pub fn link_up_message(index: i32) -> Message {
    let mut m = Message::new(RTM_NEWLINK, NLM_F_ACK);
    m.push(&ifinfomsg(index, IFF_UP, IFF_UP));
    m
}

/// The kernel ignores IFLA_IFALIAS when creating a link; it is set afterwards.
pub fn link_alias_message(index: i32, alias: &str) -> Message {
    let mut m = Message::new(RTM_NEWLINK, NLM_F_ACK);
    m.push(&ifinfomsg(index, 0, 0))
        .attr(IFLA_IFALIAS, alias.as_bytes());
    m
}

pub fn link_delete_message(name: &str) -> Message {
    let mut m = Message::new(RTM_DELLINK, NLM_F_ACK);
    m.push(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, name);
    m
}

pub fn link_get_message(name: &str) -> Message {
    let mut m = Message::new(RTM_GETLINK, 0);
    m.push(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, name);
    m
}

pub fn address_add_message(index: i32, addr: Ipv4Addr, prefix_len: u8) -> Message {
    let mut m = Message::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    let mut hdr = [0u8; IFADDRMSG_LEN];
    hdr[0] = AF_INET;
    hdr[1] = prefix_len;
    hdr[3] = RT_SCOPE_UNIVERSE;
    hdr[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    m.push(&hdr)
        .attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets());
    m
}

/// A route in the main table: `dst/dst_len` out of `oif`, optionally via `gateway`.
pub fn route_replace_message(
    dst: Ipv4Addr,
    dst_len: u8,
    oif: i32,
    gateway: Option<Ipv4Addr>,
    scope: u8,
) -> Message {
    let mut m = Message::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    m.push(&rtmsg(dst_len, scope));
    if dst_len > 0 {
        m.attr(RTA_DST, &dst.octets());
    }
    if let Some(gw) = gateway {
        m.attr(RTA_GATEWAY, &gw.octets());
    }
    m.attr_u32(RTA_OIF, oif as u32);
    m
}

pub fn neighbour_replace_message(index: i32, ip: Ipv4Addr, mac: [u8; 6]) -> Message {
    let mut m = Message::new(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    let mut hdr = [0u8; NDMSG_LEN];
    hdr[0] = AF_INET;
    hdr[4..8].copy_from_slice(&index.to_ne_bytes());
    hdr[8..10].copy_from_slice(&NUD_PERMANENT.to_ne_bytes());
    m.push(&hdr)
        .attr(NDA_DST, &ip.octets())
        .attr(NDA_LLADDR, &mac);
    m
}

fn dump_message(msg_type: u16, family: u8, header_len: usize) -> Message {
    let mut m = Message::new(msg_type, NLM_F_DUMP);
    let mut hdr = vec![0u8; header_len];
    hdr[0] = family;
    m.push(&hdr);
    m
}

/// Attributes of one message or nest: (type without flags, payload).
pub fn parse_attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[align4(len).min(data.len())..];
    }
    out
}

fn cstr(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from)
}

fn u32_of(data: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(data).ok().map(u32::from_ne_bytes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
    pub alias: Option<String>,
    pub kind: Option<String>,
}

pub fn parse_link(payload: &[u8]) -> Option<Link> {
    if payload.len() < IFINFOMSG_LEN {
        return None;
    }
    let index = i32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
    let mut link = Link {
        index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: flags & IFF_UP != 0,
        alias: None,
        kind: None,
    };
    for (kind, data) in parse_attrs(&payload[IFINFOMSG_LEN..]) {
        match kind {
            IFLA_IFNAME => link.name = cstr(data),
            IFLA_ADDRESS => link.mac = <[u8; 6]>::try_from(data).ok(),
            IFLA_MTU => link.mtu = u32_of(data).unwrap_or(0),
            IFLA_IFALIAS => link.alias = Some(cstr(data)),
            IFLA_LINKINFO => {
                link.kind = parse_attrs(data)
                    .into_iter()
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, d)| cstr(d));
            }
            _ => {}
        }
    }
    Some(link)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: i32,
    pub prefix_len: u8,
    pub local: Ipv4Addr,
}

pub fn parse_address(payload: &[u8]) -> Option<Address> {
    if payload.len() < IFADDRMSG_LEN || payload[0] != AF_INET {
        return None;
    }
    let index = u32::from_ne_bytes(payload[4..8].try_into().ok()?) as i32;
    let attrs = parse_attrs(&payload[IFADDRMSG_LEN..]);
    let local = attrs
        .iter()
        .find(|(k, _)| *k == IFA_LOCAL)
        .or_else(|| attrs.iter().find(|(k, _)| *k == IFA_ADDRESS))
        .and_then(|(_, d)| ipv4(d))?;
    Some(Address {
        index,
        prefix_len: payload[1],
        local,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<i32>,
    pub scope: u8,
    pub table: u32,
}

pub fn parse_route(payload: &[u8]) -> Option<Route> {
    if payload.len() < RTMSG_LEN || payload[0] != AF_INET {
        return None;
    }
    let mut route = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len: payload[1],
        gateway: None,
        oif: None,
        scope: payload[6],
        table: payload[4] as u32,
    };
    for (kind, data) in parse_attrs(&payload[RTMSG_LEN..]) {
        match kind {
            RTA_DST => route.dst = ipv4(data).unwrap_or(Ipv4Addr::UNSPECIFIED),
            RTA_GATEWAY => route.gateway = ipv4(data),
            RTA_OIF => route.oif = u32_of(data).map(|v| v as i32),
            RTA_TABLE => route.table = u32_of(data).unwrap_or(route.table),
            _ => {}
        }
    }
    Some(route)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub index: i32,
    pub ip: Ipv4Addr,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
}

pub fn parse_neighbour(payload: &[u8]) -> Option<Neighbour> {
    if payload.len() < NDMSG_LEN || payload[0] != AF_INET {
        return None;
    }
    let index = i32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let state = u16::from_ne_bytes(payload[8..10].try_into().ok()?);
    let attrs = parse_attrs(&payload[NDMSG_LEN..]);
    let ip = attrs
        .iter()
        .find(|(k, _)| *k == NDA_DST)
        .and_then(|(_, d)| ipv4(d))?;
    let mac = attrs
        .iter()
        .find(|(k, _)| *k == NDA_LLADDR)
        .and_then(|(_, d)| <[u8; 6]>::try_from(*d).ok());
    Some(Neighbour {
        index,
        ip,
        mac,
        permanent: state & NUD_PERMANENT != 0,
    })
}

/// A NETLINK_ROUTE socket in the network namespace of the thread that opened it.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

const RECV_BUF: usize = 64 * 1024;

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed means "kernel assigns the port id".
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 1 })
    }

    fn send(&mut self, msg: &Message) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = msg.finish(self.seq);
        // SAFETY: bytes is a valid buffer of the given length.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is a valid writable buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Sends a request and collects every payload answering it until the ack,
    /// NLMSG_DONE, or (for a non-dump request without ack) the first reply.
    fn exchange(&mut self, msg: &Message) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let seq = self.send(msg)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let n = self.recv(&mut buf)?;
            let mut data = &buf[..n];
            let mut finished = false;
            while data.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes([data[4], data[5]]);
                let flags = u16::from_ne_bytes([data[6], data[7]]);
                let msg_seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
                if len < NLMSG_HDRLEN || len > data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message from the kernel",
                    ));
                }
                let payload = &data[NLMSG_HDRLEN..len];
                data = &data[align4(len).min(data.len())..];
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                            .unwrap_or(-libc::EIO);
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        finished = true;
                    }
                    NLMSG_DONE => finished = true,
                    _ => {
                        out.push((kind, payload.to_vec()));
                        if flags & NLM_F_MULTI == 0 && !is_ack(msg) {
                            finished = true;
                        }
                    }
                }
            }
            if finished {
                return Ok(out);
            }
        }
    }

    /// A change request: succeeds when the kernel acks it.
    pub fn apply(&mut self, msg: &Message) -> io::Result<()> {
        self.exchange(msg).map(|_| ())
    }

    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        match self.exchange(&link_get_message(name)) {
            Ok(replies) => Ok(replies.iter().find_map(|(_, p)| parse_link(p))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        Ok(self
            .exchange(&dump_message(RTM_GETLINK, AF_UNSPEC, IFINFOMSG_LEN))?
            .iter()
            .filter_map(|(_, p)| parse_link(p))
            .collect())
    }

    pub fn addresses(&mut self) -> io::Result<Vec<Address>> {
        Ok(self
            .exchange(&dump_message(RTM_GETADDR, AF_INET, IFADDRMSG_LEN))?
            .iter()
            .filter_map(|(_, p)| parse_address(p))
            .collect())
    }

    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        Ok(self
            .exchange(&dump_message(RTM_GETROUTE, AF_INET, RTMSG_LEN))?
            .iter()
            .filter_map(|(_, p)| parse_route(p))
            .collect())
    }

    pub fn neighbours(&mut self) -> io::Result<Vec<Neighbour>> {
        Ok(self
            .exchange(&dump_message(RTM_GETNEIGH, AF_INET, NDMSG_LEN))?
            .iter()
            .filter_map(|(_, p)| parse_neighbour(p))
            .collect())
    }

    /// Deletes a link by name; Ok(false) when there is none.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        match self.apply(&link_delete_message(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn is_ack(msg: &Message) -> bool {
    u16::from_ne_bytes([msg.buf[6], msg.buf[7]]) & NLM_F_ACK != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_lengths_filled() {
        let mut m = Message::new(RTM_GETLINK, 0);
        m.push(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, "eth0");
        let bytes = m.finish(7);
        assert_eq!(bytes.len(), 16 + 16 + 12); // header + ifinfomsg + (4 + "eth0\0" padded to 8)
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        let attrs = parse_attrs(&bytes[32..]);
        assert_eq!(attrs, vec![(IFLA_IFNAME, &b"eth0\0"[..])]);
    }

    #[test]
    fn veth_message_nests_the_peer_with_its_namespace() {
        let spec = VethSpec {
            host_name: "mbr0123456789a",
            peer_name: "eth0",
            mtu: 1450,
        };
        let bytes = veth_create_message(&spec, 9).finish(1);
        let top = parse_attrs(&bytes[32..]);
        assert_eq!(
            cstr(top.iter().find(|(k, _)| *k == IFLA_IFNAME).unwrap().1),
            "mbr0123456789a"
        );
        assert_eq!(
            u32_of(top.iter().find(|(k, _)| *k == IFLA_MTU).unwrap().1),
            Some(1450)
        );
        let info = parse_attrs(top.iter().find(|(k, _)| *k == IFLA_LINKINFO).unwrap().1);
        assert_eq!(cstr(info[0].1), "veth");
        let data = parse_attrs(info[1].1);
        let peer = data[0].1;
        let peer_attrs = parse_attrs(&peer[IFINFOMSG_LEN..]);
        assert_eq!(cstr(peer_attrs[0].1), "eth0");
        assert_eq!(u32_of(peer_attrs[2].1), Some(9));
    }

    #[test]
    fn truncated_or_garbage_attributes_stop_parsing_without_panicking() {
        assert!(parse_attrs(&[1, 0]).is_empty());
        assert!(parse_attrs(&[200, 0, 1, 0, 1, 2]).is_empty());
        assert!(parse_attrs(&[2, 0, 1, 0]).is_empty());
        assert_eq!(parse_link(&[0u8; 4]), None);
        assert_eq!(parse_route(&[0u8; 3]), None);
        assert_eq!(parse_address(&[2u8; 5]), None);
    }

    #[test]
    fn link_route_and_address_replies_parse() {
        let mut m = Message::new(RTM_NEWLINK, 0);
        m.push(&ifinfomsg(5, IFF_UP, 0))
            .attr_str(IFLA_IFNAME, "eth0")
            .attr_u32(IFLA_MTU, 1500)
            .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]);
        m.begin_nested(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end_nested();
        let link = parse_link(&m.finish(1)[16..]).unwrap();
        assert_eq!(
            (
                link.index,
                link.name.as_str(),
                link.mtu,
                link.up,
                link.kind.as_deref()
            ),
            (5, "eth0", 1500, true, Some("veth"))
        );
        assert_eq!(link.mac, Some([2, 0, 0, 0, 0, 1]));

        let gw = Ipv4Addr::new(169, 254, 1, 1);
        let route = parse_route(
            &route_replace_message(Ipv4Addr::UNSPECIFIED, 0, 5, Some(gw), RT_SCOPE_UNIVERSE)
                .finish(1)[16..],
        )
        .unwrap();
        assert_eq!(
            (route.dst_len, route.gateway, route.oif, route.table),
            (0, Some(gw), Some(5), RT_TABLE_MAIN as u32)
        );

        let neigh =
            parse_neighbour(&neighbour_replace_message(5, gw, [2, 0, 0, 0, 0, 9]).finish(1)[16..])
                .unwrap();
        assert_eq!(
            neigh,
            Neighbour {
                index: 5,
                ip: gw,
                mac: Some([2, 0, 0, 0, 0, 9]),
                permanent: true
            }
        );
        assert_eq!(parse_neighbour(&[2u8; 7]), None);

        let ip = Ipv4Addr::new(10, 1, 2, 3);
        let addr = parse_address(&address_add_message(5, ip, 32).finish(1)[16..]).unwrap();
        assert_eq!(
            addr,
            Address {
                index: 5,
                prefix_len: 32,
                local: ip
            }
        );
    }
}
