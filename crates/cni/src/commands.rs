//! ADD, DEL, CHECK, STATUS and GC: the agent calls and the kernel work in the
//! order the spec and the agent contract need, with cleanup on every failure.

use crate::agent::{Agent, AgentError, AllocateRequest, EndpointCreateRequest, GcAttachment};
use crate::config::{self, PluginConfig};
use crate::naming;
use crate::netns::{NetNs, NetNsError};
use crate::request::Request;
use crate::result::{self, Attachment};
use crate::spec::{CniError, ErrorCode};
use crate::wiring::{self, Plan};
use std::io::Write;
use std::net::Ipv4Addr;

/// One invocation's context: the request, its plugin fields and a logger.
pub struct Ctx<'a> {
    pub req: &'a Request,
    pub conf: PluginConfig,
    pub version: String,
    pub network: String,
}

impl Ctx<'_> {
    /// A line on stderr (runtimes keep it in their logs) and in logFile when configured.
    pub fn log(&self, line: &str) {
        let cid = self.req.container_id.as_deref().unwrap_or("-");
        let ifname = self.req.ifname.as_deref().unwrap_or("-");
        let text = format!(
            "membrane-cni {:?} network={} container={cid} ifname={ifname}: {line}",
            self.req.command, self.network
        );
        eprintln!("{text}");
        if let Some(path) = &self.conf.log_file {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{secs:.3} {text}");
            }
        }
    }

    fn err(&self, code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError::new(code, msg, details).with_version(&self.version)
    }

    fn agent_err(&self, what: &str, e: AgentError) -> CniError {
        let code = match &e {
            AgentError::Unreachable { .. } => ErrorCode::TryAgainLater,
            // 503: the agent is starting or out of addresses for now.
            AgentError::Rejected { status: 503, .. } => ErrorCode::TryAgainLater,
            AgentError::Rejected { .. } => ErrorCode::AgentRejected,
            AgentError::BadResponse(_) => ErrorCode::AgentBadResponse,
        };
        self.err(code, format!("{what}: {e}"), "")
    }

    fn kernel_err(&self, what: &str, e: std::io::Error) -> CniError {
        self.err(
            ErrorCode::KernelRefused,
            format!("{what}: {e}"),
            "the kernel refused a network change; nothing of this attachment was kept",
        )
    }

    fn container_id(&self) -> &str {
        self.req.container_id.as_deref().unwrap_or_default()
    }

    fn ifname(&self) -> &str {
        self.req.ifname.as_deref().unwrap_or_default()
    }

    fn agent(&self) -> Agent {
        Agent::new(&self.conf.agent_socket)
    }

    fn open_netns(&self, path: &str) -> Result<NetNs, CniError> {
        NetNs::open(path).map_err(|e| match e {
            NetNsError::Missing(cause) => self.err(
                ErrorCode::ContainerUnknown,
                format!("the network namespace {path} does not exist"),
                cause.to_string(),
            ),
            NetNsError::Unusable(why) => self.err(
                ErrorCode::InvalidEnvironment,
                format!("CNI_NETNS {path} cannot be used"),
                why,
            ),
        })
    }

    fn prev_result(&self) -> Option<&serde_json::Value> {
        self.req
            .netconf
            .as_ref()
            .and_then(|n| n.raw.get("prevResult"))
            .filter(|v| !v.is_null())
    }
}

fn parse_ipv4(ctx: &Ctx, field: &str, raw: &str) -> Result<Ipv4Addr, CniError> {
    raw.parse().map_err(|_| {
        ctx.err(
            ErrorCode::AgentBadResponse,
            format!("the agent's {field} {raw:?} is not an IPv4 address"),
            "",
        )
    })
}

pub fn add(ctx: &Ctx) -> Result<serde_json::Value, CniError> {
    if ctx.prev_result().is_some() {
        return Err(ctx.err(
            ErrorCode::InvalidNetworkConfig,
            "membrane-cni must be the first plugin of its network configuration list",
            "ADD got a prevResult from an earlier plugin; list membrane-cni first in \"plugins\"",
        ));
    }
    let pod = config::parse_cni_args(&ctx.req.args)
        .and_then(|args| config::pod_ref(&args))
        .map_err(|e| e.with_version(&ctx.version))?;
    let netns_path = ctx.req.netns.clone().unwrap_or_default();
    let netns = ctx.open_netns(&netns_path)?;
    let (cid, ifname) = (ctx.container_id(), ctx.ifname());
    let host_iface = naming::host_iface_name(cid, ifname);
    let agent = ctx.agent();

    let started = std::time::Instant::now();
    let allocation = agent
        .allocate(&AllocateRequest {
            container_id: cid,
            ifname,
            pod: &pod,
        })
        .map_err(|e| ctx.agent_err("cannot allocate an address", e))?;
    let undo_allocation = |ctx: &Ctx| {
        if let Err(e) = agent.release(cid, ifname) {
            ctx.log(&format!(
                "could not release the address after a failed ADD: {e}"
            ));
        }
    };
    let (ipv4, gateway) = match (
        parse_ipv4(ctx, "ipv4", &allocation.ipv4),
        parse_ipv4(ctx, "gateway", &allocation.gateway),
    ) {
        (Ok(ip), Ok(gw)) if allocation.prefix_length == 32 => (ip, gw),
        (Err(e), _) | (_, Err(e)) => {
            undo_allocation(ctx);
            return Err(e);
        }
        _ => {
            undo_allocation(ctx);
            return Err(ctx.err(
                ErrorCode::AgentBadResponse,
                format!(
                    "the agent allocated a /{} but pods get a /32",
                    allocation.prefix_length
                ),
                "",
            ));
        }
    };

    // A link under our deterministic name and alias is a leftover of an earlier ADD of
    // this same attachment (the runtime retries); start clean. A foreign one stays, and
    // creating the veth then fails with "exists".
    match wiring::unwire_attachment(&host_iface, cid, ifname) {
        Ok(wiring::Unwired::Removed) => {
            ctx.log(&format!("removed leftover {host_iface} of an earlier ADD"))
        }
        Ok(wiring::Unwired::Foreign(alias)) => ctx.log(&format!(
            "{host_iface} exists for another attachment ({alias}); leaving it alone"
        )),
        Ok(wiring::Unwired::Absent) | Err(_) => {}
    }
    let plan = Plan {
        host_iface: host_iface.clone(),
        host_alias: naming::host_alias(&ctx.network, cid, ifname),
        ifname: ifname.to_string(),
        ipv4,
        gateway,
        mtu: ctx.conf.mtu,
    };
    let undo_wiring = |ctx: &Ctx| {
        if let Err(e) = wiring::unwire_attachment(&host_iface, cid, ifname) {
            ctx.log(&format!(
                "could not remove {host_iface} after a failed ADD: {e}"
            ));
        }
    };
    let allocated_at = started.elapsed();
    let wired = match wiring::wire(&plan, &netns) {
        Ok(w) => w,
        Err(e) => {
            undo_wiring(ctx);
            undo_allocation(ctx);
            return Err(ctx.kernel_err(&format!("cannot wire {ifname} in {netns_path}"), e));
        }
    };
    let (mac, node_mac) = (
        wiring::format_mac(&wired.pod_mac),
        wiring::format_mac(&wired.host_mac),
    );
    let ip_text = ipv4.to_string();
    let endpoint = EndpointCreateRequest {
        container_id: cid,
        netns: &netns_path,
        ifname,
        host_iface: &host_iface,
        ifindex: wired.host_index,
        ipv4: &ip_text,
        mac: &mac,
        node_mac: &node_mac,
        pod: &pod,
    };
    let wired_at = started.elapsed();
    if let Err(e) = agent.create_endpoint(&endpoint) {
        undo_wiring(ctx);
        // The agent may have registered the endpoint before failing; DELETE is idempotent and releases the address.
        if let Err(del) = agent.delete_endpoint(cid, ifname) {
            ctx.log(&format!(
                "could not delete the endpoint after a failed ADD: {del}"
            ));
        }
        undo_allocation(ctx);
        return Err(ctx.agent_err("the agent did not register the endpoint", e));
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let total = started.elapsed();
    ctx.log(&format!(
        "added {ipv4}/32 on {host_iface} <-> {ifname} in {:.1} ms (address {:.1} ms, wiring {:.1} ms, endpoint {:.1} ms)",
        ms(total),
        ms(allocated_at),
        ms(wired_at - allocated_at),
        ms(total - wired_at)
    ));
    let attachment = Attachment {
        host_iface,
        host_mac: node_mac,
        ifname: ifname.to_string(),
        pod_mac: mac,
        netns: netns_path,
        ipv4,
        gateway,
        mtu: ctx.conf.mtu,
    };
    Ok(result::add_result(
        &ctx.version,
        &attachment,
        ctx.conf.dns.as_ref(),
    ))
}

pub fn del(ctx: &Ctx) -> Result<(), CniError> {
    let (cid, ifname) = (ctx.container_id(), ctx.ifname());
    let host_iface = naming::host_iface_name(cid, ifname);
    let started = std::time::Instant::now();
    let agent_result = ctx.agent().delete_endpoint(cid, ifname);
    let agent_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The link goes in any case: a pod being torn down must not keep its wiring.
    let link_result = wiring::unwire_attachment(&host_iface, cid, ifname);
    let link_ms = started.elapsed().as_secs_f64() * 1000.0 - agent_ms;
    let agent_note = match agent_result {
        Ok(v) => format!("agent {v} in {agent_ms:.1} ms"),
        // DEL must succeed when the agent is gone: its state goes with it, and the
        // next GC reclaims anything it still holds after a restart.
        Err(AgentError::Unreachable { socket, cause }) => {
            format!("the agent is not reachable on {socket} ({cause}), so only the link is removed")
        }
        Err(e) => return Err(ctx.agent_err("the agent could not delete the endpoint", e)),
    };
    match link_result {
        Ok(outcome) => {
            let link_note = match outcome {
                wiring::Unwired::Removed => "removed".to_string(),
                wiring::Unwired::Absent => "was already gone".to_string(),
                wiring::Unwired::Foreign(alias) => {
                    format!("belongs to another attachment ({alias}) and was left alone")
                }
            };
            ctx.log(&format!(
                "{agent_note}; {host_iface} {link_note} ({link_ms:.1} ms)"
            ));
            Ok(())
        }
        Err(e) => Err(ctx.kernel_err(&format!("cannot remove {host_iface}"), e)),
    }
}

pub fn check(ctx: &Ctx) -> Result<(), CniError> {
    let (cid, ifname) = (ctx.container_id(), ctx.ifname());
    let netns_path = ctx.req.netns.clone().unwrap_or_default();
    let prev = ctx.prev_result().ok_or_else(|| {
        ctx.err(
            ErrorCode::InvalidNetworkConfig,
            "CHECK needs prevResult",
            "the runtime passes the cached ADD result as prevResult",
        )
    })?;
    let expected = result::expected_from_prev_result(prev, ifname, &netns_path)
        .map_err(|e| e.with_version(&ctx.version))?;
    let netns = ctx.open_netns(&netns_path)?;
    let endpoint = ctx
        .agent()
        .endpoint(cid, ifname)
        .map_err(|e| ctx.agent_err("cannot read the endpoint from the agent", e))?
        .ok_or_else(|| {
            ctx.err(
                ErrorCode::CheckFailed,
                format!("the agent has no endpoint for {cid}/{ifname}"),
                "the pod's network was set up but the agent forgot it; delete and re-add the pod",
            )
        })?;
    if endpoint.ipv4.as_deref() != Some(expected.ipv4.to_string().as_str()) {
        return Err(ctx.err(
            ErrorCode::CheckFailed,
            format!(
                "the agent's endpoint has address {:?}, ADD gave {}",
                endpoint.ipv4, expected.ipv4
            ),
            "",
        ));
    }
    let host_iface = naming::host_iface_name(cid, ifname);
    let observed = wiring::observe(&host_iface, ifname, &netns)
        .map_err(|e| ctx.kernel_err("cannot read the pod's network", e))?;
    let gateway = expected.gateway.unwrap_or(Ipv4Addr::new(169, 254, 1, 1));
    let diffs = wiring::differences(
        &observed,
        &host_iface,
        ifname,
        expected.ipv4,
        gateway,
        expected.mtu.or(Some(ctx.conf.mtu)),
    );
    if !diffs.is_empty() {
        return Err(ctx.err(
            ErrorCode::CheckFailed,
            format!("the network of {ifname} differs from what ADD set up"),
            diffs.join("; "),
        ));
    }
    Ok(())
}

pub fn status(ctx: &Ctx) -> Result<(), CniError> {
    match ctx.agent().healthz() {
        Ok(h) if h.ok => Ok(()),
        Ok(h) => Err(ctx.err(
            ErrorCode::PluginNotAvailable,
            "the Membrane agent is not ready to serve pods",
            h.detail.unwrap_or_default(),
        )),
        Err(e) => Err(ctx.err(
            ErrorCode::PluginNotAvailable,
            "the Membrane agent is not available",
            e.to_string(),
        )),
    }
}

pub fn gc(ctx: &Ctx) -> Result<(), CniError> {
    let raw = &ctx
        .req
        .netconf
        .as_ref()
        .expect("GC has a network configuration")
        .raw;
    let valid = config::valid_attachments(raw).map_err(|e| e.with_version(&ctx.version))?;
    let attachments: Vec<GcAttachment> = valid
        .iter()
        .map(|(c, i)| GcAttachment {
            container_id: c,
            ifname: i,
        })
        .collect();
    let agent_summary = ctx
        .agent()
        .gc(&attachments)
        .map_err(|e| ctx.agent_err("the agent could not collect garbage", e))?;
    let keep: Vec<String> = valid
        .iter()
        .map(|(c, i)| naming::host_iface_name(c, i))
        .collect();
    let links = wiring::host_links().map_err(|e| ctx.kernel_err("cannot list links", e))?;
    let mut failures = Vec::new();
    let mut removed = 0;
    for link in wiring::stale_host_links(&links, &naming::alias_prefix(&ctx.network), &keep) {
        match wiring::unwire(&link.name) {
            Ok(_) => removed += 1,
            Err(e) => failures.push(e.to_string()),
        }
    }
    ctx.log(&format!(
        "gc: agent {agent_summary}, removed {removed} stale link(s)"
    ));
    if !failures.is_empty() {
        return Err(ctx.kernel_err(
            "cannot remove stale links",
            std::io::Error::other(failures.join("; ")),
        ));
    }
    Ok(())
}
