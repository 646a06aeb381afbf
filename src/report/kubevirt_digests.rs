//! `DIGESTS_DIR`: the files each era of KubeVirt's `hack/bazel-push-images.sh`
//! left after a push, for the scripts that run next. rules_docker era:
//! `DIR/ARCH/bazel-bin/push-<target>.digest` (`sha256:<hex>`, no newline;
//! the script copied bazel-bin's `*.digest` files, which
//! `hack/build-manifests.sh` reads); rules_oci and rules_img eras: the
//! marker `DIR/ARCH/<target>/<target>.image` that
//! `hack/push-container-manifest.sh` lists, and beside it the real digest
//! `<target>.digest`. Writes files only; decides nothing about the push.

use std::path::{Path, PathBuf};

use crate::config::KubevirtDigests;
use crate::push::ImageResult;
use crate::targets::Kind;

/// Write the files for every target that landed (a target's first result
/// when it has several); returns the paths written.
pub fn write(to: &KubevirtDigests, results: &[ImageResult]) -> Result<Vec<PathBuf>, String> {
    let base = to.dir.join(&to.arch);
    let mut written: Vec<PathBuf> = Vec::new();
    for r in results {
        let Some(digest) = r.digest.as_deref().filter(|_| r.status.landed()) else {
            continue;
        };
        let files: Vec<(PathBuf, &str)> = match r.target.kind {
            Kind::RulesDocker => match r.target.digest_file_name() {
                Some(name) => vec![(base.join("bazel-bin").join(name), digest)],
                None => Vec::new(),
            },
            Kind::RulesOci | Kind::RulesImg => {
                let dir = base.join(r.target.name);
                vec![
                    (dir.join(format!("{}.image", r.target.name)), ""),
                    (dir.join(format!("{}.digest", r.target.name)), digest),
                ]
            }
        };
        for (path, content) in files {
            if !written.contains(&path) {
                write_file(&path, content)?;
                written.push(path);
            }
        }
    }
    Ok(written)
}

/// Write then rename, so a reader never sees half a digest.
fn write_file(path: &Path, content: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create DIGESTS_DIR {}: {e}", dir.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content.as_bytes())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
