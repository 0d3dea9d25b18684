//! The fuzz corpora (`fuzz/corpus/<target>`: the seeds, and the inputs the campaigns kept,
//! crashes found included) replayed through the fuzz targets' own checks on the stable
//! toolchain, in every test run: a crash found and fixed once stays fixed (docs/fuzzing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::PathBuf;

/// A fuzz target's check: panics on an input that breaks a property.
type Check = fn(&[u8]);

#[test]
fn every_corpus_input_passes_the_checks_of_its_target() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let targets: [(&str, Check); 6] = [
        ("config_load", checks::config_load),
        ("cloudevent", checks::cloudevent),
        ("ingest", checks::ingest),
        ("jsonpath", checks::jsonpath),
        ("names", checks::names),
        ("stage_paths", checks::stage_paths),
    ];
    for (target, check) in targets {
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(corpus.join(target))
            .unwrap_or_else(|error| panic!("fuzz/corpus/{target}: {error}"))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty");
        eprintln!("fuzz/corpus/{target}: {} inputs", inputs.len());
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            // A panic names the input, so it can be replayed with `cargo fuzz run`.
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{} fails its checks", input.display());
        }
    }
}
