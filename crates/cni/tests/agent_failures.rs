//! The plugin binary against a scripted agent on a unix socket, in real network
//! namespaces: every way the agent can fail an ADD after the address was handed
//! out must leave nothing behind (no veth, the address given back, an endpoint
//! the agent may have half-registered deleted), with the documented error code.
//! Needs root (netns, veth); fails, not skips, without it.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// An answer of the scripted agent: status and JSON body.
type Answer = (u16, Value);

/// A fake agent: answers each "METHOD /path" with the script's answer and records the calls.
struct FakeAgent {
    socket: PathBuf,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeAgent {
    fn start(tag: &str, script: fn(&str, &str) -> Answer) -> FakeAgent {
        let socket = std::env::temp_dir().join(format!(
            "mbr-cni-fake-agent-{}-{tag}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).expect("bind the fake agent socket");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let mut parts = request_line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or_default().to_string(),
                    parts.next().unwrap_or_default().to_string(),
                );
                seen.lock().unwrap().push(format!("{method} {path}"));
                let (status, answer) = script(&method, &path);
                let text = answer.to_string();
                let _ = write!(stream, "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}", text.len());
            }
        });
        FakeAgent { socket, calls }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A network namespace of this test, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "these tests create network namespaces and veth pairs: run them as root"
        );
        let name = format!("mbr-cni-rs-{}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip")
            .success();
        assert!(ok, "ip netns add {name} failed");
        Netns { name }
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    fn links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ip", "-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap().to_string())
            })
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Host links whose alias names this test's network.
fn host_links(network: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-d", "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("alias membrane-cni:{network}:")))
        .map(|l| {
            l.split(": ")
                .nth(1)
                .unwrap()
                .split('@')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Runs the plugin as a runtime would; returns (exit ok, stdout JSON).
fn plugin(
    command: &str,
    container: &str,
    netns: Option<&str>,
    network: &str,
    socket: &PathBuf,
) -> (bool, Value) {
    let conf = json!({ "cniVersion": "1.1.0", "name": network, "type": "membrane-cni", "agentSocket": socket });
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_membrane-cni"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        cmd.env("CNI_NETNS", ns);
    }
    let mut child = cmd.spawn().expect("run membrane-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), json)
}

fn allocation(ipv4: &str, prefix: u8) -> Answer {
    (
        200,
        json!({ "containerId": "c", "ifname": "eth0", "ipv4": ipv4, "prefixLength": prefix, "gateway": "169.254.1.1", "podCIDR": "10.254.0.0/24" }),
    )
}

fn released() -> Answer {
    (200, json!({ "released": true }))
}

#[test]
fn endpoint_rejected_after_wiring_undoes_everything() {
    let agent = FakeAgent::start("reject", |method, path| match (method, path) {
        ("POST", "/v1/ipam/allocations") => allocation("10.254.0.9", 32),
        ("POST", "/v1/endpoints") => (
            400,
            json!({ "error": { "code": "invalid_endpoint", "message": "hostIface unknown" } }),
        ),
        ("DELETE", _) => released(),
        _ => (
            404,
            json!({ "error": { "code": "not_found", "message": "no route" } }),
        ),
    });
    let ns = Netns::new("reject");
    let network = format!("rs-reject-{}", std::process::id());
    let (ok, out) = plugin("ADD", "c-reject", Some(&ns.path()), &network, &agent.socket);
    assert!(!ok);
    assert_eq!(out["code"], 100, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("invalid_endpoint"),
        "{out}"
    );
    assert_eq!(
        agent.calls(),
        vec![
            "POST /v1/ipam/allocations",
            "POST /v1/endpoints",
            "DELETE /v1/endpoints/c-reject/eth0",
            "DELETE /v1/ipam/allocations/c-reject/eth0"
        ]
    );
    assert_eq!(
        host_links(&network),
        Vec::<String>::new(),
        "no host veth left"
    );
    assert_eq!(ns.links(), vec!["lo"], "no pod interface left");
}

#[test]
fn a_malformed_allocation_is_given_back() {
    let agent = FakeAgent::start("badalloc", |method, _| match method {
        "POST" => allocation("10.254.0.300", 32),
        _ => released(),
    });
    let ns = Netns::new("badalloc");
    let network = format!("rs-badalloc-{}", std::process::id());
    let (ok, out) = plugin(
        "ADD",
        "c-badalloc",
        Some(&ns.path()),
        &network,
        &agent.socket,
    );
    assert!(!ok);
    assert_eq!(out["code"], 101, "{out}");
    assert_eq!(
        agent.calls(),
        vec![
            "POST /v1/ipam/allocations",
            "DELETE /v1/ipam/allocations/c-badalloc/eth0"
        ]
    );
    assert_eq!(host_links(&network), Vec::<String>::new());
}

#[test]
fn a_wider_prefix_than_32_is_refused_and_given_back() {
    let agent = FakeAgent::start("prefix", |method, _| match method {
        "POST" => allocation("10.254.0.9", 24),
        _ => released(),
    });
    let ns = Netns::new("prefix");
    let (ok, out) = plugin(
        "ADD",
        "c-prefix",
        Some(&ns.path()),
        "rs-prefix",
        &agent.socket,
    );
    assert!(!ok);
    assert_eq!(out["code"], 101, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("/24"), "{out}");
    assert_eq!(
        agent.calls().last().map(String::as_str),
        Some("DELETE /v1/ipam/allocations/c-prefix/eth0")
    );
}

#[test]
fn an_agent_that_is_not_ready_means_try_again_later() {
    let agent = FakeAgent::start("notready", |_, _| {
        (
            503,
            json!({ "error": { "code": "not_ready", "message": "the agent is starting" } }),
        )
    });
    let ns = Netns::new("notready");
    let (ok, out) = plugin(
        "ADD",
        "c-notready",
        Some(&ns.path()),
        "rs-notready",
        &agent.socket,
    );
    assert!(!ok);
    assert_eq!(out["code"], 11, "{out}");
    assert_eq!(
        agent.calls(),
        vec!["POST /v1/ipam/allocations"],
        "nothing to give back: nothing was handed out"
    );
}

#[test]
fn del_removes_the_link_even_when_the_agent_fails_and_reports_the_failure() {
    let agent = FakeAgent::start("delfail", |method, path| match (method, path) {
        ("POST", "/v1/ipam/allocations") => allocation("10.254.0.11", 32),
        ("POST", "/v1/endpoints") => (200, json!({ "ipv4": "10.254.0.11" })),
        _ => (
            500,
            json!({ "error": { "code": "internal", "message": "disk full" } }),
        ),
    });
    let ns = Netns::new("delfail");
    let network = format!("rs-delfail-{}", std::process::id());
    let (ok, out) = plugin(
        "ADD",
        "c-delfail",
        Some(&ns.path()),
        &network,
        &agent.socket,
    );
    assert!(ok, "{out}");
    assert_eq!(host_links(&network).len(), 1);
    let (ok, out) = plugin("DEL", "c-delfail", None, &network, &agent.socket);
    assert!(
        !ok,
        "the runtime must retry: the agent still holds the endpoint"
    );
    assert_eq!(out["code"], 100, "{out}");
    assert_eq!(
        host_links(&network),
        Vec::<String>::new(),
        "the link went anyway"
    );
}

#[test]
fn a_link_of_another_attachment_under_the_same_name_is_never_removed() {
    let agent = FakeAgent::start("foreign", |method, path| match (method, path) {
        ("POST", "/v1/ipam/allocations") => allocation("10.254.0.12", 32),
        ("POST", "/v1/endpoints") => (200, json!({ "ipv4": "10.254.0.12" })),
        _ => released(),
    });
    let ns = Netns::new("foreign");
    let network = format!("rs-foreign-{}", std::process::id());
    let (ok, out) = plugin(
        "ADD",
        "c-foreign",
        Some(&ns.path()),
        &network,
        &agent.socket,
    );
    assert!(ok, "{out}");
    let host = out["interfaces"][0]["name"].as_str().unwrap().to_string();
    // As if a hash collision gave another attachment's link this name.
    let set_alias = |alias: &str| {
        assert!(Command::new("ip")
            .args(["link", "set", &host, "alias", alias])
            .status()
            .unwrap()
            .success())
    };
    set_alias(&format!("membrane-cni:{network}:c-other/eth0"));
    let exists = || {
        Command::new("ip")
            .args(["link", "show", &host])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };

    let (ok, out) = plugin("DEL", "c-foreign", None, &network, &agent.socket);
    assert!(ok, "{out}");
    assert!(exists(), "DEL left the other attachment's link alone");
    let (ok, out) = plugin(
        "ADD",
        "c-foreign",
        Some(&ns.path()),
        &network,
        &agent.socket,
    );
    assert!(!ok);
    assert_eq!(out["code"], 102, "{out}");
    assert!(
        exists(),
        "the failed ADD's cleanup left the other attachment's link alone"
    );

    set_alias(&format!("membrane-cni:{network}:c-foreign/eth0"));
    let (ok, out) = plugin("DEL", "c-foreign", None, &network, &agent.socket);
    assert!(ok, "{out}");
    assert!(!exists());
}
