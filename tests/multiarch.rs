//! Multi-architecture: per-architecture pushes stitched into manifest
//! lists by `kvpush manifest` (reading only the registry), `--arch-bin`
//! doing both in one run, and index layouts pushed children first. Every
//! list is read back with skopeo, and skopeo's platform resolution
//! (`--override-arch`) must land on the right image.

mod common;

use std::collections::HashSet;

use common::{blob_uploads, raw_manifest, verify_with_skopeo, Fixture, Scenario};
use kvpush_fixtures::{
    bin_dir, skopeo_copy, skopeo_inspect, Registry, RegistryKind, WorkspaceSpec,
};

/// The same workspace built for arm64: configs say arm64, and the own
/// layers of two images differ (their binaries), the rest is shared.
fn arm64_fixture() -> Fixture {
    Fixture::new(WorkspaceSpec {
        scale_bytes: 6 << 20,
        arch: "arm64".into(),
        changed_layers: vec!["virt-api".into(), "virt-handler".into()],
        ..WorkspaceSpec::default()
    })
}

/// `{{.Architecture}} {{.Layers}}` of a reference, as skopeo resolves it
/// for `arch` (REFERENCE.md §6: `{{.Digest}}` would be the list's).
fn resolved(registry: &Registry, reference: &str, arch: &str) -> String {
    let mut args = registry.skopeo_args();
    args.extend(["--override-arch".into(), arch.into()]);
    args.extend(["--format".into(), "{{.Architecture}} {{.Layers}}".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    skopeo_inspect(&format!("docker://{reference}"), &args)
        .unwrap_or_else(|e| panic!("skopeo cannot resolve {reference} for {arch}: {e}"))
        .trim()
        .to_string()
}

/// Check that `R/NAME:TAG` is a list of exactly the images tagged
/// `TAG-<arch>`, with their platforms, in `arches` order; returns its
/// manifest and digest.
fn check_list(
    registry: &Registry,
    prefix: &str,
    name: &str,
    tag: &str,
    media_type: &str,
    arches: &[&str],
) -> (serde_json::Value, String) {
    let reference = format!("{prefix}/{name}:{tag}");
    let (list, digest) = raw_manifest(registry, &format!("docker://{reference}"));
    assert_eq!(list["mediaType"], media_type, "{reference}");
    let entries = list["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), arches.len(), "{reference}: {list}");
    let repo = format!("kubevirt/{name}");
    for (entry, arch) in entries.iter().zip(arches) {
        assert_eq!(entry["platform"]["architecture"], *arch, "{reference}");
        assert_eq!(entry["platform"]["os"], "linux");
        let child = registry
            .manifest_digest(&repo, &format!("{tag}-{arch}"))
            .unwrap_or_else(|| panic!("{repo}:{tag}-{arch} missing"));
        assert_eq!(entry["digest"], child.as_str(), "{reference}: {arch} entry");
    }
    (list, digest)
}

#[test]
fn two_architectures_pushed_apart_are_listed_from_the_registry_alone() {
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    let arm = arm64_fixture();
    assert_eq!(sc.push(&["all"], &["--tag", "v1-amd64"]).code, 0);
    assert_eq!(sc.push_from(&arm, &["all"], &["--tag", "v1-arm64"]).code, 0);

    // The final CI job: no bazel-bin, architectures from BUILD_ARCH in
    // KubeVirt's spelling, flags after the word.
    let empty = sc.dir.path().join("no-workspace");
    std::fs::create_dir_all(&empty).unwrap();
    let digests = sc.dir.path().join("digests");
    let manifest = |extra: &[&str]| {
        let mut cmd = common::kvpush_command(&sc.home());
        cmd.env("BUILD_ARCH", "x86_64,aarch64")
            .arg("--registry")
            .arg(&sc.prefix)
            .args(["manifest", "all", "--tag", "v1", "--workspace"])
            .arg(&empty)
            .arg("--digests-dir")
            .arg(&digests)
            .args(extra);
        common::run_command(cmd)
    };
    let run = manifest(&[]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("21 manifest lists: 21 pushed"),
        "{}",
        run.stderr
    );
    let pushed = run.pushed();
    assert_eq!(pushed.len(), 21);
    let docker_list = "application/vnd.docker.distribution.manifest.list.v2+json";
    for image in &sc.ws.images {
        let (_, digest) = check_list(
            &sc.registry,
            &sc.prefix,
            &image.name,
            "v1",
            docker_list,
            &["amd64", "arm64"],
        );
        let reference = format!("{prefix}/{}:v1", image.name);
        assert!(pushed.contains(&(reference, digest.clone())));
        if image.target != "other-images" {
            let file = digests.join(format!("push-{}.digest", image.target));
            assert_eq!(std::fs::read_to_string(file).unwrap(), digest);
        }
    }
    // A client picks each platform's image out of the list.
    for name in ["virt-api", "cirros-container-disk-demo"] {
        let list = format!("{prefix}/{name}:v1");
        for arch in ["amd64", "arm64"] {
            let child = format!("{prefix}/{name}:v1-{arch}");
            let got = resolved(&sc.registry, &list, arch);
            assert!(got.starts_with(&format!("{arch} [")), "{got}");
            assert_eq!(
                got,
                resolved(&sc.registry, &child, arch),
                "{list} for {arch}"
            );
        }
    }
    assert_ne!(
        resolved(&sc.registry, &format!("{prefix}/virt-api:v1"), "amd64"),
        resolved(&sc.registry, &format!("{prefix}/virt-api:v1"), "arm64"),
        "virt-api's arm64 binary layer differs"
    );

    // Again: every list is already there, nothing is written; the JSON
    // report lists them with their platforms.
    let puts = sc.registry.count_requests("PUT", "/manifests/");
    let run = manifest(&["--output", "json"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("0 pushed, 21 skipped"),
        "{}",
        run.stderr
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sc.registry.count_requests("PUT", "/manifests/"), puts);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(doc["images"].as_array().unwrap().len(), 0);
    let lists = doc["manifest_lists"].as_array().unwrap();
    assert_eq!((lists.len(), doc["unchanged"].as_u64()), (21, Some(21)));
    for list in lists {
        assert_eq!(list["status"], "unchanged");
        assert_eq!(
            list["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64"])
        );
        let reference = list["references"][0].as_str().unwrap();
        assert!(pushed
            .iter()
            .any(|(r, d)| r == reference && list["digest"] == d.as_str()));
    }
}

#[test]
fn a_missing_or_mislabelled_child_fails_its_list_unless_allowed() {
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    assert_eq!(sc.push(&["virt-api"], &["--tag", "v1-amd64"]).code, 0);
    let args = [
        "manifest",
        "virt-api",
        "--registry",
        &sc.prefix,
        "--tag",
        "v1",
        "--arch",
        "amd64,arm64",
    ];
    let run = sc.kvpush(&args);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "{prefix}/virt-api:v1-arm64 not found in the registry"
        )) && run.stderr.contains("--allow-missing"),
        "{}",
        run.stderr
    );
    assert!(!sc
        .registry
        .tags("kubevirt/virt-api")
        .contains(&"v1".to_string()));

    let mut allowed = args.to_vec();
    allowed.push("--allow-missing");
    let run = sc.kvpush(&allowed);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("WARN") && run.stderr.contains("leaves out arm64"),
        "{}",
        run.stderr
    );
    check_list(
        &sc.registry,
        &sc.prefix,
        "virt-api",
        "v1",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &["amd64"],
    );

    // An amd64 image pushed under the arm64 tag is refused, not listed.
    for tag in ["v2-amd64", "v2-arm64"] {
        assert_eq!(sc.push(&["virt-api"], &["--tag", tag]).code, 0);
    }
    let run = sc.kvpush(&[
        "manifest",
        "virt-api",
        "--registry",
        &sc.prefix,
        "--tag",
        "v2",
        "--arch",
        "amd64,arm64",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "{prefix}/virt-api:v2-arm64: it is a linux/amd64 image (its config says architecture \"amd64\"), not arm64"
        )),
        "{}",
        run.stderr
    );
    assert!(!sc
        .registry
        .tags("kubevirt/virt-api")
        .contains(&"v2".to_string()));
}

#[test]
fn arch_bin_pushes_every_tree_and_the_lists_in_one_run_sharing_blobs() {
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    let arm = arm64_fixture();
    let digests = sc.dir.path().join("digests");
    let amd_bin = format!("x86_64={}", sc.ws.root.display());
    let arm_bin = format!("arm64={}", arm.ws.root.join("bazel-bin").display());
    let mut cmd = common::kvpush_command(&sc.home());
    cmd.args([
        "all",
        "--registry",
        &sc.prefix,
        "--tag",
        "v3",
        "--arch-bin",
        &amd_bin,
        "--arch-bin",
        &arm_bin,
        "--digests-dir",
    ])
    .arg(&digests);
    let run = common::run_command(cmd);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("42 images: 42 pushed")
            && run.stderr.contains("21 manifest lists: 21 pushed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.pushed().len(),
        63,
        "21 images per architecture, 21 lists"
    );

    // A blob common to both architectures went up once.
    let distinct = common::distinct_blobs(sc.ws.images.iter().chain(&arm.ws.images));
    assert_eq!(
        blob_uploads(&sc.registry),
        distinct.len(),
        "one upload per distinct blob"
    );
    // And one plan: a layer both trees hold was read and compressed once.
    let layers: HashSet<&str> = sc
        .ws
        .images
        .iter()
        .chain(&arm.ws.images)
        .flat_map(|i| i.diff_ids.iter().map(String::as_str))
        .collect();
    assert!(
        run.stderr
            .contains(&format!("layers: {} compressed by kvpush", layers.len())),
        "{} distinct layers: {}",
        layers.len(),
        run.stderr
    );

    // The lists name the images this run has just pushed without reading
    // them back (no GET of a manifest or of a config blob).
    assert_eq!(
        (
            sc.registry.count_requests("GET", "/manifests/"),
            sc.registry.count_requests("GET", "/blobs/sha256:")
        ),
        (0, 0),
        "no child read back"
    );

    let docker_list = "application/vnd.docker.distribution.manifest.list.v2+json";
    for (a, b) in sc.ws.images.iter().zip(&arm.ws.images) {
        verify_with_skopeo(&sc.registry, &format!("{prefix}/{}:v3-arm64", b.name), b);
        let (_, digest) = check_list(
            &sc.registry,
            &sc.prefix,
            &a.name,
            "v3",
            docker_list,
            &["amd64", "arm64"],
        );
        if a.target != "other-images" {
            let file = |d: &std::path::Path| {
                std::fs::read_to_string(d.join(format!("push-{}.digest", a.target))).unwrap()
            };
            assert_eq!(file(&digests), digest, "the list's digest");
            assert_eq!(
                Some(file(&digests.join("arm64"))),
                sc.registry
                    .manifest_digest(&format!("kubevirt/{}", a.name), "v3-arm64"),
                "the arm64 image's digest"
            );
        }
    }
}

#[test]
fn an_index_layout_is_pushed_children_first_with_its_own_digest() {
    // An OCI index in the registry, then a layout of it written by skopeo.
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    let arm = arm64_fixture();
    for (fx, tag) in [(&sc.fx, "v4-amd64"), (&arm, "v4-arm64")] {
        let run = sc.push_from(fx, &["virt-controller"], &["--tag", tag, "--format", "oci"]);
        assert_eq!(run.code, 0);
    }
    let run = sc.kvpush(&[
        "manifest",
        "virt-controller",
        "--registry",
        &sc.prefix,
        "--tag",
        "v4",
        "--arch",
        "amd64,arm64",
    ]);
    assert_eq!(run.code, 0);
    let oci_index = "application/vnd.oci.image.index.v1+json";
    let (_, index_digest) = check_list(
        &sc.registry,
        &sc.prefix,
        "virt-controller",
        "v4",
        oci_index,
        &["amd64", "arm64"],
    );

    let layout = bin_dir(&sc.ws.root).join("cmd/virt-controller/virt-controller-image");
    let mut args = sc.registry.skopeo_src_args();
    args.push("--all".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    skopeo_copy(
        &format!("docker://{prefix}/virt-controller:v4"),
        &format!("oci:{}", layout.display()),
        &args,
    )
    .unwrap();
    std::fs::remove_file(&sc.image("virt-controller").tarball).unwrap();

    let list = sc.kvpush(&["list", "virt-controller"]);
    assert!(
        list.stdout.contains("index of linux/amd64, linux/arm64"),
        "{}",
        list.stdout
    );

    let other = Registry::start(RegistryKind::Plain);
    let other_prefix = format!("{}/mirror", other.addr());
    let run = sc.kvpush(&[
        "virt-controller",
        "--registry",
        &other_prefix,
        "--tag",
        "v4",
    ]);
    assert_eq!(run.code, 0);
    let reference = format!("{other_prefix}/virt-controller:v4");
    assert_eq!(
        run.pushed(),
        vec![(reference.clone(), index_digest.clone())]
    );
    let (pushed, digest) = raw_manifest(&other, &format!("docker://{reference}"));
    assert_eq!(digest, index_digest, "the layout's index, byte for byte");
    assert_eq!(pushed["mediaType"], oci_index);
    for arch in ["amd64", "arm64"] {
        assert_eq!(
            resolved(&other, &reference, arch),
            resolved(
                &sc.registry,
                &format!("{prefix}/virt-controller:v4-{arch}"),
                arch
            )
        );
    }
    // Children went in by digest before the index went in under its tag.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let puts: Vec<String> = other
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.uri.contains("/manifests/"))
        .map(|r| r.uri)
        .collect();
    let children: Vec<&str> = pushed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert!(
        puts[0].ends_with(children[0]) && puts[1].ends_with(children[1]),
        "{puts:?}"
    );
    assert!(puts[2].ends_with("/manifests/v4"), "{puts:?}");
}

#[test]
fn lists_are_made_through_token_auth() {
    // Children are read with pull-scoped tokens, the list is pushed with a
    // push-scoped one.
    let sc = Scenario::small(RegistryKind::Token);
    let arm = arm64_fixture();
    let (user, password) = sc.registry.credentials().unwrap();
    let run = |fx: &Fixture, args: &[&str]| {
        let mut cmd = fx.command();
        cmd.env("KVPUSH_USERNAME", user)
            .env("KVPUSH_PASSWORD", password)
            .args(args);
        common::run_command(cmd)
    };
    assert_eq!(
        run(
            &sc,
            &["virt-api", "--registry", &sc.prefix, "--tag", "t-amd64"]
        )
        .code,
        0
    );
    assert_eq!(
        run(
            &arm,
            &["virt-api", "--registry", &sc.prefix, "--tag", "t-arm64"]
        )
        .code,
        0
    );
    let made = run(
        &sc,
        &[
            "manifest",
            "virt-api",
            "--registry",
            &sc.prefix,
            "--tag",
            "t",
            "--arch",
            "amd64,arm64",
        ],
    );
    assert_eq!(made.code, 0);
    assert!(!made.stderr.contains(password), "no secret in the output");
    check_list(
        &sc.registry,
        &sc.prefix,
        "virt-api",
        "t",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &["amd64", "arm64"],
    );
    let tokens = sc.registry.token_requests();
    assert!(
        tokens
            .iter()
            .any(|q| q.scopes == ["repository:kubevirt/virt-api:pull"]),
        "a pull-only token was asked for: {tokens:?}"
    );
}
