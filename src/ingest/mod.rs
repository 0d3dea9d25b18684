//! The HTTP receiver: CloudEvents in, JobRuns persisted, then the answer. A 2xx means every
//! run the request implies is in the API server; when that cannot be done, or the config cannot
//! be read now (the git repository cannot be fetched), the answer is a 503, so the sender
//! retries and nothing is lost.

pub mod auth;
#[cfg(test)]
mod conformance;
pub mod nats;
pub mod parse;
pub mod plan;
pub mod schedule;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode, header};
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use crate::crd::JobRun;
use crate::event::{CloudEvent, EventSketch};
use crate::json_text;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::source::Source;
use crate::trace::{self, TraceContext};
use plan::EventPlan;

/// Seconds a sender is asked to wait before retrying after a 503.
const RETRY_AFTER_SECONDS: u64 = 5;

/// What the receiver needs.
pub struct IngestState {
    /// JobRuns in the job namespace.
    pub runs: Api<JobRun>,
    pub source: Arc<Source>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// The bearer token senders must present.
    pub token: Option<auth::Secret>,
    /// The HMAC signature senders must present.
    pub signatures: Option<auth::Signatures>,
    pub max_body_bytes: usize,
    /// The bytes of request bodies held at once, in KiB permits: a body is read only once its
    /// length (or, sent in chunks, the limit) is granted, so open requests cannot hold more
    /// memory than this whatever their number.
    pub body_budget: BodyBudget,
    /// The most events one batch request may carry.
    pub max_batch_events: usize,
    /// How long a sender may take to send the body (the headers have their own deadline in
    /// the server).
    pub read_timeout: std::time::Duration,
    /// How long storing one run may take before the sender is told to retry (a frozen or
    /// partitioned API server must not hold senders until their own timeouts).
    pub store_timeout: std::time::Duration,
    /// The runs this replica's JobRun watch knows of.
    pub known_runs: Arc<crate::controller::known::KnownRuns>,
    /// What `/readyz` says: why the watch has not listed the runs, if it is known.
    pub health: Arc<crate::health::Health>,
    /// The most runs in flight before new ones are refused (429); `None`: no bound.
    pub max_runs_in_flight: Option<usize>,
    /// The events this installation takes (`--projects`, `--stages`, `--services`).
    pub scope: plan::EventScope,
}

/// The bytes of request bodies one replica holds at once (`--max-body-bytes-in-flight`).
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<tokio::sync::Semaphore>,
    pub bytes: usize,
}

/// A body's share of the budget, held by the request and by a plan made for it.
pub(crate) type Held = Arc<tokio::sync::OwnedSemaphorePermit>;

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        BodyBudget {
            permits: Arc::new(tokio::sync::Semaphore::new(Self::kib(bytes) as usize)),
            bytes,
        }
    }

    fn kib(bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
    }

    /// Room for a body of `bytes`, while the permit is held; `None` when the budget is spent.
    pub(crate) fn grant(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits
            .clone()
            .try_acquire_many_owned(Self::kib(bytes))
            .ok()
    }

    /// Adds to `held` (room for `granted` bytes) what reading `bound` bytes needs beyond it:
    /// the events parsed from a body take more memory than its text ([`value_bytes_bound`]).
    fn grant_reading(
        &self,
        held: &mut tokio::sync::OwnedSemaphorePermit,
        granted: usize,
        bound: usize,
    ) -> Result<(), ReadingRefused> {
        if bound > self.bytes {
            return Err(ReadingRefused::TooLarge);
        }
        let more = Self::kib(bound).saturating_sub(Self::kib(granted));
        if more == 0 {
            return Ok(());
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| ReadingRefused::Spent)?;
        held.merge(permit);
        Ok(())
    }
}

/// Why the events of a body are not read.
enum ReadingRefused {
    /// They would take more than the whole budget.
    TooLarge,
    /// Not while other bodies hold the budget.
    Spent,
}

pub fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route("/", post(receive))
        .route("/events", post(receive))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// Whether reading the body stopped at `--max-body-bytes` (and not for another reason).
fn is_over_limit(problem: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(problem);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

async fn receive(State(state): State<Arc<IngestState>>, request: Request) -> Response {
    // The request taken apart, not its headers extracted: that extractor copies them.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let metrics = &state.metrics;
    if let Some(token) = &state.token
        && let Err(problem) = auth::check_token(headers, token)
    {
        return refused(metrics, &problem);
    }
    let too_large = || {
        metrics.event_received("too_large");
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than the limit of {} bytes (--max-body-bytes)",
                state.max_body_bytes
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > state.max_body_bytes) {
        return too_large();
    }
    // The body's share of the budget: its declared length, else its exact size (none at all:
    // empty), else the limit. Held until the answer, and by a plan on the blocking pool (which
    // outlives a sender that went away): the parsed event lives as long as its bytes.
    let length = declared.or_else(|| {
        axum::body::HttpBody::size_hint(&body)
            .exact()
            .and_then(|n| usize::try_from(n).ok())
    });
    let granted = length.unwrap_or(state.max_body_bytes);
    let Some(held) = state.body_budget.grant(granted) else {
        return overloaded(&state);
    };
    let mut reading = std::pin::pin!(axum::body::to_bytes(body, state.max_body_bytes));
    // A body that came with the headers is read at once: its deadline, a timer registered
    // with the runtime and removed again, is armed only when the body is still to come.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(reading.as_mut().poll(cx))).await;
    let read = match first {
        std::task::Poll::Ready(read) => Ok(read),
        std::task::Poll::Pending => tokio::time::timeout(state.read_timeout, reading).await,
    };
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(problem)) if is_over_limit(&problem) => return too_large(),
        // The body broke off (the client went away, a malformed chunk): not its size.
        Ok(Err(problem)) => {
            metrics.event_received("invalid");
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body could not be read: {problem}"),
            );
        }
        Err(_) => {
            metrics.event_received("timeout");
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s (--read-timeout-seconds)",
                    state.read_timeout.as_secs()
                ),
            );
        }
    };
    let mut spent = None;
    if let Some(signatures) = &state.signatures {
        // The signature covers the body: a binary-mode event's attributes (its id, its type)
        // are in headers it does not cover, which anyone replaying a signed request could
        // change.
        if parse::is_binary(headers) {
            metrics.event_received("invalid");
            return error(
                StatusCode::BAD_REQUEST,
                "a signed request carries its event in its body: send it structured \
                 (application/cloudevents+json) or batched, not in binary mode (the signature \
                 does not cover ce- headers)",
            );
        }
        match signatures.check(headers, &bytes, unix_now()) {
            Ok(signature) => spent = Some(signature),
            Err(problem) => return refused(metrics, &problem),
        }
    }
    let answer = answer_body(&state, headers, &bytes, held, granted).await;
    // A copy of a signed request refused for its form (a header the signature does not cover
    // changed: its content type, its length) must not spend the signature for the request
    // itself. Such a refusal took no event. An answer that asks for the request again (429,
    // 503) gives the signature back too: what it stored is answered `duplicate` when sent
    // again, and a sender retrying the same bytes, as such answers ask, was refused 401. Any
    // other answer took what it took (a config's error is answered 422 with a run that
    // reports it).
    let signature_back = matches!(
        answer.status(),
        StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
    );
    if let (Some(signatures), Some(signature)) = (&state.signatures, spent)
        && signature_back
    {
        signatures.give_back(signature);
    }
    answer
}

/// The answer to a request whose body was read (and whose signature, if any, was checked).
async fn answer_body(
    state: &Arc<IngestState>,
    headers: &HeaderMap,
    bytes: &[u8],
    mut held: tokio::sync::OwnedSemaphorePermit,
    granted: usize,
) -> Response {
    let metrics = &state.metrics;
    if let Some(answer) = answer_from_sketch(state, headers, bytes) {
        return answer;
    }
    // Read into values, a body takes more memory than its text: the budget holds that too
    // (a body of many tiny objects would take a hundred times its size).
    let bound = parse::read_bytes_bound(headers, bytes);
    match state.body_budget.grant_reading(&mut held, granted, bound) {
        Ok(()) => {}
        Err(ReadingRefused::TooLarge) => {
            metrics.event_received("too_large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "read, its events would take up to {bound} bytes of memory (its JSON holds \
                     many small values), more than --max-body-bytes-in-flight allows for all \
                     bodies at once ({})",
                    state.body_budget.bytes
                ),
            );
        }
        Err(ReadingRefused::Spent) => return overloaded(state),
    }
    let held = Arc::new(held);
    let events = match parse::events_from_request(headers, bytes, state.max_batch_events) {
        Ok(events) => events,
        Err(problem @ parse::ParseError::BatchTooLarge { .. }) => {
            metrics.event_received("too_large");
            return error(problem.status(), problem.to_string());
        }
        Err(problem) => {
            metrics.event_received("invalid");
            return error(problem.status(), problem.to_string());
        }
    };
    accept(state, &events, &held).await
}

/// The runs stored for `event` other than `failure` (the run that would report its config's
/// error), found by its id's label and checked by the event each holds; read from the API
/// server (only when the config cannot be used, so seldom).
async fn runs_of_event(
    state: &IngestState,
    event: &CloudEvent,
    failure: &JobRun,
) -> Result<Vec<RunAnswer>, Refusal> {
    let Some(id_label) = failure
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(crate::labels::EVENT_ID))
    else {
        return Ok(Vec::new());
    };
    // From the API server's cache (a redelivery comes long after its runs were stored), not a
    // read of every run of the namespace from etcd.
    let params = kube::api::ListParams::default()
        .match_any()
        .labels(&format!(
            "{}={},{}={}",
            crate::labels::MANAGED_BY_LABEL,
            crate::labels::MANAGED_BY,
            crate::labels::EVENT_ID,
            id_label
        ));
    let listed = within_store_timeout(state, state.runs.list(&params))
        .await
        .map_err(|problem| {
            tracing::warn!(error = %problem, "cannot look for the event's runs; answering 503");
            unavailable(
                format!("the Kubernetes API cannot be asked for the event's runs now ({problem}); retry later"),
                "unavailable",
            )
        })?;
    Ok(listed
        .items
        .into_iter()
        .filter(|run| run.metadata.name != failure.metadata.name)
        .filter(|run| {
            run.spec.event.attribute("id").as_deref() == Some(event.id())
                && run.spec.event.attribute("source").as_deref() == Some(event.source())
        })
        .map(|run| RunAnswer {
            name: run.metadata.name.unwrap_or_default(),
            action: run.spec.action.name,
            status: RunStatus::Duplicate,
            reason: None,
        })
        .collect())
}

/// 503: the budget of bodies in flight is spent; the sender retries.
fn overloaded(state: &IngestState) -> Response {
    state.metrics.event_received("overloaded");
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "bodies of {} bytes are being read (--max-body-bytes-in-flight): retry",
            state.body_budget.bytes
        ),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        http::HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    response
}

/// The answer to a structured-mode event that starts nothing, planned from its sketch
/// ([`plan::plan_sketch_in_memory`]): most events a busy project sends start nothing here, and
/// parsing one whole costs more than everything else the receiver does for it. `None`: the
/// event is parsed whole and planned as any other (it may start something, or is invalid).
fn answer_from_sketch(state: &IngestState, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let mut sketch = EventSketch::read(parse::structured_text(headers, body)?)?;
    let body = take_sketch(state, &mut sketch, sketch_answer)?;
    state.metrics.event_received(Outcome::NotMatched.label());
    Some(json_response(StatusCode::OK, body))
}

/// Takes an event that starts nothing from its sketch ([`plan::plan_sketch_in_memory`]): what
/// the HTTP receiver and the NATS consumer share; `answer` is handed the reasons while the
/// config is lent. `None`: take the whole event ([`take_event`]).
pub(crate) fn take_sketch<R>(
    state: &IngestState,
    sketch: &mut EventSketch<'_>,
    answer: impl FnOnce(&EventSketch<'_>, plan::SketchReasons<'_>) -> R,
) -> Option<R> {
    let answered = match state.scope.refusal(|name| sketch.lookup_str(name)) {
        Some(reasons) => answer(sketch, plan::SketchReasons::Listed(reasons)),
        None => {
            plan::plan_sketch_in_memory(sketch, &state.source, |reasons| answer(sketch, reasons))?
        }
    };
    // Only now: an event taken whole after all gets its span there. Built for the span only
    // when spans are recorded (an event no action listens for is otherwise never built).
    if tracing::enabled!(target: trace::TARGET, tracing::Level::INFO) {
        let _span = ingest_span(sketch.event()?);
    }
    Some(answered)
}

/// The answer to one event that starts nothing, written from its sketch and the reasons as
/// serializing an [`Answer`] of its [`EventAnswer`] writes it, byte for byte, without building
/// either: the reasons' text is escaped once, when the config is compiled.
fn sketch_answer(sketch: &EventSketch<'_>, reasons: plan::SketchReasons<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(ANSWER_BYTES_PER_EVENT);
    body.extend_from_slice(b"{\"events\":[{\"id\":");
    json_text::write_string(&mut body, sketch.id());
    body.extend_from_slice(b",\"type\":");
    json_text::write_string(&mut body, sketch.event_type());
    body.extend_from_slice(b",\"runs\":[],\"not_matched\":");
    reasons.write_json(&mut body);
    body.extend_from_slice(b"}]}");
    body
}

/// The answer to a sender that did not prove who it is: 401, or 503 when the secret to check
/// it against cannot be read (the sender is not at fault; it should retry).
fn refused(metrics: &Metrics, problem: &auth::AuthError) -> Response {
    if let auth::AuthError::Unreadable(_) = problem {
        tracing::error!(error = %problem, "cannot check a sender");
        metrics.event_received("unavailable");
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string());
        response.headers_mut().insert(
            header::RETRY_AFTER,
            http::HeaderValue::from(RETRY_AFTER_SECONDS),
        );
        return response;
    }
    metrics.event_received("unauthorized");
    let mut response = error(StatusCode::UNAUTHORIZED, problem.to_string());
    if let auth::AuthError::Token = problem {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The answer for one event of a request (serialized directly, without building JSON values).
#[derive(Debug, Serialize)]
struct EventAnswer<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    runs: Vec<RunAnswer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_matched: Option<Vec<plan::NotMatched>>,
}

#[derive(Debug, Serialize)]
struct RunAnswer {
    name: String,
    action: String,
    status: RunStatus,
    /// Why the API server refused to store the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum RunStatus {
    Created,
    Duplicate,
    /// The API server will not store it (too large, invalid): not worth a retry.
    Refused,
}

#[derive(Debug, Serialize)]
struct Answer<'a> {
    events: Vec<EventAnswer<'a>>,
}

/// Persists the runs of every event, then answers for all of them.
async fn accept(state: &IngestState, events: &[CloudEvent], held: &Held) -> Response {
    let mut answer = Answer {
        events: Vec::with_capacity(events.len()),
    };
    let (mut any_runs, mut any_config_error) = (false, false);
    for event in events {
        match take_event(state, event, Some(held)).await {
            Ok(taken) => {
                state.metrics.event_received(taken.outcome.label());
                any_runs |= matches!(taken.outcome, Outcome::Accepted | Outcome::Duplicate);
                any_config_error |=
                    matches!(taken.outcome, Outcome::ConfigError | Outcome::Refused);
                answer.events.push(taken.answer);
            }
            Err(refusal) => {
                state.metrics.event_received(refusal.outcome);
                return refusal.into_response();
            }
        }
    }
    let status = if any_runs {
        StatusCode::ACCEPTED
    } else if any_config_error {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    json_answer(status, &answer)
}

/// Room for the answer to one event that ran nothing, with its reasons (about 200 bytes with
/// none listening, about 520 with three refusals explained), so it is written without growing
/// the buffer (axum's `Json` starts at 128 bytes and doubles).
const ANSWER_BYTES_PER_EVENT: usize = 768;
/// The most room reserved up front, however large the batch (a larger answer grows as it is
/// written): a batch limit raised by the installation does not reserve its whole bound.
const ANSWER_BYTES_RESERVED: usize = 64 * 1024;

/// The answer as JSON, serialized into one buffer sized for it up front.
fn json_answer(status: StatusCode, answer: &Answer<'_>) -> Response {
    let room = ANSWER_BYTES_PER_EVENT.saturating_mul(answer.events.len().max(1));
    let mut body = Vec::with_capacity(room.min(ANSWER_BYTES_RESERVED));
    match serde_json::to_writer(&mut body, answer) {
        Ok(()) => json_response(status, body),
        // Strings and lists only: serializing them does not fail.
        Err(problem) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the answer cannot be written: {problem}"),
        ),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// What became of an event whose runs (if any) are persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// At least one run is new.
    Accepted,
    /// Every run existed already: a repeated delivery.
    Duplicate,
    NotMatched,
    /// The service's config cannot be used (a failed run reports it for a `.triggered` event).
    ConfigError,
    /// The API server refuses to store its runs (too large, invalid).
    Refused,
}

impl Outcome {
    /// As `job_executor_events_received_total` counts it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::NotMatched => "not_matched",
            Outcome::ConfigError => "config_error",
            Outcome::Refused => "refused",
        }
    }
}

/// An event and its persisted runs.
pub(crate) struct Taken<'a> {
    answer: EventAnswer<'a>,
    pub(crate) outcome: Outcome,
}

impl Taken<'_> {
    /// The names of the event's runs, new or found.
    pub(crate) fn run_names(&self) -> Vec<String> {
        self.answer
            .runs
            .iter()
            .filter(|run| run.status != RunStatus::Refused)
            .map(|run| run.name.clone())
            .collect()
    }

    /// Why nothing ran, or what is wrong with the config, in one line.
    pub(crate) fn explanation(&self) -> Option<String> {
        if let Some(error) = &self.answer.error {
            return Some(error.clone());
        }
        let refused: Vec<String> = self
            .answer
            .runs
            .iter()
            .filter_map(|run| Some(format!("{}: {}", run.action, run.reason.as_deref()?)))
            .collect();
        if !refused.is_empty() {
            return Some(refused.join("; "));
        }
        if self.answer.runs.is_empty() {
            let reasons = self.answer.not_matched.as_deref().unwrap_or_default();
            return Some(
                reasons
                    .iter()
                    .map(|r| match r.action.as_str() {
                        "" => r.reason.clone(),
                        action => format!("{action}: {}", r.reason),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        None
    }
}

/// An event that could not be taken now; nothing of it is lost if it is offered again.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    pub(crate) message: String,
    /// As `job_executor_events_received_total` counts it.
    pub(crate) outcome: &'static str,
}

impl Refusal {
    fn into_response(self) -> Response {
        let mut response = error(self.status, self.message);
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                http::HeaderValue::from(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// The event's span, which continues the trace the event carries (its runs keep the context),
/// and that context.
fn ingest_span(event: &CloudEvent) -> (tracing::Span, Option<TraceContext>) {
    let span = tracing::info_span!(
        target: trace::TARGET,
        "ingest",
        otel.kind = "server",
        "cloudevents.event_id" = event.id(),
        "cloudevents.event_type" = event.event_type(),
    );
    let incoming = TraceContext::of_event(event);
    trace::continue_trace(&span, incoming.as_ref());
    (span, incoming)
}

/// Plans one event and persists its runs: what the HTTP receiver and the schedules share.
pub(crate) async fn take_event<'a>(
    state: &IngestState,
    event: &'a CloudEvent,
    held: Option<&Held>,
) -> Result<Taken<'a>, Refusal> {
    let (span, incoming) = ingest_span(event);
    let context = trace::handed_on(&span, incoming.as_ref());
    let traced = |mut runs: Vec<JobRun>| {
        if let Some(context) = &context {
            for run in &mut runs {
                context.annotate(run);
            }
        }
        runs
    };
    // Most events are planned in place, from what the source holds in memory (a directory
    // config is a `stat` away; a git source's heads and compiled configs are cached). Only a
    // fetch or a read of the git clone, which may block, goes to the blocking pool.
    let in_scope = || match state.scope.refusal(|name| event.data_str(name)) {
        Some(reasons) => Some(EventPlan::Nothing { reasons }),
        None => plan::plan_event_in_memory(event, &state.source, &state.settings),
    };
    let plan = match in_scope() {
        Some(plan) => plan,
        None => {
            let (owned_event, source, settings) =
                (event.clone(), state.source.clone(), state.settings.clone());
            let held = held.cloned();
            match tokio::task::spawn_blocking(move || {
                let _held = held;
                plan::plan_event(&owned_event, &source, &settings)
            })
            .await
            {
                Ok(plan) => plan,
                Err(problem) => {
                    tracing::error!(error = %problem, "planning an event failed");
                    return Err(Refusal {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        message: format!("the event could not be planned ({problem}); retry later"),
                        outcome: "unavailable",
                    });
                }
            }
        }
    };
    let mut answer = EventAnswer {
        id: event.id(),
        event_type: event.event_type(),
        runs: Vec::new(),
        error: None,
        not_matched: None,
    };
    let outcome = match plan {
        EventPlan::Nothing { reasons } => {
            answer.not_matched = Some(reasons);
            Outcome::NotMatched
        }
        EventPlan::Unavailable { message } => {
            tracing::warn!(event = %event.id(), error = %message, "cannot read the job config now; answering 503");
            return Err(unavailable(
                format!("{message}; retry later"),
                "source_unavailable",
            ));
        }
        EventPlan::ConfigError { message, run } => {
            // An event accepted before the config broke (its redelivery: a lost answer, a
            // store that timed out but stored) has its runs, which report on it: a run that
            // reported the error beside them would answer one `.triggered` twice, differently.
            let earlier = match &run {
                Some(run) => runs_of_event(state, event, run).await?,
                None => Vec::new(),
            };
            if !earlier.is_empty() {
                answer.runs = earlier;
                Outcome::Duplicate
            } else {
                if let Some(run) = run {
                    // The failed run that reports the error is a run in flight like any other.
                    backpressure(state, std::slice::from_ref(&*run))?;
                    let runs = traced(vec![*run]);
                    answer.runs = create_runs(state, runs).instrument(span.clone()).await?;
                }
                answer.error = Some(message);
                Outcome::ConfigError
            }
        }
        EventPlan::Runs { runs, not_matched } => {
            backpressure(state, &runs)?;
            let runs = traced(runs);
            answer.runs = create_runs(state, runs).instrument(span.clone()).await?;
            answer.not_matched = Some(not_matched);
            let any = |status| answer.runs.iter().any(|r| r.status == status);
            if any(RunStatus::Created) {
                Outcome::Accepted
            } else if any(RunStatus::Duplicate) {
                Outcome::Duplicate
            } else {
                Outcome::Refused
            }
        }
    };
    Ok(Taken { answer, outcome })
}

/// 429 with `Retry-After` while the runs in flight reach `--max-runs-in-flight`: work that
/// cannot start soon is not accepted, and the runs already accepted go on. Runs still in
/// flight (a redelivery) are not new work and pass; the redelivery of a done run is counted as
/// new (done runs are not in the watch) and is answered as a duplicate once it is let in. An
/// event is judged by the runs in flight before it, so one that matches many actions is never
/// refused for good (the bound is passed by at most one event's runs). Until the watch has
/// listed the runs, none is known: an event is answered 503 then, as a replica that is not
/// ready (reached through a NATS stream or a pod's address, not the Service) would otherwise
/// take a backlog past the bound, every redelivery counted as new.
fn backpressure(state: &IngestState, runs: &[JobRun]) -> Result<(), Refusal> {
    let Some(limit) = state.max_runs_in_flight else {
        return Ok(());
    };
    if runs.is_empty() {
        return Ok(());
    }
    if !state.known_runs.listed() {
        // Why, when the watch says (the CRD missing or older than the operator, access
        // refused): what to fix comes first.
        let why = match state.health.status() {
            Err(problem) => format!("{problem}; "),
            Ok(()) => String::new(),
        };
        return Err(unavailable(
            format!(
                "{why}this replica has not listed the runs in flight yet, which \
                 --max-runs-in-flight ({limit}) counts: retry shortly"
            ),
            "backpressure",
        ));
    }
    let new = runs
        .iter()
        .filter(|run| {
            !run.metadata
                .name
                .as_deref()
                .is_some_and(|name| state.known_runs.exists(name))
        })
        .count();
    let in_flight = state.known_runs.in_flight();
    if new == 0 || in_flight < limit {
        return Ok(());
    }
    tracing::warn!(
        in_flight,
        new,
        limit,
        "refusing runs beyond --max-runs-in-flight"
    );
    Err(Refusal {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: format!(
            "{in_flight} runs are in flight, the limit is {limit} (--max-runs-in-flight): this \
             event's {new} new run(s) are not accepted now; retry later"
        ),
        outcome: "backpressure",
    })
}

/// 503 with `Retry-After`: nothing of the request is lost if the sender sends it again.
fn unavailable(message: String, outcome: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message,
        outcome,
    }
}

/// The API server did not answer a create within the store timeout. The run may still have
/// been stored: the sender's retry then finds it and answers `duplicate`.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {}s", .0.as_secs_f32())]
struct StoreTimeout(std::time::Duration);

/// A request to the API server bounded by the store timeout; no answer in time reads as a
/// client error, so callers handle it with every other failure to reach the store.
async fn within_store_timeout<T>(
    state: &IngestState,
    request: impl std::future::Future<Output = kube::Result<T>>,
) -> kube::Result<T> {
    tokio::time::timeout(state.store_timeout, request)
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(Box::new(StoreTimeout(
                state.store_timeout,
            ))))
        })
}

/// Creates the runs; an existing one is a duplicate delivery, one the API server refuses for
/// good (too large, invalid or malformed, denied by admission) is `refused` with its reason (and
/// stored failed, if it can be, to report it in its `.finished`). Any other failure, or no answer
/// within the store timeout, answers 503 with `Retry-After`.
async fn create_runs(state: &IngestState, runs: Vec<JobRun>) -> Result<Vec<RunAnswer>, Refusal> {
    let params = PostParams {
        field_manager: Some(crate::labels::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let mut results = Vec::with_capacity(runs.len());
    for run in runs {
        let name = run.metadata.name.clone().unwrap_or_default();
        let action = run.spec.action.name.clone();
        let created = within_store_timeout(state, state.runs.create(&params, &run)).await;
        let status = match created {
            Ok(stored) if run.spec.files_dir.is_some() && stored.spec.files_dir.is_none() => {
                return Err(older_crd(state, &stored).await);
            }
            Ok(_) => {
                state.metrics.run_started();
                state.known_runs.stored(&name);
                RunStatus::Created
            }
            Err(kube::Error::Api(status))
                if status.code == 409 && status.reason == "AlreadyExists" =>
            {
                RunStatus::Duplicate
            }
            // Too large to store (the event grows when stored as JSON), invalid, or denied by
            // an admission webhook or policy: the same run would be refused again. Its answer says so, and the event's other runs (and
            // a batch's other events) are still taken. (A body over the API server's 3 MiB is
            // 413; an object over etcd's limit fails as it is stored, a 500 that says so.)
            Err(kube::Error::Api(status)) if refused_for_good(&status) => {
                tracing::warn!(run = %name, reason = %status.message, "the API server refuses the run");
                let reason = format!(
                    "the Kubernetes API refuses to store the run: {}",
                    status.message
                );
                store_refused(state, &params, run, &reason).await?;
                results.push(RunAnswer {
                    name,
                    action,
                    status: RunStatus::Refused,
                    reason: Some(reason),
                });
                continue;
            }
            Err(problem) => {
                tracing::warn!(run = %name, error = %problem, "cannot persist a run; answering 503");
                let why = match &problem {
                    kube::Error::Api(_) => crate::health::explain(&problem),
                    other => format!("the Kubernetes API cannot store the run now ({other})"),
                };
                return Err(unavailable(format!("{why}; retry later"), "unavailable"));
            }
        };
        results.push(RunAnswer {
            name,
            action,
            status,
            reason: None,
        });
    }
    Ok(results)
}

/// A run stored without the `spec.filesDir` it was sent with: the installed CRD is older than
/// this operator and dropped the field, and the run would read its files beside its config.
/// It is deleted (nothing runs with other files than the event was accepted with), and the
/// event answered 503 until the CRD is applied.
async fn older_crd(state: &IngestState, stored: &JobRun) -> Refusal {
    let name = stored.metadata.name.clone().unwrap_or_default();
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: stored.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    // Bounded as the create was: a frozen API server does not hold the sender.
    if let Err(problem) = within_store_timeout(state, state.runs.delete(&name, &params)).await {
        tracing::error!(run = %name, error = %problem, "cannot delete a run stored without its files' place");
    }
    let message = format!(
        "the installed CustomResourceDefinition {} is older than this operator: it drops \
         spec.filesDir, which --git-files-from records: kubectl apply -f crds/ (Helm does not \
         upgrade CRDs); retry later",
        crate::crd::CRD_NAME
    );
    tracing::error!("{message}");
    unavailable(message, "unavailable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::matching::Matcher;

    /// What the receiver writes by hand for an event that starts nothing is, byte for byte,
    /// the serialized answer of the same event and reasons.
    #[test]
    fn an_answer_written_from_a_sketch_is_the_serialized_answer() {
        let valid = config::load(
            r#"apiVersion: v2
actions:
  - name: "q\"uote"
    events:
      - name: "t\"é"
        jsonpath: {property: "$.data.x", match: "m\""}
    tasks: [{image: alpine}]
"#,
            "c.yaml",
        )
        .unwrap();
        let matcher = Matcher::compile(&valid.config).unwrap();
        for (id, event_type, x) in [
            ("1", "t\"é", "\"v\\u0001\""),
            ("i\\d \"é\"", "t\"é", "{\"a\":[1,\"\\n\"]}"),
            ("\\\"", "other", "1e2"),
        ] {
            let text = serde_json::json!({
                "specversion": "1.0", "id": id, "source": "s", "type": event_type,
                "data": {"x": serde_json::from_str::<serde_json::Value>(x).unwrap()},
            })
            .to_string();
            let sketch = EventSketch::read(&text).unwrap();
            let refused = matcher.decide_sketch(&sketch).unwrap().refused;
            assert_eq!(refused.len(), usize::from(event_type != "other"), "{text}");
            let reasons = || plan::SketchReasons::Refused {
                refusals: matcher.refusals_of_sketch(&sketch).unwrap(),
                event_type: sketch.event_type(),
                stale: None,
            };
            let listed = || {
                plan::SketchReasons::Listed(vec![plan::NotMatched {
                    action: "a\"".into(),
                    reason: "r\\\n".into(),
                }])
            };
            for (written, listed) in [
                (sketch_answer(&sketch, reasons()), reasons().into_reasons()),
                (sketch_answer(&sketch, listed()), listed().into_reasons()),
            ] {
                let serialized = serde_json::to_vec(&Answer {
                    events: vec![EventAnswer {
                        id: sketch.id(),
                        event_type: sketch.event_type(),
                        runs: Vec::new(),
                        error: None,
                        not_matched: Some(listed),
                    }],
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8(written).unwrap(),
                    String::from_utf8(serialized).unwrap()
                );
            }
        }
    }
}

/// A run the API server refused to store, of a `.triggered` event that expects a reply: stored
/// failed instead, its event cut to what the reply is built from, so that its `.finished`
/// reports the refusal (a sender over NATS, or one that does not read the answer, would wait for
/// it for ever). `Ok(true)` when it is stored now, `Ok(false)` when it was before (a
/// redelivery) or is refused too (the answer alone says why); a failure that may pass is 503,
/// for the sender to try again.
async fn store_refused(
    state: &IngestState,
    params: &PostParams,
    mut run: JobRun,
    reason: &str,
) -> Result<bool, Refusal> {
    if !run.sends_events() {
        return Ok(false);
    }
    run.spec.event.keep_reply_fields();
    // What made it fail already (an invalid config) comes first: that is the user's to fix.
    run.spec.failure = Some(match run.spec.failure.take() {
        Some(failure) => format!("{failure}\n{reason}"),
        None => reason.to_string(),
    });
    // A run that cannot run joins no group: it would take a place, or cancel a running run
    // of the group, and then fail at once.
    run.spec.action.concurrency = None;
    if let Some(labels) = run.metadata.labels.as_mut() {
        labels.remove(crate::labels::GROUP);
    }
    let created = within_store_timeout(state, state.runs.create(params, &run)).await;
    match created {
        Ok(_) => {
            state.metrics.run_started();
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 || refused_for_good(&status) => {
            tracing::debug!(run = ?run.metadata.name, reason = %status.message, "the refused run's failure is not stored");
            Ok(false)
        }
        Err(problem) => {
            tracing::warn!(run = ?run.metadata.name, error = %problem, "cannot store the refused run's failure now; answering 503");
            Err(unavailable(
                format!(
                    "the Kubernetes API cannot store the run's failure now ({problem}); retry later"
                ),
                "unavailable",
            ))
        }
    }
}

/// Whether the API server refused to store a run for good: too large (413, or etcd's limit),
/// invalid (422) or malformed (400), or denied by an admission webhook or policy.
fn refused_for_good(status: &kube::core::Status) -> bool {
    matches!(status.code, 400 | 413 | 422)
        || crate::health::too_large_to_store(status)
        || crate::health::denied_by_admission(status)
}

#[cfg(test)]
mod body_tests {
    use super::is_over_limit;

    /// Only a body past the limit is "too large"; one that broke off is not.
    #[tokio::test]
    async fn a_body_that_broke_off_is_not_over_the_limit() {
        let long = axum::body::Body::from(vec![b'x'; 11]);
        let problem = axum::body::to_bytes(long, 10).await.unwrap_err();
        assert!(is_over_limit(&problem), "{problem}");

        let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![
            Ok(b"{\"a\":"),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "gone",
            )),
        ];
        let broken = axum::body::Body::from_stream(futures::stream::iter(chunks));
        let problem = axum::body::to_bytes(broken, 10).await.unwrap_err();
        assert!(!is_over_limit(&problem), "{problem}");
    }
}
