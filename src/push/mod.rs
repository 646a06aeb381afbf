//! Push planning and execution: [`plan`] turns a selection into images and
//! destinations (local work), [`execute`] pushes them concurrently: every
//! layer prepared once, every blob placed once per repository, manifests
//! after their blobs, tags after manifests. Output is left to `report`.

pub mod events;
pub mod execute;
pub mod manifest;
pub mod plan;

pub use events::{Observer, Stage};
pub use execute::{execute, BlobCounts, ImageResult, Options, Placement, Status};
pub use plan::{plan, Destination, Plan, PlanInput, PlannedImage, SourceChoice, SourceKind};
