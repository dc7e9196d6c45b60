//! Clients that are slow, idle or too many (`HTTP_*` limits): the server cuts them off in
//! bounded time, answers what it can, and keeps serving everyone else.
//!
//! These tests speak HTTP/1.1 over raw loopback sockets: an HTTP client library would not
//! send half a request.

use crate::helpers::{Options, TestApp, assert_error, fb_top, spawn_app};
use anyhow::{Context as _, bail};
use service_kit::http::HttpArgs;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What the server may take beyond a timeout to act on it.
const SLACK: Duration = Duration::from_secs(3);

async fn app_with(http: HttpArgs) -> TestApp {
    spawn_app(Options {
        http: Some(http),
        ..Options::default()
    })
    .await
}

async fn connect(app: &TestApp) -> anyhow::Result<TcpStream> {
    let addr = app.addr.trim_start_matches("http://");
    Ok(TcpStream::connect(addr).await?)
}

/// How a socket ended, read until the server closed it or `limit` passed.
#[derive(Debug)]
struct Ending {
    /// Everything the server sent.
    received: String,
    /// When the server closed (EOF or reset); `None` if it still had not after `limit`.
    closed_after: Option<Duration>,
}

/// Reads until the server closes the connection, sending `trickle` (one byte at a time,
/// every `every`) meanwhile when given.
async fn read_until_closed(
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
    trickle: Option<Duration>,
) -> Ending {
    let (mut reader, mut writer) = stream.split();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(trickle.unwrap_or(Duration::from_secs(3600)));
    tick.tick().await;
    let closed_after = tokio::time::timeout_at(since + limit, async {
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return since.elapsed(),
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                },
                _ = tick.tick(), if trickle.is_some() => {
                    // The server may have closed already; the read above will say so.
                    let _ = writer.write_all(b"x").await;
                }
            }
        }
    })
    .await
    .ok();
    Ending {
        received: String::from_utf8_lossy(&received).into_owned(),
        closed_after,
    }
}

/// Sends one request and reads its response (headers and `Content-Length` body) whole,
/// leaving the connection open.
async fn exchange(stream: &mut TcpStream, request: &str) -> anyhow::Result<String> {
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(SLACK, stream.read(&mut buf))
            .await
            .context("a response in time")??;
        if n == 0 {
            bail!(
                "closed before a whole response: {}",
                String::from_utf8_lossy(&response)
            );
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Ok(text.into_owned());
            }
        }
    }
}

const LIVENESS: &str = "GET /health/liveness HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn slow_header_clients_are_disconnected_after_the_header_timeout_while_others_are_served()
-> anyhow::Result<()> {
    let header = Duration::from_secs(2);
    let app = app_with(HttpArgs {
        http_header_timeout: header,
        ..HttpArgs::default()
    })
    .await;

    // 300 clients send half a request line and headers; half of them then go silent, the
    // other half keep sending a byte every 500 ms (which a per-read timeout never catches).
    let mut slow = Vec::new();
    for i in 0..300 {
        let since = Instant::now();
        let mut stream = connect(&app).await?;
        stream
            .write_all(b"POST /webhook/event HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
            .await?;
        let trickle = (i % 2 == 1).then_some(Duration::from_millis(500));
        slow.push(tokio::spawn(async move {
            read_until_closed(&mut stream, since, header + SLACK, trickle).await
        }));
    }

    let started = Instant::now();
    let response = app.post_json(&fb_top("slowloris-bystander")).await;
    assert_eq!(response.status(), 202, "a normal request is accepted");
    assert!(
        started.elapsed() < header,
        "a normal request is answered before the slow clients are even cut off ({:?})",
        started.elapsed()
    );

    for (i, client) in slow.into_iter().enumerate() {
        let ending = client.await?;
        let closed_after = ending
            .closed_after
            .with_context(|| format!("slow client {i} is still connected after {SLACK:?}"))?;
        assert!(
            closed_after >= header,
            "slow client {i} was closed before the header timeout ({closed_after:?})"
        );
        assert!(
            ending.received.is_empty(),
            "a slow-header client gets no answer: {}",
            ending.received
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_body_that_stalls_or_trickles_is_cut_off_with_408_after_the_body_timeout()
-> anyhow::Result<()> {
    let body_timeout = Duration::from_secs(1);
    let app = app_with(HttpArgs {
        http_body_timeout: body_timeout,
        ..HttpArgs::default()
    })
    .await;

    let mut clients = Vec::new();
    for trickle in [None, Some(Duration::from_millis(200))] {
        let since = Instant::now();
        let mut stream = connect(&app).await?;
        // Headers promising 1000 bytes, then 12 of them.
        stream
            .write_all(
                b"POST /webhook/event HTTP/1.1\r\nHost: localhost\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"eventId\":",
            )
            .await?;
        clients.push(tokio::spawn(async move {
            let ending = read_until_closed(&mut stream, since, body_timeout + SLACK, trickle).await;
            (trickle, ending)
        }));
    }

    for client in clients {
        let (trickle, ending) = client.await?;
        let closed_after = ending.closed_after.with_context(|| {
            format!("the client (trickle {trickle:?}) is still connected after the body timeout")
        })?;
        assert!(closed_after >= body_timeout, "{closed_after:?}");
        let response = ending.received.to_ascii_lowercase();
        assert!(
            response.starts_with("http/1.1 408"),
            "trickle {trickle:?}: {response}"
        );
        assert!(response.contains("connection: close"), "{response}");
        assert!(
            response.contains(r#""code":"request_timeout""#),
            "{response}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn beyond_the_connection_limit_a_request_gets_503_with_retry_after() -> anyhow::Result<()> {
    let limit = 4;
    let app = app_with(HttpArgs {
        http_max_connections: limit,
        ..HttpArgs::default()
    })
    .await;

    // Connections accepted in order: these fill the limit (with the test client's pooled
    // connection, if it kept one) before the request below connects.
    let mut held = Vec::new();
    for _ in 0..limit {
        held.push(connect(&app).await?);
    }
    let fresh = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
    };
    let response = fresh()?
        .post(app.url("/webhook/event"))
        .json(&fb_top("over-the-limit"))
        .send()
        .await?;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_error(response, 503, "unavailable").await;

    // Connections closed, the server takes new ones again.
    drop(held);
    let client = fresh()?;
    testkit::eventually("a request accepted again", SLACK, || async {
        let response = client
            .post(app.url("/webhook/event"))
            .json(&fb_top("under-the-limit"))
            .send()
            .await
            .ok()?;
        (response.status() == 202).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    let idle = Duration::from_secs(1);
    let app = app_with(HttpArgs {
        http_idle_timeout: idle,
        http_header_timeout: Duration::from_secs(10),
        ..HttpArgs::default()
    })
    .await;

    let mut stream = connect(&app).await?;
    let response = exchange(&mut stream, LIVENESS).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let since = Instant::now();
    let ending = read_until_closed(&mut stream, since, idle + SLACK, None).await;
    let closed_after = ending
        .closed_after
        .context("the idle connection is still open")?;
    assert!(closed_after >= idle, "{closed_after:?}");
    assert!(ending.received.is_empty(), "{}", ending.received);
    Ok(())
}

#[tokio::test]
async fn a_kept_alive_connection_may_wait_longer_than_the_header_timeout_for_its_next_request()
-> anyhow::Result<()> {
    let header = Duration::from_secs(1);
    let app = app_with(HttpArgs {
        http_header_timeout: header,
        http_idle_timeout: Duration::from_secs(10),
        ..HttpArgs::default()
    })
    .await;

    let mut stream = connect(&app).await?;
    let first = exchange(&mut stream, LIVENESS).await?;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle for twice the header timeout, well within the idle timeout.
    tokio::time::sleep(header * 2).await;
    let second = exchange(&mut stream, LIVENESS).await?;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    Ok(())
}

const HTTP_VARIABLES: [&str; 5] = [
    "HTTP_HEADER_TIMEOUT",
    "HTTP_BODY_TIMEOUT",
    "HTTP_REQUEST_TIMEOUT",
    "HTTP_IDLE_TIMEOUT",
    "HTTP_MAX_CONNECTIONS",
];

/// The binary with only these variables set, run to its exit.
async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<std::process::Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingestion"));
    command
        .env_clear()
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    Ok(tokio::time::timeout(Duration::from_secs(10), command.output()).await??)
}

#[tokio::test]
async fn help_lists_every_http_limit_and_a_bad_one_stops_the_binary_naming_it() -> anyhow::Result<()>
{
    let help = run_binary(&["--help"], &[]).await?;
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in HTTP_VARIABLES {
        assert!(help.contains(variable), "--help names {variable}:\n{help}");
        for bad in ["0", "ten", "-1"] {
            let out = run_binary(&[], &[(variable, bad)]).await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{variable}={bad} is refused");
            let lines: Vec<&str> = stderr.trim_end().lines().collect();
            assert_eq!(lines.len(), 1, "{variable}={bad}: one line: {stderr}");
            assert!(lines[0].contains(variable), "{stderr}");
        }
    }
    Ok(())
}
