//! Every error of a push names what is wrong and what to do, sets a
//! non-zero exit status, and does not stop the other images.

mod common;

use common::nobody::{self, Reachable};
use common::{make_writable, verify_with_skopeo, Fixture, Scenario};
use kvpush::source::tar_index::TarIndex;
use kvpush_fixtures::{Registry, RegistryKind, WorkspaceSpec};

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
    let sc = Scenario::plain();

    // virt-api: missing. virt-handler: truncated. conformance: not a tar.
    std::fs::remove_file(&sc.image("virt-api").tarball).unwrap();
    let handler = &sc.image("virt-handler").tarball;
    make_writable(handler);
    let bytes = std::fs::read(handler).unwrap();
    std::fs::write(handler, &bytes[..bytes.len() / 2]).unwrap();
    let conformance = &sc.image("conformance").tarball;
    make_writable(conformance);
    std::fs::write(conformance, b"<html>not a tarball</html>\n".repeat(40)).unwrap();

    let run = sc.push(&["all"], &["--tag", "devel"]);
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
    let catalog = sc.catalog();
    assert_eq!(
        catalog.len(),
        18,
        "the other images are pushed: {catalog:?}"
    );
    assert!(!catalog
        .iter()
        .any(|r| r.ends_with("/virt-api") || r.ends_with("/virt-handler")));
    sc.verify("virt-launcher", "devel");
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_never_tagged() {
    let sc = Scenario::plain();
    let image = sc.image("virt-controller");
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

    let run = sc.push(&["virt-controller", "virt-api"], &["--tag", "devel"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("but the image config's diff_ids[")
            && run.stderr.contains("virt-controller-image.tar"),
        "{}",
        run.stderr
    );
    assert_eq!(
        sc.registry
            .manifest_digest("kubevirt/virt-controller", "devel"),
        None,
        "no tag for a corrupt image"
    );
    sc.verify("virt-api", "devel");
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
    let long_tag = "a".repeat(129);
    for (args, expect) in [
        (vec!["all", "--tag", "bad tag"], "invalid tag"),
        (vec!["all", "--tag", ".x"], "invalid tag \".x\""),
        (vec!["all", "--tag", &long_tag], "a tag is 1 to 128"),
        (
            vec!["all", "--image-prefix", "UPPER-"],
            "invalid destination",
        ),
        (
            vec!["all", "--image-prefix", "bad prefix"],
            "invalid destination",
        ),
        (vec!["push-nothing"], "unknown target \"push-nothing\""),
        (vec!["all", "--chunk-size", "1KiB"], "give at least 64KiB"),
        (vec!["all", "--stall-timeout", "5parsecs"], "unknown unit"),
        (vec!["all", "--retry-time", "forever"], "is not a duration"),
        (vec!["all", "--retries", "0"], "0 is not in 1..=50"),
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
    for registry in [
        "quay.io/kube virt",
        "",
        "localhost:notaport/kv",
        "localhost:5000//kv",
    ] {
        let run = fx.kvpush(&["all", "--registry", registry]);
        assert_eq!(run.code, 2, "{registry:?}");
        assert!(
            run.stderr.contains(&format!(
                "(from --registry {registry:?}, --image-prefix \"\")"
            )),
            "{}",
            run.stderr
        );
    }
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

/// Rewrite the tarball at `path` through `edit` (entries in order, with
/// `manifest.json` parsed for convenience and written back if changed).
fn rewrite_tarball(
    path: &std::path::Path,
    edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>, &mut serde_json::Value),
) {
    let mut entries = kvpush_fixtures::read_archive(path).unwrap();
    let at = entries
        .iter()
        .position(|(n, _)| n == "manifest.json")
        .unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&entries[at].1).unwrap();
    let before = manifest.clone();
    edit(&mut entries, &mut manifest);
    if manifest != before {
        if let Some((_, bytes)) = entries.iter_mut().find(|(n, _)| n == "manifest.json") {
            *bytes = serde_json::to_vec(&manifest).unwrap();
        }
    }
    make_writable(path);
    kvpush_fixtures::write_docker_archive(path, &entries).unwrap();
}

/// The bundle's manifest entry for image `name`.
fn bundle_entry<'a>(manifest: &'a mut serde_json::Value, name: &str) -> &'a mut serde_json::Value {
    let marker = format!("/{name}:");
    manifest
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["RepoTags"][0].as_str().unwrap().contains(&marker))
        .unwrap_or_else(|| panic!("no bundle entry for {name}"))
}

#[test]
fn every_kind_of_bad_tarball_fails_only_its_image_with_a_named_error() {
    let sc = Scenario::plain();
    let tarball = |name: &str| sc.image(name).tarball.clone();

    // Whole tarballs, one per single-image target.
    let empty = tarball("virt-api");
    std::fs::remove_file(&empty).unwrap();
    std::fs::write(&empty, b"").unwrap();
    let dir = tarball("virt-controller");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let fifo = tarball("virt-handler");
    std::fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    rewrite_tarball(&tarball("virt-launcher"), |entries, _| {
        entries.retain(|(n, _)| n != "manifest.json");
    });
    rewrite_tarball(&tarball("conformance"), |entries, _| {
        entries
            .iter_mut()
            .find(|(n, _)| n == "manifest.json")
            .unwrap()
            .1 = b"[{\"Config\": ".to_vec();
    });
    let operator = tarball("virt-operator");
    rewrite_tarball(&operator, |_, manifest| {
        manifest[0]["Layers"].as_array_mut().unwrap().pop();
    });
    // Images of the bundle, each broken its own way; the others must push.
    rewrite_tarball(&sc.ws.bundle_tarball(), |entries, manifest| {
        bundle_entry(manifest, "cirros-container-disk-demo")["Layers"][0] =
            "missing/layer.tar".into();
        bundle_entry(manifest, "alpine-container-disk-demo")["Config"] = "0000.json".into();
        entries.insert(0, ("bad.json".into(), b"{not json".to_vec()));
        bundle_entry(manifest, "nfs-server")["Config"] = "bad.json".into();
        entries.insert(
            0,
            (
                "norootfs.json".into(),
                br#"{"architecture":"amd64"}"#.to_vec(),
            ),
        );
        bundle_entry(manifest, "vm-killer")["Config"] = "norootfs.json".into();
    });

    let run = sc.push(&["all"], &["--tag", "devel"]);
    assert_eq!(run.code, 1);
    // Paths as kvpush reaches them: through the bazel-bin symlink.
    let bin = kvpush_fixtures::bin_dir(&sc.ws.root);
    let shown = |p: &std::path::Path| {
        sc.ws
            .root
            .join("bazel-bin")
            .join(p.strip_prefix(&bin).unwrap())
            .display()
            .to_string()
    };
    let (empty, dir, fifo, operator) = (shown(&empty), shown(&dir), shown(&fifo), shown(&operator));
    let bundle = shown(&sc.ws.bundle_tarball());
    for (image, problem) in [
        ("virt-api", format!("{empty} is empty")),
        (
            "virt-controller",
            format!("{dir} is a directory, not an image tarball"),
        ),
        (
            "virt-handler",
            format!("{fifo} is not a regular file (a FIFO"),
        ),
        (
            "virt-launcher",
            format!("{} has no manifest.json", shown(&tarball("virt-launcher"))),
        ),
        (
            "conformance",
            format!("manifest.json in {} is not valid", shown(&tarball("conformance"))),
        ),
        (
            "virt-operator",
            format!("{operator}: manifest.json lists 2 layers but config"),
        ),
        (
            "cirros-container-disk-demo",
            format!("{bundle}: manifest.json names layer missing/layer.tar which is not in the tarball"),
        ),
        (
            "alpine-container-disk-demo",
            format!("{bundle}: manifest.json names config 0000.json which is not in the tarball"),
        ),
        (
            "nfs-server",
            format!("config bad.json in {bundle} is not a valid image config"),
        ),
        (
            "vm-killer",
            format!("config norootfs.json in {bundle} is not a valid image config: missing field `rootfs`"),
        ),
    ] {
        // Once in the log as the image fails, once in the summary.
        let failed = format!(" FAILED {image} (");
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&failed))
            .unwrap_or_else(|| panic!("no log line for {image}: {}", run.stderr));
        assert!(line.contains(&problem), "{image}: {line}");
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("kvpush:   {image} (")))
            .unwrap_or_else(|| panic!("no summary line for {image}: {}", run.stderr));
        assert!(line.contains(&problem), "{image}: {line}");
    }
    assert!(
        run.stderr
            .contains("11 pushed, 0 skipped (already up to date), 10 failed"),
        "{}",
        run.stderr
    );
    let catalog = sc.catalog();
    assert_eq!(catalog.len(), 11, "{catalog:?}");
    for image in &sc.ws.images {
        let repo = format!("kubevirt/{}", image.name);
        if catalog.contains(&repo) {
            sc.verify(&image.name, "devel");
        }
    }
}

#[test]
fn a_tarball_kvpush_may_not_read_is_named_and_the_others_still_push() {
    use std::os::unix::fs::PermissionsExt;
    // Root reads anything whatever the mode: run kvpush as nobody then. The
    // clone may lie where nobody cannot enter, so the binary, the fixture
    // and TMPDIR go to a directory every user can reach.
    let reach = Reachable::new();
    let fx = Fixture::new_in(
        reach.path(),
        WorkspaceSpec {
            scale_bytes: 6 << 20,
            ..WorkspaceSpec::default()
        },
    );
    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", registry.addr());
    let secret = fx.image("virt-api").tarball.clone();
    let shown = fx.ws.root.join("bazel-bin/cmd/virt-api/virt-api-image.tar");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();

    let mut cmd = fx.command_at(&reach.kvpush_binary());
    cmd.args([
        "virt-api",
        "virt-handler",
        "--registry",
        &prefix,
        "--tag",
        "devel",
    ]);
    if nobody::running_as_root() {
        nobody::open_dirs_to_all(fx.dir.path());
        nobody::as_nobody(&mut cmd, &reach);
    }
    let run = common::run_command(cmd);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "cannot open {}: Permission denied (os error 13): give kvpush read access to it",
            shown.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(registry.catalog(), vec!["kubevirt/virt-handler"]);
    verify_with_skopeo(
        &registry,
        &format!("{prefix}/virt-handler:devel"),
        fx.image("virt-handler"),
    );
}
