//! list and deletecollection: label and field selectors, `limit`/`continue` paging.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::{Params, Render, partial_metadata, served, table};
use crate::Shared;
use crate::error::ApiError;
use crate::objects::{self, DeleteOpts, Deleted};
use crate::resources::ResourceInfo;
use crate::util;

/// One label selector requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Req {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        }
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// Parses a label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
pub fn parse_label_selector(s: &str) -> Result<Vec<Req>, ApiError> {
    let bad = |p: &str| {
        ApiError::bad_request(format!(
            "unable to parse requirement: found '{p}', expected: identifier"
        ))
    };
    let mut reqs = Vec::new();
    for part in split_top(s) {
        if let Some(k) = part.strip_prefix('!') {
            reqs.push(Req::NotExists(k.trim().to_string()));
        } else if let Some((k, v)) = part.split_once("!=") {
            reqs.push(Req::NotEq(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = part.split_once("==") {
            reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = part.split_once('=') {
            reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = part.split_once(" notin ") {
            reqs.push(Req::NotIn(
                k.trim().into(),
                parse_set(v).ok_or_else(|| bad(&part))?,
            ));
        } else if let Some((k, v)) = part.split_once(" in ") {
            reqs.push(Req::In(
                k.trim().into(),
                parse_set(v).ok_or_else(|| bad(&part))?,
            ));
        } else if part.contains(' ') || part.contains('(') {
            return Err(bad(&part));
        } else {
            reqs.push(Req::Exists(part));
        }
    }
    Ok(reqs)
}

/// Field selectors the real API server accepts per resource (besides metadata.name/namespace).
fn supported_field(info: &ResourceInfo, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => matches!(
            field,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        ("", "events") => {
            field.starts_with("involvedObject.")
                || matches!(field, "reason" | "reportingComponent" | "source" | "type")
        }
        ("events.k8s.io", "events") => {
            field.starts_with("regarding.")
                || matches!(field, "reason" | "reportingController" | "type")
        }
        ("", "secrets") => field == "type",
        ("", "namespaces") => field == "status.phase",
        ("batch", "jobs") => field == "status.successful",
        _ => info.selectable_fields.iter().any(|f| f == field),
    }
}

/// One field selector requirement: (field, value, equal?).
pub type FieldReq = (String, String, bool);

pub fn parse_field_selector(info: &ResourceInfo, s: &str) -> Result<Vec<FieldReq>, ApiError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, value, eq) = if let Some((f, v)) = part.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = part.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = part.split_once('=') {
            (f, v, true)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid selector: '{s}'; can't understand '{part}'"
            )));
        };
        let field = field.trim();
        if !supported_field(info, field) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
        out.push((field.to_string(), value.trim().to_string(), eq));
    }
    Ok(out)
}

fn field_value(obj: &Value, field: &str) -> String {
    if field == "status.successful" {
        return obj
            .pointer("/status/succeeded")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "0".into());
    }
    match util::path(obj, field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// Compiled selectors of a list or watch request.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub labels: Vec<Req>,
    pub fields: Vec<FieldReq>,
}

impl Selector {
    pub fn from_params(info: &ResourceInfo, params: &Params) -> Result<Self, ApiError> {
        Ok(Selector {
            labels: params
                .get("labelSelector")
                .map(|s| parse_label_selector(s))
                .transpose()?
                .unwrap_or_default(),
            fields: params
                .get("fieldSelector")
                .map(|s| parse_field_selector(info, s))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = util::labels(obj);
        self.labels.iter().all(|r| r.matches(&labels))
            && self
                .fields
                .iter()
                .all(|(f, v, eq)| (field_value(obj, f) == *v) == *eq)
    }
}

fn encode_continue(rv: u64, start: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "start": start}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((
        v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?,
        v.get("start")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string(),
    ))
}

/// Where a list's page ended, as its continue token says it: `namespace/name`.
fn sort_key(o: &Value) -> String {
    format!("{}/{}", util::namespace(o), util::name(o))
}

/// The store's key of a continue token's `namespace/name` (neither has a `/`).
fn store_key(start: &str) -> (String, String) {
    let (namespace, name) = start.split_once('/').unwrap_or(("", start));
    (namespace.to_string(), name.to_string())
}

/// GET on a collection.
pub fn list(
    shared: &Shared,
    info: &ResourceInfo,
    ns: &str,
    params: &Params,
    mode: Render,
) -> Result<Value, ApiError> {
    let sel = Selector::from_params(info, params)?;
    let (continue_rv, start) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(tok) => {
            let (rv, start) = decode_continue(tok)?;
            if rv < shared.store.compacted(&info.key()) {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            (Some(rv), Some(start))
        }
        None => (None, None),
    };
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    // Selectors and the limit are applied inside the store: only the page is copied.
    let after = start.as_deref().map(store_key);
    let page = shared.store.list_page(
        &info.key(),
        (!ns.is_empty()).then_some(ns),
        after.as_ref(),
        |o| sel.matches(o),
        (limit > 0).then_some(limit),
    );
    let list_rv = continue_rv.unwrap_or(page.rv);
    let matching = page.items;
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if page.remaining > 0
        && let Some(last) = matching.last()
    {
        meta["continue"] = json!(encode_continue(list_rv, &sort_key(last)));
        meta["remainingItemCount"] = json!(page.remaining);
    }
    Ok(match mode {
        Render::Table => {
            let served_items: Vec<Value> = matching.into_iter().map(|o| served(info, o)).collect();
            table::table(info, &served_items, params, Some(meta))
        }
        Render::Metadata => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": meta,
            "items": matching.iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
        Render::Full => json!({
            "apiVersion": info.api_version(),
            "kind": info.list_kind,
            "metadata": meta,
            "items": matching.into_iter().map(|o| served(info, o)).collect::<Vec<_>>(),
        }),
    })
}

/// DELETE on a collection: deletes every matching object; answers with the list of them.
pub fn delete_collection(
    shared: &Shared,
    info: &ResourceInfo,
    ns: &str,
    params: &Params,
    opts: &DeleteOpts,
) -> Result<Value, ApiError> {
    let sel = Selector::from_params(info, params)?;
    let (items, _) = shared
        .store
        .list(&info.key(), (!ns.is_empty()).then_some(ns));
    let mut deleted = Vec::new();
    for o in items.into_iter().filter(|o| sel.matches(o)) {
        match objects::delete(shared, info, util::namespace(&o), util::name(&o), opts) {
            Ok(Deleted::Gone(v) | Deleted::Pending(v)) => deleted.push(served(info, v)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json!({
        "apiVersion": info.api_version(),
        "kind": info.list_kind,
        "metadata": {"resourceVersion": shared.store.current_rv().to_string()},
        "items": deleted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let sel =
            parse_label_selector("app=web, tier!=db,env in (a, b),x notin (y),has,!not").unwrap();
        assert_eq!(sel.len(), 6);
        let labels: Map<String, Value> =
            serde_json::from_value(json!({"app": "web", "env": "a", "has": ""})).unwrap();
        assert!(sel.iter().all(|r| r.matches(&labels)));
        let other: Map<String, Value> =
            serde_json::from_value(json!({"app": "web", "env": "c", "has": ""})).unwrap();
        assert!(!sel.iter().all(|r| r.matches(&other)));
        assert!(parse_label_selector("a in b").is_err());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "ns/name");
        assert_eq!(decode_continue(&t).unwrap(), (42, "ns/name".to_string()));
        assert!(decode_continue("garbage!").is_err());
    }
}
