//! Where a registry host is reached and how it is spoken to: the
//! [`Endpoint`]s to try for a host (HTTPS first; HTTPS without checks and
//! plain HTTP only on loopback or with `--insecure`), and what counts as
//! loopback. Pure values: the probing itself, TLS and credentials belong to
//! [`super::transport`].

use std::fmt;

/// How a registry host is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// HTTPS, the certificate checked against the trusted roots.
    Verified,
    /// HTTPS, any certificate accepted.
    Unverified,
    /// Plain HTTP.
    Plain,
}

/// Where a registry host is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as written in image references (`quay.io`, `localhost:5000`).
    pub host: String,
    /// Scheme, host and port the API is served on (`https://quay.io`).
    pub base_url: String,
    pub security: Security,
}

/// True for `localhost`, `127.0.0.0/8` and `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Endpoint {
    /// The ways to reach `host`, to try in order: HTTPS with the
    /// certificate checked; then, for loopback hosts or with `insecure`
    /// only, HTTPS accepting any certificate and plain HTTP (as docker and
    /// crane do). Docker Hub's API lives on registry-1.docker.io.
    pub fn candidates(host: &str, insecure: bool) -> Vec<Endpoint> {
        let api_host = match host {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        let at = |scheme: &str, security| Endpoint {
            host: host.to_string(),
            base_url: format!("{scheme}://{api_host}"),
            security,
        };
        let mut out = vec![at("https", Security::Verified)];
        if insecure || is_loopback(host) {
            out.push(at("https", Security::Unverified));
            out.push(at("http", Security::Plain));
        }
        out
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "quay.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "docker.io",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn endpoints_try_https_first_and_plain_http_only_on_loopback_or_insecure() {
        let urls = |host, insecure| {
            Endpoint::candidates(host, insecure)
                .into_iter()
                .map(|e| (e.base_url, e.security))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            urls("localhost:5000", false),
            [
                ("https://localhost:5000".to_string(), Security::Verified),
                ("https://localhost:5000".to_string(), Security::Unverified),
                ("http://localhost:5000".to_string(), Security::Plain),
            ]
        );
        assert_eq!(
            urls("quay.io", false),
            [("https://quay.io".to_string(), Security::Verified)]
        );
        assert_eq!(urls("quay.io", true).len(), 3);
        assert_eq!(urls("quay.io", true)[2].0, "http://quay.io");
        assert_eq!(
            urls("docker.io", false),
            [(
                "https://registry-1.docker.io".to_string(),
                Security::Verified
            )]
        );
    }
}
