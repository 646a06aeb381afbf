//! Running kvpush as an unprivileged user (`nobody`) from a test run as
//! root: a directory every user may enter, holding a copy of the kvpush
//! binary, the fixture and a scratch TMPDIR. The clone (and its target/)
//! may lie under a directory only its owner enters (`/root/...`, a
//! `mktemp -d`), so nothing `nobody` runs or reads may stay there. Knows
//! nothing about registries or what the test checks.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The uid and gid tests run kvpush as when they are root.
pub const NOBODY: u32 = 65534;

/// Whether the test runs as root (who reads files whatever their mode).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A mode-0755 directory under a base every user can traverse, removed at
/// the end of the test.
pub struct Reachable {
    dir: tempfile::TempDir,
}

impl Reachable {
    pub fn new() -> Reachable {
        let base = traversable_base().unwrap_or_else(|| {
            panic!("no temp directory every user can enter (TMPDIR, /tmp, /var/tmp, /dev/shm)")
        });
        let dir = tempfile::Builder::new()
            .prefix("kvpush-nobody-")
            .tempdir_in(base)
            .unwrap();
        set_mode(dir.path(), 0o755);
        // kvpush spools to TMPDIR: one that `nobody` may write.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        set_mode(&tmp, 0o1777);
        Reachable { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A scratch TMPDIR every user may write.
    pub fn tmp(&self) -> PathBuf {
        self.path().join("tmp")
    }

    /// A copy of the kvpush binary under test, executable by all.
    pub fn kvpush_binary(&self) -> PathBuf {
        let copy = self.path().join("kvpush");
        if !copy.exists() {
            std::fs::copy(env!("CARGO_BIN_EXE_kvpush"), &copy).unwrap();
            set_mode(&copy, 0o755);
        }
        copy
    }
}

/// Run `cmd` as `nobody`, with `TMPDIR` in `reach`.
pub fn as_nobody(cmd: &mut Command, reach: &Reachable) {
    use std::os::unix::process::CommandExt;
    cmd.env("TMPDIR", reach.tmp()).uid(NOBODY).gid(NOBODY);
}

/// chmod a+rx every directory under `root` (and `root` itself), a+r files
/// but those with mode 000.
pub fn open_dirs_to_all(root: &Path) {
    let meta = std::fs::symlink_metadata(root).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_dir() {
        set_mode(root, mode | 0o755);
        for entry in std::fs::read_dir(root).unwrap() {
            open_dirs_to_all(&entry.unwrap().path());
        }
    } else if mode != 0 {
        set_mode(root, mode | 0o444);
    }
}

/// The first of the usual temp directories that every user can reach:
/// it and each of its ancestors is a directory others may traverse.
fn traversable_base() -> Option<PathBuf> {
    [
        std::env::temp_dir(),
        PathBuf::from("/tmp"),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/dev/shm"),
    ]
    .into_iter()
    .filter_map(|p| p.canonicalize().ok())
    .find(|p| p.ancestors().all(others_may_enter))
}

fn others_may_enter(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
