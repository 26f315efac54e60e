//! The frames on a connection, and how they are written and read.
//!
//! A connection starts with [`MAGIC`] from the caller, so that a node can
//! tell it from an HTTP/2 connection on the same port, and the node's
//! [`MAGIC`] back (its hello) before the caller sends any call. Every frame after it
//! is `length (u32) | kind (u8) | id (u64) | payload`, big-endian, `length`
//! counting what follows it. A call's request and its answer carry a gRPC
//! call as HTTP would (path, headers, the length-prefixed message, trailers),
//! so the node's gRPC stack serves it unchanged.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a caller sends first on a connection of frames. An HTTP/2
/// connection starts with `PRI * HTTP/2.0`, a TLS one with a handshake
/// record (0x16): neither can be mistaken for it.
pub const MAGIC: &[u8; 8] = b"STFRAME1";

/// The largest frame either side accepts: well above the largest search
/// message a node sends or takes (4 MiB, tonic's default), and small enough
/// that a corrupt length cannot make a node allocate gigabytes.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A call (caller → node): path, headers, the gRPC message.
    Request = 1,
    /// The caller no longer wants the answer to call `id`.
    Cancel = 2,
    /// The answer to call `id` (node → caller): headers, trailers, body.
    Response = 3,
    /// Are you there? (either way; `id` is echoed in the [`Kind::Pong`]).
    Ping = 4,
    /// Yes.
    Pong = 5,
    /// The node is draining: it read no call after `id`, answers those it
    /// read, then closes. Later calls go to a new connection.
    GoAway = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Cancel,
            3 => Kind::Response,
            4 => Kind::Ping,
            5 => Kind::Pong,
            6 => Kind::GoAway,
            _ => return None,
        })
    }
}

/// One frame read off a connection.
#[derive(Debug)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// The call it belongs to (or the ping's, or the last call read).
    pub id: u64,
    /// What it carries; empty for cancels, pings and goaways.
    pub payload: Bytes,
}

/// Appends a frame of `kind` for `id` whose payload `write_payload` writes.
pub fn put_frame(
    out: &mut BytesMut,
    kind: Kind,
    id: u64,
    write_payload: impl FnOnce(&mut BytesMut),
) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(kind as u8);
    out.put_u64(id);
    write_payload(out);
    let length = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

/// A frame of `kind` for `id` with nothing in it: a cancel, ping, pong or
/// goaway.
pub fn bare_frame(kind: Kind, id: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(13);
    put_frame(&mut out, kind, id, |_| {});
    out.freeze()
}

/// Reads the next frame; `Ok(None)` at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Frame>> {
    let length = match reader.read_u32().await {
        Ok(n) => n as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if !(9..=MAX_FRAME_BYTES).contains(&length) {
        return Err(invalid(format!(
            "a frame of {length} bytes (frames are 9 to {MAX_FRAME_BYTES})"
        )));
    }
    let mut rest = BytesMut::zeroed(length);
    reader.read_exact(&mut rest).await?;
    let mut rest = rest.freeze();
    let kind = rest.get_u8();
    let kind = Kind::from_u8(kind).ok_or_else(|| invalid(format!("unknown frame kind {kind}")))?;
    let id = rest.get_u64();
    Ok(Some(Frame {
        kind,
        id,
        payload: rest,
    }))
}

/// Writes a header map as `count (u16) | (name len u16, name, value len u16,
/// value)*`.
pub fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    let count = u16::try_from(headers.len()).unwrap_or(u16::MAX);
    out.put_u16(count);
    for (name, value) in headers.iter().take(count as usize) {
        put_short(out, name.as_str().as_bytes());
        put_short(out, value.as_bytes());
    }
}

/// Writes `bytes` after its length as a u16 (cut at 65,535 bytes).
pub fn put_short(out: &mut BytesMut, bytes: &[u8]) {
    let n = bytes.len().min(u16::MAX as usize);
    out.put_u16(n as u16);
    out.put_slice(&bytes[..n]);
}

/// Reads what [`put_short`] wrote.
pub fn get_short(payload: &mut Bytes) -> std::io::Result<Bytes> {
    if payload.remaining() < 2 {
        return Err(invalid("a frame ends inside a length"));
    }
    let n = payload.get_u16() as usize;
    if payload.remaining() < n {
        return Err(invalid("a frame ends inside a field"));
    }
    Ok(payload.split_to(n))
}

/// Reads what [`put_headers`] wrote.
pub fn get_headers(payload: &mut Bytes) -> std::io::Result<HeaderMap> {
    if payload.remaining() < 2 {
        return Err(invalid("a frame ends before its headers"));
    }
    let count = payload.get_u16() as usize;
    // Room for what the rest of the frame can hold (a header takes at
    // least its two lengths), not for what the count claims: the
    // header map refuses, by panicking, a capacity past its own bound.
    let mut headers = HeaderMap::try_with_capacity(count.min(payload.remaining() / 4))
        .map_err(|e| invalid(format!("header count {count}: {e}")))?;
    for _ in 0..count {
        let name = get_short(payload)?;
        let value = get_short(payload)?;
        let name =
            HeaderName::from_bytes(&name).map_err(|e| invalid(format!("header name: {e}")))?;
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|e| invalid(format!("header value: {e}")))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The most bytes gathered into one write.
const WRITE_BATCH_BYTES: usize = 64 << 10;

/// Writes the frames `queued` hands over as they come, those that queued
/// meanwhile together in one write, until the queue closes; the first
/// write error ends it, and so does a peer that takes no byte for `stall`
/// (when given) while frames wait.
pub async fn write_frames<W: AsyncWrite>(
    write: W,
    queued: &mut tokio::sync::mpsc::Receiver<Bytes>,
    stall: Option<std::time::Duration>,
) -> std::io::Result<()> {
    tokio::pin!(write);
    let mut batch = BytesMut::new();
    while let Some(first) = queued.recv().await {
        match queued.try_recv() {
            Err(_) => write_all(&mut write, &first, stall).await?,
            Ok(second) => {
                batch.clear();
                batch.put_slice(&first);
                batch.put_slice(&second);
                while batch.len() < WRITE_BATCH_BYTES {
                    match queued.try_recv() {
                        Ok(more) => batch.put_slice(&more),
                        Err(_) => break,
                    }
                }
                write_all(&mut write, &batch, stall).await?;
            }
        }
    }
    Ok(())
}

/// Writes all of `bytes`, each partial write within `stall` (if given).
async fn write_all<W: AsyncWrite + Unpin>(
    write: &mut W,
    mut bytes: &[u8],
    stall: Option<std::time::Duration>,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = match stall {
            None => write.write(bytes).await?,
            Some(stall) => tokio::time::timeout(stall, write.write(bytes))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the peer read none of its answers for {stall:?}"),
                    )
                })??,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    // Nothing over TCP; over TLS, the last record out of the session.
    write.flush().await
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_read_back_as_written() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_static("250m"));
        headers.append("x-two", HeaderValue::from_static("a"));
        headers.append("x-two", HeaderValue::from_static("b"));
        let mut out = BytesMut::new();
        put_frame(&mut out, Kind::Request, 7, |out| {
            put_short(out, b"/searchtree.v1.Search/Search");
            put_headers(out, &headers);
            out.put_slice(b"\0\0\0\0\x02hi");
        });
        put_frame(&mut out, Kind::Cancel, 7, |_| {});
        let mut reader = &out[..];
        let frame = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!((frame.kind, frame.id), (Kind::Request, 7));
        let mut payload = frame.payload;
        assert_eq!(
            &get_short(&mut payload).unwrap()[..],
            b"/searchtree.v1.Search/Search"
        );
        assert_eq!(get_headers(&mut payload).unwrap(), headers);
        assert_eq!(&payload[..], b"\0\0\0\0\x02hi");
        let frame = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(
            (frame.kind, frame.id, frame.payload.len()),
            (Kind::Cancel, 7, 0)
        );
        assert!(read_frame(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn corrupt_frames_are_errors_not_allocations() {
        let mut huge = BytesMut::new();
        huge.put_u32(u32::MAX);
        let err = read_frame(&mut &huge[..]).await.unwrap_err();
        assert!(err.to_string().contains("frames are 9 to"), "{err}");
        let mut unknown = BytesMut::new();
        put_frame(&mut unknown, Kind::Ping, 1, |_| {});
        unknown[4] = 99;
        let err = read_frame(&mut &unknown[..]).await.unwrap_err();
        assert!(err.to_string().contains("unknown frame kind 99"), "{err}");
        let mut short = Bytes::from_static(b"\0\x05ab");
        assert!(get_short(&mut short).is_err());
        // A count of headers far past what the frame holds is refused as
        // the frame ending early, not taken as a capacity.
        let mut lying = Bytes::from_static(b"\xff\xff\0\x01a\0\x01b");
        let err = get_headers(&mut lying).unwrap_err();
        assert!(err.to_string().contains("ends inside a length"), "{err}");
    }
}
