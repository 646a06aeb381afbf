//! A minimal Docker token server (the `auth.token` flow of distribution) for
//! `RegistryKind::Token`: `GET /token?service=S&scope=repository:NAME:pull,push`
//! (credentials by HTTP Basic, or none: anonymous) and the OAuth2 `POST /token`
//! form (`grant_type=password` or `refresh_token`), answering
//! `{"token", "access_token", "expires_in"}` with an ES256 JWT whose `x5c`
//! header carries the signing certificate the registry trusts.
//!
//! Who may do what, and how long tokens live, is a [`TokenPolicy`] a test
//! may change while the server runs; every request is recorded as a
//! [`TokenRequest`] and every token handed out is kept, so that tests can
//! count token fetches, check the scopes asked for, and grep output for
//! the tokens.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::ecdsa::{signature::Signer as _, Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const ISSUER: &str = "kvpush-fixtures";
pub(crate) const SERVICE: &str = "kvpush-registry";

/// One access grant: (type, name, actions).
pub(crate) type Grant = (String, String, Vec<String>);

pub(crate) struct Signer {
    key: SigningKey,
    x5c: String,
    counter: AtomicU64,
}

impl Signer {
    pub(crate) fn load(state: &Path) -> Result<Signer, String> {
        let pem = std::fs::read_to_string(state.join("token-signer.pk8"))
            .map_err(|e| format!("token key: {e}"))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| format!("token key: {e}"))?;
        let cert = std::fs::read_to_string(state.join("token-signer.crt"))
            .map_err(|e| format!("token cert: {e}"))?;
        let x5c: String = cert
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        Ok(Signer {
            key,
            x5c,
            counter: AtomicU64::new(0),
        })
    }

    /// A token valid until `valid_for` seconds from now (negative: already
    /// expired).
    pub(crate) fn mint(&self, subject: &str, access: &[Grant], valid_for: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let access: Vec<serde_json::Value> = access
            .iter()
            .map(|(t, n, a)| serde_json::json!({"type": t, "name": n, "actions": a}))
            .collect();
        let jti = format!(
            "kvpush-{}-{}",
            now,
            self.counter.fetch_add(1, Ordering::SeqCst)
        );
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + valid_for, "nbf": now - 10, "iat": now,
            "jti": jti, "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string().as_bytes()),
            URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes())
        );
        let sig: Signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

/// How long the registry still accepts a token after its `exp`
/// (distribution's verification leeway).
pub(crate) const REGISTRY_LEEWAY_SECS: i64 = 60;

/// An account of the token server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUser {
    pub name: String,
    pub password: String,
    /// Granted `push` when asked; otherwise at most `pull`.
    pub may_push: bool,
}

/// Who the token server knows and how it answers; change it with
/// [`crate::Registry::update_token_policy`] while it runs.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    pub users: Vec<TokenUser>,
    /// OAuth2 refresh tokens (docker's `identitytoken`) and their user.
    pub refresh_tokens: Vec<(String, String)>,
    /// `expires_in` announced; the registry accepts each token that long
    /// (its leeway taken into account), not a second more.
    pub expires_in: u64,
    /// The next N tokens asked for with a scope are handed out already
    /// expired while announcing `expires_in`: a token that runs out in the
    /// middle of a push (scope-less ones, as for `GET /v2/`, stay good).
    pub stale_tokens: usize,
    /// Answer 405 to `GET`, as token services that speak only the OAuth2
    /// `POST` form.
    pub post_only: bool,
    /// The next N requests are answered `503` with `Retry-After: 1`: a
    /// token service having a bad moment.
    pub unavailable: usize,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            users: Vec::new(),
            refresh_tokens: Vec::new(),
            expires_in: 300,
            stale_tokens: 0,
            post_only: false,
            unavailable: 0,
        }
    }
}

/// One request the token server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// `grant_type` of a `POST` (`password`, `refresh_token`).
    pub grant_type: Option<String>,
    /// The account authenticated, `None` for anonymous or refused requests.
    pub account: Option<String>,
    /// Scopes asked for, in order (`repository:NAME:pull,push`).
    pub scopes: Vec<String>,
    /// Status answered.
    pub status: u16,
    /// Access granted, as scopes (`repository:NAME:pull`).
    pub granted: Vec<String>,
}

/// State shared between the server thread and the [`crate::Registry`].
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) policy: Mutex<TokenPolicy>,
    pub(crate) requests: Mutex<Vec<TokenRequest>>,
    pub(crate) issued: Mutex<Vec<String>>,
    pub(crate) signer: Mutex<Option<Arc<Signer>>>,
}

pub(crate) struct TokenServer {
    pub(crate) realm: String,
    port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub(crate) shared: Arc<Shared>,
}

impl TokenServer {
    /// Bind now (so the realm is known before the registry config is
    /// written); serve once the signer is installed.
    pub(crate) fn bind(policy: TokenPolicy) -> io::Result<TokenServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            policy: Mutex::new(policy),
            ..Shared::default()
        });
        let (stop2, shared2) = (stop.clone(), shared.clone());
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared2.clone();
                std::thread::spawn(move || {
                    let _ = handle_conn(conn, &shared);
                });
            }
        });
        Ok(TokenServer {
            realm: format!("http://127.0.0.1:{port}/token"),
            port,
            stop,
            handle: Some(handle),
            shared,
        })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    fn hex_val(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `repository:NAME:pull,push` (NAME may contain ':' only for a port, which
/// repository names cannot) -> grant of all requested actions.
pub(crate) fn scope_to_grant(scope: &str) -> Option<Grant> {
    let (rest, actions) = scope.rsplit_once(':')?;
    let (typ, name) = rest.split_once(':')?;
    Some((
        typ.to_string(),
        name.to_string(),
        actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
    ))
}

fn respond(conn: &mut TcpStream, status: &str, extra: &str, body: &str) -> io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// The request as read off the wire.
struct Incoming {
    method: String,
    path: String,
    form: Vec<(String, String)>,
    basic: Option<(String, String)>,
}

fn read_request(conn: &TcpStream) -> io::Result<Incoming> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut auth = None;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => auth = Some(v),
                "content-length" => content_length = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut form = parse_form(query);
    if method == "POST" {
        let mut body = vec![0u8; content_length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        form.extend(parse_form(&String::from_utf8_lossy(&body)));
    }
    let basic = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|a| STANDARD.decode(a.trim()).ok())
        .and_then(|d| {
            let s = String::from_utf8_lossy(&d).into_owned();
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    Ok(Incoming {
        method,
        path: path.to_string(),
        form,
        basic,
    })
}

/// The answer to one token request: status, extra headers, body.
fn answer(req: &Incoming, shared: &Shared, record: &mut TokenRequest) -> (u16, String, String) {
    let get = |k: &str| {
        req.form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let policy = shared.policy.lock().expect("poisoned").clone();
    let refused = |message: &str| {
        (
            401,
            "WWW-Authenticate: Basic realm=\"kvpush-token-server\"\r\n".to_string(),
            format!("{{\"errors\":[{{\"code\":\"UNAUTHORIZED\",\"message\":\"{message}\"}}]}}"),
        )
    };
    if req.path != "/token" {
        return (404, String::new(), "{\"error\":\"not found\"}".into());
    }
    {
        let mut p = shared.policy.lock().expect("poisoned");
        if p.unavailable > 0 {
            p.unavailable -= 1;
            let body = "{\"error\":\"try again\"}".into();
            return (503, "Retry-After: 1\r\n".into(), body);
        }
    }
    if req.method == "GET" && policy.post_only {
        return (405, String::new(), "{\"error\":\"use POST\"}".into());
    }
    if get("service").is_some_and(|s| s != SERVICE) {
        return (400, String::new(), "{\"error\":\"unknown service\"}".into());
    }
    // Who is asking: Basic (GET), the password or refresh_token grant
    // (POST), or nobody.
    let presented = match (req.method.as_str(), get("grant_type").as_deref()) {
        ("POST", Some("password")) => Some(
            get("username")
                .zip(get("password"))
                .ok_or("the password grant needs username and password")
                .map(|(u, p)| policy.users.iter().find(|x| x.name == u && x.password == p)),
        ),
        ("POST", Some("refresh_token")) => Some(
            get("refresh_token")
                .ok_or("the refresh_token grant needs refresh_token")
                .map(|t| {
                    policy
                        .refresh_tokens
                        .iter()
                        .find(|(token, _)| *token == t)
                        .and_then(|(_, user)| policy.users.iter().find(|x| x.name == *user))
                }),
        ),
        ("POST", _) => Some(Err("unsupported grant_type")),
        _ => req.basic.as_ref().map(|(u, p)| {
            Ok(policy
                .users
                .iter()
                .find(|x| x.name == *u && x.password == *p))
        }),
    };
    let user = match presented {
        None => None,
        Some(Ok(Some(user))) => Some(user),
        Some(Ok(None)) => return refused("bad credentials"),
        Some(Err(message)) => return (400, String::new(), format!("{{\"error\":\"{message}\"}}")),
    };
    record.account = user.map(|u| u.name.clone());
    // Anonymous requests are granted nothing (a private registry);
    // accounts what they asked for, pull-only accounts at most pull.
    let grants: Vec<Grant> = match user {
        None => Vec::new(),
        Some(u) => record
            .scopes
            .iter()
            .filter_map(|s| scope_to_grant(s))
            .map(|(t, n, actions)| {
                let actions = actions
                    .into_iter()
                    .filter(|a| u.may_push || a == "pull")
                    .collect();
                (t, n, actions)
            })
            .collect(),
    };
    record.granted = grants
        .iter()
        .map(|(t, n, a)| format!("{t}:{n}:{}", a.join(",")))
        .collect();
    let Some(signer) = shared.signer.lock().expect("poisoned").clone() else {
        return (503, String::new(), "{\"error\":\"not ready\"}".into());
    };
    let valid_for = {
        let mut p = shared.policy.lock().expect("poisoned");
        if p.stale_tokens > 0 && !record.scopes.is_empty() {
            p.stale_tokens -= 1;
            -10 * REGISTRY_LEEWAY_SECS
        } else {
            policy.expires_in as i64 - REGISTRY_LEEWAY_SECS
        }
    };
    let subject = user.map_or("anonymous", |u| u.name.as_str());
    let token = signer.mint(subject, &grants, valid_for);
    shared.issued.lock().expect("poisoned").push(token.clone());
    let body = serde_json::json!({
        "token": token, "access_token": token, "expires_in": policy.expires_in,
    });
    (200, String::new(), body.to_string())
}

fn handle_conn(mut conn: TcpStream, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let req = read_request(&conn)?;
    let mut record = TokenRequest {
        method: req.method.clone(),
        grant_type: req
            .form
            .iter()
            .find(|(k, _)| k == "grant_type")
            .map(|(_, v)| v.clone()),
        account: None,
        // Repeated `scope` parameters (GET) or one space-separated (POST).
        scopes: req
            .form
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').filter(|s| !s.is_empty()).map(String::from))
            .collect(),
        status: 0,
        granted: Vec::new(),
    };
    let (status, extra, body) = answer(&req, shared, &mut record);
    record.status = status;
    shared.requests.lock().expect("poisoned").push(record);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    respond(&mut conn, &format!("{status} {reason}"), &extra, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_decoding() {
        assert_eq!(
            scope_to_grant("repository:kubevirt/virt-api:pull,push"),
            Some((
                "repository".into(),
                "kubevirt/virt-api".into(),
                vec!["pull".into(), "push".into()]
            ))
        );
        assert_eq!(
            scope_to_grant("registry:catalog:*"),
            Some(("registry".into(), "catalog".into(), vec!["*".into()]))
        );
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
        assert_eq!(
            parse_form("a=1&scope=x%3Ay&b"),
            vec![
                ("a".into(), "1".into()),
                ("scope".into(), "x:y".into()),
                ("b".into(), "".into())
            ]
        );
    }
}
