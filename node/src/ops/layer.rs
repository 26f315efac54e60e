//! The one wrapper around every node's gRPC services: who may call
//! ([`crate::ops::auth`]), the request's trace ([`crate::ops::trace`]) and
//! its timing ([`crate::ops::timing`]), in one boxed future per call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::ops::auth::AuthPolicy;
use crate::ops::{otlp, timing, trace};

/// A service that refuses what the policy does not allow, runs the rest
/// within their trace, and times every call.
#[derive(Debug, Clone)]
pub struct Operated<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
}

impl<S> Operated<S> {
    /// Wraps `inner`, admitting calls as `policy` says.
    pub fn new(inner: S, policy: Arc<AuthPolicy>) -> Self {
        Operated { inner, policy }
    }
}

impl<S, B> tower::Service<http::Request<B>> for Operated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

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
        let context = trace::TraceContext::from_headers(request.headers());
        let span = trace::span(&context, request.uri().path());
        // What the exported span needs, taken only when exporting.
        let exported = otlp::traces(request.uri().path()).then(|| {
            (
                request.uri().path().to_string(),
                std::time::SystemTime::now(),
            )
        });
        let inner = &mut self.inner;
        let call = trace::within(context.clone(), span, || inner.call(request));
        Box::pin(async move {
            let mut result = call.await;
            if let Ok(response) = &mut result {
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
