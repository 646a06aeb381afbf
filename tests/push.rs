//! End-to-end pushes to a real CNCF distribution registry, each result
//! checked with skopeo.

mod common;

use common::{blob_uploads, verify_with_skopeo, Fixture, Scenario};
use kvpush_fixtures::{Registry, RegistryKind, WorkspaceSpec};

#[test]
fn all_targets_land_pullable_with_the_tarballs_configs_and_diff_ids() {
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    let digests = sc.dir.path().join("digests");
    let run = sc.push(
        &["all"],
        &["--tag", "devel", "--digests-dir", digests.to_str().unwrap()],
    );
    assert_eq!(run.code, 0);
    assert_eq!(sc.ws.images.len(), 21);
    let pushed = run.pushed();
    assert_eq!(pushed.len(), 21, "one line per image");
    for image in &sc.ws.images {
        let reference = format!("{prefix}/{}:devel", image.name);
        let digest = verify_with_skopeo(&sc.registry, &reference, image);
        assert!(
            pushed.contains(&(reference.clone(), digest.clone())),
            "{reference}@{digest} printed"
        );
        if image.target != "other-images" {
            let file = digests.join(format!("push-{}.digest", image.target));
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                digest,
                "{}",
                file.display()
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(&digests).unwrap().count(),
        6,
        "digest files for the six single-image targets"
    );
    assert!(
        run.stderr.contains("21 images: 21 pushed, 0 skipped"),
        "{}",
        run.stderr
    );

    // Shared base layers go up once per registry: later repositories mount them.
    let uploads = blob_uploads(&sc.registry);
    let mounts = sc.registry.count_requests("POST", "mount=");
    assert!(mounts > 0, "shared layers are mounted, not uploaded again");
    let distinct = common::distinct_blobs(&sc.ws.images);
    assert_eq!(uploads, distinct.len(), "one upload per distinct blob");

    // A second run finds everything in place: no blob is uploaded again.
    let run = sc.push(&["all"], &["--tag", "devel"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        blob_uploads(&sc.registry),
        uploads,
        "a second run uploads no blob"
    );
    assert_eq!(
        sc.registry.count_requests("POST", "mount="),
        mounts,
        "nor mounts any"
    );
    assert_eq!(
        sc.registry.count_requests("PUT", "/manifests/"),
        21,
        "nor rewrites a manifest (21 tags, all from the first run)"
    );
    assert!(
        run.stderr.contains("0 pushed, 21 skipped"),
        "{}",
        run.stderr
    );
    // Every blob of every image counts as present, though none was asked for.
    let present: usize = sc
        .ws
        .images
        .iter()
        .map(|i| {
            let mut blobs: Vec<&String> = i.diff_ids.iter().chain([&i.config_digest]).collect();
            blobs.sort();
            blobs.dedup();
            blobs.len()
        })
        .sum();
    assert!(
        run.stderr
            .contains(&format!("0 mounted, {present} already present")),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.pushed().len(),
        21,
        "references are printed for unchanged images too"
    );

    // A new tag for manifests the registry holds: no blob is looked at; the
    // digest cache knows every blob, so each image costs a HEAD of the tag
    // and the tag's PUT (the manifest by digest is not asked for).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let requests = sc.registry.requests().len();
    let blob_heads = sc.registry.count_requests("HEAD", "/blobs/");
    let run = sc.push(&["all"], &["--tag", "v2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sc.registry.count_requests("HEAD", "/blobs/"), blob_heads);
    assert_eq!(sc.registry.count_requests("PUT", "/manifests/v2"), 21);
    let new: Vec<String> = sc.registry.requests()[requests..]
        .iter()
        .filter(|r| r.uri != "/v2/")
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    let heads = new
        .iter()
        .filter(|r| r.starts_with("HEAD ") && r.contains("/manifests/"));
    assert_eq!(heads.count(), 21, "{new:#?}");
    assert_eq!(new.len(), 42, "{new:#?}");
    sc.verify_all("v2");
}

#[test]
fn a_single_target_or_bundle_image_pushes_only_its_images() {
    let sc = Scenario::plain();
    let run = sc.push(&["push-virt-handler"], &["--tag", "t1"]);
    assert_eq!(run.code, 0);
    assert_eq!(sc.catalog(), vec!["kubevirt/virt-handler"]);
    sc.verify("virt-handler", "t1");

    let run = sc.push(&["cirros-container-disk-demo"], &["--tag", "t1"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        sc.catalog(),
        vec![
            "kubevirt/cirros-container-disk-demo",
            "kubevirt/virt-handler"
        ]
    );
    sc.verify("cirros-container-disk-demo", "t1");
}

#[test]
fn two_tags_and_an_image_prefix_give_one_digest_and_one_upload_per_blob() {
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    let run = sc.push(
        &["virt-api"],
        &["--image-prefix", "kv-", "--tag", "a", "--tag", "b"],
    );
    assert_eq!(run.code, 0);
    let image = sc.image("virt-api");
    let a = verify_with_skopeo(&sc.registry, &format!("{prefix}/kv-virt-api:a"), image);
    let b = verify_with_skopeo(&sc.registry, &format!("{prefix}/kv-virt-api:b"), image);
    assert_eq!(a, b);
    assert_eq!(
        blob_uploads(&sc.registry),
        image.diff_ids.len() + 1,
        "layers and config uploaded once for both tags"
    );
}

#[test]
fn dry_run_touches_no_registry() {
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    sc.registry.clear_access_log();
    let run = sc.push(&["all"], &["--tag", "devel", "--dry-run"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("would push "))
            .count(),
        21
    );
    assert!(run
        .stdout
        .contains(&format!("would push {prefix}/virt-launcher:devel")));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        sc.registry.requests().is_empty(),
        "no request reached the registry"
    );
    assert!(sc.catalog().is_empty());
}

#[test]
fn gzip_layers_are_pushed_as_they_are() {
    let sc = Scenario::new(
        WorkspaceSpec {
            scale_bytes: 4 << 20,
            compressed_layers: true,
            ..WorkspaceSpec::default()
        },
        RegistryKind::Plain,
    );
    let prefix = &sc.prefix;
    let run = sc.push(&["virt-launcher", "other-images"], &["--tag", "gz"]);
    assert_eq!(run.code, 0);
    let pushed = sc.images_of(&["virt-launcher", "other-images"]);
    for image in pushed {
        let reference = format!("{prefix}/{}:gz", image.name);
        verify_with_skopeo(&sc.registry, &reference, image);
        let raw =
            kvpush_fixtures::skopeo_inspect_raw(&format!("docker://{reference}"), &[]).unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let digests: Vec<&str> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = image.gzip_digests.iter().map(String::as_str).collect();
        assert_eq!(
            digests, expected,
            "{reference}: the tarball's gzip blobs, byte for byte"
        );
    }
}

#[test]
fn bundles_with_merged_entries_aliases_prefixes_and_unknown_images_all_push() {
    let sc = Scenario::new(
        WorkspaceSpec {
            scale_bytes: 4 << 20,
            merged_bundle: true,
            dedup_layers: true,
            build_image_prefix: "pre-".into(),
            extra_bundle_images: vec!["brand-new-image".into()],
            ..WorkspaceSpec::default()
        },
        RegistryKind::Plain,
    );
    let run = sc.push(&["other-images"], &["--tag", "b"]);
    assert_eq!(run.code, 0);
    let bundle: Vec<_> = sc.images_of(&["other-images"]).collect();
    assert!(bundle.len() >= 17, "15 table images, an alias and an extra");
    for image in bundle {
        sc.verify(&image.name, "b");
    }
}

#[test]
fn pushes_are_deterministic_across_registries() {
    let fx = Fixture::small();
    let one = Registry::start(RegistryKind::Plain);
    let two = Registry::start(RegistryKind::Plain);
    let a = fx.kvpush(&[
        "virt-controller",
        "--registry",
        &format!("{}/kv", one.addr()),
        "--tag",
        "x",
    ]);
    let b = fx.kvpush(&[
        "virt-controller",
        "--registry",
        &format!("{}/kv", two.addr()),
        "--tag",
        "x",
    ]);
    assert_eq!((a.code, b.code), (0, 0));
    assert_eq!(
        a.pushed()[0].1,
        b.pushed()[0].1,
        "same tarball, same digest"
    );
}

#[test]
fn a_closed_stdout_does_not_stop_the_push() {
    // `kvpush all | head -1`: stdout goes away, the push must go on.
    let sc = Scenario::plain();
    let mut cmd = sc.push_command(&["virt-api", "virt-handler"], &["--tag", "t"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for name in ["virt-api", "virt-handler"] {
        sc.verify(name, "t");
    }
}
