//! The agent's API as the plugin uses it: HTTP/1.1 + JSON over the agent's unix
//! socket (see ts/api/types.ts for the contract). One request per connection.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long one request to the agent may take (ADD includes attaching the datapath).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocateRequest<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub pod: &'a PodRef,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub ipv4: String,
    pub prefix_length: u8,
    pub gateway: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCreateRequest<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub host_iface: &'a str,
    pub ifindex: i32,
    pub ipv4: &'a str,
    pub mac: &'a str,
    pub node_mac: &'a str,
    pub pod: &'a PodRef,
}

/// The fields of an EndpointView the plugin checks.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    #[serde(default)]
    pub ipv4: Option<String>,
    #[serde(default)]
    pub host_iface: Option<String>,
    #[serde(default)]
    pub ifindex: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Healthz {
    pub ok: bool,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GcAttachment<'a> {
    #[serde(rename = "containerId")]
    pub container_id: &'a str,
    pub ifname: &'a str,
}

/// What can go wrong talking to the agent.
#[derive(Debug)]
pub enum AgentError {
    /// Nothing answers on the socket (not running, not yet started, wrong path).
    Unreachable { socket: String, cause: io::Error },
    /// The agent answered with an error status and body.
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer is not HTTP/JSON as the contract says.
    BadResponse(String),
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentError::Unreachable { socket, cause } => write!(f, "the Membrane agent is not reachable on {socket}: {cause} (is the agent running on this node?)"),
            AgentError::Rejected { status, code, message } => write!(f, "the Membrane agent refused the request ({status} {code}): {message}"),
            AgentError::BadResponse(why) => write!(f, "the Membrane agent's answer is not understood: {why}"),
        }
    }
}

pub struct Agent {
    socket: String,
}

/// A parsed HTTP response: status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Parses an HTTP/1.1 response read to EOF (Content-Length or chunked or close-delimited).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(len) = content_length {
        if rest.len() < len {
            return Err(format!(
                "body is {} bytes, content-length says {len}",
                rest.len()
            ));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|_| "chunk size is not text")?;
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk shorter than its size".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The error object of the agent ({ error: { code, message } }), or a description of the body.
pub fn rejection(status: u16, body: &[u8]) -> AgentError {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")?.as_str()?.to_string(),
            ))
        });
    match parsed {
        Some((code, message)) => AgentError::Rejected {
            status,
            code,
            message,
        },
        None => AgentError::Rejected {
            status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
        },
    }
}

/// Percent-encodes a path segment (container ids and interface names are already
/// restricted to safe characters; this keeps the URL valid whatever they hold).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Agent {
    pub fn new(socket: &str) -> Agent {
        Agent {
            socket: socket.to_string(),
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, AgentError> {
        let unreachable = |cause: io::Error| AgentError::Unreachable {
            socket: self.socket.clone(),
            cause,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(AGENT_TIMEOUT))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(AGENT_TIMEOUT))
            .map_err(unreachable)?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: membrane-agent\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: membrane-cni\r\n");
        match body {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )),
            None => req.push_str("\r\n"),
        }
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        let io_err =
            |what: &str, e: io::Error| AgentError::BadResponse(format!("{what} {path}: {e}"));
        stream
            .write_all(&bytes)
            .map_err(|e| io_err("cannot send", e))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES as u64)
            .read_to_end(&mut raw)
            .map_err(|e| io_err("no complete answer to", e))?;
        parse_response(&raw)
            .map_err(|why| AgentError::BadResponse(format!("{method} {path}: {why}")))
    }

    fn json<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, AgentError> {
        let res = self.request(method, path, body)?;
        if !(200..300).contains(&res.status) {
            return Err(rejection(res.status, &res.body));
        }
        serde_json::from_slice(&res.body)
            .map_err(|e| AgentError::BadResponse(format!("{method} {path}: {e}")))
    }

    pub fn allocate(&self, req: &AllocateRequest) -> Result<Allocation, AgentError> {
        self.json(
            "POST",
            "/v1/ipam/allocations",
            Some(&serde_json::to_vec(req).unwrap_or_default()),
        )
    }

    pub fn release(&self, container_id: &str, ifname: &str) -> Result<(), AgentError> {
        self.json::<Value>(
            "DELETE",
            &format!(
                "/v1/ipam/allocations/{}/{}",
                path_segment(container_id),
                path_segment(ifname)
            ),
            None,
        )
        .map(|_| ())
    }

    pub fn create_endpoint(&self, req: &EndpointCreateRequest) -> Result<EndpointView, AgentError> {
        self.json(
            "POST",
            "/v1/endpoints",
            Some(&serde_json::to_vec(req).unwrap_or_default()),
        )
    }

    /// The endpoint, or None when the agent does not know it (404).
    pub fn endpoint(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<EndpointView>, AgentError> {
        match self.json(
            "GET",
            &format!(
                "/v1/endpoints/{}/{}",
                path_segment(container_id),
                path_segment(ifname)
            ),
            None,
        ) {
            Ok(v) => Ok(Some(v)),
            Err(AgentError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn delete_endpoint(&self, container_id: &str, ifname: &str) -> Result<Value, AgentError> {
        self.json(
            "DELETE",
            &format!(
                "/v1/endpoints/{}/{}",
                path_segment(container_id),
                path_segment(ifname)
            ),
            None,
        )
    }

    pub fn gc(&self, valid: &[GcAttachment]) -> Result<Value, AgentError> {
        let body = serde_json::json!({ "valid": valid });
        self.json(
            "POST",
            "/v1/cni/gc",
            Some(&serde_json::to_vec(&body).unwrap_or_default()),
        )
    }

    /// Healthz answers 503 with the same body shape when not ready.
    pub fn healthz(&self) -> Result<Healthz, AgentError> {
        let res = self.request("GET", "/v1/healthz", None)?;
        match serde_json::from_slice::<Healthz>(&res.body) {
            Ok(h) => Ok(h),
            Err(_) if !(200..300).contains(&res.status) => Err(rejection(res.status, &res.body)),
            Err(e) => Err(AgentError::BadResponse(format!("GET /v1/healthz: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response_parses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: b"{}".to_vec()
            }
        );
    }

    #[test]
    fn chunked_response_parses() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn malformed_responses_are_rejected_with_a_reason() {
        assert!(parse_response(b"").unwrap_err().contains("end of headers"));
        assert!(parse_response(b"SSH-2.0\r\n\r\n")
            .unwrap_err()
            .contains("status line"));
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n")
            .unwrap_err()
            .contains("status"));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}")
                .unwrap_err()
                .contains("content-length")
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n")
                .unwrap_err()
                .contains("content-length")
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n")
            .unwrap_err()
            .contains("header"));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
                .unwrap_err()
                .contains("chunk")
        );
    }

    #[test]
    fn agent_errors_keep_code_and_message() {
        match rejection(
            409,
            br#"{"error":{"code":"exhausted","message":"no free address in 10.0.0.0/30"}}"#,
        ) {
            AgentError::Rejected {
                status,
                code,
                message,
            } => assert_eq!(
                (status, code.as_str(), message.as_str()),
                (409, "exhausted", "no free address in 10.0.0.0/30")
            ),
            other => panic!("{other:?}"),
        }
        match rejection(500, b"<html>oops</html>") {
            AgentError::Rejected { code, message, .. } => assert_eq!(
                (code.as_str(), message.as_str()),
                ("unknown", "<html>oops</html>")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("abc-1.2_x"), "abc-1.2_x");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
