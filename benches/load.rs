//! Load harness: kube-sim and the real `job-executor` binary, driven over HTTP by `wrk`, with
//! the API server's and a bare axum handler's numbers measured in the same run.
//!
//! `cargo bench --bench load` prints the full table (docs/BENCHMARKS.md); under `cargo test`
//! (or with `--quick`) every measurement runs briefly, only to prove the harness works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use job_executor::crd::JobRun;
use job_executor::event::CloudEvent;
use job_executor::ingest::plan::{EventPlan, plan_event};
use job_executor::settings::Settings;
use job_executor::source::Source;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube_sim::{Behavior, ImageRule, Sim};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_job-executor");
const CLOUDEVENT: &str = "application/cloudevents+json";

#[derive(Clone, Copy)]
struct Plan {
    wrk_seconds: u32,
    steady_seconds: u64,
    in_flight_runs: usize,
    /// How long the in-flight phase may take before it reports what it reached.
    in_flight_seconds: u64,
}

const FULL: Plan = Plan {
    wrk_seconds: 10,
    steady_seconds: 20,
    in_flight_runs: 10_000,
    in_flight_seconds: 600,
};

const QUICK: Plan = Plan {
    wrk_seconds: 1,
    steady_seconds: 1,
    in_flight_runs: 50,
    in_flight_seconds: 60,
};

fn config_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("je-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bench/job")).unwrap();
    std::fs::write(
        dir.join("bench/job/config.yaml"),
        "apiVersion: v2\nactions:\n\
         \x20 - name: one\n    events: [{name: sh.keptn.event.one.triggered}]\n    tasks:\n      - {name: only, image: 'bench:quick'}\n\
         \x20 - name: three\n    events: [{name: sh.keptn.event.three.triggered}]\n    tasks:\n      - {name: first, image: 'bench:quick'}\n      - {name: second, image: 'bench:quick'}\n      - {name: third, image: 'bench:quick'}\n\
         \x20 - name: hold\n    events: [{name: sh.keptn.event.hold.triggered}]\n    tasks:\n      - {name: stays, image: 'bench:hold'}\n",
    )
    .unwrap();
    dir
}

fn event(event_type: &str, id: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "load", "type": event_type,
        "shkeptncontext": "5f0b6c2e-3d4a-4b8f-9e1c-2a7d6f3b8c90",
        "data": {"project": "load", "stage": "dev", "service": "bench",
                 "labels": {"run": "load"}, "padding": "x".repeat(1500)}
    })
}

struct Operator {
    child: Child,
    ingest: SocketAddr,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh kube-sim with the CRD, and the operator against it, ready: each phase gets its own,
/// so no phase inherits another's objects or backlog.
struct Stack {
    sim: Sim,
    operator: Operator,
}

impl Stack {
    async fn start(config: &Path, phase: &str, sink: &str) -> Stack {
        let sim = Sim::builder().start().await.unwrap();
        sim.runtime()
            .set(ImageRule::image("bench:hold"), Behavior::hold());
        let kubeconfig = sim
            .write_kubeconfig(config.join(format!("kubeconfig-{phase}")))
            .unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
        crds.create(&PostParams::default(), &JobRun::crd())
            .await
            .unwrap();
        let operator = start_operator(&kubeconfig, config, sink).await;
        Stack { sim, operator }
    }

    fn pid(&self) -> u32 {
        self.operator.child.id()
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

async fn start_operator(kubeconfig: &Path, config: &Path, sink: &str) -> Operator {
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--config-dir",
            config.to_str().unwrap(),
            "--sink-url",
            sink,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--concurrency",
            "64",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (ingest, admin) = (address("ingest="), address("admin="));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("http://{admin}/readyz").parse().unwrap())
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the operator never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Operator { child, ingest }
}

/// User plus system CPU time of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Requests per second `wrk` reached, and how many answers were not 2xx.
fn wrk(url: &str, script: &Path, seconds: u32) -> (f64, u64) {
    let output = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk is installed by scripts/setup-tools (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rate, non_2xx)
}

/// A wrk script posting `body`; with `unique`, every request replaces `EVENTID` in it with a
/// fresh id.
fn wrk_script(dir: &Path, name: &str, body: &Value, content_type: &str, unique: bool) -> PathBuf {
    let body = body.to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let script = if unique {
        format!(
            "local threads = 0\nfunction setup(thread)\n  threads = threads + 1\n  thread:set(\"tid\", threads)\nend\nlocal n = 0\nrequest = function()\n  n = n + 1\n  local body = string.gsub(\"{body}\", \"EVENTID\", tid .. \"-\" .. n)\n  return wrk.format(\"POST\", nil, {{[\"content-type\"] = \"{content_type}\"}}, body)\nend\n"
        )
    } else {
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{body}\"\nwrk.headers[\"content-type\"] = \"{content_type}\"\n"
        )
    };
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    path
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    )
}

async fn post_event(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    body: &Value,
) -> (u16, Value) {
    let request = http::Request::post(format!("http://{addr}/events"))
        .header("content-type", "application/cloudevents+json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[derive(Default)]
struct JobTimes {
    created: HashMap<String, Instant>,
    completed: HashMap<String, Instant>,
}

/// Prints each result as soon as it is measured (a long run keeps what it got) and keeps it for
/// the table.
fn report(rows: &mut Vec<(String, String)>, name: String, value: String) {
    eprintln!("{name}: {value}");
    rows.push((name, value));
}

/// The sink every operator reports to, and the bare handler ingest is compared with: both only
/// answer 202. Returns their addresses and the count of `.finished` events the sink received.
async fn start_receivers() -> (SocketAddr, SocketAddr, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    let finished = Arc::new(Mutex::new(0usize));
    let counter = finished.clone();
    let app = Router::new().route(
        "/events",
        post(move |headers: http::HeaderMap, _body: Bytes| {
            let counter = counter.clone();
            async move {
                if headers
                    .get("ce-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.ends_with(".finished"))
                {
                    *counter.lock().unwrap() += 1;
                }
                http::StatusCode::ACCEPTED
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = bare_listener.local_addr().unwrap();
    let bare = Router::new().route(
        "/events",
        post(|_body: Bytes| async { http::StatusCode::ACCEPTED }),
    );
    tokio::spawn(async move { axum::serve(bare_listener, bare).await });
    (sink_addr, bare_addr, finished)
}

fn non_2xx(count: u64) -> String {
    if count > 0 {
        format!("; {count} non-2xx")
    } else {
        String::new()
    }
}

/// Phase 1, ingest of events that match nothing, against a bare axum handler: the two alternate
/// twice, so a neighbour's burst on the machine does not land on one side only.
fn ingest_phase(plan: Plan, stack: &Stack, dir: &Path, bare_addr: SocketAddr) -> (String, String) {
    let nomatch = wrk_script(
        dir,
        "nomatch.lua",
        &event("sh.keptn.event.nothing.triggered", "nomatch"),
        CLOUDEVENT,
        false,
    );
    let operator_url = format!("http://{}/events", stack.operator.ingest);
    let bare_url = format!("http://{bare_addr}/events");
    wrk(&operator_url, &nomatch, 1); // warm-up: connections, the config's first load
    let (mut ingest_rates, mut bare_rates, mut errors) = (Vec::new(), Vec::new(), 0);
    for _ in 0..2 {
        let (rate, failed) = wrk(&operator_url, &nomatch, plan.wrk_seconds);
        ingest_rates.push(rate);
        errors += failed;
        bare_rates.push(wrk(&bare_url, &nomatch, plan.wrk_seconds).0);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ingest, bare) = (mean(&ingest_rates), mean(&bare_rates));
    (
        "ingest, non-matching events (wrk -t2 -c32, mean of 2 alternating runs each)".into(),
        format!(
            "{ingest:.0} req/s vs bare axum {bare:.0} req/s: ratio {:.2} (target ≥ 0.5){}",
            ingest / bare.max(1.0),
            non_2xx(errors)
        ),
    )
}

/// Phase 2a, kube-sim's own ceiling: the JobRun ingest would create for a one-task event (built by the
/// operator's own planner, with a fresh name and event id per request), posted straight to
/// kube-sim by the same load generator, while an operator reconciles them as it does the runs
/// it accepts in 2b.
fn create_ceiling(plan: Plan, stack: &Stack, dir: &Path) -> (f64, u64) {
    let source = Source::directory(dir);
    let cloud_event =
        CloudEvent::from_value(event("sh.keptn.event.one.triggered", "EVENTID")).unwrap();
    let EventPlan::Runs { mut runs, .. } = plan_event(&cloud_event, &source, &Settings::defaults())
    else {
        panic!("the one-task action must match");
    };
    let mut run = runs.remove(0);
    run.metadata.name = Some("ceiling-EVENTID".into());
    let script = wrk_script(
        dir,
        "ceiling.lua",
        &serde_json::to_value(&run).unwrap(),
        "application/json",
        true,
    );
    wrk(
        &format!(
            "{}/apis/job-executor.dev/v1alpha1/namespaces/default/jobruns",
            stack.sim.url()
        ),
        &script,
        plan.wrk_seconds,
    )
}

/// Phase 3, latencies at a steady 50 events/s of three-task runs, as a watch on Jobs sees them.
async fn latency_phase(plan: Plan, stack: &Stack) -> Vec<(String, String)> {
    let times = Arc::new(Mutex::new(JobTimes::default()));
    let recorder = times.clone();
    let jobs: Api<Job> = Api::namespaced(stack.sim.client(), "default");
    let (watching_tx, watching) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let mut watching_tx = Some(watching_tx);
        let mut stream = watcher(jobs, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            if matches!(event, watcher::Event::InitDone) {
                if let Some(tx) = watching_tx.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            if let watcher::Event::Apply(job) | watcher::Event::InitApply(job) = event {
                let name = job.metadata.name.clone().unwrap_or_default();
                let now = Instant::now();
                let mut times = recorder.lock().unwrap();
                times.created.entry(name.clone()).or_insert(now);
                let complete = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Complete" && c.status == "True")
                    });
                if complete {
                    times.completed.entry(name).or_insert(now);
                }
            }
        }
    });
    watching.await.unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    // Open loop: one event every 20 ms whatever the answers take, as a steady sender would.
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let steady_start = Instant::now();
    let mut sends = Vec::new();
    let mut n = 0;
    while steady_start.elapsed() < Duration::from_secs(plan.steady_seconds) {
        ticker.tick().await;
        n += 1;
        let (client, ingest) = (client.clone(), stack.operator.ingest);
        sends.push(tokio::spawn(async move {
            let (status, body) = post_event(
                &client,
                ingest,
                &event("sh.keptn.event.three.triggered", &format!("steady-{n}")),
            )
            .await;
            let at = Instant::now();
            assert_eq!(status, 202, "{body}");
            let run = body["events"][0]["runs"][0]["name"]
                .as_str()
                .unwrap()
                .to_string();
            (run, at)
        }));
    }
    let mut accepted: Vec<(String, Instant)> = Vec::new();
    for send in sends {
        accepted.push(send.await.unwrap());
    }
    let finish_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let times = times.lock().unwrap();
            accepted
                .iter()
                .all(|(run, _)| times.completed.contains_key(&format!("{run}-2")))
        };
        if done || Instant::now() > finish_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    let times = times.lock().unwrap();
    let mut first = Vec::new();
    let mut next = Vec::new();
    for (run, at) in &accepted {
        if let Some(created) = times.created.get(&format!("{run}-0")) {
            first.push(created.saturating_duration_since(*at));
        }
        for task in 0..2 {
            if let (Some(done), Some(created)) = (
                times.completed.get(&format!("{run}-{task}")),
                times.created.get(&format!("{run}-{}", task + 1)),
            ) {
                next.push(created.saturating_duration_since(*done));
            }
        }
    }
    vec![
        (
            format!("accept → first Job created, {} events/s", 1000 / 20),
            format!("{} (target p99 < 50 ms)", percentiles(first)),
        ),
        (
            "Job complete → next Job created, 50 events/s".into(),
            format!("{} (target p99 < 50 ms)", percentiles(next)),
        ),
    ]
}

/// Phase 4, API requests per run, by verb, from the request log: one run alone at a time.
async fn requests_phase(stack: &Stack, finished: &Arc<Mutex<usize>>) -> Vec<(String, String)> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut rows = Vec::new();
    for (event_type, label, tasks) in [
        ("sh.keptn.event.one.triggered", "one task", 1u64),
        ("sh.keptn.event.three.triggered", "three tasks", 3),
    ] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = *finished.lock().unwrap();
        let mark = stack.sim.request_mark();
        post_event(
            &client,
            stack.operator.ingest,
            &event(event_type, &format!("count-{tasks}")),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while *finished.lock().unwrap() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
        for request in stack.sim.requests_since(mark) {
            *by_verb
                .entry(format!("{} {}", request.verb, request.resource_path()))
                .or_default() += 1;
        }
        let writes: u64 = by_verb
            .iter()
            .filter(|(k, _)| {
                ["create", "patch", "update", "delete"]
                    .iter()
                    .any(|v| k.starts_with(v))
            })
            .map(|(_, n)| n)
            .sum();
        let polls: u64 = by_verb
            .iter()
            .filter(|(k, _)| {
                k.starts_with("list") || (k.starts_with("get") && !k.ends_with("/log"))
            })
            .map(|(_, n)| n)
            .sum();
        rows.push((
            format!("API requests for one run of {label}"),
            format!(
                "{} — writes {writes} (target ≤ {}), list/get polls {polls} (target 0)",
                by_verb
                    .iter()
                    .map(|(k, n)| format!("{k}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                3 + 3 * tasks
            ),
        ));
    }
    rows
}

/// Phase 5, resident memory with many runs in flight (tasks that stay running).
async fn in_flight_phase(plan: Plan, stack: &Stack) -> (String, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let target = plan.in_flight_runs;
    let started = Instant::now();
    let mut sent = 0;
    while sent < target {
        let batch: Vec<Value> = (sent..(sent + 100).min(target))
            .map(|i| event("sh.keptn.event.hold.triggered", &format!("hold-{i}")))
            .collect();
        sent += batch.len();
        let request = http::Request::post(format!("http://{}/events", stack.operator.ingest))
            .header("content-type", "application/cloudevents-batch+json")
            .body(Full::new(Bytes::from(Value::Array(batch).to_string())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 202);
    }
    let deadline = started + Duration::from_secs(plan.in_flight_seconds);
    let mut peak: f64 = 0.0;
    while stack.sim.runtime().held().len() < target && Instant::now() < deadline {
        peak = peak.max(rss_mib(stack.pid()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the last status writes land, then read the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = stack.sim.runtime().held().len();
    let rss = rss_mib(stack.pid());
    (
        format!("resident memory, {target} runs in flight"),
        format!(
            "{rss:.1} MiB (peak while starting {:.1} MiB) with {held} tasks running, all started after {:.0} s (target < 300 MiB at 10,000)",
            peak.max(rss),
            started.elapsed().as_secs_f64()
        ),
    )
}

async fn run(plan: Plan, phases: &[String]) -> String {
    let dir = config_dir();
    let (sink_addr, bare_addr, finished) = start_receivers().await;
    let sink = format!("http://{sink_addr}/events");
    let wanted = |phase: &str| phases.is_empty() || phases.iter().any(|p| p == phase);
    let mut rows: Vec<(String, String)> = Vec::new();

    if wanted("ingest") {
        let stack = Stack::start(&dir, "ingest", &sink).await;
        let (name, value) = ingest_phase(plan, &stack, &dir, bare_addr);
        report(&mut rows, name, value);
    }

    if wanted("accept") {
        // 2a and 2b each on a fresh kube-sim and operator: the same JobRuns, the same
        // controller work behind them; only the way in differs.
        let stack = Stack::start(&dir, "ceiling", &sink).await;
        let (ceiling, ceiling_errors) = create_ceiling(plan, &stack, &dir);
        let created = stack
            .sim
            .list_objects("job-executor.dev", "jobruns", Some("default"))
            .len();
        drop(stack);
        let stack = Stack::start(&dir, "accept", &sink).await;
        let accept = wrk_script(
            &dir,
            "accept.lua",
            &event("sh.keptn.event.one.triggered", "EVENTID"),
            CLOUDEVENT,
            true,
        );
        let cpu = stack.cpu_seconds();
        let (rate, errors) = wrk(
            &format!("http://{}/events", stack.operator.ingest),
            &accept,
            plan.wrk_seconds,
        );
        let cpu = stack.cpu_seconds() - cpu;
        let persisted = stack
            .sim
            .list_objects("job-executor.dev", "jobruns", Some("default"))
            .len();
        report(
            &mut rows,
            "accepted runs/s (one-task action, JobRun persisted before 202; wrk -t2 -c32)".into(),
            format!(
                "{rate:.0} runs/s ({persisted} JobRuns) vs kube-sim's create ceiling {ceiling:.0}/s ({created} JobRuns, wrk -t2 -c32{}): ratio {:.2} (target ≥ 0.5); operator CPU {cpu:.1} s{}",
                non_2xx(ceiling_errors),
                rate / ceiling.max(1.0),
                non_2xx(errors)
            ),
        );
    }

    if wanted("latency") {
        let stack = Stack::start(&dir, "latency", &sink).await;
        for (name, value) in latency_phase(plan, &stack).await {
            report(&mut rows, name, value);
        }
    }

    if wanted("requests") {
        let stack = Stack::start(&dir, "requests", &sink).await;
        for (name, value) in requests_phase(&stack, &finished).await {
            report(&mut rows, name, value);
        }
    }

    if wanted("memory") {
        let stack = Stack::start(&dir, "memory", &sink).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        report(
            &mut rows,
            "resident memory, idle (watches synced, no runs)".into(),
            format!("{:.1} MiB (target < 25 MiB)", rss_mib(stack.pid())),
        );
        let (name, value) = in_flight_phase(plan, &stack).await;
        report(&mut rows, name, value);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut table = String::from("| measurement | result |\n| --- | --- |\n");
    for (name, value) in rows {
        table.push_str(&format!("| {name} | {value} |\n"));
    }
    table
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` does not: then run briefly.
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--quick");
    let plan = if quick { QUICK } else { FULL };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut plan = plan;
    if let Some(runs) = std::env::var("LOAD_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        plan.in_flight_runs = runs;
    }
    // `LOAD_PHASES=ingest,accept` runs only those (of ingest, accept, latency, requests,
    // memory); all by default.
    let phases: Vec<String> = std::env::var("LOAD_PHASES")
        .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    let table = runtime.block_on(run(plan, &phases));
    println!("{table}");
    if quick {
        println!("load harness: quick mode (numbers are not meaningful)\n1 passed, 0 failed");
    }
}
