//! Notifications end to end: the binary sends Slack-compatible messages and webhooks (the run's
//! CloudEvent) to local receivers whose URLs it reads from a mounted-Secret directory, retries
//! on 5xx and on a receiver that hangs, gives up and records why, and never shows a URL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use kube_sim::{Behavior, ImageRule};
use serde_json::{Value, json};
use support::cluster::ClusterHarness;
use support::{Harness, Replicas, metric_value, sample_with_id, wait_patiently};

const LONG: Duration = Duration::from_secs(60);

/// What a receiver was sent.
#[derive(Debug, Clone)]
struct Heard {
    content_type: String,
    query: String,
    body: Value,
}

/// Local receivers on one port: `/hook/NAME` answers as NAME says (`flaky` 503 twice, `down`
/// always 500, `hang` never), everything else 200.
#[derive(Clone, Default)]
struct Receivers {
    heard: Arc<Mutex<HashMap<String, Vec<Heard>>>>,
    tries: Arc<Mutex<HashMap<String, u32>>>,
}

impl Receivers {
    async fn start() -> (Receivers, String) {
        let receivers = Receivers::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook/{name}", post(hear))
            .with_state(receivers.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receivers, base)
    }

    fn heard(&self, name: &str) -> Vec<Heard> {
        self.heard
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    fn tries(&self, name: &str) -> u32 {
        self.tries
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or_default()
    }
}

async fn hear(
    State(receivers): State<Receivers>,
    UrlPath(name): UrlPath<String>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let tries = {
        let mut tries = receivers.tries.lock().unwrap();
        let count = tries.entry(name.clone()).or_default();
        *count += 1;
        *count
    };
    match name.as_str() {
        "flaky" if tries <= 2 => return StatusCode::SERVICE_UNAVAILABLE,
        "down" => return StatusCode::INTERNAL_SERVER_ERROR,
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::OK;
        }
        _ => {}
    }
    let heard = Heard {
        content_type: headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    receivers
        .heard
        .lock()
        .unwrap()
        .entry(name)
        .or_default()
        .push(heard);
    StatusCode::OK
}

/// The notifications Secret as the operator's pod has it mounted: one file per target, its URL
/// (with a token that must never show in a log).
fn notify_dir(name: &str, base: &str, targets: &[(&str, &str)]) -> PathBuf {
    let dir = support::fresh_dir(&format!("notify-{name}"));
    for (target, hook) in targets {
        std::fs::write(
            dir.join(target),
            format!("{base}/hook/{hook}?token=s3cr3t-{target}\n"),
        )
        .unwrap();
    }
    dir
}

fn config(name: &str, text: &str) -> PathBuf {
    let dir = support::fresh_dir(&format!("notify-config-{name}"));
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(dir.join("carts/job/config.yaml"), text).unwrap();
    dir
}

const SMOKE: &str = r#"apiVersion: v2
actions:
  - name: smoke
    events: [{name: sh.keptn.event.test.triggered}]
    tasks:
      - {name: smoke, image: "smoke:1"}
    notify:
      - {slack: team-carts, when: [started, succeeded, failed]}
      - {webhook: audit, when: [started, succeeded, failed]}
      - {slack: nowhere, when: [succeeded]}
"#;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The run's notifications as its status records them: (target, when, state, attempts).
fn notifications(server: &impl Replicas) -> Vec<(String, String, String, u64)> {
    let runs = server.jobruns();
    runs.iter()
        .flat_map(|run| {
            run["status"]["notifications"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|n| {
            (
                n["target"].as_str().unwrap_or_default().to_string(),
                n["when"].as_str().unwrap_or_default().to_string(),
                n["state"].as_str().unwrap_or_default().to_string(),
                n["attempts"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// A run that succeeds tells its Slack target it started and succeeded, its webhook the run's
/// `.started` and `.finished` CloudEvents, and gives up at once on a target the Secret lacks;
/// the status and the run's Events say so.
async fn a_run_tells_its_targets(server: &impl Replicas, receivers: &Receivers) {
    let event = sample_with_id("test.triggered.json", "ok-1");
    assert_eq!(server.post_event(&event).await.status, 202);
    let finished = server.wait_finished("ok-1", LONG).await;
    wait_patiently("the notifications are over", LONG, || {
        let all = notifications(server);
        all.len() == 5 && all.iter().all(|n| n.2 != "Pending")
    })
    .await;
    let mut recorded = notifications(server);
    recorded.sort();
    let expected = [
        ("audit", "started", "Delivered", 1),
        ("audit", "succeeded", "Delivered", 1),
        ("nowhere", "succeeded", "GaveUp", 1),
        ("team-carts", "started", "Delivered", 1),
        ("team-carts", "succeeded", "Delivered", 1),
    ]
    .map(|(t, w, s, a)| (t.to_string(), w.to_string(), s.to_string(), a));
    assert_eq!(recorded, expected, "{}", server.operator_log());
    let run = &server.jobruns()[0];
    let nowhere = run["status"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["target"] == "nowhere")
        .unwrap();
    let error = nowhere["lastError"].as_str().unwrap();
    assert!(
        error.starts_with("no notification target \"nowhere\": ")
            && error.contains("cannot be read"),
        "{error}"
    );
    // A name the Secret lacks comes from the config: counted as `unknown`, not a series of
    // its own.
    let (_, metrics) = server.get_admin("/metrics").await;
    let gave_up =
        "job_executor_notifications_total{target=\"unknown\",kind=\"slack\",outcome=\"gave_up\"} ";
    assert_eq!(metric_value(&metrics, gave_up), 1, "{metrics}");
    assert!(!metrics.contains("target=\"nowhere\""), "{metrics}");

    let slack = receivers.heard("slack");
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert!(slack.iter().all(|h| h.content_type == "application/json"));
    assert_eq!(
        slack[0].query, "token=s3cr3t-team-carts",
        "the URL as the Secret says"
    );
    let started = slack[0].body["text"].as_str().unwrap();
    assert!(
        started.starts_with("*carts* (sockshop/dev): action `smoke` started\nrun `"),
        "{started}"
    );
    let succeeded = slack[1].body["text"].as_str().unwrap();
    assert!(
        succeeded.starts_with("*carts* (sockshop/dev): action `smoke` succeeded after "),
        "{succeeded}"
    );
    assert_eq!(slack[1].body.as_object().unwrap().len(), 1, "only `text`");

    let audit = receivers.heard("audit");
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(
        audit
            .iter()
            .all(|h| h.content_type == "application/cloudevents+json")
    );
    assert_eq!(audit[0].body["type"], "sh.keptn.event.test.started");
    assert_eq!(audit[1].body["type"], "sh.keptn.event.test.finished");
    assert_eq!(
        audit[1].body["id"].as_str().unwrap(),
        finished.id,
        "the same event as the sink's"
    );
    // The same events as the sink's: the same id and time (`.finished`: the run's end,
    // recorded before either is sent), whichever went first.
    let sunk = server.sink.for_trigger("ok-1");
    for (heard, kind) in audit.iter().zip([".started", ".finished"]) {
        let sent = sunk.iter().find(|e| e.event_type.ends_with(kind)).unwrap();
        assert_eq!(heard.body["id"].as_str().unwrap(), sent.id, "{kind}");
        let time = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(
            time(heard.body["time"].as_str().unwrap()),
            time(sent.headers["ce-time"].to_str().unwrap()),
            "{kind}"
        );
    }
    assert_eq!(audit[1].body["triggeredid"], "ok-1");
    assert_eq!(audit[1].body["data"]["result"], "pass");
    assert_eq!(audit[1].body["data"]["service"], "carts");

    let describe = r#"kubectl describe jobrun -n "$NAMESPACE" "$RUN""#;
    let run_name = run["metadata"]["name"].as_str().unwrap().to_string();
    let mut described = String::new();
    let mut seen = false;
    for _ in 0..50 {
        described = server.admin_shell(describe, &[("RUN", &run_name)]);
        seen = described.contains("NotificationGaveUp")
            && described.contains("slack notification of \"team-carts\" (succeeded) sent");
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "{described}");
    let log = server.operator_log();
    assert!(!log.contains("s3cr3t"), "a URL reached the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_tells_its_slack_and_webhook_targets_on_kube_sim() {
    let (receivers, base) = Receivers::start().await;
    let dir = notify_dir("sim", &base, &[("team-carts", "slack"), ("audit", "audit")]);
    let config = config("sim", SMOKE);
    let server = Harness::start_full(
        kube_sim::Sim::builder(),
        config,
        &["--notify-dir", path(&dir)],
    )
    .await;
    a_run_tells_its_targets(&server, &receivers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_tells_its_slack_and_webhook_targets_on_the_real_control_plane() {
    let (receivers, base) = Receivers::start().await;
    let dir = support::fresh_dir("notify-real");
    let config = config("real", SMOKE);
    let mut server =
        ClusterHarness::install("notify", &config, &["--notify-dir", path(&dir)]).await;
    // The Secret, made as docs/notifications.md says; its keys become files as the pod's
    // mount would have them.
    let block = support::doc_sh_block("docs/notifications.md", "## The Secret of targets");
    let slack = format!("{base}/hook/slack?token=s3cr3t-team-carts");
    let audit = format!("{base}/hook/audit?token=s3cr3t-audit");
    server.admin_shell(
        &block,
        &[("SLACK_WEBHOOK_URL", &slack), ("AUDIT_WEBHOOK_URL", &audit)],
    );
    let secret = server.cluster.kubectl_json(&[
        "-n",
        &server.namespace,
        "get",
        "secret",
        "job-executor-notifications",
    ]);
    for (key, value) in secret["data"].as_object().unwrap() {
        let decode = r#"printf %s "$VALUE" | base64 -d"#;
        let url = server.admin_shell(decode, &[("VALUE", value.as_str().unwrap())]);
        std::fs::write(dir.join(key), url).unwrap();
    }
    server.start_operator().await;
    a_run_tells_its_targets(&server, &receivers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_told_with_the_log_and_targets_that_fail_are_retried_then_given_up() {
    let (receivers, base) = Receivers::start().await;
    let dir = notify_dir(
        "faults",
        &base,
        &[
            ("team", "slack"),
            ("ops", "ops"),
            ("flaky", "flaky"),
            ("down", "down"),
            ("hang", "hang"),
        ],
    );
    let config = config(
        "faults",
        r#"apiVersion: v2
actions:
  - name: smoke
    events: [{name: sh.keptn.event.test.triggered}]
    tasks:
      - {name: smoke, image: "smoke:1"}
    notify:
      - {slack: team}
  - name: deploy
    events: [{name: sh.keptn.event.deployment.triggered}]
    tasks:
      - {name: roll, image: alpine}
    notify:
      - {webhook: flaky, when: [succeeded]}
      - {slack: down, when: [succeeded]}
      - {webhook: hang, when: [succeeded]}
"#,
    );
    let server = Harness::start_full(
        kube_sim::Sim::builder(),
        config,
        &[
            "--notify-dir",
            path(&dir),
            // The installation's own target, heard on every failure.
            "--notify",
            "webhook:ops:failed",
            "--notify-retries",
            "2",
            "--notify-timeout-seconds",
            "1",
        ],
    )
    .await;
    let log: String = (1..=25).map(|i| format!("step {i} ok\n")).collect();
    server.sim.runtime().set(
        ImageRule::image("smoke:*"),
        Behavior::exit(3).output(
            log.lines()
                .map(str::to_string)
                .chain(["AssertionError: carts answered 503".to_string()]),
        ),
    );

    let failing = sample_with_id("test.triggered.json", "fail-1");
    assert_eq!(server.post_event(&failing).await.status, 202);
    let mut deploy = sample_with_id("deployment.triggered.json", "deploy-1");
    deploy["data"]["service"] = json!("carts");
    assert_eq!(server.post_event(&deploy).await.status, 202);
    let finished = server.wait_finished("fail-1", LONG).await;
    server.wait_finished("deploy-1", LONG).await;

    wait_patiently("every notification is over", LONG, || {
        let all = notifications(&server);
        all.len() == 5 && all.iter().all(|n| n.2 != "Pending")
    })
    .await;
    let mut recorded = notifications(&server);
    recorded.sort();
    let expected = [
        ("down", "succeeded", "GaveUp", 3),
        ("flaky", "succeeded", "Delivered", 3),
        ("hang", "succeeded", "GaveUp", 3),
        ("ops", "failed", "Delivered", 1),
        ("team", "failed", "Delivered", 1),
    ]
    .map(|(t, w, s, a)| (t.to_string(), w.to_string(), s.to_string(), a));
    assert_eq!(recorded, expected, "{}", server.operator_log());

    // The failure, readable: what failed, where, and the end of its log.
    let team = receivers.heard("slack");
    assert_eq!(team.len(), 1, "`when` defaults to failed: {team:?}");
    let text = team[0].body["text"].as_str().unwrap();
    assert!(
        text.starts_with("*carts* (sockshop/dev): action `smoke` failed after "),
        "{text}"
    );
    assert!(
        text.contains("\ntask `smoke`: BackoffLimitExceeded"),
        "{text}"
    );
    assert!(
        text.ends_with("step 25 ok\nAssertionError: carts answered 503\n```"),
        "{text}"
    );
    assert!(
        text.contains("\n```\nstep 7 ok\n"),
        "the last 20 lines: {text}"
    );
    assert!(!text.contains("step 6 ok"), "{text}");

    // The installation's webhook got the failed run's `.finished`, and nothing of the other.
    let ops = receivers.heard("ops");
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].body["id"].as_str().unwrap(), finished.id);
    assert_eq!(ops[0].body["data"]["status"], "errored");

    // 503 twice, then delivered; 500 and a hang three times (two retries), then given up.
    assert_eq!(receivers.tries("flaky"), 3);
    assert_eq!(receivers.heard("flaky").len(), 1);
    assert_eq!(receivers.tries("down"), 3);
    assert_eq!(receivers.tries("hang"), 3);
    let errors: HashMap<String, String> = server
        .jobruns()
        .iter()
        .flat_map(|r| r["status"]["notifications"].as_array().cloned().unwrap())
        .map(|n| {
            (
                n["target"].as_str().unwrap().to_string(),
                n["lastError"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        errors["down"],
        "\"down\" answered 500: Internal Server Error"
    );
    assert_eq!(errors["hang"], "\"hang\" did not answer within 1s");

    // Given up, the runs are done all the same: their `.finished` went out, nothing waits.
    for run in server.jobruns() {
        let phase = run["status"]["phase"].as_str().unwrap();
        assert!(phase == "Failed" || phase == "Succeeded", "{run}");
        assert_eq!(run["status"]["finished"]["state"], "Delivered", "{run}");
    }

    let (_, metrics) = server.get_admin("/metrics").await;
    let count = |target: &str, kind: &str, outcome: &str| {
        metric_value(
            &metrics,
            &format!(
                "job_executor_notifications_total{{target=\"{target}\",kind=\"{kind}\",outcome=\"{outcome}\"}} "
            ),
        )
    };
    assert_eq!(count("flaky", "webhook", "retry"), 2, "{metrics}");
    assert_eq!(count("flaky", "webhook", "delivered"), 1);
    assert_eq!(count("down", "slack", "gave_up"), 1);
    assert_eq!(count("hang", "webhook", "gave_up"), 1);
    assert_eq!(count("team", "slack", "delivered"), 1);

    let log = server.operator_log();
    assert!(!log.contains("s3cr3t"), "a URL reached the log:\n{log}");
    assert!(log.contains("gave up a notification"), "{log}");
}

/// `check-run` with `--notify VALUE` fails, saying `says`.
fn check_run_refuses(value: &str, says: &str) {
    let output = std::process::Command::new(support::BIN)
        .args([
            "check-run",
            "--sink-url",
            "http://sink.example/events",
            "--config-dir",
            ".",
            "--notify",
            value,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{value}");
    assert!(stderr.contains(says), "{value}: {stderr}");
}

#[test]
fn installation_targets_without_a_directory_stop_the_start() {
    check_run_refuses(
        "slack:ops",
        "--notify names the targets ops, but no --notify-dir",
    );
    check_run_refuses("email:ops", "unknown kind \"email\"");
}
