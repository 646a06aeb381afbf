//! TLS as people set it up: a registry serving the self-signed certificate
//! Docker's documentation makes (CA:TRUE, one DNS name), reached under that
//! non-loopback name (mapped to 127.0.0.1 with the test-only
//! `KVPUSH_TEST_RESOLVE`, since loopback names would take the fallback path
//! and prove nothing), trusted through `--ca-cert` or a certs.d directory,
//! for its own name only; refusals are final and say what was checked.
//! The same registry requiring client certificates (mutual TLS) takes the
//! pair given with `--client-cert`/`--client-key`, and refuses a push
//! without one with an error that says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{run_command, Run, Scenario};
use kvpush_fixtures::{skopeo_inspect_raw, RegistryKind};

const NAME: &str = "myregistry.example";

/// A docker-registry on 127.0.0.1 serving a certificate made as Docker's
/// docs say; killed on drop.
struct DockerDocsRegistry {
    sc: Scenario,
    child: Child,
    port: String,
    cert: PathBuf,
}

impl DockerDocsRegistry {
    fn start() -> DockerDocsRegistry {
        DockerDocsRegistry::start_with(false)
    }

    /// With `mutual`, the registry asks every client for a certificate
    /// signed by `client-ca.crt` in its state directory (see
    /// [`DockerDocsRegistry::client_pair`]).
    fn start_with(mutual: bool) -> DockerDocsRegistry {
        // The fixture writes the config (storage, port, tls paths); then the
        // registry is started again serving the Docker-docs certificate.
        let mut sc = Scenario::small(RegistryKind::Tls);
        let state = sc.registry.state_dir().to_path_buf();
        let port = sc.registry.addr().rsplit(':').next().unwrap().to_string();
        sc.registry.stop();
        let cert = state.join("domain.crt");
        let out = Command::new("openssl")
            .args(["req", "-newkey", "rsa:4096", "-nodes", "-sha256", "-keyout"])
            .arg(state.join("server.key"))
            .args(["-addext", &format!("subjectAltName = DNS:{NAME}")])
            .args(["-x509", "-days", "365", "-subj", &format!("/CN={NAME}")])
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
            "the Docker-docs certificate carries CA:TRUE"
        );
        std::fs::copy(&cert, state.join("server.crt")).unwrap();
        if mutual {
            require_client_certificates(&state);
        }
        let log = std::fs::File::create(state.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(state.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            assert!(Instant::now() < deadline, "registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        DockerDocsRegistry {
            sc,
            child,
            port,
            cert,
        }
    }

    /// kvpush pushing virt-api to `name:PORT/kubevirt`, `name` resolving
    /// to 127.0.0.1, with certs.d read from `certs_d`.
    fn push(&self, name: &str, certs_d: &Path, args: &[&str]) -> Run {
        let mut cmd = self.sc.fx.command();
        cmd.args(["virt-api", "--registry"])
            .arg(format!("{name}:{}/kubevirt", self.port))
            .args(["--tag", "v1", "--retries", "6"])
            .args(args)
            .env("KVPUSH_TEST_RESOLVE", format!("{name}=127.0.0.1"))
            .env("KVPUSH_CERTS_D", certs_d);
        run_command(cmd)
    }

    /// The manifest digest stored for virt-api:v1, read by skopeo on
    /// 127.0.0.1 (whose name the certificate does not list).
    fn stored(&self) -> String {
        self.stored_with(&[])
    }

    /// [`DockerDocsRegistry::stored`] with more skopeo flags.
    fn stored_with(&self, args: &[&str]) -> String {
        let mut all = vec!["--tls-verify=false"];
        all.extend_from_slice(args);
        let raw = skopeo_inspect_raw(
            &format!("docker://127.0.0.1:{}/kubevirt/virt-api:v1", self.port),
            &all,
        )
        .unwrap();
        common::sha256(raw.as_bytes())
    }

    /// The client certificate and key a mutual-TLS registry accepts, as
    /// skopeo's `--cert-dir` wants them too (`client.cert`, `client.key`).
    fn client_pair(&self) -> (PathBuf, PathBuf) {
        let dir = self.sc.registry.state_dir().join("client");
        (dir.join("client.cert"), dir.join("client.key"))
    }
}

impl Drop for DockerDocsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client CA and a certificate it signed (`STATE/client/client.cert`,
/// `.key`), a second key that is not the certificate's
/// (`STATE/client-ca/other.key`), and the registry's
/// config asking every client for a certificate of that CA.
fn require_client_certificates(state: &Path) {
    // skopeo's --cert-dir wants a .cert beside every .key: the CA's files
    // and the stray key live apart from the pair.
    let dir = state.join("client");
    let ca_dir = state.join("client-ca");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&ca_dir).unwrap();
    let p = |name: &str| {
        let d = if name.starts_with("client.") {
            &dir
        } else {
            &ca_dir
        };
        d.join(name).to_str().unwrap().to_string()
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=kvpush test client CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kvpush-ci",
        "-keyout",
        &p("client.key"),
        "-out",
        &p("client.csr"),
    ]);
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("client.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("client.ext"),
        "-out",
        &p("client.cert"),
    ]);
    openssl(&["genrsa", "-out", &p("other.key"), "2048"]);
    let config = state.join("config.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    let key_line = format!("    key: {}/server.key\n", state.display());
    assert!(text.contains(&key_line), "{text}");
    let text = text.replace(
        &key_line,
        &format!("{key_line}    clientcas:\n      - {}\n", p("ca.crt")),
    );
    std::fs::write(&config, text).unwrap();
}

fn pushed_digest(run: &Run) -> String {
    run.pushed()
        .first()
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| panic!("nothing pushed: {}", run.stderr))
}

#[test]
fn a_docker_docs_self_signed_certificate_is_trusted_for_its_name_only() {
    let reg = DockerDocsRegistry::start();
    let empty = tempfile::tempdir().unwrap();
    let ca = reg.cert.to_str().unwrap();

    // Given with --ca-cert: trusted for myregistry.example, no warning.
    let run = reg.push(NAME, empty.path(), &["--ca-cert", ca]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    assert_eq!(pushed_digest(&run), reg.stored());

    // Found in certs.d/<host:port>/: trusted as well.
    let certs_d = tempfile::tempdir().unwrap();
    let dir = certs_d.path().join(format!("{NAME}:{}", reg.port));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&reg.cert, dir.join("ca.crt")).unwrap();
    let run = reg.push(NAME, certs_d.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);

    // Another name on the same server: refused at once, saying what was
    // checked against what, without asking for the --ca-cert given.
    let started = Instant::now();
    let run = reg.push("other.example", empty.path(), &["--ca-cert", ca]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("not valid for name \"other.example\"")
            && run.stderr.contains(NAME)
            && run.stderr.contains(&format!(
                "checked for the name other.example against the system roots, --ca-cert {ca}"
            ))
            && !run.stderr.contains("pass --ca-cert")
            && !run.stderr.contains("retrying"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");

    // certs.d trusts a certificate for its own host directory only.
    let run = reg.push("other.example", certs_d.path(), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);

    // Not trusted at all: not retried either, and told where to put it.
    let run = reg.push(NAME, empty.path(), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid peer certificate")
            && run.stderr.contains("pass --ca-cert FILE")
            && !run.stderr.contains("retrying"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_registry_that_requires_client_certificates_takes_the_pair_given_with_flags() {
    let reg = DockerDocsRegistry::start_with(true);
    let empty = tempfile::tempdir().unwrap();
    let ca = reg.cert.to_str().unwrap();
    let (cert, key) = reg.client_pair();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    // No client certificate: the registry ends the handshake, the error
    // says it wants one and how to give it, and it is not retried.
    let run = reg.push(NAME, empty.path(), &["--ca-cert", ca]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("requires a client certificate")
            && run.stderr.contains("--client-cert FILE --client-key FILE")
            && !run.stderr.contains("retrying"),
        "{}",
        run.stderr
    );

    // With the pair: pushed, and skopeo (given the same pair) reads it back.
    let run = reg.push(
        NAME,
        empty.path(),
        &["--ca-cert", ca, "--client-cert", cert, "--client-key", key],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    let cert_dir = reg.sc.registry.state_dir().join("client");
    assert_eq!(
        pushed_digest(&run),
        reg.stored_with(&["--cert-dir", cert_dir.to_str().unwrap()])
    );

    // One flag alone is refused by the parser.
    let run = reg.push(
        NAME,
        empty.path(),
        &["--ca-cert", ca, "--client-cert", cert],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--client-key"), "{}", run.stderr);

    // Bad files are named, with what is wrong, before anything is sent.
    let other_key = reg.sc.registry.state_dir().join("client-ca/other.key");
    let missing = cert_dir.join("missing.cert");
    let cases: [(&str, &str, String); 4] = [
        (
            cert,
            other_key.to_str().unwrap(),
            format!(
                "--client-key {} does not match --client-cert {cert}",
                other_key.display()
            ),
        ),
        (
            missing.to_str().unwrap(),
            key,
            format!("--client-cert {}: cannot read it", missing.display()),
        ),
        (
            key,
            key,
            format!("--client-cert {key}: holds no PEM certificate"),
        ),
        (
            cert,
            cert,
            format!("--client-key {cert}: not a PEM private key"),
        ),
    ];
    for (c, k, expected) in cases {
        let run = reg.push(
            NAME,
            empty.path(),
            &["--ca-cert", ca, "--client-cert", c, "--client-key", k],
        );
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(&expected), "{expected}: {}", run.stderr);
    }
}
