//! A rules_img-shaped workspace (KubeVirt since July 2026): a root
//! BUILD.bazel of `image_push` targets and, in `bazel-bin`, what `bazel build
//! //:push-X` leaves for each: the deploy manifest `push-X.json`, a stub
//! `push-X.exe`, and its runfiles as a `push-X.exe.runfiles/` tree of
//! symlinks or only a `push-X.exe.runfiles_manifest`, in one of the three
//! layouts rules_img has used (chosen per target, deterministically).
//!
//! Own layers are uncompressed tars (`application/vnd.oci.image.layer.v1.tar`)
//! on disk; base layers are gzip and **shallow**: not on disk, named by the
//! deploy manifest as coming from `origin_registry`/`<base repository>`.
//! [`base_images`] gives the base images' blobs (and [`write_base_layouts`]
//! OCI layouts of them) to seed that origin registry. Digests are computed
//! here, independently of kvpush.

use crate::docker::{gzip, image_config_for, layer_tar, sha256_digest, RunConfig};
use crate::prng::{derive_seed, Rng};
use serde_json::{json, Value};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The runfiles layouts rules_img has written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RulesImgLayout {
    /// v0.3.0-v0.3.11 (KubeVirt's v0.3.9): `0/manifests/<m>/manifest.json`,
    /// `config.json`, `layer/<l>`, `metadata/<l>`; `missing_blobs` in the
    /// deploy manifest.
    Manifests,
    /// v0.3.12-v0.3.15: `0/sparse_oci_layout/`; `missing_blobs`.
    Sparse,
    /// v0.3.16+: the sparse layout, and each base layer lists its `sources`.
    SparseSources,
}

/// `(target NAME, testonly, base index, own layer count)`: a dozen
/// KubeVirt-like images; base 0 is a distroless-like base, base 1 a bigger
/// launcher base. `virt-template-apiserver` has no own layer.
pub const RULES_IMG_IMAGES: [(&str, bool, usize, usize); 12] = [
    ("virt-operator", false, 0, 1),
    ("virt-api", false, 0, 1),
    ("virt-controller", false, 0, 1),
    ("virt-handler", false, 0, 2),
    ("virt-launcher", false, 1, 2),
    ("virt-exportproxy", false, 0, 1),
    ("virt-exportserver", false, 0, 1),
    ("sidecar-shim", false, 0, 1),
    ("pr-helper", false, 1, 1),
    ("virt-template-apiserver", false, 0, 0),
    ("libguestfs-tools", false, 1, 1),
    ("conformance", true, 0, 1),
];

/// What to generate.
#[derive(Clone, Debug)]
pub struct RulesImgSpec {
    /// Approximate total size of all layers (own and base).
    pub scale_bytes: u64,
    pub seed: u64,
    /// `host:port` of the registry the base images come from.
    pub origin_registry: String,
    /// `architecture` of every config.
    pub arch: String,
}

impl Default for RulesImgSpec {
    fn default() -> Self {
        RulesImgSpec {
            scale_bytes: 4 << 20,
            seed: 1,
            origin_registry: "127.0.0.1:5001".into(),
            arch: "amd64".into(),
        }
    }
}

/// One blob with its descriptor facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.into(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// A base image as the origin registry must serve it.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// Repository on the origin registry (`distroless/base-debian12`).
    pub repository: String,
    pub tag: String,
    pub manifest: Blob,
    pub config: Blob,
    /// gzip layers.
    pub layers: Vec<Blob>,
    /// `rootfs.diff_ids` of each layer.
    pub diff_ids: Vec<String>,
}

/// One image of a push target.
#[derive(Clone, Debug)]
pub struct ImageParts {
    pub manifest: Blob,
    pub config: Blob,
    /// Every layer in manifest order, base layers first.
    pub layers: Vec<Blob>,
    /// How many leading layers are the base's (not on disk).
    pub base_layers: usize,
}

/// One generated push target.
#[derive(Clone, Debug)]
pub struct RulesImgTarget {
    /// `virt-api`; the Bazel target is `push-virt-api`.
    pub name: String,
    pub testonly: bool,
    pub layout: RulesImgLayout,
    /// Runfiles as `push-X.exe.runfiles_manifest` only (no tree).
    pub manifest_runfiles: bool,
    /// The image (one; an index target has several).
    pub images: Vec<ImageParts>,
    /// The index, for an index target.
    pub index: Option<Blob>,
    /// `root.digest` of the deploy manifest: what the registry must report.
    pub root_digest: String,
    /// The base image its base layers come from.
    pub base: usize,
    /// `bazel-bin/push-X.json`.
    pub deploy_manifest: PathBuf,
}

/// Result of [`generate_rules_img_workspace`].
#[derive(Clone, Debug)]
pub struct RulesImgWorkspace {
    pub root: PathBuf,
    pub targets: Vec<RulesImgTarget>,
    /// What the origin registry must hold (see [`write_base_layouts`]).
    pub bases: Vec<BaseImage>,
}

/// The base images of a workspace made with `spec`: distroless-like (two
/// layers) and launcher-like (three layers, the first shared with base 0).
pub fn base_images(spec: &RulesImgSpec) -> Vec<BaseImage> {
    let unit = (spec.scale_bytes / 24).max(1024) as usize;
    let layer = |label: &str, size: usize| {
        let mut data = vec![0u8; size];
        Rng::derived(spec.seed, label).fill(&mut data);
        layer_tar(&[(&format!("./base/{label}"), &data)])
    };
    let shared = layer("base-0", unit * 2);
    let specs = [
        (
            "distroless/base-debian12",
            vec![shared.clone(), layer("base-1", unit)],
        ),
        (
            "kubevirtci/launcher-base",
            vec![
                shared,
                layer("launcher-1", unit * 3),
                layer("launcher-2", unit),
            ],
        ),
    ];
    specs
        .into_iter()
        .map(|(repository, tars)| {
            let diff_ids: Vec<String> = tars.iter().map(|t| sha256_digest(t)).collect();
            let layers: Vec<Blob> = tars
                .iter()
                .map(|t| Blob::new(OCI_LAYER_GZIP, gzip(t)))
                .collect();
            let config = Blob::new(OCI_CONFIG, config(&spec.arch, &diff_ids));
            let manifest = Blob::new(OCI_MANIFEST, manifest_bytes(&config, &layers));
            BaseImage {
                repository: repository.into(),
                tag: "latest".into(),
                manifest,
                config,
                layers,
                diff_ids,
            }
        })
        .collect()
}

fn config(arch: &str, diff_ids: &[String]) -> Vec<u8> {
    let created_by: Vec<String> = (0..diff_ids.len()).map(|i| format!("layer {i}")).collect();
    image_config_for(arch, diff_ids, &created_by, &RunConfig::default())
}

fn manifest_bytes(config: &Blob, layers: &[Blob]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    }))
    .expect("json")
}

/// An image on `base` with `own` uncompressed layers of `size` bytes each.
pub fn image_on(
    spec: &RulesImgSpec,
    base: &BaseImage,
    name: &str,
    own: usize,
    size: usize,
) -> ImageParts {
    let mut layers = base.layers.clone();
    let mut diff_ids = base.diff_ids.clone();
    for i in 0..own {
        let mut data = vec![0u8; size];
        Rng::new(derive_seed(spec.seed, &format!("{name}-{i}"))).fill(&mut data);
        let tar = layer_tar(&[(&format!("./usr/bin/{name}-{i}"), &data)]);
        diff_ids.push(sha256_digest(&tar));
        layers.push(Blob::new(OCI_LAYER_TAR, tar));
    }
    // The config differs per image even without own layers (its own history).
    let mut cfg: Value = serde_json::from_slice(&config(&spec.arch, &diff_ids)).expect("json");
    cfg["config"] = json!({"Entrypoint": [format!("/usr/bin/{name}")]});
    let config = Blob::new(OCI_CONFIG, serde_json::to_vec(&cfg).expect("json"));
    ImageParts {
        manifest: Blob::new(OCI_MANIFEST, manifest_bytes(&config, &layers)),
        config,
        layers,
        base_layers: base.layers.len(),
    }
}

/// An index of `images` (one per architecture, in order).
pub fn index_of(images: &[ImageParts], arches: &[&str]) -> Blob {
    let manifests: Vec<Value> = images
        .iter()
        .zip(arches)
        .map(|(i, arch)| {
            let mut d = i.manifest.descriptor();
            d["platform"] = json!({"architecture": arch, "os": "linux"});
            d
        })
        .collect();
    Blob::new(
        OCI_INDEX,
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
        .expect("json"),
    )
}

/// Generate the workspace under `root`.
pub fn generate_rules_img_workspace(
    root: &Path,
    spec: &RulesImgSpec,
) -> io::Result<RulesImgWorkspace> {
    let bin = root.join("bazel-out/k8-fastbuild/bin");
    fs::create_dir_all(&bin)?;
    let link = root.join("bazel-bin");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("bazel-out/k8-fastbuild/bin", &link)?;
    }
    fs::write(
        root.join("MODULE.bazel"),
        "bazel_dep(name = \"rules_img\", version = \"0.3.9\")\n",
    )?;
    let bases = base_images(spec);
    let own_size = (spec.scale_bytes / 24).max(512) as usize;
    let mut build = String::from("load(\"@rules_img//img:push.bzl\", \"image_push\")\n");
    let mut targets = Vec::new();
    for (i, (name, testonly, base, own)) in RULES_IMG_IMAGES.iter().enumerate() {
        let layout = [
            RulesImgLayout::Manifests,
            RulesImgLayout::Sparse,
            RulesImgLayout::SparseSources,
        ][i % 3];
        let image = image_on(spec, &bases[*base], name, *own, own_size);
        let target = write_push_target(
            &bin,
            spec,
            &bases[*base],
            *base,
            name,
            layout,
            (i / 3) % 2 == 1,
            vec![image],
            None,
        )?;
        build.push_str(&format!(
            "\nimage_push(\n    name = \"push-{name}\",\n{}    image = \"//cmd/{name}:{name}-image\",\n    registry = \"quay.io\",\n    repository = \"kubevirt/{name}\",\n)\n",
            if *testonly { "    testonly = True,\n" } else { "" }
        ));
        targets.push(RulesImgTarget {
            testonly: *testonly,
            ..target
        });
    }
    fs::write(root.join("BUILD.bazel"), build)?;
    Ok(RulesImgWorkspace {
        root: root.to_path_buf(),
        targets,
        bases,
    })
}

/// Write one push target `push-<name>` of the root package into `bin`:
/// deploy manifest, stub launcher and runfiles. Several `images` make an
/// index target (`index` then holds the index, see [`index_of`]).
#[allow(clippy::too_many_arguments)]
pub fn write_push_target(
    bin: &Path,
    spec: &RulesImgSpec,
    base: &BaseImage,
    base_index: usize,
    name: &str,
    layout: RulesImgLayout,
    manifest_runfiles: bool,
    images: Vec<ImageParts>,
    index: Option<Blob>,
) -> io::Result<RulesImgTarget> {
    let push = format!("push-{name}");
    // The real files, where Bazel's actions wrote them.
    let real = bin.join("cmd").join(name);
    fs::create_dir_all(&real)?;
    // Runfiles path -> real file (or directory, for the sparse layout tree).
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let prefix = if manifest_runfiles {
        format!("++rules_img_private++/_main//{push}/0/")
    } else {
        format!("++rules_img_private++/_main/{push}/0/")
    };
    let sparse = layout != RulesImgLayout::Manifests;
    let sparse_dir = real.join(format!("{name}-image_sparse_oci_layout"));
    let blob_file = |blob: &Blob| -> io::Result<()> {
        let dir = sparse_dir.join("blobs/sha256");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(&blob.digest[7..]), &blob.bytes)
    };
    let root = index.as_ref().map_or(&images[0].manifest, |i| i);
    if sparse {
        blob_file(root)?;
        fs::write(
            sparse_dir.join("root.descriptor.json"),
            serde_json::to_vec(&root.descriptor()).expect("json"),
        )?;
        files.push((format!("{prefix}sparse_oci_layout"), sparse_dir.clone()));
    } else if let Some(index) = &index {
        let path = real.join(format!("{name}-image.index.json"));
        fs::write(&path, &index.bytes)?;
        files.push((format!("{prefix}index.json"), path));
    }
    let mut manifests = Vec::new();
    for (m, image) in images.iter().enumerate() {
        let dir = format!("{prefix}manifests/{m}/");
        if sparse {
            blob_file(&image.manifest)?;
            blob_file(&image.config)?;
        } else {
            for (file, blob) in [
                ("manifest.json", &image.manifest),
                ("config.json", &image.config),
            ] {
                let path = real.join(format!("{name}-image.{m}.{file}"));
                fs::write(&path, &blob.bytes)?;
                files.push((format!("{dir}{file}"), path));
            }
        }
        let mut layer_blobs = Vec::new();
        let mut missing = Vec::new();
        for (l, blob) in image.layers.iter().enumerate() {
            let mut desc = blob.descriptor();
            if sparse {
                fs::create_dir_all(sparse_dir.join("blobs/sha256"))?;
                fs::write(
                    sparse_dir.join(format!(
                        "blobs/sha256/{}.descriptor.json",
                        &blob.digest[7..]
                    )),
                    serde_json::to_vec(&desc).expect("json"),
                )?;
            }
            if l < image.base_layers {
                missing.push(json!(blob.digest[7..]));
                if layout == RulesImgLayout::SparseSources {
                    desc["sources"] =
                        json!([{"registry": spec.origin_registry, "repository": base.repository}]);
                }
            } else {
                let path = real.join(format!("{name}-layer-{m}-{l}.tar"));
                fs::write(&path, &blob.bytes)?;
                files.push((format!("{dir}layer/{l}"), path));
                if !sparse {
                    let meta = real.join(format!("{name}-layer-{m}-{l}.metadata.json"));
                    let mut m = desc.clone();
                    m["diff_id"] = json!(blob.digest);
                    fs::write(&meta, serde_json::to_vec(&m).expect("json"))?;
                    files.push((format!("{dir}metadata/{l}"), meta));
                }
            }
            layer_blobs.push(desc);
        }
        let mut info = json!({
            "descriptor": image.manifest.descriptor(),
            "config": image.config.descriptor(),
            "layer_blobs": layer_blobs,
        });
        if layout != RulesImgLayout::SparseSources && !missing.is_empty() {
            info["missing_blobs"] = json!(missing);
        }
        manifests.push(info);
    }
    let mut op = json!({
        "command": "push",
        "root_kind": if index.is_some() { "index" } else { "manifest" },
        "root": root.descriptor(),
        "manifests": manifests,
        "original_registries": [spec.origin_registry],
        "original_repository": base.repository,
        "original_tag": base.tag,
        "original_digest": base.manifest.digest,
        "registry": "quay.io",
        "repository": format!("kubevirt/{name}"),
    });
    // One target carries a cross-mount hint (naming the origin), as a
    // build for a registry that holds the base would.
    if name == "virt-template-apiserver" {
        op["cross_mount_hint"] =
            json!({"registry": spec.origin_registry, "repository": base.repository});
    }
    let deploy = json!({"operations": [op], "settings": {"push_strategy": "eager"}});
    let deploy_manifest = bin.join(format!("{push}.json"));
    fs::write(
        &deploy_manifest,
        serde_json::to_vec_pretty(&deploy).expect("json"),
    )?;
    fs::write(bin.join(format!("{push}.exe")), b"\x7fELF stub launcher\n")?;
    fs::write(bin.join(format!("{push}.configuration.json")), b"{}\n")?;
    files.push((format!("_main/{push}.exe"), bin.join(format!("{push}.exe"))));
    write_runfiles(bin, &push, manifest_runfiles, &files)?;
    Ok(RulesImgTarget {
        name: name.into(),
        testonly: false,
        layout,
        manifest_runfiles,
        root_digest: root.digest.clone(),
        images,
        index,
        base: base_index,
        deploy_manifest,
    })
}

fn write_runfiles(
    bin: &Path,
    push: &str,
    manifest_only: bool,
    files: &[(String, PathBuf)],
) -> io::Result<()> {
    let tree = bin.join(format!("{push}.exe.runfiles"));
    let manifest = bin.join(format!("{push}.exe.runfiles_manifest"));
    let _ = fs::remove_dir_all(&tree);
    let _ = fs::remove_file(&manifest);
    if manifest_only {
        let text: String = files
            .iter()
            .map(|(rel, real)| format!("{rel} {}\n", real.display()))
            .collect();
        return fs::write(manifest, text);
    }
    for (rel, real) in files {
        let link = tree.join(rel);
        fs::create_dir_all(link.parent().expect("a parent"))?;
        std::os::unix::fs::symlink(real, &link)?;
    }
    Ok(())
}

/// Write each base image as an OCI layout `dir/<n>/` (one image, tagged
/// with its tag), for `skopeo copy oci:<dir/n>:<tag> docker://<origin>/<repository>:<tag>`.
/// Returns `(layout dir, repository, tag)` per base.
pub fn write_base_layouts(
    dir: &Path,
    bases: &[BaseImage],
) -> io::Result<Vec<(PathBuf, String, String)>> {
    let mut out = Vec::new();
    for (n, base) in bases.iter().enumerate() {
        let layout = dir.join(n.to_string());
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        for blob in std::iter::once(&base.manifest)
            .chain([&base.config])
            .chain(&base.layers)
        {
            fs::write(blobs.join(&blob.digest[7..]), &blob.bytes)?;
        }
        fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let mut desc = base.manifest.descriptor();
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": base.tag});
        fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [desc]})).expect("json"),
        )?;
        out.push((layout, base.repository.clone(), base.tag.clone()));
    }
    Ok(out)
}

/// Add an index target `push-<name>` to a generated workspace (its
/// BUILD.bazel too): one image per architecture of `arches` on base 0, in
/// the v0.3.16+ layout. `manifest_tags[i]`, when not empty, become a
/// `registry_tag` operation tagging child `i` (rules_img's per-manifest
/// tags of an index), in the push's registry and repository.
pub fn add_index_target(
    ws: &RulesImgWorkspace,
    spec: &RulesImgSpec,
    name: &str,
    arches: &[&str],
    manifest_tags: &[&[&str]],
) -> io::Result<RulesImgTarget> {
    let images: Vec<ImageParts> = arches
        .iter()
        .map(|arch| {
            let spec = RulesImgSpec {
                arch: arch.to_string(),
                ..spec.clone()
            };
            image_on(&spec, &ws.bases[0], &format!("{name}-{arch}"), 1, 2048)
        })
        .collect();
    let index = index_of(&images, arches);
    let bin = ws.root.join("bazel-out/k8-fastbuild/bin");
    let target = write_push_target(
        &bin,
        spec,
        &ws.bases[0],
        0,
        name,
        RulesImgLayout::SparseSources,
        false,
        images,
        Some(index),
    )?;
    let mut deploy: Value = serde_json::from_slice(&fs::read(&target.deploy_manifest)?)?;
    let push = deploy["operations"][0].clone();
    for (child, tags) in target.images.iter().zip(manifest_tags) {
        if tags.is_empty() {
            continue;
        }
        deploy["operations"]
            .as_array_mut()
            .expect("operations")
            .push(json!({
                "command": "registry_tag",
                "root_kind": "manifest",
                "root": child.manifest.descriptor(),
                "registry": push["registry"],
                "repository": push["repository"],
                "tags": tags,
            }));
    }
    fs::write(
        &target.deploy_manifest,
        serde_json::to_vec_pretty(&deploy).expect("json"),
    )?;
    let mut build = fs::read_to_string(ws.root.join("BUILD.bazel"))?;
    build.push_str(&format!(
        "\nimage_push(\n    name = \"push-{name}\",\n    image = \"//cmd/{name}:{name}-index\",\n    registry = \"quay.io\",\n    repository = \"kubevirt/{name}\",\n)\n"
    ));
    fs::write(ws.root.join("BUILD.bazel"), build)?;
    Ok(target)
}

/// Write each target's image as a complete OCI layout `dir/<name>/` (base
/// layers included, tagged `latest`), what `skopeo copy oci:<dir/name>:latest
/// docker://...` pushes when it must not fetch anything (the bench's
/// stand-in for the sequential `bazel run`s). A blob several images share
/// is written once and hard-linked. Returns `(name, layout dir)` per target.
pub fn write_image_layouts(
    dir: &Path,
    targets: &[RulesImgTarget],
) -> io::Result<Vec<(String, PathBuf)>> {
    let mut written: std::collections::HashMap<String, PathBuf> = Default::default();
    let mut out = Vec::new();
    for t in targets {
        let image = &t.images[0];
        let layout = dir.join(&t.name);
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        for blob in [&image.manifest, &image.config]
            .into_iter()
            .chain(&image.layers)
        {
            let path = blobs.join(&blob.digest[7..]);
            match written.get(&blob.digest) {
                Some(first) if fs::hard_link(first, &path).is_ok() => {}
                _ => fs::write(&path, &blob.bytes)?,
            }
            written.entry(blob.digest.clone()).or_insert(path);
        }
        fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let mut desc = image.manifest.descriptor();
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
        fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [desc]})).expect("json"),
        )?;
        out.push((t.name.clone(), layout));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dozen_targets_sharing_shallow_bases_and_seedable_base_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RulesImgSpec {
            scale_bytes: 64 << 10,
            ..RulesImgSpec::default()
        };
        let ws = generate_rules_img_workspace(dir.path(), &spec).unwrap();
        assert_eq!(ws.targets.len(), 12);
        let build = fs::read_to_string(dir.path().join("BUILD.bazel")).unwrap();
        assert_eq!(build.matches("image_push(").count(), 12);
        assert_eq!(build.matches("testonly = True").count(), 1);
        for t in &ws.targets {
            let text = fs::read_to_string(&t.deploy_manifest).unwrap();
            assert!(text.contains(&t.root_digest) && text.contains("127.0.0.1:5001"));
            // Base layers are never on disk; own layers are plain tars.
            let base = &ws.bases[t.base];
            assert_eq!(t.images[0].base_layers, base.layers.len());
            assert!(t.images[0].layers[base.layers.len()..]
                .iter()
                .all(|l| l.media_type == OCI_LAYER_TAR));
        }
        // Deterministic.
        let again = tempfile::tempdir().unwrap();
        let ws2 = generate_rules_img_workspace(again.path(), &spec).unwrap();
        assert_eq!(ws.targets[4].root_digest, ws2.targets[4].root_digest);
        // The two bases share their first layer.
        assert_eq!(ws.bases[0].layers[0], ws.bases[1].layers[0]);
        let layouts = write_base_layouts(&dir.path().join("bases"), &ws.bases).unwrap();
        assert_eq!(layouts.len(), 2);
        assert!(layouts[0]
            .0
            .join("blobs/sha256")
            .join(&ws.bases[0].layers[1].digest[7..])
            .is_file());
        let images = write_image_layouts(&dir.path().join("images"), &ws.targets).unwrap();
        assert_eq!(images.len(), 12);
        let (name, layout) = &images[1];
        let t = &ws.targets[1];
        assert_eq!(name, &t.name);
        for blob in t.images[0].layers.iter().chain([&t.images[0].manifest]) {
            let path = layout.join("blobs/sha256").join(&blob.digest[7..]);
            assert_eq!(fs::read(path).unwrap(), blob.bytes);
        }
    }
}
