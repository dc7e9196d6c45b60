//! Refusals a client still uploading can read: a 413, 415 or 401 reaches a client that
//! sends its whole body before reading the answer (as Python's urllib does) instead of a
//! connection reset, as well as one that reads early (reqwest), and says
//! `Connection: close`.

use crate::helpers::{Options, TestApp, assert_error_body, spawn_app};
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::time::Duration;
use tokio::net::TcpSocket;

/// `HTTP_MAX_BODY_BYTES` by default.
const DEFAULT_LIMIT: usize = 2 * 1024 * 1024;
const TEN_MIB: usize = 10 * 1024 * 1024;

/// A reset used to come in about two runs of three; several attempts make a regression
/// show.
const ATTEMPTS: usize = 5;

/// Bytes the whole-body-first client's system buffers for sending.
const SEND_BUFFER: u32 = 256 * 1024;

/// An answer as a client reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    connection: Option<String>,
    body: String,
}

impl Answer {
    /// Asserts the status, `Connection: close` and the error body with this code.
    fn assert_refusal(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        assert_eq!(self.connection.as_deref(), Some("close"), "{what}");
        let json: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", self.body));
        assert_error_body(&json, code);
    }
}

/// POSTs `len` bytes with reqwest, which reads the answer as soon as it arrives.
async fn reqwest_post(app: &TestApp, len: usize, content_type: &str) -> anyhow::Result<Answer> {
    let response = app
        .client
        .post(app.url("/webhook/event"))
        .header("content-type", content_type)
        .body(vec![b'x'; len])
        .send()
        .await?;
    let status = response.status().as_u16();
    let connection = response
        .headers()
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await?;
    Ok(Answer {
        status,
        connection,
        body,
    })
}

/// Writes the request line, the headers and, unless the client waits for
/// `100 Continue`, the whole `len`-byte body, and only then reads the answer up to the
/// server's close. Blocking, on a thread of its own, as such clients are.
async fn post_then_read(
    app: &TestApp,
    len: usize,
    content_type: &str,
    expect_continue: bool,
) -> anyhow::Result<Answer> {
    let host = app.addr.trim_start_matches("http://").to_owned();
    let socket = TcpSocket::new_v4()?;
    // A small send buffer keeps the client sending while the answer comes, as over a real
    // network; on loopback the kernel would otherwise take a few MiB at once.
    socket.set_send_buffer_size(SEND_BUFFER)?;
    let stream = socket.connect(host.parse()?).await?.into_std()?;
    let mut head = format!(
        "POST /webhook/event HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {len}\r\n"
    );
    if expect_continue {
        head.push_str("Expect: 100-continue\r\n");
    }
    head.push_str("\r\n");
    let raw = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut stream = stream;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.write_all(head.as_bytes())?;
        if !expect_continue {
            stream.write_all(&vec![b'x'; len])?;
        }
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(raw)
    })
    .await??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no complete answer: {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line: {text:?}"))?;
    let connection = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .map(|(_, value)| value.trim().to_owned());
    Ok(Answer {
        status,
        connection,
        body: body.to_owned(),
    })
}

/// Sends `len` bytes `ATTEMPTS` times with each client and asserts that every attempt
/// reads the whole refusal.
async fn assert_every_attempt_reads(
    app: &TestApp,
    len: usize,
    content_type: &str,
    status: u16,
    code: &str,
) -> anyhow::Result<()> {
    for attempt in 1..=ATTEMPTS {
        let what = format!("whole body first, attempt {attempt}, {len} bytes");
        post_then_read(app, len, content_type, false)
            .await
            .map_err(|e| e.context(what.clone()))?
            .assert_refusal(status, code, &what);
        let what = format!("reqwest, attempt {attempt}, {len} bytes");
        reqwest_post(app, len, content_type)
            .await
            .map_err(|e| e.context(what.clone()))?
            .assert_refusal(status, code, &what);
    }
    Ok(())
}

#[tokio::test]
async fn a_10_mib_upload_reads_back_the_413_every_time() -> anyhow::Result<()> {
    let app = spawn_app(Options::default()).await;
    assert_every_attempt_reads(&app, TEN_MIB, "application/json", 413, "payload_too_large").await
}

#[tokio::test]
async fn an_upload_one_byte_over_the_limit_reads_back_the_413_every_time() -> anyhow::Result<()> {
    let app = spawn_app(Options::default()).await;
    let len = DEFAULT_LIMIT + 1;
    assert_every_attempt_reads(&app, len, "application/json", 413, "payload_too_large").await
}

#[tokio::test]
async fn a_large_upload_of_the_wrong_type_reads_back_the_415() -> anyhow::Result<()> {
    let app = spawn_app(Options::default()).await;
    assert_every_attempt_reads(&app, TEN_MIB, "text/plain", 415, "unsupported_media_type").await
}

#[tokio::test]
async fn a_large_unsigned_upload_reads_back_the_401_when_a_secret_is_set() -> anyhow::Result<()> {
    let app = spawn_app(Options {
        webhook_secret: Some("s3cret-for-tests-of-at-least-32-bytes".into()),
        ..Options::default()
    })
    .await;
    // Within the limit, so the missing signature is what refuses it, before its body is
    // read.
    assert_every_attempt_reads(&app, DEFAULT_LIMIT, "application/json", 401, "unauthorized").await
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_gets_the_413_without_sending_its_body()
-> anyhow::Result<()> {
    let app = spawn_app(Options::default()).await;
    let answer = post_then_read(&app, TEN_MIB, "application/json", true).await?;
    // The refusal itself, not a `100 Continue` asking for the 10 MiB.
    answer.assert_refusal(413, "payload_too_large", "Expect: 100-continue");
    Ok(())
}

#[tokio::test]
async fn the_service_takes_the_next_request_after_a_refused_upload() -> anyhow::Result<()> {
    let app = spawn_app(Options::default()).await;
    assert_every_attempt_reads(&app, TEN_MIB, "application/json", 413, "payload_too_large").await?;
    let response = app
        .post_json(&crate::helpers::fb_top("after-oversize"))
        .await;
    assert_eq!(response.status(), 202);
    Ok(())
}
