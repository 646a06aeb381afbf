//! The push targets and the bundle's images come from the workspace's root
//! BUILD.bazel, so a bundle that gains or loses an image is followed
//! without a kvpush change; the built-in table is only the fallback.

mod common;

use common::{make_writable, parts_spec, Fixture, Scenario};
use kvpush_fixtures::{RegistryKind, WorkspaceSpec};

const NEW_IMAGE: &str = "alpine-ext-kernel-boot-demo";

#[test]
fn a_bundle_image_added_to_build_bazel_is_pushed_too() {
    let sc = Scenario::new(
        WorkspaceSpec {
            extra_bundle_images: vec![NEW_IMAGE.into()],
            ..parts_spec()
        },
        RegistryKind::Plain,
    );

    let list = sc.kvpush(&["list", "other-images"]);
    assert_eq!(list.code, 0);
    let build = sc.ws.root.join("BUILD.bazel");
    assert!(
        list.stdout.starts_with(&format!(
            "targets from {} (7 push targets)\n",
            build.display()
        )),
        "{}",
        list.stdout
    );
    // In BUILD order: the new image comes after winrmcli, the last of the 15.
    let names: Vec<&str> = list
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with("parts:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names.len(), 16, "{}", list.stdout);
    assert_eq!(&names[14..], ["winrmcli", NEW_IMAGE]);

    let run = sc.push(&["all"], &["--tag", "t"]);
    assert_eq!(run.code, 0);
    assert_eq!(run.pushed().len(), 22);
    assert!(
        run.stderr.contains("22 images: 22 pushed"),
        "{}",
        run.stderr
    );
    let image = sc.image(NEW_IMAGE);
    assert_eq!(
        &sc.verify(NEW_IMAGE, "t"),
        image.rules_docker_digest.as_ref().unwrap(),
        "pushed from its push-other-images.15.push parts"
    );
}

#[test]
fn an_image_dropped_from_build_bazel_is_not_pushed_from_a_stale_bundle() {
    let fx = Fixture::small();
    let build = fx.ws.root.join("BUILD.bazel");
    let text = std::fs::read_to_string(&build).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.contains("winrmcli"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(without.lines().count() + 1, text.lines().count());
    std::fs::write(&build, without).unwrap();

    // bazel-bin still holds winrmcli in the bundle tarball, from an older build.
    let run = fx.kvpush(&["all", "--registry", "quay.io/kubevirt", "--dry-run"]);
    assert_eq!(run.code, 0);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("would push "))
        .collect();
    assert_eq!(lines.len(), 20, "{}", run.stdout);
    assert!(!run.stdout.contains("winrmcli"), "{}", run.stdout);

    // Without a BUILD.bazel, the built-in table (and what the bundle holds).
    std::fs::remove_file(&build).unwrap();
    let list = fx.kvpush(&["list"]);
    assert!(
        list.stdout.starts_with(&format!(
            "targets from kvpush's built-in table (no BUILD.bazel in {})",
            fx.ws.root.display()
        )),
        "{}",
        list.stdout
    );
    let run = fx.kvpush(&["all", "--registry", "quay.io/kubevirt", "--dry-run"]);
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("would push "))
            .count(),
        21
    );
}

#[test]
fn a_syntax_error_in_build_bazel_is_reported_with_its_position() {
    let fx = Fixture::small();
    let build = fx.ws.root.join("BUILD.bazel");
    make_writable(&build);
    let text = std::fs::read_to_string(&build).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("image = \"//cmd/virt-api:virt-api-image\""))
        .unwrap()
        + 1;
    // Drop the comma ending the line before: `format = "Docker"` then `image`.
    let broken = text.replacen(
        "    format = \"Docker\",\n    image = \"//cmd/virt-api:",
        "    format = \"Docker\"\n    image = \"//cmd/virt-api:",
        1,
    );
    assert_ne!(broken, text);
    std::fs::write(&build, broken).unwrap();

    for args in [&["all", "--registry", "127.0.0.1:9/kv"][..], &["list"][..]] {
        let run = fx.kvpush(args);
        assert_eq!(run.code, 1, "{args:?}");
        assert!(
            run.stderr.contains(&format!(
                "kvpush: error: cannot parse {} at line {line}, column 5: ",
                build.display()
            )) && run.stderr.contains("image"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
}
