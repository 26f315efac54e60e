//! Prometheus metrics: every node of a tree started by `searchtree up`
//! serves `GET /metrics` at the HTTP address the nodes file gives, in a
//! format `promtool check metrics` accepts, with the series an operator's
//! dashboard reads, and they move when queries are served.

use std::io::Write;
use std::process::{Command, Stdio};

use searchtree_tests::up::UpProcess;
use searchtree_tests::{client, fixture, search};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// GET `path` from `addr` over plain HTTP/1.1; the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the HTTP port");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// Runs `promtool check metrics` on `page`; panics with its complaints.
fn promtool_check(node: &str, page: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool: {e} (install Debian's `prometheus` package, as \
                 scripts/install_test_tools.sh does)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics on {node}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `series` (name and labels exactly as printed).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_serves_metrics_that_promtool_accepts_and_that_move() {
    let f = fixture(TMP);
    let up = UpProcess::start(&f.sharded.join("topology.toml"), &f.dir, &[], "warn");
    let nodes = up.nodes();
    assert_eq!(nodes.supervisor_pid, up.pid());
    assert_eq!(nodes.nodes.len(), 7, "{nodes:?}");
    let root = nodes.node("root").expect("root in the nodes file");
    assert_eq!(root.grpc, up.root);
    assert_eq!(root.role, "root");

    let queries = ["paris", "river delta", "einstein relativity", "music"];
    let mut client = client(up.root).await;
    for q in queries {
        let answer = search(&mut client, q, 10).await.expect("search");
        assert!(!answer.partial, "{q}: {answer:?}");
    }

    for node in &nodes.nodes {
        assert!(node.pid.is_some(), "{node:?}");
        let http = node
            .http
            .unwrap_or_else(|| panic!("{} has no HTTP address", node.name));
        let page = http_get(http, "/metrics");
        promtool_check(&node.name, &page);
        let role = format!("searchtree_node_info{{role=\"{}\"}}", node.role);
        assert_eq!(sample(&page, &role), Some(1.0), "{}:\n{page}", node.name);
        let searches = sample(
            &page,
            "searchtree_request_duration_seconds_count{method=\"Search\",code=\"OK\"}",
        )
        .unwrap_or(0.0);
        let requests = sample(&page, "searchtree_requests_total").unwrap_or(0.0);
        match node.role.as_str() {
            "root" => {
                assert_eq!(searches, queries.len() as f64, "{page}");
                assert_eq!(requests, queries.len() as f64, "{page}");
                for series in [
                    "searchtree_answers_total{completeness=\"complete\"}",
                    "searchtree_answer_coverage_ratio_count",
                    "searchtree_admitted_total",
                    "searchtree_admission_limit",
                    "searchtree_child_round_trip_seconds_count{child=\"0-1\"}",
                    "searchtree_child_calls_total{child=\"2-3\",outcome=\"ok\"}",
                ] {
                    assert!(
                        sample(&page, series).is_some_and(|v| v > 0.0),
                        "root: {series} missing or zero:\n{page}"
                    );
                }
            }
            "parent" => {
                assert!(searches > 0.0, "{}:\n{page}", node.name);
                assert!(
                    page.contains("searchtree_child_round_trip_seconds_bucket"),
                    "{}:\n{page}",
                    node.name
                );
                assert!(page.contains("# TYPE searchtree_hedges_sent_total counter"));
            }
            _ => {
                assert!(searches > 0.0, "{}:\n{page}", node.name);
                assert!(
                    sample(&page, "searchtree_leaf_search_duration_seconds_count")
                        .is_some_and(|v| v > 0.0),
                    "{}:\n{page}",
                    node.name
                );
                assert!(page.contains("searchtree_leaf_queue_wait_seconds_bucket"));
            }
        }
    }
}
