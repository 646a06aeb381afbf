//! OCI image layouts: a directory holding `oci-layout`, `index.json` and
//! content-addressed `blobs/sha256/<hex>` (what rules_oci's `oci_image` and
//! `oci_image_index` write as `bazel-bin/<pkg>/<name>/`, and `skopeo copy
//! ... oci:DIR`), or a tar of one (`oci-archive:`, `oci_load(format = "oci")`).
//!
//! Unlike a `docker save` tarball, a layout already holds the manifests and
//! compressed layers: they are pushed byte for byte with their own media
//! types, so the registry's digest is the layout's. Nothing here reads layer
//! data: sizes are checked now, digests by the registry on upload.

use std::path::{Path, PathBuf};

use super::remote::RemoteBlob;
use super::tar_index::TarIndex;
use crate::blob::{is_sha256_digest, sha256_digest, FileRange};
use crate::manifest::{Descriptor, Parsed, Platform};
use crate::registry::media;

/// Manifests and configs are read into memory; refuse absurd ones.
const MAX_JSON_BLOB: u64 = 16 << 20;

/// A blob of the layout: a config or a layer, with its descriptor's facts.
#[derive(Clone, Debug)]
pub struct LayoutBlob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// Where the bytes are on disk. Empty (no path, length 0) when `remote`
    /// is set: reading it then fails rather than pushing other bytes.
    pub range: FileRange,
    /// Set for a blob that is not on disk (a rules_img shallow base layer):
    /// it must be mounted or copied from one of its origins, its bytes
    /// checked against `digest` and `size` on the way. `None` for every blob
    /// of an OCI layout.
    pub remote: Option<RemoteBlob>,
}

impl LayoutBlob {
    /// A blob whose bytes are in `range`.
    pub fn local(media_type: &str, digest: &str, size: u64, range: FileRange) -> LayoutBlob {
        LayoutBlob {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            range,
            remote: None,
        }
    }

    /// A blob to be taken from another registry.
    pub fn remote(media_type: &str, digest: &str, size: u64, remote: RemoteBlob) -> LayoutBlob {
        LayoutBlob {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            range: FileRange {
                path: PathBuf::new(),
                offset: 0,
                len: 0,
            },
            remote: Some(remote),
        }
    }

    /// The bytes on disk, unless the blob is remote.
    pub fn local_range(&self) -> Option<&FileRange> {
        self.remote.is_none().then_some(&self.range)
    }
}

/// A manifest (image or index) exactly as the layout stores it.
#[derive(Clone, Debug)]
pub struct LayoutManifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// One image of the layout: its manifest and the blobs it names.
#[derive(Clone, Debug)]
pub struct LayoutImage {
    pub manifest: LayoutManifest,
    pub config: LayoutBlob,
    pub layers: Vec<LayoutBlob>,
    /// From the index entry, else from the config; for messages and `list`.
    pub platform: Option<Platform>,
    /// Tags of this manifest's own, put in each destination repository
    /// after the push (rules_img's `registry_tag` operations); kvpush's
    /// `--tag`s name the root.
    pub tags: Vec<String>,
}

/// A multi-platform index and its images (pushed first).
#[derive(Clone, Debug)]
pub struct LayoutIndex {
    pub manifest: LayoutManifest,
    pub images: Vec<LayoutImage>,
}

/// What the layout's `index.json` points at.
#[derive(Clone, Debug)]
pub enum LayoutRoot {
    Image(Box<LayoutImage>),
    Index(LayoutIndex),
}

impl LayoutRoot {
    /// The manifest the tags point at.
    pub fn manifest(&self) -> &LayoutManifest {
        match self {
            LayoutRoot::Image(i) => &i.manifest,
            LayoutRoot::Index(i) => &i.manifest,
        }
    }

    /// Every image manifest, children of an index first-to-last.
    pub fn images(&self) -> &[LayoutImage] {
        match self {
            LayoutRoot::Image(i) => std::slice::from_ref(&**i),
            LayoutRoot::Index(i) => &i.images,
        }
    }

    /// Sum of the blob sizes of every image (shared blobs counted once each time).
    pub fn stored_size(&self) -> u64 {
        self.images()
            .iter()
            .flat_map(|i| std::iter::once(&i.config).chain(&i.layers))
            .map(|b| b.size)
            .sum()
    }
}

/// An opened layout: a directory, or a tar of one (indexed once).
#[derive(Debug)]
pub struct Layout {
    pub path: PathBuf,
    tar: Option<TarIndex>,
}

/// `sha256:<hex>` → `blobs/sha256/<hex>`; any other form (another
/// algorithm, a path in disguise) is refused.
fn blob_path(digest: &str) -> Option<String> {
    is_sha256_digest(digest).then(|| format!("blobs/sha256/{}", &digest[7..]))
}

impl Layout {
    /// A layout directory; it must hold an `oci-layout` file.
    pub fn open_dir(path: &Path) -> Result<Layout, String> {
        let layout = Layout {
            path: path.to_path_buf(),
            tar: None,
        };
        layout.check_marker()?;
        Ok(layout)
    }

    /// True when an indexed tar is an OCI layout rather than a `docker save`
    /// tarball (docker 25+ writes both; its manifest.json is preferred).
    pub fn is_layout_tar(index: &TarIndex) -> bool {
        index.get("oci-layout").is_some()
            && index.get("index.json").is_some()
            && index.get("manifest.json").is_none()
    }

    /// A tar holding a layout at its root.
    pub fn from_tar(index: TarIndex) -> Result<Layout, String> {
        let layout = Layout {
            path: index.path.clone(),
            tar: Some(index),
        };
        layout.check_marker()?;
        Ok(layout)
    }

    fn what(&self) -> String {
        if self.tar.is_some() {
            format!("OCI layout tar {}", self.path.display())
        } else {
            format!("OCI layout {}", self.path.display())
        }
    }

    /// Where a file of the layout is, if it is there.
    fn file(&self, rel: &str) -> Option<FileRange> {
        match &self.tar {
            Some(index) => index.get(rel).cloned(),
            None => {
                let path = self.path.join(rel);
                let meta = std::fs::metadata(&path).ok()?;
                meta.is_file().then_some(FileRange {
                    path,
                    offset: 0,
                    len: meta.len(),
                })
            }
        }
    }

    fn read_small(&self, rel: &str, range: &FileRange) -> Result<Vec<u8>, String> {
        if range.len > MAX_JSON_BLOB {
            return Err(format!(
                "{}: {rel} is {} bytes, too large for a manifest or config",
                self.what(),
                range.len
            ));
        }
        range
            .read_all()
            .map_err(|e| format!("cannot read {rel} in {}: {e}", self.what()))
    }

    fn check_marker(&self) -> Result<(), String> {
        let range = self.file("oci-layout").ok_or_else(|| {
            format!(
                "{} has no oci-layout file: it is not an OCI image layout; rebuild it with bazel",
                self.path.display()
            )
        })?;
        let bytes = self.read_small("oci-layout", &range)?;
        let version = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["imageLayoutVersion"].as_str().map(str::to_string));
        match version {
            Some(v) if v.starts_with("1.") => Ok(()),
            Some(v) => Err(format!(
                "{}: imageLayoutVersion {v:?} is not supported (1.x is)",
                self.what()
            )),
            None => Err(format!(
                "{}: oci-layout does not say imageLayoutVersion; rebuild it with bazel",
                self.what()
            )),
        }
    }

    /// A blob named by `desc`: present, with the size the descriptor says.
    fn blob(&self, desc: &Descriptor, role: &str) -> Result<FileRange, String> {
        let rel = blob_path(&desc.digest).ok_or_else(|| {
            format!(
                "{}: {role} has digest {:?}; kvpush reads sha256 digests only",
                self.what(),
                desc.digest
            )
        })?;
        let range = self.file(&rel).ok_or_else(|| {
            if desc.urls.is_empty() {
                format!(
                    "{}: {role} {} is not in the layout ({rel} missing); the layout is incomplete, rebuild it with bazel",
                    self.what(),
                    desc.digest
                )
            } else {
                format!(
                    "{}: {role} {} is a foreign layer (fetched from {}), which kvpush does not push",
                    self.what(),
                    desc.digest,
                    desc.urls.join(", ")
                )
            }
        })?;
        if range.len != desc.size {
            return Err(format!(
                "{}: {role} {} is {} bytes but its descriptor says {}; the layout is corrupt, rebuild it with bazel",
                self.what(),
                desc.digest,
                range.len,
                desc.size
            ));
        }
        Ok(range)
    }

    /// Read a small blob (manifest, config) and check its digest.
    fn read_blob(&self, desc: &Descriptor, role: &str) -> Result<Vec<u8>, String> {
        let range = self.blob(desc, role)?;
        let bytes = self.read_small(&blob_path(&desc.digest).unwrap_or_default(), &range)?;
        let got = sha256_digest(&bytes);
        if got != desc.digest {
            return Err(format!(
                "{}: {role} {} hashes to {got}; the layout is corrupt, rebuild it with bazel",
                self.what(),
                desc.digest
            ));
        }
        Ok(bytes)
    }

    /// What `index.json` points at: one image manifest, or one index (a
    /// multi-platform image) and its images, as rules_oci writes them.
    pub fn root(&self) -> Result<LayoutRoot, String> {
        let range = self.file("index.json").ok_or_else(|| {
            format!(
                "{} has no index.json; the layout is incomplete, rebuild it with bazel",
                self.what()
            )
        })?;
        let bytes = self.read_small("index.json", &range)?;
        let index = Parsed::from_slice(&bytes)
            .map_err(|e| format!("index.json of {}: {e}", self.what()))?;
        let desc = match index.manifests.as_slice() {
            [one] => one,
            [] => return Err(format!("index.json of {} lists no manifest", self.what())),
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|d| {
                        d.annotations
                            .as_ref()
                            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                            .cloned()
                            .unwrap_or_else(|| d.digest.clone())
                    })
                    .collect();
                return Err(format!(
                    "index.json of {} lists {} manifests ({}); kvpush pushes a layout holding one image or one index, as rules_oci writes it",
                    self.what(),
                    many.len(),
                    names.join(", ")
                ));
            }
        };
        if media::is_index(&desc.media_type) {
            let bytes = self.read_blob(desc, "index")?;
            let parsed = Parsed::from_slice(&bytes)
                .map_err(|e| format!("index {} in {}: {e}", desc.digest, self.what()))?;
            if parsed.manifests.is_empty() {
                return Err(format!(
                    "index {} in {} lists no image",
                    desc.digest,
                    self.what()
                ));
            }
            let images = parsed
                .manifests
                .iter()
                .map(|child| {
                    if !media::is_image_manifest(&child.media_type) {
                        return Err(format!(
                            "index {} in {} lists {} of type {}; kvpush pushes indexes of image manifests only",
                            desc.digest,
                            self.what(),
                            child.digest,
                            child.media_type
                        ));
                    }
                    self.image(child)
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(LayoutRoot::Index(LayoutIndex {
                manifest: LayoutManifest {
                    media_type: parsed.kind(Some(&desc.media_type)),
                    digest: desc.digest.clone(),
                    bytes,
                },
                images,
            }));
        }
        if media::is_image_manifest(&desc.media_type) {
            return self.image(desc).map(|i| LayoutRoot::Image(Box::new(i)));
        }
        Err(format!(
            "index.json of {} points at {} of type {:?}, which is neither an image manifest nor an index",
            self.what(),
            desc.digest,
            desc.media_type
        ))
    }

    fn image(&self, desc: &Descriptor) -> Result<LayoutImage, String> {
        let bytes = self.read_blob(desc, "manifest")?;
        let parsed = Parsed::from_slice(&bytes)
            .map_err(|e| format!("manifest {} in {}: {e}", desc.digest, self.what()))?;
        let media_type = parsed.kind(Some(&desc.media_type));
        if media_type != desc.media_type {
            return Err(format!(
                "{}: manifest {} says it is {media_type} but index.json says {}",
                self.what(),
                desc.digest,
                desc.media_type
            ));
        }
        let config_desc = parsed
            .config
            .as_ref()
            .ok_or_else(|| format!("manifest {} in {} has no config", desc.digest, self.what()))?;
        let config_bytes = self.read_blob(config_desc, "config")?;
        let platform = desc
            .platform
            .clone()
            .or_else(|| Platform::from_config(&config_bytes).ok());
        let config = LayoutBlob::local(
            &config_desc.media_type,
            &config_desc.digest,
            config_desc.size,
            self.blob(config_desc, "config")?,
        );
        let layers = parsed
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(LayoutBlob::local(
                    &l.media_type,
                    &l.digest,
                    l.size,
                    self.blob(l, &format!("layer {}", i + 1))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(LayoutImage {
            manifest: LayoutManifest {
                media_type,
                digest: desc.digest.clone(),
                bytes,
            },
            config,
            layers,
            platform,
            tags: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Write a layout directory: `blobs` by content, `index.json` as given.
    struct Writer {
        dir: PathBuf,
    }

    impl Writer {
        fn new(dir: &Path) -> Writer {
            fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
            fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
            Writer {
                dir: dir.to_path_buf(),
            }
        }
        fn blob(&self, bytes: &[u8]) -> String {
            let d = sha256_digest(bytes);
            fs::write(self.dir.join(blob_path(&d).unwrap()), bytes).unwrap();
            d
        }
        fn desc(&self, media_type: &str, bytes: &[u8]) -> String {
            let d = self.blob(bytes);
            format!(
                r#"{{"mediaType":"{media_type}","digest":"{d}","size":{}}}"#,
                bytes.len()
            )
        }
        fn image(&self, arch: &str) -> (String, Vec<u8>) {
            let config = format!(
                r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            );
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]}}"#,
                media::OCI_MANIFEST,
                self.desc(media::OCI_CONFIG, config.as_bytes()),
                self.desc(media::OCI_LAYER_GZIP, format!("layer of {arch}").as_bytes()),
            );
            (
                self.desc(media::OCI_MANIFEST, manifest.as_bytes()),
                manifest.into_bytes(),
            )
        }
        fn index_json(&self, manifests: &[String]) {
            fs::write(
                self.dir.join("index.json"),
                format!(
                    r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                    manifests.join(",")
                ),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_single_image_layout_keeps_its_manifest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let w = Writer::new(dir.path());
        let (desc, bytes) = w.image("arm64");
        w.index_json(&[desc]);
        let root = Layout::open_dir(dir.path()).unwrap().root().unwrap();
        let LayoutRoot::Image(image) = &root else {
            panic!("an image")
        };
        assert_eq!(image.manifest.bytes, bytes);
        assert_eq!(image.manifest.digest, sha256_digest(&bytes));
        assert_eq!(image.manifest.media_type, media::OCI_MANIFEST);
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.layers[0].range.read_all().unwrap(), b"layer of arm64");
        assert_eq!(image.platform.as_ref().unwrap().to_string(), "linux/arm64");
    }

    #[test]
    fn an_index_layout_lists_its_images_and_a_tar_of_it_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let w = Writer::new(&layout);
        let (amd, _) = w.image("amd64");
        let (arm, _) = w.image("arm64");
        let with_platform = |d: &str, arch: &str| {
            format!(
                r#"{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
                d.trim_end_matches('}')
            )
        };
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{}]}}"#,
            media::OCI_INDEX,
            with_platform(&amd, "amd64"),
            with_platform(&arm, "arm64")
        );
        w.index_json(&[w.desc(media::OCI_INDEX, index.as_bytes())]);
        let root = Layout::open_dir(&layout).unwrap().root().unwrap();
        assert_eq!(root.manifest().bytes, index.as_bytes());
        assert_eq!(root.images().len(), 2);
        assert_eq!(
            root.images()[1].platform.as_ref().unwrap().to_string(),
            "linux/arm64"
        );

        // The same layout as a tar.
        let tar_path = dir.path().join("layout.oci.tar");
        let mut builder = tar::Builder::new(fs::File::create(&tar_path).unwrap());
        builder.append_dir_all(".", &layout).unwrap();
        builder.finish().unwrap();
        drop(builder);
        let index = TarIndex::build(&tar_path).unwrap();
        assert!(Layout::is_layout_tar(&index));
        let from_tar = Layout::from_tar(index).unwrap().root().unwrap();
        assert_eq!(from_tar.manifest().digest, root.manifest().digest);
        assert_eq!(
            from_tar.images()[0].layers[0].range.read_all().unwrap(),
            b"layer of amd64"
        );
    }

    #[test]
    fn broken_layouts_are_errors_naming_the_layout_and_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let err = Layout::open_dir(dir.path()).unwrap_err();
        assert!(err.contains("has no oci-layout file"), "{err}");

        let w = Writer::new(dir.path());
        let (desc, bytes) = w.image("amd64");
        let err = Layout::open_dir(dir.path()).unwrap().root().unwrap_err();
        assert!(err.contains("has no index.json"), "{err}");

        w.index_json(&[desc.clone(), desc.clone()]);
        let err = Layout::open_dir(dir.path()).unwrap().root().unwrap_err();
        assert!(err.contains("lists 2 manifests"), "{err}");

        // A layer removed, then a layer of the wrong size.
        w.index_json(&[desc]);
        let parsed = Parsed::from_slice(&bytes).unwrap();
        let layer = dir
            .path()
            .join(blob_path(&parsed.layers[0].digest).unwrap());
        fs::remove_file(&layer).unwrap();
        let err = Layout::open_dir(dir.path()).unwrap().root().unwrap_err();
        assert!(
            err.contains(&format!(
                "layer 1 {} is not in the layout",
                parsed.layers[0].digest
            )) && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        fs::write(&layer, b"short").unwrap();
        let err = Layout::open_dir(dir.path()).unwrap().root().unwrap_err();
        assert!(err.contains("is 5 bytes but its descriptor says"), "{err}");

        // A manifest whose bytes do not match its digest.
        let manifest = dir.path().join(blob_path(&sha256_digest(&bytes)).unwrap());
        let mut changed = bytes.clone();
        changed[0] = b' ';
        fs::write(&manifest, &changed).unwrap();
        let err = Layout::open_dir(dir.path()).unwrap().root().unwrap_err();
        assert!(err.contains("hashes to"), "{err}");

        assert_eq!(blob_path("sha256:../../etc/passwd"), None);
        assert_eq!(blob_path("sha512:00"), None);
    }
}
