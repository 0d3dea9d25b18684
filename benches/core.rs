//! The pure core, measured against the floor: parsing the event JSON.
//!
//! `cargo bench --bench core` (full run) — `cargo test --bench core` runs each once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use job_executor::config;
use job_executor::event::{
    self, CloudEvent, EventSketch, EventText, Outcome, OutgoingContext, Status,
};
use job_executor::files::StagedFile;
use job_executor::ingest::plan::{
    EventPlan, plan_event, plan_event_in_memory, plan_sketch_in_memory,
};
use job_executor::matching::Matcher;
use job_executor::render::{JobRequest, render_job};
use job_executor::settings::Settings;
use job_executor::source::{GitSettings, Source};
use serde_json::{Value, json};

/// The sample test event, padded to 2 KiB.
fn event_json() -> Vec<u8> {
    let mut event: Value =
        serde_json::from_slice(include_bytes!("../test-events/test.triggered.json")).unwrap();
    let size = event.to_string().len();
    event["data"]["padding"] = json!("x".repeat(2048usize.saturating_sub(size + 14)));
    let bytes = event.to_string().into_bytes();
    assert!((2000..=2100).contains(&bytes.len()), "{}", bytes.len());
    bytes
}

/// A config of `n` actions; the one matching the test event is the last, as bad as it gets.
fn config_yaml(n: usize) -> String {
    let mut text = String::from("apiVersion: v2\nactions:\n");
    for i in 0..n.saturating_sub(1) {
        let event = match i % 4 {
            0 => format!("sh.keptn.event.task{i}.triggered"),
            1 => format!("sh.keptn.event.task{i}.*"),
            2 => format!("sh.keptn.event.*.task{i}"),
            _ => format!("sh.keptn.event.deploy{i}.triggered"),
        };
        text.push_str(&format!(
            "  - name: action {i}\n    events:\n      - name: \"{event}\"\n        jsonpath: {{property: \"$.data.test.teststrategy\", match: \"s{i}\"}}\n    tasks:\n      - name: task {i}\n        image: \"alpine:3.20\"\n        cmd: [\"sh\", \"-c\", \"echo {i}\"]\n        env:\n          - {{name: HOST, value: \"$.data.deployment.deploymentURIsLocal[0]\", valueFrom: event}}\n"
        ));
    }
    text.push_str("  - name: locust\n    events:\n      - name: sh.keptn.event.test.triggered\n        jsonpath: {property: \"$.data.test.teststrategy\", match: locust}\n    tasks:\n      - name: run\n        image: locustio/locust\n        files: [locust]\n        env:\n          - {name: HOST, value: \"$.data.deployment.deploymentURIsLocal[0]\", valueFrom: event}\n          - {name: DEPLOYMENT, value: \"$.data.deployment\", valueFrom: event, as: json}\n");
    text
}

/// The config of the load harness's ingest phase: its twenty refusing actions.
fn gates_yaml() -> String {
    format!("apiVersion: v2\nactions:\n{}", common::gate_actions())
}

/// The gates config as a directory source and as a git source (a repository whose `dev`
/// branch holds it, cloned and fetched into a cache), for the sample event's service.
fn gate_sources() -> (PathBuf, [(&'static str, Source); 2]) {
    let dir = std::env::temp_dir().join(format!("je-core-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("carts/job")).unwrap();
    std::fs::write(repo.join("carts/job/config.yaml"), gates_yaml()).unwrap();
    common::commit_as_repository(&repo, "dev");
    let git = Source::git(GitSettings {
        url: format!("file://{}", repo.display()),
        lookups: Vec::new(),
        files_from: None,
        pin_commits: true,
        credentials: Default::default(),
        fetch_interval: std::time::Duration::from_secs(3600),
        cache_dir: dir.join("git-cache"),
        limits: Default::default(),
        metrics: Default::default(),
    })
    .unwrap();
    // The directory layout: `<service>/job/config.yaml` under the root.
    let sources = [("directory", Source::directory(&repo)), ("git", git)];
    (dir, sources)
}

fn benches(c: &mut Criterion) {
    let bytes = event_json();
    c.bench_function(
        "parse event JSON (serde_json::from_slice, the floor)",
        |b| b.iter(|| serde_json::from_slice::<Value>(black_box(&bytes)).unwrap()),
    );
    c.bench_function("parse and validate CloudEvent", |b| {
        b.iter(|| CloudEvent::from_json(black_box(&bytes)).unwrap())
    });
    // What ingest adds before reading an event whole: the memory it takes, bounded from its text.
    c.bench_function("bound the memory a 2 KiB event takes once read", |b| {
        b.iter(|| job_executor::json_text::value_bytes_bound(black_box(&bytes)))
    });
    // What the controller's cache keeps of a run whose Jobs are all created, on each of its
    // watch events (which bring the whole event again).
    let text = EventText::from(&CloudEvent::from_json(&bytes).unwrap());
    c.bench_function("keep a cached run's reply fields of a 2 KiB event", |b| {
        b.iter_batched(
            || text.clone(),
            |mut text| {
                text.keep_reply_fields();
                text
            },
            BatchSize::SmallInput,
        )
    });

    let large = config_yaml(200);
    c.bench_function("load and compile a 200-action config", |b| {
        b.iter(|| {
            let valid = config::load(black_box(&large), "bench.yaml").unwrap();
            Matcher::compile(&valid.config).unwrap()
        })
    });

    let event = CloudEvent::from_json(&bytes).unwrap();
    for n in [1, 20, 500] {
        let valid = config::load(&config_yaml(n), "bench.yaml").unwrap();
        let matcher = Matcher::compile(&valid.config).unwrap();
        assert_eq!(matcher.matching(&event), [n - 1]);
        c.bench_function(&format!("match a 2 KiB event against {n} actions"), |b| {
            b.iter(|| matcher.matching(black_box(&event)))
        });
    }

    let settings = Settings::defaults();
    // What the receiver does with an event that starts nothing, after parsing it: look up the
    // service's config (from memory: a fetch or a read of the git clone goes to the blocking
    // pool) and match it. (a) no action listens for the event, (b) twenty listen and refuse.
    let mut unrelated = event.as_value().clone();
    unrelated["type"] = json!("sh.keptn.event.nothing.triggered");
    let mut refused = event.as_value().clone();
    refused["type"] = json!("sh.keptn.event.gate.triggered");
    refused["data"]["test"]["teststrategy"] = json!("none");
    let unrelated = CloudEvent::from_value(unrelated).unwrap();
    let refused = CloudEvent::from_value(refused).unwrap();
    let (scratch, sources) = gate_sources();
    for (source_name, source) in sources {
        for (case, event, first_refusing) in [
            ("(a) no action listens", &unrelated, ""),
            ("(b) 20 refuse", &refused, "gate-0"),
        ] {
            // The first plan fetches and compiles; then it is made in memory.
            let first = plan_event(event, &source, &settings);
            assert!(
                matches!(&first, EventPlan::Nothing { reasons } if reasons[0].action == first_refusing),
                "{first:?}"
            );
            assert!(plan_event_in_memory(event, &source, &settings).is_some());
            c.bench_function(
                &format!("plan a 2 KiB event in memory, {case}, {source_name} source"),
                |b| b.iter(|| plan_event_in_memory(black_box(event), &source, &settings)),
            );
            if source_name != "git" {
                continue;
            }
            // The receiver's whole work on the event's text: parsed whole, then planned; or
            // sketched, and planned from the sketch (what it does with an event that starts
            // nothing).
            let text = event.as_value().to_string();
            if first_refusing.is_empty() {
                // What reading the text costs at the least (checking it is JSON, building
                // nothing), against reading its sketch.
                c.bench_function(
                    "check a 2 KiB event's text is JSON, building nothing",
                    |b| {
                        b.iter(|| {
                            serde_json::from_str::<serde::de::IgnoredAny>(black_box(&text)).unwrap()
                        })
                    },
                );
                c.bench_function("read a 2 KiB event's sketch", |b| {
                    b.iter(|| EventSketch::read(black_box(&text)).unwrap())
                });
            }
            // Planned from the sketch, with the reasons written as the answer lists them.
            let sketched = |text: &str| {
                let sketch = EventSketch::read(text).unwrap();
                plan_sketch_in_memory(&sketch, &source, |reasons| {
                    let mut json = Vec::with_capacity(768);
                    reasons.write_json(&mut json);
                    json
                })
            };
            assert!(sketched(&text).is_some());
            c.bench_function(
                &format!(
                    "plan a 2 KiB event from its text and write the reasons, parsed whole, {case}, git source"
                ),
                |b| {
                    b.iter(|| {
                        let event = CloudEvent::from_json(black_box(text.as_bytes())).unwrap();
                        match plan_event_in_memory(&event, &source, &settings) {
                            Some(EventPlan::Nothing { reasons }) => {
                                let mut json = Vec::with_capacity(768);
                                serde_json::to_writer(&mut json, &reasons).unwrap();
                                json
                            }
                            plan => panic!("{plan:?}"),
                        }
                    })
                },
            );
            c.bench_function(
                &format!(
                    "plan a 2 KiB event from its text and write the reasons, sketched, {case}, git source"
                ),
                |b| b.iter(|| sketched(black_box(&text))),
            );
        }
    }

    let _ = std::fs::remove_dir_all(scratch);

    let valid = config::load(&config_yaml(1), "bench.yaml").unwrap();
    let files = [StagedFile {
        key: "0-locust_basic.py".into(),
        path: "locust/basic.py".into(),
        executable: false,
    }];
    c.bench_function("render a Job", |b| {
        b.iter(|| {
            render_job(
                &JobRequest {
                    event: &event,
                    run_name: "test-0123456789abcdef0123",
                    action_index: 0,
                    action_name: "run-tests",
                    tasks: &valid.config.actions[0].tasks,
                    task_index: 0,
                    files: &files,
                    owner: None,
                    outputs: None,
                    trace: None,
                },
                black_box(&settings),
            )
            .unwrap()
        })
    });

    let logs: String = (0..4000)
        .map(|i| format!("line {i}: request ok\n"))
        .collect();
    let message = format!("Task 'run' finished\nLogs:\n{}", &logs[..64 * 1024]);
    let time = jiff::Timestamp::UNIX_EPOCH;
    c.bench_function("build a .finished event with a 64 KiB log excerpt", |b| {
        b.iter(|| {
            event::build_finished(
                &OutgoingContext {
                    triggered: &event,
                    run_name: "test-0123456789abcdef0123",
                    run_uid: "5d0c7c4e-8a4f-4a57-9d7e-2f8b8e1c0a11",
                    source: "job-executor",
                    time,
                },
                &Outcome {
                    status: Status::Succeeded,
                    message: black_box(&message).clone(),
                    test_window: Some((time, time)),
                    outputs: Default::default(),
                },
            )
            .unwrap()
        })
    });
}

criterion_group!(core, benches);
criterion_main!(core);
