//! `kvpush bazel-targets [TARGET...]`: the arguments of the one `bazel
//! build` that makes what kvpush reads for these targets (default
//! $PUSH_TARGETS, else `all`), one per line, flags first; each target's
//! rule decides ([`crate::targets::Target::bazel_build_args`]), so a
//! BUILD.bazel mixing eras gets each target's own. For scripts such as
//! contrib/kubevirt/bazel-push-images.sh. Reads BUILD.bazel only: no
//! bazel-bin, no registry.

use std::process::ExitCode;

use crate::commands::usage_error;
use crate::report;
use crate::targets::{self, Catalog, Selection};

pub(super) fn run(names: Vec<String>, catalog: &Catalog) -> ExitCode {
    let mut names = names;
    if names.is_empty() {
        names = super::kubevirt_env::push_targets();
    }
    if names.is_empty() {
        names.push("all".to_string());
    }
    let selections = match targets::resolve(catalog, &names) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    let mut args: Vec<String> = Vec::new();
    for sel in &selections {
        let target = match sel {
            Selection::Target(t) => Some(*t),
            Selection::BundleImage(name) => catalog.bundle_for(name),
        };
        for arg in target.map(|t| t.bazel_build_args()).unwrap_or_default() {
            if !args.contains(&arg) {
                args.push(arg);
            }
        }
    }
    // Flags first, labels in push order.
    args.sort_by_key(|a| !a.starts_with("--"));
    let mut out = args.join("\n");
    out.push('\n');
    report::out(&out);
    ExitCode::SUCCESS
}
