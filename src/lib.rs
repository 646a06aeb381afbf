//! kvpush: push the container images Bazel built for KubeVirt straight to an
//! OCI registry, every target in one concurrent process.
//!
//! Data flows one way: [`cli`] turns flags into a validated [`config::Config`],
//! [`targets`] says which images and tarballs that means, [`source`] turns
//! tarballs into [`source::Image`]s, [`push`] plans and runs the upload through
//! [`registry`], and [`report`] tells the user what happened.

pub mod blob;
pub mod buffers;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod interrupt;
pub mod manifest;
pub mod push;
pub mod registry;
pub mod report;
pub mod sha256_pair;
pub mod source;
pub mod targets;
