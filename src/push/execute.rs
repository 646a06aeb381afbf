//! Concurrent execution of a [`Plan`]: all images progress at once, the
//! actual work (compressing, uploading) bounded by one `--jobs` semaphore.
//!
//! Sharing rules, each a map of once-cells so that concurrent images wait
//! for one another instead of repeating work:
//! - a layer is prepared (hashed, compressed) once per diff_id per run;
//! - a blob is placed once per (host, repository);
//! - a blob is uploaded to its home repository (the first one in plan order
//!   that needs it, whichever image gets there first), and mounted from
//!   there into the others (falling back to an upload if the mount is
//!   refused). A fixed home means a re-run finds there what an interrupted
//!   run uploaded.
//!
//! Permits are taken only around leaf work, never while waiting on a cell,
//! so waiting can never starve the workers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use tokio::sync::{OnceCell, Semaphore};

use super::plan::{Destination, Plan, PlannedImage};
use crate::blob::{prepare_layer, sha256_digest, FileRange, PreparedLayer};
use crate::registry::auth::{lookup_credentials, FoundCredential};
use crate::registry::client::{Client, MountOutcome};
use crate::registry::retry::RetryPolicy;
use crate::registry::{media, Endpoint};
use crate::source::Image;
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
    /// PATCH size once a registry refuses a whole blob in one request.
    pub chunk_size: u64,
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
    /// The run was interrupted before this image was done: its manifest
    /// was not (or not under every tag) written.
    Interrupted,
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
    /// Failures are kept too, so that no other image repeats them.
    layers: Cells<String, Result<Arc<PreparedLayer>, String>>,
    /// (host, diff_id or config digest) -> the repository a blob is
    /// uploaded to before being mounted into the others: the first one in
    /// plan order, so that a re-run after an interruption finds there what
    /// the first run uploaded instead of uploading it again elsewhere.
    homes: HashMap<(String, String), String>,
    /// (host, repo, digest) -> what placing it there took.
    /// Failures are kept too: a registry that refused a blob after all its
    /// tries is not asked again by the next image needing it.
    placed: Cells<(String, String, String), Result<Placement, String>>,
}

/// What to upload for a blob.
struct Blob<'a> {
    /// What the blob is known by before it is prepared: a layer's diff_id,
    /// the config's digest.
    key: &'a str,
    digest: &'a str,
    body: FileRange,
}

impl Run {
    /// Hash/compress a layer once per diff_id, and check it matches.
    async fn prepare(&self, image: &Image, index: usize) -> Result<Arc<PreparedLayer>, String> {
        let declared = image.diff_ids[index].clone();
        let src = image.layers[index].clone();
        cell(&self.layers, declared.clone())
            .get_or_init(|| async {
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
            .clone()
    }

    /// Make `blob` present in `dest`'s repository, recording in `counts`
    /// what it took (nothing when another image of the run did it). The
    /// blob goes first to its home repository, then is mounted from there.
    async fn place(
        &self,
        dest: &Destination,
        blob: &Blob<'_>,
        counts: &Mutex<BlobCounts>,
    ) -> Result<(), String> {
        let home = self
            .homes
            .get(&(dest.host.clone(), blob.key.to_string()))
            .unwrap_or(&dest.repo);
        if *home != dest.repo {
            self.place_in(&dest.host, home, None, blob, counts).await?;
        }
        self.place_in(&dest.host, &dest.repo, Some(home), blob, counts)
            .await
    }

    /// Place `blob` in `repo` once per run: upload it (or find it there),
    /// or mount it from `from` when that is another repository.
    async fn place_in(
        &self,
        host: &str,
        repo: &str,
        from: Option<&str>,
        blob: &Blob<'_>,
        counts: &Mutex<BlobCounts>,
    ) -> Result<(), String> {
        let client = &self.clients[host];
        let key = (host.to_string(), repo.to_string(), blob.digest.to_string());
        cell(&self.placed, key)
            .get_or_init(|| async {
                let placement = match from {
                    Some(home) if home != repo => {
                        self.place_by_mount(client, repo, home, blob).await?
                    }
                    _ => self.place_fresh(client, repo, blob).await?,
                };
                counts.lock().expect("counts poisoned").add(placement);
                Ok(placement)
            })
            .await
            .clone()
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
        client
            .upload_blob(repo, blob.digest, &blob.body, None)
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
            Ok(MountOutcome::UploadAt(session)) => {
                client
                    .upload_blob(repo, blob.digest, &blob.body, Some(session))
                    .await
            }
            Err(e) => {
                tracing::debug!("mount refused ({e}); uploading instead");
                client
                    .upload_blob(repo, blob.digest, &blob.body, None)
                    .await
            }
        };
        result.map_err(|e| e.to_string())?;
        Ok(Placement::Uploaded(blob.body.len))
    }

    /// Push one image; `counts` follows its blobs as they land, so that an
    /// interrupted run can still say what went up.
    async fn push_image(&self, planned: &PlannedImage, counts: &Mutex<BlobCounts>) -> ImageResult {
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
        };
        if let Err(e) = self.push_image_inner(planned, &mut result, counts).await {
            result.status = Status::Failed(e);
        }
        result.blobs = *counts.lock().expect("counts poisoned");
        result
    }

    async fn push_image_inner(
        &self,
        planned: &PlannedImage,
        result: &mut ImageResult,
        counts: &Mutex<BlobCounts>,
    ) -> Result<(), String> {
        let image = planned.image.as_ref().map_err(Clone::clone)?;
        // join_all, not try_join_all: work another image may share is
        // never dropped halfway because a sibling failed (it would be done
        // again, and a registry asked again after all its tries).
        let layers = join_all((0..image.layers.len()).map(|i| self.prepare(image, i)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let (manifest, digest) = docker_manifest(image, &layers)?;
        result.digest = Some(digest.clone());

        // Config: pushed byte for byte from the tarball so its digest is Bazel's.
        let config_path = self.spool_dir.path().join(format!(
            "config-{}.json",
            self.spool_seq.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&config_path, &image.config)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let mut blobs = vec![Blob {
            key: &image.config_digest,
            digest: &image.config_digest,
            body: FileRange {
                path: config_path,
                offset: 0,
                len: image.config.len() as u64,
            },
        }];
        blobs.extend(layers.iter().map(|l| Blob {
            key: &l.diff_id,
            digest: &l.digest,
            body: l.body.range(l.size),
        }));

        // One repository per distinct (host, repo); tags share its blobs.
        let mut repos: Vec<&Destination> = Vec::new();
        for d in &planned.destinations {
            if !repos.iter().any(|r| r.host == d.host && r.repo == d.repo) {
                repos.push(d);
            }
        }
        for repo in &repos {
            join_all(blobs.iter().map(|b| self.place(repo, b, counts)))
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
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

/// The Docker schema 2 manifest of an image, and its digest.
fn docker_manifest(
    image: &Image,
    layers: &[Arc<PreparedLayer>],
) -> Result<(Vec<u8>, String), String> {
    let bad = |e: oci_spec::OciSpecError| {
        format!(
            "cannot build the manifest for {}: {e}",
            image.source.display()
        )
    };
    let descriptor = |media_type: &str, digest: &str, size: u64| {
        DescriptorBuilder::default()
            .media_type(MediaType::Other(media_type.to_string()))
            .digest(oci_spec::image::Digest::try_from(digest).map_err(bad)?)
            .size(size)
            .build()
            .map_err(bad)
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::Other(media::DOCKER_MANIFEST.to_string()))
        .config(descriptor(
            media::DOCKER_CONFIG,
            &image.config_digest,
            image.config.len() as u64,
        )?)
        .layers(
            layers
                .iter()
                .map(|l| descriptor(media::DOCKER_LAYER_GZIP, &l.digest, l.size))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .build()
        .map_err(bad)?;
    let bytes =
        serde_json::to_vec(&manifest).map_err(|e| format!("cannot serialise manifest: {e}"))?;
    let digest = sha256_digest(&bytes);
    Ok((bytes, digest))
}

/// The home repository of every blob (see [`Run::homes`]).
fn homes(plan: &Plan) -> HashMap<(String, String), String> {
    let mut homes = HashMap::new();
    for planned in &plan.images {
        let Ok(image) = &planned.image else { continue };
        for d in &planned.destinations {
            for key in image.diff_ids.iter().chain([&image.config_digest]) {
                homes
                    .entry((d.host.clone(), key.clone()))
                    .or_insert_with(|| d.repo.clone());
            }
        }
    }
    homes
}

fn interrupted(planned: &PlannedImage, blobs: BlobCounts) -> ImageResult {
    ImageResult {
        target: planned.target,
        name: planned.name.clone(),
        references: planned
            .destinations
            .iter()
            .map(|d| d.display.clone())
            .collect(),
        digest: None,
        status: Status::Interrupted,
        blobs,
    }
}

/// Push every image of the plan; `on_done` is called as each one finishes.
/// When `stop` resolves first, everything in flight is dropped at once and
/// the images not finished are reported [`Status::Interrupted`], with the
/// value `stop` gave.
pub async fn execute<S: std::future::Future>(
    plan: &Plan,
    options: Options,
    on_done: &(dyn Fn(&ImageResult) + Sync),
    stop: S,
) -> Result<(Vec<ImageResult>, Option<S::Output>), String> {
    let slots: Mutex<Vec<Option<ImageResult>>> = Mutex::new(vec![None; plan.images.len()]);
    let record = |i: usize, result: ImageResult| {
        on_done(&result);
        slots.lock().expect("results poisoned")[i] = Some(result);
    };
    let counts: Vec<Mutex<BlobCounts>> = plan.images.iter().map(|_| Mutex::default()).collect();
    let work = push_all(plan, options, &record, &counts);
    let stopped = tokio::select! {
        done = work => { done?; None }
        why = stop => Some(why),
    };
    let results = slots
        .into_inner()
        .expect("results poisoned")
        .into_iter()
        .zip(plan.images.iter().zip(counts))
        .map(|(slot, (planned, counts))| {
            slot.unwrap_or_else(|| {
                interrupted(planned, counts.into_inner().expect("counts poisoned"))
            })
        })
        .collect();
    Ok((results, stopped))
}

async fn push_all(
    plan: &Plan,
    options: Options,
    on_done: &(dyn Fn(usize, ImageResult) + Sync),
    counts: &[Mutex<BlobCounts>],
) -> Result<(), String> {
    let mut clients = HashMap::new();
    for image in &plan.images {
        for d in &image.destinations {
            if !clients.contains_key(&d.host) {
                let credential = lookup_credentials(&d.host, options.credential.clone())?;
                if let Some(c) = &credential {
                    tracing::info!("using credentials for {} from {}", d.host, c.source);
                }
                let endpoint = Endpoint::for_host(&d.host, options.insecure);
                let client = Client::new(
                    endpoint,
                    credential,
                    options.retry.clone(),
                    options.chunk_size,
                )
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
        homes: homes(plan),
        placed: Mutex::default(),
    };
    join_all(plan.images.iter().enumerate().map(|(i, planned)| {
        let run = &run;
        async move { on_done(i, run.push_image(planned, &counts[i]).await) }
    }))
    .await;
    Ok(())
}
