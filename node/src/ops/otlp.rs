//! Span export over OTLP/gRPC (`--otlp-endpoint`, off by default): every
//! request a node serves becomes one server span of the request's trace —
//! its `traceparent`'s trace id, a span id of its own, the caller's span as
//! parent — sent in batches to an OpenTelemetry collector (or anything that
//! speaks OTLP: Jaeger, Tempo). The calls a node makes carry its span as
//! their parent ([`crate::ops::trace::inject`]), so a collector sees the
//! tree a query took, root to leaves.
//!
//! Export never slows a query: spans go through a bounded queue, dropped
//! (and counted) when it is full or the collector is away.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use clap::Args;
use searchtree_proto::otlp::any_value::Value;
use searchtree_proto::otlp::span::SpanKind;
use searchtree_proto::otlp::status::StatusCode;
use searchtree_proto::otlp::trace_service_client::TraceServiceClient;
use searchtree_proto::otlp::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, Status,
};
use tokio::sync::mpsc;

use crate::ops::trace::{SAMPLE_ALL, TraceContext};

/// The OTLP export flags.
#[derive(Debug, Clone, Args)]
pub struct OtlpArgs {
    /// Export a span for every request served to this OTLP/gRPC collector
    /// (e.g. `http://127.0.0.1:4317`). Off by default.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// The share of new traces (requests arriving without a `traceparent`)
    /// marked sampled, 0 to 1: only sampled requests' spans are exported,
    /// at every node they reach. Decided from the trace id, so every node
    /// agrees; a request that brings a `traceparent` follows its sampled
    /// flag. Traces start at the root: set it there (`up` sets it on every
    /// node).
    #[arg(long, default_value_t = SAMPLE_ALL, value_parser = parse_ratio)]
    pub otlp_sample_ratio: f64,
}

impl Default for OtlpArgs {
    fn default() -> Self {
        OtlpArgs {
            otlp_endpoint: None,
            otlp_sample_ratio: SAMPLE_ALL,
        }
    }
}

/// Reads a ratio between 0 and 1 (for `--otlp-sample-ratio`).
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a ratio between 0 and 1")),
    }
}

/// Spans waiting to be sent; past this, new ones are dropped.
const QUEUE: usize = 4096;
/// Spans per export call at most.
const BATCH: usize = 512;
/// How long spans may wait for a batch to fill.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How long one export call may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

struct Exporter {
    spans: mpsc::Sender<Span>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();
/// Spans dropped: the queue was full, or an export failed.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Spans a collector accepted.
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Starts exporting to `endpoint` for a node of `role` at `address`. Call
/// once, within the node's runtime; a second call is ignored.
pub fn start(endpoint: &str, role: &'static str, address: String) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?
        .connect_timeout(EXPORT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT);
    let (tx, rx) = mpsc::channel(QUEUE);
    if EXPORTER.set(Exporter { spans: tx }).is_err() {
        return Ok(());
    }
    let resource = Resource {
        attributes: vec![
            attribute("service.name", format!("searchtree-{role}")),
            attribute("service.instance.id", address),
        ],
        dropped_attributes_count: 0,
    };
    tokio::spawn(export(
        TraceServiceClient::new(endpoint.connect_lazy()),
        resource,
        rx,
    ));
    Ok(())
}

/// Whether this node exports spans (so that callers gather what a span
/// needs only then).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Whether a request to `path` gets a span: not health checks and
/// reflection, which parents and probes send every few seconds, each a
/// trace of its own that would bury the queries'.
pub fn traces(path: &str) -> bool {
    enabled() && !path.starts_with("/grpc.health.") && !path.starts_with("/grpc.reflection.")
}

/// Records the server span of a request in `context` that ran from `start`
/// to `end` for `path`, and ended with gRPC status `grpc_status` (0: OK).
/// A no-op unless exporting, or when the trace is not sampled.
pub fn record(
    context: &TraceContext,
    path: &str,
    start: SystemTime,
    end: SystemTime,
    grpc_status: i32,
) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    if context.flags & 1 == 0 {
        return;
    }
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let mut attributes = vec![
        attribute("rpc.system", "grpc".to_string()),
        KeyValue {
            key: "rpc.grpc.status_code".into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(i64::from(grpc_status))),
            }),
        },
    ];
    if let Some(id) = &context.request_id {
        attributes.push(attribute("request.id", id.clone()));
    }
    let span = Span {
        trace_id: context.trace_id.to_be_bytes().to_vec(),
        span_id: context.span_id.to_be_bytes().to_vec(),
        parent_span_id: match context.parent_span {
            0 => Vec::new(),
            parent => parent.to_be_bytes().to_vec(),
        },
        name: path.trim_start_matches('/').to_string(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: nanos(start),
        end_time_unix_nano: nanos(end).max(nanos(start)),
        attributes,
        status: Some(Status {
            message: String::new(),
            code: if grpc_status == 0 {
                StatusCode::Unset
            } else {
                StatusCode::Error
            } as i32,
        }),
        flags: u32::from(context.flags),
        ..Default::default()
    };
    if exporter.spans.try_send(span).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Spans exported and dropped so far.
pub fn totals() -> (u64, u64) {
    (
        EXPORTED.load(Ordering::Relaxed),
        DROPPED.load(Ordering::Relaxed),
    )
}

fn attribute(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value)),
        }),
    }
}

/// Sends what arrives on `spans` in batches: when `BATCH` are waiting, or
/// `FLUSH_EVERY` after the first of a batch. A failed export drops its
/// batch (a collector away must not grow the node's memory).
async fn export(
    mut client: TraceServiceClient<tonic::transport::Channel>,
    resource: Resource,
    mut spans: mpsc::Receiver<Span>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut warned = false;
    loop {
        let Some(first) = spans.recv().await else {
            return;
        };
        batch.push(first);
        let flush_at = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(flush_at, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "searchtree".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans: std::mem::take(&mut batch),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        match client.export(request).await {
            Ok(answer) => {
                let rejected = answer
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_spans.max(0) as u64);
                EXPORTED.fetch_add(n - rejected.min(n), Ordering::Relaxed);
                DROPPED.fetch_add(rejected.min(n), Ordering::Relaxed);
                warned = false;
            }
            Err(status) => {
                DROPPED.fetch_add(n, Ordering::Relaxed);
                if !warned {
                    tracing::warn!(error = %status.message(), code = ?status.code(), "OTLP export failed; dropping spans until it works again");
                    warned = true;
                }
            }
        }
    }
}
