//! An upload session as the registry opens it, and how big the bodies sent
//! into the sessions of one host may be ([`ChunkPolicy`]: one `PUT` until a
//! 413, then `PATCH` chunks halved on every further 413). Plain state: sends
//! nothing, knows no request or client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reqwest::Url;

/// Smallest PATCH kvpush sends when a registry keeps answering 413.
const MIN_CHUNK: u64 = 64 * 1024;

/// An open upload session.
#[derive(Debug)]
pub struct Session {
    pub url: Url,
    /// `OCI-Chunk-Min-Length`: the registry's smallest accepted PATCH.
    pub min_chunk: Option<u64>,
}

/// How blobs go up to one host: one `PUT` until the registry (or a proxy in
/// front of it) refuses a body as too large (413), then `PATCH` chunks,
/// halved on every further 413.
#[derive(Debug)]
pub(super) struct ChunkPolicy {
    pub(super) chunked: AtomicBool,
    pub(super) size: AtomicU64,
}

impl ChunkPolicy {
    pub(super) fn new(size: u64) -> ChunkPolicy {
        ChunkPolicy {
            chunked: AtomicBool::new(false),
            size: AtomicU64::new(size.max(MIN_CHUNK)),
        }
    }

    /// The chunk size to use in a session, if chunked.
    pub(super) fn chunk_for(&self, session: &Session) -> Option<u64> {
        self.chunked.load(Ordering::Relaxed).then(|| {
            self.size
                .load(Ordering::Relaxed)
                .max(session.min_chunk.unwrap_or(0))
        })
    }

    /// A body of `sent` bytes was refused as too large: switch to chunks,
    /// or make them smaller. False when they cannot get smaller.
    pub(super) fn too_large(&self, sent: u64, min_chunk: Option<u64>) -> bool {
        self.chunked.store(true, Ordering::Relaxed);
        let floor = MIN_CHUNK.max(min_chunk.unwrap_or(0));
        if self.size.load(Ordering::Relaxed).max(floor) < sent {
            return true;
        }
        let smaller = (sent / 2).max(floor);
        if smaller >= sent {
            return false;
        }
        self.size.fetch_min(smaller, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_start_on_a_413_shrink_on_each_and_respect_the_registry_minimum() {
        let p = ChunkPolicy::new(16 << 20);
        let plain = Session {
            url: Url::parse("http://127.0.0.1:5000/v2/x/blobs/uploads/1").unwrap(),
            min_chunk: None,
        };
        assert_eq!(p.chunk_for(&plain), None, "whole blobs first");
        // A 1 MiB blob refused whole: chunks, smaller than what was refused.
        assert!(p.too_large(1 << 20, None));
        assert_eq!(p.chunk_for(&plain), Some(512 << 10));
        assert!(p.too_large(512 << 10, None));
        assert!(p.too_large(256 << 10, None));
        assert!(p.too_large(128 << 10, None));
        assert_eq!(p.chunk_for(&plain), Some(MIN_CHUNK));
        assert!(!p.too_large(MIN_CHUNK, None), "no smaller than the floor");

        let p = ChunkPolicy::new(MIN_CHUNK);
        let strict = Session {
            url: plain.url.clone(),
            min_chunk: Some(160 << 10),
        };
        assert!(p.too_large(10 << 20, Some(160 << 10)));
        assert_eq!(p.chunk_for(&strict), Some(160 << 10));
        assert!(
            !p.too_large(160 << 10, Some(160 << 10)),
            "the registry's minimum is refused too: nothing left to try"
        );
    }
}
