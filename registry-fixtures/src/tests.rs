//! Tests of the workspace generator and of the registry harness.

use crate::*;
use flate2::read::GzDecoder;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

fn small_spec() -> WorkspaceSpec {
    WorkspaceSpec {
        scale_bytes: 4 << 20,
        ..WorkspaceSpec::default()
    }
}

fn entries_by_name(path: &Path) -> (Vec<String>, HashMap<String, Vec<Vec<u8>>>) {
    let mut order = Vec::new();
    let mut map: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for (name, data) in read_archive(path).unwrap() {
        order.push(name.clone());
        map.entry(name).or_default().push(data);
    }
    (order, map)
}

/// Check every manifest entry of every tarball: config present and named
/// after its digest, layers present, diff_ids match; returns (entry, map).
fn check_tarballs(ws: &Workspace, compressed: bool) {
    for t in &ws.tarballs {
        let (order, map) = entries_by_name(t);
        assert_eq!(
            order[order.len() - if compressed { 1 } else { 2 }],
            "manifest.json",
            "{}",
            t.display()
        );
        if !compressed {
            assert_eq!(order.last().unwrap(), "repositories");
        }
        let manifest: Vec<ManifestEntry> =
            serde_json::from_slice(&map["manifest.json"][0]).unwrap();
        assert!(!manifest.is_empty());
        for m in &manifest {
            let cfg = &map
                .get(&m.config)
                .unwrap_or_else(|| panic!("config {} missing", m.config))[0];
            let hex = sha256_hex(cfg);
            if compressed {
                assert_eq!(m.config, format!("sha256:{hex}"));
            } else {
                assert_eq!(m.config, format!("{hex}.json"));
            }
            let cfg: serde_json::Value = serde_json::from_slice(cfg).unwrap();
            assert_eq!(cfg["architecture"], "amd64");
            assert_eq!(cfg["os"], "linux");
            assert_eq!(cfg["rootfs"]["type"], "layers");
            let diff_ids: Vec<String> = cfg["rootfs"]["diff_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(diff_ids.len(), m.layers.len());
            assert_eq!(cfg["history"].as_array().unwrap().len(), m.layers.len());
            for (layer, diff_id) in m.layers.iter().zip(&diff_ids) {
                let stored = &map
                    .get(layer)
                    .unwrap_or_else(|| panic!("layer {layer} missing"))[0];
                let tar_bytes = if compressed {
                    assert!(layer.ends_with(".tar.gz"));
                    assert_eq!(&stored[..2], &[0x1f, 0x8b], "gzip magic");
                    assert_eq!(format!("{}.tar.gz", sha256_hex(stored)), *layer);
                    let mut out = Vec::new();
                    GzDecoder::new(&stored[..]).read_to_end(&mut out).unwrap();
                    out
                } else {
                    assert!(layer.ends_with("/layer.tar"));
                    let id = layer.trim_end_matches("/layer.tar");
                    assert_eq!(map[&format!("{id}/VERSION")][0], b"1.0");
                    let j: serde_json::Value =
                        serde_json::from_slice(&map[&format!("{id}/json")][0]).unwrap();
                    assert_eq!(j["id"], id);
                    stored.clone()
                };
                assert_eq!(
                    sha256_digest(&tar_bytes),
                    *diff_id,
                    "{layer} in {}",
                    t.display()
                );
                // A real tar with at least one regular file, mtime 0.
                let mut ar = tar::Archive::new(&tar_bytes[..]);
                let mut files = 0;
                for e in ar.entries().unwrap() {
                    let e = e.unwrap();
                    assert_eq!(e.header().mtime().unwrap(), 0);
                    if e.header().entry_type().is_file() {
                        files += 1;
                    }
                }
                assert!(files > 0);
            }
        }
    }
    // GeneratedImage agrees with the tarballs.
    for img in &ws.images {
        let manifest = read_manifest(&img.tarball).unwrap();
        let m = manifest
            .iter()
            .find(|m| m.repo_tags.contains(&img.repo_tag))
            .unwrap_or_else(|| panic!("{} not in {}", img.repo_tag, img.tarball.display()));
        assert_eq!(m.config, img.config_file);
        assert_eq!(m.layers, img.layer_files);
        assert_eq!(img.diff_ids.len(), img.layer_sizes.len());
        let cfg_hex = img.config_digest.strip_prefix("sha256:").unwrap();
        assert!(img.config_file.contains(cfg_hex));
    }
}

#[test]
fn layout_and_build_file() {
    let dir = tempfile::tempdir().unwrap();
    let ws = generate_workspace(dir.path(), &small_spec()).unwrap();
    let link = std::fs::read_link(ws.root.join("bazel-bin")).unwrap();
    assert_eq!(link, Path::new("bazel-out/k8-fastbuild/bin"));
    assert!(ws.root.join("WORKSPACE").is_file());
    let build = std::fs::read_to_string(ws.root.join("BUILD.bazel")).unwrap();
    assert_eq!(build.matches("name = \"push-").count(), 7);
    assert!(build.contains("container_bundle(\n    name = \"build-other-images\""));
    for (name, label) in OTHER_IMAGES {
        assert!(build.contains(&format!(
            "\"$(container_prefix)/$(image_prefix){name}:$(container_tag)\": \"{label}\""
        )));
    }
    let expect = [
        "bazel-bin/cmd/virt-operator/virt-operator-image.tar",
        "bazel-bin/cmd/virt-api/virt-api-image.tar",
        "bazel-bin/cmd/virt-controller/virt-controller-image.tar",
        "bazel-bin/cmd/virt-handler/virt-handler-image.tar",
        "bazel-bin/cmd/virt-launcher/virt-launcher-image.tar",
        "bazel-bin/tests/conformance_image.tar",
        "bazel-bin/build-other-images.tar",
    ];
    for e in expect {
        let p = ws.root.join(e);
        let meta = std::fs::metadata(&p).unwrap_or_else(|_| panic!("{e} missing"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o444, "{e}");
    }
    assert_eq!(ws.tarballs.len(), 7);
    assert_eq!(ws.images.len(), 21);
    let api = ws.image("virt-api").unwrap();
    assert_eq!(api.target, "virt-api");
    assert_eq!(api.repo_tag, "bazel/cmd/virt-api:virt-api-image");
    assert_eq!(
        ws.image("conformance").unwrap().repo_tag,
        "bazel/tests:conformance_image"
    );
    let total: u64 = ws
        .tarballs
        .iter()
        .map(|t| std::fs::metadata(t).unwrap().len())
        .sum();
    assert_eq!(total, ws.total_bytes);
    // Roughly the requested scale.
    let scale = small_spec().scale_bytes as f64;
    assert!(
        (total as f64) > scale * 0.8 && (total as f64) < scale * 1.3,
        "total {total}"
    );
    // Regenerating over read-only tarballs works.
    generate_workspace(dir.path(), &small_spec()).unwrap();
}

#[test]
fn deterministic_for_a_seed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let wa = generate_workspace(a.path(), &small_spec()).unwrap();
    let wb = generate_workspace(b.path(), &small_spec()).unwrap();
    let wc = generate_workspace(
        c.path(),
        &WorkspaceSpec {
            seed: 2,
            ..small_spec()
        },
    )
    .unwrap();
    for ((ta, tb), tc) in wa.tarballs.iter().zip(&wb.tarballs).zip(&wc.tarballs) {
        let da = std::fs::read(ta).unwrap();
        assert_eq!(da, std::fs::read(tb).unwrap(), "{}", ta.display());
        assert_ne!(da, std::fs::read(tc).unwrap(), "{}", ta.display());
    }
    let strip = |w: &Workspace| {
        w.images
            .iter()
            .map(|i| (i.name.clone(), i.config_digest.clone(), i.diff_ids.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&wa), strip(&wb));
}

#[test]
fn legacy_tarballs_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let ws = generate_workspace(dir.path(), &small_spec()).unwrap();
    check_tarballs(&ws, false);
}

#[test]
fn compressed_tarballs_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkspaceSpec {
        compressed_layers: true,
        ..small_spec()
    };
    let ws = generate_workspace(dir.path(), &spec).unwrap();
    check_tarballs(&ws, true);
    let (order, _) = entries_by_name(&ws.bundle_tarball());
    let unique: HashSet<&String> = order.iter().collect();
    assert_eq!(
        unique.len(),
        order.len(),
        "compressed format stores every blob once"
    );
    for img in &ws.images {
        assert_eq!(img.gzip_digests.len(), img.diff_ids.len());
    }
    let build = std::fs::read_to_string(ws.root.join("BUILD.bazel")).unwrap();
    assert!(build.contains("experimental_tarball_format = \"compressed\""));
}

/// Resolve `${RUNFILES}/...` of a script argument the way bash and the
/// kernel would: through the runfiles symlinks.
fn runfile(runfiles: &Path, arg: &str) -> std::path::PathBuf {
    let rel = arg.strip_prefix("${RUNFILES}/").expect("runfiles path");
    std::fs::canonicalize(runfiles.join(rel)).unwrap_or_else(|e| panic!("{arg}: {e}"))
}

#[test]
fn push_parts_are_what_rules_docker_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkspaceSpec {
        push_parts: true,
        compressed_layers: true,
        build_image_prefix: "pre-".into(),
        ..small_spec()
    };
    let ws = generate_workspace(dir.path(), &spec).unwrap();
    let bin = bin_dir(&ws.root);
    check_tarballs(&ws, true);
    assert_eq!(ws.images.len(), 21);
    for image in &ws.images {
        let script = image
            .push_script
            .as_ref()
            .expect("every image has a push script");
        let text = std::fs::read_to_string(script).unwrap();
        let line = text.lines().last().unwrap();
        let runfiles = if image.target == "other-images" {
            bin.join("push-other-images.runfiles")
        } else {
            bin.join(format!("push-{}.runfiles", image.target))
        };
        assert!(
            line.ends_with(&format!(
                "--dst=index.docker.io/kubevirt/pre-{}:latest{}",
                image.name,
                if image.target == "other-images" {
                    " --format=Docker \"$@\""
                } else {
                    " \"$@\""
                }
            )),
            "{line}"
        );
        // The config, and every layer's four files, resolved through runfiles.
        let args: Vec<&str> = line.split(' ').collect();
        let config = args
            .iter()
            .find_map(|a| a.strip_prefix("--config="))
            .unwrap();
        let config = std::fs::read(runfile(&runfiles, config)).unwrap();
        assert_eq!(sha256_digest(&config), image.config_digest);
        let layers: Vec<&str> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--layer="))
            .collect();
        assert_eq!(layers.len(), image.diff_ids.len());
        let mut manifest_layers = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let parts: Vec<&str> = layer.split(',').collect();
            let gz = std::fs::read(runfile(&runfiles, parts[0])).unwrap();
            let tar = std::fs::read(runfile(&runfiles, parts[1])).unwrap();
            let digest = std::fs::read_to_string(runfile(&runfiles, parts[2])).unwrap();
            let diff_id = std::fs::read_to_string(runfile(&runfiles, parts[3])).unwrap();
            assert_eq!(
                format!("sha256:{digest}"),
                sha256_digest(&gz),
                "bare hex, no newline"
            );
            assert_eq!(format!("sha256:{diff_id}"), image.diff_ids[i]);
            assert_eq!(sha256_digest(&tar), image.diff_ids[i]);
            assert_eq!(gz, std::fs::read(&image.parts_layers[i]).unwrap());
            assert_eq!(gz[9], 3, "GNU gzip (OS byte 3: Unix), not flate2 (255)");
            let mut plain = Vec::new();
            GzDecoder::new(&gz[..]).read_to_end(&mut plain).unwrap();
            assert_eq!(plain, tar);
            // The compressed tarball holds these very blobs.
            assert_eq!(image.gzip_digests[i], sha256_digest(&gz));
            manifest_layers.push((sha256_digest(&gz), gz.len() as u64));
        }
        let json = go_manifest_json(&image.config_digest, config.len() as u64, &manifest_layers);
        assert_eq!(
            image.rules_docker_digest.as_deref(),
            Some(sha256_digest(json.as_bytes()).as_str())
        );
        let digest_file = bin.join(format!("push-{}.digest", image.target));
        if image.target == "other-images" {
            assert!(!digest_file.exists(), "docker_push writes no digest");
        } else {
            assert_eq!(
                std::fs::read_to_string(&digest_file).unwrap(),
                image.rules_docker_digest.clone().unwrap()
            );
        }
    }
    // External layers are named as Bazel names them from the workspace.
    let api = std::fs::read_to_string(bin.join("push-virt-api")).unwrap();
    assert!(api.contains("--layer=${RUNFILES}/kubevirt/../fedora/image/000.tar.gz,"));
    // The bundle runs one script per key, in BUILD order, in both branches.
    let all = std::fs::read_to_string(bin.join("push-other-images")).unwrap();
    assert_eq!(all.matches("push-other-images.0.push").count(), 2);
    assert!(all.contains("async \"${RUNFILES}/kubevirt/push-other-images.14.push\""));
    assert!(bin.join("push-virt-api.runfiles_manifest").exists());
    // Regenerating over the same directory works (read-only outputs, links).
    generate_workspace(dir.path(), &spec).unwrap();
}

#[test]
fn go_manifest_json_is_compact_and_ordered() {
    assert_eq!(
        go_manifest_json("sha256:c", 7, &[("sha256:l".into(), 9)]),
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\
         \"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"size\":7,\"digest\":\"sha256:c\"},\
         \"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"size\":9,\"digest\":\"sha256:l\"}]}"
    );
    assert!(go_manifest_json("sha256:c", 7, &[]).ends_with("\"layers\":null}"));
}

#[test]
fn bundle_has_fifteen_entries_and_shares_layers() {
    let dir = tempfile::tempdir().unwrap();
    let ws = generate_workspace(dir.path(), &small_spec()).unwrap();
    let manifest = read_manifest(&ws.bundle_tarball()).unwrap();
    assert_eq!(manifest.len(), 15);
    let tags: HashSet<String> = manifest.iter().flat_map(|m| m.repo_tags.clone()).collect();
    for (name, _) in OTHER_IMAGES {
        assert!(
            tags.contains(&format!("index.docker.io/kubevirt/{name}:latest")),
            "{name}"
        );
    }
    // Shuffled, not in BUILD order.
    let first: Vec<&str> = manifest.iter().map(|m| m.repo_tags[0].as_str()).collect();
    let build_order: Vec<String> = OTHER_IMAGES
        .iter()
        .map(|(n, _)| format!("index.docker.io/kubevirt/{n}:latest"))
        .collect();
    assert_ne!(
        first,
        build_order.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // The base layer is listed by every entry; rules_docker's legacy writer
    // stores it once per image (same name, same bytes).
    let base = &manifest[0].layers[0];
    assert!(manifest.iter().all(|m| m.layers[0] == *base));
    let (_, map) = entries_by_name(&ws.bundle_tarball());
    let copies = &map[base];
    assert_eq!(copies.len(), 15);
    assert!(copies.iter().all(|c| *c == copies[0]));
    // Container disks carry a big incompressible layer.
    let disk = ws.image("fedora-cloud-container-disk-demo").unwrap();
    let sidecar = ws.image("example-hook-sidecar").unwrap();
    assert!(disk.layer_sizes.last().unwrap() > &(sidecar.layer_sizes.iter().sum::<u64>() * 3));
}

#[test]
fn dedup_stores_shared_layers_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkspaceSpec {
        dedup_layers: true,
        ..small_spec()
    };
    let ws = generate_workspace(dir.path(), &spec).unwrap();
    check_tarballs(&ws, false);
    let manifest = read_manifest(&ws.bundle_tarball()).unwrap();
    let base = &manifest[0].layers[0];
    let (order, _) = entries_by_name(&ws.bundle_tarball());
    assert_eq!(order.iter().filter(|n| *n == base).count(), 1);
    assert!(manifest.iter().filter(|m| m.layers.contains(base)).count() == 15);
    let unique: HashSet<&String> = order.iter().collect();
    assert_eq!(unique.len(), order.len());
}

#[test]
fn aliases_merged_or_duplicated() {
    // docker-save style: one entry, two RepoTags.
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkspaceSpec {
        merged_bundle: true,
        ..small_spec()
    };
    let ws = generate_workspace(dir.path(), &spec).unwrap();
    let manifest = read_manifest(&ws.bundle_tarball()).unwrap();
    assert_eq!(manifest.len(), 15);
    let merged: Vec<&ManifestEntry> = manifest.iter().filter(|m| m.repo_tags.len() == 2).collect();
    assert_eq!(merged.len(), 1);
    assert_eq!(
        merged[0].repo_tags,
        vec![
            "index.docker.io/kubevirt/vm-killer:latest".to_string(),
            "index.docker.io/kubevirt/vm-killer-alias:latest".to_string()
        ]
    );
    check_tarballs(&ws, false);
    assert_eq!(ws.images.len(), 22);

    // rules_docker style: two entries, the config stored twice.
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkspaceSpec {
        bundle_aliases: vec![("vm-killer-alias".into(), "vm-killer".into())],
        extra_bundle_images: vec!["fedora-with-test-tooling-container-disk".into()],
        build_image_prefix: "pre-".into(),
        build_container_prefix: "registry:5000/kubevirt".into(),
        build_container_tag: "devel".into(),
        ..small_spec()
    };
    let ws = generate_workspace(dir.path(), &spec).unwrap();
    let manifest = read_manifest(&ws.bundle_tarball()).unwrap();
    assert_eq!(manifest.len(), 17);
    let killer = ws.image("vm-killer").unwrap();
    let alias = ws.image("vm-killer-alias").unwrap();
    assert_eq!(killer.config_digest, alias.config_digest);
    assert_eq!(
        alias.repo_tag,
        "registry:5000/kubevirt/pre-vm-killer-alias:devel"
    );
    let (order, _) = entries_by_name(&ws.bundle_tarball());
    assert_eq!(
        order.iter().filter(|n| **n == killer.config_file).count(),
        2
    );
    assert!(ws
        .image("fedora-with-test-tooling-container-disk")
        .is_some());
    let build = std::fs::read_to_string(ws.root.join("BUILD.bazel")).unwrap();
    assert!(build.contains("fedora-with-test-tooling-container-disk:$(container_tag)"));
    check_tarballs(&ws, false);
}

#[test]
fn skopeo_reads_generated_tarballs() {
    let dir = tempfile::tempdir().unwrap();
    for compressed in [false, true] {
        let spec = WorkspaceSpec {
            compressed_layers: compressed,
            scale_bytes: 2 << 20,
            ..WorkspaceSpec::default()
        };
        let ws = generate_workspace(&dir.path().join(compressed.to_string()), &spec).unwrap();
        let api = ws.image("virt-api").unwrap();
        let out =
            skopeo_inspect(&format!("docker-archive:{}", api.tarball.display()), &[]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Architecture"], "amd64");
        assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
        let cirros = ws.image("cirros-container-disk-demo").unwrap();
        let reference = format!(
            "docker-archive:{}:{}",
            cirros.tarball.display(),
            cirros.repo_tag
        );
        let raw = skopeo_inspect_raw(&reference, &[]).unwrap();
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["config"]["digest"], cirros.config_digest.as_str());
    }
}

#[test]
fn handmade_broken_archives() {
    let dir = tempfile::tempdir().unwrap();
    let layers = vec![
        random_layer(1, 5000),
        layer_tar(&[("./etc/hello", b"hi\n")]),
    ];
    // diff_id mismatch: config lists another digest for layer 2.
    let mut ids = TestImage::new("bazel/x:y", layers.clone()).diff_ids();
    ids[1] = sha256_digest(b"something else");
    let img =
        TestImage::new("bazel/x:y", layers.clone()).with_config(image_config(&ids, &["/app"]));
    let parts = build_archive(&[img], ArchiveFormat::Legacy);
    let p = dir.path().join("mismatch.tar");
    parts.write(&p).unwrap();
    let m = read_manifest(&p).unwrap();
    let (_, map) = entries_by_name(&p);
    assert_ne!(sha256_digest(&map[&m[0].layers[1]][0]), ids[1]);

    // Layer count mismatch via the manifest.
    let mut parts = build_archive(
        &[TestImage::new("bazel/x:y", layers)],
        ArchiveFormat::Legacy,
    );
    parts.manifest[0]["Layers"].as_array_mut().unwrap().pop();
    parts.write(&dir.path().join("count.tar")).unwrap();
    assert_eq!(
        read_manifest(&dir.path().join("count.tar")).unwrap()[0]
            .layers
            .len(),
        1
    );

    // No manifest at all.
    write_docker_archive(
        &dir.path().join("empty.tar"),
        &[("x".into(), b"y".to_vec())],
    )
    .unwrap();
    assert!(read_manifest(&dir.path().join("empty.tar")).is_err());
}

#[test]
fn access_log_lines_parse() {
    let l = AccessLogLine::parse(
        r#"127.0.0.1 - - [28/Nov/2026:09:37:11 +0000] "POST /v2/x/blobs/uploads/?mount=sha256:1&from=y HTTP/1.1" 202 0 "" "kvpush/0.1""#,
    )
    .unwrap();
    assert_eq!(l.method, "POST");
    assert_eq!(l.uri, "/v2/x/blobs/uploads/?mount=sha256:1&from=y");
    assert_eq!(l.status, 202);
    assert_eq!(l.user_agent, "kvpush/0.1");
    assert!(AccessLogLine::parse(r#"time="..." level=info msg="listening""#).is_none());
}

#[test]
fn parse_sizes() {
    assert_eq!(parse_size("8MiB"), Some(8 << 20));
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("1.5k"), Some(1536));
    assert_eq!(parse_size("100MB"), Some(100_000_000));
    assert_eq!(parse_size("12"), Some(12));
    assert_eq!(parse_size("x"), None);
}

// ---------------------------------------------------------------------------
// Registries
// ---------------------------------------------------------------------------

fn tiny_archive(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tiny.tar");
    build_archive(
        &[TestImage::new(
            "bazel/tiny:img",
            vec![random_layer(7, 20_000), random_layer(8, 3_000)],
        )],
        ArchiveFormat::Legacy,
    )
    .write(&p)
    .unwrap();
    p
}

fn skopeo_push(archive: &Path, dest: &str, args: &[String]) -> Result<String, String> {
    let mut cmd = std::process::Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "-q"]).args(args);
    cmd.arg(format!("docker-archive:{}", archive.display()))
        .arg(dest);
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn dest_args(reg: &Registry) -> Vec<String> {
    reg.skopeo_args()
        .into_iter()
        .map(|a| match a.strip_prefix("--") {
            Some(rest) if !a.contains('/') && !a.contains(':') => format!("--dest-{rest}"),
            _ => a,
        })
        .collect()
}

#[test]
fn plain_registry_answers_and_logs() {
    let reg = Registry::start(RegistryKind::Plain);
    assert!(reg.addr().starts_with("127.0.0.1:"));
    let r = reg.http_get("/v2/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert!(reg.catalog().is_empty());
    // The access log is written asynchronously by the registry; poll a bit.
    let mut n = 0;
    for _ in 0..50 {
        n = reg.count_requests("GET", "/v2/_catalog");
        if n > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(n, 1, "log:\n{}", reg.access_log());
    assert!(reg.count_requests("GET", "/v2/") >= 2);

    let dir = tempfile::tempdir().unwrap();
    let archive = tiny_archive(dir.path());
    reg.clear_access_log();
    skopeo_push(
        &archive,
        &format!("docker://{}/kubevirt/tiny:v1", reg.addr()),
        &dest_args(&reg),
    )
    .unwrap();
    assert_eq!(reg.catalog(), vec!["kubevirt/tiny".to_string()]);
    assert_eq!(reg.tags("kubevirt/tiny"), vec!["v1".to_string()]);
    let digest = reg.manifest_digest("kubevirt/tiny", "v1").unwrap();
    let raw =
        skopeo_inspect_raw(&format!("docker://{}/kubevirt/tiny:v1", reg.addr()), &[]).unwrap();
    assert_eq!(digest, sha256_digest(raw.as_bytes()));
    assert_eq!(
        reg.count_requests("PUT", "/v2/kubevirt/tiny/manifests/v1"),
        1
    );
    assert!(reg.count_requests("POST", "/blobs/uploads/") >= 3);
    let out = tempfile::tempdir().unwrap();
    skopeo_copy_to_dir(
        &format!("docker://{}/kubevirt/tiny:v1", reg.addr()),
        out.path(),
        &[],
    )
    .unwrap();
    assert!(out.path().join("manifest.json").is_file());
}

#[test]
fn auth_and_tls_registries_accept_skopeo() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tiny_archive(dir.path());
    for kind in [
        RegistryKind::Htpasswd,
        RegistryKind::Tls,
        RegistryKind::HtpasswdTls,
        RegistryKind::Token,
    ] {
        let reg = Registry::start(kind);
        let dest = format!("docker://{}/kubevirt/tiny:v1", reg.addr());
        if kind.is_tls() {
            // Without the CA, verification fails.
            let mut args = vec!["--dest-tls-verify=true".to_string()];
            if let Some((u, p)) = reg.credentials() {
                args.extend(["--dest-creds".to_string(), format!("{u}:{p}")]);
            }
            assert!(skopeo_push(&archive, &dest, &args).is_err(), "{kind:?}");
        }
        if kind != RegistryKind::Tls {
            let r = reg.http_request("GET", "/v2/", &[]).unwrap();
            assert_eq!(r.status, 200, "{kind:?} with credentials");
            // Without credentials skopeo is refused.
            let mut anon = dest_args(&reg);
            let i = anon.iter().position(|a| a == "--dest-creds").unwrap();
            anon.drain(i..i + 2);
            assert!(skopeo_push(&archive, &dest, &anon).is_err(), "{kind:?}");
        }
        skopeo_push(&archive, &dest, &dest_args(&reg)).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(reg.catalog(), vec!["kubevirt/tiny".to_string()], "{kind:?}");
        let args = reg.skopeo_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        skopeo_inspect_raw(&dest, &args).unwrap();
        if kind == RegistryKind::Token {
            let reqs = reg.token_requests();
            assert!(
                reqs.iter().any(|r| r.account.as_deref() == reg.user()
                    && r.scopes == ["repository:kubevirt/tiny:pull,push"]
                    && r.granted == ["repository:kubevirt/tiny:pull,push"]),
                "{reqs:?}"
            );
            // The anonymous try was answered with a token granting nothing.
            assert!(
                reqs.iter()
                    .any(|r| r.account.is_none() && r.status == 200 && r.granted.is_empty()),
                "{reqs:?}"
            );
            assert_eq!(
                reg.issued_tokens().len(),
                reqs.iter().filter(|r| r.status == 200).count()
            );
            assert!(reg
                .mint_token(&[("repository", "x", &["pull"])], 1)
                .is_some());
        }
    }
}

#[test]
fn readonly_registry_refuses_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tiny_archive(dir.path());
    let reg = Registry::start(RegistryKind::Readonly);
    let err = skopeo_push(
        &archive,
        &format!("docker://{}/kubevirt/tiny:v1", reg.addr()),
        &dest_args(&reg),
    )
    .unwrap_err();
    assert!(!err.is_empty());
    assert!(reg.catalog().is_empty());
}

#[test]
fn arch_changes_the_configs_only() {
    let amd = tempfile::tempdir().unwrap();
    let arm = tempfile::tempdir().unwrap();
    let a = generate_workspace(amd.path(), &small_spec()).unwrap();
    let spec = WorkspaceSpec {
        arch: "arm64".into(),
        ..small_spec()
    };
    let b = generate_workspace(arm.path(), &spec).unwrap();
    for (x, y) in a.images.iter().zip(&b.images) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.diff_ids, y.diff_ids, "{}: layers shared", x.name);
        assert_ne!(x.config_digest, y.config_digest, "{}", x.name);
    }
    let (_, map) = entries_by_name(&b.image("virt-api").unwrap().tarball);
    let config = &map[&b.image("virt-api").unwrap().config_file][0];
    let config: serde_json::Value = serde_json::from_slice(config).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
}

/// `curl` the token realm (extra args: credentials, form) for a token, and
/// return the registry's status for `GET /v2/` with it.
fn token_then_ping(reg: &Registry, args: &[&str]) -> u16 {
    let realm = reg.token_realm().unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .arg(format!("{realm}?service=kvpush-registry"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/v2/", reg.url()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

#[test]
fn token_server_policy_is_what_the_registry_enforces() {
    let reg = Registry::start(RegistryKind::Token);
    let creds = format!("{}:{}", reg.user().unwrap(), reg.password().unwrap());
    // A stale token is refused by the registry though it announced 300 s.
    reg.update_token_policy(|p| p.stale_tokens = 1);
    let scoped = [
        "-u",
        &creds,
        "--data-urlencode",
        "scope=repository:a/b:pull",
        "-G",
    ];
    assert_eq!(token_then_ping(&reg, &scoped), 401);
    assert_eq!(token_then_ping(&reg, &scoped), 200);
    // The OAuth2 refresh_token grant.
    let refresh = reg.identity_token().unwrap();
    let form = format!("grant_type=refresh_token&refresh_token={refresh}&client_id=t&scope=repository:a/b:pull,push");
    assert_eq!(token_then_ping(&reg, &["--data", &form]), 200);
    // A pull-only account is granted pull only.
    reg.update_token_policy(|p| {
        p.users.push(TokenUser {
            name: "reader".into(),
            password: "reader-pw".into(),
            may_push: false,
        });
        p.post_only = true;
    });
    let form = "grant_type=password&username=reader&password=reader-pw&client_id=t&scope=repository:a/b:pull,push";
    assert_eq!(token_then_ping(&reg, &["--data", form]), 200);
    let reqs = reg.token_requests();
    let last = reqs.last().unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(last.account.as_deref(), Some("reader"));
    assert_eq!(last.granted, ["repository:a/b:pull"]);
    assert_eq!(reqs[2].grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(reqs[2].account, reg.user().map(String::from));
    // post_only: GET is refused; wrong passwords are refused.
    let realm = reg.token_realm().unwrap();
    let code = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .arg(realm)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(code(&["-u", &creds]), "405");
    assert_eq!(
        code(&[
            "--data",
            "grant_type=password&username=reader&password=nope"
        ]),
        "401"
    );
}
