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

    /// The target's one image. `registry_tag` operations (rules_img's
    /// `manifest_tags` of an index) are refused: kvpush names every tag
    /// itself, so a tag only the deploy manifest knows would be lost.
    pub(super) fn read(&self) -> Found {
        let image = rules_img::read(&self.bazel_bin, self.target.push).and_then(|deploy| {
            if let Some(op) = deploy.tags.first() {
                return Err(format!(
                    "{}: {} holds registry_tag operations (tags {:?} of {}), which kvpush does not apply; push with `--tag` for each tag, or with `bazel run //:{}`",
                    self.target.push,
                    deploy.deploy_manifest.display(),
                    op.tags,
                    op.digest,
                    self.target.push
                ));
            }
            deploy.artifact()
        });
        Found {
            source: SourceKind::RulesImg,
            file: self.path.clone(),
            image,
            note: None,
        }
    }
}
