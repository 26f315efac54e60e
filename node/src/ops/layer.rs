//! The one wrapper around every node's gRPC services: who may call
//! ([`crate::ops::auth`]), the request's trace ([`crate::ops::trace`]) and
//! its timing ([`crate::ops::timing`]), in one boxed future per call; and a
//! request that does not decode is the caller's error
//! ([`undecodable_is_invalid_argument`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::ops::auth::AuthPolicy;
use crate::ops::bounded_status::{BoundedTrailers, bound_status_message};
use crate::ops::responses::{Admission, Held, ResponseBudget, ResponsePermit, Watched};
use crate::ops::{otlp, timing, trace};
use crate::serving::connections::peers::{CallWait, Direction, PeerKey};

/// A service that refuses what the policy does not allow, runs the rest
/// within their trace, and times every call.
#[derive(Debug, Clone)]
pub struct Operated<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
    responses: ResponseBudget,
}

impl<S> Operated<S> {
    /// Wraps `inner`, admitting calls as `policy` says and while
    /// `responses` has room.
    pub fn new(inner: S, policy: Arc<AuthPolicy>, responses: ResponseBudget) -> Self {
        Operated {
            inner,
            policy,
            responses,
        }
    }
}

/// A call's response, boxed.
pub type CallFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Operated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: Watched + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CallFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = timing::method_of(request.uri().path());
        if let Err(status) = self.policy.judge(&request) {
            let refusal = status.into_http();
            timing::record(method, &refusal, start.elapsed());
            return Box::pin(async move { Ok(refusal) });
        }
        let peer = peer_of(&request);
        let permit = match self.responses.try_admit(request.uri().path(), peer) {
            Admission::Granted(permit) => permit,
            Admission::Full => {
                // The rare path: close the connection stalling most and wait for
                // its permits, then serve, with the service taken as it is
                // ready (tower's way of calling a clone later).
                let ready = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, ready);
                let mut admitted = Operated {
                    inner,
                    policy: Arc::clone(&self.policy),
                    responses: self.responses.clone(),
                };
                return Box::pin(async move {
                    match admitted.responses.admit_by_eviction(peer).await {
                        Ok(permit) => admitted.serve(request, start, method, permit).await,
                        Err(status) => {
                            let refusal = status.into_http();
                            timing::record(method, &refusal, start.elapsed());
                            Ok(refusal)
                        }
                    }
                });
            }
        };
        self.serve(request, start, method, permit)
    }
}

/// A streaming handler's word on its call's wait for the client's next
/// message, found in the request's extensions (tonic's
/// `Request::extensions`) when the call's connection is watched.
///
/// A handler that looks whether more of its request has come without
/// waiting for it (`now_or_never`, as a leaf's group commit does) leaves
/// the call marked as waiting on its client; if it then works a long while
/// (a commit), the call would count as stalled on the client, and its
/// connection could be closed to make room. [`ClientWait::working`] says
/// the node, not the client, has the turn, until the handler next waits.
#[derive(Debug, Clone)]
pub struct ClientWait(Arc<CallWait>);

impl ClientWait {
    /// The word on `wait`'s request side.
    pub(crate) fn new(wait: Arc<CallWait>) -> Self {
        ClientWait(wait)
    }

    /// The handler works on what it has; it does not wait on its client
    /// until it next polls the request for more.
    pub fn working(&self) {
        self.0.not_waiting(Direction::Request);
    }
}

/// The addresses (ours, the peer's) of the connection `request` came on,
/// plain or TLS.
fn peer_of<B>(request: &http::Request<B>) -> Option<PeerKey> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(TlsConnectInfo::get_ref)
    })?;
    Some((tcp.local_addr()?, tcp.remote_addr()?))
}

impl<S> Operated<S> {
    /// Runs an admitted call within its trace, holding `permit` until its
    /// response body is done, and times it.
    fn serve<B>(
        &mut self,
        request: http::Request<B>,
        start: Instant,
        method: &'static str,
        permit: Option<ResponsePermit>,
    ) -> CallFuture<S::Response, S::Error>
    where
        S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
        S::Future: Send + 'static,
        B: Watched,
    {
        // The request's body tells when the call waits on its client.
        let request = match permit.as_ref().and_then(ResponsePermit::wait) {
            Some(wait) => {
                let mut request = request.map(|body| body.watched(Arc::clone(&wait)));
                request.extensions_mut().insert(ClientWait::new(wait));
                request
            }
            None => request,
        };
        let context = trace::TraceContext::from_headers(request.headers());
        let span = trace::span(&context, request.uri().path());
        // What the exported span needs, taken only when exporting.
        let exported = otlp::traces(request.uri().path()).then(|| {
            (
                request.uri().path().to_string(),
                std::time::SystemTime::now(),
            )
        });
        // Reflection's errors come in trailers and quote the request.
        let streams_stock_errors = request.uri().path().starts_with("/grpc.reflection.");
        let inner = &mut self.inner;
        let call = trace::within(context.clone(), span, || inner.call(request));
        Box::pin(async move {
            let mut result = call.await;
            if let (Ok(response), Some(permit)) = (&mut result, permit) {
                // The permit is held until the body is sent or dropped.
                let body = std::mem::replace(response.body_mut(), tonic::body::Body::empty());
                *response.body_mut() = tonic::body::Body::new(Held::new(body, permit));
            }
            if let Ok(response) = &mut result {
                undecodable_is_invalid_argument(response.headers_mut());
                bound_status_message(response.headers_mut());
                if streams_stock_errors {
                    let body = std::mem::replace(response.body_mut(), tonic::body::Body::empty());
                    *response.body_mut() = tonic::body::Body::new(BoundedTrailers::new(body));
                }
                trace::echo(&context, response.headers_mut());
                timing::record(method, response, start.elapsed());
                if let Some((path, began)) = exported {
                    // An error ends the call in the headers (trailers-only);
                    // a success's status comes in trailers: OK.
                    let status = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .unwrap_or(0);
                    otlp::record(&context, &path, began, std::time::SystemTime::now(), status);
                }
            }
            result
        })
    }
}

/// How tonic's refusal of a request message that does not decode begins
/// (prost's `DecodeError`, e.g. a string field that is not UTF-8); a
/// streaming request's is rewritten by
/// [`crate::serving::request_stream`].
pub const UNDECODABLE: &str = "failed to decode Protobuf message";
/// tonic's refusal of a unary call whose body holds no message at all.
const NO_MESSAGE: &str = "Missing request message.";
/// tonic's refusal of a body that ends inside a message (its 5-byte
/// prefix promised more bytes than came).
pub const TRUNCATED: &str = "Unexpected EOF decoding stream.";
/// How tonic's refusal of a message prefix whose compression flag is
/// neither 0 nor 1 begins. (A flag of 1 with no `grpc-encoding` stays
/// `INTERNAL`: gRPC's compression spec requires that code for it.)
pub const BAD_FLAG: &str = "protocol error: received message with invalid compression flag";

/// How tonic's refusal of a request message above the method's size limit
/// begins (its `OUT_OF_RANGE`); a streaming request's is rewritten by
/// [`crate::serving::request_stream`].
pub const TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's refusals of a request it could not take into
/// `INVALID_ARGUMENT`, keeping tonic's words: its `INTERNAL` for one it
/// could not decode (bytes that are not the method's message, a string
/// field that is not UTF-8, an empty body), and its `OUT_OF_RANGE` for one
/// above the method's message size limit. The request is what is wrong,
/// and sending it again cannot help, which neither code tells a client
/// (`INTERNAL` reads as the server's fault). Such a refusal ends the call in
/// the response's headers (trailers-only), before any node code runs; every
/// other response is left as it is.
pub fn undecodable_is_invalid_argument(headers: &mut http::HeaderMap) {
    let code = headers.get("grpc-status").map(|v| v.as_bytes());
    if code != Some(b"13") && code != Some(b"11") {
        return;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    let message = status.message();
    let refusal = match status.code() {
        tonic::Code::Internal
            if message.starts_with(UNDECODABLE)
                || message == NO_MESSAGE
                || message == TRUNCATED
                || message.starts_with(BAD_FLAG) =>
        {
            tonic::Status::invalid_argument(format!(
                "the request is not this method's message (is the client's .proto \
                 searchtree's?): {message}"
            ))
        }
        tonic::Code::OutOfRange if message.starts_with(TOO_LARGE) => {
            tonic::Status::invalid_argument(format!(
                "a request message is larger than this method accepts; send a smaller one (a \
                 search is a few KB at most, a Load batch at most 64 MiB): {message}"
            ))
        }
        _ => return,
    };
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    let _ = refusal.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(status: tonic::Status) -> http::HeaderMap {
        status.into_http::<tonic::body::Body>().headers().clone()
    }

    #[test]
    fn an_undecodable_request_is_invalid_argument_and_other_statuses_stay() {
        // prost's words for a query that is not UTF-8.
        let decode_error = "failed to decode Protobuf message: SearchRequest.query: \
                            invalid string value: data is not UTF-8 encoded";
        let mut headers = headers_of(tonic::Status::internal(decode_error));
        undecodable_is_invalid_argument(&mut headers);
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("the request is not this method's message")
                && status.message().contains(UNDECODABLE),
            "{}",
            status.message()
        );

        for framing in [
            NO_MESSAGE.to_string(),
            TRUNCATED.to_string(),
            format!("{BAD_FLAG}: 7 (valid flags are 0 and 1), while sending request"),
        ] {
            let mut headers = headers_of(tonic::Status::internal(framing.clone()));
            undecodable_is_invalid_argument(&mut headers);
            let status = tonic::Status::from_header_map(&headers).unwrap();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{framing}");
            assert!(status.message().contains(&framing), "{}", status.message());
        }

        let too_large = "Error, decoded message length too large: found 5242893 bytes, \
                         the limit is: 4194304 bytes";
        let mut large = headers_of(tonic::Status::out_of_range(too_large));
        undecodable_is_invalid_argument(&mut large);
        let status = tonic::Status::from_header_map(&large).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("send a smaller one") && status.message().contains(too_large),
            "{}",
            status.message()
        );

        for other in [
            tonic::Status::internal("search panicked"),
            tonic::Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ),
            tonic::Status::unavailable(UNDECODABLE),
            tonic::Status::out_of_range("top_k past the end"),
        ] {
            let before = headers_of(other);
            let mut after = before.clone();
            undecodable_is_invalid_argument(&mut after);
            assert_eq!(before, after);
        }
    }
}
