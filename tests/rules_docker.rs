//! Pushing from rules_docker's push-target parts (`bazel build //:push-*`):
//! the registry ends up with exactly what `bazel run //:push-*` pushed, the
//! digests KubeVirt's manifests refer to, checked with skopeo. The fixture
//! gzips layers with GNU gzip, so a pusher that recompressed them could not
//! produce these blobs.

mod common;

use common::{make_writable, parts_spec, pull_and_verify, Scenario};
use kvpush_fixtures::{bin_dir, RegistryKind};

#[test]
fn every_image_lands_with_bazels_digest_and_bazels_gzip_bytes() {
    let sc = Scenario::new(parts_spec(), RegistryKind::Plain);
    let prefix = &sc.prefix;
    let digests = sc.dir.path().join("digests");
    let run = sc.push(
        &["all"],
        &["--tag", "devel", "--digests-dir", digests.to_str().unwrap()],
    );
    assert_eq!(run.code, 0);
    assert_eq!(sc.ws.images.len(), 21);
    let bin = bin_dir(&sc.ws.root);
    for image in &sc.ws.images {
        let reference = format!("{prefix}/{}:devel", image.name);
        let (digest, blobs) = pull_and_verify(&sc.registry, &reference, image);
        let expected = image.rules_docker_digest.as_ref().unwrap();
        assert_eq!(
            &digest, expected,
            "{reference}: the digest rules_docker computed"
        );
        assert!(run.pushed().contains(&(reference.clone(), digest.clone())));
        for (blob, file) in blobs.iter().zip(&image.parts_layers) {
            assert!(
                *blob == std::fs::read(file).unwrap(),
                "{reference}: layer blob is {} byte for byte",
                file.display()
            );
        }
        if image.target != "other-images" {
            let name = format!("push-{}.digest", image.target);
            let bazels = std::fs::read_to_string(bin.join(&name)).unwrap();
            assert_eq!(digest, bazels, "{reference}: bazel-bin/{name}");
            assert_eq!(
                std::fs::read_to_string(digests.join(&name)).unwrap(),
                bazels,
                "--digests-dir writes what build-manifests.sh expects"
            );
        }
    }
    // Not one layer went through kvpush's compressor.
    assert!(
        run.stderr.contains("21 images: 21 pushed")
            && run.stderr.contains("layers: 0 compressed by kvpush, "),
        "{}",
        run.stderr
    );
}

#[test]
fn auto_picks_the_parts_and_tarball_still_works() {
    let sc = Scenario::new(parts_spec(), RegistryKind::Plain);
    let api = sc.image("virt-api");
    let rules_docker = api.rules_docker_digest.clone().unwrap();

    let list = sc.kvpush(&["list", "virt-api", "vm-killer"]);
    assert_eq!(list.code, 0);
    assert!(
        list.stdout
            .contains("push-virt-api  (bazel-bin/push-virt-api)")
            && list
                .stdout
                .contains("push-other-images  (bazel-bin/push-other-images)")
            && list.stdout.contains(&format!(
                "parts: 3 layers, {}",
                kvpush::report::human_bytes(
                    api.parts_layers
                        .iter()
                        .map(|f| std::fs::metadata(f).unwrap().len())
                        .sum()
                )
            ))
            && list
                .stdout
                .contains(&format!("digest {rules_docker} (rules_docker's)")),
        "{}",
        list.stdout
    );

    let run = sc.push(&["virt-api"], &["--tag", "auto"]);
    assert_eq!(run.code, 0);
    assert_eq!(sc.verify("virt-api", "auto"), rules_docker);

    // The same image from its (uncompressed) tarball: kvpush gzips the
    // layers itself, which makes a valid image with other digests.
    let run = sc.push(&["virt-api"], &["--tag", "tar", "--source", "tarball"]);
    assert_eq!(run.code, 0);
    let from_tarball = sc.verify("virt-api", "tar");
    assert_ne!(from_tarball, rules_docker);
    assert!(
        run.stderr
            .contains("layers: 3 compressed by kvpush, 0 pushed as Bazel"),
        "{}",
        run.stderr
    );

    // Without its push script, auto falls back to the tarball and says how
    // to get the parts; --source parts refuses.
    std::fs::remove_file(bin_dir(&sc.ws.root).join("push-virt-handler")).unwrap();
    let list = sc.kvpush(&["list", "virt-handler"]);
    assert!(
        list.stdout
            .contains("push-virt-handler  (bazel-bin/cmd/virt-handler/virt-handler-image.tar)")
            && list.stdout.contains("tarball: 3 layers, ")
            && list
                .stdout
                .contains("; no push-target parts; `bazel build //:push-virt-handler` makes them"),
        "{}",
        list.stdout
    );
    let run = sc.push(&["virt-handler"], &["--tag", "auto"]);
    assert_eq!(run.code, 0);
    sc.verify("virt-handler", "auto");
    let run = sc.push(&["virt-handler"], &["--tag", "parts", "--source", "parts"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("push-virt-handler not found: build the push target's parts with `bazel build //:push-virt-handler`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_layer_changed_since_the_build_fails_its_image_before_upload() {
    let sc = Scenario::new(parts_spec(), RegistryKind::Plain);
    // virt-api's own top layer: only virt-api uses it.
    let layer = sc.image("virt-api").parts_layers.last().unwrap().clone();
    make_writable(&layer);
    let mut bytes = std::fs::read(&layer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    // virt-controller's digest file no longer matches its parts.
    let digest_file = bin_dir(&sc.ws.root).join("push-virt-controller.digest");
    make_writable(&digest_file);
    std::fs::write(&digest_file, format!("sha256:{}", "0".repeat(64))).unwrap();
    // virt-launcher's script pushes another image than its target says.
    let script = bin_dir(&sc.ws.root).join("push-virt-launcher");
    make_writable(&script);
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        text.replace("/virt-launcher:latest", "/virt-handler:latest"),
    )
    .unwrap();

    let run = sc.push(
        &[
            "virt-api",
            "virt-controller",
            "virt-handler",
            "virt-launcher",
        ],
        &["--tag", "t"],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "virt-api (push-virt-api): layer {}",
            sc.ws
                .root
                .join("bazel-bin/push-virt-api.runfiles/kubevirt/cmd/virt-api/virt-api-image-layer.tar.gz")
                .display()
        )) && run.stderr.contains("does not match its digest file"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "virt-controller (push-virt-controller): the manifest kvpush built has digest"
        ) && run.stderr.contains(
            "push-virt-controller.digest (rules_docker's digest of this image) says sha256:000"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "pushes to index.docker.io/kubevirt/virt-handler:latest, not to an image called virt-launcher"
        ),
        "{}",
        run.stderr
    );
    assert!(run
        .stderr
        .contains("1 pushed, 0 skipped (already up to date), 3 failed"));
    assert_eq!(sc.registry.manifest_digest("kubevirt/virt-api", "t"), None);
    assert_eq!(
        sc.registry.tags("kubevirt/virt-controller"),
        Vec::<String>::new()
    );
    let claimed = std::fs::read_to_string(layer.with_extension("gz.sha256")).unwrap();
    assert_eq!(
        sc.registry.count_requests("PUT", &claimed),
        0,
        "the changed layer was never uploaded"
    );
    sc.verify("virt-handler", "t");
}

#[test]
fn the_runfiles_manifest_stands_in_for_a_missing_symlink_tree() {
    let sc = Scenario::new(parts_spec(), RegistryKind::Plain);
    // `bazel build --nobuild_runfile_links` leaves only the manifest.
    std::fs::remove_dir_all(bin_dir(&sc.ws.root).join("push-virt-launcher.runfiles")).unwrap();
    let run = sc.push(&["virt-launcher"], &["--tag", "t"]);
    assert_eq!(run.code, 0);
    let image = sc.image("virt-launcher");
    assert_eq!(
        &sc.verify("virt-launcher", "t"),
        image.rules_docker_digest.as_ref().unwrap()
    );
}
