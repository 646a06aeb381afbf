//! The `docker save` / rules_docker tarball format, and helpers for tests that
//! need hand-made (possibly broken) archives.
//!
//! What go-containerregistry writes (what rules_docker v0.16's `join_layers`
//! calls for `container_image(...).tar` and `container_bundle` outputs):
//!
//! * legacy format (`pkg/legacy/tarball.MultiWrite`, rules_docker's default
//!   `experimental_tarball_format = "legacy"`), per image, in Go map order:
//!   `<config-hex>.json`, then for every layer bottom-up `<id>/layer.tar`
//!   (uncompressed), `<id>/json`, `<id>/VERSION` (`1.0`); after all images
//!   `manifest.json` and last `repositories`. It does **not** de-duplicate:
//!   a layer shared by several images of a bundle is written again for every
//!   image (same `<id>/...` names, same bytes, since the id of a non-top layer
//!   only depends on the layer and its parents).
//! * compressed format (`pkg/v1/tarball.MultiRefWrite`,
//!   `experimental_tarball_format = "compressed"`): per image the config named
//!   `sha256:<hex>` (no `.json`!), then each layer not seen yet as
//!   `<compressed-digest-hex>.tar.gz`; `manifest.json` last (entries sorted by
//!   joined RepoTags); no `repositories`, no `<id>/json`.
//!
//! All entries have mode 0644, uid/gid 0, mtime 0.

use crate::content::{ContentGen, ContentKind};
use crate::tarfmt::{self, EntryMeta};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// `created` timestamp of everything Bazel builds without stamping.
pub const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// gzip `data` (deterministic: mtime 0, no file name).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

// ---------------------------------------------------------------------------
// Image config (Go struct field order, as rules_docker marshals v1.ConfigFile)
// ---------------------------------------------------------------------------

/// `config` section of an image config (subset of Go's `v1.Config`, in Go's
/// field order, every field `omitempty`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunConfig {
    /// `Cmd`
    #[serde(rename = "Cmd", skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `Entrypoint`
    #[serde(rename = "Entrypoint", skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `Env`
    #[serde(rename = "Env", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `Labels`
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `User`
    #[serde(rename = "User", skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `WorkingDir`
    #[serde(rename = "WorkingDir", skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    author: &'a str,
    created: &'a str,
    created_by: &'a str,
}

#[derive(Serialize)]
struct RootFsJson<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Option<&'a [String]>,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    architecture: &'a str,
    author: &'a str,
    created: &'a str,
    history: Vec<HistoryJson<'a>>,
    os: &'a str,
    rootfs: RootFsJson<'a>,
    config: &'a RunConfig,
}

/// Raw image config bytes as rules_docker writes them: amd64/linux, author
/// `Bazel`, created at the epoch, one history entry per layer (`created_by`
/// taken from `created_by[i]`), `rootfs.diff_ids` = `diff_ids`.
pub fn image_config_with(diff_ids: &[String], created_by: &[String], run: &RunConfig) -> Vec<u8> {
    image_config_for("amd64", diff_ids, created_by, run)
}

/// [`image_config_with`] for another `architecture` (Go's GOARCH name:
/// `amd64`, `arm64`, `s390x`), as a build for that platform writes it.
pub fn image_config_for(
    architecture: &str,
    diff_ids: &[String],
    created_by: &[String],
    run: &RunConfig,
) -> Vec<u8> {
    let history = created_by
        .iter()
        .map(|c| HistoryJson {
            author: "Bazel",
            created: EPOCH,
            created_by: c,
        })
        .collect();
    serde_json::to_vec(&ConfigJson {
        architecture,
        author: "Bazel",
        created: EPOCH,
        history,
        os: "linux",
        rootfs: RootFsJson {
            kind: "layers",
            diff_ids: Some(diff_ids),
        },
        config: run,
    })
    .expect("serialising a config cannot fail")
}

/// A plain image config for `diff_ids` (`sha256:<hex>` strings) with the
/// given entrypoint; one history entry per diff_id.
pub fn image_config(diff_ids: &[String], entrypoint: &[&str]) -> Vec<u8> {
    let created_by: Vec<String> = (0..diff_ids.len())
        .map(|i| format!("bazel build layer {i}"))
        .collect();
    let run = RunConfig {
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        ..RunConfig::default()
    };
    image_config_with(diff_ids, &created_by, &run)
}

// ---------------------------------------------------------------------------
// v1 layer metadata of the legacy format
// ---------------------------------------------------------------------------

/// v1 layer id, as `pkg/legacy/tarball` computes it:
/// `sha256("<digest-hex> <parent-id>")`, and for the top layer
/// `sha256("<digest-hex> <parent-id> <raw config>")`. `digest_hex` is the
/// *compressed* layer digest in rules_docker (which we cannot reproduce; the
/// generator passes a stand-in). The result is opaque: it is neither the
/// layer digest nor the diff_id.
pub fn v1_layer_id(digest_hex: &str, parent_id: &str, raw_config: Option<&[u8]>) -> String {
    let mut h = Sha256::new();
    h.update(digest_hex.as_bytes());
    h.update(b" ");
    h.update(parent_id.as_bytes());
    if let Some(c) = raw_config.filter(|c| !c.is_empty()) {
        h.update(b" ");
        h.update(c);
    }
    hex::encode(h.finalize())
}

#[derive(Serialize)]
struct ContainerConfigJson<'a> {
    #[serde(rename = "Cmd")]
    cmd: [&'a str; 1],
}

#[derive(Serialize)]
struct LayerJson<'a> {
    architecture: &'a str,
    author: &'a str,
    created: &'a str,
    os: &'a str,
    rootfs: RootFsJson<'a>,
    config: serde_json::Value,
    container_config: ContainerConfigJson<'a>,
    id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    parent: &'a str,
}

/// `<id>/json` of the legacy format (Go's `legacy.LayerConfigFile`): for the
/// top layer architecture/os/config come from the image config, for the others
/// they are empty; `container_config.Cmd` is the history's `created_by`.
pub fn v1_layer_json(
    id: &str,
    parent: &str,
    created_by: &str,
    top_config: Option<&serde_json::Value>,
) -> Vec<u8> {
    let (arch, os, config) = match top_config {
        Some(c) => (
            c["architecture"].as_str().unwrap_or(""),
            c["os"].as_str().unwrap_or(""),
            c.get("config")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({})),
        ),
        None => ("", "", serde_json::json!({})),
    };
    serde_json::to_vec(&LayerJson {
        architecture: arch,
        author: "Bazel",
        created: EPOCH,
        os,
        rootfs: RootFsJson {
            kind: "",
            diff_ids: None,
        },
        config,
        container_config: ContainerConfigJson { cmd: [created_by] },
        id,
        parent,
    })
    .expect("serialising layer json cannot fail")
}

/// One `manifest.json` entry (Go's `tarball.Descriptor`; `LayerSources` is
/// omitted when empty, as Go does).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Config entry name.
    #[serde(rename = "Config")]
    pub config: String,
    /// Tags of this image.
    #[serde(rename = "RepoTags")]
    pub repo_tags: Vec<String>,
    /// Layer entry names, bottom-up.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// Split `registry/repo:tag` into (`registry/repo`, `tag`), ignoring a
/// `host:port` colon (go-containerregistry's `splitTag`).
pub fn split_tag(name: &str) -> (&str, &str) {
    match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    }
}

// ---------------------------------------------------------------------------
// Layer tars
// ---------------------------------------------------------------------------

/// A real layer tar holding `files` (path, content), with their parent
/// directories, mode 0644/0755, uid 0, mtime 0. Paths are written as given;
/// rules_docker writes `./usr/bin/x`.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    tarfmt::write_parent_dirs(&mut out, files.iter().map(|(p, _)| *p)).expect("Vec write");
    for (p, data) in files {
        tarfmt::write_entry(&mut out, &EntryMeta::file(p, data.len() as u64), data)
            .expect("Vec write");
    }
    tarfmt::write_trailer(&mut out).expect("Vec write");
    out
}

/// A layer tar with one file `./data/blob-<seed>` of `size` bytes of
/// binary-like content determined by `seed`.
pub fn random_layer(seed: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    ContentGen::new(ContentKind::Binary, seed).fill(&mut data);
    let path = format!("./data/blob-{seed}");
    layer_tar(&[(&path, &data)])
}

// ---------------------------------------------------------------------------
// Hand-made archives for tests
// ---------------------------------------------------------------------------

/// Which go-containerregistry writer an archive imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ArchiveFormat {
    /// `pkg/legacy/tarball`: `<id>/layer.tar` + `<hex>.json` + `repositories`.
    #[default]
    Legacy,
    /// `pkg/v1/tarball`: `<gz-hex>.tar.gz` + `sha256:<hex>` config.
    Compressed,
}

/// One image for [`build_archive`].
#[derive(Clone, Debug)]
pub struct TestImage {
    /// RepoTags of its manifest entry.
    pub repo_tags: Vec<String>,
    /// Uncompressed layer tars, bottom-up (see [`layer_tar`], [`random_layer`]).
    pub layers: Vec<Vec<u8>>,
    /// Raw config; `None` = a correct one generated from the layers.
    pub config: Option<Vec<u8>>,
}

impl TestImage {
    /// An image tagged `tag` with a correct generated config.
    pub fn new(tag: &str, layers: Vec<Vec<u8>>) -> Self {
        TestImage {
            repo_tags: vec![tag.to_string()],
            layers,
            config: None,
        }
    }

    /// Use `raw` verbatim as the config (e.g. one with wrong diff_ids).
    pub fn with_config(mut self, raw: Vec<u8>) -> Self {
        self.config = Some(raw);
        self
    }

    /// diff_ids of the layers (`sha256:<hex>` of each uncompressed tar).
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256_digest(l)).collect()
    }

    /// The raw config that will be written.
    pub fn raw_config(&self) -> Vec<u8> {
        match &self.config {
            Some(c) => c.clone(),
            None => image_config(&self.diff_ids(), &["/usr/bin/app"]),
        }
    }
}

/// The pieces of an archive before it is written, so a test can break it:
/// edit/remove `entries`, edit `manifest`, then [`ArchiveParts::write`].
#[derive(Clone, Debug)]
pub struct ArchiveParts {
    /// Entries other than `manifest.json` / `repositories`, in write order.
    pub entries: Vec<(String, Vec<u8>)>,
    /// Content of `manifest.json` (an array of entries).
    pub manifest: serde_json::Value,
    /// Content of `repositories` (legacy format only).
    pub repositories: Option<serde_json::Value>,
}

/// Lay out `images` the way go-containerregistry would (see module docs).
/// Legacy format de-duplicates nothing, like the real writer.
pub fn build_archive(images: &[TestImage], format: ArchiveFormat) -> ArchiveParts {
    let mut entries = Vec::new();
    let mut manifest = Vec::new();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for img in images {
        let cfg = img.raw_config();
        let cfg_hex = sha256_hex(&cfg);
        let cfg_value: serde_json::Value =
            serde_json::from_slice(&cfg).unwrap_or(serde_json::Value::Null);
        let cfg_name = match format {
            ArchiveFormat::Legacy => format!("{cfg_hex}.json"),
            ArchiveFormat::Compressed => format!("sha256:{cfg_hex}"),
        };
        entries.push((cfg_name.clone(), cfg.clone()));
        let mut names = Vec::new();
        let mut parent = String::new();
        for (i, layer) in img.layers.iter().enumerate() {
            match format {
                ArchiveFormat::Legacy => {
                    let top = i + 1 == img.layers.len();
                    let id = v1_layer_id(&sha256_hex(layer), &parent, top.then_some(&cfg[..]));
                    let created_by = format!("bazel build layer {i}");
                    let json = v1_layer_json(&id, &parent, &created_by, top.then_some(&cfg_value));
                    entries.push((format!("{id}/layer.tar"), layer.clone()));
                    entries.push((format!("{id}/json"), json));
                    entries.push((format!("{id}/VERSION"), b"1.0".to_vec()));
                    names.push(format!("{id}/layer.tar"));
                    parent = id;
                }
                ArchiveFormat::Compressed => {
                    let gz = gzip(layer);
                    let name = format!("{}.tar.gz", sha256_hex(&gz));
                    if seen.insert(name.clone()) {
                        entries.push((name.clone(), gz));
                    }
                    names.push(name);
                }
            }
        }
        for t in &img.repo_tags {
            let (base, tag) = split_tag(t);
            repos
                .entry(base.to_string())
                .or_default()
                .insert(tag.to_string(), parent.clone());
        }
        manifest.push(ManifestEntry {
            config: cfg_name,
            repo_tags: img.repo_tags.clone(),
            layers: names,
        });
    }
    ArchiveParts {
        entries,
        manifest: serde_json::to_value(&manifest).expect("manifest to json"),
        repositories: (format == ArchiveFormat::Legacy)
            .then(|| serde_json::to_value(&repos).expect("repos")),
    }
}

impl ArchiveParts {
    /// Names of the layer entries of manifest entry `image` (as listed in the manifest).
    pub fn layer_names(&self, image: usize) -> Vec<String> {
        self.manifest[image]["Layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Mutable access to the payload of entry `name`.
    pub fn entry_mut(&mut self, name: &str) -> Option<&mut Vec<u8>> {
        self.entries
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
    }

    /// Remove every entry called `name`; returns how many were removed.
    pub fn remove_entry(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != name);
        before - self.entries.len()
    }

    /// Write entries, then `manifest.json`, then `repositories` (if any).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let manifest = serde_json::to_vec(&self.manifest)?;
        self.write_with_manifest_bytes(path, &manifest)
    }

    /// Like [`ArchiveParts::write`] with raw `manifest.json` bytes (e.g. not JSON).
    pub fn write_with_manifest_bytes(&self, path: &Path, manifest: &[u8]) -> io::Result<()> {
        let mut all = self.entries.clone();
        all.push(("manifest.json".into(), manifest.to_vec()));
        if let Some(r) = &self.repositories {
            all.push(("repositories".into(), serde_json::to_vec(r)?));
        }
        write_docker_archive(path, &all)
    }
}

/// Write a tar holding exactly `entries` (name, payload) in order, each a
/// regular 0644 file with mtime 0. Nothing is added: include your own
/// `manifest.json` (or leave it out to test that error).
pub fn write_docker_archive(path: &Path, entries: &[(String, Vec<u8>)]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for (name, data) in entries {
        tarfmt::write_entry(&mut w, &EntryMeta::file(name, data.len() as u64), data)?;
    }
    tarfmt::write_trailer(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// [`write_docker_archive`] into memory.
pub fn docker_archive_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        tarfmt::write_entry(&mut out, &EntryMeta::file(name, data.len() as u64), data)
            .expect("writing to memory");
    }
    tarfmt::write_trailer(&mut out).expect("writing to memory");
    out
}

/// Read every entry (name, payload) of a tar in order, duplicates included.
pub fn read_archive(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut ar = tar::Archive::new(std::io::BufReader::new(File::open(path)?));
    let mut out = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        out.push((name, data));
    }
    Ok(out)
}

/// Parse `manifest.json` of an archive.
pub fn read_manifest(path: &Path) -> io::Result<Vec<ManifestEntry>> {
    let entries = read_archive(path)?;
    let m = entries
        .iter()
        .find(|(n, _)| n == "manifest.json")
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no manifest.json"))?;
    serde_json::from_slice(&m.1).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_like_go() {
        assert_eq!(split_tag("a/b:c"), ("a/b", "c"));
        assert_eq!(split_tag("host:5000/a/b"), ("host:5000/a/b", ""));
        assert_eq!(split_tag("host:5000/a/b:t"), ("host:5000/a/b", "t"));
    }

    #[test]
    fn config_has_go_field_order() {
        let c = image_config(&["sha256:00".into()], &["/x"]);
        let s = String::from_utf8(c).unwrap();
        assert!(s.starts_with(r#"{"architecture":"amd64","author":"Bazel","created":"1970-01-01T00:00:00Z","history":[{"#));
        assert!(s.contains(r#""os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:00"]},"config":{"Entrypoint":["/x"],"Env":"#));
    }

    #[test]
    fn layer_json_shapes() {
        let j = String::from_utf8(v1_layer_json("id1", "", "bazel build x", None)).unwrap();
        assert_eq!(
            j,
            r#"{"architecture":"","author":"Bazel","created":"1970-01-01T00:00:00Z","os":"","rootfs":{"type":"","diff_ids":null},"config":{},"container_config":{"Cmd":["bazel build x"]},"id":"id1"}"#
        );
    }

    #[test]
    fn broken_archives_can_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let good = TestImage::new(
            "bazel/x:y",
            vec![random_layer(1, 1000), random_layer(2, 3000)],
        );
        let bad = TestImage::new("bazel/x:z", vec![random_layer(3, 100)])
            .with_config(image_config(&[sha256_digest(b"nope")], &[]));
        let mut parts = build_archive(&[good, bad], ArchiveFormat::Legacy);
        let missing = parts.layer_names(0)[1].clone();
        assert_eq!(parts.remove_entry(&missing), 1);
        let p = dir.path().join("a.tar");
        parts.write(&p).unwrap();
        let m = read_manifest(&p).unwrap();
        assert_eq!(m.len(), 2);
        assert!(!read_archive(&p).unwrap().iter().any(|(n, _)| *n == missing));
        parts.write_with_manifest_bytes(&p, b"not json").unwrap();
        assert!(read_manifest(&p).is_err());

        let c = build_archive(
            &[TestImage::new("a/b:c", vec![random_layer(1, 10)])],
            ArchiveFormat::Compressed,
        );
        assert!(c.entries[0].0.starts_with("sha256:"));
        assert!(c.entries[1].0.ends_with(".tar.gz"));
        assert!(c.repositories.is_none());
    }
}
