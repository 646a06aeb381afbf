//! What a push reports: where each blob went ([`Placement`]), each image's
//! [`BlobCounts`] and [`Status`], and its whole [`ImageResult`]. Plain data
//! that `execute` (and `manifest_list`) fill in, `events` carries and
//! `report` prints; it knows nothing of how a push runs or who observes it.

use crate::targets::Target;

/// What happened to one blob in one repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Uploaded this many bytes, after compressing the layer first if true.
    Uploaded(u64, bool),
    /// Uploaded this many bytes streamed from an origin registry (a
    /// rules_img shallow base layer).
    Copied(u64),
    Mounted,
    Existed,
}

/// Per-image blob statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobCounts {
    pub uploaded: u64,
    pub bytes_uploaded: u64,
    pub mounted: u64,
    pub existing: u64,
    /// Layers compressed for this image: not found in the run or the cache,
    /// or found in the cache but missing from the registry.
    pub compressed: u64,
    /// Of the uploads, the blobs (and their bytes) streamed from an origin
    /// registry.
    pub copied: u64,
    pub bytes_copied: u64,
}

impl BlobCounts {
    pub(super) fn add(&mut self, p: Placement) {
        match p {
            Placement::Uploaded(bytes, compressed) => {
                self.uploaded += 1;
                self.bytes_uploaded += bytes;
                self.compressed += u64::from(compressed);
            }
            Placement::Copied(bytes) => {
                self.add(Placement::Uploaded(bytes, false));
                self.copied += 1;
                self.bytes_copied += bytes;
            }
            Placement::Mounted => self.mounted += 1,
            Placement::Existed => self.existing += 1,
        }
    }

    pub fn merge(&mut self, other: &BlobCounts) {
        self.uploaded += other.uploaded;
        self.bytes_uploaded += other.bytes_uploaded;
        self.mounted += other.mounted;
        self.existing += other.existing;
        self.compressed += other.compressed;
        self.copied += other.copied;
        self.bytes_copied += other.bytes_copied;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The manifest was written and every tag points at it.
    Pushed,
    /// Every tag already pointed at this exact manifest; nothing written.
    Unchanged,
    Failed(String),
    /// The run was interrupted before this image was done: its manifest
    /// was not (or not under every tag) written.
    Interrupted,
}

impl Status {
    /// The manifest is in the registry under every tag.
    pub fn landed(&self) -> bool {
        matches!(self, Status::Pushed | Status::Unchanged)
    }
}

/// The outcome for one image.
#[derive(Clone, Debug)]
pub struct ImageResult {
    pub target: Target,
    pub name: String,
    pub references: Vec<String>,
    /// Manifest digest, known once the image was read and its layers prepared.
    pub digest: Option<String>,
    /// Bytes of the image's config and (compressed) layers, once known.
    pub size: Option<u64>,
    pub status: Status,
    pub blobs: BlobCounts,
    /// Digests of the layers pushed as Bazel compressed them (push-target
    /// parts, OCI layouts, rules_img runfiles; not the layers copied from
    /// an origin registry).
    pub prebuilt_layers: Vec<String>,
    /// A manifest list: the platforms it lists (`linux/arm64`); empty for
    /// an image.
    pub platforms: Vec<String>,
    /// An image pushed by this run, as a manifest list names it (media
    /// type, size, digest, and the platform its config declares): an
    /// `--arch-bin` run lists it without reading it back.
    pub listed_as: Option<crate::manifest::Descriptor>,
}

impl ImageResult {
    /// Nothing known yet; `Pushed` until something says otherwise.
    pub fn new(target: Target, name: &str, references: Vec<String>) -> ImageResult {
        ImageResult {
            target,
            name: name.to_string(),
            references,
            digest: None,
            size: None,
            status: Status::Pushed,
            blobs: BlobCounts::default(),
            prebuilt_layers: Vec::new(),
            platforms: Vec::new(),
            listed_as: None,
        }
    }
}
