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
//! finish a request cannot take the descriptors the gRPC port needs. When
//! the node stops, requests still open on it get [`HTTP_SHUTDOWN_GRACE`]
//! to finish, so a half-sent request cannot hold up a drain.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected as _;

use super::auth::AuthPolicy;
use crate::serving::connections::{Connection, ConnectionLimits, Incoming};

/// The prefix of the line a node prints on stdout once its HTTP port is
/// listening, followed by the actual address (see [`crate::serving::LISTENING_PREFIX`]).
pub const HTTP_PREFIX: &str = "HTTP ";

/// How long a client may take over its TLS handshake on the HTTP port.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// Connections the HTTP port holds at once (Prometheus and a few browsers
/// need a handful); past it a new connection is accepted and closed at once.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// A connection to the HTTP port on which no byte moved for this long is
/// closed: a request is a few hundred bytes, and an answer is written at once.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Once the node stops, how long requests still open on the HTTP port may
/// take to finish before the port closes anyway.
pub const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The HTTP port's connection limits.
fn http_limits() -> ConnectionLimits {
    ConnectionLimits {
        max_connections: MAX_HTTP_CONNECTIONS,
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
/// `tls` ([`super::tls::TlsArgs::http_server`]), and asking for the tokens `policy` asks for. An error is logged,
/// not returned: the HTTP port failing must not stop the node from
/// answering searches.
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
    let incoming = Incoming::new(listener, http_limits());
    let shutdown = shutdown.shared();
    let served = {
        let shutdown = shutdown.clone();
        async move {
            match tls {
                None => {
                    axum::serve(PlainListener { incoming, local }, router)
                        .with_graceful_shutdown(shutdown)
                        .await
                }
                Some(config) => {
                    axum::serve(
                        TlsListener::start(incoming, local, config),
                        router.into_make_service_with_connect_info::<Peer>(),
                    )
                    .with_graceful_shutdown(shutdown)
                    .await
                }
            }
        }
    };
    let grace = async move {
        shutdown.await;
        tokio::time::sleep(HTTP_SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = served => {
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }
        () = grace => {
            tracing::debug!(
                grace = ?HTTP_SHUTDOWN_GRACE,
                "HTTP port: requests still open at shutdown are dropped"
            );
        }
    }
}

/// The plain HTTP port's connections, bounded by [`http_limits`].
struct PlainListener {
    incoming: Incoming,
    local: SocketAddr,
}

impl axum::serve::Listener for PlainListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let connection = self.incoming.accept().await;
        let peer = connection
            .connect_info()
            .remote_addr()
            .unwrap_or(self.local);
        (connection, peer)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
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

/// A listener that hands the server connections whose TLS handshake is
/// done. Handshakes run in tasks of their own, each bounded in time, so
/// that a client that stalls in its handshake holds up nobody else.
struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<Connection>, Peer)>,
    local: SocketAddr,
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

impl Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Peer {
        *stream.remote_addr()
    }
}

impl TlsListener {
    fn start(
        mut incoming: Incoming,
        local: SocketAddr,
        config: Arc<rustls::ServerConfig>,
    ) -> TlsListener {
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    // The server is gone: stop accepting.
                    _ = tx.closed() => return,
                    // Never fails: past the cap, or out of descriptors, it
                    // refuses or waits on its own.
                    connection = incoming.accept() => connection,
                };
                let peer = tcp.connect_info().remote_addr().unwrap_or(local);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let peer = Peer {
                                addr: peer,
                                verified_certificate: stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .is_some(),
                            };
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTP port: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "HTTP port: TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { accepted, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Connection>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it only does once the server is
            // gone): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            verified_certificate: false,
        })
    }
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

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once_and_others_still_served() {
        let (addr, _stop, _server) = start().await;
        let mut stalled = Vec::new();
        for _ in 0..MAX_HTTP_CONNECTIONS {
            stalled.push(half_request(addr).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = half_request(addr).await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), extra.read(&mut buf))
            .await
            .expect("a connection past the cap is closed, not left hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        // Once the stalled ones go, the port answers again.
        drop(stalled);
        tokio::time::sleep(Duration::from_millis(200)).await;
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
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }
}
