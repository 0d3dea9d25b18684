//! The simulated scheduler + kubelet: every pod is bound to one node and its init containers,
//! then containers, run through the runtime script, with the pod status a real kubelet
//! reports (phases, conditions, container states, restarts).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::Shared;
use crate::runtime::{ContainerRecord, ContainerRun, Held, Kind, Outcome};
use crate::store::EventType;
use crate::util;
use crate::volumes;

pub const NODE: &str = "kube-sim-node";
const HOST_IP: &str = "10.0.0.10";
/// Scheduling + sandbox creation time (simulated).
const START_DELAY: Duration = Duration::from_millis(10);
/// How often a blocked pod (missing ConfigMap/Secret) retries, real time.
const RETRY: Duration = Duration::from_millis(100);
/// Base of the container restart back-off (simulated), as the kubelet's 10 s.
const RESTART_BACKOFF: Duration = Duration::from_secs(10);

static POD_IPS: AtomicU32 = AtomicU32::new(1);

fn pods_key() -> (String, String) {
    (String::new(), "pods".into())
}

fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// The kubelet task.
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.store.subscribe();
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut started: HashSet<String> = HashSet::new();
    loop {
        let events = match rx.recv().await {
            Ok(ev) => vec![ev],
            Err(RecvError::Lagged(_)) => {
                // Rescan: treat every pod as modified.
                let (pods, _) = shared.store.list(&pods_key(), None);
                pods.into_iter()
                    .map(|p| {
                        Arc::new(crate::store::StoreEvent {
                            key: pods_key(),
                            namespace: util::namespace(&p).into(),
                            name: util::name(&p).into(),
                            type_: EventType::Modified,
                            rv: 0,
                            object: p,
                            old: None,
                        })
                    })
                    .collect()
            }
            Err(RecvError::Closed) => return,
        };
        tasks.retain(|_, h| !h.is_finished());
        for ev in events {
            if ev.key != pods_key() {
                continue;
            }
            let uid = util::uid(&ev.object).to_string();
            if ev.type_ == EventType::Deleted {
                if let Some(h) = tasks.remove(&uid) {
                    h.abort();
                }
                started.remove(&uid);
                let dir = shared.runtime.workdir().join(&uid);
                let _ = std::fs::remove_dir_all(dir);
                continue;
            }
            if util::is_deleting(&ev.object) {
                if let Some(h) = tasks.remove(&uid) {
                    h.abort();
                    kill(&shared, &ev.object);
                }
                continue;
            }
            if !started.contains(&uid) && !terminal(&ev.object) {
                started.insert(uid.clone());
                tasks.insert(
                    uid,
                    tokio::spawn(run_pod(shared.clone(), ev.object.clone())),
                );
            }
        }
    }
}

/// Marks a pod whose containers were stopped by deletion.
fn kill(shared: &Shared, pod: &Value) {
    let now = util::now_rfc3339();
    update_pod(shared, pod, |p| {
        for list in ["initContainerStatuses", "containerStatuses"] {
            if let Some(Value::Array(cs)) = p.pointer_mut(&format!("/status/{list}")) {
                for c in cs {
                    if let Some(r) = c.pointer("/state/running").cloned() {
                        c["state"] = json!({"terminated": {"exitCode": 137, "reason": "Error", "startedAt": r.get("startedAt"), "finishedAt": now}});
                        c["ready"] = json!(false);
                        c["started"] = json!(false);
                    }
                }
            }
        }
        if !terminal(p) {
            p["status"]["phase"] = json!("Failed");
        }
    });
}

/// Applies `f` to the stored pod (if it is still the same pod), then recomputes its phase
/// and conditions.
fn update_pod<F: FnOnce(&mut Value)>(shared: &Shared, pod: &Value, f: F) -> Option<Value> {
    let out = shared.store.update_same(&pods_key(), pod, |p| {
        f(p);
        refresh(p);
    })?;
    match out {
        crate::store::Outcome::Stored(v) => Some(v),
        _ => None,
    }
}

fn cond(type_: &str, ok: bool, reason: Option<&str>, old: &[Value], now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some(type_)
                && c.get("status").and_then(Value::as_str) == Some(status)
        })
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// Recomputes phase and conditions from the container statuses.
fn refresh(p: &mut Value) {
    let spec_names = |k: &str| -> Vec<String> {
        p.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (inits, mains) = (spec_names("initContainers"), spec_names("containers"));
    let statuses = |k: &str| {
        p.pointer(&format!("/status/{k}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (is, ms) = (
        statuses("initContainerStatuses"),
        statuses("containerStatuses"),
    );
    let restart = p
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_string();
    let exit = |c: &Value| {
        c.pointer("/state/terminated/exitCode")
            .and_then(Value::as_i64)
    };
    let init_done = inits.iter().all(|n| {
        is.iter()
            .any(|c| c.get("name").and_then(Value::as_str) == Some(n) && exit(c) == Some(0))
    });
    let init_failed = restart == "Never" && is.iter().any(|c| exit(c).is_some_and(|e| e != 0));
    let all_main_done = !mains.is_empty()
        && mains.iter().all(|n| {
            ms.iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(n) && exit(c).is_some())
        });
    let main_ok = ms.iter().all(|c| exit(c) == Some(0));
    let any_main = ms
        .iter()
        .any(|c| c.pointer("/state/running").is_some() || exit(c).is_some());
    let scheduled = p
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = if init_failed || (all_main_done && !main_ok && restart == "Never") {
        "Failed"
    } else if all_main_done && main_ok && restart != "Always" {
        "Succeeded"
    } else if any_main {
        "Running"
    } else {
        "Pending"
    };
    let current = p
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let phase = if matches!(current, "Succeeded" | "Failed") {
        current.to_string()
    } else {
        phase.to_string()
    };
    let done = phase == "Succeeded" || phase == "Failed";
    let ready = !done
        && !mains.is_empty()
        && mains.iter().all(|n| {
            ms.iter().any(|c| {
                c.get("name").and_then(Value::as_str) == Some(n)
                    && c.get("ready").and_then(Value::as_bool) == Some(true)
            })
        });
    let now = util::now_rfc3339();
    let old = statuses("conditions");
    let reason = |ok: bool, r: &'static str| {
        if ok {
            None
        } else {
            Some(if done { "PodCompleted" } else { r })
        }
    };
    let mut conditions = Vec::new();
    if scheduled {
        conditions.push(cond("PodReadyToStartContainers", !done, None, &old, &now));
        conditions.push(cond(
            "Initialized",
            init_done,
            reason(init_done, "ContainersNotInitialized"),
            &old,
            &now,
        ));
        conditions.push(cond(
            "Ready",
            ready,
            reason(ready, "ContainersNotReady"),
            &old,
            &now,
        ));
        conditions.push(cond(
            "ContainersReady",
            ready,
            reason(ready, "ContainersNotReady"),
            &old,
            &now,
        ));
        conditions.push(cond("PodScheduled", true, None, &old, &now));
    }
    if let Some(s) = p.get_mut("status").and_then(Value::as_object_mut) {
        s.insert("phase".into(), json!(phase));
        if scheduled {
            s.insert("conditions".into(), Value::Array(conditions));
        }
    }
}

fn container_status(name: &str, image: &str, state: Value, restarts: u32, init: bool) -> Value {
    let running = state.get("running").is_some();
    json!({
        "name": name,
        "image": image,
        "imageID": format!("kube-sim/{image}"),
        "containerID": format!("containerd://{:016x}{:016x}", util::random_u64(), util::random_u64()),
        "ready": running && !init,
        "started": running,
        "restartCount": restarts,
        "state": state,
        "lastState": {},
    })
}

/// Sets one container's state (keeping its previous terminated state as lastState).
fn set_state(
    shared: &Shared,
    pod: &Value,
    name: &str,
    image: &str,
    init: bool,
    state: Value,
    restarts: u32,
) {
    let list = if init {
        "initContainerStatuses"
    } else {
        "containerStatuses"
    };
    update_pod(shared, pod, |p| {
        if !p.get("status").is_some_and(Value::is_object) {
            p["status"] = json!({});
        }
        let arr = p["status"]
            .as_object_mut()
            .map(|s| s.entry(list).or_insert_with(|| json!([])));
        let Some(Value::Array(arr)) = arr else { return };
        let mut entry = container_status(name, image, state, restarts, init);
        match arr
            .iter_mut()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(c) => {
                if let Some(t) = c.pointer("/state/terminated").cloned()
                    && entry.pointer("/state/terminated").is_none()
                {
                    entry["lastState"] = json!({"terminated": t});
                } else if let Some(l) = c.get("lastState") {
                    entry["lastState"] = l.clone();
                }
                if c.pointer("/state/waiting").is_some() || c.pointer("/state/running").is_none() {
                    // keep the containerID of a starting container stable
                } else if let Some(id) = c.get("containerID") {
                    entry["containerID"] = id.clone();
                }
                *c = entry;
            }
            None => arr.push(entry),
        }
    });
}

fn containers(pod: &Value, list: &str) -> Vec<Value> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

async fn run_pod(shared: Arc<Shared>, pod: Value) {
    shared.clock.sleep(START_DELAY).await;
    let inits = containers(&pod, "initContainers");
    let mains = containers(&pod, "containers");
    let ip = POD_IPS.fetch_add(1, Ordering::Relaxed);
    let now = util::now_rfc3339();
    let waiting_main = if inits.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let image = |c: &Value| {
        c.get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let cname = |c: &Value| {
        c.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let Some(pod) = update_pod(&shared, &pod, |p| {
        p["spec"]["nodeName"] = json!(NODE);
        p["status"]["hostIP"] = json!(HOST_IP);
        p["status"]["hostIPs"] = json!([{"ip": HOST_IP}]);
        p["status"]["podIP"] = json!(format!("10.244.{}.{}", (ip / 250) % 250, ip % 250 + 2));
        p["status"]["podIPs"] = json!([{"ip": p["status"]["podIP"].clone()}]);
        p["status"]["startTime"] = json!(now);
        p["status"]["initContainerStatuses"] = Value::Array(
            inits
                .iter()
                .map(|c| {
                    container_status(
                        &cname(c),
                        &image(c),
                        json!({"waiting": {"reason": "PodInitializing"}}),
                        0,
                        true,
                    )
                })
                .collect(),
        );
        p["status"]["containerStatuses"] = Value::Array(
            mains
                .iter()
                .map(|c| {
                    container_status(
                        &cname(c),
                        &image(c),
                        json!({"waiting": {"reason": waiting_main}}),
                        0,
                        false,
                    )
                })
                .collect(),
        );
        if inits.is_empty()
            && let Some(s) = p["status"].as_object_mut()
        {
            s.remove("initContainerStatuses");
        }
    }) else {
        return;
    };
    let dir = shared.runtime.workdir().join(util::uid(&pod));
    let vols = loop {
        match volumes::materialize(&shared, &pod, &dir) {
            Ok(v) => break v,
            Err(msg) => {
                tracing::debug!(pod = util::name(&pod), "{msg}");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let restart = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_string();
    for c in &inits {
        let mut attempt = 0;
        loop {
            let code = run_container(&shared, &pod, c, true, attempt, &vols).await;
            if code == 0 {
                break;
            }
            if restart == "Never" {
                return;
            }
            attempt += 1;
            back_off(&shared, &pod, c, true, attempt).await;
        }
    }
    let runs = mains.iter().map(|c| {
        let (shared, pod, vols, restart) = (&shared, &pod, &vols, &restart);
        async move {
            let mut attempt = 0;
            loop {
                let code = run_container(shared, pod, c, false, attempt, vols).await;
                if restart == "Never" || (code == 0 && restart == "OnFailure") {
                    return;
                }
                attempt += 1;
                back_off(shared, pod, c, false, attempt).await;
            }
        }
    });
    futures_util::future::join_all(runs).await;
}

async fn back_off(shared: &Shared, pod: &Value, c: &Value, init: bool, attempt: u32) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    set_state(
        shared,
        pod,
        name,
        image,
        init,
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {name}")}}),
        attempt,
    );
    let delay = RESTART_BACKOFF
        .saturating_mul(1 << (attempt - 1).min(5))
        .min(Duration::from_secs(300));
    shared.clock.sleep(delay).await;
}

async fn run_container(
    shared: &Arc<Shared>,
    pod: &Value,
    c: &Value,
    init: bool,
    attempt: u32,
    vols: &HashMap<String, std::path::PathBuf>,
) -> i32 {
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let env = loop {
        let current = shared
            .store
            .get(&pods_key(), util::namespace(pod), util::name(pod))
            .unwrap_or_else(|| pod.clone());
        match volumes::resolve_env(shared, &current, c) {
            Ok(e) => break e,
            Err(msg) => {
                set_state(
                    shared,
                    pod,
                    &name,
                    &image,
                    init,
                    json!({"waiting": {"reason": "CreateContainerConfigError", "message": msg}}),
                    attempt,
                );
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let strings = |k: &str| -> Vec<String> {
        c.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| volumes::expand(s, &env))
                    .collect()
            })
            .unwrap_or_default()
    };
    let run = ContainerRun {
        namespace: util::namespace(pod).into(),
        pod: util::name(pod).into(),
        pod_uid: util::uid(pod).into(),
        job: util::labels(pod)
            .get("job-name")
            .and_then(Value::as_str)
            .map(str::to_string),
        container: name.clone(),
        init,
        image: image.clone(),
        command: strings("command"),
        args: strings("args"),
        working_dir: c
            .get("workingDir")
            .and_then(Value::as_str)
            .map(str::to_string),
        env: env.clone(),
        mounts: volumes::mounts(c, vols),
        attempt,
    };
    let behavior = shared.runtime.behavior_for(&run);
    if let Kind::NeverStarts { reason, message } = &behavior.kind {
        set_state(
            shared,
            pod,
            &name,
            &image,
            init,
            json!({"waiting": {"reason": reason, "message": message}}),
            attempt,
        );
        return std::future::pending::<i32>().await;
    }
    let uid = run.pod_uid.clone();
    shared.logs.start_attempt(&uid, &name);
    let started_at = util::now_rfc3339();
    set_state(
        shared,
        pod,
        &name,
        &image,
        init,
        json!({"running": {"startedAt": started_at}}),
        attempt,
    );
    for line in &behavior.output {
        shared.logs.append(&uid, &name, line);
    }
    let mut output = behavior.output.clone();
    let code = match &behavior.kind {
        Kind::Exit | Kind::NeverStarts { .. } => {
            shared.clock.sleep(behavior.run_time).await;
            behavior.exit_code
        }
        Kind::Hold => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            shared
                .runtime
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Held {
                    pod: run.pod.clone(),
                    namespace: run.namespace.clone(),
                    job: run.job.clone(),
                    container: name.clone(),
                    release: tx,
                });
            let _ = rx.await;
            behavior.exit_code
        }
        Kind::Run(f) => {
            let (f, r) = (f.clone(), run.clone());
            let out = tokio::task::spawn_blocking(move || f(&r))
                .await
                .unwrap_or_else(|_| {
                    Outcome::exit(2).output(["kube-sim: the container callback panicked"])
                });
            for line in &out.output {
                shared.logs.append(&uid, &name, line);
            }
            output.extend(out.output);
            shared.clock.sleep(behavior.run_time).await;
            out.exit_code
        }
    };
    let files = volumes::snapshot(&run.mounts);
    let reason = if code == 0 { "Completed" } else { "Error" };
    // Recorded before the status changes, so whoever sees the termination finds the record.
    shared.runtime.record(ContainerRecord {
        run,
        files,
        exit_code: Some(code),
        output,
    });
    let mut terminated = json!({"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": util::now_rfc3339()});
    if let Some(message) = behavior
        .termination_message
        .as_deref()
        .filter(|m| !m.is_empty())
    {
        // The kubelet reads the file's last 4096 bytes (`tail.ReadAtMost`).
        let mut start = message.len().saturating_sub(TERMINATION_MESSAGE_BYTES);
        while !message.is_char_boundary(start) {
            start += 1;
        }
        terminated["message"] = json!(&message[start..]);
    }
    set_state(
        shared,
        pod,
        &name,
        &image,
        init,
        json!({ "terminated": terminated }),
        attempt,
    );
    code
}

/// The most of a termination message the kubelet reports.
const TERMINATION_MESSAGE_BYTES: usize = 4096;
