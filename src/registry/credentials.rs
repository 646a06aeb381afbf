//! Where registry credentials come from, first match wins: the command line
//! (`--username` + `--password-stdin`), `KVPUSH_USERNAME`/`KVPUSH_PASSWORD`,
//! Docker's config.json (`auths`, `credHelpers`, `credsStore`), Podman's
//! auth.json. Files are parsed and helpers run by the docker_credential
//! crate; this module picks the files, names the source for messages, and
//! tells "nothing stored for this host" from a broken file or helper.
//! Secrets live in [`Secret`], which never prints.
//!
//! The command line's and the environment's credentials are the push's:
//! they go to the registries kvpush pushes to, never to an origin registry
//! a base layer is copied from ([`Login::Origin`]), which gets only what the
//! login files hold for its own host.

use std::fmt;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError as E, DockerCredential};

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
    /// An OAuth2 refresh token (`identitytoken` in config.json, or a
    /// helper's answer with user name `<token>`).
    IdentityToken(Secret),
}

/// A credential and where it was found, for messages.
#[derive(Clone, Debug)]
pub struct FoundCredential {
    pub credential: Credential,
    pub source: String,
}

impl FoundCredential {
    /// Found in a login file or helper (so `docker login` can renew it),
    /// not given on the command line or in the environment.
    pub fn from_login_file(&self) -> bool {
        !(self.source.starts_with("--") || self.source == ENV_SOURCE)
    }
}

/// The outcome of a lookup: the credential, if any, and every place looked
/// at (for the "no credentials" message).
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    pub found: Option<FoundCredential>,
    pub searched: Vec<String>,
}

/// How the environment's credentials are named in messages.
pub(crate) const ENV_SOURCE: &str = "KVPUSH_USERNAME/KVPUSH_PASSWORD";

/// Whose credentials a registry gets.
#[derive(Clone, Debug)]
pub enum Login {
    /// A registry pushed to: the command line's credential if any, then
    /// `KVPUSH_USERNAME`/`KVPUSH_PASSWORD`, then the login files.
    Push(Option<FoundCredential>),
    /// A registry base layers are read from: the login files only.
    Origin,
}

/// Find credentials for registry `host`; see the module docs for the order.
pub fn lookup_credentials(host: &str, login: Login) -> Result<Lookup, String> {
    let explicit = match login {
        Login::Push(explicit) => explicit,
        Login::Origin => return lookup_login_files(host, Lookup::default()),
    };
    let lookup = Lookup {
        searched: vec!["--username/--password-stdin".into(), ENV_SOURCE.into()],
        ..Lookup::default()
    };
    let mut lookup = lookup;
    if explicit.is_some() {
        lookup.found = explicit;
        return Ok(lookup);
    }
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    match (env("KVPUSH_USERNAME"), env("KVPUSH_PASSWORD")) {
        (Some(username), Some(password)) => {
            lookup.found = Some(FoundCredential {
                credential: Credential::Basic {
                    username,
                    password: Secret(password),
                },
                source: ENV_SOURCE.into(),
            });
            return Ok(lookup);
        }
        (Some(_), None) => {
            return Err(
                "KVPUSH_USERNAME is set but KVPUSH_PASSWORD is not: set both, or neither".into(),
            )
        }
        (None, Some(_)) => {
            return Err(
                "KVPUSH_PASSWORD is set but KVPUSH_USERNAME is not: set both, or neither".into(),
            )
        }
        (None, None) => {}
    }
    lookup_login_files(host, lookup)
}

/// Docker's config.json, then Podman's auth.json, for `host`.
fn lookup_login_files(host: &str, mut lookup: Lookup) -> Result<Lookup, String> {
    let files = [
        (LoginFile::Docker, docker_config_path()),
        (LoginFile::Podman, podman_auth_path()),
    ];
    for (kind, path) in files {
        let Some(path) = path else { continue };
        lookup.searched.push(path.display().to_string());
        if let Some(found) = read_login_file(kind, &path, host)? {
            lookup.found = Some(found);
            return Ok(lookup);
        }
    }
    Ok(lookup)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoginFile {
    /// `docker login` (and docker/login-action) writes it.
    Docker,
    /// `podman login` / `skopeo login` write it.
    Podman,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))?;
    Some(dir.join("config.json"))
}

/// `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`.
fn podman_auth_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("containers/auth.json"))
}

/// The key a login file stores `host` under. Docker keeps Docker Hub under
/// `https://index.docker.io/v1/`; Podman under `docker.io` (the crate
/// matches `index.docker.io` against both spellings).
fn login_key(kind: LoginFile, host: &str) -> &str {
    let hub = matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    );
    match (kind, hub) {
        (LoginFile::Docker, true) => "https://index.docker.io/v1/",
        (LoginFile::Podman, true) => "index.docker.io",
        (_, false) => host,
    }
}

/// Credentials for `host` in one login file; `None` when the file is absent
/// or holds nothing for the host; an error when it is broken.
fn read_login_file(
    kind: LoginFile,
    path: &Path,
    host: &str,
) -> Result<Option<FoundCredential>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read {}: {e}; fix its permissions or move it away",
                path.display()
            ))
        }
    };
    let mut config: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not valid JSON ({e}); fix it, or log in again with `docker login`",
            path.display()
        )
    })?;
    let key = login_key(kind, host);
    let file = path.display();
    let helper_for_key = config["credHelpers"][key]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(String::from);
    let store = config["credsStore"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(String::from);
    // The crate's order is credHelpers[key], then auths, then credsStore;
    // ask without the helpers first to know which of them answered.
    let (result, source) = if let Some(helper) = helper_for_key {
        let r = docker_credential::get_credential_from_reader(&bytes[..], key);
        (
            r,
            format!("docker-credential-{helper} (credHelpers in {file})"),
        )
    } else {
        if let Some(obj) = config.as_object_mut() {
            obj.remove("credHelpers");
            obj.remove("credsStore");
        }
        let stripped = serde_json::to_vec(&config).expect("a JSON value serialises");
        match docker_credential::get_credential_from_reader(&stripped[..], key) {
            Err(E::NoCredentialConfigured) => match store {
                Some(store) => (
                    docker_credential::get_credential_from_reader(&bytes[..], key),
                    format!("docker-credential-{store} (credsStore in {file})"),
                ),
                None => return Ok(None),
            },
            r => (r, format!("{file} (auths)")),
        }
    };
    match result {
        Ok(DockerCredential::UsernamePassword(username, password)) => Ok(Some(FoundCredential {
            credential: Credential::Basic {
                username,
                password: Secret(password),
            },
            source,
        })),
        Ok(DockerCredential::IdentityToken(token)) => Ok(Some(FoundCredential {
            credential: Credential::IdentityToken(Secret(token)),
            source: format!("identity token from {source}"),
        })),
        Err(E::NoCredentialConfigured) => Ok(None),
        // Docker's helpers answer this (exit 1) for a host they hold nothing for.
        Err(E::HelperFailure { stdout, .. }) if stdout.contains("credentials not found") => Ok(None),
        Err(E::HelperFailure { stderr, stdout, .. }) => {
            // One line of the helper's complaint (docker's helpers write it
            // to stdout); never a JSON answer, which would hold the secret.
            let said = stderr
                .lines()
                .chain(stdout.lines())
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('{') && l.len() < 200);
            Err(format!(
                "{source} failed to give the credentials for {host}{}; fix the helper or log in again (`docker login {host}`)",
                said.map(|s| format!(": {s}")).unwrap_or_default()
            ))
        }
        Err(E::HelperCommunicationError) => Err(format!(
            "cannot run {source} for {host}: is the program installed and on PATH? Or remove the entry, or log in again"
        )),
        Err(e) => Err(format!(
            "cannot use the credentials for {host} in {source}: {e}; fix the entry, or log in again (`docker login {host}`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn docker_hub_keys() {
        assert_eq!(
            login_key(LoginFile::Docker, "docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(
            login_key(LoginFile::Docker, "index.docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(login_key(LoginFile::Podman, "docker.io"), "index.docker.io");
        assert_eq!(login_key(LoginFile::Docker, "quay.io"), "quay.io");
    }

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn login_files_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        // base64("u:p")
        let p = write(
            dir.path(),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"q.io":{"identitytoken":"rt"}}}"#,
        );
        let hub = read_login_file(LoginFile::Docker, &p, "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(
            hub.credential,
            Credential::Basic {
                username: "u".into(),
                password: Secret::new("p")
            }
        );
        assert!(
            hub.source.ends_with("config.json (auths)"),
            "{}",
            hub.source
        );
        let q = read_login_file(LoginFile::Docker, &p, "q.io")
            .unwrap()
            .unwrap();
        assert_eq!(q.credential, Credential::IdentityToken(Secret::new("rt")));
        assert!(q.source.starts_with("identity token from"), "{}", q.source);
        assert!(read_login_file(LoginFile::Docker, &p, "other.io")
            .unwrap()
            .is_none());
        // Podman spells Docker Hub docker.io.
        let p = write(dir.path(), r#"{"auths":{"docker.io":{"auth":"dTpw"}}}"#);
        assert!(read_login_file(LoginFile::Podman, &p, "docker.io")
            .unwrap()
            .is_some());
        // Absent: nothing; broken: an error naming the file.
        assert!(
            read_login_file(LoginFile::Docker, &dir.path().join("none.json"), "q.io")
                .unwrap()
                .is_none()
        );
        let p = write(dir.path(), "{not json");
        let e = read_login_file(LoginFile::Docker, &p, "q.io").unwrap_err();
        assert!(e.contains("config.json is not valid JSON"), "{e}");
        // A helper that is not installed is named.
        let p = write(
            dir.path(),
            r#"{"auths":{"q.io":{}},"credsStore":"kvpush-absent-helper"}"#,
        );
        let e = read_login_file(LoginFile::Docker, &p, "q.io").unwrap_err();
        assert!(
            e.contains("docker-credential-kvpush-absent-helper (credsStore in"),
            "{e}"
        );
    }
}
