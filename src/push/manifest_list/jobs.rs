//! Planning manifest lists, locally: architecture names as KubeVirt's
//! scripts spell them, the child tag pattern, and one [`ListJob`] per
//! image, prefix and tag naming each architecture's child by tag or by the
//! digest this run pushed. Must not touch the registry (that is `put`).

use crate::manifest::Descriptor;
use crate::push::plan::validate_tag;
use crate::push::{Destination, ImageResult, Status};
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
            validate_tag(&child_tag(pattern, tag, arch))
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
    /// The image as this run pushed it, with its size, when it did: no
    /// need to read it back from the registry.
    pub pushed: Option<(Descriptor, u64)>,
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
                    pushed: None,
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
                // Listed from what the push knew only when it pushed (or
                // found current) that very digest.
                let pushed = found.and_then(|r| {
                    let listed = r.listed_as.clone()?;
                    let size = r.size?;
                    (reference.as_ref().ok() == Some(&listed.digest)).then_some((listed, size))
                });
                Child {
                    arch: arch.clone(),
                    reference,
                    pushed,
                }
            })
            .collect();
        push_jobs(&mut jobs, *target, name, registry, prefixes, tags, |_| {
            children.clone()
        })?;
    }
    Ok(jobs)
}

/// How a child reference reads: `R/NAME:TAG-arch` or `R/NAME@sha256:...`.
pub(super) fn child_display(destination: &Destination, reference: &str) -> String {
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
