//! Image sources: turning what Bazel built into [`Image`]s (config and
//! layers kvpush writes a manifest for) or, for OCI layouts, manifests
//! already made ([`Artifact`]). A source never talks to a registry; the
//! push code never looks inside a tarball.
//!
//! - [`docker_archive`]: `docker save`-style tarballs (`bazel build //X:Y.tar`).
//! - [`rules_docker`]: the parts of a rules_docker push target (`bazel build
//!   //:push-X`): its script, config and already gzipped layers with their
//!   digest files, pushed byte for byte so digests stay Bazel's.
//! - [`oci_layout`]: OCI image layouts (rules_oci's `oci_image`, a directory
//!   or a tar), manifests and blobs pushed byte for byte.
//! - [`rules_img`]: rules_img `image_push` targets (deploy manifest and
//!   runfiles), as OCI-layout-like artifacts whose base layers may be remote.
//! - [`remote`]: blobs whose bytes live in another registry (rules_img's
//!   shallow base layers), as [`oci_layout::LayoutBlob::remote`] carries them.

pub mod docker_archive;
pub mod fuzzing;
pub mod oci_layout;
pub mod remote;
pub mod rules_docker;
pub mod rules_img;
pub mod tar_index;

use std::path::PathBuf;

use crate::blob::FileRange;

/// One layer as a source gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Bytes in a file, gzip or not: sniffed, hashed and compressed if need be.
    Raw(FileRange),
    /// A gzip blob Bazel already made, with the digest and diff_id its
    /// digest files claim: pushed as it is, never recompressed. The claimed
    /// digest is checked against the bytes before they are uploaded.
    Compressed {
        range: FileRange,
        digest: String,
        diff_id: String,
    },
}

impl Layer {
    /// Where the layer's bytes are.
    pub fn range(&self) -> &FileRange {
        match self {
            Layer::Raw(range) | Layer::Compressed { range, .. } => range,
        }
    }

    /// Check a compressed layer's bytes against the digest its digest file
    /// claims (one sequential read); raw layers are hashed when prepared.
    pub fn verify(&self) -> Result<(), String> {
        self.verify_claim(&Claimant::DIGEST_FILE)
    }

    /// [`Layer::verify`], the error naming `by` as what claimed the digest.
    pub fn verify_claim(&self, by: &Claimant) -> Result<(), String> {
        use sha2::{Digest as _, Sha256};
        use std::io::Read;
        let Layer::Compressed { range, digest, .. } = self else {
            return Ok(());
        };
        let failed = |e: std::io::Error| format!("cannot read layer {}: {e}", range.path.display());
        let mut reader = range.open().map_err(failed)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(failed)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if total != range.len || actual != *digest {
            return Err(format!(
                "layer {} does not match {}: its bytes hash to {actual} ({total} bytes), {} says {digest} ({} bytes); the file changed after the build: rebuild the push target with bazel",
                range.path.display(),
                by.its,
                by.says,
                range.len
            ));
        }
        Ok(())
    }
}

/// What claimed a layer's digest, for the error when its bytes disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimant {
    /// `its digest file`.
    pub its: &'static str,
    /// `Bazel's digest file`.
    pub says: &'static str,
}

impl Claimant {
    /// rules_docker's `.sha256` digest files.
    pub const DIGEST_FILE: Claimant = Claimant {
        its: "its digest file",
        says: "Bazel's digest file",
    };
    /// A layer descriptor of a rules_img deploy manifest.
    pub const DEPLOY_MANIFEST: Claimant = Claimant {
        its: "its descriptor",
        says: "the deploy manifest",
    };
}

/// A manifest digest computed at build time, to compare with kvpush's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedDigest {
    /// `sha256:<hex>`.
    pub digest: String,
    /// The file it was read from (`bazel-bin/push-virt-api.digest`).
    pub file: PathBuf,
}

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
    /// Each layer, in the config's order.
    pub layers: Vec<Layer>,
    /// The manifest digest rules_docker computed, when the source has one:
    /// the push fails rather than publish another.
    pub expected_digest: Option<ExpectedDigest>,
}

impl Image {
    /// Total stored size of the layers, as found in the source.
    pub fn stored_size(&self) -> u64 {
        self.layers.iter().map(|l| l.range().len).sum()
    }

    /// True when every layer is already compressed by Bazel.
    pub fn all_prebuilt(&self) -> bool {
        self.layers
            .iter()
            .all(|l| matches!(l, Layer::Compressed { .. }))
    }
}

/// What a source gives for one image name.
#[derive(Clone, Debug)]
pub enum Artifact {
    /// Config and layers (tarballs, push-target parts): kvpush writes the
    /// manifest.
    Image(Image),
    /// An OCI layout's manifest or index and its images: pushed byte for byte.
    Layout(oci_layout::LayoutRoot),
}

/// Map repository last components (`pre-cirros-container-disk-demo`) to
/// image names, for sources whose names carry build-time make variables.
///
/// `known` are the names the caller expects (the bundle's images): a
/// component ending with a known name after a build-time `image_prefix` is
/// matched to the longest such name. Components matching no known name are
/// kept too, with the build-time prefix seen on the known ones removed.
/// The first item of a name wins.
pub fn match_names<'a, T: Copy>(
    components: impl IntoIterator<Item = (&'a str, T)>,
    known: &[&str],
) -> std::collections::HashMap<String, T> {
    let mut matched = std::collections::HashMap::new();
    let mut unknown = Vec::new();
    let mut build_prefix = String::new();
    for (component, item) in components {
        let best = known
            .iter()
            .filter(|k| component.ends_with(**k))
            .max_by_key(|k| k.len());
        match best {
            Some(name) => {
                build_prefix = component[..component.len() - name.len()].to_string();
                matched.entry(name.to_string()).or_insert(item);
            }
            None => unknown.push((component, item)),
        }
    }
    for (component, item) in unknown {
        let name = component
            .strip_prefix(build_prefix.as_str())
            .unwrap_or(component);
        matched.entry(name.to_string()).or_insert(item);
    }
    matched
}
