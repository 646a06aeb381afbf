//! The fuzz targets' entry points (`kvpush::source::fuzzing`, also driven
//! by cargo-fuzz from `fuzz/`) over a seeded mutation corpus, for a bounded
//! number of inputs: runs on stable, in every `cargo test`. A panic saves
//! the input under `target/fuzz-failures/` and names it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use kvpush_fixtures::fuzzcorpus::{deploy_manifest_seeds, manifest_seeds, mutate, tarball_seeds};
use kvpush_fixtures::prng::Rng;

/// Inputs per target; `KVPUSH_FUZZ_ITERATIONS` raises it for a longer run.
fn iterations(default: usize) -> usize {
    std::env::var("KVPUSH_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz(name: &str, seeds: Vec<(String, Vec<u8>)>, runs: usize, target: fn(&[u8])) {
    let corpus: Vec<Vec<u8>> = seeds.into_iter().map(|(_, data)| data).collect();
    let mut rng = Rng::derived(0x5eed, name);
    for data in &corpus {
        target(data);
    }
    for i in 0..runs {
        let input = &corpus[rng.below(corpus.len() as u64) as usize];
        let data = mutate(&mut rng, input, &corpus);
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("{name}-{i}"));
            std::fs::write(&file, &data).unwrap();
            panic!(
                "{name}: input {i} panicked; saved to {} (replay: cargo fuzz run {name} {})",
                file.display(),
                file.display()
            );
        }
    }
}

#[test]
fn tarball_reading_never_panics() {
    fuzz(
        "tarball",
        tarball_seeds(),
        iterations(3_000),
        kvpush::source::fuzzing::tarball,
    );
}

#[test]
fn manifest_and_config_parsing_never_panics() {
    fuzz(
        "manifest",
        manifest_seeds(),
        iterations(20_000),
        kvpush::source::fuzzing::manifest,
    );
}

#[test]
fn deploy_manifest_parsing_never_panics() {
    fuzz(
        "deploy_manifest",
        deploy_manifest_seeds(),
        iterations(20_000),
        kvpush::source::fuzzing::deploy_manifest,
    );
}
