//! The JSON of manifests, indexes and descriptors as registries and OCI
//! layouts store them: read leniently (only the fields kvpush needs), and
//! written byte for byte as Go's `encoding/json` writes go-containerregistry's
//! types (compact; fields in Go's order: mediaType, size, digest, platform),
//! as rules_docker's digester and pusher, docker and podman do. KubeVirt
//! refers to images by the digest of these bytes
//! (`bazel-bin/push-<target>.digest`), so any other key order or spacing
//! would publish a different digest.
//!
//! Own types rather than oci-spec's: oci-spec 0.10 serialises a platform's
//! `os.version` as `os_version`, and its descriptors put digest before size.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::blob::sha256_digest;
use crate::registry::media::Format;

/// A content descriptor: what a manifest says about a blob or a child manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A plain descriptor: media type, size and digest only.
    pub fn new(media_type: &str, size: u64, digest: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            size,
            digest: digest.to_string(),
            urls: Vec::new(),
            annotations: None,
            platform: None,
        }
    }
}

/// The platform of an image, as an index entry names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform an image config declares (`os`, `architecture`,
    /// `variant`, `os.version`, `os.features` at its top level).
    pub fn from_config(config: &[u8]) -> Result<Platform, String> {
        let p: Platform = serde_json::from_slice(config)
            .map_err(|e| format!("the image config has no valid os/architecture: {e}"))?;
        if p.architecture.is_empty() || p.os.is_empty() {
            return Err("the image config has an empty os or architecture".into());
        }
        Ok(p)
    }
}

impl std::fmt::Display for Platform {
    /// `linux/arm64/v8`, as docker and skopeo print platforms.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The parts of an image manifest or index that kvpush reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parsed {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    /// Image manifests only.
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Indexes and manifest lists only.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Parsed {
    pub fn from_slice(bytes: &[u8]) -> Result<Parsed, String> {
        let parsed: Parsed =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid manifest: {e}"))?;
        if parsed.schema_version != 2 {
            return Err(format!(
                "schemaVersion {} is not supported (only 2)",
                parsed.schema_version
            ));
        }
        Ok(parsed)
    }

    /// The media type: the `mediaType` field, else told from the content
    /// (OCI allows leaving it out).
    pub fn kind(&self, fallback: Option<&str>) -> String {
        if let Some(t) = &self.media_type {
            return t.clone();
        }
        if let Some(t) = fallback {
            return t.to_string();
        }
        if self.config.is_some() {
            crate::registry::media::OCI_MANIFEST.to_string()
        } else {
            crate::registry::media::OCI_INDEX.to_string()
        }
    }
}

/// `v1.Manifest` without annotations, in Go's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor,
    /// `None` for an image without layers: Go marshals rules_docker's nil
    /// slice as `null`, and the digest must follow.
    layers: Option<Vec<Descriptor>>,
}

/// A blob as a manifest names it.
#[derive(Clone, Copy, Debug)]
pub struct BlobRef<'a> {
    pub digest: &'a str,
    pub size: u64,
}

/// The image manifest bytes and their digest for a config and gzip layers,
/// with `format`'s media types (Docker schema 2 as rules_docker's
/// `format = "Docker"`, or OCI).
pub fn image_manifest(format: Format, config: BlobRef, layers: &[BlobRef]) -> (Vec<u8>, String) {
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: format.manifest(),
        config: Descriptor::new(format.config(), config.size, config.digest),
        layers: (!layers.is_empty()).then(|| {
            layers
                .iter()
                .map(|l| Descriptor::new(format.layer_gzip(), l.size, l.digest))
                .collect()
        }),
    };
    // Media types and digests hold none of the characters (<, >, &, U+2028)
    // that Go escapes and serde_json does not, so the bytes are identical.
    let bytes = serde_json::to_vec(&manifest).expect("serialising a manifest cannot fail");
    let digest = sha256_digest(&bytes);
    (bytes, digest)
}

/// A manifest list or image index as kvpush writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Index<'a> {
    pub schema_version: u32,
    pub media_type: &'a str,
    pub manifests: &'a [Descriptor],
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const L: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_manifest_bytes_are_those_of_go_encoding_json() {
        let (bytes, digest) = image_manifest(
            Format::Docker,
            BlobRef {
                digest: C,
                size: 1234,
            },
            &[BlobRef {
                digest: L,
                size: 56789,
            }],
        );
        let expected = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\
             \"config\":{{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"size\":1234,\"digest\":\"{C}\"}},\
             \"layers\":[{{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"size\":56789,\"digest\":\"{L}\"}}]}}"
        );
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
        assert_eq!(digest, sha256_digest(expected.as_bytes()));
    }

    #[test]
    fn oci_image_manifests_differ_only_in_media_types() {
        let config = BlobRef { digest: C, size: 2 };
        let layer = [BlobRef { digest: L, size: 3 }];
        let (docker, _) = image_manifest(Format::Docker, config, &layer);
        let (oci, _) = image_manifest(Format::Oci, config, &layer);
        let expected = String::from_utf8(docker)
            .unwrap()
            .replace(Format::Docker.manifest(), Format::Oci.manifest())
            .replace(Format::Docker.config(), Format::Oci.config())
            .replace(Format::Docker.layer_gzip(), Format::Oci.layer_gzip());
        assert_eq!(String::from_utf8(oci).unwrap(), expected);
    }

    #[test]
    fn no_layers_is_null_as_in_go() {
        let (bytes, _) = image_manifest(Format::Docker, BlobRef { digest: C, size: 2 }, &[]);
        assert!(
            String::from_utf8(bytes)
                .unwrap()
                .ends_with("\"layers\":null}"),
            "Go marshals a nil slice as null"
        );
    }

    #[test]
    fn descriptors_and_platforms_are_written_in_go_order() {
        let d = Descriptor {
            media_type: "m".into(),
            size: 3,
            digest: "sha256:ab".into(),
            urls: Vec::new(),
            annotations: None,
            platform: Some(Platform {
                architecture: "arm64".into(),
                os: "linux".into(),
                os_version: Some("1".into()),
                os_features: None,
                variant: Some("v8".into()),
            }),
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"mediaType":"m","size":3,"digest":"sha256:ab","platform":{"architecture":"arm64","os":"linux","os.version":"1","variant":"v8"}}"#
        );
        assert_eq!(d.platform.unwrap().to_string(), "linux/arm64/v8");
    }

    #[test]
    fn platforms_come_from_configs() {
        let p = Platform::from_config(
            br#"{"architecture":"s390x","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(p.to_string(), "linux/s390x");
        assert!(Platform::from_config(br#"{"rootfs":{}}"#).is_err());
        assert!(Platform::from_config(br#"{"architecture":"","os":"linux"}"#).is_err());
    }

    #[test]
    fn parsed_kinds() {
        let m = Parsed::from_slice(
            br#"{"schemaVersion":2,"config":{"mediaType":"c","size":1,"digest":"sha256:00"},"layers":[]}"#,
        )
        .unwrap();
        assert_eq!(m.kind(None), crate::registry::media::OCI_MANIFEST);
        let i = Parsed::from_slice(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert_eq!(i.kind(None), crate::registry::media::OCI_INDEX);
        assert!(Parsed::from_slice(br#"{"schemaVersion":1}"#).is_err());
    }
}
