//! Generator of a rules_oci v2-era KubeVirt workspace: `oci_push` targets
//! in the root BUILD.bazel and, for each, the OCI layout directory
//! `oci_image` writes (`bazel-bin/<pkg>/<x>-image/`: `oci-layout`,
//! `index.json` with one manifest, `blobs/sha256/*`), blobs copied (Bazel
//! < 7.1) or relative symlinks (Bazel >= 7.1), plus the digest file
//! `<x>-image.json.sha256`. Own layers are uncompressed `pkg_tar` tars,
//! base layers gzip, as rules_oci leaves them. The images come from the
//! rules_img generator's parts ([`image_on`]); nothing else is shared.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::rules_img::{base_images, image_on, Blob, ImageParts, RulesImgSpec};

/// How `oci_image` puts blobs into the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobStyle {
    /// Copies (Bazel < 7.1, KubeVirt's Bazel 6.5).
    Copy,
    /// Relative symlinks to the files Bazel built (Bazel >= 7.1).
    Symlink,
}

/// `(target NAME, package, testonly, base index, own layer count)`.
pub const RULES_OCI_IMAGES: [(&str, &str, bool, usize, usize); 5] = [
    ("virt-operator", "cmd/virt-operator", false, 0, 1),
    ("virt-api", "cmd/virt-api", false, 0, 1),
    ("virt-handler", "cmd/virt-handler", false, 0, 2),
    ("virt-launcher", "cmd/virt-launcher", false, 1, 2),
    ("conformance", "tests", true, 0, 1),
];

/// What to generate.
#[derive(Clone, Debug)]
pub struct RulesOciSpec {
    /// Approximate total size of all layers.
    pub scale_bytes: u64,
    pub seed: u64,
    pub arch: String,
    pub blobs: BlobStyle,
}

impl Default for RulesOciSpec {
    fn default() -> Self {
        RulesOciSpec {
            scale_bytes: 1 << 20,
            seed: 1,
            arch: "amd64".into(),
            blobs: BlobStyle::Copy,
        }
    }
}

/// One `oci_push` target and its layout.
#[derive(Clone, Debug)]
pub struct RulesOciTarget {
    /// `virt-api` (the target is `push-virt-api`).
    pub name: String,
    /// `//cmd/virt-api:virt-api-image`.
    pub label: String,
    /// `bazel-bin/cmd/virt-api/virt-api-image`.
    pub layout: PathBuf,
    /// The layout's manifest digest: what the registry must report.
    pub manifest_digest: String,
    pub image: ImageParts,
}

/// Result of [`generate_rules_oci_workspace`].
#[derive(Clone, Debug)]
pub struct RulesOciWorkspace {
    pub root: PathBuf,
    pub targets: Vec<RulesOciTarget>,
    /// The `oci_push` part of BUILD.bazel (without its `load`), to mix into
    /// another era's file.
    pub build_targets: String,
}

/// The `load` line of rules_oci's push rule.
pub const RULES_OCI_LOAD: &str = "load(\"@rules_oci//oci:defs.bzl\", \"oci_push\")\n";

fn descriptor(blob: &Blob) -> serde_json::Value {
    json!({"mediaType": blob.media_type, "digest": blob.digest, "size": blob.bytes.len()})
}

/// Write the layout of `image` at `bin/<pkg>/<name>-image/`, in `style`;
/// symlinked blobs point into `bin/<pkg>/_<name>-image.blobs/`.
pub fn write_oci_image_layout(
    bin: &Path,
    pkg: &str,
    name: &str,
    image: &ImageParts,
    style: BlobStyle,
) -> io::Result<PathBuf> {
    let dir = bin.join(pkg);
    let layout = dir.join(format!("{name}-image"));
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let real = dir.join(format!("_{name}-image.blobs"));
    for blob in std::iter::once(&image.manifest)
        .chain([&image.config])
        .chain(&image.layers)
    {
        let hex = &blob.digest[7..];
        match style {
            BlobStyle::Copy => fs::write(blobs.join(hex), &blob.bytes)?,
            BlobStyle::Symlink => {
                fs::create_dir_all(&real)?;
                fs::write(real.join(hex), &blob.bytes)?;
                let link = blobs.join(hex);
                if fs::symlink_metadata(&link).is_err() {
                    // From blobs/sha256/ up to bin/<pkg>/.
                    let target = format!("../../../_{name}-image.blobs/{hex}");
                    std::os::unix::fs::symlink(target, link)?;
                }
            }
        }
    }
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index = json!({"schemaVersion": 2, "manifests": [descriptor(&image.manifest)]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )?;
    fs::write(
        dir.join(format!("{name}-image.json.sha256")),
        &image.manifest.digest,
    )?;
    Ok(layout)
}

/// Generate the workspace under `root` (bazel-bin a symlink into
/// bazel-out, as Bazel makes it).
pub fn generate_rules_oci_workspace(
    root: &Path,
    spec: &RulesOciSpec,
) -> io::Result<RulesOciWorkspace> {
    let bin = super::bin_dir(root);
    fs::create_dir_all(&bin)?;
    let link = root.join("bazel-bin");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("bazel-out/k8-fastbuild/bin", &link)?;
    }
    let img_spec = RulesImgSpec {
        scale_bytes: spec.scale_bytes,
        seed: spec.seed,
        arch: spec.arch.clone(),
        ..RulesImgSpec::default()
    };
    let bases = base_images(&img_spec);
    let own_size = (spec.scale_bytes / 24).max(512) as usize;
    let mut build = String::new();
    let mut targets = Vec::new();
    for (name, pkg, testonly, base, own) in RULES_OCI_IMAGES {
        let image = image_on(&img_spec, &bases[base], name, own, own_size);
        let layout = write_oci_image_layout(&bin, pkg, name, &image, spec.blobs)?;
        let label = format!("//{pkg}:{name}-image");
        build.push_str(&format!(
            "\noci_push(\n    name = \"push-{name}\",\n{}    image = \"{label}\",\n    repository = \"quay.io/kubevirt/{name}\",\n)\n",
            if testonly { "    testonly = True,\n" } else { "" }
        ));
        targets.push(RulesOciTarget {
            name: name.into(),
            label,
            layout,
            manifest_digest: image.manifest.digest.clone(),
            image,
        });
    }
    fs::write(
        root.join("WORKSPACE"),
        "workspace(name = \"kubevirt\")\n# rules_oci v2.0.1\n",
    )?;
    fs::write(root.join("BUILD.bazel"), format!("{RULES_OCI_LOAD}{build}"))?;
    Ok(RulesOciWorkspace {
        root: root.to_path_buf(),
        targets,
        build_targets: build,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_blob_styles_hold_the_same_bytes() {
        let mut digests = Vec::new();
        for blobs in [BlobStyle::Copy, BlobStyle::Symlink] {
            let dir = tempfile::tempdir().unwrap();
            let spec = RulesOciSpec {
                blobs,
                scale_bytes: 64 << 10,
                ..RulesOciSpec::default()
            };
            let ws = generate_rules_oci_workspace(dir.path(), &spec).unwrap();
            let build = fs::read_to_string(dir.path().join("BUILD.bazel")).unwrap();
            assert_eq!(build.matches("oci_push(").count(), 5);
            let t = &ws.targets[1];
            let blob = t
                .layout
                .join("blobs/sha256")
                .join(&t.image.layers[2].digest[7..]);
            assert_eq!(
                fs::symlink_metadata(&blob)
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                blobs == BlobStyle::Symlink
            );
            assert_eq!(fs::read(&blob).unwrap(), t.image.layers[2].bytes);
            digests.push(t.manifest_digest.clone());
        }
        assert_eq!(digests[0], digests[1]);
    }
}
