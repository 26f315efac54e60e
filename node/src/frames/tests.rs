//! Frames over real loopback sockets: a call and its answer, errors,
//! cancellation, the drain hand-over, a node dying under a call.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::server::TcpConnectInfo;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;

use super::server::{CallService, serve_connection};
use super::{FrameChannel, Keepalive, wire};

const KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(30),
    timeout: Duration::from_secs(20),
};

/// Serves `service` on a loopback port until `stop` says true; the listener
/// closes then too.
async fn node(service: impl CallService + Sync, max_calls: usize) -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut until_stop = stopped.clone();
        loop {
            let (mut stream, peer) = tokio::select! {
                _ = until_stop.wait_for(|s| *s) => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            let (service, mut stopped) = (service.clone(), stopped.clone());
            tokio::spawn(async move {
                let mut magic = [0; 8];
                stream.read_exact(&mut magic).await.unwrap();
                assert_eq!(&magic, wire::MAGIC);
                let info = TcpConnectInfo {
                    local_addr: stream.local_addr().ok(),
                    remote_addr: Some(peer),
                };
                serve_connection(stream, info, service, max_calls, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
            });
        }
    });
    (addr, stop)
}

fn client(addr: &str) -> HealthClient<FrameChannel> {
    HealthClient::new(FrameChannel::new(addr, Duration::from_secs(1), KEEPALIVE))
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

/// The standard health service, saying it serves.
async fn health_routes() -> tonic::service::Routes {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::service::Routes::new(health).prepare()
}

/// The health service answering after `delay`, noting in `dropped` a call
/// dropped before its answer.
async fn slow_health(delay: Duration, dropped: Arc<AtomicBool>) -> impl CallService + Sync {
    struct Unfinished(Arc<AtomicBool>, bool);
    impl Drop for Unfinished {
        fn drop(&mut self) {
            if !self.1 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }
    let routes = health_routes().await;
    tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let dropped = Arc::clone(&dropped);
        let routes = routes.clone();
        async move {
            let mut guard = Unfinished(dropped, false);
            tokio::time::sleep(delay).await;
            guard.1 = true;
            routes.oneshot(request).await
        }
    })
}

/// A node refusing every call with `status`.
fn refusing(status: fn() -> tonic::Status) -> impl CallService + Sync {
    tower::service_fn(
        move |_request: http::Request<tonic::body::Body>| async move {
            Ok::<_, Infallible>(status().into_http::<tonic::body::Body>())
        },
    )
}

#[tokio::test]
async fn a_call_goes_and_its_answer_comes_back() {
    let (addr, _stop) = node(health_routes().await, 16).await;
    let mut health = client(&addr);
    for _ in 0..3 {
        let answer = health.check(check()).await.unwrap().into_inner();
        assert_eq!(
            answer.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
    // Another service's method: the routes say so, as over HTTP/2.
    let mut other = tonic_health::pb::health_client::HealthClient::new(FrameChannel::new(
        &addr,
        Duration::from_secs(1),
        KEEPALIVE,
    ));
    let status = other
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_refusal_comes_back_with_its_code_and_message() {
    let service = refusing(|| tonic::Status::resource_exhausted("busy: try another replica"));
    let (addr, _stop) = node(service, 16).await;
    let status = client(&addr).check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "busy: try another replica");
}

#[tokio::test]
async fn a_call_dropped_by_its_caller_stops_at_the_node() {
    let dropped = Arc::new(AtomicBool::new(false));
    let service = slow_health(Duration::from_secs(30), Arc::clone(&dropped)).await;
    let (addr, _stop) = node(service, 16).await;
    let mut health = client(&addr);
    let gave_up = tokio::time::timeout(Duration::from_millis(100), health.check(check())).await;
    assert!(gave_up.is_err(), "the call should still be running");
    for _ in 0..200 {
        if dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the node kept working on a call its caller dropped");
}

#[tokio::test]
async fn past_its_bound_a_connection_refuses_calls() {
    let service = slow_health(Duration::from_millis(500), Arc::default()).await;
    let (addr, _stop) = node(service, 1).await;
    let health = client(&addr);
    let (mut first, mut second) = (health.clone(), health.clone());
    let slow = tokio::spawn(async move { first.check(check()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = second.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("more than 1 calls"), "{status:?}");
    assert!(slow.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_draining_node_answers_the_calls_it_read_then_refuses_new_ones() {
    let service = slow_health(Duration::from_millis(300), Arc::default()).await;
    let (addr, stop) = node(service, 16).await;
    let mut health = client(&addr);
    let mut in_flight = health.clone();
    let first = tokio::spawn(async move { in_flight.check(check()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(true).unwrap();
    // Read before the drain: answered.
    assert!(first.await.unwrap().is_ok());
    // After it: the connection is closed, and so is the listener.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = health.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_node_that_dies_under_a_call_is_a_lost_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut magic = [0; 8];
        stream.read_exact(&mut magic).await.unwrap();
        stream.write_all(wire::MAGIC).await.unwrap();
        // The call, then the node is gone.
        let mut call = [0; 16];
        let _ = stream.read(&mut call).await;
        drop(stream);
    });
    let status = client(&addr).check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(
        status.message().starts_with("transport error"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_connection_closed_before_the_nodes_hello_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        // Taken, then closed unanswered: as a listener closing with
        // connections in its backlog.
        let (stream, _) = listener.accept().await.unwrap();
        drop(stream);
    });
    let status = client(&addr).check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_call_a_draining_node_did_not_read_goes_to_its_successor() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let routes = health_routes().await;
    tokio::spawn(async move {
        // The first connection's node drains having read no call: it says
        // so (GoAway naming call 0) and closes.
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut magic = [0; 8];
        stream.read_exact(&mut magic).await.unwrap();
        stream.write_all(wire::MAGIC).await.unwrap();
        let call = wire::read_frame(&mut stream).await.unwrap().unwrap();
        assert_eq!(call.kind, wire::Kind::Request);
        let mut goaway = bytes::BytesMut::new();
        wire::put_frame(&mut goaway, wire::Kind::GoAway, 0, |_| {});
        stream.write_all(&goaway).await.unwrap();
        drop(stream);
        // Its successor on the same address answers.
        let (mut stream, peer) = listener.accept().await.unwrap();
        stream.read_exact(&mut magic).await.unwrap();
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        serve_connection(stream, info, routes, 16, std::future::pending()).await;
    });
    let answer = client(&addr).check(check()).await.unwrap().into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn a_caller_that_stops_reading_is_closed() {
    // Answers of 1 MiB, to a caller that sends 64 calls and reads nothing.
    let service = tower::service_fn(|_request: http::Request<tonic::body::Body>| async {
        let body = http_body_util::Full::new(bytes::Bytes::from(vec![0u8; 1 << 20]));
        Ok::<_, Infallible>(http::Response::new(tonic::body::Body::new(body)))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let (mut stream, peer) = listener.accept().await.unwrap();
        let mut magic = [0; 8];
        stream.read_exact(&mut magic).await.unwrap();
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        serve_connection(stream, info, service, 1024, std::future::pending()).await;
    });
    let mut caller = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut calls = bytes::BytesMut::new();
    calls.extend_from_slice(wire::MAGIC);
    for id in 1..=64 {
        wire::put_frame(&mut calls, wire::Kind::Request, id, |out| {
            wire::put_short(out, b"/grpc.health.v1.Health/Check");
            wire::put_headers(out, &http::HeaderMap::new());
        });
    }
    tokio::io::AsyncWriteExt::write_all(&mut caller, &calls)
        .await
        .unwrap();
    // Once its socket is full, the node waits STALLED_AFTER, then closes.
    let closed = tokio::time::timeout(
        super::server::STALLED_AFTER + Duration::from_secs(20),
        served,
    )
    .await;
    assert!(closed.is_ok(), "the node kept a caller that reads nothing");
    drop(caller);
}

#[tokio::test]
async fn a_call_that_panics_is_answered_internal_and_frees_its_place() {
    let panicking = tower::service_fn(|_request: http::Request<tonic::body::Body>| async move {
        if true {
            panic!("a defect in the service");
        }
        Ok::<_, Infallible>(tonic::Status::ok("").into_http::<tonic::body::Body>())
    });
    // One call at a time: a panic that kept its place would refuse the next.
    let (addr, _stop) = node(panicking, 1).await;
    let mut health = client(&addr);
    for _ in 0..3 {
        let status = health.check(check()).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(
            status.message().contains("failed while serving"),
            "{status:?}"
        );
    }
}

#[tokio::test]
async fn a_caller_that_reuses_a_live_call_id_is_closed() {
    let service = slow_health(Duration::from_secs(5), Arc::default()).await;
    let (addr, _stop) = node(service, 16).await;
    let mut caller = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut calls = bytes::BytesMut::new();
    calls.extend_from_slice(wire::MAGIC);
    for _ in 0..2 {
        wire::put_frame(&mut calls, wire::Kind::Request, 7, |out| {
            wire::put_short(out, b"/grpc.health.v1.Health/Check");
            wire::put_headers(out, &http::HeaderMap::new());
        });
    }
    caller.write_all(&calls).await.unwrap();
    // The hello, then the end of the connection: the first call is
    // dropped with it, long before its 5 s answer.
    let mut read = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), caller.read_to_end(&mut read)).await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert_eq!(read, wire::MAGIC);
}
