//! `make bench`: kvpush against skopeo, side by side, on the same generated
//! KubeVirt-shaped images, in one run.
//!
//! Scenarios, each run by kvpush then by skopeo against fresh registries of
//! their own: a **cold** push (empty registry, empty caches), a **warm**
//! re-push (new tag, everything present, caches warm), and a **one-image
//! change** (one layer of virt-handler rebuilt). skopeo pushes one image after
//! another (`skopeo copy docker-archive:... docker://...`), as the sequential
//! `bazel run //:push-*` did, with a blob-info cache private to the bench.
//! A fourth, **rules_img**, pushes a generated rules_img workspace whose
//! shallow base layers live in an origin registry (see [`rules_img`]), with
//! the bytes each tool fetched from that origin; a fifth and sixth push
//! rules_docker push-target parts and rules_oci layouts cold (see
//! [`sources`]).
//! Then: compression throughput against pigz at the same level on the same
//! layers, and peak memory of kvpush on a single multi-GiB layer.
//!
//! Usage: `cargo bench --bench push -- [--scale 1GiB] [--big-layer 2GiB] [--rounds 3]
//! [--registry-storage DIR] [--out FILE]`; `--profile wan` runs the far-link
//! profile of `push/wan.rs` (then the other sources through the shaper,
//! `push/sources.rs`) instead, `--profile scale` KubeVirt's full scale
//! (`push/scale.rs`); `--help` lists the profiles and their options.
//!
//! The registries keep their blobs on tmpfs (`/dev/shm`) when it has room,
//! else under the temp dir; `--registry-storage` chooses. A pushed-to
//! registry's disk is another machine's in real use: on this VM's disk its
//! writeback stalled both tools' runs at random (iowait up to 5%, the same
//! kvpush cold push taking 3.1-3.9 s against 2.6-2.8 s on tmpfs).
//!
//! The three scenarios run `--rounds` times, each round against fresh
//! registries and empty caches; the table shows, per scenario, the round
//! with the median ratio, and every round's ratio is printed and kept in
//! the JSON (the machine's shared cores make single runs vary by ±10%).
//! Figures go to stdout as a table and to FILE (default
//! `target/bench/results.json`) as JSON.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kvpush::source::tar_index::TarIndex;
use kvpush_fixtures::{
    generate_workspace, parse_size, Registry, RegistryKind, Workspace, WorkspaceSpec,
};
use serde_json::json;

// The scenarios with a set-up of their own, beside this file.
#[path = "push/rules_img.rs"]
mod rules_img;
#[path = "push/scale.rs"]
mod scale;
#[path = "push/sources.rs"]
mod sources;
#[path = "push/wan.rs"]
mod wan;

/// kvpush's default level, used for the pigz comparison too.
const LEVEL: u32 = kvpush::blob::DEFAULT_COMPRESSION_LEVEL;

/// One measured command (or sequence of commands).
#[derive(Clone, Copy, Debug, Default)]
struct Measure {
    wall: f64,
    cpu: f64,
    rss_kib: u64,
    /// Blob bytes the registry stored during the run.
    stored: u64,
    /// CPU seconds the registry spent during the run (it shares the cores).
    registry_cpu: f64,
    /// Blob bytes an origin registry served during the run (rules_img).
    fetched: u64,
}

impl Measure {
    fn add(&mut self, other: Measure) {
        self.wall += other.wall;
        self.cpu += other.cpu;
        self.rss_kib = self.rss_kib.max(other.rss_kib);
        self.registry_cpu += other.registry_cpu;
        self.fetched += other.fetched;
    }

    fn json(&self) -> serde_json::Value {
        json!({"wall_s": self.wall, "cpu_s": self.cpu, "peak_rss_kib": self.rss_kib, "bytes_stored": self.stored, "registry_cpu_s": self.registry_cpu, "bytes_fetched_from_origin": self.fetched})
    }
}

/// Run `cmd` under GNU time; panics with its output when it fails.
fn timed(cmd: &mut Command) -> Measure {
    let report = tempfile::NamedTempFile::new().unwrap();
    let program = cmd.get_program().to_owned();
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(report.path())
        .arg(program)
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let out = wrapped
        .output()
        .expect("/usr/bin/time runs (apt package `time`)");
    if !out.status.success() {
        panic!(
            "{:?} failed:\n{}{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(report.path()).unwrap();
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    Measure {
        wall: f[0],
        cpu: f[1] + f[2],
        rss_kib: f[3] as u64,
        ..Measure::default()
    }
}

/// CPU seconds (user + system) a registry process has used so far.
fn registry_cpu(registry: &Registry) -> f64 {
    let pid =
        std::fs::read_to_string(registry.state_dir().join("registry.pid")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // The fields after the command name (which may hold spaces), the
    // first of them being field 3: utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (field(14), field(15)) {
        (Some(u), Some(s)) if hz > 0.0 => (u + s) / hz,
        _ => 0.0,
    }
}

/// Bytes of blob data a registry holds.
fn stored_bytes(registry: &Registry) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk(&p)
                } else if p.file_name().is_some_and(|n| n == "data") {
                    e.metadata().map_or(0, |m| m.len())
                } else {
                    0
                }
            })
            .sum()
    }
    walk(&registry.state_dir().join("data/docker/registry/v2/blobs"))
}

struct Bench {
    kvpush: PathBuf,
    work: PathBuf,
    kv_registry: Registry,
    skopeo_registry: Registry,
}

fn report_round(round: usize, name: &str, k: &Measure, s: &Measure) {
    println!(
        "round {}: {name}: kvpush {:.2}s, skopeo {:.2}s, ratio {:.2}",
        round + 1,
        k.wall,
        s.wall,
        k.wall / s.wall
    );
}

/// Write every dirty page to disk, so that no measured run pays for the
/// writeback of what came before it (the generated workspaces, the other
/// tool's registry storage): without it the first run of each scenario,
/// kvpush's, ran 0.4 s slower while 2 GiB of fresh tarballs were flushed.
fn settle() {
    let status = Command::new("sync").status().expect("sync runs");
    assert!(status.success(), "sync failed");
}

impl Bench {
    /// Two empty registries (storage under `storage`), the caches in `work`.
    fn fresh(work: PathBuf, storage: &Path) -> Bench {
        std::fs::create_dir_all(&work).unwrap();
        Bench {
            kvpush: PathBuf::from(env!("CARGO_BIN_EXE_kvpush")),
            work,
            kv_registry: Registry::start_in(RegistryKind::Plain, storage),
            skopeo_registry: Registry::start_in(RegistryKind::Plain, storage),
        }
    }

    /// `kvpush all` of the workspace at `root`.
    fn kvpush(&self, root: &Path, tag: &str) -> Measure {
        settle();
        let before = stored_bytes(&self.kv_registry);
        let cpu_before = registry_cpu(&self.kv_registry);
        let mut cmd = kvpush_all(
            root,
            self.kv_registry.addr(),
            tag,
            &self.work.join("kvpush-cache"),
        );
        let mut m = timed(&mut cmd);
        m.stored = stored_bytes(&self.kv_registry) - before;
        m.registry_cpu = registry_cpu(&self.kv_registry) - cpu_before;
        m
    }

    /// skopeo, one image after another (`(name, source)` each), with its
    /// blob-info cache in the bench's own directory ([`skopeo_copy_cmd`]).
    fn skopeo(&self, images: &[(String, String)], tag: &str) -> Measure {
        settle();
        let before = stored_bytes(&self.skopeo_registry);
        let cpu_before = registry_cpu(&self.skopeo_registry);
        let cache = self.work.join("skopeo-cache");
        std::fs::create_dir_all(&cache).unwrap();
        let mut total = Measure::default();
        for (name, source) in images {
            let dest = format!(
                "docker://{}/kubevirt/{name}:{tag}",
                self.skopeo_registry.addr()
            );
            total.add(timed(&mut skopeo_copy_cmd(source, &dest, &cache)));
        }
        total.stored = stored_bytes(&self.skopeo_registry) - before;
        total.registry_cpu = registry_cpu(&self.skopeo_registry) - cpu_before;
        total
    }
}

/// `kvpush all` of the workspace at `root` to `registry/kubevirt`.
fn kvpush_all(root: &Path, registry: &str, tag: &str, cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvpush"));
    cmd.arg("all")
        .arg("--workspace")
        .arg(root)
        .arg("--registry")
        .arg(format!("{registry}/kubevirt"))
        .arg("--tag")
        .arg(tag)
        .arg("--cache-dir")
        .arg(cache);
    cmd
}

/// `skopeo copy source dest` with its blob-info cache in `cache` (a
/// private mount namespace for root, HOME otherwise), so "cold" really is
/// cold and the host's cache untouched.
fn skopeo_copy_cmd(source: &str, dest: &str, cache: &Path) -> Command {
    let copy =
        format!("skopeo --insecure-policy copy -q --dest-tls-verify=false '{source}' '{dest}'");
    if is_root() {
        let script = format!(
            "mkdir -p /var/lib/containers/cache && mount --bind '{}' /var/lib/containers/cache && exec {copy}",
            cache.display()
        );
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &format!("exec {copy}")]).env("HOME", cache);
        c
    }
}

/// `(name, skopeo source)` of each image of a workspace.
fn skopeo_sources(ws: &Workspace) -> Vec<(String, String)> {
    ws.images
        .iter()
        .map(|i| (i.name.clone(), i.skopeo_source()))
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The distinct uncompressed layers of a workspace, concatenated into one
/// file (for pigz) and as a list of files (for kvpush's compressor).
fn distinct_layers(ws: &Workspace, dir: &Path) -> (PathBuf, Vec<PathBuf>, u64) {
    let all = dir.join("layers.bin");
    let mut out = File::create(&all).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    let mut total = 0;
    for image in &ws.images {
        let index = TarIndex::build(&image.tarball).unwrap();
        for (name, diff_id) in image.layer_files.iter().zip(&image.diff_ids) {
            if !seen.insert(diff_id.clone()) {
                continue;
            }
            let mut bytes = Vec::new();
            index
                .get(name)
                .unwrap()
                .open()
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            let path = dir.join(format!("layer-{}", files.len()));
            std::fs::write(&path, &bytes).unwrap();
            out.write_all(&bytes).unwrap();
            total += bytes.len() as u64;
            files.push(path);
        }
    }
    (all, files, total)
}

/// A docker-save tarball holding one image whose single layer is a file
/// of `size` bytes, half text-like, half random (written streaming).
fn big_layer_workspace(root: &Path, size: u64) -> io::Result<()> {
    let bin = root.join("bazel-out/k8-fastbuild/bin");
    std::fs::create_dir_all(bin.join("cmd/virt-handler"))?;
    std::os::unix::fs::symlink("bazel-out/k8-fastbuild/bin", root.join("bazel-bin"))?;
    // The layer tar: one big file.
    let layer_path = root.join("layer.tar");
    {
        let mut b = tar::Builder::new(io::BufWriter::new(File::create(&layer_path)?));
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(
            &mut h,
            "disk.img",
            MixedReader {
                left: size,
                x: 0x9e37_79b9_7f4a_7c15,
            },
        )?;
        b.finish()?;
    }
    let diff_id = {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        io::copy(&mut File::open(&layer_path)?, &mut hasher)?;
        format!("sha256:{}", hex::encode(hasher.finalize()))
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config_name = format!(
        "{}.json",
        kvpush::blob::sha256_digest(config.as_bytes()).trim_start_matches("sha256:")
    );
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["bazel/cmd/virt-handler:virt-handler-image"],"Layers":["l/layer.tar"]}}]"#
    );
    let mut b = tar::Builder::new(File::create(
        bin.join("cmd/virt-handler/virt-handler-image.tar"),
    )?);
    let mut add = |name: &str, len: u64, r: &mut dyn Read| {
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o444);
        h.set_cksum();
        b.append_data(&mut h, name, r)
    };
    add(&config_name, config.len() as u64, &mut config.as_bytes())?;
    add(
        "l/layer.tar",
        std::fs::metadata(&layer_path)?.len(),
        &mut File::open(&layer_path)?,
    )?;
    add(
        "manifest.json",
        manifest.len() as u64,
        &mut manifest.as_bytes(),
    )?;
    drop(b);
    std::fs::remove_file(layer_path)
}

/// 1 MiB of random bytes, then 1 MiB of repetitive text, and so on.
struct MixedReader {
    left: u64,
    x: u64,
}

impl Read for MixedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        let start = self.left;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let pos = start - i as u64;
            if (pos >> 20) % 2 == 0 {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 7;
                self.x ^= self.x << 17;
                *b = self.x as u8;
            } else {
                *b = b"kubevirt virt-handler log line 0123456789\n"[(pos % 42) as usize];
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Where the registries keep their state: `--registry-storage`, else
/// `/dev/shm` when it is a writable directory with `needed` bytes free,
/// else the temp dir.
fn registry_storage(args: &[String], needed: u64) -> PathBuf {
    if let Some(dir) = arg(args, "--registry-storage") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if free_bytes(shm).is_some_and(|free| free >= needed) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Bytes an unprivileged writer may still use in `dir`'s filesystem, if
/// `dir` is a writable directory.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is NUL-terminated; `stat` is written by statvfs only.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0
        || unsafe { libc::access(path.as_ptr(), libc::W_OK) } != 0
    {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The bench's workspace of `scale` bytes of tarballs under `dir`, and a
/// copy with virt-handler's own layer rebuilt (the one-image change).
fn workspaces(dir: &Path, scale: u64) -> (Workspace, Workspace) {
    let spec = WorkspaceSpec {
        scale_bytes: scale,
        ..WorkspaceSpec::default()
    };
    let ws = generate_workspace(&dir.join("ws"), &spec).unwrap();
    let changed = WorkspaceSpec {
        changed_layers: vec!["virt-handler".into()],
        ..spec
    };
    let ws_changed = generate_workspace(&dir.join("ws-changed"), &changed).unwrap();
    println!(
        "generated {} images, {}",
        ws.images.len(),
        human(ws.total_bytes)
    );
    (ws, ws_changed)
}

const HELP: &str = "\
cargo bench --bench push -- [--profile NAME] [options]   (make bench BENCH_ARGS='...')

Profiles:
  (default)  loopback, kvpush against skopeo: cold, warm, one-image change of
             tarballs, rules_img (bases in an origin registry), rules_docker
             parts and rules_oci layouts; then compression against pigz and
             one big layer's memory.
             --scale 1GiB --big-layer 2GiB --rounds 3 --out target/bench/results.json
  wan        the same images through a shaping relay (round trip, shared cap):
             cold / warm / one-image change of tarballs, then the cold push of
             parts, rules_oci layouts and rules_img (origin shaped too).
             --rtt 40ms --rate 200Mbit --scale 128MiB --rounds 1
             --out target/bench/wan.json --sources-out target/bench/wan-sources.json
  scale      KubeVirt's full scale on loopback: 34 images x 3 architectures
             pushed with --arch-bin, cold and warm, at 9, 17 and 34 images
             per architecture; planning time, peak RSS, unique bytes, skopeo
             at the smallest size. --scale 48MiB (tarballs per architecture)
             --out target/bench/scale.json

Every profile: --registry-storage DIR (default /dev/shm when it has room).";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return;
    }
    match arg(&args, "--profile").as_deref() {
        None | Some("default") => {}
        Some("wan") => {
            // The shaping relay listens on loopback in place of a far
            // registry: kvpush's `--compression-level auto` is told to
            // judge it by its connect time, as it would a far one.
            std::env::set_var("KVPUSH_TEST_LOOPBACK_IS_FAR", "1");
            wan::main(&args);
            return sources::wan(&args);
        }
        Some("scale") => return scale::main(&args),
        Some(other) => panic!("no bench profile {other:?}: default, wan or scale (--help)"),
    }
    let scale = arg(&args, "--scale")
        .and_then(|s| parse_size(&s))
        .unwrap_or(1 << 30);
    let big = arg(&args, "--big-layer")
        .and_then(|s| parse_size(&s))
        .unwrap_or(2 << 30);
    let out =
        PathBuf::from(arg(&args, "--out").unwrap_or_else(|| "target/bench/results.json".into()));
    let rounds: usize = arg(&args, "--rounds")
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let work = tempfile::Builder::new()
        .prefix("kvpush-bench-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Per round, two registries each store about the compressed workspace
    // plus the changed layer; the big layer goes to one of the last round's.
    let storage = registry_storage(&args, 3 * scale + big);
    println!(
        "kvpush bench: {} of tarballs, {cores} cores, work dir {}, registry storage under {}",
        human(scale),
        work.path().display(),
        storage.display()
    );

    let (ws, ws_changed) = workspaces(work.path(), scale);
    let rules = rules_img::RulesImgBench::prepare(&work.path().join("rules-img"), &storage, scale);
    println!(
        "generated a rules_img workspace of {} images, {} of distinct base layers in the origin registry",
        rules.images(),
        human(rules.base_bytes())
    );
    let others = sources::prepare(&work.path().join("sources"), scale);
    let sources = skopeo_sources(&ws);
    let sources_changed = skopeo_sources(&ws_changed);

    // Every round of every scenario: (kvpush, skopeo).
    let mut rounds_of: BTreeMap<&str, Vec<(Measure, Measure)>> = BTreeMap::new();
    let mut bench = None;
    for round in 0..rounds {
        // Fresh registries and caches: each round's cold push is cold.
        let round_dir = work.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&round_dir).unwrap();
        let b = bench.insert(Bench::fresh(round_dir.clone(), &storage));
        for (name, workspace, images, tag) in [
            ("1-cold", &ws, &sources, "cold"),
            ("2-warm", &ws, &sources, "warm"),
            (
                "3-one-image-change",
                &ws_changed,
                &sources_changed,
                "change",
            ),
        ] {
            let k = b.kvpush(&workspace.root, tag);
            let s = b.skopeo(images, tag);
            report_round(round, name, &k, &s);
            rounds_of.entry(name).or_default().push((k, s));
        }
        // Fresh destinations: the bases must come from the origin again.
        let fresh = Bench::fresh(round_dir.join("rules-img"), &storage);
        let (k, s) = rules.round(&fresh);
        report_round(round, "4-rules-img", &k, &s);
        rounds_of.entry("4-rules-img").or_default().push((k, s));
        for source in &others {
            let (k, s) = source.cold(&round_dir, &storage);
            report_round(round, source.name, &k, &s);
            rounds_of.entry(source.name).or_default().push((k, s));
        }
    }
    let bench = bench.expect("at least one round");
    // Per scenario: the round with the median ratio, and every ratio.
    let scenarios: Vec<(&str, Measure, Measure, Vec<f64>)> = rounds_of
        .into_iter()
        .map(|(name, mut runs)| {
            runs.sort_by(|a, b| (a.0.wall / a.1.wall).total_cmp(&(b.0.wall / b.1.wall)));
            let ratios = runs.iter().map(|(k, s)| k.wall / s.wall).collect();
            let (k, s) = runs[runs.len() / 2];
            (name, k, s, ratios)
        })
        .collect();

    // Compression throughput on the same distinct layers, same level.
    let (all_layers, layer_files, layer_bytes) = distinct_layers(&ws, work.path());
    let t = Instant::now();
    let mut ours_size = 0;
    for f in &layer_files {
        ours_size += kvpush::compress::compress(
            io::BufReader::new(File::open(f).unwrap()),
            io::sink(),
            LEVEL,
        )
        .unwrap()
        .output_bytes;
    }
    let ours_secs = t.elapsed().as_secs_f64();
    let pigz_out = work.path().join("layers.gz");
    let pigz = timed(Command::new("sh").args([
        "-c",
        &format!(
            "pigz -{LEVEL} -p {cores} -c '{}' > '{}'",
            all_layers.display(),
            pigz_out.display()
        ),
    ]));
    let pigz_size = std::fs::metadata(&pigz_out).unwrap().len();

    // Memory on one multi-GiB layer.
    let big_ws = work.path().join("big");
    big_layer_workspace(&big_ws, big).unwrap();
    let mut cmd = Command::new(&bench.kvpush);
    cmd.arg("virt-handler")
        .arg("--workspace")
        .arg(&big_ws)
        .arg("--registry")
        .arg(format!("{}/big", bench.kv_registry.addr()))
        .arg("--no-cache");
    let big_run = timed(&mut cmd);

    // Report.
    println!();
    println!("per scenario, the round with the median ratio of {rounds}:");
    println!("| scenario | kvpush wall | skopeo wall | ratio | kvpush CPU | skopeo CPU | registry CPU (kvpush / skopeo) | kvpush peak RSS | skopeo peak RSS | kvpush stored | skopeo stored |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut json_scenarios = serde_json::Map::new();
    for (name, k, s, ratios) in &scenarios {
        let ratio = k.wall / s.wall;
        println!(
            "| {name} | {:.2} s | {:.2} s | {ratio:.2} | {:.2} s | {:.2} s | {:.2} / {:.2} s | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            k.wall,
            s.wall,
            k.cpu,
            s.cpu,
            k.registry_cpu,
            s.registry_cpu,
            k.rss_kib as f64 / 1024.0,
            s.rss_kib as f64 / 1024.0,
            mib(k.stored),
            mib(s.stored)
        );
        json_scenarios.insert(
            name.to_string(),
            json!({"kvpush": k.json(), "skopeo": s.json(), "wall_ratio": ratio, "round_ratios": ratios}),
        );
    }
    if let Some((_, k, s, _)) = scenarios.iter().find(|(n, ..)| *n == "4-rules-img") {
        println!();
        println!(
            "4-rules-img: fetched from the origin registry: kvpush {:.1} MiB (distinct base layers {:.1} MiB), skopeo {:.1} MiB (complete layouts); uploaded (stored): kvpush {:.1} MiB, skopeo {:.1} MiB",
            mib(k.fetched),
            mib(rules.base_bytes()),
            mib(s.fetched),
            mib(k.stored),
            mib(s.stored)
        );
    }
    println!();
    for (name, _, _, ratios) in &scenarios {
        let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{name}: ratio in each round, lowest first: {}",
            all.join(", ")
        );
    }
    let ours_rate = mib(layer_bytes) / ours_secs;
    let pigz_rate = mib(layer_bytes) / pigz.wall;
    println!();
    println!(
        "compression of {:.0} MiB of distinct layers at level {LEVEL}: kvpush {ours_rate:.0} MiB/s (both SHA-256 digests included) -> {:.1} MiB, pigz -p {cores} {pigz_rate:.0} MiB/s -> {:.1} MiB",
        mib(layer_bytes),
        mib(ours_size),
        mib(pigz_size)
    );
    println!(
        "one {} layer: kvpush {:.2}s wall, {:.2}s CPU, peak RSS {:.1} MiB",
        human(big),
        big_run.wall,
        big_run.cpu,
        big_run.rss_kib as f64 / 1024.0
    );

    let results = json!({
        "machine": {"cores": cores},
        "registry_storage": storage.display().to_string(),
        "scale_bytes": scale,
        "rounds": rounds,
        "images": ws.images.len(),
        "rules_img": {"images": rules.images(), "distinct_base_layer_bytes": rules.base_bytes()},
        "scenarios": json_scenarios,
        "compression": {
            "level": LEVEL, "input_bytes": layer_bytes,
            "kvpush": {"seconds": ours_secs, "output_bytes": ours_size, "mib_per_s": ours_rate},
            "pigz": {"seconds": pigz.wall, "output_bytes": pigz_size, "mib_per_s": pigz_rate, "threads": cores},
        },
        "big_layer": {"bytes": big, "kvpush": big_run.json()},
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    println!("\nfigures written to {}", out.display());
}

fn human(n: u64) -> String {
    format!("{:.1} MiB", mib(n))
}
