//! The README's first command, `scripts/demo`, as a user runs it: the demo example against the
//! simulator, and with `--cluster` against the real control plane. Every example action must
//! succeed and report `.finished`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// `scripts/demo`, exactly as the README has a user run it: it builds the operator and the demo
/// (`cargo test --all-targets` builds examples only as test harnesses), then runs the demo.
fn run_demo(args: &[&str]) -> String {
    let output = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"))
        .args(args)
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
    assert_eq!(out.matches(": 202 {").count(), sent, "{out}");
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
    // The log excerpt's first lines: the first locust task prints its command line.
    assert!(
        out.contains("│ /bin/sh /keptn/scripts/wait-for.sh"),
        "{out}"
    );
    assert!(
        out.contains("✓ 8 runs, every one succeeded and reported"),
        "{out}"
    );
}

#[test]
fn the_demo_runs_the_whole_loop_on_the_simulator() {
    let out = run_demo(&[]);
    assert!(out.contains("Kubernetes API: the simulator"), "{out}");
    assert_whole_loop(&out);
}

#[test]
fn the_demo_runs_the_whole_loop_on_the_real_control_plane() {
    let out = run_demo(&["--cluster"]);
    assert!(
        out.contains("Kubernetes API: the real control plane of scripts/cluster (v1.36.3)"),
        "{out}"
    );
    assert_whole_loop(&out);
}
