//! The upload's end of a [`GrowingBlob`]: the stream that takes its queued
//! chunks, then reads what was spilled, until the writer finishes. Knows
//! nothing of HTTP; the stream is what an upload sends as its body.

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::Stream;

use super::{GrowingBlob, FAILED, FINISHED, STREAM_QUEUED};
use crate::blob::chunks::{read_chunk, UPLOAD_CHUNK};

impl GrowingBlob {
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
