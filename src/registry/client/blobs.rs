//! Blobs as they are read: `HEAD` (does a repository hold it?), the `GET`
//! of a small blob into memory, checked against its digest, and the `GET`
//! of a blob of any size as a [`Download`] (pull scope), checked on the fly
//! while it streams into an upload elsewhere. Writing blobs is
//! [`super::upload`]'s; how requests are sent is [`super::request`]'s.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};

use super::body::OnceStream;
use super::request::{pull_scopes, push_scopes, Client};
use crate::registry::answer::{Cap, Trickle};
use crate::registry::errors::RegistryError;

/// Why a [`Download`] did not deliver its blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadFailure {
    /// The connection broke or stalled: worth fetching again.
    Broken(String),
    /// The registry sent other bytes than the digest and size asked for.
    Corrupt(String),
}

/// A blob coming down from a registry, to be sent once as an upload body
/// (see [`Client::upload_download`]). Its bytes are counted and hashed as
/// they pass; the last chunk is held back until the whole blob is checked,
/// so a wrong blob ends the body with an error before its final byte and
/// the registry it goes to never commits it. Memory: one chunk or two.
pub struct Download {
    pub(super) body: OnceStream,
    failure: Arc<Mutex<Option<DownloadFailure>>>,
}

impl Download {
    /// What went wrong with the bytes, once the body was sent (or failed).
    pub fn failure(&self) -> Option<DownloadFailure> {
        self.failure.lock().expect("failure poisoned").clone()
    }
}

/// State of the checking stream of a [`Download`].
struct Checked {
    inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    hasher: Sha256,
    seen: u64,
    size: u64,
    digest: String,
    held: Option<Bytes>,
    failure: Arc<Mutex<Option<DownloadFailure>>>,
    done: bool,
    /// An origin that sends too little for this long broke (`--stall-timeout`).
    stall: std::time::Duration,
    /// The progress of the current `stall` window; set at the first read.
    watch: Option<Trickle>,
}

impl Checked {
    /// Watching `inner` for `size` bytes of `digest`, a failure told
    /// through `failure`; cut when it sends too little for `stall`.
    fn new(
        inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        size: u64,
        digest: &str,
        failure: Arc<Mutex<Option<DownloadFailure>>>,
        stall: std::time::Duration,
    ) -> Checked {
        Checked {
            inner,
            hasher: Sha256::new(),
            seen: 0,
            size,
            digest: digest.to_string(),
            held: None,
            failure,
            done: false,
            stall,
            watch: None,
        }
    }

    fn fail(&mut self, failure: DownloadFailure) -> std::io::Result<Bytes> {
        self.done = true;
        let text = match &failure {
            DownloadFailure::Broken(m) | DownloadFailure::Corrupt(m) => m.clone(),
        };
        *self.failure.lock().expect("failure poisoned") = Some(failure);
        Err(std::io::Error::other(text))
    }

    /// The next chunk to send: the one held back, once the next arrived
    /// or the whole blob was checked.
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            let watch = self.watch.get_or_insert_with(|| Trickle::new(self.stall));
            let Some(next) = watch.within(self.inner.next()).await else {
                let m = watch.reason();
                return Some(self.fail(DownloadFailure::Broken(m)));
            };
            match next {
                Some(Ok(chunk)) => {
                    self.seen += chunk.len() as u64;
                    watch.arrived(chunk.len() as u64);
                    if self.seen > self.size {
                        let m = format!("more than the {} bytes its descriptor says", self.size);
                        return Some(self.fail(DownloadFailure::Corrupt(m)));
                    }
                    self.hasher.update(&chunk);
                    if let Some(held) = self.held.replace(chunk) {
                        return Some(Ok(held));
                    }
                }
                Some(Err(e)) => {
                    let m = crate::registry::errors::transport_reason(e);
                    return Some(self.fail(DownloadFailure::Broken(m)));
                }
                None => {
                    let got = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
                    if self.seen != self.size || got != self.digest {
                        let m = format!(
                            "{} bytes hashing to {got}, not {} bytes of {}",
                            self.seen, self.size, self.digest
                        );
                        return Some(self.fail(DownloadFailure::Corrupt(m)));
                    }
                    self.done = true;
                    return self.held.take().map(Ok);
                }
            }
        }
    }
}

impl Client {
    /// `HEAD /v2/<repo>/blobs/<digest>`: does the repository hold the blob?
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let op = format!("HEAD blob {repo}@{digest}");
        let scopes = push_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .execute(&self.req(&op, Method::HEAD, url, &scopes))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&op, resp).await),
        }
    }

    /// `GET /v2/<repo>/blobs/<digest>` with a pull scope, answered with
    /// success (its body unread), and the operation's name for messages.
    async fn blob_answer(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<(String, Response), RegistryError> {
        let op = format!("GET blob {repo}@{digest}");
        let scopes = pull_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .execute(&self.req(&op, Method::GET, url, &scopes))
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&op, resp).await);
        }
        Ok((op, resp))
    }

    /// `GET /v2/<repo>/blobs/<digest>` of a small blob (an image config),
    /// checked against its digest. Redirects to storage are followed
    /// without the registry's credentials.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let (op, resp) = self.blob_answer(repo, digest).await?;
        let bytes = self.read_body(&op, resp, Cap::Config).await?;
        let got = crate::blob::sha256_digest(&bytes);
        if got != digest {
            return Err(RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: the blob hashes to {got}"),
            });
        }
        Ok(bytes)
    }

    /// `GET /v2/<repo>/blobs/<digest>` of a blob of `size` bytes, as a
    /// [`Download`] to stream into an upload; redirects to storage are
    /// followed without the registry's credentials. The request is retried
    /// as every other; its body is read only by the upload.
    pub async fn download_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
    ) -> Result<Download, RegistryError> {
        let (op, resp) = self.blob_answer(repo, digest).await?;
        if let Some(n) = resp.content_length().filter(|n| *n != size) {
            return Err(RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: the blob is {n} bytes, its descriptor says {size}"),
            });
        }
        let failure = Arc::new(Mutex::new(None));
        let checked = Checked::new(
            resp.bytes_stream().boxed(),
            size,
            digest,
            failure.clone(),
            self.retry.stall_timeout,
        );
        let stream = futures::stream::unfold(checked, |mut c| async move {
            c.next().await.map(|item| (item, c))
        });
        Ok(Download {
            body: OnceStream {
                len: size,
                stream: Mutex::new(Some(stream.boxed())),
            },
            failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a download of `chunks` sends, and its failure.
    fn send(
        chunks: &[&'static [u8]],
        size: u64,
        digest: &str,
    ) -> (Vec<Vec<u8>>, Option<DownloadFailure>) {
        let failure = Arc::new(Mutex::new(None));
        let chunks: Vec<reqwest::Result<Bytes>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        let inner = futures::stream::iter(chunks);
        let mut checked = Checked::new(
            inner.boxed(),
            size,
            digest,
            failure.clone(),
            std::time::Duration::from_secs(5),
        );
        let mut sent = Vec::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            while let Some(item) = checked.next().await {
                match item {
                    Ok(b) => sent.push(b.to_vec()),
                    Err(_) => break,
                }
            }
        });
        let f = failure.lock().unwrap().clone();
        (sent, f)
    }

    #[test]
    fn a_download_is_checked_and_its_last_chunk_held_until_it_is() {
        let digest = crate::blob::sha256_digest(b"hello world");
        let (sent, failure) = send(&[b"hello ", b"world"], 11, &digest);
        assert_eq!(sent, [b"hello ".to_vec(), b"world".to_vec()]);
        assert_eq!(failure, None);
        // Other bytes of the right size: the last chunk never goes.
        let (sent, failure) = send(&[b"hello ", b"WORLD"], 11, &digest);
        assert_eq!(sent, [b"hello ".to_vec()]);
        assert!(matches!(failure, Some(DownloadFailure::Corrupt(_))));
        // Too many bytes: cut before the extra chunk.
        let (sent, failure) = send(&[b"hello ", b"world", b"!"], 11, &digest);
        assert_eq!(sent, [b"hello ".to_vec()]);
        assert!(matches!(failure, Some(DownloadFailure::Corrupt(m)) if m.contains("more than")));
        // Too few.
        let (sent, failure) = send(&[b"hello "], 11, &digest);
        assert!(sent.is_empty());
        assert!(matches!(failure, Some(DownloadFailure::Corrupt(_))));
    }
}
