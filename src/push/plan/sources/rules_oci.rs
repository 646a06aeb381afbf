//! rules_oci `oci_push` targets: the OCI layout directory `oci_image`
//! writes (`bazel-bin/<pkg>/<x>-image/`, blobs copied or relative symlinks,
//! both followed), pushed byte for byte, checked against the digest file
//! of its `.digest` target when there is one. The generated
//! `push_push-X.sh` is never run. Knows nothing of rules_docker tarballs,
//! push scripts or of which source `--source` picks (`super` dispatches).

use std::path::Path;

use super::kind::{Found, SourceKind};
use crate::source::oci_layout::Layout;
use crate::source::Artifact;
use crate::targets::Target;

/// The image of the `oci_push` target `target`.
pub(super) fn read(target: Target, bazel_bin: &Path) -> Found {
    let Some((dir, digest_file)) = target.oci_layout_paths(bazel_bin) else {
        unreachable!("rules_oci::read is called for oci_push targets only")
    };
    let image = if dir.join("oci-layout").exists() || dir.join("index.json").exists() {
        open(&dir, &digest_file)
    } else {
        Err(format!(
            "no OCI layout of {} at {}/ ({} pushes {}): build it with `{}`; kvpush reads the layout and never runs bazel-bin/push_{}.sh",
            target.image,
            dir.display(),
            target.push,
            target.label,
            target.build_command(),
            target.push
        ))
    };
    Found {
        source: SourceKind::Layout,
        file: dir,
        image,
        note: None,
    }
}

/// Open the layout; a digest file that names another manifest means a
/// stale layout (or a stale digest file): refuse rather than push one of
/// them under the other's name.
fn open(dir: &Path, digest_file: &Path) -> Result<Artifact, String> {
    let root = Layout::open_dir(dir)?.root()?;
    if let Ok(text) = std::fs::read_to_string(digest_file) {
        let want = text.trim();
        let got = &root.manifest().digest;
        if want != got {
            return Err(format!(
                "{} says {want} but the layout {}/ holds manifest {got}: one of them is stale, rebuild both with bazel",
                digest_file.display(),
                dir.display()
            ));
        }
    }
    Ok(Artifact::Layout(root))
}
