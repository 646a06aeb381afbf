//! The OCI distribution protocol: one [`client::Client`] per registry host.
//! Knows nothing about Bazel or images beyond blobs and manifests.

pub mod auth;
pub mod client;
pub mod retry;

use std::fmt;

/// Media types of Docker schema 2 images, as rules_docker's `format = "Docker"`.
pub mod media {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
}

/// Where a registry host is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as written in image references (`quay.io`, `localhost:5000`).
    pub host: String,
    /// Scheme, host and port the API is served on (`https://quay.io`).
    pub base_url: String,
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
    /// Plain HTTP for loopback registries (or anywhere with `insecure`),
    /// HTTPS otherwise. Docker Hub's API lives on registry-1.docker.io.
    pub fn for_host(host: &str, insecure: bool) -> Endpoint {
        let api_host = match host {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        let scheme = if is_loopback(host) || insecure {
            "http"
        } else {
            "https"
        };
        Endpoint {
            host: host.to_string(),
            base_url: format!("{scheme}://{api_host}"),
        }
    }
}

/// A registry's answer to one operation, or why there was none.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {host} at {url}: {reason}; check --registry and that the registry is running and reachable")]
    Unreachable {
        host: String,
        url: String,
        reason: String,
    },
    #[error("registry {host} answered {status} to {operation}{detail}")]
    Status {
        host: String,
        operation: String,
        status: u16,
        detail: String,
    },
    #[error("registry {host}: {message}")]
    Protocol { host: String, message: String },
}

/// The `errors` array distribution-spec registries put in error bodies.
#[derive(serde::Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorItem>,
}

#[derive(serde::Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Render an error response body as `: CODE: message[; CODE: message]`,
/// falling back to a short excerpt of a non-JSON body, plus a hint.
pub fn describe_error_body(status: u16, body: &[u8]) -> String {
    let mut out = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => {
            let items: Vec<String> = parsed
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
            format!(": {}", items.join("; "))
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                String::new()
            } else {
                format!(": {}", text.chars().take(200).collect::<String>())
            }
        }
    };
    let hint = match status {
        401 => " (the registry wants credentials: log in with `docker login`, or see the README's authentication section)",
        403 => " (the credentials lack push permission on this repository)",
        404 => " (does the repository path exist and is the --registry right?)",
        413 => " (the registry or a proxy in front of it rejects bodies this large)",
        429 => " (the registry is rate-limiting; try again later or lower --jobs)",
        500 | 502 | 503 | 504 | 522 => {
            " (the registry, or a proxy in front of it, is failing or overloaded; try again later)"
        }
        _ => "",
    };
    out.push_str(hint);
    out
}

impl RegistryError {
    /// The HTTP status the registry answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Append `note` (e.g. how many tries were made) to the message.
    pub fn with_note(mut self, note: &str) -> RegistryError {
        if note.is_empty() {
            return self;
        }
        match &mut self {
            RegistryError::Unreachable { reason: text, .. }
            | RegistryError::Status { detail: text, .. }
            | RegistryError::Protocol { message: text, .. } => {
                text.push_str(" (");
                text.push_str(note);
                text.push(')');
            }
        }
        self
    }

    /// Worth trying again: the registry was unreachable or answered a
    /// transient status.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => reqwest::StatusCode::from_u16(*status)
                .map(retry::retryable_status)
                .unwrap_or(false),
            RegistryError::Protocol { .. } => false,
        }
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
    fn endpoints() {
        assert_eq!(
            Endpoint::for_host("localhost:5000", false).base_url,
            "http://localhost:5000"
        );
        assert_eq!(
            Endpoint::for_host("quay.io", false).base_url,
            "https://quay.io"
        );
        assert_eq!(
            Endpoint::for_host("quay.io", true).base_url,
            "http://quay.io"
        );
        assert_eq!(
            Endpoint::for_host("docker.io", false).base_url,
            "https://registry-1.docker.io"
        );
    }

    #[test]
    fn error_bodies() {
        let body =
            br#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#;
        assert_eq!(
            describe_error_body(405, body),
            ": UNSUPPORTED: The operation is unsupported."
        );
        assert!(describe_error_body(502, b"<html>bad gateway</html>").contains("bad gateway"));
        assert!(describe_error_body(401, b"").contains("credentials"));
    }
}
