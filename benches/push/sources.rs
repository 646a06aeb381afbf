//! Every source the bench measures besides the tarballs and the loopback
//! rules_img scenario: rules_docker push-target parts (Bazel's own gzip
//! layers: kvpush compresses nothing, the push is upload-bound) and
//! rules_oci layouts, as rows 5 and 6 of the loopback table; and, for
//! `--profile wan`, the cold push of parts, rules_oci layouts and rules_img
//! trees through shapers (rules_img's origin registry behind a shaper of
//! its own, so the copy of its shallow bases crosses a far link too).
//! Owns these workspaces and the wan sources table; the loopback
//! registries, timing and skopeo runs stay in `push.rs`, the wan tarball
//! table in `wan.rs`, the rules_img workspace in `rules_img.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvpush_fixtures::{
    generate_rules_oci_workspace, generate_workspace, LinkShape, Registry, RegistryKind,
    RulesOciSpec, Shaper, ShaperStats, WorkspaceSpec,
};
use serde_json::json;

use super::rules_img::RulesImgBench;
use super::wan::shape_and_scale;
use super::{
    arg, human, kvpush_all, mib, registry_storage, settle, skopeo_copy_cmd, skopeo_sources, timed,
    Bench, Measure,
};

/// One source's workspace: kvpush reads `root`, skopeo each `(name, source)`.
pub(super) struct Source {
    pub(super) name: &'static str,
    root: PathBuf,
    skopeo: Vec<(String, String)>,
}

/// The parts and rules_oci workspaces of `scale` bytes under `dir`.
///
/// Parts: kvpush reads the push-target parts (`--source auto` finds the
/// push scripts); skopeo has no reader for them and copies the same images
/// from the workspace's tarballs, as the tarball scenarios do. rules_oci:
/// both read the `oci_image` layouts (`skopeo copy oci:<layout>`).
pub(super) fn prepare(dir: &Path, scale: u64) -> Vec<Source> {
    let spec = WorkspaceSpec {
        scale_bytes: scale,
        push_parts: true,
        ..WorkspaceSpec::default()
    };
    let parts = generate_workspace(&dir.join("parts"), &spec).unwrap();
    let oci_spec = RulesOciSpec {
        scale_bytes: scale,
        ..RulesOciSpec::default()
    };
    let oci = generate_rules_oci_workspace(&dir.join("rules-oci"), &oci_spec).unwrap();
    println!(
        "generated a rules_docker parts workspace of {} images ({} of tarballs) and a rules_oci workspace of {} layouts",
        parts.images.len(),
        human(parts.total_bytes),
        oci.targets.len()
    );
    vec![
        Source {
            name: "5-parts",
            skopeo: skopeo_sources(&parts),
            root: parts.root,
        },
        Source {
            name: "6-rules-oci",
            skopeo: oci
                .targets
                .iter()
                .map(|t| (t.name.clone(), format!("oci:{}", t.layout.display())))
                .collect(),
            root: oci.root,
        },
    ]
}

impl Source {
    /// A cold push by each tool against fresh registries (storage under
    /// `storage`, caches under `dir`): (kvpush, skopeo).
    pub(super) fn cold(&self, dir: &Path, storage: &Path) -> (Measure, Measure) {
        let b = Bench::fresh(dir.join(self.name), storage);
        (b.kvpush(&self.root, "cold"), b.skopeo(&self.skopeo, "cold"))
    }
}

/// A real registry behind its own shaper.
struct Shaped {
    registry: Registry,
    shaper: Shaper,
}

impl Shaped {
    fn start(storage: &Path, shape: LinkShape) -> Shaped {
        let registry = Registry::start_in(RegistryKind::Plain, storage);
        let shaper = Shaper::start(registry.addr(), shape).expect("shaper starts");
        Shaped { registry, shaper }
    }
}

/// Run `cmds` one after another; what each shaper saw meanwhile, and how
/// long the last shaper's downstream bytes took to come through, from its
/// first to its last (sampled every 10 ms; zero when none came).
fn measure(cmds: Vec<Command>, links: &[&Shaper]) -> (Measure, Vec<ShaperStats>, f64) {
    settle();
    let before: Vec<ShaperStats> = links.iter().map(|l| l.stats()).collect();
    let mut m = Measure::default();
    let done = AtomicBool::new(false);
    let watched = links.last().expect("a link");
    let window = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let (start, base) = (Instant::now(), watched.stats().bytes_down);
            let (mut first, mut last, mut seen) = (None, 0.0, base);
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
                let now = watched.stats().bytes_down;
                if now != seen {
                    let t = start.elapsed().as_secs_f64();
                    first.get_or_insert(t - 0.01);
                    (last, seen) = (t, now);
                }
            }
            first.map_or(0.0, |f| last - f)
        });
        for mut cmd in cmds {
            m.add(timed(&mut cmd));
        }
        done.store(true, Ordering::SeqCst);
        sampler.join().expect("sampler")
    });
    // Let the relays' counters see the last connections close.
    std::thread::sleep(Duration::from_millis(50));
    let after = links.iter().zip(before).map(|(l, b)| l.stats() - b);
    (m, after.collect(), window)
}

/// `--profile wan`, after the tarball table: each other source's cold push
/// through the shaper, kvpush and skopeo alternately, against fresh
/// registries; rules_img's origin behind a second shaper of the same shape.
pub(super) fn wan(args: &[String]) {
    let (shape, scale) = shape_and_scale(args);
    let out = arg(args, "--sources-out").unwrap_or_else(|| "target/bench/wan-sources.json".into());
    let work = tempfile::Builder::new()
        .prefix("kvpush-bench-wan-sources-")
        .tempdir()
        .unwrap();
    let storage = registry_storage(args, 6 * scale);
    let (rtt, cap) = (shape.rtt.as_secs_f64(), shape.bits_per_sec as f64 / 8.0);
    println!();
    println!(
        "every other source, cold, through the same link shape ({} each):",
        human(scale)
    );
    let mut sources = prepare(work.path(), scale);
    // rules_img: the deploy manifests name the origin's shaper.
    let origin = Registry::start_in(RegistryKind::Plain, &storage);
    let origin_link = Shaper::start(origin.addr(), shape).expect("shaper starts");
    let origin_addr = origin_link.addr().to_string();
    let rules =
        RulesImgBench::prepare_for(&work.path().join("rules-img"), origin, &origin_addr, scale);
    sources.push(Source {
        name: "7-rules-img",
        root: rules.root().to_path_buf(),
        skopeo: rules.skopeo_sources().to_vec(),
    });

    println!();
    println!("| source | tool | time | round trips (time / RTT) | requests | connections | bytes up | link utilisation |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    let mut origin_line = None;
    for source in &sources {
        let dir = work.path().join(source.name);
        let kv = Shaped::start(&storage, shape);
        let sk = Shaped::start(&storage, shape);
        let kv_cmd = kvpush_all(
            &source.root,
            kv.shaper.addr(),
            "cold",
            &dir.join("kvpush-cache"),
        );
        let (k, k_links, k_window) = measure(vec![kv_cmd], &[&kv.shaper, &origin_link]);
        let cache = dir.join("skopeo-cache");
        std::fs::create_dir_all(&cache).unwrap();
        let sk_cmds = source
            .skopeo
            .iter()
            .map(|(name, src)| {
                let dest = format!("docker://{}/kubevirt/{name}:cold", sk.shaper.addr());
                skopeo_copy_cmd(src, &dest, &cache)
            })
            .collect();
        let (s, s_links, _) = measure(sk_cmds, &[&sk.shaper, &origin_link]);
        for (tool, m, links) in [("kvpush", k, &k_links), ("skopeo", s, &s_links)] {
            let up = links[0];
            let util = up.bytes_up as f64 / m.wall / cap;
            println!(
                "| {} | {tool} | {:.2} s | {:.1} | {} | {} | {:.1} MiB | {:.0}% |",
                source.name,
                m.wall,
                m.wall / rtt,
                up.requests,
                up.connections,
                mib(up.bytes_up),
                util * 100.0
            );
            rows.push(json!({
                "source": source.name, "tool": tool, "wall_s": m.wall, "cpu_s": m.cpu,
                "round_trips": m.wall / rtt, "requests": up.requests,
                "connections": up.connections, "bytes_up": up.bytes_up,
                "link_utilisation": util, "origin_bytes_down": links[1].bytes_down,
                "origin_stream_s": if tool == "kvpush" { k_window } else { 0.0 },
            }));
        }
        if source.name == "7-rules-img" {
            let fetched = k_links[1].bytes_down;
            origin_line = Some(format!(
                "7-rules-img: kvpush fetched {:.1} MiB from the origin through its shaper (distinct base layers {:.1} MiB) in {:.2} s from its first byte to its last: the copy streamed at {:.0}% of the link ({:.0}% over the whole {:.2} s push); destination link {:.0}% used over the push; skopeo fetched {:.1} MiB (complete layouts)",
                mib(fetched),
                mib(rules.base_bytes()),
                k_window,
                fetched as f64 / k_window / cap * 100.0,
                fetched as f64 / k.wall / cap * 100.0,
                k.wall,
                k_links[0].bytes_up as f64 / k.wall / cap * 100.0,
                mib(s_links[1].bytes_down)
            ));
        }
        // Registries of this source stop here; their storage goes with them.
        drop((kv.shaper, kv.registry, sk.shaper, sk.registry));
    }
    if let Some(line) = origin_line {
        println!();
        println!("{line}");
    }
    let results = json!({
        "profile": "wan-sources", "rtt_s": rtt, "bits_per_sec": shape.bits_per_sec,
        "scale_bytes": scale, "distinct_base_layer_bytes": rules.base_bytes(), "runs": rows,
    });
    let out = Path::new(&out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(out, serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    println!("\nfigures written to {}", out.display());
}
