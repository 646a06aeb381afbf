//! The rules_docker push-target parts of a target (`bazel build
//! //:push-X`): its push script(s), read once, and one image from them
//! with Bazel's own gzip layers and digests. Knows nothing of tarballs,
//! layouts or which source `--source` picks (that is `super`'s dispatch).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::kind::{Found, SourceKind};
use crate::source::rules_docker::{self, PushScript, Runfiles};
use crate::source::Artifact;
use crate::targets::Target;

/// A target's push-target parts, read once.
enum Parts {
    Single(PushScript),
    /// The per-image scripts of a bundle, by image name.
    Bundle(HashMap<String, PushScript>),
}

/// A target's push script and what it pushes, opened on first use.
pub(super) struct PartsSource {
    target: Target,
    pub(super) script: PathBuf,
    /// Bundle image names expected (for matching names with build-time
    /// prefixes).
    known: Vec<String>,
    parts: Option<Result<Parts, String>>,
}

impl PartsSource {
    pub(super) fn new(target: Target, bazel_bin: &Path, known: Vec<String>) -> PartsSource {
        PartsSource {
            target,
            script: target.script_path(bazel_bin),
            known,
            parts: None,
        }
    }

    pub(super) fn exist(&self) -> bool {
        self.script.exists()
    }

    /// The images a bundle's push scripts push (none for a single image,
    /// or when the parts cannot be read).
    pub(super) fn names(&mut self) -> Vec<String> {
        match self.parts() {
            Ok(Parts::Bundle(by_name)) => by_name.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn rebuild_parts(&self, e: String) -> String {
        format!(
            "{e}; rebuild the push target with `{}`",
            self.target.parts_build_command()
        )
    }

    /// Why the parts cannot be read, if they cannot.
    pub(super) fn failure(&mut self) -> Option<String> {
        self.parts().as_ref().err().cloned()
    }

    fn parts(&mut self) -> &Result<Parts, String> {
        if self.parts.is_none() {
            let opened = if !self.exist() {
                Err(format!(
                    "{} not found: build the push target's parts with `{}` (or use --source tarball)",
                    self.script.display(),
                    self.target.parts_build_command()
                ))
            } else {
                self.read_parts().map_err(|e| self.rebuild_parts(e))
            };
            self.parts = Some(opened);
        }
        self.parts.as_ref().expect("just set")
    }

    fn read_parts(&self) -> Result<Parts, String> {
        let runfiles = Runfiles::of_script(&self.script);
        if !self.target.bundle {
            return PushScript::read(&self.script, &runfiles).map(Parts::Single);
        }
        let scripts = rules_docker::bundle_scripts(&self.script, &runfiles)?
            .iter()
            .map(|s| PushScript::read(s, &runfiles))
            .collect::<Result<Vec<_>, _>>()?;
        let names = crate::source::match_names(
            scripts.iter().enumerate().map(|(i, s)| (s.dst_name(), i)),
            &self.known.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        Ok(Parts::Bundle(
            names
                .into_iter()
                .map(|(name, i)| (name, scripts[i].clone()))
                .collect(),
        ))
    }

    /// Image `name` from the parts, or why not; `None` when a bundle has
    /// no push script for it.
    pub(super) fn read(&mut self, name: &str) -> Option<Found> {
        let main = self.script.clone();
        let (file, image) = match self.parts() {
            Err(e) => (main, Err(e.clone())),
            Ok(parts) => {
                let script = match parts {
                    Parts::Single(s) => s,
                    Parts::Bundle(by_name) => by_name.get(name)?,
                };
                // Bazel writes the manifest digest for container_push
                // targets only (push-X.digest), not for bundle images.
                let image = if script.path != main {
                    script.image(None)
                } else if !script.dst_name().ends_with(name) {
                    Err(format!(
                        "{} pushes to {}, not to an image called {name} as the push target says: the script is stale",
                        script.path.display(),
                        script.dst
                    ))
                } else {
                    rules_docker::expected_digest(&script.path)
                        .and_then(|expected| script.image(expected))
                };
                let image = image.map(Artifact::Image);
                (script.path.clone(), image)
            }
        };
        let image = match image {
            Err(e) if !e.contains(&self.target.parts_build_command()) => Err(self.rebuild_parts(e)),
            other => other,
        };
        Some(Found {
            source: SourceKind::Parts,
            file,
            image,
            note: None,
        })
    }
}
