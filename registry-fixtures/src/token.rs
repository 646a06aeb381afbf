//! A minimal Docker token server (the `auth.token` flow of distribution) for
//! `RegistryKind::Token`: `GET /token?service=S&scope=repository:NAME:pull,push`
//! (HTTP Basic credentials required) and the OAuth2 `POST /token` form,
//! answering `{"token", "access_token", "expires_in"}` with an ES256 JWT whose
//! `x5c` header carries the signing certificate the registry trusts.

use crate::b64;
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

    pub(crate) fn mint(&self, subject: &str, access: &[Grant], ttl_secs: u64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
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
            "exp": now + ttl_secs, "nbf": now.saturating_sub(10), "iat": now,
            "jti": jti, "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64::encode_url(header.to_string().as_bytes()),
            b64::encode_url(claims.to_string().as_bytes())
        );
        let sig: Signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64::encode_url(&sig.to_bytes()))
    }
}

pub(crate) struct TokenServer {
    pub(crate) realm: String,
    port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub(crate) requests: Arc<Mutex<Vec<String>>>,
    pub(crate) signer: Arc<Mutex<Option<Arc<Signer>>>>,
}

impl TokenServer {
    /// Bind now (so the realm is known before the registry config is
    /// written); serve once the signer is installed.
    pub(crate) fn bind(credentials: (String, String)) -> io::Result<TokenServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let signer: Arc<Mutex<Option<Arc<Signer>>>> = Arc::new(Mutex::new(None));
        let (s2, r2, g2) = (stop.clone(), requests.clone(), signer.clone());
        let creds = Arc::new(credentials);
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, g, c) = (r2.clone(), g2.clone(), creds.clone());
                std::thread::spawn(move || {
                    let _ = handle_conn(conn, &r, &g, &c);
                });
            }
        });
        Ok(TokenServer {
            realm: format!("http://127.0.0.1:{port}/token"),
            port,
            stop,
            handle: Some(handle),
            requests,
            signer,
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

fn handle_conn(
    mut conn: TcpStream,
    requests: &Mutex<Vec<String>>,
    signer: &Mutex<Option<Arc<Signer>>>,
    creds: &(String, String),
) -> io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
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
    let target = parts.next().unwrap_or("").to_string();
    requests
        .lock()
        .expect("poisoned")
        .push(format!("{method} {target}"));
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path != "/token" {
        return respond(&mut conn, "404 Not Found", "", "{\"error\":\"not found\"}");
    }
    let mut form = parse_form(query);
    let mut user_pass = None;
    if method == "POST" {
        let mut body = vec![0u8; content_length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        form.extend(parse_form(&String::from_utf8_lossy(&body)));
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let (Some(u), Some(p)) = (get("username"), get("password")) {
            user_pass = Some((u, p));
        }
    }
    if let Some(a) = auth.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
        if let Some(dec) = b64::decode(a.trim()) {
            let s = String::from_utf8_lossy(&dec).into_owned();
            if let Some((u, p)) = s.split_once(':') {
                user_pass = Some((u.to_string(), p.to_string()));
            }
        }
    }
    match &user_pass {
        Some((u, p)) if *u == creds.0 && *p == creds.1 => {}
        _ => return respond(
            &mut conn,
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"kvpush-token-server\"\r\n",
            "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"bad or missing credentials\"}]}",
        ),
    }
    let service = form
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.as_str());
    if service.is_some_and(|s| s != SERVICE) {
        return respond(
            &mut conn,
            "400 Bad Request",
            "",
            "{\"error\":\"unknown service\"}",
        );
    }
    let grants: Vec<Grant> = form
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(scope_to_grant).collect::<Vec<_>>())
        .collect();
    let Some(signer) = signer.lock().expect("poisoned").clone() else {
        return respond(
            &mut conn,
            "503 Service Unavailable",
            "",
            "{\"error\":\"not ready\"}",
        );
    };
    let token = signer.mint(&creds.0, &grants, 300);
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    respond(&mut conn, "200 OK", "", &body)
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
