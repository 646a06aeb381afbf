//! Blobs as they are read: `HEAD` (does a repository hold it?) and the `GET`
//! of a small blob into memory, checked against its digest. The home of
//! further reads, such as a blob streamed down from an origin registry (with
//! its pull scope) into an upload elsewhere. Writing blobs is
//! [`super::upload`]'s; how requests are sent is [`super::request`]'s.

use reqwest::{Method, StatusCode};

use super::request::{pull_scopes, push_scopes, Client, MAX_FETCH};
use crate::registry::errors::RegistryError;

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
}
