//! How this process calls other nodes, in one place: plaintext or TLS, the
//! bearer token it presents, and the trace it passes on. Every channel a
//! node or the CLI opens to a node is made by [`endpoint`] and wrapped by
//! [`channel`], so no call can forget the settings.

use std::sync::OnceLock;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How this process calls other nodes.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// TLS settings; `None` for plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// The same TLS settings for calls as frames (rustls's own, which
    /// tonic's do not expose); `None` for plaintext.
    pub frames_tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    /// The bearer token sent on every call, if any.
    pub token: Option<String>,
}

static SECURITY: OnceLock<ClientSecurity> = OnceLock::new();

/// Sets how this process calls other nodes; once, at start-up, before any
/// channel is made. A second call is refused.
pub fn set_security(security: ClientSecurity) -> Result<(), String> {
    SECURITY
        .set(security)
        .map_err(|_| "client security was already set".to_string())
}

/// How this process calls other nodes (plaintext, no token, unless set).
pub fn security() -> &'static ClientSecurity {
    SECURITY.get_or_init(ClientSecurity::default)
}

/// The endpoint of the node at `addr` (HOST:PORT): `https` with the TLS
/// settings when they are set, else `http`.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let security = security();
    match &security.tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone()),
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}

/// A channel that sends this process's token and the current trace on
/// every call.
pub type NodeChannel = InterceptedService<Channel, Outgoing>;

/// Wraps `channel` so every call carries the token and the trace.
pub fn channel(channel: Channel) -> NodeChannel {
    InterceptedService::new(channel, outgoing())
}

/// A channel of frames (see [`crate::frames`]) that sends this process's
/// token and the current trace on every call, as [`NodeChannel`] does.
pub type NodeFrameChannel = InterceptedService<crate::frames::FrameChannel, Outgoing>;

/// Wraps `channel` so every call carries the token and the trace.
pub fn frame_channel(channel: crate::frames::FrameChannel) -> NodeFrameChannel {
    InterceptedService::new(channel, outgoing())
}

fn outgoing() -> Outgoing {
    let token = security()
        .token
        .as_ref()
        .and_then(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>().ok());
    Outgoing { token }
}

/// How an inner node calls its children's searches and fetches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ChildTransport {
    /// searchtree's own frames over TCP (see the `frames` module), over
    /// TLS when the node calls with TLS: one write a call each way.
    #[default]
    Frames,
    /// gRPC over HTTP/2, as clients call the root.
    Grpc,
}

static TRANSPORT: OnceLock<ChildTransport> = OnceLock::new();

/// Sets how this process calls its children; once, at start-up.
pub fn set_child_transport(transport: ChildTransport) -> Result<(), String> {
    TRANSPORT
        .set(transport)
        .map_err(|_| "the child transport was already set".to_string())
}

/// How this process calls its children: as set, frames by default.
pub fn child_transport() -> ChildTransport {
    TRANSPORT.get().copied().unwrap_or_default()
}

/// What every outgoing call carries: the bearer token, the trace.
#[derive(Debug, Clone)]
pub struct Outgoing {
    token: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Outgoing {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        crate::ops::trace::inject(request.metadata_mut());
        Ok(request)
    }
}
