//! What metrics and tracing cost a query, measured in-process.
//!
//! Every call a node serves passes through [`Operated`] (the caller's
//! credentials judged, a permit of the bound on live calls taken and the
//! call counted on its connection, the trace context read or made, a
//! `tracing` span around the call, its latency recorded by method and
//! status, the trace echoed in the answer's headers); every call a node makes to a child
//! carries the trace ([`trace::inject`]) and records its round trip in the
//! child's series; every inner node records its answer's completeness, and
//! every leaf its search time. This benchmark times each of those against
//! the same call without them, under the subscriber a node installs (the fmt
//! layer at `info`, here writing nowhere: a span writes no line unless an
//! event is logged in it), then adds them up for a query of the default
//! tree (a root, 2 parents, 4 leaves), both along its critical path (one
//! node per level) and over all its calls, to set against the tree's p99 and
//! CPU per query (BENCHMARKS.md, "Operations").
//!
//! Run: `cargo bench -p searchtree-node --bench call_overhead`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use searchtree_node::ops::auth::AuthPolicy;
use searchtree_node::ops::layer::Operated;
use searchtree_node::ops::metrics::metrics;
use searchtree_node::ops::trace;
use tower::{Service, ServiceExt};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALLS: u32 = 100_000;
const ROUNDS: usize = 9;

type Answer = http::Response<tonic::body::Body>;

/// The addresses of the connection the benchmark's calls come on.
const LOCAL: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
const REMOTE: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);

fn request() -> http::Request<()> {
    let mut request = http::Request::builder()
        .uri("http://127.0.0.1:1/searchtree.v1.Search/Search")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("traceparent", TRACEPARENT)
        .body(())
        .expect("a valid request");
    // As tonic gives it: the call's connection, which the layer tracks.
    request
        .extensions_mut()
        .insert(tonic::transport::server::TcpConnectInfo {
            local_addr: Some(LOCAL),
            remote_addr: Some(REMOTE),
        });
    request
}

/// Nanoseconds per call of `service`.
async fn served<S>(service: &mut S) -> f64
where
    S: Service<http::Request<()>, Response = Answer, Error = Infallible>,
{
    let began = Instant::now();
    for _ in 0..CALLS {
        let service = service.ready().await.unwrap_or_else(|e| match e {});
        black_box(service.call(request()).await.unwrap_or_else(|e| match e {}));
    }
    per_call(began)
}

fn per_call(began: Instant) -> f64 {
    began.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

/// Nanoseconds per call of `work`, a synchronous step.
fn timed(mut work: impl FnMut()) -> f64 {
    let began = Instant::now();
    for _ in 0..CALLS {
        work();
    }
    per_call(began)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let bare = || {
        tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(Answer::new(tonic::body::Body::empty()))
        })
    };
    // The connection is known, as a served one is: each call is counted
    // on it and its wait on the client watched.
    let peers = Arc::new(searchtree_node::serving::connections::peers::Peers::default());
    let _connection = peers.register(LOCAL, REMOTE);
    let (mut plain, mut layered) = (
        bare(),
        Operated::new(
            bare(),
            Arc::new(AuthPolicy::default()),
            searchtree_node::ops::responses::ResponseBudget::new(
                searchtree_node::ops::responses::MAX_LIVE_RESPONSES,
                Some(peers),
            ),
        ),
    );
    let child = metrics().child("0-1");
    let context = trace::TraceContext::from_headers(request().headers());
    let mut rounds: [Vec<f64>; 6] = Default::default();
    for round in 0..=ROUNDS {
        let plain_ns = runtime.block_on(served(&mut plain));
        let layered_ns = runtime.block_on(served(&mut layered));
        // A call to a child: the trace put in its metadata, within the
        // context the layer sets for the request being served.
        let inject_ns = runtime.block_on(trace::within(
            context.clone(),
            tracing::Span::none(),
            || async {
                timed(|| {
                    let mut metadata = tonic::metadata::MetadataMap::new();
                    trace::inject(&mut metadata);
                    black_box(metadata);
                })
            },
        ));
        let empty_ns = timed(|| {
            black_box(tonic::metadata::MetadataMap::new());
        });
        let child_ns = timed(|| child.answered(black_box(Duration::from_micros(900))));
        let answer_ns = timed(|| metrics().observe_answer(black_box(false), 1.0));
        let search_ns = timed(|| metrics().leaf_search.observe(black_box(0.0004)));
        if round == 0 {
            continue; // warm-up
        }
        for (i, v) in [
            layered_ns - plain_ns,
            inject_ns - empty_ns,
            child_ns,
            answer_ns,
            search_ns,
            plain_ns,
        ]
        .into_iter()
        .enumerate()
        {
            rounds[i].push(v);
        }
    }
    let [layer, inject, child, answer, search, plain] = rounds.map(median);
    println!("median of {ROUNDS} rounds of {CALLS} calls, ns per call:");
    println!("  served call through the layer, over the bare call ({plain:.0} ns): {layer:>7.0}");
    println!("  trace put on a call to a child:                              {inject:>7.0}");
    println!("  child's round trip recorded:                                 {child:>7.0}");
    println!("  inner node's answer recorded:                                {answer:>7.0}");
    println!("  leaf's search time recorded:                                 {search:>7.0}");
    // The default tree: root -> 2 parents -> 4 leaves. Critical path: one
    // served call per level, two calls to a child, two answers recorded,
    // one leaf search. All calls: 7 served, 6 to children, 3 answers, 4
    // leaf searches.
    let path = 3.0 * layer + 2.0 * (inject + child) + 2.0 * answer + search;
    let all = 7.0 * layer + 6.0 * (inject + child) + 3.0 * answer + 4.0 * search;
    println!("per query of the default tree (root, 2 parents, 4 leaves):");
    println!(
        "  along the critical path (one node per level): {:>6.1} us",
        path / 1e3
    );
    println!(
        "  over all its calls (CPU):                     {:>6.1} us",
        all / 1e3
    );
}
