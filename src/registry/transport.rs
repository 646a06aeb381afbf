//! How a registry host is reached: the HTTP clients of a host (one checking
//! certificates against what [`super::trust`] gathers: system roots or
//! `SSL_CERT_FILE`, `--ca-cert`, certs.d; a second that skips the checks,
//! used only for loopback registries and with `--insecure`), reading
//! `--ca-cert` files, the probe that picks HTTPS or a fallback (a failed
//! certificate check ends it at once), and the rule for where credentials
//! may travel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{redirect, Certificate, Url};

use super::endpoint::{is_loopback, Endpoint, Security};
use super::errors::{stall_reason, transport_failure, RegistryError};
use super::retry::RetryPolicy;
use super::trust;

const USER_AGENT: &str = concat!("kvpush/", env!("CARGO_PKG_VERSION"));

/// Read `--ca-cert` files (PEM, one or more certificates each); their
/// certificates are trusted for every registry host from then on.
pub fn load_ca_certs(paths: &[PathBuf]) -> Result<Vec<Certificate>, String> {
    let mut certs = Vec::new();
    for path in paths {
        let ders = trust::read_certs(path, "--ca-cert")?;
        for der in &ders {
            certs
                .push(Certificate::from_der(der).map_err(|e| {
                    format!("--ca-cert {}: not a certificate: {e}", path.display())
                })?);
        }
        trust::remember_ca_cert(path, ders);
    }
    Ok(certs)
}

/// `SSL_CERT_FILE`, when set, replaces the system roots: check it up front,
/// since an unreadable one would silently leave no trusted root at all.
pub fn check_ssl_cert_file() -> Result<(), String> {
    match std::env::var_os("SSL_CERT_FILE") {
        Some(p) if !p.is_empty() => trust::read_certs(Path::new(&p), "SSL_CERT_FILE").map(|_| ()),
        _ => Ok(()),
    }
}

/// Test only: `NAME=ADDR[,NAME=ADDR]` resolves host NAME to IP ADDR, so
/// tests reach a registry on 127.0.0.1 under a non-loopback name without
/// editing /etc/hosts. Not for production use.
pub const TEST_RESOLVE_ENV: &str = "KVPUSH_TEST_RESOLVE";

fn test_resolve(mut b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let Ok(map) = std::env::var(TEST_RESOLVE_ENV) else {
        return b;
    };
    for pair in map.split(',') {
        if let Some((name, addr)) = pair.split_once('=') {
            if let Ok(ip) = addr.trim().parse::<std::net::IpAddr>() {
                // reqwest uses the URL's port; the one given here is ignored.
                b = b.resolve(name.trim(), std::net::SocketAddr::new(ip, 0));
            }
        }
    }
    b
}

/// The two HTTP clients of a registry host.
#[derive(Clone, Debug)]
pub struct HttpClients {
    /// Checks certificates against what [`trust`] gathers for the host.
    pub verified: reqwest::Client,
    /// Accepts any certificate: loopback registries and `--insecure` only.
    pub unverified: reqwest::Client,
    /// What `verified` checks certificates against, in words.
    pub trust: String,
}

impl HttpClients {
    /// The clients for registry `host` (`name[:port]`). No read_timeout:
    /// reqwest counts it from the start of the request, so it would cut
    /// long uploads; every request is watched for stalls
    /// (`--stall-timeout`) instead.
    pub fn new(host: &str, connect_timeout: Duration) -> Result<HttpClients, String> {
        let builder = || {
            test_resolve(
                reqwest::Client::builder()
                    .user_agent(USER_AGENT)
                    .connect_timeout(connect_timeout)
                    .redirect(redirect_policy()),
            )
        };
        let setup = |e: reqwest::Error| format!("cannot set up the HTTP client: {e}");
        let (tls, trust) = trust::client_config(host)?;
        Ok(HttpClients {
            verified: builder()
                .use_preconfigured_tls(tls)
                .build()
                .map_err(setup)?,
            unverified: builder()
                .danger_accept_invalid_certs(true)
                .build()
                .map_err(setup)?,
            trust,
        })
    }

    /// The client for an endpoint of the registry.
    pub fn for_security(&self, security: Security) -> &reqwest::Client {
        match security {
            Security::Verified => &self.verified,
            Security::Unverified | Security::Plain => &self.unverified,
        }
    }

    /// The client for a token service at `url`: certificates are checked
    /// unless the service is on loopback or `--insecure` was given.
    pub fn for_url(&self, url: &Url, insecure: bool) -> &reqwest::Client {
        if insecure || url.host_str().is_some_and(is_loopback) {
            &self.unverified
        } else {
            &self.verified
        }
    }
}

fn distinct(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Find how `host` is reached: the first of [`Endpoint::candidates`] that
/// answers HTTP at all (any status), trying them all again with back-off
/// while none does, within `--retries` and `--retry-time`. Warns when it is
/// not verified HTTPS. The candidates are asked all at once (on loopback
/// three of them: on a far link, one round trip instead of three) and the
/// first that answers in their order wins; returns it with the status its
/// `GET /v2/` got (200: no login needed, the API check is done).
///
/// Where HTTPS with checked certificates is the only candidate (a
/// registry elsewhere, without `--insecure`), `warm` connections are
/// opened at once (`warm - 1` more `GET /v2/` beside the probe's own) and
/// kept in the client's pool: HTTP/1.1 carries one request at a time per
/// connection, so the `warm` requests a push sends right after the probe
/// (one per image) find their connections open instead of each paying a
/// handshake round trip first. Not with several candidates: each would
/// get them, and on loopback, where a handshake costs nothing, the warm
/// push measured 0.09 s without and 0.3 s with them.
pub async fn probe(
    host: &str,
    clients: &HttpClients,
    insecure: bool,
    retry: &RetryPolicy,
    warm: usize,
) -> Result<(Endpoint, u16), RegistryError> {
    let candidates = Endpoint::candidates(host, insecure);
    let warm = if candidates.len() == 1 { warm } else { 1 };
    let started = std::time::Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let try_started = std::time::Instant::now();
        let mut reasons = Vec::new();
        let mut untrusted = None;
        let stall = retry.stall_timeout;
        let get = |candidate: &Endpoint| {
            clients
                .for_security(candidate.security)
                .get(format!("{}/v2/", candidate.base_url))
                .send()
        };
        let mut asked: Vec<_> = candidates
            .iter()
            .map(|candidate| {
                let get = get(candidate);
                // Spawned so that all run at once; aborted once one won.
                tokio::spawn(async move { tokio::time::timeout(stall, get).await })
            })
            .collect();
        let mut warming: Vec<Vec<_>> = candidates
            .iter()
            .map(|candidate| {
                (1..warm)
                    .map(|_| {
                        let get = get(candidate);
                        tokio::spawn(async move {
                            // Read to the end, so that the connection
                            // goes back to the pool.
                            if let Ok(Ok(resp)) = tokio::time::timeout(stall, get).await {
                                let _ = tokio::time::timeout(stall, resp.bytes()).await;
                            }
                        })
                    })
                    .collect()
            })
            .collect();
        for (i, candidate) in candidates.iter().enumerate() {
            let answer = match (&mut asked[i]).await {
                Ok(answer) => answer,
                Err(e) => {
                    reasons.push(format!("the probe of {} failed: {e}", candidate.base_url));
                    continue;
                }
            };
            match answer {
                Ok(Ok(resp)) => {
                    asked.iter().for_each(|a| a.abort());
                    let warmed = std::mem::take(&mut warming[i]);
                    warming.iter().flatten().for_each(|w| w.abort());
                    // Sent with the probe, they end about when it did: wait
                    // as long again at most, then go on without the rest.
                    let _ = tokio::time::timeout(
                        try_started.elapsed(),
                        futures::future::join_all(warmed),
                    )
                    .await;
                    tracing::debug!(
                        "reached registry {host} at {} ({:?}) in {} ms",
                        candidate.base_url,
                        candidate.security,
                        started.elapsed().as_millis()
                    );
                    warn_unless_verified(candidate, insecure, reasons.first());
                    return Ok((candidate.clone(), resp.status().as_u16()));
                }
                Ok(Err(e)) => {
                    let failure = transport_failure(e);
                    let final_ = failure.certificate || trust::wants_client_cert(host);
                    if final_ && untrusted.is_none() {
                        untrusted = Some((candidate, failure.reason.clone()));
                    }
                    reasons.push(failure.reason);
                }
                Err(_) => reasons.push(stall_reason(retry.stall_timeout)),
            }
        }
        warming.iter().flatten().for_each(|w| w.abort());
        // No fallback took it and the same certificates would fail again.
        if let Some((candidate, reason)) = untrusted {
            return Err(untrusted_error(host, candidate, &reason, &clients.trust));
        }
        let reason = distinct(reasons).join("; ");
        let delay = retry.delay(tries - 1, None);
        if let Some(why) = retry.give_up(tries, started.elapsed(), delay) {
            let urls = distinct(candidates.iter().map(|c| format!("{}/v2/", c.base_url)));
            return Err(RegistryError::Unreachable {
                host: host.to_string(),
                url: urls.join(" and "),
                reason: format!("{reason} ({why})"),
            });
        }
        tracing::warn!(
            "cannot reach registry {host} yet ({reason}); retrying in {:.1}s",
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
    }
}

/// A certificate check that failed: what was checked against what, and
/// what to do, without suggesting a `--ca-cert` that was already given.
pub(crate) fn untrusted_error(
    host: &str,
    endpoint: &Endpoint,
    reason: &str,
    trust: &str,
) -> RegistryError {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let advice = if let Some(client) = trust::client_cert_refusal(host, reason) {
        client
    } else if trust.contains("--ca-cert") || trust.contains("certs.d") {
        "the certificate the registry presents must be one of those, or be signed by one, and list the name in its subjectAltName; --insecure skips the check".to_string()
    } else {
        "if its certificate comes from a private CA or is self-signed, pass --ca-cert FILE or put it in /etc/docker/certs.d/HOST:PORT/ca.crt; --insecure skips the check".to_string()
    };
    RegistryError::Untrusted {
        host: host.to_string(),
        url: format!("{}/v2/", endpoint.base_url),
        reason: format!(
            "{reason}; the certificate was checked for the name {name} against {trust}; {advice}; not retried, as it would fail the same way"
        ),
    }
}

/// Say so when a registry is spoken to without a checked certificate;
/// `refused` is why verified HTTPS failed.
fn warn_unless_verified(endpoint: &Endpoint, insecure: bool, refused: Option<&String>) {
    let host = &endpoint.host;
    match endpoint.security {
        Security::Verified => {}
        Security::Unverified if insecure => {
            tracing::warn!("--insecure: the TLS certificate of registry {host} is not checked")
        }
        Security::Unverified => tracing::warn!(
            "the TLS certificate of registry {host} is not trusted ({}); it is on loopback, so kvpush goes on without checking it, as docker does; pass --ca-cert FILE to check it",
            refused.map_or("", String::as_str)
        ),
        Security::Plain if is_loopback(host) => {}
        Security::Plain => tracing::warn!(
            "--insecure: registry {host} is spoken to over plain HTTP; credentials and images cross the network unencrypted"
        ),
    }
}

/// Follow at most 10 redirects and never from HTTPS down to plain HTTP.
/// reqwest itself drops `Authorization` when a redirect changes host or
/// port, so a registry's credentials never follow it to blob storage.
fn redirect_policy() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("refusing a redirect from HTTPS to plain HTTP")
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// May credentials (a password, a refresh token) be sent to `url`? Over
/// HTTPS yes; over plain HTTP only to loopback or with `--insecure`.
pub fn may_send_credentials(url: &Url, insecure: bool) -> bool {
    url.scheme() == "https" || insecure || url.host_str().is_some_and(is_loopback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_travel_over_https_or_to_loopback() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(may_send_credentials(&url("https://quay.io/v2/"), false));
        assert!(may_send_credentials(
            &url("http://127.0.0.1:5000/v2/"),
            false
        ));
        assert!(may_send_credentials(
            &url("http://localhost:5000/token"),
            false
        ));
        assert!(may_send_credentials(&url("http://[::1]:5000/v2/"), false));
        assert!(!may_send_credentials(
            &url("http://registry.example:5000/v2/"),
            false
        ));
        assert!(!may_send_credentials(&url("http://10.0.0.1/token"), false));
        assert!(may_send_credentials(
            &url("http://registry.example:5000/v2/"),
            true
        ));
    }

    #[test]
    fn ca_cert_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = load_ca_certs(&[missing]).unwrap_err();
        assert!(e.contains("--ca-cert") && e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = load_ca_certs(&[empty]).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
