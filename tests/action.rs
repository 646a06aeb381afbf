//! The GitHub Action's own logic: its shell steps (contrib/github-action/
//! install.sh, build.sh, push.sh) run here as a runner
//! would run them, with a simulated runner environment (GITHUB_OUTPUT,
//! GITHUB_STEP_SUMMARY, RUNNER_OS/ARCH/TEMP) and a fake release download
//! directory serving the built kvpush with its sha256 file, pushing to a
//! real test registry. Owns no kvpush behaviour: it uses tests/common as is.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{raw_manifest, verify_with_skopeo, Fixture};
use kvpush_fixtures::{Registry, RegistryKind};

/// The release the fake download directory serves.
const VERSION: &str = "v9.9.9";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/github-action")
        .join(name)
}

/// `RUNNER_ARCH` of a runner like this machine, and the release asset for it.
fn runner_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("ARM64", "kvpush-linux-aarch64"),
        _ => ("X64", "kvpush-linux-x86_64"),
    }
}

/// A simulated runner: its files and temp dir, and a release download
/// directory (`file://` base, as KVPUSH_DOWNLOAD_BASE takes it for tests).
struct Runner {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Runner {
    fn new() -> Runner {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["temp", "tool-cache", "releases", "home"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("output"), "").unwrap();
        std::fs::write(dir.path().join("summary"), "").unwrap();
        let home = dir.path().join("home");
        Runner { dir, home }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publish the built kvpush as release `version`'s asset for this
    /// machine, with its `.sha256` written as the release workflow does.
    fn publish(&self, version: &str) -> PathBuf {
        let (_, asset) = runner_arch();
        let dir = self.path("releases").join("download").join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_kvpush"), dir.join(asset)).unwrap();
        let sum = Command::new("sha256sum")
            .arg(asset)
            .current_dir(&dir)
            .output()
            .expect("sha256sum runs");
        assert!(sum.status.success());
        std::fs::write(dir.join(format!("{asset}.sha256")), &sum.stdout).unwrap();
        dir.join(asset)
    }

    /// A step script with nothing of this process's environment but PATH,
    /// and the runner's variables.
    fn command(&self, name: &str) -> Command {
        let (arch, _) = runner_arch();
        let mut cmd = Command::new("bash");
        cmd.arg(script(name))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("DOCKER_CONFIG", self.home.join(".docker"))
            .env("REGISTRY_AUTH_FILE", self.home.join("auth.json"))
            .env("TMPDIR", std::env::temp_dir())
            .env("NO_COLOR", "1")
            .env("GITHUB_OUTPUT", self.path("output"))
            .env("GITHUB_STEP_SUMMARY", self.path("summary"))
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", arch)
            .env("RUNNER_TEMP", self.path("temp"))
            .env("RUNNER_TOOL_CACHE", self.path("tool-cache"))
            .env("KVPUSH_ACTION_PATH", env!("CARGO_MANIFEST_DIR"))
            .env("KVPUSH_ACTION_REPOSITORY", "example/kvpush")
            .env("KVPUSH_ACTION_REF", VERSION)
            .env(
                "KVPUSH_DOWNLOAD_BASE",
                format!("file://{}", self.path("releases").display()),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// `name=value` lines of GITHUB_OUTPUT, last one winning.
    fn outputs(&self) -> HashMap<String, String> {
        std::fs::read_to_string(self.path("output"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

struct Step {
    code: i32,
    stdout: String,
    stderr: String,
    /// Every process command line seen on this machine while it ran.
    cmdlines: Vec<String>,
}

/// Run a step, recording the command line of every process on the machine
/// while it runs (to prove a secret never is on one).
fn run_step(mut cmd: Command) -> Step {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, done) = (seen.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let mut found = all_cmdlines();
                seen.lock().unwrap().append(&mut found);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("bash runs");
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let step = Step {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cmdlines: std::mem::take(&mut *seen.lock().unwrap()),
    };
    eprintln!(
        "--- step exit {}\n--- stdout\n{}--- stderr\n{}",
        step.code, step.stdout, step.stderr
    );
    step
}

fn all_cmdlines() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .collect()
}

#[test]
fn action_downloads_the_checked_binary_and_pushes_with_digests_json_and_summary() {
    let fx = Fixture::small();
    let reg = Registry::start(RegistryKind::Htpasswd);
    let (user, password) = reg.credentials().unwrap();
    let runner = Runner::new();
    let asset = runner.publish(VERSION);

    // install.sh: the release asset for this runner, its sum checked.
    let install = run_step(runner.command("install.sh"));
    assert_eq!(install.code, 0, "{}", install.stderr);
    assert!(install.stderr.contains("checksum verified"));
    let outputs = runner.outputs();
    assert_eq!(outputs["build"], "false");
    let bin = PathBuf::from(&outputs["bin"]);
    assert!(bin.starts_with(runner.path("temp")));
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&asset).unwrap());

    // push.sh: the inputs as action.yml passes them.
    let prefix = format!("{}/kubevirt", reg.addr());
    let mut cmd = runner.command("push.sh");
    cmd.env("KVPUSH_BIN", &bin)
        .env("INPUT_REGISTRY", &prefix)
        .env("INPUT_TAGS", "v1\nci-7")
        .env("INPUT_TARGETS", "virt-api, virt-controller")
        .env("INPUT_WORKSPACE", &fx.ws.root)
        .env("INPUT_USERNAME", user)
        .env("INPUT_PASSWORD", password)
        .env("INPUT_CACHE_DIR", runner.path("temp").join("kvpush-cache"))
        .env("INPUT_ARGS", "--jobs 4\n--compression-level 1");
    let push = run_step(cmd);
    assert_eq!(push.code, 0, "{}", push.stderr);
    assert!(push.stderr.contains("--password-stdin"));

    let outputs = runner.outputs();
    let digests: BTreeMap<String, String> =
        serde_json::from_str(outputs.get("digests").expect("a digests output")).unwrap();
    let mut expected = Vec::new();
    for name in ["virt-api", "virt-controller"] {
        for tag in ["v1", "ci-7"] {
            expected.push(format!("{prefix}/{name}:{tag}"));
        }
    }
    expected.sort();
    assert_eq!(digests.keys().cloned().collect::<Vec<_>>(), expected);
    for (reference, digest) in &digests {
        let (_, registry_digest) = raw_manifest(&reg, &format!("docker://{reference}"));
        assert_eq!(digest, &registry_digest, "{reference}: as skopeo sees it");
    }
    assert_eq!(
        verify_with_skopeo(&reg, &format!("{prefix}/virt-api:v1"), fx.image("virt-api")),
        digests[&format!("{prefix}/virt-api:v1")]
    );

    // The json output: kvpush's --output json document.
    let json_path = PathBuf::from(outputs.get("json").expect("a json output"));
    let json_text = std::fs::read_to_string(&json_path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    let images = doc["images"]
        .as_array()
        .expect("images in the json document");
    assert_eq!(images.len(), 2);
    for image in images {
        assert_eq!(image["status"], "pushed");
        for reference in image["references"].as_array().unwrap() {
            assert_eq!(digests[reference.as_str().unwrap()], image["digest"]);
        }
    }

    let summary = std::fs::read_to_string(runner.path("summary")).unwrap();
    assert!(summary.contains("### kvpush"), "{summary}");
    assert!(summary.contains("virt-api") && summary.contains("virt-controller"));
    assert!(
        runner.path("temp").join("kvpush-cache").is_dir(),
        "digest cache written"
    );

    // The password is nowhere: not in a log, an output, a file the action
    // writes, or any process's command line while the steps ran.
    let output_file = std::fs::read_to_string(runner.path("output")).unwrap();
    for (what, text) in [
        ("install stdout", &install.stdout),
        ("install stderr", &install.stderr),
        ("push stdout", &push.stdout),
        ("push stderr", &push.stderr),
        ("GITHUB_OUTPUT", &output_file),
        ("GITHUB_STEP_SUMMARY", &summary),
        ("json output", &json_text),
    ] {
        assert!(!text.contains(password), "the password is in {what}");
    }
    assert!(push.cmdlines.iter().any(|c| c.contains("--password-stdin")));
    let leaked: Vec<_> = push
        .cmdlines
        .iter()
        .chain(&install.cmdlines)
        .filter(|c| c.contains(password))
        .collect();
    assert!(
        leaked.is_empty(),
        "the password is on a command line: {leaked:?}"
    );
}

#[test]
fn a_wrong_checksum_fails_clearly_and_leaves_no_binary() {
    let runner = Runner::new();
    let asset = runner.publish(VERSION);
    let sum_file = asset.with_file_name(format!(
        "{}.sha256",
        asset.file_name().unwrap().to_string_lossy()
    ));
    let name = asset.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(&sum_file, format!("{}  {name}\n", "0".repeat(64))).unwrap();

    let step = run_step(runner.command("install.sh"));
    assert_ne!(step.code, 0);
    assert!(
        step.stdout.contains("::error") && step.stdout.contains("checksum mismatch"),
        "{}",
        step.stdout
    );
    assert!(
        step.stdout.contains(&"0".repeat(64)),
        "names the expected sum"
    );
    let outputs = runner.outputs();
    assert!(!outputs.contains_key("bin"), "{outputs:?}");
    assert!(
        !outputs.contains_key("build"),
        "a bad sum never falls back to building"
    );
    assert!(!runner.path("temp").join("kvpush-bin/kvpush").exists());

    // A sum file that is no sum is refused too.
    std::fs::write(&sum_file, "not found\n").unwrap();
    let step = run_step(runner.command("install.sh"));
    assert_ne!(step.code, 0);
    assert!(
        step.stdout.contains("holds no SHA-256 sum"),
        "{}",
        step.stdout
    );
}

#[test]
fn without_a_fitting_release_asset_the_action_builds_from_its_checkout_once() {
    let runner = Runner::new();
    runner.publish(VERSION);

    // An OS with no asset, a release without this asset, and `source`.
    for (var, value) in [
        ("RUNNER_OS", "macOS"),
        ("KVPUSH_VERSION", "v0.0.1"),
        ("KVPUSH_VERSION", "source"),
    ] {
        std::fs::write(runner.path("output"), "").unwrap();
        let mut cmd = runner.command("install.sh");
        cmd.env(var, value);
        let step = run_step(cmd);
        assert_eq!(step.code, 0, "{var}={value}: {}", step.stderr);
        let outputs = runner.outputs();
        assert_eq!(outputs["build"], "true", "{var}={value}");
        assert!(!outputs.contains_key("bin"));
        assert!(outputs["cargo-key"].starts_with("kvpush-bin-"));
        assert!(Path::new(&outputs["cargo-root"]).starts_with(runner.path("tool-cache")));
    }
    let outputs = runner.outputs();
    let root = PathBuf::from(&outputs["cargo-root"]);

    // The cache restored a build: build.sh uses it without running cargo.
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_kvpush"), root.join("bin/kvpush")).unwrap();
    std::fs::write(runner.path("output"), "").unwrap();
    let mut cmd = runner.command("build.sh");
    cmd.env("KVPUSH_CARGO_ROOT", &root)
        .env("PATH", "/usr/bin:/bin"); // no cargo: it must not be needed
    let step = run_step(cmd);
    assert_eq!(step.code, 0, "{}", step.stderr);
    assert!(step.stderr.contains("using the cached build"));
    assert_eq!(
        PathBuf::from(&runner.outputs()["bin"]),
        root.join("bin/kvpush")
    );

    // The same sources give the same key: one build per action version.
    std::fs::write(runner.path("output"), "").unwrap();
    let mut cmd = runner.command("install.sh");
    cmd.env("KVPUSH_VERSION", "source");
    assert_eq!(run_step(cmd).code, 0);
    assert_eq!(runner.outputs()["cargo-key"], outputs["cargo-key"]);
}

#[test]
fn push_step_refuses_inconsistent_inputs_before_running_kvpush() {
    let runner = Runner::new();
    for (vars, message) in [
        (vec![], "registry input is required"),
        (
            vec![
                ("INPUT_REGISTRY", "localhost:1/x"),
                ("INPUT_PASSWORD", "s3cr3t-pw"),
            ],
            "username is not",
        ),
        (
            vec![("INPUT_REGISTRY", "localhost:1/x"), ("INPUT_USERNAME", "u")],
            "password is not",
        ),
        (
            vec![
                ("INPUT_REGISTRY", "localhost:1/x"),
                ("INPUT_ARCH_BIN", "amd64=/a\narm64=/b"),
                ("INPUT_MANIFEST_ARCHES", "amd64,arm64"),
            ],
            "set one of them",
        ),
    ] {
        let mut cmd = runner.command("push.sh");
        // A binary that must not run.
        cmd.env("KVPUSH_BIN", "/bin/false");
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let step = run_step(cmd);
        assert_ne!(step.code, 0, "{vars:?}");
        assert!(
            step.stdout.contains("::error") && step.stdout.contains(message),
            "{vars:?}: {}",
            step.stdout
        );
        assert!(!step.stdout.contains("s3cr3t-pw") && !step.stderr.contains("s3cr3t-pw"));
    }
}

#[test]
fn manifest_arches_runs_kvpush_manifest_with_the_arches() {
    // A stand-in kvpush that records its arguments and stdin.
    let runner = Runner::new();
    let fake = runner.path("fake-kvpush");
    let mut f = std::fs::File::create(&fake).unwrap();
    writeln!(
        f,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$0.args\"\ncat > \"$0.stdin\"\necho '{{}}'"
    )
    .unwrap();
    drop(f);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = runner.command("push.sh");
    cmd.env("KVPUSH_BIN", &fake)
        .env("INPUT_REGISTRY", "quay.io/kubevirt")
        .env("INPUT_TAGS", "v1.2.3")
        .env("INPUT_TARGETS", "all")
        .env("INPUT_MANIFEST_ARCHES", "amd64, arm64\ns390x")
        .env("INPUT_USERNAME", "robot")
        .env("INPUT_PASSWORD", "pw-on-stdin")
        .env("INPUT_ARGS", "--allow-missing");
    let step = run_step(cmd);
    assert_eq!(step.code, 0, "{}", step.stderr);
    let args = std::fs::read_to_string(runner.path("fake-kvpush.args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "manifest",
            "all",
            "--registry",
            "quay.io/kubevirt",
            "--tag",
            "v1.2.3",
            "--arch",
            "amd64,arm64,s390x",
            "--allow-missing",
            "--output",
            "json",
            "--username",
            "robot",
            "--password-stdin"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(runner.path("fake-kvpush.stdin")).unwrap(),
        "pw-on-stdin\n"
    );
    let json = PathBuf::from(&runner.outputs()["json"]);
    assert_eq!(std::fs::read_to_string(json).unwrap().trim(), "{}");
}
