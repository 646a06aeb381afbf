//! HTTP operations against one registry: blob existence, mount, upload and
//! manifest PUT, built on reqwest.
//!
//! Written on reqwest rather than oci-client because kvpush needs to mount
//! across repositories, stream bodies from file ranges, and decide per
//! response what happens next (see the README's design section).

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{describe_error_body, media, Endpoint, RegistryError};
use crate::blob::FileRange;

const USER_AGENT: &str = concat!("kvpush/", env!("CARGO_PKG_VERSION"));
const STREAM_BUF: usize = 256 * 1024;

/// What a cross-repository mount request led to.
#[derive(Debug)]
pub enum MountOutcome {
    Mounted,
    /// The registry opened an upload session instead; upload to it.
    UploadAt(Url),
}

/// A client for one registry host.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
    base: Url,
    http: reqwest::Client,
}

/// The error text of a transport failure, with every source in the chain
/// but no URL (upload URLs can carry session state).
fn transport_reason(err: reqwest::Error) -> String {
    let mut parts = Vec::new();
    let err = err.without_url();
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Result<Client, RegistryError> {
        let base = Url::parse(&endpoint.base_url).map_err(|e| RegistryError::Protocol {
            host: endpoint.host.clone(),
            message: format!("invalid registry address {}: {e}", endpoint.base_url),
        })?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| RegistryError::Protocol {
                host: endpoint.host.clone(),
                message: format!("cannot set up HTTP client: {}", transport_reason(e)),
            })?;
        Ok(Client {
            endpoint,
            base,
            http,
        })
    }

    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("registry API paths are valid URL paths")
    }

    async fn send(
        &self,
        operation: &str,
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<Response, RegistryError> {
        tracing::debug!(host = %self.endpoint.host, %operation, path = url.path(), "request");
        req.send().await.map_err(|e| RegistryError::Unreachable {
            host: self.endpoint.host.clone(),
            url: format!("{}{}", self.endpoint.base_url, url.path()),
            reason: format!("{operation} failed: {}", transport_reason(e)),
        })
    }

    async fn status_error(&self, operation: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        RegistryError::Status {
            host: self.endpoint.host.clone(),
            operation: operation.to_string(),
            status,
            detail: describe_error_body(status, &body),
        }
    }

    /// `GET /v2/`: is this a registry we can talk to?
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.url("/v2/");
        let resp = self
            .send("GET /v2/", self.http.get(url.clone()), &url)
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self
            .status_error("GET /v2/ (API version check)", resp)
            .await)
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: does the repository hold the blob?
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let op = format!("HEAD blob {repo}@{digest}");
        let resp = self.send(&op, self.http.head(url.clone()), &url).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&op, resp).await),
        }
    }

    fn location(&self, op: &str, headers: &HeaderMap) -> Result<Url, RegistryError> {
        let location = headers
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
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let op = format!("POST upload to {repo}");
        let resp = self
            .send(
                &op,
                self.http.post(url.clone()).header(CONTENT_LENGTH, 0),
                &url,
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&op, resp).await);
        }
        self.location(&op, resp.headers())
    }

    /// Ask the registry to link a blob from another repository of its own.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &str,
        from: &str,
    ) -> Result<MountOutcome, RegistryError> {
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", from);
        let op = format!("mount {digest} from {from} into {repo}");
        let resp = self
            .send(
                &op,
                self.http.post(url.clone()).header(CONTENT_LENGTH, 0),
                &url,
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => Ok(MountOutcome::UploadAt(self.location(&op, resp.headers())?)),
            _ => Err(self.status_error(&op, resp).await),
        }
    }

    /// Finish an upload session with the whole blob in one `PUT ?digest=`,
    /// streamed from `body` (never held in memory).
    pub async fn put_blob(
        &self,
        mut location: Url,
        repo: &str,
        digest: &str,
        body: &FileRange,
    ) -> Result<(), RegistryError> {
        location.query_pairs_mut().append_pair("digest", digest);
        let op = format!("PUT blob {repo}@{digest}");
        let io_error = |e: std::io::Error| RegistryError::Protocol {
            host: self.endpoint.host.clone(),
            message: format!(
                "cannot read {} to upload {digest}: {e}",
                body.path.display()
            ),
        };
        let mut file = tokio::fs::File::open(&body.path).await.map_err(io_error)?;
        file.seek(std::io::SeekFrom::Start(body.offset))
            .await
            .map_err(io_error)?;
        let stream = ReaderStream::with_capacity(file.take(body.len), STREAM_BUF);
        let req = self
            .http
            .put(location.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, body.len)
            .body(reqwest::Body::wrap_stream(stream));
        let resp = self.send(&op, req, &location).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(&op, resp).await);
        }
        Ok(())
    }

    /// Upload a whole blob: open a session, then PUT it.
    pub async fn upload_blob(
        &self,
        repo: &str,
        digest: &str,
        body: &FileRange,
    ) -> Result<(), RegistryError> {
        let location = self.start_upload(repo).await?;
        self.put_blob(location, repo, digest, body).await
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: the digest the reference
    /// points at now, if any.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let op = format!("HEAD manifest {repo}:{reference}");
        let accept = format!("{}, {}", media::DOCKER_MANIFEST, media::OCI_MANIFEST);
        let resp = self
            .send(
                &op,
                self.http.head(url.clone()).header(ACCEPT, accept),
                &url,
            )
            .await?;
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
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let op = format!("PUT manifest {repo}:{reference}");
        let req = Method::PUT;
        let resp = self
            .send(
                &op,
                self.http
                    .request(req, url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec()),
                &url,
            )
            .await?;
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
