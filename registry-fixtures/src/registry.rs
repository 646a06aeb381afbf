//! Real registries on loopback for tests, and skopeo helpers.
//!
//! [`Registry::start`] runs `start-registry.sh` (the same script a human uses)
//! with a temporary state directory; dropping the [`Registry`] stops it.

use crate::token::{self, Signer, TokenPolicy, TokenRequest, TokenServer, TokenUser};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Flavour of test registry (see `registry/gen-config.sh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistryKind {
    /// http, no auth.
    Plain,
    /// http + Basic auth against an htpasswd (bcrypt) file.
    Htpasswd,
    /// https with a throw-away CA ([`Registry::ca_cert`]).
    Tls,
    /// https (as `Tls`) + Basic auth (as `Htpasswd`): how real registries
    /// serve Basic auth.
    HtpasswdTls,
    /// http, storage read-only: every write answers an error.
    Readonly,
    /// http + Bearer token auth, token server in this process
    /// ([`Registry::token_realm`], [`Registry::update_token_policy`]);
    /// credentials as for `Htpasswd`, plus [`Registry::identity_token`].
    Token,
}

impl RegistryKind {
    /// Name used by the scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryKind::Plain => "plain",
            RegistryKind::Htpasswd => "htpasswd",
            RegistryKind::Tls => "tls",
            RegistryKind::HtpasswdTls => "htpasswd-tls",
            RegistryKind::Readonly => "readonly",
            RegistryKind::Token => "token",
        }
    }

    /// Served over https.
    pub fn is_tls(self) -> bool {
        matches!(self, RegistryKind::Tls | RegistryKind::HtpasswdTls)
    }

    /// Basic auth against an htpasswd file.
    pub fn is_htpasswd(self) -> bool {
        matches!(self, RegistryKind::Htpasswd | RegistryKind::HtpasswdTls)
    }
}

/// One parsed access-log line (combined log format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogLine {
    /// `GET`, `HEAD`, `POST`, `PATCH`, `PUT`, ...
    pub method: String,
    /// Request URI including the query string.
    pub uri: String,
    /// Response status.
    pub status: u16,
    /// User-Agent.
    pub user_agent: String,
}

impl AccessLogLine {
    /// Parse `127.0.0.1 - - [date] "POST /v2/x/blobs/uploads/ HTTP/1.1" 202 0 "" "ua"`.
    pub fn parse(line: &str) -> Option<AccessLogLine> {
        let start = line.find("] \"")? + 3;
        let rest = &line[start..];
        let end = rest.find('"')?;
        let mut req = rest[..end].split(' ');
        let method = req.next()?.to_string();
        let uri = req.next()?.to_string();
        let after = rest[end + 1..].trim_start();
        let status = after.split(' ').next()?.parse().ok()?;
        let user_agent = after
            .rsplit_once('"')
            .and_then(|(head, _)| head.rsplit_once('"'))
            .map(|(_, ua)| ua.to_string())
            .unwrap_or_default();
        Some(AccessLogLine {
            method,
            uri,
            status,
            user_agent,
        })
    }
}

/// A response of [`Registry::http_get`].
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running `docker-registry` on 127.0.0.1; stopped on drop.
pub struct Registry {
    kind: RegistryKind,
    state: tempfile::TempDir,
    addr: String,
    credentials: Option<(String, String)>,
    token: Option<TokenServer>,
    signer: Option<Arc<Signer>>,
    stopped: bool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .field("state", &self.state.path())
            .finish()
    }
}

impl Registry {
    /// Directory holding `start-registry.sh` / `stop-registry.sh`.
    pub fn script_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Start a registry of `kind`; panics (with the script's output) if it
    /// cannot, e.g. when `docker-registry` is not installed.
    pub fn start(kind: RegistryKind) -> Registry {
        Self::try_start(kind)
            .unwrap_or_else(|e| panic!("cannot start a {} registry: {e}", kind.as_str()))
    }

    /// Like [`Registry::start`], with the registry's state (config and
    /// blob storage) in a fresh directory under `parent`.
    pub fn start_in(kind: RegistryKind, parent: &Path) -> Registry {
        Self::try_start_in(kind, parent).unwrap_or_else(|e| {
            panic!(
                "cannot start a {} registry in {}: {e}",
                kind.as_str(),
                parent.display()
            )
        })
    }

    /// Like [`Registry::start`], returning the error instead.
    pub fn try_start(kind: RegistryKind) -> Result<Registry, String> {
        Self::try_start_in(kind, &std::env::temp_dir())
    }

    /// Like [`Registry::start_in`], returning the error instead.
    pub fn try_start_in(kind: RegistryKind, parent: &Path) -> Result<Registry, String> {
        let state = tempfile::Builder::new()
            .prefix("kvpush-registry-")
            .tempdir_in(parent)
            .map_err(|e| format!("temp dir in {}: {e}", parent.display()))?;
        let mut cmd = Command::new(Self::script_dir().join("start-registry.sh"));
        cmd.arg(kind.as_str()).arg(state.path());
        cmd.env("KVPUSH_REGISTRY_WATCH_PID", std::process::id().to_string());
        let mut credentials = None;
        let mut token = None;
        if kind.is_htpasswd() || kind == RegistryKind::Token {
            let c = (
                "kvpush".to_string(),
                format!("pw-{}", std::process::id() ^ 0x5eed),
            );
            cmd.env("KVPUSH_REGISTRY_USER", &c.0)
                .env("KVPUSH_REGISTRY_PASSWORD", &c.1);
            credentials = Some(c);
        }
        if kind == RegistryKind::Token {
            let (name, password) = credentials.clone().expect("set above");
            let policy = TokenPolicy {
                users: vec![TokenUser {
                    name: name.clone(),
                    password,
                    may_push: true,
                }],
                refresh_tokens: vec![(format!("refresh-{}", std::process::id() ^ 0xfeed), name)],
                ..TokenPolicy::default()
            };
            let server = TokenServer::bind(policy).map_err(|e| format!("token server: {e}"))?;
            cmd.env("KVPUSH_TOKEN_REALM", &server.realm);
            token = Some(server);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("running start-registry.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "start-registry.sh failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let addr = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        let mut reg = Registry {
            kind,
            state,
            addr,
            credentials,
            token,
            signer: None,
            stopped: false,
        };
        if let Some(t) = &reg.token {
            let signer = Arc::new(Signer::load(reg.state.path())?);
            *t.shared.signer.lock().expect("poisoned") = Some(signer.clone());
            reg.signer = Some(signer);
        }
        Ok(reg)
    }

    /// Kind of this registry.
    pub fn kind(&self) -> RegistryKind {
        self.kind
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://...` for the tls kind.
    pub fn url(&self) -> String {
        let scheme = if self.kind.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The script's state directory (config.yml, registry.log, data/, certs).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Path of the registry's log (access log and application log).
    pub fn log_path(&self) -> PathBuf {
        self.state.path().join("registry.log")
    }

    /// The whole log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Forget the log so far (the registry appends, so truncating is safe);
    /// handy to count the requests of a second push only.
    pub fn clear_access_log(&self) {
        let _ = std::fs::write(self.log_path(), b"");
    }

    /// Every access-log line so far, parsed.
    pub fn requests(&self) -> Vec<AccessLogLine> {
        self.access_log()
            .lines()
            .filter_map(AccessLogLine::parse)
            .collect()
    }

    /// Number of requests with `method` whose URI contains `path_contains`.
    pub fn count_requests(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.uri.contains(path_contains))
            .count()
    }

    /// (user, password) for the htpasswd and token kinds.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// User name for the htpasswd and token kinds.
    pub fn user(&self) -> Option<&str> {
        self.credentials().map(|c| c.0)
    }

    /// Password for the htpasswd and token kinds.
    pub fn password(&self) -> Option<&str> {
        self.credentials().map(|c| c.1)
    }

    /// PEM CA certificate the tls kinds' server certificate chains to.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.kind.is_tls().then(|| self.state.path().join("ca.crt"))
    }

    /// Directory holding only `ca.crt`, for `skopeo --cert-dir` (tls kinds).
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.kind
            .is_tls()
            .then(|| self.state.path().join("certs.d"))
    }

    /// Token realm URL (token kind).
    pub fn token_realm(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.realm.as_str())
    }

    /// Requests the token server answered so far (token kind).
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.token
            .as_ref()
            .map(|t| t.shared.requests.lock().expect("poisoned").clone())
            .unwrap_or_default()
    }

    /// Every token the token server handed out so far (token kind).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.token
            .as_ref()
            .map(|t| t.shared.issued.lock().expect("poisoned").clone())
            .unwrap_or_default()
    }

    /// Change who the token server knows and how it answers (token kind;
    /// a no-op for the others).
    pub fn update_token_policy(&self, change: impl FnOnce(&mut TokenPolicy)) {
        if let Some(t) = &self.token {
            change(&mut t.shared.policy.lock().expect("poisoned"));
        }
    }

    /// An OAuth2 refresh token for the [`Registry::credentials`] account, as
    /// `docker login` stores it in config.json's `identitytoken` (token kind).
    pub fn identity_token(&self) -> Option<String> {
        let t = self.token.as_ref()?;
        let policy = t.shared.policy.lock().expect("poisoned");
        policy
            .refresh_tokens
            .first()
            .map(|(token, _)| token.clone())
    }

    /// Mint a token for this (token kind) registry directly, e.g. to test
    /// expiry: grants are `(type, name, actions)`.
    pub fn mint_token(&self, grants: &[(&str, &str, &[&str])], ttl_secs: u64) -> Option<String> {
        let g: Vec<token::Grant> = grants
            .iter()
            .map(|(t, n, a)| {
                (
                    t.to_string(),
                    n.to_string(),
                    a.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        self.signer
            .as_ref()
            .map(|s| s.mint(self.user().unwrap_or("kvpush"), &g, ttl_secs as i64))
    }

    /// skopeo flags to reach this registry (`inspect`/`list-tags` style):
    /// TLS settings and `--creds`.
    pub fn skopeo_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        match self.cert_dir() {
            Some(d) => {
                v.push("--tls-verify=true".to_string());
                v.push("--cert-dir".to_string());
                v.push(d.display().to_string());
            }
            None => v.push("--tls-verify=false".to_string()),
        }
        if let Some((u, p)) = self.credentials() {
            v.push("--creds".to_string());
            v.push(format!("{u}:{p}"));
        }
        v
    }

    /// Same as [`Registry::skopeo_args`] for the source side of `skopeo copy`.
    pub fn skopeo_src_args(&self) -> Vec<String> {
        self.skopeo_args()
            .into_iter()
            .map(|a| match a.strip_prefix("--") {
                Some(rest) if !a.contains('/') && !a.contains(':') => format!("--src-{rest}"),
                _ => a,
            })
            .collect()
    }

    fn auth_header(&self, path: &str) -> Option<String> {
        if let Some((u, p)) = self.credentials() {
            if self.kind.is_htpasswd() {
                return Some(format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
            }
        }
        let signer = self.signer.as_ref()?;
        let mut grants: Vec<token::Grant> =
            vec![("registry".into(), "catalog".into(), vec!["*".into()])];
        if let Some(rest) = path.strip_prefix("/v2/") {
            let rest = rest.split('?').next().unwrap_or("");
            for marker in ["/tags/", "/manifests/", "/blobs/"] {
                if let Some(i) = rest.find(marker) {
                    grants.push((
                        "repository".into(),
                        rest[..i].to_string(),
                        vec!["pull".into()],
                    ));
                }
            }
        }
        Some(format!(
            "Bearer {}",
            signer.mint("kvpush-fixtures", &grants, 60)
        ))
    }

    /// `GET` (or `HEAD`) `path` on the registry, authenticated as needed
    /// (Basic, or a bearer token minted locally). Plain TCP for http kinds,
    /// curl for the tls kinds.
    pub fn http_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, String> {
        let auth = self.auth_header(path);
        if self.kind.is_tls() {
            return self.curl(method, path, headers, auth);
        }
        let mut conn =
            TcpStream::connect(&self.addr).map_err(|e| format!("connect {}: {e}", self.addr))?;
        conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: kvpush-fixtures\r\n",
            self.addr
        );
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        parse_http(&raw)
    }

    fn curl(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        auth: Option<String>,
    ) -> Result<HttpResponse, String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-i", "--http1.1", "--max-time", "30", "-X", method]);
        if method == "HEAD" {
            cmd.arg("-I");
        }
        if let Some(ca) = self.ca_cert() {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some(a) = auth {
            cmd.arg("-H").arg(format!("Authorization: {a}"));
        }
        for (k, v) in headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        cmd.arg(format!("{}{path}", self.url()));
        let out = cmd.output().map_err(|e| format!("curl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "curl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse_http(&out.stdout)
    }

    /// `GET path`.
    pub fn http_get(&self, path: &str) -> Result<HttpResponse, String> {
        self.http_request("GET", path, &[])
    }

    /// Repositories in the registry (`GET /v2/_catalog`), sorted.
    pub fn catalog(&self) -> Vec<String> {
        let r = self
            .http_get("/v2/_catalog?n=1000")
            .unwrap_or_else(|e| panic!("catalog: {e}"));
        assert_eq!(
            r.status,
            200,
            "catalog: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("catalog json");
        let mut repos: Vec<String> = v["repositories"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        repos.sort();
        repos
    }

    /// Tags of `repo`, sorted (empty if the repository does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let r = self
            .http_get(&format!("/v2/{repo}/tags/list"))
            .unwrap_or_else(|e| panic!("tags: {e}"));
        if r.status != 200 {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("tags json");
        let mut tags: Vec<String> = v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// `Docker-Content-Digest` of `repo:reference` (HEAD, accepting Docker
    /// schema 2, OCI manifests and lists), `None` if absent.
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> Option<String> {
        let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
        let r = self
            .http_request(
                "HEAD",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Accept", accept)],
            )
            .ok()?;
        (r.status == 200)
            .then(|| r.header("docker-content-digest").map(String::from))
            .flatten()
    }

    /// Stop the registry now (also done on drop).
    /// Starts the registry again on the same storage, configuration and port
    /// after it died (e.g. a test killed it): what a registry restarted by
    /// its supervisor looks like to a client. The access log starts empty.
    pub fn restart(&mut self) -> Result<(), String> {
        let port = self.addr.rsplit(':').next().unwrap_or("").to_string();
        let mut cmd = Command::new(Self::script_dir().join("start-registry.sh"));
        cmd.arg(self.kind.as_str())
            .arg(self.state.path())
            .arg(&port);
        cmd.env("KVPUSH_REGISTRY_WATCH_PID", std::process::id().to_string());
        if let Some((user, password)) = &self.credentials {
            cmd.env("KVPUSH_REGISTRY_USER", user)
                .env("KVPUSH_REGISTRY_PASSWORD", password);
        }
        if let Some(t) = &self.token {
            cmd.env("KVPUSH_TOKEN_REALM", &t.realm);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("running start-registry.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "restarting the registry on port {port} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.stopped = false;
        Ok(())
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = Command::new(Self::script_dir().join("stop-registry.sh"))
            .arg(self.state.path())
            .output();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn parse_http(raw: &[u8]) -> Result<HttpResponse, String> {
    // curl -i may print several header blocks (100 Continue); take the last
    // one before the body.
    let mut rest = raw;
    loop {
        let end = find(rest, b"\r\n\r\n").ok_or_else(|| "malformed HTTP response".to_string())?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body = &rest[end + 4..];
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        if status == 100 && body.starts_with(b"HTTP/") {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Ok(HttpResponse {
            status,
            headers,
            body: body.to_vec(),
        });
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn run_skopeo(args: &[String]) -> Result<String, String> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .map_err(|e| format!("running skopeo (install the Debian package 'skopeo'): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "skopeo {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn with_default_tls(reference: &str, extra: &[&str], flag: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if reference.starts_with("docker://") && !extra.iter().any(|a| a.starts_with(flag)) {
        args.push(format!("{flag}=false"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `skopeo inspect --raw [--tls-verify=false] EXTRA REFERENCE`: the manifest
/// exactly as stored. `--tls-verify=false` is added for `docker://`
/// references unless `extra_args` has its own `--tls-verify...`.
pub fn skopeo_inspect_raw(reference: &str, extra_args: &[&str]) -> Result<String, String> {
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(with_default_tls(reference, extra_args, "--tls-verify"));
    args.push(reference.to_string());
    run_skopeo(&args)
}

/// `skopeo inspect [--tls-verify=false] EXTRA REFERENCE` (skopeo's JSON summary:
/// Digest, Layers, Architecture, ...). Works for `docker-archive:PATH[:TAG]` too.
pub fn skopeo_inspect(reference: &str, extra_args: &[&str]) -> Result<String, String> {
    let mut args = vec!["inspect".to_string()];
    args.extend(with_default_tls(reference, extra_args, "--tls-verify"));
    args.push(reference.to_string());
    run_skopeo(&args)
}

/// `skopeo --insecure-policy copy [--src-tls-verify=false] EXTRA REFERENCE dir:DIR`:
/// the manifest, config and blobs by digest (verifies digests on the way).
pub fn skopeo_copy_to_dir(reference: &str, dir: &Path, extra_args: &[&str]) -> Result<(), String> {
    let mut args = vec![
        "--insecure-policy".to_string(),
        "copy".to_string(),
        "-q".to_string(),
    ];
    args.extend(with_default_tls(reference, extra_args, "--src-tls-verify"));
    args.push(reference.to_string());
    args.push(format!("dir:{}", dir.display()));
    run_skopeo(&args).map(|_| ())
}

/// `skopeo --insecure-policy copy -q EXTRA SRC DST`, any transports (e.g.
/// `docker-archive:T.tar:REPO:TAG` to `oci:DIR`, `oci-archive:FILE`,
/// `docker://...`): an independent producer and reader of images.
pub fn skopeo_copy(src: &str, dst: &str, extra_args: &[&str]) -> Result<(), String> {
    let mut args = vec![
        "--insecure-policy".to_string(),
        "copy".to_string(),
        "-q".to_string(),
    ];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    args.push(src.to_string());
    args.push(dst.to_string());
    run_skopeo(&args).map(|_| ())
}
