//! Blobs as they are written: opening an upload session (`POST`), asking
//! for a cross-repository mount, and filling and closing the session: one
//! monolithic `PUT`, `PATCH` chunks once the host refused a body as too
//! large (see [`super::session::ChunkPolicy`]), one `PATCH` streamed while
//! the blob is still being written, or one `PUT` of a blob streaming down
//! from another registry ([`Client::upload_download`]). Checks that the registry holds what was
//! sent. Reading blobs is [`super::blobs`]'s; how requests are sent,
//! authenticated and retried is [`super::request`]'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};

use super::blobs::Download;
use super::body::Body;
use super::request::{push_scopes, Client};
use super::session::Session;
use crate::blob::{FileRange, GrowingBlob};
use crate::registry::errors::RegistryError;

/// What a cross-repository mount request led to.
#[derive(Debug)]
pub enum MountOutcome {
    Mounted,
    /// The registry opened an upload session instead; upload to it.
    UploadAt(Session),
}

impl Client {
    fn location(&self, op: &str, resp: &Response) -> Result<Url, RegistryError> {
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: the answer has no usable Location header"),
            })?;
        // Locations may be relative to the registry or absolute.
        self.base
            .join(location)
            .map_err(|e| RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: invalid Location header: {e}"),
            })
    }

    fn session(&self, op: &str, resp: &Response) -> Result<Session, RegistryError> {
        let min_chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(Session {
            url: self.location(op, resp)?,
            min_chunk,
        })
    }

    /// `POST /v2/<repo>/blobs/uploads/`: open an upload session.
    pub async fn start_upload(&self, repo: &str) -> Result<Session, RegistryError> {
        let op = format!("POST upload to {repo}");
        let scopes = push_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self
            .execute(&self.req(&op, Method::POST, url, &scopes))
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&op, resp).await);
        }
        self.session(&op, &resp)
    }

    /// Ask the registry to link a blob from another repository of its own;
    /// the token must allow pulling from `from` as well.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &str,
        from: &str,
    ) -> Result<MountOutcome, RegistryError> {
        let op = format!("mount {digest} from {from} into {repo}");
        let mut scopes = push_scopes(repo);
        scopes.push(format!("repository:{from}:pull"));
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", from);
        let resp = self
            .execute(&self.req(&op, Method::POST, url, &scopes))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => Ok(MountOutcome::UploadAt(self.session(&op, &resp)?)),
            _ => Err(self.status_error(&op, resp).await),
        }
    }

    /// Close an upload session with `PUT ?digest=`, carrying `body` (the
    /// whole blob) or nothing (after PATCHes). Not retried here: a failed
    /// session is restarted from its POST by [`Client::upload_blob`].
    async fn finish_upload(
        &self,
        mut location: Url,
        repo: &str,
        digest: &str,
        body: Body<'_>,
    ) -> Result<(), RegistryError> {
        location.query_pairs_mut().append_pair("digest", digest);
        let op = format!("PUT blob {repo}@{digest}");
        let scopes = push_scopes(repo);
        let mut req = self.req(&op, Method::PUT, location, &scopes);
        req.headers.push((
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ));
        req.body = body;
        req.retry = false;
        let resp = self.execute(&req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(&op, resp).await);
        }
        self.check_digest(&op, &resp, digest)
    }

    /// False once this host took to chunked uploads (it refused a large
    /// body): a whole blob streamed in one `PATCH` would be refused too.
    pub fn takes_whole_bodies(&self) -> bool {
        !self.chunks.chunked.load(Ordering::Relaxed)
    }

    /// Upload a blob to `repo` while it is still being written to
    /// `growing`: `POST`, then one `PATCH` carrying its bytes as they come
    /// (chunked transfer encoding). Returns the session to close with
    /// [`Client::complete_upload`] once the digest is known. Tried once:
    /// if it fails, the caller uploads the finished file the ordinary way.
    pub async fn stream_upload(
        &self,
        repo: &str,
        growing: &Arc<GrowingBlob>,
    ) -> Result<Url, RegistryError> {
        let session = self.start_upload(repo).await?;
        let op = format!("PATCH streamed blob to {repo}");
        let scopes = push_scopes(repo);
        let mut req = self.req(&op, Method::PATCH, session.url, &scopes);
        req.headers.push((
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ));
        req.body = Body::Growing(growing);
        req.retry = false;
        let resp = self.execute(&req).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&op, resp).await);
        }
        // The registry must hold every byte written, no more, no less.
        let sent = growing.written();
        if let Some(end) = held_end(&resp).filter(|end| end + 1 != sent) {
            return Err(RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: the registry holds {} bytes of {sent}", end + 1),
            });
        }
        self.location(&op, &resp)
    }

    /// Close a session [`Client::stream_upload`] filled, with `PUT ?digest=`.
    pub async fn complete_upload(
        &self,
        location: Url,
        repo: &str,
        digest: &str,
    ) -> Result<(), RegistryError> {
        self.finish_upload(location, repo, digest, Body::Empty)
            .await
    }

    /// Upload a blob streaming down from another registry: into `session`
    /// (a refused mount's) or a new one, one monolithic `PUT ?digest=` with
    /// the blob's length. Tried once: a broken or wrong download ends the
    /// body with an error, so the registry commits nothing, and the caller
    /// starts again from a new download.
    pub async fn upload_download(
        &self,
        repo: &str,
        digest: &str,
        download: &Download,
        session: Option<Session>,
    ) -> Result<(), RegistryError> {
        let session = match session {
            Some(s) => s,
            None => self.start_upload(repo).await?,
        };
        self.finish_upload(session.url, repo, digest, Body::Once(&download.body))
            .await
    }

    /// Send `body` in `PATCH`es of `chunk` bytes, then close the session.
    async fn put_chunked(
        &self,
        session: Session,
        repo: &str,
        digest: &str,
        body: &FileRange,
        chunk: u64,
    ) -> Result<(), RegistryError> {
        let op = format!("PATCH blob {repo}@{digest}");
        let scopes = push_scopes(repo);
        let mut location = session.url;
        let mut start = 0;
        while start < body.len {
            let part = FileRange {
                path: body.path.clone(),
                offset: body.offset + start,
                len: chunk.min(body.len - start),
            };
            let end = start + part.len - 1;
            let mut req = self.req(&op, Method::PATCH, location.clone(), &scopes);
            req.headers.push((
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ));
            req.headers.push((
                HeaderName::from_static("content-range"),
                HeaderValue::from_str(&format!("{start}-{end}")).expect("digits and a dash"),
            ));
            req.body = Body::File(&part);
            req.retry = false;
            let resp = self.execute(&req).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(self.status_error(&op, resp).await);
            }
            // The registry says how much it holds: anything but all we
            // sent means the session is not what we think; start again.
            let range = resp.headers().get("range").and_then(|v| v.to_str().ok());
            if let Some(range) = range.filter(|_| held_end(&resp) != Some(end)) {
                return Err(RegistryError::Unreachable {
                    host: self.endpoint.host.clone(),
                    url: format!("{}{}", self.endpoint.base_url, location.path()),
                    reason: format!(
                        "{op}: the registry holds bytes {range} after a PATCH of {start}-{end}"
                    ),
                });
            }
            location = self.location(&op, &resp)?;
            start = end + 1;
        }
        self.finish_upload(location, repo, digest, Body::Empty)
            .await
    }

    /// Upload a whole blob, into `session` when the caller holds one (a
    /// mount answered with an upload session) or a new one. One `PUT`, or
    /// `PATCH` chunks once the host refused a body as too large. On a
    /// transient failure, start again from a new session with a fresh read
    /// of `body`, within `--retries` and `--retry-time`.
    pub async fn upload_blob(
        &self,
        repo: &str,
        digest: &str,
        body: &FileRange,
        mut session: Option<Session>,
    ) -> Result<(), RegistryError> {
        let first = Instant::now();
        let mut tries = 0;
        loop {
            let session = match session.take() {
                Some(s) => s,
                None => self.start_upload(repo).await?,
            };
            let min_chunk = session.min_chunk;
            let chunk = self.chunks.chunk_for(&session);
            tries += 1;
            let result = match chunk {
                Some(chunk) => self.put_chunked(session, repo, digest, body, chunk).await,
                None => {
                    self.finish_upload(session.url, repo, digest, Body::File(body))
                        .await
                }
            };
            let e = match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let sent = chunk.unwrap_or(body.len).min(body.len);
            if e.status() == Some(413) && self.chunks.too_large(sent, min_chunk) {
                // Not a failure of the registry: adapt and go again.
                tries -= 1;
                tracing::warn!(
                    "{}: a {sent}-byte body was refused as too large; uploading in chunks of at most {} bytes",
                    self.endpoint.host,
                    self.chunks.size.load(Ordering::Relaxed)
                );
                continue;
            }
            if !e.is_transient() {
                return Err(e);
            }
            let delay = self.retry.delay(tries - 1, None);
            if let Some(why) = self.retry.give_up(tries, first.elapsed(), delay) {
                return Err(e.with_note(&format!("upload restarted from its POST; {why}")));
            }
            tracing::warn!("{e}; restarting the upload in {:.1}s", delay.as_secs_f64());
            tokio::time::sleep(delay).await;
        }
    }
}

/// The last byte an upload session holds, from the `Range: 0-N` header
/// (some registries write `bytes=0-N`).
fn held_end(resp: &Response) -> Option<u64> {
    resp.headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.trim_start_matches("bytes=").split('-').nth(1))
        .and_then(|end| end.trim().parse::<u64>().ok())
}
