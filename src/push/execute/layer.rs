//! A layer as the push knows it ([`Layer`]): its registry identity (digest,
//! size) and where its gzip bytes are, or how to make them on first need.
//! Built from what kvpush compressed ([`Layer::compressed`]) or from a layer
//! Bazel gzipped ([`prebuilt`]); `prepare` builds the ones the digest cache
//! knows. Plain data: it knows nothing of the run, the registry, or where
//! blobs go.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::blob::{BlobBody, FileRange, PreparedLayer};
use crate::source::{Claimant, Image, Layer as SourceLayer};

/// A layer's registry identity and where its gzip bytes are, or, when its
/// digest came from the cache, how to make them on first need.
pub(super) struct Layer {
    pub(super) diff_id: String,
    pub(super) digest: String,
    pub(super) size: u64,
    /// The layer inside its tarball, for (re)compression and messages.
    pub(super) src: FileRange,
    pub(super) index: usize,
    /// The gzip level its digest comes from, to make its bytes again (a
    /// digest `auto` found in the cache under another level than the
    /// run's); 0 for a layer kvpush never compresses.
    pub(super) level: u32,
    pub(super) body: OnceCell<Result<BlobBody, String>>,
    /// The digest came from the cache (else from compressing it this run).
    pub(super) digest_from_cache: bool,
    /// A layer Bazel gzipped, whose digest its digest file claims: hashed
    /// once, before its first upload (a re-push that uploads nothing reads
    /// nothing).
    pub(super) claimed: Option<SourceLayer>,
    /// What claimed the digest, for the error when the bytes disagree.
    pub(super) claimant: Claimant,
    pub(super) verified: OnceCell<Result<(), String>>,
}

impl Layer {
    /// The layer at `src` (layer `index` of its image), as kvpush
    /// compressed it this run.
    pub(super) fn compressed(
        diff_id: String,
        src: FileRange,
        index: usize,
        level: u32,
        prepared: PreparedLayer,
    ) -> Layer {
        Layer {
            diff_id,
            digest: prepared.digest,
            size: prepared.size,
            src,
            index,
            level,
            // A streamed layer's bytes were not kept: made again on first
            // need.
            body: match prepared.body {
                Some(body) => OnceCell::new_with(Some(Ok(body))),
                None => OnceCell::new(),
            },
            digest_from_cache: false,
            claimed: None,
            claimant: Claimant::DIGEST_FILE,
            verified: OnceCell::new(),
        }
    }
}

/// A layer of an OCI-layout-like source whose bytes are pushed as they are
/// under the digest its descriptor claims (a rules_img layer built
/// locally): checked like a [`prebuilt`] layer, once, before its first
/// upload. Its digest stands for its diff_id: it is never compressed.
pub(super) fn claimed_file(range: &FileRange, digest: &str, index: usize) -> Arc<Layer> {
    // Messages name the built file, not its runfiles link.
    let range = &FileRange {
        path: std::fs::canonicalize(&range.path).unwrap_or_else(|_| range.path.clone()),
        ..range.clone()
    };
    let claimed = SourceLayer::Compressed {
        range: range.clone(),
        digest: digest.to_string(),
        diff_id: digest.to_string(),
    };
    as_built(claimed, index, Claimant::DEPLOY_MANIFEST)
}

/// A layer pushed as Bazel wrote it: `claimed` (compressed) says where
/// its bytes are and what digests `claimant` gives them.
fn as_built(claimed: SourceLayer, index: usize, claimant: Claimant) -> Arc<Layer> {
    let SourceLayer::Compressed {
        range,
        digest,
        diff_id,
    } = &claimed
    else {
        unreachable!("only compressed layers are pushed as built");
    };
    Arc::new(Layer {
        diff_id: diff_id.clone(),
        digest: digest.clone(),
        size: range.len,
        src: range.clone(),
        index,
        level: 0,
        body: OnceCell::new_with(Some(Ok(BlobBody::Range(range.clone())))),
        digest_from_cache: false,
        claimed: Some(claimed.clone()),
        claimant,
        verified: OnceCell::new(),
    })
}

/// A layer Bazel already gzipped: its digest and diff_id come from Bazel's
/// files, its bytes are pushed as they are.
pub(super) fn prebuilt(image: &Image, index: usize) -> Result<Arc<Layer>, String> {
    let claimed = &image.layers[index];
    let SourceLayer::Compressed { diff_id, .. } = claimed else {
        unreachable!("only called for compressed layers");
    };
    if *diff_id != image.diff_ids[index] {
        return Err(format!(
            "layer {} of {}: its diff_id file says {diff_id} but the image config's diff_ids[{index}] says {}: the push target's parts are inconsistent, rebuild them with bazel",
            index + 1,
            image.source.display(),
            image.diff_ids[index]
        ));
    }
    Ok(as_built(claimed.clone(), index, Claimant::DIGEST_FILE))
}
