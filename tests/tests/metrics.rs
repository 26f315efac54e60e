//! Prometheus metrics: every node of a tree started by `searchtree up`
//! serves `GET /metrics` at the HTTP address the nodes file gives, in a
//! format `promtool check metrics` accepts, with the series an operator's
//! dashboard and alerting rules read — only those of its role, there from
//! the start — and they move when queries are served. The alerting rules
//! pass promtool's own unit tests.

use std::io::Write;
use std::process::{Command, Stdio};

use searchtree_tests::up::UpProcess;
use searchtree_tests::{client, fixture, search};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// GET `path` from `addr` over plain HTTP/1.1; the body.
/// `GET path`, which must answer 200 in Prometheus' text format.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let (head, body) = searchtree_tests::http_get(addr, path);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
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
                 .ci/run does)"
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

    for node in &nodes.nodes {
        let http = node
            .http
            .unwrap_or_else(|| panic!("{} has no HTTP address", node.name));
        let page = http_get(http, "/metrics");
        promtool_check(&node.name, &page);
        role_series_before_any_query(&node.name, &node.role, &page);
    }

    let queries = ["paris", "river delta", "einstein relativity", "music"];
    let mut client = client(up.root).await;
    for q in queries {
        let answer = search(&mut client, q, 10).await.expect("search");
        assert!(!answer.partial, "{q}: {answer:?}");
    }

    let mut all_pages = String::new();
    for node in &nodes.nodes {
        assert!(node.pid.is_some(), "{node:?}");
        let http = node
            .http
            .unwrap_or_else(|| panic!("{} has no HTTP address", node.name));
        let page = http_get(http, "/metrics");
        all_pages.push_str(&page);
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
                // The disk the leaf writes to, next to the floor it keeps.
                let gauge = |name: &str| {
                    assert!(
                        page.contains(&format!("# TYPE {name} gauge")),
                        "{}: {name} is not a gauge:\n{page}",
                        node.name
                    );
                    sample(&page, name).unwrap_or_else(|| panic!("{}: no {name}", node.name))
                };
                assert!(gauge("searchtree_current_version") >= 1.0, "{page}");
                let free = gauge("searchtree_disk_free_bytes");
                let total = gauge("searchtree_disk_total_bytes");
                let floor = gauge("searchtree_disk_floor_bytes");
                assert!(
                    free > 0.0 && free <= total && floor < total,
                    "{}: free {free}, total {total}, floor {floor}",
                    node.name
                );
            }
        }
    }
    dashboard_queries_parse_and_name_served_series(&all_pages);
    alerts_name_served_series(&all_pages);
}

/// The families a page declares (`# TYPE` lines).
fn families(page: &str) -> std::collections::BTreeSet<&str> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect()
}

/// A node's page before it served any query: every series its role
/// records is there (at zero, so that dashboards and alerts read 0 rather
/// than nothing), and no family another role records.
fn role_series_before_any_query(node: &str, role: &str, page: &str) {
    let leaf_only = [
        "searchtree_leaf_search_duration_seconds",
        "searchtree_leaf_queue_wait_seconds",
    ];
    let inner_only = [
        "searchtree_child_round_trip_seconds",
        "searchtree_child_calls_total",
        "searchtree_answers_total",
        "searchtree_answer_coverage_ratio",
    ];
    let root_only = [
        "searchtree_answers_total{completeness=\"failed\"}",
        "searchtree_answers_total{completeness=\"refused\"}",
        "searchtree_admission_limit",
        "searchtree_admitted_total",
        "searchtree_shed_total",
    ];
    let mut present = vec![
        "searchtree_request_duration_seconds_count{method=\"Search\",code=\"OK\"}",
        "searchtree_request_duration_seconds_count{method=\"Fetch\",code=\"OK\"}",
        "searchtree_requests_total",
    ];
    let (absent_families, absent_series): (&[&str], &[&str]) = match role {
        "leaf" => {
            present.extend([
                "searchtree_leaf_search_duration_seconds_count",
                "searchtree_leaf_queue_wait_seconds_count",
            ]);
            (&inner_only, &root_only)
        }
        "parent" | "root" => {
            present.extend([
                "searchtree_answers_total{completeness=\"complete\"}",
                "searchtree_answers_total{completeness=\"partial\"}",
                "searchtree_answer_coverage_ratio_count",
            ]);
            if role == "root" {
                present.extend(root_only);
            }
            (&leaf_only, if role == "root" { &[] } else { &root_only })
        }
        other => panic!("{node}: unknown role {other}"),
    };
    for series in present {
        assert!(
            sample(page, series).is_some(),
            "{node} ({role}): no {series} before the first query:\n{page}"
        );
    }
    // Every child of an inner node has its series from the start.
    if role != "leaf" {
        for series in [
            "searchtree_child_round_trip_seconds_count{child=",
            "searchtree_child_calls_total{child=",
        ] {
            assert!(
                page.lines().filter(|l| l.starts_with(series)).count() >= 2,
                "{node}: no {series}..}} for each child:\n{page}"
            );
        }
    }
    let declared = families(page);
    for name in absent_families {
        assert!(
            !declared.contains(name),
            "{node} ({role}) shows {name}, which only another role records:\n{page}"
        );
    }
    for series in absent_series {
        assert!(
            !page.lines().any(|l| l.starts_with(series)),
            "{node} ({role}) shows {series}, which only the root records:\n{page}"
        );
    }
}

/// The Grafana dashboard's queries are valid PromQL (`promtool check
/// rules` on them as recording rules) and every series they name is one
/// the nodes serve.
fn dashboard_queries_parse_and_name_served_series(pages: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/searchtree.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").replace("$job", ".*"));
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::Value::String(expr.clone())
        ));
    }
    let dir = tempfile_dir();
    let file = dir.join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "dashboard queries:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for expr in &exprs {
        assert_served("the dashboard", expr, pages);
    }
}

/// Every `searchtree_` series `text` names is one some node's page (of
/// `pages`) serves: a histogram by its base name or a `_bucket`, `_sum` or
/// `_count` of it.
fn assert_served(reader: &str, text: &str, pages: &str) {
    for name in text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("searchtree_"))
    {
        assert!(
            pages.contains(&format!("# TYPE {name} "))
                || ["_bucket", "_sum", "_count"].iter().any(|s| name
                    .strip_suffix(s)
                    .is_some_and(|base| pages.contains(&format!("# TYPE {base} histogram")))),
            "{reader} reads {name}, which no node serves"
        );
    }
}

/// The alerting rules an operator loads (`deploy/prometheus/alerts.yml`).
const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/prometheus/alerts.yml"
);

/// The alerting rules read only series the nodes serve.
fn alerts_name_served_series(pages: &str) {
    let rules = std::fs::read_to_string(ALERTS).expect("alerts.yml");
    assert!(rules.contains("alert: "), "{rules}");
    assert_served("alerts.yml", &rules, pages);
}

/// promtool accepts the alerting rules, and their unit tests pass: each
/// alert fires on the series that should raise it (a node down, the root
/// failing or shedding, partial or slow answers, a failing child, a leaf
/// near or at its disk floor, a caught panic), with its labels and text,
/// and not on those that should not (another role's errors, a read-only
/// leaf's small disk, a target that is not a node).
#[test]
fn alerting_rules_pass_promtool_and_their_unit_tests() {
    let dir = std::path::Path::new(ALERTS).parent().unwrap();
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("promtool (install Debian's `prometheus` package, as .ci/run does)");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(TMP).join(format!("metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
