//! What kvpush prints: the non-TTY log and the JSON report (snapshots,
//! normalised for ports, times and line order), live progress under a
//! pseudo-terminal, GitHub Actions groups, annotations, step summary and
//! outputs, `-q`, and shell completions.

mod common;

use std::process::Command;

use common::{run_command, Fixture, Scenario};
use kvpush_fixtures::{Registry, RegistryKind};

/// Replace what changes from run to run: the registry's address, times.
fn normalise(text: &str, registry: &Registry) -> String {
    let text = text.replace(registry.addr(), "REGISTRY");
    text.lines()
        .map(|line| {
            let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
            for w in &mut words {
                // 2026-11-28T10:00:00Z
                if w.len() == 20 && w.ends_with('Z') && w.as_bytes().get(10) == Some(&b'T') {
                    *w = "TIME".into();
                }
                // 1.2s
                if w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok() && w.contains('.') {
                    *w = "SECONDSs".into();
                }
            }
            words.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which image uploads a shared blob and which mounts it depends on timing:
/// keep only what does not (sizes, digests, totals).
fn without_blob_split(text: &str) -> String {
    text.lines()
        .map(|line| match (line.find("; "), line.rfind(')')) {
            (Some(a), Some(b)) if line.contains(" pushed ") && a < b => {
                format!("{}; BLOBS{}", &line[..a], &line[b..])
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Log lines of concurrent images come in any order: sort them.
fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn ci_log_and_json_report_snapshots() {
    let sc = Scenario::plain();
    let run = sc.push(
        &["virt-api", "virt-handler", "vm-killer"],
        &["--tag", "snap", "--output", "json"],
    );
    assert_eq!(run.code, 0);
    insta::assert_snapshot!(
        "ci_log",
        sorted_lines(&without_blob_split(&normalise(&run.stderr, &sc.registry)))
    );
    let mut doc: serde_json::Value =
        serde_json::from_str(&run.stdout).expect("stdout is one JSON document");
    assert!(doc["seconds"].as_f64().unwrap() > 0.0);
    doc["seconds"] = serde_json::json!("SECONDS");
    for image in doc["images"].as_array_mut().unwrap() {
        let b = &image["blobs"];
        let placed = ["uploaded", "mounted", "existing"]
            .iter()
            .map(|k| b[k].as_u64().unwrap())
            .sum::<u64>();
        image["blobs"] = serde_json::json!(format!("{placed} placed"));
    }
    insta::assert_snapshot!(
        "json_report",
        normalise(&serde_json::to_string_pretty(&doc).unwrap(), &sc.registry)
    );

    // The JSON agrees with what skopeo reads back.
    for image in doc["images"].as_array().unwrap() {
        let reference = image["references"][0]
            .as_str()
            .unwrap()
            .replace("REGISTRY", sc.registry.addr());
        let raw =
            kvpush_fixtures::skopeo_inspect_raw(&format!("docker://{reference}"), &[]).unwrap();
        assert_eq!(image["digest"], common::sha256(raw.as_bytes()));
    }
}

#[test]
fn a_terminal_gets_live_progress_and_a_final_summary() {
    let fx = Fixture::new(kvpush_fixtures::WorkspaceSpec {
        scale_bytes: 48 << 20,
        ..Default::default()
    });
    let registry = Registry::start(RegistryKind::Plain);
    let mut kvpush = fx.command();
    kvpush.args([
        "all",
        "--registry",
        &format!("{}/kubevirt", registry.addr()),
        "--tag",
        "tty",
        "--no-cache",
    ]);
    let line = format!(
        "{} {}",
        kvpush.get_program().to_string_lossy(),
        kvpush
            .get_args()
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // `script` runs the command on a pseudo-terminal and records the screen.
    let log = fx.dir.path().join("typescript");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line]).arg(&log);
    for (k, v) in kvpush.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("GITHUB_ACTIONS");
    let run = run_command(cmd);
    assert_eq!(run.code, 0);
    let screen = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(
        screen.contains("\x1b["),
        "progress is drawn with terminal escapes"
    );
    assert!(screen.contains("images ETA"), "the overall bar was drawn");
    assert!(
        screen.contains("✓ virt-launcher"),
        "finished images collapse into a line"
    );
    assert!(
        screen.contains("kvpush: 21 images: 21 pushed"),
        "the summary ends the output"
    );
    let last = screen.rfind("✓").unwrap();
    assert!(
        screen[last..].contains("21 pushed"),
        "the summary comes after the last image line"
    );
}

#[test]
fn github_actions_gets_groups_annotations_summary_and_outputs() {
    let fx = Fixture::small();
    std::fs::remove_file(&fx.image("virt-api").tarball).unwrap();
    let registry = Registry::start(RegistryKind::Plain);
    let summary = fx.dir.path().join("step-summary.md");
    let output = fx.dir.path().join("github-output");
    let mut cmd = fx.command();
    cmd.args([
        "virt-api",
        "virt-handler",
        "other-images",
        "--registry",
        &format!("{}/kubevirt", registry.addr()),
        "--tag",
        "gh",
    ])
    .env("GITHUB_ACTIONS", "true")
    .env("GITHUB_STEP_SUMMARY", &summary)
    .env("GITHUB_OUTPUT", &output);
    let run = run_command(cmd);
    assert_eq!(run.code, 1, "virt-api is missing");
    for group in ["push-virt-handler", "push-other-images", "push-virt-api"] {
        let open = run
            .stderr
            .find(&format!("::group::{group}\n"))
            .unwrap_or_else(|| panic!("group {group}"));
        let close = open + run.stderr[open..].find("::endgroup::").unwrap();
        assert!(
            !run.stderr[open + 9..close].contains("::group::"),
            "groups do not nest or interleave"
        );
    }
    assert!(
        run.stderr
            .contains("::error title=kvpush: virt-api failed::"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("\x1b["), "no ANSI codes in CI logs");

    let table = std::fs::read_to_string(&summary).unwrap();
    assert!(table.contains("| image | reference | digest | size | status |"));
    assert!(table.contains(&format!(
        "| virt-handler | {}/kubevirt/virt-handler:gh | `sha256:",
        registry.addr()
    )));
    assert!(table.contains("| virt-api |") && table.contains("failed:"));
    let out = std::fs::read_to_string(&output).unwrap();
    let json = out.strip_prefix("digests=").expect("digests output").trim();
    let digests: std::collections::BTreeMap<String, String> = serde_json::from_str(json).unwrap();
    assert_eq!(digests.len(), 16, "virt-handler and the 15 bundle images");
    let handler = format!("{}/kubevirt/virt-handler:gh", registry.addr());
    assert_eq!(
        Some(digests[&handler].clone()),
        registry.manifest_digest("kubevirt/virt-handler", "gh")
    );
}

#[test]
fn quiet_prints_only_results_and_errors() {
    let fx = Fixture::small();
    let registry = Registry::start(RegistryKind::Plain);
    let run = fx.kvpush(&[
        "virt-api",
        "-q",
        "--registry",
        &format!("{}/kv", registry.addr()),
    ]);
    assert_eq!(run.code, 0);
    assert_eq!(run.stderr, "");
    assert_eq!(run.pushed().len(), 1);
    std::fs::remove_file(&fx.image("virt-handler").tarball).unwrap();
    let run = fx.kvpush(&[
        "virt-handler",
        "-q",
        "--registry",
        &format!("{}/kv", registry.addr()),
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with("kvpush: error: virt-handler (push-virt-handler): "),
        "{}",
        run.stderr
    );
}

#[test]
fn completions_help_and_version() {
    let fx = Fixture::small();
    for (shell, marker) in [
        ("bash", "_kvpush()"),
        ("zsh", "#compdef kvpush"),
        ("fish", "complete -c kvpush"),
    ] {
        let run = fx.kvpush(&["completions", shell]);
        assert_eq!(run.code, 0);
        assert!(run.stdout.contains(marker), "{shell}");
        assert!(
            run.stdout.contains("image-prefix"),
            "{shell} completes flags"
        );
    }
    let run = fx.kvpush(&["--help"]);
    assert!(run
        .stdout
        .contains("kvpush all --registry quay.io/kubevirt --tag v1.2.3"));
    let run = fx.kvpush(&["--version"]);
    // `kvpush 0.1.0 (c19fe38)`: the version and the commit built from.
    let version = format!("kvpush {} (", env!("CARGO_PKG_VERSION"));
    assert!(
        run.stdout.trim().starts_with(&version) && run.stdout.trim().ends_with(')'),
        "{}",
        run.stdout
    );
}
