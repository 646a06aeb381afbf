//! Which source loads each image: the one place in `push/` that knows
//! the kinds of Bazel output an image is read from. [`SourceChoice`] is
//! `--source`; [`SourceKind`] is what was used; `TargetSources::find` is
//! the dispatch between them. Adding an image source (rules_img deploy
//! manifests, another rules_oci output) means a reader in `crate::source`,
//! its paths in `crate::targets`, a [`SourceKind`] variant, a file beside
//! `parts.rs`, `tarball.rs` and `layout.rs` here, and its branch in `find`
//! (and `whole_failure` / `discovered_names` if it can hold a bundle);
//! nothing else in `push/`. Local work only: no network, no destinations.
//!
//! Where the tarball branch looks for an image, first found wins: the
//! tarball (`P/X.tar`: a `docker save` tarball, or an OCI layout tar told
//! by its content), then the OCI layout directory `P/X/`, then
//! `P/X.oci.tar`. The bundle's images, without `build-other-images.tar`,
//! are looked for as layouts at their own labels.

use std::path::{Path, PathBuf};

use crate::source::Artifact;
use crate::targets::{Catalog, Target};

mod layout;
mod parts;
mod tarball;

use parts::Parts;
use tarball::Opened;

/// Which of Bazel's outputs images are read from (`--source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceChoice {
    /// The push target's parts when its push script exists, else the tarball.
    #[default]
    Auto,
    /// Only rules_docker push-target parts (`bazel build //:push-X`).
    Parts,
    /// Only image tarballs (`bazel build //X:Y.tar`) or OCI layouts.
    Tarball,
}

/// Where one image is actually read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// rules_docker push-target parts: Bazel's own gzip layers and digests.
    Parts,
    /// A `docker save`-style tarball.
    Tarball,
    /// An OCI image layout (directory or tar): pushed byte for byte.
    Layout,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Parts => "parts",
            SourceKind::Tarball => "tarball",
            SourceKind::Layout => "OCI layout",
        }
    }
}

/// The two ways a target's images can be read, each opened on first use.
pub(super) struct TargetSources {
    target: Target,
    choice: SourceChoice,
    bazel_bin: PathBuf,
    pub(super) script: PathBuf,
    pub(super) tarball: PathBuf,
    /// Bundle image names expected (for matching names with build-time
    /// prefixes).
    known: Vec<String>,
    parts: Option<Result<Parts, String>>,
    archive: Option<Result<Opened, String>>,
    /// Without a bundle tarball: whether any bundle image has an OCI layout.
    bundle_layouts: Option<bool>,
}

/// What a source gave for one image.
pub(super) struct Found {
    pub(super) source: SourceKind,
    pub(super) file: PathBuf,
    pub(super) image: Result<Artifact, String>,
    pub(super) note: Option<String>,
}

impl TargetSources {
    /// The sources of `target`; `names` are the bundle images asked for
    /// (`None`: all of them).
    pub(super) fn new(
        target: Target,
        choice: SourceChoice,
        bazel_bin: &Path,
        names: &Option<Vec<String>>,
    ) -> TargetSources {
        let mut known = target.image_names();
        if !target.bundle {
            known.push(target.image.to_string());
        }
        if let Some(names) = names {
            known.extend(names.iter().cloned());
        }
        TargetSources {
            target,
            choice,
            bazel_bin: bazel_bin.to_path_buf(),
            script: target.script_path(bazel_bin),
            tarball: target.tarball_path(bazel_bin),
            known,
            parts: None,
            archive: None,
            bundle_layouts: None,
        }
    }

    fn known(&self) -> Vec<&str> {
        self.known.iter().map(String::as_str).collect()
    }

    fn parts_exist(&self) -> bool {
        self.script.exists()
    }

    fn uses_parts(&self) -> bool {
        match self.choice {
            SourceChoice::Parts => true,
            SourceChoice::Tarball => false,
            SourceChoice::Auto => self.parts_exist(),
        }
    }

    /// Read image `name` from the source `--source` asks for.
    pub(super) fn find(&mut self, name: &str) -> Found {
        match self.choice {
            SourceChoice::Tarball => self.read_from_tarball_or_layout(name),
            SourceChoice::Parts => self.read_from_parts(name).unwrap_or_else(|| Found {
                source: SourceKind::Parts,
                file: self.script.clone(),
                image: Err(format!(
                    "{} pushes no image {name:?}: is the name right? If the push target is stale, rebuild it with `{}`",
                    self.script.display(),
                    self.target.parts_build_command()
                )),
                note: None,
            }),
            SourceChoice::Auto if self.parts_exist() => match self.read_from_parts(name) {
                Some(found) => found,
                None => {
                    let note = format!(
                        "{} has no push script for it; `{}` makes one",
                        self.script.display(),
                        self.target.parts_build_command()
                    );
                    self.read_from_tarball_or_layout(name).noted(note)
                }
            },
            SourceChoice::Auto => {
                let note = format!(
                    "no push-target parts; `{}` makes them",
                    self.target.parts_build_command()
                );
                self.read_from_tarball_or_layout(name).noted(note)
            }
        }
    }

    /// The tarball branch: the tarball when it is there, else the OCI
    /// layout(s) at the label(s), else the missing tarball is reported.
    fn read_from_tarball_or_layout(&mut self, name: &str) -> Found {
        if !self.tarball.exists() {
            if let Some(found) = self.read_from_layout(name) {
                return found;
            }
        }
        self.read_from_tarball(name)
    }

    /// The names of the images found in the source(s) in use.
    fn discovered_names(&mut self) -> Vec<String> {
        if self.uses_parts() {
            match self.parts() {
                Ok(Parts::Bundle(by_name)) => by_name.keys().cloned().collect(),
                _ => Vec::new(),
            }
        } else {
            let known = self.known.clone();
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            match self.archive() {
                Ok(Opened::Docker(archive)) => {
                    archive.entries_by_name(&known).into_keys().collect()
                }
                _ => Vec::new(),
            }
        }
    }

    /// Why the target cannot be read at all, if it cannot.
    pub(super) fn whole_failure(&mut self) -> Option<(SourceKind, PathBuf, String)> {
        if self.uses_parts() {
            let script = self.script.clone();
            self.parts()
                .as_ref()
                .err()
                .map(|e| (SourceKind::Parts, script, e.clone()))
        } else if self.uses_bundle_layouts() {
            None
        } else {
            let tarball = self.tarball.clone();
            self.archive()
                .as_ref()
                .err()
                .map(|e| (SourceKind::Tarball, tarball, e.clone()))
        }
    }

    /// Every image of a whole bundle: the ones the catalog lists, and when
    /// its list may be stale (the built-in table), those found in the
    /// source in use too, sorted.
    pub(super) fn bundle_names(&mut self, catalog: &Catalog) -> Vec<String> {
        let mut all = self.target.image_names();
        if !catalog.knows_all_images(&self.target) {
            let mut extra: Vec<String> = self
                .discovered_names()
                .into_iter()
                .filter(|k| !all.contains(k))
                .collect();
            extra.sort();
            extra.dedup();
            all.extend(extra);
        }
        all
    }
}

impl Found {
    /// A note on why a tarball was read rather than the parts; an OCI
    /// layout needs none (its digests are Bazel's too).
    fn noted(self, note: String) -> Found {
        let note = (self.source == SourceKind::Tarball).then_some(note);
        Found { note, ..self }
    }
}
