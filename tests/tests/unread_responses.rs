//! A client that stalls its calls cannot keep other clients out.
//!
//! It opens connections with an HTTP/2 receive window of 0 and sends call
//! after call: every response stays in the node, waiting for a window that
//! never opens — or it sends each call's headers and never its body — until
//! the node's bound on live calls is reached. Then a client that sends and
//! reads as it goes must still be served (the connection with the most
//! calls stalled on their client is closed to make room), and the node
//! stays up.

use bytes::Bytes;
use searchtree_node::serving::connections::peers::STALLED_AFTER;
use searchtree_proto::pb::GetStatsRequest;
use searchtree_proto::pb::node_stats_client::NodeStatsClient;
use searchtree_tests::{client, fixture, node_addr, search, start_sharded_tree};
use tokio::net::TcpStream;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// The node's bound on live calls (`searchtree_node::ops::responses`).
const BOUND: usize = searchtree_node::ops::responses::MAX_LIVE_RESPONSES;

/// Connections the reader-less client opens, and the calls it sends on
/// each per round: rounds go on until the node refuses one, the bound
/// reached. Fewer than a connection's stream limit (1,024) are held on any.
const CONNECTIONS: usize = 4;
const CALLS_PER_ROUND: usize = 100;

/// An HTTP/2 connection whose streams never get a byte of window.
async fn unread_connection(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .max_concurrent_streams(1024)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

/// How the client holds its calls up.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stall {
    /// It sends whole requests and never reads an answer.
    Answers,
    /// It sends each request's headers and never its body.
    Requests,
}

/// Sends one `GetStats` call (an empty message) on `send`, whole or, with
/// `Stall::Requests`, its headers only.
async fn get_stats(
    send: &mut h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    stall: Stall,
) -> Result<(h2::client::ResponseFuture, Option<h2::SendStream<Bytes>>), h2::Error> {
    let ready = send.clone().ready().await?;
    *send = ready;
    let request = http::Request::post(format!("http://{addr}/searchtree.v1.NodeStats/GetStats"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = send.send_request(request, false)?;
    if stall == Stall::Requests {
        // Kept open: dropping it would end the request.
        return Ok((response, Some(body)));
    }
    // A gRPC frame: not compressed, length 0.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)?;
    Ok((response, None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_cannot_keep_others_out() {
    stalling_client_cannot_keep_others_out(Stall::Answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_requests_cannot_keep_others_out() {
    stalling_client_cannot_keep_others_out(Stall::Requests).await;
}

async fn stalling_client_cannot_keep_others_out(stall: Stall) {
    let fx = fixture(TMP);
    let tree = start_sharded_tree(fx).await;
    let leaf = node_addr(&tree, "leaf-0");

    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(unread_connection(leaf).await);
    }
    // Calls are kept: dropping one would cancel its stream. A connection
    // the node closes meanwhile (to serve one stalling less: another of
    // these, or a parent's call) loses its calls and leaves the rotation.
    let mut held = Vec::new();
    let mut refused = 0;
    let mut alive: Vec<bool> = vec![true; CONNECTIONS];
    for _ in 0..(2 * BOUND / CALLS_PER_ROUND) {
        let mut round = Vec::new();
        for (i, (send, _)) in connections.iter_mut().enumerate() {
            for _ in 0..CALLS_PER_ROUND {
                if !alive[i] {
                    break;
                }
                match get_stats(send, leaf, stall).await {
                    Ok(call) => round.push(call),
                    Err(_) => alive[i] = false,
                }
            }
        }
        // A call past the bound is refused at once, in its head (heads are
        // not flow-controlled). An answer with a message to send holds a
        // live call and its head comes too; a call without its request's
        // body never gets a head.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for (response, body) in round {
            let mut response = response;
            let head = futures::FutureExt::now_or_never(&mut response);
            match head {
                Some(Ok(head)) => match head.headers().get("grpc-status") {
                    None => held.push((Some(head), None, body)),
                    Some(status) => {
                        assert_eq!(status, "8", "refused as RESOURCE_EXHAUSTED: {head:?}");
                        refused += 1;
                    }
                },
                Some(Err(_)) => {} // its connection was closed
                None => held.push((None, Some(response), body)),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(
        refused > 0,
        "the bound on live calls ({BOUND}) was not reached"
    );
    assert!(
        alive.iter().any(|a| *a),
        "every stalling connection was closed"
    );
    // Long enough that the held calls count as stalled on their client.
    tokio::time::sleep(STALLED_AFTER + std::time::Duration::from_millis(200)).await;
    // A client that reads its answers is still served, by that leaf and
    // through the tree.
    let mut stats = NodeStatsClient::connect(format!("http://{leaf}"))
        .await
        .expect("connect");
    stats
        .get_stats(GetStatsRequest {})
        .await
        .expect("a reading client is served while the bound is full");
    let mut node = client(leaf).await;
    search(&mut node, "paris", 10).await.expect("a search too");

    // Room was made by closing unread connections, not all of them.
    let mut closed = 0;
    for (_, connection) in connections {
        let ended = tokio::time::timeout(std::time::Duration::from_millis(500), connection).await;
        if ended.is_ok() {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no stalling connection was closed");
    assert!(closed < CONNECTIONS, "every stalling connection was closed");
    drop(held);
    drop(tree);
}
