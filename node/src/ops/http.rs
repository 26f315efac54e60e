//! The node's HTTP port: what operators' tools speak rather than gRPC
//! (Prometheus scrapes, a browser). It runs beside the gRPC server, on its
//! own listener, and stops with it. It is held to the node's own rules:
//! with a certificate the node serves HTTPS here too, and with tokens or
//! mutual TLS configured its reads need a token or a verified client
//! certificate as its gRPC calls do ([`AuthPolicy::check_http`]).

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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use super::auth::AuthPolicy;

/// The prefix of the line a node prints on stdout once its HTTP port is
/// listening, followed by the actual address (see [`crate::serving::LISTENING_PREFIX`]).
pub const HTTP_PREFIX: &str = "HTTP ";

/// How long a client may take over its TLS handshake on the HTTP port.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

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
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?local, tls = tls.is_some(), "serving HTTP");
    let router = router.layer(axum::middleware::from_fn(move |request, next| {
        guard(Arc::clone(&policy), request, next)
    }));
    let served = match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            axum::serve(
                TlsListener::start(listener, config),
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
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
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
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
    fn start(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    // The server is gone: stop accepting.
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::debug!(error = %e, "HTTP port: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
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
    type Io = TlsStream<TcpStream>;
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
