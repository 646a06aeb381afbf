//! `--compression-level auto` against a real registry: the level it picks
//! follows the link (forced here with `KVPUSH_TEST_LINK_BPS`), its output
//! verifies with skopeo, and a layer an earlier run compressed at another
//! level is never compressed or uploaded again because the link changed;
//! an explicit level is kept as given.

mod common;

use common::{blob_uploads, run_command, Run, Scenario};

/// A link `auto` finds slower than the cores (1 Mbit/s: level 12).
const SLOW: &str = "1000000";
/// A link faster than any core count here compresses (100 Gbit/s: level 3).
const FAST: &str = "100000000000";

fn push_with_link(sc: &Scenario, targets: &[&str], link_bps: &str, args: &[&str]) -> Run {
    let mut cmd = sc.push_command(targets, args);
    cmd.env("KVPUSH_TEST_LINK_BPS", link_bps).arg("-v");
    run_command(cmd)
}

fn compressed_count(stderr: &str) -> usize {
    let at = stderr.find(" compressed by kvpush").expect("summary line");
    stderr[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

/// A cold push at `first`, then a re-push of a new tag under `auto` with
/// the link `link_bps`: nothing compressed, nothing uploaded, every
/// manifest digest the same (checked with skopeo).
fn repush_uploads_nothing(first: &[&str], first_link: &str, link_bps: &str, picks: &str) {
    let sc = Scenario::plain();
    let mut args = vec!["--tag", "one"];
    args.extend_from_slice(first);
    let run = push_with_link(&sc, &["all"], first_link, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(compressed_count(&run.stderr) > 0);
    let uploads = blob_uploads(&sc.registry);

    let run = push_with_link(&sc, &["all"], link_bps, &["--tag", "two"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("compression: level {picks} (auto")),
        "{}",
        run.stderr
    );
    assert_eq!(compressed_count(&run.stderr), 0, "{}", run.stderr);
    assert_eq!(blob_uploads(&sc.registry), uploads, "no blob uploaded");
    assert_eq!(sc.verify_all("one"), sc.verify_all("two"));
}

#[test]
fn a_repush_from_a_slower_link_reuses_the_fast_levels_blobs() {
    repush_uploads_nothing(&["--compression-level", "3"], FAST, SLOW, "12");
}

#[test]
fn a_repush_from_a_faster_link_reuses_the_strong_levels_blobs() {
    repush_uploads_nothing(&[], SLOW, FAST, "3");
}

#[test]
fn an_explicit_level_is_kept_and_compresses_anew() {
    let sc = Scenario::plain();
    let run = push_with_link(&sc, &["virt-api"], SLOW, &["--tag", "one"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("compression: level 12 (auto"));
    let strong = sc.verify("virt-api", "one");

    // The user asked for level 3: the level-12 digests are not reused.
    let run = push_with_link(
        &sc,
        &["virt-api"],
        SLOW,
        &["--tag", "two", "--compression-level", "3"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("compression: level 3 (as given"));
    assert!(compressed_count(&run.stderr) > 0);
    assert_ne!(sc.verify("virt-api", "two"), strong);
}

/// Checks a blob with a decompressor that is not kvpush's: `gzip -t`, then
/// Python's `gzip` module, which must read every member.
fn other_decompressors_read(blob: &[u8], dir: &std::path::Path) {
    let path = dir.join("blob.gz");
    std::fs::write(&path, blob).unwrap();
    let gzip = std::process::Command::new("gzip")
        .arg("-t")
        .arg(&path)
        .output()
        .expect("gzip on PATH");
    assert!(gzip.status.success(), "gzip -t: {:?}", gzip);
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import gzip,sys; sys.stdout.write(str(len(gzip.open(sys.argv[1]).read())))",
        ])
        .arg(&path)
        .output()
        .expect("python3 on PATH");
    assert!(python.status.success(), "python3 gzip: {:?}", python);
}

#[test]
fn libdeflate_levels_push_multi_member_blobs_that_every_reader_takes_and_auto_reuses() {
    let sc = Scenario::plain();
    let run = push_with_link(
        &sc,
        &["virt-api"],
        FAST,
        &["--tag", "one", "--compression-level", "12"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("compression: level 12 (as given"));
    assert!(compressed_count(&run.stderr) > 0);
    // skopeo copies it; each layer decompresses, every member read, to its
    // diff_id.
    let (digest, blobs) = common::pull_and_verify(
        &sc.registry,
        &sc.reference("virt-api", "one"),
        sc.fx.image("virt-api"),
    );
    let dir = tempfile::tempdir().unwrap();
    for blob in &blobs {
        other_decompressors_read(blob, dir.path());
    }
    // auto on a fast link would pick 3, but finds the level-12 blobs by
    // their diff_id: nothing compressed or uploaded again.
    let uploads = blob_uploads(&sc.registry);
    let run = push_with_link(&sc, &["virt-api"], FAST, &["--tag", "two"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("compression: level 3 (auto"));
    assert_eq!(compressed_count(&run.stderr), 0, "{}", run.stderr);
    assert_eq!(blob_uploads(&sc.registry), uploads, "no blob uploaded");
    assert_eq!(sc.verify("virt-api", "two"), digest);
}
