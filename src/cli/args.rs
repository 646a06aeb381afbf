//! The command line as clap sees it: the `kvpush` flags, their
//! environment defaults as KubeVirt's scripts set them, help text and
//! examples, and the parsers of durations and sizes. It owns what a flag is
//! called and what it accepts on its own; it must not check flags against
//! each other or the workspace (that is `validate`), nor run anything.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::compress::CompressionLevel;
use crate::config::OutputFormat;
use crate::push::manifest_list::DEFAULT_CHILD_TAG;
use crate::push::SourceChoice;
use crate::registry::retry::RetryPolicy;

const EXAMPLES: &str = "\
Examples:
  kvpush all --registry quay.io/kubevirt --tag v1.2.3
  kvpush virt-handler --registry localhost:5000/kubevirt --tag devel
  kvpush all --registry localhost:5000/kubevirt --tag devel --tag devel-alt --digests-dir _out/digests
  kvpush list --registry quay.io/kubevirt --tag v1.2.3
  kvpush list virt-api
  bazel build --config=x86_64 $(kvpush bazel-targets all)            # what kvpush reads, for each target's rule
  kvpush all --registry quay.io/kubevirt --tag v1.2.3-arm64            # on each architecture's build
  kvpush manifest all --registry quay.io/kubevirt --tag v1.2.3 --arch amd64,arm64,s390x
  kvpush all --registry quay.io/kubevirt --tag v1.2.3 --arch-bin amd64=_out/x86_64/bazel-bin --arch-bin arm64=_out/aarch64/bazel-bin";

/// `0.1.0 (c19fe38)`: the package version and the commit it was built
/// from, as build.rs found it (`-dirty`, or `unknown commit`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KVPUSH_COMMIT"), ")");

#[derive(Parser, Debug)]
#[command(
    name = "kvpush",
    version = VERSION,
    about = "Push the container images Bazel built for KubeVirt to an OCI registry, all targets in one concurrent run",
    after_help = EXAMPLES,
)]
pub struct Cli {
    #[command(flatten)]
    pub(super) push: PushArgs,
}

#[derive(Args, Debug)]
pub(super) struct CommonArgs {
    /// Registry and path to push under, `$(container_prefix)` (e.g. quay.io/kubevirt, localhost:5000).
    #[arg(long, env = "DOCKER_PREFIX")]
    pub(super) registry: Option<String>,
    /// Tag to push; repeat for more tags (blobs go up once).
    #[arg(long = "tag", env = "DOCKER_TAG", default_value = "latest")]
    pub(super) tags: Vec<String>,
    /// Prefix of every image name, `$(image_prefix)` (e.g. `kv-` gives kv-virt-api);
    /// repeat to push under several prefixes (blobs are mounted, not uploaded again).
    #[arg(long = "image-prefix", env = "IMAGE_PREFIX", default_value = "")]
    pub(super) image_prefixes: Vec<String>,
    /// KubeVirt checkout holding `bazel-bin` (followed through its symlink).
    #[arg(long, default_value = ".")]
    pub(super) workspace: PathBuf,
    /// What to read images from: rules_docker push-target parts (`bazel build
    /// //:push-X`, Bazel's own gzip layers and digests), image tarballs (or
    /// OCI layouts), or `auto`: parts when the push script exists, else the
    /// tarball.
    #[arg(long, value_enum, default_value_t = SourceChoice::Auto)]
    pub(super) source: SourceChoice,
}

#[derive(Args, Debug)]
pub(super) struct PushArgs {
    /// Targets to push: `all`, a target (virt-api or push-virt-api), or an
    /// image of the bundle (cirros-container-disk-demo); default $PUSH_TARGETS.
    /// `list [TARGET...]` shows each target's images, sources and destinations;
    /// `manifest [TARGET...]` pushes multi-architecture manifest lists;
    /// `bazel-targets [TARGET...]` prints what one `bazel build` needs;
    /// `completions SHELL` prints a completion script; `man` the manual page.
    #[arg(value_name = "TARGET")]
    pub(super) targets: Vec<String>,
    #[command(flatten)]
    pub(super) common: CommonArgs,
    /// Most blob operations (compressions, uploads) at once.
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub(super) jobs: usize,
    /// Show what would be pushed, reading the tarballs but touching no registry.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Skip TLS certificate checks and allow plain HTTP for any registry
    /// (loopback registries get both without it); prints a warning.
    #[arg(long)]
    pub(super) insecure: bool,
    /// Trust this PEM CA certificate (bundle) too; repeatable. SSL_CERT_FILE
    /// replaces the system roots.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub(super) ca_certs: Vec<PathBuf>,
    /// PEM client certificate (chain) presented to the --registry host for
    /// mutual TLS, with --client-key; replaces a certs.d `*.cert` pair for
    /// that host, never sent to another (origin) registry.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub(super) client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert (PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub(super) client_key: Option<PathBuf>,
    /// Write push-<target>.digest files (sha256:<hex>) here for the single-image
    /// targets; a manifest list's digest for `manifest`, and with --arch-bin
    /// each architecture's image digests under DIR/ARCH.
    #[arg(long, value_name = "DIR")]
    pub(super) digests_dir: Option<PathBuf>,
    /// gzip level for layers kvpush compresses: auto (picked once per run
    /// from the link and the cores: 3 when the CPU is the bottleneck, 6 or
    /// 10-12 when the link to the registry is), or 1-12:
    /// 1-3 use ISA-L's igzip (fast), 4-9 zlib-rs (smaller, more CPU),
    /// 10-12 libdeflate (a gzip member per run of pages, much more CPU).
    #[arg(long, default_value = "auto", value_name = "auto|1-12", value_parser = CompressionLevel::parse)]
    pub(super) compression_level: CompressionLevel,
    /// User name for the registry (with --password-stdin); otherwise
    /// KVPUSH_USERNAME/KVPUSH_PASSWORD, then docker/podman login files.
    #[arg(long, requires = "password_stdin")]
    pub(super) username: Option<String>,
    /// Read the registry password (or token) from standard input.
    #[arg(long, requires = "username")]
    pub(super) password_stdin: bool,
    /// Where the digest cache lives [default: $XDG_CACHE_HOME/kvpush or ~/.cache/kvpush].
    #[arg(long, value_name = "DIR")]
    pub(super) cache_dir: Option<PathBuf>,
    /// Use no digest cache: every layer is read and compressed.
    #[arg(long, conflicts_with = "cache_dir")]
    pub(super) no_cache: bool,
    /// Tries per registry request before giving up (transient errors only).
    #[arg(long, default_value_t = RetryPolicy::default().attempts, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub(super) retries: u32,
    /// Start no new try of a request this long after its first (e.g. 90s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub(super) retry_time: Duration,
    /// Longest wait for a connection to the registry.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(super) connect_timeout: Duration,
    /// Abandon and retry a request that sends and receives nothing for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(super) stall_timeout: Duration,
    /// PATCH size once a registry refuses a whole blob as too large (413).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub(super) chunk_size: u64,
    /// What to print on stdout: `text` (a `REF@DIGEST` line per tag) or `json`
    /// (one document describing every image; logs stay on stderr).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(super) output: OutputFormat,
    /// Print errors only (and the `REF@DIGEST` lines on stdout).
    #[arg(short, long, conflicts_with = "verbose")]
    pub(super) quiet: bool,
    /// Manifest format of the images kvpush writes a manifest for (tarballs,
    /// push-target parts): docker (schema 2, as rules_docker's format =
    /// "Docker") or oci. OCI layouts keep their own.
    #[arg(long, default_value = "docker", value_parser = ["docker", "oci"])]
    pub(super) format: String,
    /// `kvpush manifest`: the architectures to list, comma separated
    /// (amd64,arm64,s390x, or KubeVirt's x86_64,aarch64,s390x) [default: $BUILD_ARCH].
    #[arg(long = "arch", value_name = "ARCHES")]
    pub(super) arches: Vec<String>,
    /// Tag of each architecture's image, from the list's tag (`manifest`, `--arch-bin`).
    #[arg(long, value_name = "PATTERN", default_value = DEFAULT_CHILD_TAG)]
    pub(super) child_tag: String,
    /// Leave architectures whose image is missing out of a manifest list
    /// (with a warning) instead of failing the list.
    #[arg(long)]
    pub(super) allow_missing: bool,
    /// Push this architecture's bazel-bin tree (or workspace) with tags
    /// `TAG-ARCH`, then the manifest lists as TAG; repeat per architecture.
    #[arg(long = "arch-bin", value_name = "ARCH=PATH")]
    pub(super) arch_bins: Vec<String>,
    /// Log each registry request (-v) or everything (-vv); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub(super) verbose: u8,
}

/// `90`, `90s`, `1.5s`, `500ms`, `5m`, `1h`: a duration (bare numbers are seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 500ms, 5m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ))
        }
    };
    if !(0.001..=86400.0).contains(&secs) {
        return Err(format!("{text:?}: give between 1ms and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `16MiB`, `4M`, `512KiB`, `1048576`: a size in bytes (binary units).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 16MiB, 512KiB)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use KiB, MiB or GiB)"
            ))
        }
    };
    let size = n.saturating_mul(mult);
    if !(64 << 10..=1 << 40).contains(&size) {
        return Err(format!("{text:?}: give at least 64KiB"));
    }
    Ok(size)
}

fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(4, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("0").is_err());
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("1KiB").unwrap_err().contains("at least 64KiB"));
        assert!(parse_size("lots").is_err());
    }

    /// `0.1.0 (c19fe38)`, `0.1.0 (c19fe38-dirty)`, `0.1.0 (unknown commit)`,
    /// or what KVPUSH_GIT_COMMIT said when the build had no git.
    #[test]
    fn the_version_names_the_commit_it_was_built_from() {
        let commit = VERSION
            .strip_prefix(concat!(env!("CARGO_PKG_VERSION"), " ("))
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{VERSION:?}"));
        let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
        let from_git = hash.len() >= 4 && hash.chars().all(|c| c.is_ascii_hexdigit());
        let given = option_env!("KVPUSH_GIT_COMMIT").map(str::trim) == Some(commit);
        assert!(
            from_git || given || commit == "unknown commit",
            "{VERSION:?}"
        );
        let cli = Cli::try_parse_from(["kvpush", "--version"]).unwrap_err();
        assert_eq!(cli.to_string(), format!("kvpush {VERSION}\n"));
    }

    #[test]
    fn list_is_the_first_positional_wherever_flags_stand() {
        let cli = Cli::try_parse_from(["kvpush", "--workspace", "/w", "list", "virt-api"]).unwrap();
        assert_eq!(cli.push.targets, vec!["list", "virt-api"]);
        let cli =
            Cli::try_parse_from(["kvpush", "--arch", "amd64", "manifest", "virt-api"]).unwrap();
        assert_eq!(cli.push.targets, vec!["manifest", "virt-api"]);
    }
}
