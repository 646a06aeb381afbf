//! Entry points for fuzzing what reads untrusted files (tarballs, their
//! manifests, rules_img deploy manifests): the cargo-fuzz
//! targets in `fuzz/` and the bounded mutation test that runs on stable
//! (`tests/fuzz.rs`) call these with arbitrary bytes. Any input may be
//! refused with an error; none may panic or hang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::docker_archive::{parse_diff_ids, parse_manifest, repo_tag_name, DockerArchive};
use super::oci_layout::Layout;
use super::rules_img::deploy_manifest::DeployManifest;
use super::tar_index::TarIndex;
use crate::blob::prepare_layer;

/// A private directory for the file the tarball target reads.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("kvpush-fuzz-")
            .tempdir()
            .expect("a temporary directory for fuzzing")
    })
    .path()
}

/// `data` as a whole tarball: index it; for an OCI layout, read its index
/// and manifests; else parse its manifest, read every image and prepare
/// (hash, gunzip or gzip) every layer, as a push would.
pub fn tarball(data: &[u8]) {
    let dir = scratch();
    let path = dir.join(format!("input-{:?}.tar", std::thread::current().id()));
    std::fs::write(&path, data).expect("write the fuzz input");
    let Ok(index) = TarIndex::build(&path) else {
        return;
    };
    if Layout::is_layout_tar(&index) {
        let _ = Layout::from_tar(index).and_then(|layout| layout.root());
        return;
    }
    let Ok(archive) = DockerArchive::from_index(index) else {
        return;
    };
    let known: Vec<&str> = crate::targets::BUNDLE_IMAGES
        .iter()
        .map(|i| i.name)
        .collect();
    let _ = archive.entries_by_name(&known);
    for i in 0..archive.entries.len() {
        let Ok(image) = archive.image(i) else {
            continue;
        };
        for (n, layer) in image.layers.iter().enumerate() {
            let spool: PathBuf = dir.join(format!("layer-{n}.gz"));
            let _ = prepare_layer(layer.range(), &spool, 1, None);
        }
    }
}

/// `data` as `manifest.json` and as an image config.
pub fn manifest(data: &[u8]) {
    let path = Path::new("fuzz.tar");
    if let Ok(entries) = parse_manifest(data, path) {
        for entry in &entries {
            for tag in entry.repo_tags.iter().flatten() {
                let _ = repo_tag_name(tag);
            }
        }
    }
    let _ = parse_diff_ids(data, "config.json", path);
}

/// `data` as a rules_img deploy manifest (`bazel-bin/push-X.json`): parse
/// and check it, then ask each image which layers it lacks, as the reader
/// does.
pub fn deploy_manifest(data: &[u8]) {
    let Ok(manifest) = DeployManifest::parse(data, "push-x", "push-x.json") else {
        return;
    };
    for op in &manifest.operations {
        for image in &op.manifests {
            for layer in &image.layer_blobs {
                let _ = image.lists_missing(&layer.digest);
            }
        }
    }
}
