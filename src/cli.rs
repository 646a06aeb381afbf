//! Command line: clap definitions, environment defaults as KubeVirt's
//! scripts set them, validation into a [`Config`], and the top-level run.
//! Nothing is pushed until the whole configuration is known to be valid.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser};

use crate::push::{self, PlanInput, Status};
use crate::registry::auth::{Credential, FoundCredential, Secret};
use crate::registry::retry::RetryPolicy;
use crate::targets::{self, Selection};
use crate::{blob, interrupt, report};

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
    /// Prefix of every image name, `$(image_prefix)` (e.g. `kv-` gives kv-virt-api).
    #[arg(long, env = "IMAGE_PREFIX", default_value = "")]
    image_prefix: String,
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

/// A validated configuration: everything the run needs, nothing raw.
#[derive(Debug)]
pub struct Config {
    pub selections: Vec<Selection>,
    pub registry: String,
    pub tags: Vec<String>,
    pub image_prefix: String,
    pub workspace: PathBuf,
    pub jobs: usize,
    pub dry_run: bool,
    pub insecure: bool,
    pub digests_dir: Option<PathBuf>,
    pub compression_level: u32,
    pub credential: Option<FoundCredential>,
    pub retry: RetryPolicy,
    pub chunk_size: u64,
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
        push::Destination::new(registry, &common.image_prefix, "virt-api", &common.tags[0])?;
    }
    Ok(())
}

impl PushArgs {
    fn into_config(self) -> Result<Config, String> {
        validate_common(&self.common)?;
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
        let mut tags = self.common.tags;
        tags.dedup();
        Ok(Config {
            selections,
            registry,
            tags,
            image_prefix: self.common.image_prefix,
            workspace: self.common.workspace,
            jobs: self.jobs,
            dry_run: self.dry_run,
            insecure: self.insecure,
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
    report::err(&format!("kvpush: error: {message}"));
    ExitCode::from(2)
}

fn fatal(message: &str) -> ExitCode {
    report::err(&format!("kvpush: error: {message}"));
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
        image_prefix: &common.image_prefix,
        tags: &common.tags,
    };
    match push::plan(&input) {
        Ok(plan) => {
            report::out(&report::list(&plan));
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
        image_prefix: &config.image_prefix,
        tags: &config.tags,
    };
    let plan = match push::plan(&input) {
        Ok(plan) => plan,
        Err(e) => return fatal(&e),
    };
    if config.dry_run {
        report::out(&report::dry_run(&plan));
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
        retry: config.retry.clone(),
        chunk_size: config.chunk_size,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        let stop =
            interrupt::listen().map_err(|e| format!("cannot listen for SIGINT/SIGTERM: {e}"))?;
        push::execute(&plan, options, &report::print_image, stop).await
    });
    // Do not wait for compressions still running after an interruption.
    runtime.shutdown_background();
    let (results, interrupted) = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return fatal(&e),
    };
    report::err(&report::summary(
        &results,
        started.elapsed(),
        interrupted.map(|i| i.name),
    ));
    if let Some(dir) = &config.digests_dir {
        if let Err(e) = report::write_digest_files(dir, &results) {
            return fatal(&e);
        }
    }
    if let Some(i) = interrupted {
        return ExitCode::from(i.exit_code);
    }
    if results
        .iter()
        .all(|r| matches!(r.status, Status::Pushed | Status::Unchanged))
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
        assert_eq!(c.image_prefix, "kv-");
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
    }
}
