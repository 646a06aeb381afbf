//! rules_img `image_push` workspaces against real registries: an origin
//! registry seeded (with skopeo) with the shallow base images, a destination
//! registry kvpush pushes to, every result read back with skopeo.

mod common;

use std::path::{Path, PathBuf};

use common::{blob_uploads, kvpush_command, run_command, sha256, Run};
use kvpush_fixtures::{
    add_index_target, generate_rules_img_workspace, skopeo_copy, skopeo_inspect_raw,
    write_base_layouts, Fault, FaultPlan, FaultProxy, Outcome, Registry, RegistryKind,
    RulesImgSpec,
};

/// A rules_img workspace whose bases live in a seeded origin registry.
struct Setup {
    dir: tempfile::TempDir,
    ws: kvpush_fixtures::RulesImgWorkspace,
    origin: Registry,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_origin(RegistryKind::Plain)
    }

    /// An origin of `kind` (plain, htpasswd, token) seeded with the bases.
    fn with_origin(kind: RegistryKind) -> Setup {
        let origin = Registry::start(kind);
        let name = origin.addr().to_string();
        Setup::seeded(origin, &name)
    }

    /// `origin` seeded with the bases, which the deploy manifests say come
    /// from `origin_name` (the origin itself, or a proxy in front of it).
    fn seeded(origin: Registry, origin_name: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let spec = RulesImgSpec {
            scale_bytes: 512 << 10,
            origin_registry: origin_name.to_string(),
            ..RulesImgSpec::default()
        };
        let ws = generate_rules_img_workspace(&dir.path().join("ws"), &spec).unwrap();
        for (layout, repo, tag) in write_base_layouts(&dir.path().join("bases"), &ws.bases).unwrap()
        {
            let creds = origin.credentials().map(|(u, p)| format!("{u}:{p}"));
            let mut args = vec!["--dest-tls-verify=false"];
            if let Some(creds) = &creds {
                args.extend(["--dest-creds", creds.as_str()]);
            }
            skopeo_copy(
                &format!("oci:{}:{tag}", layout.display()),
                &format!("docker://{}/{repo}:{tag}", origin.addr()),
                &args,
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        origin.clear_access_log();
        Setup { dir, ws, origin }
    }

    fn kvpush(&self, args: &[&str]) -> Run {
        let mut cmd = kvpush_command(&self.dir.path().join("home"));
        cmd.arg("--workspace").arg(&self.ws.root).args(args);
        run_command(cmd)
    }

    /// `GET`s of blob `digest` the origin served.
    fn origin_gets(&self, digest: &str) -> usize {
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.origin
            .count_requests("GET", &format!("/blobs/{digest}"))
    }

    fn base_layer_digests(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .ws
            .bases
            .iter()
            .flat_map(|b| b.layers.iter().map(|l| l.digest.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// A fresh destination registry and the `ADDR/kubevirt` prefix pushed to.
fn destination() -> (Registry, String) {
    let dest = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", dest.addr());
    (dest, prefix)
}

/// The digest of the manifest `reference` points at, read with skopeo.
fn pushed_digest(reference: &str) -> Option<String> {
    skopeo_inspect_raw(&format!("docker://{reference}"), &["--tls-verify=false"])
        .ok()
        .map(|raw| sha256(raw.as_bytes()))
}

/// The file `data` of blob `digest` in a registry's storage.
fn stored_blob(root: &Path, digest: &str) -> PathBuf {
    let hex = &digest[7..];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().unwrap() == hex && path.join("data").is_file() {
                    return path.join("data");
                }
                stack.push(path);
            }
        }
    }
    panic!("no blob {digest} under {}", root.display());
}

#[test]
fn every_image_lands_with_its_root_digest_bases_fetched_once_and_a_rerun_moves_nothing() {
    let s = Setup::new();
    let (dest, prefix) = destination();

    let list = s.kvpush(&["list", "--registry", &prefix]);
    assert_eq!(list.code, 0);
    assert!(
        list.stdout
            .contains("push-virt-api  (rules_img image_push: bazel-bin/push-virt-api.json)"),
        "{}",
        list.stdout
    );
    assert!(!list.stdout.contains("MISSING"), "{}", list.stdout);
    let dry = s.kvpush(&["all", "--registry", &prefix, "--tag", "t1", "--dry-run"]);
    assert_eq!(dry.code, 0);
    assert_eq!(
        dry.stdout.matches("would push").count(),
        12,
        "{}",
        dry.stdout
    );

    let digests = s.dir.path().join("digests");
    let run = s.kvpush(&[
        "all",
        "--registry",
        &prefix,
        "--tag",
        "t1",
        "--digests-dir",
        digests.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0);
    // The summary tells the base layers copied from the origin (each once)
    // from the layers pushed as Bazel built them (the images' own).
    let own: usize =
        s.ws.targets
            .iter()
            .map(|t| t.images[0].layers.len() - t.images[0].base_layers)
            .sum();
    let copied = format!(
        "({} copied from origin registries,",
        s.base_layer_digests().len()
    );
    let bazel = format!("{own} pushed as Bazel compressed them");
    assert!(
        run.stderr.contains(&copied) && run.stderr.contains(&bazel),
        "{copied} / {bazel}: {}",
        run.stderr
    );
    for t in &s.ws.targets {
        let reference = format!("{prefix}/{}:t1", t.name);
        assert_eq!(
            pushed_digest(&reference).as_deref(),
            Some(t.root_digest.as_str()),
            "{reference}"
        );
        assert!(
            run.stdout
                .contains(&format!("{reference}@{}", t.root_digest)),
            "{}",
            run.stdout
        );
    }
    let written = std::fs::read_dir(&digests).unwrap().count();
    assert!(written >= 12, "{written} files in the digests dir");
    // Each base layer came down from the origin at most once, though
    // eleven images share the first.
    for digest in s.base_layer_digests() {
        let gets = s.origin_gets(&digest);
        assert!(gets <= 1, "{digest} fetched {gets} times");
    }
    assert!(s.origin_gets(&s.ws.bases[0].layers[0].digest) == 1);

    // A re-run fetches nothing and uploads nothing.
    s.origin.clear_access_log();
    dest.clear_access_log();
    let again = s.kvpush(&[
        "all",
        "--registry",
        &prefix,
        "--tag",
        "t1",
        "--output",
        "json",
    ]);
    assert_eq!(again.code, 0);
    assert!(
        !again.stdout.contains("copied_from_origin"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains(&s.ws.targets[0].root_digest),
        "{}",
        again.stdout
    );
    assert_eq!(blob_uploads(&dest), 0);
    for digest in s.base_layer_digests() {
        assert_eq!(s.origin_gets(&digest), 0, "{digest}");
    }

    // Another prefix on the same registry: bases are mounted, not fetched.
    s.origin.clear_access_log();
    let alt = format!("{}/alt", dest.addr());
    let moved = s.kvpush(&["all", "--registry", &alt, "--tag", "t1"]);
    assert_eq!(moved.code, 0);
    for digest in s.base_layer_digests() {
        assert_eq!(s.origin_gets(&digest), 0, "{digest}");
    }
    for t in &s.ws.targets {
        let reference = format!("{alt}/{}:t1", t.name);
        assert_eq!(
            pushed_digest(&reference).as_deref(),
            Some(t.root_digest.as_str())
        );
    }
}

#[test]
fn a_corrupt_origin_blob_or_a_changed_local_layer_fails_only_the_images_needing_it() {
    let s = Setup::new();
    let (dest, prefix) = destination();
    // The launcher base's own layer: same size, other bytes.
    let launcher = &s.ws.bases[1].layers[1].digest;
    let stored = stored_blob(s.origin.state_dir(), launcher);
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    // virt-api's own layer changed after the build.
    let layer =
        s.ws.root
            .join("bazel-out/k8-fastbuild/bin/cmd/virt-api/virt-api-layer-0-2.tar");
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&layer, &bytes).unwrap();

    let run = s.kvpush(&[
        "all",
        "--registry",
        &prefix,
        "--tag",
        "t1",
        "--retries",
        "2",
    ]);
    assert_ne!(run.code, 0);
    let on_launcher_base: Vec<&str> =
        s.ws.targets
            .iter()
            .filter(|t| t.base == 1)
            .map(|t| t.name.as_str())
            .collect();
    assert_eq!(on_launcher_base.len(), 3);
    for t in &s.ws.targets {
        let reference = format!("{prefix}/{}:t1", t.name);
        let failed = t.name == "virt-api" || on_launcher_base.contains(&t.name.as_str());
        if failed {
            assert_eq!(pushed_digest(&reference), None, "{reference} was tagged");
            assert!(dest.tags(&format!("kubevirt/{}", t.name)).is_empty());
        } else {
            assert_eq!(
                pushed_digest(&reference).as_deref(),
                Some(t.root_digest.as_str())
            );
        }
    }
    assert!(
        run.stderr
            .contains("virt-api-layer-0-2.tar does not match its descriptor")
            || run.stdout.contains("virt-api-layer-0-2.tar"),
        "the changed file is named"
    );
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(&format!(
            "origin registry {} repository kubevirtci/launcher-base blob {launcher}",
            s.origin.addr()
        )),
        "{said}"
    );
    assert!(said.contains("serves other bytes"), "{said}");
}

#[test]
fn an_origin_that_is_down_fails_the_images_needing_it_naming_it() {
    let mut s = Setup::new();
    let (dest, prefix) = destination();
    let origin = s.origin.addr().to_string();
    s.origin.stop();
    let run = s.kvpush(&[
        "all",
        "--registry",
        &prefix,
        "--tag",
        "t1",
        "--retries",
        "1",
        "--connect-timeout",
        "2s",
    ]);
    assert_ne!(run.code, 0);
    let said = format!("{}{}", run.stdout, run.stderr);
    let named = s.base_layer_digests().into_iter().any(|digest| {
        s.ws.bases.iter().any(|b| {
            said.contains(&format!(
                "origin registry {origin} repository {} blob {digest}",
                b.repository
            ))
        })
    });
    assert!(named, "{said}");
    for t in &s.ws.targets {
        assert!(
            dest.tags(&format!("kubevirt/{}", t.name)).is_empty(),
            "{} tagged",
            t.name
        );
    }
}

#[test]
fn bases_on_the_destination_registry_are_mounted_not_copied() {
    // The origin is the destination registry itself.
    let dest = Registry::start(RegistryKind::Plain);
    let name = dest.addr().to_string();
    let s = Setup::seeded(dest, &name);
    let prefix = format!("{name}/kubevirt");
    let run = s.kvpush(&["all", "--registry", &prefix, "--tag", "t1"]);
    assert_eq!(run.code, 0);
    for t in &s.ws.targets {
        let reference = format!("{prefix}/{}:t1", t.name);
        assert_eq!(
            pushed_digest(&reference).as_deref(),
            Some(t.root_digest.as_str())
        );
    }
    // Nothing read back from the registry, and each base layer mounted.
    assert_eq!(s.origin.count_requests("GET", "/blobs/sha256:"), 0);
    for digest in s.base_layer_digests() {
        let mounts = s
            .origin
            .requests()
            .iter()
            .filter(|r| {
                r.method == "POST" && r.uri.contains("mount=") && r.uri.contains(&digest[7..])
            })
            .count();
        assert!(mounts >= 1, "{digest} never mounted");
    }
}

#[test]
fn a_flaky_origin_is_fetched_from_again_and_the_images_land() {
    let origin = Registry::start(RegistryKind::Plain);
    let proxy = FaultProxy::start(
        origin.addr(),
        FaultPlan {
            seed: 7,
            rate: 0.6,
            faults: vec![
                Fault::Truncate,
                Fault::Status {
                    code: 503,
                    retry_after: None,
                },
            ],
            only: Some(("GET".into(), "/blobs/sha256:".into())),
            ..FaultPlan::default()
        },
    );
    let s = Setup::seeded(origin, proxy.addr());
    let (_dest, prefix) = destination();
    let run = s.kvpush(&[
        "all",
        "--registry",
        &prefix,
        "--tag",
        "t1",
        "--retries",
        "8",
    ]);
    assert_eq!(run.code, 0);
    for t in &s.ws.targets {
        let reference = format!("{prefix}/{}:t1", t.name);
        assert_eq!(
            pushed_digest(&reference).as_deref(),
            Some(t.root_digest.as_str())
        );
    }
    let truncated = proxy
        .events()
        .iter()
        .filter(|e| e.outcome == Outcome::Injected(Fault::Truncate))
        .count();
    assert!(truncated >= 1, "{:?}", proxy.events());
}

#[test]
fn a_token_origin_is_read_with_its_own_credentials_and_a_pull_scope() {
    use base64::Engine as _;
    let s = Setup::with_origin(RegistryKind::Token);
    let name = s.origin.addr().to_string();
    // The origin's credentials come from the usual lookup, not the command line.
    let (user, password) = s.origin.credentials().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let docker = s.dir.path().join("home/.docker");
    std::fs::create_dir_all(&docker).unwrap();
    let config = serde_json::json!({"auths": {&name: {"auth": auth}}});
    std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
    let (_dest, prefix) = destination();
    // Those of skopeo's seeding.
    let seeding = s.origin.token_requests().len();
    let run = s.kvpush(&["all", "--registry", &prefix, "--tag", "t1"]);
    assert_eq!(run.code, 0);
    for t in &s.ws.targets {
        let reference = format!("{prefix}/{}:t1", t.name);
        assert_eq!(
            pushed_digest(&reference).as_deref(),
            Some(t.root_digest.as_str())
        );
    }
    let asked: Vec<String> = s
        .origin
        .token_requests()
        .into_iter()
        .skip(seeding)
        .filter(|r| r.account.is_some())
        .flat_map(|r| r.scopes)
        .collect();
    assert!(
        asked
            .iter()
            .any(|a| a == "repository:distroless/base-debian12:pull"),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|a| a.contains("push")), "{asked:?}");
}

/// The push's credentials (`KVPUSH_USERNAME`/`KVPUSH_PASSWORD`) are the
/// destination's: an origin that wants credentials never gets them, even
/// when they would be good there, so the copy fails as anonymous.
#[test]
fn the_push_credentials_never_reach_an_origin() {
    let s = Setup::with_origin(RegistryKind::Htpasswd);
    let name = s.origin.addr().to_string();
    let (user, password) = s.origin.credentials().unwrap();
    let (_dest, prefix) = destination();
    let mut cmd = kvpush_command(&s.dir.path().join("home"));
    cmd.arg("--workspace")
        .arg(&s.ws.root)
        .args(["all", "--registry", &prefix, "--tag", "t1"])
        .env("KVPUSH_USERNAME", user)
        .env("KVPUSH_PASSWORD", password);
    let run = run_command(cmd);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&name), "{}", run.stderr);
    assert!(!run.stderr.contains(password), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "an origin registry of base layers gets only what these login files hold for it"
        ),
        "{}",
        run.stderr
    );
    // The origin was asked anonymously and served nothing.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let answers: Vec<(String, u16)> = s
        .origin
        .requests()
        .iter()
        .map(|r| (r.uri.clone(), r.status))
        .collect();
    assert!(!answers.is_empty(), "kvpush never asked the origin");
    assert!(
        answers.iter().all(|(_, status)| *status == 401),
        "the origin answered the push's credentials: {answers:?}"
    );
}

#[test]
fn registry_tag_operations_tag_their_child_in_the_destination_repository() {
    let s = Setup::new();
    let spec = RulesImgSpec {
        scale_bytes: 512 << 10,
        origin_registry: s.origin.addr().to_string(),
        ..RulesImgSpec::default()
    };
    let t = add_index_target(
        &s.ws,
        &spec,
        "virt-multi",
        &["amd64", "arm64"],
        &[&["v1-amd64"], &["v1-arm64"]],
    )
    .unwrap();
    let (dest, prefix) = destination();
    let run = s.kvpush(&["virt-multi", "--registry", &prefix, "--tag", "t1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The run's tag names the index; each registry_tag its child, in the
    // destination repository (the build-time quay.io/kubevirt is replaced).
    assert_eq!(
        pushed_digest(&format!("{prefix}/virt-multi:t1")).as_deref(),
        Some(t.root_digest.as_str())
    );
    for (child, tag) in t.images.iter().zip(["v1-amd64", "v1-arm64"]) {
        assert_eq!(
            pushed_digest(&format!("{prefix}/virt-multi:{tag}")).as_deref(),
            Some(child.manifest.digest.as_str()),
            "{tag}"
        );
    }
    // A re-run writes nothing.
    dest.clear_access_log();
    let again = s.kvpush(&["virt-multi", "--registry", &prefix, "--tag", "t1"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(dest.count_requests("PUT", "/manifests/"), 0);
}
