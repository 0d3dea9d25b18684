//! Keptn's NATS bus: events from a JetStream stream, through a durable pull consumer.
//!
//! A message is acknowledged only once the runs its event implies are persisted, or once it is
//! answered for good (nothing matches, the event or the config is invalid). An operator that
//! dies between receiving and acknowledging gets the message again after the consumer's
//! `ack_wait`, and its runs are then found already there: a duplicate, not a second run. A
//! message that cannot be taken now (the API server or the config source unavailable,
//! `--max-runs-in-flight` reached) is negatively acknowledged with a delay, so it comes back.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, stream};
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{IngestState, Outcome, parse, take_event, take_sketch};
use crate::event::{CloudEvent, EventSketch};
use crate::sink::{Wildcards, check_subject};

/// How long a message that could not be taken waits before it is delivered again.
const RETRY: Duration = Duration::from_secs(5);
/// The first wait before reaching the server again.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between attempts to reach the server.
const MOST_BACKOFF: Duration = Duration::from_secs(30);
/// Messages asked of the server at a time (the client asks for more when half have come).
const BATCH: usize = 8;
/// Messages taken at once: one slow to take (the API server or a git host slow to answer)
/// holds none of the others up. Only with this many in hand do delivered messages wait in the
/// client (their `ack_wait` running, with nothing to say they are in hand).
const MOST_TAKEN_AT_ONCE: usize = 2 * BATCH;
/// How often the server says it is there while no message comes (the client's default): a
/// connection that died silently is noticed after two missed.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long the messages in hand are taken on when the operator stops (as reconciles are).
const DRAIN: Duration = Duration::from_secs(10);
/// A stream the operator made says so until its consumer is made, so that a consumer made at a
/// later attempt (the first failed between the two) still reads it from its start.
const MADE_HERE: &str = "made by job-executor: its consumer reads it from the start";

/// Where events come from.
#[derive(Debug, Clone)]
pub struct NatsSource {
    /// `nats://host:port`, and any credentials it held.
    pub address: crate::sink::NatsAddress,
    /// The JetStream stream to read (Keptn's is `keptn`).
    pub stream: String,
    /// The subjects the stream is created with when it does not exist.
    pub stream_subjects: Vec<String>,
    /// The subjects of the stream this consumer takes (all when empty).
    pub subjects: Vec<String>,
    /// The durable consumer's name, shared by every replica (each message goes to one).
    pub consumer: String,
    /// How long a message may stay unacknowledged before the server delivers it again.
    pub ack_wait: Duration,
}

impl NatsSource {
    /// Checks what can be checked before connecting.
    pub fn new(
        url: String,
        stream: String,
        stream_subjects: Vec<String>,
        subjects: Vec<String>,
        consumer: String,
        ack_wait: Duration,
    ) -> Result<NatsSource, NatsError> {
        let address = crate::sink::NatsAddress::parse(&url);
        let parsed: Option<http::Uri> = address.url.parse().ok();
        if !crate::sink::is_nats(&url) || parsed.and_then(|u| u.host().map(str::len)).is_none() {
            return Err(NatsError::Setting(format!(
                "--nats-url {:?} is not a nats:// (or tls://) URL of a server",
                address.shown()
            )));
        }
        let name_ok = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&stream) {
            return Err(NatsError::Setting(format!(
                "--nats-stream {stream:?} is not a stream name (letters, digits, - and _)"
            )));
        }
        if !name_ok(&consumer) {
            return Err(NatsError::Setting(format!(
                "--nats-consumer {consumer:?} is not a consumer name (letters, digits, - and _)"
            )));
        }
        // A list written `a, b` (as in an environment variable) means `a` and `b`.
        let trimmed = |subjects: Vec<String>| -> Vec<String> {
            subjects
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let stream_subjects = trimmed(stream_subjects);
        let subjects = trimmed(subjects);
        if stream_subjects.is_empty() {
            return Err(NatsError::Setting(
                "--nats-stream-subjects needs at least one subject".into(),
            ));
        }
        if ack_wait.is_zero() {
            return Err(NatsError::Setting(
                "--nats-ack-wait-seconds must be at least 1".into(),
            ));
        }
        for (flag, list) in [
            ("--nats-stream-subjects", &stream_subjects),
            ("--nats-subject", &subjects),
        ] {
            for subject in list {
                if let Err(why) = check_subject(subject, Wildcards::Allowed) {
                    return Err(NatsError::Setting(format!(
                        "{flag}: {subject:?} is not a NATS subject: {why}"
                    )));
                }
            }
        }
        Ok(NatsSource {
            address,
            stream,
            stream_subjects,
            subjects,
            consumer,
            ack_wait,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("{0}")]
    Setting(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the JetStream stream {stream:?}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("the consumer {consumer:?}: {reason}")]
    Consumer { consumer: String, reason: String },
    #[error("reading messages: {0}")]
    Messages(String),
}

/// Takes events until `shutdown` resolves, reconnecting (with backoff) whenever the server is
/// away; each problem is logged once.
pub async fn run(
    source: NatsSource,
    ingest: Arc<IngestState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = FIRST_BACKOFF;
    let mut last_problem = String::new();
    loop {
        let Some((problem, took_messages)) = consume(&source, &ingest, shutdown.as_mut()).await
        else {
            return;
        };
        // A connection that took messages starts the backoff afresh, and a problem that comes
        // again after it is logged again. One that took none (a consumer that fails at once
        // each time) backs off.
        if took_messages {
            backoff = FIRST_BACKOFF;
            last_problem.clear();
        }
        let problem = problem.to_string();
        if problem != last_problem {
            tracing::error!(error = %problem, "NATS events are not taken; retrying");
            last_problem = problem;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.as_mut() => return,
        }
        backoff = (backoff * 2).min(MOST_BACKOFF);
    }
}

/// Connects and takes messages until something fails: what failed, and whether any message
/// was taken before; `None` once `shutdown` came. Messages are taken side by side, up to
/// [`MOST_TAKEN_AT_ONCE`]; the ones in hand when it fails are taken to the end first, and when
/// it stops for at most [`DRAIN`] (no more are asked for): a take cut short is delivered
/// again after `ack_wait`, and finds its runs.
async fn consume<F: std::future::Future<Output = ()>>(
    source: &NatsSource,
    ingest: &IngestState,
    mut shutdown: std::pin::Pin<&mut F>,
) -> Option<(NatsError, bool)> {
    let connecting = async {
        let consumer = connect(source).await?;
        // The in-hand signals follow the consumer's wait (one that exists is used as it is).
        let ack_wait = match consumer.cached_info().config.ack_wait {
            wait if wait.is_zero() => source.ack_wait,
            wait => wait.min(source.ack_wait),
        };
        consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|problem| NatsError::Messages(problem.to_string()))
            .map(|messages| (messages, ack_wait))
    };
    let (mut messages, ack_wait) = tokio::select! {
        connected = connecting => match connected {
            Ok(messages) => messages,
            Err(problem) => return Some((problem, false)),
        },
        () = shutdown.as_mut() => return None,
    };
    tracing::info!(url = %source.address.shown(), stream = %source.stream, consumer = %source.consumer, "taking events from NATS");
    let mut in_hand = futures::stream::FuturesUnordered::new();
    let mut took = false;
    let problem = loop {
        tokio::select! {
            Some(()) = in_hand.next(), if !in_hand.is_empty() => {}
            message = messages.next(), if in_hand.len() < MOST_TAKEN_AT_ONCE => match message {
                Some(Ok(message)) => {
                    took = true;
                    in_hand.push(take_message(ingest, message, ack_wait));
                }
                Some(Err(problem)) => break Some(NatsError::Messages(problem.to_string())),
                None => {
                    break Some(NatsError::Messages(
                        "the server ended the consumer's messages".into(),
                    ));
                }
            },
            () = shutdown.as_mut() => break None,
        }
    };
    // No more messages: the pull request open at the server ends with the subscription, so
    // nothing more is delivered here to wait for the acknowledgement wait.
    drop(messages);
    tracing::debug!("no more NATS messages asked for");
    let drained = async { while in_hand.next().await.is_some() {} };
    tokio::pin!(drained);
    let problem = match problem {
        Some(problem) => tokio::select! {
            () = &mut drained => return Some((problem, took)),
            () = shutdown.as_mut() => problem.to_string(),
        },
        None => "stopping".to_string(),
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!(
            "NATS messages still in hand {}s after stopping ({problem}); they come again after the acknowledgement wait",
            DRAIN.as_secs()
        );
    }
    None
}

async fn connect(source: &NatsSource) -> Result<PullConsumer, NatsError> {
    let client = source
        .address
        .connect()
        .await
        .map_err(|e| NatsError::Connect {
            url: source.address.shown(),
            reason: e.to_string(),
        })?;
    let context = jetstream::new(client);
    let stream_error = |e: &dyn std::fmt::Display| NatsError::Stream {
        stream: source.stream.clone(),
        reason: e.to_string(),
    };
    // Keptn's shipyard-controller owns its stream: a second one on the same subjects would be
    // refused, so an existing stream is used as it is.
    let (stream, created) = match context.get_stream(&source.stream).await {
        Ok(stream) => (stream, false),
        Err(problem)
            if matches!(
                problem.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            let stream = context
                .create_stream(stream::Config {
                    name: source.stream.clone(),
                    subjects: source.stream_subjects.clone(),
                    description: Some(MADE_HERE.into()),
                    ..Default::default()
                })
                .await
                .map_err(|e| stream_error(&e))?;
            (stream, true)
        }
        Err(problem) => return Err(stream_error(&problem)),
    };
    let created = created || stream.cached_info().config.description.as_deref() == Some(MADE_HERE);
    let mut config = jetstream::consumer::pull::Config {
        durable_name: Some(source.consumer.clone()),
        ack_wait: source.ack_wait,
        // A new consumer of an existing stream starts at its end: Keptn's stream keeps the
        // events of days, and a first install must not start a run for each. A stream made
        // just now holds only what was sent since: all of it is taken. Once made, the durable
        // consumer resumes where it was, so nothing sent while the operator was down is lost.
        deliver_policy: if created {
            jetstream::consumer::DeliverPolicy::All
        } else {
            jetstream::consumer::DeliverPolicy::New
        },
        ..Default::default()
    };
    // One subject as `filter_subject`, which every server version takes.
    match source.subjects.as_slice() {
        [] => {}
        [one] => config.filter_subject = one.clone(),
        many => config.filter_subjects = many.to_vec(),
    }
    let consumer = stream
        .get_or_create_consumer(&source.consumer, config)
        .await
        .map_err(|e| NatsError::Consumer {
            consumer: source.consumer.clone(),
            reason: e.to_string(),
        })?;
    if let Some(unlike) = unlike_flags(source, &consumer.cached_info().config) {
        tracing::warn!(
            consumer = %source.consumer,
            "the consumer is not as the flags say: {unlike}; a consumer that exists is used as it is (delete it to make it anew: nats consumer rm {} {})",
            source.stream,
            source.consumer
        );
    }
    // The consumer reads the stream from its start once: one made anew later (deleted to
    // change its subjects, or under another name) starts at the stream's end, as on any stream.
    if stream.cached_info().config.description.as_deref() == Some(MADE_HERE) {
        // As the server has it now (another may have changed it since): only the mark goes.
        let mut now = stream.clone();
        let updated = match now.info().await {
            Ok(info) if info.config.description.as_deref() == Some(MADE_HERE) => {
                let mut config = info.config.clone();
                config.description = None;
                context
                    .update_stream(config)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Ok(_) => Ok(()),
            Err(problem) => Err(problem.to_string()),
        };
        if let Err(problem) = updated {
            tracing::warn!(stream = %source.stream, error = %problem, "the stream still says the operator made it: a consumer made anew would read it from its start");
        }
    }
    Ok(consumer)
}

/// How the consumer the server has differs from what the flags ask for: a consumer that
/// exists is used as it is (a changed flag takes effect once it is made anew), and a server
/// older than 2.10 makes one without the subjects when given more than one.
fn unlike_flags(source: &NatsSource, consumer: &jetstream::consumer::Config) -> Option<String> {
    let mut wanted = source.subjects.clone();
    wanted.sort();
    let mut has = if consumer.filter_subjects.is_empty() {
        Some(consumer.filter_subject.clone())
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect()
    } else {
        consumer.filter_subjects.clone()
    };
    has.sort();
    let mut unlike = Vec::new();
    if wanted != has {
        let list = |subjects: &[String]| match subjects {
            [] => "all of the stream's".to_string(),
            some => some.join(","),
        };
        let older_server = if wanted.len() > 1 && has.is_empty() {
            " (a nats-server older than 2.10 keeps none of several)"
        } else {
            ""
        };
        unlike.push(format!(
            "it takes subjects {}, not {} (--nats-subject){older_server}",
            list(&has),
            list(&wanted)
        ));
    }
    if consumer.ack_policy != jetstream::consumer::AckPolicy::Explicit {
        unlike.push(format!(
            "it acknowledges {:?}, not each message (Explicit): an event acknowledged with \
             another, or not at all, is lost when the operator stops while storing it",
            consumer.ack_policy
        ));
    }
    if consumer.max_deliver > 0 {
        unlike.push(format!(
            "it delivers a message at most {} times: an event put back that often (while the \
             Kubernetes API is away, every 5 s) is dropped",
            consumer.max_deliver
        ));
    }
    if consumer.ack_wait != source.ack_wait {
        unlike.push(format!(
            "its acknowledgement wait is {}s, not {}s (--nats-ack-wait-seconds)",
            consumer.ack_wait.as_secs(),
            source.ack_wait.as_secs()
        ));
    }
    (!unlike.is_empty()).then(|| unlike.join("; "))
}

/// Takes one message, telling the server it is in hand every half `ack_wait` while it is
/// (a slow API server or git host is not a reason to deliver it again elsewhere).
async fn take_message(ingest: &IngestState, message: jetstream::Message, ack_wait: Duration) {
    let taking = unwound(take_message_now(ingest, &message));
    tokio::pin!(taking);
    // A consumer made elsewhere may say 1 ns: an interval of zero would panic.
    let mut in_hand = tokio::time::interval((ack_wait / 2).max(Duration::from_millis(10)));
    in_hand.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the message was just delivered.
    in_hand.tick().await;
    loop {
        tokio::select! {
            taken = &mut taking => {
                // A bug met while taking it (the panic's message is in the log): the message
                // comes back, as an HTTP request that met it loses its connection (or is
                // answered 500) and is sent again, and the operator goes on — with the other messages in hand, the controller,
                // and HTTP — instead of ending, to meet it again at every start.
                if taken.is_none() {
                    ingest.metrics.event_received("unavailable");
                    tracing::error!(subject = %message.subject, "taking a NATS message failed (a bug: the panic above says where); it comes again in {}s", RETRY.as_secs());
                    acknowledge(&message, AckKind::Nak(Some(RETRY))).await;
                }
                return;
            }
            _ = in_hand.tick() => acknowledge(&message, AckKind::Progress).await,
        }
    }
}

/// `future`'s output, or `None` when it panicked.
async fn unwound<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .ok()
}

/// Takes one message: acknowledged once answered for good, delivered again later otherwise.
async fn take_message_now(ingest: &IngestState, message: &jetstream::Message) {
    let metrics = &ingest.metrics;
    // Sending it again will not make it smaller.
    if message.payload.len() > ingest.max_body_bytes {
        metrics.event_received("too_large");
        tracing::warn!(subject = %message.subject, bytes = message.payload.len(), "a NATS message larger than --max-body-bytes ({}); dropped", ingest.max_body_bytes);
        acknowledge(message, AckKind::Term).await;
        return;
    }
    // Most events on Keptn's bus start nothing here: those are taken from a sketch, not
    // parsed whole.
    if let Some(mut sketch) =
        structured_text(message, ingest.max_body_bytes).and_then(EventSketch::read)
        && take_sketch(ingest, &mut sketch, |_, _| ()).is_some()
    {
        acknowledge_taken(ingest, message, sketch.id(), Outcome::NotMatched).await;
        return;
    }
    // Read into values, a message takes more memory than its payload: the messages in hand
    // draw on the receiver's budget of bodies in flight for it, as HTTP bodies do.
    let bound = read_bytes_bound(message);
    if bound > ingest.body_budget.bytes {
        metrics.event_received("too_large");
        tracing::warn!(subject = %message.subject, bound, "a NATS message whose event would take more memory once read than --max-body-bytes-in-flight allows (its JSON holds many small values); dropped");
        acknowledge(message, AckKind::Term).await;
        return;
    }
    let Some(_held) = ingest.body_budget.grant(bound) else {
        metrics.event_received("overloaded");
        acknowledge(message, AckKind::Nak(Some(RETRY))).await;
        return;
    };
    let event = match event_of(message, ingest.max_body_bytes)
        .and_then(|event| on_its_subject(event, &message.subject))
    {
        Ok(event) => event,
        Err(problem) => {
            metrics.event_received("invalid");
            tracing::warn!(subject = %message.subject, error = %problem, "a NATS message cannot be taken, now or later; dropped");
            // Sending it again will not make it one.
            acknowledge(message, AckKind::Term).await;
            return;
        }
    };
    match take_event(ingest, &event, None).await {
        Ok(taken) => acknowledge_taken(ingest, message, event.id(), taken.outcome).await,
        Err(refusal) => {
            metrics.event_received(refusal.outcome);
            tracing::warn!(event = event.id(), error = %refusal.message, "a NATS event cannot be taken now; it comes again in {}s", RETRY.as_secs());
            acknowledge(message, AckKind::Nak(Some(RETRY))).await;
        }
    }
}

/// `event`, published on the subject of its type (as Keptn publishes): permissions to publish
/// on some subjects then say which events one may send. One published elsewhere would run the
/// tasks of a type its publisher may not send.
fn on_its_subject(event: CloudEvent, subject: &str) -> Result<CloudEvent, String> {
    let event_type = event.event_type();
    if event_type != subject {
        return Err(format!(
            "its event's type {event_type:?} is not the subject it was published on \
             ({subject:?}): an event is published on the subject of its type"
        ));
    }
    Ok(event)
}

/// Counts an event taken for good and acknowledges its message, waiting for the server's
/// confirmation: a lost acknowledgement means a duplicate delivery, which finds its runs.
async fn acknowledge_taken(
    ingest: &IngestState,
    message: &jetstream::Message,
    event: &str,
    outcome: Outcome,
) {
    ingest.metrics.event_received(outcome.label());
    if let Err(problem) = message.double_ack().await {
        tracing::warn!(event, error = %problem, "a NATS message could not be acknowledged; it comes again and is a duplicate");
    }
}

async fn acknowledge(message: &jetstream::Message, kind: AckKind) {
    if let Err(problem) = message.ack_with(kind).await {
        tracing::warn!(subject = %message.subject, error = %problem, "a NATS message could not be acknowledged");
    }
}

/// At most how many bytes of memory the event of `message` takes once read
/// ([`parse::read_bytes_bound`]; binary mode by its `ce-datacontenttype`).
fn read_bytes_bound(message: &async_nats::Message) -> usize {
    let mut headers = HeaderMap::new();
    if is_binary(message) {
        headers.insert(
            HeaderName::from_static("ce-specversion"),
            HeaderValue::from_static("1.0"),
        );
        let content_type = message.headers.as_ref().and_then(|h| {
            h.iter()
                .find(|(name, _)| {
                    AsRef::<str>::as_ref(*name).eq_ignore_ascii_case("ce-datacontenttype")
                })
                .and_then(|(_, values)| values.first())
                .and_then(|value| HeaderValue::from_str(value.as_str()).ok())
        });
        if let Some(content_type) = content_type {
            headers.insert(http::header::CONTENT_TYPE, content_type);
        }
    } else {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+json"),
        );
    }
    parse::read_bytes_bound(&headers, &message.payload)
}

/// The text of a message that carries its event as JSON in the payload (structured mode, as
/// Keptn publishes), within the size limit; `None` for binary mode or anything else, which
/// [`event_of`] reads.
fn structured_text(message: &async_nats::Message, max_bytes: usize) -> Option<&str> {
    if is_binary(message) || message.payload.len() > max_bytes {
        return None;
    }
    std::str::from_utf8(&message.payload).ok()
}

/// Binary mode: the attributes in `ce-*` headers, the data as the payload; unless a
/// `Content-Type` header names a CloudEvents format (`application/cloudevents…`), which makes
/// the payload the whole event, as the NATS binding has it. Header names are compared ignoring
/// case, as [`event_of`] reads them (NATS keeps the case a publisher wrote).
fn is_binary(message: &async_nats::Message) -> bool {
    message.headers.as_ref().is_some_and(|h| {
        let named = |wanted: &'static str| {
            h.iter()
                .filter(move |(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(wanted))
        };
        let structured = named("content-type").any(|(_, values)| {
            values.iter().any(|value| {
                value
                    .as_str()
                    .trim_start()
                    .get(..23)
                    .is_some_and(|start| start.eq_ignore_ascii_case("application/cloudevents"))
            })
        });
        !structured && named("ce-specversion").next().is_some()
    })
}

/// The event a message carries. Binary mode (NATS headers `ce-*`, the data as the payload) when
/// it has a `ce-specversion` header; otherwise the payload is the event as JSON, as Keptn
/// publishes it (without a `Content-Type` header).
pub fn event_of(message: &async_nats::Message, max_bytes: usize) -> Result<CloudEvent, String> {
    if message.payload.len() > max_bytes {
        return Err(format!(
            "the message is larger than the limit of {max_bytes} bytes"
        ));
    }
    let mut headers = HeaderMap::new();
    let nats_headers = message.headers.as_ref();
    if is_binary(message) {
        let content_types = nats_headers
            .into_iter()
            .flat_map(|h| h.iter())
            .filter(|(name, _)| {
                AsRef::<str>::as_ref(*name).eq_ignore_ascii_case("ce-datacontenttype")
            })
            .map(|(_, values)| values.len())
            .sum::<usize>();
        // Named as the sender wrote it, not as the HTTP header it is read as below.
        if content_types > 1 {
            return Err("header ce-datacontenttype: given more than once".into());
        }
        for (name, values) in nats_headers.into_iter().flat_map(|h| h.iter()) {
            let name = name.to_string().to_ascii_lowercase();
            // The NATS binding carries the data's media type in `ce-datacontenttype`, where
            // HTTP has `Content-Type`.
            let name = match name.as_str() {
                "ce-datacontenttype" => http::header::CONTENT_TYPE,
                other if other.starts_with("ce-") => HeaderName::from_bytes(other.as_bytes())
                    .map_err(|_| format!("header {other:?} is not a valid name"))?,
                _ => continue,
            };
            // Every value: one given twice is refused, as over HTTP.
            for value in values {
                let value = HeaderValue::from_str(value.as_str())
                    .map_err(|_| format!("header {name} has a value that is not text"))?;
                headers.append(name.clone(), value);
            }
        }
        return parse::binary_event(&headers, &message.payload).map_err(|e| e.to_string());
    }
    CloudEvent::from_json(&message.payload).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bug met while taking a message ends that take, not the operator.
    #[tokio::test]
    async fn a_take_that_panics_ends_that_take_only() {
        assert_eq!(unwound(async { 7 }).await, Some(7));
        let panicked: Option<()> = unwound(async { panic!("a bug") }).await;
        assert_eq!(panicked, None);
    }

    fn source(url: &str, subjects: &[&str]) -> Result<NatsSource, NatsError> {
        NatsSource::new(
            url.into(),
            "keptn".into(),
            vec!["sh.keptn.>".into()],
            subjects.iter().map(|s| s.to_string()).collect(),
            "job-executor".into(),
            Duration::from_secs(30),
        )
    }

    /// A consumer made elsewhere that could lose events is told as unlike the flags; the one
    /// the operator makes is not.
    #[test]
    fn a_consumer_that_could_lose_events_is_told() {
        let source = source("nats://localhost:4222", &["sh.keptn.event.test.triggered"]).unwrap();
        let made = jetstream::consumer::Config {
            filter_subject: "sh.keptn.event.test.triggered".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            ..Default::default()
        };
        assert_eq!(unlike_flags(&source, &made), None);
        let elsewhere = jetstream::consumer::Config {
            ack_policy: jetstream::consumer::AckPolicy::All,
            max_deliver: 5,
            ..made
        };
        assert_eq!(
            unlike_flags(&source, &elsewhere).as_deref(),
            Some(
                "it acknowledges All, not each message (Explicit): an event acknowledged with \
                 another, or not at all, is lost when the operator stops while storing it; it \
                 delivers a message at most 5 times: an event put back that often (while the \
                 Kubernetes API is away, every 5 s) is dropped"
            )
        );
    }

    #[test]
    fn subjects_are_trimmed_and_checked_before_connecting() {
        let source = source(
            "nats://alice:s3cret@nats.example:4222",
            &[
                "sh.keptn.event.test.triggered",
                " sh.keptn.event.*.finished",
                "",
            ],
        )
        .unwrap();
        assert_eq!(
            source.subjects,
            ["sh.keptn.event.test.triggered", "sh.keptn.event.*.finished"]
        );
        assert_eq!(source.address.url, "nats://nats.example:4222");
        for (subject, why) in [
            (
                "sh.keptn.>.triggered",
                "`>` stands for the rest: it comes last",
            ),
            (
                "sh.keptn.event.test*",
                "a wildcard (`*` or `>`) is a token of its own",
            ),
            (
                "sh.keptn..triggered",
                "it has an empty token (a leading, trailing or double dot)",
            ),
            (
                "sh.keptn.my test",
                "it holds white space or a control character",
            ),
        ] {
            let Err(error) = self::source("nats://nats.example", &[subject]) else {
                panic!("{subject:?} taken");
            };
            assert_eq!(
                error.to_string(),
                format!("--nats-subject: {subject:?} is not a NATS subject: {why}")
            );
        }
        let Err(error) = self::source("nats://alice:s3cret@/", &[]) else {
            panic!("a URL without a server taken");
        };
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    /// A binary-mode message is read as one whatever the case of its header names.
    #[test]
    fn binary_mode_headers_are_read_ignoring_case() {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in [
            ("Ce-Specversion", "1.0"),
            ("Ce-Id", "42"),
            ("Ce-Source", "shipyard"),
            ("Ce-Type", "sh.keptn.event.test.triggered"),
            ("Ce-Datacontenttype", "application/json"),
        ] {
            headers.insert(name, value);
        }
        let message = async_nats::Message {
            subject: "sh.keptn.event.test.triggered".into(),
            reply: None,
            payload: bytes::Bytes::from_static(br#"{"project":"p"}"#),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        };
        assert!(structured_text(&message, 1024).is_none());
        let event = event_of(&message, 1024).unwrap();
        assert_eq!(event.id(), "42");
        assert_eq!(
            event.as_value()["data"],
            serde_json::json!({"project": "p"})
        );
    }

    fn message(headers: &[(&str, &str)], payload: &'static [u8]) -> async_nats::Message {
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, *value);
        }
        async_nats::Message {
            subject: "sh.keptn.event.test.triggered".into(),
            reply: None,
            payload: bytes::Bytes::from_static(payload),
            headers: Some(map),
            status: None,
            description: None,
            length: 0,
        }
    }

    /// The mode is the binding's: a CloudEvents `Content-Type` makes the payload the event
    /// whatever `ce-` headers came with it; in binary mode the data's media type is the data's,
    /// even a CloudEvents one.
    #[test]
    fn the_mode_follows_the_content_type_then_the_ce_headers() {
        let binary = [
            ("ce-specversion", "1.0"),
            ("ce-id", "42"),
            ("ce-source", "shipyard"),
            ("ce-type", "sh.keptn.event.test.triggered"),
        ];
        let whole = br#"{"specversion":"1.0","id":"7","source":"s","type":"t","data":{}}"#;
        let structured = message(
            &[
                &binary[..],
                &[("Content-Type", "application/cloudevents+json")],
            ]
            .concat(),
            whole,
        );
        assert!(structured_text(&structured, 1024).is_some());
        assert_eq!(event_of(&structured, 1024).unwrap().id(), "7");

        let data_is_an_event = message(
            &[
                &binary[..],
                &[("ce-datacontenttype", "application/cloudevents+json")],
            ]
            .concat(),
            whole,
        );
        assert!(structured_text(&data_is_an_event, 1024).is_none());
        let event = event_of(&data_is_an_event, 1024).unwrap();
        assert_eq!(event.id(), "42");
        assert_eq!(event.as_value()["data"]["id"], "7");

        let twice = message(&[&binary[..], &[("ce-id", "43")]].concat(), b"{}");
        assert_eq!(
            event_of(&twice, 1024).unwrap_err(),
            "header ce-id: given more than once"
        );
        // Named as sent, though it is read as the data's content type.
        let two_types = message(
            &[
                &binary[..],
                &[
                    ("ce-datacontenttype", "application/json"),
                    ("Ce-DataContentType", "text/plain"),
                ],
            ]
            .concat(),
            b"{}",
        );
        assert_eq!(
            event_of(&two_types, 1024).unwrap_err(),
            "header ce-datacontenttype: given more than once"
        );
    }
}
