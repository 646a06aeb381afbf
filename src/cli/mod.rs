//! Command line: the words among the targets (`list`, `manifest`,
//! `bazel-targets`, `completions`, `man`) and dispatch. `args` defines the flags, `validate`
//! turns them into a [`crate::config::Config`], and [`crate::commands`]
//! runs it. Nothing is pushed until the whole configuration is known to be
//! valid. This module must not push or report results itself beyond
//! `list`; `generate` renders completions and the man page.

mod args;
mod bazel_targets;
mod generate;
mod kubevirt_env;
mod validate;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
use args::PushArgs;
use generate::{run_completions, run_man};
use validate::{validate_common, Mode};

use crate::commands::{
    fatal, init_logging, run_arch_bins, run_manifest, run_push, usage_error, LogTarget,
};
use crate::push::{self, PlanInput};
use crate::report;
use crate::targets::{self, Catalog};

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let mut args = Cli::parse().push;
    // `completions` and `man`, like `list` below, are words among the
    // targets, so that flags may stand anywhere.
    match args.targets.first().map(String::as_str) {
        Some("completions") => return run_completions(&args.targets[1..]),
        Some("man") => return run_man(&args.targets[1..]),
        _ => {}
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
        Some("bazel-targets") => {
            init_logging(args.verbose, args.quiet, LogTarget::Stderr);
            args.targets.remove(0);
            return bazel_targets::run(args.targets, &catalog);
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
        alt_prefixes: &[],
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
