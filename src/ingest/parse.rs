//! CloudEvents over HTTP (structured, binary and batch content modes), as pure functions over
//! headers and body.

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::event::{CloudEvent, EventError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Event(#[from] EventError),
    #[error("event {index} of the batch: {error}")]
    BatchItem { index: usize, error: EventError },
    #[error("a batch must be a JSON array of events")]
    NotABatch,
    #[error(
        "the batch holds {count} events, more than the limit of {limit} \
         (--max-batch-events); nothing of it was accepted: send it in smaller batches"
    )]
    BatchTooLarge { count: usize, limit: usize },
    #[error(
        "unsupported content type {0:?}: send application/cloudevents+json (structured), \
         application/cloudevents-batch+json (batch), or ce-* headers (binary)"
    )]
    UnsupportedContentType(String),
    #[error(
        "unsupported content encoding {0:?}: send the body uncompressed (Content-Encoding: \
         identity, or none)"
    )]
    UnsupportedContentEncoding(String),
    #[error("header {name}: {reason}")]
    Header { name: String, reason: String },
}

impl ParseError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ParseError::UnsupportedContentType(_) | ParseError::UnsupportedContentEncoding(_) => {
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ParseError::BatchTooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// The media type of `Content-Type`, without its parameters, as sent (compared ignoring case).
fn media_type(headers: &HeaderMap) -> &str {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(crate::event::media_type_of)
        .unwrap_or_default()
}

/// The most events one batch request may carry by default. Every event of a batch is planned
/// and its runs stored before the answer, so the limit bounds the work one request causes (the
/// body limit alone lets thousands of tiny events through).
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 100;

/// The events of one request, in order; a batch of more than `max_batch_events` is refused
/// whole.
pub fn events_from_request(
    headers: &HeaderMap,
    body: &[u8],
    max_batch_events: usize,
) -> Result<Vec<CloudEvent>, ParseError> {
    match content_mode(headers) {
        ContentMode::Batch => batch(body, max_batch_events),
        ContentMode::Binary(media) => Ok(vec![binary(headers, &media, body)?]),
        ContentMode::Structured => Ok(vec![CloudEvent::from_json(body)?]),
        ContentMode::Unsupported(media) => Err(ParseError::UnsupportedContentType(media)),
        ContentMode::Encoded(encoding) => Err(ParseError::UnsupportedContentEncoding(encoding)),
    }
}

/// One event in binary mode, whatever the media type of its data (a message protocol, NATS,
/// decides the mode by its own rules).
pub fn binary_event(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, ParseError> {
    binary(headers, &media_type(headers).to_ascii_lowercase(), body)
}

/// At most how many bytes of memory the events of a request take once read
/// ([`crate::json_text::value_bytes_bound`]): its JSON, and JSON data a `data_base64` holds (read
/// as data, [`crate::event::MAX_BASE64_JSON_GROWTH`] times its size at most). Data that is not
/// JSON is held as its text.
pub fn read_bytes_bound(headers: &HeaderMap, body: &[u8]) -> usize {
    // The body is events (structured, batched), or one event's data (binary).
    let (json, events) = match content_mode(headers) {
        ContentMode::Batch | ContentMode::Structured => (true, true),
        ContentMode::Binary(media) => (
            media.is_empty() || crate::event::is_json_media(&media),
            false,
        ),
        ContentMode::Unsupported(_) | ContentMode::Encoded(_) => (false, false),
    };
    if !json {
        return body.len();
    }
    let base64 = if events && names_data_base64(body) {
        // Decoded, base64 is three quarters of its text.
        body.len()
            .saturating_mul(3)
            .saturating_div(4)
            .saturating_mul(crate::event::MAX_BASE64_JSON_GROWTH)
    } else {
        0
    };
    crate::json_text::value_bytes_bound(body).saturating_add(base64)
}

/// Whether an event of `body` (one, or a batch of them) may have a member named `data_base64`:
/// one written as it is, or any name written with an escape (`data\u005fbase64` is the same
/// member), then read. An escape elsewhere says nothing: Go's encoder writes `&` as `\u0026`.
/// Text that is not JSON says yes (it is refused once parsed).
fn names_data_base64(body: &[u8]) -> bool {
    if memchr::memmem::find(body, b"\"data_base64\"").is_some() {
        return true;
    }
    if memchr::memmem::find(body, b"\\u").is_none() {
        return false;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde::Deserializer::deserialize_any(&mut deserializer, MembersNamed).unwrap_or(true)
}

/// Reads whether an event (or one of a batch) has a member named `data_base64`, skipping
/// values.
struct MembersNamed;

impl<'de> serde::de::Visitor<'de> for MembersNamed {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event or a batch of events")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut named = false;
        while let Some(is) = map.next_key_seed(NameIsDataBase64)? {
            named |= is;
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(named)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut named = false;
        while let Some(is) = seq.next_element_seed(EventNamed)? {
            named |= is;
        }
        Ok(named)
    }
}

/// One event of a batch.
struct EventNamed;

impl<'de> serde::de::DeserializeSeed<'de> for EventNamed {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(MembersNamed)
    }
}

/// A member's name, its escapes decoded: whether it is `data_base64`.
struct NameIsDataBase64;

impl<'de> serde::de::DeserializeSeed<'de> for NameIsDataBase64 {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for NameIsDataBase64 {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member's name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<bool, E> {
        Ok(name == "data_base64")
    }
}

/// The text of a request that carries one event in structured mode, if it is UTF-8: what
/// [`events_from_request`] parses with [`CloudEvent::from_json`].
pub fn structured_text<'a>(headers: &HeaderMap, body: &'a [u8]) -> Option<&'a str> {
    match content_mode(headers) {
        ContentMode::Structured => std::str::from_utf8(body).ok(),
        _ => None,
    }
}

/// Whether the request is in binary mode: its event's attributes in `ce-` headers.
pub fn is_binary(headers: &HeaderMap) -> bool {
    matches!(content_mode(headers), ContentMode::Binary(_))
}

/// How a request carries its events, by its headers.
enum ContentMode {
    Batch,
    /// With the body's media type.
    Binary(String),
    Structured,
    Unsupported(String),
    /// A body compressed (`Content-Encoding`), which is not read.
    Encoded(String),
}

fn content_mode(headers: &HeaderMap) -> ContentMode {
    // Lowercased only for the modes that keep it: the structured mode, every event's path,
    // allocates nothing here.
    // As the HTTP binding says: a `application/cloudevents…` media type is the batched or the
    // structured mode whatever other headers came (a gateway may copy attributes into `ce-`
    // headers); any other with `ce-specversion` is the binary mode.
    // Every value (a header given twice, or a list): `identity, gzip` is compressed.
    if let Some(encoding) = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|byte| *byte == b','))
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .find(|v| !v.is_empty() && !v.eq_ignore_ascii_case("identity"))
    {
        return ContentMode::Encoded(encoding);
    }
    let media = media_type(headers);
    if media.eq_ignore_ascii_case("application/cloudevents-batch+json") {
        ContentMode::Batch
    } else if media.eq_ignore_ascii_case("application/cloudevents+json") {
        ContentMode::Structured
    } else if media
        .get(..23)
        .is_some_and(|start| start.eq_ignore_ascii_case("application/cloudevents"))
    {
        // Another CloudEvents format (`+xml`, `+protobuf`): still the structured mode, in a
        // format not read here, whatever `ce-` headers came.
        ContentMode::Unsupported(media.to_ascii_lowercase())
    } else if headers.contains_key("ce-specversion") {
        ContentMode::Binary(media.to_ascii_lowercase())
    } else if media.eq_ignore_ascii_case("application/json") {
        ContentMode::Structured
    } else if headers.keys().any(|name| name.as_str().starts_with("ce-")) {
        // Binary mode without `ce-specversion`: said so, rather than that the media type is
        // not one of the structured mode.
        ContentMode::Binary(media.to_ascii_lowercase())
    } else {
        ContentMode::Unsupported(media.to_ascii_lowercase())
    }
}

fn batch(body: &[u8], max_batch_events: usize) -> Result<Vec<CloudEvent>, ParseError> {
    let value = crate::event::json_value(body)?;
    let Value::Array(items) = value else {
        return Err(ParseError::NotABatch);
    };
    // "The batch MAY be empty" (HTTP binding, 3.3.2): answered with no events.
    if items.len() > max_batch_events {
        return Err(ParseError::BatchTooLarge {
            count: items.len(),
            limit: max_batch_events,
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            CloudEvent::from_value(item).map_err(|error| ParseError::BatchItem { index, error })
        })
        .collect()
}

/// Binary mode: attributes and extensions in `ce-` headers, the data in the body.
fn binary(headers: &HeaderMap, media: &str, body: &[u8]) -> Result<CloudEvent, ParseError> {
    let mut object = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let header = |reason: &str| ParseError::Header {
            name: name.to_string(),
            reason: reason.into(),
        };
        if matches!(attribute, "data" | "data_base64") {
            return Err(header(
                "the binary mode carries the data in the body, not in a header",
            ));
        }
        // HTTP binding 3.1.1: the data's media type is the Content-Type header and never a
        // `ce-` one; taken, it said one type while the body was read by another.
        if attribute == "datacontenttype" {
            return Err(header(
                "the binary mode carries the data's media type in Content-Type, not in a \
                 ce- header",
            ));
        }
        // Percent-encoded as the HTTP binding asks, after undoing quoted strings (which older
        // senders wrote); raw UTF-8 is read too (the Rust SDK writes values as they are).
        let text = std::str::from_utf8(value.as_bytes())
            .map_err(|_| header("not UTF-8 (percent-encode other bytes)"))?;
        let decoded = percent_decode(&unquote(text))
            .ok_or_else(|| header("its percent-encoded bytes are not UTF-8"))?;
        // Which of two values a gateway on the way reads is anyone's guess.
        if object
            .insert(attribute.to_string(), Value::String(decoded))
            .is_some()
        {
            return Err(header("given more than once"));
        }
    }
    if headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ParseError::Header {
            name: http::header::CONTENT_TYPE.to_string(),
            reason: "given more than once".into(),
        });
    }
    if let Some(value) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| !media.is_empty())
    {
        // HTTP allows a tab where a space goes; an attribute holds no control character.
        let value = value.replace('\t', " ");
        object.insert("datacontenttype".into(), Value::String(value));
    }
    if !body.is_empty() {
        // Without a media type the body is JSON data if it reads as JSON, else bytes (the data
        // of the binary mode is the body as it is, HTTP binding 3.1.2); a body that starts as
        // a JSON object or array is held to it, so a broken one is told, not taken as text.
        let looks_like_json = || {
            body.iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| matches!(b, b'{' | b'['))
        };
        let json = if crate::event::is_json_media(media) || (media.is_empty() && looks_like_json())
        {
            Some(crate::event::json_value(body)?)
        } else if media.is_empty() {
            crate::event::json_value(body).ok()
        } else {
            None
        };
        if let Some(data) = json {
            object.insert("data".into(), data);
        } else if let Ok(text) = std::str::from_utf8(body) {
            object.insert("data".into(), Value::String(text.to_string()));
        } else {
            object.insert("data_base64".into(), Value::String(base64_encode(body)));
        }
    }
    Ok(CloudEvent::from_value(Value::Object(object))?)
}

/// A header value that is one quoted string (RFC 7230, 3.2.6), unquoted: the quotes dropped,
/// `\x` read as `x`, as the HTTP binding asks of a receiver (older senders quoted values with
/// spaces). Any other value is as it came: senders such as the Rust SDK write quotes within a
/// value as they are.
fn unquote(text: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return std::borrow::Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => return std::borrow::Cow::Borrowed(text),
            },
            // A quote inside: not one quoted string.
            '"' => return std::borrow::Cow::Borrowed(text),
            other => out.push(other),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `%xx` escapes of the CloudEvents HTTP binding; a `%` that starts no escape is itself (a
/// sender that did not encode it).
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escape {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    const LIMIT: usize = DEFAULT_MAX_BATCH_EVENTS;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const EVENT: &str = r#"{"specversion":"1.0","id":"1","source":"s","type":"sh.keptn.event.test.triggered","data":{"project":"p"}}"#;

    /// JSON is counted as read ([`crate::json_text::value_bytes_bound`]), data of another type
    /// as its text, and a body that may hold JSON in `data_base64` for that too.
    #[test]
    fn what_reading_a_body_takes_is_bounded_by_its_mode() {
        let tiny = format!("[{}]", vec![r#"{"":0}"#; 100].join(","));
        let json = crate::json_text::value_bytes_bound(tiny.as_bytes());
        for pairs in [
            &[("content-type", "application/cloudevents-batch+json")][..],
            &[("content-type", "application/cloudevents+json")],
            &[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
            ],
            &[("ce-specversion", "1.0")],
        ] {
            assert_eq!(
                read_bytes_bound(&headers(pairs), tiny.as_bytes()),
                json,
                "{pairs:?}"
            );
        }
        for pairs in [
            &[("content-type", "text/plain"), ("ce-specversion", "1.0")][..],
            &[("content-type", "text/plain")],
            &[
                ("content-type", "application/cloudevents+json"),
                ("content-encoding", "gzip"),
            ],
        ] {
            assert_eq!(
                read_bytes_bound(&headers(pairs), tiny.as_bytes()),
                tiny.len(),
                "{pairs:?}"
            );
        }
        let structured = headers(&[("content-type", "application/cloudevents+json")]);
        for body in [
            r#"{"data_base64":"MQ=="}"#,
            r#"{"data\u005fbase64":"MQ=="}"#,
            r#"[{"id":"1"},{"data\u005fbase64":"MQ=="}]"#,
        ] {
            assert_eq!(
                read_bytes_bound(&structured, body.as_bytes()),
                crate::json_text::value_bytes_bound(body.as_bytes())
                    + body.len() * 3 / 4 * crate::event::MAX_BASE64_JSON_GROWTH,
                "{body}"
            );
        }
        // An escape elsewhere (Go's encoder writes `&` so) is no `data_base64`; nor is a
        // binary event's data, which is not an event.
        let binary = headers(&[
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
        ]);
        for (headers, body) in [
            (&structured, r#"{"data":{"url":"https://x/?a=1\u0026b=2"}}"#),
            (&structured, r#"[{"id":"1"},{"data":{"a\u0026b":1}}]"#),
            (&binary, r#"{"data_base64":"MQ==","a\u0026b":1}"#),
        ] {
            assert_eq!(
                read_bytes_bound(headers, body.as_bytes()),
                crate::json_text::value_bytes_bound(body.as_bytes()),
                "{body}"
            );
        }
    }

    #[test]
    fn structured_mode() {
        let h = headers(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        let events = events_from_request(&h, EVENT.as_bytes(), LIMIT).unwrap();
        assert_eq!(events[0].id(), "1");
        let plain_json = headers(&[("content-type", "application/json")]);
        assert_eq!(
            events_from_request(&plain_json, EVENT.as_bytes(), LIMIT)
                .unwrap()
                .len(),
            1
        );
    }

    /// The media type decides, as the HTTP binding says: a structured event whose attributes a
    /// gateway also copied into `ce-` headers is still the structured event.
    #[test]
    fn a_cloudevents_media_type_is_structured_whatever_the_headers() {
        let h = headers(&[
            ("content-type", "application/cloudevents+json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "other"),
            ("ce-source", "gateway"),
            ("ce-type", "t"),
        ]);
        let events = events_from_request(&h, EVENT.as_bytes(), LIMIT).unwrap();
        assert_eq!(events[0].id(), "1");
        assert_eq!(events[0].as_value()["data"], json!({"project": "p"}));
        assert_eq!(structured_text(&h, EVENT.as_bytes()), Some(EVENT));
        // Another CloudEvents format is the structured mode too, in a format not read here:
        // refused as such, not read as binary mode's data.
        let mut xml = h.clone();
        xml.insert(
            "content-type",
            HeaderValue::from_static("application/cloudevents+xml"),
        );
        let error = events_from_request(&xml, b"<event/>", LIMIT).unwrap_err();
        assert_eq!(error.status().as_u16(), 415, "{error}");
        assert!(!is_binary(&xml));
    }

    #[test]
    fn media_types_are_compared_ignoring_case() {
        let structured = headers(&[("content-type", "Application/CloudEvents+JSON")]);
        assert_eq!(
            events_from_request(&structured, EVENT.as_bytes(), LIMIT)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(structured_text(&structured, EVENT.as_bytes()), Some(EVENT));
        let batch = headers(&[("content-type", "APPLICATION/CLOUDEVENTS-BATCH+JSON")]);
        let one = format!("[{EVENT}]");
        assert_eq!(
            events_from_request(&batch, one.as_bytes(), LIMIT)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(structured_text(&batch, one.as_bytes()), None);
        // A binary event's data is JSON by its media type in any case, and its
        // `datacontenttype` is the header as sent; an unsupported type is named in lowercase.
        let binary = headers(&[
            ("content-type", "Application/JSON"),
            ("ce-specversion", "1.0"),
            ("ce-id", "42"),
            ("ce-source", "shipyard"),
            ("ce-type", "t"),
        ]);
        let events = events_from_request(&binary, br#"{"a": 1}"#, LIMIT).unwrap();
        assert_eq!(events[0].as_value()["data"], json!({"a": 1}));
        assert_eq!(events[0].as_value()["datacontenttype"], "Application/JSON");
        let text = headers(&[("content-type", "Text/Plain")]);
        assert_eq!(
            events_from_request(&text, EVENT.as_bytes(), LIMIT).unwrap_err(),
            ParseError::UnsupportedContentType("text/plain".into())
        );
    }

    #[test]
    fn an_event_nested_past_the_limit_is_a_bad_request() {
        use crate::event::MAX_EVENT_NESTING;
        let h = headers(&[("content-type", "application/cloudevents+json")]);
        let nested = |depth: usize| {
            format!(
                r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        // The event's object and `depth` arrays.
        assert!(events_from_request(&h, nested(MAX_EVENT_NESTING - 1).as_bytes(), LIMIT).is_ok());
        let too_deep = "the event nests arrays and objects more than 100 deep (its own object \
                        counted), past what a JobRun may hold";
        let error =
            events_from_request(&h, nested(MAX_EVENT_NESTING).as_bytes(), LIMIT).unwrap_err();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains(too_deep), "{error}");
        let error = events_from_request(&h, nested(200).as_bytes(), LIMIT).unwrap_err();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert!(
            error.to_string().contains("recursion limit exceeded"),
            "{error}"
        );
        // JSON in `data_base64` is read as `data`, one level below the event: counted so too;
        // a binary event's data body likewise.
        use base64::Engine as _;
        let base64 = |depth: usize| {
            // A long string inside: not JSON of many small values, which is refused.
            let data = format!(
                "{}\"{}\"{}",
                "[".repeat(depth),
                "x".repeat(2000),
                "]".repeat(depth)
            );
            format!(
                r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"application/json","data_base64":"{}"}}"#,
                base64::engine::general_purpose::STANDARD.encode(data)
            )
        };
        let ok = events_from_request(&h, base64(MAX_EVENT_NESTING - 1).as_bytes(), LIMIT);
        assert!(ok.is_ok(), "{:?}", ok.err());
        let error =
            events_from_request(&h, base64(MAX_EVENT_NESTING).as_bytes(), LIMIT).unwrap_err();
        assert!(error.to_string().contains(too_deep), "{error}");
        let binary = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
            ("content-type", "application/json"),
        ]);
        let body = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(
            events_from_request(&binary, body(MAX_EVENT_NESTING - 1).as_bytes(), LIMIT).is_ok()
        );
        let error =
            events_from_request(&binary, body(MAX_EVENT_NESTING).as_bytes(), LIMIT).unwrap_err();
        assert!(error.to_string().contains(too_deep), "{error}");
    }

    /// A binary event without a media type: JSON data if the body reads as JSON, else the
    /// body's text or bytes, as with any other media type (it was refused as not JSON).
    #[test]
    fn a_binary_event_without_a_media_type_keeps_a_body_that_is_no_json() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        let data = |body: &[u8]| {
            let events = events_from_request(&h, body, LIMIT).unwrap();
            let value = events[0].as_value();
            assert!(value.get("datacontenttype").is_none(), "{value}");
            (
                value.get("data").cloned(),
                value.get("data_base64").cloned(),
            )
        };
        assert_eq!(data(br#"{"a": 1}"#), (Some(json!({"a": 1})), None));
        assert_eq!(data(b"hello"), (Some(json!("hello")), None));
        assert_eq!(data(b"\xff\x00"), (None, Some(json!("/wA="))));
        assert_eq!(data(b"42"), (Some(json!(42)), None));
        // A JSON object or array cut short is told, not taken as text.
        let error = events_from_request(&h, br#" {"project": "p","#, LIMIT).unwrap_err();
        assert!(error.to_string().contains("not valid JSON"), "{error}");
    }

    /// `ce-` headers without `ce-specversion` are a binary event that lacks it: said so, not
    /// that the media type is unsupported.
    #[test]
    fn a_binary_event_without_specversion_is_told_so() {
        let h = headers(&[
            ("content-type", "text/plain"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        let error = events_from_request(&h, b"hello", LIMIT).unwrap_err();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains("specversion"), "{error}");
    }

    #[test]
    fn binary_mode() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "42"),
            ("ce-source", "shipyard"),
            ("ce-type", "sh.keptn.event.test.triggered"),
            ("ce-shkeptncontext", "ctx%20one"),
        ]);
        let events = events_from_request(&h, br#"{"project":"sockshop"}"#, LIMIT).unwrap();
        let value = events[0].as_value();
        assert_eq!(value["id"], "42");
        assert_eq!(value["shkeptncontext"], "ctx one");
        assert_eq!(value["data"], json!({"project": "sockshop"}));
        assert_eq!(value["datacontenttype"], "application/json");
        let binary = headers(&[
            ("content-type", "application/octet-stream"),
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        let events = events_from_request(&binary, &[0xff, 0x00, 0x01], LIMIT).unwrap();
        assert_eq!(events[0].as_value()["data_base64"], "/wAB");
    }

    #[test]
    fn binary_mode_missing_attribute() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        assert_eq!(
            events_from_request(&h, b"", LIMIT).unwrap_err().to_string(),
            "missing required attribute \"id\""
        );
    }

    /// A percent-encoded control character decodes into the attribute, which is then refused
    /// as in structured mode.
    #[test]
    fn binary_mode_control_character() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "a%00b"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        assert_eq!(
            events_from_request(&h, b"", LIMIT).unwrap_err().to_string(),
            "attribute \"id\" holds U+0000 at character 2: CloudEvents attribute strings must \
             not hold control characters or noncharacters"
        );
    }

    /// A value sent as one quoted string is unquoted, as the HTTP binding asks; quotes within
    /// a value are the value's.
    #[test]
    fn binary_mode_quoted_values() {
        let with_id = |id: &'static str| {
            headers(&[
                ("ce-specversion", "1.0"),
                ("ce-id", id),
                ("ce-source", "s"),
                ("ce-type", "t"),
            ])
        };
        let id = |id: &'static str| {
            events_from_request(&with_id(id), b"", LIMIT).unwrap()[0]
                .id()
                .to_string()
        };
        assert_eq!(id(r#""42""#), "42");
        assert_eq!(id(r#""a \"b\" c%20d""#), r#"a "b" c d"#);
        assert_eq!(id(r#"say "hi""#), r#"say "hi""#);
        assert_eq!(id(r#""a" "b""#), r#""a" "b""#);
        assert_eq!(
            events_from_request(&with_id(r#""""#), b"", LIMIT)
                .unwrap_err()
                .to_string(),
            "attribute \"id\" must not be empty"
        );
    }

    /// What a header cannot carry, or carries twice, is refused; a compressed body is not read.
    #[test]
    fn binary_mode_refuses_data_headers_repeated_attributes_and_encodings() {
        let base = [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ];
        let refused = |extra: &[(&'static str, &'static str)]| {
            let mut h = headers(&base);
            for (name, value) in extra {
                h.append(*name, HeaderValue::from_static(value));
            }
            let error = events_from_request(&h, b"{}", LIMIT).unwrap_err();
            (error.status().as_u16(), error.to_string())
        };
        assert_eq!(
            refused(&[("ce-data", "x")]),
            (
                400,
                "header ce-data: the binary mode carries the data in the body, not in a header"
                    .into()
            )
        );
        assert_eq!(
            refused(&[("ce-id", "2")]),
            (400, "header ce-id: given more than once".into())
        );
        assert_eq!(
            refused(&[("ce-datacontenttype", "text/plain")]),
            (
                400,
                "header ce-datacontenttype: the binary mode carries the data's media type in \
                 Content-Type, not in a ce- header"
                    .into()
            )
        );
        assert_eq!(
            refused(&[("content-encoding", "gzip")]),
            (
                415,
                "unsupported content encoding \"gzip\": send the body uncompressed \
                 (Content-Encoding: identity, or none)"
                    .into()
            )
        );
        // Every encoding named, in one header or two.
        for extra in [
            &[
                ("content-encoding", "identity"),
                ("content-encoding", "gzip"),
            ][..],
            &[("content-encoding", "identity, gzip")],
        ] {
            assert_eq!(
                refused(extra),
                (
                    415,
                    "unsupported content encoding \"gzip\": send the body uncompressed \
                     (Content-Encoding: identity, or none)"
                        .into()
                ),
                "{extra:?}"
            );
        }
        assert_eq!(
            refused(&[
                ("content-type", "application/json"),
                ("content-type", "text/plain")
            ]),
            (400, "header content-type: given more than once".into())
        );
        let mut tab = headers(&base);
        tab.insert(
            "content-type",
            HeaderValue::from_static("application/json;\tcharset=utf-8"),
        );
        assert_eq!(
            events_from_request(&tab, b"{}", LIMIT).unwrap()[0].as_value()["datacontenttype"],
            "application/json; charset=utf-8"
        );
        let mut identity = headers(&base);
        identity.insert("content-encoding", HeaderValue::from_static("identity"));
        assert!(events_from_request(&identity, b"{}", LIMIT).is_ok());
    }

    #[test]
    fn batch_mode() {
        let h = headers(&[("content-type", "application/cloudevents-batch+json")]);
        let body = format!("[{EVENT},{EVENT}]");
        assert_eq!(
            events_from_request(&h, body.as_bytes(), LIMIT)
                .unwrap()
                .len(),
            2
        );
        let bad = format!("[{EVENT},{{\"specversion\":\"1.0\"}}]");
        assert_eq!(
            events_from_request(&h, bad.as_bytes(), LIMIT)
                .unwrap_err()
                .to_string(),
            "event 1 of the batch: missing required attribute \"id\""
        );
        assert_eq!(events_from_request(&h, b"[]", LIMIT), Ok(Vec::new()));
        assert_eq!(
            events_from_request(&h, EVENT.as_bytes(), LIMIT).unwrap_err(),
            ParseError::NotABatch
        );
    }

    #[test]
    fn a_batch_over_the_limit_is_refused_whole() {
        let h = headers(&[("content-type", "application/cloudevents-batch+json")]);
        let three = format!("[{EVENT},{EVENT},{EVENT}]");
        assert_eq!(
            events_from_request(&h, three.as_bytes(), 3).unwrap().len(),
            3
        );
        let error = events_from_request(&h, three.as_bytes(), 2).unwrap_err();
        assert_eq!(error, ParseError::BatchTooLarge { count: 3, limit: 2 });
        assert_eq!(error.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            error
                .to_string()
                .contains("more than the limit of 2 (--max-batch-events)"),
            "{error}"
        );
    }

    #[test]
    fn wrong_content_type_and_malformed_json() {
        let text = headers(&[("content-type", "text/plain")]);
        let error = events_from_request(&text, EVENT.as_bytes(), LIMIT).unwrap_err();
        assert_eq!(error.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let json = headers(&[("content-type", "application/cloudevents+json")]);
        let error = events_from_request(&json, b"{\"id\":", LIMIT).unwrap_err();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert!(
            error.to_string().starts_with("the body is not valid JSON"),
            "{error}"
        );
    }

    #[test]
    fn percent_escapes() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(
            percent_decode("a%2").as_deref(),
            Some("a%2"),
            "not an escape"
        );
        assert_eq!(percent_decode("50% off").as_deref(), Some("50% off"));
        assert_eq!(percent_decode("%C3%BC").as_deref(), Some("ü"));
        assert_eq!(percent_decode("%FF").as_deref(), None, "not UTF-8");
    }
}
