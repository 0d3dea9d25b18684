//! CloudEvents 1.0 in their structured JSON form, Keptn's fields, and the `.started` /
//! `.finished` events built from a `.triggered` one.
//!
//! The event is kept as the JSON object the structured mode defines (attributes, extensions and
//! `data` side by side), because that is what JSONPath conditions and env mappings address
//! (`$.data.project`, `$.type`, `$.shkeptncontext`) and what a JobRun stores.

mod sketch;

use std::collections::BTreeMap;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub(crate) use sketch::unescaped_string;
pub use sketch::{EventSketch, LOOKUP_FIELDS};

/// A run's event as its JSON text: what a JobRun records and the controller's cache holds of
/// every run in flight. The text takes about half the memory of the parsed value; the event is
/// parsed (and validated) where a Job or an outgoing event is built from it.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct EventText(Box<RawValue>);

impl<'de> Deserialize<'de> for EventText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read through a value, then written as text: only serde_json's own parser hands out
        // raw text, and a watch event whose object comes before its type is buffered first.
        let value = Value::deserialize(deserializer)?;
        serde_json::value::to_raw_value(&value)
            .map(EventText)
            .map_err(serde::de::Error::custom)
    }
}

impl From<&CloudEvent> for EventText {
    fn from(event: &CloudEvent) -> Self {
        // A JSON value always has a text (its keys are strings); `null` is never the result.
        let text = serde_json::value::to_raw_value(event.as_value())
            .unwrap_or_else(|_| RawValue::NULL.to_owned());
        EventText(text)
    }
}

impl PartialEq for EventText {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl EventText {
    /// The event, parsed and validated.
    pub fn parse(&self) -> Result<CloudEvent, EventError> {
        CloudEvent::from_value_with(json_value(self.0.get().as_bytes())?, Rules::Stored)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// A string attribute (`id`, `type`), read without building the rest of the event.
    pub fn attribute(&self, name: &str) -> Option<String> {
        let mut json = serde_json::Deserializer::from_str(self.0.get());
        json.deserialize_map(Attribute(name)).ok().flatten()
    }

    /// Drops the whole event (the text becomes `null`): what the watch cache keeps of a done
    /// run's event, which nothing reads again.
    pub fn forget(&mut self) {
        self.0 = RawValue::NULL.to_owned();
    }

    /// Keeps only what a run's replies and notifications are built from (`build_reply`): the
    /// attributes that make it a CloudEvent, the extensions a reply repeats and Keptn's
    /// `data` fields. What the watch cache keeps of a run whose Jobs are all created: nothing
    /// renders a Job from its event again. Text that is not a JSON object is kept whole (the
    /// run fails where it is parsed, saying why).
    pub fn keep_reply_fields(&mut self) {
        // Read member by member, building only what is kept: this runs on every watch event
        // of such a run, and the rest of the event (most of it) is skipped, not parsed.
        let mut json = serde_json::Deserializer::from_str(self.0.get());
        let Ok((mut event, data)) = json.deserialize_map(ReplyMembers) else {
            return;
        };
        if let Some(data) = data.filter(|data| data.get().starts_with('{')) {
            let mut json = serde_json::Deserializer::from_str(data.get());
            let Ok(data) = json.deserialize_map(KeptMembers(&KEPTN_DATA_FIELDS)) else {
                return;
            };
            event.insert("data".into(), Value::Object(data));
        }
        if let Ok(text) = serde_json::value::to_raw_value(&event) {
            self.0 = text;
        }
    }
}

/// Of an event's members, those a reply is built from, and `data` as text (its last
/// occurrence, as in the parsed event).
struct ReplyMembers;

impl<'de> Visitor<'de> for ReplyMembers {
    type Value = (Map<String, Value>, Option<&'de RawValue>);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a CloudEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept = Map::new();
        let mut data = None;
        while let Some(sketch::Name(name)) = map.next_key()? {
            if name == "data" {
                data = Some(map.next_value::<&'de RawValue>()?);
            } else if REQUIRED.contains(&name.as_ref()) || REPLY_EXTENSIONS.contains(&name.as_ref())
            {
                kept.insert(name.into_owned(), map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((kept, data))
    }
}

/// Of an object's members, the named ones; the others skipped.
struct KeptMembers<'n>(&'n [&'n str]);

impl<'de> Visitor<'de> for KeptMembers<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept = Map::new();
        while let Some(sketch::Name(name)) = map.next_key()? {
            if self.0.contains(&name.as_ref()) {
                kept.insert(name.into_owned(), map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(kept)
    }
}

/// The extensions of a `.triggered` event its replies carry too.
const REPLY_EXTENSIONS: [&str; 3] = ["shkeptncontext", "gitcommitid", "shkeptnspecversion"];
/// The version of Keptn's event spec a reply says it follows when the `.triggered` event says
/// none (the one Keptn's SDK writes on every event it sends).
const KEPTN_SPEC_VERSION: &str = "0.2.4";

/// The fields of `data` Keptn's events share (`KeptnFields`), which replies carry too.
const KEPTN_DATA_FIELDS: [&str; 4] = ["project", "stage", "service", "labels"];

/// Reads one string attribute of an event's top-level object, skipping the others; of a
/// repeated member, the last, as in the parsed event.
struct Attribute<'a>(&'a str);

impl<'de> Visitor<'de> for Attribute<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a CloudEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        let mut found = None;
        while let Some(sketch::Name(name)) = map.next_key()? {
            if name == self.0 {
                found = map.next_value::<Option<String>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Why a CloudEvent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not valid JSON: {reason} (line {line}, column {column})")]
    InvalidJson {
        reason: String,
        line: usize,
        column: usize,
    },
    #[error("a CloudEvent must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("missing required attribute \"{0}\"")]
    MissingAttribute(&'static str),
    #[error("attribute \"{name}\" {reason}")]
    InvalidAttribute { name: String, reason: String },
    #[error("unsupported specversion \"{0}\": only \"1.0\" is accepted")]
    UnsupportedSpecVersion(String),
    #[error(
        "the event nests arrays and objects more than {MAX_EVENT_NESTING} deep (its own object \
         counted), past what a JobRun may hold"
    )]
    TooDeep,
}

/// The most arrays and objects an event received may have open at once, its own object
/// counted. A JobRun holds the event four levels down in the API server's lists, and kube's
/// client reads a list with serde_json's limit of 127: one event deeper than that would make
/// every list of JobRuns fail to read, and the controller stop. Keptn's events nest a few.
pub const MAX_EVENT_NESTING: usize = 100;

/// Whether `value` opens more than `limit` arrays and objects at once (walked without
/// recursion: a value read by serde_json may nest 127 deep, one built otherwise any depth).
pub(crate) fn nests_deeper_than(value: &Value, limit: usize) -> bool {
    let mut open: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((value, depth)) = open.pop() {
        let children: &mut dyn Iterator<Item = &Value> = match value {
            Value::Array(_) | Value::Object(_) if depth > limit => return true,
            Value::Array(items) => &mut items.iter(),
            Value::Object(members) => &mut members.values(),
            _ => continue,
        };
        open.extend(
            children
                .filter(|child| child.is_array() || child.is_object())
                .map(|child| (child, depth + 1)),
        );
    }
    false
}

/// A validated CloudEvent 1.0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct CloudEvent(Value);

impl TryFrom<Value> for CloudEvent {
    type Error = EventError;

    fn try_from(value: Value) -> Result<Self, EventError> {
        CloudEvent::from_value(value)
    }
}

impl From<CloudEvent> for Value {
    fn from(event: CloudEvent) -> Value {
        event.0
    }
}

/// What validating an event reads of an attribute's value: its kind, and a string's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttributeKind<'v> {
    Null,
    String(&'v str),
    /// A boolean, named as in messages ("a boolean").
    Scalar(&'static str),
    /// A number, and whether it is one the spec's Integer type holds.
    Number {
        integer: bool,
    },
    /// An object or an array, named as in messages.
    Container(&'static str),
}

impl<'v> AttributeKind<'v> {
    fn of(value: &'v Value) -> Self {
        match value {
            Value::Null => AttributeKind::Null,
            Value::String(text) => AttributeKind::String(text),
            Value::Bool(_) => AttributeKind::Scalar(json_kind(value)),
            Value::Number(_) => AttributeKind::Number {
                integer: is_integer(value),
            },
            Value::Array(_) | Value::Object(_) => AttributeKind::Container(json_kind(value)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            AttributeKind::Null => "null",
            AttributeKind::String(_) => "a string",
            AttributeKind::Number { .. } => "a number",
            AttributeKind::Scalar(kind) | AttributeKind::Container(kind) => kind,
        }
    }
}

/// An event's top-level members as validation reads them: a parsed event's object, or the
/// members of a sketch ([`EventSketch`]), so both are held to the same rules.
pub(crate) trait Members {
    /// The member of that name (the last one, as a parse keeps it).
    fn member(&self, name: &str) -> Option<AttributeKind<'_>>;
    /// Every member, once per name.
    fn each(&self) -> impl Iterator<Item = (&str, AttributeKind<'_>)>;
}

impl Members for Map<String, Value> {
    fn member(&self, name: &str) -> Option<AttributeKind<'_>> {
        self.get(name).map(AttributeKind::of)
    }

    fn each(&self) -> impl Iterator<Item = (&str, AttributeKind<'_>)> {
        self.iter()
            .map(|(name, value)| (name.as_str(), AttributeKind::of(value)))
    }
}

/// Which rules an event is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rules {
    /// An event received: every rule, and JSON data sent as `data_base64` read as `data`.
    Received,
    /// An event to be sent as it is written (`send`): every rule, nothing read differently.
    AsWritten,
    /// An event stored in a run by an earlier version, read back: the rules it was accepted
    /// under (its attributes' characters, `data_base64`'s text, the extensions' names and
    /// numbers were not checked then), so a run in flight across an upgrade is not lost.
    Stored,
}

/// The rules of a CloudEvent 1.0 in structured JSON mode, over its top-level members.
pub(crate) fn validate(members: &impl Members) -> Result<(), EventError> {
    validate_with(members, Rules::Received)
}

fn validate_with(members: &impl Members, rules: Rules) -> Result<(), EventError> {
    let received = rules != Rules::Stored;
    for name in REQUIRED {
        match members.member(name) {
            None | Some(AttributeKind::Null) => return Err(EventError::MissingAttribute(name)),
            Some(AttributeKind::String("")) => return Err(invalid(name, "must not be empty")),
            Some(AttributeKind::String(_)) => {}
            Some(other) => {
                return Err(invalid(
                    name,
                    &format!("must be a string, found {}", other.name()),
                ));
            }
        }
    }
    let spec_version = match members.member("specversion") {
        Some(AttributeKind::String(text)) => text,
        _ => "",
    };
    if spec_version != "1.0" {
        return Err(EventError::UnsupportedSpecVersion(spec_version.to_string()));
    }
    for name in OPTIONAL_STRINGS {
        if let Some(other) = members
            .member(name)
            .filter(|kind| !matches!(kind, AttributeKind::String(_) | AttributeKind::Null))
        {
            return Err(invalid(
                name,
                &format!("must be a string, found {}", other.name()),
            ));
        }
    }
    if received {
        check_optional_values(members)?;
    }
    // A null member is an unset one (JSON format, 2.2).
    let base64 = members.member("data_base64");
    let set =
        |member: Option<AttributeKind<'_>>| !matches!(member, None | Some(AttributeKind::Null));
    if set(base64) && set(members.member("data")) {
        return Err(invalid(
            "data_base64",
            "cannot be used together with \"data\"",
        ));
    }
    match base64 {
        None | Some(AttributeKind::Null) => {}
        Some(AttributeKind::String(text)) if is_base64(text) || !received => {}
        Some(AttributeKind::String(_)) => {
            return Err(invalid(
                "data_base64",
                "is not base64 (RFC 4648: A-Z, a-z, 0-9, + and /, padded with = to a \
                 multiple of 4 characters)",
            ));
        }
        Some(other) => {
            return Err(invalid(
                "data_base64",
                &format!("must be a string, found {}", other.name()),
            ));
        }
    }
    for (name, attribute) in members.each() {
        // The spec's String type disallows control characters and noncharacters. Refusing
        // them also keeps run names apart: a run is named from `source` and `id` joined by NULs.
        if let AttributeKind::String(text) = attribute
            && received
            && name != "data"
            && let Some((at, disallowed)) = disallowed_character(text)
        {
            return Err(invalid(
                name,
                &format!(
                    "holds U+{:04X} at character {}: CloudEvents attribute strings must not \
                     hold control characters or noncharacters",
                    u32::from(disallowed),
                    at + 1
                ),
            ));
        }
        if REQUIRED.contains(&name)
            || OPTIONAL_STRINGS.contains(&name)
            || name == "data"
            || name == "data_base64"
        {
            continue;
        }
        if (name.is_empty() && received)
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(invalid(
                name,
                "is not a valid extension name (lower-case letters and digits only)",
            ));
        }
        if let AttributeKind::Container(kind) = attribute {
            return Err(invalid(
                name,
                &format!("must be a string, number or boolean, found {kind}"),
            ));
        }
        if attribute == (AttributeKind::Number { integer: false }) && received {
            return Err(invalid(
                name,
                "is a number that is not an integer from -2147483648 to 2147483647 (the \
                 CloudEvents Integer type; send other numbers as strings)",
            ));
        }
    }
    Ok(())
}

/// The optional attributes' values, when set: none empty (the spec: "if present, MUST be a
/// non-empty string"), and `time` a timestamp (RFC 3339), as the SDKs Keptn's services used
/// read them.
fn check_optional_values(members: &impl Members) -> Result<(), EventError> {
    for name in OPTIONAL_STRINGS {
        match members.member(name) {
            Some(AttributeKind::String("")) => {
                return Err(invalid(name, "must not be empty when it is set"));
            }
            Some(AttributeKind::String(time))
                if name == "time" && time.parse::<jiff::Timestamp>().is_err() =>
            {
                return Err(invalid(
                    name,
                    &format!(
                        "is not an RFC 3339 timestamp with an offset (such as \
                         2026-12-01T10:00:00.000Z, at most nine digits of a second): {:?}",
                        shown_prefix(time)
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A value as an error shows it: its first 40 characters, then `…`.
fn shown_prefix(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Whether a JSON value is a number the CloudEvents Integer type holds: a whole number from
/// -2147483648 to 2147483647, however written (`100`, `100.0` and `1e2` are one number).
pub(crate) fn is_integer(value: &Value) -> bool {
    match value.as_i64() {
        Some(number) => i32::try_from(number).is_ok(),
        None => value.as_f64().is_some_and(|number| {
            number.trunc() == number
                && (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&number)
        }),
    }
}

/// The JSON value of `bytes`; the error says the line and column where the JSON breaks.
pub(crate) fn json_value(bytes: &[u8]) -> Result<Value, EventError> {
    serde_json::from_slice(bytes).map_err(|e| EventError::InvalidJson {
        reason: e.to_string(),
        line: e.line(),
        column: e.column(),
    })
}

/// The media type of a `Content-Type` or `datacontenttype`: without its parameters, as sent
/// (compare it ignoring case).
pub(crate) fn media_type_of(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// Whether a media type (without parameters, lower case) says JSON: `application/json`,
/// `text/json` or a `+json` suffix.
pub(crate) fn is_json_media(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json") || media_type == "text/json"
}

/// `data_base64` that holds JSON becomes `data`: a JSON `datacontenttype`, or none (which the
/// JSON format reads as `application/json`), says the bytes are JSON, and receivers read them
/// as such (Keptn's service, through the Go SDK's `DataAs`), wherever the sender put them
/// (Python's SDK sends bytes as `data_base64` whatever their type). Bytes a JSON
/// `datacontenttype` claims that are not JSON are refused; without a `datacontenttype` they stay
/// as they are, binary data.
/// How many times its size JSON data in `data_base64` may take once read: past it the data is
/// refused (with a JSON `datacontenttype`) or kept as bytes (without one), as the body's own JSON
/// is counted in the receiver's budget and this is not.
pub const MAX_BASE64_JSON_GROWTH: usize = 32;

fn read_json_data(object: &mut Map<String, Value>) -> Result<(), EventError> {
    use base64::Engine as _;
    let Some(Value::String(text)) = object.get("data_base64") else {
        return Ok(());
    };
    if text.is_empty() {
        // No data, whatever its type, as an empty body is in binary mode.
        object.remove("data_base64");
        return Ok(());
    }
    let content_type = match object.get("datacontenttype") {
        Some(Value::String(content_type)) => Some(content_type.as_str()),
        _ => None,
    };
    let media = content_type.map(|content_type| media_type_of(content_type).to_ascii_lowercase());
    if media.as_deref().is_some_and(|media| !is_json_media(media)) {
        return Ok(());
    }
    // The text is checked by `validate_with`; bits past the last byte (`AB==`) are ignored,
    // as that check does.
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let Ok(bytes) = LENIENT.decode(text) else {
        return Ok(());
    };
    // Limited to what a receiver counts for it (`ingest::parse::read_bytes_bound`).
    let bound = crate::json_text::value_bytes_bound(&bytes);
    if bound > bytes.len().saturating_mul(MAX_BASE64_JSON_GROWTH) {
        return match content_type {
            None => Ok(()),
            Some(_) => Err(invalid(
                "data_base64",
                &format!(
                    "holds JSON of many small values ({} bytes that would take up to {bound} \
                     bytes of memory once read, more than {MAX_BASE64_JSON_GROWTH} times their \
                     size): send it as `data`",
                    bytes.len()
                ),
            )),
        };
    }
    match (serde_json::from_slice::<Value>(&bytes), content_type) {
        (Ok(data), _) => {
            object.remove("data_base64");
            object.insert("data".into(), data);
            Ok(())
        }
        (Err(_), None) => Ok(()),
        (Err(error), Some(content_type)) => Err(invalid(
            "data_base64",
            &format!(
                "does not hold JSON, which its datacontenttype {content_type:?} says it is: \
                 {error}"
            ),
        )),
    }
}

const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];
const OPTIONAL_STRINGS: [&str; 4] = ["datacontenttype", "dataschema", "subject", "time"];

impl CloudEvent {
    /// The same event under another id: an outgoing event keeps the id its run recorded for it
    /// (one recorded by an earlier version of the operator, say), so every attempt carries one.
    pub fn with_id(mut self, id: &str) -> Self {
        if let Value::Object(event) = &mut self.0
            && !id.is_empty()
        {
            event.insert("id".into(), json!(id));
        }
        self
    }

    /// Parses and validates one event in structured JSON mode.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        Self::from_value(json_value(bytes)?)
    }

    /// Parses and validates one event as [`CloudEvent::from_json`] does, keeping it as written
    /// (JSON data sent as `data_base64` stays there): what `send` posts.
    pub fn from_json_as_written(bytes: &[u8]) -> Result<Self, EventError> {
        Self::from_value_with(json_value(bytes)?, Rules::AsWritten)
    }

    /// Validates a JSON value as a CloudEvent 1.0.
    pub fn from_value(value: Value) -> Result<Self, EventError> {
        Self::from_value_with(value, Rules::Received)
    }

    fn from_value_with(mut value: Value, rules: Rules) -> Result<Self, EventError> {
        let Value::Object(object) = &mut value else {
            return Err(EventError::NotAnObject(json_kind(&value)));
        };
        validate_with(object, rules)?;
        // A stored event was read so when it was received (or, by an older version, not at
        // all, and its run goes on as it was planned).
        if rules == Rules::Received {
            read_json_data(object)?;
            if nests_deeper_than(&value, MAX_EVENT_NESTING) {
                return Err(EventError::TooDeep);
            }
        }
        Ok(CloudEvent(value))
    }

    /// The whole event as JSON (what JSONPaths are evaluated against).
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    fn str_attribute(&self, name: &str) -> &str {
        self.0.get(name).and_then(Value::as_str).unwrap_or_default()
    }

    pub fn id(&self) -> &str {
        self.str_attribute("id")
    }

    pub fn source(&self) -> &str {
        self.str_attribute("source")
    }

    pub fn event_type(&self) -> &str {
        self.str_attribute("type")
    }

    pub fn data(&self) -> Option<&Value> {
        self.0.get("data")
    }

    /// A string field of `data` (Keptn's `project`, `stage`, `service`), without copying.
    pub fn data_str(&self, name: &str) -> Option<&str> {
        self.data()?.get(name)?.as_str()
    }

    /// An extension attribute as text (numbers and booleans by their JSON text).
    pub fn extension(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Keptn's fields of the event.
    pub fn keptn(&self) -> KeptnFields {
        let data_str = |name: &str| self.data_str(name).map(str::to_string);
        let labels = self
            .data()
            .and_then(|d| d.get("labels"))
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| {
                        let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        (k.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default();
        KeptnFields {
            project: data_str("project"),
            stage: data_str("stage"),
            service: data_str("service"),
            labels,
            keptn_context: self.extension("shkeptncontext"),
            git_commit_id: self.extension("gitcommitid"),
        }
    }
}

/// Whether `text` is base64 as RFC 4648 writes it (padded, no line breaks).
fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len().is_multiple_of(4)
        && text.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The first character of an attribute's string that CloudEvents' type system disallows
/// (U+0000–U+001F, U+007F–U+009F, Unicode's noncharacters), with its place in characters.
fn disallowed_character(text: &str) -> Option<(usize, char)> {
    // Most attributes are printable ASCII: one pass over the bytes decides them (without an
    // early exit, so that it runs on whole words).
    if !text
        .bytes()
        .fold(false, |outside, b| outside | (b.wrapping_sub(0x20) >= 0x5f))
    {
        return None;
    }
    text.chars()
        .enumerate()
        .find(|(_, c)| is_disallowed_in_attributes(*c))
}

/// Whether an attribute's string may not hold `c`: a control character or a Unicode
/// noncharacter, which the CloudEvents String type disallows.
pub(crate) fn is_disallowed_in_attributes(c: char) -> bool {
    let code = u32::from(c);
    c.is_control() || (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

fn invalid(name: &str, reason: &str) -> EventError {
    EventError::InvalidAttribute {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The Keptn fields of an event: from `data`, and the `shkeptncontext` and `gitcommitid`
/// extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptnFields {
    pub project: Option<String>,
    pub stage: Option<String>,
    pub service: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub keptn_context: Option<String>,
    pub git_commit_id: Option<String>,
}

/// `sh.keptn.event.test.triggered` → (`sh.keptn.event`, `test`).
pub fn split_triggered_type(event_type: &str) -> Option<(&str, &str)> {
    let stem = event_type.strip_suffix(".triggered")?;
    let (prefix, task) = stem.rsplit_once('.')?;
    (!task.is_empty() && !prefix.is_empty()).then_some((prefix, task))
}

/// Keptn's events that are not a task's (`sh.keptn.event.<task>.<kind>`, five parts): a
/// sequence's (`sh.keptn.event.dev.delivery.triggered`), a project's or a service's
/// (`sh.keptn.event.service.create.finished`), with why they start nothing. Keptn's own
/// integrations (its SDK) take no such event, nor did Keptn's job-executor-service; a glob such
/// as `sh.keptn.event.*.triggered` would match them (`*` crosses dots), run the action once more
/// for each stage, and answer a sequence's event with `.started` and `.finished` of its own.
pub fn not_a_keptn_task(event_type: &str) -> Option<String> {
    let rest = event_type.strip_prefix("sh.keptn.event.")?;
    (rest.split('.').count() != 2).then(|| {
        format!(
            "{event_type} is not a Keptn task's event (sh.keptn.event.<task>.<kind>): Keptn's \
             sequence, project and service events start no action"
        )
    })
}

/// Which outgoing event of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskEventKind {
    Started,
    Finished,
}

impl TaskEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskEventKind::Started => "started",
            TaskEventKind::Finished => "finished",
        }
    }
}

/// The id of an outgoing event: the same for the same run and kind in every process, so a
/// receiver can drop a repeated delivery. The run's uid is part of it: two installations that
/// act on one event store runs of the same name, and their events must not share ids (a bus
/// that drops duplicates by id, as NATS JetStream does, would drop the second's).
pub fn outgoing_event_id(run_uid: &str, run_name: &str, kind: TaskEventKind) -> String {
    if run_uid.is_empty() {
        // A run not stored (`render`'s preview).
        return derived_id(&format!("{run_name}/{}", kind.as_str()));
    }
    derived_id(&format!("{run_uid}/{run_name}/{}", kind.as_str()))
}

/// An event id derived from `seed` alone (the first 16 bytes of its SHA-256), shaped like a
/// UUID as Keptn's event ids are: every process derives the same one.
pub fn derived_id(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Succeeded,
    Errored,
}

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub message: String,
    /// For `test` tasks: when the first task started and the last one ended.
    pub test_window: Option<(jiff::Timestamp, jiff::Timestamp)>,
    /// What the tasks published, by task name and output name (`data.outputs` when any).
    pub outputs: BTreeMap<String, BTreeMap<String, String>>,
}

/// Common inputs of the outgoing events of one run.
#[derive(Clone, Debug)]
pub struct OutgoingContext<'a> {
    pub triggered: &'a CloudEvent,
    pub run_name: &'a str,
    /// The JobRun's uid (empty for a run not stored, as `render` previews).
    pub run_uid: &'a str,
    /// The `source` of outgoing events (an installation setting).
    pub source: &'a str,
    pub time: jiff::Timestamp,
}

/// The `.started` event for a `.triggered` event; `None` for other event types, which get no
/// replies.
pub fn build_started(context: &OutgoingContext<'_>) -> Option<CloudEvent> {
    let (prefix, task) = split_triggered_type(context.triggered.event_type())?;
    Some(build_reply(
        context,
        &format!("{prefix}.{task}"),
        task,
        TaskEventKind::Started,
        |_| {},
    ))
}

/// The `.finished` event for a `.triggered` event; `None` for other event types.
pub fn build_finished(context: &OutgoingContext<'_>, outcome: &Outcome) -> Option<CloudEvent> {
    let (prefix, task) = split_triggered_type(context.triggered.event_type())?;
    let stem = format!("{prefix}.{task}");
    Some(finished_reply(context, &stem, task, outcome))
}

/// The event a webhook notification carries: the run's `.started` (without an outcome) or
/// `.finished`, as the sink gets it; for an event that is not `.triggered`, the same with its
/// whole type before `.started` / `.finished` (`dev.example.nightly.finished`).
pub fn build_notice(context: &OutgoingContext<'_>, outcome: Option<&Outcome>) -> CloudEvent {
    let event_type = context.triggered.event_type();
    let (stem, task) = match split_triggered_type(event_type) {
        Some((prefix, task)) => (format!("{prefix}.{task}"), task),
        None => (event_type.to_string(), ""),
    };
    match outcome {
        None => build_reply(context, &stem, task, TaskEventKind::Started, |_| {}),
        Some(outcome) => finished_reply(context, &stem, task, outcome),
    }
}

fn finished_reply(
    context: &OutgoingContext<'_>,
    stem: &str,
    task: &str,
    outcome: &Outcome,
) -> CloudEvent {
    build_reply(context, stem, task, TaskEventKind::Finished, |data| {
        let (status, result) = match outcome.status {
            Status::Succeeded => ("succeeded", "pass"),
            Status::Errored => ("errored", "fail"),
        };
        data.insert("status".into(), json!(status));
        data.insert("result".into(), json!(result));
        data.insert("message".into(), json!(outcome.message));
        if !outcome.outputs.is_empty() {
            data.insert("outputs".into(), json!(outcome.outputs));
        }
        if let Some((start, end)) = outcome.test_window {
            data.insert(
                "test".into(),
                json!({"start": start.to_string(), "end": end.to_string()}),
            );
        }
    })
}

/// A reply of type `{stem}.started` or `{stem}.finished`; `task` is the Keptn task (`test`
/// replies carry the test window).
fn build_reply(
    context: &OutgoingContext<'_>,
    stem: &str,
    task: &str,
    kind: TaskEventKind,
    fill: impl FnOnce(&mut Map<String, Value>),
) -> CloudEvent {
    let triggered = context.triggered;
    let keptn = triggered.keptn();
    let mut data = Map::new();
    for (name, value) in [
        ("project", &keptn.project),
        ("stage", &keptn.stage),
        ("service", &keptn.service),
    ] {
        if let Some(value) = value {
            data.insert(name.into(), json!(value));
        }
    }
    if !keptn.labels.is_empty() {
        data.insert("labels".into(), json!(keptn.labels));
    }
    // For `test` tasks, fill sets data.test; other tasks never carry it.
    let test_task = task == "test";
    fill(&mut data);
    if !test_task {
        data.remove("test");
    }
    let mut event = Map::new();
    event.insert("specversion".into(), json!("1.0"));
    event.insert(
        "id".into(),
        json!(outgoing_event_id(context.run_uid, context.run_name, kind)),
    );
    event.insert("source".into(), json!(context.source));
    event.insert("type".into(), json!(format!("{stem}.{}", kind.as_str())));
    event.insert("time".into(), json!(context.time.to_string()));
    event.insert("datacontenttype".into(), json!("application/json"));
    event.insert("triggeredid".into(), json!(triggered.id()));
    for name in REPLY_EXTENSIONS {
        if let Some(value) = triggered.extension(name) {
            event.insert(name.into(), json!(value));
        }
    }
    // As Keptn's SDK sends every event: the version of Keptn's event spec it follows.
    event
        .entry("shkeptnspecversion")
        .or_insert_with(|| json!(KEPTN_SPEC_VERSION));
    event.insert("data".into(), Value::Object(data));
    CloudEvent(Value::Object(event))
}

#[cfg(test)]
mod tests {
    /// What `keep_reply_fields` keeps, by way of the whole parsed value: the reference it is
    /// compared with.
    fn reply_fields_of_the_whole(text: &str) -> String {
        let Ok(Value::Object(mut event)) = serde_json::from_str::<Value>(text) else {
            return text.to_string();
        };
        let data = event.remove("data");
        event.retain(|name, _| {
            REQUIRED.contains(&name.as_str()) || REPLY_EXTENSIONS.contains(&name.as_str())
        });
        if let Some(Value::Object(mut data)) = data {
            data.retain(|name, _| KEPTN_DATA_FIELDS.contains(&name.as_str()));
            event.insert("data".into(), Value::Object(data));
        }
        Value::Object(event).to_string()
    }

    /// Replies are built from Keptn's fields of the event (`keptn()`): trimming keeps every one
    /// of them, though the two name them apart.
    #[test]
    fn a_trimmed_event_keeps_every_keptn_field() {
        let event = CloudEvent::from_value(json!({
            "specversion": "1.0", "id": "1", "source": "s", "type": "sh.keptn.event.test.triggered",
            "shkeptncontext": "ctx", "gitcommitid": "abc", "shkeptnspecversion": "0.2.4",
            "other": "dropped",
            "data": {"project": "p", "stage": "dev", "service": "carts",
                     "labels": {"a": "b", "n": 1}, "padding": "dropped"}
        }))
        .unwrap();
        let mut text = EventText::from(&event);
        text.keep_reply_fields();
        let kept = text.parse().unwrap();
        assert_eq!(kept.keptn(), event.keptn());
        assert_ne!(kept.keptn(), KeptnFields::default());
        assert_eq!(
            kept.extension("shkeptnspecversion").as_deref(),
            Some("0.2.4")
        );
        assert!(!text.as_str().contains("dropped"), "{}", text.as_str());
    }

    #[test]
    fn the_reply_fields_kept_are_those_of_the_whole_event() {
        for text in [
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","shkeptncontext":"c","other":{"a":[1,2]},"data":{"project":"p","labels":{"a":"b"},"padding":"xx","stage":"dev"}}"#,
            r#"{"data":{"project":"first"},"id":"1","data":{"project":"last","x":1},"id":"2"}"#,
            r#"{"id":"1","data":"text"}"#,
            r#"{"id":"1","data":[{"project":"p"}]}"#,
            r#"{"id":"1","data":null,"gitcommitid":"abc"}"#,
            r#"{"id":"1"}"#,
            r#"{"id":"\u00e9\"","data":{"pro\u006aect":"p","labels":{"k":"\u00e9"}}}"#,
            r#"["not", "an", "object"]"#,
            "null",
        ] {
            let mut kept = EventText(RawValue::from_string(text.to_string()).unwrap());
            kept.keep_reply_fields();
            assert_eq!(kept.as_str(), reply_fields_of_the_whole(text), "{text}");
        }
    }

    use super::*;

    #[test]
    fn a_runs_event_is_kept_as_its_text_and_parsed_when_read() {
        let event = triggered();
        let text = EventText::from(&event);
        assert_eq!(text.parse().unwrap(), event);
        assert_eq!(text.attribute("type").as_deref(), Some(event.event_type()));
        assert_eq!(text.attribute("id").as_deref(), Some(event.id()));
        assert_eq!(text.attribute("nothere"), None);
        // Read as a parse reads it: an escaped name is the name, and a repeated member's last
        // occurrence is the member.
        let repeated: EventText =
            serde_json::from_str(r#"{"type": "a", "t\u0079pe": "b", "id": "x"}"#).unwrap();
        assert_eq!(repeated.attribute("type").as_deref(), Some("b"));
        // Written into a JobRun as the JSON object it is, read back from a JSON text and from a
        // JSON value (what tests and kube's clients do) alike.
        let object = serde_json::to_value(&text).unwrap();
        assert_eq!(&object, event.as_value());
        let from_text: EventText = serde_json::from_str(&object.to_string()).unwrap();
        let from_value: EventText = serde_json::from_value(object.clone()).unwrap();
        // As the object of a watch event that names its type last (buffered by serde first).
        let watched: kube::core::WatchEvent<EventText> =
            serde_json::from_value(json!({"object": object, "type": "ADDED"})).unwrap();
        let kube::core::WatchEvent::Added(watched) = watched else {
            panic!("an added object");
        };
        assert_eq!(watched, from_text);
        assert_eq!(from_text.parse().unwrap(), event);
        assert_eq!(from_value.parse().unwrap(), event);
        // An event that is not a CloudEvent is refused when it is read, not when it is listed.
        let invalid: EventText = serde_json::from_str(r#"{"id": "x"}"#).unwrap();
        assert_eq!(
            invalid.parse().unwrap_err(),
            EventError::MissingAttribute("specversion")
        );
        let mut forgotten = text;
        forgotten.forget();
        assert_eq!(forgotten.as_str(), "null");
        assert_eq!(forgotten.attribute("type"), None);
    }

    fn triggered() -> CloudEvent {
        CloudEvent::from_value(json!({
            "specversion": "1.0",
            "id": "f2b878d3-03c0-4e8f-bc3f-454bc1b3d79d",
            "source": "shipyard-controller",
            "type": "sh.keptn.event.test.triggered",
            "shkeptncontext": "a3e5f16d-8888-4720-82c7-6995062905c1",
            "gitcommitid": "0f3a8c1",
            "data": {
                "project": "sockshop", "stage": "dev", "service": "carts",
                "labels": {"team": "a", "build": 7},
                "test": {"teststrategy": "locust"}
            }
        }))
        .unwrap()
    }

    fn context(event: &CloudEvent) -> OutgoingContext<'_> {
        OutgoingContext {
            triggered: event,
            run_name: "test-0123456789abcdef0123",
            run_uid: "5d0c7c4e-8a4f-4a57-9d7e-2f8b8e1c0a11",
            source: "job-executor",
            time: "2026-11-21T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn reads_keptn_fields() {
        let keptn = triggered().keptn();
        assert_eq!(keptn.project.as_deref(), Some("sockshop"));
        assert_eq!(keptn.stage.as_deref(), Some("dev"));
        assert_eq!(keptn.service.as_deref(), Some("carts"));
        assert_eq!(keptn.labels["team"], "a");
        assert_eq!(keptn.labels["build"], "7");
        assert_eq!(
            keptn.keptn_context.as_deref(),
            Some("a3e5f16d-8888-4720-82c7-6995062905c1")
        );
        assert_eq!(keptn.git_commit_id.as_deref(), Some("0f3a8c1"));
    }

    /// A run stored by an earlier version is read back under the rules it was accepted with:
    /// what this version refuses on receipt does not lose a run in flight across an upgrade.
    #[test]
    fn a_stored_event_is_read_under_the_rules_it_was_accepted_with() {
        let stored = json!({
            "specversion": "1.0", "id": "a\u{0}b", "source": "s", "type": "t",
            "data_base64": "not base64", "": "x", "ratio": 1.5,
        });
        let text: EventText = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(text.parse().unwrap().id(), "a\u{0}b");
        assert!(CloudEvent::from_value(stored).is_err());
        // The rules it was accepted under still hold.
        let text: EventText =
            serde_json::from_value(json!({"specversion": "1.0", "source": "s", "type": "t"}))
                .unwrap();
        assert_eq!(
            text.parse().unwrap_err(),
            EventError::MissingAttribute("id")
        );
    }

    #[test]
    fn json_data_sent_as_base64_is_read_as_data() {
        use base64::Engine as _;
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let event = |content_type: Option<&str>, data_base64: &str| {
            let mut event = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                                   "data_base64": data_base64});
            if let Some(content_type) = content_type {
                event["datacontenttype"] = json!(content_type);
            }
            CloudEvent::from_value(event)
        };
        let json_bytes = encode(br#"{"project":"sockshop","stage":"dev"}"#);
        for content_type in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("application/vnd.keptn+json"),
            Some("text/json"),
        ] {
            let read = event(content_type, &json_bytes).unwrap();
            assert_eq!(
                read.data_str("project"),
                Some("sockshop"),
                "{content_type:?}"
            );
            assert!(read.as_value().get("data_base64").is_none());
        }
        // Binary data stays binary: bytes that are not JSON without a type, or any bytes of
        // another type.
        let binary = encode(&[0, 1, 2, 255]);
        for (content_type, data_base64) in [
            (None, &binary),
            (Some("application/octet-stream"), &json_bytes),
            (Some("text/plain"), &json_bytes),
        ] {
            let read = event(content_type, data_base64).unwrap();
            assert_eq!(read.as_value()["data_base64"], data_base64.as_str());
            assert!(read.data().is_none(), "{content_type:?}");
        }
        // No bytes are no data; bits past the last byte are ignored.
        for content_type in [Some("application/json"), Some("text/plain"), None] {
            let empty = event(content_type, "").unwrap();
            assert!(empty.data().is_none() && empty.as_value().get("data_base64").is_none());
        }
        assert_eq!(event(None, "MQ==").unwrap().as_value()["data"], 1);
        assert_eq!(event(None, "MR==").unwrap().as_value()["data"], 1);
        // JSON of many tiny values takes a hundred times its size once read: refused with a
        // JSON type, kept as bytes without one.
        let tiny = format!("[{}]", vec![r#"{"":0}"#; 1000].join(","));
        let tiny_base64 = encode(tiny.as_bytes());
        assert_eq!(
            event(Some("application/json"), &tiny_base64)
                .unwrap_err()
                .to_string(),
            format!(
                "attribute \"data_base64\" holds JSON of many small values ({} bytes that would \
                 take up to {} bytes of memory once read, more than 32 times their size): send \
                 it as `data`",
                tiny.len(),
                crate::json_text::value_bytes_bound(tiny.as_bytes())
            )
        );
        let kept = event(None, &tiny_base64).unwrap();
        assert_eq!(kept.as_value()["data_base64"], tiny_base64.as_str());
        // Kept as written when read back from a run, or sent by `send`.
        let written = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                             "data_base64": json_bytes});
        let as_written = CloudEvent::from_json_as_written(written.to_string().as_bytes());
        assert_eq!(as_written.unwrap().as_value(), &written);
        let stored: EventText = serde_json::from_str(&written.to_string()).unwrap();
        let stored = stored.parse().unwrap();
        assert_eq!(stored.as_value(), &written);
        assert_eq!(
            event(Some("application/json"), &binary)
                .unwrap_err()
                .to_string(),
            "attribute \"data_base64\" does not hold JSON, which its datacontenttype \
             \"application/json\" says it is: expected value at line 1 column 1"
        );
    }

    #[test]
    fn takes_the_times_senders_write() {
        // Keptn's Go services, the Python SDK, an offset, a lower-case separator.
        for time in [
            "2026-12-01T10:00:00.000Z",
            "2026-12-01T10:00:00.123456+00:00",
            "2026-12-01T11:00:00+01:00",
            "2026-12-01t10:00:00z",
        ] {
            let event = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                "time": time});
            let parsed = CloudEvent::from_value(event);
            assert!(parsed.is_ok(), "{time}: {parsed:?}");
        }
    }

    #[test]
    fn refuses_invalid_events_with_reasons() {
        let cases = [
            (
                json!([]),
                "a CloudEvent must be a JSON object, found an array",
            ),
            (
                json!({"specversion": "1.0", "source": "s", "type": "t"}),
                "missing required attribute \"id\"",
            ),
            (
                json!({"specversion": "1.0", "id": "", "source": "s", "type": "t"}),
                "attribute \"id\" must not be empty",
            ),
            (
                json!({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}),
                "unsupported specversion \"0.3\": only \"1.0\" is accepted",
            ),
            (
                json!({"specversion": "1.0", "id": 1, "source": "s", "type": "t"}),
                "attribute \"id\" must be a string, found a number",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "Bad-Ext": "x"}),
                "attribute \"Bad-Ext\" is not a valid extension name (lower-case letters and digits only)",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {}, "data_base64": "eA=="}),
                "attribute \"data_base64\" cannot be used together with \"data\"",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": 5}),
                "attribute \"data_base64\" must be a string, found a number",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "eA="}),
                "attribute \"data_base64\" is not base64 (RFC 4648: A-Z, a-z, 0-9, + and /, padded with = to a multiple of 4 characters)",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "e$=="}),
                "attribute \"data_base64\" is not base64 (RFC 4648: A-Z, a-z, 0-9, + and /, padded with = to a multiple of 4 characters)",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "": "x"}),
                "attribute \"\" is not a valid extension name (lower-case letters and digits only)",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "subject": 5}),
                "attribute \"subject\" must be a string, found a number",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "subject": ""}),
                "attribute \"subject\" must not be empty when it is set",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "yesterday"}),
                "attribute \"time\" is not an RFC 3339 timestamp with an offset (such as \
                 2026-12-01T10:00:00.000Z, at most nine digits of a second): \"yesterday\"",
            ),
            (
                // A local time says no instant.
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "2026-12-01T10:00:00"}),
                "attribute \"time\" is not an RFC 3339 timestamp with an offset (such as \
                 2026-12-01T10:00:00.000Z, at most nine digits of a second): \"2026-12-01T10:00:00\"",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "x".repeat(100)}),
                "attribute \"time\" is not an RFC 3339 timestamp with an offset (such as \
                 2026-12-01T10:00:00.000Z, at most nine digits of a second): \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\"",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "ext": {"a": 1}}),
                "attribute \"ext\" must be a string, number or boolean, found an object",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "ext": 1.5}),
                "attribute \"ext\" is a number that is not an integer from -2147483648 to 2147483647 (the CloudEvents Integer type; send other numbers as strings)",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "ext": 2_147_483_648_i64}),
                "attribute \"ext\" is a number that is not an integer from -2147483648 to 2147483647 (the CloudEvents Integer type; send other numbers as strings)",
            ),
            (
                json!({"specversion": "1.0", "id": "1\u{0}2", "source": "s", "type": "t"}),
                "attribute \"id\" holds U+0000 at character 2: CloudEvents attribute strings must not hold control characters or noncharacters",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "é\u{85}", "type": "t"}),
                "attribute \"source\" holds U+0085 at character 2: CloudEvents attribute strings must not hold control characters or noncharacters",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "subject": "a\nb"}),
                "attribute \"subject\" holds U+000A at character 2: CloudEvents attribute strings must not hold control characters or noncharacters",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "ext": "\u{FFFF}"}),
                "attribute \"ext\" holds U+FFFF at character 1: CloudEvents attribute strings must not hold control characters or noncharacters",
            ),
            (
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "ext": [1]}),
                "attribute \"ext\" must be a string, number or boolean, found an array",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(
                CloudEvent::from_value(value).unwrap_err().to_string(),
                message
            );
        }
        // An optional attribute may be null (not set), an extension a number or a boolean.
        CloudEvent::from_value(json!({
            "specversion": "1.0", "id": "1", "source": "s", "type": "t",
            "subject": null, "time": null, "count": 3, "flag": true,
        }))
        .unwrap();
        // Integers at the ends of the spec's range, however written.
        for text in ["-2147483648", "2147483647", "100.0", "1e2", "-0"] {
            let event = format!(
                r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","count":{text}}}"#
            );
            CloudEvent::from_json(event.as_bytes()).unwrap();
        }
        let error = CloudEvent::from_json(b"{\"id\": ").unwrap_err();
        assert!(
            matches!(error, EventError::InvalidJson { line: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn splits_triggered_types() {
        assert_eq!(
            split_triggered_type("sh.keptn.event.test.triggered"),
            Some(("sh.keptn.event", "test"))
        );
        assert_eq!(split_triggered_type("sh.keptn.event.test.finished"), None);
        assert_eq!(split_triggered_type("triggered"), None);
        // Both parts must be there.
        assert_eq!(split_triggered_type(".test.triggered"), None);
        assert_eq!(split_triggered_type("sh.keptn.event..triggered"), None);
    }

    #[test]
    fn keptn_events_that_are_not_a_tasks_are_told() {
        assert_eq!(not_a_keptn_task("sh.keptn.event.test.triggered"), None);
        assert_eq!(not_a_keptn_task("sh.keptn.event.deployment.finished"), None);
        // Not Keptn's: whatever the config says.
        assert_eq!(not_a_keptn_task("com.example.build.done.now"), None);
        for event_type in [
            "sh.keptn.event.dev.delivery.triggered",
            "sh.keptn.event.service.create.finished",
            "sh.keptn.event.triggered",
        ] {
            let reason = not_a_keptn_task(event_type).unwrap_or_default();
            assert!(
                reason.starts_with(&format!("{event_type} is not a Keptn task's event")),
                "{event_type}: {reason}"
            );
        }
    }

    #[test]
    fn started_event_answers_the_triggered_one() {
        let event = triggered();
        let started = build_started(&context(&event)).unwrap();
        let value = started.as_value();
        assert_eq!(value["type"], "sh.keptn.event.test.started");
        assert_eq!(value["triggeredid"], "f2b878d3-03c0-4e8f-bc3f-454bc1b3d79d");
        assert_eq!(
            value["shkeptncontext"],
            "a3e5f16d-8888-4720-82c7-6995062905c1"
        );
        assert_eq!(value["gitcommitid"], "0f3a8c1");
        assert_eq!(value["source"], "job-executor");
        assert_eq!(value["time"], "2026-11-21T10:00:00Z");
        assert_eq!(
            value["data"],
            json!({"project": "sockshop", "stage": "dev", "service": "carts",
                   "labels": {"team": "a", "build": "7"}})
        );
        // The built event is itself a valid CloudEvent.
        CloudEvent::from_value(value.clone()).unwrap();
    }

    #[test]
    fn finished_event_carries_status_result_message_and_test_window() {
        let event = triggered();
        let outcome = Outcome {
            status: Status::Errored,
            message: "Task 'smoke' failed: BackoffLimitExceeded".into(),
            test_window: Some((
                "2026-11-21T10:00:01Z".parse().unwrap(),
                "2026-11-21T10:02:03Z".parse().unwrap(),
            )),
            outputs: BTreeMap::from([(
                "build".to_string(),
                BTreeMap::from([("version".to_string(), "1.2.3".to_string())]),
            )]),
        };
        let finished = build_finished(&context(&event), &outcome).unwrap();
        let data = &finished.as_value()["data"];
        assert_eq!(data["outputs"], json!({"build": {"version": "1.2.3"}}));
        assert_eq!(finished.as_value()["type"], "sh.keptn.event.test.finished");
        assert_eq!(data["status"], "errored");
        assert_eq!(data["result"], "fail");
        assert_eq!(data["message"], "Task 'smoke' failed: BackoffLimitExceeded");
        assert_eq!(
            data["test"],
            json!({"start": "2026-11-21T10:00:01Z", "end": "2026-11-21T10:02:03Z"})
        );
    }

    #[test]
    fn only_test_tasks_carry_a_test_window() {
        let mut value = triggered().as_value().clone();
        value["type"] = json!("sh.keptn.event.deployment.triggered");
        let event = CloudEvent::from_value(value).unwrap();
        let outcome = Outcome {
            status: Status::Succeeded,
            message: "ok".into(),
            test_window: Some((jiff::Timestamp::UNIX_EPOCH, jiff::Timestamp::UNIX_EPOCH)),
            outputs: BTreeMap::new(),
        };
        let finished = build_finished(&context(&event), &outcome).unwrap();
        assert!(
            finished.as_value()["data"].get("outputs").is_none(),
            "no outputs, no key"
        );
        assert_eq!(finished.as_value()["data"]["status"], "succeeded");
        assert_eq!(finished.as_value()["data"]["result"], "pass");
        assert!(finished.as_value()["data"].get("test").is_none());
    }

    #[test]
    fn non_triggered_events_get_no_replies() {
        let mut value = triggered().as_value().clone();
        value["type"] = json!("sh.keptn.event.deployment.finished");
        let event = CloudEvent::from_value(value).unwrap();
        assert!(build_started(&context(&event)).is_none());
    }

    /// Replies say which version of Keptn's event spec they follow: the `.triggered` event's, or
    /// the one Keptn's SDK writes when it says none.
    #[test]
    fn replies_carry_keptn_s_spec_version() {
        let event = triggered();
        assert_eq!(event.extension("shkeptnspecversion"), None);
        let started = build_started(&context(&event)).unwrap();
        assert_eq!(
            started.extension("shkeptnspecversion").as_deref(),
            Some("0.2.4")
        );
        let mut value = event.as_value().clone();
        value["shkeptnspecversion"] = json!("0.2.3");
        let event = CloudEvent::from_value(value).unwrap();
        let started = build_started(&context(&event)).unwrap();
        assert_eq!(
            started.extension("shkeptnspecversion").as_deref(),
            Some("0.2.3")
        );
    }

    #[test]
    fn outgoing_ids_are_deterministic_and_distinct_per_kind() {
        let a = outgoing_event_id("uid-1", "run-1", TaskEventKind::Started);
        assert_eq!(
            a,
            outgoing_event_id("uid-1", "run-1", TaskEventKind::Started)
        );
        assert_ne!(
            a,
            outgoing_event_id("uid-1", "run-1", TaskEventKind::Finished)
        );
        assert_ne!(
            a,
            outgoing_event_id("uid-1", "run-2", TaskEventKind::Started)
        );
        // Another installation's run of the same name.
        assert_ne!(
            a,
            outgoing_event_id("uid-2", "run-1", TaskEventKind::Started)
        );
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn events_round_trip_through_serde() {
        let event = triggered();
        let text = serde_json::to_string(&event).unwrap();
        let back: CloudEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event);
        assert!(serde_json::from_str::<CloudEvent>("{\"id\": \"x\"}").is_err());
    }
}
