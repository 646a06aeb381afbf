//! What went wrong, in words a user can act on: [`RegistryError`], the text
//! of a registry's error body, and the classification of transport failures
//! (a reqwest error chain, a stall) that the request loop, the token
//! requests and the probe all report the same way. Below every other
//! registry module; knows no request, client or credential.

use std::time::Duration;

use super::retry;

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
    /// The TLS handshake failed on the certificates: trying again cannot
    /// help, so this is never retried.
    #[error("cannot reach registry {host} at {url}: {reason}")]
    Untrusted {
        host: String,
        url: String,
        reason: String,
    },
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
        401 => " (the registry wants credentials: log in with `docker login`, or see kvpush's docs/reference.md, Authentication)",
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

/// The `code`s of a distribution-spec error body (none for another body).
pub fn error_codes(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.errors.into_iter().map(|e| e.code).collect())
        .unwrap_or_default()
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
            | RegistryError::Protocol { message: text, .. }
            | RegistryError::Untrusted { reason: text, .. } => {
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
            RegistryError::Denied { .. }
            | RegistryError::Protocol { .. }
            | RegistryError::Untrusted { .. } => false,
        }
    }
}

/// The error text of a transport failure, with every source in the chain
/// but no URL (upload URLs can carry session state).
pub(super) fn transport_reason(err: reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let err = err.without_url();
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// A transport failure as the request loop and the probe see it.
#[derive(Debug)]
pub(super) struct TransportFailure {
    pub(super) reason: String,
    /// A certificate or hostname check failed, on either side: the same
    /// certificates would fail again, so it is not retried.
    pub(super) certificate: bool,
}

impl From<String> for TransportFailure {
    /// A failure that is not about certificates (a stall, a broken body).
    fn from(reason: String) -> Self {
        TransportFailure {
            reason,
            certificate: false,
        }
    }
}

/// [`transport_reason`] and whether the failure was a certificate check.
pub(super) fn transport_failure(err: reqwest::Error) -> TransportFailure {
    let certificate = is_certificate_failure(&err);
    TransportFailure {
        reason: transport_reason(err),
        certificate,
    }
}

/// Does the chain hold a rustls error about certificates (ours refused the
/// server's, or the server refused ours)? hyper wraps it in an io::Error,
/// whose `source()` skips it, so look inside those too.
fn is_certificate_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return certificate_error(tls);
        }
        // io::Errors nest (hyper-util wraps tokio-rustls's); step inside.
        source = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

fn certificate_error(e: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::CertificateRequired
        ),
        _ => false,
    }
}

/// Why a request was abandoned by the stall watchdog.
pub(super) fn stall_reason(limit: Duration) -> String {
    format!(
        "nothing moved for {:.0}s (stalled; see --stall-timeout)",
        limit.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn certificate_failures_are_told_apart_through_io_errors() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::other(bad);
        assert!(is_certificate_failure(&wrapped));
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let nested =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, alert));
        assert!(is_certificate_failure(&nested));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!is_certificate_failure(&reset));
        let untrusted = RegistryError::Untrusted {
            host: "h".into(),
            url: "https://h/v2/".into(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        };
        assert!(!untrusted.is_transient());
    }
}
