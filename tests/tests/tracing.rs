//! One trace through every level: a query sent to the root with a W3C
//! `traceparent` shows up, under that trace id, in the log lines of every
//! node that worked on it — the root, both parents and all four leaves —
//! and the root's answer names the trace. With `--otlp-endpoint`, every
//! node exports its span of the query to an OTLP collector, and the spans
//! make one tree under the client's.

use std::time::{Duration, Instant};

use searchtree_proto::otlp::any_value::Value;
use searchtree_proto::otlp::trace_service_server::{TraceService, TraceServiceServer};
use searchtree_proto::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse, Span};
use searchtree_proto::pb::SearchRequest;
use searchtree_tests::up::UpProcess;
use searchtree_tests::{GENEROUS_BUDGET_MS, client, fixture};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The query both tests send, within trace [`TRACE_ID`] as a child of the
/// client's span `client_span`.
fn traced_search(client_span: u64) -> tonic::Request<SearchRequest> {
    let mut request = tonic::Request::new(SearchRequest {
        query: "river delta".into(),
        top_k: 5,
        budget_ms: GENEROUS_BUDGET_MS,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{client_span:016x}-01")
            .parse()
            .unwrap(),
    );
    request
}

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
    let mut request = traced_search(0x00f0_67aa_0ba9_02b7);
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
    // Log lines travel through pipes: give them a moment. Wait for each
    // node's answer line, its last for the query (a node may log other
    // lines within the trace before it, e.g. a cache cleared).
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
                        && line.contains("answered query=river delta")
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

/// An OTLP/gRPC collector in the test: keeps every span it receives, with
/// the `service.name` of the node that sent it.
#[derive(Default, Clone)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_of_one_query_reach_an_otlp_collector_as_one_tree() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let f = fixture(TMP);
    let up = UpProcess::start(
        &f.sharded.join("topology.toml"),
        &f.dir,
        &["--otlp-endpoint", &endpoint, "--otlp-sample-ratio", "0"],
        "warn",
    );
    let mut client = client(up.root).await;
    // Sampled at ratio 0: queries that start their own trace export
    // nothing; one that brings a sampled `traceparent` (below) does. These
    // go first: every node exports in the order its requests end, so once
    // the traced query's spans are in, theirs would be too. (Other
    // queries than the traced one, which must not come from a cache.)
    for query in ["river", "delta", "mountain", "lake", "city"] {
        client
            .search(SearchRequest {
                query: query.into(),
                top_k: 5,
                budget_ms: GENEROUS_BUDGET_MS,
                ..Default::default()
            })
            .await
            .expect("search");
    }
    const CLIENT_SPAN: u64 = 0x00f0_67aa_0ba9_02b7;
    let request = traced_search(CLIENT_SPAN);
    client.search(request).await.expect("search");

    // Spans are sent in batches, at most half a second apart.
    let trace_id = u128::from_str_radix(TRACE_ID, 16).unwrap().to_be_bytes();
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<(String, Span)> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.trace_id == trace_id && s.name == "searchtree.v1.Search/Search")
            .cloned()
            .collect();
        if spans.len() >= 7 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let unsampled = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.trace_id != trace_id && s.name == "searchtree.v1.Search/Search")
        .count();
    assert_eq!(unsampled, 0, "spans of traces the ratio left out");
    let count = |service: &str| spans.iter().filter(|(s, _)| s == service).count();
    assert_eq!(
        (
            count("searchtree-root"),
            count("searchtree-parent"),
            count("searchtree-leaf")
        ),
        (1, 2, 4),
        "{spans:#?}"
    );
    // One tree: the root's span hangs under the client's, every other
    // span under a span of the trace one level up.
    let id = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().unwrap());
    fn span_of<'a>(
        spans: &'a [(String, Span)],
        service: &'a str,
    ) -> impl Iterator<Item = &'a Span> {
        spans
            .iter()
            .filter(move |(s, _)| s == service)
            .map(|(_, s)| s)
    }
    let root = span_of(&spans, "searchtree-root").next().unwrap();
    assert_eq!(id(&root.parent_span_id), CLIENT_SPAN);
    let parents: Vec<u64> = span_of(&spans, "searchtree-parent")
        .map(|s| id(&s.span_id))
        .collect();
    for parent in span_of(&spans, "searchtree-parent") {
        assert_eq!(id(&parent.parent_span_id), id(&root.span_id));
        assert!(parent.start_time_unix_nano >= root.start_time_unix_nano);
        assert!(parent.end_time_unix_nano <= root.end_time_unix_nano);
    }
    for leaf in span_of(&spans, "searchtree-leaf") {
        assert!(parents.contains(&id(&leaf.parent_span_id)), "{leaf:#?}");
        assert_eq!(leaf.kind, 2, "a server span");
    }

    // The root's metrics count what it exported (once the collector's
    // answer is back, a moment after the spans arrived).
    let http = up.nodes().node("root").unwrap().http.unwrap();
    let counter = |page: &str, name: &str| -> Option<f64> {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) =
            tokio::task::spawn_blocking(move || searchtree_tests::http_get(http, "/metrics"))
                .await
                .unwrap();
        let exported = counter(&metrics, "searchtree_otlp_spans_exported_total");
        assert!(
            exported.is_some(),
            "no exported-spans counter in\n{metrics}"
        );
        if exported >= Some(1.0) {
            assert_eq!(
                counter(&metrics, "searchtree_otlp_spans_dropped_total"),
                Some(0.0),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing counted as exported:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
