//! How a registry host is reached: TLS trust and the HTTP clients built on
//! it (system roots, or `SSL_CERT_FILE` which replaces them as in OpenSSL,
//! plus `--ca-cert` files; a second client that skips certificate checks,
//! used only for loopback registries and with `--insecure`), the probe that
//! picks HTTPS or a fallback, and the rule for where credentials may travel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{redirect, Certificate, Url};

use super::endpoint::{is_loopback, Endpoint, Security};
use super::errors::{stall_reason, transport_reason, RegistryError};
use super::retry::RetryPolicy;

const USER_AGENT: &str = concat!("kvpush/", env!("CARGO_PKG_VERSION"));

/// Read `--ca-cert` files (PEM, one or more certificates each).
pub fn load_ca_certs(paths: &[PathBuf]) -> Result<Vec<Certificate>, String> {
    let mut certs = Vec::new();
    for path in paths {
        certs.extend(read_pem_bundle(path, "--ca-cert")?);
    }
    Ok(certs)
}

fn read_pem_bundle(path: &Path, what: &str) -> Result<Vec<Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("{what} {}: cannot read it: {e}", path.display()))?;
    let certs = Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{what} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `SSL_CERT_FILE`, when set, replaces the system roots: check it up front,
/// since an unreadable one would silently leave no trusted root at all.
pub fn check_ssl_cert_file() -> Result<(), String> {
    match std::env::var_os("SSL_CERT_FILE") {
        Some(p) if !p.is_empty() => read_pem_bundle(Path::new(&p), "SSL_CERT_FILE").map(|_| ()),
        _ => Ok(()),
    }
}

/// The two HTTP clients of a registry host.
#[derive(Clone, Debug)]
pub struct HttpClients {
    /// Checks certificates against the system roots and `--ca-cert`.
    pub verified: reqwest::Client,
    /// Accepts any certificate: loopback registries and `--insecure` only.
    pub unverified: reqwest::Client,
}

impl HttpClients {
    /// No read_timeout: reqwest counts it from the start of the request,
    /// so it would cut long uploads; every request is watched for stalls
    /// (`--stall-timeout`) instead.
    pub fn new(ca_certs: &[Certificate], connect_timeout: Duration) -> Result<HttpClients, String> {
        let build = |verify: bool| {
            let mut b = reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(connect_timeout)
                .redirect(redirect_policy())
                .danger_accept_invalid_certs(!verify);
            for cert in ca_certs {
                b = b.add_root_certificate(cert.clone());
            }
            b.build()
                .map_err(|e| format!("cannot set up the HTTP client: {e}"))
        };
        Ok(HttpClients {
            verified: build(true)?,
            unverified: build(false)?,
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
/// not verified HTTPS.
pub async fn probe(
    host: &str,
    clients: &HttpClients,
    insecure: bool,
    retry: &RetryPolicy,
) -> Result<Endpoint, RegistryError> {
    let candidates = Endpoint::candidates(host, insecure);
    let started = std::time::Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let mut reasons = Vec::new();
        for candidate in &candidates {
            let http = clients.for_security(candidate.security);
            let get = http.get(format!("{}/v2/", candidate.base_url)).send();
            match tokio::time::timeout(retry.stall_timeout, get).await {
                Ok(Ok(_)) => {
                    tracing::debug!(
                        "reached registry {host} at {} ({:?}) in {} ms",
                        candidate.base_url,
                        candidate.security,
                        started.elapsed().as_millis()
                    );
                    warn_unless_verified(candidate, insecure, reasons.first());
                    return Ok(candidate.clone());
                }
                Ok(Err(e)) => reasons.push(transport_reason(e)),
                Err(_) => reasons.push(stall_reason(retry.stall_timeout)),
            }
        }
        let mut reason = distinct(reasons).join("; ");
        let delay = retry.delay(tries - 1, None);
        if let Some(why) = retry.give_up(tries, started.elapsed(), delay) {
            if reason.contains("certificate") {
                reason.push_str("; if its certificate comes from a private CA, pass --ca-cert FILE (or set SSL_CERT_FILE); --insecure skips the check");
            }
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
