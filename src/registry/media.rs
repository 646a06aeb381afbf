//! Media types of the manifests, configs and layers kvpush reads and writes,
//! and the `--format` of the images it assembles. Plain constants: knows
//! nothing about HTTP, registries or where blobs come from.

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Every manifest kind kvpush reads or compares, for `Accept` headers:
/// without the list types a registry may answer a list's tag with the
/// digest of its linux/amd64 image instead.
pub const ACCEPT_ALL: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// A single-platform image manifest (Docker schema 2 or OCI).
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == DOCKER_MANIFEST || media_type == OCI_MANIFEST
}

/// A manifest list or image index.
pub fn is_index(media_type: &str) -> bool {
    media_type == DOCKER_MANIFEST_LIST || media_type == OCI_INDEX
}

/// The manifest format of images kvpush assembles itself (`--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Docker schema 2, as rules_docker's `format = "Docker"`.
    #[default]
    Docker,
    /// OCI image manifest and media types.
    Oci,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "docker" | "Docker" => Ok(Format::Docker),
            "oci" | "OCI" => Ok(Format::Oci),
            other => Err(format!(
                "unknown --format {other:?}: use docker (the default) or oci"
            )),
        }
    }
    pub fn manifest(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_MANIFEST,
            Format::Oci => OCI_MANIFEST,
        }
    }
    pub fn config(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_CONFIG,
            Format::Oci => OCI_CONFIG,
        }
    }
    pub fn layer_gzip(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_LAYER_GZIP,
            Format::Oci => OCI_LAYER_GZIP,
        }
    }
}
