//! Running a command once the configuration is valid: the runtime and
//! signal handling, pushing images, manifest lists or every `--arch-bin`
//! tree, and the final report, digest files and exit code. It consumes a
//! [`Config`] and must not look at flags; `logging` sets up where log
//! lines go.

mod logging;

pub(crate) use logging::{fatal, init_logging, usage_error, LogTarget};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::{Config, OutputFormat};
use crate::interrupt::{Interrupt, Stop};
use crate::push::manifest_list;
use crate::push::{self, ImageResult, Observer, Plan, PlanInput};
use crate::report;

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

fn push_options(config: &Config) -> push::Options {
    push::Options {
        jobs: config.jobs,
        insecure: config.insecure,
        ca_certs: config.ca_certs.clone(),
        compression_level: config.compression_level,
        credential: config.credential.clone(),
        cache_dir: config.cache_dir.clone(),
        retry: config.retry.clone(),
        chunk_size: config.chunk_size,
        format: config.format,
    }
}

fn plan_input<'a>(config: &'a Config, tags: &'a [String]) -> PlanInput<'a> {
    PlanInput {
        workspace: &config.workspace,
        catalog: &config.catalog,
        selections: &config.selections,
        registry: Some(&config.registry),
        image_prefixes: &config.image_prefixes,
        tags,
        alt_prefixes: &config.alt_prefixes,
        source: config.source,
    }
}

fn in_github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// Run `work` on a fresh async runtime with a SIGINT/SIGTERM listener;
/// returns its result and the signal received, if any. The runtime is shut
/// down without waiting for compressions still running after an
/// interruption.
fn on_runtime<T>(
    work: impl FnOnce(&tokio::runtime::Runtime, &Stop) -> Result<T, String>,
) -> Result<(T, Option<Interrupt>), String> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let stop = {
        let _inside = runtime.enter();
        Stop::listen().map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?
    };
    let result = work(&runtime, &stop);
    runtime.shutdown_background();
    Ok((result?, stop.received()))
}

/// How long the command took to make its plan (sources opened, no request
/// made yet), at debug level (`-v`, or the benches' `RUST_LOG`). Logged
/// once logging is set up, which waits for the progress bars.
fn log_planned(plan: &Plan, planned_in: Duration) {
    tracing::debug!(
        "planned {} images in {:.1} ms",
        plan.images.len(),
        planned_in.as_secs_f64() * 1e3
    );
}

/// Push the images of `plan`, shown as `-q`, live bars or log lines ask;
/// `planned_in`: the time the plan took, for [`log_planned`].
fn push_images(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    stop: &Stop,
    planned_in: Duration,
) -> Result<Vec<ImageResult>, String> {
    let options = push_options(config);
    let refs_on_stdout = config.output == OutputFormat::Text;
    let github = in_github_actions();
    match (config.quiet, wants_progress_bars(config, github)) {
        (true, _) => {
            init_logging(config.verbose, true, LogTarget::Stderr);
            log_planned(plan, planned_in);
            let observer = report::log::QuietObserver { refs_on_stdout };
            runtime.block_on(push::execute(plan, options, &observer, stop))
        }
        (false, true) => {
            let observer = report::terminal::TerminalProgress::new(plan, refs_on_stdout);
            init_logging(config.verbose, false, LogTarget::Progress(observer.multi()));
            log_planned(plan, planned_in);
            let results = runtime.block_on(push::execute(plan, options, &observer, stop));
            observer.finish();
            results
        }
        (false, false) => {
            init_logging(config.verbose, false, LogTarget::Stderr);
            log_planned(plan, planned_in);
            let items = plan.images.iter().map(|i| (i.target, i.name.as_str()));
            let observer = report::log::LogObserver::new(items, refs_on_stdout, github);
            runtime.block_on(push::execute(plan, options, &observer, stop))
        }
    }
}

/// Push manifest lists, shown as `-q` or log lines ask (a list is one
/// quick PUT: no progress bars).
fn push_lists(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    jobs: &[manifest_list::ListJob],
    stop: &Stop,
) -> Result<Vec<ImageResult>, String> {
    let options = push_options(config);
    let refs_on_stdout = config.output == OutputFormat::Text;
    init_logging(config.verbose, config.quiet, LogTarget::Stderr);
    let observer: Box<dyn Observer> = if config.quiet {
        Box::new(report::log::QuietObserver { refs_on_stdout })
    } else {
        let items = jobs.iter().map(|j| (j.target, j.name.as_str()));
        Box::new(report::log::LogObserver::new(
            items,
            refs_on_stdout,
            in_github_actions(),
        ))
    };
    runtime.block_on(manifest_list::push_lists(
        jobs,
        &options,
        config.allow_missing,
        observer.as_ref(),
        stop,
    ))
}

/// The end of a run: summaries (unless `-q`), what an interruption left
/// undone, the JSON document, GitHub Actions files, digest files
/// (`digest_dirs`: where each set of results goes), and the exit status:
/// 128 + the signal's number after an interruption.
fn finish(
    config: &Config,
    started: Instant,
    images: &[ImageResult],
    lists: &[ImageResult],
    digest_dirs: &[(PathBuf, &[ImageResult])],
    interrupted: Option<Interrupt>,
) -> ExitCode {
    let elapsed = started.elapsed();
    if !config.quiet {
        if !images.is_empty() || lists.is_empty() {
            report::err(&report::summary(images, elapsed));
        }
        if !lists.is_empty() {
            report::err(&report::list_summary(lists, elapsed));
        }
    }
    let all: Vec<ImageResult> = images.iter().chain(lists).cloned().collect();
    if let Some(signal) = interrupted {
        report::err(&report::interrupted(&all, signal.name));
    }
    if config.output == OutputFormat::Json {
        let signal = interrupted.map(|i| i.name);
        report::out(&report::json::document(images, lists, elapsed, signal));
    }
    if in_github_actions() {
        if let Err(e) = report::github::write(&all) {
            return fatal(&e);
        }
    }
    for (dir, results) in digest_dirs {
        if let Err(e) = report::write_digest_files(dir, results) {
            return fatal(&e);
        }
    }
    // DIGESTS_DIR holds one architecture's files: not for --arch-bin runs.
    if let Some(to) = config
        .kubevirt_digests
        .as_ref()
        .filter(|_| config.arch_bins.is_empty())
    {
        if let Err(e) = report::kubevirt_digests::write(to, images) {
            return fatal(&e);
        }
    }
    if let Some(signal) = interrupted {
        ExitCode::from(signal.exit_code)
    } else if all.iter().all(|r| r.status.landed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(crate) fn run_push(config: Config) -> ExitCode {
    let started = Instant::now();
    let plan = match push::plan(&plan_input(&config, &config.tags)) {
        Ok(plan) => plan,
        Err(e) => return fatal(&e),
    };
    if config.dry_run {
        init_logging(config.verbose, config.quiet, LogTarget::Stderr);
        report::out(&report::dry_run(&plan));
        return if plan.images.iter().all(|i| i.image.is_ok()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let planned_in = started.elapsed();
    let (results, signal) =
        match on_runtime(|runtime, stop| push_images(&config, runtime, &plan, stop, planned_in)) {
            Ok(done) => done,
            Err(e) => return fatal(&e),
        };
    let digest_dirs: Vec<(PathBuf, &[ImageResult])> = config
        .digests_dir
        .iter()
        .map(|d| (d.clone(), &results[..]))
        .collect();
    finish(&config, started, &results, &[], &digest_dirs, signal)
}

/// `kvpush manifest`: a list per image, prefix and tag, from the images of
/// each architecture already in the registry.
pub(crate) fn run_manifest(config: Config) -> ExitCode {
    let started = Instant::now();
    init_logging(config.verbose, config.quiet, LogTarget::Stderr);
    let names = match push::plan::image_names(&plan_input(&config, &config.tags)) {
        Ok(names) => names,
        Err(e) => return fatal(&e),
    };
    let jobs = match manifest_list::jobs_by_tag(
        &names,
        &config.registry,
        &config.image_prefixes,
        &config.tags,
        &config.arches,
        &config.child_tag,
    ) {
        Ok(jobs) => jobs,
        Err(e) => return usage_error(&e),
    };
    let (lists, signal) =
        match on_runtime(|runtime, stop| push_lists(&config, runtime, &jobs, stop)) {
            Ok(done) => done,
            Err(e) => return fatal(&e),
        };
    let digest_dirs: Vec<(PathBuf, &[ImageResult])> = config
        .digests_dir
        .iter()
        .map(|d| (d.clone(), &lists[..]))
        .collect();
    finish(&config, started, &[], &lists, &digest_dirs, signal)
}

/// `--arch-bin`: every architecture's tree in one plan (a layer common to
/// several architectures is prepared and uploaded once) pushed as
/// `TAG-ARCH`, then a manifest list per image of the digests just pushed
/// (none after an interruption).
pub(crate) fn run_arch_bins(config: Config) -> ExitCode {
    let started = Instant::now();
    let mut images = Vec::new();
    let mut arch_of = Vec::new();
    for (arch, bin) in &config.arch_bins {
        let tags: Vec<String> = config
            .tags
            .iter()
            .map(|t| manifest_list::child_tag(&config.child_tag, t, arch))
            .collect();
        match push::plan::plan_in(bin.clone(), &plan_input(&config, &tags)) {
            Ok(plan) => {
                arch_of.extend(std::iter::repeat_n(arch.clone(), plan.images.len()));
                images.extend(plan.images);
            }
            Err(e) => return fatal(&format!("{arch}: {e}")),
        }
    }
    let plan = Plan {
        bazel_bin: config.arch_bins[0].1.clone(),
        images,
    };
    if config.dry_run {
        init_logging(config.verbose, config.quiet, LogTarget::Stderr);
        let mut text = report::dry_run(&plan);
        let arches: Vec<&str> = config.arch_bins.iter().map(|(a, _)| a.as_str()).collect();
        for tag in &config.tags {
            text.push_str(&format!(
                "then would push a manifest list of {} as {}/NAME:{tag} for each image\n",
                arches.join(", "),
                config.registry.trim_end_matches('/')
            ));
        }
        report::out(&text);
        return if plan.images.iter().all(|i| i.image.is_ok()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let planned_in = started.elapsed();
    let pushed = on_runtime(|runtime, stop| {
        let results = push_images(&config, runtime, &plan, stop, planned_in)?;
        let per_arch: Vec<(String, Vec<ImageResult>)> = config
            .arch_bins
            .iter()
            .map(|(arch, _)| {
                let mine = results
                    .iter()
                    .zip(&arch_of)
                    .filter(|(_, a)| *a == arch)
                    .map(|(r, _)| r.clone())
                    .collect();
                (arch.clone(), mine)
            })
            .collect();
        if stop.received().is_some() {
            return Ok((results, per_arch, Vec::new()));
        }
        let jobs = manifest_list::jobs_from_results(
            &per_arch,
            &config.registry,
            &config.image_prefixes,
            &config.tags,
        )?;
        let lists = push_lists(&config, runtime, &jobs, stop)?;
        Ok((results, per_arch, lists))
    });
    let ((results, per_arch, lists), signal) = match pushed {
        Ok(pushed) => pushed,
        Err(e) => return fatal(&e),
    };
    // Each architecture's image digests under DIR/ARCH, the lists' in DIR.
    let mut digest_dirs: Vec<(PathBuf, &[ImageResult])> = Vec::new();
    if let Some(dir) = &config.digests_dir {
        for (arch, results) in &per_arch {
            digest_dirs.push((dir.join(arch), results));
        }
        digest_dirs.push((dir.clone(), &lists));
    }
    finish(&config, started, &results, &lists, &digest_dirs, signal)
}
