//! Text generated from the clap definitions in `args`, so that it cannot
//! drift from them: shell completion scripts (`kvpush completions SHELL`)
//! and the manual page (`kvpush man`, roff, what `make man` writes to
//! docs/kvpush.1). It owns only the rendering; it must not define flags
//! nor read a workspace, configuration or registry.

use std::process::ExitCode;

use clap::CommandFactory;

use super::args::Cli;
use crate::commands::{fatal, usage_error};
use crate::report;

/// `kvpush completions bash|zsh|fish`: a completion script on stdout.
pub(super) fn run_completions(words: &[String]) -> ExitCode {
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

/// `kvpush man`: the manual page kvpush(1) on stdout, e.g.
/// `kvpush man > kvpush.1; man ./kvpush.1`.
pub(super) fn run_man(words: &[String]) -> ExitCode {
    if !words.is_empty() {
        return usage_error("usage: kvpush man (the page goes to standard output)");
    }
    match man_page() {
        Ok(page) => {
            report::out(&page);
            ExitCode::SUCCESS
        }
        Err(e) => fatal(&format!("cannot render the manual page: {e}")),
    }
}

/// kvpush(1) in roff: name, synopsis, every flag with its help, the
/// examples of `--help` (as an EXAMPLES section, lines kept as they are),
/// and the version with the commit it was built from.
fn man_page() -> std::io::Result<String> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if let Some(examples) = cmd.get_after_help() {
        let mut roff = roff::Roff::new();
        roff.control("SH", ["EXAMPLES"]).control("nf", []);
        for line in examples.to_string().lines().filter(|l| *l != "Examples:") {
            roff.text([roff::roman(line.trim_start())]);
        }
        roff.control("fi", []).to_writer(&mut page)?;
    }
    man.render_version_section(&mut page)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_names_the_flags_examples_and_version() {
        let page = man_page().unwrap();
        assert!(
            page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH kvpush 1"),
            "{page}"
        );
        for flag in [
            "registry",
            "tag",
            "image\\-prefix",
            "arch\\-bin",
            "password\\-stdin",
        ] {
            assert!(
                page.contains(&format!("\\-\\-{flag}")),
                "--{flag} missing:\n{page}"
            );
        }
        assert!(
            page.contains("kvpush all \\-\\-registry quay.io/kubevirt \\-\\-tag v1.2.3"),
            "{page}"
        );
        assert!(page.contains(super::super::args::VERSION), "{page}");
    }
}
