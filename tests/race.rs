//! Runs that race: four kvpush processes started together on the same
//! workspace, registry, tag and cache directory (two CI jobs, a double
//! Enter) all exit 0, every tag whole and at the right digest (skopeo),
//! the cache free of partial entries.

mod common;

use std::process::Stdio;

use common::{verify_with_skopeo, Fixture};
use kvpush_fixtures::{Registry, RegistryKind};

const RUNS: usize = 4;
const ROUNDS: usize = 3;

#[test]
fn four_runs_started_together_all_land_every_image() {
    let fx = Fixture::small();
    let cache = fx.dir.path().join("cache");
    for round in 0..ROUNDS {
        // A cold registry each round: the blob commits race.
        let registry = Registry::start(RegistryKind::Plain);
        let prefix = format!("{}/kubevirt", registry.addr());
        let children: Vec<_> = (0..RUNS)
            .map(|_| {
                let mut cmd = fx.command();
                cmd.args(["all", "--registry", &prefix, "--tag", "race"])
                    .arg("--cache-dir")
                    .arg(&cache)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}, run {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for image in &fx.ws.images {
            let reference = format!("{prefix}/{}:race", image.name);
            verify_with_skopeo(&registry, &reference, image);
        }
    }
    // Entries are written to a temporary name and renamed: none is partial
    // (each parses) and no temporary file is left.
    let mut entries = 0;
    for entry in walk(&cache) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.starts_with(".tmp"),
            "left behind: {}",
            entry.display()
        );
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.is_empty(), "empty cache entry {}", entry.display());
        if bytes.starts_with(b"{") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("partial cache entry {}: {e}", entry.display()));
        }
        entries += 1;
    }
    assert!(entries > 0, "the runs used the cache");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
