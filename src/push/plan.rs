//! From what the user selected to the images to push: finds bazel-bin,
//! chooses per image between rules_docker's push-target parts and the
//! tarball (`--source`), opens each once, expands the bundle, and names
//! every destination. Local work only; nothing here touches the network.
//!
//! Where the tarball branch looks for an image, first found wins: the
//! tarball (`P/X.tar`: a `docker save` tarball, or an OCI layout tar told
//! by its content), then the OCI layout directory `P/X/`, then
//! `P/X.oci.tar`. The bundle's images, without `build-other-images.tar`,
//! are looked for as layouts at their own labels.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::source::docker_archive::DockerArchive;
use crate::source::oci_layout::Layout;
use crate::source::rules_docker::{self, PushScript, Runfiles};
use crate::source::tar_index::TarIndex;
use crate::source::Artifact;
use crate::targets::{self, Catalog, Selection, Target};

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
        let plain = display
            .strip_suffix(tag)
            .and_then(|d| d.strip_suffix(':'))
            .and_then(plain_host_and_repo);
        if let Some((host, repo)) = plain {
            return Ok(Destination {
                host: host.to_string(),
                repo: repo.to_string(),
                tag: tag.to_string(),
                display,
            });
        }
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

/// `host[:port]/path` split in two when it is plainly valid by a strict
/// subset of the distribution reference grammar (a host with a dot, a port
/// or `localhost`, lowercase path components of letters and digits joined
/// by single `.`, `_` or `-`), else `None` and oci-spec decides. oci-spec's
/// parser compiles a large regex on first use, ~30 ms: a quarter of a warm
/// re-push, for names that are almost always this simple.
fn plain_host_and_repo(name: &str) -> Option<(&str, &str)> {
    let (host, repo) = name.split_once('/')?;
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    // Letters and digits, runs joined by single separators from `seps`.
    let joined = |part: &str, seps: &[char]| {
        !part.is_empty()
            && part.starts_with(alnum)
            && part.ends_with(alnum)
            && part.chars().all(|c| alnum(c) || seps.contains(&c))
            && !part
                .as_bytes()
                .windows(2)
                .any(|w| !alnum(w[0] as char) && !alnum(w[1] as char))
    };
    let (hostname, port) = match host.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = hostname.split('.').all(|label| joined(label, &['-']))
        && (hostname.contains('.') || port.is_some() || hostname == "localhost")
        // Docker Hub's names are normalised (library/, docker.io): oci-spec's job.
        && !matches!(hostname, "docker.io" | "index.docker.io");
    let repo_ok = repo.split('/').all(|c| joined(c, &['.', '_', '-']));
    (port_ok && host_ok && repo_ok && name.len() <= 255).then_some((host, repo))
}

/// Which of Bazel's outputs images are read from (`--source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceChoice {
    /// The push target's parts when its push script exists, else the tarball.
    #[default]
    Auto,
    /// Only rules_docker push-target parts (`bazel build //:push-X`).
    Parts,
    /// Only image tarballs (`bazel build //X:Y.tar`) or OCI layouts.
    Tarball,
}

/// Where one image is actually read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// rules_docker push-target parts: Bazel's own gzip layers and digests.
    Parts,
    /// A `docker save`-style tarball.
    Tarball,
    /// An OCI image layout (directory or tar): pushed byte for byte.
    Layout,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Parts => "parts",
            SourceKind::Tarball => "tarball",
            SourceKind::Layout => "OCI layout",
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
    /// The file the image is read from: push script, tarball or OCI
    /// layout (directory or tar).
    pub source_file: PathBuf,
    /// Why `--source auto` did not use the parts, and how to make them.
    pub note: Option<String>,
    /// The image, or why it cannot be pushed (missing or broken source).
    pub image: Result<Artifact, String>,
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

/// An `--arch-bin` path: a bazel-bin tree itself, or a workspace holding one.
pub fn bazel_bin_at(path: &Path) -> Result<PathBuf, String> {
    if std::fs::symlink_metadata(path.join("bazel-bin")).is_ok() {
        return find_bazel_bin(path);
    }
    if path.is_dir() {
        Ok(path.to_path_buf())
    } else {
        Err(format!(
            "{} is not a directory: give a bazel-bin tree (or a workspace holding one)",
            path.display()
        ))
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

/// A tarball as found: a `docker save` archive or an OCI layout in a tar.
enum Opened {
    Docker(Arc<DockerArchive>),
    Layout(Layout),
}

/// Index a tarball once and tell from its members what it holds.
fn open_tarball(path: &Path) -> Result<Opened, String> {
    let index = TarIndex::build(path)?;
    if Layout::is_layout_tar(&index) {
        Layout::from_tar(index).map(Opened::Layout)
    } else {
        DockerArchive::from_index(index).map(|a| Opened::Docker(Arc::new(a)))
    }
}

/// The OCI layout of `label` (`//P:X`): the directory `P/X/` or the tar
/// `P/X.oci.tar`, whichever is found first.
fn find_layout(bazel_bin: &Path, label: &str) -> Option<PathBuf> {
    let [dir, tar] = targets::layout_paths(bazel_bin, label);
    if dir.join("oci-layout").exists() || dir.join("index.json").exists() {
        Some(dir)
    } else {
        tar.is_file().then_some(tar)
    }
}

/// Read the OCI layout directory or tar at `path`.
fn open_layout(path: &Path) -> Result<Artifact, String> {
    let layout = if path.is_dir() {
        Layout::open_dir(path)
    } else {
        TarIndex::build(path).and_then(Layout::from_tar)
    };
    layout.and_then(|l| l.root()).map(Artifact::Layout)
}

/// The two ways a target's images can be read, each opened on first use.
struct TargetSources {
    target: Target,
    choice: SourceChoice,
    bazel_bin: PathBuf,
    script: PathBuf,
    tarball: PathBuf,
    /// Bundle image names expected (for matching names with build-time
    /// prefixes).
    known: Vec<String>,
    parts: Option<Result<Parts, String>>,
    archive: Option<Result<Opened, String>>,
    /// Without a bundle tarball: whether any bundle image has an OCI layout.
    bundle_layouts: Option<bool>,
}

/// What a source gave for one image.
struct Found {
    source: SourceKind,
    file: PathBuf,
    image: Result<Artifact, String>,
    note: Option<String>,
}

impl TargetSources {
    /// The sources of `target`; `names` are the bundle images asked for
    /// (`None`: all of them).
    fn new(
        target: Target,
        choice: SourceChoice,
        bazel_bin: &Path,
        names: &Option<Vec<String>>,
    ) -> TargetSources {
        let mut known = target.image_names();
        if !target.bundle {
            known.push(target.image.to_string());
        }
        if let Some(names) = names {
            known.extend(names.iter().cloned());
        }
        TargetSources {
            target,
            choice,
            bazel_bin: bazel_bin.to_path_buf(),
            script: target.script_path(bazel_bin),
            tarball: target.tarball_path(bazel_bin),
            known,
            parts: None,
            archive: None,
            bundle_layouts: None,
        }
    }

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

    fn archive(&mut self) -> &Result<Opened, String> {
        if self.archive.is_none() {
            let layout = match (self.target.bundle, self.target.label) {
                (true, _) => "one OCI layout per image at its label".to_string(),
                (false, label) => format!("the OCI layout {}/", layout_dir(&self.bazel_bin, label)),
            };
            let opened = if self.tarball.exists() {
                open_tarball(&self.tarball)
            } else if self.choice == SourceChoice::Tarball {
                Err(format!(
                    "{} not found: build it with `{}` (or, with rules_oci, {layout})",
                    self.tarball.display(),
                    self.target.build_command()
                ))
            } else {
                Err(format!(
                    "{} not found: build it with `{}`, or build the push target's parts (pushed with Bazel's own digests) with `{}` (or, with rules_oci, {layout})",
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
                Ok(Opened::Docker(archive)) => {
                    archive.entries_by_name(&known).into_keys().collect()
                }
                _ => Vec::new(),
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
        } else if self.uses_bundle_layouts() {
            None
        } else {
            let tarball = self.tarball.clone();
            self.archive()
                .as_ref()
                .err()
                .map(|e| (SourceKind::Tarball, tarball, e.clone()))
        }
    }

    /// Every image of a whole bundle: the ones the catalog lists, and when
    /// its list may be stale (the built-in table), those found in the
    /// source in use too, sorted.
    fn bundle_names(&mut self, catalog: &Catalog) -> Vec<String> {
        let mut all = self.target.image_names();
        if !catalog.knows_all_images(&self.target) {
            let mut extra: Vec<String> = self
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

    /// Without a bundle tarball, whether the bundle's images are read from
    /// OCI layouts at their labels: when at least one of them has one.
    fn uses_bundle_layouts(&mut self) -> bool {
        if !self.target.bundle || self.tarball.exists() {
            return false;
        }
        if self.bundle_layouts.is_none() {
            let (target, bin) = (self.target, &self.bazel_bin);
            let any = self.known.iter().any(|name| {
                target
                    .image_label(name)
                    .is_some_and(|label| find_layout(bin, label).is_some())
            });
            self.bundle_layouts = Some(any);
        }
        self.bundle_layouts == Some(true)
    }

    /// Image `name` from the OCI layout at its label, when the tarball is
    /// not there; `None` to report the missing tarball instead.
    fn read_from_layout(&mut self, name: &str) -> Option<Found> {
        let target = self.target;
        if !target.bundle {
            let path = find_layout(&self.bazel_bin, target.label)?;
            let image = open_layout(&path);
            return Some(Found {
                source: SourceKind::Layout,
                file: path,
                image,
                note: None,
            });
        }
        if !self.uses_bundle_layouts() {
            return None;
        }
        let Some(label) = target.image_label(name) else {
            return Some(Found {
                source: SourceKind::Layout,
                file: self.tarball.clone(),
                image: Err(format!(
                    "the label of {name} is not known, so without {} its OCI layout cannot be found: build the bundle with `{}`",
                    self.tarball.display(),
                    target.build_command()
                )),
                note: None,
            });
        };
        let [dir, tar] = targets::layout_paths(&self.bazel_bin, label);
        let (file, image) = match find_layout(&self.bazel_bin, label) {
            Some(path) => {
                let image = open_layout(&path);
                (path, image)
            }
            None => (
                dir.clone(),
                Err(format!(
                    "no OCI layout of {name} (looked for {}/ and {}) and no bundle tarball {}: build the layout with `bazel build {label}` or the bundle with `{}`",
                    dir.display(),
                    tar.display(),
                    self.tarball.display(),
                    target.build_command()
                )),
            ),
        };
        Some(Found {
            source: SourceKind::Layout,
            file,
            image,
            note: None,
        })
    }

    fn read_from_tarball(&mut self, name: &str) -> Found {
        if !self.tarball.exists() {
            if let Some(found) = self.read_from_layout(name) {
                return found;
            }
        }
        let tarball = self.tarball.clone();
        let target = self.target;
        let known = self.known.clone();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let mut source = SourceKind::Tarball;
        let image = match self.archive() {
            Err(e) => Err(e.clone()),
            Ok(Opened::Layout(layout)) if !target.bundle => {
                source = SourceKind::Layout;
                layout.root().map(Artifact::Layout)
            }
            Ok(Opened::Layout(_)) => Err(format!(
                "{} is an OCI layout, which holds one image; the bundle needs a docker save tarball (`{}`) or one OCI layout per image at its label",
                tarball.display(),
                target.build_command()
            )),
            Ok(Opened::Docker(archive)) if !target.bundle => single_entry(archive, name)
                .and_then(|i| archive.image(i))
                .map(Artifact::Image),
            Ok(Opened::Docker(archive)) => {
                let by_name = archive.entries_by_name(&known);
                match by_name.get(name) {
                    Some(i) => archive.image(*i).map(Artifact::Image),
                    None => Err(not_in_bundle(name, &tarball, &by_name, &target)),
                }
            }
        };
        Found {
            source,
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
                None => {
                    let note = format!(
                        "{} has no push script for it; `{}` makes one",
                        self.script.display(),
                        self.target.parts_build_command()
                    );
                    self.read_from_tarball(name).noted(note)
                }
            },
            SourceChoice::Auto => {
                let note = format!(
                    "no push-target parts; `{}` makes them",
                    self.target.parts_build_command()
                );
                self.read_from_tarball(name).noted(note)
            }
        }
    }
}

impl Found {
    /// A note on why a tarball was read rather than the parts; an OCI
    /// layout needs none (its digests are Bazel's too).
    fn noted(self, note: String) -> Found {
        let note = (self.source == SourceKind::Tarball).then_some(note);
        Found { note, ..self }
    }
}

/// `P/X` of the label `//P:X`, for messages.
fn layout_dir(bazel_bin: &Path, label: &str) -> String {
    targets::layout_paths(bazel_bin, label)[0]
        .display()
        .to_string()
}

/// A target and the bundle images asked for (`None`: all of them).
type Wanted = (Target, Option<Vec<String>>);

/// Which images of which targets the selections ask for, in the order
/// KubeVirt pushes targets.
fn wanted(input: &PlanInput) -> Result<Vec<Wanted>, String> {
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
    let mut ordered: Vec<Wanted> = wanted.into_iter().collect();
    ordered.sort_by_key(|(t, _)| input.catalog.position(t));
    Ok(ordered)
}

/// Expand the selections into images, opening each source once.
pub fn plan(input: &PlanInput) -> Result<Plan, String> {
    plan_in(find_bazel_bin(input.workspace)?, input)
}

/// [`plan`] for a given bazel-bin tree (`--arch-bin` names one per
/// architecture); `input.workspace` is not used.
pub fn plan_in(bazel_bin: PathBuf, input: &PlanInput) -> Result<Plan, String> {
    let mut images = Vec::new();
    for (target, names) in wanted(input)? {
        let mut sources = TargetSources::new(target, input.source, &bazel_bin, &names);
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
                sources.bundle_names(input.catalog)
            }
        };
        for name in names {
            let found = sources.find(&name);
            images.push(planned(input, target, name, found));
        }
    }
    Ok(Plan { bazel_bin, images })
}

/// The image names the selections stand for, for `kvpush manifest`, which
/// reads no image: a target's own name; for a whole bundle, the catalog's
/// list, and with the built-in table the images a local bundle holds too.
/// No bazel-bin is needed.
pub fn image_names(input: &PlanInput) -> Result<Vec<(Target, String)>, String> {
    let bazel_bin = find_bazel_bin(input.workspace).ok();
    let mut out = Vec::new();
    for (target, names) in wanted(input)? {
        let names = match (names, &bazel_bin) {
            _ if !target.bundle => vec![target.image.to_string()],
            (Some(names), _) => names,
            (None, None) => target.image_names(),
            (None, Some(bin)) => {
                let mut sources = TargetSources::new(target, input.source, bin, &None);
                let present = sources.script.exists() || sources.tarball.exists();
                match sources.whole_failure() {
                    Some((_, _, e)) if !input.catalog.knows_all_images(&target) => {
                        if present {
                            tracing::warn!("{e}; listing the bundle images kvpush knows");
                        }
                        target.image_names()
                    }
                    _ => sources.bundle_names(input.catalog),
                }
            }
        };
        out.extend(names.into_iter().map(|n| (target, n)));
    }
    Ok(out)
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
    fn plain_names_split_as_oci_spec_splits_them_and_others_are_left_to_it() {
        let split = |name: &str| {
            let r: oci_spec::distribution::Reference = format!("{name}:t").parse().ok()?;
            Some((r.registry().to_string(), r.repository().to_string()))
        };
        for name in [
            "quay.io/kubevirt/virt-api",
            "localhost:5000/kubevirt/kv-virt-api",
            "127.0.0.1:38811/kubevirt/cirros-container-disk-demo",
            "localhost/a",
            "registry.example.com:443/team/sub.dir/name_with_underscore",
            "ghcr.io/kubevirt/a.b-c_d",
        ] {
            let (host, repo) = plain_host_and_repo(name).expect(name);
            assert_eq!(
                Some((host.to_string(), repo.to_string())),
                split(name),
                "{name}"
            );
        }
        for name in [
            "kubevirt/virt-api",         // no host: Docker Hub
            "docker.io/virt-api",        // normalised to library/
            "Quay.io/kubevirt/virt-api", // uppercase
            "quay.io/KubeVirt/virt-api", // invalid
            "quay.io/kubevirt/a__b",     // valid, but not plain
            "quay.io/kubevirt/-a",       // invalid
            "quay.io/kubevirt//a",       // invalid
            "quay.io:/kubevirt/a",       // invalid
            "quay.io/kubevirt/a.",       // invalid
            "[::1]:5000/kubevirt/a",     // valid, but not plain
            "quay.io/kubevirt/a@sha256", // invalid
        ] {
            assert_eq!(plain_host_and_repo(name), None, "{name}");
        }
        // Whatever the fast path accepts, oci-spec accepts and splits alike.
        let alphabet = b"ab0.-_/:";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut name = String::from("h.io/");
            for _ in 0..(x % 9) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                name.push(alphabet[(x % alphabet.len() as u64) as usize] as char);
            }
            if let Some((host, repo)) = plain_host_and_repo(&name) {
                assert_eq!(
                    Some((host.to_string(), repo.to_string())),
                    split(&name),
                    "{name}"
                );
            }
        }
    }

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
