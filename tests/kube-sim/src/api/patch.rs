//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
//! (treated as a merge patch after dropping `$`-directives) and server-side apply.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Strategic merge patch, simplified: `$patch`/`$setElementOrder`/`$retainKeys`/
/// `$deleteFromPrimitiveList` directives are dropped and the rest is applied as a merge patch
/// (lists are replaced, not merged by key).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let mut p = patch.clone();
    strip_directives(&mut p);
    merge_patch(target, &p);
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(422, "Invalid", msg)
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, ApiError> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(invalid(format!("invalid JSON pointer {path:?}")));
    };
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, segs: &[String]) -> Result<&'a mut Value, ApiError> {
    let mut cur = doc;
    for s in segs {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(s)
                .ok_or_else(|| invalid(format!("doc is missing path: {s}")))?,
            Value::Array(a) => {
                let i: usize = s
                    .parse()
                    .map_err(|_| invalid(format!("invalid array index {s:?}")))?;
                a.get_mut(i)
                    .ok_or_else(|| invalid(format!("array index {i} out of bounds")))?
            }
            _ => return Err(invalid(format!("doc is missing path: {s}"))),
        };
    }
    Ok(cur)
}

fn get_at(doc: &Value, path: &str) -> Result<Value, ApiError> {
    let ptr = split_pointer(path)?
        .iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect::<String>();
    doc.pointer(&ptr)
        .cloned()
        .ok_or_else(|| invalid(format!("doc is missing path: {path:?}")))
}

fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    let segs = split_pointer(path)?;
    let Some((last, parents)) = segs.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| invalid(format!("invalid array index {last:?}")))?;
            if i > a.len() {
                return Err(invalid(format!("array index {i} out of bounds")));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(invalid(format!("doc is missing path: {path:?}"))),
    }
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let segs = split_pointer(path)?;
    let Some((last, parents)) = segs.split_last() else {
        return Err(invalid("cannot remove the whole document"));
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| {
            invalid(format!(
                "unable to remove nonexistent key: {last}: missing value"
            ))
        }),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| invalid(format!("invalid array index {last:?}")))?;
            if i >= a.len() {
                return Err(invalid(format!("array index {i} out of bounds")));
            }
            Ok(a.remove(i))
        }
        _ => Err(invalid(format!("doc is missing path: {path:?}"))),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("json patch operation has no path"))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| invalid(format!("{kind} operation has no value")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{kind} operation has no from")))
        };
        match kind {
            "add" => add_at(doc, path, value()?)?,
            "remove" => {
                remove_at(doc, path)?;
            }
            "replace" => {
                remove_at(doc, path)?;
                add_at(doc, path, value()?)?;
            }
            "move" => {
                let v = remove_at(doc, from()?)?;
                add_at(doc, path, v)?;
            }
            "copy" => {
                let v = get_at(doc, from()?)?;
                add_at(doc, path, v)?;
            }
            "test" => {
                let want = value()?;
                let have = get_at(doc, path)?;
                if have != want {
                    return Err(invalid(format!(
                        "the server rejected our request due to an error in our request: testing value {path} failed"
                    )));
                }
            }
            other => {
                return Err(invalid(format!(
                    "unexpected json patch operation {other:?}"
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server-side apply

/// A leaf field path, e.g. ["spec", "replicas"].
pub type FieldPath = Vec<String>;

/// Leaf paths of an applied configuration. Maps are descended; lists and scalars are leaves
/// (lists are owned atomically). Identity fields (apiVersion, kind, name, namespace, ...) are
/// not owned.
pub fn leaf_paths(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    fn go(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    if prefix.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
                        continue;
                    }
                    if prefix.len() == 1
                        && prefix[0] == "metadata"
                        && !matches!(
                            k.as_str(),
                            "labels" | "annotations" | "finalizers" | "ownerReferences"
                        )
                    {
                        continue;
                    }
                    prefix.push(k.clone());
                    go(x, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    go(v, &mut Vec::new(), &mut out);
    out
}

fn value_at<'a>(v: &'a Value, p: &FieldPath) -> Option<&'a Value> {
    p.iter().try_fold(v, |cur, s| cur.get(s))
}

fn remove_path(v: &mut Value, p: &FieldPath) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for s in parents {
        match cur.get_mut(s) {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// Encodes paths as `fieldsV1` (`{"f:spec": {"f:x": {}}}`).
pub fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for s in p {
            let e = cur
                .entry(format!("f:{s}"))
                .or_insert_with(|| Value::Object(Map::new()));
            if !e.is_object() {
                *e = Value::Object(Map::new());
            }
            cur = match e {
                Value::Object(m) => m,
                _ => return Value::Object(root.clone()),
            };
        }
    }
    Value::Object(root)
}

/// Decodes `fieldsV1` into leaf paths (only `f:` keys are understood; others are leaves).
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    fn go(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, x) in children {
            prefix.push(k[2..].to_string());
            go(x, prefix, out);
            prefix.pop();
        }
    }
    go(v, &mut Vec::new(), &mut out);
    out
}

/// One manager's ownership as kept in `metadata.managedFields`.
#[derive(Debug, Clone)]
pub struct Managed {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub paths: BTreeSet<FieldPath>,
}

pub fn read_managed(obj: &Value) -> Vec<Managed> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Managed {
                    manager: s(e, "manager"),
                    operation: s(e, "operation"),
                    subresource: s(e, "subresource"),
                    api_version: s(e, "apiVersion"),
                    time: s(e, "time"),
                    paths: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub fn write_managed(obj: &mut Value, managed: &[Managed]) {
    let entries: Vec<Value> = managed
        .iter()
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&m.paths),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    let meta = crate::util::meta_mut(obj);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// The result of applying a configuration.
pub struct Applied {
    pub object: Value,
    pub managed: Vec<Managed>,
}

/// Server-side apply (simplified): the applied configuration is merged into the live object
/// (maps merged, lists replaced); fields this manager applied before and no longer applies
/// are removed unless another applier owns them; a field owned by another applier with a
/// different value is a conflict (409) unless `force`.
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    force: bool,
    now: &str,
) -> Result<Applied, ApiError> {
    let mut managed = read_managed(live);
    let new_paths = leaf_paths(applied);
    let mut conflicts = Vec::new();
    for m in &managed {
        if m.manager == manager || m.operation != "Apply" {
            continue;
        }
        for p in &new_paths {
            let overlaps = m.paths.iter().any(|q| q.starts_with(p) || p.starts_with(q));
            if overlaps && value_at(live, p) != value_at(applied, p) {
                conflicts.push((m.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let list: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": .{}", p.join(".")))
            .collect();
        let msg = if list.len() == 1 {
            format!("Apply failed with 1 conflict: {}", list[0])
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                list.len(),
                list.join("\n")
            )
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": format!(".{}", p.join("."))})
            })
            .collect();
        return Err(ApiError::new(409, "Conflict", msg).with_details(json!({ "causes": causes })));
    }
    // Forced: take the conflicting fields away from the other managers.
    for (other, p) in &conflicts {
        for m in managed.iter_mut().filter(|m| &m.manager == other) {
            m.paths.retain(|q| !(q.starts_with(p) || p.starts_with(q)));
        }
    }
    let previous: BTreeSet<FieldPath> = managed
        .iter()
        .filter(|m| m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
        .flat_map(|m| m.paths.iter().cloned())
        .collect();
    let mut object = live.clone();
    for p in previous.difference(&new_paths) {
        let owned_by_other = managed.iter().any(|m| {
            !(m.manager == manager && m.subresource == subresource) && m.paths.contains(p)
        });
        if !owned_by_other {
            remove_path(&mut object, p);
        }
    }
    let mut patch = applied.clone();
    if let Some(m) = patch.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| {
            matches!(
                k.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences"
            )
        });
    }
    deep_merge(&mut object, &patch);
    // An apply that changes no ownership keeps the old timestamp, so no-op applies stay no-ops.
    let time = managed
        .iter()
        .find(|m| m.manager == manager && m.subresource == subresource && m.paths == new_paths)
        .map(|m| m.time.clone())
        .unwrap_or_else(|| now.to_string());
    let entry = Managed {
        manager: manager.to_string(),
        operation: "Apply".into(),
        subresource: subresource.to_string(),
        api_version: api_version.to_string(),
        time,
        paths: new_paths,
    };
    match managed
        .iter_mut()
        .find(|m| m.manager == manager && m.subresource == subresource && m.operation == "Apply")
    {
        Some(m) => *m = entry,
        None => managed.push(entry),
    }
    managed.retain(|m| !m.paths.is_empty());
    Ok(Applied { object, managed })
}

/// Merges maps recursively; anything else (including lists) is replaced. Nulls are set as-is.
fn deep_merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch) {
        (Some(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_removes_nulls() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"metadata": {"finalizers": ["a"]}});
        json_patch(
            &mut d,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["a"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
                {"op": "add", "path": "/x~1y", "value": 1},
                {"op": "copy", "from": "/x~1y", "path": "/z"},
                {"op": "move", "from": "/z", "path": "/w"},
                {"op": "replace", "path": "/w", "value": 2}
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"metadata": {"finalizers": ["b"]}, "x/y": 1, "w": 2})
        );
        let err = json_patch(&mut d, &json!([{"op": "test", "path": "/w", "value": 3}]));
        assert_eq!(err.unwrap_err().code, 422);
    }

    #[test]
    fn apply_removes_fields_no_longer_applied_and_detects_conflicts() {
        let live = json!({"metadata": {"name": "a"}, "spec": {}});
        let a = apply(
            &live,
            &json!({"spec": {"x": 1, "y": 2}}),
            "m1",
            "",
            "v1",
            false,
            "t",
        )
        .unwrap();
        let mut live = a.object.clone();
        write_managed(&mut live, &a.managed);
        let b = apply(
            &live,
            &json!({"spec": {"x": 1}}),
            "m1",
            "",
            "v1",
            false,
            "t",
        )
        .unwrap();
        assert_eq!(b.object["spec"], json!({"x": 1}));
        let mut live = b.object.clone();
        write_managed(&mut live, &b.managed);
        let c = apply(
            &live,
            &json!({"spec": {"x": 2}}),
            "m2",
            "",
            "v1",
            false,
            "t",
        );
        let err = c.err().unwrap();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"m1\": .spec.x"),
            "{}",
            err.message
        );
        let d = apply(&live, &json!({"spec": {"x": 2}}), "m2", "", "v1", true, "t").unwrap();
        assert_eq!(d.object["spec"]["x"], 2);
    }

    #[test]
    fn fields_v1_round_trip() {
        let p = leaf_paths(
            &json!({"metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"l": [1]}}),
        );
        let back = from_fields_v1(&to_fields_v1(&p));
        assert_eq!(p, back);
        assert!(p.contains(&vec!["metadata".to_string(), "labels".into(), "a".into()]));
        assert!(
            !p.iter()
                .any(|x| x.get(1).map(String::as_str) == Some("name"))
        );
    }
}
