//! The state every image of a run shares ([`Run`]): the options, the
//! clients, the permits, the digest cache, the spool, and the maps of
//! once-cells through which concurrent images wait for one another instead
//! of repeating work. Only the state and its smallest helpers live here;
//! what is done with it lives in the sibling files (`prepare`, `placement`,
//! `manifests`, `image`), which this file must not name.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, Semaphore};

use super::layer::Layer;
use crate::cache::Cache;
use crate::interrupt::Stop;
use crate::push::events::Observer;
use crate::push::result::{BlobCounts, Placement};
use crate::registry::client::{Client, ConnectOptions};
use crate::registry::credentials::FoundCredential;
use crate::registry::media::Format;
use crate::registry::retry::RetryPolicy;

/// How to push.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--jobs`: compressions at once stay within it (and within the
    /// cores); network operations get [`Options::requests_in_flight`].
    pub jobs: usize,
    pub insecure: bool,
    /// Extra trusted roots (`--ca-cert`).
    pub ca_certs: Vec<reqwest::Certificate>,
    /// `--compression-level`; `auto` is settled once per run (see `execute`).
    pub compression_level: crate::compress::CompressionLevel,
    /// Credentials from the command line; otherwise looked up per registry.
    pub credential: Option<FoundCredential>,
    pub retry: RetryPolicy,
    /// The persistent digest cache, unless `--no-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Manifest format of the images kvpush writes a manifest for (`--format`).
    pub format: Format,
    /// `PATCH` size once a registry refuses a whole blob in one request.
    pub chunk_size: u64,
}

/// At most this many network operations in flight by default (see
/// [`Options::requests_in_flight`]).
const MAX_REQUESTS_IN_FLIGHT: usize = 32;

impl Options {
    /// Blob requests (HEAD, mount, upload) in flight at once: 4 per job, up
    /// to 32, never fewer than `--jobs`. They wait on round trips and the
    /// link, not on the CPU: on a far link most blobs are small and each
    /// costs a few round trips, so `--jobs` of them (8 on 2 cores) left the
    /// link idle between them, while the compressions stay bound by the
    /// cores.
    pub(crate) fn requests_in_flight(&self) -> usize {
        (self.jobs.saturating_mul(4))
            .min(MAX_REQUESTS_IN_FLIGHT)
            .max(self.jobs)
            .max(1)
    }

    /// How clients reach registries, destinations and origins alike.
    pub(crate) fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            insecure: self.insecure,
            ca_certs: self.ca_certs.clone(),
            retry: self.retry.clone(),
            chunk_size: self.chunk_size,
            warm_connections: 1,
        }
    }
}

/// Once-cells by key: the first caller for a key does the work, later ones
/// wait for its outcome (a failure included) instead of repeating it.
pub(super) type Cells<K, V> = Mutex<HashMap<K, Arc<OnceCell<V>>>>;

/// The cell for `key`, made empty on first ask.
pub(super) fn cell<K: Eq + Hash, V>(cells: &Cells<K, V>, key: K) -> Arc<OnceCell<V>> {
    cells
        .lock()
        .expect("cell map poisoned")
        .entry(key)
        .or_default()
        .clone()
}

/// State shared by every image of a run.
pub(super) struct Run<'o> {
    pub(super) observer: &'o dyn Observer,
    pub(super) stop: &'o Stop,
    pub(super) clients: HashMap<String, Client>,
    /// Clients of origin registries that are no destination, connected on
    /// first need (see `origin`); a host that cannot be reached fails once.
    pub(super) origin_clients: Cells<String, Result<Arc<Client>, String>>,
    pub(super) options: Options,
    /// Network work (HEAD, upload, mount): [`Options::requests_in_flight`] at once.
    pub(super) permits: Semaphore,
    /// Layer compressions at once; each already uses every core.
    pub(super) cpu_permits: Semaphore,
    pub(super) cache: Option<Cache>,
    /// The level layers new to the cache are compressed at this run.
    pub(super) level: crate::compress::LevelChoice,
    /// Cache key of the compressor settings in force (of `level`).
    pub(super) settings: String,
    pub(super) spool_dir: tempfile::TempDir,
    pub(super) spool_seq: AtomicU64,
    /// diff_id -> the layer as the push knows it.
    pub(super) layers: Cells<String, Result<Arc<Layer>, String>>,
    /// diff_ids whose digest-cache entry turned out wrong: put right in
    /// `layers` (and the cache), for one more try of the images that had
    /// them.
    pub(super) repaired: Mutex<HashSet<String>>,
    /// (host, blob key) -> the home repository of the blob (see `placement::homes`).
    pub(super) homes: HashMap<(String, String), Home>,
    /// diff_id -> how many images of the run have the layer.
    pub(super) layer_users: HashMap<String, usize>,
    /// (host, repo, digest) -> what placing it there took.
    pub(super) placed: Cells<(String, String, String), Result<Placement, String>>,
    /// Per image: its blobs as they land, so that an interrupted run can
    /// still say what went up.
    pub(super) counts: &'o [Mutex<BlobCounts>],
}

/// The repository a blob is uploaded to before being mounted into the
/// others, and the image whose counts its placement there goes to.
pub(super) struct Home {
    pub(super) repo: String,
    pub(super) image: usize,
}

impl Run<'_> {
    /// Note where a blob now is, for mounts in later runs.
    pub(super) fn remember(&self, host: &str, digest: &str, repo: &str) {
        if let Some(cache) = &self.cache {
            cache.put_blob_repo(host, digest, repo);
        }
    }
}
