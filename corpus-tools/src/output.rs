//! How the CLI shows a search response: a human-readable listing, or JSON.

use std::time::Duration;

use searchtree_proto::pb::{FailureReason, SearchResponse};
use serde_json::{Value, json};

/// One line summarising an answer's completeness and cost.
pub fn coverage_line(r: &SearchResponse) -> String {
    let c = r.coverage.clone().unwrap_or_default();
    format!(
        "coverage: {}/{} shards ok, {} timed out, {} failed{}; {}/{} documents searched; {}{} matches{}; took {:.2?}",
        c.shards_ok,
        c.shards_total,
        c.shards_timed_out,
        c.shards_failed,
        if r.partial { " (PARTIAL)" } else { "" },
        c.docs_searched,
        c.docs_total,
        // Pruned leaves count only what they scored: at least this many.
        if r.total_hits_is_lower_bound {
            "≥"
        } else {
            ""
        },
        r.total_hits,
        if r.hits_unfetched > 0 {
            format!(
                "; {} hits without title and snippet (fetch ran out of time)",
                r.hits_unfetched
            )
        } else {
            String::new()
        },
        Duration::from_micros(r.took_us)
    )
}

/// The response as a numbered list of hits followed by the coverage line.
pub fn render(r: &SearchResponse, snippets: bool) -> String {
    let mut out = String::new();
    if r.hits.is_empty() {
        out.push_str("  (no hits)\n");
    }
    for (i, h) in r.hits.iter().enumerate() {
        out.push_str(&format!(
            "{:>3}. {:>8.4}  {}  [{} · shard {}]\n",
            i + 1,
            h.score,
            h.title,
            h.doc_id,
            h.shard
        ));
        if snippets && !h.snippet.is_empty() {
            out.push_str(&format!("             {}\n", h.snippet.replace('\n', " ")));
        }
    }
    for f in r.coverage.iter().flat_map(|c| &c.failures) {
        out.push_str(&format!(
            "  shard {} missing: {} — {}\n",
            f.shard,
            reason_name(f.reason),
            f.message
        ));
    }
    out.push_str(&coverage_line(r));
    out.push('\n');
    out
}

/// The name of a failure reason, as the JSON output spells it.
pub fn reason_name(reason: i32) -> &'static str {
    match FailureReason::try_from(reason).unwrap_or(FailureReason::Unspecified) {
        FailureReason::Timeout => "timeout",
        FailureReason::Unavailable => "unavailable",
        FailureReason::Error => "error",
        FailureReason::Lost => "lost",
        FailureReason::VersionMissing => "version_missing",
        FailureReason::Overloaded => "overloaded",
        FailureReason::Unspecified => "unspecified",
    }
}

/// The response as one JSON object, field names as in the .proto.
pub fn to_json(r: &SearchResponse) -> Value {
    let c = r.coverage.clone().unwrap_or_default();
    json!({
        "hits": r.hits.iter().map(|h| json!({
            "doc_id": h.doc_id,
            "score": h.score,
            "shard": h.shard,
            "title": h.title,
            "snippet": h.snippet,
        })).collect::<Vec<_>>(),
        "total_hits": r.total_hits,
        "total_hits_is_lower_bound": r.total_hits_is_lower_bound,
        "hits_unfetched": r.hits_unfetched,
        "snapshot": r.snapshot,
        "version": r.version,
        "coverage": {
            "shards_total": c.shards_total,
            "shards_ok": c.shards_ok,
            "shards_timed_out": c.shards_timed_out,
            "shards_failed": c.shards_failed,
            "docs_total": c.docs_total,
            "docs_searched": c.docs_searched,
            "failures": c.failures.iter().map(|f| json!({
                "shard": f.shard,
                "reason": reason_name(f.reason),
                "message": f.message,
            })).collect::<Vec<_>>(),
        },
        "partial": r.partial,
        "took_us": r.took_us,
    })
}

/// A progress bar over `total` bytes of input, labelled with what is being
/// done to them (`indexing`, `loading`), ticking while the work runs.
pub fn byte_progress(doing: &str, total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    // A pipe has no size to count towards: bytes read so far only.
    let template = if total == 0 {
        format!("{{spinner}} {doing} {{bytes}} read ({{elapsed}}) {{msg}}")
    } else {
        format!("{{spinner}} {doing} [{{bar:30}}] {{bytes}}/{{total_bytes}} ({{eta}}) {{msg}}")
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_bound_and_unfetched_hits_are_said_plainly() {
        let exact = SearchResponse {
            total_hits: 19,
            ..Default::default()
        };
        assert!(coverage_line(&exact).contains("; 19 matches;"));
        let pruned = SearchResponse {
            total_hits: 19,
            total_hits_is_lower_bound: true,
            hits_unfetched: 2,
            snapshot: "crc32:1".into(),
            version: 3,
            ..Default::default()
        };
        let line = coverage_line(&pruned);
        assert!(
            line.contains("; ≥19 matches; 2 hits without title"),
            "{line}"
        );
        let json = to_json(&pruned);
        assert_eq!(json["total_hits_is_lower_bound"], true);
        assert_eq!(json["hits_unfetched"], 2);
        assert_eq!(json["snapshot"], "crc32:1");
        assert_eq!(json["version"], 3);
    }
}
