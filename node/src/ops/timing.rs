//! Times every gRPC call a node serves, by method and status code, into
//! [`crate::ops::metrics`] (called by [`crate::ops::layer`], around the
//! whole server, so no service can be forgotten).

use std::time::Duration;

/// The methods the nodes serve, as metric labels; anything else is `other`
/// (a label must never take a value a caller chose).
const METHODS: &[&str] = &[
    "Search",
    "Fetch",
    "GetStats",
    "GetStatus",
    "Load",
    "Publish",
    "Prepare",
    "Install",
    "Activate",
    "Versions",
    "CopyVersion",
    "CatchUp",
    "Check",
    "Watch",
    "ServerReflectionInfo",
];

/// The method label of a request path `/package.Service/Method`.
pub fn method_of(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or("");
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The name of a gRPC status code, as the metric label.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Records a served call of `method` that ended with `response` after
/// `elapsed`: its latency by method and status for the metrics page, and a
/// search's for the recent percentiles of `GetStatus`.
pub fn record<RB>(method: &'static str, response: &http::Response<RB>, elapsed: Duration) {
    // An error answer carries its status in the headers (a trailers-only
    // response); an answer does in the trailers, which come later: no
    // status header means the call succeeded.
    let code = response
        .headers()
        .get("grpc-status")
        .map_or("OK", |code| code_name(code.as_bytes()));
    crate::ops::metrics::metrics().observe_request(method, code, elapsed);
    if method == "Search" {
        crate::ops::status::record_search(elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_a_closed_set() {
        assert_eq!(method_of("/searchtree.v1.Search/Search"), "Search");
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(method_of("/x.Y/AnythingAClientSends"), "other");
        assert_eq!(code_name(b"8"), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(b"99"), "UNKNOWN");
    }
}
