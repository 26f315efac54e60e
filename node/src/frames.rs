//! Calls between nodes without HTTP/2: searchtree's own frames over TCP.
//!
//! A query crosses every level of the tree twice (search, then fetch), and
//! on a small machine an HTTP/2 round trip (its header, data and trailer
//! frames, flow control, a connection task on each side) costs more than a
//! short search (BENCHMARKS.md, "The floor under every hop"). Between its
//! own nodes, the tree sends the same gRPC calls as frames instead: a
//! request frame carries the path, headers and message, an answer frame
//! the headers, message and trailers, one write each way. The node serves
//! them with its gRPC stack unchanged (credentials, permits, traces,
//! timing, deadlines), on the same port: a connection that starts with
//! [`wire::MAGIC`] is frames, any other is HTTP/2. Over TLS the handshake
//! tells them apart (ALPN [`crate::ops::tls::FRAMES_ALPN`]), and frames go
//! inside TLS. Clients of the root use gRPC as ever.

pub mod client;
pub mod server;
pub mod wire;

#[cfg(test)]
mod tests;

pub use client::{FrameChannel, Keepalive};

/// Locks `mutex`, taking it over from a holder that panicked: the tables
/// behind these locks stay consistent whatever a call did.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
