//! Digests and gzip: turning a layer's bytes into the blob a registry stores.
//!
//! Knows nothing of images or registries. A layer is read once: its
//! uncompressed digest (the diff_id), its compressed digest and size all come
//! out of the same pass. Compressed bytes go to a spool file, so that an
//! upload (or a retried upload) never compresses again, or, for a layer
//! uploaded as it is compressed, through memory to that upload.
//!
//! - `digest`: `sha256:` digests, of bytes and of readers.
//! - `range`: [`FileRange`], a member's bytes inside a source file.
//! - `layer`: where a blob's bytes are, and [`prepare_layer`].
//! - `chunks`: upload bodies in pooled chunks, read from a file range.
//! - `growing`: a blob streamed to its upload while it is compressed.

mod chunks;
mod digest;
mod growing;
mod layer;
mod range;

pub use chunks::{range_chunks, UPLOAD_CHUNK};
pub use digest::{is_sha256_digest, sha256_digest};
pub use growing::{GrowingBlob, Pace};
pub use layer::{is_gzip, prepare_layer, BlobBody, PreparedLayer, DEFAULT_COMPRESSION_LEVEL};
pub use range::FileRange;
