//! A node's side of a connection of frames: each call read off it is served
//! by the node's gRPC stack (the same routes, credentials check, permits,
//! trace and timing as a call over HTTP/2), on its own task, and its answer
//! written back whenever it is ready, in any order.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

use super::lock;
use super::wire::{self, Kind};

/// How many answers may wait for the socket before calls wait to send
/// theirs: the writer batches what is waiting into one write.
const ANSWERS_QUEUED: usize = 64;

/// How long a caller may leave the node's answers unread (its socket
/// taking no byte while answers wait) before the connection is closed, and
/// its calls with it: each waiting answer holds a permit of the node's live
/// calls, and a caller that stops reading must not keep them.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// What a connection's calls carry of their caller, as tonic puts it in a
/// request's extensions: [`TcpConnectInfo`] over plain TCP,
/// `TlsConnectInfo` (with the caller's certificates) over TLS, so that the
/// credentials check reads them as it does over HTTP/2.
pub trait PeerInfo: Clone + Send + Sync + 'static {
    /// The caller's address, for logs.
    fn peer(&self) -> Option<std::net::SocketAddr>;
}

impl PeerInfo for TcpConnectInfo {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.remote_addr()
    }
}

impl PeerInfo for tonic::transport::server::TlsConnectInfo<TcpConnectInfo> {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.get_ref().remote_addr()
    }
}

/// The service a connection's calls go to: the node's gRPC stack.
pub trait CallService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static
{
}

impl<S> CallService for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// Serves the calls of one connection (its [`wire::MAGIC`] already read)
/// with `service`, at most `max_calls` at once (more are refused with
/// `RESOURCE_EXHAUSTED`), until the caller closes it or `stopped`
/// resolves. Then it tells the caller which calls it read (a
/// [`Kind::GoAway`]), answers them, and closes.
pub async fn serve_connection<IO, I, S>(
    io: IO,
    info: I,
    service: S,
    max_calls: usize,
    stopped: impl Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    I: PeerInfo,
    S: CallService,
{
    let (read, write) = tokio::io::split(io);
    let mut reader = BufReader::with_capacity(16 << 10, read);
    let (answers, queued) = mpsc::channel::<Bytes>(ANSWERS_QUEUED);
    // First, the hello: the caller sends no call before it, so a call is
    // never written on a connection no node took up.
    let _ = answers.try_send(Bytes::from_static(wire::MAGIC));
    let writer = tokio::spawn(write_loop(write, queued));
    let live: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
    // Every call's task holds a clone; `recv` ends once all are done.
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut last_read = 0;
    tokio::pin!(stopped);
    let drained = loop {
        let frame = tokio::select! {
            biased;
            () = &mut stopped => break true,
            // The writer gave up: the caller stopped reading, or is gone.
            () = answers.closed() => break false,
            frame = wire::read_frame(&mut reader) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break false,
            Err(e) => {
                tracing::debug!(peer = ?info.peer(), error = %e, "a connection of frames failed");
                break false;
            }
        };
        match frame.kind {
            Kind::Request => {
                last_read = frame.id;
                let id = frame.id;
                let (reused, full) = {
                    let table = lock(&live);
                    (table.contains_key(&id), table.len() >= max_calls)
                };
                // An id already in use would make its answer, a cancel and
                // the bound on calls ambiguous: a caller that reuses one is
                // broken, and its connection is closed.
                if reused {
                    tracing::debug!(peer = ?info.peer(), id, "a call id used twice at once");
                    break false;
                }
                if full {
                    let refusal = tonic::Status::resource_exhausted(format!(
                        "more than {max_calls} calls at once on one connection"
                    ));
                    if answers.send(status_answer(id, refusal)).await.is_err() {
                        break false;
                    }
                    continue;
                }
                let call = serve_call(service.clone(), info.clone(), frame.payload);
                let answers = answers.clone();
                let done = done.clone();
                let table_of_task = Arc::clone(&live);
                // Held while spawning, so the task cannot remove itself
                // before it is listed.
                let mut table = lock(&live);
                let task = tokio::spawn(async move {
                    let _done = done;
                    // Leaves the table however the task ends (answered,
                    // aborted, or a panic), so no call holds a place of
                    // the connection's bound for ever.
                    let _listed = Unlist(table_of_task, id, tokio::task::id());
                    // A call that panics is answered INTERNAL rather than
                    // left for its caller to time out.
                    let (answer, held) =
                        match std::panic::AssertUnwindSafe(call).catch_unwind().await {
                            Ok(served) => served,
                            Err(_) => (
                                Answer::from_status(tonic::Status::internal(
                                    "the node failed while serving this call",
                                )),
                                None,
                            ),
                        };
                    let mut out = BytesMut::new();
                    wire::put_frame(&mut out, Kind::Response, id, |out| answer.encode(out));
                    let _ = answers.send(out.freeze()).await;
                    // The call's permit of the node's live responses is
                    // held until its answer is queued for the socket, so a
                    // caller that stops reading holds permits, as over
                    // HTTP/2.
                    drop(held);
                });
                table.insert(id, task.abort_handle());
            }
            Kind::Cancel => {
                if let Some(task) = lock(&live).remove(&frame.id) {
                    task.abort();
                }
            }
            Kind::Ping => {
                let pong = wire::bare_frame(Kind::Pong, frame.id);
                if answers.send(pong).await.is_err() {
                    break false;
                }
            }
            Kind::Pong | Kind::Response | Kind::GoAway => {}
        }
    };
    drop(done);
    if drained {
        let _ = answers
            .send(wire::bare_frame(Kind::GoAway, last_read))
            .await;
        // The calls read so far are answered; then the writer closes.
        let _ = all_done.recv().await;
    } else {
        // The caller is gone: nobody waits for these answers.
        for (_, task) in lock(&live).drain() {
            task.abort();
        }
    }
    drop(answers);
    let _ = writer.await;
}

/// Takes call `.1`, served by task `.2`, out of the connection's table of
/// live calls when dropped — unless a cancel took it out already and a new
/// call reused its id.
struct Unlist(Arc<Mutex<HashMap<u64, AbortHandle>>>, u64, tokio::task::Id);

impl Drop for Unlist {
    fn drop(&mut self) {
        let mut table = lock(&self.0);
        if table.get(&self.1).is_some_and(|task| task.id() == self.2) {
            table.remove(&self.1);
        }
    }
}

/// A call's answer, as the gRPC stack gave it.
struct Answer {
    headers: http::HeaderMap,
    trailers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    /// An answer that is only a status (in its headers, as tonic sends a
    /// status with no message).
    fn from_status(status: tonic::Status) -> Answer {
        Answer {
            headers: status.into_http::<()>().into_parts().0.headers,
            trailers: http::HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    fn encode(&self, out: &mut BytesMut) {
        wire::put_headers(out, &self.headers);
        wire::put_headers(out, &self.trailers);
        out.put_slice(&self.body);
    }
}

fn status_answer(id: u64, status: tonic::Status) -> Bytes {
    let answer = Answer::from_status(status);
    let mut out = BytesMut::new();
    wire::put_frame(&mut out, Kind::Response, id, |out| answer.encode(out));
    out.freeze()
}

/// Serves one call, `payload` being its path, headers and message; its
/// answer, and the spent body that holds the call's permit.
async fn serve_call<S: CallService, I: PeerInfo>(
    service: S,
    info: I,
    payload: Bytes,
) -> (Answer, Option<tonic::body::Body>) {
    let mut payload = payload;
    let request = (|| {
        let path = wire::get_short(&mut payload)?;
        let headers = wire::get_headers(&mut payload)?;
        let uri = http::Uri::from_maybe_shared(path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok::<_, std::io::Error>((uri, headers))
    })();
    let (uri, headers) = match request {
        Ok(parts) => parts,
        Err(e) => {
            let status = tonic::Status::invalid_argument(format!("a malformed call: {e}"));
            return (Answer::from_status(status), None);
        }
    };
    let mut request =
        http::Request::new(tonic::body::Body::new(http_body_util::Full::new(payload)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(info);
    let Ok(response) = service.oneshot(request).await;
    let (parts, mut body) = response.into_parts();
    let mut data = BytesMut::new();
    let mut trailers = http::HeaderMap::new();
    while let Some(frame) = body.frame().await {
        match frame.map(http_body::Frame::into_data) {
            Ok(Ok(chunk)) => data.put(chunk),
            Ok(Err(frame)) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers.extend(more);
                }
            }
            Err(status) => return (Answer::from_status(status), Some(body)),
        }
    }
    let answer = Answer {
        headers: parts.headers,
        trailers,
        body: data.freeze(),
    };
    (answer, Some(body))
}

/// Writes the answers as they come, then closes the connection's writing
/// side.
async fn write_loop<W: AsyncWrite>(write: W, mut queued: mpsc::Receiver<Bytes>) {
    tokio::pin!(write);
    match wire::write_frames(&mut write, &mut queued, Some(STALLED_AFTER)).await {
        Ok(()) => {
            let _ = write.shutdown().await;
        }
        Err(e) => tracing::debug!(error = %e, "closing a connection of frames"),
    }
}
