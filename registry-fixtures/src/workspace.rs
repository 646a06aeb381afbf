//! Generator of a KubeVirt-shaped Bazel workspace whose `bazel-bin` holds the
//! image tarballs rules_docker v0.16 would have built, and optionally the
//! push-target parts `bazel build //:push-*` leaves ([`push_parts`]).

mod push_parts;
pub mod rules_img;
pub mod rules_oci;

pub use push_parts::go_manifest_json;

use crate::content::{ContentGen, ContentKind};
use crate::docker::{self, ManifestEntry, RunConfig};
use crate::prng::{derive_seed, Rng};
use crate::tarfmt::{self, EntryKind, EntryMeta, HashWriter};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The 15 entries of KubeVirt's `container_bundle(name = "build-other-images")`:
/// (image NAME, Bazel label).
pub const OTHER_IMAGES: [(&str, &str); 15] = [
    (
        "example-hook-sidecar",
        "//cmd/example-hook-sidecar:example-hook-sidecar-image",
    ),
    (
        "example-cloudinit-hook-sidecar",
        "//cmd/example-cloudinit-hook-sidecar:example-cloudinit-hook-sidecar-image",
    ),
    (
        "subresource-access-test",
        "//cmd/subresource-access-test:subresource-access-test-image",
    ),
    (
        "alpine-container-disk-demo",
        "//containerimages:alpine-container-disk-image",
    ),
    (
        "cirros-container-disk-demo",
        "//containerimages:cirros-container-disk-image",
    ),
    (
        "cirros-custom-container-disk-demo",
        "//containerimages:cirros-custom-container-disk-image",
    ),
    (
        "fedora-cloud-container-disk-demo",
        "//containerimages:fedora-cloud-container-disk-image",
    ),
    (
        "microlivecd-container-disk-demo",
        "//containerimages:microlivecd-container-disk-image",
    ),
    (
        "virtio-container-disk",
        "//containerimages:virtio-container-disk-image",
    ),
    (
        "fedora-sriov-lane-container-disk",
        "//containerimages:fedora-sriov-lane-container-disk-image",
    ),
    (
        "disks-images-provider",
        "//images/disks-images-provider:disks-images-provider-image",
    ),
    (
        "cdi-http-import-server",
        "//images/cdi-http-import-server:cdi-http-import-server-image",
    ),
    ("nfs-server", "//images/nfs-server:nfs-server-image"),
    ("vm-killer", "//images/vm-killer:vm-killer-image"),
    ("winrmcli", "//images/winrmcli:winrmcli-image"),
];

/// The six `container_push` targets: (target suffix, image NAME, label).
/// Target `push-<suffix>`; the seventh target, `push-other-images`, pushes the bundle.
pub const SINGLE_IMAGES: [(&str, &str, &str); 6] = [
    (
        "virt-operator",
        "virt-operator",
        "//cmd/virt-operator:virt-operator-image",
    ),
    ("virt-api", "virt-api", "//cmd/virt-api:virt-api-image"),
    (
        "virt-controller",
        "virt-controller",
        "//cmd/virt-controller:virt-controller-image",
    ),
    (
        "virt-handler",
        "virt-handler",
        "//cmd/virt-handler:virt-handler-image",
    ),
    (
        "virt-launcher",
        "virt-launcher",
        "//cmd/virt-launcher:virt-launcher-image",
    ),
    ("conformance", "conformance", "//tests:conformance_image"),
];

/// Alias added to the bundle when `merged_bundle` is set and no
/// `bundle_aliases` are given: (alias NAME, NAME it duplicates).
pub const DEFAULT_ALIAS: (&str, &str) = ("vm-killer-alias", "vm-killer");

/// What to generate.
#[derive(Clone, Debug)]
pub struct WorkspaceSpec {
    /// Target total size of all tarballs in bytes (approximate; gzip layers
    /// are sized from an estimated ratio).
    pub scale_bytes: u64,
    /// Seed of all content and of the bundle's manifest order.
    pub seed: u64,
    /// `experimental_tarball_format = "compressed"`: go-containerregistry's
    /// `pkg/v1/tarball` layout (`<gz-hex>.tar.gz` layers, config `sha256:<hex>`,
    /// no `repositories`) instead of the legacy `<id>/layer.tar` layout.
    pub compressed_layers: bool,
    /// docker-save style bundle: bundle keys resolving to the same image share
    /// one manifest entry with several RepoTags (and its layers are written
    /// once). When set and `bundle_aliases` is empty, [`DEFAULT_ALIAS`] is added
    /// so the case actually occurs.
    pub merged_bundle: bool,
    /// Write a layer shared by several images of one tarball only once (what
    /// `docker save` does). Off by default because go-containerregistry's
    /// legacy writer (rules_docker) writes it again for every image: the
    /// tarball then holds several entries with the same name and bytes.
    /// The compressed format always de-duplicates (by digest).
    pub dedup_layers: bool,
    /// `$(container_prefix)` at build time, as it appears in bundle RepoTags.
    pub build_container_prefix: String,
    /// `$(image_prefix)` at build time.
    pub build_image_prefix: String,
    /// `$(container_tag)` at build time.
    pub build_container_tag: String,
    /// Extra bundle entries (image NAMEs) beyond the 15 of [`OTHER_IMAGES`],
    /// labelled `//images/NAME:NAME-image` (to test a stale image table).
    pub extra_bundle_images: Vec<String>,
    /// Extra bundle keys `(alias NAME, existing NAME)` mapped to the label of
    /// an existing entry, i.e. the very same image under a second name.
    pub bundle_aliases: Vec<(String, String)>,
    /// Layer keys (an image's own layer is keyed by the image NAME, e.g.
    /// `virt-handler`) whose content is generated differently: a rebuild
    /// that changed one layer, for re-push benchmarks and tests.
    pub changed_layers: Vec<String>,
    /// `architecture` written in every image config (GOARCH name); the
    /// layers do not depend on it, so two workspaces that differ only here
    /// share every layer, as arch-independent layers (disk images) do.
    pub arch: String,
    /// Also write rules_docker's push-target parts (scripts, runfiles trees,
    /// `.tar.gz` layers compressed with GNU `gzip -n`, digest files and
    /// `push-<target>.digest`), as `bazel build //:push-*` does. With
    /// `compressed_layers`, the tarballs hold these same gzip blobs.
    pub push_parts: bool,
    /// Generate every layer but the disk images from `arch` too, as a
    /// real per-architecture build does (binaries and libraries differ,
    /// disk images do not): workspaces of several arches then share only
    /// their disk layers. Off by default: `arch` changes the configs only.
    pub arch_layers: bool,
}

impl Default for WorkspaceSpec {
    fn default() -> Self {
        WorkspaceSpec {
            scale_bytes: 8 << 20,
            seed: 1,
            compressed_layers: false,
            merged_bundle: false,
            dedup_layers: false,
            build_container_prefix: "index.docker.io/kubevirt".into(),
            build_image_prefix: String::new(),
            build_container_tag: "latest".into(),
            extra_bundle_images: Vec::new(),
            bundle_aliases: Vec::new(),
            changed_layers: Vec::new(),
            arch: "amd64".into(),
            push_parts: false,
            arch_layers: false,
        }
    }
}

/// One image as a push tool sees it: one per push target or bundle key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedImage {
    /// Image NAME, e.g. `virt-api`, `cirros-container-disk-demo`.
    pub name: String,
    /// Push target suffix: `virt-api`, `conformance`, or `other-images`.
    pub target: String,
    /// Bazel label of the image.
    pub label: String,
    /// Its RepoTag in the tarball (`bazel/cmd/virt-api:virt-api-image`, or the
    /// expanded bundle key `index.docker.io/kubevirt/NAME:latest`).
    pub repo_tag: String,
    /// Absolute path of the tarball holding it.
    pub tarball: PathBuf,
    /// `sha256:<hex>` of the raw config.
    pub config_digest: String,
    /// Config entry name in the tarball (`<hex>.json` or `sha256:<hex>`).
    pub config_file: String,
    /// `rootfs.diff_ids` (`sha256:<hex>` of each uncompressed layer tar).
    pub diff_ids: Vec<String>,
    /// Uncompressed size of each layer tar.
    pub layer_sizes: Vec<u64>,
    /// Layer entry names as listed in manifest.json.
    pub layer_files: Vec<String>,
    /// `sha256:<hex>` of each stored gzip layer (compressed format only, else empty).
    pub gzip_digests: Vec<String>,
    /// With `push_parts`: the script kvpush reads for this image
    /// (`bazel-bin/push-virt-api`, `bazel-bin/push-other-images.3.push`).
    pub push_script: Option<PathBuf>,
    /// With `push_parts`: the `.tar.gz` of each layer, in config order (the
    /// files in bazel-out or the external repository, not runfiles links).
    pub parts_layers: Vec<PathBuf>,
    /// With `push_parts`: the manifest digest rules_docker computes for this
    /// image (what `push-<target>.digest` holds for single targets).
    pub rules_docker_digest: Option<String>,
}

impl GeneratedImage {
    /// skopeo's name for this image inside its tarball (a bundle entry by
    /// its RepoTag).
    pub fn skopeo_source(&self) -> String {
        if self.target == "other-images" {
            format!(
                "docker-archive:{}:{}",
                self.tarball.display(),
                self.repo_tag
            )
        } else {
            format!("docker-archive:{}", self.tarball.display())
        }
    }
}

/// Result of [`generate_workspace`].
#[derive(Clone, Debug)]
pub struct Workspace {
    /// Workspace root (contains `WORKSPACE`, `BUILD.bazel`, `bazel-bin`).
    pub root: PathBuf,
    /// Single images first (in [`SINGLE_IMAGES`] order), then every bundle key
    /// in BUILD order (the 15, extras, aliases).
    pub images: Vec<GeneratedImage>,
    /// Every tarball written (absolute, under `bazel-out/k8-fastbuild/bin`).
    pub tarballs: Vec<PathBuf>,
    /// Sum of the tarball sizes.
    pub total_bytes: u64,
}

impl Workspace {
    /// The image called `name` (first match).
    pub fn image(&self, name: &str) -> Option<&GeneratedImage> {
        self.images.iter().find(|i| i.name == name)
    }

    /// `bazel-bin/build-other-images.tar`.
    pub fn bundle_tarball(&self) -> PathBuf {
        bin_dir(&self.root).join("build-other-images.tar")
    }
}

/// `root/bazel-out/k8-fastbuild/bin`.
pub fn bin_dir(root: &Path) -> PathBuf {
    root.join("bazel-out").join("k8-fastbuild").join("bin")
}

// ---------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Template {
    Base,
    GoBinary(String),
    Libs(String),
    Disk(String),
}

impl Template {
    fn gzip_ratio(&self) -> f64 {
        match self {
            Template::Base => 0.5,
            Template::GoBinary(_) => 0.58,
            Template::Libs(_) => 0.5,
            Template::Disk(_) => ContentKind::Disk.gzip_ratio(),
        }
    }
}

#[derive(Clone, Debug)]
struct LayerDef {
    key: String,
    weight: f64,
    template: Template,
    created_by: String,
}

#[derive(Clone, Debug)]
struct ImageDef {
    name: String,
    label: String,
    target: String,
    layers: Vec<usize>,
    run: RunConfig,
}

struct EntryPlan {
    image: usize,
    /// (tag, index into GeneratedImage list)
    keys: Vec<(String, usize)>,
}

struct TarballPlan {
    path: PathBuf,
    entries: Vec<EntryPlan>,
}

#[derive(Default)]
struct Defs {
    layers: Vec<LayerDef>,
    by_key: HashMap<String, usize>,
    images: Vec<ImageDef>,
}

impl Defs {
    fn layer(&mut self, key: &str, weight: f64, template: Template, created_by: &str) -> usize {
        if let Some(&i) = self.by_key.get(key) {
            return i;
        }
        self.layers.push(LayerDef {
            key: key.into(),
            weight,
            template,
            created_by: created_by.into(),
        });
        self.by_key.insert(key.into(), self.layers.len() - 1);
        self.layers.len() - 1
    }

    fn image(
        &mut self,
        name: &str,
        label: &str,
        target: &str,
        layers: Vec<usize>,
        entrypoint: &[&str],
    ) -> usize {
        let mut run = RunConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..RunConfig::default()
        };
        if !entrypoint.is_empty() {
            run.user = "1001".into();
        }
        self.images.push(ImageDef {
            name: name.into(),
            label: label.into(),
            target: target.into(),
            layers,
            run,
        });
        self.images.len() - 1
    }
}

fn build_cmd(label: &str) -> String {
    format!("bazel build {label}")
}

fn plan_images(spec: &WorkspaceSpec) -> (Defs, Vec<usize>, Vec<(String, String, usize)>) {
    let mut d = Defs::default();
    let base = d.layer(
        "base",
        2.0,
        Template::Base,
        "bazel build @fedora//image:base",
    );
    let virt_base = d.layer(
        "virt-base",
        6.0,
        Template::Libs("virt-deps".into()),
        "bazel build //:virt-base",
    );
    let sidecar_base = d.layer(
        "sidecar-base",
        2.0,
        Template::Libs("sidecar-deps".into()),
        "bazel build //:sidecar-base",
    );
    let tools_base = d.layer(
        "tools-base",
        6.0,
        Template::Libs("fedora-tools".into()),
        "bazel build //:tools-base",
    );

    // Single images.
    let mut singles = Vec::new();
    for (target, name, label) in SINGLE_IMAGES {
        let bin = format!("./usr/bin/{name}");
        let layers = match name {
            "virt-launcher" => {
                let libs = d.layer(
                    "virt-launcher-libvirt",
                    30.0,
                    Template::Libs("libvirt-qemu".into()),
                    "bazel build //:libvirt-base",
                );
                let own = d.layer(name, 4.0, Template::GoBinary(bin), &build_cmd(label));
                vec![base, virt_base, libs, own]
            }
            "conformance" => vec![
                base,
                d.layer(name, 10.0, Template::GoBinary(bin), &build_cmd(label)),
            ],
            "virt-handler" => vec![
                base,
                virt_base,
                d.layer(name, 8.0, Template::GoBinary(bin), &build_cmd(label)),
            ],
            _ => vec![
                base,
                virt_base,
                d.layer(name, 5.0, Template::GoBinary(bin), &build_cmd(label)),
            ],
        };
        let ep = format!("/usr/bin/{name}");
        singles.push(d.image(name, label, target, layers, &[&ep]));
    }

    // Bundle images: (NAME, label, image def index), in BUILD order.
    let mut bundle: Vec<(String, String, usize)> = Vec::new();
    for (name, label) in OTHER_IMAGES {
        let (layers, ep): (Vec<usize>, Option<String>) = if let Some(disk) = disk_file(name) {
            let w = match name {
                "alpine-container-disk-demo" => 8.0,
                "cirros-container-disk-demo" | "cirros-custom-container-disk-demo" => 3.0,
                "fedora-cloud-container-disk-demo" => 40.0,
                "microlivecd-container-disk-demo" => 6.0,
                "virtio-container-disk" => 20.0,
                _ => 35.0,
            };
            (
                vec![
                    base,
                    d.layer(name, w, Template::Disk(disk.into()), &build_cmd(label)),
                ],
                None,
            )
        } else if label.starts_with("//cmd/") {
            let bin = format!("./{name}");
            (
                vec![
                    base,
                    sidecar_base,
                    d.layer(
                        name,
                        2.0,
                        Template::GoBinary(bin.clone()),
                        &build_cmd(label),
                    ),
                ],
                Some(bin[1..].to_string()),
            )
        } else {
            let w = if matches!(name, "nfs-server" | "winrmcli") {
                2.0
            } else {
                1.0
            };
            let bin = format!("./usr/bin/{name}");
            (
                vec![
                    base,
                    tools_base,
                    d.layer(name, w, Template::GoBinary(bin), &build_cmd(label)),
                ],
                Some(format!("/usr/bin/{name}")),
            )
        };
        let eps: Vec<&str> = ep.iter().map(|s| s.as_str()).collect();
        let idx = d.image(name, label, "other-images", layers, &eps);
        bundle.push((name.into(), label.into(), idx));
    }
    for name in &spec.extra_bundle_images {
        let label = format!("//images/{name}:{name}-image");
        let bin = format!("./usr/bin/{name}");
        let layers = vec![
            base,
            tools_base,
            d.layer(
                name,
                1.0,
                Template::GoBinary(bin.clone()),
                &build_cmd(&label),
            ),
        ];
        let idx = d.image(name, &label, "other-images", layers, &[&bin[1..]]);
        bundle.push((name.clone(), label, idx));
    }
    let mut aliases = spec.bundle_aliases.clone();
    if spec.merged_bundle && aliases.is_empty() {
        aliases.push((DEFAULT_ALIAS.0.into(), DEFAULT_ALIAS.1.into()));
    }
    for (alias, of) in aliases {
        let (_, label, idx) = bundle
            .iter()
            .find(|(n, _, _)| *n == of)
            .cloned()
            .unwrap_or_else(|| panic!("bundle alias {alias}: no bundle image called {of}"));
        bundle.push((alias, label, idx));
    }
    (d, singles, bundle)
}

fn disk_file(name: &str) -> Option<&'static str> {
    Some(match name {
        "alpine-container-disk-demo" => "./disk/alpine.iso",
        "cirros-container-disk-demo" => "./disk/cirros.img",
        "cirros-custom-container-disk-demo" => "./custom-disk/cirros.img",
        "fedora-cloud-container-disk-demo" => "./disk/fedora.qcow2",
        "microlivecd-container-disk-demo" => "./disk/microlivecd.iso",
        "virtio-container-disk" => "./disk/virtio-win.iso",
        "fedora-sriov-lane-container-disk" => "./disk/fedora-sriov-lane.qcow2",
        _ => return None,
    })
}

#[derive(Clone, Debug)]
struct FileDef {
    path: String,
    size: u64,
    mode: u32,
    uid: u32,
    kind: ContentKind,
}

fn split_sizes(total: u64, fractions: &[f64]) -> Vec<u64> {
    let sum: f64 = fractions.iter().sum();
    let mut sizes: Vec<u64> = fractions
        .iter()
        .map(|f| (total as f64 * f / sum) as u64)
        .collect();
    let assigned: u64 = sizes.iter().sum();
    let biggest = (0..sizes.len()).max_by_key(|&i| sizes[i]).unwrap_or(0);
    if let Some(s) = sizes.get_mut(biggest) {
        *s += total.saturating_sub(assigned);
    }
    sizes
}

fn plan_files(template: &Template, size: u64, seed: u64) -> Vec<FileDef> {
    let f = |path: &str, size: u64, mode: u32, kind: ContentKind| FileDef {
        path: path.into(),
        size,
        mode,
        uid: 0,
        kind,
    };
    match template {
        Template::Base => {
            use ContentKind::*;
            let files: [(&str, u32, ContentKind, f64); 11] = [
                ("./etc/passwd", 0o644, Text, 0.002),
                ("./etc/group", 0o644, Text, 0.001),
                ("./etc/os-release", 0o644, Text, 0.001),
                ("./etc/pki/tls/certs/ca-bundle.crt", 0o644, Text, 0.12),
                ("./usr/share/doc/glibc/NEWS", 0o644, Text, 0.08),
                ("./usr/lib64/libc.so.6", 0o755, Binary, 0.3),
                ("./usr/lib64/libm.so.6", 0o755, Binary, 0.1),
                ("./usr/lib64/ld-linux-x86-64.so.2", 0o755, Binary, 0.03),
                ("./usr/bin/bash", 0o755, Binary, 0.15),
                ("./usr/bin/coreutils", 0o755, Binary, 0.2),
                ("./usr/share/zoneinfo/UTC", 0o644, Binary, 0.007),
            ];
            let sizes = split_sizes(size, &files.map(|x| x.3));
            files
                .iter()
                .zip(sizes)
                .map(|(x, s)| f(x.0, s, x.1, x.2))
                .collect()
        }
        Template::GoBinary(path) => {
            let name = path.rsplit('/').next().unwrap_or("app");
            let sizes = split_sizes(size, &[0.92, 0.05, 0.03]);
            vec![
                f(path, sizes[0], 0o755, ContentKind::Binary),
                f(
                    &format!("./usr/share/licenses/{name}/LICENSE"),
                    sizes[1],
                    0o644,
                    ContentKind::Text,
                ),
                f(
                    &format!("./etc/{name}/README.md"),
                    sizes[2],
                    0o644,
                    ContentKind::Text,
                ),
            ]
        }
        Template::Libs(pkg) => {
            let n = (size / (192 << 10)).clamp(3, 48) as usize;
            let mut rng = Rng::derived(seed, "libs-split");
            let fractions: Vec<f64> = (0..n).map(|_| 1.0 + rng.below(8) as f64).collect();
            let sizes = split_sizes(size, &fractions);
            sizes
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    if i % 3 == 2 {
                        f(
                            &format!("./usr/share/{pkg}/doc-{i}.txt"),
                            s,
                            0o644,
                            ContentKind::Text,
                        )
                    } else {
                        f(
                            &format!("./usr/lib64/{pkg}/lib{pkg}-{i}.so.1"),
                            s,
                            0o755,
                            ContentKind::Binary,
                        )
                    }
                })
                .collect()
        }
        Template::Disk(path) => vec![FileDef {
            path: path.clone(),
            size,
            mode: 0o440,
            uid: 107,
            kind: ContentKind::Disk,
        }],
    }
}

/// Write a layer tar (directories first, then files; mtime 0) to `w`.
fn write_layer_tar<W: Write>(files: &[FileDef], seed: u64, w: &mut W) -> io::Result<()> {
    tarfmt::write_parent_dirs(w, files.iter().map(|fd| fd.path.as_str()))?;
    let mut buf = vec![0u8; 256 << 10];
    for fd in files {
        let meta = EntryMeta {
            path: &fd.path,
            size: fd.size,
            mode: fd.mode,
            uid: fd.uid,
            kind: EntryKind::File,
        };
        w.write_all(&tarfmt::header(&meta)?)?;
        let mut gen = ContentGen::new(fd.kind, derive_seed(seed, &fd.path));
        let mut left = fd.size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            gen.fill(&mut buf[..n]);
            w.write_all(&buf[..n])?;
            left -= n as u64;
        }
        w.write_all(&[0u8; 512][..tarfmt::padding(fd.size)])?;
    }
    tarfmt::write_trailer(w)
}

#[derive(Clone, Debug)]
struct BuiltLayer {
    diff_hex: String,
    size: u64,
    blob: PathBuf,
    blob_hex: String,
    blob_size: u64,
    /// With `push_parts`: the plain tar and its `gzip -n` compression.
    parts: Option<PartsLayer>,
}

/// A layer as rules_docker keeps it for its pusher: `layer.tar` and
/// `layer.tar.gz`, compressed by another gzip than kvpush's.
#[derive(Clone, Debug)]
struct PartsLayer {
    tar: PathBuf,
    gz: PathBuf,
    gz_hex: String,
    gz_size: u64,
}

/// `gzip -n` (GNU gzip: its own deflate, OS byte 3, no name, mtime 0), as
/// Bazel's gzip toolchain runs it; deliberately not flate2, so that a pusher
/// recompressing layers cannot produce these bytes.
fn gnu_gzip(src: &Path, dst: &Path) -> io::Result<(String, u64)> {
    let status = std::process::Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .stdin(File::open(src)?)
        .stdout(File::create(dst)?)
        .status()
        .map_err(|e| io::Error::other(format!("cannot run gzip (install it): {e}")))?;
    if !status.success() {
        return Err(io::Error::other(format!("gzip -n failed: {status}")));
    }
    let mut w = HashWriter::new(io::sink());
    io::copy(&mut File::open(dst)?, &mut w)?;
    let (_, hex, size) = w.finish();
    Ok((hex, size))
}

fn build_layer(
    def: &LayerDef,
    size: u64,
    spec: &WorkspaceSpec,
    cache: &Path,
    idx: usize,
) -> io::Result<BuiltLayer> {
    let (compressed, push_parts) = (spec.compressed_layers, spec.push_parts);
    let variant = if spec.changed_layers.contains(&def.key) {
        "#changed"
    } else {
        ""
    };
    // The default arch keeps the seeds (and digests) of before.
    let arch = match def.template {
        Template::Disk(_) => String::new(),
        _ if spec.arch_layers && spec.arch != "amd64" => format!("@{}", spec.arch),
        _ => String::new(),
    };
    let lseed = derive_seed(spec.seed, &format!("layer:{}{variant}{arch}", def.key));
    let files = plan_files(&def.template, size, lseed);
    if push_parts {
        let tar = cache.join(format!("{idx}.tar"));
        let mut w = HashWriter::new(BufWriter::with_capacity(1 << 20, File::create(&tar)?));
        write_layer_tar(&files, lseed, &mut w)?;
        let (mut file, diff_hex, size) = w.finish();
        file.flush()?;
        drop(file);
        let gz = cache.join(format!("{idx}.tar.gz"));
        let (gz_hex, gz_size) = gnu_gzip(&tar, &gz)?;
        let parts = PartsLayer {
            tar: tar.clone(),
            gz: gz.clone(),
            gz_hex: gz_hex.clone(),
            gz_size,
        };
        // The compressed tarball format stores rules_docker's own gzip blobs.
        let (blob, blob_hex, blob_size) = if compressed {
            (gz, gz_hex, gz_size)
        } else {
            (tar, diff_hex.clone(), size)
        };
        return Ok(BuiltLayer {
            diff_hex,
            size,
            blob,
            blob_hex,
            blob_size,
            parts: Some(parts),
        });
    }
    if compressed {
        let blob = cache.join(format!("{idx}.tar.gz"));
        let file = BufWriter::with_capacity(1 << 20, File::create(&blob)?);
        let gz = flate2::write::GzEncoder::new(HashWriter::new(file), flate2::Compression::fast());
        let mut w = HashWriter::new(gz);
        write_layer_tar(&files, lseed, &mut w)?;
        let (gz, diff_hex, size) = w.finish();
        let (mut file, blob_hex, blob_size) = gz.finish()?.finish();
        file.flush()?;
        Ok(BuiltLayer {
            diff_hex,
            size,
            blob,
            blob_hex,
            blob_size,
            parts: None,
        })
    } else {
        let blob = cache.join(format!("{idx}.tar"));
        let mut w = HashWriter::new(BufWriter::with_capacity(1 << 20, File::create(&blob)?));
        write_layer_tar(&files, lseed, &mut w)?;
        let (mut file, diff_hex, size) = w.finish();
        file.flush()?;
        Ok(BuiltLayer {
            blob_hex: diff_hex.clone(),
            blob_size: size,
            diff_hex,
            size,
            blob,
            parts: None,
        })
    }
}

/// Run `f(i)` for `i in 0..n` on a few threads, collecting results in order.
fn parallel<T: Send, F: Fn(usize) -> io::Result<T> + Sync>(n: usize, f: F) -> io::Result<Vec<T>> {
    let workers = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<io::Result<T>>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let r = f(i);
                let failed = r.is_err();
                results.lock().expect("poisoned")[i] = Some(r);
                if failed {
                    next.store(n, Ordering::SeqCst);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(n);
    for r in results.into_inner().expect("poisoned") {
        match r {
            Some(r) => out.push(r?),
            None => {
                return Err(io::Error::other(
                    "parallel job aborted after an earlier error",
                ))
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Tarball assembly
// ---------------------------------------------------------------------------

struct ImageBuilt {
    config: Vec<u8>,
    config_hex: String,
    config_value: serde_json::Value,
}

struct Assembler<'a> {
    defs: &'a Defs,
    layers: &'a [BuiltLayer],
    images: &'a [ImageBuilt],
    dedup: bool,
    compressed: bool,
}

/// What an entry of a written tarball ended up as.
struct WrittenEntry {
    config_file: String,
    layer_files: Vec<String>,
}

impl Assembler<'_> {
    fn write(&self, plan: &TarballPlan) -> io::Result<Vec<WrittenEntry>> {
        if plan.path.exists() {
            // Bazel outputs are read-only; make room for the new one.
            fs::remove_file(&plan.path)?;
        }
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&plan.path)?);
        let mut written = HashSet::new();
        let mut manifest = Vec::new();
        let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut out = Vec::new();
        for entry in &plan.entries {
            let def = &self.defs.images[entry.image];
            let img = &self.images[entry.image];
            let config_file = if self.compressed {
                format!("sha256:{}", img.config_hex)
            } else {
                format!("{}.json", img.config_hex)
            };
            tarfmt::write_entry(
                &mut w,
                &EntryMeta::file(&config_file, img.config.len() as u64),
                &img.config,
            )?;
            let mut layer_files = Vec::new();
            let mut parent = String::new();
            for (i, &li) in def.layers.iter().enumerate() {
                let built = &self.layers[li];
                if self.compressed {
                    let name = format!("{}.tar.gz", built.blob_hex);
                    if written.insert(name.clone()) {
                        copy_blob(&mut w, &name, built)?;
                    }
                    layer_files.push(name);
                    continue;
                }
                let top = i + 1 == def.layers.len();
                let id =
                    docker::v1_layer_id(&built.blob_hex, &parent, top.then_some(&img.config[..]));
                let name = format!("{id}/layer.tar");
                if !self.dedup || written.insert(id.clone()) {
                    copy_blob(&mut w, &name, built)?;
                    let created_by = &self.defs.layers[li].created_by;
                    let json = docker::v1_layer_json(
                        &id,
                        &parent,
                        created_by,
                        top.then_some(&img.config_value),
                    );
                    tarfmt::write_entry(
                        &mut w,
                        &EntryMeta::file(&format!("{id}/json"), json.len() as u64),
                        &json,
                    )?;
                    tarfmt::write_entry(
                        &mut w,
                        &EntryMeta::file(&format!("{id}/VERSION"), 3),
                        b"1.0",
                    )?;
                }
                layer_files.push(name);
                parent = id;
            }
            let tags: Vec<String> = entry.keys.iter().map(|(t, _)| t.clone()).collect();
            for t in &tags {
                let (base, tag) = docker::split_tag(t);
                repos
                    .entry(base.into())
                    .or_default()
                    .insert(tag.into(), parent.clone());
            }
            manifest.push(ManifestEntry {
                config: config_file.clone(),
                repo_tags: tags,
                layers: layer_files.clone(),
            });
            out.push(WrittenEntry {
                config_file,
                layer_files,
            });
        }
        if self.compressed {
            // pkg/v1/tarball sorts manifest entries by their joined RepoTags.
            manifest.sort_by_key(|m| m.repo_tags.join(","));
        }
        let m = serde_json::to_vec(&manifest)?;
        tarfmt::write_entry(
            &mut w,
            &EntryMeta::file("manifest.json", m.len() as u64),
            &m,
        )?;
        if !self.compressed {
            let r = serde_json::to_vec(&repos)?;
            tarfmt::write_entry(&mut w, &EntryMeta::file("repositories", r.len() as u64), &r)?;
        }
        tarfmt::write_trailer(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        let mut perm = fs::metadata(&plan.path)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
        fs::set_permissions(&plan.path, perm)?;
        Ok(out)
    }
}

fn copy_blob<W: Write>(w: &mut W, name: &str, built: &BuiltLayer) -> io::Result<()> {
    let mut f = File::open(&built.blob)?;
    tarfmt::write_entry_from(w, &EntryMeta::file(name, built.blob_size), &mut f)
}

fn build_bazel(spec: &WorkspaceSpec, bundle: &[(String, String, usize)]) -> String {
    let mut s = String::new();
    s.push_str(
        "# Generated by kvpush-fixtures: the push targets of KubeVirt's root BUILD.bazel\n\
         # (rules_docker v0.16 era).\n\
         load(\"@io_bazel_rules_docker//container:container.bzl\", \"container_bundle\", \"container_push\")\n\
         load(\"@io_bazel_rules_docker//contrib:push-all.bzl\", \"docker_push\")\n\n\
         container_bundle(\n    name = \"build-other-images\",\n",
    );
    if spec.compressed_layers {
        s.push_str("    experimental_tarball_format = \"compressed\",\n");
    }
    s.push_str("    images = {\n");
    for (name, label, _) in bundle {
        s.push_str(&format!(
            "        \"$(container_prefix)/$(image_prefix){name}:$(container_tag)\": \"{label}\",\n"
        ));
    }
    s.push_str("    },\n)\n\ndocker_push(\n    name = \"push-other-images\",\n    bundle = \":build-other-images\",\n)\n");
    for (target, name, label) in SINGLE_IMAGES {
        s.push_str(&format!(
            "\ncontainer_push(\n    name = \"push-{target}\",\n    format = \"Docker\",\n"
        ));
        s.push_str(&format!(
            "    image = \"{label}\",\n    registry = \"$(container_prefix)\",\n"
        ));
        s.push_str(&format!(
            "    repository = \"$(image_prefix){name}\",\n    tag = \"$(container_tag)\",\n"
        ));
        if target == "conformance" {
            s.push_str("    testonly = True,\n");
        }
        s.push_str(")\n");
    }
    s
}

fn single_tarball(bin: &Path, label: &str) -> (PathBuf, String) {
    // //cmd/virt-api:virt-api-image -> bin/cmd/virt-api/virt-api-image.tar,
    // RepoTag bazel/cmd/virt-api:virt-api-image
    let l = label.trim_start_matches("//");
    let (pkg, target) = l.split_once(':').expect("label has a target");
    (
        bin.join(pkg).join(format!("{target}.tar")),
        format!("bazel/{pkg}:{target}"),
    )
}

/// Generate the workspace under `root` (created if needed; tarballs already
/// there are replaced). Deterministic for a given spec.
pub fn generate_workspace(root: &Path, spec: &WorkspaceSpec) -> io::Result<Workspace> {
    fs::create_dir_all(root)?;
    let root = fs::canonicalize(root)?;
    let bin = bin_dir(&root);
    fs::create_dir_all(&bin)?;
    fs::write(root.join("WORKSPACE"), "workspace(name = \"kubevirt\")\n")?;
    let link = root.join("bazel-bin");
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link)?;
    }
    std::os::unix::fs::symlink("bazel-out/k8-fastbuild/bin", &link)?;

    let (defs, singles, bundle) = plan_images(spec);
    fs::write(root.join("BUILD.bazel"), build_bazel(spec, &bundle))?;

    // GeneratedImage slots and tarball plans.
    let mut gen_meta: Vec<(usize, String, String, PathBuf)> = Vec::new(); // (image def, name, repo_tag, tarball)
    let mut plans = Vec::new();
    for &i in &singles {
        let (path, tag) = single_tarball(&bin, &defs.images[i].label);
        gen_meta.push((i, defs.images[i].name.clone(), tag.clone(), path.clone()));
        plans.push(TarballPlan {
            path,
            entries: vec![EntryPlan {
                image: i,
                keys: vec![(tag, gen_meta.len() - 1)],
            }],
        });
    }
    let bundle_path = bin.join("build-other-images.tar");
    let mut entries: Vec<EntryPlan> = Vec::new();
    for (name, _label, idx) in &bundle {
        let tag = format!(
            "{}/{}{}:{}",
            spec.build_container_prefix, spec.build_image_prefix, name, spec.build_container_tag
        );
        gen_meta.push((*idx, name.clone(), tag.clone(), bundle_path.clone()));
        let slot = gen_meta.len() - 1;
        match entries
            .iter_mut()
            .find(|e| spec.merged_bundle && e.image == *idx)
        {
            Some(e) => e.keys.push((tag, slot)),
            None => entries.push(EntryPlan {
                image: *idx,
                keys: vec![(tag, slot)],
            }),
        }
    }
    Rng::derived(spec.seed, "bundle-order").shuffle(&mut entries);
    plans.push(TarballPlan {
        path: bundle_path,
        entries,
    });

    // Size the layers so the tarballs add up to about scale_bytes.
    let dedup = spec.dedup_layers || spec.compressed_layers;
    let mut total_weight = 0.0;
    for plan in &plans {
        let mut seen = HashSet::new();
        for e in &plan.entries {
            for &l in &defs.images[e.image].layers {
                if dedup && !seen.insert(l) {
                    continue;
                }
                let def = &defs.layers[l];
                let ratio = if spec.compressed_layers {
                    def.template.gzip_ratio()
                } else {
                    1.0
                };
                total_weight += def.weight * ratio;
            }
        }
    }
    let unit = spec.scale_bytes as f64 / total_weight;
    let sizes: Vec<u64> = defs
        .layers
        .iter()
        .map(|l| ((l.weight * unit) as u64).max(4096))
        .collect();

    let cache = tempfile::Builder::new()
        .prefix(".kvpush-fixtures-")
        .tempdir_in(&root)?;
    let built = parallel(defs.layers.len(), |i| {
        build_layer(&defs.layers[i], sizes[i], spec, cache.path(), i)
    })?;

    let images: Vec<ImageBuilt> = defs
        .images
        .iter()
        .map(|def| {
            let diff_ids: Vec<String> = def
                .layers
                .iter()
                .map(|&l| format!("sha256:{}", built[l].diff_hex))
                .collect();
            let created_by: Vec<String> = def
                .layers
                .iter()
                .map(|&l| defs.layers[l].created_by.clone())
                .collect();
            let config = docker::image_config_for(&spec.arch, &diff_ids, &created_by, &def.run);
            ImageBuilt {
                config_hex: docker::sha256_hex(&config),
                config_value: serde_json::from_slice(&config).expect("own config parses"),
                config,
            }
        })
        .collect();

    let asm = Assembler {
        defs: &defs,
        layers: &built,
        images: &images,
        dedup,
        compressed: spec.compressed_layers,
    };
    for plan in &plans {
        if let Some(parent) = plan.path.parent() {
            fs::create_dir_all(parent)?;
        }
    }
    // Biggest (the bundle) first.
    let order: Vec<usize> = (0..plans.len()).rev().collect();
    let written = parallel(order.len(), |k| asm.write(&plans[order[k]]))?;
    let parts = if spec.push_parts {
        Some(push_parts::write(&push_parts::Inputs {
            root: &root,
            bin: &bin,
            spec,
            defs: &defs,
            built: &built,
            images: &images,
            singles: &singles,
            bundle: &bundle,
        })?)
    } else {
        None
    };
    cache.close()?;

    let mut generated: Vec<Option<GeneratedImage>> = vec![None; gen_meta.len()];
    for (k, w) in written.iter().enumerate() {
        let plan = &plans[order[k]];
        for (entry, we) in plan.entries.iter().zip(w) {
            let def = &defs.images[entry.image];
            for (tag, slot) in &entry.keys {
                let (_, name, _, tarball) = &gen_meta[*slot];
                let push_script = parts.as_ref().map(|p| {
                    if *slot < singles.len() {
                        p.single_scripts[&def.target].clone()
                    } else {
                        p.bundle_scripts[*slot - singles.len()].clone()
                    }
                });
                generated[*slot] = Some(GeneratedImage {
                    name: name.clone(),
                    target: def.target.clone(),
                    label: def.label.clone(),
                    repo_tag: tag.clone(),
                    tarball: tarball.clone(),
                    config_digest: format!("sha256:{}", images[entry.image].config_hex),
                    config_file: we.config_file.clone(),
                    diff_ids: def
                        .layers
                        .iter()
                        .map(|&l| format!("sha256:{}", built[l].diff_hex))
                        .collect(),
                    layer_sizes: def.layers.iter().map(|&l| built[l].size).collect(),
                    layer_files: we.layer_files.clone(),
                    gzip_digests: if spec.compressed_layers {
                        def.layers
                            .iter()
                            .map(|&l| format!("sha256:{}", built[l].blob_hex))
                            .collect()
                    } else {
                        Vec::new()
                    },
                    push_script,
                    parts_layers: parts
                        .as_ref()
                        .map(|p| def.layers.iter().map(|&l| p.layer_gz[l].clone()).collect())
                        .unwrap_or_default(),
                    rules_docker_digest: parts
                        .as_ref()
                        .map(|p| p.image_digest[entry.image].clone()),
                });
            }
        }
    }
    let tarballs: Vec<PathBuf> = plans.iter().map(|p| p.path.clone()).collect();
    let mut total_bytes = 0;
    for t in &tarballs {
        total_bytes += fs::metadata(t)?.len();
    }
    Ok(Workspace {
        root,
        images: generated
            .into_iter()
            .map(|g| g.expect("every image written"))
            .collect(),
        tarballs,
        total_bytes,
    })
}

#[cfg(test)]
mod arch_tests {
    use super::*;

    fn tree(dir: &Path, arch: &str) -> Workspace {
        let spec = WorkspaceSpec {
            scale_bytes: 2 << 20,
            arch: arch.into(),
            arch_layers: true,
            ..WorkspaceSpec::default()
        };
        generate_workspace(&dir.join(arch), &spec).unwrap()
    }

    /// With `arch_layers`, two architectures share their disk layers only;
    /// amd64 keeps the layers of a workspace generated without it.
    #[test]
    fn arch_layers_share_only_disk_images() {
        let dir = tempfile::tempdir().unwrap();
        let (amd, arm) = (tree(dir.path(), "amd64"), tree(dir.path(), "arm64"));
        let plain = generate_workspace(
            &dir.path().join("plain"),
            &WorkspaceSpec {
                scale_bytes: 2 << 20,
                ..WorkspaceSpec::default()
            },
        )
        .unwrap();
        for ((a, b), p) in amd.images.iter().zip(&arm.images).zip(&plain.images) {
            assert_eq!(a.diff_ids, p.diff_ids, "{}", a.name);
            let top = |i: &GeneratedImage| i.diff_ids.last().cloned();
            let disk = disk_file(&a.name).is_some();
            assert_eq!(top(a) == top(b), disk, "{}: own layer shared?", a.name);
            assert_ne!(a.diff_ids[0], b.diff_ids[0], "{}: base shared", a.name);
        }
    }
}
