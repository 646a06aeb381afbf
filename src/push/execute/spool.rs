//! The run's spool directory (`$TMPDIR/kvpush-spool-XXXXXX`: compressed
//! layers and spill files while they are uploaded), and the removal of
//! those a killed run left. A run holds an exclusive `flock` on the
//! directory's `.lock` file for its whole life, so a directory whose lock
//! can be taken belongs to a process that is gone, whatever its pid
//! namespace; only directories of that exact name pattern, owned by this
//! user, holding a `.lock`, are ever removed. Knows nothing of what is
//! written inside.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const PREFIX: &str = "kvpush-spool-";
const LOCK: &str = ".lock";

/// A new spool directory and the lock that marks it in use; keep the lock
/// until the directory is removed.
pub(super) fn create() -> Result<(tempfile::TempDir, File), String> {
    let setup = |e: std::io::Error| {
        format!("cannot create a temporary directory for compressed layers (set TMPDIR?): {e}")
    };
    let dir = tempfile::Builder::new()
        .prefix(PREFIX)
        .tempdir()
        .map_err(setup)?;
    // Locked under another name, then renamed: a sweeper only looks at
    // `.lock`, which is therefore never seen unlocked while this runs.
    let staging = dir.path().join(".lock-new");
    let lock = File::create(&staging).map_err(setup)?;
    if try_lock(&lock) {
        std::fs::rename(&staging, dir.path().join(LOCK)).map_err(setup)?;
    } else {
        // A filesystem without flock: the directory is never swept, as
        // nothing could tell whether its run is alive.
        tracing::debug!(
            "cannot lock {}: {}",
            staging.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok((dir, lock))
}

/// Remove the spool directories of runs that were killed (their lock is
/// free) in the temporary directory; returns how many. Errors are only
/// logged: what is left costs disk space, not correctness.
pub(super) fn sweep_stale() -> usize {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_spool_name(name) {
            continue;
        }
        let path = entry.path();
        // Not followed: a symlink or another user's directory is left be.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        if remove_if_abandoned(&path) {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            "removed {removed} temporary director{} of killed kvpush runs from {}",
            if removed == 1 { "y" } else { "ies" },
            tmp.display()
        );
    }
    removed
}

/// `kvpush-spool-` and the six or more letters and digits tempfile adds.
fn is_spool_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.len() >= 6 && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Remove `dir` when its `.lock` is there and free; a directory without
/// one is being set up (or predates the lock) and is left alone.
fn remove_if_abandoned(dir: &Path) -> bool {
    let Ok(lock) = File::open(dir.join(LOCK)) else {
        return false;
    };
    if !try_lock(&lock) {
        return false;
    }
    // Held while removing, so a second sweeper leaves it to this one.
    match std::fs::remove_dir_all(dir) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("cannot remove stale {}: {e}", dir.display());
            false
        }
    }
}

/// An exclusive `flock`, not waiting; released when the file is closed
/// (also when its process is killed).
fn try_lock(file: &File) -> bool {
    // SAFETY: a valid open descriptor; flock only reads its arguments.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spool_names_are_recognised() {
        assert!(is_spool_name("kvpush-spool-a1B2c3"));
        assert!(!is_spool_name("kvpush-spool-"));
        assert!(!is_spool_name("kvpush-registry-a1B2c3"));
        assert!(!is_spool_name("kvpush-a1B2c3"));
        assert!(!is_spool_name("kvpush-spool-../x"));
    }

    #[test]
    fn a_locked_directory_is_kept_and_a_free_one_removed() {
        let base = tempfile::tempdir().unwrap();
        let live = base.path().join("kvpush-spool-live00");
        let dead = base.path().join("kvpush-spool-dead00");
        let unset = base.path().join("kvpush-spool-unset0");
        for d in [&live, &dead, &unset] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("layer-0.tar.gz"), b"x").unwrap();
        }
        let held = File::create(live.join(LOCK)).unwrap();
        assert!(try_lock(&held));
        drop(File::create(dead.join(LOCK)).unwrap());
        assert!(!remove_if_abandoned(&live), "its owner holds the lock");
        assert!(remove_if_abandoned(&dead), "nobody holds its lock");
        assert!(!remove_if_abandoned(&unset), "no lock yet: being set up");
        assert!(live.exists() && !dead.exists() && unset.exists());
    }
}
