//! The Dockerfile cannot be built here (no container engine); what can be checked is.

use std::path::Path;

use crate::common::{exists, read};

/// The instructions of the Dockerfile, continuation lines joined, comments dropped.
fn instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    joined
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((&l, ""));
            (op.to_uppercase(), rest.trim().to_string())
        })
        .collect()
}

#[test]
fn dockerfile_copies_only_files_that_exist_and_are_in_the_build_context() {
    let dockerignore = read(".dockerignore");
    let included: Vec<&str> = dockerignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let mut copies = 0;
    for (op, args) in instructions() {
        if op != "COPY" || args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let (sources, _destination) = words.split_at(words.len() - 1);
        for source in sources {
            copies += 1;
            assert!(exists(Path::new(source)), "COPY {source}: no such file");
            assert!(
                included.contains(source),
                "COPY {source}: excluded by .dockerignore (which includes only {included:?})"
            );
        }
    }
    assert!(copies >= 4, "the Dockerfile copies the workspace");
    // Cargo needs every workspace member to load the workspace.
    let manifest = read("Cargo.toml");
    assert!(
        manifest.contains("members = [\".\", \"tests/kube-sim\"]"),
        "{manifest}"
    );
}

#[test]
fn the_image_is_distroless_static_non_root_with_the_binary_as_entrypoint() {
    let instructions = instructions();
    let stages: Vec<&String> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(stages.len(), 2, "multi-stage: build, then the final image");
    assert!(stages[0].ends_with("AS build"), "{}", stages[0]);
    assert_eq!(stages[1], "gcr.io/distroless/static-debian12:nonroot");
    let final_stage: Vec<&(String, String)> = instructions
        .iter()
        .skip_while(|(op, a)| !(op == "FROM" && a.starts_with("gcr.io/distroless")))
        .collect();
    let get = |name: &str| -> Vec<&str> {
        final_stage
            .iter()
            .filter(|(op, _)| op == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    assert_eq!(get("USER"), ["65532:65532"]);
    // The operator runs `run`; the init container of tasks runs `stage-files` with args only,
    // so the entrypoint must be the binary.
    assert_eq!(get("ENTRYPOINT"), [r#"["/job-executor"]"#]);
    assert_eq!(get("CMD"), [r#"["run"]"#]);
    assert_eq!(
        get("COPY"),
        ["--from=build /out/job-executor /job-executor"]
    );
    // The build stage builds the static binary with the script checked below.
    let build: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "RUN")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(
        build.contains(&"scripts/build-static /out/job-executor"),
        "{build:?}"
    );
    assert!(
        build.iter().any(|r| r.contains("unknown-linux-musl")),
        "{build:?}"
    );
}

#[test]
fn the_build_script_makes_a_static_musl_release_binary() {
    let script = read("scripts/build-static");
    for needle in [
        "--release --locked --target \"$target\" --bin job-executor",
        "target=\"$(uname -m)-unknown-linux-musl\"",
        "Requesting program interpreter",
    ] {
        assert!(
            script.contains(needle),
            "scripts/build-static lacks {needle}"
        );
    }
}
