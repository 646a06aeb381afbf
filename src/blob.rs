//! Digests and gzip: turning a layer's bytes into the blob a registry stores.
//!
//! Knows nothing of images or registries. A layer is read once: its
//! uncompressed digest (the diff_id), its compressed digest and size all come
//! out of the same pass. Compressed bytes go to a spool file, so that an
//! upload (or a retried upload) never compresses again, or, for a layer
//! uploaded as it is compressed, through memory to that upload.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::Stream;

use sha2::{Digest as _, Sha256};

use crate::buffers;
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
    /// None when the bytes went only to a [`GrowingBlob`]'s stream.
    pub body: Option<BlobBody>,
}

impl PreparedLayer {
    /// Whether kvpush made the gzip bytes (else they are Bazel's).
    pub fn compressed_here(&self) -> bool {
        !matches!(self.body, Some(BlobBody::Range(_)))
    }
}

/// Largest upload chunk: read from a file, or filled by a streamed blob's
/// writer.
pub const UPLOAD_CHUNK: usize = 256 * 1024;
/// Upload bytes in a buffer that goes back to the [`buffers`] pool once
/// the HTTP client has sent and dropped it.
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
        buffers::give(std::mem::take(&mut self.buf));
    }
}

/// `len` (at most [`UPLOAD_CHUNK`]) bytes of `file` from `offset`, read
/// into a pooled buffer.
fn read_chunk(file: &File, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    let mut buf = buffers::take();
    buf.resize(UPLOAD_CHUNK, 0);
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

/// Bytes of streamed blobs held in memory at once, over every stream of the
/// process; past it a blob's writer waits for its upload, or spills.
const STREAM_MEMORY: usize = 4 << 20;
static STREAM_QUEUED: AtomicUsize = AtomicUsize::new(0);
/// Chunks a blob may always have queued, whatever the other streams hold:
/// its upload never waits for memory that other uploads have taken.
const OWN_CHUNKS: usize = 2;

/// How long a blob's writer may wait for its upload before it spills the
/// rest instead: `slack`, plus the time the bytes written so far would take
/// at `rate` bytes per second. An upload that keeps that pace (a registry
/// on this machine or a fast network) paces the compressor, whose bytes
/// then never touch the disk; a slower one leaves it free to compress
/// other layers. (The wait is in the compressor's writer, which holds one
/// pool thread; the others go on deflating.)
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub rate: f64,
    pub slack: std::time::Duration,
}

impl Pace {
    /// 64 MiB/s and 50 ms. Against the bench's local registry, spilling
    /// the container-disk layers (170 of their 231 MiB) and reading them
    /// back was ~6% of a cold push's CPU.
    pub const DEFAULT: Pace = Pace {
        rate: (64 << 20) as f64,
        slack: std::time::Duration::from_millis(50),
    };

    /// The wait allowed once `written` bytes are written.
    fn allowance(&self, written: u64) -> std::time::Duration {
        self.slack + std::time::Duration::from_secs_f64(written as f64 / self.rate)
    }
}

/// A blob still being compressed, that an upload reads as it grows.
///
/// Its bytes pass through memory, not a spool file: writing every layer
/// to the page cache and reading it back was a tenth of a cold push's CPU.
/// When the upload falls behind by more than [`STREAM_MEMORY`] over all
/// streams, the writer waits for it while it keeps its [`Pace`]; once it
/// does not (a slow network), the writer goes on into a spill file (at
/// each byte's offset in the blob) which the upload reads next, so
/// compression does not wait for a slow network. Once a stream has taken bytes
/// nothing is kept: a blob needed again (a failed stream) is compressed
/// again, to the same bytes. A blob no stream read is kept whole, see
/// [`GrowingBlob::keep`].
#[derive(Debug)]
pub struct GrowingBlob {
    spill_path: PathBuf,
    pace: Pace,
    inner: std::sync::Mutex<Growing>,
    /// Wakes the stream: bytes were written, or the writer finished.
    more: tokio::sync::Notify,
    /// Wakes the writer: the stream took a chunk, or nobody will.
    room: std::sync::Condvar,
}

#[derive(Debug)]
struct Growing {
    /// Written, not yet streamed, in order; all before the spill file.
    queue: std::collections::VecDeque<bytes::Bytes>,
    /// Offset in the blob of the queue's first byte.
    queue_start: u64,
    /// Offset in the blob from which bytes are in the spill file.
    spill_start: Option<u64>,
    written: u64,
    state: u8,
    /// A stream took bytes: the blob can no longer be kept whole.
    taken: bool,
    /// A stream that took bytes stopped: what is written is dropped.
    dropping: bool,
    /// The spill file holds the whole blob and outlives this.
    kept: bool,
    /// How often, and how long in all, the writer has waited for the
    /// stream to take bytes.
    waits: u32,
    waited: std::time::Duration,
}

impl Growing {
    /// Drop what is queued and give its bytes back to [`STREAM_MEMORY`].
    fn free_queue(&mut self) {
        let queued: usize = self.queue.drain(..).map(|c| c.len()).sum();
        STREAM_QUEUED.fetch_sub(queued, Ordering::Relaxed);
    }
}

const WRITING: u8 = 0;
const FINISHED: u8 = 1;
const FAILED: u8 = 2;

impl GrowingBlob {
    /// A blob that spills, if it must, to `spill_path`.
    pub fn new(spill_path: PathBuf) -> Arc<GrowingBlob> {
        GrowingBlob::with_pace(spill_path, Pace::DEFAULT)
    }

    /// A blob whose writer waits for a stream that keeps `pace`.
    pub fn with_pace(spill_path: PathBuf, pace: Pace) -> Arc<GrowingBlob> {
        Arc::new(GrowingBlob {
            spill_path,
            pace,
            inner: std::sync::Mutex::new(Growing {
                queue: Default::default(),
                queue_start: 0,
                spill_start: None,
                written: 0,
                state: WRITING,
                taken: false,
                dropping: false,
                kept: false,
                waits: 0,
                waited: std::time::Duration::ZERO,
            }),
            more: tokio::sync::Notify::new(),
            room: std::sync::Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Growing> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.lock().written
    }

    /// The writer is done: every byte was written if `ok`, else the blob
    /// is unfinished and its stream ends with an error.
    pub fn finish(&self, ok: bool) {
        self.lock().state = if ok { FINISHED } else { FAILED };
        self.more.notify_one();
    }

    /// No stream will read the rest. If one took bytes, what is queued is
    /// freed and what comes dropped; else the rest goes to the spill file,
    /// for [`GrowingBlob::keep`].
    pub fn abandon(&self) {
        let mut g = self.lock();
        if g.taken {
            g.dropping = true;
            g.free_queue();
        } else if g.spill_start.is_none() {
            g.spill_start = Some(g.written);
        }
        self.room.notify_all();
    }

    /// Once the writer has finished: if no stream took any of the blob,
    /// write what is still in memory to the spill file, which then holds
    /// the whole blob, and return that file (left in place when this is
    /// dropped); else None.
    pub fn keep(&self) -> io::Result<Option<PathBuf>> {
        let mut g = self.lock();
        if g.taken || g.state != FINISHED {
            return Ok(None);
        }
        let file = self.open_spill()?;
        let mut at = g.queue_start;
        while let Some(chunk) = g.queue.pop_front() {
            STREAM_QUEUED.fetch_sub(chunk.len(), Ordering::Relaxed);
            file.write_all_at(&chunk, at)?;
            at += chunk.len() as u64;
        }
        g.queue_start = at;
        g.kept = true;
        Ok(Some(self.spill_path.clone()))
    }

    /// The spill file, for writing at blob offsets: created if need be,
    /// never truncated (the writer and [`GrowingBlob::keep`] both fill it).
    fn open_spill(&self) -> io::Result<File> {
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.spill_path)
    }

    /// The writer that feeds this blob.
    fn writer(&self) -> GrowingWriter<'_> {
        GrowingWriter {
            blob: self,
            chunk: Vec::new(),
            spill: None,
        }
    }

    /// Queue `chunk` once there is memory for it, waiting for the stream
    /// while it keeps its [`Pace`]; else write it to the spill file, as
    /// every chunk after it.
    fn push(&self, chunk: bytes::Bytes, spill: &mut Option<File>) -> io::Result<()> {
        let len = chunk.len();
        let at = {
            let mut g = self.lock();
            loop {
                if g.dropping {
                    g.written += len as u64;
                    return Ok(());
                }
                if g.spill_start.is_some() {
                    break;
                }
                let fits = STREAM_QUEUED.fetch_add(len, Ordering::Relaxed) + len <= STREAM_MEMORY
                    || g.queue.len() < OWN_CHUNKS;
                if fits {
                    g.queue.push_back(chunk);
                    g.written += len as u64;
                    drop(g);
                    self.more.notify_one();
                    return Ok(());
                }
                STREAM_QUEUED.fetch_sub(len, Ordering::Relaxed);
                let allowed = self.pace.allowance(g.written);
                if g.waited >= allowed {
                    g.spill_start = Some(g.written);
                    tracing::debug!(
                        "upload behind by {} MiB of compressed layers, slower than {} MiB/s: spilling to {}",
                        STREAM_MEMORY >> 20,
                        self.pace.rate as u64 >> 20,
                        self.spill_path.display()
                    );
                    break;
                }
                let timeout = allowed - g.waited;
                g.waits += 1;
                let started = std::time::Instant::now();
                g = match self.room.wait_timeout(g, timeout) {
                    Ok((g, _)) => g,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                g.waited += started.elapsed();
            }
            g.written
        };
        let file = match spill {
            Some(f) => f,
            None => spill.insert(self.open_spill()?),
        };
        file.write_all_at(&chunk, at)?;
        self.lock().written += len as u64;
        self.more.notify_one();
        Ok(())
    }

    /// The blob's bytes as they are written, ending once the writer has
    /// finished, or with an error if it failed. One reader at a time; a
    /// reader dropped before the end abandons the blob.
    pub fn stream(
        self: Arc<Self>,
    ) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
        let reader = GrowingReader {
            blob: self,
            file: None,
            offset: 0,
            done: false,
        };
        futures::stream::unfold(Some(reader), |state| async move {
            let mut reader = state?;
            loop {
                let next = reader.blob.next_read(reader.offset);
                let (at, len) = match next {
                    Next::Queued(chunk) => {
                        reader.offset += chunk.len() as u64;
                        return Some((Ok(chunk), Some(reader)));
                    }
                    Next::Spilled { at, len } => (at, len),
                    Next::End => {
                        reader.done = true;
                        return None;
                    }
                    Next::Failed => {
                        let e = io::Error::other("the blob could not be written");
                        return Some((Err(e), None));
                    }
                    Next::Wait => {
                        reader.blob.more.notified().await;
                        continue;
                    }
                };
                let read = match reader.file.take() {
                    Some(f) => Ok(f),
                    None => File::open(&reader.blob.spill_path),
                }
                .and_then(|f| read_chunk(&f, at, len).map(|chunk| (f, chunk)));
                return Some(match read {
                    Ok((f, chunk)) => {
                        reader.file = Some(f);
                        reader.offset += len as u64;
                        (Ok(chunk), Some(reader))
                    }
                    Err(e) => (Err(e), None),
                });
            }
        })
    }

    /// What a reader at `offset` gets next.
    fn next_read(&self, offset: u64) -> Next {
        let mut g = self.lock();
        if let Some(chunk) = g.queue.pop_front() {
            STREAM_QUEUED.fetch_sub(chunk.len(), Ordering::Relaxed);
            g.queue_start += chunk.len() as u64;
            g.taken = true;
            self.room.notify_one();
            return Next::Queued(chunk);
        }
        match g.spill_start {
            Some(_) if offset < g.written => {
                g.taken = true;
                Next::Spilled {
                    at: offset,
                    len: (g.written - offset).min(UPLOAD_CHUNK as u64) as usize,
                }
            }
            _ if g.state == FINISHED => Next::End,
            _ if g.state == FAILED => Next::Failed,
            _ => Next::Wait,
        }
    }
}

/// See [`GrowingBlob::next_read`].
enum Next {
    Queued(bytes::Bytes),
    /// `len` bytes of the spill file, from `at` (an offset in the blob).
    Spilled {
        at: u64,
        len: usize,
    },
    End,
    Failed,
    Wait,
}

impl Drop for GrowingBlob {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        g.free_queue();
        if g.waits > 0 {
            tracing::debug!(
                "the compressor waited {} times, {} ms in all, for the upload of {}",
                g.waits,
                g.waited.as_millis(),
                self.spill_path.display()
            );
        }
        if let (Some(start), false) = (g.spill_start, g.kept) {
            tracing::debug!(
                "{} of {} bytes went through {}",
                g.written - start,
                g.written,
                self.spill_path.display()
            );
            let _ = std::fs::remove_file(&self.spill_path);
        }
    }
}

/// A [`GrowingBlob::stream`]'s place in the blob.
struct GrowingReader {
    blob: Arc<GrowingBlob>,
    file: Option<File>,
    offset: u64,
    done: bool,
}

impl Drop for GrowingReader {
    fn drop(&mut self) {
        if !self.done {
            self.blob.abandon();
        }
    }
}

/// Fills pooled upload chunks and hands each full one to its blob.
struct GrowingWriter<'a> {
    blob: &'a GrowingBlob,
    chunk: Vec<u8>,
    spill: Option<File>,
}

impl Write for GrowingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.chunk.capacity() == 0 {
            self.chunk = buffers::take();
            self.chunk.clear();
            self.chunk.reserve_exact(UPLOAD_CHUNK);
        }
        let n = buf.len().min(UPLOAD_CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == UPLOAD_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.chunk);
        self.send(buf)
    }
}

impl GrowingWriter<'_> {
    /// Hand all of `buf` to the blob as one chunk.
    fn send(&mut self, buf: Vec<u8>) -> io::Result<()> {
        let len = buf.len();
        let chunk = bytes::Bytes::from_owner(PooledChunk { buf, len });
        self.blob.push(chunk, &mut self.spill)
    }
}

/// Pieces at least this long are queued in their own buffer, not copied
/// into the chunk being filled.
const OWN_CHUNK_MIN: usize = 64 * 1024;

impl compress::GzipSink for GrowingWriter<'_> {
    /// A large piece (a compressed block, up to a few hundred KiB) becomes
    /// a chunk of its own: copying it into upload chunks was 2% of a cold
    /// push's CPU.
    fn write_piece(&mut self, piece: &mut Vec<u8>) -> io::Result<()> {
        if piece.len() < OWN_CHUNK_MIN {
            return self.write_all(piece);
        }
        self.flush()?;
        let buf = std::mem::replace(piece, buffers::take());
        piece.clear();
        self.send(buf)
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
    // Bytes that do not compress: stored, so the output is as large.
    use crate::compress::tests::pseudo_random;

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

    /// Everything a [`GrowingBlob::stream`] yields, read while `write`
    /// runs on another thread.
    fn stream_while(
        growing: &Arc<GrowingBlob>,
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
        assert!(buffers::kept() <= buffers::KEPT);
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
    fn a_growing_blob_streams_the_bytes_a_spool_would_hold() {
        let dir = tempfile::tempdir().unwrap();
        // Blocks that shrink to small pieces (copied into upload chunks)
        // and random ones (stored: queued in their own buffers).
        let mut content: Vec<u8> = (0..3_000_000u32)
            .map(|i| ((i % 251) ^ (i / 7)) as u8)
            .collect();
        content.extend(pseudo_random(1_000_000, 3));
        let src = range_of(&content, dir.path(), "layer");
        let spool = dir.path().join("spool.gz");
        let spooled = prepare_layer(&src, &spool, 6, None).unwrap();
        let spill = dir.path().join("spill.gz");
        let growing = GrowingBlob::new(spill.clone());
        let g = Arc::clone(&growing);
        let (tx, rx) = std::sync::mpsc::channel();
        let streamed = stream_while(&growing, move || {
            tx.send(prepare_layer(&src, &spill, 6, Some(&g)).unwrap())
                .unwrap();
        })
        .unwrap();
        let prepared = rx.recv().unwrap();
        assert_eq!(streamed, std::fs::read(&spool).unwrap());
        assert_eq!(growing.written(), streamed.len() as u64);
        assert_eq!(
            (&prepared.digest, &prepared.diff_id, prepared.size),
            (&spooled.digest, &spooled.diff_id, spooled.size)
        );
        assert_eq!(prepared.body, None, "a streamed layer keeps no copy");
        assert!(prepared.compressed_here());
    }

    /// `len` random bytes as layer `name` in `dir`, and that layer compressed
    /// at level 1 to the spool file `name.gz` the ordinary way.
    fn spooled_random_layer(
        dir: &Path,
        name: &str,
        len: usize,
        seed: u64,
    ) -> (FileRange, PathBuf, PreparedLayer) {
        let src = range_of(&pseudo_random(len, seed), dir, name);
        let spool = dir.join(format!("{name}.gz"));
        let prepared = prepare_layer(&src, &spool, 1, None).unwrap();
        (src, spool, prepared)
    }

    #[test]
    fn a_blob_the_upload_lags_behind_spills_to_its_file_and_streams_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // Three times what all streams may hold in memory, written before
        // the stream reads anything.
        let (src, spool, _) = spooled_random_layer(dir.path(), "layer", 3 * STREAM_MEMORY, 7);
        let spill = dir.path().join("spill.gz");
        // An upload that keeps no pace at all: no waiting for it.
        let impatient = Pace {
            rate: f64::INFINITY,
            slack: std::time::Duration::ZERO,
        };
        let growing = GrowingBlob::with_pace(spill.clone(), impatient);
        prepare_layer(&src, &spill, 1, Some(&growing)).unwrap();
        assert!(spill.exists(), "the rest of the blob went to its file");
        let streamed = stream_while(&growing, || {}).unwrap();
        assert_eq!(streamed, std::fs::read(&spool).unwrap());
        drop(growing);
        assert!(!spill.exists(), "the spill file goes with its blob");
    }

    #[test]
    fn an_upload_that_keeps_pace_is_waited_for_and_nothing_spills() {
        let dir = tempfile::tempdir().unwrap();
        let (src, spool, _) = spooled_random_layer(dir.path(), "layer", 3 * STREAM_MEMORY, 9);
        let spill = dir.path().join("spill.gz");
        let patient = Pace {
            rate: 1.0,
            slack: std::time::Duration::from_secs(600),
        };
        let growing = GrowingBlob::with_pace(spill.clone(), patient);
        let g = Arc::clone(&growing);
        let writer = std::thread::spawn(move || {
            prepare_layer(&src, &g.spill_path.clone(), 1, Some(&g)).unwrap();
        });
        // Read nothing until the writer waits (it must, to finish: the blob
        // is three times what may be queued), then everything.
        while growing.lock().waits == 0 && !writer.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let streamed = stream_while(&growing, || {}).unwrap();
        writer.join().unwrap();
        assert_eq!(streamed, std::fs::read(&spool).unwrap());
        assert!(!spill.exists(), "nothing went to the spill file");
        assert!(growing.lock().waits > 0);
    }

    #[test]
    fn a_blob_no_stream_read_is_kept_whole_as_its_spool() {
        let dir = tempfile::tempdir().unwrap();
        // One that fits in memory, and one that spills part of itself.
        for (name, len) in [("small", 100_000), ("large", 3 * STREAM_MEMORY)] {
            let (src, spool, expected) = spooled_random_layer(dir.path(), name, len, 5);
            let spill = dir.path().join(format!("{name}-spill.gz"));
            let growing = GrowingBlob::new(spill.clone());
            let prepared = prepare_layer(&src, &spill, 1, Some(&growing)).unwrap();
            // The registry turned out to have the image: nobody streams.
            growing.abandon();
            assert_eq!(growing.keep().unwrap(), Some(spill.clone()));
            drop(growing);
            assert_eq!(prepared.digest, expected.digest);
            assert_eq!(
                std::fs::read(&spill).unwrap(),
                std::fs::read(&spool).unwrap(),
                "{name}: the spill file holds the whole blob"
            );
        }
    }

    #[test]
    fn a_reader_that_stops_abandons_the_blob_which_then_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = range_of(&pseudo_random(2 << 20, 3), dir.path(), "layer");
        let spill = dir.path().join("spill.gz");
        let growing = GrowingBlob::new(spill.clone());
        let g = Arc::clone(&growing);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let writer = std::thread::spawn(move || prepare_layer(&src, &spill, 1, Some(&g)));
        runtime.block_on(async {
            use futures::StreamExt as _;
            let mut stream = std::pin::pin!(Arc::clone(&growing).stream());
            let first = stream.next().await.unwrap().unwrap();
            assert!(!first.is_empty());
        });
        let prepared = writer.join().unwrap().unwrap();
        assert!(growing.lock().dropping);
        assert!(growing.lock().queue.is_empty(), "memory given back");
        assert_eq!(growing.written(), prepared.size, "counted all the same");
        assert_eq!(growing.keep().unwrap(), None, "its start is gone");
    }

    #[test]
    fn a_growing_blob_whose_writer_fails_ends_its_stream_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = range_of(&[7u8; 100_000], dir.path(), "layer");
        src.len = 200_000; // truncated
        let growing = GrowingBlob::new(dir.path().join("spool.gz"));
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

    #[test]
    fn digest_syntax() {
        assert!(is_sha256_digest(&sha256_digest(b"x")));
        assert!(!is_sha256_digest("sha256:abc"));
        assert!(!is_sha256_digest("md5:0123"));
    }
}
