//! What both benches set up the same way: the ingest phase's refusing actions, and a config
//! committed to a git repository.

use std::path::Path;
use std::process::Command;

/// The actions that listen for `gate` events.
const GATES: usize = 20;

/// Twenty actions listen for `gate` events, each for a test strategy of its own: an event of
/// another strategy is refused by all twenty (a busy Keptn project's common case). YAML list
/// items of a config's `actions`.
pub fn gate_actions() -> String {
    (0..GATES)
        .map(|i| {
            format!(
                "  - name: gate-{i}\n    events:\n      - name: sh.keptn.event.gate.triggered\n        jsonpath: {{property: $.data.test.teststrategy, match: strategy-{i}}}\n    tasks:\n      - {{name: only, image: 'bench:quick'}}\n"
            )
        })
        .collect()
}

/// Makes `dir` a git repository whose `branch` holds what is in it, committed once, with
/// none of the host's git configuration.
pub fn commit_as_repository(dir: &Path, branch: &str) {
    git(dir, &["init", "-q", "-b", branch]);
    commit_all(dir, "the bench's config");
}

/// Commits everything in the work tree of the repository `dir`.
#[allow(dead_code)] // Only the load bench pushes.
pub fn commit_all(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?} failed");
}
