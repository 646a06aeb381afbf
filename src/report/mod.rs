//! What the user sees: one line per pushed reference on stdout, errors and
//! the summary on stderr, `kvpush list` and `--dry-run` tables, and the
//! digest files KubeVirt's scripts read. Decides nothing. Everything is
//! written through [`out`] and [`err`], which survive a closed pipe.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::push::{BlobCounts, ImageResult, Plan, PlannedImage, SourceKind, Status};
use crate::source::oci_layout::LayoutRoot;
use crate::source::Artifact;
use crate::targets::Catalog;

pub mod github;
pub mod json;
pub mod kubevirt_digests;
pub mod log;
pub mod terminal;

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Write `text` to stdout. A closed pipe (`kvpush all | head -1`) is not
/// worth dying for: the push goes on, and what could not be written is lost.
pub fn out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Write `line` and a newline to stderr, ignoring a closed pipe as [`out`] does.
pub fn err(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Print the `REF@DIGEST` lines of a finished image on stdout, at once.
pub fn print_references(result: &ImageResult) {
    let text: String = image_lines(result)
        .0
        .iter()
        .map(|line| format!("{line}\n"))
        .collect();
    out(&text);
}

/// Lines for a finished image: `REF@DIGEST` per tag (stdout) once it
/// landed, or an error (stderr).
pub fn image_lines(result: &ImageResult) -> (Vec<String>, Option<String>) {
    match (&result.status, &result.digest) {
        (Status::Failed(reason), _) => (
            Vec::new(),
            Some(format!(
                "kvpush: error: {} ({}): {reason}",
                result.name,
                result.target.push_name()
            )),
        ),
        (status, Some(digest)) if status.landed() => (
            result
                .references
                .iter()
                .map(|r| format!("{r}@{digest}"))
                .collect(),
            None,
        ),
        _ => (Vec::new(), None),
    }
}

/// `N WHAT: P pushed, U skipped (already up to date), F failed`, and
/// `, I not pushed (interrupted)` after an interruption.
fn outcomes(what: &str, results: &[ImageResult]) -> String {
    let count = |f: fn(&Status) -> bool| results.iter().filter(|r| f(&r.status)).count();
    let mut out = format!(
        "{} {what}: {} pushed, {} skipped (already up to date), {} failed",
        results.len(),
        count(|s| *s == Status::Pushed),
        count(|s| *s == Status::Unchanged),
        count(|s| matches!(s, Status::Failed(_)))
    );
    let interrupted = count(|s| *s == Status::Interrupted);
    if interrupted > 0 {
        let _ = write!(out, ", {interrupted} not pushed (interrupted)");
    }
    out
}

/// When any failed: `\nkvpush: failed: A, B`, then each with its reason,
/// so that no failure is lost among the lines of the others.
fn failures(out: &mut String, results: &[ImageResult]) {
    let failed: Vec<(&ImageResult, &str)> = results
        .iter()
        .filter_map(|r| match &r.status {
            Status::Failed(reason) => Some((r, reason.as_str())),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        return;
    }
    let names: Vec<&str> = failed.iter().map(|(r, _)| r.name.as_str()).collect();
    let _ = write!(out, "\nkvpush: failed: {}", names.join(", "));
    for (r, reason) in failed {
        let _ = write!(
            out,
            "\nkvpush:   {} ({}): {reason}",
            r.name,
            r.target.push_name()
        );
    }
}

/// After a `signal`: what was not pushed, and how to finish.
pub fn interrupted(results: &[ImageResult], signal: &str) -> String {
    let names: Vec<&str> = results
        .iter()
        .filter(|r| r.status == Status::Interrupted)
        .map(|r| r.name.as_str())
        .collect();
    if names.is_empty() {
        return format!("kvpush: interrupted by {signal} after every image was done");
    }
    format!(
        "kvpush: interrupted by {signal}; not pushed: {}. No tag points at an incomplete image. \
         Run the same command again to finish: blobs already uploaded are not sent again.",
        names.join(", ")
    )
}

/// The closing line of `kvpush manifest` (and of `--arch-bin` runs, after
/// the images' summary): lists by outcome.
pub fn list_summary(results: &[ImageResult], elapsed: Duration) -> String {
    let mut out = format!(
        "kvpush: {}; {:.1}s",
        outcomes("manifest lists", results),
        elapsed.as_secs_f64()
    );
    failures(&mut out, results);
    out
}

/// The closing summary: images by outcome, blobs and bytes, time, and
/// each failure with its reason.
pub fn summary(results: &[ImageResult], elapsed: Duration) -> String {
    let mut blobs = BlobCounts::default();
    for r in results {
        blobs.merge(&r.blobs);
    }
    let distinct = |f: fn(&ImageResult) -> &Vec<String>| {
        results
            .iter()
            .flat_map(|r| f(r).iter())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let mut out = format!(
        "kvpush: {}; \
         uploaded {} in {} blobs{}, {} mounted, {} already present; \
         layers: {} compressed by kvpush, {} pushed as Bazel compressed them; {:.1}s",
        outcomes("images", results),
        human_bytes(blobs.bytes_uploaded),
        blobs.uploaded,
        copied(&blobs),
        blobs.mounted,
        blobs.existing,
        blobs.compressed,
        distinct(|r| &r.prebuilt_layers),
        elapsed.as_secs_f64()
    );
    failures(&mut out, results);
    out
}

/// ` (N copied from origin registries, SIZE)` when some uploads were
/// streamed from an origin registry; else nothing.
pub(crate) fn copied(b: &BlobCounts) -> String {
    if b.copied == 0 {
        return String::new();
    }
    format!(
        " ({} copied from origin registries, {})",
        b.copied,
        human_bytes(b.bytes_copied)
    )
}

/// Write `push-<target>.digest` (`sha256:<hex>`, no newline) for every
/// single-image target that landed, as hack/build-manifests.sh reads them.
/// When a target has several results (manifest lists, one per tag), the
/// first one's digest is written.
pub fn write_digest_files(dir: &Path, results: &[ImageResult]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create --digests-dir {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for r in results {
        let (Some(file), Some(digest)) = (r.target.digest_file_name(), &r.digest) else {
            continue;
        };
        if !r.status.landed() {
            continue;
        }
        let path = dir.join(file);
        if written.contains(&path) {
            continue;
        }
        // Write then rename, so a reader never sees half a digest.
        let tmp = dir.join(format!(".{}.tmp", r.target.push_name()));
        std::fs::write(&tmp, digest.as_bytes())
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A path as `bazel-bin/...`; a directory (an OCI layout) ends with `/`.
fn relative(path: &Path, plan: &Plan) -> String {
    let slash = if path.is_dir() { "/" } else { "" };
    match path.strip_prefix(&plan.bazel_bin) {
        Ok(rel) => format!("bazel-bin/{}{slash}", rel.display()),
        Err(_) => format!("{}{slash}", path.display()),
    }
}

/// The file a target is read from: its push script, its tarball, or its
/// OCI layout (a bundle without tarball has one per image).
fn target_file(image: &PlannedImage, plan: &Plan) -> String {
    let path = match image.source {
        SourceKind::Parts => image.target.script_path(&plan.bazel_bin),
        SourceKind::Tarball => image.target.tarball_path(&plan.bazel_bin),
        SourceKind::Layout if image.target.bundle => {
            let tarball = image.target.tarball_path(&plan.bazel_bin);
            return format!("no {}: one OCI layout per image", relative(&tarball, plan));
        }
        SourceKind::Layout => image.source_file.clone(),
        SourceKind::RulesImg => {
            let rule = image.target.kind.rule();
            return format!("{rule}: {}", relative(&image.source_file, plan));
        }
    };
    relative(&path, plan)
}

/// An OCI layout in a few words: where it is, its kind and platforms, size.
fn describe_layout(image: &PlannedImage, root: &LayoutRoot, plan: &Plan) -> String {
    let what = match root {
        LayoutRoot::Image(i) => format!(
            "{} layers{}",
            i.layers.len(),
            i.platform
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        ),
        LayoutRoot::Index(ix) => {
            let platforms: Vec<String> = ix
                .images
                .iter()
                .map(|i| i.platform.as_ref().map_or("?".into(), |p| p.to_string()))
                .collect();
            format!("index of {}", platforms.join(", "))
        }
    };
    format!(
        "{} {}: {what}, {}",
        image.source.as_str(),
        relative(&image.source_file, plan),
        human_bytes(root.stored_size())
    )
}

/// `parts: 3 layers, 2.0 MiB` and, for parts, the digest Bazel computed;
/// for an OCI layout, what [`describe_layout`] says.
fn describe_image(image: &PlannedImage, plan: &Plan) -> String {
    let source = image.source.as_str();
    let mut out = match &image.image {
        Ok(Artifact::Layout(root)) => describe_layout(image, root, plan),
        Ok(Artifact::Image(img)) => {
            let mut s = format!(
                "{source}: {} layers, {}",
                img.layers.len(),
                human_bytes(img.stored_size())
            );
            if img.all_prebuilt() {
                s.push_str(" as Bazel gzipped them");
            }
            if let Some(e) = &img.expected_digest {
                let _ = write!(s, ", digest {} (rules_docker's)", e.digest);
            }
            s
        }
        Err(e) => format!("MISSING: {e}"),
    };
    if let (Some(note), Ok(_)) = (&image.note, &image.image) {
        let _ = write!(out, "; {note}");
    }
    out
}

/// `kvpush list`: where the targets come from, then each target, its
/// images, the source each is read from (or why it is unusable, with the
/// `bazel build` command that makes it) and its destinations.
pub fn list(plan: &Plan, catalog: &Catalog) -> String {
    let mut out = format!("{}\n", catalog.describe());
    let mut current = None;
    for image in &plan.images {
        if current != Some(image.target) {
            current = Some(image.target);
            // The rule names the build era of the target (a branch
            // mid-migration mixes them).
            let _ = writeln!(
                out,
                "{}  ({})  [{}]",
                image.target.push_name(),
                target_file(image, plan),
                image.target.kind.rule()
            );
        }
        let dest = if image.destinations.is_empty() {
            "(pass --registry to see destinations)".to_string()
        } else {
            image
                .destinations
                .iter()
                .map(|d| d.display.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "  {:<36} {dest}\n  {:<36} {}",
            image.name,
            "",
            describe_image(image, plan)
        );
    }
    out
}

/// `--dry-run`: what would be pushed, without touching the network.
pub fn dry_run(plan: &Plan) -> String {
    let mut out = String::new();
    for image in &plan.images {
        match &image.image {
            Ok(Artifact::Image(img)) => {
                for d in &image.destinations {
                    let _ = writeln!(
                        out,
                        "would push {} ({} layers, {} as stored, from {} {})",
                        d.display,
                        img.layers.len(),
                        human_bytes(img.stored_size()),
                        image.source.as_str(),
                        relative(&image.source_file, plan)
                    );
                }
            }
            Ok(Artifact::Layout(root)) => {
                for d in &image.destinations {
                    let _ = writeln!(
                        out,
                        "would push {} ({}, byte for byte)",
                        d.display,
                        describe_layout(image, root, plan)
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "cannot push {} ({}): {e}",
                    image.name,
                    image.target.push_name()
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::TARGETS;

    fn result(status: Status, digest: Option<&str>, target: usize) -> ImageResult {
        ImageResult {
            target: TARGETS[target],
            name: TARGETS[target].name.to_string(),
            references: vec!["r/x:a".into(), "r/x:b".into()],
            digest: digest.map(str::to_string),
            size: Some(1234),
            status,
            blobs: BlobCounts {
                uploaded: 2,
                bytes_uploaded: 3 << 20,
                mounted: 1,
                existing: 0,
                compressed: 1,
                ..BlobCounts::default()
            },
            prebuilt_layers: vec!["sha256:c".into()],
            platforms: Vec::new(),
            listed_as: None,
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn lines_and_summary() {
        let ok = result(Status::Pushed, Some("sha256:aa"), 2);
        assert_eq!(
            image_lines(&ok).0,
            vec!["r/x:a@sha256:aa", "r/x:b@sha256:aa"]
        );
        let bad = result(Status::Failed("boom".into()), None, 3);
        assert_eq!(
            image_lines(&bad).1.unwrap(),
            "kvpush: error: virt-controller (push-virt-controller): boom"
        );
        let cut = result(Status::Interrupted, Some("sha256:bb"), 4);
        assert_eq!(image_lines(&cut), (Vec::new(), None), "not landed");
        let s = summary(&[ok.clone(), bad.clone()], Duration::from_millis(1500));
        assert!(
            s.contains("2 images: 1 pushed, 0 skipped (already up to date), 1 failed;"),
            "{s}"
        );
        assert!(
            s.contains("uploaded 6.0 MiB in 4 blobs, 2 mounted, 0 already present; layers: 2 compressed by kvpush, 1 pushed as Bazel compressed them"),
            "shared prebuilt layers count once: {s}"
        );
        assert!(s.contains("failed: virt-controller"), "{s}");
        assert!(
            s.contains("\nkvpush:   virt-controller (push-virt-controller): boom"),
            "the reason of each failure: {s}"
        );
        assert!(!s.contains("interrupted"), "{s}");

        let all = [ok, bad, cut];
        let s = summary(&all, Duration::from_secs(2));
        assert!(s.contains("1 failed, 1 not pushed (interrupted);"), "{s}");
        let s = interrupted(&all, "SIGTERM");
        assert!(
            s.contains("interrupted by SIGTERM; not pushed: virt-handler. No tag points at an incomplete image."),
            "{s}"
        );
        assert_eq!(
            interrupted(&all[..2], "SIGINT"),
            "kvpush: interrupted by SIGINT after every image was done"
        );
    }

    #[test]
    fn digest_files_only_for_landed_single_image_targets() {
        let dir = tempfile::tempdir().unwrap();
        let results = [
            result(Status::Pushed, Some("sha256:11"), 2),
            result(Status::Unchanged, Some("sha256:22"), 4),
            result(Status::Failed("x".into()), Some("sha256:33"), 3),
            result(Status::Pushed, Some("sha256:44"), 0),
        ];
        let written = write_digest_files(dir.path(), &results).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("push-virt-api.digest")).unwrap(),
            "sha256:11"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("push-virt-handler.digest")).unwrap(),
            "sha256:22"
        );
        assert!(!dir.path().join("push-virt-controller.digest").exists());
        assert!(!dir.path().join("push-other-images.digest").exists());
    }
}
