//! Every error of a push names what is wrong and what to do, sets a
//! non-zero exit status, and does not stop the other images.

mod common;

use common::{make_writable, verify_with_skopeo, Fixture};
use kvpush::source::tar_index::TarIndex;
use kvpush_fixtures::{Registry, RegistryKind};

#[test]
fn no_bazel_bin_says_where_it_looked() {
    let fx = Fixture::small();
    let empty = fx.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = common::kvpush_command(&fx.home());
    cmd.args(["all", "--registry", "127.0.0.1:9/kv", "--workspace"])
        .arg(&empty);
    let run = common::run_command(cmd);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no bazel-bin in") && run.stderr.contains("--workspace"),
        "{}",
        run.stderr
    );
}

#[test]
fn dangling_bazel_bin_symlink_is_explained() {
    let fx = Fixture::small();
    std::fs::rename(fx.ws.root.join("bazel-out"), fx.ws.root.join("moved-out")).unwrap();
    let run = fx.kvpush(&["all", "--registry", "127.0.0.1:9/kv"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("is a symlink to bazel-out/k8-fastbuild/bin, which does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_and_corrupt_tarballs_fail_their_images_only() {
    let fx = Fixture::small();
    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", registry.addr());

    // virt-api: missing. virt-handler: truncated. conformance: not a tar.
    std::fs::remove_file(&fx.image("virt-api").tarball).unwrap();
    let handler = &fx.image("virt-handler").tarball;
    make_writable(handler);
    let bytes = std::fs::read(handler).unwrap();
    std::fs::write(handler, &bytes[..bytes.len() / 2]).unwrap();
    let conformance = &fx.image("conformance").tarball;
    make_writable(conformance);
    std::fs::write(conformance, b"<html>not a tarball</html>\n".repeat(40)).unwrap();

    let run = fx.kvpush(&["all", "--registry", &prefix, "--tag", "devel"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("virt-api-image.tar not found: build it with `bazel build //cmd/virt-api:virt-api-image.tar`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("virt-handler-image.tar is truncated")
            || run
                .stderr
                .contains("virt-handler-image.tar has no manifest.json"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("conformance_image.tar is not a"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("18 pushed, 0 skipped (already up to date), 3 failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("failed: virt-api, virt-handler, conformance"),
        "{}",
        run.stderr
    );
    let catalog = registry.catalog();
    assert_eq!(
        catalog.len(),
        18,
        "the other images are pushed: {catalog:?}"
    );
    assert!(!catalog
        .iter()
        .any(|r| r.ends_with("/virt-api") || r.ends_with("/virt-handler")));
    verify_with_skopeo(
        &registry,
        &format!("{prefix}/virt-launcher:devel"),
        fx.image("virt-launcher"),
    );
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_never_tagged() {
    let fx = Fixture::small();
    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", registry.addr());
    let image = fx.image("virt-controller");
    // Flip one byte inside the image's own top layer (not a shared one).
    let index = TarIndex::build(&image.tarball).unwrap();
    let layer = index
        .get(image.layer_files.last().unwrap())
        .unwrap()
        .clone();
    make_writable(&image.tarball);
    let mut bytes = std::fs::read(&image.tarball).unwrap();
    let at = (layer.offset + layer.len / 2) as usize;
    bytes[at] ^= 0xff;
    std::fs::write(&image.tarball, bytes).unwrap();

    let run = fx.kvpush(&[
        "virt-controller",
        "virt-api",
        "--registry",
        &prefix,
        "--tag",
        "devel",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("but the image config's diff_ids[")
            && run.stderr.contains("virt-controller-image.tar"),
        "{}",
        run.stderr
    );
    assert_eq!(
        registry.manifest_digest("kubevirt/virt-controller", "devel"),
        None,
        "no tag for a corrupt image"
    );
    verify_with_skopeo(
        &registry,
        &format!("{prefix}/virt-api:devel"),
        fx.image("virt-api"),
    );
}

#[test]
fn an_unreachable_registry_is_named() {
    let fx = Fixture::small();
    // A port nothing listens on: bind, note, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = fx.kvpush(&[
        "virt-api",
        "--registry",
        &format!("127.0.0.1:{port}/kv"),
        "--retries",
        "2",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Connection refused") || run.stderr.contains("connection refused"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_registry_error_is_shown_with_its_status_and_message() {
    let fx = Fixture::small();
    let registry = Registry::start(RegistryKind::Readonly);
    let run = fx.kvpush(&[
        "virt-api",
        "--registry",
        &format!("{}/kv", registry.addr()),
        "--tag",
        "x",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("registry {} answered 405", registry.addr())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Method not allowed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("virt-api (push-virt-api)"),
        "{}",
        run.stderr
    );
}

#[test]
fn invalid_flags_are_refused_before_any_work() {
    let fx = Fixture::small();
    let registry = Registry::start(RegistryKind::Plain);
    registry.clear_access_log();
    for (args, expect) in [
        (vec!["all", "--tag", "bad tag"], "invalid tag"),
        (
            vec!["all", "--image-prefix", "UPPER-"],
            "invalid destination",
        ),
        (vec!["push-nothing"], "unknown target \"push-nothing\""),
    ] {
        let mut full = args.clone();
        let reg = format!("{}/kv", registry.addr());
        full.extend(["--registry", reg.as_str()]);
        let run = fx.kvpush(&full);
        assert_eq!(run.code, 2, "{args:?}");
        assert!(run.stderr.contains(expect), "{args:?}: {}", run.stderr);
    }
    let run = fx.kvpush(&["all", "--registry", "https://quay.io/kubevirt"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("has a scheme"), "{}", run.stderr);
    let run = fx.kvpush(&["all"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no registry: pass --registry"),
        "{}",
        run.stderr
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(registry.requests().is_empty());
}

#[test]
fn list_shows_targets_tarballs_and_destinations() {
    let fx = Fixture::small();
    std::fs::remove_file(&fx.image("virt-launcher").tarball).unwrap();
    let run = fx.kvpush(&["list", "--registry", "quay.io/kubevirt", "--tag", "v1"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("push-other-images  (bazel-bin/build-other-images.tar)"),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .contains("quay.io/kubevirt/cirros-container-disk-demo:v1"));
    assert!(run.stdout.contains("quay.io/kubevirt/virt-api:v1"));
    assert!(
        run.stdout.contains("MISSING:")
            && run
                .stdout
                .contains("bazel build //cmd/virt-launcher:virt-launcher-image.tar")
    );
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.contains("quay.io/kubevirt/"))
            .count(),
        21
    );
}

#[test]
fn env_defaults_are_read_as_kubevirt_scripts_set_them() {
    let fx = Fixture::small();
    let registry = Registry::start(RegistryKind::Plain);
    let mut cmd = fx.command();
    cmd.env("DOCKER_PREFIX", format!("{}/kubevirt", registry.addr()))
        .env("DOCKER_TAG", "from-env")
        .env("IMAGE_PREFIX", "env-")
        .env("PUSH_TARGETS", "virt-api push-virt-handler");
    let run = common::run_command(cmd);
    assert_eq!(run.code, 0);
    let mut catalog = registry.catalog();
    catalog.sort();
    assert_eq!(
        catalog,
        vec!["kubevirt/env-virt-api", "kubevirt/env-virt-handler"]
    );
    assert!(registry
        .manifest_digest("kubevirt/env-virt-api", "from-env")
        .is_some());
}
