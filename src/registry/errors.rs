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
}
