//! Build script: names the commit kvpush is built from, for `kvpush
//! --version` (`kvpush 0.1.0 (c19fe38)`), as the env var KVPUSH_COMMIT.
//! It owns that one fact and must not generate code or touch the network.
//!
//! The commit comes from `git rev-parse --short HEAD` when the package is
//! the top of a git checkout or worktree (`-dirty` when its sources differ
//! from that commit), else from the env var KVPUSH_GIT_COMMIT (e.g. set by a
//! packager), else it is "unknown commit" (a crates.io tarball).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sources that make up the binary: edits to these make it `-dirty`.
const SOURCES: &[&str] = &["src", "build.rs", "Cargo.toml", "Cargo.lock"];

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    // Naming any file turns off cargo's default of rerunning on every edit
    // in the package (tests and docs included), each a rebuild of the crate.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KVPUSH_GIT_COMMIT");
    let commit = from_git(&dir)
        .or_else(|| {
            std::env::var("KVPUSH_GIT_COMMIT")
                .ok()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown commit".to_string());
    println!("cargo:rustc-env=KVPUSH_COMMIT={commit}");
}

/// `c19fe38` or `c19fe38-dirty`, and the rerun-if-changed lines that keep
/// it right; `None` when `dir` is not the top of a git work tree (a
/// tarball unpacked inside some other repository must not take its commit).
fn from_git(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short", "HEAD"])?;
    // In a worktree `.git` is a file: ask git where HEAD, the branch's ref
    // and packed-refs live. A commit moves the ref (or HEAD when detached);
    // checking out another branch changes HEAD. Not the index: `git add`
    // changes nothing this script says, and each rerun rebuilds the crate.
    // A missing path would rerun this script on every build, so a packed
    // ref is watched through the directory its loose file will appear in.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".into(), "reftable".into()];
    watched.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        let Some(path) = git(dir, &["rev-parse", "--git-path", &name]) else {
            continue;
        };
        let path = dir.join(path);
        let watch = if path.exists() || name.starts_with("refs/") {
            path.ancestors().find(|p| p.exists())
        } else {
            None
        };
        if let Some(watch) = watch {
            println!("cargo:rerun-if-changed={}", watch.display());
        }
    }
    // Edits to the sources make (or unmake) `-dirty`.
    for source in SOURCES.iter().filter(|s| **s != "build.rs") {
        println!("cargo:rerun-if-changed={source}");
    }
    // --no-optional-locks: a build must not rewrite the index.
    let mut status = vec![
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
    ];
    status.extend(SOURCES);
    let dirty = git(dir, &status).is_some();
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

/// The trimmed output of a successful git command, `None` if git is
/// missing, fails or prints nothing.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
