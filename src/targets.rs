//! KubeVirt's push targets, the images of the bundle, where Bazel leaves
//! each tarball and push script, and how destinations are named. Knows
//! nothing of tar or HTTP.
//!
//! The targets come from the workspace's root BUILD.bazel when it declares
//! push targets ([`build_file`]), else from the built-in table of the seven
//! targets KubeVirt had when it pushed with rules_docker ([`TARGETS`]).

pub mod build_file;

use std::path::{Path, PathBuf};

/// An image of a bundle: its name (`cirros-container-disk-demo`) and its
/// Bazel label, where an OCI layout of it is looked for when there is no
/// bundle tarball (rules_oci has no `container_bundle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleImage {
    pub name: &'static str,
    /// `//pkg:name`; empty when unknown.
    pub label: &'static str,
}

const fn bundle_image(name: &'static str, label: &'static str) -> BundleImage {
    BundleImage { name, label }
}

/// The images of `container_bundle(name = "build-other-images")`, pushed by
/// `push-other-images`. Entries found in the bundle but not listed here are
/// pushed too: KubeVirt's list changes over time.
pub const BUNDLE_IMAGES: [BundleImage; 15] = [
    bundle_image(
        "example-hook-sidecar",
        "//cmd/example-hook-sidecar:example-hook-sidecar-image",
    ),
    bundle_image(
        "example-cloudinit-hook-sidecar",
        "//cmd/example-cloudinit-hook-sidecar:example-cloudinit-hook-sidecar-image",
    ),
    bundle_image(
        "subresource-access-test",
        "//cmd/subresource-access-test:subresource-access-test-image",
    ),
    bundle_image(
        "alpine-container-disk-demo",
        "//containerimages:alpine-container-disk-image",
    ),
    bundle_image(
        "cirros-container-disk-demo",
        "//containerimages:cirros-container-disk-image",
    ),
    bundle_image(
        "cirros-custom-container-disk-demo",
        "//containerimages:cirros-custom-container-disk-image",
    ),
    bundle_image(
        "fedora-cloud-container-disk-demo",
        "//containerimages:fedora-cloud-container-disk-image",
    ),
    bundle_image(
        "microlivecd-container-disk-demo",
        "//containerimages:microlivecd-container-disk-image",
    ),
    bundle_image(
        "virtio-container-disk",
        "//containerimages:virtio-container-disk-image",
    ),
    bundle_image(
        "fedora-sriov-lane-container-disk",
        "//containerimages:fedora-sriov-lane-container-disk-image",
    ),
    bundle_image(
        "disks-images-provider",
        "//images/disks-images-provider:disks-images-provider-image",
    ),
    bundle_image(
        "cdi-http-import-server",
        "//images/cdi-http-import-server:cdi-http-import-server-image",
    ),
    bundle_image("nfs-server", "//images/nfs-server:nfs-server-image"),
    bundle_image("vm-killer", "//images/vm-killer:vm-killer-image"),
    bundle_image("winrmcli", "//images/winrmcli:winrmcli-image"),
];

/// Where an OCI image layout of `label` (`//P:X`) may be, in the order
/// kvpush looks: the directory `P/X/` (rules_oci's `oci_image`), then a tar
/// of it, `P/X.oci.tar`.
pub fn layout_paths(bazel_bin: &Path, label: &str) -> [PathBuf; 2] {
    let (pkg, name) = build_file::split_label(label);
    let dir = bazel_bin.join(pkg);
    [dir.join(&name), dir.join(format!("{name}.oci.tar"))]
}

/// Which rule set declared a push target, and so what Bazel leaves for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// rules_docker's `container_push` / `docker_push` (and the built-in
    /// table): tarballs, push-target parts or OCI layouts of the image.
    RulesDocker,
    /// rules_img's `image_push`: a deploy manifest `bazel-bin/push-X.json`
    /// and the runfiles of `push-X.exe` (see `source::rules_img`).
    RulesImg,
    /// rules_oci's `oci_push`: the OCI layout directory `oci_image` writes,
    /// `bazel-bin/<pkg>/<x>-image/`, pushed byte for byte (its generated
    /// `push_push-X.sh` is never run).
    RulesOci,
}

impl Kind {
    /// The rule, for `kvpush list` and messages.
    pub fn rule(&self) -> &'static str {
        match self {
            Kind::RulesDocker => "rules_docker container_push",
            Kind::RulesImg => "rules_img image_push",
            Kind::RulesOci => "rules_oci oci_push",
        }
    }
}

/// A `push-*` target of KubeVirt's root BUILD.bazel.
///
/// `Copy` with `'static` strings so that plans and results can carry it
/// freely; targets read from BUILD.bazel are leaked once per run (a few
/// hundred bytes) to fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// Name without the `push-` prefix, e.g. `virt-api`.
    pub name: &'static str,
    /// The Bazel push target's name (`push-virt-api`); its script in
    /// bazel-bin has this name.
    pub push: &'static str,
    /// Tarball path relative to bazel-bin.
    pub tarball: &'static str,
    /// The Bazel label whose `.tar` output is the tarball.
    pub label: &'static str,
    /// True for a bundle target (several images in one tarball).
    pub bundle: bool,
    /// Single-image targets: the image name (`virt-api`).
    pub image: &'static str,
    /// Bundle targets: the images of the bundle in BUILD order; empty when
    /// unknown (the bundle is defined outside the root BUILD.bazel).
    pub images: &'static [BundleImage],
    /// The rule that declared it.
    pub kind: Kind,
}

/// The seven targets, in the order KubeVirt's hack/bazel-push-images.sh
/// pushes them.
pub const TARGETS: [Target; 7] = [
    Target {
        name: "other-images",
        push: "push-other-images",
        tarball: "build-other-images.tar",
        label: "//:build-other-images",
        bundle: true,
        image: "",
        images: &BUNDLE_IMAGES,
        kind: Kind::RulesDocker,
    },
    single(
        "virt-operator",
        "push-virt-operator",
        "cmd/virt-operator/virt-operator-image.tar",
        "//cmd/virt-operator:virt-operator-image",
    ),
    single(
        "virt-api",
        "push-virt-api",
        "cmd/virt-api/virt-api-image.tar",
        "//cmd/virt-api:virt-api-image",
    ),
    single(
        "virt-controller",
        "push-virt-controller",
        "cmd/virt-controller/virt-controller-image.tar",
        "//cmd/virt-controller:virt-controller-image",
    ),
    single(
        "virt-handler",
        "push-virt-handler",
        "cmd/virt-handler/virt-handler-image.tar",
        "//cmd/virt-handler:virt-handler-image",
    ),
    single(
        "virt-launcher",
        "push-virt-launcher",
        "cmd/virt-launcher/virt-launcher-image.tar",
        "//cmd/virt-launcher:virt-launcher-image",
    ),
    single(
        "conformance",
        "push-conformance",
        "tests/conformance_image.tar",
        "//tests:conformance_image",
    ),
];

const fn single(
    name: &'static str,
    push: &'static str,
    tarball: &'static str,
    label: &'static str,
) -> Target {
    Target {
        name,
        push,
        tarball,
        label,
        bundle: false,
        image: name,
        images: &[],
        kind: Kind::RulesDocker,
    }
}

impl Target {
    /// `push-<name>`, the Bazel target that pushes it.
    pub fn push_name(&self) -> String {
        self.push.to_string()
    }

    /// The command that makes Bazel write this target's push script and
    /// its parts (config, gzipped layers, digest files, runfiles).
    pub fn parts_build_command(&self) -> String {
        format!("bazel build //:{}", self.push)
    }

    /// rules_img targets: the deploy manifest `bazel build //:push-X` writes,
    /// `bazel-bin/push-X.json` (the targets are read from the root
    /// BUILD.bazel, so the package is the root); `None` for other kinds.
    pub fn deploy_manifest_path(&self, bazel_bin: &Path) -> Option<PathBuf> {
        (self.kind == Kind::RulesImg).then(|| bazel_bin.join(format!("{}.json", self.push)))
    }

    /// What one `bazel build` needs so that kvpush can push this target,
    /// for its rule: rules_docker the push target's parts and the image
    /// tarball (a bundle's tarball is an output group: the flag
    /// `--output_groups=+tar`), rules_oci the `oci_image` layout, rules_img
    /// the push target (its deploy manifest and runfiles). Flags start with
    /// `--`.
    pub fn bazel_build_args(&self) -> Vec<String> {
        let push = format!("//:{}", self.push);
        match self.kind {
            Kind::RulesDocker if self.bundle => vec![
                push,
                self.label.to_string(),
                "--output_groups=+tar".to_string(),
            ],
            Kind::RulesDocker => vec![push, format!("{}.tar", self.label)],
            Kind::RulesOci => vec![self.label.to_string()],
            Kind::RulesImg => vec![push],
        }
    }

    /// rules_oci targets: the OCI layout directory `oci_image` writes,
    /// `bazel-bin/<pkg>/<x>-image/`, and the file its `<x>-image.digest`
    /// target writes the manifest digest to, `<x>-image.json.sha256`;
    /// `None` for other kinds.
    pub fn oci_layout_paths(&self, bazel_bin: &Path) -> Option<(PathBuf, PathBuf)> {
        (self.kind == Kind::RulesOci).then(|| {
            let (pkg, name) = build_file::split_label(self.label);
            let dir = bazel_bin.join(pkg);
            (dir.join(&name), dir.join(format!("{name}.json.sha256")))
        })
    }

    /// `bazel-bin/push-<name>`, the script `bazel run` would execute.
    pub fn script_path(&self, bazel_bin: &Path) -> PathBuf {
        bazel_bin.join(self.push)
    }

    /// The command that makes Bazel write this target's tarball (rules_oci:
    /// its OCI layout directory).
    pub fn build_command(&self) -> String {
        if self.kind == Kind::RulesOci {
            format!("bazel build {}", self.label)
        } else if self.bundle {
            format!("bazel build {} --output_groups=+tar", self.label)
        } else {
            format!("bazel build {}.tar", self.label)
        }
    }

    pub fn tarball_path(&self, bazel_bin: &Path) -> PathBuf {
        bazel_bin.join(self.tarball)
    }

    /// Bundle targets: the names of the images the bundle is known to hold.
    pub fn image_names(&self) -> Vec<String> {
        self.images.iter().map(|i| i.name.to_string()).collect()
    }

    /// Bundle targets: the label of image `name`, when known.
    pub fn image_label(&self, name: &str) -> Option<&'static str> {
        self.images
            .iter()
            .find(|i| i.name == name && !i.label.is_empty())
            .map(|i| i.label)
    }

    /// The `.digest` file KubeVirt's build-manifests.sh reads; bundle
    /// images have none.
    pub fn digest_file_name(&self) -> Option<String> {
        (!self.bundle).then(|| format!("{}.digest", self.push))
    }
}

/// Where the push targets of a run come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Parsed from this BUILD.bazel.
    BuildFile(PathBuf),
    /// The built-in table, and why.
    Builtin(String),
}

/// The push targets of a workspace, in the order they are pushed.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub targets: Vec<Target>,
    pub origin: Origin,
}

impl Catalog {
    /// The seven targets of REFERENCE.md §1.
    pub fn builtin(reason: impl Into<String>) -> Catalog {
        Catalog {
            targets: TARGETS.to_vec(),
            origin: Origin::Builtin(reason.into()),
        }
    }

    /// The targets of `workspace`'s root BUILD.bazel (or BUILD), or the
    /// built-in table when there is none or it declares no push target. An
    /// unparsable file is an error naming its line and column.
    pub fn load(workspace: &Path) -> Result<Catalog, String> {
        let Some(path) = ["BUILD.bazel", "BUILD"]
            .iter()
            .map(|n| workspace.join(n))
            .find(|p| p.is_file())
        else {
            return Ok(Catalog::builtin(format!(
                "no BUILD.bazel in {}",
                workspace.display()
            )));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let targets = build_file::push_targets(&path, &text)?;
        if targets.is_empty() {
            return Ok(Catalog::builtin(format!(
                "{} declares no container_push, docker_push, oci_push or image_push target",
                path.display()
            )));
        }
        Ok(Catalog {
            targets,
            origin: Origin::BuildFile(path),
        })
    }

    /// One line for `kvpush list`: where the targets came from.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::BuildFile(path) => format!(
                "targets from {} ({} push targets)",
                path.display(),
                self.targets.len()
            ),
            Origin::Builtin(why) => format!("targets from kvpush's built-in table ({why})"),
        }
    }

    /// The bundle holding `image`: the one that lists it, else the first.
    pub fn bundle_for(&self, image: &str) -> Option<Target> {
        let bundles = self.targets.iter().filter(|t| t.bundle);
        bundles
            .clone()
            .find(|t| t.images.iter().any(|i| i.name == image))
            .or_else(|| bundles.clone().next())
            .copied()
    }

    /// Position of `target` in push order.
    pub fn position(&self, target: &Target) -> usize {
        self.targets
            .iter()
            .position(|t| t == target)
            .unwrap_or(usize::MAX)
    }

    /// Whether a bundle's image list is complete: true for a bundle read
    /// from BUILD.bazel, false for the built-in table (it goes stale) or a
    /// bundle defined elsewhere, whose other images the sources reveal.
    pub fn knows_all_images(&self, target: &Target) -> bool {
        matches!(self.origin, Origin::BuildFile(_)) && !target.images.is_empty()
    }

    fn bundle_images(&self) -> Vec<&'static str> {
        self.targets
            .iter()
            .flat_map(|t| t.images.iter().map(|i| i.name))
            .collect()
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
pub fn resolve(catalog: &Catalog, names: &[String]) -> Result<Vec<Selection>, String> {
    let bundle_images = catalog.bundle_images();
    let has_bundle = catalog.targets.iter().any(|t| t.bundle);
    let mut out = Vec::new();
    for raw in names {
        let name = raw.trim();
        let bare = name.strip_prefix("push-").unwrap_or(name);
        if bare == "all" {
            out.extend(catalog.targets.iter().copied().map(Selection::Target));
        } else if let Some(t) = catalog
            .targets
            .iter()
            .find(|t| t.name == bare || t.push == name)
        {
            out.push(Selection::Target(*t));
        } else if has_bundle
            && (bundle_images.contains(&bare) || (bare == name && looks_like_image_name(bare)))
        {
            // Names outside the list may still be in a newer bundle; the
            // bundle itself says, later, whether the image is there.
            out.push(Selection::BundleImage(bare.to_string()));
        } else {
            return Err(unknown_target(catalog, raw));
        }
    }
    out.sort_by_key(|s| match s {
        Selection::Target(t) => (catalog.position(t), String::new()),
        Selection::BundleImage(n) => (usize::MAX, n.clone()),
    });
    out.dedup();
    // A whole bundle already includes its single images.
    let whole: Vec<Target> = out
        .iter()
        .filter_map(|s| match s {
            Selection::Target(t) if t.bundle => Some(*t),
            _ => None,
        })
        .collect();
    out.retain(|s| match s {
        Selection::BundleImage(n) => catalog.bundle_for(n).is_none_or(|b| !whole.contains(&b)),
        _ => true,
    });
    Ok(out)
}

fn looks_like_image_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && s.contains('-')
}

fn unknown_target(catalog: &Catalog, name: &str) -> String {
    let targets: Vec<&str> = catalog.targets.iter().map(|t| t.name).collect();
    format!(
        "unknown target {name:?}: name `all`, a target ({}) or an image of the bundle ({}); {}",
        targets.join(", "),
        catalog.bundle_images().join(", "),
        catalog.describe()
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

    fn resolve(names: &[String]) -> Result<Vec<Selection>, String> {
        super::resolve(&Catalog::builtin("test"), names)
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
    fn bundle_labels_give_layout_paths() {
        let bin = Path::new("/b");
        assert_eq!(
            layout_paths(bin, TARGETS[0].image_label("vm-killer").unwrap()),
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
        assert_eq!(
            TARGETS[0].bazel_build_args(),
            [
                "//:push-other-images",
                "//:build-other-images",
                "--output_groups=+tar"
            ]
        );
        assert_eq!(
            TARGETS[2].bazel_build_args(),
            ["//:push-virt-api", "//cmd/virt-api:virt-api-image.tar"]
        );
    }
}
