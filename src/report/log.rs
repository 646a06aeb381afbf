//! Plain, timestamped log lines for CI and pipes: one line when an image
//! starts, one when it ends (digest, size, blobs), no ANSI codes. In GitHub
//! Actions each target's lines are printed together inside a collapsible
//! `::group::` once the target is done, and failures also become `::error::`
//! annotations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{err, human_bytes, image_lines, print_references};
use crate::push::{ImageResult, Observer, PlannedImage, Status};
use crate::targets::Target;

/// `2026-11-28T10:00:00Z`.
fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The log line for a finished image.
pub fn done_line(result: &ImageResult) -> String {
    match (&result.status, &result.digest) {
        (Status::Failed(reason), _) => format!(
            "FAILED {} ({}): {reason}",
            result.name,
            result.target.push_name()
        ),
        (Status::Interrupted, _) => format!(
            "INTERRUPTED {} ({}): not pushed",
            result.name,
            result.target.push_name()
        ),
        (status, digest) => {
            let verb = if *status == Status::Unchanged {
                "up to date"
            } else {
                "pushed"
            };
            if !result.platforms.is_empty() {
                return format!(
                    "{verb} {} {}@{} (manifest list of {})",
                    result.name,
                    result.references.join(", "),
                    digest.as_deref().unwrap_or("?"),
                    result.platforms.join(", ")
                );
            }
            let b = &result.blobs;
            format!(
                "{verb} {} {}@{} ({}; {} uploaded in {} blobs{}, {} mounted, {} already present)",
                result.name,
                result.references.join(", "),
                digest.as_deref().unwrap_or("?"),
                human_bytes(result.size.unwrap_or(0)),
                human_bytes(b.bytes_uploaded),
                b.uploaded,
                super::copied(b),
                b.mounted,
                b.existing
            )
        }
    }
}

/// Escape a message for a GitHub Actions workflow command.
pub fn github_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

struct Group {
    remaining: usize,
    lines: Vec<String>,
}

/// Timestamped lines on stderr; `REF@DIGEST` lines on stdout unless JSON
/// is the output.
pub struct LogObserver {
    refs_on_stdout: bool,
    /// Some in GitHub Actions: lines held per target until it is done.
    groups: Option<Mutex<HashMap<String, Group>>>,
    targets: Vec<String>,
}

impl LogObserver {
    /// `items`: the target and name of what each id pushes.
    pub fn new<'a>(
        items: impl IntoIterator<Item = (Target, &'a str)>,
        refs_on_stdout: bool,
        github: bool,
    ) -> LogObserver {
        let targets: Vec<String> = items.into_iter().map(|(t, _)| t.push_name()).collect();
        let groups = github.then(|| {
            let mut map: HashMap<String, Group> = HashMap::new();
            for t in &targets {
                map.entry(t.clone())
                    .or_insert(Group {
                        remaining: 0,
                        lines: Vec::new(),
                    })
                    .remaining += 1;
            }
            Mutex::new(map)
        });
        LogObserver {
            refs_on_stdout,
            groups,
            targets,
        }
    }

    fn log(&self, id: usize, line: String, done: bool) {
        let line = format!("{} {line}", now());
        let Some(groups) = &self.groups else {
            err(&line);
            return;
        };
        let target = &self.targets[id];
        let mut groups = groups.lock().expect("log groups poisoned");
        let group = groups
            .get_mut(target)
            .expect("every image's target has a group");
        group.lines.push(line);
        if done {
            group.remaining -= 1;
            if group.remaining == 0 {
                let lines: Vec<String> = group.lines.drain(..).collect();
                err(&format!(
                    "::group::{target}\n{}\n::endgroup::",
                    lines.join("\n")
                ));
            }
        }
    }
}

impl Observer for LogObserver {
    fn image_started(&self, id: usize, image: &PlannedImage) {
        let to: Vec<&str> = image
            .destinations
            .iter()
            .map(|d| d.display.as_str())
            .collect();
        self.log(
            id,
            format!(
                "start {} ({}) -> {}",
                image.name,
                image.target.push_name(),
                to.join(", ")
            ),
            false,
        );
    }

    fn image_done(&self, id: usize, result: &ImageResult) {
        self.log(id, done_line(result), true);
        if let (Status::Failed(reason), true) = (&result.status, self.groups.is_some()) {
            err(&format!(
                "::error title=kvpush: {} failed::{}",
                github_escape(&result.name),
                github_escape(reason)
            ));
        }
        if self.refs_on_stdout {
            print_references(result);
        }
    }
}

/// `-q`: failures on stderr, `REF@DIGEST` lines on stdout, nothing else.
pub struct QuietObserver {
    pub refs_on_stdout: bool,
}

impl Observer for QuietObserver {
    fn image_done(&self, _id: usize, result: &ImageResult) {
        if let Some(line) = image_lines(result).1 {
            err(&line);
        }
        if self.refs_on_stdout {
            print_references(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::BlobCounts;
    use crate::targets::TARGETS;

    #[test]
    fn done_lines_and_escaping() {
        let r = ImageResult {
            target: TARGETS[2],
            name: "virt-api".into(),
            references: vec!["r/kv/virt-api:t".into()],
            digest: Some("sha256:ab".into()),
            size: Some(2048),
            status: Status::Pushed,
            blobs: BlobCounts {
                uploaded: 2,
                bytes_uploaded: 1024,
                mounted: 1,
                existing: 0,
                compressed: 1,
                ..BlobCounts::default()
            },
            prebuilt_layers: Vec::new(),
            platforms: Vec::new(),
            listed_as: None,
        };
        assert_eq!(
            done_line(&r),
            "pushed virt-api r/kv/virt-api:t@sha256:ab (2.0 KiB; 1.0 KiB uploaded in 2 blobs, 1 mounted, 0 already present)"
        );
        let list = ImageResult {
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            status: Status::Unchanged,
            ..r
        };
        assert_eq!(
            done_line(&list),
            "up to date virt-api r/kv/virt-api:t@sha256:ab (manifest list of linux/amd64, linux/arm64)"
        );
        assert_eq!(github_escape("a%b\nc"), "a%25b%0Ac");
    }
}
