//! The simulated Job controller (batch/v1 semantics): pods from the template, status counters
//! and conditions, backoffLimit with exponential retry back-off, activeDeadlineSeconds,
//! suspend, and the TTL-after-finished controller.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use crate::Shared;
use crate::kinds::JOB_LABELS;
use crate::objects::{self, DeleteOpts, WriteOpts};
use crate::store::{EventType, StoreEvent};
use crate::util;

/// Base of the pod re-creation back-off after a failure (simulated), as the real 10 s.
const RETRY_BACKOFF: Duration = Duration::from_secs(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(600);

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

/// Syncs done between two looks at the event stream.
const BATCH: usize = 256;
/// How soon a Job whose pod could not be created is synced again (real time).
const CREATE_RETRY: Duration = Duration::from_secs(1);

type JobKey = (String, String);

/// The controller's state between syncs: a work queue of Job keys, delayed re-queues, the
/// in-memory pod accounting per Job uid, and the Job uid → key map that resolves a pod's
/// controller reference.
#[derive(Default)]
struct Controller {
    mem: HashMap<String, Mem>,
    job_keys: HashMap<String, JobKey>,
    queue: VecDeque<JobKey>,
    queued: HashSet<JobKey>,
    timers: HashMap<JobKey, Instant>,
    /// Due times, earliest first; an entry is stale unless `timers` still holds it.
    heap: BinaryHeap<Reverse<(Instant, JobKey)>>,
}

impl Controller {
    fn enqueue(&mut self, k: JobKey) {
        if self.queued.insert(k.clone()) {
            self.queue.push_back(k);
        }
    }

    /// Queues the Jobs a store event concerns: the Job itself, or the controllers of a pod
    /// (before and after the change).
    fn observe(&mut self, ev: &StoreEvent) {
        if ev.key == key("jobs") {
            let uid = util::uid(&ev.object).to_string();
            let k = (ev.namespace.clone(), ev.name.clone());
            if ev.type_ == EventType::Deleted {
                self.mem.remove(&uid);
                self.job_keys.remove(&uid);
                self.timers.remove(&k);
            } else {
                self.job_keys.insert(uid, k.clone());
                self.enqueue(k);
            }
        } else if ev.key == key("pods") {
            for pod in std::iter::once(&ev.object).chain(ev.old.as_ref()) {
                if let Some(k) = controller_uid(pod).and_then(|u| self.job_keys.get(&u)) {
                    self.enqueue(k.clone());
                }
            }
        }
    }

    /// Queues every Job (after missed events, as an informer relists).
    fn resync(&mut self, shared: &Shared) {
        let (jobs, _) = shared.store.list(&key("jobs"), None);
        self.job_keys = jobs
            .iter()
            .map(|j| {
                (
                    util::uid(j).to_string(),
                    (util::namespace(j).to_string(), util::name(j).to_string()),
                )
            })
            .collect();
        let live = &self.job_keys;
        self.mem.retain(|uid, _| live.contains_key(uid));
        let keys: Vec<JobKey> = self.job_keys.values().cloned().collect();
        for k in keys {
            self.enqueue(k);
        }
    }

    fn schedule(&mut self, k: &JobKey, at: Option<Instant>) {
        match at {
            None => {
                self.timers.remove(k);
            }
            Some(t) => {
                if self.timers.insert(k.clone(), t) != Some(t) {
                    self.heap.push(Reverse((t, k.clone())));
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.heap.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, k))) = self.heap.pop() else {
                break;
            };
            if self.timers.get(&k) == Some(&t) {
                self.timers.remove(&k);
                self.enqueue(k);
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Syncs one Job from the store: its pods come from the store's owner index.
    fn sync(&mut self, shared: &Shared, k: &JobKey) {
        let Some(job) = shared.store.get(&key("jobs"), &k.0, &k.1) else {
            self.timers.remove(k);
            return;
        };
        let uid = util::uid(&job).to_string();
        self.job_keys.insert(uid.clone(), k.clone());
        let pods: Vec<Value> = shared
            .store
            .dependents(&uid, Some(&key("pods")))
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| controller_uid(p).as_deref() == Some(uid.as_str()))
            .collect();
        let own: Vec<&Value> = pods.iter().collect();
        let m = self.mem.entry(uid).or_default();
        let wake = sync_job(shared, &job, &own, m);
        self.schedule(k, wake);
    }
}

/// The controller task. As kube-controller-manager's Job controller it works from a queue of
/// Job keys: a Job event queues that Job, a pod event queues the Job named by the pod's
/// controller reference, and time-based work (retry back-off, `activeDeadlineSeconds`,
/// `ttlSecondsAfterFinished`, failed pod creations) re-queues the key when it is due. Each
/// sync reads one Job and its pods, so the cost of an event does not grow with the store.
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.store.subscribe();
    let mut c = Controller::default();
    loop {
        if c.queue.is_empty() {
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => c.observe(&ev),
                    Err(RecvError::Lagged(_)) => c.resync(&shared),
                    Err(RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(c.next_timer().unwrap_or(far)) => {}
            }
        }
        // Take every event already queued (our own pod creations among them), so that each
        // sync sees the pods it made.
        let mut lagged = false;
        loop {
            match rx.try_recv() {
                Ok(ev) => c.observe(&ev),
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        if lagged {
            c.resync(&shared);
        }
        c.fire_timers(Instant::now());
        for _ in 0..BATCH {
            let Some(k) = c.queue.pop_front() else { break };
            c.queued.remove(&k);
            c.sync(&shared, &k);
        }
        tokio::task::yield_now().await;
    }
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

/// Creates one pod from the Job's template; false if that failed (retried later).
fn create_pod(shared: &Shared, job: &Value) -> bool {
    let Some(info) = shared.registry_find_any("", "pods") else {
        return false;
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
    match objects::create(
        shared,
        &info,
        util::namespace(job),
        pod,
        &WriteOpts::default(),
    ) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(job = name, "pod creation failed: {e}");
            failed_create(shared, job, &e.message);
            false
        }
    }
}

/// The Warning Event the Job controller records on a Job whose pod it could not create: the
/// only place that says why a Job has no pod.
fn failed_create(shared: &Shared, job: &Value, why: &str) {
    let Some(info) = shared.registry_find_any("events.k8s.io", "events") else {
        return;
    };
    let name = util::name(job);
    let namespace = util::namespace(job);
    let now = util::now_rfc3339();
    let event = json!({
        "metadata": {"name": format!("{name}.{:016x}", util::random_u64()), "namespace": namespace},
        // Recorded through the core/v1 API as the Job controller's recorder does: no
        // `eventTime`, the times to the second.
        "eventTime": null,
        "reportingController": "job-controller",
        "reportingInstance": "kube-sim",
        "action": "Create",
        "reason": "FailedCreate",
        "type": "Warning",
        "note": format!("Error creating: {why}"),
        "regarding": {"apiVersion": "batch/v1", "kind": "Job", "name": name,
                      "namespace": namespace, "uid": util::uid(job)},
        "deprecatedSource": {"component": "job-controller"},
        "deprecatedFirstTimestamp": now,
        "deprecatedLastTimestamp": now,
        "deprecatedCount": 1,
    });
    match objects::create(shared, &info, namespace, event, &WriteOpts::default()) {
        Ok(stored) => crate::events::mirror(shared, namespace, util::name(&stored), Some(&stored)),
        Err(e) => tracing::warn!(job = name, "could not record FailedCreate: {e}"),
    }
}

fn sync_job(shared: &Shared, job: &Value, own_pods: &[&Value], m: &mut Mem) -> Option<Instant> {
    if util::is_deleting(job) {
        return None;
    }
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
                            if create_pod(shared, job) {
                                active_count += 1;
                            } else {
                                let t = now + CREATE_RETRY;
                                wake = Some(wake.map_or(t, |w| w.min(t)));
                            }
                        }
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
    shared
        .store
        .update_same(&key("jobs"), job, |next| next["status"] = new_status);
    wake
}
