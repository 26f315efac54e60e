//! Every status message a node sends stays small. gRPC carries it in an
//! HTTP/2 header, and clients refuse headers past a limit (16 KiB by
//! default in grpc-go and grpc-python): a message that echoes a request's
//! own words at length — tonic-reflection's "symbol not found" quotes the
//! symbol asked for in full — would turn a clear refusal into the client's
//! `RESOURCE_EXHAUSTED` about metadata. The node's own services bound their
//! messages where they are made; this bounds what the stock services say,
//! as the last step before a response leaves.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use searchtree_proto::query::truncate_bytes;

/// The longest status message sent, in bytes.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 1024;

/// Cuts the `grpc-message` in `headers` (a trailers-only response's, or
/// trailers) to [`MAX_STATUS_MESSAGE_BYTES`], keeping the code.
pub fn bound_status_message(headers: &mut http::HeaderMap) {
    // Percent-encoding only lengthens: a short header needs no decoding.
    match headers.get("grpc-message") {
        Some(v) if v.len() > MAX_STATUS_MESSAGE_BYTES => {}
        _ => return,
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    if status.message().len() <= MAX_STATUS_MESSAGE_BYTES {
        return;
    }
    let bounded = tonic::Status::new(
        status.code(),
        truncate_bytes(status.message(), MAX_STATUS_MESSAGE_BYTES),
    );
    headers.remove("grpc-message");
    let _ = bounded.add_header(headers);
}

/// A response body whose trailers' status message is bounded: for
/// streaming services, whose errors come in trailers.
pub struct BoundedTrailers {
    body: tonic::body::Body,
}

impl BoundedTrailers {
    /// Wraps `body`.
    pub fn new(body: tonic::body::Body) -> Self {
        BoundedTrailers { body }
    }
}

impl Body for BoundedTrailers {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let mut polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut polled
            && let Some(trailers) = frame.trailers_mut()
        {
            bound_status_message(trailers);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    fn headers_of(status: tonic::Status) -> http::HeaderMap {
        status.into_http::<tonic::body::Body>().headers().clone()
    }

    #[test]
    fn a_long_message_is_cut_and_its_code_kept() {
        let symbol = "x".repeat(100_000);
        let mut headers = headers_of(tonic::Status::not_found(format!(
            "symbol {symbol} not found"
        )));
        bound_status_message(&mut headers);
        assert!(headers["grpc-message"].len() <= MAX_STATUS_MESSAGE_BYTES + 8);
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().starts_with("symbol xxx") && status.message().ends_with('…'));

        let short = headers_of(tonic::Status::not_found("symbol x not found"));
        let mut kept = short.clone();
        bound_status_message(&mut kept);
        assert_eq!(kept, short);
    }

    #[tokio::test]
    async fn trailers_are_bounded_as_they_pass() {
        let trailers = headers_of(tonic::Status::not_found("y".repeat(5000)));
        // A body that is only trailers.
        let body = Empty::<Bytes>::new().with_trailers(async { Some(Ok(trailers)) });
        let mut bounded = BoundedTrailers::new(tonic::body::Body::new(body));
        let frame = std::future::poll_fn(|cx| Pin::new(&mut bounded).poll_frame(cx))
            .await
            .unwrap()
            .unwrap();
        let status = tonic::Status::from_header_map(frame.trailers_ref().unwrap()).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES);
    }
}
