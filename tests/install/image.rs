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

/// The sources of the build context's COPY instructions.
fn instructions_sources() -> Vec<String> {
    let mut sources = Vec::new();
    for (op, args) in instructions() {
        if op == "COPY" && !args.starts_with("--from") {
            let words: Vec<String> = args.split_whitespace().map(str::to_string).collect();
            for source in &words[..words.len() - 1] {
                sources.push(source.trim_end_matches('/').to_string());
            }
        }
    }
    sources
}

/// The source files of a manifest's explicit targets (`[lib]`, `[[bin]]`, `[[bench]]`, …):
/// their `path`, or the default path of a named bench/test/example.
fn explicit_targets(manifest: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut section = String::new();
    let mut name = None;
    let mut path = None;
    let mut flush = |section: &str, name: &mut Option<String>, path: &mut Option<String>| {
        let default_dir = match section {
            "[[bench]]" => Some("benches"),
            "[[test]]" => Some("tests"),
            "[[example]]" => Some("examples"),
            _ => None,
        };
        match (path.take(), name.take(), default_dir) {
            (Some(path), _, _) => targets.push(path),
            (None, Some(name), Some(dir)) => targets.push(format!("{dir}/{name}.rs")),
            _ => {}
        }
    };
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            flush(&section, &mut name, &mut path);
            section = line.to_string();
            continue;
        }
        if !(section.starts_with("[[") || section == "[lib]") {
            continue;
        }
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        if let Some(v) = value("name") {
            name = Some(v);
        }
        if let Some(v) = value("path") {
            path = Some(v);
        }
    }
    flush(&section, &mut name, &mut path);
    targets
}

#[test]
fn explicit_targets_are_found() {
    let manifest = "[package]\nname = \"x\"\n[lib]\npath = \"src/lib.rs\"\n[[bench]]\nname = \"matching\"\nharness = false\n[[bin]]\nname = \"b\"\npath = \"src/main.rs\"\n";
    assert_eq!(
        explicit_targets(manifest),
        ["src/lib.rs", "benches/matching.rs", "src/main.rs"]
    );
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
    // Cargo refuses a manifest whose explicit targets ([[bench]], [[test]], …) are missing,
    // even when building only the binary: they must be copied too.
    let copied = instructions_sources();
    for (manifest, base) in [
        ("Cargo.toml", ""),
        ("tests/kube-sim/Cargo.toml", "tests/kube-sim/"),
    ] {
        for target in explicit_targets(&read(manifest)) {
            let path = format!("{base}{target}");
            assert!(
                copied
                    .iter()
                    .any(|c| path == *c || path.starts_with(&format!("{c}/"))),
                "{manifest} names {path}, which the Dockerfile does not copy"
            );
        }
    }
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
