//! Legacy `docker save` tarballs, as rules_docker (go-containerregistry's
//! legacy writer) and `docker save` write them: `<hex>.json` configs,
//! `<id>/layer.tar` (or gzip `<hex>.tar.gz`) layers and a `manifest.json`
//! near the end listing, per image, its config, RepoTags and layers.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::tar_index::TarIndex;
use super::{Image, Layer};
use crate::blob::sha256_digest;

/// One element of `manifest.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct ManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
    #[serde(rename = "LayerSources", default)]
    pub layer_sources: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The part of an image config kvpush needs to check layers.
#[derive(Deserialize)]
struct ConfigRootFs {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// An indexed tarball and its parsed `manifest.json`.
#[derive(Debug)]
pub struct DockerArchive {
    pub index: TarIndex,
    pub entries: Vec<ManifestEntry>,
}

/// The image name a RepoTag stands for: the last path component of its
/// repository (`index.docker.io/kubevirt/cirros-container-disk-demo:latest`
/// → `cirros-container-disk-demo`, `bazel/cmd/virt-api:virt-api-image` →
/// `virt-api`... via its repository `bazel/cmd/virt-api`).
pub fn repo_tag_name(repo_tag: &str) -> &str {
    let without_digest = repo_tag.split('@').next().unwrap_or(repo_tag);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// Parse `manifest.json` (of the tarball at `path`, for messages).
pub fn parse_manifest(bytes: &[u8], path: &Path) -> Result<Vec<ManifestEntry>, String> {
    let entries: Vec<ManifestEntry> = serde_json::from_slice(bytes)
        .map_err(|e| format!("manifest.json in {} is not valid: {e}", path.display()))?;
    if entries.is_empty() {
        return Err(format!(
            "manifest.json in {} lists no image",
            path.display()
        ));
    }
    Ok(entries)
}

/// Why an image config gives no diff_ids.
pub(super) enum ConfigProblem {
    /// Not JSON, or no `rootfs.diff_ids`.
    Unreadable(serde_json::Error),
    /// A diff_id that is not a sha256 digest.
    BadDiffId(String),
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigProblem::Unreadable(e) => write!(f, "{e}"),
            ConfigProblem::BadDiffId(bad) => write!(f, "invalid diff_id {bad:?}"),
        }
    }
}

/// The `rootfs.diff_ids` of an image config, each checked to be a sha256
/// digest; for tarballs and push-target parts alike.
pub(super) fn config_diff_ids(config: &[u8]) -> Result<Vec<String>, ConfigProblem> {
    let parsed: ConfigRootFs = serde_json::from_slice(config).map_err(ConfigProblem::Unreadable)?;
    let diff_ids = parsed.rootfs.diff_ids;
    if let Some(bad) = diff_ids.iter().find(|d| !crate::blob::is_sha256_digest(d)) {
        return Err(ConfigProblem::BadDiffId(bad.clone()));
    }
    Ok(diff_ids)
}

/// The `rootfs.diff_ids` of the image config `name` in the tarball at
/// `path`, each checked to be a sha256 digest.
pub fn parse_diff_ids(config: &[u8], name: &str, path: &Path) -> Result<Vec<String>, String> {
    config_diff_ids(config).map_err(|problem| match problem {
        ConfigProblem::Unreadable(e) => format!(
            "config {name} in {} is not a valid image config: {e}",
            path.display()
        ),
        ConfigProblem::BadDiffId(bad) => format!(
            "config {name} in {} has an invalid diff_id {bad:?}",
            path.display()
        ),
    })
}

impl DockerArchive {
    /// Index `path` once and parse its `manifest.json`.
    pub fn open(path: &Path) -> Result<DockerArchive, String> {
        DockerArchive::from_index(TarIndex::build(path)?)
    }

    /// Parse the `manifest.json` of an already indexed tarball.
    pub fn from_index(index: TarIndex) -> Result<DockerArchive, String> {
        let path = &index.path;
        let manifest = index.get("manifest.json").ok_or_else(|| {
            format!(
                "{} has no manifest.json: it is not a docker save / rules_docker image tarball, or it is truncated; rebuild it with bazel",
                path.display()
            )
        })?;
        let bytes = manifest
            .read_all()
            .map_err(|e| format!("cannot read manifest.json in {}: {e}", path.display()))?;
        let entries = parse_manifest(&bytes, path)?;
        Ok(DockerArchive { index, entries })
    }

    /// Map each image name found in the RepoTags to its entry.
    ///
    /// `known` are the names the caller expects (the bundle table): a
    /// repository whose last component ends with a known name after a
    /// build-time `image_prefix` is matched to the longest such name. Names
    /// not in `known` are kept too (the table goes stale), with the
    /// build-time prefix seen on the known ones removed.
    pub fn entries_by_name(&self, known: &[&str]) -> HashMap<String, usize> {
        let components = self.entries.iter().enumerate().flat_map(|(i, entry)| {
            entry
                .repo_tags
                .iter()
                .flatten()
                .map(move |tag| (repo_tag_name(tag), i))
        });
        super::match_names(components, known)
    }

    /// Read the image of entry `i`: its config bytes and layer locations.
    pub fn image(&self, i: usize) -> Result<Image, String> {
        let path = &self.index.path;
        let entry = &self.entries[i];
        if entry.layer_sources.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(format!(
                "{}: the image lists foreign layers (LayerSources), which kvpush does not push",
                path.display()
            ));
        }
        let config_range = self.index.get(&entry.config).ok_or_else(|| {
            format!(
                "{}: manifest.json names config {} which is not in the tarball",
                path.display(),
                entry.config
            )
        })?;
        let config = config_range.read_all().map_err(|e| {
            format!(
                "cannot read config {} in {}: {e}",
                entry.config,
                path.display()
            )
        })?;
        let diff_ids = parse_diff_ids(&config, &entry.config, path)?;
        if diff_ids.len() != entry.layers.len() {
            return Err(format!(
                "{}: manifest.json lists {} layers but config {} has {} diff_ids",
                path.display(),
                entry.layers.len(),
                entry.config,
                diff_ids.len()
            ));
        }
        let layers = entry
            .layers
            .iter()
            .map(|name| {
                self.index
                    .get(name)
                    .cloned()
                    .map(Layer::Raw)
                    .ok_or_else(|| {
                        format!(
                            "{}: manifest.json names layer {name} which is not in the tarball",
                            path.display()
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Image {
            source: path.clone(),
            config_digest: sha256_digest(&config),
            config,
            diff_ids,
            layers,
            expected_digest: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn archive_with(dir: &Path, manifest: &str, members: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path = dir.join("img.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        };
        for (name, data) in members {
            add(name, data);
        }
        add("manifest.json", manifest.as_bytes());
        builder.finish().unwrap();
        path
    }

    #[test]
    fn repo_tag_names() {
        assert_eq!(
            repo_tag_name("index.docker.io/kubevirt/cirros-container-disk-demo:latest"),
            "cirros-container-disk-demo"
        );
        assert_eq!(
            repo_tag_name("bazel/cmd/virt-api:virt-api-image"),
            "virt-api"
        );
        assert_eq!(
            repo_tag_name("localhost:5000/kv/nfs-server:devel"),
            "nfs-server"
        );
        assert_eq!(repo_tag_name("quay.io/x/winrmcli@sha256:abcd"), "winrmcli");
    }

    #[test]
    fn bundle_entries_match_by_last_component_with_build_prefix_and_extras() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let manifest = r#"[
          {"Config":"c.json","RepoTags":["quay.io/kv/pre-cirros-custom-container-disk-demo:t"],"Layers":[]},
          {"Config":"c.json","RepoTags":["quay.io/kv/pre-cirros-container-disk-demo:t","quay.io/kv/pre-vm-killer:t"],"Layers":[]},
          {"Config":"c.json","RepoTags":["quay.io/kv/pre-brand-new-image:t"],"Layers":[]}
        ]"#;
        let path = archive_with(dir.path(), manifest, &[("c.json", cfg), ("c.json", cfg)]);
        let archive = DockerArchive::open(&path).unwrap();
        let known = [
            "cirros-container-disk-demo",
            "cirros-custom-container-disk-demo",
            "vm-killer",
            "container-disk-demo",
        ];
        let by_name = archive.entries_by_name(&known);
        assert_eq!(by_name["cirros-custom-container-disk-demo"], 0);
        assert_eq!(by_name["cirros-container-disk-demo"], 1);
        assert_eq!(
            by_name["vm-killer"], 1,
            "merged entry with several RepoTags"
        );
        assert_eq!(
            by_name["brand-new-image"], 2,
            "extras keep their name, build prefix removed"
        );
        assert!(!by_name.contains_key("container-disk-demo"));
    }

    #[test]
    fn bad_manifests_and_configs_are_errors_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = archive_with(dir.path(), "not json", &[]);
        assert!(DockerArchive::open(&path)
            .unwrap_err()
            .contains("manifest.json in"));

        let d = format!("sha256:{}", "a".repeat(64));
        let cfg = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{d}","{d}"]}}}}"#);
        let manifest =
            r#"[{"Config":"c.json","RepoTags":null,"Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
        let path = archive_with(
            dir.path(),
            manifest,
            &[("c.json", cfg.as_bytes()), ("l1/layer.tar", b"x")],
        );
        let err = DockerArchive::open(&path).unwrap().image(0).unwrap_err();
        assert!(
            err.contains("layer l2/layer.tar which is not in the tarball"),
            "{err}"
        );

        let manifest = r#"[{"Config":"c.json","Layers":["l1/layer.tar"]}]"#;
        let path = archive_with(
            dir.path(),
            manifest,
            &[("c.json", cfg.as_bytes()), ("l1/layer.tar", b"x")],
        );
        let err = DockerArchive::open(&path).unwrap().image(0).unwrap_err();
        assert!(
            err.contains("lists 1 layers but config c.json has 2 diff_ids"),
            "{err}"
        );

        let manifest = r#"[{"Config":"c.json","Layers":[]}]"#;
        let path = archive_with(dir.path(), manifest, &[("c.json", b"{not json")]);
        let err = DockerArchive::open(&path).unwrap().image(0).unwrap_err();
        assert!(
            err.contains("config c.json in") && err.contains("not a valid image config"),
            "{err}"
        );

        let manifest = r#"[{"Config":"missing.json","Layers":[]}]"#;
        let path = archive_with(dir.path(), manifest, &[]);
        let err = DockerArchive::open(&path).unwrap().image(0).unwrap_err();
        assert!(
            err.contains("config missing.json which is not in the tarball"),
            "{err}"
        );
    }

    #[test]
    fn image_reads_config_and_layer_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let layer = b"layer bytes";
        let d = sha256_digest(layer);
        let cfg = format!(
            r#"{{"architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        let manifest = r#"[{"Config":"c.json","RepoTags":["bazel/cmd/virt-api:virt-api-image"],"Layers":["l1/layer.tar"]}]"#;
        let path = archive_with(
            dir.path(),
            manifest,
            &[("c.json", cfg.as_bytes()), ("l1/layer.tar", layer)],
        );
        let image = DockerArchive::open(&path).unwrap().image(0).unwrap();
        assert_eq!(image.config, cfg.as_bytes());
        assert_eq!(image.config_digest, sha256_digest(cfg.as_bytes()));
        assert_eq!(image.diff_ids, vec![d]);
        assert_eq!(image.layers[0].range().read_all().unwrap(), layer);
    }
}
