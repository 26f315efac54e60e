//! Replicas over real processes: with one replica of every shard killed under
//! steady load no query fails and coverage stays full; restarted replicas get
//! traffic again within two health intervals, gradually.

use std::sync::Arc;
use std::time::{Duration, Instant};

use searchtree::bundled;
use searchtree::tree::topology::Topology;
use searchtree_bench::record::Recorder;
use searchtree_bench::schedule::{Arrival, Live, LoadConfig, Pacing, open_loop};
use searchtree_bench::target::GrpcTarget;
use searchtree_tests::{SHARDS, client, counter, fixture, node_addr, search, start_tree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const HEALTH_INTERVAL: Duration = Duration::from_millis(100);

async fn requests(addr: std::net::SocketAddr) -> u64 {
    counter(addr, "requests").await
}

/// Runs an open-loop load against `target` in the background.
fn background_load(
    target: &Arc<GrpcTarget>,
    queries: &Arc<Vec<String>>,
    rate: f64,
    duration: Duration,
) -> tokio::task::JoinHandle<(Recorder, Duration)> {
    let (target, queries) = (Arc::clone(target), Arc::clone(queries));
    let config = load(rate, duration);
    tokio::spawn(
        async move { open_loop(target, queries, &config, Arc::new(Live::default())).await },
    )
}

fn load(rate: f64, duration: Duration) -> LoadConfig {
    LoadConfig {
        rate,
        arrival: Arrival::Uniform,
        seed: 1,
        zipf: None,
        duration,
        warmup: Duration::ZERO,
        max_in_flight: None,
        timeout: Duration::from_secs(10),
        top_k: 10,
        budget_ms: 2_000,
        profile: false,
        pacing: Pacing::Thread,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_of_every_shard_loses_nothing_and_they_come_back_gradually() {
    let fx = fixture(TMP);
    // 4 shards, 2 parents, 2 replicas per shard, next to the fixture's shards.
    let mut topology = Topology::generate(SHARDS, 2, 2).unwrap();
    topology.routing.health_interval_ms = Some(HEALTH_INTERVAL.as_millis() as u64);
    // The load repeats the bundled queries: with the result cache on, the
    // restarted replicas would see no traffic at all.
    topology.root.cache_mb = Some(0);
    for parent in &mut topology.parents {
        parent.cache_mb = Some(0);
    }
    let path = fx.sharded.join("replicas.toml");
    std::fs::write(&path, topology.to_toml()).unwrap();
    let mut tree = start_tree(&path).await;

    // Every shard answers through one of its replicas, named in the response.
    let mut root = client(tree.root_addr()).await;
    let r = search(&mut root, "river", 10).await.unwrap();
    let c = r.coverage.unwrap();
    assert_eq!(c.sources.len(), SHARDS as usize);
    let leaf_addrs: Vec<String> = tree
        .addresses()
        .iter()
        .map(|(_, a)| a.to_string())
        .collect();
    assert!(
        c.sources.iter().all(|s| leaf_addrs.contains(&s.replica)),
        "{:?}",
        c.sources
    );

    // Steady load; one replica of every shard is killed a second in.
    let target = Arc::new(
        GrpcTarget::connect(&tree.root_addr().to_string(), 2)
            .await
            .unwrap(),
    );
    let queries = Arc::new(
        bundled::queries()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
    );
    let running = background_load(&target, &queries, 60.0, Duration::from_secs(4));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for s in 0..SHARDS {
        tree.stop_node(&format!("leaf-{s}-0")).await.unwrap();
    }
    let (recorded, _) = running.await.unwrap();
    assert!(recorded.sent >= 200, "{}", recorded.sent);
    assert_eq!(
        recorded.errors.values().sum::<u64>(),
        0,
        "{:?}",
        recorded.errors
    );
    assert_eq!(recorded.completed, recorded.sent);
    assert_eq!(recorded.coverage_min, 1.0, "a shard went missing");
    assert_eq!(recorded.partial, 0);

    // Restart them: each is back in rotation within two health intervals
    // (plus one for the phase of the checker), then gets traffic gradually.
    let parents = [node_addr(&tree, "parent-0"), node_addr(&tree, "parent-1")];
    let returns_before =
        counter(parents[0], "returns").await + counter(parents[1], "returns").await;
    let running = background_load(&target, &queries, 100.0, Duration::from_millis(1500));
    for s in 0..SHARDS {
        tree.restart_node(&format!("leaf-{s}-0")).await.unwrap();
    }
    let restarted_at = Instant::now();
    loop {
        let returns = counter(parents[0], "returns").await + counter(parents[1], "returns").await;
        if returns - returns_before == u64::from(SHARDS) {
            break;
        }
        assert!(
            restarted_at.elapsed() <= 3 * HEALTH_INTERVAL + Duration::from_millis(100),
            "only {} of {SHARDS} replicas back after {:?}",
            returns - returns_before,
            restarted_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "all restarted replicas back in rotation {:?} after the last restart",
        restarted_at.elapsed()
    );
    let (recorded, _) = running.await.unwrap();
    assert_eq!(
        recorded.errors.values().sum::<u64>(),
        0,
        "{:?}",
        recorded.errors
    );
    // Restarting four processes on a busy machine can outlast that load:
    // another second of it, now that all are back, is what they get
    // traffic from.
    let (after, _) = background_load(&target, &queries, 100.0, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(after.errors.values().sum::<u64>(), 0, "{:?}", after.errors);
    for s in 0..SHARDS {
        let back = requests(node_addr(&tree, &format!("leaf-{s}-0"))).await;
        eprintln!("leaf-{s}-0: {back} requests since its restart");
        assert!(back > 0, "leaf-{s}-0 got no traffic after its restart");
    }
    // Gradually: in their first second or two back (slow start is 3 s) the
    // restarted replicas took well under half of their shards' traffic.
    let mut back_total = 0;
    for s in 0..SHARDS {
        back_total += requests(node_addr(&tree, &format!("leaf-{s}-0"))).await;
    }
    let shard_requests = 4 * (recorded.sent + after.sent);
    assert!(
        (back_total as f64) < 0.4 * shard_requests as f64,
        "restarted replicas took {back_total} of {shard_requests} shard requests"
    );
    tree.shutdown().await;
}
