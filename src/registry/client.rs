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

use reqwest::header::{
    HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use reqwest::{Method, Response, StatusCode, Url};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::auth::{challenge_error, Authenticator};
use super::credentials::{lookup_credentials, FoundCredential};
use super::retry::{retry_after, retryable_status, HostBackoff, RetryPolicy};
use super::transport::{self, HttpClients};
use super::{describe_error_body, error_body_text, media, Endpoint, RegistryError};
use crate::blob::FileRange;

const STREAM_BUF: usize = 256 * 1024;

/// What a cross-repository mount request led to.
#[derive(Debug)]
pub enum MountOutcome {
    Mounted,
    /// The registry opened an upload session instead; upload to it.
    UploadAt(Url),
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

/// A request body, rebuilt for every try.
#[derive(Clone, Copy)]
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a FileRange),
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

/// How to reach and trust registries.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Accept any TLS certificate and allow plain HTTP, on any host.
    pub insecure: bool,
    /// Extra trusted roots (`--ca-cert`).
    pub ca_certs: Vec<reqwest::Certificate>,
    pub retry: RetryPolicy,
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
}

/// The error text of a transport failure, with every source in the chain
/// but no URL (upload URLs can carry session state).
pub(super) fn transport_reason(err: reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let err = err.without_url();
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
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
        let clients = HttpClients::new(&options.ca_certs).map_err(protocol)?;
        let endpoint = transport::probe(host, &clients, options.insecure, &options.retry).await?;
        let base = Url::parse(&endpoint.base_url).map_err(|e| {
            protocol(format!(
                "invalid registry address {}: {e}",
                endpoint.base_url
            ))
        })?;
        let http = clients.for_security(endpoint.security).clone();
        let auth = Authenticator::new(host, &base, clients, options.insecure, lookup);
        let client = Client {
            endpoint,
            base,
            http,
            auth,
            retry: options.retry.clone(),
            backoff: HostBackoff::default(),
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
    /// origin; also returns the id of the token sent, if any.
    async fn build(
        &self,
        req: &Req<'_>,
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
                let io_error = |e: std::io::Error| RegistryError::Protocol {
                    host: self.endpoint.host.clone(),
                    message: format!("cannot read {} to upload it: {e}", range.path.display()),
                };
                let mut file = tokio::fs::File::open(&range.path).await.map_err(io_error)?;
                file.seek(std::io::SeekFrom::Start(range.offset))
                    .await
                    .map_err(io_error)?;
                let stream = ReaderStream::with_capacity(file.take(range.len), STREAM_BUF);
                b.header(CONTENT_LENGTH, range.len)
                    .body(reqwest::Body::wrap_stream(stream))
            }
        };
        Ok((b, token_id))
    }

    /// Send `req`, answering one 401 challenge and retrying transient
    /// failures (when `req.retry`) with back-off shared by the whole host.
    async fn execute(&self, req: &Req<'_>) -> Result<Response, RegistryError> {
        let mut answered_challenge = false;
        let mut attempt = 0;
        loop {
            self.backoff.wait().await;
            let started = std::time::Instant::now();
            let (request, token_id) = self.build(req).await?;
            let sent = request.send().await;
            let last_try = !req.retry || attempt + 1 >= self.retry.attempts;
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
                        continue;
                    }
                    if !retryable_status(status) || last_try {
                        return Ok(resp);
                    }
                    let delay = self.retry.delay(attempt, retry_after(resp.headers()));
                    if matches!(status.as_u16(), 429 | 503) {
                        self.backoff.hold(delay);
                    }
                    tracing::warn!(
                        "{} on {}: {status}; retrying in {:.1}s",
                        self.endpoint.host,
                        req.op,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    let reason = transport_reason(e);
                    if last_try {
                        return Err(self.unreachable(req, reason));
                    }
                    let delay = self.retry.delay(attempt, None);
                    tracing::warn!(
                        "{} on {}: {reason}; retrying in {:.1}s",
                        self.endpoint.host,
                        req.op,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
        }
    }

    /// The error for an unexpected answer; a 401 or 403 from the registry
    /// itself says which credentials were refused and what to do.
    async fn status_error(&self, operation: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        if (status == 401 || status == 403) && self.same_origin(resp.url()) {
            let error = challenge_error(resp.headers());
            let repo = repo_of_path(resp.url().path()).to_string();
            let body = resp.bytes().await.unwrap_or_default();
            return RegistryError::Denied {
                host: self.endpoint.host.clone(),
                operation: operation.to_string(),
                status,
                detail: error_body_text(&body),
                credentials: self.auth.credentials_used(),
                advice: self.auth.advice(status, error.as_deref(), &repo),
            };
        }
        let body = resp.bytes().await.unwrap_or_default();
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

    /// `POST /v2/<repo>/blobs/uploads/`: open an upload session.
    pub async fn start_upload(&self, repo: &str) -> Result<Url, RegistryError> {
        let op = format!("POST upload to {repo}");
        let scopes = push_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self
            .execute(&self.req(&op, Method::POST, url, &scopes))
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&op, resp).await);
        }
        self.location(&op, &resp)
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
            StatusCode::ACCEPTED => Ok(MountOutcome::UploadAt(self.location(&op, &resp)?)),
            _ => Err(self.status_error(&op, resp).await),
        }
    }

    /// Finish an upload session with the whole blob in one `PUT ?digest=`,
    /// streamed from `body` (never held in memory). Not retried here: a
    /// failed session is restarted from its POST by [`Client::upload_blob`].
    pub async fn put_blob(
        &self,
        mut location: Url,
        repo: &str,
        digest: &str,
        body: &FileRange,
    ) -> Result<(), RegistryError> {
        location.query_pairs_mut().append_pair("digest", digest);
        let op = format!("PUT blob {repo}@{digest}");
        let scopes = push_scopes(repo);
        let mut req = self.req(&op, Method::PUT, location, &scopes);
        req.headers.push((
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ));
        req.body = Body::File(body);
        req.retry = false;
        let resp = self.execute(&req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(&op, resp).await);
        }
        Ok(())
    }

    /// Upload a whole blob: open a session and PUT it; on a transient
    /// failure, start again from a new session with a fresh read of `body`.
    pub async fn upload_blob(
        &self,
        repo: &str,
        digest: &str,
        body: &FileRange,
    ) -> Result<(), RegistryError> {
        let mut attempt = 0;
        loop {
            let location = self.start_upload(repo).await?;
            match self.put_blob(location, repo, digest, body).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && attempt + 1 < self.retry.attempts => {
                    let delay = self.retry.delay(attempt, None);
                    tracing::warn!("{e}; restarting the upload in {:.1}s", delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
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

    /// Read a body of at most `MAX_FETCH` bytes.
    async fn small_body(&self, op: &str, resp: Response) -> Result<Vec<u8>, RegistryError> {
        let too_large = |n: u64| RegistryError::Protocol {
            host: self.endpoint.host.clone(),
            message: format!(
                "{op}: the answer is {n} bytes, more than a manifest or config can be"
            ),
        };
        if let Some(n) = resp.content_length().filter(|n| *n > MAX_FETCH) {
            return Err(too_large(n));
        }
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Unreachable {
            host: self.endpoint.host.clone(),
            url: self.endpoint.base_url.clone(),
            reason: format!(
                "{op} failed while reading the answer: {}",
                transport_reason(e)
            ),
        })?;
        if bytes.len() as u64 > MAX_FETCH {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes.to_vec())
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
        let bytes = self.small_body(&op, resp).await?;
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
        let bytes = self.small_body(&op, resp).await?;
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
        match resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(got) if got != digest => Err(RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: the registry stored digest {got}, kvpush sent {digest}; the image may be corrupt in transit"),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
