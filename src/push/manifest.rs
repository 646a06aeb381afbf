//! The Docker schema 2 manifest, serialised byte for byte as rules_docker's
//! digester and pusher did: Go's `encoding/json` of go-containerregistry's
//! `v1.Manifest` (compact; keys schemaVersion, mediaType, config, layers;
//! descriptors as mediaType, size, digest). KubeVirt refers to images by the
//! digest of these bytes (`bazel-bin/push-<target>.digest`), so any other
//! key order or spacing would publish a different digest.

use serde::Serialize;

use crate::blob::sha256_digest;
use crate::registry::media;

/// `v1.Descriptor` without its `omitempty` fields, in Go's field order.
#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    size: u64,
    digest: &'a str,
}

/// `v1.Manifest` without annotations, in Go's field order.
#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor<'a>,
    /// `None` for an image without layers: Go marshals rules_docker's nil
    /// slice as `null`, and the digest must follow.
    layers: Option<Vec<Descriptor<'a>>>,
}

/// A blob as the manifest names it.
#[derive(Clone, Copy, Debug)]
pub struct BlobRef<'a> {
    pub digest: &'a str,
    pub size: u64,
}

/// The manifest bytes and their digest for a config and gzip layers.
pub fn docker_manifest<'a>(config: BlobRef<'a>, layers: &[BlobRef<'a>]) -> (Vec<u8>, String) {
    let layer = |b: &BlobRef<'a>| Descriptor {
        media_type: media::DOCKER_LAYER_GZIP,
        size: b.size,
        digest: b.digest,
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: media::DOCKER_MANIFEST,
        config: Descriptor {
            media_type: media::DOCKER_CONFIG,
            size: config.size,
            digest: config.digest,
        },
        layers: (!layers.is_empty()).then(|| layers.iter().map(layer).collect()),
    };
    // Media types and digests hold none of the characters (<, >, &, U+2028)
    // that Go escapes and serde_json does not, so the bytes are identical.
    let bytes = serde_json::to_vec(&manifest).expect("serialising a manifest cannot fail");
    let digest = sha256_digest(&bytes);
    (bytes, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const L: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn bytes_are_those_of_go_encoding_json() {
        let (bytes, digest) = docker_manifest(
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
    fn no_layers_is_null_as_in_go() {
        let (bytes, _) = docker_manifest(BlobRef { digest: C, size: 2 }, &[]);
        assert!(
            String::from_utf8(bytes)
                .unwrap()
                .ends_with("\"layers\":null}"),
            "Go marshals a nil slice as null"
        );
    }
}
