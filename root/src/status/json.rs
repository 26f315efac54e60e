//! The page's JSON: the protobuf messages as plain objects.

use searchtree_proto::pb::{ChildProfile, GetStatusResponse, NodeProfile, SearchResponse};
use serde_json::{Value, json};

/// One node's status.
pub fn status(s: &GetStatusResponse) -> Value {
    json!({
        "node": s.node,
        "role": s.role,
        "health": s.health,
        "version": s.version,
        "uptime_s": s.uptime_s,
        "requests": s.requests,
        "p50_ms": s.p50_us as f64 / 1000.0,
        "p99_ms": s.p99_us as f64 / 1000.0,
        "p999_ms": s.p999_us as f64 / 1000.0,
        "coverage_mean": s.coverage_mean,
        "answers": s.answers,
        "disk_free_bytes": s.disk_free_bytes,
        "disk_total_bytes": s.disk_total_bytes,
        "disk_floor_bytes": s.disk_floor_bytes,
    })
}

/// A search answer with its profile.
pub fn search(query: &str, r: &SearchResponse) -> Value {
    let coverage = r.coverage.as_ref();
    json!({
        "query": query,
        "took_us": r.took_us,
        "version": r.version,
        "partial": r.partial,
        "total_hits": r.total_hits,
        "total_hits_is_lower_bound": r.total_hits_is_lower_bound,
        "hits_unfetched": r.hits_unfetched,
        "coverage": coverage.map(|c| json!({
            "shards_total": c.shards_total,
            "shards_ok": c.shards_ok,
            "shards_timed_out": c.shards_timed_out,
            "shards_failed": c.shards_failed,
            "docs_total": c.docs_total,
            "docs_searched": c.docs_searched,
        })),
        "hits": r.hits.iter().map(|h| json!({
            "doc_id": h.doc_id,
            "score": h.score,
            "shard": h.shard,
            "title": h.title,
            "snippet": h.snippet,
        })).collect::<Vec<_>>(),
        "profile": r.profile.as_deref().map(profile),
    })
}

/// A node's profile, nested.
pub fn profile(p: &NodeProfile) -> Value {
    json!({
        "node": p.node,
        "role": p.role,
        "shards": p.shards,
        "total_us": p.total_us,
        "queue_us": p.queue_us,
        "search_us": p.search_us,
        "merge_us": p.merge_us,
        "fetch_us": p.fetch_us,
        "children": p.children.iter().map(child).collect::<Vec<_>>(),
    })
}

fn child(c: &ChildProfile) -> Value {
    json!({
        "shards": c.shards,
        "replica": c.replica,
        "start_us": c.start_us,
        "round_trip_us": c.round_trip_us,
        "hop_us": c.hop_us,
        "outcome": c.outcome,
        "hedged": c.hedged,
        "retried": c.retried,
        "profile": c.profile.as_ref().map(profile),
    })
}
