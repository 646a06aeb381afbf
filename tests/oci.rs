//! OCI sources and formats: image layouts written by an independent
//! producer (skopeo) are pushed byte for byte, and `--format oci` assembles
//! OCI manifests from tarballs; every result read back with skopeo.

mod common;

use std::path::{Path, PathBuf};

use common::{blob_uploads, parts_spec, raw_manifest, verify_as, Expect, Fixture, Scenario};
use kvpush_fixtures::{bin_dir, skopeo_copy, GeneratedImage, Registry, RegistryKind};

/// `bazel-bin/P/X` for the label `//P:X`.
fn label_path(bin: &Path, label: &str) -> PathBuf {
    let (pkg, name) = label.trim_start_matches("//").split_once(':').unwrap();
    bin.join(pkg).join(name)
}

#[test]
fn oci_layouts_written_by_skopeo_are_pushed_byte_for_byte() {
    let fx = Fixture::small();
    let bin = bin_dir(&fx.ws.root);
    // Where each image's layout goes, as rules_oci (dir), a tar of it, or
    // an OCI archive sitting where the docker tarball was.
    let mut layouts: Vec<(&GeneratedImage, String)> = Vec::new();
    for (i, image) in fx.ws.images.iter().enumerate() {
        let at = label_path(&bin, &image.label);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        let dest = match (image.name.as_str(), i % 2) {
            ("conformance", _) => format!("oci-archive:{}", image.tarball.display()),
            ("virt-api", _) => format!("oci:{}", at.display()),
            ("virt-handler", _) | (_, 1) => format!("oci-archive:{}.oci.tar", at.display()),
            _ => format!("oci:{}", at.display()),
        };
        layouts.push((image, dest));
    }
    // The bundle's images first: its tarball goes once they are out.
    layouts.sort_by_key(|(i, _)| i.target != "other-images");
    for (image, dest) in &layouts {
        if image.name == "conformance" {
            let copy = fx.dir.path().join("conformance.tar");
            std::fs::copy(&image.tarball, &copy).unwrap();
            std::fs::remove_file(&image.tarball).unwrap();
            skopeo_copy(&format!("docker-archive:{}", copy.display()), dest, &[]).unwrap();
            continue;
        }
        skopeo_copy(&image.skopeo_source(), dest, &[]).unwrap();
        if image.target != "other-images" {
            std::fs::remove_file(&image.tarball).unwrap();
        }
    }
    std::fs::remove_file(fx.ws.bundle_tarball()).unwrap();

    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", registry.addr());
    let list = fx.kvpush(&["list", "--registry", &prefix]);
    assert_eq!(list.code, 0);
    assert!(
        list.stdout.contains(
            "push-other-images  (no bazel-bin/build-other-images.tar: one OCI layout per image)"
        ),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout
            .contains("OCI layout bazel-bin/cmd/virt-api/virt-api-image/: 3 layers (linux/amd64)"),
        "{}",
        list.stdout
    );
    assert!(list
        .stdout
        .contains("OCI layout bazel-bin/cmd/virt-handler/virt-handler-image.oci.tar:"));
    assert!(list
        .stdout
        .contains("OCI layout bazel-bin/tests/conformance_image.tar:"));
    assert!(!list.stdout.contains("MISSING"), "{}", list.stdout);

    let run = fx.kvpush(&["all", "--registry", &prefix, "--tag", "oci"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("21 images: 21 pushed")
            && run.stderr.contains("layers: 0 compressed by kvpush"),
        "{}",
        run.stderr
    );
    let pushed = run.pushed();
    for (image, dest) in &layouts {
        let (layout_manifest, layout_digest) = raw_manifest(&registry, dest);
        let reference = format!("{prefix}/{}:oci", image.name);
        let config = layout_manifest["config"]["digest"].as_str().unwrap();
        let (digest, _) = verify_as(&registry, &reference, &Expect::oci(config), &image.diff_ids);
        assert_eq!(digest, layout_digest, "{reference}: the layout's digest");
        assert!(pushed.contains(&(reference, digest)));
    }

    // Nothing to do the second time.
    let uploads = blob_uploads(&registry);
    let run = fx.kvpush(&["all", "--registry", &prefix, "--tag", "oci"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("0 pushed, 21 skipped"),
        "{}",
        run.stderr
    );
    assert_eq!(blob_uploads(&registry), uploads);
}

#[test]
fn format_oci_assembles_oci_manifests_from_tarballs() {
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    let run = sc.push(
        &["virt-api", "cirros-container-disk-demo"],
        &["--tag", "o", "--format", "oci"],
    );
    assert_eq!(run.code, 0);
    for name in ["virt-api", "cirros-container-disk-demo"] {
        let image = sc.image(name);
        let reference = format!("{prefix}/{name}:o");
        let (digest, _) = verify_as(
            &sc.registry,
            &reference,
            &Expect::oci(&image.config_digest),
            &image.diff_ids,
        );
        assert!(run.pushed().contains(&(reference, digest)));
    }
    // The same tarball as Docker schema 2: same blobs, another manifest.
    let run = sc.push(&["virt-api"], &["--tag", "d"]);
    assert_eq!(run.code, 0);
    let (docker, _) = raw_manifest(&sc.registry, &format!("docker://{prefix}/virt-api:d"));
    let (oci, _) = raw_manifest(&sc.registry, &format!("docker://{prefix}/virt-api:o"));
    assert_eq!(
        docker["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let digests = |m: &serde_json::Value| -> Vec<String> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(digests(&docker), digests(&oci));
}

#[test]
fn a_broken_layout_fails_its_image_only_and_says_which_blob() {
    let fx = Fixture::small();
    let bin = bin_dir(&fx.ws.root);
    let image = fx.image("virt-api");
    let layout = label_path(&bin, &image.label);
    skopeo_copy(
        &image.skopeo_source(),
        &format!("oci:{}", layout.display()),
        &[],
    )
    .unwrap();
    std::fs::remove_file(&image.tarball).unwrap();
    let raw =
        kvpush_fixtures::skopeo_inspect_raw(&format!("oci:{}", layout.display()), &[]).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    std::fs::remove_file(layout.join("blobs/sha256").join(&layer[7..])).unwrap();

    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", registry.addr());
    let run = fx.kvpush(&["virt-api", "virt-handler", "--registry", &prefix]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "OCI layout {}: layer 2 {layer} is not in the layout",
            fx.ws
                .root
                .join("bazel-bin/cmd/virt-api/virt-api-image")
                .display()
        )) && run.stderr.contains("rebuild it with bazel"),
        "{}",
        run.stderr
    );
    assert!(run
        .stderr
        .contains("1 pushed, 0 skipped (already up to date), 1 failed"));
    assert_eq!(registry.catalog(), vec!["kubevirt/virt-handler"]);
}

#[test]
fn parts_come_first_and_format_oci_keeps_bazels_layers() {
    let fx = Fixture::new(parts_spec());
    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", registry.addr());
    // OCI media types around Bazel's own gzip layers: not rules_docker's
    // Docker manifest, so its digest is not compared with push-X.digest.
    let run = fx.kvpush(&[
        "virt-api",
        "--registry",
        &prefix,
        "--tag",
        "o",
        "--format",
        "oci",
    ]);
    assert_eq!(run.code, 0);
    let image = fx.image("virt-api");
    let reference = format!("{prefix}/virt-api:o");
    let (digest, blobs) = verify_as(
        &registry,
        &reference,
        &Expect::oci(&image.config_digest),
        &image.diff_ids,
    );
    assert_ne!(Some(&digest), image.rules_docker_digest.as_ref());
    for (blob, file) in blobs.iter().zip(&image.parts_layers) {
        assert!(*blob == std::fs::read(file).unwrap(), "{}", file.display());
    }
    assert!(
        run.stderr.contains("layers: 0 compressed by kvpush"),
        "{}",
        run.stderr
    );

    // An OCI layout where the tarball was: parts still win under auto, the
    // layout is what --source tarball reads.
    let bin = bin_dir(&fx.ws.root);
    let handler = fx.image("virt-handler");
    let layout = label_path(&bin, &handler.label);
    skopeo_copy(
        &handler.skopeo_source(),
        &format!("oci:{}", layout.display()),
        &[],
    )
    .unwrap();
    std::fs::remove_file(&handler.tarball).unwrap();
    let auto = fx.kvpush(&["list", "virt-handler"]);
    assert!(auto.stdout.contains("parts: "), "{}", auto.stdout);
    let tarball = fx.kvpush(&["list", "virt-handler", "--source", "tarball"]);
    assert!(
        tarball
            .stdout
            .contains("push-virt-handler  (bazel-bin/cmd/virt-handler/virt-handler-image/)")
            && tarball
                .stdout
                .contains("OCI layout bazel-bin/cmd/virt-handler/virt-handler-image/: 3 layers"),
        "{}",
        tarball.stdout
    );
}
