//! OCI image layouts at a label (as rules_oci builds them): the directory
//! `P/X/` or the tar `P/X.oci.tar` of `//P:X`, for a single image or for
//! each image of a bundle when there is no bundle tarball. Pushed byte for
//! byte. Knows nothing of push scripts or `docker save` tarballs, nor of
//! which source `--source` picks (that is `super`'s dispatch).

use std::path::{Path, PathBuf};

use super::kind::{Found, SourceKind};
use crate::source::oci_layout::Layout;
use crate::source::tar_index::TarIndex;
use crate::source::Artifact;
use crate::targets::{self, Target};

/// The OCI layout of `label` (`//P:X`): the directory `P/X/` or the tar
/// `P/X.oci.tar`, whichever is found first.
fn find_layout(bazel_bin: &Path, label: &str) -> Option<PathBuf> {
    let [dir, tar] = targets::layout_paths(bazel_bin, label);
    if dir.join("oci-layout").exists() || dir.join("index.json").exists() {
        Some(dir)
    } else {
        tar.is_file().then_some(tar)
    }
}

/// Read the OCI layout directory or tar at `path`.
fn open_layout(path: &Path) -> Result<Artifact, String> {
    let layout = if path.is_dir() {
        Layout::open_dir(path)
    } else {
        TarIndex::build(path).and_then(Layout::from_tar)
    };
    layout.and_then(|l| l.root()).map(Artifact::Layout)
}

/// `P/X` of the label `//P:X`, for messages.
pub(super) fn layout_dir(bazel_bin: &Path, label: &str) -> String {
    targets::layout_paths(bazel_bin, label)[0]
        .display()
        .to_string()
}

/// The OCI layouts of a target, or of each image of a bundle without
/// its tarball.
pub(super) struct Layouts {
    target: Target,
    bazel_bin: PathBuf,
    /// The bundle tarball: layouts are used without it, and messages name
    /// it.
    tarball: PathBuf,
    /// Bundle image names expected, whose labels are looked at.
    known: Vec<String>,
    /// Without a bundle tarball: whether any bundle image has an OCI layout.
    bundle_layouts: Option<bool>,
}

impl Layouts {
    pub(super) fn new(target: Target, bazel_bin: &Path, known: Vec<String>) -> Layouts {
        Layouts {
            target,
            bazel_bin: bazel_bin.to_path_buf(),
            tarball: target.tarball_path(bazel_bin),
            known,
            bundle_layouts: None,
        }
    }

    /// Without a bundle tarball, whether the bundle's images are read from
    /// OCI layouts at their labels: when at least one of them has one.
    pub(super) fn uses_bundle_layouts(&mut self) -> bool {
        if !self.target.bundle || self.tarball.exists() {
            return false;
        }
        if self.bundle_layouts.is_none() {
            let (target, bin) = (self.target, &self.bazel_bin);
            let any = self.known.iter().any(|name| {
                target
                    .image_label(name)
                    .is_some_and(|label| find_layout(bin, label).is_some())
            });
            self.bundle_layouts = Some(any);
        }
        self.bundle_layouts == Some(true)
    }

    /// Image `name` from the OCI layout at its label, when the tarball is
    /// not there; `None` to report the missing tarball instead.
    pub(super) fn read(&mut self, name: &str) -> Option<Found> {
        let target = self.target;
        if !target.bundle {
            let path = find_layout(&self.bazel_bin, target.label)?;
            let image = open_layout(&path);
            return Some(Found {
                source: SourceKind::Layout,
                file: path,
                image,
                note: None,
            });
        }
        if !self.uses_bundle_layouts() {
            return None;
        }
        let Some(label) = target.image_label(name) else {
            return Some(Found {
                source: SourceKind::Layout,
                file: self.tarball.clone(),
                image: Err(format!(
                    "the label of {name} is not known, so without {} its OCI layout cannot be found: build the bundle with `{}`",
                    self.tarball.display(),
                    target.build_command()
                )),
                note: None,
            });
        };
        let [dir, tar] = targets::layout_paths(&self.bazel_bin, label);
        let (file, image) = match find_layout(&self.bazel_bin, label) {
            Some(path) => {
                let image = open_layout(&path);
                (path, image)
            }
            None => (
                dir.clone(),
                Err(format!(
                    "no OCI layout of {name} (looked for {}/ and {}) and no bundle tarball {}: build the layout with `bazel build {label}` or the bundle with `{}`",
                    dir.display(),
                    tar.display(),
                    self.tarball.display(),
                    target.build_command()
                )),
            ),
        };
        Some(Found {
            source: SourceKind::Layout,
            file,
            image,
            note: None,
        })
    }
}
