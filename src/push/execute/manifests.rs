//! Manifests and tags: an image's manifest as rules_docker serialised it
//! ([`manifest_of`]); what each repository of an image still needs, asked
//! before any blob is touched ([`RepoState`]: its stale tags, whether it
//! holds the manifest); and a manifest written under its tags, never once a
//! signal came ([`put_tags`], [`put_tagged`]). Knows nothing of how blobs
//! get there: the caller writes a manifest only after its blobs.

use std::sync::Arc;

use futures::future::join_all;

use super::layer::Layer;
use super::run::Run;
use crate::interrupt::Stop;
use crate::manifest::{image_manifest, BlobRef};
use crate::push::plan::{Destination, PlannedImage};
use crate::registry::client::Client;
use crate::registry::media::Format;
use crate::source::Image;

/// A repository an image goes to, as the registry answered for it.
pub(super) struct RepoState<'p> {
    /// One destination of the repository (its host and name).
    pub(super) repo: &'p Destination,
    /// Its tags that do not point at the manifest yet.
    pub(super) stale: Vec<&'p Destination>,
    /// The repository holds the manifest (under another tag or none).
    pub(super) manifest_present: bool,
    /// The digest cache says every blob of the image is on this registry
    /// (an earlier run pushed it): the manifest is put first without
    /// asking for it or its blobs, and placed the long way only if the
    /// registry refuses it for a missing blob ([`Run::put_optimistic`]).
    pub(super) optimistic: bool,
}

impl Run<'_> {
    /// What each repository of an image still needs, learnt before any blob
    /// is touched: the tags not yet on `digest` (a repository whose tags all
    /// are needs nothing), and whether it holds the manifest already. The
    /// image is unchanged when no repository has a stale tag. Where the
    /// digest cache knows every one of `blobs` on the host, only the tags
    /// are asked (see [`RepoState::optimistic`]): a warm re-push costs one
    /// request per tag that is current, two per new tag.
    pub(super) async fn repo_states<'p>(
        &self,
        planned: &'p PlannedImage,
        digest: &str,
        blobs: &[&str],
    ) -> Result<Vec<RepoState<'p>>, String> {
        // Both questions at once, for every repository: one round trip.
        let asked = join_all(repositories(planned).into_iter().map(|repo| async move {
            let client = &self.clients[&repo.host];
            let tags = tags_in(planned, repo);
            if self.cached_on(&repo.host, blobs) {
                let stale = stale_tags(client, &tags, digest).await?;
                return Ok(RepoState {
                    repo,
                    // A tag on the digest: the repository holds it.
                    manifest_present: stale.len() < tags.len(),
                    stale,
                    optimistic: true,
                });
            }
            let (stale, present) = tokio::join!(
                stale_tags(client, &tags, digest),
                client.manifest_digest(&repo.repo, digest)
            );
            let present = present.map_err(|e| e.to_string())?;
            Ok::<_, String>(RepoState {
                repo,
                stale: stale?,
                manifest_present: present.as_deref() == Some(digest),
                optimistic: false,
            })
        }))
        .await;
        asked.into_iter().collect()
    }

    /// Every one of `blobs` is in the digest cache for `host`.
    fn cached_on(&self, host: &str, blobs: &[&str]) -> bool {
        match &self.cache {
            Some(cache) if !blobs.is_empty() => {
                blobs.iter().all(|d| cache.blob_repo(host, d).is_some())
            }
            _ => false,
        }
    }

    /// An optimistic repository's manifest put under its stale tags before
    /// any blob is placed. True when they all were (the repository then
    /// holds the manifest); false when the registry refused it for a blob
    /// it lacks: the caller places the blobs (asking for each, uploading
    /// the really missing ones) and puts the manifest again.
    pub(super) async fn put_optimistic(
        &self,
        p: &RepoState<'_>,
        media_type: &str,
        manifest: &[u8],
        digest: &str,
    ) -> Result<bool, String> {
        let Some((first, rest)) = p.stale.split_first() else {
            return Ok(true);
        };
        let client = &self.clients[&p.repo.host];
        not_stopped(self.stop)?;
        let stored = client
            .put_manifest_if_blobs_known(&first.repo, &first.tag, media_type, manifest, digest)
            .await
            .map_err(|e| e.to_string())?;
        if !stored {
            tracing::info!(
                "{}/{}: the registry lacks a blob the digest cache said it had; placing them",
                p.repo.host,
                p.repo.repo
            );
            return Ok(false);
        }
        put_tags(client, rest, media_type, manifest, digest, self.stop).await?;
        Ok(true)
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
pub(super) async fn put_tags(
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

/// No manifest or tag is written once a signal came, even if it came in
/// the middle of the work, before the work could be dropped.
pub(super) fn not_stopped(stop: &Stop) -> Result<(), String> {
    match stop.received() {
        Some(signal) => Err(format!("interrupted by {}", signal.name)),
        None => Ok(()),
    }
}

/// The manifest of an image in `format`, and its digest, serialised as
/// rules_docker did (see [`crate::manifest`]).
pub(super) fn manifest_of(
    format: Format,
    image: &Image,
    layers: &[Arc<Layer>],
) -> (Vec<u8>, String) {
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
