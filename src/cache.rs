//! The persistent digest cache: what kvpush learned about layers and blobs
//! in earlier runs, so that a re-push reads no layer data when the registry
//! already has the blobs.
//!
//! - `layers/<settings>/<diff_id hex>`: the compressed digest and size that
//!   a layer (known by its uncompressed digest) gets under the compressor
//!   settings `<settings>` (format id, level and, for igzip, the CPU class:
//!   see `compress::settings_id`); under `--compression-level auto` the
//!   push also looks a layer up under the other levels' settings (see
//!   `push::execute::prepare`), so the key's level never forces a layer to
//!   be compressed again;
//! - `blobs/<host>/<digest hex>`: a repository of that registry known to
//!   hold the blob, the source of a cross-repository mount.
//!
//! One small file per entry, written to a temporary name and renamed into
//! place, so concurrent runs never see half an entry; an entry that does not
//! parse is ignored (and rewritten by the next run that learns it). A cache
//! that cannot be written (a full disk, no permission) costs only speed:
//! the first failure is said once, the push goes on without caching, and
//! a write cut short leaves only its temporary file, which is removed; one
//! a killed run left (`.tmp` and six characters, tempfile's default name)
//! is removed by a later run once it is an hour old, far beyond the
//! microseconds a live write keeps it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blob::is_sha256_digest;

/// Where the compressed form of a layer is known to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub digest: String,
    pub size: u64,
}

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

/// Set once a cache write failed and the warning was given (once a process:
/// a run may open the cache more than once).
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `$XDG_CACHE_HOME/kvpush`, else `$HOME/.cache/kvpush`.
pub fn default_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let base = xdg.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kvpush"))
}

/// Age past which a temporary entry file is a killed run's.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// tempfile's default name (`.tmp` and six letters or digits), as
/// [`Cache::write`] makes them; entries themselves are hex digests.
fn is_temp_name(name: &str) -> bool {
    name.strip_prefix(".tmp")
        .is_some_and(|rest| rest.len() == 6 && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn hex_of(digest: &str) -> Option<&str> {
    is_sha256_digest(digest).then(|| &digest[7..])
}

/// A registry host as a directory name (`localhost:5000` → `localhost_5000`).
fn host_dir(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Cache {
    pub fn new(root: PathBuf) -> Cache {
        Cache { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn layer_path(&self, settings: &str, diff_id: &str) -> Option<PathBuf> {
        Some(
            self.root
                .join("layers")
                .join(settings)
                .join(hex_of(diff_id)?),
        )
    }

    fn blob_path(&self, host: &str, digest: &str) -> Option<PathBuf> {
        Some(
            self.root
                .join("blobs")
                .join(host_dir(host))
                .join(hex_of(digest)?),
        )
    }

    /// The compressed digest and size of `diff_id` under `settings`, if known.
    pub fn layer(&self, settings: &str, diff_id: &str) -> Option<CachedLayer> {
        let bytes = std::fs::read(self.layer_path(settings, diff_id)?).ok()?;
        let entry: CachedLayer = serde_json::from_slice(&bytes).ok()?;
        is_sha256_digest(&entry.digest).then_some(entry)
    }

    pub fn put_layer(&self, settings: &str, diff_id: &str, entry: &CachedLayer) {
        if let Some(path) = self.layer_path(settings, diff_id) {
            let bytes = serde_json::to_vec(entry).expect("cache entries serialise");
            self.write(&path, &bytes);
        }
    }

    /// Forget a layer entry that proved wrong.
    pub fn remove_layer(&self, settings: &str, diff_id: &str) {
        if let Some(path) = self.layer_path(settings, diff_id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// A repository of `host` known to hold `digest`.
    pub fn blob_repo(&self, host: &str, digest: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.blob_path(host, digest)?).ok()?;
        let repo = text.trim();
        // Repository grammar: lowercase components that start and end with
        // a letter or digit, so nothing like `../x` comes back.
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = repo.split('/').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter().all(|&x| alnum(x) || b"._-".contains(&x))
        });
        valid.then(|| repo.to_string())
    }

    pub fn put_blob_repo(&self, host: &str, digest: &str, repo: &str) {
        if let Some(path) = self.blob_path(host, digest) {
            self.write(&path, repo.as_bytes());
        }
    }

    /// Remove the temporary files of entry writes a killed run left in the
    /// entry directories, once older than [`STALE_TEMP`]; returns how many.
    pub fn sweep_stale_temps(&self) -> usize {
        let mut removed = 0;
        for kind in ["layers", "blobs"] {
            let Ok(dirs) = std::fs::read_dir(self.root.join(kind)) else {
                continue;
            };
            for dir in dirs.flatten() {
                let Ok(entries) = std::fs::read_dir(dir.path()) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let stale = name.to_str().is_some_and(is_temp_name)
                        && entry.metadata().is_ok_and(|m| {
                            m.is_file()
                                && m.modified()
                                    .ok()
                                    .and_then(|t| t.elapsed().ok())
                                    .is_some_and(|age| age > STALE_TEMP)
                        });
                    if stale && std::fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                "removed {removed} temporary files of killed runs from the digest cache {}",
                self.root.display()
            );
        }
        removed
    }

    /// Write atomically; a cache that cannot be written only costs speed.
    fn write(&self, path: &Path, bytes: &[u8]) {
        let result = (|| -> std::io::Result<()> {
            let dir = path.parent().expect("cache paths have a parent");
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::debug!("cannot write cache entry {}: {e}", path.display());
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "cannot write the digest cache in {} ({e}); going on without caching: the next run reads and compresses the layers again",
                    self.root.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn layers_round_trip_per_settings_and_corrupt_entries_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        let entry = CachedLayer {
            digest: digest('b'),
            size: 42,
        };
        assert_eq!(cache.layer("s1", &digest('a')), None);
        cache.put_layer("s1", &digest('a'), &entry);
        assert_eq!(cache.layer("s1", &digest('a')), Some(entry));
        assert_eq!(
            cache.layer("s2", &digest('a')),
            None,
            "other settings, other entry"
        );

        let path = cache.layer_path("s1", &digest('a')).unwrap();
        std::fs::write(&path, b"{\"digest\": \"sha256:zz").unwrap();
        assert_eq!(cache.layer("s1", &digest('a')), None);
        std::fs::write(&path, br#"{"digest":"md5:00","size":1}"#).unwrap();
        assert_eq!(cache.layer("s1", &digest('a')), None);
        cache.remove_layer("s1", &digest('a'));
        assert!(!path.exists());
        assert_eq!(cache.layer("s1", "not-a-digest"), None);
    }

    #[test]
    fn only_old_temporary_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        cache.put_layer(
            "s1",
            &digest('a'),
            &CachedLayer {
                digest: digest('b'),
                size: 1,
            },
        );
        let entries = dir.path().join("layers/s1");
        let (old, new) = (entries.join(".tmpAbC123"), entries.join(".tmpXyZ789"));
        std::fs::write(&old, b"{\"dig").unwrap();
        std::fs::write(&new, b"{\"dig").unwrap();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86400);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        assert_eq!(cache.sweep_stale_temps(), 1);
        assert!(!old.exists() && new.exists(), "a live write's file is kept");
        assert!(
            cache.layer("s1", &digest('a')).is_some(),
            "entries are kept"
        );
        assert!(!is_temp_name(&"a".repeat(64)) && !is_temp_name(".tmp"));
    }

    #[test]
    fn blob_locations_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        cache.put_blob_repo("localhost:5000", &digest('c'), "kubevirt/virt-api");
        assert_eq!(
            cache.blob_repo("localhost:5000", &digest('c')).as_deref(),
            Some("kubevirt/virt-api")
        );
        assert_eq!(cache.blob_repo("quay.io", &digest('c')), None);
        std::fs::write(
            cache.blob_path("localhost:5000", &digest('c')).unwrap(),
            "../../etc",
        )
        .unwrap();
        assert_eq!(cache.blob_repo("localhost:5000", &digest('c')), None);
    }

    #[test]
    fn concurrent_writers_leave_whole_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let cache = &cache;
                s.spawn(move || {
                    for _ in 0..50 {
                        cache.put_layer(
                            "s",
                            &digest('d'),
                            &CachedLayer {
                                digest: digest('e'),
                                size: i,
                            },
                        );
                        let got = cache
                            .layer("s", &digest('d'))
                            .expect("a whole entry at all times");
                        assert_eq!(got.digest, digest('e'));
                    }
                });
            }
        });
    }
}
