//! Digests and gzip: turning a layer's bytes into the blob a registry stores.
//!
//! Knows nothing of images or registries. A layer is read once: its
//! uncompressed digest (the diff_id), its compressed digest and size all come
//! out of the same pass, and compressed bytes go to a spool file so that an
//! upload (or a retried upload) never compresses again.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use futures::Stream;

use sha2::{Digest as _, Sha256};

use crate::compress;

/// gzip level for layers kvpush compresses itself: igzip's best, about
/// the size of zlib's level 2 at half its CPU (see the README's Performance).
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 3;

/// Streaming buffers: large enough for throughput, small enough that memory
/// stays flat whatever the layer size.
const BUF_SIZE: usize = 256 * 1024;

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// True when `s` is a well-formed `sha256:<64 lowercase hex>` digest.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A byte range of a file: where a layer or config lives inside a tarball.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRange {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl FileRange {
    /// Open the file positioned at the range, limited to its length.
    pub fn open(&self) -> io::Result<io::Take<File>> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        Ok(file.take(self.len))
    }

    /// Read the whole range; only for small members (configs, manifest.json).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.len as usize);
        self.open()?.read_to_end(&mut buf)?;
        if buf.len() as u64 != self.len {
            return Err(truncated(&self.path));
        }
        Ok(buf)
    }
}

fn truncated(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "{} ends before the member's data: the file is truncated",
            path.display()
        ),
    )
}

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
    pub body: BlobBody,
}

/// Largest upload chunk read from a file.
pub const UPLOAD_CHUNK: usize = 256 * 1024;
/// Chunk buffers kept for reuse: at most 4 MiB.
const POOLED_CHUNKS: usize = 16;

static CHUNK_POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Upload bytes in a buffer that goes back to a small pool once the HTTP
/// client has sent and dropped it. A fresh 256 KiB buffer per chunk is a
/// fresh mapping (main.rs sets the mmap threshold at 128 KiB), and its page
/// faults and zeroing were ~3% of a cold push's CPU.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut pool) = CHUNK_POOL.lock() {
            if pool.len() < POOLED_CHUNKS {
                pool.push(buf);
            }
        }
    }
}

/// `len` (at most [`UPLOAD_CHUNK`]) bytes of `file` from `offset`, read
/// into a pooled buffer.
fn read_chunk(file: &File, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    let buf = CHUNK_POOL
        .lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .unwrap_or_else(|| vec![0; UPLOAD_CHUNK]);
    let mut chunk = PooledChunk { buf, len };
    file.read_exact_at(&mut chunk.buf[..len], offset)?;
    Ok(bytes::Bytes::from_owner(chunk))
}

/// The bytes of `range` of the already opened `file`, in pooled chunks of
/// [`UPLOAD_CHUNK`]: an upload body.
pub fn range_chunks(
    file: File,
    range: &FileRange,
) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    let (start, len) = (range.offset, range.len);
    futures::stream::unfold(Some((file, 0u64)), move |state| async move {
        let (file, done) = state?;
        if done >= len {
            return None;
        }
        let n = (len - done).min(UPLOAD_CHUNK as u64) as usize;
        Some(match read_chunk(&file, start + done, n) {
            Ok(chunk) => (Ok(chunk), Some((file, done + n as u64))),
            Err(e) => (Err(e), None),
        })
    })
}

/// A spool file still being written, that an upload may read as it grows:
/// the writer publishes how many bytes the file holds, and when it is done.
#[derive(Debug)]
pub struct GrowingFile {
    path: PathBuf,
    written: AtomicU64,
    state: AtomicU8,
    more: tokio::sync::Notify,
}

const WRITING: u8 = 0;
const FINISHED: u8 = 1;
const FAILED: u8 = 2;

/// Bytes per chunk of a [`GrowingFile::stream`].
const STREAM_CHUNK: usize = 64 * 1024;

impl GrowingFile {
    pub fn new(path: PathBuf) -> Arc<GrowingFile> {
        Arc::new(GrowingFile {
            path,
            written: AtomicU64::new(0),
            state: AtomicU8::new(WRITING),
            more: tokio::sync::Notify::new(),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Release);
        self.more.notify_one();
    }

    /// The writer is done: every byte is in the file if `ok`, else the
    /// file is unfinished and must not be used.
    pub fn finish(&self, ok: bool) {
        self.state
            .store(if ok { FINISHED } else { FAILED }, Ordering::Release);
        self.more.notify_one();
    }

    /// The file's bytes as they are written, ending once the writer has
    /// finished, or with an error if it failed. One reader at a time.
    pub fn stream(
        self: Arc<Self>,
    ) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
        futures::stream::unfold(Some((self, None::<File>, 0u64)), |state| async move {
            let (growing, file, offset) = state?;
            loop {
                // The state first: once it says finished, `written` is final.
                let state = growing.state.load(Ordering::Acquire);
                let available = growing.written();
                if offset < available {
                    let len = (available - offset).min(STREAM_CHUNK as u64) as usize;
                    let read = match file {
                        Some(f) => Ok(f),
                        None => File::open(&growing.path),
                    }
                    .and_then(|f| read_chunk(&f, offset, len).map(|chunk| (f, chunk)));
                    return Some(match read {
                        Ok((f, chunk)) => {
                            (Ok(chunk), Some((growing, Some(f), offset + len as u64)))
                        }
                        Err(e) => (Err(e), None),
                    });
                }
                match state {
                    FINISHED => return None,
                    FAILED => {
                        let e = io::Error::other("the blob could not be written");
                        return Some((Err(e), None));
                    }
                    _ => growing.more.notified().await,
                }
            }
        })
    }
}

/// The spool file under its buffer, telling a [`GrowingFile`] what it holds.
struct PublishingFile<'a> {
    file: File,
    growing: Option<&'a GrowingFile>,
}

impl Write for PublishingFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(g) = self.growing {
            g.wrote(n);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writer adapter that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hash everything `reader` yields; returns (digest, byte count).
fn hash_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut sink = HashingWriter {
        inner: io::sink(),
        hasher: Sha256::new(),
        count: 0,
    };
    io::copy(&mut reader, &mut sink)?;
    Ok((
        format!("sha256:{}", hex::encode(sink.hasher.finalize())),
        sink.count,
    ))
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
/// diff_id; uncompressed layers are gzip-compressed into `spool` while both
/// digests are computed.
///
/// With `growing`, the spool's bytes are published as they are written
/// (an upload may stream them), and it is finished when this returns.
pub fn prepare_layer(
    src: &FileRange,
    spool: &Path,
    level: u32,
    growing: Option<&GrowingFile>,
) -> io::Result<PreparedLayer> {
    let prepared = prepare_layer_into(src, spool, level, growing);
    if let Some(g) = growing {
        g.finish(matches!(&prepared, Ok(p) if matches!(p.body, BlobBody::Spool(_))));
    }
    prepared
}

fn prepare_layer_into(
    src: &FileRange,
    spool: &Path,
    level: u32,
    growing: Option<&GrowingFile>,
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
            body: BlobBody::Range(src.clone()),
        });
    }

    // Small: compressed pieces of 32 KiB or more go to the file as they
    // are, only the small ones (headers, zero blocks) are copied to be
    // coalesced.
    let mut out = BufWriter::with_capacity(
        32 * 1024,
        PublishingFile {
            file: File::create(spool)?,
            growing,
        },
    );
    // Unbuffered: the compressor reads whole 256 KiB blocks itself.
    // Both digests come out of it, computed side by side.
    let stats = compress::compress(src.open()?, &mut out, level)?;
    if stats.input_bytes != src.len {
        return Err(truncated(&src.path));
    }
    Ok(PreparedLayer {
        diff_id: format!("sha256:{}", hex::encode(stats.input_sha256)),
        digest: format!("sha256:{}", hex::encode(stats.output_sha256)),
        size: stats.output_bytes,
        body: BlobBody::Spool(spool.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range_of(bytes: &[u8], dir: &Path, name: &str) -> FileRange {
        // Surround the member with other bytes, as inside a tarball.
        let path = dir.join(name);
        let mut data = b"HEADER--".to_vec();
        data.extend_from_slice(bytes);
        data.extend_from_slice(b"--TRAILER");
        std::fs::write(&path, data).unwrap();
        FileRange {
            path,
            offset: 8,
            len: bytes.len() as u64,
        }
    }

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

    /// Everything a [`GrowingFile::stream`] yields, read while `write`
    /// runs on another thread.
    fn stream_while(
        growing: &Arc<GrowingFile>,
        write: impl FnOnce() + Send + 'static,
    ) -> io::Result<Vec<u8>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let writer = std::thread::spawn(write);
        let got = runtime.block_on(async {
            use futures::TryStreamExt as _;
            let chunks: Vec<bytes::Bytes> = Arc::clone(growing).stream().try_collect().await?;
            Ok(chunks.concat())
        });
        writer.join().unwrap();
        got
    }

    #[test]
    fn a_range_streams_in_pooled_chunks_and_fails_on_a_short_file() {
        use futures::TryStreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..(2 * UPLOAD_CHUNK + 1000) as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let other: Vec<u8> = content
            .iter()
            .rev()
            .take(UPLOAD_CHUNK + 7)
            .copied()
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // The second blob is read into the buffers the first one gave
        // back: no old byte may show in its chunks.
        for (name, bytes, lens) in [
            ("blob", &content, &[UPLOAD_CHUNK, UPLOAD_CHUNK, 1000][..]),
            ("other", &other, &[UPLOAD_CHUNK, 7][..]),
        ] {
            let range = range_of(bytes, dir.path(), name);
            let file = File::open(&range.path).unwrap();
            let chunks: Vec<bytes::Bytes> = runtime
                .block_on(range_chunks(file, &range).try_collect())
                .unwrap();
            let got: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
            assert_eq!(got, lens);
            assert_eq!(&chunks.concat(), bytes);
        }
        let range = range_of(&content, dir.path(), "blob");
        assert!(CHUNK_POOL.lock().unwrap().len() <= POOLED_CHUNKS);
        let too_long = FileRange {
            len: range.len + 10,
            ..range.clone()
        };
        let file = File::open(&range.path).unwrap();
        let got: io::Result<Vec<bytes::Bytes>> =
            runtime.block_on(range_chunks(file, &too_long).try_collect());
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_growing_spool_streams_every_byte_of_the_layer_as_it_is_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..3_000_000u32)
            .map(|i| ((i % 251) ^ (i / 7)) as u8)
            .collect();
        let src = range_of(&content, dir.path(), "layer");
        let spool = dir.path().join("spool.gz");
        let growing = GrowingFile::new(spool.clone());
        let (g, s) = (Arc::clone(&growing), spool.clone());
        let streamed = stream_while(&growing, move || {
            prepare_layer(&src, &s, 6, Some(&g)).unwrap();
        })
        .unwrap();
        assert_eq!(streamed, std::fs::read(&spool).unwrap());
        assert_eq!(growing.written(), streamed.len() as u64);
    }

    #[test]
    fn a_growing_spool_whose_writer_fails_ends_its_stream_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = range_of(&[7u8; 100_000], dir.path(), "layer");
        src.len = 200_000; // truncated
        let growing = GrowingFile::new(dir.path().join("spool.gz"));
        let g = Arc::clone(&growing);
        let spool = dir.path().join("spool.gz");
        let streamed = stream_while(&growing, move || {
            prepare_layer(&src, &spool, 6, Some(&g)).unwrap_err();
        });
        assert!(streamed.is_err(), "a failed layer must not look complete");
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
        assert_eq!(p.body, BlobBody::Range(src));
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

    #[test]
    fn digest_syntax() {
        assert!(is_sha256_digest(&sha256_digest(b"x")));
        assert!(!is_sha256_digest("sha256:abc"));
        assert!(!is_sha256_digest("md5:0123"));
    }
}
