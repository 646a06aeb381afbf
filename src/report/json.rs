//! `--output json`: one document on stdout describing every image (target,
//! name, references, digest, size, status, blobs, error) and the run.

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
}

impl From<&BlobCounts> for Blobs {
    fn from(b: &BlobCounts) -> Self {
        Blobs {
            uploaded: b.uploaded,
            bytes_uploaded: b.bytes_uploaded,
            mounted: b.mounted,
            existing: b.existing,
            compressed: b.compressed,
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
    /// `pushed`, `unchanged` or `failed`.
    status: &'static str,
    blobs: Blobs,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct Document<'a> {
    images: Vec<Image<'a>>,
    pushed: usize,
    unchanged: usize,
    failed: usize,
    blobs: Blobs,
    seconds: f64,
}

pub fn status_word(status: &Status) -> &'static str {
    match status {
        Status::Pushed => "pushed",
        Status::Unchanged => "unchanged",
        Status::Failed(_) => "failed",
    }
}

/// The whole run as one JSON document.
pub fn document(results: &[ImageResult], elapsed: Duration) -> String {
    let mut total = BlobCounts::default();
    let images = results
        .iter()
        .map(|r| {
            total.merge(&r.blobs);
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
            }
        })
        .collect();
    let count = |s: &str| {
        results
            .iter()
            .filter(|r| status_word(&r.status) == s)
            .count()
    };
    let doc = Document {
        images,
        pushed: count("pushed"),
        unchanged: count("unchanged"),
        failed: count("failed"),
        blobs: Blobs::from(&total),
        seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
    };
    serde_json::to_string_pretty(&doc).expect("the report serialises")
}
