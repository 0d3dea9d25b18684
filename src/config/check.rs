//! The structural check: walks a located YAML tree along the JSON Schema generated from the
//! config types, collects every problem with its key path and location, and produces the JSON
//! value serde then reads.
//!
//! Driving the check from the generated schema keeps the loader, the published schema and the
//! Rust types in step: a key added to the types is accepted here and documented there.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::formats::check_format;
use super::yaml::{Location, Node, NodeValue};

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub location: Location,
    /// The key path, e.g. `actions[1].tasks[0].resources.limits.cpu`; empty for the document.
    pub path: String,
    pub message: String,
}

/// The outcome of the structural check.
pub struct Checked {
    /// What could be read: a part with a problem is left out of its mapping and is null in its
    /// list, so the value is complete exactly when `problems` is empty, and the parts free of
    /// problems can still be read on their own.
    pub value: Value,
    pub problems: Vec<Problem>,
    /// Where each key path's value starts, for problems found later on the typed model.
    pub locations: HashMap<String, Location>,
}

pub fn check(node: &Node, schema: &Value) -> Checked {
    let mut walker = Walker {
        root: schema,
        problems: Vec::new(),
        locations: HashMap::new(),
    };
    let value = walker.walk(node, schema, "").unwrap_or(Value::Null);
    Checked {
        value,
        problems: walker.problems,
        locations: walker.locations,
    }
}

/// `parent.key`, or `parent["odd key"]` when the key is not a plain identifier.
pub fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// The longest name a "did you mean" hint is looked for (a distance between two texts takes
/// the product of their lengths: two names of a config's megabyte would take minutes).
const MOST_SUGGESTED_LENGTH: usize = 128;

/// The closest known key, for "did you mean" hints.
pub fn suggest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if wrong.len() > MOST_SUGGESTED_LENGTH {
        return None;
    }
    let close_enough = |candidate: &str| 2.max(candidate.len() / 4);
    candidates
        .into_iter()
        // The distance is at least the difference of the lengths.
        .filter(|candidate| {
            candidate.len() <= MOST_SUGGESTED_LENGTH
                && candidate.len().abs_diff(wrong.len()) <= close_enough(candidate)
        })
        .map(|candidate| {
            let distance = if candidate.eq_ignore_ascii_case(wrong) {
                0
            } else {
                strsim::levenshtein(&wrong.to_ascii_lowercase(), &candidate.to_ascii_lowercase())
            };
            (distance, candidate)
        })
        .filter(|(distance, candidate)| *distance <= close_enough(candidate))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// The fixed strings a value may be, and whether it may be null.
#[derive(Default)]
struct Choice<'s> {
    values: Vec<&'s str>,
    nullable: bool,
    /// A value is read whatever its case (`x-ignore-case`: Keptn's service compared `as`
    /// that way).
    ignore_case: bool,
}

impl<'s> Choice<'s> {
    /// Adds one allowed value; `None` when it is not a string (not a choice this check reads).
    fn add(&mut self, value: &'s Value) -> Option<()> {
        match value {
            Value::Null => self.nullable = true,
            Value::String(text) => {
                if !self.values.contains(&text.as_str()) {
                    self.values.push(text);
                }
            }
            _ => return None,
        }
        Some(())
    }
}

fn is_empty_string(node: &Node) -> bool {
    matches!(&node.value, NodeValue::Scalar { text, plain: false } if text.is_empty())
}

struct Walker<'s> {
    root: &'s Value,
    problems: Vec<Problem>,
    locations: HashMap<String, Location>,
}

impl<'s> Walker<'s> {
    fn problem(&mut self, location: Location, path: &str, message: String) {
        self.problems.push(Problem {
            location,
            path: path.to_string(),
            message,
        });
    }

    /// A walker for a tentative walk, whose findings the caller keeps or drops.
    fn trial(&self) -> Walker<'s> {
        Walker {
            root: self.root,
            problems: Vec::new(),
            locations: HashMap::new(),
        }
    }

    /// Follows `$ref`s into `$defs`.
    fn resolve(&self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..32 {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let Some(target) = reference
                .strip_prefix("#/$defs/")
                .and_then(|name| self.root.get("$defs")?.get(name))
            else {
                break;
            };
            schema = target;
        }
        schema
    }

    fn walk(&mut self, node: &Node, schema: &'s Value, path: &str) -> Option<Value> {
        self.locations.insert(path.to_string(), node.location);
        let schema = self.resolve(schema);
        if let Some(choice) = self.choice(schema) {
            return self.walk_choice(node, &choice, path);
        }
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            return self.walk_alternatives(node, branches, path);
        }
        let types = schema_types(schema);
        if node.is_null() {
            if types.contains(&"null") {
                return Some(Value::Null);
            }
            let expected = describe_types(&types);
            self.problem(
                node.location,
                path,
                format!("expected {expected}, found nothing (null)"),
            );
            return None;
        }
        if types.contains(&"object") {
            return self.walk_object(node, schema, path);
        }
        if types.contains(&"array") {
            return self.walk_array(node, schema, path);
        }
        let NodeValue::Scalar { text, plain } = &node.value else {
            let expected = describe_types(&types);
            let found = node.describe();
            self.problem(
                node.location,
                path,
                format!("expected {expected}, found {found}"),
            );
            return None;
        };
        if types.contains(&"string") {
            return self.walk_string(node, text, schema, path);
        }
        if types.contains(&"integer") {
            return self.walk_integer(node, text, *plain, schema, path);
        }
        if types.contains(&"number") {
            if *plain
                && let Some(number) = text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
            {
                return Some(Value::Number(number));
            }
            self.problem(
                node.location,
                path,
                format!("expected a number, found {text:?}"),
            );
            return None;
        }
        if types.contains(&"boolean") {
            // YAML 1.2's forms, and YAML 1.1's that Keptn's service (Go's yaml.v2) read too.
            return match (plain, text.as_str()) {
                (
                    true,
                    "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "y" | "Y" | "on" | "On"
                    | "ON",
                ) => Some(Value::Bool(true)),
                (
                    true,
                    "false" | "False" | "FALSE" | "no" | "No" | "NO" | "n" | "N" | "off" | "Off"
                    | "OFF",
                ) => Some(Value::Bool(false)),
                _ => {
                    self.problem(
                        node.location,
                        path,
                        format!("expected true or false, found {text:?}"),
                    );
                    None
                }
            };
        }
        // A schema without a type accepts any scalar as its text.
        Some(Value::String(text.clone()))
    }

    fn walk_alternatives(
        &mut self,
        node: &Node,
        branches: &'s [Value],
        path: &str,
    ) -> Option<Value> {
        let (nullable, others): (Vec<&Value>, Vec<&Value>) = branches
            .iter()
            .partition(|branch| branch.get("type").and_then(Value::as_str) == Some("null"));
        if node.is_null() && !nullable.is_empty() {
            return Some(Value::Null);
        }
        let mut best: Option<(Option<Value>, Vec<Problem>)> = None;
        for branch in others {
            let mut trial = self.trial();
            let value = trial.walk(node, branch, path);
            if trial.problems.is_empty() {
                self.locations.extend(trial.locations);
                return value;
            }
            if best
                .as_ref()
                .is_none_or(|(_, problems)| trial.problems.len() < problems.len())
            {
                best = Some((value, trial.problems));
            }
        }
        let Some((value, problems)) = best else {
            let found = node.describe();
            self.problem(
                node.location,
                path,
                format!("expected nothing (null), found {found}"),
            );
            return None;
        };
        self.problems.extend(problems);
        value
    }

    /// The values `schema` allows when it is a choice among fixed strings: an `enum`, a
    /// `const`, or `oneOf` / `anyOf` branches that are each one of those or null. schemars
    /// writes a plain Rust enum as `enum`, one with documented variants as a `oneOf` of
    /// `const`s, and an optional one as an `anyOf` with null; all of them are checked here, in
    /// one place, so every choice gets the same message.
    fn choice(&self, schema: &'s Value) -> Option<Choice<'s>> {
        self.choice_within(schema, 8)
    }

    /// `choice`, looking at most `depth` alternatives deep (a guard against a schema whose
    /// alternatives refer back to themselves).
    fn choice_within(&self, schema: &'s Value, depth: usize) -> Option<Choice<'s>> {
        let ignore_case = schema.get("x-ignore-case") == Some(&Value::Bool(true));
        let schema = self.resolve(schema);
        let mut choice = Choice {
            ignore_case,
            ..Choice::default()
        };
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            for value in values {
                choice.add(value)?;
            }
        } else if let Some(value) = schema.get("const") {
            choice.add(value)?;
        } else if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            for branch in branches {
                let branch = self.resolve(branch);
                if branch.get("type").and_then(Value::as_str) == Some("null")
                    && branch.get("enum").is_none()
                    && branch.get("const").is_none()
                {
                    choice.nullable = true;
                    continue;
                }
                let inner = self.choice_within(branch, depth.checked_sub(1)?)?;
                choice.nullable |= inner.nullable;
                for value in inner.values {
                    if !choice.values.contains(&value) {
                        choice.values.push(value);
                    }
                }
            }
        } else {
            return None;
        }
        if schema_types(schema).contains(&"null") {
            choice.nullable = true;
        }
        (!choice.values.is_empty()).then_some(choice)
    }

    fn walk_choice(&mut self, node: &Node, choice: &Choice<'_>, path: &str) -> Option<Value> {
        let list = choice
            .values
            .iter()
            .map(|value| format!("\"{value}\""))
            .collect::<Vec<_>>()
            .join(", ");
        if node.is_null() {
            if choice.nullable {
                return Some(Value::Null);
            }
            self.problem(
                node.location,
                path,
                format!("expected one of {list}, found nothing (null)"),
            );
            return None;
        }
        let NodeValue::Scalar { text, .. } = &node.value else {
            let found = node.describe();
            self.problem(
                node.location,
                path,
                format!("expected one of {list}, found {found}"),
            );
            return None;
        };
        if choice.values.contains(&text.as_str()) {
            return Some(Value::String(text.clone()));
        }
        if let Some(value) = choice
            .values
            .iter()
            .find(|value| choice.ignore_case && value.eq_ignore_ascii_case(text))
        {
            return Some(Value::String(value.to_string()));
        }
        let hint = (choice.values.len() > 1)
            .then(|| suggest(text, choice.values.iter().copied()))
            .flatten()
            .map(|s| format!(", did you mean \"{s}\"?"))
            .unwrap_or_default();
        self.problem(
            node.location,
            path,
            format!("invalid value \"{text}\": expected one of {list}{hint}"),
        );
        None
    }

    fn walk_object(&mut self, node: &Node, schema: &'s Value, path: &str) -> Option<Value> {
        let NodeValue::Mapping(entries) = &node.value else {
            let found = node.describe();
            self.problem(
                node.location,
                path,
                format!("expected a mapping, found {found}"),
            );
            return None;
        };
        let properties = schema.get("properties").and_then(Value::as_object);
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let additional = schema.get("additionalProperties");
        let mut object = Map::new();
        let mut seen = HashSet::new();
        for (key_node, value_node) in entries {
            let NodeValue::Scalar { text: key, .. } = &key_node.value else {
                self.problem(
                    key_node.location,
                    path,
                    "a key must be a plain string".to_string(),
                );
                continue;
            };
            let child_path = key_path(path, key);
            let property = properties.and_then(|p| p.get(key.as_str()));
            let child_schema = match (property, additional) {
                (Some(property), _) => property,
                (None, Some(additional)) if additional.is_object() => additional,
                (None, Some(Value::Bool(false))) => {
                    let hint = properties
                        .and_then(|p| suggest(key, p.keys().map(String::as_str)))
                        .map(|s| format!(", did you mean \"{s}\"?"))
                        .unwrap_or_default();
                    self.problem(
                        key_node.location,
                        &child_path,
                        format!("unknown key \"{key}\"{hint}"),
                    );
                    continue;
                }
                (None, _) => &Value::Bool(true),
            };
            let first = seen.insert(key.as_str());
            // Like the old service (Go's YAML reader), an empty optional key means "not set";
            // so does an empty string where the old service took Go's zero value for "not set"
            // (`x-empty-is-unset`: a pull policy, a namespace, a quantity).
            let unset = value_node.is_null()
                || (is_empty_string(value_node)
                    && property.is_some_and(|property| {
                        property.get("x-empty-is-unset") == Some(&Value::Bool(true))
                    }));
            if unset && property.is_some() && !required.contains(&key.as_str()) {
                if first {
                    self.locations.insert(child_path, value_node.location);
                }
                continue;
            }
            if !first {
                // A duplicate key, which the YAML reader reported: what is wrong in its value
                // is reported too, but the first entry stays the one that is read and located.
                let mut duplicate = self.trial();
                duplicate.walk(value_node, child_schema, &child_path);
                self.problems.append(&mut duplicate.problems);
                continue;
            }
            if let Some(value) = self.walk(value_node, child_schema, &child_path) {
                object.insert(key.clone(), value);
            }
        }
        for name in required {
            if !object.contains_key(name) && !entries.iter().any(|(k, _)| is_key(k, name)) {
                self.problem(
                    node.location,
                    path,
                    format!("missing required key \"{name}\""),
                );
            }
        }
        Some(Value::Object(object))
    }

    fn walk_array(&mut self, node: &Node, schema: &'s Value, path: &str) -> Option<Value> {
        let NodeValue::Sequence(items) = &node.value else {
            let found = node.describe();
            self.problem(
                node.location,
                path,
                format!("expected a list, found {found}"),
            );
            return None;
        };
        let item_schema = schema.get("items").unwrap_or(&Value::Bool(true));
        let values = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                self.walk(item, item_schema, &index_path(path, index))
                    .unwrap_or(Value::Null)
            })
            .collect();
        Some(Value::Array(values))
    }

    fn walk_string(
        &mut self,
        node: &Node,
        text: &str,
        schema: &Value,
        path: &str,
    ) -> Option<Value> {
        let min_length = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        if (text.chars().count() as u64) < min_length {
            self.problem(node.location, path, "must not be empty".to_string());
            return None;
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str)
            && let Err(message) = check_format(format, text)
        {
            self.problem(node.location, path, message);
            return None;
        }
        Some(Value::String(text.to_string()))
    }

    fn walk_integer(
        &mut self,
        node: &Node,
        text: &str,
        plain: bool,
        schema: &Value,
        path: &str,
    ) -> Option<Value> {
        if let Some(message) = plain.then(|| leading_zero(text)).flatten() {
            self.problem(node.location, path, message);
            return None;
        }
        let Some(number) = plain.then(|| parse_yaml_int(text)).flatten() else {
            let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
            let message =
                if plain && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    format!("{text} is out of range: must be a 64-bit integer")
                } else {
                    format!("expected an integer, found {text:?}")
                };
            self.problem(node.location, path, message);
            return None;
        };
        let minimum = schema.get("minimum").and_then(Value::as_f64);
        let maximum = schema.get("maximum").and_then(Value::as_f64);
        // The schema also carries the Rust type's own bounds (for example i32) as formats.
        let (type_min, type_max) = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
            Some("uint32") => (0, i64::from(u32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        let below = minimum.is_some_and(|m| (number as f64) < m) || number < type_min;
        let above = maximum.is_some_and(|m| (number as f64) > m) || number > type_max;
        if below || above {
            let low = minimum.map_or(type_min, |m| m as i64).max(type_min);
            let high = maximum.map_or(type_max, |m| m as i64).min(type_max);
            // A bound that is only the type's is named only when it is the one passed.
            let type_bound_only = high == i64::MAX || high == i64::from(i32::MAX);
            let range = if above && type_bound_only {
                format!("at most {high}")
            } else if type_bound_only {
                format!("at least {low}")
            } else {
                format!("between {low} and {high}")
            };
            self.problem(
                node.location,
                path,
                format!("{number} is out of range: must be {range}"),
            );
            return None;
        }
        Some(Value::from(number))
    }
}

fn is_key(node: &Node, name: &str) -> bool {
    matches!(&node.value, NodeValue::Scalar { text, .. } if text == name)
}

fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ if schema.get("properties").is_some() => vec!["object"],
        _ => Vec::new(),
    }
}

fn describe_types(types: &[&str]) -> String {
    let names: Vec<&str> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "object" => "a mapping",
            "array" => "a list",
            "string" => "a string",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "true or false",
            _ => "a value",
        })
        .collect();
    if names.is_empty() {
        "a value".to_string()
    } else {
        names.join(" or ")
    }
}

/// The problem of an integer written with a leading zero (`0600`): the old service's YAML 1.1
/// reader took it as octal (384), YAML 1.2 as decimal (600). Read either way, a file that meant
/// the other would change meaning without a word: it is refused, saying both.
fn leading_zero(text: &str) -> Option<String> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let rest = digits.strip_prefix('0')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let decimal = rest.trim_start_matches('0');
    let decimal = if decimal.is_empty() { "0" } else { decimal };
    let sign = if text.starts_with('-') { "-" } else { "" };
    Some(match i64::from_str_radix(rest, 8) {
        // `07`: both read 7.
        Ok(octal) if decimal.parse() == Ok(octal) => return None,
        Ok(octal) => format!(
            "{text} starts with 0: Keptn's job-executor-service (YAML 1.1) read it as the octal \
             {sign}{octal}, YAML 1.2 reads the decimal {sign}{decimal}; write {sign}{octal} or \
             {sign}{decimal} (or {sign}0o{rest} for octal)"
        ),
        // `0900` is no octal: the old service's reader took it as the number 900 too.
        Err(_) => return None,
    })
}

/// YAML 1.2 core schema integers: decimal, `0o` octal, `0x` hex.
fn parse_yaml_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    // Digits only after the prefix: `from_str_radix` takes a sign of its own (`0x-5`).
    let all =
        |text: &str, digit: fn(&u8) -> bool| !text.is_empty() && text.bytes().all(|b| digit(&b));
    let magnitude: i64 = if let Some(hex) = digits.strip_prefix("0x") {
        all(hex, u8::is_ascii_hexdigit).then(|| i64::from_str_radix(hex, 16).ok())??
    } else if let Some(octal) = digits.strip_prefix("0o") {
        all(octal, |b| (b'0'..=b'7').contains(b)).then(|| i64::from_str_radix(octal, 8).ok())??
    } else if all(digits, u8::is_ascii_digit) {
        // With its sign: the magnitude of i64::MIN is no i64.
        return text.parse().ok();
    } else {
        return None;
    };
    if negative {
        magnitude.checked_neg()
    } else {
        Some(magnitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs only before the prefix; nothing that overflows.
    #[test]
    fn yaml_integers_are_read_as_the_core_schema_writes_them() {
        assert_eq!(parse_yaml_int("0x1f"), Some(31));
        assert_eq!(parse_yaml_int("-0o17"), Some(-15));
        assert_eq!(parse_yaml_int("+42"), Some(42));
        for text in [
            "0x-5",
            "-0x-5",
            "0x+5",
            "0o8",
            "0x",
            "-",
            "-0x-8000000000000000",
            "1_000",
        ] {
            assert_eq!(parse_yaml_int(text), None, "{text}");
        }
        assert_eq!(parse_yaml_int("-0x7fffffffffffffff"), Some(-i64::MAX));
        assert_eq!(parse_yaml_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_yaml_int("9223372036854775808"), None);
    }

    /// `0600` meant 384 to the old service and means 600 in YAML 1.2: refused, saying both.
    #[test]
    fn an_integer_with_a_leading_zero_is_refused_naming_both_readings() {
        assert_eq!(
            leading_zero("0600").as_deref(),
            Some(
                "0600 starts with 0: Keptn's job-executor-service (YAML 1.1) read it as the octal \
                 384, YAML 1.2 reads the decimal 600; write 384 or 600 (or 0o600 for octal)"
            )
        );
        assert_eq!(
            leading_zero("-010").as_deref(),
            Some(
                "-010 starts with 0: Keptn's job-executor-service (YAML 1.1) read it as the octal \
                 -8, YAML 1.2 reads the decimal -10; write -8 or -10 (or -0o10 for octal)"
            )
        );
        for fine in [
            "0", "-0", "000", "07", "0900", "08", "600", "0x10", "0o17", "+7",
        ] {
            assert_eq!(leading_zero(fine), None, "{fine}");
        }
    }

    #[test]
    fn key_paths_quote_odd_keys() {
        assert_eq!(key_path("", "actions"), "actions");
        assert_eq!(key_path("a", "b"), "a.b");
        assert_eq!(
            key_path("labels", "app.kubernetes.io/name"),
            "labels[\"app.kubernetes.io/name\"]"
        );
        assert_eq!(index_path("actions", 2), "actions[2]");
    }

    #[test]
    fn suggestions_pick_close_keys_only() {
        let keys = ["image", "imagePullPolicy", "name", "workingDir"];
        assert_eq!(suggest("imag", keys), Some("image"));
        assert_eq!(suggest("workingdir", keys), Some("workingDir"));
        assert_eq!(suggest("completelyelse", keys), None);
        // Long names are not compared (the distance takes the product of their lengths).
        let long = "a".repeat(200);
        let near = format!("{long}b");
        assert_eq!(suggest(&near, [long.as_str()]), None);
    }

    #[test]
    fn yaml_integers() {
        assert_eq!(parse_yaml_int("42"), Some(42));
        assert_eq!(parse_yaml_int("-7"), Some(-7));
        assert_eq!(parse_yaml_int("0x1f"), Some(31));
        assert_eq!(parse_yaml_int("0o17"), Some(15));
        assert_eq!(parse_yaml_int("1.5"), None);
        assert_eq!(parse_yaml_int("ten"), None);
    }

    #[test]
    fn keys_with_dashes_and_underscores_are_plain_in_key_paths() {
        assert_eq!(key_path("labels", "team-a"), "labels.team-a");
        assert_eq!(key_path("labels", "team_a"), "labels.team_a");
        assert_eq!(key_path("", "a-b_c"), "a-b_c");
        assert_eq!(key_path("labels", "team a"), "labels[\"team a\"]");
    }

    #[test]
    fn a_long_key_is_suggested_up_to_a_quarter_of_its_length_away() {
        // "ttlSecondsAfterFinished" has 23 characters: 5 edits away is still close.
        let keys = ["ttlSecondsAfterFinished", "image"];
        assert_eq!(
            suggest("ttlSecAfterFinished", keys),
            Some("ttlSecondsAfterFinished")
        );
        assert_eq!(suggest("ttlAfterFinished", keys), None);
    }

    /// What `check` reads from `text` against a hand-written `schema`, and its problems as
    /// `line:column: path: message`.
    fn check_text(text: &str, schema: &Value) -> (Value, Vec<String>) {
        let document = crate::config::yaml::parse_document(text).unwrap();
        let checked = check(&document.root, schema);
        let problems = checked
            .problems
            .iter()
            .map(|p| format!("{}: {}: {}", p.location, p.path, p.message))
            .collect();
        (checked.value, problems)
    }

    #[test]
    fn a_null_among_the_values_of_a_choice_allows_nothing() {
        let schema = serde_json::json!({"enum": ["a", "b", null]});
        assert_eq!(check_text("~", &schema), (Value::Null, vec![]));
        assert_eq!(check_text("b", &schema), (Value::from("b"), vec![]));
        assert_eq!(
            check_text("c", &schema),
            (
                Value::Null,
                vec![
                    "1:1: : invalid value \"c\": expected one of \"a\", \"b\", did you mean \"a\"?"
                        .to_string()
                ]
            )
        );
    }

    #[test]
    fn of_failing_alternatives_the_one_with_fewest_problems_is_reported() {
        let object = |properties: Value| {
            serde_json::json!({
                "type": "object", "properties": properties, "additionalProperties": false
            })
        };
        let two_wrong =
            object(serde_json::json!({"a": {"type": "integer"}, "b": {"type": "integer"}}));
        let one_wrong =
            object(serde_json::json!({"a": {"type": "string"}, "b": {"type": "integer"}}));
        let other_one_wrong =
            object(serde_json::json!({"a": {"type": "string"}, "b": {"type": "boolean"}}));
        let text = "{a: x, b: z}";
        // The closer alternative wins, wherever it is.
        let schema = serde_json::json!({"anyOf": [two_wrong, one_wrong]});
        assert_eq!(
            check_text(text, &schema).1,
            ["1:11: b: expected an integer, found \"z\""]
        );
        // Among equally close ones, the first.
        let schema = serde_json::json!({"anyOf": [one_wrong, other_one_wrong]});
        assert_eq!(
            check_text(text, &schema).1,
            ["1:11: b: expected an integer, found \"z\""]
        );
    }

    #[test]
    fn a_choice_nested_in_alternatives_keeps_every_way_to_be_null() {
        for schema in [
            serde_json::json!({"anyOf": [{"type": "null"}, {"enum": ["a"]}]}),
            serde_json::json!({"anyOf": [{"enum": ["a", null]}, {"enum": ["b"]}]}),
        ] {
            assert_eq!(check_text("~", &schema), (Value::Null, vec![]), "{schema}");
        }
    }

    #[test]
    fn an_unsigned_32_bit_integer_is_bounded_by_its_type() {
        let schema = serde_json::json!({"type": "integer", "format": "uint32"});
        assert_eq!(
            check_text("4294967295", &schema),
            (Value::from(4_294_967_295_u32), vec![])
        );
        assert_eq!(
            check_text("-1", &schema).1,
            ["1:1: : -1 is out of range: must be between 0 and 4294967295"]
        );
        assert_eq!(
            check_text("4294967296", &schema).1,
            ["1:1: : 4294967296 is out of range: must be between 0 and 4294967295"]
        );
    }

    #[test]
    fn a_sign_is_read_once_in_an_integer() {
        assert_eq!(parse_yaml_int("+5"), Some(5));
        assert_eq!(parse_yaml_int("-+5"), None);
        assert_eq!(parse_yaml_int("+-5"), None);
        assert_eq!(parse_yaml_int(""), None);
    }

    #[test]
    fn a_null_is_read_only_where_an_alternative_allows_it() {
        let nullable = serde_json::json!({"anyOf": [{"type": "integer"}, {"type": "null"}]});
        assert_eq!(check_text("~", &nullable), (Value::Null, vec![]));
        let not_nullable = serde_json::json!({"anyOf": [{"type": "integer"}, {"type": "string"}]});
        assert_eq!(
            check_text("~", &not_nullable),
            (
                Value::Null,
                vec!["1:1: : expected an integer, found nothing (null)".to_string()]
            )
        );
    }

    #[test]
    fn a_choice_gathers_the_values_of_nested_alternatives() {
        let schema = serde_json::json!({
            "anyOf": [{"oneOf": [{"const": "a"}, {"const": "b"}]}, {"enum": ["c"]}]
        });
        assert_eq!(
            check_text("ddd", &schema).1,
            ["1:1: : invalid value \"ddd\": expected one of \"a\", \"b\", \"c\""]
        );
        assert_eq!(
            check_text("~", &schema).1,
            ["1:1: : expected one of \"a\", \"b\", \"c\", found nothing (null)"]
        );
    }

    #[test]
    fn a_32_bit_integer_is_read_down_to_its_type_minimum() {
        let schema = serde_json::json!({"type": "integer", "format": "int32"});
        assert_eq!(
            check_text("-2147483648", &schema),
            (Value::from(i32::MIN), vec![])
        );
        assert_eq!(
            check_text("-2147483649", &schema).1,
            ["1:1: : -2147483649 is out of range: must be at least -2147483648"]
        );
    }

    #[test]
    fn a_schema_with_properties_is_a_mapping_and_one_without_a_type_takes_any_scalar() {
        // No `type`, but `properties`: a mapping, and its keys are checked.
        let properties = serde_json::json!({"properties": {"a": {"type": "integer"}}});
        assert_eq!(
            check_text("{a: x}", &properties).1,
            ["1:5: a: expected an integer, found \"x\""]
        );
        // Without `additionalProperties`, another key may be any scalar, read as its text.
        assert_eq!(
            check_text("{a: 1, b: 2}", &properties),
            (serde_json::json!({"a": 1, "b": "2"}), vec![])
        );
    }

    #[test]
    fn a_null_where_a_list_belongs_says_a_list_is_expected() {
        let schema = serde_json::json!({"type": "array", "items": {"type": "string"}});
        assert_eq!(
            check_text("~", &schema).1,
            ["1:1: : expected a list, found nothing (null)"]
        );
    }
}
