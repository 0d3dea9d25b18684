//! Which actions of a config an event triggers: anchored name globs and JSONPath conditions,
//! compiled once per loaded config.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use globset::{GlobSet, GlobSetBuilder};
use serde_json::Value;
use serde_json::value::RawValue;
use serde_json_path::JsonPath;
use smallvec::SmallVec;

use crate::config::{JobConfig, formats};
use crate::event::{CloudEvent, EventSketch, unescaped_string};
use crate::json_text::{self, Escaping};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("actions[{action}].events[{event}]: {message}")]
    Compile {
        action: usize,
        event: usize,
        message: String,
    },
    #[error(
        "the config's {patterns} event name patterns with wildcards are too many or too complex \
         to compile together: {message}"
    )]
    Together { patterns: usize, message: String },
}

/// A config's event filters, compiled.
#[derive(Debug, Clone)]
pub struct Matcher {
    actions: Vec<CompiledAction>,
    /// Every filter's action and place in it, in file order.
    owners: Vec<(usize, usize)>,
    /// For each event name without glob syntax (most are): the filters of that name, as
    /// indices of `owners` in ascending order, so finding who listens for an event's type is
    /// one hash lookup, which copies nothing.
    exact: HashMap<String, Vec<usize>>,
    /// The other filters' globs in one set (they share one automaton), so matching an event
    /// type against hundreds of actions is one lookup ...
    globbed: GlobSet,
    /// ... and for each glob of `globbed`, its filter's index of `owners`.
    globbed_owners: Vec<usize>,
    /// Whether every condition's property is a plain path: then an event is decided from its
    /// sketch as the whole event would be ([`Matcher::decide_sketch`]).
    plain: bool,
}

#[derive(Debug, Clone)]
struct CompiledAction {
    name: String,
    /// `name` as a JSON string's contents, escaped once for every answer that names it.
    name_json: String,
    events: Vec<CompiledFilter>,
}

#[derive(Debug, Clone)]
struct CompiledFilter {
    name: String,
    condition: Option<Condition>,
}

#[derive(Debug, Clone)]
struct Condition {
    source: String,
    path: JsonPath,
    /// The names a plain path goes through ([`plain_names`]), if it is one.
    plain: Option<Vec<String>>,
    expected: String,
    /// ", not \"expected\"": the end of every refusal, written once.
    not_expected: String,
    /// `source` and `not_expected` as JSON string contents, escaped once.
    source_json: String,
    not_expected_json: String,
    /// Conditions on the same property share a slot: [`Matcher::decide`] queries each
    /// property once per event, however many actions test it.
    slot: usize,
}

/// What a property resolved to: a value of the whole event, or the text of one in a sketch.
#[derive(Debug, Clone, Copy)]
enum Node<'e> {
    Value(&'e Value),
    Text(&'e RawValue),
}

impl Node<'_> {
    /// Whether the node reads as a `match`: a string as it is, anything else by its JSON text
    /// as the whole event's value writes it (`1.0e2` reads as "100.0" either way).
    fn reads_as(self, expected: &str) -> bool {
        match self {
            Node::Value(value) => reads_as(value, expected),
            Node::Text(text) => {
                if let Some(plain) = unescaped_string(text) {
                    return plain == expected;
                }
                serde_json::from_str::<Value>(text.get())
                    .is_ok_and(|value| reads_as(&value, expected))
            }
        }
    }

    /// [`Self::write_to`], escaped as a JSON string's contents.
    fn write_json_escaped(self, out: &mut Vec<u8>) {
        let text = match self {
            Node::Value(value) => {
                // Writing into a `Vec` cannot fail.
                let _ = write!(Escaping(out), "{value}");
                return;
            }
            Node::Text(text) => text,
        };
        // A string without escapes holds no quote, backslash or control character but its
        // two quotes (JSON allows none unescaped).
        if let Some(plain) = unescaped_string(text) {
            out.extend_from_slice(b"\\\"");
            out.extend_from_slice(plain.as_bytes());
            out.extend_from_slice(b"\\\"");
            return;
        }
        let _ = match serde_json::from_str::<Value>(text.get()) {
            Ok(value) => write!(Escaping(out), "{value}"),
            // A sketch holds only text that parses.
            Err(_) => write!(Escaping(out), "{}", text.get()),
        };
    }

    /// The node's JSON text as the whole event's value writes it.
    fn write_to(self, out: &mut String) {
        let text = match self {
            Node::Value(value) => {
                // Writing into a `String` cannot fail.
                let _ = write!(out, "{value}");
                return;
            }
            Node::Text(text) => text,
        };
        // A string without escapes is written as it came: serde_json escapes only quotes,
        // backslashes and control characters, which such a string's text cannot hold.
        if unescaped_string(text).is_some() {
            out.push_str(text.get());
            return;
        }
        let _ = match serde_json::from_str::<Value>(text.get()) {
            Ok(value) => write!(out, "{value}"),
            // A sketch holds only text that parses.
            Err(_) => write!(out, "{}", text.get()),
        };
    }
}

/// What a property resolved to: a plain path on a sketch resolves to one value or none, a
/// query on the whole event to any number.
#[derive(Debug)]
enum Nodes<'e> {
    One(Option<Node<'e>>),
    Many(Vec<Node<'e>>),
}

impl<'e> Nodes<'e> {
    fn as_slice(&self) -> &[Node<'e>] {
        match self {
            Nodes::One(node) => node.as_slice(),
            Nodes::Many(nodes) => nodes,
        }
    }
}

/// The nodes each property queried so far resolved to, by slot (most configs' conditions
/// read one or two properties: kept inline, without an allocation).
type Found<'e> = SmallVec<[(usize, Nodes<'e>); 2]>;

/// The verdict on one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionVerdict {
    pub index: usize,
    pub name: String,
    /// `Ok` when the action runs, otherwise the first condition that failed.
    pub outcome: Result<(), String>,
}

/// What one event does to a config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The actions it triggers, in file order.
    pub matched: Vec<usize>,
    /// The first [`MOST_REASONS`] actions that listen for its type but whose every condition
    /// failed, with the first failure.
    pub refused: Vec<ActionVerdict>,
    /// How many more actions refused it: counted, not explained (`explain` says why).
    pub refused_more: usize,
}

/// The most refusals [`Matcher::decide`] explains: each reason is formatted and answered, and
/// an event that many actions listen for and refuse should cost about what parsing it costs.
pub const MOST_REASONS: usize = 3;

/// The verdicts on the actions that listen for an event's type, before any reason is put
/// into words (most events run or refuse few actions: kept inline, without an allocation).
#[derive(Debug, Default)]
struct Verdicts<'e> {
    matched: SmallVec<[usize; 4]>,
    /// The first [`MOST_REASONS`] actions that refused, each with its first filter whose
    /// condition failed.
    refused: SmallVec<[(usize, usize); MOST_REASONS]>,
    refused_more: usize,
    /// What the conditions' properties resolved to, which the reasons are written from.
    found: Found<'e>,
}

impl Verdicts<'_> {
    /// The verdict on `action`: it runs when no filter failed (`failed` is `None`).
    fn record(&mut self, action: usize, failed: Option<usize>) {
        match failed {
            None => self.matched.push(action),
            Some(_) if self.refused.len() >= MOST_REASONS => self.refused_more += 1,
            Some(filter) => self.refused.push((action, filter)),
        }
    }

    fn into_decision(self, matcher: &Matcher) -> Decision {
        Decision {
            matched: self.matched.into_vec(),
            refused: self
                .refused
                .iter()
                .map(|&(index, filter)| ActionVerdict {
                    index,
                    name: matcher.actions[index].name.clone(),
                    // Only now is the reason put into words.
                    outcome: Err(matcher.actions[index].events[filter].refusal(&self.found)),
                })
                .collect(),
            refused_more: self.refused_more,
        }
    }
}

/// Why the actions that listen for an event's type refuse it (none of them runs), decided on
/// its sketch, with the reasons not yet put into words: the answer writes them straight into
/// its JSON, from text the config's compilation escaped once.
#[derive(Debug)]
pub struct Refusals<'m, 'e> {
    matcher: &'m Matcher,
    verdicts: Verdicts<'e>,
}

impl Refusals<'_, '_> {
    /// Whether no action listens for the event's type.
    pub fn none_listens(&self) -> bool {
        self.verdicts.refused.is_empty()
    }

    /// How many more actions refused than are explained ([`MOST_REASONS`]).
    pub fn refused_more(&self) -> usize {
        self.verdicts.refused_more
    }

    /// Writes each explained refusal, `write_one(out, action, reason)` writing one as the answer
    /// lists it: `action` is the action's name, as a JSON string's contents, and `reason` writes
    /// why it refused, the same way.
    pub fn write_each(
        &self,
        out: &mut Vec<u8>,
        mut write_one: impl FnMut(&mut Vec<u8>, &str, &dyn Fn(&mut Vec<u8>)),
    ) {
        for &(index, filter) in &self.verdicts.refused {
            let action = &self.matcher.actions[index];
            let reason = |out: &mut Vec<u8>| {
                action.events[filter].write_refusal_json(&self.verdicts.found, out);
            };
            write_one(out, &action.name_json, &reason);
        }
    }

    /// The decision, its reasons put into words.
    pub fn into_decision(self) -> Decision {
        self.verdicts.into_decision(self.matcher)
    }
}

impl Matcher {
    /// Compiles every event filter. A config that passed `config::load` always compiles; the
    /// error exists for configs built some other way.
    pub fn compile(config: &JobConfig) -> Result<Self, MatchError> {
        let mut actions = Vec::with_capacity(config.actions.len());
        let mut globbed = GlobSetBuilder::new();
        let mut globbed_owners = Vec::new();
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut owners = Vec::new();
        // Each property's slot, by its text (a config may hold thousands of conditions).
        let mut properties: HashMap<&str, usize> = HashMap::new();
        let mut plain = true;
        for (action_index, action) in config.actions.iter().enumerate() {
            let compile_error = |event: usize, message: String| MatchError::Compile {
                action: action_index,
                event,
                message,
            };
            let mut events = Vec::with_capacity(action.events.len());
            for (event_index, filter) in action.events.iter().enumerate() {
                let pattern = formats::event_glob(&filter.name)
                    .map_err(|e| compile_error(event_index, e.to_string()))?;
                if is_exact_name(&filter.name) {
                    exact
                        .entry(filter.name.clone())
                        .or_default()
                        .push(owners.len());
                } else {
                    globbed.add(pattern);
                    globbed_owners.push(owners.len());
                }
                owners.push((action_index, event_index));
                let condition = match &filter.jsonpath {
                    None => None,
                    Some(jsonpath) => {
                        let not_expected = format!(", not {:?}", jsonpath.match_value);
                        Some(Condition {
                            source: jsonpath.property.clone(),
                            path: formats::parse_jsonpath(&jsonpath.property)
                                .map_err(|message| compile_error(event_index, message))?,
                            plain: plain_names(&jsonpath.property),
                            expected: jsonpath.match_value.clone(),
                            source_json: json_text::escaped(&jsonpath.property),
                            not_expected_json: json_text::escaped(&not_expected),
                            not_expected,
                            slot: {
                                let next = properties.len();
                                *properties.entry(&jsonpath.property).or_insert(next)
                            },
                        })
                    }
                };
                plain &= condition.as_ref().is_none_or(|c| c.plain.is_some());
                events.push(CompiledFilter {
                    name: filter.name.clone(),
                    condition,
                });
            }
            let name = action.display_name(action_index);
            actions.push(CompiledAction {
                name_json: json_text::escaped(&name),
                name,
                events,
            });
        }
        // Each pattern compiles alone (`config::load` checks it, and bounds its length): what
        // fails here is all of them together.
        let globbed = globbed.build().map_err(|e| MatchError::Together {
            patterns: globbed_owners.len(),
            message: e.to_string(),
        })?;
        Ok(Matcher {
            actions,
            owners,
            exact,
            globbed,
            globbed_owners,
            plain,
        })
    }

    /// The filters whose names match `event_type`, as indices of `owners` in ascending order
    /// (so an action's filters are adjacent, in file order). Borrowed when no glob matches.
    fn listening(&self, event_type: &str) -> Cow<'_, [usize]> {
        let exact = self.exact.get(event_type).map_or(&[][..], Vec::as_slice);
        if self.globbed_owners.is_empty() {
            return Cow::Borrowed(exact);
        }
        let globbed = self.globbed.matches(event_type);
        if globbed.is_empty() {
            return Cow::Borrowed(exact);
        }
        let mut all = exact.to_vec();
        all.extend(
            globbed
                .into_iter()
                .filter_map(|glob| self.globbed_owners.get(glob).copied()),
        );
        all.sort_unstable();
        Cow::Owned(all)
    }

    /// Whether any action listens for events of this type, whatever their conditions.
    pub fn listens_for(&self, event_type: &str) -> bool {
        !self.listening(event_type).is_empty()
    }

    /// The indices of the actions the event triggers, in file order.
    pub fn matching(&self, event: &CloudEvent) -> Vec<usize> {
        self.decide(event).matched
    }

    /// The actions the event triggers, and why each action that listens for the event's type
    /// does not run. Only the actions whose names match are looked at (one hash lookup, and
    /// one `GlobSet` lookup when some names are globs), so the cost does not grow with the
    /// number of actions that listen for other types; `explain` gives a verdict on every
    /// action.
    pub fn decide(&self, event: &CloudEvent) -> Decision {
        let listening = self.listening(event.event_type());
        self.verdicts(&listening, |condition| condition.query(event))
            .into_decision(self)
    }

    /// [`Self::decide`] on an event's sketch, reading the text of the values the conditions
    /// read, without building the event; `None` when an action listens for the event's type
    /// and a condition's property is not a plain path (`$.data.test.teststrategy`, `$.type`)
    /// but a query that may read anything (`$.data`, `$..name`, a filter, an index): decide the
    /// whole event then. A plain path resolves to at most one value, which the sketch finds as
    /// the query finds it in the whole event, so the decision is the one the whole event gets.
    pub fn decide_sketch(&self, sketch: &EventSketch<'_>) -> Option<Decision> {
        Some(self.sketch_verdicts(sketch)?.into_decision(self))
    }

    /// Why every action that listens for the event's type refuses it, decided on its sketch
    /// as [`Self::decide_sketch`] decides, with the reasons not yet put into words: they are
    /// written straight into the answer ([`Refusals::write_each`]). `None` when the sketch
    /// cannot be decided or an action runs.
    pub fn refusals_of_sketch<'e>(&self, sketch: &EventSketch<'e>) -> Option<Refusals<'_, 'e>> {
        let verdicts = self.sketch_verdicts(sketch)?;
        verdicts.matched.is_empty().then_some(Refusals {
            matcher: self,
            verdicts,
        })
    }

    fn sketch_verdicts<'e>(&self, sketch: &EventSketch<'e>) -> Option<Verdicts<'e>> {
        let listening = self.listening(sketch.event_type());
        if !listening.is_empty() && !self.plain {
            return None;
        }
        Some(self.verdicts(&listening, |condition| {
            Nodes::One(
                condition
                    .plain
                    .as_deref()
                    .and_then(|names| sketch.resolve(names))
                    .map(Node::Text),
            )
        }))
    }

    /// The verdicts on the actions of the `listening` filters (indices of `owners`, ascending),
    /// whose conditions' properties `query` resolves.
    fn verdicts<'e>(
        &self,
        listening: &[usize],
        mut query: impl FnMut(&Condition) -> Nodes<'e>,
    ) -> Verdicts<'e> {
        let mut verdicts = Verdicts::default();
        // The action being decided, and its first filter whose condition failed (`None` once
        // one passed). Owners are in (action, filter) order: an action's filters are adjacent,
        // and the first one that passes decides it.
        let mut deciding: Option<(usize, Option<usize>)> = None;
        for &owner in listening {
            let Some(&(action, filter)) = self.owners.get(owner) else {
                continue;
            };
            let compiled = &self.actions[action].events[filter];
            match &mut deciding {
                Some((last, None)) if *last == action => {}
                Some((last, failed)) if *last == action => {
                    if compiled.holds(&mut query, &mut verdicts.found) {
                        *failed = None;
                    }
                }
                _ => {
                    if let Some((done, failed)) = deciding.take() {
                        verdicts.record(done, failed);
                    }
                    let holds = compiled.holds(&mut query, &mut verdicts.found);
                    deciding = Some((action, (!holds).then_some(filter)));
                }
            }
        }
        if let Some((done, failed)) = deciding {
            verdicts.record(done, failed);
        }
        verdicts
    }

    /// The verdict on every action, with the reason for those that do not run.
    pub fn explain(&self, event: &CloudEvent) -> Vec<ActionVerdict> {
        // Each action's filters whose names match, in file order: found once for all actions
        // (a filter has no matcher of its own; a compiled glob is kilobytes).
        let mut named = vec![Vec::new(); self.actions.len()];
        for &owner in self.listening(event.event_type()).iter() {
            let (action, filter) = self.owners[owner];
            named[action].push(filter);
        }
        self.actions
            .iter()
            .zip(named)
            .enumerate()
            .map(|(index, (action, named))| ActionVerdict {
                index,
                name: action.name.clone(),
                outcome: action.explain(event, &named),
            })
            .collect()
    }
}

impl CompiledAction {
    /// The verdict on the action, `named` being its filters whose names match the event's type.
    fn explain(&self, event: &CloudEvent, named: &[usize]) -> Result<(), String> {
        if self.events.is_empty() {
            return Err("the action has no events".to_string());
        }
        let event_type = event.event_type();
        let mut named = named.iter().map(|&filter| &self.events[filter]).peekable();
        if named.peek().is_none() {
            let names: Vec<String> = self
                .events
                .iter()
                .map(|f| format!("{:?}", f.name))
                .collect();
            return Err(format!(
                "event type {event_type:?} matches none of {}",
                names.join(", ")
            ));
        }
        let mut first_failure = None;
        for filter in named {
            match filter.check_condition(event) {
                Ok(()) => return Ok(()),
                Err(reason) => {
                    first_failure.get_or_insert(reason);
                }
            }
        }
        Err(first_failure.unwrap_or_default())
    }
}

impl CompiledFilter {
    /// Whether the filter's condition holds, without saying why not; `found` keeps what the
    /// event's properties resolved to (by `query`), for the next filter on the same one.
    fn holds<'e>(
        &self,
        query: &mut impl FnMut(&Condition) -> Nodes<'e>,
        found: &mut Found<'e>,
    ) -> bool {
        let Some(condition) = &self.condition else {
            return true;
        };
        let at = match found.iter().position(|(slot, _)| *slot == condition.slot) {
            Some(at) => at,
            None => {
                found.push((condition.slot, query(condition)));
                found.len() - 1
            }
        };
        found[at]
            .1
            .as_slice()
            .iter()
            .any(|node| node.reads_as(&condition.expected))
    }

    /// Why a filter that did not hold refused the event, from the nodes `holds` found (so the
    /// property is not queried again to put the reason into words).
    fn refusal(&self, found: &Found<'_>) -> String {
        match self.failed_condition(found) {
            Some((condition, nodes)) => condition.refusal(nodes),
            None => CONDITION_FAILED.to_string(),
        }
    }

    /// [`Self::refusal`], written as a JSON string's contents.
    fn write_refusal_json(&self, found: &Found<'_>, out: &mut Vec<u8>) {
        match self.failed_condition(found) {
            Some((condition, nodes)) => condition.write_refusal_json(nodes, out),
            None => out.extend_from_slice(CONDITION_FAILED.as_bytes()),
        }
    }

    /// The condition that failed, with what its property resolved to.
    fn failed_condition<'f, 'e>(
        &self,
        found: &'f Found<'e>,
    ) -> Option<(&Condition, &'f [Node<'e>])> {
        let condition = self.condition.as_ref()?;
        let (_, nodes) = found.iter().find(|(slot, _)| *slot == condition.slot)?;
        Some((condition, nodes.as_slice()))
    }

    fn check_condition(&self, event: &CloudEvent) -> Result<(), String> {
        let Some(condition) = &self.condition else {
            return Ok(());
        };
        let nodes = condition.query(event);
        let nodes = nodes.as_slice();
        if nodes.iter().any(|node| node.reads_as(&condition.expected)) {
            return Ok(());
        }
        Err(condition.refusal(nodes))
    }
}

impl Condition {
    /// What the property resolves to in the whole event.
    fn query<'e>(&self, event: &'e CloudEvent) -> Nodes<'e> {
        Nodes::Many(
            self.path
                .query(event.as_value())
                .all()
                .into_iter()
                .map(Node::Value)
                .collect(),
        )
    }

    /// "`property` is `what it resolved to`, not `expected`", or that it resolved to nothing;
    /// written into one string, as it is answered for every refused event.
    fn refusal(&self, nodes: &[Node<'_>]) -> String {
        if nodes.is_empty() {
            return format!("{}{RESOLVES_TO_NOTHING}", self.source);
        }
        let mut reason = String::with_capacity(self.source.len() + self.not_expected.len() + 32);
        reason.push_str(&self.source);
        reason.push_str(" is ");
        for (index, node) in nodes.iter().enumerate() {
            if index > 0 {
                reason.push_str(", ");
            }
            node.write_to(&mut reason);
        }
        reason.push_str(&self.not_expected);
        reason
    }

    /// [`Self::refusal`], written as a JSON string's contents from the text escaped when the
    /// config was compiled: only what the property resolved to is escaped here.
    fn write_refusal_json(&self, nodes: &[Node<'_>], out: &mut Vec<u8>) {
        out.extend_from_slice(self.source_json.as_bytes());
        if nodes.is_empty() {
            out.extend_from_slice(RESOLVES_TO_NOTHING.as_bytes());
            return;
        }
        out.extend_from_slice(b" is ");
        for (index, node) in nodes.iter().enumerate() {
            if index > 0 {
                out.extend_from_slice(b", ");
            }
            node.write_json_escaped(out);
        }
        out.extend_from_slice(self.not_expected_json.as_bytes());
    }
}

/// The reason of a filter that failed without a condition to blame (it cannot happen: a filter
/// without one holds).
const CONDITION_FAILED: &str = "its condition failed";
/// The end of the reason of a condition whose property resolved to nothing.
const RESOLVES_TO_NOTHING: &str = " resolves to nothing";

/// Whether an event name is matched only by itself: it holds none of the glob syntax of
/// [`formats::event_glob`] (wildcards, classes, alternatives, escapes).
fn is_exact_name(name: &str) -> bool {
    !name.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// The names a plain path goes through (`$` followed by name segments: `.name` of ASCII
/// letters, digits and `_` not starting with a digit, or `['name']` / `["name"]` without
/// escapes), from the top-level member on: such a path resolves to at most one value, which an
/// event's sketch finds without building the event. `None` for any other query, which may read
/// anything: `$` or `$.data` itself (a sketch does not keep `data` whole), indices, wildcards,
/// descendants, filters (whose own queries may start from the root).
fn plain_names(property: &str) -> Option<Vec<String>> {
    let mut rest = property.strip_prefix('$')?;
    let mut names = Vec::new();
    while !rest.is_empty() {
        let (name, after) = plain_segment(rest)?;
        names.push(name.to_string());
        rest = after;
    }
    match names.as_slice() {
        [] => None,
        [only] if only == "data" => None,
        _ => Some(names),
    }
}

/// The name of the plain segment `path` starts with, and what follows it.
fn plain_segment(path: &str) -> Option<(&str, &str)> {
    if let Some(rest) = path.strip_prefix('.') {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        name.bytes()
            .next()
            .filter(|first| first.is_ascii_alphabetic() || *first == b'_')?;
        return Some((name, &rest[end..]));
    }
    let rest = path.strip_prefix('[')?;
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = &rest[1..];
    let end = rest.find([quote, '\\'])?;
    let after = rest[end..].strip_prefix(quote)?.strip_prefix(']')?;
    Some((&rest[..end], after))
}

/// Whether a value reads as a `match`: a string as it is, anything else by its JSON text.
fn reads_as(value: &Value, expected: &str) -> bool {
    match value {
        Value::String(text) => text == expected,
        // Not `*other == expected`: serde_json compares a `Value` with a `str` only as a string,
        // and `7` must read as "7".
        #[allow(clippy::cmp_owned)]
        other => other.to_string() == expected,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config;

    fn matcher(yaml: &str) -> Matcher {
        let valid = config::load(yaml, "c.yaml").unwrap();
        Matcher::compile(&valid.config).unwrap()
    }

    fn event(event_type: &str, data: Value) -> CloudEvent {
        CloudEvent::from_value(json!({
            "specversion": "1.0", "id": "1", "source": "test", "type": event_type,
            "shkeptncontext": "ctx-1", "data": data
        }))
        .unwrap()
    }

    const ONE_EVENT: &str = "apiVersion: v2\nactions:\n  - name: a\n    events:\n      - name: ";

    fn single(name: &str, jsonpath: Option<(&str, &str)>) -> Matcher {
        let mut text = format!("{ONE_EVENT}{name:?}\n");
        if let Some((property, value)) = jsonpath {
            text.push_str(&format!(
                "        jsonpath:\n          property: {property:?}\n          match: {value:?}\n"
            ));
        }
        text.push_str("    tasks:\n      - image: alpine\n");
        matcher(&text)
    }

    #[test]
    fn names_are_anchored_globs() {
        let exact = single("sh.keptn.event.test.triggered", None);
        assert_eq!(
            exact.matching(&event("sh.keptn.event.test.triggered", json!({}))),
            [0]
        );
        assert!(
            exact
                .matching(&event("sh.keptn.event.test.triggered.x", json!({})))
                .is_empty()
        );
        assert!(
            exact
                .matching(&event("x.sh.keptn.event.test.triggered", json!({})))
                .is_empty()
        );
        // A `.` is a dot, not "any character".
        assert!(
            exact
                .matching(&event("sh.keptn.event.testXtriggered", json!({})))
                .is_empty()
        );

        let wildcard = single("sh.keptn.event.*.triggered", None);
        assert_eq!(
            wildcard.matching(&event("sh.keptn.event.test.triggered", json!({}))),
            [0]
        );
        assert_eq!(
            wildcard.matching(&event("sh.keptn.event.a.b.triggered", json!({}))),
            [0]
        );
        assert!(
            wildcard
                .matching(&event("sh.keptn.event.test.finished", json!({})))
                .is_empty()
        );
    }

    #[test]
    fn jsonpath_conditions_compare_strings_numbers_and_booleans() {
        let strategy = single(
            "sh.keptn.event.test.triggered",
            Some(("$.data.test.teststrategy", "locust")),
        );
        let ty = "sh.keptn.event.test.triggered";
        assert_eq!(
            strategy.matching(&event(ty, json!({"test": {"teststrategy": "locust"}}))),
            [0]
        );
        assert!(
            strategy
                .matching(&event(ty, json!({"test": {"teststrategy": "Locust"}})))
                .is_empty()
        );

        let number = single(ty, Some(("$.data.replicas", "3")));
        assert_eq!(number.matching(&event(ty, json!({"replicas": 3}))), [0]);
        assert_eq!(number.matching(&event(ty, json!({"replicas": "3"}))), [0]);
        assert!(
            number
                .matching(&event(ty, json!({"replicas": 3.5})))
                .is_empty()
        );

        let boolean = single(ty, Some(("$.data.enabled", "true")));
        assert_eq!(boolean.matching(&event(ty, json!({"enabled": true}))), [0]);
        assert!(
            boolean
                .matching(&event(ty, json!({"enabled": false})))
                .is_empty()
        );
    }

    #[test]
    fn jsonpath_over_arrays_and_attributes() {
        let ty = "sh.keptn.event.deployment.triggered";
        let any_item = single(ty, Some(("$.data.deployment.deploymentNames[*]", "canary")));
        assert_eq!(
            any_item.matching(&event(
                ty,
                json!({"deployment": {"deploymentNames": ["direct", "canary"]}})
            )),
            [0]
        );
        // Refused, every node it resolved to is named, as JSON, by `decide` and `explain` alike.
        let neither = event(
            ty,
            json!({"deployment": {"deploymentNames": ["direct", 7]}}),
        );
        let reason = "$.data.deployment.deploymentNames[*] is \"direct\", 7, not \"canary\"";
        assert_eq!(
            any_item.decide(&neither).refused[0].outcome,
            Err(reason.into())
        );
        assert_eq!(any_item.explain(&neither)[0].outcome, Err(reason.into()));
        let indexed = single(ty, Some(("$.data.list[1]", "b")));
        assert_eq!(
            indexed.matching(&event(ty, json!({"list": ["a", "b"]}))),
            [0]
        );
        assert!(
            indexed
                .matching(&event(ty, json!({"list": ["a"]})))
                .is_empty()
        );
        let attribute = single(ty, Some(("$.shkeptncontext", "ctx-1")));
        assert_eq!(attribute.matching(&event(ty, json!({}))), [0]);
        let source = single(ty, Some(("$.source", "test")));
        assert_eq!(source.matching(&event(ty, json!({}))), [0]);
    }

    #[test]
    fn a_missing_path_is_no_match_with_a_reason() {
        let ty = "sh.keptn.event.test.triggered";
        let m = single(ty, Some(("$.data.test.teststrategy", "locust")));
        let e = event(ty, json!({"project": "p"}));
        assert!(m.matching(&e).is_empty());
        assert_eq!(
            m.explain(&e)[0].outcome,
            Err("$.data.test.teststrategy resolves to nothing".to_string())
        );
        let other = event(ty, json!({"test": {"teststrategy": "jmeter"}}));
        assert_eq!(
            m.explain(&other)[0].outcome,
            Err("$.data.test.teststrategy is \"jmeter\", not \"locust\"".to_string())
        );
    }

    #[test]
    fn any_of_several_events_is_enough_and_every_action_runs_in_order() {
        let m = matcher(
            r#"apiVersion: v2
actions:
  - name: first
    events:
      - name: sh.keptn.event.deployment.triggered
      - name: sh.keptn.event.test.triggered
        jsonpath: {property: "$.data.test.teststrategy", match: "locust"}
    tasks: [{image: alpine}]
  - name: never
    events:
      - name: sh.keptn.event.release.triggered
    tasks: [{image: alpine}]
  - name: third
    silent: true
    events:
      - name: "sh.keptn.event.*.triggered"
    tasks: [{image: alpine}]
"#,
        );
        let e = event(
            "sh.keptn.event.test.triggered",
            json!({"test": {"teststrategy": "locust"}}),
        );
        assert_eq!(m.matching(&e), [0, 2]);
        let verdicts = m.explain(&e);
        assert_eq!(verdicts[1].name, "never");
        assert_eq!(
            verdicts[1].outcome,
            Err("event type \"sh.keptn.event.test.triggered\" matches none of \"sh.keptn.event.release.triggered\"".to_string())
        );
        let no_strategy = event("sh.keptn.event.test.triggered", json!({}));
        assert_eq!(m.matching(&no_strategy), [2]);
        // `decide` names only the actions that listen for the type and still do not run.
        assert_eq!(
            m.decide(&no_strategy),
            Decision {
                matched: vec![2],
                refused: vec![ActionVerdict {
                    index: 0,
                    name: "first".into(),
                    outcome: Err("$.data.test.teststrategy resolves to nothing".into()),
                }],
                refused_more: 0,
            }
        );
        assert_eq!(
            m.decide(&event("sh.keptn.event.other.started", json!({}))),
            Decision::default()
        );
    }

    /// Two glob filters of one action both match the type; the first condition fails, the
    /// second passes: the action runs, and is not also reported as refused.
    #[test]
    fn an_action_whose_second_condition_passes_is_decided_once() {
        let m = matcher(
            r#"apiVersion: v2
actions:
  - name: a
    events:
      - name: "sh.keptn.event.*.triggered"
        jsonpath: {property: "$.data.stage", match: "dev"}
      - name: "sh.keptn.event.test.*"
        jsonpath: {property: "$.data.stage", match: "prod"}
    tasks: [{image: alpine}]
  - name: b
    events:
      - name: "sh.keptn.event.*.triggered"
    tasks: [{image: alpine}]
"#,
        );
        let decision = m.decide(&event(
            "sh.keptn.event.test.triggered",
            json!({"stage": "prod"}),
        ));
        // Both run: the first's second condition passed, the second has none.
        assert_eq!(decision.matched, vec![0, 1]);
        assert!(decision.refused.is_empty(), "{decision:?}");
        let refused = m.decide(&event(
            "sh.keptn.event.test.triggered",
            json!({"stage": "qa"}),
        ));
        assert_eq!(refused.matched, vec![1]);
        assert_eq!(refused.refused.len(), 1, "{refused:?}");
        assert_eq!(refused.refused[0].index, 0);
    }

    #[test]
    fn decide_agrees_with_explain() {
        let m = matcher(
            r#"apiVersion: v2
actions:
  - name: a
    events:
      - name: "sh.keptn.event.*.triggered"
        jsonpath: {property: "$.data.stage", match: "dev"}
      - name: sh.keptn.event.test.triggered
        jsonpath: {property: "$.data.stage", match: "prod"}
    tasks: [{image: alpine}]
  - name: b
    events:
      - name: sh.keptn.event.test.triggered
        jsonpath: {property: "$.data.stage", match: "prod"}
      - name: sh.keptn.event.test.triggered
    tasks: [{image: alpine}]
  - name: c
    events: [{name: sh.keptn.event.deployment.triggered}]
    tasks: [{image: alpine}]
"#,
        );
        for (event_type, stage) in [
            ("sh.keptn.event.test.triggered", "dev"),
            ("sh.keptn.event.test.triggered", "prod"),
            ("sh.keptn.event.test.triggered", "qa"),
            ("sh.keptn.event.deployment.triggered", "qa"),
            ("sh.keptn.event.release.finished", "dev"),
        ] {
            let e = event(event_type, json!({"stage": stage}));
            let decision = m.decide(&e);
            let explained = m.explain(&e);
            let runs: Vec<usize> = explained
                .iter()
                .filter(|v| v.outcome.is_ok())
                .map(|v| v.index)
                .collect();
            assert_eq!(decision.matched, runs, "{event_type} {stage}");
            for refused in &decision.refused {
                assert_eq!(&explained[refused.index], refused, "{event_type} {stage}");
            }
        }
        let qa = m.decide(&event(
            "sh.keptn.event.test.triggered",
            json!({"stage": "qa"}),
        ));
        assert_eq!(qa.matched, [1]);
        assert_eq!(qa.refused.len(), 1);
        assert_eq!(
            qa.refused[0].outcome,
            Err("$.data.stage is \"qa\", not \"dev\"".to_string())
        );
    }

    #[test]
    fn plain_paths_say_what_they_go_through() {
        let none: Option<&[&str]> = None;
        for (property, names) in [
            (
                "$.data.test.teststrategy",
                Some(&["data", "test", "teststrategy"][..]),
            ),
            ("$.data.project", Some(&["data", "project"])),
            ("$.data._x1", Some(&["data", "_x1"])),
            ("$.type", Some(&["type"])),
            ("$.shkeptncontext.x", Some(&["shkeptncontext", "x"])),
            ("$.data", none),
            ("$", none),
            ("$.data.a[0]", none),
            ("$.data['a']", Some(&["data", "a"])),
            ("$.data.*", none),
            ("$..project", none),
            ("$.data..x", none),
            ("$.data.1a", none),
            ("$.data.a-b", none),
            ("$.data.", none),
            ("$.data.a[?@.b == $.data.c]", none),
            ("$.data.ü", none),
            (
                "$.data['get-sli'].sliProvider",
                Some(&["data", "get-sli", "sliProvider"]),
            ),
            ("$[\"data\"][\"a b\"]", Some(&["data", "a b"])),
            ("$['type']", Some(&["type"])),
            ("$.data['a\\'b']", none),
            ("$.data[ 'a' ]", none),
            ("$.data['a']x", none),
            ("$.data['a'", none),
            ("$.data[\"a']", none),
        ] {
            let names = names.map(|names| names.iter().map(|n| n.to_string()).collect());
            assert_eq!(plain_names(property), names, "{property}");
        }
    }

    #[test]
    fn only_a_config_of_plain_paths_is_decided_from_a_sketch() {
        let condition = |property: &str| {
            format!(
                "  - name: a\n    events:\n      - name: sh.keptn.event.test.triggered\n        \
                 jsonpath: {{property: \"{property}\", match: x}}\n    tasks: [{{image: alpine}}]\n"
            )
        };
        let config = |properties: &[&str]| {
            let actions: String = properties.iter().map(|p| condition(p)).collect();
            matcher(&format!("apiVersion: v2\nactions:\n{actions}"))
        };
        let text = r#"{"specversion":"1.0","id":"1","source":"s","type":"sh.keptn.event.test.triggered",
            "data":{"test":{"a":"x"},"tests":["x"]}}"#;
        let sketch = EventSketch::read(text).unwrap();
        let plain = config(&["$.data.test.a", "$.type", "$.data.result"]);
        assert_eq!(plain.decide_sketch(&sketch).unwrap().matched, [0]);
        assert_eq!(
            config(&["$.data.test.a", "$.data.tests[0]"]).decide_sketch(&sketch),
            None
        );
        assert_eq!(config(&["$.data"]).decide_sketch(&sketch), None);
        let no_conditions =
            matcher("apiVersion: v2\nactions:\n  - name: a\n    tasks: [{image: alpine}]\n");
        assert!(no_conditions.decide_sketch(&sketch).is_some());
    }

    proptest::proptest! {
        /// An event's sketch is decided as the whole event is, for configs of plain paths:
        /// what the receiver's answer to an event that starts nothing relies on.
        #[test]
        fn decided_alike_from_the_sketch(
            paths in proptest::collection::vec(("(a|b|c)", "(x|y)?", proptest::bool::ANY), 1..4),
            matches in proptest::collection::vec("(1|v|true|100\\.0|\\{\"x\":1\\})", 1..4),
            data in proptest::collection::vec(
                ("(a|b|c|d|project)", proptest::prop_oneof![
                    proptest::strategy::Just("1"),
                    proptest::strategy::Just("1e2"),
                    proptest::strategy::Just("\"v\""),
                    proptest::strategy::Just("\"\\u0076\""),
                    proptest::strategy::Just("{\"x\":\"v\",\"y\":[1,true]}"),
                    proptest::strategy::Just("{\"x\":1,\"x\":{\"x\":1}}"),
                    proptest::strategy::Just("{\"\\u0078\":1}"),
                ]),
                0..5,
            ),
        ) {
            let mut yaml = String::from("apiVersion: v2\nactions:\n");
            for (index, (field, under, bracketed)) in paths.iter().enumerate() {
                let field = if *bracketed { format!("['{field}']") } else { format!(".{field}") };
                let property = match under.as_str() {
                    "" => format!("$.data{field}"),
                    under => format!("$.data{field}.{under}"),
                };
                let expected = &matches[index % matches.len()];
                yaml.push_str(&format!(
                    "  - name: a{index}\n    events:\n      - name: t\n        jsonpath: \
                     {{property: \"{property}\", match: {expected:?}}}\n    tasks: [{{image: alpine}}]\n"
                ));
            }
            let m = matcher(&yaml);
            // The text as sent, fields repeated and escaped as they come.
            let fields: Vec<String> =
                data.iter().map(|(name, value)| format!("{name:?}:{value}")).collect();
            let text = format!(
                r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{{{}}}}}"#,
                fields.join(",")
            );
            let whole = CloudEvent::from_json(text.as_bytes()).unwrap();
            let sketch = EventSketch::read(&text).unwrap();
            proptest::prop_assert_eq!(m.decide_sketch(&sketch), Some(m.decide(&whole)));
        }
    }

    proptest::proptest! {
        /// Who listens for a type is found by hashing exact names and matching only the globs,
        /// as one `GlobSet` of every filter's name would find it, by `decide` and `explain`
        /// alike.
        #[test]
        fn exact_names_and_globs_find_who_listens_as_one_glob_set(
            names in proptest::collection::vec(
                "(a\\.b|a\\.c|x|a\\.\\*|\\*\\.b|a\\.\\?|\\{a,x\\}\\.b|\\[ax\\]\\.c|a\\\\\\.b)",
                1..6,
            ),
            event_type in "(a|x|y)\\.(b|c|bb)|x|a\\.b\\\\",
        ) {
            let actions: String = names
                .iter()
                .map(|name| format!("  - events: [{{name: {name:?}}}]\n    tasks: [{{image: alpine}}]\n"))
                .collect();
            let m = matcher(&format!("apiVersion: v2\nactions:\n{actions}"));
            let mut every = GlobSetBuilder::new();
            for name in &names {
                every.add(formats::event_glob(name).unwrap());
            }
            let mut expected = every.build().unwrap().matches(&event_type);
            expected.sort_unstable();
            proptest::prop_assert_eq!(&m.listening(&event_type).into_owned(), &expected);
            // One filter per action, without a condition: the actions `explain` runs are those.
            let explained = m.explain(&event(&event_type, json!({})));
            let runs: Vec<usize> = (explained.iter())
                .filter(|verdict| verdict.outcome.is_ok())
                .map(|verdict| verdict.index)
                .collect();
            proptest::prop_assert_eq!(runs, expected);
        }
    }

    #[test]
    fn an_action_without_events_never_matches() {
        let m = matcher("apiVersion: v2\nactions:\n  - name: idle\n    tasks: [{image: alpine}]\n");
        let e = event("sh.keptn.event.test.triggered", json!({}));
        assert!(m.matching(&e).is_empty());
        assert_eq!(
            m.explain(&e)[0].outcome,
            Err("the action has no events".to_string())
        );
    }

    #[test]
    fn of_many_refusals_the_first_few_are_explained_and_the_rest_counted() {
        let actions: String = (0..20)
            .map(|i| {
                format!(
                    "  - name: gate-{i}\n    events:\n      - name: sh.keptn.event.gate.triggered\n        jsonpath: {{property: $.data.test.teststrategy, match: s{i}}}\n    tasks: [{{image: alpine}}]\n"
                )
            })
            .collect();
        let m = matcher(&format!("apiVersion: v2\nactions:\n{actions}"));
        let none = event(
            "sh.keptn.event.gate.triggered",
            json!({"test": {"teststrategy": "none"}}),
        );
        let decision = m.decide(&none);
        assert!(decision.matched.is_empty());
        let names: Vec<&str> = decision.refused.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["gate-0", "gate-1", "gate-2"]);
        assert_eq!(
            decision.refused[2].outcome,
            Err("$.data.test.teststrategy is \"none\", not \"s2\"".to_string())
        );
        assert_eq!(decision.refused_more, 17);
        // A number compares by its JSON text, as `explain` says.
        let seven = event(
            "sh.keptn.event.gate.triggered",
            json!({"test": {"teststrategy": 7}}),
        );
        assert_eq!(m.decide(&seven).refused_more, 17);
        let s7 = event(
            "sh.keptn.event.gate.triggered",
            json!({"test": {"teststrategy": "s7"}}),
        );
        let decision = m.decide(&s7);
        assert_eq!(decision.matched, [7]);
        assert_eq!((decision.refused.len(), decision.refused_more), (3, 16));
    }
}
