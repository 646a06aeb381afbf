//! rules_oci `oci_push` targets: the `oci_image` layout directories are
//! pushed byte for byte (copied or symlinked blobs), a BUILD.bazel mixing
//! rules_docker and rules_oci targets works, and broken input (a missing
//! blob, a missing layout, a target named twice) is refused clearly.

mod common;

use common::{raw_manifest, Scenario};
use kvpush_fixtures::{
    generate_rules_oci_workspace, skopeo_copy_to_dir, BlobStyle, RulesOciSpec, RulesOciWorkspace,
    RULES_OCI_LOAD,
};

/// A scenario whose workspace is a rules_oci one (its BUILD.bazel replaced).
fn rules_oci(blobs: BlobStyle) -> (Scenario, RulesOciWorkspace) {
    let sc = Scenario::plain();
    let spec = RulesOciSpec {
        blobs,
        scale_bytes: 256 << 10,
        ..RulesOciSpec::default()
    };
    let ws = generate_rules_oci_workspace(&sc.ws.root, &spec).unwrap();
    (sc, ws)
}

#[test]
fn oci_push_layouts_land_byte_for_byte_in_both_blob_styles() {
    for blobs in [BlobStyle::Copy, BlobStyle::Symlink] {
        let (sc, ws) = rules_oci(blobs);
        let list = sc.kvpush(&["list", "--registry", &sc.prefix]);
        assert_eq!(list.code, 0, "{}", list.stderr);
        assert!(
            list.stdout.contains(
                "push-virt-api  (bazel-bin/cmd/virt-api/virt-api-image/)  [rules_oci oci_push]"
            ),
            "{}",
            list.stdout
        );
        let run = sc.push(&["all"], &["--tag", "oci"]);
        assert_eq!(run.code, 0, "{blobs:?}: {}", run.stderr);
        assert!(run.stderr.contains("5 images: 5 pushed"), "{}", run.stderr);
        for t in &ws.targets {
            let reference = format!("docker://{}", sc.reference(&t.name, "oci"));
            let (manifest, digest) = raw_manifest(&sc.registry, &reference);
            assert_eq!(digest, t.manifest_digest, "{reference}");
            let digest_file = t
                .layout
                .with_file_name(format!("{}-image.json.sha256", t.name));
            assert_eq!(std::fs::read_to_string(digest_file).unwrap(), digest);
            // pkg_tar layers stay uncompressed.
            let last = manifest["layers"].as_array().unwrap().last().unwrap();
            assert_eq!(last["mediaType"], "application/vnd.oci.image.layer.v1.tar");
            // Every blob is fetchable.
            let out = tempfile::tempdir().unwrap();
            let args = sc.registry.skopeo_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            skopeo_copy_to_dir(&reference, out.path(), &args)
                .unwrap_or_else(|e| panic!("{reference}: {e}"));
        }
        assert!(run.pushed().contains(&(
            sc.reference("virt-api", "oci"),
            ws.targets[1].manifest_digest.clone()
        )));
    }
}

#[test]
fn a_build_file_mixing_eras_pushes_each_target_from_its_own_output() {
    let sc = Scenario::plain();
    let docker_build = std::fs::read_to_string(sc.ws.root.join("BUILD.bazel")).unwrap();
    let ws = generate_rules_oci_workspace(&sc.ws.root, &RulesOciSpec::default()).unwrap();
    // virt-api and virt-handler have moved to rules_oci, the rest not yet.
    let mut build = format!("{RULES_OCI_LOAD}{docker_build}");
    for name in ["virt-api", "virt-handler"] {
        let start = build
            .find(&format!("container_push(\n    name = \"push-{name}\""))
            .unwrap();
        let end = start + build[start..].find("\n)\n").unwrap() + 3;
        build.replace_range(
            start..end,
            &format!(
                "oci_push(\n    name = \"push-{name}\",\n    image = \"//cmd/{name}:{name}-image\",\n    repository = \"quay.io/kubevirt/{name}\",\n)\n"
            ),
        );
    }
    std::fs::write(sc.ws.root.join("BUILD.bazel"), build).unwrap();
    let list = sc.kvpush(&["list"]);
    assert!(
        list.stdout.contains("[rules_oci oci_push]")
            && list.stdout.contains("[rules_docker container_push]"),
        "{}",
        list.stdout
    );
    let run = sc.push(
        &["virt-api", "virt-handler", "virt-controller"],
        &["--tag", "mid"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    for t in ws
        .targets
        .iter()
        .filter(|t| t.name == "virt-api" || t.name == "virt-handler")
    {
        let reference = format!("docker://{}", sc.reference(&t.name, "mid"));
        assert_eq!(raw_manifest(&sc.registry, &reference).1, t.manifest_digest);
    }
    sc.verify("virt-controller", "mid");
}

#[test]
fn broken_rules_oci_input_is_refused_naming_what_to_do() {
    let (sc, ws) = rules_oci(BlobStyle::Symlink);
    // A layout whose index names a blob that is not there (a dangling link).
    let api = &ws.targets[1];
    let layer = &api.image.layers[2].digest;
    std::fs::remove_file(
        sc.ws
            .root
            .join("bazel-bin/cmd/virt-api/_virt-api-image.blobs")
            .join(&layer[7..]),
    )
    .unwrap();
    // An oci_push whose image has no layout.
    std::fs::remove_dir_all(&ws.targets[2].layout).unwrap();
    let run = sc.push(
        &["virt-api", "virt-handler", "virt-operator"],
        &["--tag", "t"],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains(&format!("{layer} is not in the layout")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no OCI layout of virt-handler")
            && run
                .stderr
                .contains("build it with `bazel build //cmd/virt-handler:virt-handler-image`")
            && run
                .stderr
                .contains("never runs bazel-bin/push_push-virt-handler.sh"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("1 pushed"), "{}", run.stderr);
    // A stale digest file.
    let op = &ws.targets[0];
    std::fs::write(
        op.layout.with_file_name("virt-operator-image.json.sha256"),
        format!("sha256:{}", "0".repeat(64)),
    )
    .unwrap();
    let run = sc.push(&["virt-operator"], &["--tag", "t2"]);
    assert!(
        run.code != 0 && run.stderr.contains("one of them is stale"),
        "{}",
        run.stderr
    );
    // A BUILD.bazel naming a target twice.
    let path = sc.ws.root.join("BUILD.bazel");
    let mut build = std::fs::read_to_string(&path).unwrap();
    build.push_str("oci_push(name = \"push-virt-api\", image = \"//x:y\", repository = \"r/x\")\n");
    std::fs::write(&path, build).unwrap();
    let run = sc.push(&["all"], &[]);
    assert!(
        run.code != 0
            && run
                .stderr
                .contains("a second target named \"push-virt-api\""),
        "{}",
        run.stderr
    );
}
