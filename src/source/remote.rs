//! Blobs whose bytes live in another registry: the shallow base layers of a
//! rules_img image, which never exist on disk. A source names where such a
//! blob can be fetched from and where it might be mounted from; it never
//! fetches anything itself (that is the push code's job, with its registry
//! clients). Knows nothing of Bazel, runfiles or HTTP.

/// A repository that holds a blob: fetch it with
/// `GET https://{registry}/v2/{repository}/blobs/{digest}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobOrigin {
    /// Registry host, with a port if any (`gcr.io`, `127.0.0.1:5001`).
    pub registry: String,
    /// Repository path on that registry (`distroless/base-debian12`).
    pub repository: String,
}

impl std::fmt::Display for BlobOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// rules_img's `cross_mount_hint`: a repository of the push registry (or of
/// `registry` when given) that was computed at build time to already hold
/// the base layers, so a cross-repository mount may work. Only a hint: it
/// was made for the build-time registry, and the registry may refuse (202).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrossMountHint {
    /// `None`: the registry the image is pushed to.
    pub registry: Option<String>,
    pub repository: String,
}

/// Where the bytes of a blob that is not on disk can come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteBlob {
    /// Repositories holding the blob, in the order to try them (never empty).
    pub origins: Vec<BlobOrigin>,
    /// Where a mount may be tried first, when the deploy manifest says so.
    pub cross_mount: Option<CrossMountHint>,
}

impl RemoteBlob {
    /// The origins for messages: `gcr.io/distroless/base, mirror.gcr.io/...`.
    pub fn describe_origins(&self) -> String {
        self.origins
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
