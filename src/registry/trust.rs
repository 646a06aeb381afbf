//! What a registry's TLS certificate is checked against, and the rustls
//! configuration of the verified client built from it: the system roots
//! (or `SSL_CERT_FILE`), `--ca-cert` files, and the host's certs.d
//! directories as docker, podman and skopeo read them (`*.crt` trusted for
//! that host only, a `*.cert`/`*.key` pair as the client certificate for
//! mutual TLS). A certificate that is itself one of those trusted files is
//! accepted as the server's own even when it carries CA:TRUE (the
//! self-signed certificate Docker's documentation makes), for the names it
//! lists and while it is valid; everything else is webpki's. The client
//! pair of `--client-cert`/`--client-key` is read and checked here too, and
//! presented to the destination registry host only. Knows no request,
//! endpoint or retry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Colon-separated certs.d base directories, replacing the default
/// `/etc/docker/certs.d:/etc/containers/certs.d` (tests point it elsewhere).
pub const CERTS_D_ENV: &str = "KVPUSH_CERTS_D";
const DEFAULT_CERTS_D: &str = "/etc/docker/certs.d:/etc/containers/certs.d";

/// `--ca-cert` files as read (path, certificates), for every host.
static CA_CERT_FILES: Mutex<Vec<(PathBuf, Vec<CertificateDer<'static>>)>> = Mutex::new(Vec::new());

/// `--client-cert`/`--client-key`: the destination host they are presented
/// to, and the pair as read.
static CLIENT_FLAGS: Mutex<Option<(String, ClientPair)>> = Mutex::new(None);

/// A client certificate chain and its private key, checked to match.
#[derive(Debug)]
struct ClientPair {
    cert: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Read a PEM file of one or more certificates.
pub fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("{what} {}: cannot read it: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Trust `certs` from `--ca-cert FILE` for every registry host.
pub fn remember_ca_cert(path: &Path, certs: Vec<CertificateDer<'static>>) {
    let mut files = CA_CERT_FILES.lock().unwrap_or_else(|e| e.into_inner());
    if !files.iter().any(|(p, _)| p == path) {
        files.push((path.to_path_buf(), certs));
    }
}

/// Read a client certificate chain and its key (`what` names where they
/// come from: the flags or certs.d) and check that the key is the
/// certificate's; errors name the file and what is wrong with it.
fn read_client_pair(cert: &Path, key: &Path, what: [&str; 2]) -> Result<ClientPair, String> {
    let chain = read_certs(cert, what[0])?;
    let pem = std::fs::read(key)
        .map_err(|e| format!("{} {}: cannot read it: {e}", what[1], key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{} {}: not a PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC): {e}",
            what[1],
            key.display()
        )
    })?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    match rustls::sign::CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &provider) {
        Ok(_) => Ok(ClientPair {
            cert: cert.to_path_buf(),
            chain,
            key: key_der,
        }),
        Err(rustls::Error::InconsistentKeys(_)) => Err(format!(
            "{} {} does not match {} {}: the key is not the one the certificate was made for",
            what[1],
            key.display(),
            what[0],
            cert.display()
        )),
        Err(e) => Err(format!(
            "{} {}: cannot be used with {} {}: {e}",
            what[1],
            key.display(),
            what[0],
            cert.display()
        )),
    }
}

/// `--client-cert FILE --client-key FILE`: read and check the pair now and
/// present it to registry `host` (`name[:port]`, the destination's) in
/// place of a certs.d pair; never to another host (an origin).
pub fn use_client_cert(host: &str, cert: &Path, key: &Path) -> Result<(), String> {
    let pair = read_client_pair(cert, key, ["--client-cert", "--client-key"])?;
    *CLIENT_FLAGS.lock().unwrap_or_else(|e| e.into_inner()) = Some((host.to_string(), pair));
    Ok(())
}

/// The client pair presented to `host`: the flags' for the destination,
/// else the certs.d directory's.
fn client_pair(
    host: &str,
    certs_d: Option<(PathBuf, PathBuf)>,
) -> Result<Option<ClientPair>, String> {
    if let Some((for_host, pair)) = &*CLIENT_FLAGS.lock().unwrap_or_else(|e| e.into_inner()) {
        if for_host == host {
            return Ok(Some(ClientPair {
                cert: pair.cert.clone(),
                chain: pair.chain.clone(),
                key: pair.key.clone_key(),
            }));
        }
    }
    certs_d
        .map(|(cert, key)| {
            read_client_pair(
                &cert,
                &key,
                ["certs.d client certificate", "certs.d client key"],
            )
        })
        .transpose()
}

/// Hosts whose registry asked for a client certificate when kvpush had
/// none for it: the connection then fails in ways (a closed channel, an
/// alert) that do not always name the reason, so it is remembered here.
static ASKED_WITHOUT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Presents no client certificate, noting that the registry asked for one.
#[derive(Debug)]
struct NoClientCert {
    host: String,
}

impl rustls::client::ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut asked = ASKED_WITHOUT.lock().unwrap_or_else(|e| e.into_inner());
        if !asked.contains(&self.host) {
            asked.push(self.host.clone());
        }
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// Did registry `host` ask for a client certificate kvpush does not have?
/// Then a failed connection is final: the same handshake fails again.
pub fn wants_client_cert(host: &str) -> bool {
    ASKED_WITHOUT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|h| h == host)
}

/// The client certificate file presented to `host`, if any.
fn presented_client_cert(host: &str) -> Option<PathBuf> {
    if let Some((for_host, pair)) = &*CLIENT_FLAGS.lock().unwrap_or_else(|e| e.into_inner()) {
        if for_host == host {
            return Some(pair.cert.clone());
        }
    }
    certs_d(host).client.map(|(cert, _)| cert)
}

/// When the registry ended the handshake over the client certificate
/// (`reason`, the transport error's text, holds the alert it sent): what
/// happened and what to do, in words; None for anything else.
pub fn client_cert_refusal(host: &str, reason: &str) -> Option<String> {
    let alert = reason.contains("received fatal alert");
    let presented = presented_client_cert(host);
    match presented {
        None if wants_client_cert(host) || reason.contains("CertificateRequired") => Some(format!(
            "the registry requires a client certificate (mutual TLS) and none was presented: pass --client-cert FILE --client-key FILE, or put a client.cert and client.key pair in /etc/docker/certs.d/{host}/"
        )),
        Some(cert) if alert => Some(format!(
            "the registry refused the client certificate {}: it must be signed by a CA the registry trusts for clients and be valid now",
            cert.display()
        )),
        _ => None,
    }
}

/// The verified TLS configuration for `host` (`name[:port]`, as the
/// certs.d directory is named) and what it checks against, in words.
pub fn client_config(host: &str) -> Result<(rustls::ClientConfig, String), String> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut roots = RootCertStore::empty();
    roots.extend(native_roots().iter().cloned());
    let mut sources = vec![
        if std::env::var_os("SSL_CERT_FILE").is_some_and(|v| !v.is_empty()) {
            "SSL_CERT_FILE".to_string()
        } else {
            "the system roots".to_string()
        },
    ];
    let mut pinned: Vec<CertificateDer<'static>> = Vec::new();
    for (path, certs) in CA_CERT_FILES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        roots.add_parsable_certificates(certs.iter().cloned());
        pinned.extend(certs.iter().cloned());
        sources.push(format!("--ca-cert {}", path.display()));
    }
    let dir = certs_d(host);
    for path in &dir.cas {
        let certs = read_certs(path, "certs.d file")?;
        roots.add_parsable_certificates(certs.iter().cloned());
        pinned.extend(certs);
        sources.push(path.display().to_string());
    }
    let inner = if roots.is_empty() {
        None
    } else {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("cannot set up certificate checks: {e}"))?;
        Some(verifier)
    };
    let verifier = TrustVerifier {
        inner,
        pinned,
        provider: provider.clone(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client_pair(host, dir.client)? {
        Some(pair) => builder
            .with_client_auth_cert(pair.chain, pair.key)
            .map_err(|e| format!("client certificate {}: {e}", pair.cert.display()))?,
        None => builder.with_client_cert_resolver(Arc::new(NoClientCert {
            host: host.to_string(),
        })),
    };
    // As reqwest sets it for its own configuration (http2 enabled).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, sources.join(", ")))
}

/// The system's roots (or `SSL_CERT_FILE`'s), read once per process.
fn native_roots() -> &'static [rustls::pki_types::TrustAnchor<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::TrustAnchor<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::debug!("system certificate store: {e}");
        }
        store.add_parsable_certificates(loaded.certs);
        store.roots
    })
}

/// What one host's certs.d directories hold.
#[derive(Debug, Default, PartialEq)]
struct CertsD {
    /// `*.crt`: CAs (or the server's own certificate) trusted for the host.
    cas: Vec<PathBuf>,
    /// The first `*.cert` with a `*.key` of the same name beside it.
    client: Option<(PathBuf, PathBuf)>,
}

fn certs_d(host: &str) -> CertsD {
    let bases = std::env::var(CERTS_D_ENV).unwrap_or_else(|_| DEFAULT_CERTS_D.to_string());
    let mut found = CertsD::default();
    // A host name never holds a path separator; refuse one that would.
    if host.contains('/') || host.starts_with('.') {
        return found;
    }
    for base in bases.split(':').filter(|b| !b.is_empty()) {
        let Ok(entries) = std::fs::read_dir(Path::new(base).join(host)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            match path.extension().and_then(|e| e.to_str()) {
                Some("crt") => found.cas.push(path),
                Some("cert") if found.client.is_none() => {
                    let key = path.with_extension("key");
                    if key.is_file() {
                        found.client = Some((path, key));
                    } else {
                        tracing::warn!(
                            "{}: no {} beside it; not used as a client certificate",
                            path.display(),
                            key.display()
                        );
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// webpki's checks, plus: a server certificate that is byte for byte one of
/// the trusted files is accepted though it carries CA:TRUE, for its names.
#[derive(Debug)]
struct TrustVerifier {
    /// None when no root at all is trusted.
    inner: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

/// webpki refused a CA certificate as the server's own. It checks validity
/// dates before basic constraints, so such a certificate is within them.
fn ca_used_as_end_entity(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(CertificateError::Other(o))
        if format!("{o:?}").contains("CaUsedAsEndEntity"))
}

impl ServerCertVerifier for TrustVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(e)
                if ca_used_as_end_entity(&e)
                    && self
                        .pinned
                        .iter()
                        .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_d_holds_cas_and_a_client_pair_per_host() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("myregistry.example:5000");
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "ca.crt",
            "b.crt",
            "client.cert",
            "client.key",
            "lone.cert",
            "x.txt",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        // Set for this test only; no other test in the crate reads it.
        std::env::set_var(
            CERTS_D_ENV,
            format!("/nonexistent:{}", base.path().display()),
        );
        let found = certs_d("myregistry.example:5000");
        assert_eq!(found.cas, vec![dir.join("b.crt"), dir.join("ca.crt")]);
        assert_eq!(
            found.client,
            Some((dir.join("client.cert"), dir.join("client.key")))
        );
        assert_eq!(certs_d("other.example:5000"), CertsD::default());
        assert_eq!(certs_d("../x"), CertsD::default());
        std::env::remove_var(CERTS_D_ENV);
    }
}
