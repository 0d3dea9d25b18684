//! The fuzz corpora (`fuzz/corpus/<target>`: the seeds, and the inputs the campaigns kept,
//! crashes found included) replayed through the fuzz targets' own checks on the stable
//! toolchain, in every test run: a crash found and fixed once stays fixed (docs/fuzzing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::PathBuf;

/// A fuzz target's check: panics on an input that breaks a property.
type Check = fn(&[u8]);

/// Every fuzz target, by its corpus folder's name.
const TARGETS: [(&str, Check); 6] = [
    ("config_load", checks::config_load),
    ("cloudevent", checks::cloudevent),
    ("ingest", checks::ingest),
    ("jsonpath", checks::jsonpath),
    ("names", checks::names),
    ("stage_paths", checks::stage_paths),
];

/// A target's corpus inputs, in name order (`fuzz/corpus/<target>`).
fn corpus_inputs(target: &str) -> Vec<PathBuf> {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(corpus.join(target))
        .unwrap_or_else(|error| panic!("fuzz/corpus/{target}: {error}"))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty");
    inputs
}

#[test]
fn every_corpus_input_passes_the_checks_of_its_target() {
    for (target, check) in TARGETS {
        let inputs = corpus_inputs(target);
        eprintln!("fuzz/corpus/{target}: {} inputs", inputs.len());
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            // A panic names the input, so it can be replayed with `cargo fuzz run`.
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{} fails its checks", input.display());
        }
    }
}

/// A brief fuzz run on stable, in every test run: each target's corpus inputs mutated at
/// random (bytes flipped, inserted, removed, repeated, spliced with another input) for a few
/// seconds, through the same checks. Not coverage-guided like the libFuzzer campaigns
/// (docs/fuzzing.md), but new inputs on every commit; the seed is fixed, so a failure
/// reproduces, and the failing input is written under `target/fuzz-failures/`.
#[test]
fn every_target_survives_random_mutations_of_its_corpus() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (target, check) in TARGETS {
        let inputs: Vec<Vec<u8>> = corpus_inputs(target)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
        let mut runs = 0;
        while std::time::Instant::now() < deadline {
            let mut data = inputs[next() as usize % inputs.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = if data.is_empty() {
                    0
                } else {
                    next() as usize % data.len()
                };
                match next() % 5 {
                    0 if !data.is_empty() => data[at] ^= 1 << (next() % 8),
                    1 => data.insert(at, next() as u8),
                    2 if !data.is_empty() => {
                        let end = (at + 1 + next() as usize % 16).min(data.len());
                        data.drain(at..end);
                    }
                    3 if !data.is_empty() => {
                        let end = (at + 1 + next() as usize % 32).min(data.len());
                        let piece = data[at..end].to_vec();
                        data.splice(at..at, piece);
                    }
                    _ => {
                        let other = &inputs[next() as usize % inputs.len()];
                        let from = if other.is_empty() {
                            0
                        } else {
                            next() as usize % other.len()
                        };
                        data.truncate(at);
                        data.extend_from_slice(&other[from..]);
                    }
                }
            }
            runs += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join(format!("{target}-{runs}"));
                std::fs::write(&file, &data).unwrap();
                panic!(
                    "{target}: a mutated input fails its checks: {}",
                    file.display()
                );
            }
        }
        eprintln!("{target}: {runs} mutated inputs");
    }
}
