//! The vocabulary every source reader shares: [`SourceChoice`]
//! (`--source`), [`SourceKind`] (what an image was read from) and
//! [`Found`] (what a reader gave for one image). A leaf: knows no reader
//! and no dispatch.

use std::path::PathBuf;

use crate::source::Artifact;

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
    /// A rules_img deploy manifest and its runfiles: pushed byte for byte,
    /// shallow base layers taken from their origin registry.
    RulesImg,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Parts => "parts",
            SourceKind::Tarball => "tarball",
            SourceKind::Layout => "OCI layout",
            SourceKind::RulesImg => "rules_img deploy manifest",
        }
    }
}

/// What a source gave for one image.
pub struct Found {
    pub source: SourceKind,
    pub file: PathBuf,
    pub image: Result<Artifact, String>,
    pub note: Option<String>,
}

impl Found {
    /// A note on why a tarball was read rather than the parts; an OCI
    /// layout needs none (its digests are Bazel's too).
    pub fn noted(self, note: String) -> Found {
        let note = (self.source == SourceKind::Tarball).then_some(note);
        Found { note, ..self }
    }
}
