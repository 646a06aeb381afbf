//! Concurrent execution of a [`Plan`]: all images progress at once, the
//! actual work (compressing, uploading) bounded by one `--jobs` semaphore.
//!
//! Sharing rules, each a map of once-cells so that concurrent images wait
//! for one another instead of repeating work:
//! - a layer is prepared (hashed, compressed) once per diff_id per run;
//! - a blob is placed once per (host, repository);
//! - the first repository of a host to receive a blob uploads it, the others
//!   mount it from there (falling back to an upload if the mount is refused).
//!
//! Permits are taken only around leaf work, never while waiting on a cell,
//! so waiting can never starve the workers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{join_all, try_join_all};
use tokio::sync::{OnceCell, Semaphore};

use super::manifest::{docker_manifest, BlobRef};
use super::plan::{Destination, Plan, PlannedImage};
use crate::blob::{prepare_layer, BlobBody, FileRange, PreparedLayer};
use crate::registry::auth::{lookup_credentials, FoundCredential};
use crate::registry::client::{Client, MountOutcome};
use crate::registry::retry::RetryPolicy;
use crate::registry::{media, Endpoint};
use crate::source::{Image, Layer};
use crate::targets::Target;

/// How to push.
#[derive(Clone, Debug)]
pub struct Options {
    /// Most blob operations (compressions, uploads) running at once.
    pub jobs: usize,
    pub insecure: bool,
    pub compression_level: u32,
    /// Credentials from the command line; otherwise looked up per registry.
    pub credential: Option<FoundCredential>,
    pub retry: RetryPolicy,
}

/// What happened to one blob in one repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    Uploaded(u64),
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
}

impl BlobCounts {
    fn add(&mut self, p: Placement) {
        match p {
            Placement::Uploaded(bytes) => {
                self.uploaded += 1;
                self.bytes_uploaded += bytes;
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
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The manifest was written and every tag points at it.
    Pushed,
    /// Every tag already pointed at this exact manifest; nothing written.
    Unchanged,
    Failed(String),
}

/// The outcome for one image.
#[derive(Clone, Debug)]
pub struct ImageResult {
    pub target: Target,
    pub name: String,
    pub references: Vec<String>,
    /// Manifest digest, known once the image was read and its layers prepared.
    pub digest: Option<String>,
    pub status: Status,
    pub blobs: BlobCounts,
    /// Digests of the layers kvpush gzipped itself for this image.
    pub gzipped_layers: Vec<String>,
    /// Digests of the layers pushed as Bazel compressed them.
    pub prebuilt_layers: Vec<String>,
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
struct Run {
    clients: HashMap<String, Client>,
    options: Options,
    permits: Semaphore,
    spool_dir: tempfile::TempDir,
    spool_seq: AtomicU64,
    /// diff_id -> the layer prepared for upload.
    layers: Cells<String, Arc<PreparedLayer>>,
    /// (host, digest) -> the first repository that holds it in this run.
    homes: Cells<(String, String), String>,
    /// (host, repo, digest) -> what placing it there took.
    placed: Cells<(String, String, String), Placement>,
    /// digest -> a Bazel-compressed layer was checked against it.
    verified: Cells<String, ()>,
}

/// What to upload for a blob.
struct Blob<'a> {
    digest: &'a str,
    body: FileRange,
    /// A layer whose digest was read from Bazel's digest file rather than
    /// computed by kvpush: hashed before its first upload.
    claimed: Option<&'a Layer>,
}

/// A layer Bazel already gzipped: ready as it is, nothing to read.
fn prebuilt(image: &Image, index: usize) -> Result<Arc<PreparedLayer>, String> {
    let Layer::Compressed {
        range,
        digest,
        diff_id,
    } = &image.layers[index]
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
    Ok(Arc::new(PreparedLayer {
        diff_id: diff_id.clone(),
        digest: digest.clone(),
        size: range.len,
        body: BlobBody::Range(range.clone()),
    }))
}

impl Run {
    /// Hash/compress a layer once per diff_id, and check it matches.
    async fn prepare(&self, image: &Image, index: usize) -> Result<Arc<PreparedLayer>, String> {
        let declared = image.diff_ids[index].clone();
        let src = match &image.layers[index] {
            Layer::Raw(range) => range.clone(),
            Layer::Compressed { .. } => return prebuilt(image, index),
        };
        cell(&self.layers, declared.clone())
            .get_or_try_init(|| async {
                let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
                let spool = self
                    .spool_dir
                    .path()
                    .join(format!("layer-{}.tar.gz", self.spool_seq.fetch_add(1, Ordering::Relaxed)));
                let level = self.options.compression_level;
                let src_for_task = src.clone();
                let prepared = tokio::task::spawn_blocking(move || prepare_layer(&src_for_task, &spool, level))
                    .await
                    .map_err(|e| format!("layer task failed: {e}"))?
                    .map_err(|e| format!("cannot read layer {} of {}: {e}", index + 1, src.path.display()))?;
                if prepared.diff_id != declared {
                    return Err(format!(
                        "layer {} of {} decompresses to {} but the image config's diff_ids[{index}] says {declared}: the tarball is corrupt, rebuild it with bazel",
                        index + 1,
                        src.path.display(),
                        prepared.diff_id
                    ));
                }
                Ok(Arc::new(prepared))
            })
            .await
            .cloned()
    }

    /// Make `blob` present in `dest`'s repository; returns what it took,
    /// or `None` when another image of this run already placed it there.
    async fn place(
        &self,
        dest: &Destination,
        blob: &Blob<'_>,
    ) -> Result<Option<Placement>, String> {
        let client = &self.clients[&dest.host];
        let key = (
            dest.host.clone(),
            dest.repo.clone(),
            blob.digest.to_string(),
        );
        let mut ours = false;
        let placement = *cell(&self.placed, key)
            .get_or_try_init(|| async {
                ours = true;
                let mut first = None;
                let home_cell = cell(&self.homes, (dest.host.clone(), blob.digest.to_string()));
                let home = home_cell
                    .get_or_try_init(|| async {
                        first = Some(self.place_fresh(client, &dest.repo, blob).await?);
                        Ok::<_, String>(dest.repo.clone())
                    })
                    .await?;
                match first {
                    Some(p) => Ok(p),
                    None if *home == dest.repo => Ok(Placement::Existed),
                    None => self.place_by_mount(client, &dest.repo, home, blob).await,
                }
            })
            .await?;
        Ok(ours.then_some(placement))
    }

    /// Before the first upload of a layer whose digest Bazel's digest file
    /// claims, hash its bytes once: a file changed since the build fails
    /// here, naming it, instead of at the registry. Done only for blobs
    /// really uploaded (a second push reads nothing); a read at disk speed,
    /// not the recompression it replaces. (Hashing while streaming would
    /// live in the registry client's upload code, which is being reworked
    /// for chunked uploads; the registry checks `?digest=` as well.)
    async fn verify_claimed(&self, blob: &Blob<'_>) -> Result<(), String> {
        let Some(layer) = blob.claimed else {
            return Ok(());
        };
        cell(&self.verified, blob.digest.to_string())
            .get_or_try_init(|| async {
                let layer = layer.clone();
                tokio::task::spawn_blocking(move || layer.verify())
                    .await
                    .map_err(|e| format!("layer check failed: {e}"))?
            })
            .await
            .map(|_| ())
    }

    /// First placement on a host: skip if present, upload otherwise.
    async fn place_fresh(
        &self,
        client: &Client,
        repo: &str,
        blob: &Blob<'_>,
    ) -> Result<Placement, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        if client
            .blob_exists(repo, blob.digest)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(Placement::Existed);
        }
        self.verify_claimed(blob).await?;
        client
            .upload_blob(repo, blob.digest, &blob.body)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Placement::Uploaded(blob.body.len))
    }

    /// Later placements: mount from the repository that already has it.
    async fn place_by_mount(
        &self,
        client: &Client,
        repo: &str,
        from: &str,
        blob: &Blob<'_>,
    ) -> Result<Placement, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        if client
            .blob_exists(repo, blob.digest)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(Placement::Existed);
        }
        let result = match client.mount_blob(repo, blob.digest, from).await {
            Ok(MountOutcome::Mounted) => return Ok(Placement::Mounted),
            Ok(MountOutcome::UploadAt(location)) => {
                self.verify_claimed(blob).await?;
                client
                    .put_blob(location, repo, blob.digest, &blob.body)
                    .await
            }
            Err(e) => {
                tracing::debug!("mount refused ({e}); uploading instead");
                self.verify_claimed(blob).await?;
                client.upload_blob(repo, blob.digest, &blob.body).await
            }
        };
        result.map_err(|e| e.to_string())?;
        Ok(Placement::Uploaded(blob.body.len))
    }

    async fn push_image(&self, planned: &PlannedImage) -> ImageResult {
        let mut result = ImageResult {
            target: planned.target,
            name: planned.name.clone(),
            references: planned
                .destinations
                .iter()
                .map(|d| d.display.clone())
                .collect(),
            digest: None,
            status: Status::Pushed,
            blobs: BlobCounts::default(),
            gzipped_layers: Vec::new(),
            prebuilt_layers: Vec::new(),
        };
        if let Err(e) = self.push_image_inner(planned, &mut result).await {
            result.status = Status::Failed(e);
        }
        result
    }

    async fn push_image_inner(
        &self,
        planned: &PlannedImage,
        result: &mut ImageResult,
    ) -> Result<(), String> {
        let image = planned.image.as_ref().map_err(Clone::clone)?;
        let layers = try_join_all((0..image.layers.len()).map(|i| self.prepare(image, i))).await?;
        for l in &layers {
            match l.body {
                BlobBody::Spool(_) => result.gzipped_layers.push(l.digest.clone()),
                BlobBody::Range(_) => result.prebuilt_layers.push(l.digest.clone()),
            }
        }
        let (manifest, digest) = image_manifest(image, &layers);
        result.digest = Some(digest.clone());
        if let Some(expected) = &image.expected_digest {
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
        let mut blobs = vec![Blob {
            digest: &image.config_digest,
            body: FileRange {
                path: config_path,
                offset: 0,
                len: image.config.len() as u64,
            },
            claimed: None,
        }];
        blobs.extend(layers.iter().zip(&image.layers).map(|(l, src)| Blob {
            digest: &l.digest,
            body: l.body.range(l.size),
            claimed: matches!(src, Layer::Compressed { .. }).then_some(src),
        }));

        // One repository per distinct (host, repo); tags share its blobs.
        let mut repos: Vec<&Destination> = Vec::new();
        for d in &planned.destinations {
            if !repos.iter().any(|r| r.host == d.host && r.repo == d.repo) {
                repos.push(d);
            }
        }
        for repo in &repos {
            let placements = try_join_all(blobs.iter().map(|b| self.place(repo, b))).await?;
            for p in placements.into_iter().flatten() {
                result.blobs.add(p);
            }
        }

        // Manifest by digest once all blobs are confirmed, then the tags.
        let mut changed = false;
        for repo in &repos {
            let client = &self.clients[&repo.host];
            let tags: Vec<&Destination> = planned
                .destinations
                .iter()
                .filter(|d| d.host == repo.host && d.repo == repo.repo)
                .collect();
            let mut stale = Vec::new();
            for d in &tags {
                if client
                    .manifest_digest(&d.repo, &d.tag)
                    .await
                    .map_err(|e| e.to_string())?
                    .as_deref()
                    != Some(digest.as_str())
                {
                    stale.push(*d);
                }
            }
            if stale.is_empty() {
                continue;
            }
            changed = true;
            client
                .put_manifest(
                    &repo.repo,
                    &digest,
                    media::DOCKER_MANIFEST,
                    &manifest,
                    &digest,
                )
                .await
                .map_err(|e| e.to_string())?;
            for d in stale {
                client
                    .put_manifest(&d.repo, &d.tag, media::DOCKER_MANIFEST, &manifest, &digest)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        if !changed {
            result.status = Status::Unchanged;
        }
        Ok(())
    }
}

/// The Docker schema 2 manifest of an image, and its digest, serialised as
/// rules_docker did (see [`super::manifest`]).
fn image_manifest(image: &Image, layers: &[Arc<PreparedLayer>]) -> (Vec<u8>, String) {
    let refs: Vec<BlobRef> = layers
        .iter()
        .map(|l| BlobRef {
            digest: &l.digest,
            size: l.size,
        })
        .collect();
    docker_manifest(
        BlobRef {
            digest: &image.config_digest,
            size: image.config.len() as u64,
        },
        &refs,
    )
}

/// Push every image of the plan; `on_done` is called as each one finishes.
pub async fn execute(
    plan: &Plan,
    options: Options,
    on_done: &(dyn Fn(&ImageResult) + Sync),
) -> Result<Vec<ImageResult>, String> {
    let mut clients = HashMap::new();
    for image in &plan.images {
        for d in &image.destinations {
            if !clients.contains_key(&d.host) {
                let credential = lookup_credentials(&d.host, options.credential.clone())?;
                if let Some(c) = &credential {
                    tracing::info!("using credentials for {} from {}", d.host, c.source);
                }
                let endpoint = Endpoint::for_host(&d.host, options.insecure);
                let client = Client::new(endpoint, credential, options.retry.clone())
                    .map_err(|e| e.to_string())?;
                // Fail fast, once, when the registry is not there at all.
                client.ping().await.map_err(|e| e.to_string())?;
                clients.insert(d.host.clone(), client);
            }
        }
    }
    let spool_dir = tempfile::Builder::new()
        .prefix("kvpush-")
        .tempdir()
        .map_err(|e| {
            format!("cannot create a temporary directory for compressed layers (set TMPDIR?): {e}")
        })?;
    let run = Run {
        clients,
        permits: Semaphore::new(options.jobs.max(1)),
        options,
        spool_dir,
        spool_seq: AtomicU64::new(0),
        layers: Mutex::default(),
        homes: Mutex::default(),
        placed: Mutex::default(),
        verified: Mutex::default(),
    };
    let results = join_all(plan.images.iter().map(|planned| async {
        let result = run.push_image(planned).await;
        on_done(&result);
        result
    }))
    .await;
    Ok(results)
}
