//! Where kvpush's own words go on stderr: the tracing subscriber (level
//! from -v/-q or RUST_LOG), written as plain lines or above the progress
//! bars, and the one-line `kvpush: error:` messages with their exit codes.
//! It owns log set-up only; it must not know about the configuration,
//! plans or results.

use std::process::ExitCode;

use crate::report;

/// Where log lines go: stderr, or above the progress bars.
#[derive(Clone)]
pub(crate) enum LogTarget {
    Stderr,
    Progress(indicatif::MultiProgress),
}

/// A log line written through indicatif so that it lands above the bars.
pub(crate) struct LineWriter {
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
            LogTarget::Stderr => report::err(text),
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

pub(crate) fn init_logging(verbose: u8, quiet: bool, target: LogTarget) {
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

pub(crate) fn usage_error(message: &str) -> ExitCode {
    report::err(&format!("kvpush: error: {message}"));
    ExitCode::from(2)
}

pub(crate) fn fatal(message: &str) -> ExitCode {
    report::err(&format!("kvpush: error: {message}"));
    ExitCode::FAILURE
}
