//! An event read only as far as planning it needs. Most events a busy project sends start
//! nothing here (no action listens for their type, or every action that does refuses them), and
//! parsing such an event whole costs more than everything else the receiver does for it. A
//! sketch keeps every top-level member as its text (a string's value borrowed from it), Keptn's
//! fields of `data` (the config lookup reads them) and the other fields of `data` as text.
//! Conditions that read plain paths are decided on that text ([`EventSketch::resolve`]); the
//! event itself (its members and the lookup fields) is built only when asked for.
//!
//! A sketch is read only from text that parses as a whole event would ([`CloudEvent::from_json`]
//! accepts it, with the same value for everything the sketch holds; the members are checked by
//! the same rules, [`super::validate`]), so an answer planned from it is the answer the whole
//! event gets. Where the two could differ (`data` is not an object, it appears twice, a member
//! appears twice or is an object or an array, the text is not valid JSON or not a valid event,
//! `data_base64` is set and may hold JSON the whole event reads as `data`), there is no sketch
//! and the event is parsed whole, which also says what is wrong with it.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{AttributeKind, CloudEvent, Members};

/// The fields of `data` a sketch always holds: what finds the service's config.
pub const LOOKUP_FIELDS: [&str; 3] = ["project", "stage", "service"];

/// The most top-level members a sketch holds (a CloudEvent has a dozen or so); an event with
/// more is parsed whole, so that finding a member by its name stays cheap.
const MOST_MEMBERS: usize = 32;

/// The most fields of `data` a sketch holds besides the lookup fields (a Keptn event's `data`
/// has a dozen or so); an event with more is parsed whole, where the memory its values take is
/// bounded by the budget of bodies in flight: the sketch's list of them is not (a body of many
/// small fields would take several times its size).
const MOST_DATA_FIELDS: usize = 256;

/// An event's top-level members and the fields of its `data`, as text; the event built from
/// them when it is first asked for.
#[derive(Debug)]
pub struct EventSketch<'a> {
    /// The top-level members but `data`, in the order they came, each name once.
    members: Vec<Member<'a>>,
    /// Whether the event has `data` (an object: there is no sketch otherwise).
    data: bool,
    /// Keptn's lookup fields of `data`, by their place in [`LOOKUP_FIELDS`] (the last of each).
    lookup: [Option<Field<'a>>; 3],
    /// The other fields of `data`, in the order they came, with their text.
    others: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// The event, once built: every member, and of `data` the lookup fields.
    event: Option<CloudEvent>,
}

/// A top-level member: its name, its text, and what its value is.
#[derive(Debug)]
struct Member<'a> {
    name: Cow<'a, str>,
    text: &'a RawValue,
    value: Scalar<'a>,
}

/// A value that is not an object or an array (the sketch holds no member that is).
#[derive(Debug)]
enum Scalar<'a> {
    Null,
    /// A string's value: borrowed from the text unless it holds an escape.
    String(Cow<'a, str>),
    Boolean,
    /// A number, and whether it is one the spec's Integer type holds.
    Number {
        integer: bool,
    },
}

impl Scalar<'_> {
    fn kind(&self) -> AttributeKind<'_> {
        match self {
            Scalar::Null => AttributeKind::Null,
            Scalar::String(text) => AttributeKind::String(text),
            Scalar::Boolean => AttributeKind::Scalar("a boolean"),
            Scalar::Number { integer } => AttributeKind::Number { integer: *integer },
        }
    }
}

/// A field of `data`: its text, and its value if it is a string.
#[derive(Debug)]
struct Field<'a> {
    text: &'a RawValue,
    string: Option<Cow<'a, str>>,
}

impl<'a> EventSketch<'a> {
    /// The sketch of a structured-mode event; `None` when the text is not a valid event, or is
    /// one whose sketch could differ from it (parse it whole to know which, and why).
    pub fn read(text: &'a str) -> Option<Self> {
        let mut json = serde_json::Deserializer::from_str(text);
        let sketch = json.deserialize_map(Sketcher).ok()?;
        json.end().ok()?;
        // The other fields were skipped, which checks less than a parse: check them as the
        // parse of the whole event would.
        if !sketch.others.iter().all(|(_, text)| parses(text)) {
            return None;
        }
        super::validate(&sketch).ok()?;
        // Data sent as base64 may be JSON that the whole event reads as `data`.
        if sketch.string("data_base64").is_some() {
            return None;
        }
        Some(sketch)
    }

    /// The event's `id`.
    pub fn id(&self) -> &str {
        self.string("id").unwrap_or_default()
    }

    /// The event's `type`.
    pub fn event_type(&self) -> &str {
        self.string("type").unwrap_or_default()
    }

    /// A top-level member (an attribute or an extension) that is a string; `None` when it is
    /// absent or not a string.
    pub fn string(&self, name: &str) -> Option<&str> {
        match &self.member(name)?.value {
            Scalar::String(text) => Some(text),
            _ => None,
        }
    }

    /// Whether a top-level member of that name is present and neither a string nor null.
    pub fn holds_other_than_text(&self, name: &str) -> bool {
        self.member(name)
            .is_some_and(|member| matches!(member.value, Scalar::Boolean | Scalar::Number { .. }))
    }

    /// A string field of `data` of Keptn's lookup fields (`project`, `stage`, `service`), as
    /// [`CloudEvent::data_str`] reads it.
    pub fn lookup_str(&self, name: &str) -> Option<&str> {
        let place = LOOKUP_FIELDS.iter().position(|field| *field == name)?;
        self.lookup[place].as_ref()?.string.as_deref()
    }

    fn member(&self, name: &str) -> Option<&Member<'a>> {
        self.members.iter().find(|member| member.name == name)
    }

    /// The event as far as it is read: every attribute and extension, and of `data` Keptn's
    /// lookup fields. Built from the text when first asked for; `None` only if that text does
    /// not parse, which the text of a sketch always does.
    pub fn event(&mut self) -> Option<&CloudEvent> {
        if self.event.is_none() {
            self.event = Some(self.build()?);
        }
        self.event.as_ref()
    }

    fn build(&self) -> Option<CloudEvent> {
        let value = |text: &RawValue| serde_json::from_str::<Value>(text.get()).ok();
        let mut object = Map::new();
        for member in &self.members {
            // What was read of a member already is not parsed again.
            let built = match &member.value {
                Scalar::Null => Value::Null,
                Scalar::String(text) => Value::String(text.to_string()),
                Scalar::Boolean => Value::Bool(member.text.get() == "true"),
                Scalar::Number { .. } => value(member.text)?,
            };
            object.insert(member.name.to_string(), built);
        }
        if self.data {
            let mut data = Map::new();
            for (name, field) in LOOKUP_FIELDS.iter().zip(&self.lookup) {
                if let Some(field) = field {
                    let built = match &field.string {
                        Some(text) => Value::String(text.to_string()),
                        None => value(field.text)?,
                    };
                    data.insert(name.to_string(), built);
                }
            }
            object.insert("data".to_string(), Value::Object(data));
        }
        // Its members are those the sketch was validated with (`read`), each of the same kind.
        Some(CloudEvent(Value::Object(object)))
    }

    /// The text of the value a plain path resolves to: `names` from the top-level member on
    /// (`["data", "test", "teststrategy"]` for `$.data.test.teststrategy`), each a member of
    /// the object the path has reached. `None` when it resolves to nothing: a name is absent,
    /// or what it goes through is not an object. Where an object has a name twice, the last
    /// counts, as in the whole event. Not `["data"]` itself, which a sketch does not keep whole:
    /// that resolves to nothing here.
    pub fn resolve(&self, names: &[String]) -> Option<&'a RawValue> {
        let (first, rest) = names.split_first()?;
        let (text, rest) = match first.as_str() {
            "data" => {
                let (field, rest) = rest.split_first()?;
                (self.data_field(field)?, rest)
            }
            member => (self.member(member)?.text, rest),
        };
        rest.iter()
            .try_fold(text, |text, name| member_text(text, name))
    }

    /// The text of a field of `data` (the last, if it appears twice).
    fn data_field(&self, name: &str) -> Option<&'a RawValue> {
        match LOOKUP_FIELDS.iter().position(|field| *field == name) {
            Some(place) => Some(self.lookup[place].as_ref()?.text),
            None => self
                .others
                .iter()
                .rev()
                .find(|(field, _)| field == name)
                .map(|(_, text)| *text),
        }
    }
}

/// The text of an object's member of that name (the last, if it appears twice); `None` when
/// the text is not an object or has no such member.
fn member_text<'a>(object: &'a RawValue, name: &str) -> Option<&'a RawValue> {
    if !object.get().starts_with('{') {
        return None;
    }
    let mut json = serde_json::Deserializer::from_str(object.get());
    json.deserialize_map(MemberText(name)).ok()?
}

/// Finds one member of an object, keeping the others' text unread.
struct MemberText<'n>(&'n str);

impl<'de> Visitor<'de> for MemberText<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Name(name)) = map.next_key()? {
            let text = map.next_value::<&'de RawValue>()?;
            if name == self.0 {
                found = Some(text);
            }
        }
        Ok(found)
    }
}

impl Members for EventSketch<'_> {
    fn member(&self, name: &str) -> Option<AttributeKind<'_>> {
        if name == "data" {
            return self.data.then_some(AttributeKind::Container("an object"));
        }
        Some(EventSketch::member(self, name)?.value.kind())
    }

    fn each(&self) -> impl Iterator<Item = (&str, AttributeKind<'_>)> {
        let data = self
            .data
            .then_some(("data", AttributeKind::Container("an object")));
        self.members
            .iter()
            .map(|member| (member.name.as_ref(), member.value.kind()))
            .chain(data)
    }
}

/// Reads the top-level members.
struct Sketcher;

impl<'de> Visitor<'de> for Sketcher {
    type Value = EventSketch<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a CloudEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventSketch<'de>, A::Error> {
        use serde::de::Error;
        let mut sketch = EventSketch {
            members: Vec::with_capacity(12),
            data: false,
            lookup: [None, None, None],
            others: Vec::new(),
            event: None,
        };
        while let Some(Name(name)) = map.next_key()? {
            if name == "data" {
                if sketch.data {
                    return Err(A::Error::custom("data appears twice"));
                }
                map.next_value_seed(DataSketch(&mut sketch))?;
                sketch.data = true;
                continue;
            }
            let text = map.next_value::<&'de RawValue>()?;
            let value = scalar(text).ok_or_else(|| A::Error::custom("not sketched"))?;
            if sketch.members.len() == MOST_MEMBERS
                || sketch.members.iter().any(|member| member.name == name)
            {
                return Err(A::Error::custom("not sketched"));
            }
            sketch.members.push(Member { name, text, value });
        }
        Ok(sketch)
    }
}

/// What a member's text holds, if it is not an object or an array and reads as it would
/// within the whole event.
fn scalar(text: &RawValue) -> Option<Scalar<'_>> {
    let raw = text.get();
    Some(match raw.as_bytes().first()? {
        b'"' => Scalar::String(string(text)?),
        b'n' => Scalar::Null,
        b't' | b'f' => Scalar::Boolean,
        b'{' | b'[' => return None,
        _ => {
            let number = serde_json::from_str::<Value>(raw).ok()?;
            Scalar::Number {
                integer: super::is_integer(&number),
            }
        }
    })
}

/// A string's value from its text: borrowed unless it holds an escape.
fn string(text: &RawValue) -> Option<Cow<'_, str>> {
    if let Some(plain) = unescaped_string(text) {
        return Some(Cow::Borrowed(plain));
    }
    // Only a string with an escape is worth parsing: other text without one is not a string.
    if !text.get().contains('\\') {
        return None;
    }
    serde_json::from_str::<String>(text.get())
        .ok()
        .map(Cow::Owned)
}

/// The value of a string without escapes: its text between the quotes. `None` for any other
/// text (a string with an escape, a number, an object...).
pub(crate) fn unescaped_string(text: &RawValue) -> Option<&str> {
    let plain = text.get().strip_prefix('"')?.strip_suffix('"')?;
    (!plain.contains('\\')).then_some(plain)
}

/// `data`, if it is an object: its lookup fields and the others kept as text.
struct DataSketch<'s, 'a>(&'s mut EventSketch<'a>);

impl<'de> DeserializeSeed<'de> for DataSketch<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DataSketch<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sketch = self.0;
        while let Some(Name(name)) = map.next_key()? {
            let text = map.next_value::<&'de RawValue>()?;
            match LOOKUP_FIELDS.iter().position(|field| *field == name) {
                Some(place) => {
                    // Read as it would be within the whole event; the last one counts, as there.
                    if !parses(text) {
                        return Err(serde::de::Error::custom("not sketched"));
                    }
                    let string = match text.get().starts_with('"') {
                        true => Some(
                            string(text).ok_or_else(|| serde::de::Error::custom("not sketched"))?,
                        ),
                        false => None,
                    };
                    sketch.lookup[place] = Some(Field { text, string });
                }
                None if sketch.others.len() >= MOST_DATA_FIELDS => {
                    return Err(serde::de::Error::custom("not sketched"));
                }
                None => sketch.others.push((name, text)),
            }
        }
        Ok(())
    }
}

/// The most arrays and objects a field of `data` may nest, as the whole event is checked:
/// `MAX_EVENT_NESTING` open at once, less the event's object and `data`.
const FIELD_NESTING: u8 = {
    assert!(crate::event::MAX_EVENT_NESTING - 2 <= u8::MAX as usize);
    (crate::event::MAX_EVENT_NESTING - 2) as u8
};

/// Whether a field of `data` that was skipped (syntax and control characters checked, and
/// UTF-8 by the text being a `str`) parses as it would within the whole event. Skipping
/// checks neither escapes (`"\ud800"`), nor numbers' range (`1e400`), nor nesting: only a
/// string without escapes, `true`, `false` and `null` need no parse.
fn parses(field: &RawValue) -> bool {
    let text = field.get();
    let plain = match text.as_bytes().first() {
        Some(b'"') => !text.contains('\\'),
        Some(b't' | b'f' | b'n') => true,
        _ => false,
    };
    plain || {
        let mut json = serde_json::Deserializer::from_str(text);
        Valid {
            room: FIELD_NESTING,
        }
        .deserialize(&mut json)
        .is_ok()
    }
}

/// Accepts what parsing into a [`Value`] accepts at a place where `room` more arrays or
/// objects may open, building nothing: values are read through `deserialize_any`, as the
/// parse of a `Value` reads them.
#[derive(Clone, Copy)]
struct Valid {
    room: u8,
}

impl<'de> DeserializeSeed<'de> for Valid {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Valid {
    /// The room inside an array or object opened here.
    fn inside<E: serde::de::Error>(self) -> Result<Valid, E> {
        match self.room.checked_sub(1) {
            Some(room) => Ok(Valid { room }),
            None => Err(E::custom("recursion limit exceeded")),
        }
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let inside = self.inside()?;
        while items.next_element_seed(inside)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        let inside = self.inside()?;
        // Keys are strings, read as such (an escape in one is checked like any string's).
        while members.next_key::<Name<'de>>()?.is_some() {
            members.next_value_seed(inside)?;
        }
        Ok(())
    }
}

/// A member's name, borrowed from the text unless it holds an escape.
pub(super) struct Name<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member's name")
    }

    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Borrowed(name)))
    }

    fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn whole(text: &str) -> Option<CloudEvent> {
        CloudEvent::from_json(text.as_bytes()).ok()
    }

    /// The whole event with `data` cut to Keptn's lookup fields, as a sketch builds it.
    fn cut(event: &CloudEvent) -> Value {
        let mut value = event.as_value().clone();
        if let Some(Value::Object(data)) = value.get_mut("data") {
            data.retain(|name, _| LOOKUP_FIELDS.contains(&name.as_str()));
        }
        value
    }

    /// What a plain path resolves to in the whole event, as a JSONPath query of names finds it.
    fn walk<'v>(event: &'v Value, names: &[String]) -> Option<&'v Value> {
        names
            .iter()
            .try_fold(event, |value, name| value.as_object()?.get(name))
    }

    fn names(path: &[&str]) -> Vec<String> {
        path.iter().map(|name| name.to_string()).collect()
    }

    /// The value of the text a path resolves to in a sketch.
    fn resolved(sketch: &EventSketch<'_>, path: &[&str]) -> Option<Value> {
        let text = sketch.resolve(&names(path))?;
        Some(serde_json::from_str(text.get()).unwrap())
    }

    const EVENT: &str = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","shkeptncontext":"c",
        "data":{"project":"p","stage":"dev","service":"carts","test":{"teststrategy":"locust"},
        "padding":"xxxx","labels":{"a":"b"}}}"#;

    /// A `data` of many small fields is parsed whole, where the budget of bodies in flight
    /// bounds what its values take.
    #[test]
    fn a_data_of_more_fields_than_the_bound_is_not_sketched() {
        let event = |fields: usize| {
            let data: Vec<String> = (0..fields).map(|i| format!(r#""f{i}":0"#)).collect();
            format!(
                r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{{"project":"p",{}}}}}"#,
                data.join(",")
            )
        };
        assert!(EventSketch::read(&event(MOST_DATA_FIELDS)).is_some());
        assert!(EventSketch::read(&event(MOST_DATA_FIELDS + 1)).is_none());
        // Repeated names count each time: the sketch keeps each as it came.
        let repeated = format!(
            r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{{{}}}}}"#,
            vec![r#""a":0"#; MOST_DATA_FIELDS + 1].join(",")
        );
        assert!(EventSketch::read(&repeated).is_none());
    }

    #[test]
    fn builds_the_attributes_and_the_lookup_fields_and_resolves_any_plain_path() {
        let mut sketch = EventSketch::read(EVENT).unwrap();
        assert_eq!(
            resolved(&sketch, &["data", "test", "teststrategy"]),
            Some(json!("locust"))
        );
        assert_eq!(
            resolved(&sketch, &["data", "labels"]),
            Some(json!({"a": "b"}))
        );
        assert_eq!(resolved(&sketch, &["data", "stage"]), Some(json!("dev")));
        assert_eq!(resolved(&sketch, &["type"]), Some(json!("t")));
        for nothing in [
            &["data", "absent"][..],
            &["data", "padding", "x"],
            &["data", "test", "teststrategy", "x"],
            &["type", "x"],
            &["absent"],
            &["data"],
            &[],
        ] {
            assert_eq!(resolved(&sketch, nothing), None, "{nothing:?}");
        }
        assert_eq!(sketch.event().unwrap().id(), "1");
        assert_eq!(
            sketch.event().unwrap().as_value(),
            &cut(&whole(EVENT).unwrap())
        );
    }

    #[test]
    fn a_repeated_field_reads_as_its_last_value_as_in_the_whole_event() {
        let text = r#"{"specversion":"1.0","id":"1","source":"s","type":"t",
            "data":{"test":{"a":1,"a":{"b":2}},"project":"a","test":{"a":3,"a":{"b":4}},"project":"b"}}"#;
        let mut sketch = EventSketch::read(text).unwrap();
        let event = whole(text).unwrap();
        for path in [&["data", "test", "a", "b"][..], &["data", "project"]] {
            assert_eq!(
                resolved(&sketch, path).as_ref(),
                walk(event.as_value(), &names(path)),
                "{path:?}"
            );
        }
        assert_eq!(
            resolved(&sketch, &["data", "test", "a", "b"]),
            Some(json!(4))
        );
        assert_eq!(
            sketch.event().unwrap().data(),
            Some(&json!({"project": "b"}))
        );
    }

    #[test]
    fn whitespace_around_names_and_values_is_not_part_of_their_text() {
        let text = r#" { "specversion" : "1.0" , "id" : "1" , "source" : "s" , "type" : "t" ,
            "data" : { "test" : { "a" : "x" , "n" : 1e2 } , "s" : "y" } } "#;
        let sketch = EventSketch::read(text).unwrap();
        let raw = |path: &[&str]| sketch.resolve(&names(path)).map(RawValue::get);
        assert_eq!(raw(&["data", "test", "a"]), Some(r#""x""#));
        assert_eq!(raw(&["data", "s"]), Some(r#""y""#));
        assert_eq!(raw(&["type"]), Some(r#""t""#));
        assert_eq!(
            resolved(&sketch, &["data", "test", "n"]),
            Some(json!(100.0))
        );
    }

    #[test]
    fn no_sketch_where_it_could_differ_from_the_whole_event() {
        let base = |data: &str| {
            format!(r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{data}}}"#)
        };
        for (text, why) in [
            (base(r#""text""#), "data is not an object"),
            (base("null"), "data is null"),
            (base("{},\"data\":{}"), "data twice"),
            (base(r#"{"n":1e400}"#), "a number out of range"),
            (base(r#"{"s":"\ud800"}"#), "a lone surrogate"),
            (base(r#"{"s":"a"#), "cut short"),
            (base("{}} "), "trailing text"),
            (base(r#"{},"id":7"#), "an invalid attribute"),
            // Valid events, parsed whole since a sketch would have to keep more.
            (base(r#"{},"id":"2""#), "an attribute twice"),
            (base(r#"{},"ext":{"a":1}"#), "an object for a member"),
            (base(r#"{},"data_base64":[]"#), "an array for a member"),
            (r#"[{"specversion":"1.0"}]"#.to_string(), "not an object"),
        ] {
            assert!(EventSketch::read(&text).is_none(), "{why}: {text}");
        }
        // serde's own skipping of a value checks less than a parse: the reason for `parses`.
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(r#"{"n":1e400}"#).is_ok());
        assert!(serde_json::from_str::<Value>(r#"{"n":1e400}"#).is_err());
    }

    #[test]
    fn nesting_is_limited_exactly_as_for_the_whole_event() {
        let mut valid = Vec::new();
        let limit = crate::event::MAX_EVENT_NESTING;
        for depth in limit - 10..limit + 5 {
            let text = format!(
                r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{{"deep":{}1{}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(
                EventSketch::read(&text).is_some(),
                whole(&text).is_some(),
                "depth {depth}"
            );
            valid.push(whole(&text).is_some());
        }
        assert!(
            valid.contains(&true) && valid.contains(&false),
            "the limit is in the range"
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<i32>().prop_map(|n| json!(n)),
            Just(json!(2.0)),
            "[a-z]{0,6}".prop_map(Value::String),
            // Escaped in the text: a quote, a backslash, a control character; and not ASCII.
            Just(json!("a\"b\\c\u{1}é")),
            Just(json!(-1.5e300)),
        ];
        leaf.prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("(project|stage|service|test|labels|x)", inner), 0..5)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the text, a sketch exists only for a valid event, and then resolves every
        /// plain path to what it resolves to in the whole event.
        #[test]
        fn a_sketch_agrees_with_the_whole_event(
            attributes in prop::collection::vec(
                ("(specversion|id|source|type|time|subject|data_base64|ext1|Bad)", json_value()),
                0..7,
            ),
            data in json_value(),
            data_first in any::<bool>(),
            paths in prop::collection::vec(
                prop::collection::vec("(data|id|ext1|project|test|labels|x|absent)", 1..4),
                0..6,
            ),
        ) {
            let mut members: Vec<String> = vec![
                r#""specversion":"1.0""#.into(), r#""id":"i""#.into(),
                r#""source":"s""#.into(), r#""type":"t""#.into(),
            ];
            for (name, value) in &attributes {
                members.push(format!("{name:?}:{value}"));
            }
            let data_member = format!(r#""data":{data}"#);
            if data_first { members.insert(0, data_member) } else { members.push(data_member) }
            let text = format!("{{{}}}", members.join(","));
            let paths: Vec<Vec<String>> = paths;
            match (EventSketch::read(&text), whole(&text)) {
                (Some(_), None) => prop_assert!(false, "a sketch of an invalid event: {text}"),
                (Some(mut sketch), Some(event)) => {
                    // `$.data` itself is not a path a sketch resolves (it does not keep `data`
                    // whole), and no config's condition on it is decided on a sketch.
                    for path in paths.iter().filter(|path| path[..] != ["data"]) {
                        let text = sketch.resolve(path);
                        let value = text.map(|t| serde_json::from_str::<Value>(t.get()).unwrap());
                        prop_assert_eq!(value.as_ref(), walk(event.as_value(), path), "{:?}", path);
                    }
                    prop_assert_eq!(sketch.id(), event.id());
                    prop_assert_eq!(sketch.event_type(), event.event_type());
                    for name in LOOKUP_FIELDS {
                        prop_assert_eq!(sketch.lookup_str(name), event.data_str(name));
                    }
                    for (name, _) in &attributes {
                        prop_assert_eq!(
                            sketch.string(name),
                            event.as_value()[name.as_str()].as_str()
                        );
                    }
                    prop_assert_eq!(sketch.event().unwrap().as_value(), &cut(&event));
                }
                (None, Some(event)) => {
                    let names: Vec<&str> = ["specversion", "id", "source", "type"]
                        .into_iter()
                        .chain(attributes.iter().map(|(name, _)| name.as_str()))
                        .collect();
                    let repeated = names.iter().enumerate().any(|(i, n)| names[..i].contains(n));
                    let container = attributes.iter().any(|(_, v)| v.is_object() || v.is_array());
                    prop_assert!(
                        !event.as_value()["data"].is_object() || repeated || container,
                        "no sketch of a valid event with an object for data: {text}"
                    );
                }
                (None, None) => {}
            }
        }
    }
}
