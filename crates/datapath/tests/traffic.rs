//! `bpf_lxc` on real traffic: network namespaces as pods on veths, the
//! programs attached to the host sides by the `lxc_loader` example (the
//! stand-in for the agent), endpoints, ipcache and policy in the pinned maps,
//! and real TCP, UDP and ICMP between the pods.
//!
//! Addresses: /32s in 10.251.0.0/16 only. Forwarding is enabled only on the
//! host-side veths (per-device sysctl), never globally.
//!
//! The helpers that run inside a namespace (echo servers, clients) are this
//! test binary itself, re-executed through `ip netns exec` with
//! `MBR_TRAFFIC_HELPER` set (see [`helper_process`]).
//!
//! Root and BPF are required; without them these tests FAIL (see
//! `common::require_kernel`). Namespaces, links, pins and processes are
//! removed on drop, also when a test fails.

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{require_kernel, run, send_frames_expecting, Injected};
use membrane_datapath::{
    attach, lxc,
    maps::{
        abi::{self, TrafficDirection},
        conntrack::{CtEntry, CtKey},
        endpoint::{ipv4_to_map, EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED},
        ipcache::{Ipcache, IpcacheEntry},
        metrics::Metrics,
        policy::{PolicyEntry, PolicyKey, PolicyMap, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    },
    sys,
};

const EGRESS: TrafficDirection = TrafficDirection::Egress;
const INGRESS: TrafficDirection = TrafficDirection::Ingress;
const BPFFS: &str = "/sys/fs/bpf";
const GATEWAY: &str = "169.254.1.1";

// ---- helpers run inside a namespace -----------------------------------------

/// Not a test: the entry point of the helper processes. In a normal test run
/// `MBR_TRAFFIC_HELPER` is unset and this returns at once.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var("MBR_TRAFFIC_HELPER") else {
        return;
    };
    let args: Vec<&str> = role.split_whitespace().collect();
    let code = match args.as_slice() {
        ["echo-server", "tcp", addr] => tcp_echo_server(addr.parse().expect("addr")),
        ["echo-server", "udp", addr] => udp_echo_server(addr.parse().expect("addr")),
        ["tcp-check", addr, timeout_ms] => tcp_check(addr.parse().expect("addr"), ms(timeout_ms)),
        ["udp-check", addr, timeout_ms] => udp_check(addr.parse().expect("addr"), ms(timeout_ms)),
        ["tcp-stream", addr, interval_ms, duration_ms] => tcp_stream(
            addr.parse().expect("addr"),
            ms(interval_ms),
            ms(duration_ms),
        ),
        other => {
            eprintln!("unknown helper role {other:?}");
            2
        }
    };
    std::process::exit(code);
}

fn ms(v: &str) -> Duration {
    Duration::from_millis(v.parse().expect("milliseconds"))
}

fn tcp_echo_server(addr: SocketAddr) -> i32 {
    let listener = TcpListener::bind(addr).expect("bind");
    println!("RESULT listening");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    0
}

fn udp_echo_server(addr: SocketAddr) -> i32 {
    let socket = UdpSocket::bind(addr).expect("bind");
    println!("RESULT listening");
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    }
}

fn tcp_check(addr: SocketAddr, timeout: Duration) -> i32 {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        println!("RESULT connect-failed");
        return 1;
    };
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 5];
    if stream.write_all(b"hello").is_err()
        || stream.read_exact(&mut buf).is_err()
        || &buf != b"hello"
    {
        println!("RESULT echo-failed");
        return 1;
    }
    println!("RESULT ok");
    0
}

fn udp_check(addr: SocketAddr, timeout: Duration) -> i32 {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 16];
    for _ in 0..2 {
        let _ = socket.send_to(b"ping", addr);
        if let Ok((4, _)) = socket.recv_from(&mut buf) {
            println!("RESULT ok");
            return 0;
        }
    }
    println!("RESULT timeout");
    1
}

/// One connection; every `interval` a numbered message, echoed back within
/// a second or counted as a failure; for `duration`.
fn tcp_stream(addr: SocketAddr, interval: Duration, duration: Duration) -> i32 {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        println!("RESULT connect-failed");
        return 1;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    let local = stream.local_addr().expect("local addr");
    println!("RESULT connected {}", local.port());
    let start = Instant::now();
    let (mut sent, mut ok, mut failed) = (0u64, 0u64, 0u64);
    let mut last_ok = Instant::now();
    let mut max_gap = Duration::ZERO;
    while start.elapsed() < duration {
        let msg = sent.to_be_bytes();
        sent += 1;
        let mut buf = [0u8; 8];
        if stream.write_all(&msg).is_ok() && stream.read_exact(&mut buf).is_ok() && buf == msg {
            ok += 1;
            max_gap = max_gap.max(last_ok.elapsed());
            last_ok = Instant::now();
        } else {
            failed += 1;
        }
        std::thread::sleep(interval);
    }
    println!(
        "RESULT sent {sent} ok {ok} failed {failed} max_gap_ms {}",
        max_gap.as_millis()
    );
    i32::from(failed != 0)
}

// ---- pods -----------------------------------------------------------------

/// One "pod": a namespace with eth0, its host-side veth in the root namespace.
struct Pod {
    netns: String,
    host_iface: String,
    ip: Ipv4Addr,
}

impl Pod {
    fn ifindex(&self) -> u32 {
        sys::ifindex_from_name(&self.host_iface).expect("ifindex")
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

fn try_run(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn mac(iface: &str, netns: Option<&str>) -> String {
    let path = format!("/sys/class/net/{iface}/address");
    match netns {
        None => std::fs::read_to_string(path)
            .expect("mac")
            .trim()
            .to_owned(),
        Some(ns) => run("ip", &["netns", "exec", ns, "cat", &path])
            .trim()
            .to_owned(),
    }
}

/// The pods of one test, their helper processes and the pin directory; all
/// removed on drop.
struct Lab {
    pods: Vec<Pod>,
    children: Vec<Child>,
    results: Vec<mpsc::Receiver<String>>,
    pin_dir: PathBuf,
}

impl Lab {
    /// `n` pods (at most 9) named by `tag` (one lowercase letter).
    fn new(tag: &str, n: usize) -> Self {
        let pid = std::process::id();
        let subnet = pid % 200 + 20;
        let tag_index = u32::from(tag.as_bytes()[0] - b'a');
        let mut lab = Self {
            pods: Vec::new(),
            children: Vec::new(),
            results: Vec::new(),
            pin_dir: PathBuf::from(format!("{BPFFS}/membrane-test-{pid}-traffic-{tag}")),
        };
        for i in 0..n {
            let side = (b'a' + i as u8) as char;
            let pod = Pod {
                netns: format!("mbr-t{pid}-{tag}{side}"),
                host_iface: format!("mbt{}{tag}{side}", pid % 100_000),
                ip: Ipv4Addr::new(10, 251, subnet as u8, (tag_index * 10 + i as u32 + 1) as u8),
            };
            lab.pods.push(pod);
            lab.wire(lab.pods.len() - 1);
        }
        lab
    }

    fn wire(&self, i: usize) {
        let pod = &self.pods[i];
        try_run("ip", &["link", "del", &pod.host_iface]);
        try_run("ip", &["netns", "del", &pod.netns]);
        run("ip", &["netns", "add", &pod.netns]);
        run(
            "ip",
            &[
                "link",
                "add",
                &pod.host_iface,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pod.netns,
            ],
        );
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", pod.host_iface),
            "1",
        )
        .expect("disable ipv6");
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/forwarding", pod.host_iface),
            "1",
        )
        .expect("forwarding on the host veth");
        run("ip", &["link", "set", &pod.host_iface, "up"]);
        let ns = pod.netns.as_str();
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        in_ns(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        in_ns(&["ip", "link", "set", "lo", "up"]);
        in_ns(&[
            "ip",
            "addr",
            "add",
            &format!("{}/32", pod.ip),
            "dev",
            "eth0",
        ]);
        in_ns(&["ip", "link", "set", "eth0", "up"]);
        in_ns(&[
            "ip", "route", "add", GATEWAY, "dev", "eth0", "scope", "link",
        ]);
        in_ns(&[
            "ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0",
        ]);
        let host_mac = mac(&pod.host_iface, None);
        in_ns(&[
            "ip",
            "neigh",
            "replace",
            GATEWAY,
            "lladdr",
            &host_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        run(
            "ip",
            &[
                "route",
                "replace",
                &format!("{}/32", pod.ip),
                "dev",
                &pod.host_iface,
                "scope",
                "link",
            ],
        );
        let pod_mac = mac("eth0", Some(ns));
        run(
            "ip",
            &[
                "neigh",
                "replace",
                &pod.ip.to_string(),
                "lladdr",
                &pod_mac,
                "dev",
                &pod.host_iface,
                "nud",
                "permanent",
            ],
        );
    }

    /// Runs a helper role inside pod `i`'s namespace and waits for it.
    fn helper(&self, i: usize, role: &str) -> (bool, String) {
        let out = helper_command(&self.pods[i].netns, role)
            .output()
            .expect("run helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .collect::<Vec<_>>()
            .join("; ");
        (out.status.success(), result)
    }

    /// Starts a helper role inside pod `i`'s namespace and waits for its
    /// first RESULT line.
    fn spawn_helper(&mut self, i: usize, role: &str) -> (usize, String) {
        let mut child = helper_command(&self.pods[i].netns, role)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn helper");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(r) = line.strip_prefix("RESULT ") {
                    if tx.send(r.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        self.children.push(child);
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("helper {role} in pod {i} said nothing"));
        self.results.push(rx);
        (self.results.len() - 1, first)
    }

    /// The next RESULT line of spawned helper `helper`.
    fn next_result(&self, helper: usize, timeout: Duration) -> String {
        self.results[helper]
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("helper {helper} gave no result in {timeout:?}"))
    }

    fn ping(&self, from: usize, to: usize) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.pods[from].netns,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-q",
            ])
            .arg(self.pods[to].ip.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("ping")
            .success()
    }

    fn tcp(&self, from: usize, to: usize, port: u16) -> bool {
        let (ok, result) = self.helper(
            from,
            &format!("tcp-check {} 1000", self.pods[to].addr(port)),
        );
        assert!(ok || result.contains("failed"), "tcp-check: {result}");
        ok
    }

    fn udp(&self, from: usize, to: usize, port: u16) -> bool {
        self.helper(from, &format!("udp-check {} 500", self.pods[to].addr(port)))
            .0
    }

    fn pins(&self) -> membrane_datapath::bpffs::PinDir {
        membrane_datapath::bpffs::PinDir::new(&self.pin_dir, BPFFS).expect("pin dir")
    }

    fn map_pin(&self, name: &str) -> PathBuf {
        self.pins().map(name)
    }

    fn policy(&self) -> PolicyMap<aya::maps::MapData> {
        PolicyMap::from_pins(&self.pins()).expect("pinned policy")
    }

    fn allow(&self, ep_id: u16, dir: TrafficDirection, identity: u32, proto: u8, port: u16) {
        self.policy()
            .insert(
                &PolicyKey::exact(ep_id, dir, identity, proto, port),
                &PolicyEntry::allow(u32::from(port)),
            )
            .expect("allow");
    }

    fn ipcache(&self, pods: &[(usize, u32)]) {
        let mut ipcache = Ipcache::from_pin(&self.map_pin("mbr_ipcache")).expect("pinned ipcache");
        for &(i, identity) in pods {
            ipcache
                .insert(self.pods[i].ip, 32, &IpcacheEntry::new(identity))
                .expect("ipcache");
        }
    }

    fn metric(&self, reason: u8, dir: TrafficDirection) -> u64 {
        Metrics::from_pin(&self.map_pin("mbr_metrics"))
            .expect("pinned metrics")
            .get(reason, dir.raw())
            .expect("metrics")
            .map_or(0, |c| c.packets)
    }

    fn ct_entries(&self) -> Vec<(CtKey, CtEntry)> {
        let mut out = Vec::new();
        for name in ["mbr_ct_tcp", "mbr_ct_any"] {
            let data = aya::maps::MapData::from_pin(self.map_pin(name)).expect("pinned ct");
            let map = aya::maps::Map::from_map_data(data).expect("map");
            let ct: aya::maps::HashMap<_, CtKey, CtEntry> =
                aya::maps::HashMap::try_from(map).expect("ct");
            out.extend(ct.iter().map(|e| e.expect("entry")));
        }
        out
    }

    /// `--endpoint` arguments of the loader for pod `i`.
    fn endpoint_arg(&self, i: usize, ep_id: u16, identity: u32, flags: u16) -> String {
        format!(
            "{},{ep_id},{identity},{},{flags}",
            self.pods[i].host_iface, self.pods[i].ip
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = lxc::purge(&self.pin_dir, Path::new(BPFFS));
        for pod in &self.pods {
            try_run("ip", &["link", "del", &pod.host_iface]);
            try_run("ip", &["netns", "del", &pod.netns]);
        }
    }
}

fn helper_command(netns: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .arg(exe)
        .args([
            "--exact",
            "helper_process",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("MBR_TRAFFIC_HELPER", role)
        .stdin(Stdio::null());
    cmd
}

// ---- the loader process ---------------------------------------------------------

/// The `lxc_loader` example next to this test binary, built if missing.
fn loader_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join("lxc_loader");
    let test_built = std::fs::metadata(&exe).and_then(|m| m.modified()).ok();
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .zip(test_built)
        .is_some_and(|(loader, test)| loader >= test);
    if !fresh {
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
        cargo
            .args([
                "build",
                "-p",
                "membrane-datapath",
                "--example",
                "lxc_loader",
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo
            .status()
            .expect("run cargo to build the lxc_loader example");
        assert!(status.success(), "building the lxc_loader example failed");
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A running `lxc_loader`: what it printed, and the process (ours to kill).
struct Loader {
    child: Child,
    lines: Vec<String>,
}

impl Loader {
    fn start(lab: &Lab, args: &[String]) -> Self {
        let mut child = Command::new(loader_binary())
            .arg(&lab.pin_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lxc_loader");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = Vec::new();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line == "ready" => break,
                Ok(line) => lines.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("lxc_loader did not get ready: {lines:?} {err}");
                }
            }
        }
        Self { child, lines }
    }

    fn value(&self, key: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("loader printed no {key:?}: {:?}", self.lines))
    }

    fn programs(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.starts_with("program "))
            .cloned()
            .collect()
    }

    /// SIGKILL: no cleanup of any kind can run.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9 the loader");
        self.child.wait().expect("reap the loader");
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- tests ------------------------------------------------------------------------

const A_EP: u16 = 11;
const B_EP: u16 = 12;
const C_EP: u16 = 13;
const A_ID: u32 = 5101;
const B_ID: u32 = 5102;
const C_ID: u32 = 5103;
const BOTH: u16 = EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED;

#[test]
fn traffic_follows_the_maps() {
    if !require_kernel("traffic_follows_the_maps") {
        return;
    }
    let mut lab = Lab::new("p", 3);
    let loader = Loader::start(
        &lab,
        &[
            "--endpoint".to_owned(),
            lab.endpoint_arg(0, A_EP, A_ID, BOTH),
            "--endpoint".to_owned(),
            lab.endpoint_arg(1, B_EP, B_ID, BOTH),
            "--endpoint".to_owned(),
            lab.endpoint_arg(2, C_EP, C_ID, EP_F_INGRESS_ENFORCED),
        ],
    );
    assert_eq!(loader.value("outcome"), "loaded");
    for pod in &lab.pods {
        let names: Vec<String> = attach::query_tcx(&pod.host_iface)
            .expect("query tcx")
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            ["mbr_from_cont", "mbr_to_cont"],
            "{}",
            pod.host_iface
        );
    }

    // Servers in b and c.
    for (pod, port) in [(1, 8080), (1, 9090), (2, 8080)] {
        let addr = lab.pods[pod].addr(port);
        lab.spawn_helper(pod, &format!("echo-server tcp {addr}"));
    }
    for port in [5353, 5354] {
        let addr = lab.pods[1].addr(port);
        lab.spawn_helper(1, &format!("echo-server udp {addr}"));
    }

    // Nothing allowed yet: default deny from the first packet.
    assert!(!lab.tcp(0, 1, 8080), "no policy: denied");
    assert!(!lab.ping(0, 1));
    assert!(lab.metric(abi::DROP_POLICY_DENIED, EGRESS) >= 2);

    lab.ipcache(&[(0, A_ID), (1, B_ID), (2, C_ID)]);
    // a may send to b (TCP 8080, UDP 5353, ping) and to c (TCP 8080); b
    // accepts the same from a; c accepts nothing; b may send nothing.
    for (proto, port) in [(IPPROTO_TCP, 8080), (IPPROTO_UDP, 5353), (IPPROTO_ICMP, 8)] {
        lab.allow(A_EP, EGRESS, B_ID, proto, port);
        lab.allow(B_EP, INGRESS, A_ID, proto, port);
    }
    lab.allow(A_EP, EGRESS, C_ID, IPPROTO_TCP, 8080);

    assert!(lab.tcp(0, 1, 8080), "a -> b tcp/8080 is allowed both ways");
    assert!(!lab.tcp(0, 1, 9090), "a -> b tcp/9090 is not");
    assert!(lab.udp(0, 1, 5353), "a -> b udp/5353 is allowed");
    assert!(!lab.udp(0, 1, 5354), "a -> b udp/5354 is not");
    assert!(lab.ping(0, 1), "a pings b");
    assert!(
        !lab.ping(1, 0),
        "b may not ping a (no egress allow for b, no ingress allow for a)"
    );
    assert!(
        !lab.tcp(0, 2, 8080),
        "a may send to c, but c accepts nothing"
    );
    assert!(
        !lab.tcp(2, 0, 8080),
        "c's egress is open, a's ingress is not"
    );

    // Deny wins: deny all TCP from a at b's ingress.
    lab.policy()
        .insert(
            &PolicyKey::any_port(B_EP, INGRESS, 0, IPPROTO_TCP),
            &PolicyEntry::deny(666),
        )
        .expect("deny");
    let denied_before = lab.metric(abi::DROP_POLICY_DENY, INGRESS);
    assert!(!lab.tcp(0, 1, 8080), "an explicit deny beats the allow");
    assert!(lab.metric(abi::DROP_POLICY_DENY, INGRESS) > denied_before);
    assert!(lab.udp(0, 1, 5353), "UDP is not affected by the TCP deny");

    // Conntrack saw the allowed flows, with identities.
    let entries = lab.ct_entries();
    let a = ipv4_to_map(lab.pods[0].ip);
    let b = ipv4_to_map(lab.pods[1].ip);
    assert!(
        entries.iter().any(|(k, e)| k.saddr == a
            && k.daddr == b
            && k.proto == IPPROTO_UDP
            && k.direction == EGRESS.raw()
            && e.ep_id == A_EP
            && (e.src_identity, e.dst_identity) == (A_ID, B_ID)
            && e.rev_packets >= 1),
        "{entries:?}"
    );
    assert!(lab.metric(0, EGRESS) > 0 && lab.metric(0, INGRESS) > 0);

    // A runt IPv4 frame towards a (out of a's host veth, through mbr_to_cont).
    let runt = {
        let mut f = vec![0u8; 14 + 12];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f
    };
    let before = lab.metric(abi::DROP_INVALID_PACKET, INGRESS);
    send_frames_expecting(lab.pods[0].ifindex(), &runt, 3, Injected::MayBeDropped);
    assert_eq!(
        lab.metric(abi::DROP_INVALID_PACKET, INGRESS),
        before + 3,
        "runt frames dropped as invalid"
    );

    // The loader's exit leaves everything attached and pinned.
    drop(loader);
    assert_eq!(
        lxc::attachments(&lab.pin_dir, Path::new(BPFFS))
            .expect("list")
            .len(),
        6
    );
    assert!(
        !lab.tcp(0, 1, 8080) && lab.udp(0, 1, 5353),
        "policy still applies"
    );
}

#[test]
fn connections_survive_a_loader_kill_and_policy_removal_stops_only_new_ones() {
    if !require_kernel("connections_survive_a_loader_kill_and_policy_removal_stops_only_new_ones") {
        return;
    }
    let mut lab = Lab::new("r", 2);
    let args = [
        "--endpoint".to_owned(),
        lab.endpoint_arg(0, A_EP, A_ID, BOTH),
        "--endpoint".to_owned(),
        lab.endpoint_arg(1, B_EP, B_ID, BOTH),
    ];
    let first = Loader::start(&lab, &args);
    assert_eq!(first.value("outcome"), "loaded");
    let programs = first.programs();
    lab.ipcache(&[(0, A_ID), (1, B_ID)]);
    lab.allow(A_EP, EGRESS, B_ID, IPPROTO_TCP, 7000);
    lab.allow(B_EP, INGRESS, A_ID, IPPROTO_TCP, 7000);
    let server = lab.pods[1].addr(7000);
    lab.spawn_helper(1, &format!("echo-server tcp {server}"));
    assert!(lab.tcp(0, 1, 7000));

    // A long connection: a message every 10 ms for 6 s, each echoed.
    let (stream, connected) = lab.spawn_helper(0, &format!("tcp-stream {server} 10 6000"));
    let port: u16 = connected
        .strip_prefix("connected ")
        .expect("connected")
        .parse()
        .expect("port");
    let key = CtKey {
        saddr: ipv4_to_map(lab.pods[0].ip),
        daddr: ipv4_to_map(lab.pods[1].ip),
        sport: port.to_be(),
        dport: 7000u16.to_be(),
        proto: IPPROTO_TCP,
        direction: EGRESS.raw(),
        pad: 0,
    };
    std::thread::sleep(Duration::from_millis(800));
    let before = lab
        .ct_entries()
        .into_iter()
        .find(|(k, _)| *k == key)
        .expect("CT entry of the stream")
        .1;

    // kill -9 the loader: nothing is cleaned up, nothing needs to be.
    first.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let second = Loader::start(&lab, &args);
    assert_eq!(
        second.value("outcome"),
        "adopted",
        "a restart adopts the pins, never reloads"
    );
    assert_eq!(second.programs(), programs, "the same kernel programs");
    assert!(
        second
            .lines
            .iter()
            .all(|l| !l.starts_with("attached") || l.ends_with("kept")),
        "{:?}",
        second.lines
    );
    let after = lab
        .ct_entries()
        .into_iter()
        .find(|(k, _)| *k == key)
        .expect("CT entry kept")
        .1;
    assert_eq!(
        after.created, before.created,
        "the same entry, not a new one"
    );
    assert!(after.fwd_packets > before.fwd_packets);

    // Remove the allow: new connections stop, the established one carries on.
    std::thread::sleep(Duration::from_millis(500));
    lab.policy()
        .remove(&PolicyKey::exact(A_EP, EGRESS, B_ID, IPPROTO_TCP, 7000))
        .expect("remove allow");
    assert!(!lab.tcp(0, 1, 7000), "a new connection is denied");

    let result = lab.next_result(stream, Duration::from_secs(15));
    let field = |name: &str| -> u64 {
        let words: Vec<&str> = result.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("{result}"));
        words[i + 1].parse().expect("number")
    };
    assert_eq!(field("failed"), 0, "{result}");
    assert!(field("ok") > 300, "{result}");
    assert!(field("max_gap_ms") < 500, "{result}");
    let last = lab
        .ct_entries()
        .into_iter()
        .find(|(k, _)| *k == key)
        .expect("entry")
        .1;
    assert!(last.fwd_packets > after.fwd_packets && last.rev_packets > after.rev_packets);
}

#[test]
fn an_upgrade_moves_attachments_to_new_programs_without_a_gap() {
    if !require_kernel("an_upgrade_moves_attachments_to_new_programs_without_a_gap") {
        return;
    }
    let mut lab = Lab::new("u", 2);
    let args = [
        "--endpoint".to_owned(),
        lab.endpoint_arg(0, A_EP, A_ID, BOTH),
        "--endpoint".to_owned(),
        lab.endpoint_arg(1, B_EP, B_ID, BOTH),
    ];
    let first = Loader::start(&lab, &args);
    let build = first.value("build");
    lab.ipcache(&[(0, A_ID), (1, B_ID)]);
    lab.allow(A_EP, EGRESS, B_ID, IPPROTO_TCP, 7100);
    lab.allow(B_EP, INGRESS, A_ID, IPPROTO_TCP, 7100);
    let server = lab.pods[1].addr(7100);
    lab.spawn_helper(1, &format!("echo-server tcp {server}"));
    let (stream, _) = lab.spawn_helper(0, &format!("tcp-stream {server} 10 3000"));
    std::thread::sleep(Duration::from_millis(500));
    first.kill9();

    // Pretend the pinned programs come from another build.
    let progs = lab.pins().progs_dir();
    std::fs::rename(
        progs.join(format!("{}{build}", lxc::BUILD_MARKER_PREFIX)),
        progs.join(format!("{}0000000000000000", lxc::BUILD_MARKER_PREFIX)),
    )
    .expect("rename the build marker");
    // ... one that had no endpoint cache (added since): the upgrade creates
    // and pins it, and the new programs fill it from mbr_ep_ifindex.
    let cache_pin = lab.pins().map("mbr_ep_cache");
    std::fs::remove_file(&cache_pin).expect("unpin mbr_ep_cache");
    // ... and kept exact-port policy entries in the trie, having no
    // mbr_policy_exact: the upgrade creates the hash empty, and the new
    // programs fall through to the trie's full-length keys.
    let policy = lab.policy();
    let exact: Vec<_> = policy.exact().dump().expect("dump");
    assert_eq!(exact.len(), 2, "the lab's two allows");
    let (keys, values): (Vec<_>, Vec<_>) = exact.into_iter().unzip();
    policy
        .trie()
        .update(&keys, &values)
        .expect("old-style write");
    drop(policy);
    let exact_pin = lab.pins().map("mbr_policy_exact");
    std::fs::remove_file(&exact_pin).expect("unpin mbr_policy_exact");
    let old_ids: Vec<u32> = attach::query_tcx(&lab.pods[0].host_iface)
        .expect("query")
        .into_iter()
        .map(|p| p.id)
        .collect();
    let links_before: Vec<_> = lxc::attachments(&lab.pin_dir, Path::new(BPFFS)).expect("list");

    let second = Loader::start(&lab, &args);
    assert_eq!(second.value("outcome"), "upgraded");
    let new_ids: Vec<u32> = attach::query_tcx(&lab.pods[0].host_iface)
        .expect("query")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(new_ids.len(), 2);
    assert!(
        new_ids.iter().all(|id| !old_ids.contains(id)),
        "old {old_ids:?}, new {new_ids:?}"
    );
    let expected: Vec<u32> = second
        .programs()
        .iter()
        .map(|l| l.rsplit(' ').next().expect("id").parse().expect("id"))
        .collect();
    assert_eq!(new_ids, expected, "the hooks run the new programs");
    assert_eq!(
        lxc::attachments(&lab.pin_dir, Path::new(BPFFS)).expect("list"),
        links_before
    );
    assert!(lab
        .pins()
        .program(&format!("{}{build}", lxc::BUILD_MARKER_PREFIX))
        .exists());
    assert!(!lab
        .pins()
        .program(&format!("{}0000000000000000", lxc::BUILD_MARKER_PREFIX))
        .exists());

    let result = lab.next_result(stream, Duration::from_secs(10));
    assert!(result.contains("failed 0"), "{result}");
    assert!(cache_pin.exists(), "the upgrade pinned the new map");
    assert!(exact_pin.exists(), "the upgrade pinned the new map");
    assert!(lab.policy().exact().dump().expect("dump").is_empty());
    assert!(
        lab.tcp(0, 1, 7100),
        "a new connection is allowed by the old build's entries in the trie"
    );
    // A third start adopts the upgraded programs.
    drop(second);
    assert_eq!(Loader::start(&lab, &args).value("outcome"), "adopted");
}

#[test]
fn a_full_conntrack_table_evicts_without_hurting_traffic() {
    if !require_kernel("a_full_conntrack_table_evicts_without_hurting_traffic") {
        return;
    }
    let mut lab = Lab::new("f", 2);
    let _loader = Loader::start(
        &lab,
        &[
            "--ct-tcp".to_owned(),
            "16".to_owned(),
            "--endpoint".to_owned(),
            lab.endpoint_arg(0, A_EP, A_ID, EP_F_EGRESS_ENFORCED),
            "--endpoint".to_owned(),
            lab.endpoint_arg(1, B_EP, B_ID, EP_F_INGRESS_ENFORCED),
        ],
    );
    lab.ipcache(&[(0, A_ID), (1, B_ID)]);
    lab.allow(A_EP, EGRESS, B_ID, IPPROTO_TCP, 7200);
    lab.allow(B_EP, INGRESS, A_ID, IPPROTO_TCP, 7200);
    let server = lab.pods[1].addr(7200);
    lab.spawn_helper(1, &format!("echo-server tcp {server}"));
    let mut ok = 0;
    for _ in 0..40 {
        if lab.tcp(0, 1, 7200) {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 40,
        "every connection works while old entries are evicted"
    );
    let tcp_entries = lab
        .ct_entries()
        .into_iter()
        .filter(|(k, _)| k.proto == IPPROTO_TCP)
        .count();
    assert!(
        tcp_entries <= 16,
        "{tcp_entries} entries in a 16-entry table"
    );
    assert_eq!(lab.metric(abi::DROP_CT_MAP_INSERT_FAILED, EGRESS), 0);
    assert_eq!(lab.metric(abi::DROP_CT_MAP_INSERT_FAILED, INGRESS), 0);
    assert_eq!(lab.metric(abi::DROP_POLICY_DENIED, INGRESS), 0);
}

#[test]
fn attach_refuses_an_interface_without_its_endpoint_entry() {
    if !require_kernel("attach_refuses_an_interface_without_its_endpoint_entry") {
        return;
    }
    let lab = Lab::new("e", 1);
    let mut dp = lxc::Lxc::open(&lxc::LxcOptions::new(&lab.pin_dir)).expect("open");
    let err = dp
        .attach(&lab.pods[0].host_iface)
        .expect_err("no endpoint entry");
    assert_eq!(err.code(), "EINVAL", "{err}");
    assert!(
        err.to_string().contains("write the endpoint first"),
        "{err}"
    );
    assert!(attach::query_tcx(&lab.pods[0].host_iface)
        .expect("query")
        .is_empty());

    // With the entry (written first by attach_endpoint), the very first
    // packet is already policed: a ping with no policy is dropped.
    let ep = membrane_datapath::maps::endpoint::EndpointInfo::new(
        lab.pods[0].ifindex(),
        A_ID,
        lab.pods[0].ip,
        A_EP,
        BOTH,
    );
    let attached = dp
        .attach_endpoint(&lab.pods[0].host_iface, &ep)
        .expect("attach");
    assert!(attached.iter().all(|a| a.created));
    let listed = dp.attached().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].endpoint, Some(ep));
    assert_eq!(listed[0].attachments.len(), 2);
    let dropped = lab.metric(abi::DROP_POLICY_DENIED, EGRESS);
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.pods[0].netns,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "10.251.255.254",
        ])
        .stdout(Stdio::null())
        .status();
    assert!(lab.metric(abi::DROP_POLICY_DENIED, EGRESS) > dropped);

    // Detach: links first, entries after.
    let report = dp.detach_endpoint(lab.pods[0].ifindex()).expect("detach");
    assert_eq!(report.detached.len(), 2);
    assert!(report.endpoint_removed);
    assert!(attach::query_tcx(&lab.pods[0].host_iface)
        .expect("query")
        .is_empty());
    assert!(dp.attached().expect("list").is_empty());
    assert!(dp
        .endpoints_by_ifindex()
        .expect("map")
        .get(lab.pods[0].ifindex())
        .expect("get")
        .is_none());
}
