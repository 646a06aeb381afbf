//! Command line: clap definitions, environment defaults as KubeVirt's
//! scripts set them, validation into a [`Config`], and dispatch to
//! [`crate::commands`]. Nothing is pushed until the whole configuration is
//! known to be valid.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};

use crate::commands::{
    fatal, init_logging, run_arch_bins, run_manifest, run_push, usage_error, LogTarget,
};
use crate::config::{Config, OutputFormat};
use crate::push::manifest_list::{self, DEFAULT_CHILD_TAG};
use crate::push::{self, PlanInput, SourceChoice};
use crate::registry::credentials::{Credential, FoundCredential, Secret};
use crate::registry::media::Format;
use crate::registry::retry::RetryPolicy;
use crate::targets::{self, Catalog};
use crate::{blob, registry, report};

const EXAMPLES: &str = "\
Examples:
  kvpush all --registry quay.io/kubevirt --tag v1.2.3
  kvpush virt-handler --registry localhost:5000/kubevirt --tag devel
  kvpush all --registry localhost:5000/kubevirt --tag devel --tag devel-alt --digests-dir _out/digests
  kvpush list --registry quay.io/kubevirt --tag v1.2.3
  kvpush list virt-api
  kvpush all --registry quay.io/kubevirt --tag v1.2.3-arm64            # on each architecture's build
  kvpush manifest all --registry quay.io/kubevirt --tag v1.2.3 --arch amd64,arm64,s390x
  kvpush all --registry quay.io/kubevirt --tag v1.2.3 --arch-bin amd64=_out/x86_64/bazel-bin --arch-bin arm64=_out/aarch64/bazel-bin";

#[derive(Parser, Debug)]
#[command(
    name = "kvpush",
    version,
    about = "Push the container images Bazel built for KubeVirt to an OCI registry, all targets in one concurrent run",
    after_help = EXAMPLES,
)]
pub struct Cli {
    #[command(flatten)]
    push: PushArgs,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// Registry and path to push under, `$(container_prefix)` (e.g. quay.io/kubevirt, localhost:5000).
    #[arg(long, env = "DOCKER_PREFIX")]
    registry: Option<String>,
    /// Tag to push; repeat for more tags (blobs go up once).
    #[arg(long = "tag", env = "DOCKER_TAG", default_value = "latest")]
    tags: Vec<String>,
    /// Prefix of every image name, `$(image_prefix)` (e.g. `kv-` gives kv-virt-api);
    /// repeat to push under several prefixes (blobs are mounted, not uploaded again).
    #[arg(long = "image-prefix", env = "IMAGE_PREFIX", default_value = "")]
    image_prefixes: Vec<String>,
    /// KubeVirt checkout holding `bazel-bin` (followed through its symlink).
    #[arg(long, default_value = ".")]
    workspace: PathBuf,
    /// What to read images from: rules_docker push-target parts (`bazel build
    /// //:push-X`, Bazel's own gzip layers and digests), image tarballs (or
    /// OCI layouts), or `auto`: parts when the push script exists, else the
    /// tarball.
    #[arg(long, value_enum, default_value_t = SourceChoice::Auto)]
    source: SourceChoice,
}

#[derive(Args, Debug)]
struct PushArgs {
    /// Targets to push: `all`, a target (virt-api or push-virt-api), or an
    /// image of the bundle (cirros-container-disk-demo); default $PUSH_TARGETS.
    /// `list [TARGET...]` shows each target's images, sources and destinations;
    /// `manifest [TARGET...]` pushes multi-architecture manifest lists;
    /// `completions SHELL` prints a completion script.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Most blob operations (compressions, uploads) at once.
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    jobs: usize,
    /// Show what would be pushed, reading the tarballs but touching no registry.
    #[arg(long)]
    dry_run: bool,
    /// Skip TLS certificate checks and allow plain HTTP for any registry
    /// (loopback registries get both without it); prints a warning.
    #[arg(long)]
    insecure: bool,
    /// Trust this PEM CA certificate (bundle) too; repeatable. SSL_CERT_FILE
    /// replaces the system roots.
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_certs: Vec<PathBuf>,
    /// Write push-<target>.digest files (sha256:<hex>) here for the single-image
    /// targets; a manifest list's digest for `manifest`, and with --arch-bin
    /// each architecture's image digests under DIR/ARCH.
    #[arg(long, value_name = "DIR")]
    digests_dir: Option<PathBuf>,
    /// gzip level (1-9) for layers kvpush compresses: 1-3 use ISA-L's
    /// igzip (fast), 4-9 zlib-rs (smaller output, several times the CPU).
    #[arg(long, default_value_t = blob::DEFAULT_COMPRESSION_LEVEL, value_parser = clap::value_parser!(u32).range(1..=9))]
    compression_level: u32,
    /// User name for the registry (with --password-stdin); otherwise
    /// KVPUSH_USERNAME/KVPUSH_PASSWORD, then docker/podman login files.
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password (or token) from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Where the digest cache lives [default: $XDG_CACHE_HOME/kvpush or ~/.cache/kvpush].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Use no digest cache: every layer is read and compressed.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Tries per registry request before giving up (transient errors only).
    #[arg(long, default_value_t = RetryPolicy::default().attempts, value_parser = clap::value_parser!(u32).range(1..=50))]
    retries: u32,
    /// Start no new try of a request this long after its first (e.g. 90s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    retry_time: Duration,
    /// Longest wait for a connection to the registry.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Abandon and retry a request that sends and receives nothing for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    stall_timeout: Duration,
    /// PATCH size once a registry refuses a whole blob as too large (413).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// What to print on stdout: `text` (a `REF@DIGEST` line per tag) or `json`
    /// (one document describing every image; logs stay on stderr).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Print errors only (and the `REF@DIGEST` lines on stdout).
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Manifest format of the images kvpush writes a manifest for (tarballs,
    /// push-target parts): docker (schema 2, as rules_docker's format =
    /// "Docker") or oci. OCI layouts keep their own.
    #[arg(long, default_value = "docker", value_parser = ["docker", "oci"])]
    format: String,
    /// `kvpush manifest`: the architectures to list, comma separated
    /// (amd64,arm64,s390x, or KubeVirt's x86_64,aarch64,s390x) [default: $BUILD_ARCH].
    #[arg(long = "arch", value_name = "ARCHES")]
    arches: Vec<String>,
    /// Tag of each architecture's image, from the list's tag (`manifest`, `--arch-bin`).
    #[arg(long, value_name = "PATTERN", default_value = DEFAULT_CHILD_TAG)]
    child_tag: String,
    /// Leave architectures whose image is missing out of a manifest list
    /// (with a warning) instead of failing the list.
    #[arg(long)]
    allow_missing: bool,
    /// Push this architecture's bazel-bin tree (or workspace) with tags
    /// `TAG-ARCH`, then the manifest lists as TAG; repeat per architecture.
    #[arg(long = "arch-bin", value_name = "ARCH=PATH")]
    arch_bins: Vec<String>,
    /// Log each registry request (-v) or everything (-vv); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
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

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Push,
    /// `kvpush manifest`: lists from images already in the registry.
    Manifest,
}

/// `--arch-bin ARCH=PATH` values: GOARCH names (each once) and bazel-bin trees.
fn parse_arch_bins(values: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for v in values {
        let (arch, path) = v.split_once('=').ok_or_else(|| {
            format!("--arch-bin {v:?}: give ARCH=PATH, e.g. arm64=_out/aarch64/bazel-bin")
        })?;
        let arch = manifest_list::goarch(arch)?.to_string();
        if out.iter().any(|(a, _)| *a == arch) {
            return Err(format!("--arch-bin names {arch} twice"));
        }
        let bin = push::plan::bazel_bin_at(std::path::Path::new(path))
            .map_err(|e| format!("--arch-bin {v}: {e}"))?;
        out.push((arch, bin));
    }
    Ok(out)
}

/// Drop repeated values, keeping the first of each in order.
fn dedup(values: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn validate_common(common: &CommonArgs) -> Result<(), String> {
    for tag in &common.tags {
        push::plan::validate_tag(tag)?;
    }
    if let Some(registry) = &common.registry {
        if registry.contains("://") {
            return Err(format!(
                "--registry {registry:?} has a scheme: give host and path only (e.g. quay.io/kubevirt); use --insecure for plain HTTP"
            ));
        }
        // Any image name will do to check registry and prefix together.
        for prefix in &common.image_prefixes {
            push::Destination::new(registry, prefix, "virt-api", &common.tags[0])?;
        }
    }
    Ok(())
}

impl PushArgs {
    fn into_config(self, catalog: Catalog, mode: Mode) -> Result<Config, String> {
        validate_common(&self.common)?;
        let format = Format::parse(&self.format)?;
        let arch_bins = parse_arch_bins(&self.arch_bins)?;
        let arches = match mode {
            Mode::Manifest => {
                if !arch_bins.is_empty() {
                    return Err("--arch-bin pushes images; `kvpush manifest` only lists images already pushed: drop one of them".into());
                }
                if self.dry_run {
                    return Err("`kvpush manifest` has no --dry-run: it reads the registry to build the lists; `kvpush list` shows the images".into());
                }
                let mut arches = manifest_list::parse_arches(&self.arches)?;
                if arches.is_empty() {
                    let build_arch = std::env::var("BUILD_ARCH").unwrap_or_default();
                    arches = manifest_list::parse_arches(&[build_arch])
                        .map_err(|e| format!("BUILD_ARCH: {e}"))?;
                }
                if arches.is_empty() {
                    return Err("name the architectures to list: --arch amd64,arm64,s390x (or set BUILD_ARCH)".into());
                }
                arches
            }
            Mode::Push => {
                if !self.arches.is_empty() {
                    return Err("--arch is for `kvpush manifest`; to push several architectures' trees use --arch-bin ARCH=PATH".into());
                }
                if arch_bins.is_empty()
                    && (self.allow_missing || self.child_tag != DEFAULT_CHILD_TAG)
                {
                    return Err("--allow-missing and --child-tag apply to `kvpush manifest` and --arch-bin runs".into());
                }
                arch_bins.iter().map(|(a, _)| a.clone()).collect()
            }
        };
        if !arches.is_empty() {
            manifest_list::validate_child_tag(&self.child_tag, &self.common.tags, &arches)?;
        }
        let mut names = self.targets;
        if names.is_empty() {
            names = std::env::var("PUSH_TARGETS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        if names.is_empty() {
            return Err("name what to push: `kvpush all`, one or more targets (e.g. virt-api), or set PUSH_TARGETS; see kvpush --help".into());
        }
        let selections = targets::resolve(&catalog, &names)?;
        let registry = self.common.registry.ok_or(
            "no registry: pass --registry (e.g. --registry quay.io/kubevirt) or set DOCKER_PREFIX",
        )?;
        if self.jobs == 0 {
            return Err("--jobs must be at least 1".into());
        }
        registry::transport::check_ssl_cert_file()?;
        let ca_certs = registry::transport::load_ca_certs(&self.ca_certs)?;
        let credential = match self.username {
            Some(username) if self.password_stdin => Some(read_password_stdin(username)?),
            _ => None,
        };
        let tags = dedup(self.common.tags);
        Ok(Config {
            catalog,
            selections,
            registry,
            tags,
            image_prefixes: dedup(self.common.image_prefixes),
            workspace: self.common.workspace,
            jobs: self.jobs,
            dry_run: self.dry_run,
            insecure: self.insecure,
            ca_certs,
            digests_dir: self.digests_dir,
            compression_level: self.compression_level,
            credential,
            retry: RetryPolicy {
                attempts: self.retries,
                deadline: self.retry_time,
                connect_timeout: self.connect_timeout,
                stall_timeout: self.stall_timeout,
                ..RetryPolicy::default()
            },
            chunk_size: self.chunk_size,
            output: self.output,
            quiet: self.quiet,
            verbose: self.verbose,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.or_else(crate::cache::default_dir)
            },
            source: self.common.source,
            format,
            arches: if mode == Mode::Manifest {
                arches
            } else {
                Vec::new()
            },
            arch_bins,
            child_tag: self.child_tag,
            allow_missing: self.allow_missing,
        })
    }
}

/// `--password-stdin`: the first line of standard input, never argv.
fn read_password_stdin(username: String) -> Result<FoundCredential, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err("--password-stdin: standard input held no password".into());
    }
    Ok(FoundCredential {
        credential: Credential::Basic {
            username,
            password: Secret::new(password),
        },
        source: "--username/--password-stdin".into(),
    })
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let mut args = Cli::parse().push;
    // `completions`, like `list` below, is a word among the targets, so
    // that flags may stand anywhere.
    if args.targets.first().map(String::as_str) == Some("completions") {
        return run_completions(&args.targets[1..]);
    }
    // The push targets: from the workspace's BUILD.bazel, else built in.
    let catalog = match Catalog::load(&args.common.workspace) {
        Ok(c) => c,
        Err(e) => {
            init_logging(args.verbose, args.quiet, LogTarget::Stderr);
            return fatal(&e);
        }
    };
    // `list` and `manifest` are words among the targets, so that flags may
    // stand anywhere.
    let mode = match args.targets.first().map(String::as_str) {
        Some("list") => {
            init_logging(args.verbose, args.quiet, LogTarget::Stderr);
            tracing::debug!("{}", catalog.describe());
            args.targets.remove(0);
            return run_list(args, &catalog);
        }
        Some("manifest") => {
            args.targets.remove(0);
            Mode::Manifest
        }
        _ => Mode::Push,
    };
    match args.into_config(catalog, mode) {
        Ok(config) if mode == Mode::Manifest => run_manifest(config),
        Ok(config) if !config.arch_bins.is_empty() => run_arch_bins(config),
        Ok(config) => run_push(config),
        Err(e) => usage_error(&e),
    }
}

/// `kvpush completions bash|zsh|fish`: a completion script on stdout.
fn run_completions(words: &[String]) -> ExitCode {
    use clap::CommandFactory;
    let shell = match words {
        [one] => one.parse::<clap_complete::Shell>(),
        _ => Err(String::new()),
    };
    match shell {
        Ok(shell) => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kvpush", &mut script);
            report::out(&String::from_utf8_lossy(&script));
            ExitCode::SUCCESS
        }
        Err(_) => usage_error("usage: kvpush completions bash|zsh|fish|elvish|powershell"),
    }
}

fn run_list(args: PushArgs, catalog: &Catalog) -> ExitCode {
    let common = args.common;
    if let Err(e) = validate_common(&common) {
        return usage_error(&e);
    }
    let names = if args.targets.is_empty() {
        vec!["all".to_string()]
    } else {
        args.targets
    };
    let selections = match targets::resolve(catalog, &names) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    let input = PlanInput {
        workspace: &common.workspace,
        catalog,
        selections: &selections,
        registry: common.registry.as_deref(),
        image_prefixes: &common.image_prefixes,
        tags: &common.tags,
        source: common.source,
    };
    match push::plan(&input) {
        Ok(plan) => {
            report::out(&report::list(&plan, catalog));
            ExitCode::SUCCESS
        }
        Err(e) => fatal(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("kvpush").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.push.into_config(Catalog::builtin("test"), Mode::Push)
    }

    #[test]
    fn flags_become_a_config() {
        let c = parse(&[
            "all",
            "--registry",
            "localhost:5000/kubevirt",
            "--tag",
            "a",
            "--tag",
            "b",
            "-j",
            "3",
        ])
        .unwrap();
        assert_eq!(c.selections.len(), 7);
        assert_eq!(c.tags, vec!["a", "b"]);
        assert_eq!(c.jobs, 3);
        let c = parse(&[
            "push-virt-api",
            "--registry",
            "quay.io/kubevirt",
            "--image-prefix",
            "kv-",
        ])
        .unwrap();
        assert_eq!(c.selections.len(), 1);
        assert_eq!(c.image_prefixes, vec!["kv-"]);
    }

    #[test]
    fn invalid_input_is_refused_before_any_work() {
        assert!(parse(&["all", "--registry", "https://quay.io/kubevirt"])
            .unwrap_err()
            .contains("scheme"));
        assert!(
            parse(&["all", "--registry", "quay.io/kubevirt", "--tag", "bad tag"])
                .unwrap_err()
                .contains("invalid tag")
        );
        assert!(parse(&[
            "all",
            "--registry",
            "quay.io/kubevirt",
            "--image-prefix",
            "Bad/"
        ])
        .is_err());
        assert!(parse(&["nope", "--registry", "quay.io/kubevirt"])
            .unwrap_err()
            .contains("unknown target"));
        assert!(parse(&["all", "--registry", "quay.io/kubevirt", "--jobs", "0"]).is_err());
    }

    #[test]
    fn format_is_docker_unless_oci_is_asked_for() {
        assert_eq!(
            parse(&["all", "--registry", "r.io/k"]).unwrap().format,
            Format::Docker
        );
        let c = parse(&["all", "--registry", "r.io/k", "--format", "oci"]).unwrap();
        assert_eq!(c.format, Format::Oci);
        assert!(parse(&["all", "--registry", "r.io/k", "--format", "v1"]).is_err());
    }

    fn parse_manifest(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("kvpush").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.push
            .into_config(Catalog::builtin("test"), Mode::Manifest)
    }

    #[test]
    fn manifest_flags_map_kubevirt_arch_names_and_check_the_child_tag() {
        let c = parse_manifest(&[
            "all",
            "--registry",
            "quay.io/kubevirt",
            "--tag",
            "v1",
            "--arch",
            "x86_64,aarch64",
            "--arch",
            "s390x",
        ])
        .unwrap();
        assert_eq!(c.arches, vec!["amd64", "arm64", "s390x"]);
        assert_eq!(c.child_tag, DEFAULT_CHILD_TAG);
        let err = parse_manifest(&[
            "all",
            "--registry",
            "quay.io/kubevirt",
            "--arch",
            "amd64",
            "--child-tag",
            "{tag}",
        ])
        .unwrap_err();
        assert!(err.contains("no {arch}"), "{err}");
        let err = parse_manifest(&[
            "all",
            "--registry",
            "r.io/k",
            "--arch",
            "amd64",
            "--dry-run",
        ])
        .unwrap_err();
        assert!(err.contains("no --dry-run"), "{err}");
    }

    #[test]
    fn push_only_flags_and_manifest_only_flags_are_not_mixed() {
        let err = parse(&["all", "--registry", "r.io/k", "--arch", "amd64"]).unwrap_err();
        assert!(err.contains("--arch-bin"), "{err}");
        let err = parse(&["all", "--registry", "r.io/k", "--allow-missing"]).unwrap_err();
        assert!(err.contains("--allow-missing"), "{err}");
        let err = parse(&["all", "--registry", "r.io/k", "--arch-bin", "amd64"]).unwrap_err();
        assert!(err.contains("ARCH=PATH"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bin = format!("x86_64={}", dir.path().display());
        let err = parse(&[
            "all",
            "--registry",
            "r.io/k",
            "--arch-bin",
            &bin,
            "--arch-bin",
            &bin,
        ])
        .unwrap_err();
        assert!(err.contains("amd64 twice"), "{err}");
        let c = parse(&["all", "--registry", "r.io/k", "--arch-bin", &bin]).unwrap();
        assert_eq!(
            c.arch_bins,
            vec![("amd64".to_string(), dir.path().to_path_buf())]
        );
    }

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
        let c = parse(&[
            "all",
            "--registry",
            "localhost:5000",
            "--retries",
            "3",
            "--retry-time",
            "45s",
            "--stall-timeout",
            "2s",
            "--chunk-size",
            "1MiB",
        ])
        .unwrap();
        assert_eq!(c.retry.attempts, 3);
        assert_eq!(c.retry.deadline, Duration::from_secs(45));
        assert_eq!(c.retry.stall_timeout, Duration::from_secs(2));
        assert_eq!(c.chunk_size, 1 << 20);
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
