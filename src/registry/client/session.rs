//! An upload session as the registry opens it, how big the bodies sent
//! into the sessions of one host may be ([`ChunkPolicy`]: one `PUT` until a
//! 413, then `PATCH` chunks halved on every further 413; large blobs in
//! `PATCH` pieces from the start, so that a cut upload can resume), and how
//! much a session holds by its `Range` header ([`held_bytes`]). Plain state:
//! sends nothing, knows no request or client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reqwest::Url;

/// Smallest PATCH kvpush sends when a registry keeps answering 413.
const MIN_CHUNK: u64 = 64 * 1024;

/// Blobs at least this large go up in `PATCH` pieces of the chunk size
/// (`--chunk-size`), so that an upload cut off resumes from what the
/// registry holds instead of starting over; smaller ones in one `PUT`, a
/// round trip fewer per piece.
pub(super) const RESUMABLE_FROM: u64 = 32 << 20;

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

    /// The size of the pieces a blob of `len` bytes goes up in, if pieces:
    /// every blob once the host took to chunks, else blobs of at least
    /// [`RESUMABLE_FROM`] bytes.
    pub(super) fn pieces_for(&self, session: &Session, len: u64) -> Option<u64> {
        self.chunk_for(session).or_else(|| {
            (len >= RESUMABLE_FROM).then(|| {
                self.size
                    .load(Ordering::Relaxed)
                    .max(session.min_chunk.unwrap_or(0))
            })
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

/// The last byte offset `N` of a `Range: 0-N` header (some registries
/// write `bytes=0-N`); None when missing, malformed or not from byte 0.
pub(super) fn range_end(range: Option<&str>) -> Option<u64> {
    let range = range?.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    let (start, end) = range.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse().ok()
}

/// How many bytes an upload session holds, by the `Range` header of the
/// answer to a `GET` on it; None when the header is missing or malformed
/// (the session cannot be resumed). distribution writes `0-0` for an empty
/// session (older versions `0--1`), so `0-0` counts as nothing: were one
/// byte held, the registry would refuse the `PATCH` from 0, and the upload
/// restarts.
pub(super) fn held_bytes(range: Option<&str>) -> Option<u64> {
    let trimmed = range?.trim();
    if trimmed.trim_start_matches("bytes=") == "0--1" {
        return Some(0);
    }
    match range_end(range)? {
        0 => Some(0),
        end => Some(end + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_say_how_much_a_session_holds() {
        assert_eq!(held_bytes(Some("0-1048575")), Some(1 << 20));
        assert_eq!(held_bytes(Some("bytes=0-99")), Some(100));
        assert_eq!(held_bytes(Some(" 0-99 ")), Some(100));
        assert_eq!(
            held_bytes(Some("0-0")),
            Some(0),
            "distribution's empty session"
        );
        assert_eq!(held_bytes(Some("0--1")), Some(0));
        assert_eq!(held_bytes(None), None, "missing");
        for malformed in [
            "",
            "0",
            "-",
            "0-",
            "1-99",
            "0-x",
            "bytes 0-9",
            "0-9-9",
            "0-−5",
        ] {
            assert_eq!(held_bytes(Some(malformed)), None, "{malformed:?}");
        }
        assert_eq!(range_end(Some("0-0")), Some(0), "a PATCH of one byte");
        assert_eq!(range_end(Some("bytes=0-41")), Some(41));
        assert_eq!(range_end(Some("0--1")), None);
    }

    #[test]
    fn large_blobs_go_in_pieces_small_ones_whole() {
        let p = ChunkPolicy::new(16 << 20);
        let plain = Session {
            url: Url::parse("http://127.0.0.1:5000/v2/x/blobs/uploads/1").unwrap(),
            min_chunk: None,
        };
        assert_eq!(p.pieces_for(&plain, RESUMABLE_FROM - 1), None);
        assert_eq!(p.pieces_for(&plain, RESUMABLE_FROM), Some(16 << 20));
        let strict = Session {
            min_chunk: Some(20 << 20),
            ..plain
        };
        assert_eq!(p.pieces_for(&strict, 64 << 20), Some(20 << 20));
    }

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
