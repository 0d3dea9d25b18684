//! watch: streams of `{"type": ..., "object": ...}` lines from a resourceVersion, with
//! bookmarks, server-side timeout, selectors and `410 Expired` for compacted history.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::list::Selector;
use super::{Params, Render, flag, partial_metadata, served, stream_body, table};
use crate::Shared;
use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::store::{EventType, StoreEvent};

/// Server-side watch timeout when the client sends none (the real server picks 30-60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Ctx {
    info: ResourceInfo,
    ns: String,
    name: String,
    sel: Selector,
    mode: Render,
    params: Params,
}

impl Ctx {
    /// Decides what a store event looks like to this watch (selectors can turn a MODIFIED
    /// into ADDED or DELETED, as the real watch cache does).
    fn filter(&self, ev: &StoreEvent) -> Option<(&'static str, Value)> {
        if ev.key != self.info.key()
            || (!self.ns.is_empty() && ev.namespace != self.ns)
            || (!self.name.is_empty() && ev.name != self.name)
        {
            return None;
        }
        let now = self.sel.matches(&ev.object);
        let before = ev.old.as_ref().is_some_and(|o| self.sel.matches(o));
        let t = match ev.type_ {
            EventType::Added => now.then_some("ADDED"),
            EventType::Modified => match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => {
                    // The object no longer matches: the watch cache sends it as it was when it
                    // last matched, at the resourceVersion of the change.
                    let mut last = ev.old.clone()?;
                    if let (Some(meta), Some(rv)) = (
                        last.get_mut("metadata").and_then(Value::as_object_mut),
                        ev.object.pointer("/metadata/resourceVersion"),
                    ) {
                        meta.insert("resourceVersion".into(), rv.clone());
                    }
                    return Some(("DELETED", last));
                }
                (false, false) => None,
            },
            EventType::Deleted => (before || now).then_some("DELETED"),
        }?;
        Some((t, ev.object.clone()))
    }

    fn line(&self, type_: &str, obj: Value) -> Bytes {
        let object = match self.mode {
            Render::Full => served(&self.info, obj),
            Render::Metadata => partial_metadata(&obj),
            Render::Table => {
                table::table(&self.info, &[served(&self.info, obj)], &self.params, None)
            }
        };
        let mut s = json!({"type": type_, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (api_version, kind) = match self.mode {
            Render::Metadata => (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            ),
            _ => (self.info.api_version(), self.info.kind.clone()),
        };
        let mut s = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": meta}})
            .to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

pub fn watch(
    shared: &Arc<Shared>,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    params: &Params,
    mode: Render,
) -> Result<Response, ApiError> {
    let sel = Selector::from_params(info, params)?;
    let send_initial = flag(params, "sendInitialEvents");
    let from = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))?,
        ),
    };
    let from = if send_initial { None } else { from };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = flag(params, "allowWatchBookmarks");
    let ctx = Ctx {
        info: info.clone(),
        ns: ns.to_string(),
        name: name.to_string(),
        sel,
        mode,
        params: params.clone(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    match shared.store.watch(&info.key(), from) {
        Err(e) => {
            // As the real server: the watch is accepted, then fails with an ERROR event.
            let mut s = json!({"type": "ERROR", "object": e.to_status()}).to_string();
            s.push('\n');
            let _ = tx.try_send(Bytes::from(s));
        }
        Ok(start) => {
            let shared = shared.clone();
            let mut close = shared.watch_close.subscribe();
            close.borrow_and_update();
            let mut removed = shared.resource_removed.subscribe();
            removed.borrow_and_update();
            let (group, plural) = ctx.info.key();
            let interval = shared.opts.bookmark_interval;
            tokio::spawn(async move {
                let mut events = start.rx;
                for ev in &start.initial {
                    if let Some((t, o)) = ctx.filter(ev)
                        && tx.send(ctx.line(t, o)).await.is_err()
                    {
                        return;
                    }
                }
                let mut last_rv = start.rv;
                if send_initial && tx.send(ctx.bookmark(last_rv, true)).await.is_err() {
                    return;
                }
                let deadline = tokio::time::Instant::now() + timeout;
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tokio::select! {
                        ev = events.recv() => match ev {
                            Ok(ev) => {
                                last_rv = ev.rv;
                                if let Some((t, o)) = ctx.filter(&ev)
                                    && tx.send(ctx.line(t, o)).await.is_err()
                                {
                                    return;
                                }
                            }
                            // Fell behind or store gone: end the watch; the client re-watches.
                            Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                        },
                        _ = tick.tick(), if bookmarks => {
                            if tx.send(ctx.bookmark(last_rv, false)).await.is_err() {
                                return;
                            }
                        }
                        _ = tokio::time::sleep_until(deadline) => {
                            if bookmarks {
                                let _ = tx.send(ctx.bookmark(last_rv, false)).await;
                            }
                            return;
                        }
                        _ = close.changed() => return,
                        // The resource's CRD is gone: its watches end, as the real server's.
                        _ = removed.changed() => {
                            if shared.registry_read().find_any(&group, &plural).is_some() {
                                continue;
                            }
                            // The deletions of its objects came before: sent first.
                            while let Ok(ev) = events.try_recv() {
                                if let Some((t, o)) = ctx.filter(&ev)
                                    && tx.send(ctx.line(t, o)).await.is_err()
                                {
                                    return;
                                }
                            }
                            return;
                        }
                        _ = tx.closed() => return,
                    }
                }
            });
        }
    }
    let mut resp = Response::new(stream_body(rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
