//! GitHub Actions outputs: a markdown table of images and digests appended
//! to `$GITHUB_STEP_SUMMARY`, and `digests` (a JSON object reference →
//! digest) appended to `$GITHUB_OUTPUT` for later steps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::human_bytes;
use super::json::status_word;
use crate::push::{ImageResult, Status};

/// The step summary table.
pub fn step_summary(results: &[ImageResult]) -> String {
    let mut out = String::from("### kvpush\n\n| image | reference | digest | size | status |\n| --- | --- | --- | --- | --- |\n");
    for r in results {
        let digest = r
            .digest
            .as_deref()
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        let status = match &r.status {
            Status::Failed(e) => format!("failed: {}", e.replace('|', "\\|").replace('\n', " ")),
            s => status_word(s).to_string(),
        };
        let size = r.size.map(human_bytes).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {digest} | {size} | {status} |",
            r.name,
            r.references.join("<br>")
        );
    }
    out
}

/// `digests={"REF":"sha256:...",...}` for `$GITHUB_OUTPUT`, landed images only.
pub fn output_line(results: &[ImageResult]) -> String {
    let mut digests = BTreeMap::new();
    for r in results.iter().filter(|r| r.status.landed()) {
        if let Some(d) = &r.digest {
            for reference in &r.references {
                digests.insert(reference.as_str(), d.as_str());
            }
        }
    }
    format!(
        "digests={}\n",
        serde_json::to_string(&digests).expect("digests serialise")
    )
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot append to {}: {e}", path.display()))
}

/// Write the step summary and the output, where GitHub asks for them.
pub fn write(results: &[ImageResult]) -> Result<(), String> {
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        append(Path::new(&path), &step_summary(results))?;
    }
    if let Some(path) = std::env::var_os("GITHUB_OUTPUT").filter(|p| !p.is_empty()) {
        append(Path::new(&path), &output_line(results))?;
    }
    Ok(())
}
