//! From what the user selected to the images to push: finds bazel-bin,
//! expands the selections into targets and bundle images ([`plan`],
//! [`image_names`]), has `sources` open each target once and read its
//! images, and names every destination (`destination`). This file owns
//! the assembly ([`Plan`], [`PlannedImage`]); it does not know how any
//! kind of source is read, nor how a reference is parsed. Local work
//! only; nothing here touches the network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::source::Artifact;
use crate::targets::{Catalog, Selection, Target};

mod destination;
mod sources;

pub use destination::{validate_tag, Destination};
use sources::{Found, TargetSources};
pub use sources::{SourceChoice, SourceKind};

/// One image to push, with what is known locally about it.
#[derive(Debug)]
pub struct PlannedImage {
    pub target: Target,
    /// Image name (`virt-api`, `cirros-container-disk-demo`), or the
    /// `push-*` target name when its source could not be read at all.
    pub name: String,
    pub source: SourceKind,
    /// The file the image is read from: push script, tarball or OCI
    /// layout (directory or tar).
    pub source_file: PathBuf,
    /// Why `--source auto` did not use the parts, and how to make them.
    pub note: Option<String>,
    /// The image, or why it cannot be pushed (missing or broken source).
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

/// What a plan needs from the configuration.
pub struct PlanInput<'a> {
    pub workspace: &'a Path,
    pub catalog: &'a Catalog,
    pub selections: &'a [Selection],
    /// `None` when only listing without a registry.
    pub registry: Option<&'a str>,
    /// Every image goes under each prefix, with each tag.
    pub image_prefixes: &'a [String],
    pub tags: &'a [String],
    /// Prefixes pushed at the first tag only (KubeVirt's IMAGE_PREFIX_ALT).
    pub alt_prefixes: &'a [String],
    pub source: SourceChoice,
}

/// A target and the bundle images asked for (`None`: all of them).
type Wanted = (Target, Option<Vec<String>>);

/// Which images of which targets the selections ask for, in the order
/// KubeVirt pushes targets.
fn wanted(input: &PlanInput) -> Result<Vec<Wanted>, String> {
    let mut wanted: BTreeMap<Target, Option<Vec<String>>> = BTreeMap::new();
    for sel in input.selections {
        match sel {
            Selection::Target(t) => {
                wanted.insert(*t, None);
            }
            Selection::BundleImage(name) => {
                let bundle = input.catalog.bundle_for(name).ok_or_else(|| {
                    format!(
                        "{name:?} names no push target, and there is no bundle to look it up in"
                    )
                })?;
                if let Some(names) = wanted.entry(bundle).or_insert_with(|| Some(Vec::new())) {
                    names.push(name.clone());
                }
            }
        }
    }
    let mut ordered: Vec<Wanted> = wanted.into_iter().collect();
    ordered.sort_by_key(|(t, _)| input.catalog.position(t));
    Ok(ordered)
}

/// Expand the selections into images, opening each source once.
pub fn plan(input: &PlanInput) -> Result<Plan, String> {
    plan_in(find_bazel_bin(input.workspace)?, input)
}

/// [`plan`] for a given bazel-bin tree (`--arch-bin` names one per
/// architecture); `input.workspace` is not used.
pub fn plan_in(bazel_bin: PathBuf, input: &PlanInput) -> Result<Plan, String> {
    let mut images = Vec::new();
    for (target, names) in wanted(input)? {
        let mut sources = TargetSources::new(target, input.source, &bazel_bin, &names);
        if !target.bundle {
            let found = sources.find(target.image);
            images.push(planned(input, target, target.image.to_string(), found));
            continue;
        }
        let names = match names {
            Some(names) => names,
            None => {
                if let Some((source, file, e)) = sources.whole_failure() {
                    // Without a readable bundle its images are unknown when
                    // BUILD.bazel does not list them: one failure for all.
                    if !input.catalog.knows_all_images(&target) {
                        let found = Found {
                            source,
                            file,
                            image: Err(e),
                            note: None,
                        };
                        images.push(planned(input, target, target.push_name(), found));
                        continue;
                    }
                }
                sources.bundle_names(input.catalog)
            }
        };
        for name in names {
            let found = sources.find(&name);
            images.push(planned(input, target, name, found));
        }
    }
    Ok(Plan { bazel_bin, images })
}

/// The image names the selections stand for, for `kvpush manifest`, which
/// reads no image: a target's own name; for a whole bundle, the catalog's
/// list, and with the built-in table the images a local bundle holds too.
/// No bazel-bin is needed.
pub fn image_names(input: &PlanInput) -> Result<Vec<(Target, String)>, String> {
    let bazel_bin = find_bazel_bin(input.workspace).ok();
    let mut out = Vec::new();
    for (target, names) in wanted(input)? {
        let names = match (names, &bazel_bin) {
            _ if !target.bundle => vec![target.image.to_string()],
            (Some(names), _) => names,
            (None, None) => target.image_names(),
            (None, Some(bin)) => {
                let mut sources = TargetSources::new(target, input.source, bin, &None);
                let present = sources.present();
                match sources.whole_failure() {
                    Some((_, _, e)) if !input.catalog.knows_all_images(&target) => {
                        if present {
                            tracing::warn!("{e}; listing the bundle images kvpush knows");
                        }
                        target.image_names()
                    }
                    _ => sources.bundle_names(input.catalog),
                }
            }
        };
        out.extend(names.into_iter().map(|n| (target, n)));
    }
    Ok(out)
}

fn planned(input: &PlanInput, target: Target, name: String, found: Found) -> PlannedImage {
    let mut destinations = Vec::new();
    let mut image = found.image;
    if let Some(registry) = input.registry {
        for prefix in input.image_prefixes {
            for tag in input.tags {
                match Destination::new(registry, prefix, &name, tag) {
                    Ok(d) => destinations.push(d),
                    Err(e) => image = Err(e),
                }
            }
        }
        let first_tag = input.tags.first();
        for prefix in input
            .alt_prefixes
            .iter()
            .filter(|p| !input.image_prefixes.contains(p))
        {
            match first_tag.map(|tag| Destination::new(registry, prefix, &name, tag)) {
                Some(Ok(d)) => destinations.push(d),
                Some(Err(e)) => image = Err(e),
                None => {}
            }
        }
    }
    PlannedImage {
        target,
        name,
        source: found.source,
        source_file: found.file,
        note: found.note,
        image,
        destinations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
