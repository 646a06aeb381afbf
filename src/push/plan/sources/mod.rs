//! Which source loads each image: the one place in `push/` that knows
//! the kinds of Bazel output an image is read from. [`SourceChoice`] is
//! `--source`; [`SourceKind`] is what was used; `TargetSources::find` is
//! the dispatch between them. Each kind has its reader here, owning its
//! own state: `parts.rs`, `tarball.rs`, `layout.rs`, `rules_oci.rs` (an
//! `oci_push` target's layout), `rules_img.rs` (the only source of a
//! rules_img `image_push` target). Adding an image
//! source (rules_img deploy manifests, another rules_oci output) means a
//! reader in `crate::source`, its paths in `crate::targets`, a
//! [`SourceKind`] variant (`kind.rs`), a reader file here, and its branch
//! in `find` (and in `whole_failure` / `discovered_names` if it can hold a
//! bundle); nothing else in `push/`. Local work only: no network, no
//! destinations.
//!
//! Where the tarball branch looks for an image, first found wins: the
//! tarball (`P/X.tar`: a `docker save` tarball, or an OCI layout tar told
//! by its content), then the OCI layout directory `P/X/`, then
//! `P/X.oci.tar`. The bundle's images, without `build-other-images.tar`,
//! are looked for as layouts at their own labels.

use std::path::{Path, PathBuf};

use crate::targets::{Catalog, Kind, Target};

mod kind;
mod layout;
mod parts;
mod rules_img;
mod rules_oci;
mod tarball;

pub(super) use kind::Found;
pub use kind::{SourceChoice, SourceKind};
use layout::Layouts;
use parts::PartsSource;
use rules_img::RulesImgSource;
use tarball::TarballSource;

/// The ways a target's images can be read, each opened on first use.
pub(super) struct TargetSources {
    target: Target,
    choice: SourceChoice,
    parts: PartsSource,
    tarball: TarballSource,
    layouts: Layouts,
    rules_img: RulesImgSource,
    bazel_bin: PathBuf,
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
        // Image names expected, for every reader (bundle images are matched
        // by name, with build-time prefixes).
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
            parts: PartsSource::new(target, bazel_bin, known.clone()),
            tarball: TarballSource::new(target, choice, bazel_bin, known.clone()),
            layouts: Layouts::new(target, bazel_bin, known),
            rules_img: RulesImgSource::new(target, bazel_bin),
            bazel_bin: bazel_bin.to_path_buf(),
        }
    }

    /// Whether the push script or the tarball is there at all.
    pub(super) fn present(&self) -> bool {
        if self.target.kind == Kind::RulesImg {
            return self.rules_img.exists();
        }
        self.parts.exist() || self.tarball.exists()
    }

    fn parts_exist(&self) -> bool {
        self.parts.exist()
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
        if self.target.kind == Kind::RulesImg {
            return self.rules_img.read();
        }
        if self.target.kind == Kind::RulesOci {
            // Only the layout exists for it, whatever `--source` says.
            return rules_oci::read(self.target, &self.bazel_bin);
        }
        match self.choice {
            SourceChoice::Tarball => self.read_from_tarball_or_layout(name),
            SourceChoice::Parts => self.parts.read(name).unwrap_or_else(|| Found {
                source: SourceKind::Parts,
                file: self.parts.script.clone(),
                image: Err(format!(
                    "{} pushes no image {name:?}: is the name right? If the push target is stale, rebuild it with `{}`",
                    self.parts.script.display(),
                    self.target.parts_build_command()
                )),
                note: None,
            }),
            SourceChoice::Auto if self.parts_exist() => match self.parts.read(name) {
                Some(found) => found,
                None => {
                    let note = format!(
                        "{} has no push script for it; `{}` makes one",
                        self.parts.script.display(),
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
            if let Some(found) = self.layouts.read(name) {
                return found;
            }
        }
        self.tarball.read(name)
    }

    /// The names of the images found in the source(s) in use.
    fn discovered_names(&mut self) -> Vec<String> {
        if self.uses_parts() {
            self.parts.names()
        } else {
            self.tarball.names()
        }
    }

    /// Why the target cannot be read at all, if it cannot.
    pub(super) fn whole_failure(&mut self) -> Option<(SourceKind, PathBuf, String)> {
        if self.uses_parts() {
            let script = self.parts.script.clone();
            self.parts.failure().map(|e| (SourceKind::Parts, script, e))
        } else if self.layouts.uses_bundle_layouts() {
            None
        } else {
            let tarball = self.tarball.path.clone();
            self.tarball
                .failure()
                .map(|e| (SourceKind::Tarball, tarball, e))
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
