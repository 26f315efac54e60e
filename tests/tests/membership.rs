//! Membership in etcd, end to end, on a real 3-member etcd cluster on
//! loopback: a tree started by `searchtree up --etcd` whose nodes find each
//! other there answers exactly; a replica started by hand joins and gets
//! traffic; one killed with SIGKILL leaves when its lease expires; and
//! neither the loss of etcd's leader nor 10 s without any etcd at all fails
//! a query under steady load — membership changes made afterwards are seen.
//! An etcd serving TLS to known users only is reached with its CA and a
//! user's password, the user's token renewed when it lapses. A publish
//! through one of two roots is pinned by the other from its announcement.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use searchtree::bundled;
use searchtree_membership::Etcd;
use searchtree_membership::member::tree_prefix;
use searchtree_tests::etcd::{EtcdCluster, Secure};
use searchtree_tests::oracle::{Oracle, assert_same_hits};
use searchtree_tests::up::UpProcess;
use searchtree_tests::{client, counter, fixture, node_binaries, search, searchtree, sigkill};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const TREE: &str = "membership-test";
/// The hand-started leaves' lease: short, so a killed one leaves soon.
const LEASE_TTL_SECS: &str = "2";

/// A node started by hand, as an operator adds a replica to a running tree.
struct HandNode {
    process: Child,
    addr: SocketAddr,
}

impl HandNode {
    /// A leaf of `shard` over `index`, registered in [`TREE`].
    fn leaf(etcd: &str, shard: u32, index: &Path) -> HandNode {
        let index = index.to_str().expect("utf-8 path");
        HandNode::start(
            &node_binaries().leaf,
            etcd,
            TREE,
            &["--shard", &shard.to_string(), "--index", index],
        )
    }

    /// The node `binary` with `args`, registered in `tree`.
    fn start(binary: &Path, etcd: &str, tree: &str, args: &[&str]) -> HandNode {
        let mut process = Command::new(binary)
            .args(["--etcd", etcd, "--tree", tree])
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--lease-ttl-secs", LEASE_TTL_SECS])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a node");
        let mut line = String::new();
        BufReader::new(process.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("node's stdout");
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("node printed {line:?}"))
            .parse()
            .expect("address");
        HandNode { process, addr }
    }
}

impl Drop for HandNode {
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
    let added = HandNode::leaf(&endpoints, 0, &shard_dir(&f.sharded, 0));
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
    let after_leader = HandNode::leaf(&endpoints, 1, &shard_dir(&f.sharded, 1));
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
    let after_outage = HandNode::leaf(&endpoints, 2, &shard_dir(&f.sharded, 2));
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

/// Two replicas of a parent over a single child register with that child's
/// shards, as the child does: each must take only the child as its child,
/// never the other. Were they to take each other, a query whose leaf is
/// gone would bounce between them until its budget ran out.
#[test]
fn replicas_of_a_parent_over_one_child_never_take_each_other_as_its_child() {
    let f = fixture(TMP);
    let etcd = EtcdCluster::start(&f.dir, 1);
    let endpoints = etcd.endpoints();
    let bins = node_binaries();
    let rt = tokio::runtime::Runtime::new().unwrap();

    let leaf = HandNode::leaf(&endpoints, 0, &shard_dir(&f.whole, 0));
    let parents: Vec<HandNode> = (0..2)
        .map(|_| HandNode::start(&bins.parent, &endpoints, TREE, &["--child", "0"]))
        .collect();
    let root = HandNode::start(&bins.root, &endpoints, TREE, &["--child", "0"]);
    rt.block_on(async {
        for node in parents.iter().chain([&leaf, &root]) {
            until_registered(&etcd, node.addr, true).await;
        }
    });
    // Time for each parent to see the other register and, were it taken
    // as a replica of the child, to health-check it into rotation.
    std::thread::sleep(Duration::from_secs(3));

    // The tree answers exactly.
    let oracle = Oracle::open(&shard_dir(&f.whole, 0));
    rt.block_on(async {
        let mut c = client(root.addr).await;
        for query in bundled::queries().iter().step_by(17) {
            let got = search(&mut c, query, 10).await.expect("search");
            assert_same_hits(query, &got.hits, &oracle.top_k(query, 10).0);
        }
    });

    // The leaf drains and deregisters; a query now finds no leaf below
    // either parent, and each parent is asked a handful of times at most.
    let term = Command::new("kill")
        .args(["-TERM", &leaf.process.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    rt.block_on(async {
        until_registered(&etcd, leaf.addr, false).await;
        let requests = || async {
            let mut sum = 0;
            for p in &parents {
                sum += counter(p.addr, "requests").await;
            }
            sum
        };
        let before = requests().await;
        let mut c = client(root.addr).await;
        let answer = c
            .search(searchtree_proto::pb::SearchRequest {
                query: "water".into(),
                budget_ms: 2000,
                ..Default::default()
            })
            .await;
        let asked = requests().await - before;
        println!("with the leaf gone, one query asked the parents {asked} times: {answer:?}");
        match answer {
            Ok(response) => {
                let coverage = response.into_inner().coverage.unwrap();
                assert_eq!(coverage.shards_ok, 0, "{coverage:?}");
            }
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status}"),
        }
        assert!(
            asked <= 6,
            "one query was passed between the parents {asked} times"
        );
    });
}

/// A record naming a leaf for a shard it does not serve (written by hand,
/// or left by a mistake), beside the leaf's own record, and a record that
/// is no member record at all: `members` names both; queries stay exact;
/// a load and its publish go through with nothing refused and nobody
/// missed (the parent leaves the misplaced replica out of shard 0's
/// steps, and the leaf takes part as shard 2's); `verify --root` names
/// it; once the record is gone, verify passes. Then a replica that joins
/// while a load is staged is left out of its publish and catches up.
#[test]
fn a_record_naming_a_leaf_for_another_shard_is_named_and_left_out_of_loads() {
    let f = fixture(TMP);
    let etcd = EtcdCluster::start(&f.dir, 1);
    let endpoints = etcd.endpoints();
    let up = UpProcess::start(
        &f.sharded.join("topology.toml"),
        &f.dir,
        &["--etcd", &endpoints, "--tree", TREE],
        "warn",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let members = || {
        let out = searchtree()
            .args(["members", "--etcd", &endpoints, "--tree", TREE, "--json"])
            .output()
            .expect("members");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // A node whose first registration etcd did not take in time serves
    // meanwhile and registers on its retry: wait for the leaf's record.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (listed, two) = loop {
        let listed = members();
        let two = listed["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "leaf" && m["shards"] == serde_json::json!([2]))
            .map(|m| m["addr"].as_str().unwrap().to_string());
        match two {
            Some(two) => break (listed, two),
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            None => panic!("shard 2's leaf never registered: {listed}"),
        }
    };
    assert_eq!(listed["problems"], serde_json::json!([]), "{listed}");

    // The stray records, under a lease so that revoking it deletes them.
    let store = {
        let _in = rt.enter();
        etcd.client()
    };
    let lease = rt.block_on(async {
        let (lease, _) = store.grant(Duration::from_secs(600)).await.unwrap();
        let stray = format!(r#"{{"addr":"{two}","role":"leaf","shards":[0]}}"#);
        let prefix = tree_prefix(TREE);
        store
            .put(&format!("{prefix}stray"), stray.into_bytes(), lease)
            .await
            .unwrap();
        store
            .put(&format!("{prefix}junk"), b"not a record".to_vec(), lease)
            .await
            .unwrap();
        lease
    });
    let problems = members()["problems"].to_string();
    assert!(
        problems.contains(&format!(
            "{two} is registered as a leaf of shard(s) 0, but the leaf there serves shard 2"
        )) && problems.contains("junk is not a member record"),
        "{problems}"
    );
    // Until the parent of shard 0 has taken it as a replica (and found it
    // misplaced), so that the load below would reach it were it not left
    // out.
    let root = up.root.to_string();
    let started = Instant::now();
    loop {
        let versions = searchtree()
            .args(["versions", "--root", &root])
            .output()
            .expect("versions");
        let table = String::from_utf8_lossy(&versions.stdout).to_string();
        let misplaced = "misplaced: named as a replica of shard(s) 0";
        if table
            .lines()
            .any(|l| l.contains(&two) && l.contains(misplaced))
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{table}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let oracle = Oracle::open(&f.whole.join("shards/shard-000"));
    rt.block_on(async {
        let mut c = client(up.root).await;
        for query in bundled::queries().iter().step_by(23) {
            let got = search(&mut c, query, 10).await.expect("search");
            assert_same_hits(query, &got.hits, &oracle.top_k(query, 10).0);
        }
    });

    // A load of 200 new documents, of every shard, then its publish.
    let input = f
        .dir
        .join(format!("stray-load-{}.jsonl", std::process::id()));
    let lines: Vec<String> = (0..200)
        .map(|i| {
            serde_json::json!({"id": format!("stray-{i}"), "title": "t", "body": "zqxstray"})
                .to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let load = searchtree()
        .args(["load", "--root", &root, "--input"])
        .arg(&input)
        .output()
        .expect("load");
    let said =
        String::from_utf8_lossy(&load.stdout).to_string() + &String::from_utf8_lossy(&load.stderr);
    assert!(load.status.success(), "{said}");
    // Nothing refused (the command would fail), nobody missed it.
    assert!(said.contains("200 added"), "{said}");
    assert!(!said.contains("missed"), "{said}");
    rt.block_on(async {
        let mut c = client(up.root).await;
        let got = search(&mut c, "zqxstray", 10).await.expect("search");
        assert_eq!(got.total_hits, 200, "{got:?}");
    });

    let out = searchtree()
        .args(["verify", "--root", &root])
        .output()
        .expect("verify");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("shard 0 replica {two} is not that shard's")),
        "{said}"
    );

    rt.block_on(store.revoke(lease)).unwrap();
    until_verified(&root, Duration::from_secs(20));

    // A replica that joins while a load is staged (started by hand after
    // a --no-publish load) has none of it: the publish leaves it out,
    // rather than failing on replicas that disagree, and it catches up.
    let late: Vec<String> = (0..100)
        .map(|i| serde_json::json!({"id": format!("late-{i}"), "body": "zqxlate"}).to_string())
        .collect();
    std::fs::write(&input, late.join("\n")).unwrap();
    let staged = searchtree()
        .args(["load", "--no-publish", "--root", &root, "--input"])
        .arg(&input)
        .output()
        .expect("load");
    assert!(staged.status.success(), "{staged:?}");
    let data = f.dir.join(format!("joined-{}", std::process::id()));
    let index = shard_dir(&f.sharded, 0);
    let joined = HandNode::start(
        &node_binaries().leaf,
        &endpoints,
        TREE,
        &[
            "--shard",
            "0",
            "--index",
            index.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let joined_addr = joined.addr.to_string();
    let versions = || {
        let out = searchtree()
            .args(["versions", "--root", &root])
            .output()
            .expect("versions");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let started = Instant::now();
    while !versions().contains(&joined_addr) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            versions()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let publish = searchtree()
        .args(["publish", "--root", &root])
        .output()
        .expect("publish");
    let said = String::from_utf8_lossy(&publish.stdout).to_string()
        + &String::from_utf8_lossy(&publish.stderr);
    assert!(publish.status.success(), "{said}");
    assert!(said.contains(&joined_addr), "named behind: {said}");
    rt.block_on(async {
        let mut c = client(up.root).await;
        let got = search(&mut c, "zqxlate", 10).await.expect("search");
        assert_eq!(got.total_hits, 100, "{got:?}");
    });
    // It catches up: every leaf at one version, replicas identical.
    until_verified(&root, Duration::from_secs(60));
    drop(joined);
}

/// Runs `searchtree verify --root ROOT` until it passes; fails with its
/// last report after `within`.
fn until_verified(root: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let out = searchtree()
            .args(["verify", "--root", root])
            .output()
            .expect("verify");
        if out.status.success() {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A tree whose etcd serves TLS and lets in only known users: the nodes,
/// `up` and `searchtree members` reach it with the CA and a user that may
/// touch `/searchtree/` alone; their token is renewed once etcd lets it
/// lapse; a wrong password or none is refused, naming why.
#[test]
fn a_tree_reaches_an_etcd_with_tls_and_users_and_renews_its_token() {
    let f = fixture(TMP);
    let certs = searchtree::certs::generate(
        &f.dir.join("etcd-certs"),
        &searchtree::certs::DEFAULT_HOSTS
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>(),
    )
    .expect("certificates");
    use searchtree::certs::files;
    // Tokens lapse after 2 s unused, so the test sees them renewed.
    let mut etcd = EtcdCluster::start_with(
        &f.dir,
        1,
        Some(Secure {
            ca: certs.file(files::CA),
            cert: certs.file(files::NODE),
            key: certs.file(files::NODE_KEY),
            credentials: None,
            token_ttl_secs: 2,
        }),
    );
    etcd.enable_auth("searchtree", "s3cret", "/searchtree/");
    let password = f.dir.join("etcd-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let wrong = f.dir.join("etcd-wrong-password");
    std::fs::write(&wrong, "guess\n").unwrap();
    let endpoints = etcd.endpoints();
    let ca = certs.file(files::CA);
    let access = |password: &Path| {
        vec![
            format!("--etcd-ca={}", ca.display()),
            "--etcd-user=searchtree".to_string(),
            format!("--etcd-password-file={}", password.display()),
        ]
    };
    let rt = tokio::runtime::Runtime::new().unwrap();

    // As the user, its keys read; after the token lapsed, again.
    rt.block_on(async {
        let user = etcd.client();
        user.get_prefix("/searchtree/").await.expect("as the user");
        tokio::time::sleep(Duration::from_secs(3)).await;
        user.get_prefix("/searchtree/")
            .await
            .expect("a renewed token");
    });
    // Anonymous, or with a wrong password, etcd refuses, and says why.
    let anonymous = searchtree_membership::EtcdSecurity {
        credentials: None,
        ..etcd.security()
    };
    let err = rt.block_on(async {
        let anonymous = Etcd::with_security(&[&endpoints], &anonymous).unwrap();
        anonymous
            .get_prefix("/searchtree/")
            .await
            .unwrap_err()
            .to_string()
    });
    assert!(err.contains("user name is empty"), "{err}");
    let members = |password: &Path| {
        searchtree()
            .args(["members", "--etcd", &endpoints, "--tree", TREE, "--json"])
            .args(access(password))
            .output()
            .expect("members")
    };
    let refused = members(&wrong);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("authenticating as \"searchtree\"")
            && stderr.contains("authentication failed"),
        "{stderr}"
    );

    // A tree started through it: every node registers, the parents find
    // their children, and the answers are exact.
    let mut up_args = vec![
        "--etcd".to_string(),
        endpoints.clone(),
        "--tree".into(),
        TREE.into(),
    ];
    up_args.extend(access(&password));
    let up_args: Vec<&str> = up_args.iter().map(String::as_str).collect();
    let up = UpProcess::start(&f.sharded.join("topology.toml"), &f.dir, &up_args, "warn");
    let listed = members(&password);
    assert!(listed.status.success(), "{listed:?}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let nodes = listed["members"].as_array().unwrap();
    assert_eq!(nodes.len(), 7, "{listed}");
    assert!(nodes.iter().all(|n| n["health"] == "serving"), "{listed}");
    let oracle = Oracle::open(&f.whole.join("shards/shard-000"));
    rt.block_on(async {
        let mut c = client(up.root).await;
        for query in bundled::queries().iter().step_by(23) {
            let (want, _) = oracle.top_k(query, 10);
            let got = search(&mut c, query, 10).await.expect("search");
            assert_same_hits(query, &got.hits, &want);
        }
    });

    // Once every node's token has lapsed, a replica started by hand
    // registers, and the parent's watch, opened with an old token, sees it.
    std::thread::sleep(Duration::from_secs(3));
    let index = shard_dir(&f.sharded, 1);
    let mut leaf_args = vec!["--shard", "1", "--index", index.to_str().unwrap()];
    let extra = access(&password);
    leaf_args.extend(extra.iter().map(String::as_str));
    let started = Instant::now();
    let added = HandNode::start(&node_binaries().leaf, &endpoints, TREE, &leaf_args);
    rt.block_on(first_routed_query(up.root, added.addr, started));
}

/// A tree with two roots in etcd, as the Kubernetes manifests run it: a
/// publish through one root is pinned by the other from the announcement
/// in etcd, not at its next look at the leaves — which is set an hour away
/// here, so that only the announcement can move it. Clients of the second
/// root then get the new version, and may pin it there.
#[test]
fn a_publish_through_one_root_is_pinned_by_the_other_from_its_announcement() {
    const TREE: &str = "two-roots-test";
    let f = fixture(TMP);
    let etcd = EtcdCluster::start(&f.dir, 1);
    let endpoints = etcd.endpoints();
    let up = UpProcess::start(
        &f.sharded.join("topology.toml"),
        &f.dir,
        &["--etcd", &endpoints, "--tree", TREE],
        "warn",
    );
    let second = HandNode::start(
        &node_binaries().root,
        &endpoints,
        TREE,
        &[
            "--child",
            "0-1",
            "--child",
            "2-3",
            "--follow-publishes-secs",
            "3600",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answered_at = |root: SocketAddr| {
        rt.block_on(async {
            let mut c = client(root).await;
            let got = search(&mut c, "zanzibarish", 10).await.expect("search");
            let c = got.coverage.as_ref().unwrap();
            assert_eq!(c.shards_ok, c.shards_total, "{got:?}");
            (got.version, got.hits.len())
        })
    };
    // The second root finds the parents in etcd and answers at the
    // version the leaves serve.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let answered = rt.block_on(async {
            let mut c = client(second.addr).await;
            search(&mut c, "paris", 3).await
        });
        match answered {
            Ok(got) if got.coverage.as_ref().is_some_and(|c| c.shards_ok == 4) => {
                break got.version;
            }
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("the second root does not answer in full: {other:?}"),
        }
    };
    assert_eq!(answered_at(second.addr), (before, 0));

    // A load published through the first root.
    let input = f.dir.join(format!("announce-{}.jsonl", std::process::id()));
    std::fs::write(
        &input,
        "{\"id\": \"announced_doc\", \"title\": \"Announced\", \"body\": \"a zanzibarish word\"}\n",
    )
    .unwrap();
    let loaded = searchtree()
        .args(["load", "--root", &up.root.to_string(), "--input"])
        .arg(&input)
        .output()
        .expect("searchtree load");
    assert!(loaded.status.success(), "{loaded:?}");
    let published = before + 1;
    assert_eq!(answered_at(up.root), (published, 1));

    // The announcement is in etcd, and the second root pins the version.
    let announced = rt.block_on(async {
        etcd.client()
            .get(&searchtree_membership::published::published_key(TREE))
            .await
            .expect("etcd get")
    });
    assert_eq!(
        announced.map(|(value, lease)| (String::from_utf8(value).unwrap(), lease)),
        Some((format!("{{\"version\":{published}}}"), 0))
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered_at(second.addr) != (published, 1) {
        assert!(
            Instant::now() < deadline,
            "the second root still answers at {:?}, not version {published}",
            answered_at(second.addr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client may pin the new version at the second root.
    let pinned = rt.block_on(async {
        let mut c = client(second.addr).await;
        searchtree_tests::send(
            &mut c,
            searchtree_proto::pb::SearchRequest {
                query: "zanzibarish".into(),
                top_k: 10,
                version: published,
                budget_ms: 5_000,
                ..Default::default()
            },
        )
        .await
    });
    let pinned = pinned.expect("a search pinned to the published version");
    assert_eq!((pinned.version, pinned.hits.len()), (published, 1));
    drop(second);
}
