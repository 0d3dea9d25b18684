//! Conformance with the official CloudEvents SDK (`cloudevents-sdk`).
//!
//! Ingest keeps its own parser (it reads an event straight into the JSON value matching and
//! rendering work on); the sink and `send` encode with the SDK. This proves the two agree:
//!
//! - the SDK encodes a corpus of events (extensions of each type, binary data, unusual content
//!   types, JSON data of every kind, text outside ASCII) in every mode it has — binary and
//!   structured, and a batch of its structured events — and ingest reads each with the
//!   attributes and data the SDK itself reads back;
//! - every kind of event the operator emits (`.started`, `.finished`, a dead letter), encoded
//!   as the sink sends it in either mode, parses with the SDK, saying what the operator meant.
//!
//! Where the SDK departs from the HTTP binding it is said, and tested, here: its binary mode
//! writes attribute values as they are (raw UTF-8, a bare `%`: it does not percent-encode),
//! reads only visible ASCII back, and does not percent-decode what it reads. Ingest reads both
//! the encoded values and the SDK's raw ones; the operator's encoder percent-encodes.

use std::collections::BTreeMap;

use cloudevents::binding::http::to_event;
use cloudevents::event::AttributeValue;
use cloudevents::{AttributesReader, Data, Event};
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::parse::{DEFAULT_MAX_BATCH_EVENTS, events_from_request};
use crate::event::CloudEvent;
use crate::sink::{SinkMode, build_request, to_sdk};

/// What an event says, comparable across readings: each attribute and extension as text
/// (binary mode carries every one as text), and the data as JSON when its content type is
/// JSON, else as the bytes it stands for.
#[derive(Debug, PartialEq)]
struct Said {
    attributes: BTreeMap<String, String>,
    data: Option<DataSaid>,
}

#[derive(Debug, PartialEq)]
enum DataSaid {
    Json(Value),
    Bytes(Vec<u8>),
}

fn is_json_media(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json") || media == "text/json"
}

fn said(event: &Event) -> Said {
    let attributes = event
        .iter()
        .map(|(name, value)| {
            let text = match value {
                // One instant, however many digits its text had.
                AttributeValue::Time(time) => time.timestamp_nanos_opt().unwrap().to_string(),
                other => other.to_string(),
            };
            (name.to_string(), text)
        })
        .collect();
    let json = event.datacontenttype().is_none_or(is_json_media);
    let bytes = |bytes: &[u8]| match serde_json::from_slice(bytes) {
        Ok(value) if json => DataSaid::Json(value),
        _ => DataSaid::Bytes(bytes.to_vec()),
    };
    let data = event.data().map(|data| match data {
        Data::Json(value) => DataSaid::Json(value.clone()),
        Data::String(text) => bytes(text.as_bytes()),
        Data::Binary(raw) => bytes(raw),
    });
    Said { attributes, data }
}

/// The corpus, in the SDK's structured JSON form (read into SDK events by the SDK).
fn corpus() -> Vec<(&'static str, Value)> {
    let base = |id: &str| {
        json!({"specversion": "1.0", "id": id, "source": "https://keptn.example/shipyard",
               "type": "sh.keptn.event.test.triggered"})
    };
    let with = |id: &str, more: Value| {
        let mut event = base(id);
        for (key, value) in more.as_object().unwrap() {
            event[key] = value.clone();
        }
        event
    };
    vec![
        ("minimal", base("c-1")),
        (
            "every optional attribute",
            with(
                "c-2",
                json!({"subject": "carts", "time": "2026-12-01T10:00:00.123456789Z",
                       "dataschema": "https://keptn.example/schemas/test.json",
                       "datacontenttype": "application/json",
                       "data": {"project": "sockshop", "stage": "dev", "service": "carts"}}),
            ),
        ),
        (
            "extensions of each type",
            with(
                "c-3",
                json!({"shkeptncontext": "5f0b6c2e-3d4a-4b8f-9e1c-2a7d6f3b8c90",
                       "triggeredid": "t-1", "priority": 7, "urgent": true,
                       "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                       "tracestate": "vendor=value",
                       "datacontenttype": "application/json", "data": {"a": [1, 2, 3]}}),
            ),
        ),
        (
            "binary data",
            with(
                "c-4",
                json!({"datacontenttype": "application/octet-stream",
                       "data_base64": "AAEC/f7/gIGCgw=="}),
            ),
        ),
        (
            "text data",
            with(
                "c-5",
                json!({"datacontenttype": "text/plain; charset=utf-8",
                       "data": "line one\nline two ünïcode ✓"}),
            ),
        ),
        (
            "XML data",
            with(
                "c-6",
                json!({"datacontenttype": "application/xml",
                       "data": "<result status=\"pass\"/>"}),
            ),
        ),
        (
            "a +json content type",
            with(
                "c-7",
                json!({"datacontenttype": "application/vnd.keptn.event+json",
                       "data": {"result": "pass"}}),
            ),
        ),
        (
            "JSON data that is a string",
            with(
                "c-8",
                json!({"datacontenttype": "application/json", "data": "just text"}),
            ),
        ),
        (
            "JSON data that is a number, no content type",
            with("c-9", json!({"data": 42})),
        ),
        (
            "JSON data that is an array",
            with(
                "c-10",
                json!({"datacontenttype": "application/json", "data": [true, null, "x", 1.5]}),
            ),
        ),
        (
            "a URN source and a subject with spaces",
            with(
                "c-11",
                json!({"source": "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
                       "subject": "a subject with spaces"}),
            ),
        ),
        (
            "text outside ASCII in attributes",
            with(
                "c-12",
                json!({"subject": "ünïcode ✓", "note": "50% \"quoted\"",
                       "datacontenttype": "application/json", "data": {"k": "é"}}),
            ),
        ),
        (
            "large data",
            with(
                "c-13",
                json!({"datacontenttype": "application/json",
                       "data": {"logs": "x".repeat(100_000)}}),
            ),
        ),
    ]
}

/// Attribute values of visible ASCII and space only, without `%`: what the SDK's binary mode
/// writes as the HTTP binding would.
fn visible_ascii(event: &Event) -> bool {
    event.iter().all(|(name, value)| {
        name == "time"
            || value
                .to_string()
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'%' && b != b'"')
    })
}

fn request_parts(request: Request<Option<Vec<u8>>>) -> (HeaderMap, Vec<u8>) {
    let (parts, body) = request.into_parts();
    (parts.headers, body.unwrap_or_default())
}

fn ingest_reads(headers: &HeaderMap, body: &[u8]) -> Vec<Event> {
    events_from_request(headers, body, DEFAULT_MAX_BATCH_EVENTS)
        .unwrap_or_else(|e| panic!("ingest refused it: {e}"))
        .into_iter()
        .map(|event| to_sdk(event.as_value().clone()).unwrap())
        .collect()
}

#[test]
fn ingest_reads_what_the_sdk_writes_in_every_mode() {
    let events: Vec<(&str, Event)> = corpus()
        .into_iter()
        .map(|(name, value)| {
            let event: Event = serde_json::from_value(value)
                .unwrap_or_else(|e| panic!("{name}: the SDK does not read it: {e}"));
            (name, event)
        })
        .collect();
    for (name, event) in &events {
        // Structured: the SDK's JSON form.
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+json"),
        );
        let body = serde_json::to_vec(event).unwrap();
        let read = ingest_reads(&headers, &body);
        assert_eq!(said(&read[0]), said(event), "{name}: structured");
        assert_eq!(
            said(&to_event(&headers, body).unwrap()),
            said(event),
            "{name}: the SDK reads its structured form back"
        );

        // Binary: the SDK's own request. It writes values as they are (UTF-8, `%`): ingest
        // reads those too; the SDK's own reader takes visible ASCII only.
        let request = Request::<Option<Vec<u8>>>::try_from(event.clone());
        let (headers, body) = request_parts(request.unwrap());
        let read = ingest_reads(&headers, &body);
        assert_eq!(said(&read[0]), said(event), "{name}: binary");
        if visible_ascii(event) {
            let sdk_read = to_event(&headers, body).unwrap();
            assert_eq!(
                said(&read[0]),
                said(&sdk_read),
                "{name}: binary, as the SDK reads it"
            );
        }
    }

    // A batch of the SDK's structured events, in order.
    let batch: Vec<&Event> = events.iter().map(|(_, event)| event).collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents-batch+json"),
    );
    let read = ingest_reads(&headers, &serde_json::to_vec(&batch).unwrap());
    let read: Vec<Said> = read.iter().map(said).collect();
    let sent: Vec<Said> = batch.into_iter().map(said).collect();
    assert_eq!(read, sent, "batch");
}

#[test]
fn the_sdk_does_not_percent_encode_in_binary_mode() {
    let (_, value) = corpus()
        .into_iter()
        .find(|(name, _)| *name == "text outside ASCII in attributes")
        .unwrap();
    let event: Event = serde_json::from_value(value).unwrap();
    let (headers, body) = request_parts(Request::<Option<Vec<u8>>>::try_from(event).unwrap());
    assert_eq!(
        headers["ce-subject"].as_bytes(),
        "ünïcode ✓".as_bytes(),
        "raw UTF-8"
    );
    assert_eq!(headers["ce-note"], "50% \"quoted\"", "no escapes");
    assert!(
        to_event(&headers, body).is_err(),
        "and the SDK cannot read it back"
    );
}

/// What the SDK reads from a binary request, with the percent-decoding it does not do itself
/// applied to what it read.
fn sdk_reads_binary(headers: &HeaderMap, body: Vec<u8>) -> Said {
    let mut said = said(&to_event(headers, body).unwrap());
    for (name, value) in &mut said.attributes {
        if name != "time" {
            *value = percent_decode(value);
        }
    }
    said
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

async fn sent(event: &CloudEvent, mode: SinkMode) -> (HeaderMap, Vec<u8>) {
    let url: Uri = "https://sink.example/events".parse().unwrap();
    let request = build_request(event, mode, &url, &[]).unwrap();
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.headers, body)
}

/// Every corpus event and every kind the operator emits, as the sink sends it: the SDK and
/// ingest both read what was meant.
#[tokio::test]
async fn what_the_operator_sends_parses_with_the_sdk() {
    let mut events: Vec<(String, CloudEvent)> = corpus()
        .into_iter()
        .map(|(name, value)| (name.to_string(), CloudEvent::from_value(value).unwrap()))
        .collect();
    events.extend(crate::controller::report::emitted_for_tests());
    for (name, event) in &events {
        let meant = said(&to_sdk(event.as_value().clone()).unwrap());
        let (headers, body) = sent(event, SinkMode::Structured).await;
        assert_eq!(
            said(&to_event(&headers, body.clone()).unwrap()),
            meant,
            "{name}: structured"
        );
        assert_eq!(
            said(&ingest_reads(&headers, &body)[0]),
            meant,
            "{name}: structured, ingest"
        );
        let (headers, body) = sent(event, SinkMode::Binary).await;
        assert_eq!(
            sdk_reads_binary(&headers, body.clone()),
            meant,
            "{name}: binary"
        );
        assert_eq!(
            said(&ingest_reads(&headers, &body)[0]),
            meant,
            "{name}: binary, ingest"
        );
    }
}
