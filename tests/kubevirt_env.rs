//! KubeVirt's push environment with no target on the command line:
//! PUSH_TARGETS, DOCKER_PREFIX, DOCKER_TAG, DOCKER_TAG_ALT, IMAGE_PREFIX,
//! IMAGE_PREFIX_ALT, ARCHITECTURE and DIGESTS_DIR change what lands as
//! hack/bazel-push-images.sh's loops would (catalog and tags compared),
//! and leave the files each era's script left in DIGESTS_DIR.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{blob_uploads, raw_manifest, run_command, Run, Scenario};
use kvpush_fixtures::{generate_rules_oci_workspace, RulesOciSpec};

/// kvpush with no target and no flag but --workspace, in KubeVirt's
/// environment pushing to the scenario's registry.
fn kubevirt_push(sc: &Scenario, digests: &std::path::Path, extra: &[(&str, &str)]) -> Run {
    let mut cmd: Command = sc.fx.command();
    cmd.env("PUSH_TARGETS", "virt-api virt-handler")
        .env("DOCKER_PREFIX", &sc.prefix)
        .env("DOCKER_TAG", "t1")
        .env("DOCKER_TAG_ALT", "t2")
        .env("IMAGE_PREFIX", "kv-")
        .env("IMAGE_PREFIX_ALT", "alt-")
        .env("ARCHITECTURE", "x86_64")
        .env("DIGESTS_DIR", digests);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    run_command(cmd)
}

/// What the original script's loops push: each target under IMAGE_PREFIX
/// at DOCKER_TAG and DOCKER_TAG_ALT, then under IMAGE_PREFIX_ALT at
/// DOCKER_TAG only.
fn assert_lands_as_the_script_would(sc: &Scenario) {
    assert_eq!(
        sc.catalog(),
        [
            "kubevirt/alt-virt-api",
            "kubevirt/alt-virt-handler",
            "kubevirt/kv-virt-api",
            "kubevirt/kv-virt-handler"
        ]
    );
    for name in ["virt-api", "virt-handler"] {
        assert_eq!(
            sc.registry.tags(&format!("kubevirt/kv-{name}")),
            ["t1", "t2"]
        );
        assert_eq!(sc.registry.tags(&format!("kubevirt/alt-{name}")), ["t1"]);
    }
}

#[test]
fn rules_docker_era_environment_and_digest_files() {
    let sc = Scenario::plain();
    let digests = sc.dir.path().join("digests");
    let run = kubevirt_push(&sc, &digests, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_lands_as_the_script_would(&sc);
    // The second tag and the second prefix cost no blob upload: every blob
    // went up once (the alt- repositories got mounts).
    let mut blobs = BTreeSet::new();
    for name in ["virt-api", "virt-handler"] {
        let reference = format!("docker://{}/kv-{name}:t1", sc.prefix);
        let (manifest, digest) = raw_manifest(&sc.registry, &reference);
        blobs.insert(manifest["config"]["digest"].as_str().unwrap().to_string());
        for l in manifest["layers"].as_array().unwrap() {
            blobs.insert(l["digest"].as_str().unwrap().to_string());
        }
        let file = digests.join(format!("x86_64/bazel-bin/push-{name}.digest"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), digest, "{file:?}");
    }
    assert_eq!(blob_uploads(&sc.registry), blobs.len());

    // Naming a target on the command line: the _ALT variables are not read.
    let mut cmd = sc.fx.command();
    cmd.args(["virt-api", "--registry", &sc.prefix, "--tag", "t3"])
        .env("DOCKER_TAG_ALT", "t4")
        .env("IMAGE_PREFIX_ALT", "other-");
    let run = run_command(cmd);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sc.registry.tags("kubevirt/virt-api"), ["t3"]);
    assert!(!sc
        .catalog()
        .contains(&"kubevirt/other-virt-api".to_string()));
}

#[test]
fn rules_oci_era_environment_and_marker_files() {
    let sc = Scenario::plain();
    let ws = generate_rules_oci_workspace(&sc.ws.root, &RulesOciSpec::default()).unwrap();
    let digests = sc.dir.path().join("digests");
    let run = kubevirt_push(
        &sc,
        &digests,
        &[("ARCHITECTURE", ""), ("BUILD_ARCH", "s390x")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_lands_as_the_script_would(&sc);
    for t in ws
        .targets
        .iter()
        .filter(|t| t.name == "virt-api" || t.name == "virt-handler")
    {
        let dir = digests.join("s390x").join(&t.name);
        assert_eq!(
            std::fs::read(dir.join(format!("{}.image", t.name))).unwrap(),
            b""
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("{}.digest", t.name))).unwrap(),
            t.manifest_digest
        );
        let reference = format!("docker://{}/alt-{}:t1", sc.prefix, t.name);
        assert_eq!(raw_manifest(&sc.registry, &reference).1, t.manifest_digest);
    }
    assert!(!digests.join("s390x/bazel-bin").exists());
}
