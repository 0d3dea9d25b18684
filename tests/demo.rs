//! The demo's code (`examples/demo.rs`, which `scripts/demo` runs) with the binary `cargo test` built:
//! simulator, and with `--cluster` against the real control plane. Every example action must
//! succeed and report `.finished`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// The demo's own code (`scripts/demo` builds and runs it as the example binary).
#[path = "../examples/demo.rs"]
#[allow(dead_code)]
mod demo_example;

/// Set in the environment of the process [`run_demo`] starts: `simulator` or `cluster`.
const DEMO_CHILD: &str = "JOB_EXECUTOR_DEMO_CHILD";

/// Runs the demo as a process of its own, as `scripts/demo` does, and returns what it printed.
/// The process is this test binary running only [`demo_process`]: `cargo test --all-targets`
/// builds examples as test harnesses only, and a nested cargo build from a test would relink
/// the binaries other tests use.
fn run_demo(cluster: bool) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "demo_process", "--nocapture", "--test-threads=1"])
        .env(DEMO_CHILD, if cluster { "cluster" } else { "simulator" })
        .env("JOB_EXECUTOR_DEMO_BIN", env!("CARGO_BIN_EXE_job-executor"))
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn assert_whole_loop(out: &str) {
    // Every sample event was sent and answered 202.
    let sent = std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-events"))
        .unwrap()
        .count();
    assert_eq!(
        out.matches("→ job-executor send test-events/").count(),
        sent,
        "{out}"
    );
    // The deployment twice at once: one waits in the concurrency group for the other.
    assert_eq!(out.matches(": 202 {").count(), sent + 1, "{out}");
    let deployments: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("◦ jobrun deployment-"))
        .collect();
    assert!(
        deployments.iter().any(|l| l.contains(" Queued ")),
        "one deployment shows Queued: {out}"
    );
    // Progress as it happens: runs, Jobs, and the events the sink received.
    assert!(
        out.contains("◦ jobrun ") && out.contains(" Running "),
        "{out}"
    );
    assert!(
        out.contains("◦ job    ") && out.contains(" succeeded "),
        "{out}"
    );
    assert!(out.contains("← sink got test.started"), "{out}");
    assert!(
        out.contains("← sink got test.finished  status=succeeded result=pass"),
        "{out}"
    );
    // The graph's four tasks each ran (their overlap is proven in tests/workflow.rs, where the
    // middle tasks take seconds, not the simulator's 100 ms).
    for task in 0..4 {
        let line = format!("verify-ba9ee74607a04422b29d-{task}    succeeded");
        assert!(out.contains(&line), "{line}: {out}");
    }
    // The log excerpt's first lines: the first locust task prints its command line.
    assert!(
        out.contains("│ /bin/sh /keptn/scripts/wait-for.sh"),
        "{out}"
    );
    assert!(
        out.contains("✓ 10 runs, every one succeeded and reported"),
        "{out}"
    );
    // A Job's progress only moves on (the real Job controller reports no active pod for a
    // moment before the Job's end).
    let mut states: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for line in out.lines().filter_map(|l| l.strip_prefix("  ◦ job    ")) {
        let mut words = line.split_whitespace();
        let (Some(job), Some(state)) = (words.next(), words.next()) else {
            continue;
        };
        states.entry(job).or_default().push(state);
    }
    let rank = |state: &str| {
        ["created", "running", "succeeded"]
            .iter()
            .position(|s| *s == state)
    };
    for (job, seen) in &states {
        let ranks: Vec<_> = seen.iter().map(|s| rank(s)).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{job}: {seen:?}");
    }
    // The closing table has the columns `kubectl get jobruns` shows, the graph run's tasks
    // each with its phase.
    let (_, table) = out.split_once("get jobruns\n").unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "ACTION", "SERVICE", "STAGE", "PHASE", "TASK", "TASKS", "AGE"
        ],
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("verify-")
            && l.contains(
                "deploy preview:Succeeded api checks:Succeeded ui checks:Succeeded report:Succeeded"
            )),
        "{table}"
    );
    // What the demo wrote (the operator's log, kubeconfigs) is gone once it succeeded.
    let log = out
        .split_once("(log: ")
        .and_then(|(_, rest)| rest.split_once("/operator.log)"))
        .map(|(dir, _)| dir)
        .unwrap();
    assert!(!std::path::Path::new(log).exists(), "{log} is left behind");
    // Each run told the Slack-compatible receiver how it ended, before it counted as done.
    let told: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  ✉ slack demo-channel: "))
        .collect();
    assert_eq!(told.len(), 10, "{out}");
    assert!(
        told.iter()
            .any(|l| l.contains("*carts* (sockshop/dev): action `Run locust` succeeded after ")),
        "{told:?}"
    );
}

/// The demo's process when [`run_demo`] starts this binary; in a plain test run it does nothing.
#[test]
fn demo_process() {
    let Ok(mode) = std::env::var(DEMO_CHILD) else {
        return;
    };
    assert!(demo_example::run(mode == "cluster"), "the demo failed");
}

#[test]
fn the_demo_runs_the_whole_loop_on_the_simulator() {
    let out = run_demo(false);
    assert!(out.contains("Kubernetes API: the simulator"), "{out}");
    assert_whole_loop(&out);
}

#[test]
fn the_demo_runs_the_whole_loop_on_the_real_control_plane() {
    let out = run_demo(true);
    assert!(
        out.contains("Kubernetes API: the real control plane of scripts/cluster (v1.36.3)"),
        "{out}"
    );
    assert_whole_loop(&out);
}
