//! HTTP operations against one registry: blob existence, mount, upload,
//! manifest PUT, and the GETs of manifests and configs that manifest lists
//! are built from, on reqwest. [`Client::connect`] finds how the host is
//! reached (HTTPS first; plain HTTP only on loopback or with `--insecure`).
//! Every request goes through [`Client::execute`], which adds
//! authentication (only for the registry's own scheme, host and port: an
//! upload `Location` on blob storage elsewhere gets none), answers one 401
//! challenge, and retries transient failures.
//!
//! Written on reqwest rather than oci-client: kvpush needs retries, a pull
//! scope on the source of cross-repository mounts, and bodies streamed from
//! file ranges (see the README's design section).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::header::{
    HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use reqwest::{Method, Response, StatusCode, Url};

use super::auth::{challenge_error, Authenticator};
use super::credentials::{lookup_credentials, FoundCredential};
use super::endpoint::Endpoint;
use super::errors::{
    describe_error_body, error_body_text, stall_reason, transport_reason, RegistryError,
};
use super::media;
use super::retry::{retry_after, retryable_status, HostBackoff, RetryPolicy};
use super::transport::{self, HttpClients};
use crate::blob::{FileRange, GrowingBlob};

/// Smallest PATCH kvpush sends when a registry keeps answering 413.
const MIN_CHUNK: u64 = 64 * 1024;

/// An open upload session.
#[derive(Debug)]
pub struct Session {
    pub url: Url,
    /// `OCI-Chunk-Min-Length`: the registry's smallest accepted PATCH.
    pub min_chunk: Option<u64>,
}

/// What a cross-repository mount request led to.
#[derive(Debug)]
pub enum MountOutcome {
    Mounted,
    /// The registry opened an upload session instead; upload to it.
    UploadAt(Session),
}

/// How blobs go up to one host: one `PUT` until the registry (or a proxy in
/// front of it) refuses a body as too large (413), then `PATCH` chunks,
/// halved on every further 413.
#[derive(Debug)]
struct ChunkPolicy {
    chunked: AtomicBool,
    size: AtomicU64,
}

impl ChunkPolicy {
    fn new(size: u64) -> ChunkPolicy {
        ChunkPolicy {
            chunked: AtomicBool::new(false),
            size: AtomicU64::new(size.max(MIN_CHUNK)),
        }
    }

    /// The chunk size to use in a session, if chunked.
    fn chunk_for(&self, session: &Session) -> Option<u64> {
        self.chunked.load(Ordering::Relaxed).then(|| {
            self.size
                .load(Ordering::Relaxed)
                .max(session.min_chunk.unwrap_or(0))
        })
    }

    /// A body of `sent` bytes was refused as too large: switch to chunks,
    /// or make them smaller. False when they cannot get smaller.
    fn too_large(&self, sent: u64, min_chunk: Option<u64>) -> bool {
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

/// Bytes of request body taken by the HTTP stack so far: the stall
/// watchdog's measure of progress.
#[derive(Clone, Default)]
struct Progress(Arc<AtomicU64>);

impl Progress {
    /// `stream`, its bytes counted as they are taken.
    fn counting<S, T>(
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
    async fn stalled(&self, limit: Duration) {
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

/// A manifest as the registry stores it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// From `Content-Type`, else the manifest's own `mediaType`.
    pub media_type: String,
    /// sha256 of `bytes`, checked against `Docker-Content-Digest`.
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// Manifests and configs read into memory: refuse anything larger.
const MAX_FETCH: u64 = 16 << 20;

/// Error bodies read for their message: the rest is ignored.
const ERROR_BODY_MAX: u64 = 64 << 10;

/// A request body, rebuilt for every try.
#[derive(Clone, Copy)]
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a FileRange),
    /// A file still being written: sent as it grows, without a length.
    Growing(&'a Arc<GrowingBlob>),
}

/// One request as `execute` needs it to (re)send it.
struct Req<'a> {
    op: &'a str,
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Body<'a>,
    /// Token scopes the request needs (`repository:NAME:pull,push`, ...).
    scopes: &'a [String],
    /// Retry transient failures here; false where a caller retries a larger
    /// unit (a blob PUT restarts from its POST).
    retry: bool,
}

/// How to reach and trust registries, and how to send blobs to them.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Accept any TLS certificate and allow plain HTTP, on any host.
    pub insecure: bool,
    /// Extra trusted roots (`--ca-cert`).
    pub ca_certs: Vec<reqwest::Certificate>,
    /// Tries, time limits and timeouts, token requests included.
    pub retry: RetryPolicy,
    /// `PATCH` size once the registry refuses whole blobs (`--chunk-size`).
    pub chunk_size: u64,
}

/// A client for one registry host.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    base: Url,
    http: reqwest::Client,
    auth: Authenticator,
    retry: RetryPolicy,
    backoff: HostBackoff,
    chunks: ChunkPolicy,
}

fn push_scopes(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

fn pull_scopes(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull")]
}

/// The repository a registry API path is about (`/v2/NAME/blobs/...`).
fn repo_of_path(path: &str) -> &str {
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .map_or("", |i| &rest[..i])
}

impl Client {
    /// Look up credentials for `host`, find how it is reached
    /// ([`transport::probe`]), and check the API version, logging in as the
    /// registry asks.
    pub async fn connect(
        host: &str,
        explicit: Option<FoundCredential>,
        options: &ConnectOptions,
    ) -> Result<Client, RegistryError> {
        let protocol = |message: String| RegistryError::Protocol {
            host: host.to_string(),
            message,
        };
        let lookup = lookup_credentials(host, explicit).map_err(protocol)?;
        match &lookup.found {
            Some(c) => tracing::info!("using credentials for {host} from {}", c.source),
            None => tracing::info!("no credentials for {host}; going on anonymously"),
        }
        let clients =
            HttpClients::new(&options.ca_certs, options.retry.connect_timeout).map_err(protocol)?;
        let endpoint = transport::probe(host, &clients, options.insecure, &options.retry).await?;
        let base = Url::parse(&endpoint.base_url).map_err(|e| {
            protocol(format!(
                "invalid registry address {}: {e}",
                endpoint.base_url
            ))
        })?;
        let http = clients.for_security(endpoint.security).clone();
        let auth = Authenticator::new(
            host,
            &base,
            clients,
            options.insecure,
            lookup,
            options.retry.clone(),
        );
        let client = Client {
            endpoint,
            base,
            http,
            auth,
            retry: options.retry.clone(),
            backoff: HostBackoff::default(),
            chunks: ChunkPolicy::new(options.chunk_size),
        };
        client.ping().await?;
        Ok(client)
    }

    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("registry API paths are valid URL paths")
    }

    /// Credentials go only to the registry's own scheme, host and port.
    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    fn unreachable(&self, req: &Req<'_>, reason: String) -> RegistryError {
        RegistryError::Unreachable {
            host: self.endpoint.host.clone(),
            url: format!("{}{}", self.endpoint.base_url, req.url.path()),
            reason: format!("{} failed: {reason}", req.op),
        }
    }

    /// The request, with `Authorization` only for the registry's own
    /// origin, its file body counted into `progress`; also returns the id
    /// of the token sent, if any.
    async fn build(
        &self,
        req: &Req<'_>,
        progress: &Progress,
    ) -> Result<(reqwest::RequestBuilder, Option<u64>), RegistryError> {
        let mut b = self.http.request(req.method.clone(), req.url.clone());
        for (name, value) in &req.headers {
            b = b.header(name, value);
        }
        let mut token_id = None;
        if self.same_origin(&req.url) {
            if let Some(auth) = self.auth.authorize(req.scopes).await? {
                b = b.header(AUTHORIZATION, auth.value);
                token_id = auth.token_id;
            }
        }
        let b = match req.body {
            Body::Empty => b.header(CONTENT_LENGTH, 0),
            Body::Bytes(bytes) => b.body(bytes.to_vec()),
            Body::File(range) => {
                let file =
                    std::fs::File::open(&range.path).map_err(|e| RegistryError::Protocol {
                        host: self.endpoint.host.clone(),
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
        };
        Ok((b, token_id))
    }

    /// One try of `req`, watched for stalls: the response (its headers;
    /// the body is read by the caller) or the transport error as text, and
    /// the id of the token sent.
    async fn send(
        &self,
        req: &Req<'_>,
    ) -> Result<(Result<Response, String>, Option<u64>), RegistryError> {
        let progress = Progress::default();
        let (request, token_id) = self.build(req, &progress).await?;
        let limit = self.retry.stall_timeout;
        let sent = tokio::select! {
            sent = request.send() => sent.map_err(transport_reason),
            () = progress.stalled(limit) => Err(stall_reason(limit)),
        };
        Ok((sent, token_id))
    }

    /// Send `req`, answering one 401 challenge and retrying transient
    /// failures (when `req.retry`) with back-off shared by the whole host,
    /// within `--retries` tries and `--retry-time`. A transient status that
    /// is not retried any more becomes an error saying so.
    async fn execute(&self, req: &Req<'_>) -> Result<Response, RegistryError> {
        let first = Instant::now();
        let mut answered_challenge = false;
        let mut tries = 0;
        loop {
            self.backoff.wait().await;
            tries += 1;
            let started = Instant::now();
            let (sent, token_id) = self.send(req).await?;
            match sent {
                Ok(resp) => {
                    let status = resp.status();
                    tracing::debug!(host = %self.endpoint.host, method = %req.method, path = req.url.path(), status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "request");
                    if status == StatusCode::UNAUTHORIZED
                        && !answered_challenge
                        && self.same_origin(&req.url)
                        && self
                            .auth
                            .on_unauthorized(resp.headers(), req.scopes, token_id)
                            .await
                    {
                        answered_challenge = true;
                        tries -= 1;
                        continue;
                    }
                    if !retryable_status(status) {
                        return Ok(resp);
                    }
                    let delay = self.retry.delay(tries - 1, retry_after(resp.headers()));
                    if matches!(status.as_u16(), 429 | 503) {
                        self.backoff.hold(delay);
                    }
                    if let Some(why) = self.stop_retrying(req, tries, first, delay) {
                        return Err(self.status_error(req.op, resp).await.with_note(&why));
                    }
                    tracing::warn!(
                        "{} on {}: {status}; retrying in {:.1}s",
                        self.endpoint.host,
                        req.op,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(reason) => {
                    let delay = self.retry.delay(tries - 1, None);
                    if let Some(why) = self.stop_retrying(req, tries, first, delay) {
                        return Err(self.unreachable(req, reason).with_note(&why));
                    }
                    tracing::warn!(
                        "{} on {}: {reason}; retrying in {:.1}s",
                        self.endpoint.host,
                        req.op,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// `None` to try `req` again after `delay`, else why not ("" when the
    /// caller retries a larger unit and will say so itself).
    fn stop_retrying(
        &self,
        req: &Req<'_>,
        tries: u32,
        first: Instant,
        delay: Duration,
    ) -> Option<String> {
        if !req.retry {
            return Some(String::new());
        }
        self.retry.give_up(tries, first.elapsed(), delay)
    }

    /// The error for an unexpected answer; a 401 or 403 from the registry
    /// itself says which credentials were refused and what to do.
    async fn status_error(&self, operation: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        let denied = (status == 401 || status == 403) && self.same_origin(resp.url());
        let challenge = challenge_error(resp.headers());
        let repo = repo_of_path(resp.url().path()).to_string();
        // A registry that stops mid-body still gets its status reported.
        let body = self
            .read_body(operation, resp, ERROR_BODY_MAX)
            .await
            .unwrap_or_default();
        if denied {
            return RegistryError::Denied {
                host: self.endpoint.host.clone(),
                operation: operation.to_string(),
                status,
                detail: error_body_text(&body),
                credentials: self.auth.credentials_used(),
                advice: self.auth.advice(status, challenge.as_deref(), &repo),
            };
        }
        RegistryError::Status {
            host: self.endpoint.host.clone(),
            operation: operation.to_string(),
            status,
            detail: describe_error_body(status, &body),
        }
    }

    fn req<'a>(&self, op: &'a str, method: Method, url: Url, scopes: &'a [String]) -> Req<'a> {
        Req {
            op,
            method,
            url,
            headers: Vec::new(),
            body: Body::Empty,
            scopes,
            retry: true,
        }
    }

    /// `GET /v2/`: is this a registry we can talk to (and log in to)?
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let op = "GET /v2/ (API version check)";
        let resp = self
            .execute(&self.req(op, Method::GET, self.url("/v2/"), &[]))
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self.status_error(op, resp).await)
    }

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
        body: Option<&FileRange>,
    ) -> Result<(), RegistryError> {
        location.query_pairs_mut().append_pair("digest", digest);
        let op = format!("PUT blob {repo}@{digest}");
        let scopes = push_scopes(repo);
        let mut req = self.req(&op, Method::PUT, location, &scopes);
        req.headers.push((
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ));
        if let Some(body) = body {
            req.body = Body::File(body);
        }
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
        self.finish_upload(location, repo, digest, None).await
    }

    /// The registry's `Docker-Content-Digest` for a blob or manifest just
    /// stored, when it sends one, must be the digest kvpush computed.
    fn check_digest(&self, op: &str, resp: &Response, digest: &str) -> Result<(), RegistryError> {
        match resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(got) if got != digest => Err(RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: the registry stored digest {got}, kvpush sent {digest}; the content was corrupted in transit"),
            }),
            _ => Ok(()),
        }
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
        self.finish_upload(location, repo, digest, None).await
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
                    self.finish_upload(session.url, repo, digest, Some(body))
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

    /// `HEAD /v2/<repo>/manifests/<reference>`: the digest the reference
    /// points at now, if any.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let op = format!("HEAD manifest {repo}:{reference}");
        let scopes = push_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let mut req = self.req(&op, Method::HEAD, url, &scopes);
        req.headers
            .push((ACCEPT, HeaderValue::from_static(media::ACCEPT_ALL)));
        let resp = self.execute(&req).await?;
        match resp.status() {
            s if s.is_success() => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error(&op, resp).await),
        }
    }

    /// Read the body of the answer to `op`, at most `max` bytes, giving up
    /// when nothing arrives for `--stall-timeout`.
    async fn read_body(
        &self,
        op: &str,
        mut resp: Response,
        max: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let too_large = |n: u64| RegistryError::Protocol {
            host: self.endpoint.host.clone(),
            message: format!("{op}: the answer is {n} bytes, more than kvpush expects"),
        };
        let broken = |reason: String| RegistryError::Unreachable {
            host: self.endpoint.host.clone(),
            url: self.endpoint.base_url.clone(),
            reason: format!("{op} failed while reading the answer: {reason}"),
        };
        if let Some(n) = resp.content_length().filter(|n| *n > max) {
            return Err(too_large(n));
        }
        let limit = self.retry.stall_timeout;
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout(limit, resp.chunk()).await {
                Err(_) => return Err(broken(stall_reason(limit))),
                Ok(Err(e)) => return Err(broken(transport_reason(e))),
                Ok(Ok(None)) => return Ok(body),
                Ok(Ok(Some(chunk))) => {
                    body.extend_from_slice(&chunk);
                    if body.len() as u64 > max {
                        return Err(too_large(body.len() as u64));
                    }
                }
            }
        }
    }

    /// `GET /v2/<repo>/manifests/<reference>` accepting images and lists of
    /// both Docker and OCI kinds; `None` when the registry has none there.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, RegistryError> {
        let op = format!("GET manifest {repo}:{reference}");
        let scopes = pull_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let mut req = self.req(&op, Method::GET, url, &scopes);
        req.headers
            .push((ACCEPT, HeaderValue::from_static(media::ACCEPT_ALL)));
        let resp = self.execute(&req).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            s if !s.is_success() => return Err(self.status_error(&op, resp).await),
            _ => {}
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let said = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.read_body(&op, resp, MAX_FETCH).await?;
        let digest = crate::blob::sha256_digest(&bytes);
        let expected = said.or_else(|| {
            reference
                .starts_with("sha256:")
                .then(|| reference.to_string())
        });
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!(
                    "{op}: the registry says {expected} but sent a manifest hashing to {digest}"
                ),
            });
        }
        let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string));
        let media_type = match content_type {
            Some(t) if t.starts_with("application/vnd.") => t,
            _ => declared.unwrap_or_default(),
        };
        Ok(Some(FetchedManifest {
            media_type,
            digest,
            bytes,
        }))
    }

    /// `GET /v2/<repo>/blobs/<digest>` of a small blob (an image config),
    /// checked against its digest. Redirects to storage are followed
    /// without the registry's credentials.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let op = format!("GET blob {repo}@{digest}");
        let scopes = pull_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .execute(&self.req(&op, Method::GET, url, &scopes))
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&op, resp).await);
        }
        let bytes = self.read_body(&op, resp, MAX_FETCH).await?;
        let got = crate::blob::sha256_digest(&bytes);
        if got != digest {
            return Err(RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: the blob hashes to {got}"),
            });
        }
        Ok(bytes)
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; checks that the registry
    /// stored exactly the bytes sent by comparing `Docker-Content-Digest`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(), RegistryError> {
        let op = format!("PUT manifest {repo}:{reference}");
        let scopes = push_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let mut req = self.req(&op, Method::PUT, url, &scopes);
        let content_type =
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("invalid media type {media_type:?}"),
            })?;
        req.headers.push((CONTENT_TYPE, content_type));
        req.body = Body::Bytes(bytes);
        let resp = self.execute(&req).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&op, resp).await);
        }
        self.check_digest(&op, &resp, digest)
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

    #[test]
    fn repositories_of_api_paths() {
        assert_eq!(
            repo_of_path("/v2/kubevirt/virt-api/blobs/uploads/"),
            "kubevirt/virt-api"
        );
        assert_eq!(repo_of_path("/v2/a/b/c/manifests/v1"), "a/b/c");
        assert_eq!(repo_of_path("/v2/x/blobs/sha256:00"), "x");
        assert_eq!(repo_of_path("/v2/"), "");
    }
}
