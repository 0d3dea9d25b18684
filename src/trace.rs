//! Distributed tracing: the W3C trace context an event carries (the CloudEvents Distributed
//! Tracing extension, `traceparent` / `tracestate`) is continued through the run — a span for
//! the event's ingest, one per reconcile of its run and one per step (a Job's creation, a
//! delivery, a status write, ...) — and handed on: to the `.started` / `.finished` events and to
//! the task's pod (`TRACEPARENT`, `TRACESTATE`). Spans are exported over OTLP (HTTP, JSON) only
//! when `--otlp-endpoint` is set; without it no span is recorded, and the incoming context is
//! passed on as it came, so the caller's trace stays joined.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::crd::JobRun;
use crate::event::CloudEvent;
use crate::sink::{Connector, SinkError, http_client};

/// The target of the spans that are exported: the log output leaves them out (its lines stay
/// as they were), the OTLP layer sees only them.
pub const TARGET: &str = "job_executor::trace";
/// Where a run keeps the trace context of its ingest, for its reconciles (which run later, in
/// other tasks, maybe after a restart).
pub const TRACEPARENT_ANNOTATION: &str = "job-executor.dev/traceparent";
pub const TRACESTATE_ANNOTATION: &str = "job-executor.dev/tracestate";
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a collector's answer read.
const MOST_ANSWER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("--otlp-endpoint {0:?} is not an http:// or https:// URL")]
    InvalidEndpoint(String),
    #[error(transparent)]
    Client(#[from] SinkError),
    #[error("the OTLP exporter cannot be built: {0}")]
    Exporter(String),
    #[error(
        "RUST_LOG {value:?} is not a log filter (e.g. `info`, `job_executor=debug,info`): {reason}"
    )]
    LogFilter { value: String, reason: String },
}

/// A W3C trace context, as events and pods carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// The longest `tracestate` carried on (the W3C recommendation's 512 characters, which every
/// participant must be able to carry).
const MAX_TRACESTATE_BYTES: usize = 512;

/// A carrier of exactly the two W3C fields.
struct Fields<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl opentelemetry::propagation::Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Whether `traceparent` has the W3C recommendation's shape: `vv-<32>-<16>-ff` in lower-case
/// hex, exactly so long for version `00` (a later version may add fields after a `-`).
fn well_formed(traceparent: &str) -> bool {
    let bytes = traceparent.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes.get(range).is_some_and(|part| {
            part.iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
    };
    let dash = |at: usize| bytes.get(at) == Some(&b'-');
    hex(0..2)
        && dash(2)
        && hex(3..35)
        && dash(35)
        && hex(36..52)
        && dash(52)
        && hex(53..55)
        && (bytes.len() == 55 || (!bytes.starts_with(b"00") && dash(55)))
}

impl TraceContext {
    /// A valid `traceparent` (and its `tracestate`); `None` for one that does not parse (a new
    /// trace starts then, as the W3C recommendation says).
    pub fn new(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        // The parser takes short fields (`00-1-1-01`, padded with zeros): different senders'
        // short ids would join one trace. Only the recommendation's shape is read.
        let traceparent = traceparent.trim();
        if !well_formed(traceparent) {
            return None;
        }
        let context = TraceContextPropagator::new().extract(&Fields {
            traceparent,
            tracestate,
        });
        let span = context.span();
        let parsed = span.span_context();
        // Written anew from what parsed, in the form the recommendation gives; a state past the length every participant must carry is dropped (it would be copied
        // to the run's annotations, the task pods and every event sent).
        let state = parsed.trace_state().header();
        parsed.is_valid().then(|| TraceContext {
            traceparent: format!(
                "00-{}-{}-{:02x}",
                parsed.trace_id(),
                parsed.span_id(),
                parsed.trace_flags().to_u8()
            ),
            tracestate: (!state.is_empty() && state.len() <= MAX_TRACESTATE_BYTES).then_some(state),
        })
    }

    /// The context an event carries (the Distributed Tracing extension).
    pub fn of_event(event: &CloudEvent) -> Option<TraceContext> {
        let value = event.as_value();
        let traceparent = value.get("traceparent")?.as_str()?;
        TraceContext::new(
            traceparent,
            value.get("tracestate").and_then(|v| v.as_str()),
        )
    }

    /// The context a run was accepted in.
    pub fn of_run(run: &JobRun) -> Option<TraceContext> {
        let annotations = run.metadata.annotations.as_ref()?;
        let traceparent = annotations.get(TRACEPARENT_ANNOTATION)?;
        TraceContext::new(
            traceparent,
            annotations.get(TRACESTATE_ANNOTATION).map(String::as_str),
        )
    }

    fn otel(&self) -> opentelemetry::Context {
        TraceContextPropagator::new().extract(&Fields {
            traceparent: &self.traceparent,
            tracestate: self.tracestate.as_deref(),
        })
    }

    /// Records the context on a run being created.
    pub fn annotate(&self, run: &mut JobRun) {
        let annotations = run.metadata.annotations.get_or_insert_default();
        annotations.insert(TRACEPARENT_ANNOTATION.into(), self.traceparent.clone());
        if let Some(state) = &self.tracestate {
            annotations.insert(TRACESTATE_ANNOTATION.into(), state.clone());
        }
    }

    /// The event carrying this context as its Distributed Tracing extension.
    pub fn on_event(&self, event: CloudEvent) -> CloudEvent {
        let mut value: serde_json::Value = event.clone().into();
        if let Some(object) = value.as_object_mut() {
            object.insert("traceparent".into(), self.traceparent.clone().into());
            match &self.tracestate {
                Some(state) => object.insert("tracestate".into(), state.clone().into()),
                None => object.remove("tracestate"),
            };
        }
        CloudEvent::from_value(value).unwrap_or(event)
    }
}

/// Makes `span` continue `parent`'s trace. Without an exporter there is nothing to continue:
/// the span is not recorded.
pub fn continue_trace(span: &Span, parent: Option<&TraceContext>) {
    if let Some(parent) = parent {
        // Fails only when spans are not exported, or the span is already started: both leave
        // it where it is.
        let _ = span.set_parent(parent.otel());
    }
}

/// The context to hand on from inside `span`: the span's own when spans are exported, else
/// `fallback` (the context that came in) unchanged.
pub fn handed_on(span: &Span, fallback: Option<&TraceContext>) -> Option<TraceContext> {
    // Without an exporter every trace span is disabled: nothing to ask it (ingest's hot path).
    if span.is_disabled() {
        return fallback.cloned();
    }
    let mut fields = HashMap::<String, String>::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
    match fields.remove("traceparent") {
        Some(traceparent) => Some(TraceContext {
            traceparent,
            tracestate: fields.remove("tracestate").filter(|s| !s.is_empty()),
        }),
        None => fallback.cloned(),
    }
}

/// The endpoint as a message shows it: without credentials (`user:password@`).
fn shown(endpoint: &str) -> String {
    crate::sink::query_masked(&crate::source::git::mask_credentials(endpoint))
}

/// `endpoint` as the URL spans are posted to: a collector's base URL gets `/v1/traces`.
pub fn traces_url(endpoint: &str) -> Result<String, TraceError> {
    let url: http::Uri = endpoint
        .parse()
        .map_err(|_| TraceError::InvalidEndpoint(shown(endpoint)))?;
    if !matches!(url.scheme_str(), Some("http" | "https"))
        || url.host().is_none()
        || !crate::sink::port_is_valid(&url)
    {
        return Err(TraceError::InvalidEndpoint(shown(endpoint)));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

/// The OTLP exporter's HTTP client. The SDK's batch processor exports from a thread of its own;
/// the request is made on the runtime, which hyper needs.
#[derive(Debug, Clone)]
struct OtlpClient {
    client: Client<Connector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let exchange = self.runtime.spawn(async move {
            let exchange = async {
                let (parts, body) = client.request(request).await?.into_parts();
                let body = Limited::new(body, MOST_ANSWER_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            tokio::time::timeout(EXPORT_TIMEOUT, exchange)
                .await
                .map_err(|_| HttpError::from("the collector did not answer in time"))?
        });
        exchange.await?
    }
}

/// Spans being exported; flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is still queued. Blocks: call it off the runtime's threads, while the
    /// runtime still runs (the export is made on it).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("warning: the last spans were not exported: {error}");
        }
    }
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// A line per event: time, level, target, message, fields as `key=value`.
    Text,
    /// A JSON object per line: `timestamp`, `level`, `target`, `fields` (the message among
    /// them), and the spans the event is in.
    Json,
}

/// Logs to stderr (`RUST_LOG`, default `info`), and, with an OTLP endpoint, spans to it.
pub fn init(
    otlp_endpoint: Option<&str>,
    log_format: LogFormat,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<Telemetry>, TraceError> {
    // A filter that does not parse stops the start: read leniently, it would log at `info`
    // with no word of why the level asked for is not used.
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::builder()
                .parse(&value)
                .map_err(|e| TraceError::LogFilter {
                    reason: e.to_string(),
                    value,
                })?
        }
        Err(std::env::VarError::NotUnicode(value)) => {
            return Err(TraceError::LogFilter {
                value: value.to_string_lossy().into_owned(),
                reason: "it is not UTF-8".into(),
            });
        }
        _ => EnvFilter::new("info"),
    }
    .add_directive(
        format!("{TARGET}=off")
            .parse()
            .map_err(|e| TraceError::Exporter(format!("{e}")))?,
    );
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let log = match log_format {
        LogFormat::Text => text.boxed(),
        LogFormat::Json => text.json().with_ansi(false).boxed(),
    }
    .with_filter(filter);
    let Some(endpoint) = otlp_endpoint.filter(|e| !e.is_empty()) else {
        // No spans at all: the trace target's callsites are never enabled.
        tracing_subscriber::registry().with(log).init();
        return Ok(None);
    };
    let client = OtlpClient {
        client: http_client(endpoint.starts_with("https://"), EXPORT_TIMEOUT)?,
        runtime: runtime.handle().clone(),
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(traces_url(endpoint)?)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_resource(
            Resource::builder()
                .with_service_name("job-executor")
                .build(),
        )
        .build();
    let tracer = provider.tracer("job-executor");
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_filter(
            Targets::new()
                .with_target(TARGET, tracing::Level::TRACE)
                // Warnings and errors inside a span become its events.
                .with_target("job_executor", tracing::Level::WARN),
        );
    tracing_subscriber::registry().with(log).with(spans).init();
    Ok(Some(Telemetry { provider }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn only_a_valid_traceparent_is_a_context() {
        let context = TraceContext::new(PARENT, Some("vendor=1")).unwrap();
        assert_eq!(context.tracestate.as_deref(), Some("vendor=1"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // Short fields, a sign, a field too many for version 00.
            "00-1-1-01",
            "0-+abc-+def-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::new(bad, None), None, "{bad}");
        }
        // What parses is handed on as the recommendation writes it.
        let spaced = TraceContext::new(&format!(" {PARENT}\n"), None).unwrap();
        assert_eq!(spaced.traceparent, PARENT);
        // A state longer than every participant must carry is dropped, as is one that does
        // not parse.
        let long = format!("vendor={}", "a".repeat(MAX_TRACESTATE_BYTES));
        assert_eq!(
            TraceContext::new(PARENT, Some(&long)).unwrap().tracestate,
            None
        );
        assert_eq!(
            TraceContext::new(PARENT, Some("no pairs"))
                .unwrap()
                .tracestate,
            None
        );
    }

    #[test]
    fn without_an_exporter_the_incoming_context_is_handed_on() {
        let incoming = TraceContext::new(PARENT, None).unwrap();
        let span = tracing::info_span!(target: TARGET, "ingest");
        continue_trace(&span, Some(&incoming));
        assert_eq!(handed_on(&span, Some(&incoming)), Some(incoming));
        assert_eq!(handed_on(&span, None), None);
    }

    #[test]
    fn an_event_carries_the_context_as_its_extension() {
        let event = CloudEvent::from_value(serde_json::json!({
            "specversion": "1.0", "id": "1", "source": "s", "type": "t", "tracestate": "old=1"
        }))
        .unwrap();
        let context = TraceContext::new(PARENT, None).unwrap();
        let event = context.on_event(event);
        assert_eq!(event.extension("traceparent").as_deref(), Some(PARENT));
        assert_eq!(event.extension("tracestate"), None, "no stale state");
        assert_eq!(TraceContext::of_event(&event), Some(context));
    }

    #[test]
    fn endpoints_name_the_traces_path() {
        assert_eq!(
            traces_url("http://collector:4318").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces/").unwrap(),
            "https://c.example/otlp/v1/traces"
        );
        assert!(traces_url("collector:4318").is_err());
    }
}
