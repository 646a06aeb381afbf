//! Concurrent execution of a [`Plan`]: all images progress at once, the
//! actual work (compressing, uploading) bounded by one `--jobs` semaphore.
//!
//! Sharing rules, each a map of once-cells so that concurrent images wait
//! for one another instead of repeating work; a failure is kept like a
//! success, so that no other image repeats it:
//! - a layer is prepared (hashed, compressed) once per diff_id per run;
//! - a blob is placed once per (host, repository);
//! - a blob is uploaded to its home repository (the first one in plan order
//!   that needs it, whichever image gets there first), and mounted from
//!   there into the others (falling back to an upload if the mount is
//!   refused). A fixed home means a re-run finds there what an interrupted
//!   run uploaded; a home new to the run mounts from where the digest cache
//!   says an earlier run left the blob.
//!
//! An image's blobs and layers are awaited with `join_all`, never
//! `try_join_all`: work another image may share is never dropped halfway
//! because a sibling failed. Permits are taken only around leaf work, never
//! while waiting on a cell, so waiting can never starve the workers.
//! A signal ([`Stop`]) drops everything in flight at once.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use tokio::sync::{OnceCell, Semaphore};

use super::events::{Observer, Stage};
use super::plan::{Destination, Plan, PlannedImage};
use crate::blob::{prepare_layer, BlobBody, FileRange, GrowingBlob, PreparedLayer};
use crate::cache::{Cache, CachedLayer};
use crate::interrupt::Stop;
use crate::manifest::{image_manifest, BlobRef};
use crate::registry::client::{Client, ConnectOptions, MountOutcome};
use crate::registry::credentials::FoundCredential;
use crate::registry::media::Format;
use crate::registry::retry::RetryPolicy;
use crate::source::oci_layout::LayoutRoot;
use crate::source::{Artifact, Image, Layer as SourceLayer};
use crate::targets::Target;

/// How to push.
#[derive(Clone, Debug)]
pub struct Options {
    /// Most blob operations (compressions, uploads) running at once.
    pub jobs: usize,
    pub insecure: bool,
    /// Extra trusted roots (`--ca-cert`).
    pub ca_certs: Vec<reqwest::Certificate>,
    pub compression_level: u32,
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

/// What happened to one blob in one repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Uploaded this many bytes, after compressing the layer first if true.
    Uploaded(u64, bool),
    Mounted,
    Existed,
}

/// Per-image blob statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobCounts {
    pub uploaded: u64,
    pub bytes_uploaded: u64,
    pub mounted: u64,
    pub existing: u64,
    /// Layers compressed for this image: not found in the run or the cache,
    /// or found in the cache but missing from the registry.
    pub compressed: u64,
}

impl BlobCounts {
    fn add(&mut self, p: Placement) {
        match p {
            Placement::Uploaded(bytes, compressed) => {
                self.uploaded += 1;
                self.bytes_uploaded += bytes;
                self.compressed += u64::from(compressed);
            }
            Placement::Mounted => self.mounted += 1,
            Placement::Existed => self.existing += 1,
        }
    }

    pub fn merge(&mut self, other: &BlobCounts) {
        self.uploaded += other.uploaded;
        self.bytes_uploaded += other.bytes_uploaded;
        self.mounted += other.mounted;
        self.existing += other.existing;
        self.compressed += other.compressed;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The manifest was written and every tag points at it.
    Pushed,
    /// Every tag already pointed at this exact manifest; nothing written.
    Unchanged,
    Failed(String),
    /// The run was interrupted before this image was done: its manifest
    /// was not (or not under every tag) written.
    Interrupted,
}

impl Status {
    /// The manifest is in the registry under every tag.
    pub fn landed(&self) -> bool {
        matches!(self, Status::Pushed | Status::Unchanged)
    }
}

/// The outcome for one image.
#[derive(Clone, Debug)]
pub struct ImageResult {
    pub target: Target,
    pub name: String,
    pub references: Vec<String>,
    /// Manifest digest, known once the image was read and its layers prepared.
    pub digest: Option<String>,
    /// Bytes of the image's config and (compressed) layers, once known.
    pub size: Option<u64>,
    pub status: Status,
    pub blobs: BlobCounts,
    /// Digests of the layers pushed as Bazel compressed them (push-target
    /// parts, OCI layouts).
    pub prebuilt_layers: Vec<String>,
    /// A manifest list: the platforms it lists (`linux/arm64`); empty for
    /// an image.
    pub platforms: Vec<String>,
}

impl ImageResult {
    /// Nothing known yet; `Pushed` until something says otherwise.
    pub fn new(target: Target, name: &str, references: Vec<String>) -> ImageResult {
        ImageResult {
            target,
            name: name.to_string(),
            references,
            digest: None,
            size: None,
            status: Status::Pushed,
            blobs: BlobCounts::default(),
            prebuilt_layers: Vec::new(),
            platforms: Vec::new(),
        }
    }
}

/// The results of a run's images (or lists) as they finish, each told to
/// the observer.
pub(crate) struct Finished<'o> {
    observer: &'o dyn Observer,
    slots: Mutex<Vec<Option<ImageResult>>>,
}

impl<'o> Finished<'o> {
    pub(crate) fn new(observer: &'o dyn Observer, count: usize) -> Finished<'o> {
        Finished {
            observer,
            slots: Mutex::new(vec![None; count]),
        }
    }

    pub(crate) fn record(&self, id: usize, result: ImageResult) {
        self.observer.image_done(id, &result);
        self.slots.lock().expect("results poisoned")[id] = Some(result);
    }

    /// Every result, in id order; one that never finished (the run was
    /// interrupted) is `unfinished(id)` with [`Status::Interrupted`], and
    /// told to the observer too.
    pub(crate) fn into_results(
        self,
        unfinished: impl Fn(usize) -> ImageResult,
    ) -> Vec<ImageResult> {
        let slots = self.slots.into_inner().expect("results poisoned");
        slots
            .into_iter()
            .enumerate()
            .map(|(id, slot)| {
                slot.unwrap_or_else(|| {
                    let result = ImageResult {
                        status: Status::Interrupted,
                        ..unfinished(id)
                    };
                    self.observer.image_done(id, &result);
                    result
                })
            })
            .collect()
    }
}

type Cells<K, V> = Mutex<HashMap<K, Arc<OnceCell<V>>>>;

fn cell<K: Eq + Hash, V>(cells: &Cells<K, V>, key: K) -> Arc<OnceCell<V>> {
    cells
        .lock()
        .expect("cell map poisoned")
        .entry(key)
        .or_default()
        .clone()
}

/// State shared by every image of a run.
struct Run<'o> {
    observer: &'o dyn Observer,
    stop: &'o Stop,
    clients: HashMap<String, Client>,
    options: Options,
    /// Network work (HEAD, upload, mount): `--jobs` at once.
    permits: Semaphore,
    /// Layer compressions at once; each already uses every core.
    cpu_permits: Semaphore,
    cache: Option<Cache>,
    /// Cache key of the compressor settings in force.
    settings: String,
    spool_dir: tempfile::TempDir,
    spool_seq: AtomicU64,
    /// diff_id -> the layer as the push knows it.
    layers: Cells<String, Result<Arc<Layer>, String>>,
    /// diff_ids whose digest-cache entry turned out wrong: put right in
    /// `layers` (and the cache), for one more try of the images that had
    /// them.
    repaired: Mutex<HashSet<String>>,
    /// (host, blob key) -> the home repository of the blob (see [`homes`]).
    homes: HashMap<(String, String), Home>,
    /// diff_id -> how many images of the run have the layer.
    layer_users: HashMap<String, usize>,
    /// (host, repo, digest) -> what placing it there took.
    placed: Cells<(String, String, String), Result<Placement, String>>,
    /// Per image: its blobs as they land, so that an interrupted run can
    /// still say what went up.
    counts: &'o [Mutex<BlobCounts>],
}

/// Where a layer goes up while it is compressed (see [`Run::stream_target`]).
struct StreamTo<'a> {
    /// The image whose counts the upload goes to.
    image: usize,
    client: &'a Client,
    host: &'a str,
    repo: &'a str,
    /// The image's config: if the repository has it, nothing is streamed.
    config: String,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

/// The repository a blob is uploaded to before being mounted into the
/// others, and the image whose counts its placement there goes to.
struct Home {
    repo: String,
    image: usize,
}

/// A layer's registry identity and where its gzip bytes are, or, when its
/// digest came from the cache, how to make them on first need.
struct Layer {
    diff_id: String,
    digest: String,
    size: u64,
    /// The layer inside its tarball, for (re)compression and messages.
    src: FileRange,
    index: usize,
    body: OnceCell<Result<BlobBody, String>>,
    /// The digest came from the cache (else from compressing it this run).
    digest_from_cache: bool,
    /// A layer Bazel gzipped, whose digest its digest file claims: hashed
    /// once, before its first upload (a re-push that uploads nothing reads
    /// nothing).
    claimed: Option<SourceLayer>,
    verified: OnceCell<Result<(), String>>,
}

impl Layer {
    /// The layer at `src` (layer `index` of its image), as kvpush
    /// compressed it this run.
    fn compressed(diff_id: String, src: FileRange, index: usize, prepared: PreparedLayer) -> Layer {
        Layer {
            diff_id,
            digest: prepared.digest,
            size: prepared.size,
            src,
            index,
            // A streamed layer's bytes were not kept: made again on first
            // need.
            body: match prepared.body {
                Some(body) => OnceCell::new_with(Some(Ok(body))),
                None => OnceCell::new(),
            },
            digest_from_cache: false,
            claimed: None,
            verified: OnceCell::new(),
        }
    }
}

/// Where a blob's bytes come from.
enum Source {
    Ready(FileRange),
    Layer(Arc<Layer>),
}

/// A blob to place in a repository.
struct Blob {
    /// What the blob is known by before it is prepared, for [`homes`]: a
    /// layer's diff_id, else its digest.
    key: String,
    digest: String,
    size: u64,
    source: Source,
}

/// A layer Bazel already gzipped: its digest and diff_id come from Bazel's
/// files, its bytes are pushed as they are.
fn prebuilt(image: &Image, index: usize) -> Result<Arc<Layer>, String> {
    let claimed = &image.layers[index];
    let SourceLayer::Compressed {
        range,
        digest,
        diff_id,
    } = claimed
    else {
        unreachable!("only called for compressed layers");
    };
    if *diff_id != image.diff_ids[index] {
        return Err(format!(
            "layer {} of {}: its diff_id file says {diff_id} but the image config's diff_ids[{index}] says {}: the push target's parts are inconsistent, rebuild them with bazel",
            index + 1,
            image.source.display(),
            image.diff_ids[index]
        ));
    }
    Ok(Arc::new(Layer {
        diff_id: diff_id.clone(),
        digest: digest.clone(),
        size: range.len,
        src: range.clone(),
        index,
        body: OnceCell::new_with(Some(Ok(BlobBody::Range(range.clone())))),
        digest_from_cache: false,
        claimed: Some(claimed.clone()),
        verified: OnceCell::new(),
    }))
}

impl Run<'_> {
    /// Compress (or hash) a layer on the blocking pool and check its diff_id.
    /// With `learn`, its digest is new to the run: it goes into the digest
    /// cache here, before a streamed upload is completed, so that a run
    /// killed once that upload landed leaves a re-run the digest to find
    /// the blob by. With `stream`, the gzip bytes are uploaded there as
    /// they are made, through memory, not the spool, and, once that upload
    /// lands, the blob counts as placed there; else it is compressed again
    /// when it is uploaded the ordinary way (rarely: a failed stream).
    async fn compress_layer(
        &self,
        src: &FileRange,
        declared: &str,
        index: usize,
        learn: bool,
        stream: Option<StreamTo<'_>>,
    ) -> Result<PreparedLayer, String> {
        let _permit = self
            .cpu_permits
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let spool = self.spool_dir.path().join(format!(
            "layer-{}.tar.gz",
            self.spool_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let level = self.options.compression_level;
        let src_for_task = src.clone();
        let started = std::time::Instant::now();
        let growing = stream.as_ref().map(|_| GrowingBlob::new(spool.clone()));
        let for_task = growing.clone();
        let task = tokio::task::spawn_blocking(move || {
            prepare_layer(&src_for_task, &spool, level, for_task.as_deref())
        });
        let (prepared, streamed) = match (&stream, &growing) {
            (Some(to), Some(growing)) => {
                let upload = async {
                    // Asked while the compression runs, not before it.
                    let sent = match to.client.blob_exists(to.repo, &to.config).await {
                        Ok(false) => to.client.stream_upload(to.repo, growing).await.map(Some),
                        Ok(true) => Ok(None),
                        Err(e) => Err(e),
                    };
                    if !matches!(sent, Ok(Some(_))) {
                        // Nobody reads the rest: the compression goes on
                        // for the digests only.
                        growing.abandon();
                    }
                    sent
                };
                let (prepared, streamed) = tokio::join!(task, upload);
                (prepared, streamed.transpose())
            }
            _ => (task.await, None),
        };
        let mut prepared = prepared
            .map_err(|e| format!("layer task failed: {e}"))?
            .map_err(|e| {
                format!(
                    "cannot read layer {} of {}: {e}",
                    index + 1,
                    src.path.display()
                )
            })?;
        if let (Some(growing), false) = (&growing, matches!(streamed, Some(Ok(_)))) {
            // Not streamed after all (the registry has the image's config,
            // or the upload failed): if no stream read any of it, keep
            // the whole blob as the spool file.
            let growing = Arc::clone(growing);
            if let Ok(Ok(Some(path))) = tokio::task::spawn_blocking(move || growing.keep()).await {
                prepared.body = prepared.body.or(Some(BlobBody::Spool(path)));
            }
        }
        tracing::debug!(
            "layer {} of {}: {} bytes -> {} in {} ms",
            index + 1,
            src.path.display(),
            src.len,
            prepared.size,
            started.elapsed().as_millis()
        );
        if prepared.diff_id != declared {
            return Err(format!(
                "layer {} of {} decompresses to {} but the image config's diff_ids[{index}] says {declared}: the tarball is corrupt, rebuild it with bazel",
                index + 1,
                src.path.display(),
                prepared.diff_id
            ));
        }
        if let (true, Some(cache), true) = (learn, &self.cache, prepared.compressed_here()) {
            let entry = CachedLayer {
                digest: prepared.digest.clone(),
                size: prepared.size,
            };
            cache.put_layer(&self.settings, declared, &entry);
        }
        match (stream, streamed) {
            (Some(to), Some(Ok(location))) => {
                match to
                    .client
                    .complete_upload(location, to.repo, &prepared.digest)
                    .await
                {
                    Ok(()) => self.streamed(&to, &prepared),
                    Err(e) => {
                        tracing::debug!(
                            "streamed upload not completed ({e}); compressing it again to upload it"
                        )
                    }
                }
            }
            (_, Some(Err(e))) => {
                tracing::debug!("streamed upload failed ({e}); compressing it again to upload it")
            }
            _ => {}
        }
        Ok(prepared)
    }

    /// Where to upload a layer while compressing it, if anywhere: only a
    /// layer no other image of the run has, going to this image's first
    /// repository (its home there), and only if that repository lacks the
    /// image's config (asked while compressing), i.e. the image was never
    /// pushed there. A layer whose digest kvpush does not know may well be
    /// in the registry already (a CI runner starts with an empty cache),
    /// and uploading it blind would cost its bytes; a new build's own layer
    /// is the case this is for; and only if the image goes to no other
    /// registry. Holds one network permit, if one is free.
    fn stream_target<'p>(
        &'p self,
        id: usize,
        planned: &'p PlannedImage,
        image: &Image,
        diff_id: &str,
    ) -> Option<StreamTo<'p>> {
        let dest = planned.destinations.first()?;
        let home = self.homes.get(&(dest.host.clone(), diff_id.to_string()))?;
        let client = &self.clients[&dest.host];
        // A streamed layer's bytes are not kept: an image going to another
        // registry too would have to compress it twice.
        if self.layer_users.get(diff_id) != Some(&1)
            || home.image != id
            || home.repo != dest.repo
            || !client.takes_whole_bodies()
            || planned.destinations.iter().any(|d| d.host != dest.host)
        {
            return None;
        }
        let permit = self.permits.try_acquire().ok()?;
        Some(StreamTo {
            image: id,
            client,
            host: &dest.host,
            repo: &dest.repo,
            config: image.config_digest.clone(),
            _permit: permit,
        })
    }

    /// Learn a layer's blob digest once per diff_id: from the cache without
    /// reading it, else by compressing it now. Returns whether this call
    /// compressed it.
    async fn prepare(
        &self,
        id: usize,
        planned: &PlannedImage,
        image: &Image,
        index: usize,
    ) -> Result<(Arc<Layer>, bool), String> {
        let declared = image.diff_ids[index].clone();
        let src = match &image.layers[index] {
            SourceLayer::Raw(range) => range.clone(),
            // Not shared through the diff_id cell: the same diff_id
            // compressed by kvpush would have another digest, and the
            // manifest must keep Bazel's.
            SourceLayer::Compressed { .. } => return prebuilt(image, index).map(|l| (l, false)),
        };
        let mut compressed = false;
        let layer = cell(&self.layers, declared.clone())
            .get_or_init(|| async {
                let cached = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.layer(&self.settings, &declared));
                if let Some(hit) = cached {
                    return Ok(Arc::new(Layer {
                        diff_id: declared,
                        digest: hit.digest,
                        size: hit.size,
                        src,
                        index,
                        body: OnceCell::new(),
                        digest_from_cache: true,
                        claimed: None,
                        verified: OnceCell::new(),
                    }));
                }
                let stream = self.stream_target(id, planned, image, &declared);
                let prepared = self
                    .compress_layer(&src, &declared, index, true, stream)
                    .await?;
                compressed = prepared.compressed_here();
                Ok(Arc::new(Layer::compressed(declared, src, index, prepared)))
            })
            .await
            .clone()?;
        Ok((layer, compressed))
    }

    /// The bytes of a blob, compressing a cached layer now if need be;
    /// true when this call did the compressing.
    async fn body(&self, blob: &Blob) -> Result<(FileRange, bool), String> {
        let layer = match &blob.source {
            Source::Ready(range) => return Ok((range.clone(), false)),
            Source::Layer(layer) => layer,
        };
        if let Some(claimed) = &layer.claimed {
            layer
                .verified
                .get_or_init(|| async {
                    let claimed = claimed.clone();
                    tokio::task::spawn_blocking(move || claimed.verify())
                        .await
                        .map_err(|e| format!("layer check failed: {e}"))?
                })
                .await
                .clone()?;
        }
        let mut compressed = false;
        let body = layer
            .body
            .get_or_init(|| async {
                compressed = true;
                let prepared = self
                    .compress_layer(&layer.src, &layer.diff_id, layer.index, false, None)
                    .await?;
                let what = format!("layer {} of {}", layer.index + 1, layer.src.path.display());
                if prepared.digest != layer.digest || prepared.size != layer.size {
                    let (was, now) = (&layer.digest, &prepared.digest);
                    if !layer.digest_from_cache {
                        return Err(format!(
                            "{what} compressed to {was} earlier in this run and to {now} now: the compression is not deterministic here, please report it to kvpush"
                        ));
                    }
                    let mismatch = format!(
                        "the digest cache says {what} compresses to {was} but it compresses to {now}; the entry was put right, run kvpush again (or pass --no-cache)"
                    );
                    self.repair(layer, prepared);
                    return Err(mismatch);
                }
                prepared
                    .body
                    .ok_or_else(|| format!("{what} was compressed for an upload only"))
            })
            .await
            .as_ref()
            .map_err(Clone::clone)?;
        Ok((body.range(layer.size), compressed))
    }

    /// `layer`'s digest came from a wrong cache entry and compresses to
    /// `prepared`: correct the entry, and give the images that fail on it
    /// the layer as it is (its body included: no compressing it again).
    fn repair(&self, layer: &Layer, prepared: PreparedLayer) {
        tracing::warn!(
            "the digest cache said layer {} of {} compresses to {}, but it compresses to {}: entry corrected, pushing the layer's own digest",
            layer.index + 1,
            layer.src.path.display(),
            layer.digest,
            prepared.digest
        );
        if let Some(cache) = &self.cache {
            let entry = CachedLayer {
                digest: prepared.digest.clone(),
                size: prepared.size,
            };
            cache.put_layer(&self.settings, &layer.diff_id, &entry);
        }
        let corrected = Arc::new(Layer::compressed(
            layer.diff_id.clone(),
            layer.src.clone(),
            layer.index,
            prepared,
        ));
        self.layers.lock().expect("cell map poisoned").insert(
            layer.diff_id.clone(),
            Arc::new(OnceCell::new_with(Some(Ok(corrected)))),
        );
        self.repaired
            .lock()
            .expect("repaired poisoned")
            .insert(layer.diff_id.clone());
    }

    /// Whether image `planned` has a layer [`Run::repair`] put right.
    fn has_repaired_layer(&self, planned: &PlannedImage) -> bool {
        let Ok(Artifact::Image(image)) = &planned.image else {
            return false;
        };
        let repaired = self.repaired.lock().expect("repaired poisoned");
        image.diff_ids.iter().any(|d| repaired.contains(d))
    }

    /// Record a blob uploaded while it was made as placed where `to` says,
    /// for `to.image`, so that nobody asks for it again.
    fn streamed(&self, to: &StreamTo<'_>, prepared: &PreparedLayer) {
        let placement = Placement::Uploaded(prepared.size, false);
        self.remember(to.host, &prepared.digest, to.repo);
        let key = (
            to.host.to_string(),
            to.repo.to_string(),
            prepared.digest.clone(),
        );
        if cell(&self.placed, key).set(Ok(placement)).is_ok() {
            self.counts[to.image]
                .lock()
                .expect("counts poisoned")
                .add(placement);
        }
    }

    /// Note where a blob now is, for mounts in later runs.
    fn remember(&self, host: &str, digest: &str, repo: &str) {
        if let Some(cache) = &self.cache {
            cache.put_blob_repo(host, digest, repo);
        }
    }

    /// Make `blob` present in `dest`'s repository for image `id`: first in
    /// its home repository, then mounted from there. Returns what placing
    /// it in `dest` took, `Existed` when another image of the run did it.
    async fn place(&self, id: usize, dest: &Destination, blob: &Blob) -> Result<Placement, String> {
        let home = self.homes.get(&(dest.host.clone(), blob.key.clone()));
        let from = match home {
            Some(home) if home.repo != dest.repo => {
                self.place_once(home.image, &dest.host, &home.repo, None, blob)
                    .await?;
                Some(home.repo.as_str())
            }
            _ => None,
        };
        self.place_once(id, &dest.host, &dest.repo, from, blob)
            .await
    }

    /// Place `blob` in `repo` once per run (see [`Run::place_in`]), mounting
    /// it from `from`, else from where the digest cache last saw it; the
    /// placement counts for image `owner`. `Existed` when another call did
    /// it.
    async fn place_once(
        &self,
        owner: usize,
        host: &str,
        repo: &str,
        from: Option<&str>,
        blob: &Blob,
    ) -> Result<Placement, String> {
        let key = (host.to_string(), repo.to_string(), blob.digest.clone());
        let mut ours = false;
        let placement = cell(&self.placed, key)
            .get_or_init(|| async {
                ours = true;
                let cached = match from {
                    Some(_) => None,
                    None => self
                        .cache
                        .as_ref()
                        .and_then(|c| c.blob_repo(host, &blob.digest)),
                };
                let placement = self
                    .place_in(&self.clients[host], repo, from.or(cached.as_deref()), blob)
                    .await?;
                self.counts[owner]
                    .lock()
                    .expect("counts poisoned")
                    .add(placement);
                Ok(placement)
            })
            .await
            .clone()?;
        Ok(if ours { placement } else { Placement::Existed })
    }

    /// Place a blob in one repository: skip it if present, mount it from
    /// `from` (a repository of the same registry said to hold it) when
    /// there is one, upload it otherwise or when the mount is refused.
    async fn place_in(
        &self,
        client: &Client,
        repo: &str,
        from: Option<&str>,
        blob: &Blob,
    ) -> Result<Placement, String> {
        let net = |e: crate::registry::RegistryError| e.to_string();
        let mut session = None;
        {
            let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
            if client.blob_exists(repo, &blob.digest).await.map_err(net)? {
                self.remember(client.host(), &blob.digest, repo);
                return Ok(Placement::Existed);
            }
            if let Some(from) = from.filter(|f| *f != repo) {
                match client.mount_blob(repo, &blob.digest, from).await {
                    Ok(MountOutcome::Mounted) => {
                        self.remember(client.host(), &blob.digest, repo);
                        return Ok(Placement::Mounted);
                    }
                    Ok(MountOutcome::UploadAt(opened)) => session = Some(opened),
                    Err(e) => tracing::debug!("mount refused ({e}); uploading instead"),
                }
            }
        }
        // No network permit is held while a cached layer is compressed.
        let (body, compressed) = self.body(blob).await?;
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        client
            .upload_blob(repo, &blob.digest, &body, session)
            .await
            .map_err(net)?;
        self.remember(client.host(), &blob.digest, repo);
        Ok(Placement::Uploaded(blob.size, compressed))
    }

    async fn push_image(&self, id: usize, planned: &PlannedImage) -> ImageResult {
        let mut result = ImageResult::new(planned.target, &planned.name, references(planned));
        let mut outcome = self.push_image_inner(id, planned, &mut result).await;
        if outcome.is_err() && self.stop.received().is_none() && self.has_repaired_layer(planned) {
            // Planned with a wrong cached digest: once more, with the
            // layer as it is.
            result = ImageResult::new(planned.target, &planned.name, references(planned));
            outcome = self.push_image_inner(id, planned, &mut result).await;
        }
        if let Err(e) = outcome {
            result.status = match self.stop.received() {
                Some(_) => Status::Interrupted,
                None => Status::Failed(e),
            };
        }
        result.blobs = *self.counts[id].lock().expect("counts poisoned");
        result
    }

    async fn push_image_inner(
        &self,
        id: usize,
        planned: &PlannedImage,
        result: &mut ImageResult,
    ) -> Result<(), String> {
        let image = match planned.image.as_ref().map_err(Clone::clone)? {
            Artifact::Image(image) => image,
            Artifact::Layout(root) => return self.push_layout(id, planned, root, result).await,
        };
        self.observer.stage(id, Stage::Preparing);
        let prepared =
            join_all((0..image.layers.len()).map(|i| self.prepare(id, planned, image, i)))
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
        self.counts[id].lock().expect("counts poisoned").compressed += prepared
            .iter()
            .filter(|(_, compressed)| *compressed)
            .count() as u64;
        let layers: Vec<Arc<Layer>> = prepared.into_iter().map(|(layer, _)| layer).collect();
        result.prebuilt_layers = layers
            .iter()
            .filter(|l| l.claimed.is_some())
            .map(|l| l.digest.clone())
            .collect();
        let format = self.options.format;
        let (manifest, digest) = manifest_of(format, image, &layers);
        result.digest = Some(digest.clone());
        // rules_docker digested the Docker manifest; `--format oci` makes another.
        if let (Format::Docker, Some(expected)) = (format, &image.expected_digest) {
            if expected.digest != digest {
                return Err(format!(
                    "the manifest kvpush built has digest {digest}, but {} (rules_docker's digest of this image) says {}: not pushing an image that KubeVirt's manifests would not find; rebuild with `{}`",
                    expected.file.display(),
                    expected.digest,
                    planned.target.parts_build_command()
                ));
            }
        }

        // Config: pushed byte for byte from the tarball so its digest is Bazel's.
        let config_path = self.spool_dir.path().join(format!(
            "config-{}.json",
            self.spool_seq.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&config_path, &image.config)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let config_len = image.config.len() as u64;
        let mut blobs = vec![Blob {
            key: image.config_digest.clone(),
            digest: image.config_digest.clone(),
            size: config_len,
            source: Source::Ready(FileRange {
                path: config_path,
                offset: 0,
                len: config_len,
            }),
        }];
        blobs.extend(layers.iter().map(|l| Blob {
            key: l.diff_id.clone(),
            digest: l.digest.clone(),
            size: l.size,
            source: Source::Layer(l.clone()),
        }));

        let repos = self.repo_states(planned, &digest).await?;
        self.place_all(id, &repos, &blobs, result).await?;
        for p in &repos {
            let client = &self.clients[&p.repo.host];
            put_tags(
                client,
                &p.stale,
                format.manifest(),
                &manifest,
                &digest,
                self.stop,
            )
            .await?;
        }
        if repos.iter().all(|p| p.stale.is_empty()) {
            result.status = Status::Unchanged;
        }
        Ok(())
    }

    /// What each repository of an image still needs, learnt before any blob
    /// is touched: the tags not yet on `digest` (a repository whose tags all
    /// are needs nothing), and whether it holds the manifest already. The
    /// image is unchanged when no repository has a stale tag.
    async fn repo_states<'p>(
        &self,
        planned: &'p PlannedImage,
        digest: &str,
    ) -> Result<Vec<RepoState<'p>>, String> {
        // Both questions at once, for every repository: one round trip.
        let asked = join_all(repositories(planned).into_iter().map(|repo| async move {
            let client = &self.clients[&repo.host];
            let tags = tags_in(planned, repo);
            let (stale, present) = tokio::join!(
                stale_tags(client, &tags, digest),
                client.manifest_digest(&repo.repo, digest)
            );
            let present = present.map_err(|e| e.to_string())?;
            Ok::<_, String>(RepoState {
                repo,
                stale: stale?,
                manifest_present: present.as_deref() == Some(digest),
            })
        }))
        .await;
        asked.into_iter().collect()
    }

    /// Place every blob of an image in each of its repositories, telling the
    /// observer. A repository that holds the manifest holds its blobs (a
    /// registry refuses a manifest whose blobs it lacks), so there they are
    /// counted as present without a request.
    async fn place_all(
        &self,
        id: usize,
        repos: &[RepoState<'_>],
        blobs: &[Blob],
        result: &mut ImageResult,
    ) -> Result<(), String> {
        let total = blobs.iter().map(|b| b.size).sum();
        result.size = Some(total);
        self.observer.stage(id, Stage::Uploading { total });
        for p in repos {
            if p.manifest_present {
                for b in blobs {
                    self.counts[id]
                        .lock()
                        .expect("counts poisoned")
                        .add(Placement::Existed);
                    self.remember(&p.repo.host, &b.digest, &p.repo.repo);
                    self.observer.blob_placed(id, Placement::Existed, b.size);
                }
                continue;
            }
            join_all(blobs.iter().map(|b| async move {
                let placed = self.place(id, p.repo, b).await?;
                self.observer.blob_placed(id, placed, b.size);
                Ok::<_, String>(())
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        }
        // The manifest's tags once all blobs are confirmed.
        self.observer.stage(id, Stage::Tagging);
        Ok(())
    }

    /// Push an OCI layout byte for byte: every blob of every image, then
    /// each image manifest of an index by digest, then the top manifest under
    /// its tags. Layers are the layout's own, so nothing is compressed.
    async fn push_layout(
        &self,
        id: usize,
        planned: &PlannedImage,
        root: &LayoutRoot,
        result: &mut ImageResult,
    ) -> Result<(), String> {
        let top = root.manifest();
        result.digest = Some(top.digest.clone());
        let mut blobs: Vec<Blob> = Vec::new();
        for b in layout_blobs(root) {
            if !blobs.iter().any(|x| x.digest == b.digest) {
                blobs.push(Blob {
                    key: b.digest.clone(),
                    digest: b.digest.clone(),
                    size: b.size,
                    source: Source::Ready(b.range.clone()),
                });
            }
        }
        for image in root.images() {
            for l in &image.layers {
                if !result.prebuilt_layers.contains(&l.digest) {
                    result.prebuilt_layers.push(l.digest.clone());
                }
            }
        }
        let repos = self.repo_states(planned, &top.digest).await?;
        self.place_all(id, &repos, &blobs, result).await?;
        for p in &repos {
            let client = &self.clients[&p.repo.host];
            if let (LayoutRoot::Index(_), false) = (root, p.manifest_present) {
                // Children first: a registry refuses an index whose images it lacks.
                for child in root.images() {
                    let m = &child.manifest;
                    let present = client
                        .manifest_digest(&p.repo.repo, &m.digest)
                        .await
                        .map_err(|e| e.to_string())?;
                    if present.as_deref() != Some(m.digest.as_str()) {
                        not_stopped(self.stop)?;
                        client
                            .put_manifest(
                                &p.repo.repo,
                                &m.digest,
                                &m.media_type,
                                &m.bytes,
                                &m.digest,
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            put_tags(
                client,
                &p.stale,
                &top.media_type,
                &top.bytes,
                &top.digest,
                self.stop,
            )
            .await?;
        }
        if repos.iter().all(|p| p.stale.is_empty()) {
            result.status = Status::Unchanged;
        }
        Ok(())
    }
}

/// Every blob (configs and layers) of a layout's images, shared ones as
/// often as they are named.
fn layout_blobs(root: &LayoutRoot) -> impl Iterator<Item = &crate::source::oci_layout::LayoutBlob> {
    root.images()
        .iter()
        .flat_map(|i| std::iter::once(&i.config).chain(&i.layers))
}

/// The home repository of every blob on every host: the first repository
/// in plan order that needs it, whichever image gets there first, so that
/// a re-run after an interruption finds there what the first run uploaded
/// instead of uploading it again elsewhere. Keyed by what a blob is known
/// by before it is prepared (see [`Blob::key`]).
fn homes(plan: &Plan) -> HashMap<(String, String), Home> {
    let mut homes = HashMap::new();
    for (image, planned) in plan.images.iter().enumerate() {
        let keys: Vec<&String> = match &planned.image {
            Ok(Artifact::Image(i)) => i.diff_ids.iter().chain([&i.config_digest]).collect(),
            Ok(Artifact::Layout(root)) => layout_blobs(root).map(|b| &b.digest).collect(),
            Err(_) => continue,
        };
        for d in &planned.destinations {
            for key in &keys {
                homes
                    .entry((d.host.clone(), (*key).clone()))
                    .or_insert_with(|| Home {
                        repo: d.repo.clone(),
                        image,
                    });
            }
        }
    }
    homes
}

/// How many images of the plan have each layer (by diff_id).
fn layer_users(plan: &Plan) -> HashMap<String, usize> {
    let mut users = HashMap::new();
    for planned in &plan.images {
        if let Ok(Artifact::Image(image)) = &planned.image {
            let distinct: std::collections::HashSet<&String> = image.diff_ids.iter().collect();
            for diff_id in distinct {
                *users.entry(diff_id.clone()).or_insert(0) += 1;
            }
        }
    }
    users
}

/// The order in which images start, and so queue for the compression
/// permits (a fair semaphore): the image with the largest layer kvpush
/// may compress (a raw one; Bazel's gzip files are never recompressed)
/// first, since a big layer started last leaves the other cores
/// idle while it finishes (the bench's cold push ended on virt-launcher's
/// 100 MB layer, a core idle for its last 0.3 s). Ties keep target order.
fn work_order(plan: &Plan) -> Vec<usize> {
    let largest_raw_layer = |planned: &PlannedImage| match &planned.image {
        Ok(Artifact::Image(image)) => image
            .layers
            .iter()
            .filter_map(|l| match l {
                SourceLayer::Raw(range) => Some(range.len),
                SourceLayer::Compressed { .. } => None,
            })
            .max()
            .unwrap_or(0),
        _ => 0,
    };
    let mut order: Vec<usize> = (0..plan.images.len()).collect();
    order.sort_by_key(|&id| std::cmp::Reverse(largest_raw_layer(&plan.images[id])));
    order
}

/// Every reference an image goes to, as shown.
fn references(planned: &PlannedImage) -> Vec<String> {
    planned
        .destinations
        .iter()
        .map(|d| d.display.clone())
        .collect()
}

/// No manifest or tag is written once a signal came, even if it came in
/// the middle of the work, before the work could be dropped.
fn not_stopped(stop: &Stop) -> Result<(), String> {
    match stop.received() {
        Some(signal) => Err(format!("interrupted by {}", signal.name)),
        None => Ok(()),
    }
}

/// One destination per distinct (host, repository); tags share its blobs.
fn repositories(planned: &PlannedImage) -> Vec<&Destination> {
    let mut repos: Vec<&Destination> = Vec::new();
    for d in &planned.destinations {
        if !repos.iter().any(|r| r.host == d.host && r.repo == d.repo) {
            repos.push(d);
        }
    }
    repos
}

/// The destinations of `planned` in `repo`'s repository: one per tag.
fn tags_in<'a>(planned: &'a PlannedImage, repo: &Destination) -> Vec<&'a Destination> {
    planned
        .destinations
        .iter()
        .filter(|d| d.host == repo.host && d.repo == repo.repo)
        .collect()
}

/// A repository an image goes to, as the registry answered for it.
struct RepoState<'p> {
    /// One destination of the repository (its host and name).
    repo: &'p Destination,
    /// Its tags that do not point at the manifest yet.
    stale: Vec<&'p Destination>,
    /// The repository holds the manifest (under another tag or none).
    manifest_present: bool,
}

/// The tags of `tags` that do not point at `digest` yet.
async fn stale_tags<'a>(
    client: &Client,
    tags: &[&'a Destination],
    digest: &str,
) -> Result<Vec<&'a Destination>, String> {
    let current = join_all(tags.iter().map(|d| client.manifest_digest(&d.repo, &d.tag))).await;
    let mut stale = Vec::new();
    for (d, current) in tags.iter().zip(current) {
        if current.map_err(|e| e.to_string())?.as_deref() != Some(digest) {
            stale.push(*d);
        }
    }
    Ok(stale)
}

/// Put a manifest under each tag of `tags`, writing nothing once `stop`
/// has come. A PUT by tag stores the manifest under its digest too, so no
/// PUT by digest comes first (the registry's Docker-Content-Digest is
/// checked against `digest` on every PUT).
async fn put_tags(
    client: &Client,
    tags: &[&Destination],
    media_type: &str,
    manifest: &[u8],
    digest: &str,
    stop: &Stop,
) -> Result<(), String> {
    for d in tags {
        not_stopped(stop)?;
        client
            .put_manifest(&d.repo, &d.tag, media_type, manifest, digest)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Put a manifest under each tag of `tags` that does not already point at
/// it. Returns false when every tag already did: nothing was written.
pub(crate) async fn put_tagged(
    client: &Client,
    tags: &[&Destination],
    media_type: &str,
    manifest: &[u8],
    digest: &str,
    stop: &Stop,
) -> Result<bool, String> {
    let stale = stale_tags(client, tags, digest).await?;
    put_tags(client, &stale, media_type, manifest, digest, stop).await?;
    Ok(!stale.is_empty())
}

/// The manifest of an image in `format`, and its digest, serialised as
/// rules_docker did (see [`crate::manifest`]).
fn manifest_of(format: Format, image: &Image, layers: &[Arc<Layer>]) -> (Vec<u8>, String) {
    let refs: Vec<BlobRef> = layers
        .iter()
        .map(|l| BlobRef {
            digest: &l.digest,
            size: l.size,
        })
        .collect();
    let config = BlobRef {
        digest: &image.config_digest,
        size: image.config.len() as u64,
    };
    image_manifest(format, config, &refs)
}

/// One client per registry host ([`Client::connect`]), so that a registry
/// that is not there at all, or refuses the credentials, fails once, up
/// front.
pub(crate) async fn connect<'a>(
    hosts: impl Iterator<Item = &'a str>,
    options: &Options,
) -> Result<HashMap<String, Client>, String> {
    let connect = ConnectOptions {
        insecure: options.insecure,
        ca_certs: options.ca_certs.clone(),
        retry: options.retry.clone(),
        chunk_size: options.chunk_size,
    };
    let mut clients = HashMap::new();
    for host in hosts {
        if !clients.contains_key(host) {
            let client = Client::connect(host, options.credential.clone(), &connect)
                .await
                .map_err(|e| e.to_string())?;
            clients.insert(host.to_string(), client);
        }
    }
    Ok(clients)
}

/// Push every image of the plan, telling `observer` how it goes. When
/// `stop` comes, everything in flight is dropped at once and the images not
/// done are reported [`Status::Interrupted`], with the blobs they placed.
pub async fn execute(
    plan: &Plan,
    options: Options,
    observer: &dyn Observer,
    stop: &Stop,
) -> Result<Vec<ImageResult>, String> {
    let counts: Vec<Mutex<BlobCounts>> = plan.images.iter().map(|_| Mutex::default()).collect();
    let finished = Finished::new(observer, plan.images.len());
    let work = async {
        let hosts = plan
            .images
            .iter()
            .flat_map(|i| &i.destinations)
            .map(|d| d.host.as_str());
        let clients = connect(hosts, &options).await?;
        let spool_dir = tempfile::Builder::new()
            .prefix("kvpush-")
            .tempdir()
            .map_err(|e| {
                format!(
                    "cannot create a temporary directory for compressed layers (set TMPDIR?): {e}"
                )
            })?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let run = Run {
            observer,
            stop,
            clients,
            permits: Semaphore::new(options.jobs.max(1)),
            cpu_permits: Semaphore::new((cores / 2).clamp(2, options.jobs.max(2))),
            cache: options.cache_dir.clone().map(Cache::new),
            settings: crate::compress::settings_id(options.compression_level),
            options,
            spool_dir,
            spool_seq: AtomicU64::new(0),
            layers: Mutex::default(),
            repaired: Mutex::default(),
            homes: homes(plan),
            layer_users: layer_users(plan),
            placed: Mutex::default(),
            counts: &counts,
        };
        let (run, finished) = (&run, &finished);
        join_all(work_order(plan).into_iter().map(|id| {
            let planned = &plan.images[id];
            async move {
                run.observer.image_started(id, planned);
                finished.record(id, run.push_image(id, planned).await);
            }
        }))
        .await;
        Ok::<_, String>(())
    };
    if let Ok(done) = stop.or(work).await {
        done?;
    }
    let mut results = finished.into_results(|id| {
        let planned = &plan.images[id];
        ImageResult::new(planned.target, &planned.name, references(planned))
    });
    // Blobs placed in an image's home repository by another image count
    // for it, even when they landed after it was done.
    for (result, counts) in results.iter_mut().zip(counts) {
        result.blobs = counts.into_inner().expect("counts poisoned");
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::FileRange;
    use crate::push::plan::SourceKind;

    fn image_with_layers(layers: Vec<SourceLayer>) -> Result<Artifact, String> {
        Ok(Artifact::Image(Image {
            source: PathBuf::from("image.tar"),
            config: Vec::new(),
            config_digest: String::new(),
            diff_ids: Vec::new(),
            layers,
            expected_digest: None,
        }))
    }

    fn raw(len: u64) -> SourceLayer {
        SourceLayer::Raw(FileRange {
            path: PathBuf::from("image.tar"),
            offset: 0,
            len,
        })
    }

    fn planned(name: &str, image: Result<Artifact, String>) -> PlannedImage {
        PlannedImage {
            target: crate::targets::TARGETS[0],
            name: name.to_string(),
            source: SourceKind::Tarball,
            source_file: PathBuf::from("image.tar"),
            note: None,
            image,
            destinations: Vec::new(),
        }
    }

    #[test]
    fn images_start_largest_layer_to_compress_first_ties_in_target_order() {
        let bazel_compressed = SourceLayer::Compressed {
            range: FileRange {
                path: PathBuf::from("layer.tar.gz"),
                offset: 0,
                len: 1 << 40,
            },
            digest: String::new(),
            diff_id: String::new(),
        };
        let plan = Plan {
            bazel_bin: PathBuf::from("bazel-bin"),
            images: vec![
                planned("small", image_with_layers(vec![raw(10), raw(20)])),
                planned("broken", Err("no tarball".into())),
                planned("big", image_with_layers(vec![raw(5), raw(500)])),
                // Bazel's gzip is never compressed again: it counts for nothing.
                planned(
                    "prebuilt",
                    image_with_layers(vec![bazel_compressed, raw(20)]),
                ),
                planned("medium", image_with_layers(vec![raw(100)])),
            ],
        };
        let names: Vec<&str> = work_order(&plan)
            .into_iter()
            .map(|id| plan.images[id].name.as_str())
            .collect();
        assert_eq!(names, ["big", "medium", "small", "prebuilt", "broken"]);
    }
}
