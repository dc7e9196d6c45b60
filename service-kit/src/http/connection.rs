//! Accepting and serving connections with hyper's HTTP/1 server directly: `axum::serve`
//! offers no header-read timeout, no idle timeout and no connection cap.
//!
//! Hyper's header-read timeout starts as soon as a connection waits for a request, the
//! next one on a kept-alive connection included, so on its own it would also close every
//! idle connection after the (short) header timeout. The timer given to hyper therefore
//! counts a wait between requests against the idle timeout until the request's first byte
//! arrives, and against the header timeout from then on.

use super::limits::{HttpArgs, over_capacity};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Serves `router` on `listener` within `args` until `shutdown` resolves, then stops
/// accepting and waits for the connections to finish their requests in flight.
pub(crate) async fn serve(
    mut listener: TcpListener,
    router: Router,
    args: HttpArgs,
    shutdown: impl Future<Output = ()>,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(
        args,
        super::limits::limit_request,
    ));
    let open = Arc::new(Semaphore::new(args.http_max_connections));
    // Connections being told 503 are bounded too, so a flood costs at most twice the cap.
    let refusing = Arc::new(Semaphore::new(args.http_max_connections));
    let open_gauge = metrics::gauge!("http_connections_open");
    let shed = metrics::counter!("http_connections_shed_total");
    let graceful = GracefulShutdown::new();
    let mut at_capacity = false;
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            // axum's `Listener` retries failed accepts (and waits a second on EMFILE).
            (stream, peer) = axum::serve::Listener::accept(&mut listener) => (stream, peer),
            () = &mut shutdown => break,
        };
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                if at_capacity {
                    at_capacity = false;
                    tracing::info!("Below the connection limit again");
                }
                let service = TowerToHyperService::new(with_peer(router.clone(), peer));
                let connection = graceful.watch(connection(stream, service, args, true));
                let open_gauge = open_gauge.clone();
                open_gauge.increment(1.0);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        count_header_timeout(&error);
                        tracing::debug!(%error, "Connection ended with an error");
                    }
                    open_gauge.decrement(1.0);
                    drop(permit);
                });
            }
            Err(_) => {
                shed.increment(1);
                if !at_capacity {
                    at_capacity = true;
                    tracing::warn!(
                        limit = args.http_max_connections,
                        "At the connection limit (HTTP_MAX_CONNECTIONS): new connections get 503"
                    );
                }
                // Beyond twice the cap the connection is dropped unanswered.
                let Ok(permit) = refusing.clone().try_acquire_owned() else {
                    continue;
                };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(over_capacity())
                });
                let connection = graceful.watch(connection(stream, service, args, false));
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        count_header_timeout(&error);
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The router, with the connection's peer address in every request's extensions as
/// axum's `ConnectInfo<SocketAddr>` (what `into_make_service_with_connect_info` would give
/// under `axum::serve`): per-address rate limits key on it.
fn with_peer(
    router: Router,
    peer: SocketAddr,
) -> tower::util::MapRequest<Router, impl FnMut(Request<Incoming>) -> Request<Incoming> + Clone> {
    tower::ServiceExt::map_request(router, move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    })
}

/// One HTTP/1 connection, its header wait timed by [`HeaderTimer`].
fn connection<S>(
    stream: TcpStream,
    service: S,
    args: HttpArgs,
    keep_alive: bool,
) -> http1::Connection<TokioIo<Watched>, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = axum::body::Body>,
{
    let traffic = Arc::new(Traffic::new());
    http1::Builder::new()
        .keep_alive(keep_alive)
        .timer(HeaderTimer {
            traffic: traffic.clone(),
            header: args.http_header_timeout,
            idle: args.http_idle_timeout,
        })
        .header_read_timeout(args.http_header_timeout)
        .serve_connection(TokioIo::new(Watched { stream, traffic }), service)
}

fn count_header_timeout(error: &hyper::Error) {
    if error.is_timeout() {
        metrics::counter!("http_timeouts_total", "kind" => "header").increment(1);
    }
}

/// Whether, and when, the request a connection waits for began to arrive.
#[derive(Debug)]
struct Traffic {
    opened: Instant,
    /// Nanoseconds after `opened` of the first byte read since the current wait for a
    /// request began; [`Traffic::NONE`] while none was.
    first_byte: AtomicU64,
    /// Whether the connection waited for a request before (it is kept alive).
    waited: AtomicBool,
}

impl Traffic {
    const NONE: u64 = u64::MAX;

    fn new() -> Self {
        Traffic {
            opened: Instant::now(),
            first_byte: AtomicU64::new(Self::NONE),
            waited: AtomicBool::new(false),
        }
    }

    fn read_some(&self) {
        if self.first_byte.load(Ordering::Relaxed) == Self::NONE {
            let now = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(Self::NONE - 1);
            let _ = self.first_byte.compare_exchange(
                Self::NONE,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Starts a wait for a request; true when it is the connection's first.
    fn wait_begins(&self) -> bool {
        self.first_byte.store(Self::NONE, Ordering::Relaxed);
        !self.waited.swap(true, Ordering::Relaxed)
    }

    fn first_byte(&self) -> Option<Instant> {
        match self.first_byte.load(Ordering::Relaxed) {
            Self::NONE => None,
            nanos => Some(self.opened + Duration::from_nanos(nanos)),
        }
    }
}

/// The timer hyper's HTTP/1 server uses for its header-read timeout (its only use of a
/// timer in hyper 1.x): a connection's first request must arrive within the header
/// timeout of its opening; a later one within the idle timeout, and then within the header
/// timeout of its first byte.
#[derive(Debug, Clone)]
struct HeaderTimer {
    traffic: Arc<Traffic>,
    header: Duration,
    idle: Duration,
}

impl Timer for HeaderTimer {
    fn sleep(&self, _duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.wait()
    }

    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        self.wait()
    }
}

impl HeaderTimer {
    fn wait(&self) -> Pin<Box<dyn Sleep>> {
        let first = self.traffic.wait_begins();
        let limit = if first { self.header } else { self.idle };
        Box::pin(HeaderWait {
            traffic: self.traffic.clone(),
            header: self.header,
            until_first_byte: !first,
            sleep: Box::pin(tokio::time::sleep(limit)),
        })
    }
}

/// One wait for a request's headers.
#[derive(Debug)]
struct HeaderWait {
    traffic: Arc<Traffic>,
    header: Duration,
    /// Still on the idle deadline, to be moved once the request's first byte arrives.
    until_first_byte: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeaderWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Hyper polls this after every read that left the headers incomplete.
        if this.until_first_byte
            && let Some(first_byte) = this.traffic.first_byte()
        {
            this.until_first_byte = false;
            this.sleep.as_mut().reset(first_byte + this.header);
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl Sleep for HeaderWait {}

/// The connection's socket, noting when bytes arrive.
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    traffic: Arc<Traffic>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.traffic.read_some();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
