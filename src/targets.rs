//! The seven KubeVirt push targets, the images of the bundle, where Bazel
//! leaves each tarball, and how destinations are named. Knows nothing of
//! tar or HTTP.

use std::path::PathBuf;

/// The images of `container_bundle(name = "build-other-images")`, pushed by
/// `push-other-images`. Entries found in the bundle but not listed here are
/// pushed too: KubeVirt's list changes over time.
pub const BUNDLE_IMAGES: [&str; 15] = [
    "example-hook-sidecar",
    "example-cloudinit-hook-sidecar",
    "subresource-access-test",
    "alpine-container-disk-demo",
    "cirros-container-disk-demo",
    "cirros-custom-container-disk-demo",
    "fedora-cloud-container-disk-demo",
    "microlivecd-container-disk-demo",
    "virtio-container-disk",
    "fedora-sriov-lane-container-disk",
    "disks-images-provider",
    "cdi-http-import-server",
    "nfs-server",
    "vm-killer",
    "winrmcli",
];

/// The Bazel label of each bundle image, where an OCI layout of it is found
/// when there is no bundle tarball (rules_oci has no `container_bundle`).
pub const BUNDLE_LABELS: [(&str, &str); 15] = [
    (
        "example-hook-sidecar",
        "//cmd/example-hook-sidecar:example-hook-sidecar-image",
    ),
    (
        "example-cloudinit-hook-sidecar",
        "//cmd/example-cloudinit-hook-sidecar:example-cloudinit-hook-sidecar-image",
    ),
    (
        "subresource-access-test",
        "//cmd/subresource-access-test:subresource-access-test-image",
    ),
    (
        "alpine-container-disk-demo",
        "//containerimages:alpine-container-disk-image",
    ),
    (
        "cirros-container-disk-demo",
        "//containerimages:cirros-container-disk-image",
    ),
    (
        "cirros-custom-container-disk-demo",
        "//containerimages:cirros-custom-container-disk-image",
    ),
    (
        "fedora-cloud-container-disk-demo",
        "//containerimages:fedora-cloud-container-disk-image",
    ),
    (
        "microlivecd-container-disk-demo",
        "//containerimages:microlivecd-container-disk-image",
    ),
    (
        "virtio-container-disk",
        "//containerimages:virtio-container-disk-image",
    ),
    (
        "fedora-sriov-lane-container-disk",
        "//containerimages:fedora-sriov-lane-container-disk-image",
    ),
    (
        "disks-images-provider",
        "//images/disks-images-provider:disks-images-provider-image",
    ),
    (
        "cdi-http-import-server",
        "//images/cdi-http-import-server:cdi-http-import-server-image",
    ),
    ("nfs-server", "//images/nfs-server:nfs-server-image"),
    ("vm-killer", "//images/vm-killer:vm-killer-image"),
    ("winrmcli", "//images/winrmcli:winrmcli-image"),
];

/// The label of a bundle image, from [`BUNDLE_LABELS`].
pub fn bundle_label(name: &str) -> Option<&'static str> {
    BUNDLE_LABELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, label)| *label)
}

/// Where an OCI image layout of `label` (`//P:X`) may be, in the order
/// kvpush looks: the directory `P/X/` (rules_oci's `oci_image`), then a tar
/// of it, `P/X.oci.tar`.
pub fn layout_paths(bazel_bin: &std::path::Path, label: &str) -> [PathBuf; 2] {
    let (pkg, name) = label
        .trim_start_matches("//")
        .split_once(':')
        .unwrap_or(("", label));
    let dir = bazel_bin.join(pkg);
    [dir.join(name), dir.join(format!("{name}.oci.tar"))]
}

/// A `push-*` target of KubeVirt's root BUILD.bazel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// Name without the `push-` prefix, e.g. `virt-api`.
    pub name: &'static str,
    /// Tarball path relative to bazel-bin.
    pub tarball: &'static str,
    /// The Bazel label whose `.tar` output is the tarball.
    pub label: &'static str,
    /// True for the bundle target (15 images in one tarball).
    pub bundle: bool,
}

/// The seven targets, in the order KubeVirt's hack/bazel-push-images.sh
/// pushes them.
pub const TARGETS: [Target; 7] = [
    Target {
        name: "other-images",
        tarball: "build-other-images.tar",
        label: "//:build-other-images",
        bundle: true,
    },
    single(
        "virt-operator",
        "cmd/virt-operator/virt-operator-image.tar",
        "//cmd/virt-operator:virt-operator-image",
    ),
    single(
        "virt-api",
        "cmd/virt-api/virt-api-image.tar",
        "//cmd/virt-api:virt-api-image",
    ),
    single(
        "virt-controller",
        "cmd/virt-controller/virt-controller-image.tar",
        "//cmd/virt-controller:virt-controller-image",
    ),
    single(
        "virt-handler",
        "cmd/virt-handler/virt-handler-image.tar",
        "//cmd/virt-handler:virt-handler-image",
    ),
    single(
        "virt-launcher",
        "cmd/virt-launcher/virt-launcher-image.tar",
        "//cmd/virt-launcher:virt-launcher-image",
    ),
    single(
        "conformance",
        "tests/conformance_image.tar",
        "//tests:conformance_image",
    ),
];

const fn single(name: &'static str, tarball: &'static str, label: &'static str) -> Target {
    Target {
        name,
        tarball,
        label,
        bundle: false,
    }
}

impl Target {
    /// `push-<name>`, the Bazel target that pushes it.
    pub fn push_name(&self) -> String {
        format!("push-{}", self.name)
    }

    /// The command that makes Bazel write this target's tarball.
    pub fn build_command(&self) -> String {
        if self.bundle {
            format!("bazel build {} --output_groups=+tar", self.label)
        } else {
            format!("bazel build {}.tar", self.label)
        }
    }

    pub fn tarball_path(&self, bazel_bin: &std::path::Path) -> PathBuf {
        bazel_bin.join(self.tarball)
    }

    /// The `.digest` file KubeVirt's build-manifests.sh reads; bundle
    /// images have none.
    pub fn digest_file_name(&self) -> Option<String> {
        (!self.bundle).then(|| format!("push-{}.digest", self.name))
    }
}

/// What the user asked to push: whole targets or single bundle images.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selection {
    Target(Target),
    /// One image of the bundle, by name.
    BundleImage(String),
}

/// Resolve the names on the command line (`all`, a target with or without
/// `push-`, or a bundle image) into selections, in target order, deduplicated.
pub fn resolve(names: &[String]) -> Result<Vec<Selection>, String> {
    let mut out = Vec::new();
    for raw in names {
        let name = raw.trim();
        let bare = name.strip_prefix("push-").unwrap_or(name);
        if bare == "all" {
            out.extend(TARGETS.iter().copied().map(Selection::Target));
        } else if let Some(t) = TARGETS.iter().find(|t| t.name == bare) {
            out.push(Selection::Target(*t));
        } else if BUNDLE_IMAGES.contains(&bare) || (bare == name && looks_like_image_name(bare)) {
            // Names outside the table may still be in a newer bundle; the
            // bundle itself says, later, whether the image is there.
            out.push(Selection::BundleImage(bare.to_string()));
        } else {
            return Err(unknown_target(raw));
        }
    }
    out.sort();
    out.dedup();
    // A whole bundle already includes its single images.
    if out.contains(&Selection::Target(TARGETS[0])) {
        out.retain(|s| !matches!(s, Selection::BundleImage(_)));
    }
    Ok(out)
}

fn looks_like_image_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && s.contains('-')
}

fn unknown_target(name: &str) -> String {
    let targets: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    format!(
        "unknown target {name:?}: name `all`, a target ({}) or an image of the bundle ({})",
        targets.join(", "),
        BUNDLE_IMAGES.join(", ")
    )
}

/// `{registry}/{image_prefix}{name}:{tag}`, the destination of an image.
pub fn destination(registry: &str, image_prefix: &str, name: &str, tag: &str) -> String {
    format!(
        "{}/{image_prefix}{name}:{tag}",
        registry.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn all_expands_to_the_seven_targets() {
        let sel = resolve(&names(&["all"])).unwrap();
        assert_eq!(sel.len(), 7);
        assert!(sel.iter().all(|s| matches!(s, Selection::Target(_))));
    }

    #[test]
    fn targets_with_or_without_push_prefix_and_bundle_images() {
        let sel = resolve(&names(&[
            "push-virt-api",
            "virt-api",
            "cirros-container-disk-demo",
        ]))
        .unwrap();
        assert_eq!(
            sel,
            vec![
                Selection::Target(TARGETS[2]),
                Selection::BundleImage("cirros-container-disk-demo".into())
            ]
        );
        let sel = resolve(&names(&["other-images", "vm-killer"])).unwrap();
        assert_eq!(sel, vec![Selection::Target(TARGETS[0])]);
    }

    #[test]
    fn unknown_names_are_rejected_with_the_valid_ones() {
        let err = resolve(&names(&["push-nope"])).unwrap_err();
        assert!(
            err.contains("unknown target \"push-nope\"") && err.contains("virt-handler"),
            "{err}"
        );
        assert!(resolve(&names(&["Virt_API"])).is_err());
    }

    #[test]
    fn bundle_labels_cover_the_bundle_and_give_layout_paths() {
        for name in BUNDLE_IMAGES {
            assert!(bundle_label(name).is_some(), "{name}");
        }
        let bin = std::path::Path::new("/b");
        assert_eq!(
            layout_paths(bin, bundle_label("vm-killer").unwrap()),
            [
                PathBuf::from("/b/images/vm-killer/vm-killer-image"),
                PathBuf::from("/b/images/vm-killer/vm-killer-image.oci.tar")
            ]
        );
        assert_eq!(
            layout_paths(bin, TARGETS[6].label)[0],
            PathBuf::from("/b/tests/conformance_image")
        );
    }

    #[test]
    fn destination_and_build_commands() {
        assert_eq!(
            destination("quay.io/kubevirt/", "kv-", "virt-api", "v1"),
            "quay.io/kubevirt/kv-virt-api:v1"
        );
        assert_eq!(
            TARGETS[0].build_command(),
            "bazel build //:build-other-images --output_groups=+tar"
        );
        assert_eq!(
            TARGETS[6].build_command(),
            "bazel build //tests:conformance_image.tar"
        );
        assert_eq!(
            TARGETS[4].digest_file_name().unwrap(),
            "push-virt-handler.digest"
        );
        assert_eq!(TARGETS[0].digest_file_name(), None);
    }
}
