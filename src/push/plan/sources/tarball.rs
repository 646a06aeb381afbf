//! The target's tarball (`bazel build //X:Y.tar`): a `docker save`
//! archive, or an OCI layout in a tar told by its content, indexed once,
//! and one image from it (by name in a bundle). Knows nothing of push
//! scripts or of layouts at labels (`layout.rs`), nor of which source
//! `--source` picks (that is `super`'s dispatch).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::kind::{Found, SourceChoice, SourceKind};
use super::layout::layout_dir;
use crate::source::docker_archive::DockerArchive;
use crate::source::oci_layout::Layout;
use crate::source::tar_index::TarIndex;
use crate::source::Artifact;
use crate::targets::Target;

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

/// A target's tarball, indexed on first use.
pub(super) struct TarballSource {
    target: Target,
    choice: SourceChoice,
    bazel_bin: PathBuf,
    pub(super) path: PathBuf,
    /// Bundle image names expected (for matching names with build-time
    /// prefixes).
    known: Vec<String>,
    archive: Option<Result<Opened, String>>,
}

impl TarballSource {
    pub(super) fn new(
        target: Target,
        choice: SourceChoice,
        bazel_bin: &Path,
        known: Vec<String>,
    ) -> TarballSource {
        TarballSource {
            target,
            choice,
            bazel_bin: bazel_bin.to_path_buf(),
            path: target.tarball_path(bazel_bin),
            known,
            archive: None,
        }
    }

    pub(super) fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Why the tarball cannot be read, if it cannot.
    pub(super) fn failure(&mut self) -> Option<String> {
        self.archive().as_ref().err().cloned()
    }

    fn archive(&mut self) -> &Result<Opened, String> {
        if self.archive.is_none() {
            let layout = match (self.target.bundle, self.target.label) {
                (true, _) => "one OCI layout per image at its label".to_string(),
                (false, label) => format!("the OCI layout {}/", layout_dir(&self.bazel_bin, label)),
            };
            let opened = if self.path.exists() {
                open_tarball(&self.path)
            } else if self.choice == SourceChoice::Tarball {
                Err(format!(
                    "{} not found: build it with `{}` (or, with rules_oci, {layout})",
                    self.path.display(),
                    self.target.build_command()
                ))
            } else {
                Err(format!(
                    "{} not found: build it with `{}`, or build the push target's parts (pushed with Bazel's own digests) with `{}` (or, with rules_oci, {layout})",
                    self.path.display(),
                    self.target.build_command(),
                    self.target.parts_build_command()
                ))
            };
            self.archive = Some(opened);
        }
        self.archive.as_ref().expect("just set")
    }

    /// The images a `docker save` tarball holds, by name (none when it
    /// cannot be read or is a layout).
    pub(super) fn names(&mut self) -> Vec<String> {
        let known = self.known.clone();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        match self.archive() {
            Ok(Opened::Docker(archive)) => archive.entries_by_name(&known).into_keys().collect(),
            _ => Vec::new(),
        }
    }

    /// Image `name` from the tarball, or why not (the tarball is missing,
    /// or does not hold it).
    pub(super) fn read(&mut self, name: &str) -> Found {
        let tarball = self.path.clone();
        let target = self.target;
        let known = self.known.clone();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let mut source = SourceKind::Tarball;
        let image = match self.archive() {
            Err(e) => Err(e.clone()),
            Ok(Opened::Layout(layout)) if !target.bundle => {
                source = SourceKind::Layout;
                layout.root().map(Artifact::Layout)
            }
            Ok(Opened::Layout(_)) => Err(format!(
                "{} is an OCI layout, which holds one image; the bundle needs a docker save tarball (`{}`) or one OCI layout per image at its label",
                tarball.display(),
                target.build_command()
            )),
            Ok(Opened::Docker(archive)) if !target.bundle => single_entry(archive, name)
                .and_then(|i| archive.image(i))
                .map(Artifact::Image),
            Ok(Opened::Docker(archive)) => {
                let by_name = archive.entries_by_name(&known);
                match by_name.get(name) {
                    Some(i) => archive.image(*i).map(Artifact::Image),
                    None => Err(not_in_bundle(name, &tarball, &by_name, &target)),
                }
            }
        };
        Found {
            source,
            file: tarball,
            image,
            note: None,
        }
    }
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
