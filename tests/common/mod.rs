//! Shared helpers for the integration tests: run the real `kvpush` binary
//! with a clean environment, generate small workspaces, and check pushed
//! images with skopeo (an independent client). Most tests start from a
//! [`Scenario`] (scenario.rs: workspace, registry, push, verify);
//! nobody.rs runs kvpush as an unprivileged user.

#![allow(dead_code)]

pub mod nobody;
mod scenario;

#[allow(unused_imports)] // not every test file uses it
pub use scenario::Scenario;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flate2::read::MultiGzDecoder;
use kvpush_fixtures::{
    generate_workspace, GeneratedImage, Registry, TestImage, Workspace, WorkspaceSpec,
};
use sha2::{Digest, Sha256};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// `REFERENCE@DIGEST` lines printed on stdout.
    pub fn pushed(&self) -> Vec<(String, String)> {
        self.stdout
            .lines()
            .filter_map(|l| l.split_once('@'))
            .map(|(r, d)| (r.to_string(), d.to_string()))
            .collect()
    }
}

/// A kvpush command with none of the user's environment leaking in:
/// KubeVirt's variables unset, and no docker/podman login files.
pub fn kvpush_command(home: &Path) -> Command {
    kvpush_command_at(Path::new(env!("CARGO_BIN_EXE_kvpush")), home)
}

/// [`kvpush_command`] running the kvpush binary at `program` (a copy).
pub fn kvpush_command_at(program: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "DOCKER_PREFIX",
        "DOCKER_TAG",
        "DOCKER_TAG_ALT",
        "IMAGE_PREFIX",
        "IMAGE_PREFIX_ALT",
        "PUSH_TARGETS",
        "BUILD_ARCH",
        "ARCHITECTURE",
        "DIGESTS_DIR",
        "KVPUSH_USERNAME",
        "KVPUSH_PASSWORD",
        "RUST_LOG",
        "SSL_CERT_FILE",
        "XDG_RUNTIME_DIR",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .env("TMPDIR", std::env::temp_dir())
        .stdin(Stdio::null());
    cmd
}

pub fn run_command(mut cmd: Command) -> Run {
    finish(cmd.output().expect("kvpush binary runs"))
}

/// Run `cmd` with `input` on its standard input (`--password-stdin`).
pub fn run_command_with_stdin(mut cmd: Command, input: &str) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvpush binary runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .unwrap();
    finish(child.wait_with_output().expect("kvpush binary runs"))
}

fn finish(out: std::process::Output) -> Run {
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "--- kvpush exit {}\n--- stdout\n{}--- stderr\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// A generated workspace and a private HOME, removed at the end of the test.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ws: Workspace,
}

impl Fixture {
    pub fn new(spec: WorkspaceSpec) -> Fixture {
        Fixture::new_in(&std::env::temp_dir(), spec)
    }

    /// [`Fixture::new`] in a fresh directory under `base`.
    pub fn new_in(base: &Path, spec: WorkspaceSpec) -> Fixture {
        let dir = tempfile::tempdir_in(base).unwrap();
        let ws = generate_workspace(&dir.path().join("ws"), &spec).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Fixture { dir, ws }
    }

    /// A small (about 6 MiB) KubeVirt-shaped workspace.
    pub fn small() -> Fixture {
        Fixture::new(WorkspaceSpec {
            scale_bytes: 6 << 20,
            ..WorkspaceSpec::default()
        })
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn command(&self) -> Command {
        self.command_at(Path::new(env!("CARGO_BIN_EXE_kvpush")))
    }

    /// [`Fixture::command`] running the kvpush binary at `program`.
    pub fn command_at(&self, program: &Path) -> Command {
        let mut cmd = kvpush_command_at(program, &self.home());
        cmd.arg("--workspace").arg(&self.ws.root);
        cmd
    }

    /// Run kvpush with `args` (after `--workspace`).
    pub fn kvpush(&self, args: &[&str]) -> Run {
        let mut cmd = self.command();
        cmd.args(args);
        run_command(cmd)
    }

    /// The images of the push targets `targets` (`other-images` for the bundle).
    pub fn images_of<'a>(
        &'a self,
        targets: &'a [&str],
    ) -> impl Iterator<Item = &'a GeneratedImage> + 'a {
        self.ws
            .images
            .iter()
            .filter(move |i| targets.contains(&i.target.as_str()))
    }

    pub fn image(&self, name: &str) -> &GeneratedImage {
        self.ws
            .image(name)
            .unwrap_or_else(|| panic!("fixture has no image {name}"))
    }
}

/// The distinct blobs of `images`: their layers (by diff_id) and configs.
pub fn distinct_blobs<'a>(
    images: impl IntoIterator<Item = &'a GeneratedImage>,
) -> std::collections::HashSet<&'a str> {
    images
        .into_iter()
        .flat_map(|i| {
            i.diff_ids
                .iter()
                .map(String::as_str)
                .chain([i.config_digest.as_str()])
        })
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Media types and config digest a pushed image must show.
pub struct Expect<'a> {
    pub manifest: &'a str,
    pub config: &'a str,
    pub layer: &'a str,
    pub config_digest: &'a str,
}

impl<'a> Expect<'a> {
    /// Docker schema 2 (kvpush's default, rules_docker's `format = "Docker"`).
    pub fn docker(config_digest: &'a str) -> Expect<'a> {
        Expect {
            manifest: "application/vnd.docker.distribution.manifest.v2+json",
            config: "application/vnd.docker.container.image.v1+json",
            layer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
            config_digest,
        }
    }

    /// OCI image manifest with gzip layers.
    pub fn oci(config_digest: &'a str) -> Expect<'a> {
        Expect {
            manifest: "application/vnd.oci.image.manifest.v1+json",
            config: "application/vnd.oci.image.config.v1+json",
            layer: "application/vnd.oci.image.layer.v1.tar+gzip",
            config_digest,
        }
    }
}

/// Pull `reference` with skopeo and check it against the generated image:
/// Docker schema 2, config digest as in the tarball, every layer
/// decompressing to its diff_id. Returns the manifest digest.
pub fn verify_with_skopeo(registry: &Registry, reference: &str, image: &GeneratedImage) -> String {
    pull_and_verify(registry, reference, image).0
}

/// [`verify_with_skopeo`] for a hand-made [`TestImage`].
pub fn verify_test_image(registry: &Registry, reference: &str, image: &TestImage) -> String {
    let config = sha256(&image.raw_config());
    verify_as(
        registry,
        reference,
        &Expect::docker(&config),
        &image.diff_ids(),
    )
    .0
}

/// [`verify_with_skopeo`], also returning the layer blobs as pulled, in
/// manifest order.
pub fn pull_and_verify(
    registry: &Registry,
    reference: &str,
    image: &GeneratedImage,
) -> (String, Vec<Vec<u8>>) {
    verify_as(
        registry,
        reference,
        &Expect::docker(&image.config_digest),
        &image.diff_ids,
    )
}

/// [`pull_and_verify`] with the media types and config digest of
/// `expect`: the manifest says them, skopeo copies every blob (checking
/// its digest) and each layer decompresses to its diff_id. Returns the
/// manifest digest and the layer blobs.
pub fn verify_as(
    registry: &Registry,
    reference: &str,
    expect: &Expect,
    diff_ids: &[String],
) -> (String, Vec<Vec<u8>>) {
    let args = registry.skopeo_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let raw = kvpush_fixtures::skopeo_inspect_raw(&format!("docker://{reference}"), &args)
        .unwrap_or_else(|e| panic!("skopeo cannot read {reference}: {e}"));
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(manifest["mediaType"], expect.manifest, "{reference}");
    assert_eq!(manifest["config"]["mediaType"], expect.config);
    assert_eq!(
        manifest["config"]["digest"], expect.config_digest,
        "{reference}: config digest"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len(), "{reference}: layer count");

    let dir = tempfile::tempdir().unwrap();
    let src_args = registry.skopeo_src_args();
    let src_args: Vec<&str> = src_args.iter().map(String::as_str).collect();
    kvpush_fixtures::skopeo_copy_to_dir(&format!("docker://{reference}"), dir.path(), &src_args)
        .unwrap_or_else(|e| panic!("skopeo cannot copy {reference}: {e}"));
    let mut blobs = Vec::new();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        assert_eq!(layer["mediaType"], expect.layer);
        let digest = layer["digest"].as_str().unwrap();
        let blob = std::fs::read(dir.path().join(digest.trim_start_matches("sha256:"))).unwrap();
        assert_eq!(sha256(&blob), digest, "{reference}: blob digest");
        assert_eq!(layer["size"].as_u64().unwrap(), blob.len() as u64);
        let mut plain = Vec::new();
        MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(
            &sha256(&plain),
            diff_id,
            "{reference}: layer decompresses to its diff_id"
        );
        blobs.push(blob);
    }
    (sha256(raw.as_bytes()), blobs)
}

/// A workspace with rules_docker's push-target parts besides the (legacy,
/// uncompressed) tarballs: pushing the tarballs gives other digests.
pub fn parts_spec() -> WorkspaceSpec {
    WorkspaceSpec {
        scale_bytes: 4 << 20,
        push_parts: true,
        ..WorkspaceSpec::default()
    }
}

/// `skopeo inspect --raw` of a reference (any transport) as JSON, and the
/// sha256 of its exact bytes.
pub fn raw_manifest(registry: &Registry, reference: &str) -> (serde_json::Value, String) {
    let args = registry.skopeo_args();
    let args: Vec<&str> = if reference.starts_with("docker://") {
        args.iter().map(String::as_str).collect()
    } else {
        Vec::new()
    };
    let raw = kvpush_fixtures::skopeo_inspect_raw(reference, &args)
        .unwrap_or_else(|e| panic!("skopeo cannot read {reference}: {e}"));
    (serde_json::from_str(&raw).unwrap(), sha256(raw.as_bytes()))
}

/// Number of blob uploads the registry saw (upload sessions opened, not
/// counting cross-repository mounts).
pub fn blob_uploads(registry: &Registry) -> usize {
    // The access log is written asynchronously.
    std::thread::sleep(std::time::Duration::from_millis(300));
    registry
        .requests()
        .iter()
        .filter(|r| {
            r.method == "POST" && r.uri.contains("/blobs/uploads/") && !r.uri.contains("mount=")
        })
        .count()
}

/// Make a file writable again (Bazel outputs are read-only).
pub fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}
