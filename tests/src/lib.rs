//! Shared harness of the end-to-end tests: the bundled corpus built once per
//! test binary (sharded, and as one whole-corpus index for the oracle), trees
//! of real node processes on loopback, and the oracle itself.
#![warn(missing_docs)]

pub mod etcd;
pub mod oracle;
pub mod up;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use searchtree::build::corpus::FieldNames;
use searchtree::build::{self, BuildOptions, Input, TOPOLOGY_FILE};
use searchtree::tree::binaries::{self, NodeBinaries};
use searchtree::tree::supervisor::{self, StartOptions, Tree};
use searchtree::tree::topology::{Topology, check_indexes};
use searchtree_proto::pb::node_stats_client::NodeStatsClient;
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::{GetStatsRequest, SearchRequest, SearchResponse};
use tonic::transport::Channel;

/// Shards of the sharded build.
pub const SHARDS: u32 = 4;
/// Parents of the sharded build's topology.
pub const PARENTS: u32 = 2;

/// The bundled corpus, built for the tests.
pub struct Fixture {
    /// Scratch directory of this test process.
    pub dir: PathBuf,
    /// The corpus file.
    pub corpus: PathBuf,
    /// 4 shards and a topology with 2 parents.
    pub sharded: PathBuf,
    /// The whole corpus as one shard: the oracle's index.
    pub whole: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The fixture, built on first use. `tmp` is the test's
/// `env!("CARGO_TARGET_TMPDIR")`.
pub fn fixture(tmp: &str) -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let base = Path::new(tmp);
        remove_stale_dirs(base);
        let dir = base.join(format!("st-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let corpus = searchtree::bundled::write_corpus(&dir).expect("write corpus");
        let build = |shards: u32, parents: u32, name: &str| {
            let out = dir.join(name);
            build::build(&BuildOptions {
                input: Input::Lines(corpus.clone()),
                shards,
                out: out.clone(),
                parents,
                replicas: 1,
                fields: FieldNames::default(),
                skip_invalid: false,
                progress: false,
            })
            .unwrap_or_else(|e| panic!("building {name}: {e:#}"));
            out
        };
        Fixture {
            sharded: build(SHARDS, PARENTS, "sharded"),
            whole: build(1, 0, "whole"),
            corpus,
            dir,
        }
    })
}

/// Removes scratch directories of earlier test processes that are gone.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("st-e2e-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The directory holding the `searchtree` CLI and the node binaries, all
/// four built by the cargo running the tests (once per test process, in one
/// cargo call, so that no two builds with different feature sets keep
/// rebuilding each other's dependencies).
fn binaries_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = binaries::exe_dir().expect("exe dir");
        if binaries::started_by_cargo() {
            let mut packages = vec!["searchtree"];
            packages.extend(binaries::NODE_PACKAGES);
            binaries::build_with_cargo(&dir, &packages).expect("build the binaries");
        }
        dir
    })
}

/// The node binaries, built by the cargo running the tests if needed.
pub fn node_binaries() -> NodeBinaries {
    NodeBinaries::in_dir(binaries_dir()).expect("node binaries")
}

/// The `searchtree` CLI binary, built by the cargo running the tests if needed.
pub fn cli_binary() -> PathBuf {
    let path = binaries_dir().join("searchtree");
    assert!(path.is_file(), "{} not built", path.display());
    path
}

/// A command running the `searchtree` CLI. It finds the node binaries beside
/// itself, already built: cargo's variables are removed so that it does not
/// run cargo again (as `cargo run` would have it do).
pub fn searchtree() -> Command {
    let mut cmd = Command::new(cli_binary());
    cmd.env("RUST_LOG", "warn")
        .env_remove("CARGO")
        .env_remove("CARGO_MANIFEST_DIR");
    cmd
}

/// Starts the tree described by `topology` (a file in a build's output).
pub async fn start_tree(topology: &Path) -> Tree {
    let plan = Topology::load(topology)
        .and_then(|t| Ok(t.plan()?))
        .expect("valid topology");
    check_indexes(&plan).expect("indexes present");
    supervisor::start(
        &plan,
        &node_binaries(),
        &StartOptions {
            default_log: Some("warn".into()),
            forward_logs: true,
            ..StartOptions::default()
        },
    )
    .await
    .expect("tree starts")
}

/// Starts the 4-shard, 2-parent tree of the fixture.
pub async fn start_sharded_tree(fixture: &Fixture) -> Tree {
    start_tree(&fixture.sharded.join(TOPOLOGY_FILE)).await
}

/// Starts the fixture's tree with the result cache off at the root and
/// both parents: for tests of the fan-out under failures, where a cached
/// complete answer would stand in for leaves that are gone.
pub async fn start_uncached_sharded_tree(fixture: &Fixture) -> Tree {
    let mut topology =
        Topology::load(&fixture.sharded.join(TOPOLOGY_FILE)).expect("fixture topology");
    topology.root.cache_mb = Some(0);
    for parent in &mut topology.parents {
        parent.cache_mb = Some(0);
    }
    let path = fixture.dir.join("uncached.toml");
    std::fs::write(&path, topology.to_toml()).expect("write topology");
    start_tree(&path).await
}

/// A gRPC client of a node.
pub async fn client(addr: std::net::SocketAddr) -> SearchClient<Channel> {
    SearchClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// A budget generous enough for correctness tests on a slow debug build:
/// they check what the answer is, not how fast it comes.
pub const GENEROUS_BUDGET_MS: u32 = 10_000;

/// Sends one search with a generous budget.
pub async fn search(
    client: &mut SearchClient<Channel>,
    query: &str,
    top_k: u32,
) -> Result<SearchResponse, tonic::Status> {
    send(
        client,
        SearchRequest {
            query: query.into(),
            top_k,
            budget_ms: GENEROUS_BUDGET_MS,
            ..Default::default()
        },
    )
    .await
}

/// A node's counter `name` (from `searchtree.v1.NodeStats`).
pub async fn counter(addr: std::net::SocketAddr, name: &str) -> u64 {
    let mut stats = NodeStatsClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to NodeStats");
    let response = stats
        .get_stats(GetStatsRequest {})
        .await
        .expect("GetStats")
        .into_inner();
    *response
        .counters
        .get(name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// The address of the node called `name` in `tree`.
pub fn node_addr(tree: &Tree, name: &str) -> std::net::SocketAddr {
    tree.addresses()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no node {name}"))
        .1
}

/// Kills the process with id `pid` outright (SIGKILL), as a crash would.
pub fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid} failed");
}

/// Kills the node called `name` in `tree` outright (SIGKILL via its pid):
/// a crash, not a clean stop, so whoever supervises the tree sees it die.
pub fn kill_node(tree: &Tree, name: &str) {
    let pid = tree
        .pid(name)
        .unwrap_or_else(|| panic!("node {name} is not running"));
    sigkill(pid);
}

/// Sends one search request as given.
pub async fn send(
    client: &mut SearchClient<Channel>,
    request: SearchRequest,
) -> Result<SearchResponse, tonic::Status> {
    client
        .search(request)
        .await
        .map(tonic::Response::into_inner)
}

/// `GET path` from a node's plain-HTTP port (metrics, status page): the
/// response's head (status line and headers) and body. Blocking; call it
/// from `spawn_blocking` in async tests.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the HTTP port");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

/// Sends SIGTERM to a process the test started (`up`, `demo`) and waits
/// (bounded) for it to exit, as an operator's Ctrl-C or `kill` would.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    use std::time::{Duration, Instant};
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a leaf by hand over the shard in `index`, on a free port, with
/// `extra` flags, and waits until it listens: the process and its address.
pub fn spawn_leaf(index: &Path, extra: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    let mut leaf = std::process::Command::new(node_binaries().leaf)
        .args(["--listen", "127.0.0.1:0", "--index"])
        .arg(index)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start a leaf");
    let (addr, _) = read_listening(leaf.stdout.take().expect("the leaf's stdout"));
    (leaf, addr)
}

/// Reads a node's stdout up to its readiness line: the address it serves
/// gRPC on, and its HTTP port if it announced one before (with
/// `--metrics-listen`). The rest of its stdout is drained on a thread, so
/// that the node never blocks writing it.
pub fn read_listening(
    stdout: std::process::ChildStdout,
) -> (std::net::SocketAddr, Option<std::net::SocketAddr>) {
    use searchtree_node::ops::http::HTTP_PREFIX;
    use searchtree_node::serving::LISTENING_PREFIX;
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut http = None;
    let addr = loop {
        let line = lines
            .next()
            .expect("the node exited before listening")
            .expect("read the node's stdout");
        if let Some(addr) = line.strip_prefix(HTTP_PREFIX) {
            http = Some(addr.trim().parse().expect("an address"));
        }
        if let Some(addr) = line.strip_prefix(LISTENING_PREFIX) {
            break addr.trim().parse().expect("an address");
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (addr, http)
}
