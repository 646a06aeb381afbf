//! `cargo bench --bench push -- --profile wan [--rtt 40ms] [--rate 200Mbit]
//! [--scale 128MiB] [--rounds 1] [--out FILE] [--only kvpush|skopeo] [--kvpush-log FILE]`: kvpush against skopeo over a
//! far link. Each tool pushes to its own real registry through its own
//! [`Shaper`] (a round trip per exchange, a handshake round trip per new
//! connection, one bandwidth cap per direction shared by all connections),
//! cold / warm / one-image change, alternately. Per scenario and tool it
//! prints the time, the round trips that time is worth (time / RTT), the
//! HTTP requests and connections the relay saw, the bytes sent upstream and
//! the link utilisation (bytes up / time / cap), whole run and from the
//! first request-body byte to the last (start-up and tail left out).
//! `--only kvpush` skips skopeo; `--kvpush-log FILE` appends kvpush's `-v`
//! request log there. It owns only this profile:
//! the loopback profile, its registries and its skopeo runs stay in
//! `push.rs`, whose helpers it borrows.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kvpush_fixtures::{
    parse_size, LinkShape, Registry, RegistryKind, Shaper, ShaperStats, Workspace,
};
use serde_json::json;

use super::{arg, human, mib, registry_storage, settle, skopeo_copy_cmd, timed, Measure};

/// `40ms`, `0.1s`, `40` (milliseconds).
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, secs) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1e-3)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .map(|n| Duration::from_secs_f64(n * secs))
}

/// `200Mbit`, `1Gbit`, `500kbit` (also `Mbps`, plain bits/s) into bits/s.
fn parse_rate(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.trim_end_matches("bit").trim_end_matches("bps");
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1e3),
        'm' => (&t[..t.len() - 1], 1e6),
        'g' => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    num.trim().parse::<f64>().ok().map(|n| (n * mult) as u64)
}

/// One tool's run of one scenario through its shaper.
#[derive(Clone, Copy)]
struct Run {
    m: Measure,
    link: ShaperStats,
}

struct Side {
    /// Kept running behind the shaper.
    _registry: Registry,
    shaper: Shaper,
}

impl Side {
    fn start(storage: &Path, shape: LinkShape) -> Side {
        let registry = Registry::start_in(RegistryKind::Plain, storage);
        let shaper = Shaper::start(registry.addr(), shape).expect("shaper starts");
        Side {
            _registry: registry,
            shaper,
        }
    }

    fn measure(&self, cmds: Vec<Command>) -> Run {
        settle();
        self.shaper.open_window();
        let before = self.shaper.stats();
        let mut m = Measure::default();
        for mut cmd in cmds {
            m.add(timed(&mut cmd));
        }
        // The registry's answers to the last request are out; let the
        // relay's counters see the connections close.
        std::thread::sleep(Duration::from_millis(50));
        Run {
            m,
            link: self.shaper.stats() - before,
        }
    }
}

/// kvpush pushing `ws`; with `log`, its `-v` request log (each request
/// with its time) is appended there.
fn kvpush_cmd(addr: &str, ws: &Workspace, tag: &str, cache: &Path, log: Option<&Path>) -> Command {
    let kvpush = env!("CARGO_BIN_EXE_kvpush");
    let mut cmd = match log {
        Some(log) => {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!("exec '{kvpush}' \"$@\" -v 2>>'{}'", log.display()),
                "sh",
            ]);
            c
        }
        None => Command::new(kvpush),
    };
    cmd.arg("all")
        .arg("--workspace")
        .arg(&ws.root)
        .arg("--registry")
        .arg(format!("{addr}/kubevirt"))
        .arg("--tag")
        .arg(tag)
        .arg("--cache-dir")
        .arg(cache);
    cmd
}

/// skopeo one image after another, blob-info cache private to the bench
/// (as the loopback profile runs it).
fn skopeo_cmds(addr: &str, ws: &Workspace, tag: &str, cache: &Path) -> Vec<Command> {
    std::fs::create_dir_all(cache).unwrap();
    ws.images
        .iter()
        .map(|image| {
            let dest = format!("docker://{addr}/kubevirt/{}:{tag}", image.name);
            skopeo_copy_cmd(&image.skopeo_source(), &dest, cache)
        })
        .collect()
}

/// The link (`--rtt`, default 40 ms; `--rate`, default 200 Mbit/s) and
/// the size of each workspace (`--scale`, default 128 MiB) of the wan
/// profile's tables.
pub(super) fn shape_and_scale(args: &[String]) -> (LinkShape, u64) {
    let shape = LinkShape {
        rtt: arg(args, "--rtt")
            .and_then(|s| parse_duration(&s))
            .unwrap_or(Duration::from_millis(40)),
        bits_per_sec: arg(args, "--rate")
            .and_then(|s| parse_rate(&s))
            .unwrap_or(200_000_000),
    };
    let scale = arg(args, "--scale")
        .and_then(|s| parse_size(&s))
        .unwrap_or(128 << 20);
    (shape, scale)
}

pub fn main(args: &[String]) {
    let (shape, scale) = shape_and_scale(args);
    let rounds: usize = arg(args, "--rounds")
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    let out = arg(args, "--out").unwrap_or_else(|| "target/bench/wan.json".into());
    // `--only kvpush` while tuning kvpush: skopeo's runs take a minute.
    let only = arg(args, "--only");
    let runs = |tool: &str| only.as_deref().is_none_or(|o| o == tool);
    let log = arg(args, "--kvpush-log").map(std::path::PathBuf::from);
    let work = tempfile::Builder::new()
        .prefix("kvpush-bench-wan-")
        .tempdir()
        .unwrap();
    let storage = registry_storage(args, 3 * scale);
    let rtt = shape.rtt.as_secs_f64();
    let cap = shape.bits_per_sec as f64 / 8.0;
    println!(
        "kvpush bench, wan profile: {} of tarballs, RTT {:.0} ms, cap {:.0} Mbit/s per direction, registry storage under {}",
        human(scale),
        rtt * 1e3,
        shape.bits_per_sec as f64 / 1e6,
        storage.display()
    );
    let (ws, ws_changed) = super::workspaces(work.path(), scale);

    println!();
    println!("| round | scenario | tool | time | round trips (time / RTT) | requests | connections | bytes up | link utilisation | while uploading |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for round in 1..=rounds {
        let dir = work.path().join(format!("round-{round}"));
        let kv = Side::start(&storage, shape);
        let sk = Side::start(&storage, shape);
        for (name, w, tag) in [
            ("1-cold", &ws, "cold"),
            ("2-warm", &ws, "warm"),
            ("3-one-image-change", &ws_changed, "change"),
        ] {
            let k = runs("kvpush").then(|| {
                kv.measure(vec![kvpush_cmd(
                    kv.shaper.addr(),
                    w,
                    tag,
                    &dir.join("kvpush-cache"),
                    log.as_deref(),
                )])
            });
            let s = runs("skopeo").then(|| {
                sk.measure(skopeo_cmds(
                    sk.shaper.addr(),
                    w,
                    tag,
                    &dir.join("skopeo-cache"),
                ))
            });
            for (tool, r) in [("kvpush", k), ("skopeo", s)] {
                let Some(r) = r else { continue };
                let util = r.link.bytes_up as f64 / r.m.wall / cap;
                // From the first request-body byte on the link to the last:
                // the run's start-up and tail left out.
                let window = r.link.body_window.as_secs_f64();
                let upload_util = if window > 0.0 {
                    r.link.body_bytes_up as f64 / window / cap
                } else {
                    0.0
                };
                println!(
                    "| {round} | {name} | {tool} | {:.2} s | {:.1} | {} | {} | {:.1} MiB | {:.0}% | {:.0}% of {:.2} s |",
                    r.m.wall,
                    r.m.wall / rtt,
                    r.link.requests,
                    r.link.connections,
                    mib(r.link.bytes_up),
                    util * 100.0,
                    upload_util * 100.0,
                    window
                );
                rows.push(json!({
                    "round": round, "scenario": name, "tool": tool,
                    "wall_s": r.m.wall, "cpu_s": r.m.cpu, "round_trips": r.m.wall / rtt,
                    "requests": r.link.requests, "connections": r.link.connections,
                    "bytes_up": r.link.bytes_up, "bytes_down": r.link.bytes_down,
                    "link_utilisation": util,
                    "upload_window_s": window, "body_bytes_up": r.link.body_bytes_up,
                    "link_utilisation_while_uploading": upload_util,
                }));
            }
        }
    }
    let results = json!({
        "profile": "wan",
        "rtt_s": rtt,
        "bits_per_sec": shape.bits_per_sec,
        "scale_bytes": scale,
        "images": ws.images.len(),
        "runs": rows,
    });
    let out = Path::new(&out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(out, serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    println!("\nfigures written to {}", out.display());
}
