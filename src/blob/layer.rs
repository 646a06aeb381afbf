//! Prepared layers: where a blob's bytes are ([`BlobBody`]), and
//! [`prepare_layer`], the one pass over a layer's [`FileRange`] that yields
//! its digests, size and spool (or streamed) body. Knows
//! nothing of images, registries or uploads; compression is
//! [`crate::compress`]'s, streaming [`super::growing`]'s.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use crate::compress;

use super::digest::hash_reader;
use super::growing::GrowingBlob;
use super::range::{truncated, FileRange};

/// The fast gzip level (`auto`'s choice when the CPU is the bottleneck,
/// and the default before `auto`): igzip's best, about the size of zlib's
/// level 2 at half its CPU (see docs/performance.md).
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 3;

/// Streaming buffers: large enough for throughput, small enough that memory
/// stays flat whatever the layer size.
const BUF_SIZE: usize = 256 * 1024;

/// Where the bytes of a ready-to-upload blob are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobBody {
    /// Already compressed inside the source file: uploaded as it is.
    Range(FileRange),
    /// Compressed by kvpush into a spool file of its own.
    Spool(PathBuf),
}

impl BlobBody {
    pub fn range(&self, len: u64) -> FileRange {
        match self {
            BlobBody::Range(r) => r.clone(),
            BlobBody::Spool(path) => FileRange {
                path: path.clone(),
                offset: 0,
                len,
            },
        }
    }
}

/// A layer ready to push: its registry identity and where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedLayer {
    /// sha256 of the uncompressed tar (must equal the config's diff_id).
    pub diff_id: String,
    /// sha256 of the gzip blob (what the manifest and registry name).
    pub digest: String,
    /// Size of the gzip blob in bytes.
    pub size: u64,
    /// None when the bytes went only to a [`GrowingBlob`]'s stream.
    pub body: Option<BlobBody>,
}

impl PreparedLayer {
    /// Whether kvpush made the gzip bytes (else they are Bazel's).
    pub fn compressed_here(&self) -> bool {
        !matches!(self.body, Some(BlobBody::Range(_)))
    }
}

/// True when the range starts with the gzip magic bytes (1f 8b). The member
/// name is not trusted: rules_docker names both kinds `layer.tar` at times.
pub fn is_gzip(range: &FileRange) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut reader = range.open()?;
    let mut got = 0;
    while got < 2 {
        match reader.read(&mut magic[got..])? {
            0 => return Ok(false),
            n => got += n,
        }
    }
    Ok(magic == [0x1f, 0x8b])
}

/// Prepare one layer for upload in a single read of its bytes.
///
/// Gzip layers are hashed as they are and decompressed once to learn their
/// diff_id; uncompressed layers are gzip-compressed while both digests are
/// computed, into `spool`, or with `growing` into that blob's stream
/// (finished when this returns), and then into no file: the result has no
/// body.
pub fn prepare_layer(
    src: &FileRange,
    spool: &Path,
    level: u32,
    growing: Option<&GrowingBlob>,
) -> io::Result<PreparedLayer> {
    let prepared = prepare_layer_into(src, spool, level, growing);
    if let Some(g) = growing {
        g.finish(matches!(&prepared, Ok(p) if p.body.is_none()));
    }
    prepared
}

fn prepare_layer_into(
    src: &FileRange,
    spool: &Path,
    level: u32,
    growing: Option<&GrowingBlob>,
) -> io::Result<PreparedLayer> {
    if is_gzip(src)? {
        let (digest, size) = hash_reader(io::BufReader::with_capacity(BUF_SIZE, src.open()?))?;
        if size != src.len {
            return Err(truncated(&src.path));
        }
        let decoder =
            flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(BUF_SIZE, src.open()?));
        let (diff_id, _) = hash_reader(decoder)
            .map_err(|e| io::Error::new(e.kind(), format!("layer is not valid gzip: {e}")))?;
        return Ok(PreparedLayer {
            diff_id,
            digest,
            size,
            body: Some(BlobBody::Range(src.clone())),
        });
    }

    // Unbuffered input: the compressor reads whole 256 KiB blocks itself.
    // Both digests come out of it, computed side by side.
    let (stats, body) = match growing {
        Some(g) => (compress::compress(src.open()?, g.writer(), level)?, None),
        None => {
            // Small: compressed pieces of 32 KiB or more go to the file as
            // they are, only the small ones (headers, zero blocks) are
            // copied to be coalesced.
            let out = BufWriter::with_capacity(32 * 1024, File::create(spool)?);
            let stats = compress::compress(src.open()?, out, level)?;
            (stats, Some(BlobBody::Spool(spool.to_path_buf())))
        }
    };
    if stats.input_bytes != src.len {
        return Err(truncated(&src.path));
    }
    Ok(PreparedLayer {
        diff_id: format!("sha256:{}", hex::encode(stats.input_sha256)),
        digest: format!("sha256:{}", hex::encode(stats.output_sha256)),
        size: stats.output_bytes,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::range::tests::range_of;
    use crate::blob::sha256_digest;
    use std::io::Write as _;

    #[test]
    fn uncompressed_layer_is_compressed_deterministically_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let src = range_of(&content, dir.path(), "layer");
        let a = prepare_layer(&src, &dir.path().join("a.gz"), 6, None).unwrap();
        let b = prepare_layer(&src, &dir.path().join("b.gz"), 6, None).unwrap();
        assert_eq!(a.diff_id, sha256_digest(&content));
        assert_eq!(
            a.digest, b.digest,
            "same input must give the same blob digest"
        );
        let gz = std::fs::read(dir.path().join("a.gz")).unwrap();
        assert_eq!(a.size, gz.len() as u64);
        assert_eq!(a.digest, sha256_digest(&gz));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, content);
    }

    #[test]
    fn gzip_layer_is_used_as_is() {
        use flate2::{write::GzEncoder, Compression};
        let dir = tempfile::tempdir().unwrap();
        let content = b"some layer tar bytes".repeat(1000);
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&content).unwrap();
        let gz = enc.finish().unwrap();
        let src = range_of(&gz, dir.path(), "layer.tar");
        let p = prepare_layer(&src, &dir.path().join("unused"), 6, None).unwrap();
        assert_eq!(p.digest, sha256_digest(&gz));
        assert_eq!(p.diff_id, sha256_digest(&content));
        assert_eq!(p.size, gz.len() as u64);
        assert_eq!(p.body, Some(BlobBody::Range(src)));
        assert!(!dir.path().join("unused").exists());
    }

    #[test]
    fn truncated_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = range_of(b"short", dir.path(), "layer");
        src.len = 10_000;
        let err = prepare_layer(&src, &dir.path().join("x"), 6, None).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
