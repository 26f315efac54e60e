//! A caller's side: [`FrameChannel`], a transport for tonic's generated
//! clients that sends each call as frames on one connection to a node,
//! made on first use and again after it breaks; over TLS when this
//! process calls other nodes with TLS ([`crate::ops::client::security`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::Status;

use super::lock;
use super::wire::{self, Kind};

/// How many calls may wait for the socket before callers wait to send.
const CALLS_QUEUED: usize = 64;

/// How a call ends: its answer as tonic reads one, or why there is none.
type Outcome = Result<http::Response<tonic::body::Body>, Failure>;

/// Why a call has no answer.
#[derive(Debug)]
enum Failure {
    /// The node never read the call (it drained first, or the connection
    /// closed before the call was written): safe to send again.
    Unread(Status),
    /// Anything else, the call perhaps half done.
    Other(Status),
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Status {
        match failure {
            Failure::Unread(status) | Failure::Other(status) => status,
        }
    }
}

/// How many times a call the node never read is sent again, each time on
/// a new connection (a drained node's successor on the same address).
const UNREAD_RESENDS: usize = 2;

/// A node's address and the connection of frames to it, if one is open.
/// Clones share the connection.
#[derive(Clone)]
pub struct FrameChannel {
    shared: Arc<Shared>,
}

struct Shared {
    addr: String,
    connect_timeout: Duration,
    keepalive: Keepalive,
    current: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

/// How often a quiet connection is pinged, and how long a ping may go
/// unanswered before the connection is taken for dead.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// Between pings.
    pub interval: Duration,
    /// The longest silence after a ping.
    pub timeout: Duration,
}

impl FrameChannel {
    /// A channel to the node at `addr` (HOST:PORT); no connection is made
    /// until the first call.
    pub fn new(addr: &str, connect_timeout: Duration, keepalive: Keepalive) -> Self {
        FrameChannel {
            shared: Arc::new(Shared {
                addr: addr.to_string(),
                connect_timeout,
                keepalive,
                current: tokio::sync::Mutex::new(None),
            }),
        }
    }
}

impl Shared {
    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Arc<Conn>, Status> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref().filter(|c| c.open.load(Ordering::Acquire)) {
            return Ok(Arc::clone(conn));
        }
        let conn = Conn::connect(&self.addr, self.connect_timeout, self.keepalive)
            .await
            .map_err(|e| Status::unavailable(format!("tcp connect error: {}: {e}", self.addr)))?;
        *current = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for FrameChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let message = body.collect().await?.to_bytes();
            let mut resends = 0;
            loop {
                let conn = shared.connection().await?;
                match conn
                    .call(parts.uri.path(), &parts.headers, message.clone())
                    .await
                {
                    Err(Failure::Unread(_)) if resends < UNREAD_RESENDS => resends += 1,
                    outcome => return outcome.map_err(Status::from),
                }
            }
        })
    }
}

/// One connection: its writer's queue, the calls waiting for answers.
struct Conn {
    queue: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    next_id: AtomicU64,
    /// False once the connection broke or the node said it is draining:
    /// new calls open another.
    open: AtomicBool,
    /// The node said it is draining: it answers every call it read before
    /// it closes, so a call still waiting then was never read.
    going_away: AtomicBool,
    heard: Mutex<Instant>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Conn {
    async fn connect(
        addr: &str,
        timeout: Duration,
        keepalive: Keepalive,
    ) -> std::io::Result<Arc<Conn>> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
        stream.set_nodelay(true)?;
        let (read, write): (Reader, Writer) = match &crate::ops::client::security().frames_tls {
            None => {
                let (read, write) = hello(stream, timeout).await?.into_split();
                (Box::new(read), Box::new(write))
            }
            Some(tls) => {
                let name = crate::serving::host_of(addr)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = tokio::time::timeout(
                    timeout,
                    tokio_rustls::TlsConnector::from(Arc::clone(tls)).connect(name, stream),
                )
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake")
                })??;
                let (read, write) = tokio::io::split(hello(stream, timeout).await?);
                (Box::new(read), Box::new(write))
            }
        };
        let (queue, queued) = mpsc::channel(CALLS_QUEUED);
        let conn = Arc::new(Conn {
            queue,
            pending: Mutex::default(),
            next_id: AtomicU64::new(0),
            open: AtomicBool::new(true),
            going_away: AtomicBool::new(false),
            heard: Mutex::new(Instant::now()),
            tasks: Mutex::default(),
        });
        let writer = tokio::spawn(write_loop(write, queued, Arc::downgrade(&conn)));
        let reader = tokio::spawn(read_loop(
            BufReader::with_capacity(16 << 10, read),
            Arc::downgrade(&conn),
        ));
        let pinger = tokio::spawn(ping_loop(Arc::downgrade(&conn), keepalive));
        *lock(&conn.tasks) = vec![
            writer.abort_handle(),
            reader.abort_handle(),
            pinger.abort_handle(),
        ];
        Ok(conn)
    }

    async fn call(
        self: Arc<Self>,
        path: &str,
        headers: &http::HeaderMap,
        message: Bytes,
    ) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (answered, answer) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if !self.open.load(Ordering::Acquire) {
                return Err(Failure::Unread(Status::unavailable(
                    "the connection closed before the call was sent",
                )));
            }
            pending.insert(id, answered);
        }
        let mut frame = BytesMut::with_capacity(64 + message.len());
        wire::put_frame(&mut frame, Kind::Request, id, |out| {
            wire::put_short(out, path.as_bytes());
            wire::put_headers(out, headers);
            out.extend_from_slice(&message);
        });
        let mut guard = CancelOnDrop {
            conn: Arc::clone(&self),
            id,
            armed: true,
        };
        if self.queue.send(frame.freeze()).await.is_err() {
            guard.armed = false;
            lock(&self.pending).remove(&id);
            return Err(Failure::Unread(Status::unavailable(
                "the connection closed before the call was sent",
            )));
        }
        let outcome = answer.await;
        guard.armed = false;
        outcome.unwrap_or_else(|_| Err(Failure::Other(lost("the connection closed"))))
    }

    /// Ends the connection: no new calls on it, and every call waiting
    /// fails with `failure`.
    fn close(&self, failure: impl Fn() -> Failure) {
        self.open.store(false, Ordering::Release);
        let waiting: Vec<_> = lock(&self.pending).drain().collect();
        for (_, answered) in waiting {
            let _ = answered.send(Err(failure()));
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// A call dropped before its answer came (its caller gave up: a deadline,
/// a hedge won elsewhere) tells the node to stop working on it.
struct CancelOnDrop {
    conn: Arc<Conn>,
    id: u64,
    /// Whether the call is still waiting (false once it has its outcome).
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed && lock(&self.conn.pending).remove(&self.id).is_some() {
            // Best effort: a full queue means the node has enough to read.
            let _ = (self.conn.queue).try_send(wire::bare_frame(Kind::Cancel, self.id));
        }
    }
}

/// What tonic makes of a connection that died under a call: the call may
/// have killed the node, so it is not retried elsewhere.
fn lost(why: &str) -> Status {
    Status::unknown(format!("transport error: {why}"))
}

/// The reading half of a connection, over TLS or not.
type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// Its writing half.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Says hello on `stream` ([`wire::MAGIC`]) and waits for the node's: the
/// node says it took the connection before any call is sent. A connection
/// reset before that (one left in the backlog of a listener that closed as
/// its node drained) never reached a node, and a call on it would be taken
/// for lost.
async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    timeout: Duration,
) -> std::io::Result<S> {
    stream.write_all(wire::MAGIC).await?;
    stream.flush().await?;
    let mut hello = [0; wire::MAGIC.len()];
    tokio::time::timeout(timeout, stream.read_exact(&mut hello))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no hello"))??;
    if &hello != wire::MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a node that speaks frames",
        ));
    }
    Ok(stream)
}

async fn write_loop(write: Writer, mut queued: mpsc::Receiver<Bytes>, conn: Weak<Conn>) {
    if let Err(e) = wire::write_frames(write, &mut queued, None).await
        && let Some(conn) = conn.upgrade()
    {
        conn.close(|| Failure::Other(lost(&format!("writing to the node: {e}"))));
    }
}

async fn read_loop(mut read: BufReader<Reader>, conn: Weak<Conn>) {
    let why = loop {
        let frame = match wire::read_frame(&mut read).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break "the node closed the connection".to_string(),
            Err(e) => break format!("reading from the node: {e}"),
        };
        let Some(conn) = conn.upgrade() else { return };
        *lock(&conn.heard) = Instant::now();
        match frame.kind {
            Kind::Response => {
                let answered = lock(&conn.pending).remove(&frame.id);
                if let Some(answered) = answered {
                    let _ = answered.send(decode_answer(frame.payload).map_err(Failure::Other));
                }
            }
            Kind::GoAway => {
                // Calls after the last one the node read never reached it:
                // another replica, or this one's successor, may take them.
                conn.going_away.store(true, Ordering::Release);
                conn.open.store(false, Ordering::Release);
                let unread: Vec<_> = lock(&conn.pending)
                    .extract_if(|&id, _| id > frame.id)
                    .map(|(_, answered)| answered)
                    .collect();
                for answered in unread {
                    let _ = answered.send(Err(Failure::Unread(Status::unavailable(
                        "the node is draining: the call was not read",
                    ))));
                }
            }
            Kind::Ping => {
                let _ = conn.queue.try_send(wire::bare_frame(Kind::Pong, frame.id));
            }
            Kind::Pong | Kind::Request | Kind::Cancel => {}
        }
    };
    if let Some(conn) = conn.upgrade() {
        if conn.going_away.load(Ordering::Acquire) {
            // Calls are written in any order, so one with an id below the
            // last the node read may not have been read: at a drained
            // node's close, every call not answered was not read.
            conn.close(|| {
                Failure::Unread(Status::unavailable(
                    "the node drained and closed without reading the call",
                ))
            });
        } else {
            conn.close(|| Failure::Other(lost(&why)));
        }
    }
}

async fn ping_loop(conn: Weak<Conn>, keepalive: Keepalive) {
    let mut nonce = 0;
    loop {
        tokio::time::sleep(keepalive.interval).await;
        let Some(conn) = conn.upgrade() else { return };
        let silent = lock(&conn.heard).elapsed();
        if silent > keepalive.interval + keepalive.timeout {
            conn.close(|| Failure::Other(lost(&format!("no answer to a ping for {silent:?}"))));
            return;
        }
        nonce += 1;
        let _ = conn.queue.try_send(wire::bare_frame(Kind::Ping, nonce));
    }
}

/// The answer as tonic's client reads one: headers, the message, trailers.
fn decode_answer(mut payload: Bytes) -> Result<http::Response<tonic::body::Body>, Status> {
    let malformed = |e: std::io::Error| Status::internal(format!("a malformed answer: {e}"));
    let headers = wire::get_headers(&mut payload).map_err(malformed)?;
    let trailers = wire::get_headers(&mut payload).map_err(malformed)?;
    let mut frames = Vec::with_capacity(2);
    if !payload.is_empty() {
        frames.push(Ok::<_, Status>(http_body::Frame::data(payload)));
    }
    if !trailers.is_empty() {
        frames.push(Ok(http_body::Frame::trailers(trailers)));
    }
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let mut response = http::Response::new(tonic::body::Body::new(body));
    *response.headers_mut() = headers;
    Ok(response)
}
