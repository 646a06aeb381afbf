//! What a request carries, rebuilt for every try ([`Body`]: nothing, bytes,
//! a file range, a file still being written, a stream sent once such as a
//! blob coming down from another registry), and the count of body bytes
//! the HTTP stack has taken ([`Progress`]), the stall watchdog's measure.
//! A new kind of body (a blob streamed in from another registry) goes here.
//! Knows nothing of authentication, retries or the registry protocol.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::header::CONTENT_LENGTH;

use crate::blob::{FileRange, GrowingBlob};
use crate::registry::errors::RegistryError;

/// A request body, rebuilt for every try.
#[derive(Clone, Copy)]
pub(super) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a FileRange),
    /// A file still being written: sent as it grows, without a length.
    Growing(&'a Arc<GrowingBlob>),
    /// A stream of a known length that can be sent only once (a second try
    /// fails: the caller restarts from where the stream comes from).
    Once(&'a OnceStream),
}

/// The bytes of a body that can be sent once, with their length.
pub(super) struct OnceStream {
    pub(super) len: u64,
    pub(super) stream:
        Mutex<Option<futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>>>,
}

impl Body<'_> {
    /// `b` carrying this body, a file body counted into `progress`; `host`
    /// names the registry when the file cannot be read.
    pub(super) fn attach(
        self,
        b: reqwest::RequestBuilder,
        progress: &Progress,
        host: &str,
    ) -> Result<reqwest::RequestBuilder, RegistryError> {
        Ok(match self {
            Body::Empty => b.header(CONTENT_LENGTH, 0),
            Body::Bytes(bytes) => b.body(bytes.to_vec()),
            Body::File(range) => {
                let file =
                    std::fs::File::open(&range.path).map_err(|e| RegistryError::Protocol {
                        host: host.to_string(),
                        message: format!("cannot read {} to upload it: {e}", range.path.display()),
                    })?;
                let stream = crate::blob::range_chunks(file, range);
                b.header(CONTENT_LENGTH, range.len)
                    .body(reqwest::Body::wrap_stream(progress.counting(stream)))
            }
            Body::Growing(growing) => {
                let stream = progress.counting(Arc::clone(growing).stream());
                b.body(reqwest::Body::wrap_stream(stream))
            }
            Body::Once(once) => {
                let stream = once
                    .stream
                    .lock()
                    .expect("stream poisoned")
                    .take()
                    .ok_or_else(|| RegistryError::Unreachable {
                        host: host.to_string(),
                        url: String::new(),
                        reason: "a streamed body cannot be sent twice".into(),
                    })?;
                b.header(CONTENT_LENGTH, once.len)
                    .body(reqwest::Body::wrap_stream(progress.counting(stream)))
            }
        })
    }
}

/// Bytes of request body taken by the HTTP stack so far: the stall
/// watchdog's measure of progress.
#[derive(Clone, Default)]
pub(super) struct Progress(Arc<AtomicU64>);

impl Progress {
    /// `stream`, its bytes counted as they are taken.
    pub(super) fn counting<S, T>(
        &self,
        stream: S,
    ) -> impl futures::Stream<Item = std::io::Result<T>> + Send + 'static
    where
        S: futures::Stream<Item = std::io::Result<T>> + Send + 'static,
        T: AsRef<[u8]> + Send + 'static,
    {
        let counter = self.0.clone();
        stream.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counter.fetch_add(bytes.as_ref().len() as u64, Ordering::Relaxed);
            }
        })
    }

    /// Resolves once nothing has moved for `limit`.
    pub(super) async fn stalled(&self, limit: Duration) {
        let tick = (limit / 8).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut seen = self.0.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let now = self.0.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() >= limit {
                return;
            }
        }
    }
}
