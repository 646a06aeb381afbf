//! Layer preparation: each layer's blob digest learnt once per diff_id per
//! run, from the digest cache without reading the layer or by compressing
//! it now ([`Run::prepare`]); a new layer streamed to its home repository
//! while it is compressed ([`Run::stream_target`]); a cached layer's bytes
//! made on first need ([`Run::layer_body`]), and a digest-cache entry that
//! turns out wrong put right ([`Run::repair`]). It decides nothing about
//! where blobs go beyond that one streamed upload, and writes no manifest.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::OnceCell;

use super::layer::{prebuilt, Layer};
use super::run::{cell, Run};
use crate::blob::{prepare_layer, BlobBody, FileRange, GrowingBlob, PreparedLayer};
use crate::cache::CachedLayer;
use crate::push::plan::{Plan, PlannedImage};
use crate::push::result::Placement;
use crate::registry::client::Client;
use crate::source::{Artifact, Image, Layer as SourceLayer};

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
        level: u32,
        learn: bool,
        stream: Option<StreamTo<'_>>,
    ) -> Result<PreparedLayer, String> {
        let _permit = self
            .cpu_permits
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        // Every destination gone past --retry-time: the bytes would have
        // nowhere to go, and the compression would hold the failure back.
        if let Some(why) = self.all_given_up() {
            return Err(format!(
                "layer {} of {} not compressed: {why}",
                index + 1,
                src.path.display()
            ));
        }
        let spool = self.spool_dir.path().join(format!(
            "layer-{}.tar.gz",
            self.spool_seq.fetch_add(1, Ordering::Relaxed)
        ));
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
                if is_disk_full(&e) {
                    return format!(
                        "cannot write layer {} of {} to the temporary directory {}: {e}; {SPOOL_ADVICE}",
                        index + 1,
                        src.path.display(),
                        self.spool_dir.path().display()
                    );
                }
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
            cache.put_layer(&crate::compress::settings_id(level), declared, &entry);
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

    /// Why no destination registry of the run can be reached any more,
    /// when none can (see [`Client::given_up`]).
    fn all_given_up(&self) -> Option<String> {
        let reasons: Vec<String> = self
            .clients
            .values()
            .map(Client::given_up)
            .collect::<Option<_>>()?;
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// What the digest cache knows of `diff_id`, and at which level: at
    /// the run's level; under `auto` (only), else at any level this
    /// machine reproduces, the strongest first, so that a layer an earlier
    /// run compressed is never compressed again because the link changed
    /// (its bytes, if needed, are made again at that level, to the same
    /// digest). A level the user gave is theirs: nothing else is reused.
    fn cached_layer(&self, diff_id: &str) -> Option<(u32, CachedLayer)> {
        let cache = self.cache.as_ref()?;
        if !self.level.auto {
            return Some((self.level.level, cache.layer(&self.settings, diff_id)?));
        }
        crate::compress::reproducible_settings(self.level.level)
            .into_iter()
            .find_map(|(level, settings)| Some((level, cache.layer(&settings, diff_id)?)))
    }

    /// Learn a layer's blob digest once per diff_id: from the cache without
    /// reading it, else by compressing it now. Returns whether this call
    /// compressed it.
    pub(super) async fn prepare(
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
                if let Some((level, hit)) = self.cached_layer(&declared) {
                    return Ok(Arc::new(Layer {
                        diff_id: declared,
                        digest: hit.digest,
                        size: hit.size,
                        src,
                        index,
                        level,
                        body: OnceCell::new(),
                        digest_from_cache: true,
                        claimed: None,
                        claimant: crate::source::Claimant::DIGEST_FILE,
                        verified: OnceCell::new(),
                    }));
                }
                let stream = self.stream_target(id, planned, image, &declared);
                let prepared = self
                    .compress_layer(&src, &declared, index, self.level.level, true, stream)
                    .await?;
                compressed = prepared.compressed_here();
                let level = self.level.level;
                Ok(Arc::new(Layer::compressed(
                    declared, src, index, level, prepared,
                )))
            })
            .await
            .clone()?;
        Ok((layer, compressed))
    }

    /// The gzip bytes of a layer, compressing a cached layer now if need be
    /// (a layer Bazel gzipped is checked against its digest first); true
    /// when this call did the compressing.
    pub(super) async fn layer_body(&self, layer: &Layer) -> Result<(FileRange, bool), String> {
        if let Some(claimed) = &layer.claimed {
            layer
                .verified
                .get_or_init(|| async {
                    let (claimed, by) = (claimed.clone(), layer.claimant);
                    tokio::task::spawn_blocking(move || claimed.verify_claim(&by))
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
                    .compress_layer(&layer.src, &layer.diff_id, layer.index, layer.level, false, None)
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
            let settings = crate::compress::settings_id(layer.level);
            cache.put_layer(&settings, &layer.diff_id, &entry);
        }
        let corrected = Arc::new(Layer::compressed(
            layer.diff_id.clone(),
            layer.src.clone(),
            layer.index,
            layer.level,
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
    pub(super) fn has_repaired_layer(&self, planned: &PlannedImage) -> bool {
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
}

/// How many images of the plan have each layer (by diff_id).
pub(super) fn layer_users(plan: &Plan) -> HashMap<String, usize> {
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

/// What to do when the temporary directory is full.
pub(super) const SPOOL_ADVICE: &str = "the disk is full: free space there or set TMPDIR to a directory with room for the largest compressed layers";

/// A write failed for want of room (ENOSPC, or EDQUOT: a quota).
pub(super) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28 | 122)) || e.kind() == std::io::ErrorKind::StorageFull
}
