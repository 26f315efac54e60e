//! One trace through every level: the W3C `traceparent` a request arrives
//! with (or the client's `x-request-id`, or a new trace when it has
//! neither) is kept for the request's lifetime, every log line the node
//! writes for it carries the trace id (a `tracing` span around the
//! handler, see [`crate::ops::layer`]), the node hands it on to every
//! child it calls, and the answer says which trace it was.
//!
//! A malformed `traceparent` is replaced, never refused: tracing must not
//! fail a query.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Instrument;

/// The W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";
/// The request-id header many clients and proxies set.
pub const REQUEST_ID: &str = "x-request-id";
/// The longest `x-request-id` kept (longer ones are cut): it goes into
/// every log line.
const MAX_REQUEST_ID: usize = 128;

/// A request's place in a trace: the trace it belongs to, the caller's span,
/// and the client's request id if it gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: u128,
    /// The caller's span (8 bytes); 0 when the trace starts here.
    pub parent_span: u64,
    /// This node's span for the request (8 bytes, never 0): the parent of
    /// the calls it makes, and the span it exports ([`crate::ops::otlp`]).
    pub span_id: u64,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
    /// The client's `x-request-id`, if it sent one.
    pub request_id: Option<String>,
}

impl TraceContext {
    /// A new trace, with random ids.
    pub fn new() -> Self {
        TraceContext {
            trace_id: fastrand::u128(1..),
            parent_span: 0,
            span_id: fastrand::u64(1..),
            flags: 1,
            request_id: None,
        }
    }

    /// The context of a request with these headers: its `traceparent` if
    /// valid (its sampled flag followed), else a new trace, sampled at the
    /// node's ratio ([`set_sample_ratio`]); its `x-request-id` either way.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut context = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
            .unwrap_or_else(|| {
                let mut new = TraceContext::new();
                new.flags = u8::from(sampled(new.trace_id, sample_ratio()));
                new
            });
        context.request_id = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| {
                let mut id = v.to_string();
                if id.len() > MAX_REQUEST_ID {
                    let mut end = MAX_REQUEST_ID;
                    while !id.is_char_boundary(end) {
                        end -= 1;
                    }
                    id.truncate(end);
                }
                id
            });
        context
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` for a call this node makes within the trace, as
    /// span `span`.
    pub fn traceparent(&self, span: u64) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, span, self.flags)
    }
}

impl Default for TraceContext {
    fn default() -> Self {
        TraceContext::new()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.trace_id)
    }
}

/// The share of new traces marked sampled, as an `f64`'s bits (1.0 until
/// set).
static SAMPLE_RATIO: AtomicU64 = AtomicU64::new(SAMPLE_ALL.to_bits());

/// The sample ratio until one is set: every new trace.
pub const SAMPLE_ALL: f64 = 1.0;

/// Sets the share of new traces (requests that arrive without a valid
/// `traceparent`) this node marks sampled: 0 to 1, clamped. Every node a
/// sampled request reaches exports its span, and none exports an unsampled
/// one, so the ratio is set where traces start (the root) and the flag
/// does the rest.
pub fn set_sample_ratio(ratio: f64) {
    SAMPLE_RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
}

fn sample_ratio() -> f64 {
    f64::from_bits(SAMPLE_RATIO.load(Ordering::Relaxed))
}

/// Whether a trace is sampled at `ratio`, decided from its id (its low 56
/// bits, which W3C trace context asks to be random, against `ratio` of
/// their range, as OpenTelemetry's trace-id-ratio sampler does): the same
/// trace gets the same answer at every node and every time.
pub fn sampled(trace_id: u128, ratio: f64) -> bool {
    const BITS: u32 = 56;
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let low = (trace_id & ((1u128 << BITS) - 1)) as u64;
    low < (ratio * (1u64 << BITS) as f64) as u64
}

/// Parses `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>` (version 00;
/// later versions may append fields, which are ignored). All-zero ids are
/// invalid.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
    let parent_span = u64::from_str_radix(span, 16).ok().filter(|&s| s != 0)?;
    Some(TraceContext {
        trace_id,
        parent_span,
        span_id: fastrand::u64(1..),
        flags: u8::from_str_radix(flags, 16).ok()?,
        request_id: None,
    })
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Adds the current trace (this node's span as the parent) and request id
/// to the metadata of a call this node is about to make to another node, so
/// the callee's log lines carry the same trace id and its span hangs under
/// this one.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let Ok(()) = CURRENT.try_with(|context| {
        if let Ok(value) = context.traceparent(context.span_id).parse() {
            metadata.insert(TRACEPARENT, value);
        }
        if let Some(id) = &context.request_id
            && let Ok(value) = id.parse()
        {
            metadata.insert(REQUEST_ID, value);
        }
    }) else {
        return;
    };
}

/// The span every log line written for a request carries.
pub fn span(context: &TraceContext, path: &str) -> tracing::Span {
    match &context.request_id {
        Some(id) => tracing::info_span!("request", trace_id = %context, request_id = %id, path),
        None => tracing::info_span!("request", trace_id = %context, path),
    }
}

/// Runs `call` (made by `make` within the trace) within `context`: the
/// context in the task-local [`inject`] reads, the span around it.
pub fn within<F: Future>(
    context: TraceContext,
    span: tracing::Span,
    make: impl FnOnce() -> F,
) -> tokio::task::futures::TaskLocalFuture<TraceContext, tracing::instrument::Instrumented<F>> {
    let call = CURRENT.sync_scope(context.clone(), make);
    CURRENT.scope(context, call.instrument(span))
}

/// Names the trace on an answer: `traceparent` (this node's span of the
/// request's trace) and the client's `x-request-id`.
pub fn echo(context: &TraceContext, headers: &mut http::HeaderMap) {
    if let Ok(value) = context.traceparent(context.span_id).parse() {
        headers.insert(TRACEPARENT, value);
    }
    if let Some(id) = &context.request_id
        && let Ok(value) = id.parse()
    {
        headers.insert(REQUEST_ID, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_samples_that_share_of_trace_ids_the_same_way_every_time() {
        let ids: Vec<u128> = (0..20_000).map(|_| fastrand::u128(1..)).collect();
        for ratio in [0.0, 0.01, 0.25, 0.5, 1.0] {
            let share =
                ids.iter().filter(|&&id| sampled(id, ratio)).count() as f64 / ids.len() as f64;
            // 20,000 draws: the standard error is at most 0.36%.
            assert!((share - ratio).abs() < 0.015, "{ratio}: {share}");
        }
        assert!(ids.iter().all(|&id| sampled(id, 0.3) == sampled(id, 0.3)));
        assert!(sampled(u128::MAX, 1.0) && !sampled(1, 0.0) && !sampled(1, f64::NAN));
        // Nested: what a smaller ratio samples, a larger one samples too.
        assert!(ids.iter().all(|&id| !sampled(id, 0.1) || sampled(id, 0.2)));
    }

    #[test]
    fn reads_valid_traceparents_and_replaces_the_rest() {
        let c =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.parent_span, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(c.flags, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, "garbage".parse().unwrap());
        headers.insert(REQUEST_ID, "req-7".parse().unwrap());
        let c = TraceContext::from_headers(&headers);
        assert_ne!(c.trace_id, 0);
        assert_eq!(c.request_id.as_deref(), Some("req-7"));
        let again = parse_traceparent(&c.traceparent(5)).unwrap();
        assert_eq!(again.trace_id, c.trace_id);
        assert_eq!(again.parent_span, 5);
    }

    #[tokio::test]
    async fn calls_made_while_serving_carry_the_trace() {
        let mut md = tonic::metadata::MetadataMap::new();
        inject(&mut md);
        assert!(md.get(TRACEPARENT).is_none(), "no trace outside a request");
        let context = TraceContext {
            request_id: Some("abc".into()),
            ..TraceContext::new()
        };
        CURRENT
            .scope(context.clone(), async {
                inject(&mut md);
            })
            .await;
        let sent = parse_traceparent(md.get(TRACEPARENT).unwrap().to_str().unwrap()).unwrap();
        assert_eq!(sent.trace_id, context.trace_id);
        assert_eq!(
            sent.parent_span, context.span_id,
            "the callee hangs under our span"
        );
        assert_eq!(md.get(REQUEST_ID).unwrap(), "abc");
    }
}
