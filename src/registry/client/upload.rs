//! Blobs as they are written: opening an upload session (`POST`), asking
//! for a cross-repository mount, and filling and closing the session: one
//! monolithic `PUT` for a small blob, `PATCH` pieces for a large one or once
//! the host refused a body as too large (see
//! [`super::session::ChunkPolicy`]), resumed after a cut from what a `GET`
//! on the session says it holds, one `PATCH` streamed while
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
use super::session::{held_bytes, range_end, Session};
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

    /// Send the rest of `body`, from the `at.held` bytes the registry holds,
    /// in `PATCH`es of `at.piece` bytes, then close the session. `at` follows
    /// every piece the registry took, so that a cut upload resumes from there.
    async fn put_pieces(
        &self,
        at: &mut Resumable,
        repo: &str,
        digest: &str,
        body: &FileRange,
    ) -> Result<(), RegistryError> {
        let op = format!("PATCH blob {repo}@{digest}");
        let scopes = push_scopes(repo);
        while at.held < body.len {
            let start = at.held;
            // Read again from the file at the offset: never held in memory.
            let part = FileRange {
                path: body.path.clone(),
                offset: body.offset + start,
                len: at.piece.min(body.len - start),
            };
            let end = start + part.len - 1;
            let mut req = self.req(&op, Method::PATCH, at.location.clone(), &scopes);
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
            if let Some(range) = range.filter(|r| range_end(Some(r)) != Some(end)) {
                at.lost = true;
                return Err(RegistryError::Unreachable {
                    host: self.endpoint.host.clone(),
                    url: format!("{}{}", self.endpoint.base_url, at.location.path()),
                    reason: format!(
                        "{op}: the registry holds bytes {range} after a PATCH of {start}-{end}"
                    ),
                });
            }
            at.location = self.location(&op, &resp)?;
            at.held = end + 1;
        }
        self.finish_upload(at.location.clone(), repo, digest, Body::Empty)
            .await
    }

    /// `GET` on an upload session: how many bytes it holds, and the
    /// `Location` to go on at. None when the registry cannot say (it
    /// refuses the `GET`, 404/405, the session expired or is unknown, no
    /// usable `Range`): the upload restarts. distribution forgets a session
    /// that took part of a body it then lost (its `Location`s carry the
    /// offset they expect), so against it a resume works when a cut lost
    /// a piece whole, as a proxy that buffers bodies (nginx's default) does.
    async fn upload_status(
        &self,
        location: &Url,
        repo: &str,
    ) -> Result<Option<(u64, Url)>, RegistryError> {
        let op = format!("GET upload status in {repo}");
        let scopes = push_scopes(repo);
        let resp = self
            .execute(&self.req(&op, Method::GET, location.clone(), &scopes))
            .await?;
        if !resp.status().is_success() {
            tracing::debug!("{op}: {}; the upload cannot resume", resp.status());
            return Ok(None);
        }
        let range = resp.headers().get("range").and_then(|v| v.to_str().ok());
        let Some(held) = held_bytes(range) else {
            tracing::debug!("{op}: no usable Range ({range:?}); the upload cannot resume");
            return Ok(None);
        };
        // distribution answers with a fresh Location; one without keeps
        // the session's.
        let next = match resp.headers().get(LOCATION) {
            Some(_) => self.location(&op, &resp)?,
            None => location.clone(),
        };
        Ok(Some((held, next)))
    }

    /// After a failed try of a pieced upload: resume `at` from what the
    /// registry says it holds, or say to restart (None). True in the
    /// second place when the blob turned out to be in the registry already
    /// (the closing `PUT` landed, its answer did not).
    async fn resume(
        &self,
        mut at: Resumable,
        repo: &str,
        digest: &str,
        len: u64,
    ) -> Result<(Option<Resumable>, bool), RegistryError> {
        if !at.lost {
            if let Some((held, location)) = self.upload_status(&at.location, repo).await? {
                if held <= len {
                    tracing::warn!(
                        "{}: resuming the upload of {digest} at byte {held} of {len}",
                        self.endpoint.host
                    );
                    at.held = held;
                    at.location = location;
                    at.resumed = true;
                    return Ok((Some(at), false));
                }
            }
        }
        let landed = at.held == len && self.blob_exists(repo, digest).await?;
        Ok((None, landed))
    }

    /// Upload a whole blob, into `session` when the caller holds one (a
    /// mount answered with an upload session) or a new one. One `PUT`; or,
    /// for a blob of at least [`super::session::RESUMABLE_FROM`] bytes or once the host
    /// refused a body as too large, `PATCH` pieces. On a transient failure,
    /// a pieced upload resumes from what the registry says it holds, else
    /// (or when it cannot say) the upload starts again from a new session
    /// with a fresh read of `body`; all within `--retries` and `--retry-time`.
    pub async fn upload_blob(
        &self,
        repo: &str,
        digest: &str,
        body: &FileRange,
        mut session: Option<Session>,
    ) -> Result<(), RegistryError> {
        let first = Instant::now();
        let mut tries = 0;
        let mut resumable: Option<Resumable> = None;
        loop {
            tries += 1;
            let (result, sent, min_chunk) = match resumable.as_mut() {
                Some(at) => {
                    let sent = at.piece.min(body.len - at.held.min(body.len));
                    let r = self.put_pieces(at, repo, digest, body).await;
                    (r, sent, at.min_chunk)
                }
                None => {
                    let session = match session.take() {
                        Some(s) => s,
                        None => self.start_upload(repo).await?,
                    };
                    let min_chunk = session.min_chunk;
                    match self.chunks.pieces_for(&session, body.len) {
                        Some(piece) => {
                            let at = resumable.insert(Resumable {
                                location: session.url,
                                held: 0,
                                piece,
                                min_chunk,
                                lost: false,
                                resumed: false,
                            });
                            let r = self.put_pieces(at, repo, digest, body).await;
                            (r, piece.min(body.len), min_chunk)
                        }
                        None => {
                            let r = self
                                .finish_upload(session.url, repo, digest, Body::File(body))
                                .await;
                            (r, body.len, min_chunk)
                        }
                    }
                }
            };
            let e = match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let at = resumable.take();
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
            // A resumed session the registry then refused (it did not hold
            // what it said): start again, as for any transient failure.
            let refused_resume = at.as_ref().is_some_and(|a| a.resumed)
                && matches!(e.status(), Some(400 | 404 | 416));
            if !e.is_transient() && !refused_resume {
                return Err(e);
            }
            let delay = self.retry.delay(tries - 1, None);
            if let Some(why) = self.retry.give_up(tries, first.elapsed(), delay) {
                return Err(e.with_note(&format!("upload cut off; {why}")));
            }
            tokio::time::sleep(delay).await;
            if let Some(at) = at.filter(|_| !refused_resume) {
                let (resumed, landed) = self.resume(at, repo, digest, body.len).await?;
                if landed {
                    return Ok(());
                }
                if resumed.is_some() {
                    tracing::warn!("{e}; resuming it");
                    resumable = resumed;
                    continue;
                }
            }
            tracing::warn!("{e}; restarting the upload from a new session");
        }
    }
}

/// Where a pieced upload stands.
struct Resumable {
    /// The session's latest `Location`.
    location: Url,
    /// Bytes the registry holds, by its last answer.
    held: u64,
    piece: u64,
    min_chunk: Option<u64>,
    /// The registry holds something else than was sent: do not resume.
    lost: bool,
    /// Resumed after a `GET` on the session.
    resumed: bool,
}

/// The last byte an upload session holds, by the answer's `Range`.
fn held_end(resp: &Response) -> Option<u64> {
    range_end(resp.headers().get("range").and_then(|v| v.to_str().ok()))
}
