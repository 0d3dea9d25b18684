//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: `container`, `previous`, `tailLines`,
//! `limitBytes`, `timestamps`, `follow`, with the kubelet's error messages.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::Value;

use super::{Params, flag, stream_body};
use crate::Shared;
use crate::error::ApiError;
use crate::podlogs::LogLine;
use crate::util;

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn status_of(pod: &Value, container: &str) -> Option<Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| {
            pod.pointer(&format!("/status/{k}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
        .cloned()
}

fn render(lines: &[LogLine], params: &Params) -> String {
    let tail: Option<usize> = params.get("tailLines").and_then(|t| t.parse().ok());
    let start = tail.map_or(0, |t| lines.len().saturating_sub(t));
    let ts = flag(params, "timestamps");
    let mut out = String::new();
    for l in &lines[start..] {
        if ts {
            out.push_str(&l.ts);
            out.push(' ');
        }
        out.push_str(&l.text);
        out.push('\n');
    }
    if let Some(limit) = params
        .get("limitBytes")
        .and_then(|l| l.parse::<usize>().ok())
        && out.len() > limit
    {
        let mut cut = limit;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn text(body: String) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn running(pod: &Value, container: &str) -> bool {
    status_of(pod, container).is_some_and(|s| s.pointer("/state/running").is_some())
}

pub async fn serve(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let key = (String::new(), "pods".to_string());
    let pod = shared
        .store
        .get(&key, ns, name)
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let mains = names(&pod, "containers");
    let inits = names(&pod, "initContainers");
    let container = match params.get("container").filter(|c| !c.is_empty()) {
        Some(c) => c.clone(),
        None if mains.len() == 1 => mains[0].clone(),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                mains.join(" ")
            );
            if !inits.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            return Err(ApiError::bad_request(msg));
        }
    };
    if !mains.contains(&container) && !inits.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let uid = util::uid(&pod).to_string();
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        // No node to ask: the real server answers 200 with nothing (its log location is empty).
        return Ok(text(String::new()));
    }
    // Which container instance, as the kubelet picks it from the container status.
    let status = status_of(&pod, &container).unwrap_or(Value::Null);
    let live =
        status.pointer("/state/running").is_some() || status.pointer("/state/terminated").is_some();
    let last_terminated = status.pointer("/state/lastState/terminated").is_some()
        || status.pointer("/lastState/terminated").is_some();
    let back = if flag(params, "previous") {
        if !last_terminated {
            return Err(ApiError::bad_request(format!(
                "previous terminated container {container:?} in pod {name:?} not found"
            )));
        }
        usize::from(live)
    } else if live || last_terminated {
        0
    } else {
        let reason = status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .unwrap_or("ContainerCreating");
        let why = match reason {
            "ErrImagePull" => "image can't be pulled".to_string(),
            "ImagePullBackOff" => "trying and failing to pull image".to_string(),
            r => r.to_string(),
        };
        return Err(ApiError::bad_request(format!(
            "container {container:?} in pod {name:?} is waiting to start: {why}"
        )));
    };
    let lines = shared.logs.get(&uid, &container, back).unwrap_or_default();
    if !flag(params, "follow") || !running(&pod, &container) {
        return Ok(text(render(&lines, params)));
    }
    // follow: send what exists, then poll for new lines until the container stops.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let first = render(&lines, params);
    let mut sent = lines.len();
    let shared = shared.clone();
    let (ns, name) = (ns.to_string(), name.to_string());
    let ts = flag(params, "timestamps");
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = shared.logs.get(&uid, &container, 0).unwrap_or_default();
            if now.len() > sent {
                let mut chunk = String::new();
                for l in &now[sent..] {
                    if ts {
                        chunk.push_str(&l.ts);
                        chunk.push(' ');
                    }
                    chunk.push_str(&l.text);
                    chunk.push('\n');
                }
                sent = now.len();
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
            match shared.store.get(&key, &ns, &name) {
                Some(p) if util::uid(&p) == uid && running(&p, &container) => {}
                _ => return,
            }
        }
    });
    let mut resp = Response::new(stream_body(rx));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}
