//! Hostile or broken answers cannot exhaust kvpush's memory or hang it,
//! tried against a real registry behind the fault proxy
//! (`kvpush_fixtures::FaultProxy`): a manifest over 4 MiB is refused, a
//! body trickled a byte a second is cut by `--stall-timeout`, a redirect
//! loop ends, a token realm on another host gets credentials only over
//! HTTPS (or with `--insecure`), and a token service whose certificate
//! fails is not asked again. Where uploads go without credentials is
//! tests/auth.rs' `credentials_stay_with_the_registry_host`.

mod common;

use std::time::{Duration, Instant};

use common::{Run, Scenario};
use kvpush_fixtures::{Fault, FaultPlan, FaultProxy, Outcome, Registry, RegistryKind};

/// A plan giving every `GET` of a manifest `fault`.
fn on_manifest_gets(fault: Fault) -> FaultPlan {
    FaultPlan {
        rate: 1.0,
        faults: vec![fault],
        only: Some(("GET".into(), "/manifests/".into())),
        stall_limit: Duration::from_secs(30),
        ..FaultPlan::default()
    }
}

/// `kvpush manifest virt-api --tag v1` (a list of the amd64 image tagged
/// `v1-amd64`) through `proxy`, reading only the registry; and how long
/// it took.
fn list_through(sc: &Scenario, proxy: &FaultProxy, extra: &[&str]) -> (Run, Duration) {
    let empty = sc.dir.path().join("no-workspace");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = common::kvpush_command(&sc.home());
    cmd.env("BUILD_ARCH", "x86_64")
        .arg("--registry")
        .arg(format!("{}/kubevirt", proxy.addr()))
        .args(["manifest", "virt-api", "--tag", "v1", "--workspace"])
        .arg(&empty)
        .args(extra);
    let started = Instant::now();
    let run = common::run_command(cmd);
    (run, started.elapsed())
}

/// A registry holding virt-api as `v1-amd64`, for `kvpush manifest`.
fn pushed_amd64() -> Scenario {
    let sc = Scenario::plain();
    assert_eq!(sc.push(&["virt-api"], &["--tag", "v1-amd64"]).code, 0);
    sc
}

#[test]
fn a_manifest_over_4_mib_is_refused_with_or_without_a_length() {
    let sc = pushed_amd64();
    for declared in [true, false] {
        let proxy = sc.proxy(on_manifest_gets(Fault::Oversize {
            len: (4 << 20) + 1,
            declared,
        }));
        let (run, took) = list_through(&sc, &proxy, &[]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("a manifest over 4 MiB is refused, as containerd does"),
            "declared {declared}: {}",
            run.stderr
        );
        assert!(took < Duration::from_secs(20), "{took:?}");
        println!("manifest of 4 MiB + 1 (Content-Length: {declared}): refused in {took:?}");
    }
    // Padded to just 4 MiB it is read whole, and then found not to be
    // the manifest the registry named.
    let proxy = sc.proxy(on_manifest_gets(Fault::Oversize {
        len: 4 << 20,
        declared: true,
    }));
    let (run, _) = list_through(&sc, &proxy, &[]);
    assert!(!run.stderr.contains("refused"), "{}", run.stderr);
    assert!(run.stderr.contains("hashing to"), "{}", run.stderr);
}

#[test]
fn a_body_trickled_a_byte_a_second_is_cut_by_the_stall_timeout() {
    let sc = pushed_amd64();
    let proxy = sc.proxy(on_manifest_gets(Fault::Trickle { bytes_per_sec: 1 }));
    let (run, took) = list_through(&sc, &proxy, &["--stall-timeout", "2s"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("stalled"), "{}", run.stderr);
    assert!(
        run.stderr.contains("while reading the answer"),
        "{}",
        run.stderr
    );
    // Cut after one 2 s window, not after the body's length in seconds.
    assert!(took < Duration::from_secs(10), "{took:?}");
    println!("a manifest trickled at 1 byte/s: cut after {took:?} (--stall-timeout 2s)");
}

#[test]
fn a_redirect_loop_ends_after_a_bounded_number_of_requests() {
    let sc = pushed_amd64();
    let proxy = sc.proxy(on_manifest_gets(Fault::RedirectLoop));
    let (run, took) = list_through(&sc, &proxy, &["--retries", "2", "--retry-time", "20s"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("redirect"), "{}", run.stderr);
    let loops = proxy
        .events()
        .iter()
        .filter(|e| e.outcome == Outcome::Injected(Fault::RedirectLoop))
        .count();
    // At most 10 redirects followed per try, at most 2 tries.
    assert!((1..=22).contains(&loops), "{loops} requests");
    println!("a redirect loop: {loops} requests, given up after {took:?}");
}

/// The token registry behind a proxy that names `realm` as its token
/// service; kvpush resolves `tokens.example` to 127.0.0.1.
fn push_with_realm(sc: &Scenario, realm: &str, extra: &[&str]) -> (FaultProxy, Run) {
    let proxy = sc.proxy(FaultPlan {
        realm: Some(realm.to_string()),
        ..FaultPlan::default()
    });
    let (user, password) = sc.registry.credentials().unwrap();
    let mut cmd = sc.fx.command();
    cmd.args(["virt-api", "--tag", "v1", "--registry"])
        .arg(format!("{}/kubevirt", proxy.addr()))
        .args(extra)
        .env("KVPUSH_USERNAME", user)
        .env("KVPUSH_PASSWORD", password)
        .env("KVPUSH_TEST_RESOLVE", "tokens.example=127.0.0.1");
    (proxy, common::run_command(cmd))
}

#[test]
fn a_token_realm_on_another_host_gets_credentials_only_over_https_or_with_insecure() {
    let sc = Scenario::small(RegistryKind::Token);
    let real = sc.registry.token_realm().unwrap().to_string();
    let port = real
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let realm = format!("http://tokens.example:{port}/token");

    let (_proxy, run) = push_with_realm(&sc, &realm, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("tokens.example")
            && run.stderr.contains("plain HTTP")
            && run.stderr.contains("--insecure"),
        "{}",
        run.stderr
    );
    assert!(
        sc.registry.token_requests().is_empty(),
        "no token request, so no password, went out"
    );

    // Allowed with --insecure: the push lands.
    let (_proxy, run) = push_with_realm(&sc, &realm, &["--insecure"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!sc.registry.token_requests().is_empty());
    sc.verify("virt-api", "v1");
}

#[test]
fn a_token_service_whose_certificate_fails_is_not_asked_again() {
    let sc = Scenario::small(RegistryKind::Token);
    // An HTTPS server whose CA kvpush is not given, as the token service.
    let tls = Registry::start(RegistryKind::Tls);
    let port = tls.addr().rsplit(':').next().unwrap();
    let realm = format!("https://tokens.example:{port}/token");
    let started = Instant::now();
    let (_proxy, run) = push_with_realm(&sc, &realm, &["--retries", "5"]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("tokens.example") && run.stderr.contains("not retried"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("retrying"),
        "a certificate error is not transient: {}",
        run.stderr
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}
