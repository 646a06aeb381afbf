//! Local disk full: the digest cache directory or the temporary directory
//! (where compressed layers are spooled and spilled) on a filesystem with
//! no room left (a 1 MiB tmpfs, filled) gives a fallback or a clear
//! error, never a corrupt cache entry or a wrong image. Needs root for
//! `mount`; CI runs as root, elsewhere each test says it is skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scenario;

/// A 1 MiB tmpfs, filled to the last byte, unmounted on drop.
struct FullDisk {
    dir: tempfile::TempDir,
}

impl FullDisk {
    /// `None` (after saying why) when not root.
    fn mount() -> Option<FullDisk> {
        if unsafe_geteuid() != 0 {
            eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs as root");
        let disk = FullDisk { dir };
        disk.fill();
        Some(disk)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Take every free block left (files can still be created, empty).
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
        let _ = f.write_all(&[0u8; 1]);
    }

    /// Make room again.
    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn unsafe_geteuid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every cache entry under `dir` is whole: a layer entry parses, a blob
/// entry names a repository; no temporary file is left.
fn assert_whole_entries(dir: &Path) -> usize {
    let all = files(dir);
    for path in &all {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(!name.starts_with(".tmp"), "temporary file left: {path:?}");
        if path.components().any(|c| c.as_os_str() == "layers") {
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("partial entry {path:?}: {e}: {text:?}"));
            assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
        } else {
            assert!(
                text.starts_with("kubevirt/"),
                "partial entry {path:?}: {text:?}"
            );
        }
    }
    all.len()
}

#[test]
fn a_full_cache_directory_pushes_without_caching_and_leaves_no_partial_entry() {
    let Some(disk) = FullDisk::mount() else {
        return;
    };
    let sc = Scenario::plain();
    let cache = disk.path().join("kvpush-cache");
    let cache_arg = cache.to_str().unwrap();
    let run = sc.push(&["all"], &["--tag", "v1", "--cache-dir", cache_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("going on without caching")
            && run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("going on without caching").count(),
        1,
        "said once: {}",
        run.stderr
    );
    sc.verify_all("v1");
    let before = assert_whole_entries(&cache);

    // Room again: the cache fills, whole, and the next run uses it.
    disk.free();
    let run = sc.push(&["all"], &["--tag", "v2", "--cache-dir", cache_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("without caching"), "{}", run.stderr);
    let after = assert_whole_entries(&cache);
    assert!(after > before, "{before} -> {after} entries");
    sc.verify_all("v2");
    println!("full cache disk: push exit 0, {before} entries (all whole); with room: {after}");
}

#[test]
fn a_full_temporary_directory_gives_a_clear_error_and_tags_nothing() {
    let Some(disk) = FullDisk::mount() else {
        return;
    };
    let sc = Scenario::plain();
    let mut cmd = sc.push_command(&["all"], &["--tag", "v1", "--no-cache"]);
    cmd.env("TMPDIR", disk.path());
    let run = common::run_command(cmd);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("to the temporary directory")
            && run.stderr.contains("No space left on device")
            && run.stderr.contains("set TMPDIR"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("cannot read layer"), "{}", run.stderr);
    for repo in sc.catalog() {
        assert!(sc.registry.tags(&repo).is_empty(), "{repo} tagged");
    }
    // Only the filler is left on the disk: kvpush removed its spool.
    let left: Vec<_> = files(disk.path());
    assert_eq!(left, [disk.path().join("filler")], "left behind");
}
