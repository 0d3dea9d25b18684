//! Structural-schema handling for custom resources: pruning of unknown fields, defaulting, and
//! a basic validation (type, required, enum) against the CRD's `openAPIV3Schema`.

use serde_json::{Map, Value};

/// Prunes unknown fields and applies defaults in place; returns validation errors as
/// (field path, message) pairs.
pub fn prune_default_validate(obj: &mut Value, schema: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let Some(map) = obj.as_object_mut() else {
        return errors;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let preserve = preserves(schema);
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => {
                if let Some(v) = map.get_mut(&k) {
                    walk(v, s, &k, &mut errors);
                }
                if map.get(&k).is_some_and(Value::is_null) && !nullable(s) {
                    map.remove(&k);
                }
            }
            None if !preserve => {
                map.remove(&k);
            }
            None => {}
        }
    }
    if let Some(p) = props {
        apply_defaults(map, p, "", &mut errors);
        check_required(map, schema, "", &mut errors);
    }
    errors
}

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn nullable(s: &Value) -> bool {
    s.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

fn apply_defaults(
    map: &mut Map<String, Value>,
    props: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<(String, String)>,
) {
    for (k, s) in props {
        if !map.contains_key(k)
            && let Some(d) = s.get("default")
        {
            let mut d = d.clone();
            walk(&mut d, s, &join(path, k), errors);
            map.insert(k.clone(), d);
        }
    }
}

fn check_required(
    map: &Map<String, Value>,
    schema: &Value,
    path: &str,
    errors: &mut Vec<(String, String)>,
) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errors.push((join(path, r), "Required value".into()));
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(v: &mut Value, s: &Value, path: &str, errors: &mut Vec<(String, String)>) {
    if v.is_null() {
        return;
    }
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t
            || (t == "number" && actual == "integer")
            || (int_or_string && (actual == "integer" || actual == "string"));
        if !ok {
            errors.push((
                path.to_string(),
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {t}: \"{actual}\""
                ),
            ));
            return;
        }
    }
    if let Some(en) = s.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        let supported: Vec<String> = en.iter().map(|e| e.to_string()).collect();
        errors.push((
            path.to_string(),
            format!(
                "Unsupported value: {v}: supported values: {}",
                supported.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(map) => {
            let embedded = s
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true);
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            let preserve = preserves(s);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = join(path, &k);
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_schema = props.and_then(|p| p.get(&k)).or(match additional {
                    Some(a) if a.is_object() => Some(a),
                    _ => None,
                });
                match child_schema {
                    Some(cs) => {
                        if let Some(c) = map.get_mut(&k) {
                            walk(c, cs, &child_path, errors);
                        }
                        if map.get(&k).is_some_and(Value::is_null) && !nullable(cs) {
                            map.remove(&k);
                        }
                    }
                    None => {
                        let keep = preserve || additional.and_then(Value::as_bool) == Some(true);
                        if !keep {
                            map.remove(&k);
                        }
                    }
                }
            }
            if let Some(p) = props {
                apply_defaults(map, p, path, errors);
            }
            check_required(map, s, path, errors);
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    walk(it, is, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prunes_defaults_and_validates() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string"},
                        "retries": {"type": "integer", "default": 3},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "env": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                },
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
            }
        });
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "T", "metadata": {"name": "a"},
            "spec": {"image": "i", "unknown": 1, "extra": {"any": 1}, "env": {"A": "1"}},
            "junk": true
        });
        let errs = prune_default_validate(&mut obj, &schema);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(obj["spec"]["retries"], 3);
        assert!(obj["spec"].get("unknown").is_none());
        assert!(obj.get("junk").is_none());
        assert_eq!(obj["spec"]["extra"]["any"], 1);
        assert_eq!(obj["spec"]["env"]["A"], "1");

        let mut bad = json!({"spec": {"retries": "x", "mode": "c"}});
        let errs = prune_default_validate(&mut bad, &schema);
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"spec.retries"));
        assert!(fields.contains(&"spec.mode"));
        assert!(fields.contains(&"spec.image"));
    }
}
