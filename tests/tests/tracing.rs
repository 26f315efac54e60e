//! One trace through every level: a query sent to the root with a W3C
//! `traceparent` shows up, under that trace id, in the log lines of every
//! node that worked on it — the root, both parents and all four leaves —
//! and the root's answer names the trace.

use std::time::{Duration, Instant};

use searchtree_proto::pb::SearchRequest;
use searchtree_tests::up::UpProcess;
use searchtree_tests::{GENEROUS_BUDGET_MS, client, fixture};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_id_reaches_every_nodes_log_lines() {
    let f = fixture(TMP);
    // Per-request lines are at debug; the request span (with the trace id)
    // at info.
    let up = UpProcess::start(
        &f.sharded.join("topology.toml"),
        &f.dir,
        &[],
        "info,searchtree_leaf=debug,searchtree_parent=debug,searchtree_root=debug",
    );
    let mut client = client(up.root).await;
    let mut request = tonic::Request::new(SearchRequest {
        query: "river delta".into(),
        top_k: 5,
        budget_ms: GENEROUS_BUDGET_MS,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    request
        .metadata_mut()
        .insert("x-request-id", "tracing-test-1".parse().unwrap());
    let response = client.search(request).await.expect("search");
    let echoed = response
        .metadata()
        .get("traceparent")
        .expect("the answer names its trace")
        .to_str()
        .unwrap();
    assert!(echoed.starts_with(&format!("00-{TRACE_ID}-")), "{echoed}");
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "tracing-test-1"
    );
    assert!(!response.get_ref().partial);

    let names: Vec<String> = up.nodes().nodes.into_iter().map(|n| n.name).collect();
    assert_eq!(names.len(), 7);
    // Log lines travel through pipes: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = up.log();
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| {
                !log.iter().any(|line| {
                    line.starts_with(&format!("[{name}]"))
                        && line.contains(&format!("trace_id={TRACE_ID}"))
                        && line.contains("request_id=tracing-test-1")
                })
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with the trace id from {missing:?}; the log:\n{}",
            log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every node's answer to the query was logged within its trace: 4
    // leaves, 2 parents and the root.
    let log = up.log();
    let answers: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("answered query=river delta"))
        .collect();
    assert_eq!(answers.len(), 7, "{}", log.join("\n"));
    assert!(answers.iter().all(|l| l.contains(TRACE_ID)), "{answers:#?}");
}
