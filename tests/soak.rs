//! Soak: 30 consecutive pushes of every target through the fault proxy in
//! front of a real docker-registry, alternating cold (content new to the
//! registry and to the digest cache: a workspace of another seed) and warm
//! (the same content again under a new tag), each watched through /proc
//! while it runs (open descriptors, peak RSS). Every run exits 0 with its
//! tags landed (skopeo on a sample each round, every tag's digest at the
//! end, skopeo on every image of the last), leaves its TMPDIR and the
//! cache without temporary files, and the descriptors and peak RSS stay
//! where the first runs put them. Then `kill -9` of kvpush mid-upload: the
//! next run lands everything, removes what the killed one left, and the
//! cache holds only whole entries. Prints the figures as a table.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{verify_with_skopeo, Fixture};
use kvpush_fixtures::{FaultPlan, FaultProxy, Outcome, Registry, RegistryKind, WorkspaceSpec};

const RUNS: usize = 30;
/// Descriptors a run may hold beyond the first runs' peak (connections
/// reopened after a fault, a spill file) before it counts as a leak.
const FD_SLACK: usize = 16;

fn workspace(seed: u64) -> Fixture {
    Fixture::new(WorkspaceSpec {
        scale_bytes: 3 << 20,
        seed,
        ..WorkspaceSpec::default()
    })
}

/// What one run was seen to use.
struct Sample {
    code: i32,
    stdout: String,
    stderr: String,
    fds_peak: usize,
    /// KiB, VmHWM as last read while the process ran.
    rss_peak: u64,
    secs: f64,
}

/// Run `cmd` to the end, reading /proc/PID every few milliseconds.
fn watched(mut cmd: Command, out_dir: &Path) -> Sample {
    let (out, err) = (out_dir.join("stdout"), out_dir.join("stderr"));
    cmd.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("kvpush runs");
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let (mut fds_peak, mut rss_peak) = (0, 0);
    let status = loop {
        // Read before try_wait: once reaped, the numbers are gone.
        if let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) {
            fds_peak = fds_peak.max(fds.count());
        }
        if let Some(hwm) = vm_hwm(&proc_dir) {
            rss_peak = rss_peak.max(hwm);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(3));
    };
    Sample {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out).unwrap(),
        stderr: std::fs::read_to_string(err).unwrap(),
        fds_peak,
        rss_peak,
        secs: started.elapsed().as_secs_f64(),
    }
}

/// `VmHWM` (peak resident set, KiB) of a running process.
fn vm_hwm(proc_dir: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Files of the cache that are not whole entries: temporaries, and
/// entries that do not parse as kvpush writes them.
fn cache_faults(cache: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for path in walk(cache) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let whole = if name.starts_with('.') {
            false
        } else if path.components().any(|c| c.as_os_str() == "layers") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .is_ok_and(|v| v["digest"].is_string() && v["size"].is_u64())
        } else {
            !bytes.is_empty() && std::str::from_utf8(&bytes).is_ok()
        };
        if !whole {
            bad.push(path.display().to_string());
        }
    }
    bad
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// A kvpush pushing every target of `fx` through `proxy` at `tag`, with
/// its own TMPDIR and the shared cache.
fn push_command(fx: &Fixture, proxy: &FaultProxy, tag: &str, tmp: &Path, cache: &Path) -> Command {
    let mut cmd = fx.command();
    cmd.args(["all", "--registry", &format!("{}/kubevirt", proxy.addr())])
        .args(["--tag", tag, "--retries", "10", "--stall-timeout", "1s"])
        .arg("--cache-dir")
        .arg(cache)
        .env("TMPDIR", tmp);
    cmd
}

#[test]
fn thirty_pushes_under_faults_leave_nothing_behind_and_stay_flat() {
    let registry = Registry::start(RegistryKind::Plain);
    let proxy = FaultProxy::start(
        registry.addr(),
        FaultPlan {
            stall_limit: Duration::from_secs(2),
            ..FaultPlan::flaky(19, 0.012)
        },
    );
    let base = tempfile::tempdir().unwrap();
    let (tmp, cache, out) = (
        base.path().join("tmp"),
        base.path().join("cache"),
        base.path().join("out"),
    );
    for d in [&tmp, &out] {
        std::fs::create_dir_all(d).unwrap();
    }
    let prefix = format!("{}/kubevirt", registry.addr());
    let mut fx = workspace(1);
    // (tag, image name, digest kvpush printed) of every run, checked at the end.
    let mut landed: Vec<(String, String, String)> = Vec::new();
    let mut rows: Vec<(usize, &str, Sample, usize, usize)> = Vec::new();
    let started = Instant::now();
    let mut sampling = Duration::ZERO;
    for run in 1..=RUNS {
        let cold = run % 2 == 1;
        if cold && run > 1 {
            fx = workspace(run as u64);
        }
        let tag = format!("soak-{run}");
        let injected_before = proxy.injected();
        let s = watched(push_command(&fx, &proxy, &tag, &tmp, &cache), &out);
        assert_eq!(s.code, 0, "run {run}: {}", s.stderr);
        let pushed = s.stdout.lines().filter_map(|l| l.split_once('@')).count();
        assert_eq!(pushed, fx.ws.images.len(), "run {run}: {}", s.stdout);
        for (reference, digest) in s.stdout.lines().filter_map(|l| l.split_once('@')) {
            let name = reference
                .rsplit('/')
                .next()
                .unwrap()
                .split(':')
                .next()
                .unwrap();
            landed.push((tag.clone(), name.to_string(), digest.to_string()));
        }
        // A sample each round, a different image each time, with skopeo.
        let image = &fx.ws.images[run % fx.ws.images.len()];
        let t = Instant::now();
        verify_with_skopeo(&registry, &format!("{prefix}/{}:{tag}", image.name), image);
        sampling += t.elapsed();
        let temp_left = entries(&tmp);
        assert!(
            temp_left.is_empty(),
            "run {run} left {temp_left:?} in TMPDIR"
        );
        let bad = cache_faults(&cache);
        assert!(bad.is_empty(), "run {run} left in the cache: {bad:?}");
        let faults = proxy.injected() - injected_before;
        rows.push((
            run,
            if cold { "cold" } else { "warm" },
            s,
            temp_left.len(),
            faults,
        ));
    }

    eprintln!("run  kind  exit  secs   fds peak  rss peak (KiB)  temp files  faults");
    for (run, kind, s, temp, faults) in &rows {
        eprintln!(
            "{run:>3}  {kind}  {:>4}  {:>5.2}  {:>8}  {:>14}  {temp:>10}  {faults:>6}",
            s.code, s.secs, s.fds_peak, s.rss_peak
        );
    }
    let injected = proxy.injected();
    eprintln!(
        "{RUNS} runs in {:.0}s ({:.0}s of it skopeo samples); faults injected over all runs: {injected}",
        started.elapsed().as_secs_f64(),
        sampling.as_secs_f64()
    );
    assert!(injected > 0, "the proxy injected no fault");

    // Every tag of every run is there at the digest kvpush printed; the
    // last run's images are read whole by skopeo.
    let checks = Instant::now();
    for (tag, name, digest) in &landed {
        assert_eq!(
            registry
                .manifest_digest(&format!("kubevirt/{name}"), tag)
                .as_deref(),
            Some(digest.as_str()),
            "{name}:{tag}"
        );
    }
    let heads = checks.elapsed().as_secs_f64();
    for image in &fx.ws.images {
        verify_with_skopeo(
            &registry,
            &format!("{prefix}/{}:soak-{RUNS}", image.name),
            image,
        );
    }
    eprintln!(
        "{} tags checked in {heads:.1}s, the last run's images read with skopeo in {:.1}s",
        landed.len(),
        checks.elapsed().as_secs_f64() - heads
    );

    // Flat: no run holds more descriptors than the first cold and warm
    // runs did, give or take a few (a descriptor kept per blob or per
    // request would be hundreds more), and the last ten peak no higher in
    // memory than the first runs of their kind.
    let fds_first = rows.iter().take(2).map(|r| r.2.fds_peak).max().unwrap();
    for (run, kind, s, _, _) in &rows {
        assert!(
            s.fds_peak <= fds_first + FD_SLACK,
            "run {run} ({kind}): {} descriptors open, the first runs peaked at {fds_first}",
            s.fds_peak
        );
    }
    for (run, kind, s, _, _) in rows.iter().skip(RUNS - 10) {
        let first_rss = rows
            .iter()
            .take(4)
            .filter(|r| r.1 == *kind)
            .map(|r| r.2.rss_peak)
            .max()
            .unwrap();
        assert!(
            s.rss_peak * 4 <= first_rss * 5,
            "run {run} ({kind}): peak RSS {} KiB, more than 25% over the first runs' {first_rss} KiB",
            s.rss_peak
        );
    }
}

/// Wait until the proxy has forwarded an upload body to the registry.
fn wait_for_upload_bytes(proxy: &FaultProxy, child: &mut Child) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent: u64 = proxy
            .events()
            .iter()
            .filter(|e| {
                matches!(e.method.as_str(), "PUT" | "PATCH")
                    && e.uri.contains("/blobs/uploads/")
                    && matches!(e.outcome, Outcome::Forwarded(_))
            })
            .map(|e| e.body_len)
            .sum();
        if sent > 0 {
            return sent;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "kvpush ended before any upload landed"
        );
        assert!(Instant::now() < deadline, "no upload reached the registry");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_push_killed_with_sigkill_leaves_nothing_the_next_run_trips_on() {
    let registry = Registry::start(RegistryKind::Plain);
    // Slow bodies, so the kill lands while uploads are under way.
    let proxy = FaultProxy::start(
        registry.addr(),
        FaultPlan {
            bandwidth: Some(256 << 10),
            ..FaultPlan::default()
        },
    );
    let fx = Fixture::small();
    let base = tempfile::tempdir().unwrap();
    let (tmp, cache) = (base.path().join("tmp"), base.path().join("cache"));
    std::fs::create_dir_all(&tmp).unwrap();

    let mut cmd = push_command(&fx, &proxy, "killed", &tmp, &cache);
    cmd.args(["--jobs", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let sent = wait_for_upload_bytes(&proxy, &mut child);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "killed by a signal: {status:?}");
    let left = entries(&tmp);
    eprintln!("kill -9 after {sent} upload bytes landed; TMPDIR then holds {left:?}");
    assert!(
        left.iter().any(|n| n.starts_with("kvpush-spool-")),
        "the killed run's spool directory is there: {left:?}"
    );

    proxy.set_plan(FaultPlan::default());
    let mut next = push_command(&fx, &proxy, "killed", &tmp, &cache);
    // kvpush says what it removed at info level.
    next.env("RUST_LOG", "warn,kvpush=info");
    let s = watched(next, base.path());
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert!(
        s.stderr
            .contains("removed 1 temporary directory of killed kvpush runs"),
        "{}",
        s.stderr
    );
    for image in &fx.ws.images {
        verify_with_skopeo(
            &registry,
            &format!("{}/kubevirt/{}:killed", registry.addr(), image.name),
            image,
        );
    }
    let after = entries(&tmp);
    assert!(after.is_empty(), "TMPDIR after the next run: {after:?}");
    let bad = cache_faults(&cache);
    assert!(bad.is_empty(), "the cache holds {bad:?}");
    assert!(!walk(&cache).is_empty(), "the cache was used");
    eprintln!(
        "next run: exit 0 in {:.2}s, {} images landed, TMPDIR {} -> {} entries, cache whole ({} entries)",
        s.secs,
        fx.ws.images.len(),
        left.len(),
        after.len(),
        walk(&cache).len()
    );
}
