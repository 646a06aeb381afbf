//! One image's push from start to tags ([`Run::push_image`]): its layers
//! prepared, its manifest built (and checked against rules_docker's digest),
//! its blobs placed in each repository, then the manifest put under the
//! tags that do not point at it yet; an OCI layout goes the same way byte
//! for byte ([`Run::push_layout`]). It orders the steps of `prepare`,
//! `placement` and `manifests` and does none of their work itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::future::join_all;

use super::layer::{claimed_file, Layer};
use super::manifests::{manifest_of, not_stopped, put_tags, RepoState};
use super::placement::{layout_blobs, Blob, Source};
use super::run::Run;
use crate::blob::FileRange;
use crate::push::events::Stage;
use crate::push::plan::{PlannedImage, SourceKind};
use crate::push::result::{ImageResult, Status};
use crate::registry::media::Format;
use crate::source::oci_layout::LayoutRoot;
use crate::source::Artifact;

impl Run<'_> {
    pub(super) async fn push_image(&self, id: usize, planned: &PlannedImage) -> ImageResult {
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
        std::fs::write(&config_path, &image.config).map_err(|e| {
            let advice = if super::prepare::is_disk_full(&e) {
                format!("; {}", super::prepare::SPOOL_ADVICE)
            } else {
                String::new()
            };
            format!("cannot write {}: {e}{advice}", config_path.display())
        })?;
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

        let digests: Vec<&str> = blobs.iter().map(|b| b.digest.as_str()).collect();
        let mut repos = self.repo_states(planned, &digest, &digests).await?;
        let unchanged = repos.iter().all(|p| p.stale.is_empty());
        // Where the cache knows the blobs: the manifest first, the blobs
        // only if the registry says one is missing.
        for p in repos
            .iter_mut()
            .filter(|p| p.optimistic && !p.stale.is_empty())
        {
            if self
                .put_optimistic(p, format.manifest(), &manifest, &digest)
                .await?
            {
                p.stale.clear();
                p.manifest_present = true;
            } else {
                p.optimistic = false;
            }
        }
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
        if unchanged {
            result.status = Status::Unchanged;
        }
        // A config without os/architecture is no error here: the list
        // step then reads the image back and says what is wrong.
        if let Ok(platform) = crate::manifest::Platform::from_config(&image.config) {
            result.listed_as = Some(crate::manifest::Descriptor {
                platform: Some(platform),
                ..crate::manifest::Descriptor::new(
                    format.manifest(),
                    manifest.len() as u64,
                    &digest,
                )
            });
        }
        Ok(())
    }

    /// Push an OCI layout byte for byte: every blob of every image, then
    /// each image manifest of an index by digest, then the top manifest under
    /// its tags. Layers are the layout's own, so nothing is compressed; a
    /// rules_img layer is checked against its descriptor before it goes up,
    /// and one not on disk is mounted or copied from its origin.
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
        let configs: Vec<&str> = root
            .images()
            .iter()
            .map(|i| i.config.digest.as_str())
            .collect();
        for b in layout_blobs(root) {
            if !blobs.iter().any(|x| x.digest == b.digest) {
                let source = match (&b.remote, planned.source) {
                    (Some(remote), _) => Source::Remote(remote.clone()),
                    // The reader hashed the configs it read.
                    (None, SourceKind::RulesImg) if !configs.contains(&b.digest.as_str()) => {
                        Source::Layer(claimed_file(&b.range, &b.digest, blobs.len()))
                    }
                    (None, _) => Source::Ready(b.range.clone()),
                };
                blobs.push(Blob {
                    key: b.digest.clone(),
                    digest: b.digest.clone(),
                    size: b.size,
                    source,
                });
            }
        }
        for image in root.images() {
            for l in image.layers.iter().filter(|l| l.remote.is_none()) {
                if !result.prebuilt_layers.contains(&l.digest) {
                    result.prebuilt_layers.push(l.digest.clone());
                }
            }
        }
        let repos = self.repo_states(planned, &top.digest, &[]).await?;
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
        let own_tags = self.put_own_tags(&repos, root).await?;
        if !own_tags && repos.iter().all(|p| p.stale.is_empty()) {
            result.status = Status::Unchanged;
        }
        Ok(())
    }

    /// After the push, the manifests' own tags (rules_img `registry_tag`
    /// operations) in each repository, where they do not point at them
    /// yet. Returns whether one was written.
    async fn put_own_tags(
        &self,
        repos: &[RepoState<'_>],
        root: &LayoutRoot,
    ) -> Result<bool, String> {
        let mut wrote = false;
        for p in repos {
            let client = &self.clients[&p.repo.host];
            for image in root.images() {
                let m = &image.manifest;
                for tag in &image.tags {
                    let current = client
                        .manifest_digest(&p.repo.repo, tag)
                        .await
                        .map_err(|e| e.to_string())?;
                    if current.as_deref() == Some(m.digest.as_str()) {
                        continue;
                    }
                    not_stopped(self.stop)?;
                    client
                        .put_manifest(&p.repo.repo, tag, &m.media_type, &m.bytes, &m.digest)
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::info!(
                        "tagged {}/{}:{tag} -> {}",
                        p.repo.host,
                        p.repo.repo,
                        m.digest
                    );
                    wrote = true;
                }
            }
        }
        Ok(wrote)
    }
}

/// Every reference an image goes to, as shown.
pub(super) fn references(planned: &PlannedImage) -> Vec<String> {
    planned
        .destinations
        .iter()
        .map(|d| d.display.clone())
        .collect()
}
