//! Image sources: turning what Bazel built into [`Image`]s (parts kvpush
//! assembles into a manifest) or, for OCI layouts, manifests already made.
//! A source never talks to a registry; the push code never looks inside a
//! tarball.

pub mod docker_archive;
pub mod oci_layout;
pub mod tar_index;

use std::path::PathBuf;

use crate::blob::FileRange;

/// One image as a source gives it: its config, and its layers in order.
#[derive(Clone, Debug)]
pub struct Image {
    /// The file the image was read from, for error messages.
    pub source: PathBuf,
    /// Raw config bytes: pushed exactly as built, so the config digest is
    /// the one Bazel computed.
    pub config: Vec<u8>,
    pub config_digest: String,
    /// `rootfs.diff_ids` of the config: what each layer must decompress to.
    pub diff_ids: Vec<String>,
    /// Each layer's bytes inside the source, gzip or not (sniffed later).
    pub layers: Vec<FileRange>,
}

impl Image {
    /// Total stored size of the layers, as found in the source.
    pub fn stored_size(&self) -> u64 {
        self.layers.iter().map(|l| l.len).sum()
    }
}

/// What a source gives for one image name.
#[derive(Clone, Debug)]
pub enum Artifact {
    /// Config and layers (`docker save` tarballs): kvpush writes the manifest.
    Image(Image),
    /// An OCI layout's manifest or index and its images: pushed byte for byte.
    Layout(oci_layout::LayoutRoot),
}
