//! Registry authentication as the registry asks for it in its 401
//! `WWW-Authenticate` challenge: `Basic` (the credentials on every request)
//! or `Bearer` (a token from the realm for the scopes a request needs).
//!
//! Tokens are cached per repository and renewed before `expires_in` runs
//! out; concurrent requests for one repository share one fetch, and a
//! token serves every request whose scopes it covers. A push token also
//! asks to pull from the repositories blobs were mounted from so far, so
//! that later mounts into it need no token of their own: a cold push
//! fetches about one token per repository, not one per mount source. A token the
//! registry refuses mid-run (expired, revoked, `insufficient_scope`) is
//! dropped so that the next try fetches a new one, unless another request
//! already replaced it. Token requests are retried and watched for stalls
//! as registry requests are, except a failed certificate check (it would
//! fail the same way); their answers are read capped ([`super::answer`]). Where credentials come from is
//! [`super::credentials`]; they never print. Reading the challenge
//! header is [`super::challenge`]'s.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};

use super::answer::{read_capped, Cap, ReadFailure};
pub use super::challenge::{challenge_error, parse_challenge, Challenge};
use super::credentials::{Credential, FoundCredential, Lookup, ENV_SOURCE};
use super::errors::{error_body_text, stall_reason, transport_failure, RegistryError};
use super::retry::{retry_after, retryable_status, RetryPolicy};
use super::transport::{may_send_credentials, HttpClients};

/// A cached token; `id` tells a refused token from its replacement.
struct Token {
    value: HeaderValue,
    id: u64,
    renew_at: Instant,
    /// The scopes it was asked for.
    scopes: Vec<String>,
}

/// How long to use a token: until `expires_in` (60 s when absent, as the
/// token spec says) minus a margin of a quarter of it, at most 30 s, so
/// that no request sets off with a token about to run out.
pub fn token_use_period(expires_in: Option<u64>) -> Duration {
    let lifetime = Duration::from_secs(expires_in.unwrap_or(60));
    lifetime - (lifetime / 4).min(Duration::from_secs(30))
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

/// The `Authorization` to send with a request, and which token it holds.
pub struct Authorization {
    pub value: HeaderValue,
    pub token_id: Option<u64>,
}

/// Authentication state for one registry host, shared by all its requests.
pub struct Authenticator {
    host: String,
    clients: HttpClients,
    insecure: bool,
    credential: Option<FoundCredential>,
    /// Places the credential lookup went through, for "no credentials".
    searched: Vec<String>,
    /// False when the registry is reached over plain HTTP off loopback
    /// without `--insecure`: Basic credentials are then never sent.
    basic_allowed: bool,
    challenge: RwLock<Option<Challenge>>,
    /// One slot per repository (the first scope's): concurrent requests
    /// share one token fetch.
    tokens: Mutex<HashMap<String, TokenSlot>>,
    /// Scopes requests needed beyond their own repository's (mount
    /// sources), in order of first need; push tokens ask for them too.
    sources: Mutex<Vec<String>>,
    next_token_id: AtomicU64,
    /// Token requests are retried and watched for stalls as registry
    /// requests are.
    retry: RetryPolicy,
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
        registry_url: &Url,
        clients: HttpClients,
        insecure: bool,
        lookup: Lookup,
        retry: RetryPolicy,
    ) -> Authenticator {
        Authenticator {
            host: host.to_string(),
            clients,
            insecure,
            credential: lookup.found,
            searched: lookup.searched,
            basic_allowed: may_send_credentials(registry_url, insecure),
            challenge: RwLock::new(None),
            tokens: Mutex::default(),
            sources: Mutex::default(),
            next_token_id: AtomicU64::new(1),
            retry,
        }
    }

    fn slot(&self, scopes: &[String]) -> TokenSlot {
        let key = scopes
            .first()
            .map_or("", |s| s.rsplit_once(':').map_or(s.as_str(), |(r, _)| r))
            .to_string();
        self.tokens
            .lock()
            .expect("token map poisoned")
            .entry(key)
            .or_default()
            .clone()
    }

    /// The `Authorization` to send proactively, once the registry's
    /// challenge is known.
    pub async fn authorize(
        &self,
        scopes: &[String],
    ) -> Result<Option<Authorization>, RegistryError> {
        let challenge = self.challenge.read().expect("challenge poisoned").clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.basic_header().map(|value| Authorization {
                value,
                token_id: None,
            })),
            Some(Challenge::Bearer { realm, service }) => {
                let slot = self.slot(scopes);
                let mut guard = slot.lock().await;
                if let Some(t) = guard
                    .as_ref()
                    .filter(|t| Instant::now() < t.renew_at && covers(&t.scopes, scopes))
                {
                    return Ok(Some(Authorization {
                        value: t.value.clone(),
                        token_id: Some(t.id),
                    }));
                }
                let ask = self.scopes_to_ask(scopes, guard.as_ref());
                let token = self.fetch_token(&realm, service.as_deref(), &ask).await?;
                let auth = Authorization {
                    value: token.value.clone(),
                    token_id: Some(token.id),
                };
                *guard = Some(token);
                Ok(Some(auth))
            }
        }
    }

    /// After a 401 to a request sent with token `used` (if any): learn the
    /// challenge and drop that token. True when one more try, with
    /// (new) credentials, can help.
    pub async fn on_unauthorized(
        &self,
        headers: &HeaderMap,
        scopes: &[String],
        used: Option<u64>,
    ) -> bool {
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
            Challenge::Basic => self.basic_header().is_some() && had != Some(Challenge::Basic),
            Challenge::Bearer { .. } => {
                let slot = self.slot(scopes);
                let mut guard = slot.lock().await;
                if used.is_some() && guard.as_ref().map(|t| t.id) == used {
                    *guard = None;
                }
                true
            }
        }
    }

    /// What to ask a new token for: `needed`, what the repository's last
    /// token had, and, for a push, pull on every mount source seen so far.
    fn scopes_to_ask(&self, needed: &[String], last: Option<&Token>) -> Vec<String> {
        let mut sources = self.sources.lock().expect("sources poisoned");
        for s in needed.iter().skip(1) {
            if !sources.contains(s) {
                sources.push(s.clone());
            }
        }
        let push = needed
            .first()
            .and_then(|s| s.rsplit_once(':'))
            .is_some_and(|(_, actions)| actions.split(',').any(|a| a == "push"));
        let last = last.map_or(&[][..], |t| t.scopes.as_slice());
        let extra = if push { sources.as_slice() } else { &[] };
        merge_scopes(needed.iter().chain(last).chain(extra))
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        if !self.basic_allowed {
            return None;
        }
        match &self.credential.as_ref()?.credential {
            Credential::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                sensitive(&format!("Basic {encoded}"))
            }
            Credential::IdentityToken(_) => None,
        }
    }

    /// "with credentials from SOURCE" or "without credentials", for errors.
    pub fn credentials_used(&self) -> String {
        match &self.credential {
            Some(c) => format!("with credentials from {}", c.source),
            None => "without credentials".into(),
        }
    }

    /// What to do about a registry's 401 or 403 to an operation on `repo`
    /// (empty for the API check); `error` is the challenge's `error`.
    pub fn advice(&self, status: u16, error: Option<&str>, repo: &str) -> String {
        let host = &self.host;
        let Some(found) = &self.credential else {
            // An origin registry is never given the push's own credentials.
            let env = if self.searched.iter().any(|s| s == ENV_SOURCE) {
                ", or set KVPUSH_USERNAME and KVPUSH_PASSWORD"
            } else {
                " (an origin registry of base layers gets only what these login files hold for it)"
            };
            return format!(
                "the registry wants credentials and kvpush found none for {host} (it looked at {}); run `docker login {host}` (or `podman login {host}`){env}",
                self.searched.join(", ")
            );
        };
        let is_challenge_basic = matches!(
            *self.challenge.read().expect("challenge poisoned"),
            Some(Challenge::Basic)
        );
        if matches!(found.credential, Credential::IdentityToken(_)) && is_challenge_basic {
            return format!(
                "{} holds an identity token, which only token (Bearer) auth accepts and {host} asks for Basic auth; log in with a username and password instead",
                found.source
            );
        }
        let denied = status == 403 || error == Some("insufficient_scope");
        if denied && !repo.is_empty() {
            return format!(
                "the account may not push to {repo}: give it write access there (quay.io: a robot account with write permission on the repository; ghcr.io: a token with write:packages), or push under a --registry path it may write to"
            );
        }
        let again = if found.from_login_file() {
            format!(", or log in again with `docker login {host}`")
        } else {
            String::new()
        };
        format!(
            "check the user name and password (or token) in {}{again}",
            found.source
        )
    }

    /// Send a token request as registry requests are sent: a transport
    /// error, a stall or a transient status is tried again, within
    /// `--retries` and `--retry-time`. The last answer, even a transient
    /// one, is returned for the caller to report.
    async fn send_token_request(
        &self,
        req: reqwest::RequestBuilder,
        realm_url: &Url,
        realm_host: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let first = Instant::now();
        let limit = self.retry.stall_timeout;
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = req
                .try_clone()
                .expect("token requests have no streamed body");
            let (reason, delay, answer) = match tokio::time::timeout(limit, attempt.send()).await {
                Ok(Ok(resp)) if !retryable_status(resp.status()) => return Ok(resp),
                Ok(Ok(resp)) => (
                    format!("answered {}", resp.status()),
                    self.retry.delay(tries - 1, retry_after(resp.headers())),
                    Some(resp),
                ),
                Ok(Err(e)) => {
                    let failure = transport_failure(e);
                    if failure.certificate {
                        return Err(RegistryError::Untrusted {
                            host: self.host.clone(),
                            url: realm_url.to_string(),
                            reason: format!(
                                "its token service {realm_host}: {}; the certificate was checked against {}; not retried, as it would fail the same way",
                                failure.reason, self.clients.trust
                            ),
                        });
                    }
                    (failure.reason, self.retry.delay(tries - 1, None), None)
                }
                Err(_) => (stall_reason(limit), self.retry.delay(tries - 1, None), None),
            };
            if let Some(why) = self.retry.give_up(tries, first.elapsed(), delay) {
                return answer.ok_or_else(|| RegistryError::Protocol {
                    host: self.host.clone(),
                    message: format!(
                        "cannot reach its token service {realm_host}: {reason} ({why})"
                    ),
                });
            }
            tracing::warn!(
                "token service {realm_host} of {}: {reason}; retrying in {:.1}s",
                self.host,
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
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
        let realm_url =
            Url::parse(realm).map_err(|e| fail(format!("invalid token realm {realm:?}: {e}")))?;
        let realm_host = match (realm_url.host_str(), realm_url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => realm.to_string(),
        };
        let credential = self.credential.as_ref().map(|c| &c.credential);
        if credential.is_some() && !may_send_credentials(&realm_url, self.insecure) {
            return Err(fail(format!(
                "its token service {realm_host} is plain HTTP: kvpush does not send credentials there; pass --insecure to allow it"
            )));
        }
        let http = self.clients.for_url(&realm_url, self.insecure);
        // The OAuth2 form: refresh_token, or password when GET is not served.
        let post = |grant: Vec<(&'static str, String)>| {
            let mut form = grant;
            form.push(("client_id", "kvpush".into()));
            form.push(("scope", scopes.join(" ")));
            if let Some(s) = service {
                form.push(("service", s.into()));
            }
            http.post(realm_url.clone()).form(&form)
        };
        let requested_at = Instant::now();
        let resp = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                let grant = vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", refresh.expose().into()),
                ];
                self.send_token_request(post(grant), &realm_url, &realm_host)
                    .await?
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
                let mut req = http.get(url);
                if let Some(Credential::Basic { username, password }) = other {
                    req = req.basic_auth(username, Some(password.expose()));
                }
                let resp = self
                    .send_token_request(req, &realm_url, &realm_host)
                    .await?;
                match (resp.status(), other) {
                    (
                        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED,
                        Some(Credential::Basic { username, password }),
                    ) => {
                        let grant = vec![
                            ("grant_type", "password".into()),
                            ("username", username.clone()),
                            ("password", password.expose().into()),
                        ];
                        self.send_token_request(post(grant), &realm_url, &realm_host)
                            .await?
                    }
                    _ => resp,
                }
            }
        };
        let status = resp.status();
        let cap = if status.is_success() {
            Cap::Token
        } else {
            Cap::ErrorBody
        };
        let body = read_capped(resp, cap, self.retry.stall_timeout)
            .await
            .map_err(|(ReadFailure::TooLarge(why) | ReadFailure::Broken(why))| why);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Denied {
                host: self.host.clone(),
                operation: format!("a token from its token service {realm_host}"),
                status: status.as_u16(),
                detail: error_body_text(&body.unwrap_or_default()),
                credentials: self.credentials_used(),
                advice: self.advice(status.as_u16(), None, ""),
            });
        }
        if !status.is_success() {
            return Err(fail(format!(
                "its token service {realm_host} answered {status}{}",
                error_body_text(&body.unwrap_or_default())
            )));
        }
        let body = body.map_err(|reason| {
            fail(format!(
                "cannot read the answer of its token service {realm_host}: {reason}"
            ))
        })?;
        let body: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            fail(format!(
                "invalid answer from its token service {realm_host}: {e}"
            ))
        })?;
        let value = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .and_then(|t| sensitive(&format!("Bearer {t}")))
            .ok_or_else(|| {
                fail(format!(
                    "its token service {realm_host} answered no usable token"
                ))
            })?;
        tracing::debug!(host = %self.host, scopes = %scopes.join(" "), expires_in = body.expires_in, "new token");
        Ok(Token {
            value,
            id: self.next_token_id.fetch_add(1, Ordering::Relaxed),
            renew_at: requested_at + token_use_period(body.expires_in),
            scopes: scopes.to_vec(),
        })
    }
}

/// `type:name:actions` into its resource and actions.
fn split_scope(scope: &str) -> (&str, Vec<&str>) {
    match scope.rsplit_once(':') {
        Some((resource, actions)) => (resource, actions.split(',').collect()),
        None => (scope, Vec::new()),
    }
}

/// One scope per resource, actions united, in order of first appearance.
fn merge_scopes<'a>(scopes: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut merged: Vec<(&str, Vec<&str>)> = Vec::new();
    for scope in scopes {
        let (resource, actions) = split_scope(scope);
        match merged.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, have)) => {
                for a in actions {
                    if !have.contains(&a) {
                        have.push(a);
                    }
                }
            }
            None => merged.push((resource, actions)),
        }
    }
    merged
        .into_iter()
        .map(|(r, a)| {
            if a.is_empty() {
                r.to_string()
            } else {
                format!("{r}:{}", a.join(","))
            }
        })
        .collect()
}

/// Whether a token asked for `granted` serves a request needing `needed`.
fn covers(granted: &[String], needed: &[String]) -> bool {
    needed.iter().all(|n| {
        let (resource, actions) = split_scope(n);
        granted.iter().any(|g| {
            let (r, have) = split_scope(g);
            r == resource && actions.iter().all(|a| have.contains(a))
        })
    })
}

/// A header value marked sensitive (hidden by `Debug`, never indexed).
fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        assert_eq!(token_use_period(Some(300)), Duration::from_secs(270));
        assert_eq!(token_use_period(None), Duration::from_secs(45));
        assert_eq!(token_use_period(Some(60)), Duration::from_secs(45));
        assert_eq!(token_use_period(Some(4)), Duration::from_secs(3));
        assert_eq!(token_use_period(Some(0)), Duration::ZERO);
        assert_eq!(token_use_period(Some(3600)), Duration::from_secs(3570));
    }

    /// An authenticator for a real token-auth registry, challenge learnt.
    async fn token_authenticator(reg: &kvpush_fixtures::Registry) -> Authenticator {
        let (username, password) = reg.credentials().unwrap();
        let retry = RetryPolicy::default();
        let clients = HttpClients::new("127.0.0.1", retry.connect_timeout).unwrap();
        let base = Url::parse(&format!("http://{}", reg.addr())).unwrap();
        let lookup = Lookup {
            found: Some(FoundCredential {
                credential: Credential::Basic {
                    username: username.into(),
                    password: super::super::credentials::Secret::new(password),
                },
                source: "test".into(),
            }),
            searched: Vec::new(),
        };
        let auth = Authenticator::new(reg.addr(), &base, clients.clone(), false, lookup, retry);
        let resp = clients
            .verified
            .get(base.join("/v2/").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert!(auth.on_unauthorized(resp.headers(), &[], None).await);
        auth
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_token_fetch_and_renew_it_when_due() {
        let reg = kvpush_fixtures::Registry::start(kvpush_fixtures::RegistryKind::Token);
        reg.update_token_policy(|p| p.expires_in = 8);
        let auth = token_authenticator(&reg).await;
        let scopes = vec!["repository:a/b:pull,push".to_string()];
        let before = Instant::now();
        let all = futures::future::join_all((0..20).map(|_| auth.authorize(&scopes))).await;
        let ids: std::collections::HashSet<Option<u64>> = all
            .into_iter()
            .map(|a| a.unwrap().unwrap().token_id)
            .collect();
        assert_eq!(ids.len(), 1, "one token for all");
        assert_eq!(reg.token_requests().len(), 1, "one fetch for all");

        // Due for renewal 6 s (8 s less a quarter) after it was asked for.
        let slot = auth.slot(&scopes);
        let renew_at = slot.lock().await.as_ref().unwrap().renew_at;
        assert!(renew_at >= before + Duration::from_secs(6));
        assert!(renew_at <= Instant::now() + Duration::from_secs(6));
        // Once due, the next request fetches a new one.
        slot.lock().await.as_mut().unwrap().renew_at = Instant::now();
        let renewed = auth.authorize(&scopes).await.unwrap().unwrap();
        assert!(!ids.contains(&renewed.token_id));
        assert_eq!(reg.token_requests().len(), 2);
        assert_eq!(reg.token_requests()[1].scopes, scopes);

        // A refused token is dropped; a stale report about an older one
        // leaves its replacement alone.
        let mut refusal = HeaderMap::new();
        refusal.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="http://127.0.0.1:1/token",service="kvpush-registry",error="invalid_token""#),
        );
        let old = ids.into_iter().next().unwrap();
        assert!(auth.on_unauthorized(&refusal, &scopes, old).await);
        assert!(slot.lock().await.is_some(), "the newer token stays");
        assert!(
            auth.on_unauthorized(&refusal, &scopes, renewed.token_id)
                .await
        );
        assert!(slot.lock().await.is_none(), "the refused token is dropped");
    }

    #[test]
    fn scopes_merge_per_repository_and_cover_their_subsets() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let merged = merge_scopes(
            s(&[
                "repository:a:pull",
                "repository:b:pull",
                "repository:a:push",
            ])
            .iter(),
        );
        assert_eq!(merged, s(&["repository:a:pull,push", "repository:b:pull"]));
        assert!(covers(&merged, &s(&["repository:a:pull"])));
        assert!(covers(
            &merged,
            &s(&["repository:a:push", "repository:b:pull"])
        ));
        assert!(!covers(&merged, &s(&["repository:b:push"])));
        assert!(!covers(&merged, &s(&["repository:c:pull"])));
    }

    #[test]
    fn authorization_values_are_sensitive() {
        let v = sensitive("Bearer abc").unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("abc"));
    }
}
