//! Interrupting kvpush mid-push (SIGTERM while blobs go up, SIGINT while
//! tags are being written): it stops promptly, says what was and was not
//! pushed, leaves no tag on an incomplete image, and running the same
//! command again finishes the push. A slowed-down proxy in front of the
//! registry keeps the push in flight long enough to interrupt it.

mod common;

use std::io::Read;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Scenario;
use kvpush_fixtures::{FaultPlan, FaultProxy, Outcome, ProxyEvent, Registry};

fn reader(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Wait (bounded) until `ready` holds for the proxy's requests.
fn wait_for(proxy: &FaultProxy, what: &str, ready: impl Fn(&[ProxyEvent]) -> bool) {
    let limit = Instant::now() + Duration::from_secs(120);
    while !ready(&proxy.events()) {
        assert!(Instant::now() < limit, "the push never reached: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) for the child to exit; its exit code, stdout, stderr.
fn finish(
    mut child: Child,
    out: JoinHandle<String>,
    err: JoinHandle<String>,
) -> (i32, String, String) {
    let limit = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > limit {
            let _ = child.kill();
            panic!("kvpush did not stop within 60s of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    eprintln!("--- kvpush exit {status}\n--- stdout\n{out}--- stderr\n{err}");
    (status.code().unwrap_or(-1), out, err)
}

fn blob_put_done(e: &ProxyEvent) -> bool {
    e.method == "PUT" && e.uri.contains("/blobs/uploads/") && e.outcome == Outcome::Forwarded(201)
}

/// Blob uploads the registry completed (its access log, written a little
/// after the fact).
fn blobs_stored(registry: &Registry) -> usize {
    std::thread::sleep(Duration::from_millis(300));
    registry
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.uri.contains("/blobs/uploads/") && r.status == 201)
        .count()
}

fn tag_put_done(e: &ProxyEvent) -> bool {
    e.method == "PUT" && e.uri.ends_with("/manifests/devel") && e.outcome == Outcome::Forwarded(201)
}

/// Push everything through a slow proxy, send `signal` once `ready`, and
/// check what the interrupted run left; then run again to completion.
fn interrupt_then_finish(
    signal: &str,
    exit_code: i32,
    what: &str,
    ready: impl Fn(&[ProxyEvent]) -> bool,
) {
    let sc = Scenario::plain();
    let proxy = sc.proxy(FaultPlan {
        latency: Duration::from_millis(150),
        ..FaultPlan::default()
    });
    let prefix = format!("{}/kubevirt", proxy.addr());
    let args = ["all", "--registry", &prefix, "--tag", "devel", "-j", "4"];
    let mut cmd = sc.command();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kvpush starts");
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());

    wait_for(&proxy, what, &ready);
    let killed = std::process::Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (code, stdout, stderr) = finish(child, out, err);

    assert_eq!(code, exit_code, "exit status after {signal}");
    assert!(
        stderr.contains(&format!("interrupted by SIG{signal}; not pushed: "))
            && stderr.contains("No tag points at an incomplete image"),
        "{stderr}"
    );
    let pushed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once('@'))
        .map(|(reference, _)| reference)
        .collect();
    assert!(pushed.len() < sc.ws.images.len(), "stopped mid-push");
    assert!(
        stderr.contains(&format!(
            "{} pushed, 0 skipped (already up to date), 0 failed, {} not pushed (interrupted)",
            pushed.len(),
            sc.ws.images.len() - pushed.len()
        )),
        "{stderr}"
    );
    // Every tag in the registry is a whole image; every image reported
    // pushed is tagged.
    let mut tagged = 0;
    for image in &sc.ws.images {
        let repo = format!("kubevirt/{}", image.name);
        let shown = format!("{prefix}/{}:devel", image.name);
        if sc.registry.tags(&repo).contains(&"devel".to_string()) {
            tagged += 1;
            sc.verify(&image.name, "devel");
        } else {
            assert!(
                !pushed.contains(&shown.as_str()),
                "{shown} reported but not tagged"
            );
        }
    }
    assert!(tagged >= pushed.len());

    // The same command again finishes the job, without sending again the
    // blobs that had landed.
    // Counted by the registry itself: a blob whose 201 never reached the
    // killed client has landed all the same.
    let uploads_before = blobs_stored(&sc.registry);
    sc.registry.clear_access_log();
    proxy.set_plan(FaultPlan::default());
    let run = sc.kvpush(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    sc.verify_all("devel");
    let uploads_after = blobs_stored(&sc.registry);
    let distinct = common::distinct_blobs(&sc.ws.images);
    assert!(uploads_before > 0);
    assert_eq!(
        uploads_after,
        distinct.len() - uploads_before,
        "the second run uploads only what the first did not"
    );
}

#[test]
fn sigterm_while_blobs_go_up_leaves_no_tag_and_a_rerun_finishes() {
    interrupt_then_finish("TERM", 143, "three blob uploads", |events| {
        events.iter().filter(|e| blob_put_done(e)).count() >= 3
    });
}

#[test]
fn sigint_while_tags_are_written_leaves_only_whole_images_tagged() {
    interrupt_then_finish("INT", 130, "a first tag", |events| {
        events.iter().any(tag_put_done)
    });
}
