//! The HTTP API: request classification, fault injection, the request log and dispatch to the
//! verb handlers.

mod list;
mod logs;
pub mod patch;
mod table;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::discovery;
use crate::error::{ApiError, success_status};
use crate::objects::{self, DeleteOpts, Deleted, PatchType, Propagation, WriteOpts};
use crate::requests::RequestRecord;
use crate::resources::ResourceInfo;

/// What a request is about, in the terms of the API server's RequestInfo.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// `/api` or `/apis` request for a resource (as opposed to discovery).
    pub is_resource: bool,
}

/// Query parameters (last value wins).
pub type Params = HashMap<String, String>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn classify(method: &Method, path: &str, params: &Params) -> RequestInfo {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut info = RequestInfo {
        verb: method.as_str().to_lowercase(),
        ..Default::default()
    };
    let rest: &[&str] = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => {
            info.version = v.to_string();
            rest
        }
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            info.group = g.to_string();
            info.version = v.to_string();
            rest
        }
        _ => return info,
    };
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let parts: &[&str] = match rest {
        ["namespaces", ns, r, tail @ ..]
            if !(tail.is_empty() && (*r == "status" || *r == "finalize")) =>
        {
            info.namespace = ns.to_string();
            let mut v = vec![*r];
            v.extend_from_slice(tail);
            return finish(info, &v, method, params, legacy_watch);
        }
        r => r,
    };
    finish(info, parts, method, params, legacy_watch)
}

fn finish(
    mut info: RequestInfo,
    parts: &[&str],
    method: &Method,
    params: &Params,
    legacy_watch: bool,
) -> RequestInfo {
    info.is_resource = true;
    info.resource = parts.first().map(|s| s.to_string()).unwrap_or_default();
    info.name = parts.get(1).map(|s| s.to_string()).unwrap_or_default();
    info.subresource = parts.get(2..).map(|s| s.join("/")).unwrap_or_default();
    let watch = legacy_watch || params.get("watch").is_some_and(|w| w == "true" || w == "1");
    info.verb = match *method {
        Method::GET | Method::HEAD => {
            if watch {
                "watch"
            } else if info.name.is_empty() {
                "list"
            } else {
                "get"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => {
            if info.name.is_empty() {
                "deletecollection"
            } else {
                "delete"
            }
        }
        _ => "unknown",
    }
    .to_string();
    info
}

/// A JSON response.
pub fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    // A "hanging" pause holds every request until resume.
    let mut hang = shared.hang.subscribe();
    while *hang.borrow_and_update() {
        if hang.changed().await.is_err() {
            break;
        }
    }
    let (parts, body) = req.into_parts();
    let params: Params = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0.into_iter().collect())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let info = classify(&parts.method, &path, &params);
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut record = RequestRecord {
        seq: 0,
        method: parts.method.to_string(),
        path: path.clone(),
        verb: info.verb.clone(),
        group: info.group.clone(),
        version: info.version.clone(),
        resource: info.resource.clone(),
        subresource: info.subresource.clone(),
        namespace: info.namespace.clone(),
        name: info.name.clone(),
        field_manager: params.get("fieldManager").cloned().unwrap_or_default(),
        user_agent,
        user: String::new(),
        status: 0,
        received: std::time::Instant::now(),
    };
    let (user, verdict) = crate::rbac::check(&shared, &parts.headers, &info);
    // A PUT that makes the object is authorized as a create of its name too (the real update
    // handler asks the authorizer again when the object is not there).
    let verdict = verdict.and_then(|()| {
        if info.verb == "update"
            && info.subresource.is_empty()
            && objects::update_creates(
                &shared,
                &info.group,
                &info.resource,
                &info.namespace,
                &info.name,
            )
        {
            let create = RequestInfo {
                verb: "create".into(),
                ..info.clone()
            };
            crate::rbac::check(&shared, &parts.headers, &create).1
        } else {
            Ok(())
        }
    });
    record.user = user;
    if let Err(denied) = verdict {
        let response = error_response(&denied);
        record.status = response.status().as_u16();
        shared.requests.push(record);
        return response;
    }
    let latency = shared.faults.current_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resource_path = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    let held = shared
        .faults
        .request_delay(&info.verb, &resource_path, &info.name);
    if !held.is_zero() {
        tokio::time::sleep(held).await;
    }
    let response = match axum::body::to_bytes(body, 64 << 20).await {
        Err(e) => error_response(&ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
        Ok(bytes) => {
            // For create, faults match the name in the body (the URL has none).
            let fault_name = if info.name.is_empty() && info.verb == "create" {
                serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|b| {
                        let m = b.get("metadata")?;
                        m.get("name")
                            .or_else(|| m.get("generateName"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default()
            } else {
                info.name.clone()
            };
            // Like an audit log's objectRef, a create is recorded with the object's name.
            if record.name.is_empty() {
                record.name = fault_name.clone();
            }
            match shared
                .faults
                .take(&info.verb, &resource_path, &info.namespace, &fault_name)
            {
                Some(rule) => error_response(&ApiError::for_code(rule.status, rule.retry_after)),
                None => dispatch(&shared, &info, &parts.headers, &params, &path, bytes)
                    .await
                    .unwrap_or_else(|e| error_response(&e)),
            }
        }
    };
    let hold = shared.faults.answer_delay(&info.verb, &resource_path);
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    record.status = response.status().as_u16();
    shared.requests.push(record);
    response
}

/// How the client wants objects rendered (from the Accept header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Full,
    Table,
    Metadata,
}

fn render_mode(headers: &HeaderMap) -> Render {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The first acceptable alternative wins; we serve Table and PartialObjectMetadata(List).
    for alt in accept.split(',') {
        let alt = alt.replace(' ', "");
        if alt.contains("as=Table") {
            return Render::Table;
        }
        if alt.contains("as=PartialObjectMetadata") {
            return Render::Metadata;
        }
        if alt.starts_with("application/json") || alt.starts_with("*/*") {
            return Render::Full;
        }
    }
    Render::Full
}

/// The object as served through `info`'s version.
pub fn served(info: &ResourceInfo, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    obj
}

pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn render_one(info: &ResourceInfo, obj: Value, mode: Render, params: &Params) -> Value {
    match mode {
        Render::Full => served(info, obj),
        Render::Metadata => partial_metadata(&obj),
        Render::Table => table::table(info, &[served(info, obj)], params, None),
    }
}

fn parse_json(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

fn flag(params: &Params, k: &str) -> bool {
    params.get(k).is_some_and(|v| v == "true" || v == "1")
}

fn write_opts(params: &Params) -> WriteOpts {
    WriteOpts {
        dry_run: params.get("dryRun").is_some_and(|v| v == "All"),
        field_manager: params.get("fieldManager").cloned(),
        force: flag(params, "force"),
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: &RequestInfo,
    headers: &HeaderMap,
    params: &Params,
    path: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !req.is_resource {
        return discovery::serve(shared, path, &req.verb).map(|v| json_response(200, &v));
    }
    let info = shared
        .registry_read()
        .find(&req.group, &req.version, &req.resource)
        .cloned()
        .ok_or_else(ApiError::no_route)?;
    if !info.namespaced && !req.namespace.is_empty() {
        return Err(ApiError::no_route());
    }
    let collection_ok = req.name.is_empty();
    match req.subresource.as_str() {
        "" => {}
        "status" if info.status => {}
        "log" if info.log => {
            if req.verb != "get" {
                return Err(ApiError::method_not_allowed());
            }
            return logs::serve(shared, &req.namespace, &req.name, params).await;
        }
        _ => return Err(ApiError::no_route()),
    }
    if info.namespaced && req.namespace.is_empty() && !collection_ok {
        return Err(ApiError::no_route());
    }
    let mode = render_mode(headers);
    let ns = req.namespace.as_str();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() && (content_type.contains("protobuf") || content_type.contains("cbor")) {
        // kubectl's generator commands (create configmap, run, ...) send protobuf.
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (kube-sim does not decode {content_type})"
            ),
        ));
    }
    match req.verb.as_str() {
        "get" => {
            let obj = shared
                .store
                .get(&info.key(), ns, &req.name)
                .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, &req.name))?;
            Ok(json_response(200, &render_one(&info, obj, mode, params)))
        }
        "list" => {
            if !req.subresource.is_empty() {
                return Err(ApiError::method_not_allowed());
            }
            list::list(shared, &info, ns, params, mode).map(|v| json_response(200, &v))
        }
        "watch" => watch::watch(shared, &info, ns, &req.name, params, mode),
        "create" => {
            if !collection_ok || !req.subresource.is_empty() {
                return Err(ApiError::method_not_allowed());
            }
            let body = parse_json(&body)?;
            let opts = write_opts(params);
            let obj = objects::create(shared, &info, ns, body, &opts)?;
            mirror_event(shared, &info, ns, &req.name, &opts, Some(&obj));
            Ok(json_response(201, &render_one(&info, obj, mode, params)))
        }
        "update" => {
            if collection_ok {
                return Err(ApiError::method_not_allowed());
            }
            let body = parse_json(&body)?;
            let opts = write_opts(params);
            let updated =
                objects::update(shared, &info, ns, &req.name, &req.subresource, body, &opts)?;
            mirror_event(shared, &info, ns, &req.name, &opts, Some(&updated.object));
            // A Lease made by a PUT is answered 201, as a create.
            let code = if updated.created { 201 } else { 200 };
            Ok(json_response(
                code,
                &render_one(&info, updated.object, mode, params),
            ))
        }
        "patch" => {
            if collection_ok {
                return Err(ApiError::method_not_allowed());
            }
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let ptype = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let body = parse_json(&body).map_err(|e| {
                if ptype == PatchType::Apply {
                    ApiError::unsupported_media_type(
                        "application/apply-patch+yaml (only the JSON subset of YAML is supported)",
                    )
                } else {
                    e
                }
            })?;
            let opts = write_opts(params);
            let (obj, created) = objects::patch(
                shared,
                &info,
                ns,
                &req.name,
                &req.subresource,
                ptype,
                body,
                &opts,
            )?;
            mirror_event(shared, &info, ns, &req.name, &opts, Some(&obj));
            Ok(json_response(
                if created { 201 } else { 200 },
                &render_one(&info, obj, mode, params),
            ))
        }
        "delete" => {
            if !req.subresource.is_empty() {
                return Err(ApiError::method_not_allowed());
            }
            let opts = delete_opts(&body, params)?;
            let warn = opts.propagation.is_none() && info.group == "batch" && info.plural == "jobs";
            let mut resp = match objects::delete(shared, &info, ns, &req.name, &opts)? {
                Deleted::Gone(obj) => {
                    mirror_event(shared, &info, ns, &req.name, &write_opts(params), None);
                    json_response(
                        200,
                        &success_status(
                            &info.group,
                            &info.plural,
                            &req.name,
                            crate::util::uid(&obj),
                        ),
                    )
                }
                Deleted::Pending(obj) => json_response(200, &served(&info, obj)),
            };
            if warn {
                resp.headers_mut().insert(
                    "warning",
                    HeaderValue::from_static("299 - \"child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning\""),
                );
            }
            Ok(resp)
        }
        "deletecollection" => {
            let opts = delete_opts(&body, params)?;
            list::delete_collection(shared, &info, ns, params, &opts)
                .map(|v| json_response(200, &v))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A write of an `events.k8s.io` Event shows in core `v1` too, as in the real API server
/// (`crate::events`): `stored` is the Event written, or `None` when `name` was deleted.
fn mirror_event(
    shared: &Shared,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    opts: &WriteOpts,
    stored: Option<&Value>,
) {
    if info.group != "events.k8s.io" || info.plural != "events" || opts.dry_run {
        return;
    }
    let name = stored
        .and_then(|obj| obj["metadata"]["name"].as_str())
        .unwrap_or(name);
    crate::events::mirror(shared, ns, name, stored);
}

/// `DeleteOptions` from the body (kube-rs and kubectl send them there) or the query.
fn delete_opts(body: &Bytes, params: &Params) -> Result<DeleteOpts, ApiError> {
    let b = parse_json(body)?;
    let get = |k: &str| -> Option<String> {
        b.get(k)
            .and_then(|v| v.as_str().map(str::to_string))
            .or_else(|| params.get(k).cloned())
    };
    let propagation = match get("propagationPolicy").as_deref() {
        Some("Orphan") => Some(Propagation::Orphan),
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some(other) => {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                "propagationPolicy",
                &format!(
                    "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
            ));
        }
        None => match b
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or_else(|| params.get("orphanDependents").map(|v| v == "true"))
        {
            Some(true) => Some(Propagation::Orphan),
            Some(false) => Some(Propagation::Background),
            None => None,
        },
    };
    let dry_run = b
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"))
        || params.get("dryRun").is_some_and(|v| v == "All");
    Ok(DeleteOpts {
        propagation,
        precondition_uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

/// Streaming body helper used by watch and log-follow.
pub fn stream_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::io::Error>(b), rx))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, path: &str, q: &[(&str, &str)]) -> RequestInfo {
        let p: Params = q
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        classify(&method, path, &p)
    }

    #[test]
    fn classifies_like_the_api_server() {
        let r = c(Method::GET, "/api/v1/namespaces/default/pods/p1/log", &[]);
        assert_eq!(
            (
                r.verb.as_str(),
                r.resource.as_str(),
                r.name.as_str(),
                r.subresource.as_str(),
                r.namespace.as_str()
            ),
            ("get", "pods", "p1", "log", "default")
        );
        let r = c(
            Method::GET,
            "/apis/batch/v1/namespaces/x/jobs",
            &[("watch", "true")],
        );
        assert_eq!((r.verb.as_str(), r.group.as_str()), ("watch", "batch"));
        let r = c(Method::GET, "/api/v1/namespaces/foo", &[]);
        assert_eq!(
            (r.verb.as_str(), r.resource.as_str(), r.name.as_str()),
            ("get", "namespaces", "foo")
        );
        let r = c(Method::PUT, "/api/v1/namespaces/foo/status", &[]);
        assert_eq!(
            (r.resource.as_str(), r.name.as_str(), r.subresource.as_str()),
            ("namespaces", "foo", "status")
        );
        let r = c(Method::DELETE, "/api/v1/namespaces/d/configmaps", &[]);
        assert_eq!(r.verb, "deletecollection");
        let r = c(Method::GET, "/api/v1/watch/namespaces/d/configmaps", &[]);
        assert_eq!(
            (r.verb.as_str(), r.resource.as_str()),
            ("watch", "configmaps")
        );
        let r = c(Method::GET, "/apis/batch/v1", &[]);
        assert!(!r.is_resource);
    }
}
