//! A blob streamed to its upload while it is compressed: the memory queue
//! shared by every stream, the spill file a writer goes on into once its
//! upload falls behind, and the blob's life (finished, abandoned, kept).
//! The compressor's end is in [`writer`], the upload's in [`reader`]. Knows
//! nothing of registries, HTTP or layers: only bytes at blob offsets.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

mod reader;
#[cfg(test)]
mod tests;
mod writer;

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
