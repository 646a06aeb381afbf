//! A registry that dies mid-push (SIGKILL). Started again a few seconds
//! later on the same storage, the run finishes with every image landed, as
//! skopeo reads them. Staying down: with `--retry-time 5s` kvpush gives up
//! within a second of that limit after the kill, for every request in
//! flight or queued, and tags nothing whole that did not land whole.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Fixture, Scenario};
use kvpush_fixtures::{Registry, RegistryKind, WorkspaceSpec};

/// The tests here run one at a time: the give-up bound is about time, and
/// a second push compressing on the same cores would only blur it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits until `registry` has seen a blob upload from `child`, the moment
/// a kill hurts most; panics with kvpush's output if it ended before.
fn wait_for_uploads(registry: &Registry, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while registry.count_requests("PATCH", "/blobs/uploads/")
        + registry.count_requests("PUT", "/blobs/uploads/")
        == 0
    {
        assert!(Instant::now() < deadline, "no upload began");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kvpush ended ({status}) before any upload");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs the registry (not its watcher), as an OOM kill or a crash would.
fn kill_registry(registry: &Registry) {
    let pid = std::fs::read_to_string(registry.state_dir().join("registry.pid")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_registry_killed_mid_push_and_restarted_on_its_storage_gets_every_image() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut sc = Scenario::new(
        WorkspaceSpec {
            scale_bytes: 64 << 20,
            ..WorkspaceSpec::default()
        },
        RegistryKind::Plain,
    );
    // The defaults, as a new user runs it.
    let mut child = sc
        .push_command(&["all"], &["--tag", "v1", "--no-cache"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_uploads(&sc.registry, &mut child);
    kill_registry(&sc.registry);
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    sc.registry.restart().unwrap();
    eprintln!("registry down for {:.1}s", down.elapsed().as_secs_f64());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(sc.verify_all("v1").len(), sc.fx.ws.images.len());
}

#[test]
fn retry_time_bounds_an_outage_that_starts_mid_push() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new(WorkspaceSpec {
        scale_bytes: 64 << 20,
        ..WorkspaceSpec::default()
    });
    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", registry.addr());
    let mut cmd = fx.command();
    cmd.args(["all", "--registry", &prefix, "--tag", "v1"])
        .args(["--retry-time", "5s", "--retries", "50", "--no-cache"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    wait_for_uploads(&registry, &mut child);
    kill_registry(&registry);
    let killed = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("kvpush gave up {:.1}s after the kill", took.as_secs_f64());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The promise is the limit plus a second (5.3-5.8 s on a quiet
    // machine, 18 s before the outage clock). A debug build on 2 cores
    // shared with a dozen compilers took up to 6.4 s (9.4 s with load 12),
    // so the bound keeps one more second for a busy CI runner: a return of
    // the old behaviour still fails it by far.
    assert!(
        took < Duration::from_secs(7),
        "--retry-time 5s held (within a second, plus one for a busy machine): took {took:?}\n{stderr}"
    );
}
