//! `--output json`: one document on stdout describing every image (target,
//! name, references, digest, size, status, blobs, error), every manifest
//! list (the same, with its platforms) and the run.

use std::time::Duration;

use serde::Serialize;

use crate::push::{BlobCounts, ImageResult, Status};

#[derive(Serialize)]
struct Blobs {
    uploaded: u64,
    bytes_uploaded: u64,
    mounted: u64,
    existing: u64,
    compressed: u64,
    /// Of `uploaded`, those streamed from an origin registry (rules_img
    /// base layers); absent when none, as for every other source.
    #[serde(skip_serializing_if = "none_copied")]
    copied_from_origin: u64,
    #[serde(skip_serializing_if = "none_copied")]
    bytes_copied_from_origin: u64,
}

fn none_copied(n: &u64) -> bool {
    *n == 0
}

impl From<&BlobCounts> for Blobs {
    fn from(b: &BlobCounts) -> Self {
        Blobs {
            uploaded: b.uploaded,
            bytes_uploaded: b.bytes_uploaded,
            mounted: b.mounted,
            existing: b.existing,
            compressed: b.compressed,
            copied_from_origin: b.copied,
            bytes_copied_from_origin: b.bytes_copied,
        }
    }
}

#[derive(Serialize)]
struct Image<'a> {
    target: String,
    name: &'a str,
    references: &'a [String],
    digest: Option<&'a str>,
    size: Option<u64>,
    /// `pushed`, `unchanged`, `failed` or `interrupted`.
    status: &'static str,
    blobs: Blobs,
    error: Option<&'a str>,
    /// Manifest lists only: `linux/amd64`, ...
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    platforms: &'a [String],
}

#[derive(Serialize)]
struct Document<'a> {
    images: Vec<Image<'a>>,
    /// `kvpush manifest` and `--arch-bin` runs only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    manifest_lists: Vec<Image<'a>>,
    /// Images and lists by outcome.
    pushed: usize,
    unchanged: usize,
    failed: usize,
    /// Not done when a signal stopped the run.
    #[serde(skip_serializing_if = "is_zero")]
    interrupted: usize,
    /// The signal that stopped the run (`SIGINT`, `SIGTERM`).
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<&'a str>,
    blobs: Blobs,
    seconds: f64,
}

pub fn status_word(status: &Status) -> &'static str {
    match status {
        Status::Pushed => "pushed",
        Status::Unchanged => "unchanged",
        Status::Failed(_) => "failed",
        Status::Interrupted => "interrupted",
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn entry(r: &ImageResult) -> Image<'_> {
    Image {
        target: r.target.push_name(),
        name: &r.name,
        references: &r.references,
        digest: r.digest.as_deref(),
        size: r.size,
        status: status_word(&r.status),
        blobs: Blobs::from(&r.blobs),
        error: match &r.status {
            Status::Failed(e) => Some(e),
            _ => None,
        },
        platforms: &r.platforms,
    }
}

/// The whole run as one JSON document: the images pushed, then the
/// manifest lists; `signal` when one interrupted the run.
pub fn document(
    images: &[ImageResult],
    lists: &[ImageResult],
    elapsed: Duration,
    signal: Option<&str>,
) -> String {
    let mut total = BlobCounts::default();
    for r in images {
        total.merge(&r.blobs);
    }
    let count = |s: &str| {
        images
            .iter()
            .chain(lists)
            .filter(|r| status_word(&r.status) == s)
            .count()
    };
    let doc = Document {
        images: images.iter().map(entry).collect(),
        manifest_lists: lists.iter().map(entry).collect(),
        pushed: count("pushed"),
        unchanged: count("unchanged"),
        failed: count("failed"),
        interrupted: count("interrupted"),
        signal,
        blobs: Blobs::from(&total),
        seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("the report serialises");
    text.push('\n');
    text
}
