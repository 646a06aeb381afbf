//! The OCI distribution protocol: one [`client::Client`] per registry host.
//! Knows nothing about Bazel or images beyond blobs and manifests.
//!
//! From the bottom up: [`media`] types, [`endpoint`]s, the [`retry`]
//! policy, [`credentials`] and [`challenge`] parsing know no other module
//! here; [`errors`] (with the classification of transport failures, over
//! retry's idea of a transient status) is below everything that sends;
//! [`answer`] reads the bodies kept in memory, capped and watched;
//! [`trust`] gathers what certificates are checked against;
//! [`transport`] reaches a host; [`auth`] logs in; [`client`] sends requests
//! through all of them and speaks the protocol. Imports only go down
//! this list.

pub mod answer;
pub mod auth;
pub mod challenge;
pub mod client;
pub mod credentials;
pub mod endpoint;
pub mod errors;
pub mod media;
pub mod retry;
pub mod transport;
pub mod trust;

// The paths the rest of kvpush has always used.
pub use endpoint::{is_loopback, Endpoint, Security};
pub use errors::{describe_error_body, error_body_text, RegistryError};
