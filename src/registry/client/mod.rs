//! HTTP operations against one registry, on reqwest: blob existence,
//! mount and upload, manifest `HEAD`/`GET`/`PUT` (tags included), and the
//! `GET`s of manifests and configs that manifest lists are built from.
//!
//! `request.rs` holds the [`Client`] and the request loop (authentication,
//! retries, back-off, stalls, the rule that credentials go only to the
//! registry's own origin); `body.rs` what a request carries. The protocol
//! operations sit on top, one file per kind: `blobs.rs` reads blobs (a
//! download from an origin registry belongs there), `upload.rs` writes them
//! into the sessions of `session.rs`, `manifests.rs` reads and writes
//! manifests. Operations use the loop, never the other way round.
//!
//! Written on reqwest rather than oci-client: kvpush needs retries, a pull
//! scope on the source of cross-repository mounts, and bodies streamed from
//! file ranges (see docs/design.md).

mod blobs;
mod body;
mod manifests;
mod request;
mod session;
mod upload;

pub use blobs::{Download, DownloadFailure};
pub use manifests::FetchedManifest;
pub use request::{Client, ConnectOptions};
pub use session::Session;
pub use upload::MountOutcome;
