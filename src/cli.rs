//! Command line: clap definitions, environment defaults as KubeVirt's
//! scripts set them, validation into a [`Config`], and the top-level run.
//! Nothing is pushed until the whole configuration is known to be valid.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser};

use crate::push::{self, PlanInput, Status};
use crate::registry::auth::{Credential, FoundCredential, Secret};
use crate::registry::media::Format;
use crate::registry::retry::RetryPolicy;
use crate::targets::{self, Selection};
use crate::{blob, report};

const EXAMPLES: &str = "\
Examples:
  kvpush all --registry quay.io/kubevirt --tag v1.2.3
  kvpush virt-handler --registry localhost:5000/kubevirt --tag devel
  kvpush all --registry localhost:5000/kubevirt --tag devel --tag devel-alt --digests-dir _out/digests
  kvpush list --registry quay.io/kubevirt --tag v1.2.3
  kvpush list virt-api";

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
}

#[derive(Args, Debug)]
struct PushArgs {
    /// Targets to push: `all`, a target (virt-api or push-virt-api), or an
    /// image of the bundle (cirros-container-disk-demo); default $PUSH_TARGETS.
    /// `list [TARGET...]` shows each target's images, tarballs and destinations.
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
    /// Allow plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    insecure: bool,
    /// Write push-<target>.digest files (sha256:<hex>) here for the single-image targets.
    #[arg(long, value_name = "DIR")]
    digests_dir: Option<PathBuf>,
    /// gzip level (1-9) for layers kvpush compresses.
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
    /// Manifest format of images assembled from tarballs: docker (schema 2,
    /// as rules_docker's format = "Docker") or oci. OCI layouts keep their own.
    #[arg(long, default_value = "docker", value_parser = ["docker", "oci"])]
    format: String,
    /// Log each registry request (-v) or everything (-vv); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(4, 16)
}

/// A validated configuration: everything the run needs, nothing raw.
#[derive(Debug)]
pub struct Config {
    pub selections: Vec<Selection>,
    pub registry: String,
    pub tags: Vec<String>,
    pub image_prefixes: Vec<String>,
    pub workspace: PathBuf,
    pub jobs: usize,
    pub dry_run: bool,
    pub insecure: bool,
    pub digests_dir: Option<PathBuf>,
    pub compression_level: u32,
    pub credential: Option<FoundCredential>,
    pub retries: u32,
    /// `None` with --no-cache (or when no home directory is known).
    pub cache_dir: Option<PathBuf>,
    pub format: Format,
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
    fn into_config(self) -> Result<Config, String> {
        validate_common(&self.common)?;
        let format = Format::parse(&self.format)?;
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
        let selections = targets::resolve(&names)?;
        let registry = self.common.registry.ok_or(
            "no registry: pass --registry (e.g. --registry quay.io/kubevirt) or set DOCKER_PREFIX",
        )?;
        if self.jobs == 0 {
            return Err("--jobs must be at least 1".into());
        }
        let credential = match self.username {
            Some(username) if self.password_stdin => Some(read_password_stdin(username)?),
            _ => None,
        };
        let tags = dedup(self.common.tags);
        Ok(Config {
            selections,
            registry,
            tags,
            image_prefixes: dedup(self.common.image_prefixes),
            workspace: self.common.workspace,
            jobs: self.jobs,
            dry_run: self.dry_run,
            insecure: self.insecure,
            digests_dir: self.digests_dir,
            compression_level: self.compression_level,
            credential,
            retries: self.retries,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.or_else(crate::cache::default_dir)
            },
            format,
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

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "warn,kvpush=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("kvpush: error: {message}");
    ExitCode::from(2)
}

fn fatal(message: &str) -> ExitCode {
    eprintln!("kvpush: error: {message}");
    ExitCode::FAILURE
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let mut args = Cli::parse().push;
    init_logging(args.verbose);
    // `list` is a word among the targets, so that flags may stand anywhere.
    if args.targets.first().map(String::as_str) == Some("list") {
        args.targets.remove(0);
        return run_list(args);
    }
    match args.into_config() {
        Ok(config) => run_push(config),
        Err(e) => usage_error(&e),
    }
}

fn run_list(args: PushArgs) -> ExitCode {
    let common = args.common;
    if let Err(e) = validate_common(&common) {
        return usage_error(&e);
    }
    let names = if args.targets.is_empty() {
        vec!["all".to_string()]
    } else {
        args.targets
    };
    let selections = match targets::resolve(&names) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    let input = PlanInput {
        workspace: &common.workspace,
        selections: &selections,
        registry: common.registry.as_deref(),
        image_prefixes: &common.image_prefixes,
        tags: &common.tags,
    };
    match push::plan(&input) {
        Ok(plan) => {
            print!("{}", report::list(&plan));
            ExitCode::SUCCESS
        }
        Err(e) => fatal(&e),
    }
}

fn run_push(config: Config) -> ExitCode {
    let started = Instant::now();
    let input = PlanInput {
        workspace: &config.workspace,
        selections: &config.selections,
        registry: Some(&config.registry),
        image_prefixes: &config.image_prefixes,
        tags: &config.tags,
    };
    let plan = match push::plan(&input) {
        Ok(plan) => plan,
        Err(e) => return fatal(&e),
    };
    if config.dry_run {
        print!("{}", report::dry_run(&plan));
        return if plan.images.iter().all(|i| i.image.is_ok()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let options = push::Options {
        jobs: config.jobs,
        insecure: config.insecure,
        compression_level: config.compression_level,
        credential: config.credential.clone(),
        cache_dir: config.cache_dir.clone(),
        retry: RetryPolicy {
            attempts: config.retries,
            ..RetryPolicy::default()
        },
        format: config.format,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    let results = match runtime.block_on(push::execute(&plan, options, &report::print_image)) {
        Ok(results) => results,
        Err(e) => return fatal(&e),
    };
    eprintln!("{}", report::summary(&results, started.elapsed()));
    if let Some(dir) = &config.digests_dir {
        if let Err(e) = report::write_digest_files(dir, &results) {
            return fatal(&e);
        }
    }
    if results
        .iter()
        .all(|r| !matches!(r.status, Status::Failed(_)))
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("kvpush").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.push.into_config()
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

    #[test]
    fn list_is_the_first_positional_wherever_flags_stand() {
        let cli = Cli::try_parse_from(["kvpush", "--workspace", "/w", "list", "virt-api"]).unwrap();
        assert_eq!(cli.push.targets, vec!["list", "virt-api"]);
    }
}
