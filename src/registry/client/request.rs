//! A [`Client`] for one registry host and the request loop every protocol
//! operation goes through. [`Client::connect`] finds how the host is reached
//! (HTTPS first; plain HTTP only on loopback or with `--insecure`).
//! [`Client::execute`] adds authentication (only for the registry's own
//! scheme, host and port: an upload `Location` on blob storage elsewhere
//! gets none), answers one 401 challenge, retries transient
//! failures with back-off shared by the host, and watches for stalls; the
//! helpers below it read answers (bodies, errors, digests). Knows no
//! operation: which path, method and scope each one uses is in
//! [`super::blobs`], [`super::upload`] and [`super::manifests`].

use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, Response, StatusCode, Url};

use super::body::{Body, Progress};
use super::session::ChunkPolicy;
use crate::registry::answer::{read_capped, Cap, ReadFailure};
use crate::registry::auth::{challenge_error, Authenticator};
use crate::registry::credentials::{lookup_credentials, Login};
use crate::registry::endpoint::Endpoint;
use crate::registry::errors::{
    describe_error_body, error_body_text, stall_reason, transport_failure, RegistryError,
    TransportFailure,
};
use crate::registry::retry::{retry_after, retryable_status, HostBackoff, RetryPolicy};
use crate::registry::transport::{self, HttpClients};

/// One request as `execute` needs it to (re)send it.
pub(super) struct Req<'a> {
    op: &'a str,
    method: Method,
    url: Url,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) body: Body<'a>,
    /// Token scopes the request needs (`repository:NAME:pull,push`, ...).
    scopes: &'a [String],
    /// Retry transient failures here; false where a caller retries a larger
    /// unit (a blob PUT restarts from its POST).
    pub(super) retry: bool,
}

/// How to reach and trust registries, and how to send blobs to them.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Accept any TLS certificate and allow plain HTTP, on any host.
    pub insecure: bool,
    /// Extra trusted roots (`--ca-cert`), as `transport::load_ca_certs`
    /// read them; it records them for every host's trust as it reads them.
    pub ca_certs: Vec<reqwest::Certificate>,
    /// Tries, time limits and timeouts, token requests included.
    pub retry: RetryPolicy,
    /// `PATCH` size once the registry refuses whole blobs (`--chunk-size`).
    pub chunk_size: u64,
    /// Connections to open while probing, for the requests sent at once
    /// right after it (see [`transport::probe`]); 1: the probe's own.
    pub warm_connections: usize,
}

/// A client for one registry host.
#[derive(Debug)]
pub struct Client {
    pub(super) endpoint: Endpoint,
    pub(super) base: Url,
    http: reqwest::Client,
    /// What certificates are checked against, for error messages.
    trust: String,
    auth: Authenticator,
    pub(super) retry: RetryPolicy,
    backoff: HostBackoff,
    pub(super) chunks: ChunkPolicy,
}

pub(super) fn push_scopes(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

pub(super) fn pull_scopes(repo: &str) -> Vec<String> {
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
        login: Login,
        options: &ConnectOptions,
    ) -> Result<Client, RegistryError> {
        let protocol = |message: String| RegistryError::Protocol {
            host: host.to_string(),
            message,
        };
        let lookup = lookup_credentials(host, login).map_err(protocol)?;
        match &lookup.found {
            Some(c) => tracing::info!("using credentials for {host} from {}", c.source),
            None => tracing::info!("no credentials for {host}; going on anonymously"),
        }
        let clients = HttpClients::new(host, options.retry.connect_timeout).map_err(protocol)?;
        let (endpoint, status) = transport::probe(
            host,
            &clients,
            options.insecure,
            &options.retry,
            options.warm_connections,
        )
        .await?;
        let base = Url::parse(&endpoint.base_url).map_err(|e| {
            protocol(format!(
                "invalid registry address {}: {e}",
                endpoint.base_url
            ))
        })?;
        let http = clients.for_security(endpoint.security).clone();
        let trust = clients.trust.clone();
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
            trust,
            auth,
            retry: options.retry.clone(),
            backoff: HostBackoff::default(),
            chunks: ChunkPolicy::new(options.chunk_size),
        };
        // A 200 to the probe's `GET /v2/` is the API check passed, without
        // login: one round trip less. Anything else is asked again through
        // the request loop (a 401 logs in as the registry asks).
        if status != 200 {
            client.ping().await?;
        }
        Ok(client)
    }

    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    /// Why every request to the host now fails at once, if it does: it
    /// has answered nothing for `--retry-time` (an outage is counted from
    /// its first failure, for every request). Lets work that would only
    /// feed the host (a compression) not begin.
    pub fn given_up(&self) -> Option<String> {
        let since = self.backoff.down_since()?;
        (since.elapsed() >= self.retry.deadline).then(|| {
            format!(
                "registry {} has not answered for --retry-time {}s; check that it is running and reachable",
                self.endpoint.host,
                self.retry.deadline.as_secs()
            )
        })
    }

    pub(super) fn url(&self, path: &str) -> Url {
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
    /// origin, its body counted into `progress`; also returns the id
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
        let b = req.body.attach(b, progress, &self.endpoint.host)?;
        Ok((b, token_id))
    }

    /// One try of `req`, watched for stalls: the response (its headers;
    /// the body is read by the caller) or the transport error as text, and
    /// the id of the token sent.
    async fn send(
        &self,
        req: &Req<'_>,
    ) -> Result<(Result<Response, TransportFailure>, Option<u64>), RegistryError> {
        let progress = Progress::default();
        let (request, token_id) = self.build(req, &progress).await?;
        let limit = self.retry.stall_timeout;
        // While the host is down, a try that hangs (a connect, a read) ends
        // when the outage reaches --retry-time; a healthy host's tries are
        // never cut by it.
        let outage_end = self.backoff.down_since().map(|t| t + self.retry.deadline);
        let sent = tokio::select! {
            sent = request.send() => sent.map_err(transport_failure),
            () = progress.stalled(limit) => Err(stall_reason(limit).into()),
            () = sleep_until(outage_end) => Err(format!(
                "no answer while the registry has been unreachable for --retry-time {}s",
                self.retry.deadline.as_secs()
            ).into()),
        };
        Ok((sent, token_id))
    }

    /// Send `req`, answering one 401 challenge and retrying transient
    /// failures (when `req.retry`) with back-off shared by the whole host,
    /// within `--retries` tries and `--retry-time`. A transient status that
    /// is not retried any more becomes an error saying so.
    pub(super) async fn execute(&self, req: &Req<'_>) -> Result<Response, RegistryError> {
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
                    self.backoff.mark_up();
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
                Err(failure) if failure.certificate => {
                    return Err(transport::untrusted_error(
                        &self.endpoint.host,
                        &self.endpoint,
                        &failure.reason,
                        &self.trust,
                    ));
                }
                Err(TransportFailure { reason, .. }) => {
                    self.backoff.mark_down();
                    // An outage is counted from its start, for every request.
                    let since = self.backoff.down_since().map_or(first, |d| d.min(first));
                    let delay = self.retry.delay(tries - 1, None);
                    if let Some(why) = self.stop_retrying(req, tries, since, delay) {
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
    pub(super) async fn status_error(&self, operation: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        let denied = (status == 401 || status == 403) && self.same_origin(resp.url());
        let challenge = challenge_error(resp.headers());
        let repo = repo_of_path(resp.url().path()).to_string();
        // A registry that stops mid-body still gets its status reported.
        let body = self
            .read_body(operation, resp, Cap::ErrorBody)
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

    pub(super) fn req<'a>(
        &self,
        op: &'a str,
        method: Method,
        url: Url,
        scopes: &'a [String],
    ) -> Req<'a> {
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

    /// Read the body of the answer to `op`, at most `cap` bytes, giving up
    /// when it trickles ([`crate::registry::answer`]).
    pub(super) async fn read_body(
        &self,
        op: &str,
        resp: Response,
        cap: Cap,
    ) -> Result<Vec<u8>, RegistryError> {
        read_capped(resp, cap, self.retry.stall_timeout)
            .await
            .map_err(|failure| match failure {
                ReadFailure::TooLarge(why) => RegistryError::Protocol {
                    host: self.endpoint.host.clone(),
                    message: format!("{op}: {why}"),
                },
                ReadFailure::Broken(reason) => RegistryError::Unreachable {
                    host: self.endpoint.host.clone(),
                    url: self.endpoint.base_url.clone(),
                    reason: format!("{op} failed while reading the answer: {reason}"),
                },
            })
    }

    /// The registry's `Docker-Content-Digest` for a blob or manifest just
    /// stored, when it sends one, must be the digest kvpush computed.
    pub(super) fn check_digest(
        &self,
        op: &str,
        resp: &Response,
        digest: &str,
    ) -> Result<(), RegistryError> {
        match resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(got) if got != digest => Err(RegistryError::Protocol {
                host: self.endpoint.host.clone(),
                message: format!("{op}: the registry stored digest {got}, kvpush sent {digest}; the content was corrupted in transit"),
            }),
            _ => Ok(()),
        }
    }
}

/// Sleep until `at`, or forever when there is no such instant.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
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
