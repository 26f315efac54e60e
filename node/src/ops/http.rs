//! The node's HTTP port: what operators' tools speak rather than gRPC
//! (Prometheus scrapes, a browser). It runs beside the gRPC server, on its
//! own listener, and stops with it. It is held to the node's own rules:
//! with a certificate the node serves HTTPS here too, and with tokens or
//! mutual TLS configured its reads need a token or a verified client
//! certificate as its gRPC calls do ([`AuthPolicy::check_http`]).
//!
//! Its connections are bounded like the gRPC port's
//! ([`crate::serving::connections`]), with limits of its own: at most
//! [`MAX_HTTP_CONNECTIONS`] at once, each closed once nothing moved on it
//! for [`HTTP_IDLE_TIMEOUT`]; so clients that open connections and never
//! finish a request cannot take the descriptors the gRPC port needs. A
//! client must also send each request's head (request line and headers)
//! within [`HTTP_HEADER_READ_TIMEOUT`], after a TLS handshake of at most
//! [`HANDSHAKE_TIMEOUT`]: one that trickles its head a byte at a time,
//! which the idle timeout never catches, gives its slot up then. And when
//! every slot is held, the connection that has waited longest for a
//! request's head gives its slot to the newcomer
//! ([`super::http_slots`]), so clients that hold connections open without
//! asking anything cannot keep a scraper out. When the
//! node stops, requests still open on it get [`HTTP_SHUTDOWN_GRACE`] to
//! finish, so a half-sent request cannot hold up a drain.
//!
//! It speaks HTTP/1.1 only (hyper's HTTP/1 server, driven here rather than
//! by `axum::serve`, which sets no timer and so no header-read timeout).

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tonic::transport::server::Connected as _;
use tower::ServiceExt as _;

use super::auth::AuthPolicy;
use super::http_slots::{SlotHandle, Slots, Taken};
use crate::serving::connections::{Connection, ConnectionLimits, Incoming};

/// The prefix of the line a node prints on stdout once its HTTP port is
/// listening, followed by the actual address (see [`crate::serving::LISTENING_PREFIX`]).
pub const HTTP_PREFIX: &str = "HTTP ";

/// How long a client may take over its TLS handshake on the HTTP port.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the HTTP port holds at once (Prometheus and a few browsers
/// need a handful); past it a newcomer takes the slot of the connection
/// that has waited longest for a request's head, or is closed at once when
/// every connection is serving a request.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// A connection to the HTTP port on which no byte moved for this long is
/// closed: a request is a few hundred bytes, and an answer is written at once.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client has to send a request's head (request line and
/// headers) on the HTTP port, counted from the connection's start (after
/// its TLS handshake) or from the previous answer; then the connection is
/// closed. A scraper's or a browser's head is a few hundred bytes, sent at
/// once; the idle timeout alone would let a client that sends one byte
/// every few seconds hold a slot for ever, and
/// [`MAX_HTTP_CONNECTIONS`] such clients the whole port.
pub const HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Once the node stops, how long requests still open on the HTTP port may
/// take to finish before the port closes anyway.
pub const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The HTTP port's connection limits. The listener lets twice the slots
/// through, so that a newcomer can be accepted while the connection it
/// evicted closes; [`Slots`] keeps to [`MAX_HTTP_CONNECTIONS`].
fn http_limits() -> ConnectionLimits {
    ConnectionLimits {
        max_connections: 2 * MAX_HTTP_CONNECTIONS,
        idle_timeout: HTTP_IDLE_TIMEOUT,
    }
}

/// Binds the HTTP port (with SO_REUSEPORT when `reuse_port`) and announces
/// it on stdout as `HTTP HOST:PORT`.
pub async fn bind(addr: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    let listener = crate::serving::bind_with(addr, reuse_port).await?;
    let local = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{HTTP_PREFIX}{local}");
    let _ = out.flush();
    Ok(listener)
}

/// Serves `router` on `listener` until `shutdown` resolves — over TLS with
/// `tls` ([`super::tls::TlsArgs::http_server`]), and asking for the tokens
/// `policy` asks for. Nothing is returned: a connection that fails is
/// logged and dropped, and the HTTP port failing must not stop the node
/// from answering searches.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    policy: Arc<AuthPolicy>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    tracing::info!(%local, tls = tls.is_some(), "serving HTTP");
    let router = router.layer(axum::middleware::from_fn(move |request, next| {
        guard(Arc::clone(&policy), request, next)
    }));
    let acceptor = tls.map(TlsAcceptor::from);
    let mut incoming = Incoming::new(listener, http_limits());
    let slots = Slots::new(MAX_HTTP_CONNECTIONS);
    // One task per connection held, and those closing after an eviction.
    let mut connections = JoinSet::new();
    let (closing, closing_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            connection = incoming.accept() => {
                let peer = connection.connect_info().remote_addr();
                let Some((slot, taken)) = slots.take() else {
                    tracing::debug!(
                        ?peer,
                        max = MAX_HTTP_CONNECTIONS,
                        "HTTP port: every connection is serving a request; closed a new one"
                    );
                    continue;
                };
                if let Taken::Evicted(waited) = taken {
                    crate::serving::connections::count_eviction(
                        crate::serving::connections::EvictionReason::HttpSlots,
                    );
                    tracing::debug!(
                        ?peer,
                        ?waited,
                        "HTTP port: at its cap; closed the connection that waited longest \
                         for a request to make room"
                    );
                }
                let slot = Arc::new(slot);
                let serving = serve_connection(
                    connection,
                    local,
                    router.clone(),
                    acceptor.clone(),
                    Arc::clone(&slot),
                    closing_rx.clone(),
                );
                connections.spawn(evictable(slot, serving));
            }
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // No new connection: the listener closes.
    drop(incoming);
    let _ = closing.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, finished)
        .await
        .is_err()
    {
        tracing::debug!(
            grace = ?HTTP_SHUTDOWN_GRACE,
            "HTTP port: requests still open at shutdown are dropped"
        );
        connections.abort_all();
    }
}

/// Runs `serving` (one connection's), holding `slot`, until it ends or a
/// newcomer takes the slot.
async fn evictable(slot: Arc<SlotHandle>, serving: impl Future<Output = ()>) {
    tokio::select! {
        () = serving => {}
        () = slot.evicted() => {}
    }
}

/// Serves one connection: its TLS handshake first with `acceptor`, then
/// its requests, until it ends, fails, or the port closes (`closing`);
/// `slot` learns when it serves a request and when it waits for one.
async fn serve_connection(
    connection: Connection,
    local: SocketAddr,
    router: axum::Router,
    acceptor: Option<TlsAcceptor>,
    slot: Arc<SlotHandle>,
    closing: watch::Receiver<bool>,
) {
    let addr = connection.connect_info().remote_addr().unwrap_or(local);
    let Some(acceptor) = acceptor else {
        return serve_http1(connection, addr, router, None, slot, closing).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(connection)).await {
        Ok(Ok(stream)) => {
            let peer = Peer {
                addr,
                verified_certificate: stream.get_ref().1.peer_certificates().is_some(),
            };
            serve_http1(stream, addr, router, Some(peer), slot, closing).await;
        }
        Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "HTTP port: TLS handshake failed"),
        Err(_) => tracing::debug!(peer = %addr, "HTTP port: TLS handshake timed out"),
    }
}

/// Serves HTTP/1 requests on `io` with `router`, each request's head due
/// within [`HTTP_HEADER_READ_TIMEOUT`]; a TLS connection's requests carry
/// its `peer` for [`guard`]. While a request is served its `slot` cannot
/// be taken.
async fn serve_http1<I>(
    io: I,
    addr: SocketAddr,
    router: axum::Router,
    peer: Option<Peer>,
    slot: Arc<SlotHandle>,
    mut closing: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            if let Some(peer) = peer {
                request.extensions_mut().insert(ConnectInfo(peer));
            }
            slot.serving();
            let response = router.clone().oneshot(request);
            let slot = Arc::clone(&slot);
            async move {
                let response = response.await.unwrap_or_else(|e| match e {});
                // Serving until the body is sent.
                let response = response.map(|body| slot.waiting_after(body));
                Ok::<_, Infallible>(response)
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_READ_TIMEOUT);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut closing_seen = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = closing.wait_for(|closing| *closing), if !closing_seen => {
                // Finish the request in flight, if any, then close.
                closing_seen = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => tracing::debug!(
            peer = %addr,
            timeout = ?HTTP_HEADER_READ_TIMEOUT,
            "HTTP port: closed a connection that did not send a request's head in time"
        ),
        Err(e) => tracing::debug!(peer = %addr, error = %e, "HTTP port: connection failed"),
    }
}

/// Refuses a request its credentials do not allow: 401 with a
/// `WWW-Authenticate: Bearer` challenge without them, 403 with wrong ones.
async fn guard(policy: Arc<AuthPolicy>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    // Only a TLS connection carries a peer; plain HTTP has no certificate.
    let peer = request.extensions().get::<ConnectInfo<Peer>>().map(|p| p.0);
    let has_certificate = peer.is_some_and(|p| p.verified_certificate);
    match policy.check_http(request.uri().path(), authorization, has_certificate) {
        Ok(()) => next.run(request).await,
        Err(status) => {
            tracing::debug!(
                peer = ?peer.map(|p| p.addr),
                path = request.uri().path(),
                reason = status.message(),
                "HTTP request refused"
            );
            let code = if status.code() == tonic::Code::PermissionDenied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            let mut response = (code, format!("{}\n", status.message())).into_response();
            if code == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"searchtree\""),
                );
            }
            response
        }
    }
}

/// Who is at the other end of a TLS connection to the HTTP port.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// Its address (for logs).
    addr: SocketAddr,
    /// Whether it presented a client certificate, which the handshake
    /// verified against --tls-client-ca (a bad one fails the handshake).
    verified_certificate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Serves a one-route page on a free port until `stop` fires.
    async fn start() -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/metrics", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router,
            Arc::new(AuthPolicy::default()),
            None,
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop, server)
    }

    /// A connection that sends half a request and then nothing.
    async fn half_request(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stream
    }

    #[tokio::test]
    async fn a_half_sent_request_does_not_hold_up_the_shutdown() {
        let (addr, stop, server) = start().await;
        let _stalled = half_request(addr).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(HTTP_SHUTDOWN_GRACE + Duration::from_secs(3), server)
            .await
            .expect("the HTTP port stops within its grace")
            .unwrap();
    }

    /// Sends a whole request on a new connection and reads the answer.
    async fn get_metrics(addr: SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(3), stream.read_to_string(&mut answer))
            .await
            .expect("answered")
            .unwrap();
        answer
    }

    #[tokio::test]
    async fn clients_holding_every_slot_without_asking_cannot_keep_a_scraper_out() {
        let (addr, _stop, _server) = start().await;
        let mut stalled = Vec::new();
        for _ in 0..MAX_HTTP_CONNECTIONS {
            stalled.push(half_request(addr).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Every slot is held by a connection waiting for the rest of its
        // request's head; a scraper is still answered, again and again.
        for _ in 0..3 {
            let answer = get_metrics(addr).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("ok"), "{answer}");
        }
        // The oldest stalled connection gave up its slot to the first
        // scraper (closed, not left hanging); the others found the slot
        // that scraper left.
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), stalled[0].read(&mut buf))
            .await
            .expect("an evicted connection is closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // The newest are still open.
        let newest = stalled.last_mut().unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), newest.read(&mut buf))
                .await
                .is_err(),
            "a connection newer than the scraper's was closed"
        );
    }
}
