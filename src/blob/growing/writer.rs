//! The compressor's end of a [`GrowingBlob`]: the writer that fills pooled
//! upload chunks, and the queue-or-wait-or-spill decision for each of them
//! (see [`super::Pace`]). Knows nothing of gzip beyond the
//! [`compress::GzipSink`] it implements.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::Ordering;

use super::{GrowingBlob, OWN_CHUNKS, STREAM_MEMORY, STREAM_QUEUED};
use crate::blob::chunks::{PooledChunk, UPLOAD_CHUNK};
use crate::{buffers, compress};

impl GrowingBlob {
    /// The writer that feeds this blob.
    pub(in crate::blob) fn writer(&self) -> GrowingWriter<'_> {
        GrowingWriter {
            blob: self,
            chunk: Vec::new(),
            spill: None,
        }
    }

    /// Queue `chunk` once there is memory for it, waiting for the stream
    /// while it keeps its [`Pace`](super::Pace); else write it to the spill
    /// file, as every chunk after it.
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
}

/// Fills pooled upload chunks and hands each full one to its blob.
pub(in crate::blob) struct GrowingWriter<'a> {
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
