//! Blobs whose bytes live in another registry (rules_img's shallow base
//! layers, [`RemoteBlob`]): where a cross-repository mount may find them on
//! the destination's own registry ([`mount_sources`]), and the streaming
//! copy otherwise ([`Run::copy_from_origins`]): a `GET` from each origin in
//! order, through its own client, piped into one `PUT` to the destination,
//! checked on the fly, started again from the `GET` on a transient failure
//! within the retry policy. Never a whole layer in memory or on disk.
//! Which repository a blob goes to first, and when, is `placement`'s.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use super::run::{cell, Run};
use crate::registry::client::{Client, DownloadFailure, Session};
use crate::registry::credentials::Login;
use crate::source::remote::{BlobOrigin, RemoteBlob};

/// Repositories of `host` that may hold `remote`, to mount from, in order:
/// the deploy manifest's cross-mount hint when it is about this registry,
/// then the origins on this registry.
pub(super) fn mount_sources<'r>(remote: &'r RemoteBlob, host: &str) -> Vec<&'r str> {
    let hint = remote
        .cross_mount
        .iter()
        .filter(|h| h.registry.as_deref().is_none_or(|r| r == host))
        .map(|h| h.repository.as_str());
    let origins = remote
        .origins
        .iter()
        .filter(|o| o.registry == host)
        .map(|o| o.repository.as_str());
    let mut out: Vec<&str> = hint.chain(origins).collect();
    out.dedup();
    out
}

/// A client of an origin: a destination's own when the origin is one.
enum OriginClient<'a> {
    Destination(&'a Client),
    Own(Arc<Client>),
}

impl Deref for OriginClient<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self {
            OriginClient::Destination(c) => c,
            OriginClient::Own(c) => c,
        }
    }
}

/// Whose fault a failed copy was: another origin may do better than the
/// first, another origin cannot help a destination that refuses.
enum CopyError {
    Origin(String),
    Destination(String),
}

impl Run<'_> {
    /// The client of origin `host`, connected on first need like the
    /// destination clients, but with the login files' credentials for that
    /// host only: never the command line's or the environment's, which are
    /// the push's ([`Login::Origin`]).
    async fn origin_client(&self, host: &str) -> Result<OriginClient<'_>, String> {
        // Docker Hub's names are served by one API host.
        let host = match host {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        if let Some(client) = self.clients.get(host) {
            return Ok(OriginClient::Destination(client));
        }
        let connect = self.options.connect_options();
        cell(&self.origin_clients, host.to_string())
            .get_or_init(|| async {
                Client::connect(host, Login::Origin, &connect)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await
            .clone()
            .map(OriginClient::Own)
    }

    /// Copy blob `digest` of `size` bytes into `repo` of `dest` from the
    /// first of `remote`'s origins that serves it, into `session` (a
    /// refused mount's) if there is one. The error names every origin
    /// tried, with its registry, repository and the digest.
    pub(super) async fn copy_from_origins(
        &self,
        dest: &Client,
        repo: &str,
        digest: &str,
        size: u64,
        remote: &RemoteBlob,
        mut session: Option<Session>,
    ) -> Result<(), String> {
        let mut failures = Vec::new();
        for origin in &remote.origins {
            match self
                .copy_from(dest, repo, digest, size, origin, &mut session)
                .await
            {
                Ok(()) => return Ok(()),
                Err(CopyError::Origin(e)) => failures.push(e),
                Err(CopyError::Destination(e)) => {
                    return Err(format!(
                        "cannot copy base layer {digest} from origin {origin} into {}/{repo}: {e}",
                        dest.host()
                    ))
                }
            }
        }
        Err(format!(
            "cannot copy base layer {digest} into {}/{repo}: {}",
            dest.host(),
            failures.join("; ")
        ))
    }

    /// One origin: `GET` piped into `PUT`, from the `GET` again while the
    /// failure is transient and the retry policy allows.
    async fn copy_from(
        &self,
        dest: &Client,
        repo: &str,
        digest: &str,
        size: u64,
        origin: &BlobOrigin,
        session: &mut Option<Session>,
    ) -> Result<(), CopyError> {
        let at_origin = |e: String| {
            CopyError::Origin(format!(
                "origin registry {} repository {} blob {digest}: {e}",
                origin.registry, origin.repository
            ))
        };
        let client = self
            .origin_client(&origin.registry)
            .await
            .map_err(at_origin)?;
        let policy = &self.options.retry;
        let first = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let download = client
                .download_blob(&origin.repository, digest, size)
                .await
                .map_err(|e| at_origin(e.to_string()))?;
            let sent = dest
                .upload_download(repo, digest, &download, session.take())
                .await;
            let (why, origin_fault) = match (sent, download.failure()) {
                (_, Some(DownloadFailure::Corrupt(m))) => {
                    return Err(at_origin(format!("the origin serves other bytes: {m}")))
                }
                (_, Some(DownloadFailure::Broken(m))) => (format!("the download broke: {m}"), true),
                (Ok(()), None) => return Ok(()),
                (Err(e), None) if e.is_transient() => (e.to_string(), false),
                (Err(e), None) => return Err(CopyError::Destination(e.to_string())),
            };
            let delay = policy.delay(tries - 1, None);
            if let Some(give_up) = policy.give_up(tries, first.elapsed(), delay) {
                let why = format!("{why} (copy restarted from its GET; {give_up})");
                return Err(if origin_fault {
                    at_origin(why)
                } else {
                    CopyError::Destination(why)
                });
            }
            tracing::warn!(
                "copying {digest} from {origin}: {why}; again in {:.1}s",
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::remote::CrossMountHint;

    #[test]
    fn mounts_come_from_the_hint_then_origins_on_the_same_registry() {
        let origin = |registry: &str, repository: &str| BlobOrigin {
            registry: registry.into(),
            repository: repository.into(),
        };
        let mut remote = RemoteBlob {
            origins: vec![
                origin("gcr.io", "distroless/base"),
                origin("r:5000", "mirror/base"),
            ],
            cross_mount: Some(CrossMountHint {
                registry: None,
                repository: "kubevirt/base".into(),
            }),
        };
        assert_eq!(
            mount_sources(&remote, "r:5000"),
            ["kubevirt/base", "mirror/base"]
        );
        assert_eq!(
            mount_sources(&remote, "gcr.io"),
            ["kubevirt/base", "distroless/base"]
        );
        remote.cross_mount.as_mut().unwrap().registry = Some("quay.io".into());
        assert_eq!(mount_sources(&remote, "r:5000"), ["mirror/base"]);
        assert!(mount_sources(&remote, "other:1").is_empty());
    }
}
