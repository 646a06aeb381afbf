//! Command line: clap definitions, environment defaults as KubeVirt's
//! scripts set them, validation into a [`Config`], and the top-level run.
//! Nothing is pushed until the whole configuration is known to be valid.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser};

use crate::push::{self, PlanInput, SourceChoice, Status};
use crate::registry::credentials::{Credential, FoundCredential, Secret};
use crate::registry::retry::RetryPolicy;
use crate::targets::{self, Catalog, Selection};
use crate::{blob, registry, report};

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
    /// What to read images from: rules_docker push-target parts (`bazel build
    /// //:push-X`, Bazel's own gzip layers and digests), image tarballs, or
    /// `auto`: parts when the push script exists, else the tarball.
    #[arg(long, value_enum, default_value_t = SourceChoice::Auto)]
    source: SourceChoice,
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
    /// Skip TLS certificate checks and allow plain HTTP for any registry
    /// (loopback registries get both without it); prints a warning.
    #[arg(long)]
    insecure: bool,
    /// Trust this PEM CA certificate (bundle) too; repeatable. SSL_CERT_FILE
    /// replaces the system roots.
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_certs: Vec<PathBuf>,
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
    /// What to print on stdout: `text` (a `REF@DIGEST` line per tag) or `json`
    /// (one document describing every image; logs stay on stderr).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Print errors only (and the `REF@DIGEST` lines on stdout).
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Log each registry request (-v) or everything (-vv); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(4, 16)
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
    pub compression_level: u32,
    pub credential: Option<FoundCredential>,
    pub retries: u32,
    /// `None` with --no-cache (or when no home directory is known).
    pub cache_dir: Option<PathBuf>,
    pub output: OutputFormat,
    pub quiet: bool,
    pub verbose: u8,
    pub source: SourceChoice,
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
    fn into_config(self, catalog: Catalog) -> Result<Config, String> {
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
            retries: self.retries,
            output: self.output,
            quiet: self.quiet,
            verbose: self.verbose,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.or_else(crate::cache::default_dir)
            },
            source: self.common.source,
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

/// Where log lines go: stderr, or above the progress bars.
#[derive(Clone)]
enum LogTarget {
    Stderr,
    Progress(indicatif::MultiProgress),
}

/// A log line written through indicatif so that it lands above the bars.
struct LineWriter {
    target: LogTarget,
    buf: Vec<u8>,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        match &self.target {
            LogTarget::Stderr => eprintln!("{text}"),
            LogTarget::Progress(multi) => {
                let _ = multi.println(text);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogTarget {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            target: self.clone(),
            buf: Vec::new(),
        }
    }
}

fn init_logging(verbose: u8, quiet: bool, target: LogTarget) {
    let default = match verbose {
        0 if quiet => "error",
        0 => "warn",
        1 => "warn,kvpush=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(target)
        .with_ansi(false)
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
    // `list` is a word among the targets, so that flags may stand anywhere.
    if args.targets.first().map(String::as_str) == Some("list") {
        init_logging(args.verbose, args.quiet, LogTarget::Stderr);
        tracing::debug!("{}", catalog.describe());
        args.targets.remove(0);
        return run_list(args, &catalog);
    }
    match args.into_config(catalog) {
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
            clap_complete::generate(shell, &mut Cli::command(), "kvpush", &mut std::io::stdout());
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
            print!("{}", report::list(&plan, catalog));
            ExitCode::SUCCESS
        }
        Err(e) => fatal(&e),
    }
}

/// Live bars only for a person at a terminal: stderr is a TTY, NO_COLOR is
/// unset, the terminal is not dumb, and no request log is asked for.
fn wants_progress_bars(config: &Config, github: bool) -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
        && config.verbose == 0
        && !github
}

fn run_push(config: Config) -> ExitCode {
    let started = Instant::now();
    let input = PlanInput {
        workspace: &config.workspace,
        catalog: &config.catalog,
        selections: &config.selections,
        registry: Some(&config.registry),
        image_prefixes: &config.image_prefixes,
        tags: &config.tags,
        source: config.source,
    };
    let plan = match push::plan(&input) {
        Ok(plan) => plan,
        Err(e) => return fatal(&e),
    };
    if config.dry_run {
        init_logging(config.verbose, config.quiet, LogTarget::Stderr);
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
        ca_certs: config.ca_certs.clone(),
        compression_level: config.compression_level,
        credential: config.credential.clone(),
        cache_dir: config.cache_dir.clone(),
        retry: RetryPolicy {
            attempts: config.retries,
            ..RetryPolicy::default()
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    let refs_on_stdout = config.output == OutputFormat::Text;
    let github = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
    let results = match (config.quiet, wants_progress_bars(&config, github)) {
        (true, _) => {
            init_logging(config.verbose, true, LogTarget::Stderr);
            let observer = report::log::QuietObserver { refs_on_stdout };
            runtime.block_on(push::execute(&plan, options, &observer))
        }
        (false, true) => {
            let observer = report::terminal::TerminalProgress::new(&plan, refs_on_stdout);
            init_logging(config.verbose, false, LogTarget::Progress(observer.multi()));
            let results = runtime.block_on(push::execute(&plan, options, &observer));
            observer.finish();
            results
        }
        (false, false) => {
            init_logging(config.verbose, false, LogTarget::Stderr);
            let observer = report::log::LogObserver::new(&plan, refs_on_stdout, github);
            runtime.block_on(push::execute(&plan, options, &observer))
        }
    };
    let results = match results {
        Ok(results) => results,
        Err(e) => return fatal(&e),
    };
    let elapsed = started.elapsed();
    if !config.quiet {
        eprintln!("{}", report::summary(&results, elapsed));
    }
    if config.output == OutputFormat::Json {
        println!("{}", report::json::document(&results, elapsed));
    }
    if github {
        if let Err(e) = report::github::write(&results) {
            return fatal(&e);
        }
    }
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
        cli.push.into_config(Catalog::builtin("test"))
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
    fn list_is_the_first_positional_wherever_flags_stand() {
        let cli = Cli::try_parse_from(["kvpush", "--workspace", "/w", "list", "virt-api"]).unwrap();
        assert_eq!(cli.push.targets, vec!["list", "virt-api"]);
    }
}
