//! Blob placement: every blob of an image made present in each of its
//! repositories, once per (host, repository) per run. A blob goes to its
//! home repository first ([`homes`]: the first one in plan order that needs
//! it) and is mounted from there into the others; in one repository it is
//! skipped if present, mounted when a repository of the same registry is
//! said to hold it, uploaded otherwise ([`Run::place_in`]).
//!
//! This is the one place where a new kind of blob body plugs in: [`Source`]
//! says where a blob's bytes come from, [`Run::body`] turns that into what
//! the registry client uploads, and [`Run::place_in`] chooses the repository
//! to mount from. A layer whose bytes live in another registry
//! ([`Source::Remote`]) is mounted from the repositories of the same
//! registry said to hold it, else copied from its origin by `origin`; a
//! shared one goes to its home first like any blob, so it is fetched once
//! per host and run. Nothing here compresses (that is `prepare`) or writes a
//! manifest (`manifests`).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;

use super::layer::Layer;
use super::manifests::RepoState;
use super::origin::mount_sources;
use super::run::{cell, Home, Run};
use crate::blob::FileRange;
use crate::push::events::Stage;
use crate::push::plan::{Destination, Plan};
use crate::push::result::{ImageResult, Placement};
use crate::registry::client::{Client, MountOutcome};
use crate::source::oci_layout::{LayoutBlob, LayoutRoot};
use crate::source::remote::RemoteBlob;
use crate::source::Artifact;

/// Where a blob's bytes come from; a new kind of blob body is a new variant
/// here (see the file's doc).
pub(super) enum Source {
    Ready(FileRange),
    Layer(Arc<Layer>),
    /// Not on disk: mounted or copied from another registry.
    Remote(RemoteBlob),
}

/// A blob to place in a repository.
pub(super) struct Blob {
    /// What the blob is known by before it is prepared, for [`homes`]: a
    /// layer's diff_id, else its digest.
    pub(super) key: String,
    pub(super) digest: String,
    pub(super) size: u64,
    pub(super) source: Source,
}

/// The home repository of every blob on every host: the first repository
/// in plan order that needs it, whichever image gets there first, so that
/// a re-run after an interruption finds there what the first run uploaded
/// instead of uploading it again elsewhere. Keyed by what a blob is known
/// by before it is prepared (see [`Blob::key`]).
pub(super) fn homes(plan: &Plan) -> HashMap<(String, String), Home> {
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

/// Every blob (configs and layers) of a layout's images, shared ones as
/// often as they are named.
pub(super) fn layout_blobs(root: &LayoutRoot) -> impl Iterator<Item = &LayoutBlob> {
    root.images()
        .iter()
        .flat_map(|i| std::iter::once(&i.config).chain(&i.layers))
}

impl Run<'_> {
    /// The bytes of a blob, compressing a cached layer now if need be;
    /// true when this call did the compressing.
    async fn body(&self, blob: &Blob) -> Result<(FileRange, bool), String> {
        match &blob.source {
            Source::Ready(range) => Ok((range.clone(), false)),
            Source::Layer(layer) => self.layer_body(layer).await,
            Source::Remote(_) => unreachable!("remote blobs are copied, never read"),
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
    /// there is one, or a remote blob from the repositories of this
    /// registry its source names; upload it otherwise or when the mounts are
    /// refused (a remote blob: copied from its origin).
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
            let remote = match &blob.source {
                Source::Remote(remote) => mount_sources(remote, client.host()),
                _ => Vec::new(),
            };
            for from in from.into_iter().chain(remote).filter(|f| *f != repo) {
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
        if let Source::Remote(remote) = &blob.source {
            let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
            let (digest, size) = (&blob.digest, blob.size);
            self.copy_from_origins(client, repo, digest, size, remote, session)
                .await?;
            self.remember(client.host(), &blob.digest, repo);
            return Ok(Placement::Copied(blob.size));
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

    /// Place every blob of an image in each of its repositories, telling the
    /// observer. A repository that holds the manifest holds its blobs (a
    /// registry refuses a manifest whose blobs it lacks), so there they are
    /// counted as present without a request.
    pub(super) async fn place_all(
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
}
