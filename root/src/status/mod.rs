//! The root's status and search page, on its HTTP port: the tree as its
//! nodes report it (health, version, latency percentiles, coverage,
//! replicas in or out of rotation), and a search box whose results show
//! the hits, the coverage and where the time went, level by level.
//!
//! Everything the page shows comes from the same gRPC calls any client can
//! make: `NodeStats.GetStatus` on every node (walked from the root down,
//! through the addresses each parent reports for its children), and
//! `Search.Search` with `profile` set, sent to the root's own address.

mod json;

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures::future::BoxFuture;
use searchtree_node::ops::client;
use searchtree_proto::pb::node_stats_client::NodeStatsClient;
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::{GetStatusRequest, SearchRequest};
use serde::Deserialize;
use serde_json::{Value, json};

/// The page: one self-contained file, no external assets.
const PAGE: &str = include_str!("page.html");

/// How long one node may take to report its status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The deepest a walk goes (a guard against a cycle in misconfigured trees).
const MAX_DEPTH: usize = 16;

/// The routes of the root's status page, for the root at `root` (its
/// gRPC address).
pub fn routes(root: String) -> axum::Router {
    axum::Router::new()
        .route("/", get(page))
        .route("/api/tree", get(tree))
        .route("/api/search", get(search))
        .with_state(root)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /api/tree`: every node's status, nested like the tree.
async fn tree(State(root): State<String>) -> impl IntoResponse {
    axum::Json(walk(root, 0).await)
}

fn walk(addr: String, depth: usize) -> BoxFuture<'static, Value> {
    Box::pin(async move {
        let status = match status_of(&addr).await {
            Ok(status) => status,
            Err(error) => {
                return json!({"node": addr, "health": "UNREACHABLE", "error": error});
            }
        };
        let mut node = json::status(&status);
        if depth < MAX_DEPTH {
            let mut children = Vec::new();
            for child in &status.children {
                let replicas = futures::future::join_all(child.replicas.iter().map(|r| {
                    let address = r.address.clone();
                    let state = r.state.clone();
                    async move {
                        json!({"address": address, "state": state, "node": walk(address.clone(), depth + 1).await})
                    }
                }))
                .await;
                children.push(json!({"shards": child.shards, "replicas": replicas}));
            }
            node["children"] = Value::Array(children);
        }
        node
    })
}

async fn status_of(addr: &str) -> Result<searchtree_proto::pb::GetStatusResponse, String> {
    let endpoint = client::endpoint(addr)
        .map_err(|e| e.to_string())?
        .connect_timeout(STATUS_TIMEOUT)
        .timeout(STATUS_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| {
        format!("cannot connect ({e}): is the node running? Its log says why it is not")
    })?;
    NodeStatsClient::new(client::channel(channel))
        .get_status(GetStatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| match s.code() {
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => format!(
                "no status within {} s: the node is hung or overloaded (see its log, \
                 or its /metrics)",
                STATUS_TIMEOUT.as_secs()
            ),
            code => format!("{code:?}: {}", s.message()),
        })
}

/// The query string of `GET /api/search`.
#[derive(Debug, Deserialize)]
struct SearchParams {
    q: String,
    #[serde(default = "default_k")]
    k: u32,
    #[serde(default)]
    budget_ms: u32,
}

fn default_k() -> u32 {
    10
}

/// `GET /api/search?q=...&k=...&budget_ms=...`: the root's answer, with
/// its profile.
async fn search(
    State(root): State<String>,
    Query(params): Query<SearchParams>,
) -> impl IntoResponse {
    let channel = match client::endpoint(&root) {
        Ok(endpoint) => endpoint.connect().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": e})),
            );
        }
    };
    let request = SearchRequest {
        query: params.q.clone(),
        top_k: params.k,
        budget_ms: params.budget_ms,
        profile: true,
        ..Default::default()
    };
    match SearchClient::new(client::channel(channel))
        .search(request)
        .await
    {
        Ok(response) => (
            StatusCode::OK,
            axum::Json(json::search(&params.q, response.get_ref())),
        ),
        Err(status) => (
            match status.code() {
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                // The budget ran out before any shard answered.
                tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            axum::Json(json!({
                "error": status.message(),
                "code": format!("{:?}", status.code()),
            })),
        ),
    }
}
