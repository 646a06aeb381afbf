//! The rest of KubeVirt's `hack/bazel-push-images.sh` environment, read
//! when no target is named on the command line (the targets then come from
//! PUSH_TARGETS, as in the script): DOCKER_TAG_ALT, IMAGE_PREFIX_ALT,
//! DIGESTS_DIR and ARCHITECTURE/BUILD_ARCH. DOCKER_PREFIX, DOCKER_TAG and
//! IMAGE_PREFIX are clap defaults of their flags (`args`). It owns how
//! these variables are read; it must not check other flags nor run
//! anything.

use std::path::PathBuf;

use crate::config::KubevirtDigests;

/// The targets `PUSH_TARGETS` names (space-separated, as the script
/// splits it); empty when unset.
pub(super) fn push_targets() -> Vec<String> {
    std::env::var("PUSH_TARGETS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// What the variables ask for; empty values count as unset, as in the
/// script's `[[ $var ]]` tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct KubevirtEnv {
    /// DOCKER_TAG_ALT: a second tag of every image.
    pub(super) tag_alt: Option<String>,
    /// IMAGE_PREFIX_ALT: every image again under this prefix, at the first
    /// tag (DOCKER_TAG) only, "for the imagePrefix operator test".
    pub(super) image_prefix_alt: Option<String>,
    /// DIGESTS_DIR and the architecture its files go under.
    pub(super) digests: Option<KubevirtDigests>,
}

impl KubevirtEnv {
    /// Read from the process environment.
    pub(super) fn read() -> KubevirtEnv {
        KubevirtEnv::from(|name| std::env::var(name).ok())
    }

    fn from(var: impl Fn(&str) -> Option<String>) -> KubevirtEnv {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        KubevirtEnv {
            tag_alt: set("DOCKER_TAG_ALT"),
            image_prefix_alt: set("IMAGE_PREFIX_ALT"),
            digests: set("DIGESTS_DIR").map(|dir| KubevirtDigests {
                dir: PathBuf::from(dir),
                arch: architecture(set("ARCHITECTURE"), set("BUILD_ARCH")),
            }),
        }
    }
}

/// `${ARCHITECTURE}` as KubeVirt's hack/common.sh sets it: ARCHITECTURE,
/// else a single BUILD_ARCH (`crossbuild-` removed), else `uname -m`
/// (x86_64, aarch64, s390x: Rust names Linux architectures the same way).
fn architecture(architecture: Option<String>, build_arch: Option<String>) -> String {
    if let Some(a) = architecture {
        return a.trim().to_string();
    }
    match build_arch {
        Some(b) if !b.contains(',') => b.trim().trim_start_matches("crossbuild-").to_string(),
        _ => std::env::consts::ARCH.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> KubevirtEnv {
        KubevirtEnv::from(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn empty_variables_are_unset_and_the_architecture_has_a_default() {
        assert_eq!(
            env(&[("DOCKER_TAG_ALT", ""), ("IMAGE_PREFIX_ALT", " ")]),
            KubevirtEnv::default()
        );
        let e = env(&[("DOCKER_TAG_ALT", "alt"), ("DIGESTS_DIR", "_out/digests")]);
        assert_eq!(e.tag_alt.as_deref(), Some("alt"));
        let d = e.digests.unwrap();
        assert_eq!(d.dir, PathBuf::from("_out/digests"));
        assert_eq!(d.arch, std::env::consts::ARCH);
        let d = env(&[("DIGESTS_DIR", "d"), ("BUILD_ARCH", "crossbuild-s390x")]).digests;
        assert_eq!(d.unwrap().arch, "s390x");
        let d = env(&[
            ("DIGESTS_DIR", "d"),
            ("ARCHITECTURE", "aarch64"),
            ("BUILD_ARCH", "x86_64"),
        ]);
        assert_eq!(d.digests.unwrap().arch, "aarch64");
    }
}
