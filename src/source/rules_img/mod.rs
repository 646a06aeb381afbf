//! rules_img `image_push` targets (KubeVirt since July 2026): what
//! `bazel build //:push-X` leaves in `bazel-bin/` (the deploy manifest
//! `push-X.json` and the runfiles of `push-X.exe`) turned into the same
//! [`LayoutRoot`] an OCI layout gives, so the push code pushes manifests,
//! configs and local layers byte for byte; the registry's digest is then the
//! deploy manifest's `root.digest`. Layers the runfiles lack (shallow base
//! layers) become [`LayoutBlob::remote`] blobs naming their origins.
//!
//! Three runfiles layouts, under `++rules_img_private++/_main/<pkg>/push-X/`
//! (or its hashed form), operation `<o>`, image `<m>`, layer `<l>`:
//! - v0.3.0-v0.3.11: `<o>/manifests/<m>/{manifest.json,config.json}`,
//!   `<o>/index.json` for an index;
//! - v0.3.12+: `<o>/sparse_oci_layout/blobs/sha256/<hex>` for manifests,
//!   configs and the index;
//! - both: `<o>/manifests/<m>/layer/<l>` for each layer built locally.
//!
//! Never talks to a registry and never reads a layer: sizes are checked here,
//! digests by the push code while it reads (see [`LayoutBlob`]).

pub mod deploy_manifest;
pub mod runfiles;

use std::path::{Path, PathBuf};

use deploy_manifest::{DeployManifest, ManifestInfo, Operation};
use runfiles::Runfiles;

use super::oci_layout::{LayoutBlob, LayoutImage, LayoutIndex, LayoutManifest, LayoutRoot};
use super::remote::{BlobOrigin, CrossMountHint, RemoteBlob};
use super::Artifact;
use crate::blob::{sha256_digest, FileRange};
use crate::manifest::{Parsed, Platform};

/// Manifests, configs and deploy manifests are read into memory; refuse absurd ones.
const MAX_JSON: u64 = 16 << 20;

/// One `push` operation: the image or index to push, and where rules_img
/// would have pushed it (kvpush's destination overrides that, as KubeVirt's
/// `--registry`/`--repository`/`--tag` do).
#[derive(Clone, Debug)]
pub struct PushOp {
    /// Byte for byte; `root.manifest().digest` is the deploy manifest's
    /// `root.digest`, the digest the registry must report.
    pub root: LayoutRoot,
    /// Build-time destination and tags (stamped).
    pub registry: String,
    pub repository: String,
    pub tags: Vec<String>,
}

/// A `registry_tag` operation: extra tags for a manifest a push operation
/// pushed (a child of an index, by rules_img's `manifest_tags`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagOp {
    /// `sha256:<hex>` of the manifest to tag.
    pub digest: String,
    pub registry: String,
    pub repository: String,
    pub tags: Vec<String>,
}

/// What a rules_img push target would deploy.
#[derive(Clone, Debug)]
pub struct Deploy {
    /// `bazel-bin/push-X.json`.
    pub deploy_manifest: PathBuf,
    /// In the deploy manifest's order (one for `image_push`).
    pub pushes: Vec<PushOp>,
    /// Applied after every push.
    pub tags: Vec<TagOp>,
}

impl Deploy {
    /// The artifact to push for an `image_push` target: its one push, each
    /// `registry_tag` operation's tags attached to the manifest it names
    /// (as rules_img does, they go to the push's repository, after the
    /// push; kvpush's destination replaces the build-time one as it does
    /// the push's). A tag operation for another repository than the push's,
    /// or for a manifest the push does not push, is refused.
    pub fn artifact(&self) -> Result<Artifact, String> {
        let one = match self.pushes.as_slice() {
            [one] => one,
            many => {
                return Err(format!(
                    "{} holds {} push operations; kvpush pushes image_push targets, which have one",
                    self.deploy_manifest.display(),
                    many.len()
                ))
            }
        };
        let mut root = one.root.clone();
        for op in &self.tags {
            let refuse = |why: String| {
                format!(
                    "{}: its registry_tag operation (tags {:?} of {}) {why}; kvpush cannot apply it: push this target with `bazel run`, or tag after the push",
                    self.deploy_manifest.display(),
                    op.tags,
                    op.digest
                )
            };
            if (op.registry.as_str(), op.repository.as_str())
                != (one.registry.as_str(), one.repository.as_str())
            {
                return Err(refuse(format!(
                    "names {}/{}, not the push's repository {}/{}",
                    op.registry, op.repository, one.registry, one.repository
                )));
            }
            let image = images_mut(&mut root)
                .iter_mut()
                .find(|i| i.manifest.digest == op.digest)
                .ok_or_else(|| refuse("names a manifest the push does not push".into()))?;
            for tag in &op.tags {
                if !image.tags.contains(tag) {
                    image.tags.push(tag.clone());
                }
            }
        }
        Ok(Artifact::Layout(root))
    }
}

fn images_mut(root: &mut LayoutRoot) -> &mut [LayoutImage] {
    match root {
        LayoutRoot::Image(image) => std::slice::from_mut(image.as_mut()),
        LayoutRoot::Index(index) => &mut index.images,
    }
}

/// Read what `bazel build //:<push>` left in `bazel_bin` for an `image_push`
/// target of the root package.
pub fn read(bazel_bin: &Path, push: &str) -> Result<Deploy, String> {
    read_in_package(bazel_bin, "", push)
}

/// [`read`] for a target of package `pkg` (`bazel-bin/<pkg>/push-X.json`).
pub fn read_in_package(bazel_bin: &Path, pkg: &str, push: &str) -> Result<Deploy, String> {
    let label = format!("//{pkg}:{push}");
    let dir = bazel_bin.join(pkg);
    let path = dir.join(format!("{push}.json"));
    let bytes = read_small(&path).map_err(|e| match e {
        ReadError::Missing => format!(
            "{push}: no rules_img deploy manifest {}; run `bazel build {label}` first",
            path.display()
        ),
        ReadError::Other(e) => format!("{push}: {e}"),
    })?;
    let manifest = DeployManifest::parse(&bytes, push, &path.display().to_string())?;
    let runfiles = Runfiles::open(&dir, &format!("{push}.exe"))?.ok_or_else(|| {
        format!(
            "{push}: {} has neither {push}.exe.runfiles/ nor {push}.exe.runfiles_manifest; run `bazel build {label}`",
            dir.display()
        )
    })?;
    let mut deploy = Deploy {
        deploy_manifest: path,
        pushes: Vec::new(),
        tags: Vec::new(),
    };
    for (index, op) in manifest.operations.iter().enumerate() {
        if op.command == "registry_tag" {
            deploy.tags.push(TagOp {
                digest: op.root.digest.clone(),
                registry: op.registry.clone(),
                repository: op.repository.clone(),
                tags: op.tags.clone(),
            });
            continue;
        }
        let files = OpFiles::find(&runfiles, pkg, push, index)?;
        deploy.pushes.push(PushOp {
            root: files.root(op)?,
            registry: op.registry.clone(),
            repository: op.repository.clone(),
            tags: op.tags.clone(),
        });
    }
    Ok(deploy)
}

enum ReadError {
    Missing,
    Other(String),
}

fn read_small(path: &Path) -> Result<Vec<u8>, ReadError> {
    let meta = std::fs::metadata(path).map_err(|_| ReadError::Missing)?;
    if meta.len() > MAX_JSON {
        return Err(ReadError::Other(format!(
            "{} is {} bytes, too large for a manifest",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path)
        .map_err(|e| ReadError::Other(format!("cannot read {}: {e}", path.display())))
}

/// The runfiles of one operation, and which layout they use.
struct OpFiles<'a> {
    runfiles: &'a Runfiles,
    push: &'a str,
    /// `++rules_img_private++/.../<o>/`.
    base: String,
    sparse: bool,
}

impl<'a> OpFiles<'a> {
    fn find(runfiles: &'a Runfiles, pkg: &str, push: &'a str, op: usize) -> Result<Self, String> {
        let prefixes = runfiles::prefixes(pkg, push);
        for prefix in &prefixes {
            let base = format!("{prefix}{op}/");
            for (marker, sparse) in [
                ("sparse_oci_layout/root.descriptor.json", true),
                ("manifests/0/manifest.json", false),
                ("index.json", false),
            ] {
                if runfiles.file(&format!("{base}{marker}")).is_some() {
                    return Ok(OpFiles {
                        runfiles,
                        push,
                        base,
                        sparse,
                    });
                }
            }
        }
        Err(format!(
            "{push}: the runfiles {} hold no image for operation {op} (looked under {}); rebuild with `bazel build //{pkg}:{push}`",
            runfiles.location().display(),
            prefixes.join(" and ")
        ))
    }

    fn incomplete(&self, what: &str, rel: &str) -> String {
        format!(
            "{}: {what} is not in the runfiles {} ({}{rel} missing); rebuild with `bazel build //:{}`",
            self.push,
            self.runfiles.location().display(),
            self.base,
            self.push
        )
    }

    /// A manifest, index or config, by its layout's path, checked against
    /// its digest.
    fn json(&self, what: &str, legacy: &str, digest: &str) -> Result<(Vec<u8>, PathBuf), String> {
        let rel = if self.sparse {
            format!("sparse_oci_layout/blobs/sha256/{}", &digest[7..])
        } else {
            legacy.to_string()
        };
        let path = self
            .runfiles
            .file(&format!("{}{rel}", self.base))
            .ok_or_else(|| self.incomplete(what, &rel))?;
        let bytes = read_small(&path).map_err(|e| match e {
            ReadError::Missing => self.incomplete(what, &rel),
            ReadError::Other(e) => format!("{}: {e}", self.push),
        })?;
        let got = sha256_digest(&bytes);
        if got != digest {
            return Err(format!(
                "{}: {what} {} hashes to {got} but the deploy manifest says {digest}; rebuild with `bazel build //:{}`",
                self.push,
                path.display(),
                self.push
            ));
        }
        Ok((bytes, path))
    }

    fn root(&self, op: &Operation) -> Result<LayoutRoot, String> {
        if op.root_kind == "manifest" {
            let [info] = op.manifests.as_slice() else {
                return Err(format!(
                    "{}: a manifest push lists {} images; expected one",
                    self.push,
                    op.manifests.len()
                ));
            };
            if info.descriptor.digest != op.root.digest {
                return Err(format!(
                    "{}: root {} is not the image's manifest {}",
                    self.push, op.root.digest, info.descriptor.digest
                ));
            }
            return Ok(LayoutRoot::Image(Box::new(self.image(op, 0, info, None)?)));
        }
        let (bytes, _) = self.json("index", "index.json", &op.root.digest)?;
        let index = Parsed::from_slice(&bytes).map_err(|e| format!("{}: index: {e}", self.push))?;
        let children: Vec<_> = index.manifests.iter().map(|d| d.digest.as_str()).collect();
        let listed: Vec<_> = op
            .manifests
            .iter()
            .map(|m| m.descriptor.digest.as_str())
            .collect();
        if children != listed {
            return Err(format!(
                "{}: the index lists {children:?} but the deploy manifest {listed:?}",
                self.push
            ));
        }
        let images = op
            .manifests
            .iter()
            .zip(&index.manifests)
            .enumerate()
            .map(|(m, (info, child))| self.image(op, m, info, child.platform.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LayoutRoot::Index(LayoutIndex {
            manifest: LayoutManifest {
                media_type: index.kind(Some(&op.root.media_type)),
                digest: op.root.digest.clone(),
                bytes,
            },
            images,
        }))
    }

    fn image(
        &self,
        op: &Operation,
        m: usize,
        info: &ManifestInfo,
        platform: Option<Platform>,
    ) -> Result<LayoutImage, String> {
        let dir = format!("manifests/{m}/");
        let digest = &info.descriptor.digest;
        let (bytes, _) = self.json("manifest", &format!("{dir}manifest.json"), digest)?;
        let parsed = Parsed::from_slice(&bytes)
            .map_err(|e| format!("{}: manifest {digest}: {e}", self.push))?;
        let config_digest = &info.config.digest;
        let (config, config_path) =
            self.json("config", &format!("{dir}config.json"), config_digest)?;
        let layer_digests: Vec<_> = parsed.layers.iter().map(|l| l.digest.as_str()).collect();
        let listed: Vec<_> = info.layer_blobs.iter().map(|l| l.digest.as_str()).collect();
        if layer_digests != listed
            || parsed.config.as_ref().map(|c| &c.digest) != Some(config_digest)
        {
            return Err(format!(
                "{}: manifest {digest} does not name the config and layers its deploy manifest lists; rebuild with `bazel build //:{}`",
                self.push, self.push
            ));
        }
        let layers = parsed
            .layers
            .iter()
            .zip(&info.layer_blobs)
            .enumerate()
            .map(|(l, (desc, blob))| {
                let rel = format!("{dir}layer/{l}");
                match self.runfiles.file(&format!("{}{rel}", self.base)) {
                    Some(path) => {
                        let len = std::fs::metadata(&path)
                            .map_err(|e| format!("{}: {}: {e}", self.push, path.display()))?
                            .len();
                        if len != desc.size {
                            return Err(format!(
                                "{}: layer {} ({}) is {len} bytes but its descriptor says {}; the file changed after the build: rebuild with `bazel build //:{}`",
                                self.push,
                                desc.digest,
                                // The built file, not its runfiles link.
                                std::fs::canonicalize(&path).unwrap_or(path).display(),
                                desc.size,
                                self.push
                            ));
                        }
                        let range = FileRange { path, offset: 0, len };
                        Ok(LayoutBlob::local(&desc.media_type, &desc.digest, desc.size, range))
                    }
                    None => {
                        let remote = self.remote(op, info, blob).ok_or_else(|| {
                            if blob.compact_stream.is_some() {
                                format!(
                                    "{}: layer {} is a compact-stream layer rules_img never wrote out; kvpush cannot push it: push this target with `bazel run //:{}`",
                                    self.push, desc.digest, self.push
                                )
                            } else {
                                self.incomplete(&format!("layer {}", desc.digest), &rel)
                            }
                        })?;
                        Ok(LayoutBlob::remote(&desc.media_type, &desc.digest, desc.size, remote))
                    }
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        let platform = platform.or_else(|| Platform::from_config(&config).ok());
        Ok(LayoutImage {
            manifest: LayoutManifest {
                media_type: parsed.kind(Some(&info.descriptor.media_type)),
                digest: digest.clone(),
                bytes,
            },
            config: LayoutBlob::local(
                &info.config.media_type,
                config_digest,
                info.config.size,
                FileRange {
                    path: config_path,
                    offset: 0,
                    len: config.len() as u64,
                },
            ),
            layers,
            platform,
            tags: Vec::new(),
        })
    }

    /// Where a layer the runfiles lack comes from: its own `sources`
    /// (v0.3.16+), else the base image's registries when `missing_blobs`
    /// lists it (v0.3.0-v0.3.15).
    fn remote(
        &self,
        op: &Operation,
        info: &ManifestInfo,
        blob: &deploy_manifest::Descriptor,
    ) -> Option<RemoteBlob> {
        let origins: Vec<BlobOrigin> = if !blob.sources.is_empty() {
            blob.sources
                .iter()
                .map(|s| BlobOrigin {
                    registry: s.registry.clone(),
                    repository: s.repository.clone(),
                })
                .collect()
        } else if info.lists_missing(&blob.digest) && !op.original_repository.is_empty() {
            op.original_registries
                .iter()
                .map(|r| BlobOrigin {
                    registry: r.clone(),
                    repository: op.original_repository.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        (!origins.is_empty()).then(|| RemoteBlob {
            origins,
            cross_mount: op.cross_mount_hint.as_ref().map(|h| CrossMountHint {
                registry: h.registry.clone().filter(|r| !r.is_empty()),
                repository: h.repository.clone(),
            }),
        })
    }
}

#[cfg(test)]
mod tests;
