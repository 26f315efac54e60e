//! Tests of the accept path and the idle timeout.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::*;

#[test]
fn the_default_cap_keeps_a_reserve_of_descriptors() {
    assert_eq!(cap_for_descriptor_limit(1024), 896);
    assert_eq!(cap_for_descriptor_limit(256), 192);
    assert_eq!(cap_for_descriptor_limit(100), 50);
    assert_eq!(cap_for_descriptor_limit(1), 1);
    assert_eq!(cap_for_descriptor_limit(u64::MAX), 917_504);
    let limits = ConnectionLimits::default();
    assert!(limits.max_connections >= 1);
    assert_eq!(limits.keepalive_interval(), Duration::from_secs(60));
    assert_eq!(limits.keepalive_timeout(), Duration::from_secs(20));
    let short = ConnectionLimits {
        idle_timeout: Duration::from_secs(2),
        ..limits
    };
    assert_eq!(short.keepalive_interval(), Duration::from_secs(1));
    assert_eq!(short.keepalive_timeout(), Duration::from_secs(1));
}

#[test]
fn warnings_are_rate_limited() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        tokio::time::advance(WARN_EVERY).await;
        assert_eq!(throttle.ready(), Some(2));
        assert_eq!(throttle.ready(), None);
    });
}

/// Echoes what `conn` reads until it ends, then drops it.
async fn echo(mut conn: Connection) {
    let mut buf = [0u8; 64];
    while let Ok(n) = conn.read(&mut buf).await {
        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    stream.write_all(message).await?;
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    assert_eq!(back, message);
    Ok(())
}

/// Whether the server ended `stream` within a second (EOF or reset).
async fn closed_at_once(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn at_the_cap_a_new_connection_is_closed_at_once_and_the_others_keep_working() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = Incoming::new(
        listener,
        ConnectionLimits {
            max_connections: 2,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        },
    );
    let stats = incoming.stats();
    tokio::spawn(async move {
        loop {
            let conn = incoming.accept().await;
            assert!(conn.io.nodelay().unwrap(), "TCP_NODELAY is kept");
            tokio::spawn(echo(conn));
        }
    });

    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut a, b"a").await.unwrap();
    round_trip(&mut b, b"b").await.unwrap();

    let mut refused = TcpStream::connect(addr).await.unwrap();
    assert!(closed_at_once(&mut refused).await, "not closed at the cap");
    assert_eq!(stats.refused(), 1);
    round_trip(&mut a, b"still a").await.unwrap();
    round_trip(&mut b, b"still b").await.unwrap();

    // A closed connection gives its permit back.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = TcpStream::connect(addr).await.unwrap();
        if round_trip(&mut c, b"c").await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the freed permit was not reused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.accepted(), 3);
    round_trip(&mut b, b"b again").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_closed_once_nothing_moved_for_the_idle_timeout() {
    let timeout = Duration::from_secs(10);
    let stats = Arc::new(ConnectionStats::default());
    let permits = Arc::new(Semaphore::new(1));
    let permit = Arc::clone(&permits).try_acquire_owned().unwrap();
    let (mut peer, server) = tokio::io::duplex(64);
    let mut conn = Connection::new(server, permit, timeout, Arc::clone(&stats), None);
    let start = Instant::now();
    let mut buf = [0u8; 8];

    // Bytes read and bytes written both count as progress.
    tokio::time::advance(Duration::from_secs(8)).await;
    peer.write_all(b"x").await.unwrap();
    assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
    tokio::time::advance(Duration::from_secs(8)).await;
    conn.write_all(b"y").await.unwrap();
    tokio::time::advance(Duration::from_secs(8)).await;
    // 24 s in, 8 s after the last byte: not idle yet.
    let early = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await;
    assert!(early.is_err(), "closed early: {early:?}");
    assert_eq!(stats.idle_closed(), 0);

    let err = conn.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_secs(26));
    assert_eq!(stats.idle_closed(), 1);
    // It stays closed, and its permit is held until it is dropped.
    assert!(conn.write_all(b"z").await.is_err());
    assert_eq!(permits.available_permits(), 0);
    drop(conn);
    assert_eq!(permits.available_permits(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_tcp_connection_is_closed_at_the_idle_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = Incoming::new(
        listener,
        ConnectionLimits {
            max_connections: 4,
            idle_timeout: Duration::from_secs(30),
        },
    );
    let stats = incoming.stats();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let conn = incoming.accept().await;
    let start = Instant::now();
    let served = tokio::spawn(echo(conn));
    let mut buf = [0u8; 1];
    // The server ends the connection: the client reads EOF.
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    served.await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(30));
    assert_eq!(stats.idle_closed(), 1);
    assert_eq!(incoming.open(), 0);
}

#[tokio::test]
async fn at_the_cap_the_connection_longest_without_a_call_makes_room() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = Incoming::with_peers(
        listener,
        ConnectionLimits {
            max_connections: 2,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        },
    );
    let stats = incoming.stats();
    let peers = incoming.peers().expect("with peers");
    tokio::spawn(async move {
        loop {
            let conn = incoming.accept().await;
            tokio::spawn(echo(conn));
        }
    });

    let mut a = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut a, b"a").await.unwrap();
    tokio::time::sleep(EVICT_AFTER_IDLE + Duration::from_millis(200)).await;
    let mut b = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut b, b"b").await.unwrap();
    // `a` carried bytes but no call for over a second: it gives way; `b`,
    // just opened, would not.
    let mut c = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut c, b"c").await.unwrap();
    assert!(closed_at_once(&mut a).await, "the idlest was not closed");
    assert_eq!((stats.evicted(), stats.refused()), (1, 0));
    round_trip(&mut b, b"still b").await.unwrap();

    // Connections with a call alive, or one started too recently, stay;
    // the newcomer is refused.
    let b_addr = b.local_addr().unwrap();
    let c_addr = c.local_addr().unwrap();
    let _b_call = peers.get(addr, b_addr).expect("b is known").started();
    let c_load = peers.get(addr, c_addr).expect("c is known");
    let (c_call, _) = c_load.started();
    c_load.ended(c_call);
    let mut d = TcpStream::connect(addr).await.unwrap();
    assert!(closed_at_once(&mut d).await, "not refused at the cap");
    assert_eq!((stats.evicted(), stats.refused()), (1, 1));
    round_trip(&mut b, b"b again").await.unwrap();
    round_trip(&mut c, b"c again").await.unwrap();
}
