//! The JSON Schema published for editors and CI validators (`job-executor schema`,
//! `docs/job-config.schema.json`): the schema the loader checks with, widened by what the
//! loader reads beyond a plain JSON Schema's reading of it, so a validator never refuses a
//! config the operator loads. The loader stays the final word (formats, ranges, combinations).

use serde_json::{Map, Value, json};

/// The published schema of the job config.
pub fn published_schema() -> Value {
    let mut schema = super::json_schema().clone();
    let defs = schema.get("$defs").cloned().unwrap_or_default();
    widen(&mut schema, &defs);
    schema
}

/// Widens `node` and everything under it; `defs` are the schema's `$defs` as generated.
fn widen(node: &mut Value, defs: &Value) {
    match node {
        Value::Object(object) => {
            for child in object.values_mut() {
                widen(child, defs);
            }
            widen_object(object, defs);
        }
        Value::Array(items) => items.iter_mut().for_each(|item| widen(item, defs)),
        _ => {}
    }
}

fn widen_object(object: &mut Map<String, Value>, defs: &Value) {
    let free = !object.contains_key("enum") && !object.contains_key("const");
    // A plain scalar where a string is expected is read as its text (`args: [--users, 10]`).
    if free && has_type(object, "string") {
        add_types(object, &["number", "boolean"]);
    }
    // YAML 1.1's booleans, which a YAML 1.2 reader (an editor's) leaves as strings.
    if has_type(object, "boolean") && !has_type(object, "string") {
        let boolean = std::mem::take(object);
        object.insert(
            "anyOf".into(),
            json!([
                boolean,
                {"enum": ["yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON",
                          "off", "Off", "OFF", "y", "Y", "n", "N"]}
            ]),
        );
        return;
    }
    let ignore_case = object.get("x-ignore-case") == Some(&Value::Bool(true));
    let empty_is_unset = object.get("x-empty-is-unset") == Some(&Value::Bool(true));
    if ignore_case || empty_is_unset {
        let choices = enum_of(object, defs);
        let mut alternatives = Vec::new();
        if ignore_case && !choices.is_empty() {
            let pattern = choices
                .iter()
                .map(|choice| any_case(choice))
                .collect::<Vec<_>>();
            alternatives
                .push(json!({"type": "string", "pattern": format!("^(?:{})$", pattern.join("|"))}));
        }
        if empty_is_unset {
            alternatives.push(json!({"const": ""}));
        }
        add_alternatives(object, alternatives);
    }
    // An optional key left empty (`files:`) is not set.
    let required = match object.get("required") {
        Some(Value::Array(required)) => required.clone(),
        _ => Vec::new(),
    };
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for (name, property) in properties {
            if !required.contains(&Value::String(name.clone()))
                && let Value::Object(property) = property
            {
                allow_null(property);
            }
        }
    }
}

fn has_type(object: &Map<String, Value>, wanted: &str) -> bool {
    match object.get("type") {
        Some(Value::String(name)) => name == wanted,
        Some(Value::Array(names)) => names.iter().any(|name| name == wanted),
        _ => false,
    }
}

fn add_types(object: &mut Map<String, Value>, more: &[&str]) {
    let mut types: Vec<Value> = match object.remove("type") {
        Some(Value::String(name)) => vec![Value::String(name)],
        Some(Value::Array(names)) => names,
        _ => Vec::new(),
    };
    for name in more {
        if !types.iter().any(|known| known == name) {
            types.push(Value::String((*name).into()));
        }
    }
    object.insert("type".into(), Value::Array(types));
}

/// The fixed strings a value may be: its own `enum`, or that of a `$ref` among its `anyOf`.
fn enum_of(object: &Map<String, Value>, defs: &Value) -> Vec<String> {
    let referenced = |node: &Value| -> Vec<String> {
        let target = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|reference| reference.strip_prefix("#/$defs/"))
            .and_then(|name| defs.get(name))
            .unwrap_or(node);
        match target.get("enum") {
            Some(Value::Array(choices)) => choices
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut choices = referenced(&Value::Object(object.clone()));
    if let Some(Value::Array(alternatives)) = object.get("anyOf") {
        alternatives
            .iter()
            .for_each(|alternative| choices.extend(referenced(alternative)));
    }
    choices
}

/// `json` as a case-blind pattern: `[jJ][sS][oO][nN]`.
fn any_case(choice: &str) -> String {
    choice
        .chars()
        .map(|c| match (c.to_ascii_lowercase(), c.to_ascii_uppercase()) {
            (lower, upper) if lower != upper => format!("[{lower}{upper}]"),
            _ if c.is_ascii_alphanumeric() => c.to_string(),
            _ => format!("\\{c}"),
        })
        .collect()
}

fn add_alternatives(object: &mut Map<String, Value>, alternatives: Vec<Value>) {
    if alternatives.is_empty() {
        return;
    }
    match object.get_mut("anyOf") {
        Some(Value::Array(existing)) => existing.extend(alternatives),
        _ => {
            let mut own = Map::new();
            for key in ["type", "enum", "const", "$ref", "format", "pattern"] {
                if let Some(value) = object.remove(key) {
                    own.insert(key.into(), value);
                }
            }
            let mut all = vec![Value::Object(own)];
            all.extend(alternatives);
            object.insert("anyOf".into(), Value::Array(all));
        }
    }
}

fn allow_null(property: &mut Map<String, Value>) {
    let null = json!({"type": "null"});
    if let Some(Value::Array(alternatives)) = property.get_mut("anyOf") {
        if !alternatives.contains(&null) {
            alternatives.push(null);
        }
    } else if property.contains_key("type") && !property.contains_key("enum") {
        add_types(property, &["null"]);
    } else {
        add_alternatives(property, vec![null]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_blind_pattern_matches_every_case_and_nothing_else() {
        assert_eq!(any_case("json"), "[jJ][sS][oO][nN]");
        assert_eq!(any_case("a-1"), "[aA]\\-1");
    }

    #[test]
    fn what_the_loader_reads_beyond_json_schema_is_allowed() {
        let schema = published_schema();
        let defs = &schema["$defs"];
        let task = &defs["Task"]["properties"];
        assert_eq!(
            task["args"]["items"]["type"],
            json!(["string", "number", "boolean"])
        );
        assert_eq!(task["files"]["type"], json!(["array", "null"]));
        let pull = task["imagePullPolicy"]["anyOf"].as_array().unwrap();
        assert!(pull.contains(&json!({"const": ""})), "{pull:?}");
        let format = defs["EnvVar"]["properties"]["as"]["anyOf"]
            .as_array()
            .unwrap();
        assert!(
            format.iter().any(|alternative| alternative["pattern"]
                == "^(?:[jJ][sS][oO][nN]|[yY][aA][mM][lL]|[sS][tT][rR][iI][nN][gG])$"),
            "{format:?}"
        );
        // What is required stays required, and unknown keys stay refused.
        assert_eq!(defs["Task"]["required"], json!(["image"]));
        assert_eq!(defs["Task"]["additionalProperties"], false);
        assert_eq!(schema["properties"]["apiVersion"]["enum"], json!(["v2"]));
    }
}
