//! A registry that dies mid-push (SIGKILL) and stays down: with
//! `--retry-time 5s` kvpush gives up within a second of that limit after
//! the kill, for every request in flight or queued, and tags nothing whole
//! that did not land whole.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Fixture;
use kvpush_fixtures::{Registry, RegistryKind, WorkspaceSpec};

#[test]
fn retry_time_bounds_an_outage_that_starts_mid_push() {
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
    // Kill the registry once blobs are going up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while registry.count_requests("PATCH", "/blobs/uploads/")
        + registry.count_requests("PUT", "/blobs/uploads/")
        == 0
    {
        assert!(Instant::now() < deadline, "no upload began");
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "kvpush ended before any upload: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = std::fs::read_to_string(registry.state_dir().join("registry.pid")).unwrap();
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let took = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("kvpush gave up {:.1}s after the kill", took.as_secs_f64());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        took < Duration::from_secs(6),
        "--retry-time 5s held within a second: took {took:?}\n{stderr}"
    );
}
