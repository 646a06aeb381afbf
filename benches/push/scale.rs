//! `cargo bench --bench push -- --profile scale [--scale 48MiB] [--out FILE]`:
//! KubeVirt's full scale on loopback. Three bazel-bin trees (amd64, arm64,
//! s390x) of 34 images each (the 21 of the other profiles and 13 more bundle
//! images), every layer but the disk images built per architecture, shared
//! bases within each; `kvpush --arch-bin` pushes all three in one run
//! (images as `TAG-ARCH`, then a manifest list per image), cold and then
//! warm (a new tag, caches warm), at 9, 17 and 34 images per architecture
//! (27, 51, 102 images), each size against a fresh real registry. Per size
//! it prints the times, the warm cost per image, kvpush's planning time (its
//! `planned N images in X ms` debug line), peak RSS (wait4's rusage), the
//! unique bytes the registry stored, and each figure per image against the
//! smallest size's (1.00 = linear); skopeo copies the smallest size's images
//! too, cold and warm. Owns only this profile: the registries' storage
//! figures and the skopeo command line come from `push.rs`.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kvpush_fixtures::{generate_workspace, parse_size, Workspace, WorkspaceSpec};
use serde_json::json;

use super::{
    arg, human, mib, registry_cpu, registry_storage, settle, skopeo_copy_cmd, stored_bytes, timed,
    Bench, Measure,
};

const ARCHES: [&str; 3] = ["amd64", "arm64", "s390x"];

/// KubeVirt images beyond the 21 the other profiles generate, as bundle
/// entries (a Go binary on the tools base): 34 per architecture in all.
const MORE_IMAGES: [&str; 13] = [
    "virt-exportserver",
    "virt-exportproxy",
    "virt-synchronization-controller",
    "sidecar-shim",
    "network-passt-binding",
    "network-passt-binding-cni",
    "network-slirp-binding",
    "pr-helper",
    "libguestfs-tools",
    "fedora-realtime-container-disk",
    "alpine-ext-kernel-boot-demo",
    "alpine-with-test-tooling-container-disk",
    "fake-virt-launcher",
];

/// Images per architecture at each measured size.
const SIZES: [usize; 3] = [9, 17, 34];

/// One kvpush run: its measure, its planning time (ms) and the requests
/// the registry logged.
struct Run {
    m: Measure,
    planned_ms: f64,
    requests: usize,
}

/// Run `cmd` to its end and take its rusage from wait4 (peak RSS of the
/// process itself, not of a wrapper); its stderr is returned.
// wait4 reaps the child; std's `wait` would then find no child to wait for.
#[allow(clippy::zombie_processes)]
fn run_wait4(cmd: &mut Command) -> (Measure, String) {
    let mut err = tempfile::tempfile().unwrap();
    cmd.stdout(Stdio::null())
        .stderr(err.try_clone().unwrap())
        .stdin(Stdio::null());
    let start = Instant::now();
    let child = cmd.spawn().expect("the command starts");
    let mut status = 0;
    // SAFETY: rusage is plain data written by wait4 only.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; std's Child is not waited on after.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    assert!(pid > 0, "wait4 failed: {}", std::io::Error::last_os_error());
    let mut text = String::new();
    err.rewind().unwrap();
    err.read_to_string(&mut text).unwrap();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        panic!("{cmd:?} failed (wait status {status}):\n{text}");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let m = Measure {
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        rss_kib: usage.ru_maxrss as u64,
        ..Measure::default()
    };
    (m, text)
}

/// The `planned N images in X ms` line's X.
fn planned_ms(stderr: &str) -> f64 {
    stderr
        .lines()
        .find_map(|l| {
            let rest = &l[l.find("planned ")?..];
            let ms = rest.split(" in ").nth(1)?.strip_suffix(" ms")?;
            ms.trim().parse().ok()
        })
        .unwrap_or(f64::NAN)
}

/// The 34 names in an order whose every prefix mixes singles, bundle
/// images and disk images (11 is prime to 34: a permutation).
fn mixed_order(ws: &Workspace) -> Vec<String> {
    let n = ws.images.len();
    (0..n)
        .map(|i| ws.images[(i * 11) % n].name.clone())
        .collect()
}

fn kvpush_arch_bins(
    trees: &[Workspace],
    names: &[String],
    registry: &str,
    tag: &str,
    cache: &Path,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvpush"));
    if names.len() == trees[0].images.len() {
        cmd.arg("all");
    } else {
        cmd.args(names);
    }
    cmd.arg("--workspace")
        .arg(&trees[0].root)
        .arg("--registry")
        .arg(format!("{registry}/kubevirt"))
        .arg("--tag")
        .arg(tag)
        .arg("--cache-dir")
        .arg(cache)
        // Only the planning line of the debug output.
        .env("RUST_LOG", "warn,kvpush::commands=debug");
    for (arch, ws) in ARCHES.iter().zip(trees) {
        cmd.arg("--arch-bin")
            .arg(format!("{arch}={}", ws.root.display()));
    }
    cmd
}

pub fn main(args: &[String]) {
    let per_arch = arg(args, "--scale")
        .and_then(|s| parse_size(&s))
        .unwrap_or(48 << 20);
    let out = PathBuf::from(arg(args, "--out").unwrap_or_else(|| "target/bench/scale.json".into()));
    let work = tempfile::Builder::new()
        .prefix("kvpush-bench-scale-")
        .tempdir()
        .unwrap();
    let storage = registry_storage(args, 4 * per_arch);
    println!(
        "kvpush bench, scale profile: {} architectures x {} images, {} of tarballs each, registry storage under {}",
        ARCHES.len(),
        MORE_IMAGES.len() + 21,
        human(per_arch),
        storage.display()
    );
    let trees: Vec<Workspace> = ARCHES
        .iter()
        .map(|arch| {
            let spec = WorkspaceSpec {
                scale_bytes: per_arch,
                arch: arch.to_string(),
                arch_layers: true,
                extra_bundle_images: MORE_IMAGES.iter().map(|s| s.to_string()).collect(),
                ..WorkspaceSpec::default()
            };
            generate_workspace(&work.path().join(arch), &spec).unwrap()
        })
        .collect();
    let order = mixed_order(&trees[0]);

    let mut rows = Vec::new();
    let mut skopeo = None;
    for (i, &k) in SIZES.iter().enumerate() {
        let names = &order[..k];
        let dir = work.path().join(format!("size-{k}"));
        let b = Bench::fresh(dir.clone(), &storage);
        let registry = b.kv_registry.addr().to_string();
        let cache = dir.join("kvpush-cache");
        let push = |tag: &str| {
            settle();
            let before = stored_bytes(&b.kv_registry);
            let cpu_before = registry_cpu(&b.kv_registry);
            b.kv_registry.clear_access_log();
            let (mut m, stderr) =
                run_wait4(&mut kvpush_arch_bins(&trees, names, &registry, tag, &cache));
            m.stored = stored_bytes(&b.kv_registry) - before;
            m.registry_cpu = registry_cpu(&b.kv_registry) - cpu_before;
            // The registry writes its log line after the response.
            std::thread::sleep(std::time::Duration::from_millis(300));
            Run {
                planned_ms: planned_ms(&stderr),
                // Access-log lines only (`... [date] "GET /v2/..."`): the
                // log holds the app's "response completed" line for each too.
                requests: b
                    .kv_registry
                    .access_log()
                    .lines()
                    .filter(|l| l.contains("] \""))
                    .count(),
                m,
            }
        };
        let cold = push("cold");
        let warm = push("warm");
        let images = k * ARCHES.len();
        println!(
            "{images} images: cold {:.2} s ({} requests), warm {:.3} s ({:.1} ms/image, {} requests), planned in {:.1} / {:.1} ms",
            cold.m.wall,
            cold.requests,
            warm.m.wall,
            warm.m.wall * 1e3 / images as f64,
            warm.requests,
            cold.planned_ms,
            warm.planned_ms
        );
        if i == 0 {
            skopeo = Some(skopeo_runs(&b, &trees, names));
        }
        rows.push((images, cold, warm));
    }

    println!();
    println!("| images (per arch x 3) | unique bytes stored | kvpush cold | cold per image | cold per MiB stored | kvpush warm | warm per image | requests (cold / warm) | planning (cold / warm) | peak RSS (cold / warm) | kvpush CPU (cold / warm) | registry CPU (cold / warm) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let (n0, c0, w0) = (rows[0].0 as f64, &rows[0].1, &rows[0].2);
    let mut json_rows = Vec::new();
    for (images, cold, warm) in &rows {
        let n = *images as f64;
        println!(
            "| {images} ({} x 3) | {:.1} MiB | {:.2} s | {:.1} ms | {:.1} ms | {:.3} s | {:.1} ms | {} / {} | {:.1} / {:.1} ms | {:.1} / {:.1} MiB | {:.2} / {:.2} s | {:.2} / {:.2} s |",
            images / 3,
            mib(cold.m.stored),
            cold.m.wall,
            cold.m.wall * 1e3 / n,
            cold.m.wall * 1e3 / mib(cold.m.stored),
            warm.m.wall,
            warm.m.wall * 1e3 / n,
            cold.requests,
            warm.requests,
            cold.planned_ms,
            warm.planned_ms,
            cold.m.rss_kib as f64 / 1024.0,
            warm.m.rss_kib as f64 / 1024.0,
            cold.m.cpu,
            warm.m.cpu,
            cold.m.registry_cpu,
            warm.m.registry_cpu,
        );
        json_rows.push(json!({
            "images": images, "per_arch": images / 3, "unique_bytes_stored": cold.m.stored,
            "cold": cold.m.json(), "warm": warm.m.json(),
            "planned_ms": {"cold": cold.planned_ms, "warm": warm.planned_ms},
            "requests": {"cold": cold.requests, "warm": warm.requests},
        }));
    }
    println!();
    println!(
        "growth against {} images, per image (1.00 = linear in images):",
        rows[0].0
    );
    println!("| images | unique bytes | cold time | cold time per MiB stored | warm time | planning (cold) | peak RSS (cold) |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (images, cold, warm) in &rows {
        let scale = *images as f64 / n0;
        let per = |x: f64, x0: f64| x / x0 / scale;
        println!(
            "| {images} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            per(cold.m.stored as f64, c0.m.stored as f64),
            per(cold.m.wall, c0.m.wall),
            (cold.m.wall / cold.m.stored as f64) / (c0.m.wall / c0.m.stored as f64),
            per(warm.m.wall, w0.m.wall),
            per(cold.planned_ms, c0.planned_ms),
            per(cold.m.rss_kib as f64, c0.m.rss_kib as f64),
        );
    }
    let (s_cold, s_warm) = skopeo.expect("the first size ran skopeo");
    println!();
    println!(
        "skopeo at {} images (one copy after another, no manifest lists): cold {:.2} s (kvpush/skopeo {:.2}), warm {:.2} s (kvpush/skopeo {:.2}), peak RSS {:.1} MiB, stored {:.1} MiB (kvpush {:.1} MiB)",
        rows[0].0,
        s_cold.wall,
        c0.m.wall / s_cold.wall,
        s_warm.wall,
        w0.m.wall / s_warm.wall,
        s_cold.rss_kib as f64 / 1024.0,
        mib(s_cold.stored),
        mib(c0.m.stored)
    );
    let results = json!({
        "profile": "scale", "arches": ARCHES, "tarball_bytes_per_arch": per_arch,
        "rows": json_rows,
        "skopeo": {"images": rows[0].0, "cold": s_cold.json(), "warm": s_warm.json()},
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    println!("\nfigures written to {}", out.display());
}

/// skopeo copies of `names` of every tree into `b`'s skopeo registry as
/// `NAME:TAG-ARCH`, cold then warm (new tag): (cold, warm).
fn skopeo_runs(b: &Bench, trees: &[Workspace], names: &[String]) -> (Measure, Measure) {
    let cache = b.work.join("skopeo-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let run = |tag: &str| {
        settle();
        let before = stored_bytes(&b.skopeo_registry);
        let mut total = Measure::default();
        for (arch, ws) in ARCHES.iter().zip(trees) {
            for image in ws.images.iter().filter(|i| names.contains(&i.name)) {
                let dest = format!(
                    "docker://{}/kubevirt/{}:{tag}-{arch}",
                    b.skopeo_registry.addr(),
                    image.name
                );
                total.add(timed(&mut skopeo_copy_cmd(
                    &image.skopeo_source(),
                    &dest,
                    &cache,
                )));
            }
        }
        total.stored = stored_bytes(&b.skopeo_registry) - before;
        total
    };
    let cold = run("cold");
    let warm = run("warm");
    (cold, warm)
}
