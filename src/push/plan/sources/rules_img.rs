//! rules_img `image_push` targets: the deploy manifest `bazel-bin/push-X.json`
//! and the runfiles of `push-X.exe`, read once by
//! [`crate::source::rules_img`] into an OCI-layout-like artifact whose
//! shallow base layers name their origin registries. The only source such a
//! target has (`--source` does not apply). Knows nothing of push scripts,
//! tarballs or layouts at labels, nor of registries.

use std::path::{Path, PathBuf};

use super::kind::{Found, SourceKind};
use crate::source::rules_img;
use crate::targets::Target;

/// The deploy manifest of one `image_push` target, read on first use.
pub(super) struct RulesImgSource {
    target: Target,
    bazel_bin: PathBuf,
    /// `bazel-bin/push-X.json`.
    pub(super) path: PathBuf,
}

impl RulesImgSource {
    pub(super) fn new(target: Target, bazel_bin: &Path) -> RulesImgSource {
        let path = target
            .deploy_manifest_path(bazel_bin)
            .unwrap_or_else(|| bazel_bin.join(format!("{}.json", target.push)));
        RulesImgSource {
            target,
            bazel_bin: bazel_bin.to_path_buf(),
            path,
        }
    }

    pub(super) fn exists(&self) -> bool {
        self.path.is_file()
    }

    /// The target's one image or index; `registry_tag` operations
    /// (tags of a child of an index) ride on the manifest they name.
    pub(super) fn read(&self) -> Found {
        let image =
            rules_img::read(&self.bazel_bin, self.target.push).and_then(|deploy| deploy.artifact());
        Found {
            source: SourceKind::RulesImg,
            file: self.path.clone(),
            image,
            note: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Artifact;
    use crate::targets::Kind;
    use kvpush_fixtures::workspace::rules_img::{
        base_images, image_on, write_push_target, RulesImgLayout,
    };
    use kvpush_fixtures::RulesImgSpec;

    const X: Target = Target {
        name: "x",
        push: "push-x",
        tarball: "",
        label: "//:push-x",
        bundle: false,
        image: "x",
        images: &[],
        kind: Kind::RulesImg,
    };

    #[test]
    fn the_deploy_manifest_gives_the_root_and_registry_tags_tag_their_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RulesImgSpec::default();
        let bases = base_images(&spec);
        let image = image_on(&spec, &bases[0], "x", 1, 100);
        let t = write_push_target(
            dir.path(),
            &spec,
            &bases[0],
            0,
            "x",
            RulesImgLayout::Sparse,
            false,
            vec![image],
            None,
        )
        .unwrap();
        let source = RulesImgSource::new(X, dir.path());
        assert!(source.exists());
        let found = source.read();
        assert_eq!(found.source, SourceKind::RulesImg);
        match found.image {
            Ok(Artifact::Layout(root)) => assert_eq!(root.manifest().digest, t.root_digest),
            other => panic!("{other:?}"),
        }

        let path = dir.path().join("push-x.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut tag = v["operations"][0].clone();
        tag["command"] = "registry_tag".into();
        tag["tags"] = serde_json::json!(["v1-amd64"]);
        v["operations"].as_array_mut().unwrap().push(tag);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        // rules_img's registry_tag: the manifest it names gets its tags.
        match source.read().image {
            Ok(Artifact::Layout(root)) => assert_eq!(root.images()[0].tags, ["v1-amd64"]),
            other => panic!("{other:?}"),
        }
        // One for another repository than the push's cannot be honoured.
        v["operations"][1]["repository"] = "kubevirt/other".into();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = source.read().image.unwrap_err();
        assert!(
            err.contains("registry_tag")
                && err.contains("v1-amd64")
                && err.contains("quay.io/kubevirt/other")
                && err.contains("bazel run"),
            "{err}"
        );
    }
}
