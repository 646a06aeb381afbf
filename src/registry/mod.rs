//! The OCI distribution protocol: one [`client::Client`] per registry host.
//! Knows nothing about Bazel or images beyond blobs and manifests.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod retry;
pub mod transport;

use std::fmt;

/// Media types of Docker schema 2 images, as rules_docker's `format = "Docker"`.
pub mod media {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    /// Every manifest kind kvpush reads or compares, for `Accept` headers:
    /// without the list types a registry may answer a list's tag with the
    /// digest of its linux/amd64 image instead.
    pub const ACCEPT_ALL: &str = "application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

    /// A single-platform image manifest (Docker schema 2 or OCI).
    pub fn is_image_manifest(media_type: &str) -> bool {
        media_type == DOCKER_MANIFEST || media_type == OCI_MANIFEST
    }

    /// A manifest list or image index.
    pub fn is_index(media_type: &str) -> bool {
        media_type == DOCKER_MANIFEST_LIST || media_type == OCI_INDEX
    }

    /// The manifest format of images kvpush assembles itself (`--format`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Format {
        /// Docker schema 2, as rules_docker's `format = "Docker"`.
        #[default]
        Docker,
        /// OCI image manifest and media types.
        Oci,
    }

    impl Format {
        pub fn parse(s: &str) -> Result<Format, String> {
            match s {
                "docker" | "Docker" => Ok(Format::Docker),
                "oci" | "OCI" => Ok(Format::Oci),
                other => Err(format!(
                    "unknown --format {other:?}: use docker (the default) or oci"
                )),
            }
        }
        pub fn manifest(self) -> &'static str {
            match self {
                Format::Docker => DOCKER_MANIFEST,
                Format::Oci => OCI_MANIFEST,
            }
        }
        pub fn config(self) -> &'static str {
            match self {
                Format::Docker => DOCKER_CONFIG,
                Format::Oci => OCI_CONFIG,
            }
        }
        pub fn layer_gzip(self) -> &'static str {
            match self {
                Format::Docker => DOCKER_LAYER_GZIP,
                Format::Oci => OCI_LAYER_GZIP,
            }
        }
    }
}

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
    /// 401/403 after authenticating as well as kvpush could: who was
    /// refused what, with which credentials, and what to do.
    #[error("registry {host} refused {operation} ({status}{detail}) {credentials}: {advice}")]
    Denied {
        host: String,
        operation: String,
        status: u16,
        detail: String,
        /// "with credentials from SOURCE" or "without credentials".
        credentials: String,
        advice: String,
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
    let mut out = error_body_text(body);
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

/// `: CODE: message[; CODE: message]` of an error body, or a short excerpt
/// of a non-JSON one; empty for an empty body.
pub fn error_body_text(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
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
    }
}

impl RegistryError {
    /// The HTTP status the registry answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } | RegistryError::Denied { status, .. } => {
                Some(*status)
            }
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
            | RegistryError::Denied { advice: text, .. }
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
            RegistryError::Denied { .. } | RegistryError::Protocol { .. } => false,
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
