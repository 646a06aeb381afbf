//! Registry authentication: where credentials come from, the challenge a
//! registry answers with (`WWW-Authenticate: Basic` or `Bearer`), and bearer
//! tokens per scope set. Secrets live in [`Secret`], which never prints.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use super::RegistryError;

/// A secret string: shown as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json).
    IdentityToken(Secret),
}

/// A credential and where it was found, for messages.
#[derive(Clone, Debug)]
pub struct FoundCredential {
    pub credential: Credential,
    pub source: String,
}

/// The key Docker's config.json uses for a registry host.
fn docker_config_key(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

fn from_docker(c: docker_credential::DockerCredential, source: &str) -> FoundCredential {
    let credential = match c {
        docker_credential::DockerCredential::IdentityToken(t) => {
            Credential::IdentityToken(Secret(t))
        }
        docker_credential::DockerCredential::UsernamePassword(username, password) => {
            Credential::Basic {
                username,
                password: Secret(password),
            }
        }
    };
    FoundCredential {
        credential,
        source: source.to_string(),
    }
}

/// One of docker_credential's lookups (config.json, auth.json).
type CredentialLookup =
    fn(
        &str,
    )
        -> Result<docker_credential::DockerCredential, docker_credential::CredentialRetrievalError>;

/// Find credentials for `host`, first match wins: `explicit` (flags), then
/// `KVPUSH_USERNAME`/`KVPUSH_PASSWORD`, then Docker's config.json (auths,
/// credHelpers, credsStore), then Podman's auth.json. `None` = anonymous.
pub fn lookup_credentials(
    host: &str,
    explicit: Option<FoundCredential>,
) -> Result<Option<FoundCredential>, String> {
    if explicit.is_some() {
        return Ok(explicit);
    }
    match (
        std::env::var("KVPUSH_USERNAME").ok(),
        std::env::var("KVPUSH_PASSWORD").ok(),
    ) {
        (Some(username), Some(password)) if !username.is_empty() => {
            return Ok(Some(FoundCredential {
                credential: Credential::Basic {
                    username,
                    password: Secret(password),
                },
                source: "KVPUSH_USERNAME/KVPUSH_PASSWORD".into(),
            }))
        }
        (Some(u), None) if !u.is_empty() => {
            return Err("KVPUSH_USERNAME is set but KVPUSH_PASSWORD is not".into())
        }
        _ => {}
    }
    let key = docker_config_key(host);
    use docker_credential::CredentialRetrievalError as E;
    let lookups: [(&str, CredentialLookup); 2] = [
        ("Docker config.json", docker_credential::get_credential),
        ("Podman auth.json", docker_credential::get_podman_credential),
    ];
    for (source, lookup) in lookups {
        match lookup(key) {
            Ok(c) => return Ok(Some(from_docker(c, source))),
            Err(E::ConfigNotFound | E::ConfigReadError | E::NoCredentialConfigured) => {}
            Err(e) => {
                return Err(format!(
                    "cannot read the credentials for {host} from {source}: {e:?}; fix the file or its credential helper, or pass --username/--password-stdin"
                ))
            }
        }
    }
    Ok(None)
}

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parse `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

#[derive(Clone)]
struct Token {
    value: Secret,
    renew_at: Instant,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Authentication state for one registry host, shared by all its requests.
pub struct Authenticator {
    host: String,
    http: reqwest::Client,
    credential: Option<FoundCredential>,
    challenge: RwLock<Option<Challenge>>,
    /// One slot per scope set: concurrent requests share one token fetch.
    tokens: Mutex<HashMap<String, TokenSlot>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(
        host: &str,
        http: reqwest::Client,
        credential: Option<FoundCredential>,
    ) -> Authenticator {
        Authenticator {
            host: host.to_string(),
            http,
            credential,
            challenge: RwLock::new(None),
            tokens: Mutex::default(),
        }
    }

    fn slot(&self, scopes: &[String]) -> TokenSlot {
        let key = scopes.join(" ");
        self.tokens
            .lock()
            .expect("token map poisoned")
            .entry(key)
            .or_default()
            .clone()
    }

    /// The `Authorization` value to send proactively, once the registry's
    /// challenge is known.
    pub async fn header(&self, scopes: &[String]) -> Result<Option<HeaderValue>, RegistryError> {
        let challenge = self.challenge.read().expect("challenge poisoned").clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.basic_header()),
            Some(Challenge::Bearer { realm, service }) => {
                let slot = self.slot(scopes);
                let mut guard = slot.lock().await;
                if let Some(t) = guard.as_ref().filter(|t| Instant::now() < t.renew_at) {
                    return Ok(Some(bearer(&t.value)));
                }
                let token = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                let header = bearer(&token.value);
                *guard = Some(token);
                Ok(Some(header))
            }
        }
    }

    /// After a 401: learn the challenge, drop the token that failed.
    /// Returns true when a retry with (new) credentials can help.
    pub async fn on_unauthorized(&self, headers: &HeaderMap, scopes: &[String]) -> bool {
        let Some(challenge) = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
        else {
            return false;
        };
        let had = self.challenge.read().expect("challenge poisoned").clone();
        *self.challenge.write().expect("challenge poisoned") = Some(challenge.clone());
        match challenge {
            // Basic without credentials, or credentials already refused.
            Challenge::Basic => self.credential.is_some() && had != Some(Challenge::Basic),
            Challenge::Bearer { .. } => {
                *self.slot(scopes).lock().await = None;
                true
            }
        }
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        match &self.credential.as_ref()?.credential {
            Credential::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose());
                let mut v = HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
                .ok()?;
                v.set_sensitive(true);
                Some(v)
            }
            Credential::IdentityToken(_) => None,
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token, RegistryError> {
        let fail = |message: String| RegistryError::Protocol {
            host: self.host.clone(),
            message,
        };
        let realm_url = reqwest::Url::parse(realm)
            .map_err(|e| fail(format!("invalid token realm {realm:?}: {e}")))?;
        let source = self
            .credential
            .as_ref()
            .map(|c| c.source.as_str())
            .unwrap_or("no credentials (anonymous)");
        let resp = match self.credential.as_ref().map(|c| &c.credential) {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.expose().to_string()),
                    ("client_id", "kvpush".to_string()),
                    ("scope", scopes.join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_string()));
                }
                self.http.post(realm_url.clone()).form(&form).send().await
            }
            other => {
                let mut url = realm_url.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for scope in scopes {
                        q.append_pair("scope", scope);
                    }
                }
                let mut req = self.http.get(url);
                if let Some(Credential::Basic { username, password }) = other {
                    req = req.basic_auth(username, Some(password.expose()));
                }
                req.send().await
            }
        };
        let resp = resp.map_err(|e| {
            fail(format!(
                "cannot reach the token service {}: {}",
                realm_url.host_str().unwrap_or(realm),
                e.without_url()
            ))
        })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Status {
                host: self.host.clone(),
                operation: format!("a token request (credentials from {source})"),
                status: status.as_u16(),
                detail: ": the credentials were refused; check the username and password (or run `docker login` again)".into(),
            });
        }
        if !status.is_success() {
            return Err(fail(format!("the token service answered {status}")));
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| fail(format!("invalid token response: {}", e.without_url())))?;
        let value = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("the token response holds no token".into()))?;
        // Renew a little before expiry; the spec's default lifetime is 60 s.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(10));
        Ok(Token {
            value: Secret(value),
            renew_at: Instant::now() + lifetime.mul_f64(0.8),
        })
    }
}

fn bearer(token: &Secret) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg.example".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("Bearer service=x"),
            None,
            "a bearer challenge needs a realm"
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn secrets_never_print() {
        let c = Credential::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(Secret::new("x").to_string(), "<redacted>");
    }

    #[test]
    fn docker_hub_uses_the_v1_key() {
        assert_eq!(
            docker_config_key("docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(docker_config_key("quay.io"), "quay.io");
    }
}
