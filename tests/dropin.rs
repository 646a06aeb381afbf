//! contrib/kubevirt/bazel-push-images.sh, the drop-in for KubeVirt's
//! hack/bazel-push-images.sh, on generated workspaces of the three build
//! eras, with a stand-in `bazel` on PATH that records its arguments: one
//! `bazel build` of the right target kinds, then one kvpush run whose
//! result is checked at a real registry (rules_docker, rules_oci) or whose
//! arguments are checked (rules_img).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{kvpush_command_at, raw_manifest, run_command, Run, Scenario};
use kvpush_fixtures::{
    generate_rules_img_workspace, generate_rules_oci_workspace, BlobStyle, RulesImgSpec,
    RulesOciSpec,
};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/kubevirt/bazel-push-images.sh"
);

/// Stand-ins on PATH, and where they write what they saw.
struct Stubs {
    dir: tempfile::TempDir,
}

impl Stubs {
    fn new() -> Stubs {
        let dir = tempfile::tempdir().unwrap();
        let bazel = "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$BAZEL_LOG\"\nexit 0\n";
        write_exe(&dir.path().join("bazel"), bazel);
        // kvpush that answers `bazel-targets` for real and records a push.
        let kvpush = "#!/bin/sh\nif [ \"$1\" = bazel-targets ]; then exec \"$REAL_KVPUSH\" \"$@\"; fi\n\
                      { printf '%s\\n' \"$@\"; env | grep -E '^(PUSH_TARGETS|DOCKER_(PREFIX|TAG)|IMAGE_PREFIX|ARCHITECTURE|DIGESTS_DIR)' | sort; } > \"$KVPUSH_LOG\"\n";
        write_exe(&dir.path().join("kvpush-stub"), kvpush);
        Stubs { dir }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bazel_args(&self) -> Vec<String> {
        std::fs::read_to_string(self.log("bazel.log"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Run the drop-in in `workspace` with `env`; `stub_kvpush` records the
    /// push instead of running it.
    fn run(&self, workspace: &Path, home: &Path, stub_kvpush: bool, env: &[(&str, &str)]) -> Run {
        let mut cmd = kvpush_command_at(Path::new("bash"), home);
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let real = env!("CARGO_BIN_EXE_kvpush");
        let kvpush = if stub_kvpush {
            self.dir.path().join("kvpush-stub").display().to_string()
        } else {
            real.to_string()
        };
        cmd.arg(SCRIPT)
            .current_dir(workspace)
            .env("PATH", path)
            .env("BAZEL_LOG", self.log("bazel.log"))
            .env("KVPUSH_LOG", self.log("kvpush.log"))
            .env("REAL_KVPUSH", real)
            .env("KVPUSH", kvpush)
            .env("KVPUSH_FLAGS", "--jobs 4");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_command(cmd)
    }
}

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn rules_docker_era_builds_parts_and_tarballs_once_and_pushes_every_target() {
    let sc = Scenario::plain();
    let stubs = Stubs::new();
    let digests = sc.dir.path().join("digests");
    std::fs::create_dir_all(digests.join("x86_64/stale")).unwrap();
    let run = stubs.run(
        &sc.ws.root,
        &sc.home(),
        false,
        &[
            ("DOCKER_PREFIX", &sc.prefix),
            ("DOCKER_TAG", "t1"),
            ("DOCKER_TAG_ALT", "t2"),
            ("ARCHITECTURE", "x86_64"),
            ("DIGESTS_DIR", digests.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("rules_docker push targets"),
        "{}",
        run.stderr
    );
    let args = stubs.bazel_args();
    let prefix_define = format!("container_prefix={}", sc.prefix);
    assert_eq!(
        args[..9],
        [
            "build",
            "--config=x86_64",
            "--define",
            &prefix_define,
            "--define",
            "image_prefix=",
            "--define",
            "container_tag=t1",
            "--output_groups=+tar"
        ]
    );
    assert_eq!(
        args[9..13],
        [
            "//:push-other-images",
            "//:build-other-images",
            "//:push-virt-operator",
            "//cmd/virt-operator:virt-operator-image.tar"
        ]
    );
    assert_eq!(args.iter().filter(|a| a.starts_with("//:push-")).count(), 7);
    sc.verify_all("t1");
    assert_eq!(sc.registry.tags("kubevirt/virt-api"), ["t1", "t2"]);
    let digest = std::fs::read_to_string(digests.join("x86_64/bazel-bin/push-virt-api.digest"));
    assert!(digest.unwrap().starts_with("sha256:"));
    assert!(
        !digests.join("x86_64/stale").exists(),
        "refilled as the original did"
    );
}

#[test]
fn rules_oci_era_builds_the_layouts_once_and_pushes_them_byte_for_byte() {
    let sc = Scenario::plain();
    let spec = RulesOciSpec {
        blobs: BlobStyle::Symlink,
        ..RulesOciSpec::default()
    };
    let ws = generate_rules_oci_workspace(&sc.ws.root, &spec).unwrap();
    let stubs = Stubs::new();
    let digests = sc.dir.path().join("digests");
    let run = stubs.run(
        &sc.ws.root,
        &sc.home(),
        false,
        &[
            ("DOCKER_PREFIX", &sc.prefix),
            ("DOCKER_TAG", "v1"),
            ("IMAGE_PREFIX_ALT", "alt-"),
            ("PUSH_TARGETS", "virt-api virt-handler"),
            ("BUILD_ARCH", "aarch64"),
            ("DIGESTS_DIR", digests.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        stubs.bazel_args(),
        [
            "build",
            "--config=aarch64",
            "//cmd/virt-api:virt-api-image",
            "//cmd/virt-handler:virt-handler-image"
        ]
    );
    assert_eq!(
        sc.catalog(),
        [
            "kubevirt/alt-virt-api",
            "kubevirt/alt-virt-handler",
            "kubevirt/virt-api",
            "kubevirt/virt-handler"
        ]
    );
    for t in ws
        .targets
        .iter()
        .filter(|t| t.name == "virt-api" || t.name == "virt-handler")
    {
        let reference = format!("docker://{}", sc.reference(&t.name, "v1"));
        assert_eq!(raw_manifest(&sc.registry, &reference).1, t.manifest_digest);
        let marker = digests.join(format!("aarch64/{0}/{0}.image", t.name));
        assert!(marker.is_file(), "{marker:?}");
    }
}

#[test]
fn rules_img_era_builds_the_push_targets_once_and_runs_kvpush_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    let ws = generate_rules_img_workspace(&root, &RulesImgSpec::default()).unwrap();
    std::fs::create_dir_all(dir.path().join("home")).unwrap();
    let stubs = Stubs::new();
    let run = stubs.run(
        &root,
        &dir.path().join("home"),
        true,
        &[
            ("DOCKER_PREFIX", "quay.io/kubevirt"),
            ("DOCKER_TAG", "v2"),
            ("DOCKER_TAG_ALT", "v2-alt"),
            ("IMAGE_PREFIX", "kv-"),
            ("ARCHITECTURE", "s390x"),
            ("DIGESTS_DIR", "_out/digests"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("rules_img push targets"),
        "{}",
        run.stderr
    );
    let mut want = vec!["build".to_string(), "--config=s390x".to_string()];
    want.extend(ws.targets.iter().map(|t| format!("//:push-{}", t.name)));
    assert_eq!(stubs.bazel_args(), want);
    let log = std::fs::read_to_string(stubs.log("kvpush.log")).unwrap();
    let root = root.display();
    assert_eq!(
        log,
        format!(
            "--workspace\n{root}\n--jobs\n4\nARCHITECTURE=s390x\nDIGESTS_DIR=_out/digests\n\
             DOCKER_PREFIX=quay.io/kubevirt\nDOCKER_TAG=v2\nDOCKER_TAG_ALT=v2-alt\n\
             IMAGE_PREFIX=kv-\nIMAGE_PREFIX_ALT=\nPUSH_TARGETS=all\n"
        )
    );
}

/// contrib/kubevirt/check-glibc.sh on the kvpush just built: it must run in
/// KubeVirt's builder (CentOS Stream 9, glibc 2.34); a lower limit fails.
#[test]
fn the_built_binary_needs_no_glibc_above_the_builders() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/kubevirt/check-glibc.sh"
    );
    let bin = env!("CARGO_BIN_EXE_kvpush");
    let run = run_command({
        let mut cmd = std::process::Command::new("bash");
        cmd.args([script, bin]);
        cmd
    });
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("(limit GLIBC_2.34)") || run.stdout.contains("no versioned glibc"),
        "{}",
        run.stdout
    );
    if run.stdout.contains("needs GLIBC_") {
        let run = run_command({
            let mut cmd = std::process::Command::new("bash");
            cmd.args([script, bin, "2.0"]);
            cmd
        });
        assert!(
            run.code == 1 && run.stderr.contains("above 2.0"),
            "{}",
            run.stderr
        );
    }
}
