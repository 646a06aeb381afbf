//! From what the user selected to the images to push: finds bazel-bin,
//! chooses per image between rules_docker's push-target parts and the
//! tarball (`--source`), opens each once, expands the bundle, and names
//! every destination. Local work only; nothing here touches the network.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::source::docker_archive::DockerArchive;
use crate::source::rules_docker::{self, PushScript, Runfiles};
use crate::source::Image;
use crate::targets::{Catalog, Selection, Target};

/// Where an image goes: one repository on one registry host, under a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Host as in references (`quay.io`, `localhost:5000`, `docker.io`).
    pub host: String,
    /// Repository path on that host (`kubevirt/virt-api`).
    pub repo: String,
    pub tag: String,
    /// The reference as the user reads it: `{registry}/{prefix}{name}:{tag}`.
    pub display: String,
}

/// Check a tag against the distribution spec's grammar.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ))
    }
}

impl Destination {
    /// Build and validate `{registry}/{prefix}{name}:{tag}`.
    pub fn new(
        registry: &str,
        image_prefix: &str,
        name: &str,
        tag: &str,
    ) -> Result<Destination, String> {
        validate_tag(tag)?;
        let display = crate::targets::destination(registry, image_prefix, name, tag);
        let parsed: oci_spec::distribution::Reference = display.parse().map_err(|e| {
            format!("invalid destination {display:?} (from --registry {registry:?}, --image-prefix {image_prefix:?}): {e}")
        })?;
        if parsed.tag() != Some(tag) || parsed.digest().is_some() {
            return Err(format!("invalid destination {display:?}: --registry and --image-prefix must not hold a tag or digest"));
        }
        Ok(Destination {
            host: parsed.registry().to_string(),
            repo: parsed.repository().to_string(),
            tag: tag.to_string(),
            display,
        })
    }
}

/// Which of Bazel's outputs images are read from (`--source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceChoice {
    /// The push target's parts when its push script exists, else the tarball.
    #[default]
    Auto,
    /// Only rules_docker push-target parts (`bazel build //:push-X`).
    Parts,
    /// Only image tarballs (`bazel build //X:Y.tar`).
    Tarball,
}

/// Where one image is actually read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// rules_docker push-target parts: Bazel's own gzip layers and digests.
    Parts,
    /// A `docker save`-style tarball.
    Tarball,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Parts => "parts",
            SourceKind::Tarball => "tarball",
        }
    }
}

/// One image to push, with what is known locally about it.
#[derive(Debug)]
pub struct PlannedImage {
    pub target: Target,
    /// Image name (`virt-api`, `cirros-container-disk-demo`), or the
    /// `push-*` target name when its source could not be read at all.
    pub name: String,
    pub source: SourceKind,
    /// The file the image is read from: push script or tarball.
    pub source_file: PathBuf,
    /// Why `--source auto` did not use the parts, and how to make them.
    pub note: Option<String>,
    /// The image, or why it cannot be pushed (missing or broken source).
    pub image: Result<Image, String>,
    pub destinations: Vec<Destination>,
}

/// Everything a run will push, in target order.
#[derive(Debug)]
pub struct Plan {
    pub bazel_bin: PathBuf,
    pub images: Vec<PlannedImage>,
}

/// Find `bazel-bin` in the workspace, following its symlink.
pub fn find_bazel_bin(workspace: &Path) -> Result<PathBuf, String> {
    let link = workspace.join("bazel-bin");
    match std::fs::metadata(&link) {
        Ok(meta) if meta.is_dir() => Ok(link),
        Ok(_) => Err(format!("{} is not a directory", link.display())),
        Err(_) => match std::fs::read_link(&link) {
            Ok(points_to) => Err(format!(
                "{} is a symlink to {}, which does not exist: run `bazel build` first (the output base may have been cleaned)",
                link.display(),
                points_to.display()
            )),
            Err(_) => Err(format!(
                "no bazel-bin in {}: run kvpush from the root of the KubeVirt checkout (or pass --workspace DIR) after `bazel build`",
                workspace.display()
            )),
        },
    }
}

/// What a plan needs from the configuration.
pub struct PlanInput<'a> {
    pub workspace: &'a Path,
    pub catalog: &'a Catalog,
    pub selections: &'a [Selection],
    /// `None` when only listing without a registry.
    pub registry: Option<&'a str>,
    /// Every image goes under each prefix, with each tag.
    pub image_prefixes: &'a [String],
    pub tags: &'a [String],
    pub source: SourceChoice,
}

/// A target's push-target parts, read once.
enum Parts {
    Single(PushScript),
    /// The per-image scripts of a bundle, by image name.
    Bundle(HashMap<String, PushScript>),
}

/// The two ways a target's images can be read, each opened on first use.
struct TargetSources {
    target: Target,
    choice: SourceChoice,
    script: PathBuf,
    tarball: PathBuf,
    /// Bundle image names expected (for matching names with build-time
    /// prefixes).
    known: Vec<String>,
    parts: Option<Result<Parts, String>>,
    archive: Option<Result<Arc<DockerArchive>, String>>,
}

/// What a source gave for one image.
struct Found {
    source: SourceKind,
    file: PathBuf,
    image: Result<Image, String>,
    note: Option<String>,
}

impl TargetSources {
    fn known(&self) -> Vec<&str> {
        self.known.iter().map(String::as_str).collect()
    }

    fn parts_exist(&self) -> bool {
        self.script.exists()
    }

    fn uses_parts(&self) -> bool {
        match self.choice {
            SourceChoice::Parts => true,
            SourceChoice::Tarball => false,
            SourceChoice::Auto => self.parts_exist(),
        }
    }

    fn rebuild_parts(&self, e: String) -> String {
        format!(
            "{e}; rebuild the push target with `{}`",
            self.target.parts_build_command()
        )
    }

    fn parts(&mut self) -> &Result<Parts, String> {
        if self.parts.is_none() {
            let opened = if !self.parts_exist() {
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
            &self.known(),
        );
        Ok(Parts::Bundle(
            names
                .into_iter()
                .map(|(name, i)| (name, scripts[i].clone()))
                .collect(),
        ))
    }

    fn archive(&mut self) -> &Result<Arc<DockerArchive>, String> {
        if self.archive.is_none() {
            let opened = if self.tarball.exists() {
                DockerArchive::open(&self.tarball).map(Arc::new)
            } else if self.choice == SourceChoice::Tarball {
                Err(format!(
                    "{} not found: build it with `{}`",
                    self.tarball.display(),
                    self.target.build_command()
                ))
            } else {
                Err(format!(
                    "{} not found: build it with `{}`, or build the push target's parts (pushed with Bazel's own digests) with `{}`",
                    self.tarball.display(),
                    self.target.build_command(),
                    self.target.parts_build_command()
                ))
            };
            self.archive = Some(opened);
        }
        self.archive.as_ref().expect("just set")
    }

    /// The names of the images found in the source(s) in use.
    fn discovered_names(&mut self) -> Vec<String> {
        if self.uses_parts() {
            match self.parts() {
                Ok(Parts::Bundle(by_name)) => by_name.keys().cloned().collect(),
                _ => Vec::new(),
            }
        } else {
            let known = self.known.clone();
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            match self.archive() {
                Ok(archive) => archive.entries_by_name(&known).into_keys().collect(),
                Err(_) => Vec::new(),
            }
        }
    }

    /// Why the target cannot be read at all, if it cannot.
    fn whole_failure(&mut self) -> Option<(SourceKind, PathBuf, String)> {
        if self.uses_parts() {
            let script = self.script.clone();
            self.parts()
                .as_ref()
                .err()
                .map(|e| (SourceKind::Parts, script, e.clone()))
        } else {
            let tarball = self.tarball.clone();
            self.archive()
                .as_ref()
                .err()
                .map(|e| (SourceKind::Tarball, tarball, e.clone()))
        }
    }

    fn read_from_parts(&mut self, name: &str) -> Option<Found> {
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

    fn read_from_tarball(&mut self, name: &str) -> Found {
        let tarball = self.tarball.clone();
        let target = self.target;
        let known = self.known.clone();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let image = match self.archive() {
            Err(e) => Err(e.clone()),
            Ok(archive) if !target.bundle => {
                single_entry(archive, name).and_then(|i| archive.image(i))
            }
            Ok(archive) => {
                let by_name = archive.entries_by_name(&known);
                match by_name.get(name) {
                    Some(i) => archive.image(*i),
                    None => Err(not_in_bundle(name, &tarball, &by_name, &target)),
                }
            }
        };
        Found {
            source: SourceKind::Tarball,
            file: tarball,
            image,
            note: None,
        }
    }

    /// Read image `name` from the source `--source` asks for.
    fn find(&mut self, name: &str) -> Found {
        match self.choice {
            SourceChoice::Tarball => self.read_from_tarball(name),
            SourceChoice::Parts => self.read_from_parts(name).unwrap_or_else(|| Found {
                source: SourceKind::Parts,
                file: self.script.clone(),
                image: Err(format!(
                    "{} pushes no image {name:?}: is the name right? If the push target is stale, rebuild it with `{}`",
                    self.script.display(),
                    self.target.parts_build_command()
                )),
                note: None,
            }),
            SourceChoice::Auto if self.parts_exist() => match self.read_from_parts(name) {
                Some(found) => found,
                None => Found {
                    note: Some(format!(
                        "{} has no push script for it; `{}` makes one",
                        self.script.display(),
                        self.target.parts_build_command()
                    )),
                    ..self.read_from_tarball(name)
                },
            },
            SourceChoice::Auto => Found {
                note: Some(format!(
                    "no push-target parts; `{}` makes them",
                    self.target.parts_build_command()
                )),
                ..self.read_from_tarball(name)
            },
        }
    }
}

/// Expand the selections into images, opening each source once.
pub fn plan(input: &PlanInput) -> Result<Plan, String> {
    let bazel_bin = find_bazel_bin(input.workspace)?;
    // Which bundle images were asked for (None = the whole bundle).
    let mut wanted: BTreeMap<Target, Option<Vec<String>>> = BTreeMap::new();
    for sel in input.selections {
        match sel {
            Selection::Target(t) => {
                wanted.insert(*t, None);
            }
            Selection::BundleImage(name) => {
                let bundle = input.catalog.bundle_for(name).ok_or_else(|| {
                    format!(
                        "{name:?} names no push target, and there is no bundle to look it up in"
                    )
                })?;
                if let Some(names) = wanted.entry(bundle).or_insert_with(|| Some(Vec::new())) {
                    names.push(name.clone());
                }
            }
        }
    }
    // Keep the order in which KubeVirt pushes targets.
    let mut ordered: Vec<(Target, Option<Vec<String>>)> = wanted.into_iter().collect();
    ordered.sort_by_key(|(t, _)| input.catalog.position(t));

    let mut images = Vec::new();
    for (target, names) in ordered {
        let mut known: Vec<String> = target.images.iter().map(|s| s.to_string()).collect();
        if !target.bundle {
            known.push(target.image.to_string());
        }
        if let Some(names) = &names {
            known.extend(names.iter().cloned());
        }
        let mut sources = TargetSources {
            target,
            choice: input.source,
            script: target.script_path(&bazel_bin),
            tarball: target.tarball_path(&bazel_bin),
            known,
            parts: None,
            archive: None,
        };
        if !target.bundle {
            let found = sources.find(target.image);
            images.push(planned(input, target, target.image.to_string(), found));
            continue;
        }
        let names = match names {
            Some(names) => names,
            None => {
                if let Some((source, file, e)) = sources.whole_failure() {
                    // Without a readable bundle its images are unknown when
                    // BUILD.bazel does not list them: one failure for all.
                    if !input.catalog.knows_all_images(&target) {
                        let found = Found {
                            source,
                            file,
                            image: Err(e),
                            note: None,
                        };
                        images.push(planned(input, target, target.push_name(), found));
                        continue;
                    }
                }
                let mut all: Vec<String> = target.images.iter().map(|s| s.to_string()).collect();
                if !input.catalog.knows_all_images(&target) {
                    let mut extra: Vec<String> = sources
                        .discovered_names()
                        .into_iter()
                        .filter(|k| !all.contains(k))
                        .collect();
                    extra.sort();
                    extra.dedup();
                    all.extend(extra);
                }
                all
            }
        };
        for name in names {
            let found = sources.find(&name);
            images.push(planned(input, target, name, found));
        }
    }
    Ok(Plan { bazel_bin, images })
}

fn not_in_bundle(
    name: &str,
    tarball: &Path,
    by_name: &HashMap<String, usize>,
    target: &Target,
) -> String {
    let mut present: Vec<&str> = by_name.keys().map(String::as_str).collect();
    present.sort();
    format!(
        "{} has no image {name:?} (it holds: {}); is the name right? If the bundle is stale, rebuild it with `{}`",
        tarball.display(),
        present.join(", "),
        target.build_command()
    )
}

/// The entry of a single-image tarball: its only one, or the one named.
fn single_entry(archive: &DockerArchive, name: &str) -> Result<usize, String> {
    if archive.entries.len() == 1 {
        return Ok(0);
    }
    archive
        .entries_by_name(&[name])
        .get(name)
        .copied()
        .ok_or_else(|| {
            format!(
                "{} holds {} images and none is tagged as {name}",
                archive.index.path.display(),
                archive.entries.len()
            )
        })
}

fn planned(input: &PlanInput, target: Target, name: String, found: Found) -> PlannedImage {
    let mut destinations = Vec::new();
    let mut image = found.image;
    if let Some(registry) = input.registry {
        for prefix in input.image_prefixes {
            for tag in input.tags {
                match Destination::new(registry, prefix, &name, tag) {
                    Ok(d) => destinations.push(d),
                    Err(e) => image = Err(e),
                }
            }
        }
    }
    PlannedImage {
        target,
        name,
        source: found.source,
        source_file: found.file,
        note: found.note,
        image,
        destinations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_validate() {
        let d = Destination::new("localhost:5000/kubevirt", "", "virt-api", "devel").unwrap();
        assert_eq!(
            (d.host.as_str(), d.repo.as_str(), d.tag.as_str()),
            ("localhost:5000", "kubevirt/virt-api", "devel")
        );
        assert_eq!(d.display, "localhost:5000/kubevirt/virt-api:devel");
        let d = Destination::new("quay.io/kubevirt", "kv-", "virt-api", "v1.2.3").unwrap();
        assert_eq!(d.repo, "kubevirt/kv-virt-api");
        let d = Destination::new("kubevirt", "", "virt-api", "latest").unwrap();
        assert_eq!(
            (d.host.as_str(), d.repo.as_str()),
            ("docker.io", "kubevirt/virt-api")
        );

        assert!(Destination::new("quay.io/kubevirt", "", "virt-api", "-bad")
            .unwrap_err()
            .contains("invalid tag"));
        assert!(Destination::new("quay.io/kubevirt", "", "virt-api", "a:b").is_err());
        assert!(Destination::new("Quay.io/KubeVirt", "", "virt-api", "v1").is_err());
        assert!(Destination::new("quay.io/kubevirt", "UPPER", "virt-api", "v1").is_err());
        assert!(Destination::new("quay.io/kubevirt:tag", "", "virt-api", "v1").is_err());
    }

    #[test]
    fn bazel_bin_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_bazel_bin(dir.path()).unwrap_err();
        assert!(
            err.contains("no bazel-bin") && err.contains("--workspace"),
            "{err}"
        );
        std::os::unix::fs::symlink("bazel-out/nowhere/bin", dir.path().join("bazel-bin")).unwrap();
        let err = find_bazel_bin(dir.path()).unwrap_err();
        assert!(
            err.contains("symlink to bazel-out/nowhere/bin, which does not exist"),
            "{err}"
        );
    }
}
