//! `<service> healthcheck`: the container's health check is the service's own binary
//! asking its own port, so the runtime image needs no curl, wget or shell.
//!
//! A plain HTTP/1.0 GET over a TCP stream is all it takes (one request, the server closes
//! the connection after answering), so no HTTP client is linked in for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the whole exchange may take: below compose's `timeout: 3s`, so a hung service
/// fails the check with this program's line rather than Docker's kill.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of an answer read: a readiness body is a few hundred bytes.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// The most of a failing answer's body shown in the line (Docker keeps 4 KiB of output).
const MAX_SHOWN_BODY_CHARS: usize = 512;

/// Arguments of the `healthcheck` subcommand. The address is the service's own `HOST` and
/// `PORT`, read from the same environment as when it serves.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HealthcheckArgs {
    /// Ask /health/liveness (the process answers) instead of /health/readiness (it can do
    /// its work: its dependencies are reachable).
    #[arg(long)]
    pub liveness: bool,
}

impl HealthcheckArgs {
    /// The path asked.
    pub fn path(&self) -> &'static str {
        if self.liveness {
            "/health/liveness"
        } else {
            "/health/readiness"
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the exchange with {addr} failed")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} did not answer HTTP: {first_line:?}")]
    NotHttp {
        addr: SocketAddr,
        first_line: String,
    },
    #[error("{path} answered {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
}

/// Where a service listening on `host` is reached from inside its own container: the
/// loopback address when it listens on every interface.
pub fn local_address(host: IpAddr, port: u16) -> SocketAddr {
    let ip = match host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, port)
}

/// GETs `path` at `addr` within `timeout`; `Ok` with the status line when the answer is
/// 200, else the reason, with the beginning of the body (readiness names the failing
/// check there).
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, ProbeError> {
    let answer = tokio::time::timeout(timeout, exchange(addr, path))
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| ProbeError::NotHttp {
            addr,
            first_line: status_line.chars().take(80).collect(),
        })?;
    if status == 200 {
        return Ok(status_line.to_owned());
    }
    Err(ProbeError::Status {
        path: path.to_owned(),
        status,
        body: one_line(body),
    })
}

async fn exchange(addr: SocketAddr, path: &str) -> Result<Vec<u8>, ProbeError> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let io = |source| ProbeError::Io { addr, source };
    // HTTP/1.0: the server closes the connection after its answer, so reading to the end
    // reads exactly one answer, whatever its framing.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: healthcheck\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .await
        .map_err(io)?;
    Ok(answer)
}

/// The body on one line, cut to a length a health log keeps.
fn one_line(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > MAX_SHOWN_BODY_CHARS {
        let cut: String = flat.chars().take(MAX_SHOWN_BODY_CHARS).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

/// Runs `<service> healthcheck` against the service listening on `host:port`: prints one
/// line (stdout when healthy, stderr otherwise) and returns the exit status, 0 or 1.
pub async fn healthcheck(service: &str, host: IpAddr, port: u16, args: &HealthcheckArgs) -> i32 {
    let addr = local_address(host, port);
    let path = args.path();
    match probe(addr, path, PROBE_TIMEOUT).await {
        Ok(status_line) => {
            println!("{service} healthcheck: {path} on {addr}: {status_line}");
            0
        }
        Err(e) => {
            eprintln!("{service} healthcheck: {}", crate::error::error_text(&e));
            1
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_service_on_every_interface_is_probed_on_loopback() {
        assert_eq!(
            local_address("0.0.0.0".parse().unwrap(), 3001),
            "127.0.0.1:3001".parse().unwrap()
        );
        assert_eq!(
            local_address("::".parse().unwrap(), 3002),
            "[::1]:3002".parse().unwrap()
        );
        assert_eq!(
            local_address("10.0.0.5".parse().unwrap(), 3003),
            "10.0.0.5:3003".parse().unwrap()
        );
    }

    #[test]
    fn readiness_is_asked_unless_liveness_is() {
        assert_eq!(HealthcheckArgs::default().path(), "/health/readiness");
        let liveness = HealthcheckArgs { liveness: true };
        assert_eq!(liveness.path(), "/health/liveness");
    }

    #[test]
    fn a_long_body_is_shown_on_one_cut_line() {
        let body = "{\n  \"status\": \"not_ready\"\n}";
        assert_eq!(one_line(body), "{ \"status\": \"not_ready\" }");
        let long = "x".repeat(2000);
        assert_eq!(one_line(&long).chars().count(), MAX_SHOWN_BODY_CHARS + 3);
    }
}
