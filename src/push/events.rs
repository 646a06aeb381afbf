//! What the push tells its observers as it goes: which image started, what
//! stage it is in, each blob placed, and the result. `report` implements
//! [`Observer`] for terminals, CI logs and JSON; the push itself never
//! formats output.

use super::plan::PlannedImage;
use super::result::{ImageResult, Placement};

/// Where an image is in its push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reading layers, hashing and compressing those not known yet.
    Preparing,
    /// Placing blobs; `total` is the size of every blob of the image.
    Uploading { total: u64 },
    /// Writing the manifest and the tags.
    Tagging,
}

/// Receives push events; every method has a do-nothing default. Called
/// from several tasks at once, hence `Sync`. Manifest lists
/// ([`super::manifest_list`]) report `image_done` only, with their own ids.
pub trait Observer: Sync {
    fn image_started(&self, _id: usize, _image: &PlannedImage) {}
    fn stage(&self, _id: usize, _stage: Stage) {}
    /// A blob of image `id` is in place; `bytes` is its size.
    fn blob_placed(&self, _id: usize, _placement: Placement, _bytes: u64) {}
    fn image_done(&self, _id: usize, _result: &ImageResult) {}
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}
