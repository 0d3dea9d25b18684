//! The simulated Job controller (batch/v1 semantics): pods from the template, status counters
//! and conditions, backoffLimit with exponential retry back-off, activeDeadlineSeconds,
//! suspend, and the TTL-after-finished controller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::Shared;
use crate::kinds::JOB_LABELS;
use crate::objects::{self, DeleteOpts, WriteOpts};
use crate::store::Change;
use crate::util;

/// Base of the pod re-creation back-off after a failure (simulated), as the real 10 s.
const RETRY_BACKOFF: Duration = Duration::from_secs(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(360);

#[derive(Default)]
struct Mem {
    counted: HashSet<String>,
    seen_active: HashSet<String>,
    started_at: Option<Instant>,
    finished_at: Option<Instant>,
    last_failure: Option<Instant>,
}

fn key(plural: &str) -> (String, String) {
    let group = if plural == "jobs" { "batch" } else { "" };
    (group.into(), plural.into())
}

/// The controller task.
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.store.subscribe();
    let mut mem: HashMap<String, Mem> = HashMap::new();
    let mut wake: Option<Instant> = None;
    loop {
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) if ev.key != key("jobs") && ev.key != key("pods") => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(wake.unwrap_or(far)) => {}
        }
        while rx.try_recv().is_ok() {}
        wake = sync_all(&shared, &mut mem);
    }
}

fn sync_all(shared: &Shared, mem: &mut HashMap<String, Mem>) -> Option<Instant> {
    let (jobs, _) = shared.store.list(&key("jobs"), None);
    let (pods, _) = shared.store.list(&key("pods"), None);
    let mut wake: Option<Instant> = None;
    let live: HashSet<String> = jobs.iter().map(|j| util::uid(j).to_string()).collect();
    mem.retain(|k, _| live.contains(k));
    // Pods grouped by their controller once, not scanned once per Job: with thousands of Jobs
    // a scan per Job is quadratic.
    let mut by_controller: HashMap<String, Vec<&Value>> = HashMap::new();
    for pod in &pods {
        if let Some(uid) = controller_uid(pod) {
            by_controller.entry(uid).or_default().push(pod);
        }
    }
    for job in &jobs {
        let m = mem.entry(util::uid(job).to_string()).or_default();
        let own = by_controller
            .get(util::uid(job))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Some(w) = sync_job(shared, job, own, m) {
            wake = Some(wake.map_or(w, |cur| cur.min(w)));
        }
    }
    wake
}

fn has_condition(conds: &[Value], t: &str) -> bool {
    conds.iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some(t)
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

fn set_condition(
    conds: &mut Vec<Value>,
    t: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let s = if status { "True" } else { "False" };
    if let Some(c) = conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
    {
        if c.get("status").and_then(Value::as_str) != Some(s) {
            *c = json!({"type": t, "status": s, "lastProbeTime": now, "lastTransitionTime": now, "reason": reason, "message": message});
        }
        return;
    }
    conds.push(json!({"type": t, "status": s, "lastProbeTime": now, "lastTransitionTime": now, "reason": reason, "message": message}));
}

/// The uid of the pod's controller (its owner reference with `controller: true`).
fn controller_uid(pod: &Value) -> Option<String> {
    util::owner_refs(pod).iter().find_map(|r| {
        (r.get("controller").and_then(Value::as_bool) == Some(true))
            .then(|| r.get("uid").and_then(Value::as_str).map(str::to_string))
            .flatten()
    })
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
}

fn int(v: &Value, p: &str) -> Option<i64> {
    v.pointer(p).and_then(Value::as_i64)
}

fn delete_pod(shared: &Shared, pod: &Value) {
    if let Some(info) = shared.registry_find_any("", "pods") {
        let _ = objects::delete(
            shared,
            &info,
            util::namespace(pod),
            util::name(pod),
            &DeleteOpts::background(),
        );
    }
}

fn create_pod(shared: &Shared, job: &Value) {
    let Some(info) = shared.registry_find_any("", "pods") else {
        return;
    };
    let name = util::name(job);
    let uid = util::uid(job);
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(l) = labels.as_object_mut() {
        l.insert(JOB_LABELS[0].into(), json!(uid));
        l.insert(JOB_LABELS[1].into(), json!(name));
        l.insert(JOB_LABELS[2].into(), json!(uid));
        l.insert(JOB_LABELS[3].into(), json!(name));
    }
    let prefix: String = format!("{name}-").chars().take(58).collect();
    let mut meta = json!({
        "generateName": prefix,
        "namespace": util::namespace(job),
        "labels": labels,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        meta["annotations"] = a.clone();
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or(json!({}))});
    if let Err(e) = objects::create(
        shared,
        &info,
        util::namespace(job),
        pod,
        &WriteOpts::default(),
    ) {
        tracing::debug!(job = name, "pod creation failed: {e}");
    }
}

fn sync_job(shared: &Shared, job: &Value, own_pods: &[&Value], m: &mut Mem) -> Option<Instant> {
    if util::is_deleting(job) {
        return None;
    }
    let uid = util::uid(job).to_string();
    let now = Instant::now();
    let now_s = util::now_rfc3339();
    let clock = &shared.clock;
    let status = job.get("status").cloned().unwrap_or(json!({}));
    let mut conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ttl = int(job, "/spec/ttlSecondsAfterFinished");
    if has_condition(&conds, "Complete") || has_condition(&conds, "Failed") {
        let ttl = ttl?;
        let fin = *m.finished_at.get_or_insert(now);
        let due = fin + clock.real(Duration::from_secs(ttl.max(0) as u64));
        if now >= due {
            if let Some(info) = shared.registry_find_any("batch", "jobs") {
                let _ = objects::delete(
                    shared,
                    &info,
                    util::namespace(job),
                    util::name(job),
                    &DeleteOpts::foreground(),
                );
            }
            return None;
        }
        return Some(due);
    }
    let pods: Vec<&Value> = own_pods
        .iter()
        .copied()
        .filter(|p| util::namespace(p) == util::namespace(job))
        .collect();
    let mut succeeded = int(&status, "/succeeded").unwrap_or(0);
    let mut failed = int(&status, "/failed").unwrap_or(0);
    let present: HashSet<&str> = pods.iter().map(|p| util::uid(p)).collect();
    for p in &pods {
        let puid = util::uid(p).to_string();
        match phase(p) {
            "Succeeded" if m.counted.insert(puid.clone()) => succeeded += 1,
            "Failed" if m.counted.insert(puid.clone()) => {
                failed += 1;
                m.last_failure = Some(now);
            }
            "Succeeded" | "Failed" => {}
            _ => {
                m.seen_active.insert(puid);
            }
        }
    }
    let vanished: Vec<String> = m
        .seen_active
        .iter()
        .filter(|u| !present.contains(u.as_str()) && !m.counted.contains(*u))
        .cloned()
        .collect();
    for u in vanished {
        m.counted.insert(u.clone());
        m.seen_active.remove(&u);
        failed += 1;
        m.last_failure = Some(now);
    }
    let active: Vec<&&Value> = pods
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && !util::is_deleting(p))
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && util::is_deleting(p))
        .count();
    let ready = active
        .iter()
        .filter(|p| {
            p.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some("Ready")
                            && c.get("status").and_then(Value::as_str) == Some("True")
                    })
                })
        })
        .count();
    let restarts: i64 = if job
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        == Some("OnFailure")
    {
        pods.iter()
            .flat_map(|p| {
                p.pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
            .sum()
    } else {
        0
    };
    let suspend = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let completions = int(job, "/spec/completions");
    let parallelism = int(job, "/spec/parallelism").unwrap_or(1);
    let backoff_limit = int(job, "/spec/backoffLimit").unwrap_or(6);
    let mut start_time = status.get("startTime").cloned();
    let mut completion_time = None;
    let mut wake: Option<Instant> = None;
    let mut active_count = active.len() as i64;
    if suspend {
        for p in &active {
            delete_pod(shared, p);
        }
        active_count = 0;
        set_condition(
            &mut conds,
            "Suspended",
            true,
            "JobSuspended",
            "Job suspended",
            &now_s,
        );
        start_time = None;
        m.started_at = None;
    } else {
        if has_condition(&conds, "Suspended") {
            set_condition(
                &mut conds,
                "Suspended",
                false,
                "JobResumed",
                "Job resumed",
                &now_s,
            );
            m.started_at = None;
            start_time = None;
        }
        if start_time.is_none() {
            start_time = Some(json!(now_s));
        }
        let started = *m.started_at.get_or_insert(now);
        let deadline = int(job, "/spec/activeDeadlineSeconds")
            .map(|s| started + clock.real(Duration::from_secs(s.max(0) as u64)));
        let failure = if has_condition(&conds, "FailureTarget") {
            conds
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("FailureTarget"))
                .map(|c| {
                    (
                        c["reason"].as_str().unwrap_or("").to_string(),
                        c["message"].as_str().unwrap_or("").to_string(),
                    )
                })
        } else if failed + restarts > backoff_limit {
            Some((
                "BackoffLimitExceeded".to_string(),
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if deadline.is_some_and(|d| now >= d) {
            Some((
                "DeadlineExceeded".to_string(),
                "Job was active longer than specified deadline".to_string(),
            ))
        } else {
            wake = deadline;
            None
        };
        let success = has_condition(&conds, "SuccessCriteriaMet")
            || match completions {
                Some(c) => succeeded >= c,
                None => succeeded >= 1 && active.is_empty(),
            };
        if let Some((reason, message)) = failure {
            set_condition(&mut conds, "FailureTarget", true, &reason, &message, &now_s);
            for p in &active {
                delete_pod(shared, p);
            }
            active_count = 0;
            if active.is_empty() && terminating == 0 {
                set_condition(&mut conds, "Failed", true, &reason, &message, &now_s);
                m.finished_at = Some(now);
                wake = ttl.map(|t| now + clock.real(Duration::from_secs(t.max(0) as u64)));
            }
        } else if success {
            let msg = "Reached expected number of succeeded pods";
            set_condition(
                &mut conds,
                "SuccessCriteriaMet",
                true,
                "CompletionsReached",
                msg,
                &now_s,
            );
            for p in &active {
                delete_pod(shared, p);
            }
            active_count = 0;
            if active.is_empty() && terminating == 0 {
                set_condition(
                    &mut conds,
                    "Complete",
                    true,
                    "CompletionsReached",
                    msg,
                    &now_s,
                );
                completion_time = Some(json!(now_s));
                m.finished_at = Some(now);
                wake = ttl.map(|t| now + clock.real(Duration::from_secs(t.max(0) as u64)));
            }
        } else {
            let remaining = completions.map_or(parallelism, |c| (c - succeeded).min(parallelism));
            let want = remaining - active.len() as i64;
            if want > 0 {
                let retry_at = m.last_failure.filter(|_| failed > 0).map(|t| {
                    let exp = (failed - 1).clamp(0, 10) as u32;
                    t + clock.real(
                        RETRY_BACKOFF
                            .saturating_mul(1 << exp)
                            .min(RETRY_BACKOFF_MAX),
                    )
                });
                match retry_at {
                    Some(t) if now < t => wake = Some(wake.map_or(t, |w| w.min(t))),
                    _ => {
                        for _ in 0..want {
                            create_pod(shared, job);
                        }
                        active_count += want;
                    }
                }
            }
        }
    }
    let mut new_status =
        json!({"uncountedTerminatedPods": {}, "ready": ready, "terminating": terminating});
    if active_count > 0 {
        new_status["active"] = json!(active_count);
    }
    if succeeded > 0 {
        new_status["succeeded"] = json!(succeeded);
    }
    if failed > 0 {
        new_status["failed"] = json!(failed);
    }
    if let Some(t) = start_time {
        new_status["startTime"] = t;
    }
    if let Some(t) = completion_time.or_else(|| status.get("completionTime").cloned()) {
        new_status["completionTime"] = t;
    }
    if !conds.is_empty() {
        new_status["conditions"] = Value::Array(conds);
    }
    let _ = shared.store.modify(
        &key("jobs"),
        util::namespace(job),
        util::name(job),
        |existing| {
            let Some(cur) = existing else {
                return Ok(Change::Keep);
            };
            if util::uid(cur) != uid {
                return Ok(Change::Keep);
            }
            let mut next = cur.clone();
            next["status"] = new_status;
            Ok(Change::Put(next))
        },
    );
    wake
}
