//! The `render`, `validate`, `schema` and `stage-files` subcommands, driven through the real
//! binary on the sample data, as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_job-executor");
const CONFIG: &str = "examples/carts/job/config.yaml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(root())
        .env_remove("JOB_EXECUTOR_ALLOWED_IMAGES")
        .env_remove("JOB_EXECUTOR_JOB_NAMESPACE")
        .output()
        .expect("run job-executor")
}

/// `job-executor <subcommand>` with the sample configs and a sink that is not there, in an
/// empty environment: what it says depends only on what a test adds.
fn offline(subcommand: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            subcommand,
            "--config-dir",
            "examples",
            "--sink-url",
            "http://127.0.0.1:9/",
        ])
        .env_clear()
        .current_dir(root());
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn test_events() -> Vec<PathBuf> {
    let mut events: Vec<PathBuf> = std::fs::read_dir(root().join("test-events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    events.sort();
    events
}

fn render_json(event: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "render", "--event", event, "--config", CONFIG, "--format", "json",
    ];
    args.extend_from_slice(extra);
    let output = run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// The path of `kubernetes-validate`, installed by `scripts/setup-tools`.
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/kubernetes-validate"));
    assert!(
        path.exists(),
        "kubernetes-validate not found at {}: run scripts/setup-tools (or the README's test command)",
        path.display()
    );
    path
}

/// Validates YAML documents against the upstream Kubernetes schemas, strictly.
pub fn validate_manifests(file: &Path) {
    for version in ["1.33.0", "1.37.0"] {
        let output = Command::new(kubernetes_validate())
            .args(["--strict", "--quiet", "-k", version])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} does not validate against Kubernetes {version}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn rendered_jobs_of_every_sample_event_match_their_snapshots_and_upstream_schemas() {
    let mut all_jobs = String::new();
    let mut job_count = 0;
    for event in test_events() {
        let name = event.file_stem().unwrap().to_string_lossy().into_owned();
        let output = run(&[
            "render",
            "--event",
            event.to_str().unwrap(),
            "--config",
            CONFIG,
            "--job-namespace",
            "keptn-jobs",
        ]);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let yaml = stdout(&output);
        job_count += yaml.matches("\nkind: Job\n").count();
        all_jobs.push_str(&yaml);
        insta::assert_snapshot!(format!("render__{name}"), yaml);
    }
    assert!(job_count >= 8, "the samples render only {job_count} Jobs");
    let file = std::env::temp_dir().join(format!("rendered-jobs-{}.yaml", std::process::id()));
    std::fs::write(&file, all_jobs).unwrap();
    validate_manifests(&file);
}

#[test]
fn render_json_lists_matched_and_not_matched_actions() {
    let plan = render_json("test-events/test.triggered.json", &[]);
    let matched = plan["matched"].as_array().unwrap();
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0]["action"], "Run locust");
    assert_eq!(matched[0]["silent"], false);
    let jobs = matched[0]["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["kind"], "Job");
    assert!(
        jobs[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-0")
    );
    assert!(
        jobs[1]["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-1")
    );
    let events = &matched[0]["events"];
    assert_eq!(events["started"]["type"], "sh.keptn.event.test.started");
    assert_eq!(events["finished"]["type"], "sh.keptn.event.test.finished");
    assert_eq!(
        events["finished"]["triggeredid"],
        "1a0e2f4c-6b8d-4e1f-a3c5-7d9e0b2a4c6e"
    );
    assert_eq!(events["finished"]["data"]["status"], "succeeded");
    assert_eq!(events["started"]["source"], "job-executor");
    // docs/operator.md: `--event-source job-executor-service` keeps the source Keptn's service
    // sent, for webhooks and filters that match it.
    let keptn = render_json(
        "test-events/test.triggered.json",
        &["--event-source", "job-executor-service"],
    );
    let keptn_events = &keptn["matched"][0]["events"];
    for kind in ["started", "finished"] {
        assert_eq!(
            keptn_events[kind]["source"], "job-executor-service",
            "{kind}"
        );
    }

    let not_matched = plan["not_matched"].as_array().unwrap();
    assert_eq!(not_matched.len(), 6);
    assert_eq!(not_matched[0]["action"], "Deploy with helm");
    assert_eq!(
        not_matched[0]["reason"],
        "event type \"sh.keptn.event.test.triggered\" matches none of \"sh.keptn.event.deployment.triggered\""
    );
}

#[test]
fn a_silent_action_renders_jobs_without_events() {
    let plan = render_json("test-events/deployment.finished.json", &[]);
    let matched = plan["matched"].as_array().unwrap();
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0]["action"], "Audit every finished task");
    assert_eq!(matched[0]["silent"], true);
    assert!(matched[0]["events"].is_null());
    let env = &matched[0]["jobs"][0]["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["value"], "sh.keptn.event.deployment.finished");
}

/// The example's catch-all (`sh.keptn.event.*.finished`) would match a sequence's event: as the
/// operator, `render` starts nothing for it.
#[test]
fn a_keptn_sequence_event_renders_nothing() {
    let event = changed_test_event("sequence", |value| {
        value["type"] = "sh.keptn.event.dev.delivery.finished".into();
    });
    let plan = render_json(event.to_str().unwrap(), &[]);
    assert!(plan["matched"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(
        plan["not_matched"][0]["reason"],
        "sh.keptn.event.dev.delivery.finished is not a Keptn task's event \
         (sh.keptn.event.<task>.<kind>): Keptn's sequence, project and service events start no \
         action"
    );
}

/// An event that names no service has no config to look up: as the operator, `render` starts
/// nothing for it (it rendered the Jobs, `KEPTN_SERVICE` empty).
#[test]
fn an_event_without_a_service_renders_nothing() {
    let event = changed_test_event("no-service", |value| {
        value["data"].as_object_mut().unwrap().remove("service");
    });
    let plan = render_json(event.to_str().unwrap(), &[]);
    assert!(plan["matched"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(
        plan["not_matched"][0]["reason"],
        "the event has no data.service: no job config applies"
    );
}

#[test]
fn nothing_matching_says_why_and_succeeds() {
    let event = changed_test_event("nomatch", |value| {
        value["data"]["test"]["teststrategy"] = "jmeter".into();
    });
    let plan = render_json(event.to_str().unwrap(), &[]);
    assert!(plan["matched"].as_array().unwrap().is_empty());
    assert_eq!(
        plan["not_matched"][0]["reason"],
        "$.data.test.teststrategy is \"jmeter\", not \"locust\""
    );
}

#[test]
fn a_forbidden_image_fails_the_render_naming_image_and_list() {
    let output = run(&[
        "render",
        "--event",
        "test-events/test.triggered.json",
        "--config",
        CONFIG,
        "--allowed-images",
        "curlimages/*,ghcr.io/acme/*",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        "error: task 'Run locust smoke tests' uses image \"locustio/locust:2.31.8\", which is not in this installation's allowed images (curlimages/*, ghcr.io/acme/*)"
    );
    assert!(stdout(&output).is_empty());
}

#[test]
fn an_unresolvable_env_path_fails_the_render() {
    let event = changed_test_event("unresolved", |value| {
        value["data"].as_object_mut().unwrap().remove("deployment");
    });
    let output = render_event(&event);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        "error: task 'Check the service answers': env HOST: JSONPath $.data.deployment.deploymentURIsLocal[0] resolves to nothing in the event"
    );
}

/// A config written for the old service with paths without `$` runs as it ran there, and
/// `validate` says how to write them.
#[test]
fn paths_without_a_root_read_from_the_events_top_as_in_the_old_service() {
    let config = tempdir("rootless").join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: v2\nactions:\n  - name: locust\n    events:\n      - name: sh.keptn.event.test.triggered\n        jsonpath: {property: data.test.teststrategy, match: locust}\n    tasks:\n      - name: smoke\n        image: locustio/locust\n        env:\n          - {name: PROJECT, value: data.project, valueFrom: event}\n",
    )
    .unwrap();
    let validated = run(&["validate", config.to_str().unwrap()]);
    assert!(validated.status.success(), "{}", stderr(&validated));
    let warnings = stderr(&validated);
    for expected in [
        ":6:30: actions[0].events[0].jsonpath.property: \"data.test.teststrategy\" has no `$`",
        ":11:36: actions[0].tasks[0].env[0].value: \"data.project\" has no `$`: it reads from \
         the event's top, \"$.data.project\", as the old service read it; write \"$.data.project\"",
    ] {
        assert!(warnings.contains(expected), "{expected}\n{warnings}");
    }
    let render = |event: &Path| {
        let output = run(&[
            "render",
            "--event",
            event.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--format",
            "json",
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_str::<Value>(&stdout(&output)).unwrap()
    };
    let plan = render(&root().join("test-events/test.triggered.json"));
    let env = &plan["matched"][0]["jobs"][0]["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "PROJECT", "value": "sockshop"})),
        "{env}"
    );
    let jmeter = changed_test_event("rootless-jmeter", |value| {
        value["data"]["test"]["teststrategy"] = "jmeter".into();
    });
    assert_eq!(
        render(&jmeter)["not_matched"][0]["reason"],
        "$.data.test.teststrategy is \"jmeter\", not \"locust\""
    );
}

#[test]
fn an_invalid_event_file_is_a_clear_error() {
    let event = tempdir("badevent").join("event.json");
    std::fs::write(
        &event,
        r#"{"specversion": "1.0", "source": "x", "type": "y"}"#,
    )
    .unwrap();
    let output = render_event(&event);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("is not a valid CloudEvent: missing required attribute \"id\""),
        "{}",
        stderr(&output)
    );
}

/// The sample test event with `change` applied, written to a temporary file.
fn changed_test_event(name: &str, change: impl FnOnce(&mut Value)) -> PathBuf {
    let mut value: Value = serde_json::from_slice(
        &std::fs::read(root().join("test-events/test.triggered.json")).unwrap(),
    )
    .unwrap();
    change(&mut value);
    let event = tempdir(name).join("event.json");
    std::fs::write(&event, value.to_string()).unwrap();
    event
}

/// `render` of an event file against the sample config.
fn render_event(event: &Path) -> Output {
    run(&[
        "render",
        "--event",
        event.to_str().unwrap(),
        "--config",
        CONFIG,
    ])
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The "billion laughs" (nine levels of nine aliases) is refused where it passes the node
/// limit, instead of growing by a gigabyte a second.
#[test]
fn validate_refuses_exponential_aliases() {
    let dir = tempdir("laughs");
    let file = dir.join("laughs.yaml");
    let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x]\n");
    for level in 1..=9 {
        let items = vec![format!("*l{}", level - 1); 9].join(", ");
        text.push_str(&format!("l{level}: &l{level} [{items}]\n"));
    }
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let output = run(&["validate", path]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).starts_with(&format!(
            "{path}:6:15: the file is too large: more than 250000 YAML nodes once aliases are expanded"
        )),
        "{}",
        stdout(&output)
    );
}

/// Every config the fuzz campaign kept (`fuzz/corpus/config_load`), through the binary's
/// `validate` in one call: an answer for each file (valid, or its problems), and no panic.
#[test]
fn validate_answers_every_config_of_the_fuzz_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_load");
    let mut files: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|entry| entry.unwrap().path().to_str().unwrap().to_string())
        .collect();
    files.sort();
    assert!(files.len() > 1000, "{} files", files.len());
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let output = run(&args);
    // 0: every file valid, 1: problems reported; a panic would be 101.
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answers = stdout(&output);
    for file in &files {
        assert!(answers.contains(file.as_str()), "no answer for {file}");
    }
}

#[test]
fn validate_reports_every_problem_as_file_line_col() {
    let dir = tempdir("validate");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v2\nactions:\n  - name: a\n    events:\n      - name: x\n    tasks:\n      - imag: alpine\n        maxPollDuration: soon\n",
    )
    .unwrap();
    let warn = dir.join("warn.yaml");
    std::fs::write(
        &warn,
        "apiVersion: v2\nactions:\n  - name: a\n    events:\n      - name: \"^sh.keptn.event.test.triggered$\"\n    tasks:\n      - image: alpine\n",
    )
    .unwrap();
    let bad_path = bad.to_str().unwrap();
    let output = run(&["validate", CONFIG, bad_path]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        format!(
            "{CONFIG}: ok (7 action(s))\n\
             {bad_path}:7:9: actions[0].tasks[0].imag: unknown key \"imag\", did you mean \"image\"?\n\
             {bad_path}:7:9: actions[0].tasks[0]: missing required key \"image\"\n\
             {bad_path}:8:26: actions[0].tasks[0].maxPollDuration: expected an integer, found \"soon\"\n"
        )
    );

    let output = run(&["validate", warn.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "warnings do not fail");
    assert!(
        stderr(&output).contains(":5:15: actions[0].events[0].name: \"^sh.keptn.event.test.triggered$\" looks like a regular expression"),
        "{}",
        stderr(&output)
    );

    // What the old service read otherwise: a name it matched as part of Keptn's type is a
    // warning; a number whose octal and decimal readings differ is refused, naming both.
    let keptn = dir.join("keptn.yaml");
    std::fs::write(
        &keptn,
        "apiVersion: v2\nactions:\n  - name: a\n    events:\n      - name: test.triggered\n    tasks:\n      - image: alpine\n        maxPollDuration: 0900\n",
    )
    .unwrap();
    let output = run(&["validate", keptn.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(":5:15: actions[0].events[0].name: \"test.triggered\" matches only events of exactly that type"),
        "{}",
        stderr(&output)
    );
    std::fs::write(
        &keptn,
        "apiVersion: v2\nactions:\n  - name: a\n    events:\n      - name: sh.keptn.event.test.triggered\n    tasks:\n      - image: alpine\n        maxPollDuration: 0600\n",
    )
    .unwrap();
    let output = run(&["validate", keptn.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains(":8:26: actions[0].tasks[0].maxPollDuration: 0600 starts with 0: Keptn's job-executor-service (YAML 1.1) read it as the octal 384, YAML 1.2 reads the decimal 600"),
        "{}",
        stdout(&output)
    );

    let output = run(&["validate", dir.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("cannot read"),
        "{}",
        stdout(&output)
    );
}

/// The issue's file: a misspelled key, bad values for keys with fixed choices, and a mistake
/// only the checks across fields see, all reported in one run, each at its value.
#[test]
fn validate_reports_all_problems_of_a_file_in_one_run() {
    let dir = tempdir("validate-all");
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v2
actions:
  - events: [{name: sh.keptn.event.test.triggered}]
    tasks:
      - image: alpine
        imagPullPolicy: Always
        env:
          - name: TOKEN
            valueFrom: secrt
          - name: DATA
            value: $.data
            valueFrom: event
            as: jsno
          - name: HOST
            valueFrom: event
        securityContext:
          seccompProfile:
            type: runtimedefault
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let output = run(&["validate", path]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        format!(
            "{path}:6:9: actions[0].tasks[0].imagPullPolicy: unknown key \"imagPullPolicy\", did you mean \"imagePullPolicy\"?\n\
             {path}:9:24: actions[0].tasks[0].env[0].valueFrom: invalid value \"secrt\": expected one of \"event\", \"secret\", \"string\", \"output\", did you mean \"secret\"?\n\
             {path}:13:17: actions[0].tasks[0].env[1].as: invalid value \"jsno\": expected one of \"json\", \"yaml\", \"string\", did you mean \"json\"?\n\
             {path}:14:13: actions[0].tasks[0].env[2].value: valueFrom: event needs `value`, a JSONPath into the event\n\
             {path}:18:19: actions[0].tasks[0].securityContext.seccompProfile.type: invalid value \"runtimedefault\": expected one of \"RuntimeDefault\", \"Localhost\", \"Unconfined\", did you mean \"RuntimeDefault\"?\n"
        )
    );
    assert!(!stdout(&output).contains("internal error"));
}

/// `check-run` prints one line per setting of `run`: the flag, the effective value and where it
/// came from; secrets show as `****`, whether they came from a flag or the environment.
#[test]
fn check_run_prints_each_setting_with_its_source_and_masks_secrets() {
    let output = Command::new(BIN)
        .args([
            "check-run",
            "--git-url",
            "https://robot:gh-url-secret@git.example.com/team/configs.git",
            "--sink-url",
            "http://sink.example.com",
            "--ingest-token",
            "flag-token-secret",
            "--default-cpu-limit",
            "2",
        ])
        .env_clear()
        .env("JOB_EXECUTOR_JOB_NAMESPACE", "team-jobs")
        .env("JOB_EXECUTOR_GIT_PASSWORD", "env-password-secret")
        .env(
            "JOB_EXECUTOR_DEAD_LETTER_SINK_URL",
            "nats://letters:nats-dead-letter-secret@nats.example.com:4222",
        )
        .env(
            "JOB_EXECUTOR_SINK_HEADERS",
            "x-api-key: env-header-secret,x-team: env-second-secret",
        )
        .env(
            "JOB_EXECUTOR_OTLP_ENDPOINT",
            "https://tracer:otlp-secret@collector.example.com:4318",
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    for secret in [
        "otlp-secret",
        "robot",
        "gh-url-secret",
        "flag-token-secret",
        "env-password-secret",
        "env-header-secret",
        "env-second-secret",
        "nats-dead-letter-secret",
    ] {
        assert!(!out.contains(secret), "{secret} is shown:\n{out}");
    }
    // Columns are separated by two spaces or more; compare each line with them collapsed.
    let lines: Vec<String> = out
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|column| !column.is_empty())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("SETTING | VALUE | SOURCE")
    );
    for expected in [
        "--job-namespace | team-jobs | env JOB_EXECUTOR_JOB_NAMESPACE",
        "--default-cpu-limit | 2 | flag",
        "--default-cpu-request | 50m | default",
        "--allow-privileged | false | default",
        "--sink-url | http://sink.example.com | flag",
        "--dead-letter-sink-url | nats://****@nats.example.com:4222 | env JOB_EXECUTOR_DEAD_LETTER_SINK_URL",
        "--sink-header | x-api-key: ****,x-team: **** | env JOB_EXECUTOR_SINK_HEADERS",
        "--ingest-token | **** | flag",
        "--git-url | https://****@git.example.com/team/configs.git | flag",
        "--git-password | **** | env JOB_EXECUTOR_GIT_PASSWORD",
        "--git-username | (not set) | default",
        "--config-dir | (not set) | default",
    ] {
        assert!(
            lines.iter().any(|line| line == expected),
            "no line `{expected}`:\n{out}"
        );
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("ok: `job-executor run` accepts these arguments and environment")
    );
    assert!(!out.contains("RunArgs"), "no debug dump:\n{out}");
}

/// A NATS sink given headers is refused by `check-run` as by `run`, its URL shown without the
/// password.
#[test]
fn check_run_refuses_headers_on_a_nats_sink_without_showing_its_password() {
    let output = Command::new(BIN)
        .args([
            "check-run",
            "--config-dir",
            "examples",
            "--sink-url",
            "nats://robot:nats-secret@nats.example.com:4222",
            "--sink-header",
            "x-a: b",
        ])
        .env_clear()
        .output()
        .unwrap();
    assert!(!output.status.success());
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(all.contains("the NATS sink nats://"), "{all}");
    assert!(
        !all.contains("nats-secret"),
        "the password is shown:\n{all}"
    );
}

/// An empty ingest token (a variable that was not set) and a body budget below one body are
/// refused by `check-run` as by `run`, rather than turning the token check off or refusing
/// every large body.
#[test]
fn check_run_refuses_an_empty_token_and_a_budget_below_one_body() {
    for (args, said) in [
        (
            vec!["--ingest-token", " "],
            "invalid --ingest-token \"\": empty: give the token, or leave the setting out for none",
        ),
        (
            vec![
                "--max-body-bytes",
                "2048",
                "--max-body-bytes-in-flight",
                "1024",
            ],
            "invalid --max-body-bytes-in-flight \"1024\": less than --max-body-bytes (2048): a \
             body of that size could never be read",
        ),
        (
            vec!["--default-memory-request", "1Gi"],
            "invalid --default-memory-request \"1Gi\": above --default-memory-limit 512Mi: \
             Kubernetes refuses the Job of every task without its own resources",
        ),
    ] {
        let output = Command::new(BIN)
            .args([
                "check-run",
                "--config-dir",
                "examples",
                "--sink-url",
                "http://sink",
            ])
            .args(&args)
            .env_clear()
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr(&output).contains(said), "{}", stderr(&output));
    }
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let output = run(&["schema"]);
    assert!(output.status.success());
    let committed = std::fs::read_to_string(root().join("docs/job-config.schema.json")).unwrap();
    assert!(
        stdout(&output) == committed,
        "docs/job-config.schema.json is stale: run `cargo run -- schema > docs/job-config.schema.json`"
    );
}

/// The published schema, read by a JSON Schema validator (Python's `jsonschema`, with
/// `yaml` reading YAML 1.1 as Keptn's service did), accepts every config the loader does:
/// the example, and one written for the old service (numbers where strings go, `yes`, an empty
/// key, an empty pull policy, `as: JSON`); it refuses what the loader refuses too.
#[test]
fn the_published_schema_accepts_what_the_loader_loads() {
    let python = kubernetes_validate().with_file_name("python");
    let validate = |file: &Path| {
        Command::new(&python)
            .args([
                "-c",
                "import json, sys, yaml, jsonschema\n\
                 schema = json.load(open(sys.argv[1]))\n\
                 cls = jsonschema.validators.validator_for(schema)\n\
                 errors = list(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(yaml.safe_load(open(sys.argv[2]))))\n\
                 print('\\n'.join('/'.join(map(str, e.absolute_path)) + ': ' + e.message for e in errors))\n\
                 sys.exit(1 if errors else 0)",
            ])
            .arg(root().join("docs/job-config.schema.json"))
            .arg(file)
            .output()
            .unwrap()
    };
    let dir = tempdir("published-schema");
    let old_style = dir.join("old-style.yaml");
    std::fs::write(
        &old_style,
        "apiVersion: v2\nactions:\n  - name: locust\n    silent: yes\n    timeout: 10m\n    events:\n      - name: sh.keptn.event.test.triggered\n        jsonpath: {property: $.data.test.teststrategy, match: 3}\n    tasks:\n      - name: smoke\n        files:\n        image: locustio/locust\n        imagePullPolicy: \"\"\n        args: [--users, 10, --headless]\n        env:\n          - {name: DATA, value: $.data, valueFrom: event, as: JSON}\n          - {name: PORT, value: 8080}\n",
    )
    .unwrap();
    for file in [root().join(CONFIG), old_style] {
        let loaded = run(&["validate", file.to_str().unwrap()]);
        assert!(loaded.status.success(), "{}", stdout(&loaded));
        let output = validate(&file);
        assert!(
            output.status.success(),
            "{}: {}{}",
            file.display(),
            stdout(&output),
            stderr(&output)
        );
    }
    let wrong = dir.join("wrong.yaml");
    std::fs::write(
        &wrong,
        "apiVersion: v2\nactions:\n  - silent: maybe\n    events: [{name: x}]\n    tasks:\n      - imagee: alpine\n        env: [{name: A, valueFrom: event, value: $.x, as: xml}]\n",
    )
    .unwrap();
    assert!(!run(&["validate", wrong.to_str().unwrap()]).status.success());
    let output = validate(&wrong);
    assert!(!output.status.success());
    let found = stdout(&output);
    for problem in [
        "actions/0/silent: 'maybe'",
        "'imagee' was unexpected",
        "'image' is a required property",
        "actions/0/tasks/0/env/0/as: 'xml'",
    ] {
        assert!(found.contains(problem), "{problem}:\n{found}");
    }
}

#[test]
fn stage_files_copies_a_tree_and_keeps_the_executable_bit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir("stage");
    let from = dir.join("from");
    std::fs::create_dir_all(from.join("locust")).unwrap();
    std::fs::write(from.join("locust/basic.py"), "x").unwrap();
    std::fs::write(from.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(from.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = dir.join("keptn");
    let output = run(&[
        "stage-files",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("staged 2 file(s)"));
    assert_eq!(
        std::fs::read_to_string(to.join("locust/basic.py")).unwrap(),
        "x"
    );
    let mode = std::fs::metadata(to.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn the_committed_crds_are_the_generated_ones_and_validate() {
    let mut all = Vec::new();
    for kind in ["jobrun", "jobschedule"] {
        let output = run(&["crd", kind]);
        assert!(output.status.success(), "{}", stderr(&output));
        let file = format!("crds/{kind}.yaml");
        let committed = std::fs::read_to_string(root().join(&file)).unwrap();
        assert!(
            stdout(&output) == committed,
            "{file} is stale: run `cargo run -- crd {kind} > {file}`"
        );
        validate_manifests(&root().join(&file));
        all.push(committed);
    }
    // Without a kind, every CRD, as one stream `kubectl apply -f -` takes.
    let output = run(&["crd"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), all.join("---\n"));
}

#[test]
fn render_shows_the_graph_of_tasks_that_say_what_they_need() {
    let plan = render_json("test-events/verify.triggered.json", &[]);
    let action = &plan["matched"][0];
    assert_eq!(action["action"], "Verify a preview");
    assert_eq!(
        action["graph"],
        serde_json::json!([
            {"task": "deploy preview", "after": []},
            {"task": "api checks", "after": ["deploy preview"]},
            {"task": "ui checks", "after": ["deploy preview"]},
            {"task": "report", "after": ["api checks", "ui checks"]},
        ])
    );
    assert_eq!(action["jobs"].as_array().unwrap().len(), 4);
    // A list of tasks runs in order, as it always did: no graph shown.
    let plan = render_json("test-events/test.triggered.json", &[]);
    assert!(plan["matched"][0].get("graph").is_none(), "{plan}");
}

#[test]
fn render_shows_the_concurrency_group_filled_in_from_the_event() {
    let plan = render_json("test-events/deployment.triggered.json", &[]);
    let action = &plan["matched"][0];
    assert_eq!(action["action"], "Deploy with helm");
    assert_eq!(
        action["concurrency"],
        serde_json::json!({"group": "deploy/sockshop/dev/carts", "limit": 1, "policy": "queue"})
    );
    let output = run(&[
        "render",
        "--event",
        "test-events/deployment.triggered.json",
        "--config",
        CONFIG,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(
            "# concurrency group \"deploy/sockshop/dev/carts\": at most 1 at a time, policy queue\n"
        ),
        "{}",
        stdout(&output)
    );
    // Actions without a group show none.
    let plan = render_json("test-events/test.triggered.json", &[]);
    assert!(plan["matched"][0].get("concurrency").is_none(), "{plan}");
}

/// `schedule`: the slots of a cron in its time zone, and a bad schedule refused with its field.
#[test]
fn schedule_lists_slots_and_refuses_bad_schedules() {
    let out = Command::new(BIN)
        .args([
            "schedule",
            "0 9 * * mon-fri",
            "--time-zone",
            "Europe/Berlin",
            "--from",
            "2026-12-04T00:00:00Z",
            "--count",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2026-12-04T08:00:00Z  Fri 2026-12-04 09:00 CET (+01:00)\n\
         2026-12-07T08:00:00Z  Mon 2026-12-07 09:00 CET (+01:00)\n"
    );
    for (args, message) in [
        (
            vec!["60 * * * *"],
            "the minute field \"60\": 60 is outside 0-59",
        ),
        (
            vec!["0 300 * * *"],
            "the hour field \"300\": 300 is outside 0-23",
        ),
        (
            vec!["@daily", "--time-zone", "Mars/Olympus"],
            "--time-zone \"Mars/Olympus\" is not an IANA time zone",
        ),
        (
            vec!["@daily", "--from", "yesterday"],
            "--from \"yesterday\" is not an RFC 3339 time",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("schedule")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // More slots than it lists is refused, not cut short.
    let out = Command::new(BIN)
        .args(["schedule", "@daily", "--count", "5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("5000 is not in 1..=1000"), "{stderr}");
}

/// docs/operator.md's tables of `job-executor run`'s flags name every flag `run --help` lists,
/// and every environment variable not named after its flag; and no flag `run` does not have.
#[test]
fn the_operator_guide_names_every_flag_of_run() {
    let help = stdout(&run(&["run", "--help"]));
    // Each flag with its variable, as --help shows them.
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let flag = trimmed
            .strip_prefix("--")
            .or_else(|| trimmed.get(4..).and_then(|rest| rest.strip_prefix("--")));
        // Flags are indented by 2 to 6 spaces, their descriptions by more.
        let indent = line.len() - trimmed.len();
        if let Some(flag) = flag.filter(|_| (2..=6).contains(&indent)) {
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            flags.push((format!("--{name}"), None));
        } else if let Some(env) = trimmed.strip_prefix("[env: ") {
            let env: String = env.chars().take_while(|c| *c != '=' && *c != ']').collect();
            flags.last_mut().expect("an env after its flag").1 = Some(env);
        }
    }
    flags.retain(|(flag, _)| flag != "--help");
    assert!(flags.len() > 50, "{help}");
    let guide = std::fs::read_to_string(root().join("docs/operator.md")).unwrap();
    let section = guide
        .split_once("\n## Running it\n")
        .and_then(|(_, rest)| rest.split_once("\n## Ingest\n"))
        .expect("docs/operator.md's Running it section")
        .0;
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with('|')).collect();
    let named: std::collections::BTreeSet<String> = rows
        .iter()
        .flat_map(|row| row.split('`').skip(1).step_by(2))
        .filter(|code| code.starts_with("--"))
        .map(str::to_string)
        .collect();
    for (flag, env) in &flags {
        assert!(
            named.contains(flag),
            "docs/operator.md has no row for {flag}"
        );
        let Some(env) = env else {
            panic!("{flag} has no environment variable")
        };
        let regular = format!(
            "JOB_EXECUTOR_{}",
            flag[2..].to_uppercase().replace('-', "_")
        );
        if *env != regular {
            assert!(
                rows.iter().any(|row| row.contains(&format!("`{env}`"))),
                "docs/operator.md does not say {flag}'s variable is {env}"
            );
        }
    }
    for flag in &named {
        assert!(
            flags.iter().any(|(f, _)| f == flag),
            "docs/operator.md names {flag}, which `job-executor run` does not have"
        );
    }
}

/// A log filter that does not parse stops the start, saying so, instead of logging at `info`
/// with no word of it (the chart's `logLevel` is `RUST_LOG`).
#[test]
fn a_log_filter_that_does_not_parse_stops_the_start() {
    let output = offline("run")
        .env("RUST_LOG", "info,job_executor=loud")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(
        error.contains("RUST_LOG \"info,job_executor=loud\" is not a log filter"),
        "{error}"
    );
}

/// With `--log-format json`, what stops the start is a JSON line too, as the log lines before it
/// (here the misspelt setting's warning, and no cluster to reach).
#[test]
fn with_log_format_json_the_reason_the_start_stops_is_a_json_line() {
    let output = offline("run")
        .args(["--log-format", "json"])
        .env(
            "JOB_EXECUTOR_GIT_UR",
            "https://git.example.com/team/configs.git",
        )
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = stderr(&output);
    let lines: Vec<serde_json::Value> = error
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("JOB_EXECUTOR_GIT_UR"))),
        "{error}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{error}");
    assert!(last["fields"]["message"].is_string(), "{error}");
}

/// A misspelt setting in the environment (a key of `job-executor-local`) is named, with the
/// setting it most likely means, by `check-run` and by `run` as it starts; the kubelet's
/// service links are not.
#[test]
fn a_misspelt_setting_in_the_environment_is_named() {
    let warning = "JOB_EXECUTOR_GIT_UR is no setting of `job-executor run` (did you mean \
                   JOB_EXECUTOR_GIT_URL?); it is ignored";
    for subcommand in ["check-run", "run"] {
        let output = offline(subcommand)
            .env(
                "JOB_EXECUTOR_GIT_UR",
                "https://git.example.com/team/configs.git",
            )
            .env("JOB_EXECUTOR_SERVICE_HOST", "10.0.0.1")
            .env("JOB_EXECUTOR_PORT_8080_TCP_ADDR", "10.0.0.1")
            // No cluster: `run` stops once it looks for one, after its checks.
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .unwrap();
        let all = format!("{}{}", stdout(&output), stderr(&output));
        assert!(all.contains(warning), "{subcommand}:\n{all}");
        assert!(!all.contains("SERVICE_HOST"), "{subcommand}:\n{all}");
        assert!(!all.contains("8080_TCP"), "{subcommand}:\n{all}");
    }
    // A setting refused may be caused by a misspelt one: said beside the refusal.
    let output = offline("check-run")
        .env("JOB_EXECUTOR_RUN_AS_USER", "0")
        .env("JOB_EXECUTOR_RUN_AS_NONROOT", "false")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(
        error.contains("JOB_EXECUTOR_RUN_AS_NONROOT is no setting of `job-executor run` (did you mean JOB_EXECUTOR_RUN_AS_NON_ROOT?)")
            && error.contains("--run-as-user"),
        "{error}"
    );
    // A setting missing (here the sink) may be the misspelt one: said beside clap's error.
    let output = Command::new(BIN)
        .args(["check-run", "--config-dir", "examples"])
        .env_clear()
        .env("JOB_EXECUTOR_SINK_ULR", "http://sink.example.com")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(
        error.contains(
            "warning: JOB_EXECUTOR_SINK_ULR is no setting of `job-executor run` (did you mean \
             JOB_EXECUTOR_SINK_URL?)"
        ) && error.contains("--sink-url <SINK_URL>"),
        "{error}"
    );
}

/// A log excerpt larger than a run's record can hold beside its event is refused at the start:
/// every write of the run's end would be refused by etcd, and the run would wait for ever.
#[test]
fn a_log_excerpt_past_what_a_run_record_holds_is_refused() {
    let check = |bytes: &str| {
        offline("check-run")
            .args(["--log-excerpt-bytes", bytes])
            .output()
            .unwrap()
    };
    assert!(check("262144").status.success());
    let refused = check("262145");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("262145 is not in 0..=262144"),
        "{}",
        stderr(&refused)
    );
}

/// A reader that went away (`job-executor validate … | head -1`) ends a subcommand quietly,
/// with the status a shell gives a process SIGPIPE ended (141), as other Unix tools end: Rust
/// ignores SIGPIPE, and printing to the closed pipe panicked (101).
#[test]
fn a_reader_that_went_away_ends_a_command_quietly() {
    for args in [
        vec!["schema"],
        vec!["crd"],
        vec!["validate", CONFIG, CONFIG],
        vec![
            "render",
            "--event",
            "test-events/test.triggered.json",
            "--config",
            CONFIG,
        ],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(BIN)
            .args(&args)
            .current_dir(root())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(141),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(stderr(&output), "", "{args:?}");
    }
}

/// `send` refuses a receiver it would not reach as written: a port that is none (the client
/// went to port 80 and said the event was accepted there), credentials in the URL (never sent,
/// and shown in its messages).
#[test]
fn send_refuses_a_port_that_is_none_and_credentials_in_the_url() {
    let event = root().join("test-events/test.triggered.json");
    for (to, said) in [
        (
            "http://127.0.0.1:99999/",
            "error: --to \"http://127.0.0.1:99999/\" is not an http:// URL",
        ),
        (
            "http://user:pa55@127.0.0.1:8080/",
            "error: --to \"http://****@127.0.0.1:8080/\" carries credentials",
        ),
    ] {
        let output = run(&["send", event.to_str().unwrap(), "--to", to]);
        assert_eq!(output.status.code(), Some(1), "{to}");
        assert!(stderr(&output).contains(said), "{}", stderr(&output));
        assert!(!stderr(&output).contains("pa55"), "{}", stderr(&output));
    }
}
