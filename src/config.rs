//! The validated configuration of one run: what [`crate::cli`] builds from
//! the flags and the environment, and [`crate::commands`] runs. It owns the
//! shape of that data only; it must not know about clap's argument
//! definitions, parse or check raw flags (that is `cli`), or run anything
//! (that is `commands`).

use std::path::PathBuf;

use crate::push::SourceChoice;
use crate::registry::credentials::FoundCredential;
use crate::registry::media::Format;
use crate::registry::retry::RetryPolicy;
use crate::targets::{Catalog, Selection};

/// What to print on stdout. A clap value too (`--output text|json`), so
/// the flag and the configuration name the same choices.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// `DIGESTS_DIR` and `${ARCHITECTURE}`: where KubeVirt's push script left
/// its digest and marker files (`DIR/ARCH/...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubevirtDigests {
    pub dir: PathBuf,
    pub arch: String,
}

/// A validated configuration: everything the run needs, nothing raw.
#[derive(Debug)]
pub struct Config {
    pub catalog: Catalog,
    pub selections: Vec<Selection>,
    pub registry: String,
    pub tags: Vec<String>,
    pub image_prefixes: Vec<String>,
    pub workspace: PathBuf,
    pub jobs: usize,
    pub dry_run: bool,
    pub insecure: bool,
    pub ca_certs: Vec<reqwest::Certificate>,
    pub digests_dir: Option<PathBuf>,
    /// Prefixes every image is pushed under at the first tag only
    /// (IMAGE_PREFIX_ALT).
    pub alt_prefixes: Vec<String>,
    /// DIGESTS_DIR: the files KubeVirt's scripts read after a push.
    pub kubevirt_digests: Option<KubevirtDigests>,
    pub compression_level: crate::compress::CompressionLevel,
    pub credential: Option<FoundCredential>,
    pub retry: RetryPolicy,
    /// `PATCH` size once a registry refuses whole blobs.
    pub chunk_size: u64,
    /// `None` with --no-cache (or when no home directory is known).
    pub cache_dir: Option<PathBuf>,
    pub output: OutputFormat,
    pub quiet: bool,
    pub verbose: u8,
    pub source: SourceChoice,
    pub format: Format,
    /// `kvpush manifest`: GOARCH names of the architectures to list.
    pub arches: Vec<String>,
    /// `--arch-bin`: each architecture's bazel-bin tree.
    pub arch_bins: Vec<(String, PathBuf)>,
    /// Tag pattern of each architecture's image (`{tag}`, `{arch}`).
    pub child_tag: String,
    pub allow_missing: bool,
}
