//! Membership in etcd, end to end, on a real 3-member etcd cluster on
//! loopback: a tree started by `searchtree up --etcd` whose nodes find each
//! other there answers exactly; a replica started by hand joins and gets
//! traffic; one killed with SIGKILL leaves when its lease expires; and
//! neither the loss of etcd's leader nor 10 s without any etcd at all fails
//! a query under steady load — membership changes made afterwards are seen.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use searchtree::bundled;
use searchtree_membership::member::tree_prefix;
use searchtree_tests::etcd::EtcdCluster;
use searchtree_tests::oracle::{Oracle, assert_same_hits};
use searchtree_tests::up::UpProcess;
use searchtree_tests::{client, counter, fixture, node_binaries, search, searchtree, sigkill};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const TREE: &str = "membership-test";
/// The hand-started leaves' lease: short, so a killed one leaves soon.
const LEASE_TTL_SECS: &str = "2";

/// A leaf started by hand, as an operator adds a replica to a running tree.
struct HandLeaf {
    process: Child,
    addr: SocketAddr,
}

impl HandLeaf {
    fn start(etcd: &str, shard: u32, index: &Path) -> HandLeaf {
        let mut process = Command::new(node_binaries().leaf)
            .args(["--etcd", etcd, "--tree", TREE])
            .args(["--shard", &shard.to_string()])
            .arg("--index")
            .arg(index)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--lease-ttl-secs", LEASE_TTL_SECS])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a leaf");
        let mut line = String::new();
        BufReader::new(process.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("leaf's stdout");
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("leaf printed {line:?}"))
            .parse()
            .expect("address");
        HandLeaf { process, addr }
    }
}

impl Drop for HandLeaf {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Runs `searchtree bench` against the root for `secs` at 40 queries/s
/// while `during` runs; asserts every query answered, complete.
fn under_load(root: SocketAddr, dir: &Path, what: &str, secs: u64, during: impl FnOnce()) {
    let report = dir.join(format!("membership-{what}-{}.json", std::process::id()));
    let bench = searchtree()
        .args(["bench", "--root", &root.to_string()])
        .args([
            "--rate",
            "40",
            "--duration",
            &format!("{secs}s"),
            "--warmup",
            "1s",
        ])
        .args(["--budget-ms", "5000", "--connections", "2", "--json"])
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bench");
    std::thread::sleep(Duration::from_secs(2));
    during();
    let bench = bench.wait_with_output().expect("bench ran");
    assert!(bench.status.success(), "{what}: bench failed");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).expect("bench JSON");
    let sent = r["sent"].as_u64().unwrap();
    println!("{what}: {sent} queries, report {r}");
    assert!(sent >= 30 * secs / 2, "{what}: {r}");
    assert_eq!(r["completed"].as_u64(), Some(sent), "{what}: {r}");
    assert_eq!(
        r["errors"].as_object().map(|e| e.len()),
        Some(0),
        "{what}: {r}"
    );
    assert_eq!(r["partial_fraction"].as_f64(), Some(0.0), "{what}: {r}");
}

/// Distinct queries (two bundled queries joined), so that no cache answers
/// them and every one reaches the leaves.
fn fresh_queries() -> impl Iterator<Item = String> {
    let q = bundled::queries();
    let n = q.len();
    (0..).map(move |i: usize| format!("{} {}", q[i % n], q[(i * 7 + 3) % n]))
}

/// Sends fresh queries to the root until the leaf at `addr` has served one;
/// returns how long that took from `since`.
async fn first_routed_query(root: SocketAddr, addr: SocketAddr, since: Instant) -> Duration {
    let mut c = client(root).await;
    let mut queries = fresh_queries();
    while counter(addr, "requests").await == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "the leaf at {addr} got no query in 20 s"
        );
        let q = queries.next().unwrap();
        let r = search(&mut c, &q, 10).await.expect("search");
        let c = r.coverage.unwrap();
        assert_eq!(c.shards_ok, c.shards_total, "{q}: partial");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    since.elapsed()
}

/// Waits until the key of the node at `addr` is (`present`) or is not in
/// etcd; returns how long that took.
async fn until_registered(etcd: &EtcdCluster, addr: SocketAddr, present: bool) -> Duration {
    let start = Instant::now();
    let key = format!("{}{addr}", tree_prefix(TREE));
    loop {
        if let Ok((kvs, _)) = etcd.client().get_prefix(&tree_prefix(TREE)).await
            && kvs.iter().any(|(k, _)| *k == key) == present
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{addr} still {}registered after 30 s",
            if present { "not " } else { "" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn shard_dir(build: &Path, shard: u32) -> PathBuf {
    build.join(format!("shards/shard-{shard:03}"))
}

#[test]
fn a_tree_found_through_etcd_is_exact_follows_its_members_and_outlives_etcd() {
    let f = fixture(TMP);
    let mut etcd = EtcdCluster::start(&f.dir, 3);
    let endpoints = etcd.endpoints();
    let up = UpProcess::start(
        &f.sharded.join("topology.toml"),
        &f.dir,
        &["--etcd", &endpoints, "--tree", TREE],
        "warn,searchtree_parent::discovery=info",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Nodes registered themselves: 4 leaves, 2 parents, the root.
    let members = searchtree()
        .args(["members", "--etcd", &endpoints, "--tree", TREE, "--json"])
        .output()
        .expect("members");
    assert!(members.status.success(), "{members:?}");
    let listed: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap();
    let nodes = listed["members"].as_array().unwrap();
    assert_eq!(nodes.len(), 7, "{listed}");
    assert!(nodes.iter().all(|n| n["health"] == "serving"), "{listed}");
    assert_eq!(listed["etcd"].as_array().unwrap().len(), 3, "{listed}");

    // The tree they form answers exactly.
    let oracle = Oracle::open(&f.whole.join("shards/shard-000"));
    rt.block_on(async {
        let mut c = client(up.root).await;
        for query in bundled::queries().iter().step_by(9) {
            let (want, total) = oracle.top_k(query, 10);
            let got = search(&mut c, query, 10).await.expect("search");
            assert_same_hits(query, &got.hits, &want);
            assert_eq!(got.total_hits, total, "{query}");
            let c = got.coverage.unwrap();
            assert_eq!(c.shards_ok, c.shards_total, "{query}");
        }
    });

    // A replica started by hand joins and gets traffic.
    let started = Instant::now();
    let added = HandLeaf::start(&endpoints, 0, &shard_dir(&f.sharded, 0));
    let first = rt.block_on(first_routed_query(up.root, added.addr, started));
    println!(
        "new leaf: first routed query {} ms after start",
        first.as_millis()
    );

    // Killed with SIGKILL, it leaves its group when its lease expires; the
    // tree answers throughout (its parent retries on the other replica).
    sigkill(added.process.id());
    let gone = rt.block_on(until_registered(&etcd, added.addr, false));
    println!(
        "killed leaf: deregistered {} ms after SIGKILL",
        gone.as_millis()
    );
    drop(added);

    // Losing etcd's leader under load fails no query.
    under_load(up.root, &f.dir, "leader-killed", 8, || {
        let leader = etcd.wait_for_leader(Duration::from_secs(10));
        etcd.kill(leader);
        let next = etcd.wait_for_leader(Duration::from_secs(20));
        assert_ne!(next, leader);
        etcd.restart(leader);
    });
    // ...and a member added afterwards is seen.
    let started = Instant::now();
    let after_leader = HandLeaf::start(&endpoints, 1, &shard_dir(&f.sharded, 1));
    rt.block_on(first_routed_query(up.root, after_leader.addr, started));

    // 10 s with no etcd at all fails no query.
    under_load(up.root, &f.dir, "etcd-down", 16, || {
        for i in 0..etcd.len() {
            etcd.kill(i);
        }
        std::thread::sleep(Duration::from_secs(10));
        for i in 0..etcd.len() {
            etcd.restart(i);
        }
        etcd.wait_for_leader(Duration::from_secs(30));
    });
    // Membership changes made after it returns are seen: a new replica
    // joins and gets traffic, and one that drains (SIGTERM) leaves at once.
    let started = Instant::now();
    let after_outage = HandLeaf::start(&endpoints, 2, &shard_dir(&f.sharded, 2));
    rt.block_on(first_routed_query(up.root, after_outage.addr, started));
    let term = Command::new("kill")
        .args(["-TERM", &after_leader.process.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let left = rt.block_on(until_registered(&etcd, after_leader.addr, false));
    assert!(
        left < Duration::from_secs(2),
        "a draining leaf deregisters at once, not at its lease's end ({left:?})"
    );
    let left_line = format!("replica left child=\"1\" replica=\"{}\"", after_leader.addr);
    // The parent of shard 1 sees its replica leave.
    up.wait_for_log(&left_line);
}
