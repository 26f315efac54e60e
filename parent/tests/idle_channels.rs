//! A parent's long-lived channel to a child survives the child's idle
//! timeout: children ping their callers well within it, so a live channel is
//! never cut; and should a child close a connection anyway, the next call
//! reconnects and succeeds.

use std::sync::Arc;
use std::time::Duration;

use searchtree_node::serving::connections::{ConnectionStats, Incoming};
use searchtree_node::serving::{self, ConnectionLimits};
use searchtree_parent::child::{Child, GrpcChild};
use tokio::net::TcpListener;

const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves the standard health service on a fresh port with a short idle
/// timeout, through `server` (which sets the HTTP/2 pings, or not).
async fn serve_health(server: tonic::transport::Server) -> (String, Arc<ConnectionStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let incoming = Incoming::new(
        listener,
        ConnectionLimits {
            max_connections: 16,
            idle_timeout: IDLE_TIMEOUT,
        },
    );
    let stats = incoming.stats();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let mut server = server;
    tokio::spawn(async move {
        server
            .add_service(health)
            .serve_with_incoming(incoming.into_stream())
            .await
            .unwrap();
    });
    (addr, stats)
}

#[tokio::test]
async fn a_child_pinging_its_caller_never_closes_a_quiet_channel() {
    let limits = ConnectionLimits {
        max_connections: 16,
        idle_timeout: IDLE_TIMEOUT,
    };
    let (addr, stats) = serve_health(serving::grpc_server(&limits)).await;
    let child = GrpcChild::new(&addr, vec![0]).unwrap();
    child.check_health().await.unwrap();
    tokio::time::sleep(IDLE_TIMEOUT * 3).await;
    child.check_health().await.unwrap();
    assert_eq!(stats.idle_closed(), 0, "the quiet channel was cut");
    assert_eq!(stats.accepted(), 1, "the channel had to reconnect");
}

#[tokio::test]
async fn a_call_after_a_child_closed_an_idle_connection_reconnects_and_succeeds() {
    // No HTTP/2 pings from this server: the idle timeout does fire.
    let (addr, stats) = serve_health(tonic::transport::Server::builder()).await;
    let child = GrpcChild::new(&addr, vec![0]).unwrap();
    child.check_health().await.unwrap();
    tokio::time::sleep(IDLE_TIMEOUT * 2).await;
    assert_eq!(stats.idle_closed(), 1, "the connection was not closed");
    for _ in 0..3 {
        child.check_health().await.unwrap();
    }
    assert_eq!(stats.accepted(), 2);
}
