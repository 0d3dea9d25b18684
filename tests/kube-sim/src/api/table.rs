//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), as used by
//! `kubectl get`: default columns for built-in kinds and CRD `additionalPrinterColumns`.

use serde_json::{Value, json};

use super::{Params, partial_metadata};
use crate::resources::ResourceInfo;
use crate::util;

/// kubectl-style age (`42s`, `3m12s`, `5h`, `2d3h`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 if s % 60 != 0 => format!("{}m{}s", s / 60, s % 60),
        120..10800 => format!("{}m", s / 60),
        10800..28800 if (s / 60) % 60 != 0 => format!("{}h{}m", s / 3600, (s / 60) % 60),
        10800..172800 => format!("{}h", s / 3600),
        172800..691200 if (s / 3600) % 24 != 0 => format!("{}d{}h", s / 86400, (s / 3600) % 24),
        _ => format!("{}d", s / 86400),
    }
}

fn age_of(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(util::parse_time) else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now().as_second() - t.as_second();
    human_duration(secs)
}

fn col(name: &str, type_: &str, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": 0})
}

#[allow(clippy::cmp_owned)] // numbers and booleans compare by their JSON text
/// A tiny JSONPath subset: `.a.b`, `.a[0]`, `.a[*]`, `.a[?(@.k=="v")].b`.
pub fn json_path(obj: &Value, path: &str) -> Vec<Value> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut cur = vec![obj.clone()];
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            // A key ends at an unescaped `.` or `[`; `\.` is a dot of the key
            // (`.metadata.labels.keptn\.sh/service`), as kubectl's JSONPath reads it.
            let mut key = String::new();
            let mut end = r.len();
            let mut chars = r.char_indices();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            key.push(next);
                        }
                    }
                    '.' | '[' => {
                        end = at;
                        break;
                    }
                    _ => key.push(c),
                }
            }
            cur = cur.iter().filter_map(|v| v.get(&key).cloned()).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let sel = &r[..end];
            rest = &r[end + 1..];
            cur = if sel == "*" {
                cur.iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .collect()
            } else if let Some(f) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, want) = f.split_once("==").unwrap_or((f, ""));
                let want = want.trim().trim_matches(['"', '\'']);
                cur.iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .filter(|item| match item.get(k.trim()) {
                        Some(Value::String(s)) => s == want,
                        Some(other) => other.to_string() == want,
                        None => false,
                    })
                    .collect()
            } else if let Ok(i) = sel.parse::<usize>() {
                cur.iter().filter_map(|v| v.get(i).cloned()).collect()
            } else {
                let key = sel.trim_matches(['"', '\'']);
                cur.iter().filter_map(|v| v.get(key).cloned()).collect()
            };
        } else {
            break;
        }
    }
    cur
}

fn cell_text(v: &[Value]) -> Value {
    match v {
        [] => Value::Null,
        [one] => one.clone(),
        many => json!(
            many.iter()
                .map(|x| x
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn pod_status(pod: &Value) -> String {
    if util::is_deleting(pod) {
        return "Terminating".into();
    }
    let statuses = |k: &str| {
        pod.pointer(&format!("/status/{k}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let inits = statuses("initContainerStatuses");
    for (i, c) in inits.iter().enumerate() {
        if let Some(t) = c.pointer("/state/terminated")
            && t.get("exitCode").and_then(Value::as_i64) == Some(0)
        {
            continue;
        }
        if let Some(r) = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            return format!("Init:{r}");
        }
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str)
            && r != "PodInitializing"
        {
            return format!("Init:{r}");
        }
        return format!("Init:{i}/{}", inits.len());
    }
    let mut reason = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
        .to_string();
    for c in statuses("containerStatuses").iter().rev() {
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(r) = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            reason = r.to_string();
        }
    }
    reason
}

fn job_status(job: &Value) -> String {
    let conds = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    for t in [
        "Complete",
        "Failed",
        "FailureTarget",
        "SuccessCriteriaMet",
        "Suspended",
    ] {
        if has(t) {
            return t.into();
        }
    }
    if util::is_deleting(job) {
        return "Terminating".into();
    }
    "Running".into()
}

fn columns_and_cells(info: &ResourceInfo, obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = json!(util::name(obj));
    let age = json!(age_of(util::meta_str(obj, "creationTimestamp")));
    let age_col = col(
        "Age",
        "string",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    let name_col = col("Name", "string", "Name must be unique within a namespace.");
    if info.crd {
        if info.printer_columns.is_empty() {
            return (vec![name_col, age_col], vec![name, age]);
        }
        let mut cols = vec![name_col];
        let mut cells = vec![name];
        for pc in &info.printer_columns {
            cols.push(json!({"name": pc.name, "type": pc.type_, "format": pc.format, "description": pc.description, "priority": pc.priority}));
            let v = cell_text(&json_path(obj, &pc.json_path));
            let v = match (pc.type_.as_str(), &v) {
                ("date", Value::String(s)) => json!(age_of(Some(s))),
                _ => v,
            };
            cells.push(v);
        }
        return (cols, cells);
    }
    let count = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => {
            let cs = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = cs
                .iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = cs
                .iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum();
            (
                vec![
                    name_col,
                    col(
                        "Ready",
                        "string",
                        "The aggregate readiness state of this pod for accepting traffic.",
                    ),
                    col(
                        "Status",
                        "string",
                        "The aggregate status of the containers in this pod.",
                    ),
                    col(
                        "Restarts",
                        "string",
                        "The number of times the containers in this pod have been restarted.",
                    ),
                    age_col,
                ],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(obj)),
                    json!(restarts.to_string()),
                    age,
                ],
            )
        }
        ("batch", "jobs") => {
            let succeeded = obj
                .pointer("/status/succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let completions = obj
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .map(|c| c.to_string())
                .unwrap_or_else(|| "1".into());
            let start = obj
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .and_then(util::parse_time);
            let end = obj
                .pointer("/status/completionTime")
                .and_then(Value::as_str)
                .and_then(util::parse_time)
                .unwrap_or_else(jiff::Timestamp::now);
            let duration = start
                .map(|s| human_duration(end.as_second() - s.as_second()))
                .unwrap_or_default();
            (
                vec![
                    name_col,
                    col("Status", "string", "Status of the job."),
                    col(
                        "Completions",
                        "string",
                        "The desired number of successfully finished pods the job should be run with.",
                    ),
                    col("Duration", "string", "Time required to complete the job."),
                    age_col,
                ],
                vec![
                    name,
                    json!(job_status(obj)),
                    json!(format!("{succeeded}/{completions}")),
                    json!(duration),
                    age,
                ],
            )
        }
        ("", "namespaces") => (
            vec![
                name_col,
                col("Status", "string", "The status of the namespace"),
                age_col,
            ],
            vec![
                name,
                obj.pointer("/status/phase").cloned().unwrap_or(Value::Null),
                age,
            ],
        ),
        ("", "configmaps") => (
            vec![
                name_col,
                col("Data", "string", "Number of data entries"),
                age_col,
            ],
            vec![name, json!(count("/data") + count("/binaryData")), age],
        ),
        ("", "secrets") => (
            vec![
                name_col,
                col("Type", "string", "The type of the secret"),
                col("Data", "string", "Number of data entries"),
                age_col,
            ],
            vec![
                name,
                obj.get("type").cloned().unwrap_or(Value::Null),
                json!(count("/data")),
                age,
            ],
        ),
        _ => (vec![name_col, age_col], vec![name, age]),
    }
}

/// A `meta.k8s.io/v1` Table of `items`.
pub fn table(info: &ResourceInfo, items: &[Value], params: &Params, meta: Option<Value>) -> Value {
    let include = params
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let mut columns = None;
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let (cols, cells) = columns_and_cells(info, o);
            columns.get_or_insert(cols);
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => row["object"] = partial_metadata(o),
            }
            row
        })
        .collect();
    let columns = columns.unwrap_or_else(|| columns_and_cells(info, &json!({})).0);
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "Table",
        "metadata": meta.unwrap_or_else(|| json!({})),
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn json_paths() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}, "spec": {"n": 3}});
        assert_eq!(json_path(&o, ".spec.n"), vec![json!(3)]);
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(
            json_path(&o, ".status.conditions[1].type"),
            vec![json!("X")]
        );
        let labelled = json!({"metadata": {"labels": {"keptn.sh/service": "carts"}}});
        assert_eq!(
            json_path(&labelled, r".metadata.labels.keptn\.sh/service"),
            vec![json!("carts")]
        );
        assert!(json_path(&labelled, ".metadata.labels.keptn.sh/service").is_empty());
    }
}
