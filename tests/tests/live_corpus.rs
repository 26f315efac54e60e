//! A corpus that changes while the tree serves, over real processes: part of
//! the bundled corpus is built, the rest is loaded into the running tree
//! (some documents replaced, some deleted) and published, while queries keep
//! coming. No query fails; every answer is one index's answer over either
//! the old or the new corpus, never a mix; afterwards the tree answers as one
//! index built from scratch over the final corpus — the same ids, scores and
//! match counts, so replaced and deleted documents count nowhere.
//!
//! Also: a replica killed during a load catches up before it serves again,
//! and one that missed a publish catches up in an idle tree too, even when
//! its parent restarted since; a staged load can be thrown away
//! (`searchtree discard`);
//! a leaf (the only replica of its shard) killed during a load makes the
//! load report the batches not acknowledged, and rerunning it completes it;
//! a corpus rebuilt offline replaces the running one with the same switch.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use searchtree::build::corpus::FieldNames;
use searchtree::build::{self, BuildOptions, Input, TOPOLOGY_FILE};
use searchtree::bundled;
use searchtree::tree::supervisor::Tree;
use searchtree::tree::topology::Topology;
use searchtree_proto::pb::corpus_client::CorpusClient;
use searchtree_proto::pb::node_stats_client::NodeStatsClient;
use searchtree_proto::pb::{GetStatusRequest, SearchRequest, SearchResponse, VersionsRequest};
use searchtree_tests::oracle::{Expected, Oracle, assert_same_hits};
use searchtree_tests::{
    GENEROUS_BUDGET_MS, client, counter, kill_node, node_addr, searchtree, send, start_tree,
};
use serde_json::{Value, json};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const SHARDS: u32 = 4;
/// Documents of the bundled corpus in the initial build; the rest is loaded.
const INITIAL_DOCS: usize = 7_000;
/// Queries of the bundled set checked against the oracles.
const CHECKED_QUERIES: usize = 60;

/// A document as a corpus line holds it.
#[derive(Debug, Clone)]
struct Doc {
    id: String,
    title: String,
    body: String,
}

impl Doc {
    fn line(&self) -> String {
        json!({"id": self.id, "title": self.title, "body": self.body}).to_string()
    }
}

/// The corpora of these tests, written once per test binary.
struct Corpora {
    dir: PathBuf,
    /// What the load file holds: the rest of the corpus, replacements and
    /// deletions, interleaved.
    load_file: PathBuf,
    /// Counts the load must report.
    added: usize,
    replaced: usize,
    deleted: usize,
    /// The initial corpus as one index, and the final one.
    old_oracle: Oracle,
    new_oracle: Oracle,
    /// The final corpus, built offline into 4 shards (for the hot swap).
    final_build: PathBuf,
    /// The initial corpus file, to build trees from.
    initial_file: PathBuf,
}

static CORPORA: std::sync::OnceLock<Corpora> = std::sync::OnceLock::new();

fn read_bundled() -> Vec<Doc> {
    let gz = flate2::read::GzDecoder::new(bundled::CORPUS_JSONL_GZ);
    BufReader::new(gz)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            Doc {
                id: v["id"].as_str().unwrap().to_string(),
                title: v["title"].as_str().unwrap_or_default().to_string(),
                body: v["body"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for line in lines {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

fn build_into(corpus: &Path, out: &Path, shards: u32, parents: u32, replicas: u32) {
    build::build(&BuildOptions {
        input: Input::Lines(corpus.to_path_buf()),
        shards,
        out: out.to_path_buf(),
        parents,
        replicas,
        fields: FieldNames::default(),
        skip_invalid: false,
        progress: false,
    })
    .unwrap_or_else(|e| panic!("building {}: {e:#}", out.display()));
}

fn corpora() -> &'static Corpora {
    CORPORA.get_or_init(|| {
        let dir = Path::new(TMP).join(format!("st-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let all = read_bundled();
        let (initial, rest) = all.split_at(INITIAL_DOCS);

        // Every 25th initial document is replaced by another's text, every
        // 25th (offset) deleted; the rest of the corpus is added.
        let mut load = Vec::new();
        let mut final_docs = Vec::new();
        let (mut replaced, mut deleted) = (0, 0);
        for (i, doc) in initial.iter().enumerate() {
            match i % 25 {
                3 => {
                    let other = &initial[(i + 7) % initial.len()];
                    let new = Doc {
                        body: format!("{} {}", other.body, doc.title),
                        ..doc.clone()
                    };
                    load.push(new.line());
                    final_docs.push(new);
                    replaced += 1;
                }
                11 => {
                    load.push(json!({"id": doc.id, "op": "delete"}).to_string());
                    deleted += 1;
                }
                _ => final_docs.push(doc.clone()),
            }
        }
        // Added and deleted within the load: counts nowhere at the end.
        load.push(
            Doc {
                id: "ephemeral-document".into(),
                title: "Ephemeral".into(),
                body: "here for one load only".into(),
            }
            .line(),
        );
        for (i, doc) in rest.iter().enumerate() {
            load.push(doc.line());
            final_docs.push(doc.clone());
            if i == 100 {
                load.push(json!({"id": "ephemeral-document", "op": "delete"}).to_string());
            }
        }
        // Interleave additions with replacements and deletions, as a feed would.
        let load: Vec<String> = interleave(load);

        let initial_file = dir.join("initial.jsonl");
        write_lines(&initial_file, initial.iter().map(Doc::line));
        let final_file = dir.join("final.jsonl");
        write_lines(&final_file, final_docs.iter().map(Doc::line));
        let load_file = dir.join("load.jsonl");
        write_lines(&load_file, load);

        build_into(&initial_file, &dir.join("old-whole"), 1, 0, 1);
        build_into(&final_file, &dir.join("new-whole"), 1, 0, 1);
        let final_build = dir.join("final-build");
        build_into(&final_file, &final_build, SHARDS, 2, 1);
        Corpora {
            old_oracle: Oracle::open(&dir.join("old-whole/shards/shard-000")),
            new_oracle: Oracle::open(&dir.join("new-whole/shards/shard-000")),
            load_file,
            // The ephemeral document is added, then deleted.
            added: rest.len() + 1,
            replaced,
            deleted: deleted + 1,
            final_build,
            initial_file,
            dir,
        }
    })
}

/// Deals `lines` into 7 piles and concatenates them: the order of
/// operations on different ids is mixed, the order on one id kept only
/// where it matters (the ephemeral document, whose delete comes later in
/// the same pile).
fn interleave(lines: Vec<String>) -> Vec<String> {
    let ephemeral: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("ephemeral-document"))
        .cloned()
        .collect();
    let mut piles: Vec<Vec<String>> = vec![Vec::new(); 7];
    for (i, line) in lines
        .into_iter()
        .filter(|l| !l.contains("ephemeral-document"))
        .enumerate()
    {
        piles[i % 7].push(line);
    }
    piles[3].splice(10..10, ephemeral.iter().take(1).cloned());
    piles[5].extend(ephemeral.into_iter().skip(1));
    piles.concat()
}

/// A fresh tree over the initial corpus: `replicas` leaves per shard, two
/// parents, health checks every 100 ms, built into `name`.
async fn start_initial_tree(name: &str, replicas: u32) -> (Tree, PathBuf) {
    start_initial_tree_with(name, replicas, |_| {}).await
}

/// [`start_initial_tree`], its topology changed by `change` first.
async fn start_initial_tree_with(
    name: &str,
    replicas: u32,
    change: impl FnOnce(&mut Topology),
) -> (Tree, PathBuf) {
    let c = corpora();
    let out = c.dir.join(name);
    build_into(&c.initial_file, &out, SHARDS, 2, replicas);
    let mut topology = Topology::load(&out.join(TOPOLOGY_FILE)).unwrap();
    topology.routing.health_interval_ms = Some(100);
    change(&mut topology);
    let path = out.join("live.toml");
    std::fs::write(&path, topology.to_toml()).unwrap();
    (start_tree(&path).await, out)
}

/// Which corpus an answer came from, judged by the version it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Corpus {
    Old,
    New,
}

/// The oracle's answers, computed once per query and corpus.
#[derive(Default)]
struct Expectations(HashMap<(String, Corpus), (Vec<Expected>, u64)>);

impl Expectations {
    fn check(&mut self, what: &str, query: &str, corpus: Corpus, response: &SearchResponse) {
        let c = corpora();
        let (hits, total) = self
            .0
            .entry((query.to_string(), corpus))
            .or_insert_with(|| {
                let oracle = match corpus {
                    Corpus::Old => &c.old_oracle,
                    Corpus::New => &c.new_oracle,
                };
                oracle.top_k(query, 10)
            });
        assert_same_hits(
            &format!("{what} {query:?} ({corpus:?})"),
            &response.hits,
            hits,
        );
        assert_eq!(
            response.total_hits, *total,
            "{what} {query:?} ({corpus:?}): match counts differ from one index's"
        );
    }
}

fn queries() -> Vec<String> {
    bundled::queries()
        .into_iter()
        .take(CHECKED_QUERIES)
        .map(str::to_string)
        .collect()
}

fn request(query: &str) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        top_k: 10,
        budget_ms: GENEROUS_BUDGET_MS,
        exact_total_hits: true,
        ..Default::default()
    }
}

/// Queries the root in a loop until `stop`, recording every answer (or
/// error) with the query it was for.
fn keep_querying(
    root: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, Result<SearchResponse, tonic::Status>)>> {
    tokio::spawn(async move {
        let mut client = client(root).await;
        let mut answers = Vec::new();
        for query in queries().iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            answers.push((query.clone(), send(&mut client, request(query)).await));
        }
        answers
    })
}

/// Runs the CLI with `args` against the root, off the async workers.
async fn cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || searchtree().args(&args).output().unwrap())
        .await
        .unwrap()
}

fn load_args(root: std::net::SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "load".to_string(),
        "--root".into(),
        root.to_string(),
        "--input".into(),
        corpora().load_file.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The versions every leaf reports, through the root.
async fn leaf_versions(root: std::net::SocketAddr) -> Vec<searchtree_proto::pb::LeafVersions> {
    let mut corpus = CorpusClient::connect(format!("http://{root}"))
        .await
        .unwrap();
    corpus
        .versions(VersionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .leaves
}

/// Checks every recorded answer: none failed, none partial (unless
/// `allow_partial`), each the old or the new corpus's exact answer by the
/// version it names. Returns how many answers came from each.
fn check_answers(
    answers: Vec<(String, Result<SearchResponse, tonic::Status>)>,
    old_version: u64,
    allow_partial: bool,
) -> HashMap<Corpus, usize> {
    let mut expect = Expectations::default();
    let mut seen = HashMap::new();
    for (i, (query, answer)) in answers.into_iter().enumerate() {
        let response = answer.unwrap_or_else(|e| panic!("query {i} {query:?} failed: {e}"));
        if response.partial {
            assert!(
                allow_partial,
                "query {i} {query:?} was partial: {response:?}"
            );
            continue;
        }
        let corpus = if response.version == old_version {
            Corpus::Old
        } else {
            assert_eq!(
                response.version,
                old_version + 1,
                "query {i} {query:?}: unexpected version"
            );
            Corpus::New
        };
        expect.check(&format!("answer {i}"), &query, corpus, &response);
        *seen.entry(corpus).or_default() += 1;
    }
    seen
}

/// Every checked query, once, equals the final corpus's one-index answer.
async fn assert_answers_final_corpus(root: std::net::SocketAddr, version: u64) {
    let mut client = client(root).await;
    let mut expect = Expectations::default();
    for query in queries() {
        let response = send(&mut client, request(&query)).await.unwrap();
        assert!(!response.partial, "{query:?}: partial after the switch");
        assert_eq!(response.version, version, "{query:?}");
        expect.check("after the switch", &query, Corpus::New, &response);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_switches_the_whole_tree_at_once_and_ends_exact() {
    let c = corpora();
    let (tree, _) = start_initial_tree("load-tree", 2).await;
    let root = tree.root_addr();
    let before = leaf_versions(root).await;
    assert!(
        before.iter().all(|l| l.reachable && l.current == 1),
        "{before:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let querying = keep_querying(root, Arc::clone(&stop));
    // Paced, as an operator keeping a load off the queries' cores would:
    // at 10,000 operations a second the load cuts batches of 1,000 (a
    // tenth of the rate), so it is several, each sent no sooner than 100 ms
    // after the one before.
    let ops = c.added + c.replaced + c.deleted;
    assert!(ops > 3000, "{ops} operations");
    let loading = std::time::Instant::now();
    let out = cli(load_args(root, &["--max-rate", "10000"])).await;
    let took = loading.elapsed();
    let batches = ops.div_ceil(1000);
    assert!(
        took >= Duration::from_millis(100 * (batches as u64 - 1)),
        "{batches} batches paced 100 ms apart took {took:?}"
    );
    // A little more querying at the new version before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = querying.await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    for (what, n) in [
        ("added", c.added),
        ("replaced", c.replaced),
        ("deleted", c.deleted),
    ] {
        assert!(
            printed.contains(&format!("{n} {what}")),
            "expected \"{n} {what}\" in:\n{}",
            text(&out)
        );
    }
    let seen = check_answers(answers, 1, false);
    assert!(seen.get(&Corpus::Old).is_some_and(|&n| n > 0), "{seen:?}");
    assert!(seen.get(&Corpus::New).is_some_and(|&n| n > 0), "{seen:?}");

    assert_answers_final_corpus(root, 2).await;
    let after = leaf_versions(root).await;
    assert_eq!(after.len(), (SHARDS * 2) as usize);
    for leaf in &after {
        assert!(leaf.reachable && leaf.current == 2, "{leaf:?}");
        assert_eq!(leaf.staged_ops, 0, "{leaf:?}");
    }
    for shard in 0..SHARDS {
        let digests: Vec<&str> = after
            .iter()
            .filter(|l| l.shard == shard)
            .map(|l| l.digest.as_str())
            .collect();
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "shard {shard}: {after:?}"
        );
    }
    let verify = cli(vec!["verify".into(), "--root".into(), root.to_string()]).await;
    assert!(verify.status.success(), "{}", text(&verify));

    // Loading the same file again changes nothing but the version: every
    // operation is idempotent by id.
    let again = cli(load_args(root, &[])).await;
    assert!(again.status.success(), "{}", text(&again));
    let mut client = client(root).await;
    let mut expect = Expectations::default();
    for query in queries().into_iter().take(10) {
        let response = send(&mut client, request(&query)).await.unwrap();
        assert_eq!(response.version, 3);
        expect.check("after loading again", &query, Corpus::New, &response);
    }
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_during_a_load_catches_up_before_serving_again() {
    let (mut tree, _) = start_initial_tree("catch-up-tree", 2).await;
    let root = tree.root_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let querying = keep_querying(root, Arc::clone(&stop));

    let load = HeldLoad::start("catch-up", root, &["--batch-size", "100"]);
    // Once the load is under way, one replica of shard 1 dies.
    wait_for_staged_ops(root).await;
    kill_node(&tree, "leaf-1-0");
    tree.stop_node("leaf-1-0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tree.restart_node("leaf-1-0").await.unwrap();
    let out = load.finish().await;
    assert!(out.status.success(), "{}", text(&out));

    // The restarted replica is behind; queries pinned to the new version
    // are answered by its sibling while it copies the version.
    wait_until_every_replica_holds(root, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    // A query in flight to the replica when it was killed lost that shard
    // (a broken connection is not retried: the query may be what killed
    // it); every complete answer is exact.
    let seen = check_answers(querying.await.unwrap(), 1, true);
    assert!(seen.contains_key(&Corpus::New), "{seen:?}");
    assert_answers_final_corpus(root, 2).await;
    // It got there by copying the version from its sibling, asked by the
    // parent that found it behind.
    let mut catch_ups = 0;
    for parent in ["parent-0", "parent-1"] {
        catch_ups += counter(node_addr(&tree, parent), "catch_ups_succeeded").await;
    }
    assert!(catch_ups >= 1, "no catch-up was made");
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_a_publish_catches_up_in_an_idle_tree_and_a_staged_load_is_discarded()
{
    let (mut tree, _) = start_initial_tree("idle-catch-up-tree", 2).await;
    let root = tree.root_addr();
    kill_node(&tree, "leaf-1-0");
    tree.stop_node("leaf-1-0").await.unwrap();
    let out = cli(load_args(root, &[])).await;
    assert!(out.status.success(), "{}", text(&out));
    tree.restart_node("leaf-1-0").await.unwrap();
    // Before any search, each parent reports the version it activated.
    for parent in ["parent-0", "parent-1"] {
        let status = NodeStatsClient::connect(format!("http://{}", node_addr(&tree, parent)))
            .await
            .unwrap()
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.version, 2, "{parent}: {status:?}");
    }

    // No query is sent: the parent that activated version 2 knows which
    // of its replicas lack it, and has them copy it from a sibling.
    wait_until_every_replica_holds(root, 2).await;
    let mut catch_ups = 0;
    for parent in ["parent-0", "parent-1"] {
        catch_ups += counter(node_addr(&tree, parent), "catch_ups_succeeded").await;
    }
    assert!(catch_ups >= 1, "no catch-up was made");
    assert_answers_final_corpus(root, 2).await;

    // A load staged and not wanted is thrown away: every replica's staging
    // area is empty after, and the next publish changes nothing.
    let out = cli(load_args(root, &["--no-publish"])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(leaf_versions(root).await.iter().all(|l| l.staged_ops > 0));
    let leaf = node_addr(&tree, "leaf-0-1").to_string();
    let refused = cli(vec!["discard".into(), "--root".into(), leaf]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("not the tree's root: discard through the root"),
        "{}",
        text(&refused)
    );
    let out = cli(vec!["discard".into(), "--root".into(), root.to_string()]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("discarded "),
        "{}",
        text(&out)
    );
    let leaves = leaf_versions(root).await;
    assert!(leaves.iter().all(|l| l.staged_ops == 0), "{leaves:?}");
    let out = cli(vec!["publish".into(), "--root".into(), root.to_string()]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(", 0 staged operations,"),
        "{}",
        text(&out)
    );
    assert_answers_final_corpus(root, 3).await;
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_whose_parent_restarted_catches_up_in_an_idle_tree() {
    let (mut tree, out) = start_initial_tree("restarted-parent-tree", 2).await;
    let root = tree.root_addr();
    let topology = Topology::load(&out.join("live.toml")).unwrap();
    let parent = topology
        .parents
        .iter()
        .find(|p| p.children.iter().any(|c| c == "leaf-1-0"))
        .expect("a parent over leaf-1-0")
        .name
        .clone();
    kill_node(&tree, "leaf-1-0");
    tree.stop_node("leaf-1-0").await.unwrap();
    let loaded = cli(load_args(root, &[])).await;
    assert!(loaded.status.success(), "{}", text(&loaded));

    // The parent that sent version 2's Activate, and knew leaf-1-0 missed
    // it, restarts: the new process knows nothing of that. Then leaf-1-0
    // comes back at version 1, and no query is sent.
    kill_node(&tree, &parent);
    tree.stop_node(&parent).await.unwrap();
    tree.restart_node(&parent).await.unwrap();
    tree.restart_node("leaf-1-0").await.unwrap();
    wait_until_every_replica_holds(root, 2).await;
    let catch_ups = counter(node_addr(&tree, &parent), "catch_ups_succeeded").await;
    assert!(catch_ups >= 1, "{parent} (restarted) made no catch-up");

    // The leaves agree again: the next load is not refused.
    let next = cli(load_args(root, &[])).await;
    assert!(next.status.success(), "{}", text(&next));
    assert_answers_final_corpus(root, 3).await;
    tree.shutdown().await;
}

/// Waits (at most a minute) until every replica serves `version` as its
/// current one, and checks that replicas of a shard hold the same documents.
async fn wait_until_every_replica_holds(root: std::net::SocketAddr, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leaves = leaf_versions(root).await;
        let behind: Vec<_> = leaves
            .iter()
            .filter(|l| l.current != version || !l.reachable)
            .collect();
        if behind.is_empty() {
            for shard in 0..SHARDS {
                let digests: Vec<&str> = leaves
                    .iter()
                    .filter(|l| l.shard == shard)
                    .map(|l| l.digest.as_str())
                    .collect();
                assert!(digests.windows(2).all(|w| w[0] == w[1]), "{leaves:?}");
            }
            return;
        }
        assert!(Instant::now() < deadline, "still behind: {behind:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `searchtree load` of the load file whose input is a named pipe: the
/// first half of the file goes through at once, the rest only once
/// `release` is sent. A node killed in between is killed while the load is
/// certainly under way, however fast the machine stages the first half.
struct HeldLoad {
    load: tokio::task::JoinHandle<Output>,
    release: std::sync::mpsc::Sender<()>,
}

impl HeldLoad {
    fn start(name: &str, root: std::net::SocketAddr, extra: &[&str]) -> HeldLoad {
        let fifo = corpora().dir.join(format!("{name}.fifo.jsonl"));
        let _ = std::fs::remove_file(&fifo);
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
        let lines: Vec<String> = std::fs::read_to_string(&corpora().load_file)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writing = fifo.clone();
        std::thread::spawn(move || {
            // Opening blocks until the load opens its end.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .open(&writing)
                .unwrap();
            let (first, rest) = lines.split_at(lines.len() / 2);
            let mut write = |lines: &[String]| {
                for line in lines {
                    if writeln!(out, "{line}").is_err() {
                        return; // the load went away
                    }
                }
                let _ = out.flush();
            };
            write(first);
            let _ = released.recv();
            write(rest);
        });
        let mut args = load_args(root, extra);
        let input = args.iter().position(|a| a == "--input").unwrap() + 1;
        args[input] = fifo.display().to_string();
        HeldLoad {
            load: tokio::spawn(cli(args)),
            release,
        }
    }

    /// Lets the rest of the file through, and waits for the load to end.
    async fn finish(self) -> Output {
        let _ = self.release.send(());
        self.load.await.unwrap()
    }
}

/// Waits until some leaf has staged operations: the load is under way.
async fn wait_for_staged_ops(root: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leaf_versions(root).await.iter().any(|l| l.staged_ops > 0) {
        assert!(Instant::now() < deadline, "the load never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_killed_during_a_load_fails_its_batches_and_a_rerun_completes_it() {
    let (mut tree, _) = start_initial_tree("rerun-tree", 1).await;
    let root = tree.root_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let querying = keep_querying(root, Arc::clone(&stop));

    let load = HeldLoad::start("rerun", root, &["--batch-size", "50"]);
    wait_for_staged_ops(root).await;
    kill_node(&tree, "leaf-2");
    tree.stop_node("leaf-2").await.unwrap();
    let out = load.finish().await;
    assert!(!out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains("not acknowledged"), "{printed}");
    assert!(printed.contains("not published"), "{printed}");

    // The tree kept answering at the published version throughout (shard 2
    // missing while its only leaf was down).
    tree.restart_node("leaf-2").await.unwrap();
    let rerun = cli(load_args(root, &[])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(rerun.status.success(), "{}", text(&rerun));
    let seen = check_answers(querying.await.unwrap(), 1, true);
    assert!(seen.contains_key(&Corpus::Old), "{seen:?}");
    assert_answers_final_corpus(root, 2).await;
    tree.shutdown().await;
}

/// A leaf whose disk is below its floor refuses its batches before
/// writing them: the load says which batches and why, publishes nothing,
/// and the tree answers at the version it had throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_short_of_disk_refuses_its_batches_and_the_tree_keeps_answering() {
    let (tree, _) = start_initial_tree_with("disk-tree", 1, |topology| {
        let leaf = topology.leaves.iter_mut().find(|l| l.name == "leaf-1");
        leaf.unwrap().min_free_disk = Some("100%".into());
    })
    .await;
    let root = tree.root_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let querying = keep_querying(root, Arc::clone(&stop));
    let out = cli(load_args(root, &["--batch-size", "200"])).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(!out.status.success(), "{}", text(&out));
    let printed = text(&out);
    for said in [
        "not acknowledged",
        "a load's batch refused",
        "--min-free-disk 100%",
        "not published",
    ] {
        assert!(printed.contains(said), "{said:?} not in:\n{printed}");
    }
    let seen = check_answers(querying.await.unwrap(), 1, false);
    assert_eq!(seen.keys().collect::<Vec<_>>(), [&Corpus::Old], "{seen:?}");
    assert!(counter(node_addr(&tree, "leaf-1"), "disk_refusals").await > 0);
    assert_eq!(
        counter(node_addr(&tree, "leaf-0"), "disk_refusals").await,
        0
    );
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_rebuilt_offline_replaces_the_running_one_without_a_restart() {
    let c = corpora();
    let (tree, _) = start_initial_tree("swap-tree", 2).await;
    let root = tree.root_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let querying = keep_querying(root, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = cli(vec![
        "publish".into(),
        "--root".into(),
        root.to_string(),
        "--from-build".into(),
        c.final_build.display().to_string(),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(out.status.success(), "{}", text(&out));
    let seen = check_answers(querying.await.unwrap(), 1, false);
    assert!(seen.contains_key(&Corpus::New), "{seen:?}");
    assert_answers_final_corpus(root, 2).await;
    tree.shutdown().await;
}
