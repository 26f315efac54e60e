//! Graceful drain and rolling restarts, as operators run them: a tree of
//! 4 shards with 2 replicas each (11 processes) under steady open-loop load
//! while `searchtree restart --rolling` replaces every node one by one —
//! leaves drained (their parents route to the other replica), parents and
//! the root replaced on their address before they drain. No query fails
//! and none is partial; every node ends with a new process.

use std::path::Path;
use std::process::Stdio;

use searchtree::build::corpus::FieldNames;
use searchtree::build::{self, BuildOptions, Input};
use searchtree_tests::up::UpProcess;
use searchtree_tests::{fixture, searchtree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// The bundled corpus in 4 shards with 2 replicas each, the result cache off
/// (so every query reaches the leaves being restarted).
fn replicated_tree(corpus: &Path, dir: &Path) -> std::path::PathBuf {
    let out = dir.join(format!("drain-{}", std::process::id()));
    build::build(&BuildOptions {
        input: Input::Lines(corpus.to_path_buf()),
        shards: 4,
        out: out.clone(),
        parents: 2,
        replicas: 2,
        fields: FieldNames::default(),
        skip_invalid: false,
        progress: false,
    })
    .expect("build");
    let topology = out.join("topology.toml");
    let text = std::fs::read_to_string(&topology).unwrap();
    let mut uncached = String::new();
    for line in text.lines() {
        uncached.push_str(line);
        uncached.push('\n');
        if line == "[root]" || line == "[[parent]]" {
            uncached.push_str("cache_mb = 0\n");
        }
    }
    std::fs::write(&topology, uncached).unwrap();
    topology
}

#[test]
fn a_rolling_restart_under_load_fails_no_query() {
    let f = fixture(TMP);
    let topology = replicated_tree(&f.corpus, &f.dir);
    let up = UpProcess::start(&topology, &f.dir, &[], "warn,searchtree::=info");
    let before = up.nodes();
    assert_eq!(before.nodes.len(), 11, "{before:?}");

    let report = f
        .dir
        .join(format!("drain-bench-{}.json", std::process::id()));
    let bench = searchtree()
        .args(["bench", "--root", &up.root.to_string()])
        .args(["--rate", "40", "--duration", "40s", "--warmup", "1s"])
        .args(["--budget-ms", "5000", "--connections", "2", "--json"])
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bench");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let restart = searchtree()
        .args(["restart", "--rolling", "--nodes-file"])
        .arg(&up.nodes_file)
        .args(["--timeout-secs", "300"])
        .output()
        .expect("restart");
    assert!(
        restart.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&restart.stderr),
        up.log().join("\n")
    );
    let bench = bench.wait_with_output().expect("bench ran");
    assert!(bench.status.success());

    let after = up.nodes();
    for node in &after.nodes {
        let old = before.node(&node.name).unwrap();
        assert_ne!(node.pid, old.pid, "{} kept its process", node.name);
        assert_eq!(node.grpc, old.grpc, "{} moved", node.name);
        assert_eq!(node.http, old.http, "{} moved its HTTP port", node.name);
    }

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).expect("bench JSON");
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent >= 1000, "{r}");
    assert_eq!(r["completed"].as_u64(), Some(sent), "{r}");
    assert_eq!(r["errors"].as_object().map(|e| e.len()), Some(0), "{r}");
    assert_eq!(r["partial_fraction"].as_f64(), Some(0.0), "{r}");
}
