//! Manifests, and so tags: the digest a tag or digest reference points at
//! (`HEAD`), a manifest read whole and checked (`GET`), and the `PUT` that
//! stores an image, a list or a tag, checked against the digest kvpush
//! computed. Blobs are [`super::blobs`]' and [`super::upload`]'s; how
//! requests are sent is [`super::request`]'s.

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use std::time::Instant;

use reqwest::{Method, Response, StatusCode};

use super::body::Body;
use super::request::{pull_scopes, push_scopes, Client};
use crate::registry::answer::Cap;
use crate::registry::errors::{describe_error_body, error_codes, RegistryError};
use crate::registry::media;

/// A manifest as the registry stores it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// From `Content-Type`, else the manifest's own `mediaType`.
    pub media_type: String,
    /// sha256 of `bytes`, checked against `Docker-Content-Digest`.
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Client {
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
        let bytes = self.read_body(&op, resp, Cap::Manifest).await?;
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

    /// `PUT /v2/<repo>/manifests/<reference>`; checks that the registry
    /// stored exactly the bytes sent by comparing `Docker-Content-Digest`.
    /// A 400 naming blobs (`MANIFEST_BLOB_UNKNOWN`, `DIGEST_INVALID`) is
    /// what docker-registry answers while another run commits one of the
    /// same blobs: the blobs the manifest names are checked again and the
    /// `PUT` retried, within `--retries` and `--retry-time`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(), RegistryError> {
        let op = format!("PUT manifest {repo}:{reference}");
        let started = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let refused = match self
                .put_manifest_once(&op, repo, reference, media_type, bytes)
                .await?
            {
                Ok(resp) => return self.check_digest(&op, &resp, digest),
                Err(refused) => refused,
            };
            let missing = self.missing_references(repo, bytes).await?;
            let delay = self.retry.delay(tries - 1, None);
            if let Some(why) = self.retry.give_up(tries, started.elapsed(), delay) {
                let what = if missing.is_empty() {
                    "every blob it names is in the repository".to_string()
                } else {
                    format!("the repository lacks {}", missing.join(", "))
                };
                return Err(refused.with_note(&format!("{what}; {why}")));
            }
            tracing::warn!(
                "{} on {op}: {refused}; {} of the blobs it names missing (another push committing them?); retrying in {:.1}s",
                self.endpoint.host,
                missing.len(),
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One `PUT` of the manifest, for a caller that has not placed its
    /// blobs (the digest cache says they are there): true when it was
    /// stored (and checked as [`Client::put_manifest`] checks it), false
    /// when the registry refused it for a blob it does not hold, for the
    /// caller to place the blobs and put it again.
    pub async fn put_manifest_if_blobs_known(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) -> Result<bool, RegistryError> {
        let op = format!("PUT manifest {repo}:{reference}");
        match self
            .put_manifest_once(&op, repo, reference, media_type, bytes)
            .await?
        {
            Ok(resp) => self.check_digest(&op, &resp, digest).map(|()| true),
            Err(refused) => {
                tracing::debug!("{refused}");
                Ok(false)
            }
        }
    }

    /// One `PUT` of the manifest (the request loop's own retries
    /// included): the answer, or the error of a 400 naming blobs, which
    /// the caller retries.
    async fn put_manifest_once(
        &self,
        op: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Result<Response, RegistryError>, RegistryError> {
        let scopes = push_scopes(repo);
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let mut req = self.req(op, Method::PUT, url, &scopes);
        let content_type =
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("invalid media type {media_type:?}"),
            })?;
        req.headers.push((CONTENT_TYPE, content_type));
        req.body = Body::Bytes(bytes);
        let resp = self.execute(&req).await?;
        if resp.status().is_success() {
            return Ok(Ok(resp));
        }
        if resp.status() != StatusCode::BAD_REQUEST {
            return Err(self.status_error(op, resp).await);
        }
        let body = self
            .read_body(op, resp, Cap::ErrorBody)
            .await
            .unwrap_or_default();
        let error = RegistryError::Status {
            host: self.endpoint.host.clone(),
            operation: op.to_string(),
            status: 400,
            detail: describe_error_body(400, &body),
        };
        let names_blobs = error_codes(&body)
            .iter()
            .any(|c| BLOB_RACE_CODES.contains(&c.as_str()));
        if names_blobs {
            Ok(Err(error))
        } else {
            Err(error)
        }
    }

    /// The blobs (and, for a list, the manifests) `manifest` names that the
    /// repository does not hold now.
    async fn missing_references(
        &self,
        repo: &str,
        manifest: &[u8],
    ) -> Result<Vec<String>, RegistryError> {
        let parsed: serde_json::Value = serde_json::from_slice(manifest).unwrap_or_default();
        let digests = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["digest"].as_str().map(str::to_string))
                .collect()
        };
        let mut missing = Vec::new();
        let blobs = parsed["config"]["digest"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .chain(digests(&parsed["layers"]));
        for blob in blobs {
            if !self.blob_exists(repo, &blob).await? {
                missing.push(blob);
            }
        }
        for child in digests(&parsed["manifests"]) {
            if self.manifest_digest(repo, &child).await?.as_deref() != Some(child.as_str()) {
                missing.push(child);
            }
        }
        Ok(missing)
    }
}

/// Codes docker-registry answers to a manifest `PUT` while a blob it names
/// is being committed by another upload of the same blob.
const BLOB_RACE_CODES: [&str; 3] = ["MANIFEST_BLOB_UNKNOWN", "DIGEST_INVALID", "BLOB_UNKNOWN"];
