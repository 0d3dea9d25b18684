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
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube_sim::{Behavior, ImageRule, Sim};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_job-executor");

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

fn start_operator(kubeconfig: &Path, config: &Path, sink: &str) -> Operator {
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
    let ingest = line
        .split_whitespace()
        .find_map(|p| p.strip_prefix("ingest="))
        .unwrap()
        .parse()
        .unwrap();
    Operator { child, ingest }
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

fn wrk_script(dir: &Path, name: &str, event_type: &str, unique: bool) -> PathBuf {
    let body = event(event_type, "ID").to_string().replace('"', "\\\"");
    let script = if unique {
        format!(
            "local n = 0\nlocal prefix = tostring(math.random(1, 1e9))\nrequest = function()\n  n = n + 1\n  local body = string.gsub(\"{body}\", \"ID\", prefix .. \"-\" .. n)\n  return wrk.format(\"POST\", nil, {{[\"content-type\"] = \"application/cloudevents+json\"}}, body)\nend\n"
        )
    } else {
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{body}\"\nwrk.headers[\"content-type\"] = \"application/cloudevents+json\"\n"
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

async fn run(plan: Plan) -> String {
    let sim = Sim::builder().start().await.unwrap();
    sim.runtime()
        .set(ImageRule::image("bench:hold"), Behavior::hold());
    let dir = config_dir();
    let kubeconfig = sim.write_kubeconfig(dir.join("kubeconfig")).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    crds.create(&PostParams::default(), &JobRun::crd())
        .await
        .unwrap();

    // The sink, and the bare handler ingest is compared with: both only answer 202.
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

    let operator = start_operator(&kubeconfig, &dir, &format!("http://{sink_addr}/events"));
    let pid = operator.child.id();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_mib(pid);
    let mut rows: Vec<(String, String)> = Vec::new();

    // 1. Ingest of events that match nothing, against a bare axum handler.
    let nomatch = wrk_script(
        &dir,
        "nomatch.lua",
        "sh.keptn.event.nothing.triggered",
        false,
    );
    let (ingest_rate, ingest_errors) = wrk(
        &format!("http://{}/events", operator.ingest),
        &nomatch,
        plan.wrk_seconds,
    );
    let (bare_rate, _) = wrk(
        &format!("http://{bare_addr}/events"),
        &nomatch,
        plan.wrk_seconds,
    );
    report(
        &mut rows,
        "ingest, non-matching events (wrk -t2 -c32)".into(),
        format!(
            "{ingest_rate:.0} req/s vs bare axum {bare_rate:.0} req/s: ratio {:.2} (target ≥ 0.5){}",
            ingest_rate / bare_rate.max(1.0),
            if ingest_errors > 0 {
                format!("; {ingest_errors} non-2xx")
            } else {
                String::new()
            }
        ),
    );

    // 2. Accepted runs per second (JobRun persisted before the answer), against the API
    // server's own create ceiling, measured first (before the operator has runs to work on).
    let api: Api<JobRun> = Api::namespaced(sim.client(), "default");
    let template: JobRun = serde_json::from_value(json!({
        "apiVersion": "job-executor.dev/v1alpha1", "kind": "JobRun",
        "metadata": {"name": "x"},
        "spec": {"event": event("sh.keptn.event.ceiling.triggered", "c"),
                 "action": {"index": 0, "name": "ceiling", "tasks": []}}
    }))
    .unwrap();
    let ceiling_count = Arc::new(Mutex::new(0u64));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(u64::from(plan.wrk_seconds));
    let mut workers = Vec::new();
    for worker in 0..32 {
        let api = api.clone();
        let template = template.clone();
        let count = ceiling_count.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut run = template.clone();
                run.metadata.name = Some(format!("ceiling-{worker}-{n}"));
                n += 1;
                if api.create(&PostParams::default(), &run).await.is_ok() {
                    *count.lock().unwrap() += 1;
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let ceiling = *ceiling_count.lock().unwrap() as f64 / started.elapsed().as_secs_f64();
    let accept = wrk_script(&dir, "accept.lua", "sh.keptn.event.one.triggered", true);
    let (accept_rate, accept_errors) = wrk(
        &format!("http://{}/events", operator.ingest),
        &accept,
        plan.wrk_seconds,
    );
    report(
        &mut rows,
        "accepted runs/s (one-task action, JobRun persisted before 202)".into(),
        format!(
            "{accept_rate:.0} runs/s vs kube-sim create ceiling {ceiling:.0}/s (32 clients): ratio {:.2} (target ≥ 0.5){}",
            accept_rate / ceiling.max(1.0),
            if accept_errors > 0 {
                format!("; {accept_errors} non-2xx")
            } else {
                String::new()
            }
        ),
    );
    // Let the controller work off the runs just accepted before measuring latency.
    let backlog_deadline = Instant::now() + Duration::from_secs(300);
    while sim.list_objects("batch", "jobs", Some("default")).len()
        < sim
            .list_objects("job-executor.dev", "jobruns", Some("default"))
            .iter()
            .filter(|r| r["spec"]["action"]["name"] == "one")
            .count()
        && Instant::now() < backlog_deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. Latencies at a steady 50 events/s of three-task runs.
    let times = Arc::new(Mutex::new(JobTimes::default()));
    let recorder = times.clone();
    let jobs: Api<Job> = Api::namespaced(sim.client(), "default");
    tokio::spawn(async move {
        let mut stream = watcher(jobs, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
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
    let mut accepted: Vec<(String, Instant)> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let steady_start = Instant::now();
    let mut n = 0;
    while steady_start.elapsed() < Duration::from_secs(plan.steady_seconds) {
        ticker.tick().await;
        n += 1;
        let (status, body) = post_event(
            &client,
            operator.ingest,
            &event("sh.keptn.event.three.triggered", &format!("steady-{n}")),
        )
        .await;
        let at = Instant::now();
        assert_eq!(status, 202, "{body}");
        accepted.push((
            body["events"][0]["runs"][0]["name"]
                .as_str()
                .unwrap()
                .to_string(),
            at,
        ));
    }
    let finish_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let times = times.lock().unwrap();
            accepted
                .iter()
                .all(|(run, _)| times.created.contains_key(&format!("{run}-2")))
        };
        if done || Instant::now() > finish_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (accept_to_job, complete_to_next) = {
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
        (first, next)
    };
    report(
        &mut rows,
        "accept → first Job created, 50 events/s".into(),
        format!("{} (target p99 < 50 ms)", percentiles(accept_to_job)),
    );
    report(
        &mut rows,
        "Job complete → next Job created, 50 events/s".into(),
        format!("{} (target p99 < 50 ms)", percentiles(complete_to_next)),
    );

    // 4. API requests per run, by verb, from the request log, one run at a time.
    for (event_type, label, tasks) in [
        ("sh.keptn.event.one.triggered", "one task", 1u64),
        ("sh.keptn.event.three.triggered", "three tasks", 3),
    ] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = *finished.lock().unwrap();
        let mark = sim.request_mark();
        post_event(
            &client,
            operator.ingest,
            &event(event_type, &format!("count-{tasks}")),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while *finished.lock().unwrap() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
        for request in sim.requests_since(mark) {
            // The harness's own Job watch is the only other client; a watch is no poll.
            let key = if request.subresource.is_empty() {
                format!("{} {}", request.verb, request.resource)
            } else {
                format!(
                    "{} {}/{}",
                    request.verb, request.resource, request.subresource
                )
            };
            *by_verb.entry(key).or_default() += 1;
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
        report(
            &mut rows,
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
        );
    }

    // 5. Resident memory idle and with many runs in flight (tasks that stay running).
    let target = plan.in_flight_runs;
    let hold_started = Instant::now();
    let mut sent = 0;
    while sent < target {
        let batch: Vec<Value> = (sent..(sent + 100).min(target))
            .map(|i| event("sh.keptn.event.hold.triggered", &format!("hold-{i}")))
            .collect();
        sent += batch.len();
        let request = http::Request::post(format!("http://{}/events", operator.ingest))
            .header("content-type", "application/cloudevents-batch+json")
            .body(Full::new(Bytes::from(Value::Array(batch).to_string())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 202);
    }
    let held_deadline = hold_started + Duration::from_secs(plan.in_flight_seconds);
    while sim.runtime().held().len() < target && Instant::now() < held_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let held = sim.runtime().held().len();
    report(
        &mut rows,
        "resident memory, idle".into(),
        format!("{rss_idle:.1} MiB (target < 25 MiB)"),
    );
    report(
        &mut rows,
        format!("resident memory, {target} runs in flight"),
        format!(
            "{:.1} MiB with {held} tasks running after {:.0} s (target < 300 MiB at 10,000)",
            rss_mib(pid),
            hold_started.elapsed().as_secs_f64()
        ),
    );
    drop(operator);
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
    let table = runtime.block_on(run(plan));
    println!("{table}");
    if quick {
        println!("load harness: quick mode (numbers are not meaningful)\n1 passed, 0 failed");
    }
}
