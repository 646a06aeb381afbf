//! From what the user selected to the images to push: finds bazel-bin, opens
//! each tarball (or OCI layout) once, expands the bundle, and names every
//! destination. Local work only; nothing here touches the network.
//!
//! Where an image is looked for, first found wins: the tarball
//! (`P/X.tar`: a `docker save` tarball, or an OCI layout tar told by its
//! content), then the OCI layout directory `P/X/`, then `P/X.oci.tar`. The
//! bundle's images, without `build-other-images.tar`, are looked for as
//! layouts at their own labels.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::source::docker_archive::DockerArchive;
use crate::source::oci_layout::Layout;
use crate::source::tar_index::TarIndex;
use crate::source::Artifact;
use crate::targets::{self, Selection, Target, BUNDLE_IMAGES, TARGETS};

/// Where an image goes: one repository on one registry host, under a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Host as in references (`quay.io`, `localhost:5000`, `docker.io`).
    pub host: String,
    /// Repository path on that host (`kubevirt/virt-api`).
    pub repo: String,
    pub tag: String,
    /// The reference as the user reads it: `{registry}/{prefix}{name}:{tag}`.
    pub display: String,
}

/// Check a tag against the distribution spec's grammar.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ))
    }
}

impl Destination {
    /// Build and validate `{registry}/{prefix}{name}:{tag}`.
    pub fn new(
        registry: &str,
        image_prefix: &str,
        name: &str,
        tag: &str,
    ) -> Result<Destination, String> {
        validate_tag(tag)?;
        let display = crate::targets::destination(registry, image_prefix, name, tag);
        let parsed: oci_spec::distribution::Reference = display.parse().map_err(|e| {
            format!("invalid destination {display:?} (from --registry {registry:?}, --image-prefix {image_prefix:?}): {e}")
        })?;
        if parsed.tag() != Some(tag) || parsed.digest().is_some() {
            return Err(format!("invalid destination {display:?}: --registry and --image-prefix must not hold a tag or digest"));
        }
        Ok(Destination {
            host: parsed.registry().to_string(),
            repo: parsed.repository().to_string(),
            tag: tag.to_string(),
            display,
        })
    }
}

/// One image to push, with what is known locally about it.
#[derive(Debug)]
pub struct PlannedImage {
    pub target: Target,
    /// Image name (`virt-api`, `cirros-container-disk-demo`), or the
    /// `push-*` target name when its tarball could not be read at all.
    pub name: String,
    /// The tarball or OCI layout (directory or tar) it is read from.
    pub tarball: PathBuf,
    /// The image, or why it cannot be pushed (missing or broken tarball).
    pub image: Result<Artifact, String>,
    pub destinations: Vec<Destination>,
}

/// Everything a run will push, in target order.
#[derive(Debug)]
pub struct Plan {
    pub bazel_bin: PathBuf,
    pub images: Vec<PlannedImage>,
}

/// Find `bazel-bin` in the workspace, following its symlink.
pub fn find_bazel_bin(workspace: &Path) -> Result<PathBuf, String> {
    let link = workspace.join("bazel-bin");
    match std::fs::metadata(&link) {
        Ok(meta) if meta.is_dir() => Ok(link),
        Ok(_) => Err(format!("{} is not a directory", link.display())),
        Err(_) => match std::fs::read_link(&link) {
            Ok(points_to) => Err(format!(
                "{} is a symlink to {}, which does not exist: run `bazel build` first (the output base may have been cleaned)",
                link.display(),
                points_to.display()
            )),
            Err(_) => Err(format!(
                "no bazel-bin in {}: run kvpush from the root of the KubeVirt checkout (or pass --workspace DIR) after `bazel build`",
                workspace.display()
            )),
        },
    }
}

/// An `--arch-bin` path: a bazel-bin tree itself, or a workspace holding one.
pub fn bazel_bin_at(path: &Path) -> Result<PathBuf, String> {
    if std::fs::symlink_metadata(path.join("bazel-bin")).is_ok() {
        return find_bazel_bin(path);
    }
    if path.is_dir() {
        Ok(path.to_path_buf())
    } else {
        Err(format!(
            "{} is not a directory: give a bazel-bin tree (or a workspace holding one)",
            path.display()
        ))
    }
}

/// The image names of the selections, for `kvpush manifest`, which reads
/// no image: a target's own name; for the bundle, the names in a readable
/// local bundle tarball, else the built-in table. Also returns why a bundle
/// tarball that is there could not be used.
pub fn image_names(
    selections: &[Selection],
    workspace: &Path,
) -> (Vec<(Target, String)>, Option<String>) {
    let mut sorted: Vec<&Selection> = selections.iter().collect();
    sorted.sort_by_key(|s| match s {
        Selection::Target(t) => TARGETS.iter().position(|x| x == t),
        Selection::BundleImage(_) => Some(0),
    });
    let mut names = Vec::new();
    let mut note = None;
    for sel in sorted {
        match sel {
            Selection::Target(t) if t.bundle => {
                let tarball = find_bazel_bin(workspace)
                    .ok()
                    .map(|bin| t.tarball_path(&bin))
                    .filter(|p| p.exists());
                let from_tarball = tarball.map(|p| {
                    DockerArchive::open(&p)
                        .map(|a| bundle_names(&a.entries_by_name(&BUNDLE_IMAGES)))
                });
                let bundle = match from_tarball {
                    Some(Ok(found)) => found,
                    other => {
                        if let Some(Err(e)) = other {
                            note = Some(format!("{e}; using the built-in list of bundle images"));
                        }
                        BUNDLE_IMAGES.iter().map(|s| s.to_string()).collect()
                    }
                };
                names.extend(bundle.into_iter().map(|n| (*t, n)));
            }
            Selection::Target(t) => names.push((*t, t.name.to_string())),
            Selection::BundleImage(n) => names.push((TARGETS[0], n.clone())),
        }
    }
    (names, note)
}

/// What a plan needs from the configuration.
pub struct PlanInput<'a> {
    pub workspace: &'a Path,
    pub selections: &'a [Selection],
    /// `None` when only listing without a registry.
    pub registry: Option<&'a str>,
    /// Every image goes under each prefix, with each tag.
    pub image_prefixes: &'a [String],
    pub tags: &'a [String],
}

fn missing_tarball(target: &Target, tarball: &Path) -> String {
    format!(
        "{} not found: build it with `{}` (or, with rules_oci, build the OCI layout {}/)",
        tarball.display(),
        target.build_command(),
        tarball.with_extension("").display()
    )
}

/// A tarball as found: a `docker save` archive or an OCI layout in a tar.
enum Opened {
    Docker(Arc<DockerArchive>),
    Layout(Layout),
}

/// Index a tarball once and tell from its members what it holds.
fn open_tarball(path: &Path) -> Result<Opened, String> {
    let index = TarIndex::build(path)?;
    if Layout::is_layout_tar(&index) {
        Layout::from_tar(index).map(Opened::Layout)
    } else {
        DockerArchive::from_index(index).map(|a| Opened::Docker(Arc::new(a)))
    }
}

/// The OCI layout of `label` (`//P:X`): the directory `P/X/` or the tar
/// `P/X.oci.tar`, whichever is found first; `None` when neither exists.
pub fn find_layout(bazel_bin: &Path, label: &str) -> Option<(PathBuf, Result<Artifact, String>)> {
    let [dir, tar] = targets::layout_paths(bazel_bin, label);
    if dir.join("oci-layout").exists() || dir.join("index.json").exists() {
        let root = Layout::open_dir(&dir).and_then(|l| l.root());
        return Some((dir, root.map(Artifact::Layout)));
    }
    if tar.is_file() {
        let root = TarIndex::build(&tar)
            .and_then(Layout::from_tar)
            .and_then(|l| l.root());
        return Some((tar, root.map(Artifact::Layout)));
    }
    None
}

/// Without a bundle tarball, each bundle image from the OCI layout at its
/// own label; `None` when not one of them has a layout either.
fn bundle_layouts(
    input: &PlanInput,
    bazel_bin: &Path,
    target: Target,
    names: &Option<Vec<String>>,
) -> Option<Vec<PlannedImage>> {
    let names: Vec<String> = names
        .clone()
        .unwrap_or_else(|| BUNDLE_IMAGES.iter().map(|s| s.to_string()).collect());
    let found: Vec<_> = names
        .iter()
        .map(|n| targets::bundle_label(n).and_then(|l| find_layout(bazel_bin, l)))
        .collect();
    if found.iter().all(Option::is_none) {
        return None;
    }
    let tarball = target.tarball_path(bazel_bin);
    let planned_images = names
        .into_iter()
        .zip(found)
        .map(|(name, found)| match found {
            Some((path, artifact)) => planned(input, target, name, &path, artifact),
            None => {
                let why = match targets::bundle_label(&name) {
                    Some(label) => {
                        let [dir, tar] = targets::layout_paths(bazel_bin, label);
                        format!(
                            "no OCI layout of {name} (looked for {}/ and {}) and no bundle tarball {}: build the layout with `bazel build {label}` or the bundle with `{}`",
                            dir.display(),
                            tar.display(),
                            tarball.display(),
                            target.build_command()
                        )
                    }
                    None => format!(
                        "{name} is not in kvpush's table of bundle images, so without {} its layout cannot be found: build the bundle with `{}`",
                        tarball.display(),
                        target.build_command()
                    ),
                };
                planned(input, target, name, &tarball, Err(why))
            }
        })
        .collect();
    Some(planned_images)
}

/// Expand the selections into images, opening each tarball once.
pub fn plan(input: &PlanInput) -> Result<Plan, String> {
    plan_in(find_bazel_bin(input.workspace)?, input)
}

/// [`plan`] for a given bazel-bin tree (`--arch-bin` names one per
/// architecture); `input.workspace` is not used.
pub fn plan_in(bazel_bin: PathBuf, input: &PlanInput) -> Result<Plan, String> {
    // Which bundle images were asked for (None = the whole bundle).
    let mut wanted: BTreeMap<Target, Option<Vec<String>>> = BTreeMap::new();
    for sel in input.selections {
        match sel {
            Selection::Target(t) => {
                wanted.insert(*t, None);
            }
            Selection::BundleImage(name) => {
                if let Some(names) = wanted.entry(TARGETS[0]).or_insert_with(|| Some(Vec::new())) {
                    names.push(name.clone());
                }
            }
        }
    }
    // Keep the order in which KubeVirt pushes targets.
    let mut ordered: Vec<(Target, Option<Vec<String>>)> = wanted.into_iter().collect();
    ordered.sort_by_key(|(t, _)| TARGETS.iter().position(|x| x == t));

    let mut images = Vec::new();
    for (target, names) in ordered {
        let tarball = target.tarball_path(&bazel_bin);
        if !tarball.exists() {
            if target.bundle {
                if let Some(found) = bundle_layouts(input, &bazel_bin, target, &names) {
                    images.extend(found);
                    continue;
                }
            } else if let Some((path, artifact)) = find_layout(&bazel_bin, target.label) {
                images.push(planned(
                    input,
                    target,
                    target.name.to_string(),
                    &path,
                    artifact,
                ));
                continue;
            }
        }
        let opened = if tarball.exists() {
            open_tarball(&tarball)
        } else {
            Err(missing_tarball(&target, &tarball))
        };
        let opened = match (opened, target.bundle) {
            (Ok(Opened::Layout(layout)), false) => {
                let artifact = layout.root().map(Artifact::Layout);
                images.push(planned(
                    input,
                    target,
                    target.name.to_string(),
                    &tarball,
                    artifact,
                ));
                continue;
            }
            (Ok(Opened::Layout(_)), true) => Err(format!(
                "{} is an OCI layout, which holds one image; the bundle needs a docker save tarball (`{}`) or one OCI layout per image at its label",
                tarball.display(),
                target.build_command()
            )),
            (Ok(Opened::Docker(archive)), _) => Ok(archive),
            (Err(e), _) => Err(e),
        };
        let archive = match opened {
            Ok(a) => a,
            Err(e) => {
                // Without a readable bundle its images are unknown: one
                // failure for the whole target.
                let whole = if target.bundle {
                    target.push_name()
                } else {
                    target.name.to_string()
                };
                let names = names.unwrap_or_else(|| vec![whole]);
                for name in names {
                    images.push(planned(input, target, name, &tarball, Err(e.clone())));
                }
                continue;
            }
        };
        if !target.bundle {
            let image = single_entry(&archive, target.name)
                .and_then(|i| archive.image(i))
                .map(Artifact::Image);
            images.push(planned(
                input,
                target,
                target.name.to_string(),
                &tarball,
                image,
            ));
            continue;
        }
        let mut known: Vec<&str> = BUNDLE_IMAGES.to_vec();
        if let Some(names) = &names {
            known.extend(names.iter().map(String::as_str));
        }
        let by_name = archive.entries_by_name(&known);
        let names = names.unwrap_or_else(|| bundle_names(&by_name));
        for name in names {
            let image = match by_name.get(&name) {
                Some(i) => archive.image(*i).map(Artifact::Image),
                None => Err(not_in_bundle(&name, &tarball, &by_name, &target)),
            };
            images.push(planned(input, target, name, &tarball, image));
        }
    }
    Ok(Plan { bazel_bin, images })
}

/// Every image of a bundle: the table's, then extras found in it, sorted.
pub fn bundle_names(by_name: &HashMap<String, usize>) -> Vec<String> {
    let mut all: Vec<String> = BUNDLE_IMAGES.iter().map(|s| s.to_string()).collect();
    let mut extra: Vec<String> = by_name
        .keys()
        .filter(|k| !all.contains(k))
        .cloned()
        .collect();
    extra.sort();
    all.extend(extra);
    all
}

fn not_in_bundle(
    name: &str,
    tarball: &Path,
    by_name: &HashMap<String, usize>,
    target: &Target,
) -> String {
    let mut present: Vec<&str> = by_name.keys().map(String::as_str).collect();
    present.sort();
    format!(
        "{} has no image {name:?} (it holds: {}); is the name right? If the bundle is stale, rebuild it with `{}`",
        tarball.display(),
        present.join(", "),
        target.build_command()
    )
}

/// The entry of a single-image tarball: its only one, or the one named.
fn single_entry(archive: &DockerArchive, name: &str) -> Result<usize, String> {
    if archive.entries.len() == 1 {
        return Ok(0);
    }
    archive
        .entries_by_name(&[name])
        .get(name)
        .copied()
        .ok_or_else(|| {
            format!(
                "{} holds {} images and none is tagged as {name}",
                archive.index.path.display(),
                archive.entries.len()
            )
        })
}

fn planned(
    input: &PlanInput,
    target: Target,
    name: String,
    tarball: &Path,
    image: Result<Artifact, String>,
) -> PlannedImage {
    let mut destinations = Vec::new();
    let mut image = image;
    if let Some(registry) = input.registry {
        for prefix in input.image_prefixes {
            for tag in input.tags {
                match Destination::new(registry, prefix, &name, tag) {
                    Ok(d) => destinations.push(d),
                    Err(e) => image = Err(e),
                }
            }
        }
    }
    PlannedImage {
        target,
        name,
        tarball: tarball.to_path_buf(),
        image,
        destinations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_validate() {
        let d = Destination::new("localhost:5000/kubevirt", "", "virt-api", "devel").unwrap();
        assert_eq!(
            (d.host.as_str(), d.repo.as_str(), d.tag.as_str()),
            ("localhost:5000", "kubevirt/virt-api", "devel")
        );
        assert_eq!(d.display, "localhost:5000/kubevirt/virt-api:devel");
        let d = Destination::new("quay.io/kubevirt", "kv-", "virt-api", "v1.2.3").unwrap();
        assert_eq!(d.repo, "kubevirt/kv-virt-api");
        let d = Destination::new("kubevirt", "", "virt-api", "latest").unwrap();
        assert_eq!(
            (d.host.as_str(), d.repo.as_str()),
            ("docker.io", "kubevirt/virt-api")
        );

        assert!(Destination::new("quay.io/kubevirt", "", "virt-api", "-bad")
            .unwrap_err()
            .contains("invalid tag"));
        assert!(Destination::new("quay.io/kubevirt", "", "virt-api", "a:b").is_err());
        assert!(Destination::new("Quay.io/KubeVirt", "", "virt-api", "v1").is_err());
        assert!(Destination::new("quay.io/kubevirt", "UPPER", "virt-api", "v1").is_err());
        assert!(Destination::new("quay.io/kubevirt:tag", "", "virt-api", "v1").is_err());
    }

    #[test]
    fn bazel_bin_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_bazel_bin(dir.path()).unwrap_err();
        assert!(
            err.contains("no bazel-bin") && err.contains("--workspace"),
            "{err}"
        );
        std::os::unix::fs::symlink("bazel-out/nowhere/bin", dir.path().join("bazel-bin")).unwrap();
        let err = find_bazel_bin(dir.path()).unwrap_err();
        assert!(
            err.contains("symlink to bazel-out/nowhere/bin, which does not exist"),
            "{err}"
        );
    }
}
