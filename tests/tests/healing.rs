//! Healing: `searchtree up` starts a node that dies again on the address it
//! had, so parents and clients find it where they left it, and gives up with
//! an error on a root it cannot keep alive instead of serving nothing at the
//! address it announced.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use searchtree::build::TOPOLOGY_FILE;
use searchtree::tree::supervisor::{RestartPolicy, health_check};
use searchtree::tree::topology::Topology;
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_tests::{
    SHARDS, fixture, kill_node, node_addr, search, searchtree, sigkill, start_sharded_tree,
};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
/// Nodes of the fixture's tree: 4 leaves, 2 parents, the root.
const NODES: usize = 7;
/// How long anything here may take on a slow, busy machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running `searchtree up`, its stderr collected line by line. Dropping it
/// kills `up`, and with it (parent-death signal) its nodes.
struct Up {
    child: Child,
    /// The address printed on the READY line, if one was printed.
    root: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    /// Set once its stderr has been read to the end.
    log_ended: Arc<std::sync::atomic::AtomicBool>,
}

impl Up {
    /// Starts `up` on `topology` and reads its first line of stdout.
    fn start(topology: &Path) -> Up {
        // Trees of these tests run at once from the same topology: each
        // keeps its leaves' state in a directory of its own.
        static TREES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = TREES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = topology
            .parent()
            .expect("topology in a directory")
            .join(format!("healing-state-{}-{n}", std::process::id()));
        let mut child = searchtree()
            .args(["up", "--topology"])
            .arg(topology)
            .arg("--state-dir")
            .arg(&state)
            // Our own supervision logs at info; the nodes' at warn. (The
            // target is `searchtree::`, as a bare `searchtree` would also
            // match the nodes' `searchtree_*` crates.)
            .env("RUST_LOG", "warn,searchtree::=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn searchtree up");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let log_ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ended = Arc::clone(&log_ended);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("up| {line}");
                sink.lock().unwrap().push(line);
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // The first line is READY, or nothing if `up` failed to start.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let root = line
            .trim()
            .strip_prefix("READY root=")
            .map(|a| a.parse().expect("READY address"));
        Up {
            child,
            root,
            log,
            log_ended,
        }
    }

    fn root(&self) -> SocketAddr {
        self.root.expect("up printed READY")
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The fields of `up`'s own log lines with this message (node logs,
    /// forwarded as `[name] ...`, are skipped).
    fn events(&self, message: &str) -> Vec<HashMap<String, String>> {
        let needle = format!(": {message} ");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| !line.starts_with('[') && line.contains(&needle))
            .map(|line| {
                line.split_whitespace()
                    .filter_map(|field| field.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    /// Every node's address and pid as `up` logged them when the tree
    /// first came up.
    async fn serving_nodes(&self) -> HashMap<String, (SocketAddr, u32)> {
        eventually("every node logged as serving", async || {
            let nodes: HashMap<String, (SocketAddr, u32)> = self
                .events("node serving")
                .into_iter()
                .map(|f| {
                    let addr = f["addr"].parse().unwrap();
                    (f["node"].clone(), (addr, f["pid"].parse().unwrap()))
                })
                .collect();
            (nodes.len() == NODES).then_some(nodes).ok_or("not yet")
        })
        .await
    }

    /// `node`'s address and pid from the log line of its `nth` restart.
    async fn restarted(&self, node: &str, nth: usize) -> (SocketAddr, u32) {
        eventually(&format!("{node} restarted"), async || {
            let restarts: Vec<_> = self
                .events("node restarted")
                .into_iter()
                .filter(|f| f["node"] == node)
                .collect();
            let f = restarts.get(nth - 1).ok_or("not yet")?;
            Ok::<_, &str>((f["addr"].parse().unwrap(), f["pid"].parse().unwrap()))
        })
        .await
    }

    /// Waits (bounded) for `up` to exit.
    async fn exit_status(&mut self) -> ExitStatus {
        let status = eventually("up exits", async || {
            self.child.try_wait().unwrap().ok_or("still running")
        })
        .await;
        // Its last lines may still be in the pipe: read them all before
        // anyone looks at the log.
        let ended = Arc::clone(&self.log_ended);
        eventually("up's log read to its end", async || {
            ended
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
                .ok_or("not yet")
        })
        .await;
        status
    }

    /// SIGTERM, as an operator stops it.
    fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it succeeds, failing the test at [`DEADLINE`].
async fn eventually<T, E: std::fmt::Debug>(
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(e) if started.elapsed() > DEADLINE => {
                panic!("{what}: still not after {DEADLINE:?}: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One query through a fresh connection to `root`: Ok when every shard
/// answered.
async fn full_coverage(root: SocketAddr) -> Result<(), String> {
    let mut client = SearchClient::connect(format!("http://{root}"))
        .await
        .map_err(|e| e.to_string())?;
    let response = search(&mut client, "river", 10)
        .await
        .map_err(|s| s.to_string())?;
    let coverage = response.coverage.unwrap_or_default();
    if coverage.shards_ok == SHARDS && !response.partial && !response.hits.is_empty() {
        Ok(())
    } else {
        Err(format!("{coverage:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restarts_a_killed_leaf_parent_and_root_on_their_addresses() {
    let fx = fixture(TMP);
    let mut up = Up::start(&fx.sharded.join(TOPOLOGY_FILE));
    let root = up.root();
    let nodes = up.serving_nodes().await;
    assert_eq!(nodes["root"].0, root);
    full_coverage(root).await.expect("full coverage at first");

    for victim in ["leaf-2", "parent-0", "root"] {
        let (addr, pid) = nodes[victim];
        let killed = Instant::now();
        sigkill(pid);
        let (new_addr, new_pid) = up.restarted(victim, 1).await;
        assert_eq!(new_addr, addr, "{victim} came back elsewhere");
        assert_ne!(new_pid, pid);
        eventually(&format!("{victim} healthy at {addr}"), async || {
            health_check(addr).await
        })
        .await;
        eventually("a query with full coverage", async || {
            full_coverage(root).await
        })
        .await;
        eprintln!(
            "{victim}: killed, restarted on {addr} and full coverage again in {:?}",
            killed.elapsed()
        );
    }
    let exits = up.events("node exited; restarting it on");
    assert_eq!(exits.len(), 3, "{exits:?}");
    assert!(exits.iter().all(|f| f["attempt"] == "1"), "{exits:?}");

    // A node stopped on purpose (SIGTERM to it alone: it drains and exits
    // 0) is brought back too, and logged as a warning, not an error.
    let (addr, pid) = nodes["leaf-1"];
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let (new_addr, _) = up.restarted("leaf-1", 1).await;
    assert_eq!(new_addr, addr);
    let clean: Vec<String> = up
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("node stopped cleanly; restarting it on"))
        .cloned()
        .collect();
    assert!(
        clean.len() == 1 && clean[0].contains(" WARN ") && clean[0].contains("node=leaf-1"),
        "{clean:?}"
    );
    assert_eq!(up.events("node exited; restarting it on").len(), 3);

    up.terminate();
    let status = up.exit_status().await;
    assert!(status.success(), "up exited with {status}");
    let log = up.log();
    assert!(
        log.contains("restarts: leaf-1=1 leaf-2=1 parent-0=1 root=1"),
        "no restart summary in:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_exits_with_an_error_when_the_root_cannot_be_restarted() {
    let fx = fixture(TMP);
    let mut up = Up::start(&fx.sharded.join(TOPOLOGY_FILE));
    let root = up.root();
    let nodes = up.serving_nodes().await;

    // Kill the root and take its port before `up` restarts it (it waits
    // 100 ms first); should `up` win the race, kill its new root too.
    let mut pid = nodes["root"].1;
    let mut restarts_seen = 0;
    let squatter = loop {
        sigkill(pid);
        let killed = Instant::now();
        let taken = loop {
            match tokio::net::TcpListener::bind(root).await {
                Ok(listener) => break Some(listener),
                Err(_) if killed.elapsed() < Duration::from_secs(2) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err(_) => break None,
            }
        };
        if let Some(listener) = taken {
            break listener;
        }
        restarts_seen += 1;
        assert!(restarts_seen < 3, "could not take the root's port");
        pid = up.restarted("root", restarts_seen).await.1;
    };

    let status = up.exit_status().await;
    assert!(!status.success(), "up exited with {status}");
    let log = up.log();
    assert!(
        log.contains(&format!(
            "error: the root at {root} cannot be kept alive: it failed to start 5 times in a row"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("cannot listen on {root}")), "{log}");
    // The rest of the tree went down with it.
    for (name, (addr, _)) in &nodes {
        if name != "root" {
            assert!(
                std::net::TcpStream::connect(addr).is_err(),
                "{name} still listening on {addr}"
            );
        }
    }
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_exits_with_an_error_when_the_root_port_is_taken_at_start() {
    let fx = fixture(TMP);
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let mut topology = Topology::load(&fx.sharded.join(TOPOLOGY_FILE)).unwrap();
    topology.root.listen = taken.to_string();
    let path = fx.sharded.join("root-port-taken.toml");
    std::fs::write(&path, topology.to_toml()).unwrap();

    let started = Instant::now();
    let mut up = Up::start(&path);
    assert_eq!(up.root, None, "up printed READY");
    let status = up.exit_status().await;
    assert!(!status.success());
    let log = up.log();
    // Refused before any node starts: the port answers connections.
    assert!(
        log.contains(&format!(
            "error: root \"root\": {taken} is already served by another process"
        )),
        "{log}"
    );
    eprintln!("up gave up after {:?}", started.elapsed());
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_tree_restarts_a_killed_leaf_and_counts_it() {
    let fx = fixture(TMP);
    let mut tree = start_sharded_tree(fx).await;
    let root = tree.root_addr();
    let leaf = node_addr(&tree, "leaf-1");
    let old_pid = tree.pid("leaf-1").expect("leaf-1 runs");
    kill_node(&tree, "leaf-1");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let supervised = tokio::spawn(async move {
        let result = tree
            .supervise(&RestartPolicy::default(), async {
                let _ = stopped.await;
            })
            .await;
        (tree, result)
    });
    eventually("leaf-1 healthy again", async || health_check(leaf).await).await;
    eventually("a query with full coverage", async || {
        full_coverage(root).await
    })
    .await;
    stop.send(()).unwrap();
    let (tree, result) = supervised.await.unwrap();
    result.expect("supervision ends cleanly");

    assert_eq!(node_addr(&tree, "leaf-1"), leaf);
    let new_pid = tree.pid("leaf-1").expect("leaf-1 runs again");
    assert_ne!(new_pid, old_pid);
    let counts: HashMap<String, u64> = tree.restart_counts().into_iter().collect();
    assert_eq!(counts["leaf-1"], 1);
    assert_eq!(counts.values().sum::<u64>(), 1, "{counts:?}");
    tree.shutdown().await;
}
