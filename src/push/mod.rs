//! Push planning and execution: [`plan`] turns a selection into images and
//! destinations (local work), [`execute`] pushes them concurrently: every
//! layer prepared once, every blob placed once per repository, manifests
//! after their blobs, tags after manifests; [`manifest_list`] stitches the
//! images of several architectures into manifest lists. Progress goes to
//! an [`Observer`] ([`events`]), outcomes are plain data ([`result`]);
//! output is left to `report`.

pub mod events;
pub mod execute;
pub mod manifest_list;
pub mod plan;
pub mod result;

pub use events::{Observer, Stage};
pub use execute::{execute, Options};
pub use plan::{plan, Destination, Plan, PlanInput, PlannedImage, SourceChoice, SourceKind};
pub use result::{BlobCounts, ImageResult, Placement, Status};
