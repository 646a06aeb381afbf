//! Authentication and transport security against real registries: Basic
//! auth behind TLS, token auth with the harness's token server, every
//! credential source, the errors a refused push gives, and where
//! credentials (never) go. Pushes are checked with skopeo.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use common::{run_command, run_command_with_stdin, verify_with_skopeo, Fixture, Run, Scenario};
use kvpush_fixtures::{Origin, Registry, RegistryKind, Relay, TokenUser};

fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Write `$DOCKER_CONFIG/config.json` of the fixture's private HOME.
fn write_docker_config(fx: &Fixture, json: &serde_json::Value) {
    let dir = fx.home().join(".docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
}

/// Registry requests (access log) that the registry refused with 401,
/// other than on `/v2/` (where the challenge is learnt).
fn refused_api_requests(reg: &Registry) -> Vec<String> {
    std::thread::sleep(std::time::Duration::from_millis(300));
    reg.requests()
        .into_iter()
        .filter(|r| r.status == 401 && r.uri != "/v2/")
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect()
}

#[test]
fn basic_auth_behind_tls_is_checked_against_ca_cert_and_sent_on_every_request() {
    let sc = Scenario::small(RegistryKind::HtpasswdTls);
    let (user, password) = sc.registry.credentials().unwrap();
    let ca = sc.registry.ca_cert().unwrap();
    let mut cmd = sc.push_command(&["virt-api", "virt-controller"], &["--tag", "v1", "-v"]);
    cmd.arg("--ca-cert")
        .arg(&ca)
        .args(["--username", user, "--password-stdin"]);
    let run = run_command_with_stdin(cmd, &format!("{password}\n"));
    assert_eq!(run.code, 0);
    assert!(
        !run.stderr.contains("not trusted") && !run.stderr.contains("WARN"),
        "the certificate was checked against --ca-cert: {}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!(
        "using credentials for {} from --username/--password-stdin",
        sc.registry.addr()
    )));
    for name in ["virt-api", "virt-controller"] {
        sc.verify(name, "v1");
    }
    // Once the challenge is known, every request carries the credentials.
    assert_eq!(refused_api_requests(&sc.registry), Vec::<String>::new());

    // SSL_CERT_FILE works as --ca-cert does.
    let mut cmd = sc.push_command(&["virt-api"], &["--tag", "v2"]);
    cmd.env("SSL_CERT_FILE", &ca)
        .env("KVPUSH_USERNAME", user)
        .env("KVPUSH_PASSWORD", password);
    let run = run_command(cmd);
    assert_eq!(run.code, 0);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    sc.verify("virt-api", "v2");
}

#[test]
fn loopback_tls_and_plain_registries_need_no_flags() {
    let fx = Fixture::small();
    let tls = Registry::start(RegistryKind::Tls);
    let plain = Registry::start(RegistryKind::Plain);
    for reg in [&tls, &plain] {
        let prefix = format!("{}/kubevirt", reg.addr());
        let run = fx.kvpush(&["virt-api", "--registry", &prefix, "--tag", "v1"]);
        assert_eq!(run.code, 0, "{:?}", reg.kind());
        verify_with_skopeo(reg, &format!("{prefix}/virt-api:v1"), fx.image("virt-api"));
        if reg.kind() == RegistryKind::Tls {
            // HTTPS it is, unverified since nothing trusts the test CA: said so.
            assert!(
                run.stderr.contains(&format!(
                    "the TLS certificate of registry {} is not trusted",
                    reg.addr()
                )) && run.stderr.contains("pass --ca-cert FILE"),
                "{}",
                run.stderr
            );
        } else {
            assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
        }
    }
    // --insecure is said to be in effect.
    let prefix = format!("{}/kubevirt", tls.addr());
    let run = fx.kvpush(&[
        "virt-api",
        "--registry",
        &prefix,
        "--tag",
        "v2",
        "--insecure",
    ]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains(&format!(
            "--insecure: the TLS certificate of registry {} is not checked",
            tls.addr()
        )),
        "{}",
        run.stderr
    );
}

/// Scope sets of the token requests, each sorted.
fn scope_sets(reg: &Registry) -> Vec<Vec<String>> {
    reg.token_requests()
        .into_iter()
        .map(|r| {
            let mut s = r.scopes;
            s.sort();
            s
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    s.replace("%2F", "/").replace("%3A", ":")
}

#[test]
fn token_auth_asks_for_the_scopes_of_the_work_and_shares_tokens() {
    let sc = Scenario::small(RegistryKind::Token);
    let (user, _) = sc.registry.credentials().unwrap();
    let run = sc.push_logged_in(&["all"], &["--tag", "v1"]);
    assert_eq!(run.code, 0);
    // Before skopeo asks for tokens of its own.
    let requests = sc.registry.token_requests();
    let sets = scope_sets(&sc.registry);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = sc.registry.requests();

    for r in &requests {
        assert_eq!(r.account.as_deref(), Some(user), "{r:?}");
        assert_eq!((r.method.as_str(), r.status), ("GET", 200), "{r:?}");
    }
    // One fetch per scope set: concurrent requests share it.
    let distinct: HashSet<&Vec<String>> = sets.iter().collect();
    assert_eq!(
        distinct.len(),
        sets.len(),
        "a scope set fetched twice: {sets:?}"
    );
    assert!(
        sets.len() * 4 < log.len(),
        "{} token requests for {} registry requests",
        sets.len(),
        log.len()
    );
    // Each repository was asked for with pull,push.
    for image in &sc.ws.images {
        let scope = format!("repository:kubevirt/{}:pull,push", image.name);
        assert!(sets.iter().any(|s| s.contains(&scope)), "{scope}");
    }
    // Every mount ran with a token that may also pull from its source.
    let mut mounts = 0;
    for line in log
        .iter()
        .filter(|r| r.method == "POST" && r.uri.contains("mount="))
    {
        mounts += 1;
        let repo = line.uri["/v2/".len()..line.uri.find("/blobs/uploads/").unwrap()].to_string();
        let from = percent_decode(
            line.uri
                .split("from=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap(),
        );
        let need = [
            format!("repository:{from}:pull"),
            format!("repository:{repo}:pull,push"),
        ];
        assert!(
            sets.iter().any(|s| need.iter().all(|n| s.contains(n))),
            "no token for {need:?}: {sets:?}"
        );
        assert_eq!(line.status, 201, "{}", line.uri);
    }
    assert!(mounts > 0, "shared layers are mounted");
    // About one token per repository, not one per mount source: 50 for
    // these 21 images when each scope set had its own, 31 since.
    let repos = sc.ws.images.len();
    assert!(
        sets.len() <= 2 * repos,
        "{} token requests for {repos} repositories: {sets:?}",
        sets.len()
    );
    assert_eq!(refused_api_requests(&sc.registry), Vec::<String>::new());
    for name in ["virt-api", "virt-launcher", "cirros-container-disk-demo"] {
        sc.verify(name, "v1");
    }
}

#[test]
fn a_token_service_that_fails_for_a_moment_is_tried_again() {
    let fx = Fixture::small();
    let reg = Registry::start(RegistryKind::Token);
    reg.update_token_policy(|p| p.unavailable = 2);
    let (user, password) = reg.credentials().unwrap();
    let prefix = format!("{}/kubevirt", reg.addr());
    let mut cmd = fx.command();
    cmd.args(["virt-api", "--registry", &prefix, "--tag", "v1"])
        .env("KVPUSH_USERNAME", user)
        .env("KVPUSH_PASSWORD", password);
    let run = run_command(cmd);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("answered 503 Service Unavailable; retrying in 1.0s"),
        "the Retry-After is honoured: {}",
        run.stderr
    );
    let statuses: Vec<u16> = reg.token_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses[..3], [503, 503, 200], "{statuses:?}");
    verify_with_skopeo(&reg, &format!("{prefix}/virt-api:v1"), fx.image("virt-api"));
}

#[test]
fn a_token_that_expires_mid_push_is_renewed_once_for_all_its_requests() {
    let sc = Scenario::small(RegistryKind::Token);
    // The first token for a repository is already expired when it arrives,
    // though it claims 300 s.
    sc.registry.update_token_policy(|p| p.stale_tokens = 1);
    let run = sc.push_logged_in(&["virt-api", "virt-controller"], &["--tag", "v1"]);
    assert_eq!(run.code, 0);
    let sets = scope_sets(&sc.registry);
    let refused = refused_api_requests(&sc.registry);
    assert!(
        !refused.is_empty(),
        "the expired token was used and refused"
    );
    // Its scope set was fetched again, once, however many requests held it.
    let mut counts: HashMap<&Vec<String>, usize> = HashMap::new();
    for s in &sets {
        *counts.entry(s).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n == 2).collect();
    assert_eq!(twice.len(), 1, "{counts:?}");
    assert!(counts.values().all(|n| *n <= 2), "{counts:?}");
    for name in ["virt-api", "virt-controller"] {
        sc.verify(name, "v1");
    }
}

/// A `docker-credential-NAME` program in `dir` that answers `user`/`secret`
/// for `host` and "credentials not found" otherwise, logging each query.
fn credential_helper(dir: &Path, name: &str, host: &str, user: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join(format!("{name}.queries"));
    let script = format!(
        "#!/bin/sh\nread -r server\necho \"$1 $server\" >> '{log}'\n\
         if [ \"$1\" = get ] && [ \"$server\" = '{host}' ]; then\n\
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}}' \"$server\" '{user}' '{secret}'\n\
         else echo 'credentials not found in native keychain'; exit 1; fi\n",
        log = log.display()
    );
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    log
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn every_credential_source_is_used_first_match_wins() {
    let fx = Fixture::small();
    let reg = Registry::start(RegistryKind::Token);
    let (user, password) = reg.credentials().unwrap();
    let host = reg.addr().to_string();
    let prefix = format!("{host}/kubevirt");
    let helpers = tempfile::tempdir().unwrap();
    let good = basic_auth(user, password);
    let bad = basic_auth(user, "wrong-password");
    let home = fx.home();
    let auth_json = home.join("auth.json");
    let runtime = fx.dir.path().join("run");
    std::fs::create_dir_all(runtime.join("containers")).unwrap();

    // (tag, config.json, auth.json, env, expected source)
    struct Case {
        tag: &'static str,
        docker: Option<serde_json::Value>,
        podman: Option<serde_json::Value>,
        env: Vec<(&'static str, String)>,
        source: String,
    }
    let docker_file = home.join(".docker/config.json").display().to_string();
    let cases = vec![
        Case {
            tag: "env-beats-files",
            docker: Some(serde_json::json!({"auths": {&host: {"auth": &bad}}})),
            podman: None,
            env: vec![
                ("KVPUSH_USERNAME", user.into()),
                ("KVPUSH_PASSWORD", password.into()),
            ],
            source: "KVPUSH_USERNAME/KVPUSH_PASSWORD".into(),
        },
        Case {
            tag: "auths",
            docker: Some(serde_json::json!({"auths": {&host: {"auth": &good}}})),
            podman: Some(serde_json::json!({"auths": {&host: {"auth": &bad}}})),
            env: vec![],
            source: format!("{docker_file} (auths)"),
        },
        Case {
            tag: "identitytoken",
            docker: Some(
                serde_json::json!({"auths": {&host: {"identitytoken": reg.identity_token().unwrap()}}}),
            ),
            podman: None,
            env: vec![],
            source: format!("identity token from {docker_file} (auths)"),
        },
        Case {
            tag: "credhelpers",
            docker: Some(
                serde_json::json!({"auths": {&host: {}}, "credHelpers": {&host: "kvtest-one"}}),
            ),
            podman: None,
            env: vec![],
            source: format!("docker-credential-kvtest-one (credHelpers in {docker_file})"),
        },
        Case {
            tag: "credsstore",
            docker: Some(serde_json::json!({"auths": {&host: {}}, "credsStore": "kvtest-store"})),
            podman: None,
            env: vec![],
            source: format!("docker-credential-kvtest-store (credsStore in {docker_file})"),
        },
        Case {
            tag: "podman",
            docker: Some(serde_json::json!({"auths": {"quay.io": {"auth": &bad}}})),
            podman: Some(serde_json::json!({"auths": {&host: {"auth": &good}}})),
            env: vec![],
            source: format!("{} (auths)", auth_json.display()),
        },
        Case {
            tag: "podman-runtime-dir",
            docker: None,
            podman: None,
            env: vec![("XDG_RUNTIME_DIR", runtime.display().to_string())],
            source: format!("{} (auths)", runtime.join("containers/auth.json").display()),
        },
    ];
    let one = credential_helper(helpers.path(), "kvtest-one", &host, user, password);
    let store = credential_helper(helpers.path(), "kvtest-store", &host, user, password);
    std::fs::write(
        runtime.join("containers/auth.json"),
        serde_json::json!({"auths": {&host: {"auth": &good}}}).to_string(),
    )
    .unwrap();

    let mut digest = None;
    for case in cases {
        let _ = std::fs::remove_file(home.join(".docker/config.json"));
        let _ = std::fs::remove_file(&auth_json);
        if let Some(c) = &case.docker {
            write_docker_config(&fx, c);
        }
        if let Some(c) = &case.podman {
            std::fs::write(&auth_json, c.to_string()).unwrap();
        }
        let before = reg.token_requests().len();
        let mut cmd = fx.command();
        cmd.args(["virt-api", "--registry", &prefix, "--tag", case.tag, "-v"])
            .env("PATH", path_with(helpers.path()));
        if case.tag == "podman-runtime-dir" {
            cmd.env_remove("REGISTRY_AUTH_FILE");
        }
        for (k, v) in &case.env {
            cmd.env(k, v);
        }
        let run = run_command(cmd);
        assert_eq!(run.code, 0, "{}", case.tag);
        assert!(
            run.stderr.contains(&format!(
                "using credentials for {host} from {}\n",
                case.source
            )),
            "{}: {}",
            case.tag,
            run.stderr
        );
        let new = &reg.token_requests()[before..];
        assert!(!new.is_empty());
        for r in new {
            assert_eq!(r.account.as_deref(), Some(user), "{}: {r:?}", case.tag);
            let how = (r.method.as_str(), r.grant_type.as_deref());
            if case.tag == "identitytoken" {
                assert_eq!(how, ("POST", Some("refresh_token")), "{r:?}");
            } else {
                assert_eq!(how, ("GET", None), "{r:?}");
            }
        }
        let pushed = run.pushed();
        assert_eq!(pushed.len(), 1);
        assert_eq!(
            reg.manifest_digest("kubevirt/virt-api", case.tag).as_ref(),
            Some(&pushed[0].1),
            "{}",
            case.tag
        );
        digest.get_or_insert(pushed[0].1.clone());
    }
    verify_with_skopeo(
        &reg,
        &format!("{prefix}/virt-api:auths"),
        fx.image("virt-api"),
    );
    // The helpers were asked for this registry, and only the configured one each time.
    let queries = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(queries(&one).trim(), format!("get {host}"));
    assert_eq!(queries(&store).trim(), format!("get {host}"));
}

#[test]
fn the_oauth2_password_form_is_used_where_get_is_not_served() {
    let fx = Fixture::small();
    let reg = Registry::start(RegistryKind::Token);
    let (user, password) = reg.credentials().unwrap();
    reg.update_token_policy(|p| p.post_only = true);
    let prefix = format!("{}/kubevirt", reg.addr());
    let mut cmd = fx.command();
    cmd.args(["virt-api", "--registry", &prefix, "--tag", "v1"])
        .env("KVPUSH_USERNAME", user)
        .env("KVPUSH_PASSWORD", password);
    let run = run_command(cmd);
    assert_eq!(run.code, 0);
    let requests = reg.token_requests();
    assert!(requests.iter().any(|r| r.method == "POST"
        && r.grant_type.as_deref() == Some("password")
        && r.account.as_deref() == Some(user)
        && r.granted == ["repository:kubevirt/virt-api:pull,push"]));
    // skopeo speaks GET only.
    reg.update_token_policy(|p| p.post_only = false);
    verify_with_skopeo(&reg, &format!("{prefix}/virt-api:v1"), fx.image("virt-api"));
}

/// Every kvpush output of `runs`, which must hold none of `secrets`.
fn assert_no_secret(runs: &[Run], secrets: &[String]) {
    for run in runs {
        for secret in secrets {
            for text in [&run.stdout, &run.stderr] {
                assert!(!text.contains(secret.as_str()), "a secret was printed");
            }
        }
    }
}

#[test]
fn secrets_never_appear_in_output_even_at_trace_level() {
    let fx = Fixture::small();
    let token_reg = Registry::start(RegistryKind::Token);
    let basic_reg = Registry::start(RegistryKind::HtpasswdTls);
    let mut runs = Vec::new();
    let mut secrets = Vec::new();
    for (reg, verbosity) in [(&token_reg, "-vv"), (&basic_reg, "-v")] {
        let (user, password) = reg.credentials().unwrap();
        secrets.push(password.to_string());
        secrets.push(basic_auth(user, password));
        let prefix = format!("{}/kubevirt", reg.addr());
        for (tag, log, pass) in [
            ("trace", "trace", password),
            ("debug", "debug", password),
            ("refused", "trace", "wrong-password-for-the-log"),
        ] {
            let mut cmd = fx.command();
            cmd.args(["virt-api", "--registry", &prefix, "--tag", tag, verbosity])
                .env("RUST_LOG", log)
                .env("KVPUSH_USERNAME", user)
                .env("KVPUSH_PASSWORD", pass);
            let run = run_command(cmd);
            assert_eq!(run.code, if tag == "refused" { 1 } else { 0 }, "{tag}");
            assert!(run.stderr.contains("TRACE") || log != "trace");
            runs.push(run);
        }
        secrets.push("wrong-password-for-the-log".into());
        secrets.push(basic_auth(user, "wrong-password-for-the-log"));
    }
    // An identity token, at trace level.
    let refresh = token_reg.identity_token().unwrap();
    write_docker_config(
        &fx,
        &serde_json::json!({"auths": {token_reg.addr(): {"identitytoken": &refresh}}}),
    );
    let prefix = format!("{}/kubevirt", token_reg.addr());
    let mut cmd = fx.command();
    cmd.args([
        "virt-api",
        "--registry",
        &prefix,
        "--tag",
        "identity",
        "-vv",
    ])
    .env("RUST_LOG", "trace");
    let run = run_command(cmd);
    assert_eq!(run.code, 0);
    runs.push(run);
    secrets.push(refresh);
    // Every token handed out, whole or its signature alone.
    let tokens = token_reg.issued_tokens();
    assert!(tokens.len() >= 4);
    for t in tokens {
        secrets.push(t.rsplit('.').next().unwrap().to_string());
        secrets.push(t);
    }
    assert_no_secret(&runs, &secrets);
}

#[test]
fn a_wrong_password_names_the_registry_the_source_and_what_to_do() {
    let fx = Fixture::small();
    // Basic auth: refused at the API check, before any work.
    let reg = Registry::start(RegistryKind::HtpasswdTls);
    let user = reg.user().unwrap();
    write_docker_config(
        &fx,
        &serde_json::json!({"auths": {reg.addr(): {"auth": basic_auth(user, "not-it")}}}),
    );
    let prefix = format!("{}/kubevirt", reg.addr());
    let run = fx.kvpush(&["all", "--registry", &prefix]);
    assert_eq!(run.code, 1);
    let config = fx.home().join(".docker/config.json");
    for expect in [
        format!("registry {} refused GET /v2/", reg.addr()),
        format!("with credentials from {} (auths)", config.display()),
        format!("`docker login {}`", reg.addr()),
    ] {
        assert!(run.stderr.contains(&expect), "{expect}: {}", run.stderr);
    }
    assert!(reg.catalog().is_empty());

    // Token auth: refused by the token service.
    let reg = Registry::start(RegistryKind::Token);
    let prefix = format!("{}/kubevirt", reg.addr());
    let mut cmd = fx.command();
    cmd.args(["virt-api", "--registry", &prefix])
        .env("KVPUSH_USERNAME", reg.user().unwrap())
        .env("KVPUSH_PASSWORD", "not-it");
    let run = run_command(cmd);
    assert_eq!(run.code, 1);
    for expect in [
        format!(
            "registry {} refused a token from its token service 127.0.0.1",
            reg.addr()
        ),
        "(401: UNAUTHORIZED: bad credentials)".to_string(),
        "with credentials from KVPUSH_USERNAME/KVPUSH_PASSWORD".to_string(),
        "check the user name and password".to_string(),
    ] {
        assert!(run.stderr.contains(&expect), "{expect}: {}", run.stderr);
    }
}

#[test]
fn a_pull_only_account_is_told_which_repository_it_may_not_push_to() {
    let sc = Scenario::small(RegistryKind::Token);
    sc.registry.update_token_policy(|p| {
        p.users.push(TokenUser {
            name: "reader".into(),
            password: "reader-password".into(),
            may_push: false,
        })
    });
    let run = sc.push_as("reader", "reader-password", &["virt-api"], &[]);
    assert_eq!(run.code, 1);
    for expect in [
        format!(
            "registry {} refused POST upload to kubevirt/virt-api (401",
            sc.registry.addr()
        ),
        "with credentials from KVPUSH_USERNAME/KVPUSH_PASSWORD".into(),
        "the account may not push to kubevirt/virt-api".into(),
    ] {
        assert!(run.stderr.contains(&expect), "{expect}: {}", run.stderr);
    }
    assert!(sc
        .registry
        .token_requests()
        .iter()
        .any(|r| r.account.as_deref() == Some("reader")
            && r.granted == ["repository:kubevirt/virt-api:pull"]));
    assert!(sc.registry.tags("kubevirt/virt-api").is_empty());
}

#[test]
fn a_registry_without_credentials_says_where_kvpush_looked() {
    let fx = Fixture::small();
    write_docker_config(
        &fx,
        &serde_json::json!({"auths": {"quay.io": {"auth": basic_auth("u", "p")}}}),
    );
    let config = fx.home().join(".docker/config.json");
    // Token auth: anonymous tokens grant nothing, the first push is refused.
    // Basic auth: refused at the API check.
    for kind in [RegistryKind::Token, RegistryKind::Htpasswd] {
        let reg = Registry::start(kind);
        let prefix = format!("{}/kubevirt", reg.addr());
        let run = fx.kvpush(&["virt-api", "--registry", &prefix]);
        assert_eq!(run.code, 1);
        for expect in [
            format!("registry {} refused", reg.addr()),
            "without credentials".into(),
            format!("kvpush found none for {}", reg.addr()),
            config.display().to_string(),
            format!("run `docker login {}`", reg.addr()),
        ] {
            assert!(
                run.stderr.contains(&expect),
                "{kind:?}: {expect}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn credentials_stay_with_the_registry_host() {
    let fx = Fixture::small();
    let reg = Registry::start(RegistryKind::Htpasswd);
    let relay = Relay::start(&reg).unwrap();
    let (user, password) = reg.credentials().unwrap();
    let prefix = format!("{}/kubevirt", relay.addr());
    let mut cmd = fx.command();
    cmd.args(["virt-api", "--registry", &prefix, "--tag", "v1"])
        .env("KVPUSH_USERNAME", user)
        .env("KVPUSH_PASSWORD", password);
    let run = run_command(cmd);
    assert_eq!(run.code, 0);
    let seen = relay.requests();
    let storage: Vec<_> = seen
        .iter()
        .filter(|s| s.origin == Origin::Storage)
        .collect();
    assert!(
        storage.iter().any(|s| s.method == "PUT") && storage.iter().any(|s| s.method == "HEAD"),
        "uploads and blob checks went to the other origin: {seen:?}"
    );
    assert!(
        storage.iter().all(|s| !s.authorization),
        "no credentials to another origin: {storage:?}"
    );
    assert!(seen
        .iter()
        .any(|s| s.origin == Origin::Front && s.authorization && s.method == "POST"));
    verify_with_skopeo(
        &reg,
        &format!("{}/kubevirt/virt-api:v1", reg.addr()),
        fx.image("virt-api"),
    );
}

#[test]
fn unusable_certificate_and_credential_settings_are_refused_with_what_to_fix() {
    let sc = Scenario::plain();
    let not_a_cert = sc.dir.path().join("not-a-cert.pem");
    std::fs::write(&not_a_cert, "hello\n").unwrap();
    let missing = sc.dir.path().join("missing.pem");

    let run = sc.push(&["virt-api"], &["--ca-cert", missing.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(run
        .stderr
        .contains(&format!("--ca-cert {}: cannot read it", missing.display())));
    let mut cmd = sc.push_command(&["virt-api"], &[]);
    cmd.env("SSL_CERT_FILE", &not_a_cert);
    let run = run_command(cmd);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(&format!(
        "SSL_CERT_FILE {}: holds no PEM certificate",
        not_a_cert.display()
    )));
    let mut cmd = sc.push_command(&["virt-api"], &[]);
    cmd.env("KVPUSH_USERNAME", "someone");
    let run = run_command(cmd);
    assert_eq!(run.code, 1);
    assert!(run
        .stderr
        .contains("KVPUSH_USERNAME is set but KVPUSH_PASSWORD is not"));
    // A config.json that is not JSON is named, not silently skipped.
    std::fs::create_dir_all(sc.home().join(".docker")).unwrap();
    std::fs::write(sc.home().join(".docker/config.json"), "{\"auths\": {").unwrap();
    let run = sc.push(&["virt-api"], &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains(&format!(
        "{} is not valid JSON",
        sc.home().join(".docker/config.json").display()
    )));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(sc.registry.tags("kubevirt/virt-api").is_empty());
}
