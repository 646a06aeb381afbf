//! Putting manifest lists: each child's manifest and config read from
//! the registry (its platform checked against the architecture it stands
//! for), the list (or OCI index) built, and pushed under its tag, several
//! lists at once. Which children a list names is decided before, in
//! `jobs`; nothing here reads Bazel output.

use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::Semaphore;

use super::jobs::{child_display, Child, ListJob};
use crate::blob::sha256_digest;
use crate::interrupt::Stop;
use crate::manifest::{Descriptor, Index, Parsed, Platform};
use crate::push::execute::{connect, put_tagged, Finished};
use crate::push::{ImageResult, Observer, Options, Status};
use crate::registry::client::Client;
use crate::registry::media;

/// A manifest list (or OCI index) of `children`, and its digest: Docker's
/// list when every child is Docker schema 2, an OCI index otherwise.
pub fn build_list(children: &[Descriptor]) -> (&'static str, Vec<u8>, String) {
    let media_type = if children
        .iter()
        .all(|c| c.media_type == media::DOCKER_MANIFEST)
    {
        media::DOCKER_MANIFEST_LIST
    } else {
        media::OCI_INDEX
    };
    let bytes = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type,
        manifests: children,
    })
    .expect("serialising a list cannot fail");
    let digest = sha256_digest(&bytes);
    (media_type, bytes, digest)
}

/// Why a child cannot be listed: not there (skippable with
/// `--allow-missing`), or there but wrong.
enum ChildError {
    Missing(String),
    Invalid(String),
}

/// A child's descriptor with the platform its config declares, checked
/// against `child.arch`, and the size of its config and layers: as this
/// run pushed it, else read (manifest and config) from the registry.
async fn resolve_child(
    client: &Client,
    job: &ListJob,
    child: &Child,
) -> Result<(Descriptor, u64), ChildError> {
    let reference = child.reference.as_ref().map_err(|e| {
        ChildError::Missing(format!("no {} image of {}: {e}", child.arch, job.name))
    })?;
    let shown = child_display(&job.destination, reference);
    let repo = &job.destination.repo;
    let invalid = |e: String| ChildError::Invalid(format!("{shown}: {e}"));
    if let Some((descriptor, size)) = &child.pushed {
        let platform = descriptor.platform.as_ref();
        if platform.is_some_and(|p| p.architecture == child.arch) {
            return Ok((descriptor.clone(), *size));
        }
    }
    let manifest = client
        .get_manifest(repo, reference)
        .await
        .map_err(|e| invalid(e.to_string()))?
        .ok_or_else(|| {
            ChildError::Missing(format!(
                "{shown} not found in the registry: push the {} images first (`kvpush all --tag {}` on the {} build)",
                child.arch, reference, child.arch
            ))
        })?;
    if !media::is_image_manifest(&manifest.media_type) {
        return Err(invalid(format!(
            "it is a {:?}, not a single-platform image; a manifest list lists images",
            manifest.media_type
        )));
    }
    let parsed = Parsed::from_slice(&manifest.bytes).map_err(invalid)?;
    let config = parsed
        .config
        .ok_or_else(|| invalid("the manifest names no config".into()))?;
    let size = config.size + parsed.layers.iter().map(|l| l.size).sum::<u64>();
    let config = client
        .get_blob(repo, &config.digest)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    let platform = Platform::from_config(&config).map_err(invalid)?;
    if platform.architecture != child.arch {
        return Err(invalid(format!(
            "it is a {platform} image (its config says architecture {:?}), not {}; was it pushed from the {} build?",
            platform.architecture, child.arch, child.arch
        )));
    }
    let descriptor = Descriptor {
        platform: Some(platform),
        ..Descriptor::new(
            &manifest.media_type,
            manifest.bytes.len() as u64,
            &manifest.digest,
        )
    };
    Ok((descriptor, size))
}

async fn push_list(
    client: &Client,
    job: &ListJob,
    allow_missing: bool,
    result: &mut ImageResult,
    stop: &Stop,
) -> Result<(), String> {
    let mut children = Vec::new();
    let mut size = 0;
    let mut missing = Vec::new();
    // The children are read at once: a list of three architectures costs
    // the round trips of one child, not three in a row.
    let resolved = join_all(
        job.children
            .iter()
            .map(|child| resolve_child(client, job, child)),
    )
    .await;
    for (child, outcome) in job.children.iter().zip(resolved) {
        match outcome {
            Ok((d, bytes)) => {
                children.push(d);
                size += bytes;
            }
            Err(ChildError::Invalid(e)) => return Err(e),
            Err(ChildError::Missing(e)) => missing.push((child.arch.as_str(), e)),
        }
    }
    if children.is_empty() {
        let why: Vec<String> = missing.into_iter().map(|(_, e)| e).collect();
        return Err(format!(
            "none of its images can be listed: {}",
            why.join("; ")
        ));
    }
    if let Some((_, first)) = missing.first() {
        if !allow_missing {
            return Err(format!(
                "{first}; or pass --allow-missing to list the other architectures"
            ));
        }
        for (arch, e) in &missing {
            tracing::warn!(
                "{} leaves out {arch} (--allow-missing): {e}",
                job.destination.display
            );
        }
    }
    let (media_type, bytes, digest) = build_list(&children);
    result.digest = Some(digest.clone());
    result.size = Some(size);
    result.platforms = children
        .iter()
        .filter_map(|c| c.platform.as_ref().map(ToString::to_string))
        .collect();
    let changed = put_tagged(
        client,
        &[&job.destination],
        media_type,
        &bytes,
        &digest,
        stop,
    )
    .await?;
    if !changed {
        result.status = Status::Unchanged;
    }
    Ok(())
}

/// Push every list, `options.jobs` at once, telling `observer` as each one
/// is done (list `i` has id `i`). A list fails alone (a missing or wrong
/// child); the others go on. When `stop` comes, the lists not done are
/// reported [`Status::Interrupted`].
pub async fn push_lists(
    jobs: &[ListJob],
    options: &Options,
    allow_missing: bool,
    observer: &dyn Observer,
    stop: &Stop,
) -> Result<Vec<ImageResult>, String> {
    let blank = |job: &ListJob| {
        ImageResult::new(job.target, &job.name, vec![job.destination.display.clone()])
    };
    let finished = Finished::new(observer, jobs.len());
    let work = async {
        let clients = connect(jobs.iter().map(|j| j.destination.host.as_str()), options).await?;
        let permits = Arc::new(Semaphore::new(options.jobs.max(1)));
        let (clients, finished) = (&clients, &finished);
        join_all(jobs.iter().enumerate().map(|(id, job)| {
            let permits = permits.clone();
            async move {
                let mut result = blank(job);
                let outcome = match permits.acquire().await {
                    Ok(_permit) => {
                        let client = &clients[&job.destination.host];
                        push_list(client, job, allow_missing, &mut result, stop).await
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = outcome {
                    result.status = match stop.received() {
                        Some(_) => Status::Interrupted,
                        None => Status::Failed(e),
                    };
                    result.digest = None;
                }
                finished.record(id, result);
            }
        }))
        .await;
        Ok::<_, String>(())
    };
    if let Ok(done) = stop.or(work).await {
        done?;
    }
    Ok(finished.into_results(|id| blank(&jobs[id])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(media_type: &str, arch: &str) -> Descriptor {
        Descriptor {
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                os_version: None,
                os_features: None,
                variant: None,
            }),
            ..Descriptor::new(media_type, 10, &format!("sha256:{}", "a".repeat(64)))
        }
    }

    #[test]
    fn docker_children_give_a_docker_list_and_oci_ones_an_index() {
        let (t, bytes, digest) = build_list(&[
            child(media::DOCKER_MANIFEST, "amd64"),
            child(media::DOCKER_MANIFEST, "arm64"),
        ]);
        assert_eq!(t, media::DOCKER_MANIFEST_LIST);
        assert_eq!(digest, sha256_digest(&bytes));
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with(&format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","size":10,"digest":"#,
                media::DOCKER_MANIFEST_LIST,
                media::DOCKER_MANIFEST
            )),
            "{text}"
        );
        assert!(text.contains(r#""platform":{"architecture":"arm64","os":"linux"}"#));
        let (t, _, _) = build_list(&[
            child(media::DOCKER_MANIFEST, "amd64"),
            child(media::OCI_MANIFEST, "arm64"),
        ]);
        assert_eq!(t, media::OCI_INDEX);
    }
}
