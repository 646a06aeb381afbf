//! Multi-architecture manifest lists. KubeVirt builds each architecture
//! separately, pushes its images as `TAG-<arch>`, and
//! hack/push-container-manifest.sh stitches them with the docker or podman
//! CLI. kvpush does it itself: each child's manifest and config are read
//! from the registry (the config gives the platform), and a Docker manifest
//! list (an OCI index when a child is OCI) is pushed as `TAG`, in the same
//! repository. Nothing but the registry is consulted, so the final job of a
//! CI matrix needs no state from the per-architecture jobs.

use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::Semaphore;

use super::execute::{connect, put_tagged, Finished};
use super::{Destination, ImageResult, Observer, Options, Status};
use crate::blob::sha256_digest;
use crate::interrupt::Stop;
use crate::manifest::{Descriptor, Index, Parsed, Platform};
use crate::registry::client::Client;
use crate::registry::media;
use crate::targets::Target;

/// The child tag pattern KubeVirt uses: `$DOCKER_TAG-$arch`.
pub const DEFAULT_CHILD_TAG: &str = "{tag}-{arch}";

/// An architecture as Go (and image configs) name it, from the names
/// KubeVirt's scripts use (`BUILD_ARCH=x86_64,aarch64,s390x`, `uname -m`,
/// `crossbuild-aarch64`) or the GOARCH name itself.
pub fn goarch(name: &str) -> Result<&'static str, String> {
    Ok(match name.trim() {
        "amd64" | "x86_64" => "amd64",
        "arm64" | "aarch64" | "crossbuild-aarch64" => "arm64",
        "s390x" | "crossbuild-s390x" => "s390x",
        "ppc64le" => "ppc64le",
        "arm" => "arm",
        "386" | "i386" | "i686" => "386",
        "riscv64" => "riscv64",
        other => {
            return Err(format!(
                "unknown architecture {other:?}: use amd64, arm64, s390x, ppc64le (or x86_64, aarch64 as in BUILD_ARCH)"
            ))
        }
    })
}

/// Comma-separated (and repeated) architecture names, mapped to GOARCH
/// names, in order, without repeats.
pub fn parse_arches(values: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in values.iter().flat_map(|v| v.split(',')) {
        if name.trim().is_empty() {
            continue;
        }
        let arch = goarch(name)?.to_string();
        if !out.contains(&arch) {
            out.push(arch);
        }
    }
    Ok(out)
}

/// The tag of one architecture's image: `pattern` with `{tag}` and `{arch}`
/// replaced.
pub fn child_tag(pattern: &str, tag: &str, arch: &str) -> String {
    pattern.replace("{tag}", tag).replace("{arch}", arch)
}

/// The pattern must tell architectures apart and give valid tags.
pub fn validate_child_tag(pattern: &str, tags: &[String], arches: &[String]) -> Result<(), String> {
    if !pattern.contains("{arch}") {
        return Err(format!(
            "--child-tag {pattern:?} has no {{arch}}: every architecture would have the same tag"
        ));
    }
    for tag in tags {
        for arch in arches {
            super::plan::validate_tag(&child_tag(pattern, tag, arch))
                .map_err(|e| format!("--child-tag {pattern:?} with tag {tag:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Where one architecture's image is, in the list's own repository.
#[derive(Clone, Debug)]
pub struct Child {
    pub arch: String,
    /// A tag or a digest, or why the image is known to be missing.
    pub reference: Result<String, String>,
}

/// One manifest list to push.
#[derive(Clone, Debug)]
pub struct ListJob {
    pub target: Target,
    pub name: String,
    pub destination: Destination,
    pub children: Vec<Child>,
}

/// `kvpush manifest`: for each image, prefix and tag, a list of the images
/// tagged `child_tag(pattern, tag, arch)` in the same repository.
pub fn jobs_by_tag(
    names: &[(Target, String)],
    registry: &str,
    prefixes: &[String],
    tags: &[String],
    arches: &[String],
    pattern: &str,
) -> Result<Vec<ListJob>, String> {
    let mut jobs = Vec::new();
    for (target, name) in names {
        let children = |tag: &str| {
            arches
                .iter()
                .map(|arch| Child {
                    arch: arch.clone(),
                    reference: Ok(child_tag(pattern, tag, arch)),
                })
                .collect()
        };
        push_jobs(&mut jobs, *target, name, registry, prefixes, tags, children)?;
    }
    Ok(jobs)
}

/// One job per prefix and tag for image `name`, its children given by tag.
fn push_jobs(
    jobs: &mut Vec<ListJob>,
    target: Target,
    name: &str,
    registry: &str,
    prefixes: &[String],
    tags: &[String],
    children: impl Fn(&str) -> Vec<Child>,
) -> Result<(), String> {
    for prefix in prefixes {
        for tag in tags {
            jobs.push(ListJob {
                target,
                name: name.to_string(),
                destination: Destination::new(registry, prefix, name, tag)?,
                children: children(tag),
            });
        }
    }
    Ok(())
}

/// `--arch-bin`: lists of the digests this run pushed for each
/// architecture (never a tag, so a stale `TAG-<arch>` from an earlier run
/// cannot slip in). `per_arch` holds each architecture's results.
pub fn jobs_from_results(
    per_arch: &[(String, Vec<ImageResult>)],
    registry: &str,
    prefixes: &[String],
    tags: &[String],
) -> Result<Vec<ListJob>, String> {
    // Every image name any architecture has, in the order pushed.
    let mut names: Vec<(Target, String)> = Vec::new();
    for (_, results) in per_arch {
        for r in results {
            if !names.iter().any(|(t, n)| *t == r.target && *n == r.name) {
                names.push((r.target, r.name.clone()));
            }
        }
    }
    let mut jobs = Vec::new();
    for (target, name) in &names {
        let children: Vec<Child> = per_arch
            .iter()
            .map(|(arch, results)| {
                let found = results
                    .iter()
                    .find(|r| r.target == *target && r.name == *name);
                let reference = match found {
                    None => Err(format!("the {arch} tree has no image {name}")),
                    Some(r) => match (&r.status, &r.digest) {
                        (Status::Failed(e), _) => {
                            Err(format!("its {arch} image was not pushed: {e}"))
                        }
                        (status, Some(digest)) if status.landed() => Ok(digest.clone()),
                        _ => Err(format!("its {arch} image was not pushed")),
                    },
                };
                Child {
                    arch: arch.clone(),
                    reference,
                }
            })
            .collect();
        push_jobs(&mut jobs, *target, name, registry, prefixes, tags, |_| {
            children.clone()
        })?;
    }
    Ok(jobs)
}

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

/// How a child reference reads: `R/NAME:TAG-arch` or `R/NAME@sha256:...`.
fn child_display(destination: &Destination, reference: &str) -> String {
    let base = destination
        .display
        .strip_suffix(&format!(":{}", destination.tag))
        .unwrap_or(&destination.display);
    if reference.starts_with("sha256:") {
        format!("{base}@{reference}")
    } else {
        format!("{base}:{reference}")
    }
}

/// Why a child cannot be listed: not there (skippable with
/// `--allow-missing`), or there but wrong.
enum ChildError {
    Missing(String),
    Invalid(String),
}

/// Read a child's manifest and config from the registry: its descriptor
/// with the platform its config declares, checked against `child.arch`,
/// and the size of its config and layers.
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
    for child in &job.children {
        match resolve_child(client, job, child).await {
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
    use crate::targets::TARGETS;

    #[test]
    fn kubevirt_architecture_names_map_to_goarch() {
        assert_eq!(
            parse_arches(&["x86_64,aarch64,s390x".into()]).unwrap(),
            vec!["amd64", "arm64", "s390x"]
        );
        assert_eq!(
            parse_arches(&[
                "amd64".into(),
                "x86_64,arm64".into(),
                "crossbuild-aarch64".into()
            ])
            .unwrap(),
            vec!["amd64", "arm64"]
        );
        let err = parse_arches(&["amd64,sparc".into()]).unwrap_err();
        assert!(
            err.contains("\"sparc\"") && err.contains("aarch64"),
            "{err}"
        );
    }

    #[test]
    fn child_tags_follow_the_pattern_and_must_name_the_arch() {
        assert_eq!(child_tag(DEFAULT_CHILD_TAG, "v1.2", "arm64"), "v1.2-arm64");
        assert_eq!(child_tag("{arch}.{tag}", "v1", "s390x"), "s390x.v1");
        let tags = vec!["v1".to_string()];
        let arches = vec!["amd64".to_string()];
        assert!(validate_child_tag(DEFAULT_CHILD_TAG, &tags, &arches).is_ok());
        assert!(validate_child_tag("{tag}", &tags, &arches)
            .unwrap_err()
            .contains("no {arch}"));
        assert!(validate_child_tag("-{arch}", &tags, &arches)
            .unwrap_err()
            .contains("invalid tag"));
    }

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

    #[test]
    fn jobs_name_children_by_tag_or_by_pushed_digest() {
        let names = vec![(TARGETS[2], "virt-api".to_string())];
        let jobs = jobs_by_tag(
            &names,
            "localhost:5000/kv",
            &["".into()],
            &["v1".into()],
            &["amd64".into(), "arm64".into()],
            DEFAULT_CHILD_TAG,
        )
        .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].destination.display, "localhost:5000/kv/virt-api:v1");
        assert_eq!(jobs[0].children[1].reference.as_deref(), Ok("v1-arm64"));
        assert_eq!(
            child_display(&jobs[0].destination, "v1-arm64"),
            "localhost:5000/kv/virt-api:v1-arm64"
        );

        let result = |status: Status, digest: Option<&str>| ImageResult {
            digest: digest.map(str::to_string),
            status,
            ..ImageResult::new(TARGETS[2], "virt-api", Vec::new())
        };
        let per_arch = vec![
            (
                "amd64".to_string(),
                vec![result(Status::Pushed, Some("sha256:11"))],
            ),
            (
                "arm64".to_string(),
                vec![result(Status::Failed("boom".into()), None)],
            ),
            ("s390x".to_string(), Vec::new()),
        ];
        let jobs = jobs_from_results(
            &per_arch,
            "localhost:5000/kv",
            &["".into()],
            &["v1".into(), "v2".into()],
        )
        .unwrap();
        assert_eq!(jobs.len(), 2, "one list per tag");
        let c = &jobs[1].children;
        assert_eq!(c[0].reference.as_deref(), Ok("sha256:11"));
        assert!(c[1].reference.as_ref().unwrap_err().contains("boom"));
        assert!(c[2]
            .reference
            .as_ref()
            .unwrap_err()
            .contains("the s390x tree has no image virt-api"));
    }
}
