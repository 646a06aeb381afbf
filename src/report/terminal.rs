//! Live progress on a terminal (indicatif): one line per image in flight
//! with its state, bytes placed and rate, an overall bar with ETA, and each
//! finished image collapsing into one summary line above the bars.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use std::io::IsTerminal;

use super::{human_bytes, print_references};
use crate::push::{ImageResult, Observer, Placement, Plan, PlannedImage, Stage, Status};

/// One line per finished image, short enough for a terminal.
fn short_line(result: &ImageResult) -> String {
    match (&result.status, &result.digest) {
        (Status::Failed(reason), _) => format!(
            "✗ {} ({}): {reason}",
            result.name,
            result.target.push_name()
        ),
        (Status::Interrupted, _) => format!(
            "- {} ({}): interrupted, not pushed",
            result.name,
            result.target.push_name()
        ),
        (status, digest) => {
            let digest = digest.as_deref().unwrap_or("?");
            let short = &digest[..digest.len().min(15)];
            let b = &result.blobs;
            let what = if *status == Status::Unchanged {
                "up to date"
            } else {
                "pushed"
            };
            format!(
                "✓ {:<32} {short}… {:>10}  {what}: {} up, {} mounted, {} present",
                result.name,
                human_bytes(result.size.unwrap_or(0)),
                human_bytes(b.bytes_uploaded),
                b.mounted,
                b.existing
            )
        }
    }
}

pub struct TerminalProgress {
    multi: MultiProgress,
    overall: ProgressBar,
    bars: Mutex<Vec<Option<ProgressBar>>>,
    names: Vec<String>,
    refs_on_stdout: bool,
}

fn image_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:<32!} {msg:<10} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}")
        .expect("valid template")
}

impl TerminalProgress {
    pub fn new(plan: &Plan, refs_on_stdout: bool) -> TerminalProgress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        overall.set_prefix("kvpush");
        overall.set_message(format!("0/{} images", plan.images.len()));
        overall.enable_steady_tick(Duration::from_millis(200));
        TerminalProgress {
            multi,
            overall,
            bars: Mutex::new(vec![None; plan.images.len()]),
            names: plan.images.iter().map(|i| i.name.clone()).collect(),
            refs_on_stdout,
        }
    }

    fn bar(&self, id: usize) -> Option<ProgressBar> {
        self.bars.lock().expect("bars poisoned")[id].clone()
    }

    /// The bars' owner, for writing log lines above them.
    pub fn multi(&self) -> MultiProgress {
        self.multi.clone()
    }

    /// Remove the bars, leaving the lines printed above them.
    pub fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Observer for TerminalProgress {
    fn image_started(&self, id: usize, _image: &PlannedImage) {
        let bar = self.multi.insert_before(&self.overall, ProgressBar::new(0));
        bar.set_style(image_style());
        bar.set_prefix(self.names[id].clone());
        bar.set_message("reading");
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bars.lock().expect("bars poisoned")[id] = Some(bar);
    }

    fn stage(&self, id: usize, stage: Stage) {
        let Some(bar) = self.bar(id) else { return };
        match stage {
            Stage::Preparing => bar.set_message("compressing"),
            Stage::Uploading { total } => {
                bar.set_length(total);
                bar.set_message("uploading");
                self.overall.inc_length(total);
            }
            Stage::Tagging => bar.set_message("tagging"),
        }
    }

    fn blob_placed(&self, id: usize, placement: Placement, bytes: u64) {
        if let Some(bar) = self.bar(id) {
            bar.inc(bytes);
            match placement {
                Placement::Mounted => bar.set_message("mounted"),
                Placement::Existed => bar.set_message("exists"),
                Placement::Copied(_) => bar.set_message("copied from origin"),
                Placement::Uploaded(..) => {}
            }
        }
        self.overall.inc(bytes);
    }

    fn image_done(&self, id: usize, result: &ImageResult) {
        if let Some(bar) = self.bars.lock().expect("bars poisoned")[id].take() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        let _ = self.multi.println(short_line(result));
        // On a shared terminal the line above already names the digest;
        // piped stdout still gets the machine-readable REF@DIGEST lines.
        if self.refs_on_stdout && !std::io::stdout().is_terminal() {
            self.multi.suspend(|| print_references(result));
        }
        let done = self
            .bars
            .lock()
            .expect("bars poisoned")
            .iter()
            .filter(|b| b.is_none())
            .count();
        self.overall
            .set_message(format!("{done}/{} images", self.names.len()));
    }
}
