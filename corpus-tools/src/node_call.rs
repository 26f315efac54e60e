//! How the CLI opens a channel to a node: the connection bounded in time,
//! and kept under HTTP/2 keepalive, so that a node that stopped answering
//! (stopped with SIGSTOP, its machine gone without a reset) makes a command
//! fail with a reason instead of wait forever.
//!
//! A stopped process's kernel still accepts TCP connections into its
//! backlog, so neither a refused connection nor a TCP timeout ever comes;
//! the HTTP/2 handshake, and later a ping, go unanswered. Loads and
//! publishes may rightly take minutes, so liveness is judged by pings, not
//! by a deadline on the call.

use std::time::Duration;

use anyhow::Context;
use searchtree_node::ops::client::{self, NodeChannel};
use tonic_health::pb::HealthCheckRequest;

use tonic_health::pb::health_client::HealthClient;

/// How long a connection, TCP and TLS and HTTP/2 handshakes, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the CLI pings a node on an open connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection, and the call
/// on it, fail.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to `what` (as "the root", "node", for messages) at `addr`,
/// over which the node has answered a health check: tonic counts a
/// connection made once its own handshake is sent, so the check is what
/// tells a node that answers from one that only accepted.
pub async fn connect(addr: &str, what: &str) -> anyhow::Result<NodeChannel> {
    let endpoint = client::endpoint(addr)
        .with_context(|| format!("{addr:?} is not HOST:PORT"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let answered = async {
        let channel = client::channel(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {what} {addr}"))?,
        );
        // Serving or draining alike: what matters is that it answers.
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .map_err(|s| anyhow::anyhow!("{what} {addr}: {}", describe_status(&s)))?;
        anyhow::Ok(channel)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, answered).await {
        Ok(channel) => channel,
        Err(_) => anyhow::bail!(
            "{what} {addr} did not answer within {} s: is it stopped (kill -STOP), \
             overloaded, or not a searchtree node?",
            CONNECT_TIMEOUT.as_secs()
        ),
    }
}

/// How a failed call's status reads in the CLI's messages: its code, its
/// message, and
/// the transport's own causes when the call failed below gRPC (tonic says
/// only "http2 error"; the cause says, e.g., that a keepalive ping went
/// unanswered).
pub fn describe_status(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_node_that_accepts_but_never_answers_is_named_after_the_timeout() {
        // A listening socket nobody serves: the kernel completes the TCP
        // handshake, as for a stopped process, and nothing more happens.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let started = std::time::Instant::now();
        let err = connect(&addr, "the root").await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("the root {addr} did not answer within 5 s")),
            "{err}"
        );
        assert!(started.elapsed() < CONNECT_TIMEOUT * 3);
    }
}
