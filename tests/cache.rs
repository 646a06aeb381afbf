//! The digest cache and blob sharing: a warm re-push reads no layer data,
//! extra prefixes and later runs mount instead of uploading, and a wrong or
//! corrupt cache entry never yields a wrong image.

mod common;

use common::{blob_uploads, make_writable, verify_with_skopeo, Fixture, Scenario};
use kvpush::source::tar_index::TarIndex;
use kvpush_fixtures::{Registry, RegistryKind, WorkspaceSpec};

/// Overwrite every layer's bytes in every tarball with zeros, keeping the
/// tar structure: any layer kvpush reads now fails its diff_id check.
fn zero_all_layers(fx: &Fixture) {
    for image in &fx.ws.images {
        let index = TarIndex::build(&image.tarball).unwrap();
        make_writable(&image.tarball);
        let mut bytes = std::fs::read(&image.tarball).unwrap();
        for name in &image.layer_files {
            let r = index.get(name).unwrap();
            bytes[r.offset as usize..(r.offset + r.len) as usize].fill(0);
        }
        std::fs::write(&image.tarball, bytes).unwrap();
    }
}

fn compressed_count(stderr: &str) -> usize {
    let at = stderr.find(" compressed by kvpush").expect("summary line");
    stderr[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_warm_repush_reads_no_layer_data() {
    let sc = Scenario::plain();
    let run = sc.push(&["all"], &["--tag", "one"]);
    assert_eq!(run.code, 0);
    assert!(compressed_count(&run.stderr) > 0);
    let uploads = blob_uploads(&sc.registry);

    zero_all_layers(&sc);
    let run = sc.push(&["all"], &["--tag", "two"]);
    assert_eq!(
        run.code, 0,
        "layers were not read, so their zeroed bytes did not matter"
    );
    assert_eq!(compressed_count(&run.stderr), 0);
    assert!(
        run.stderr.contains("21 pushed"),
        "new tag, same images: {}",
        run.stderr
    );
    assert_eq!(blob_uploads(&sc.registry), uploads);
    for name in ["virt-api", "cirros-container-disk-demo"] {
        let one = sc.verify(name, "one");
        let two = sc.verify(name, "two");
        assert_eq!(one, two);
    }

    // Without the cache the zeroed layers are read, and refused.
    let run = sc.push(&["virt-api"], &["--tag", "three", "--no-cache"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("the tarball is corrupt"),
        "{}",
        run.stderr
    );
    assert_eq!(
        sc.registry.manifest_digest("kubevirt/virt-api", "three"),
        None
    );
}

/// The requests of `registry` after the first `before`, once its access
/// log caught up.
fn requests_after(registry: &Registry, before: usize) -> Vec<kvpush_fixtures::AccessLogLine> {
    blob_uploads(registry); // waits for the asynchronous access log
    registry.requests().split_off(before)
}

/// A warm re-push to a new tag, with the digest cache knowing every blob,
/// asks only for each tag and puts each manifest: at most two requests per
/// image beside the API check (one `GET /v2/` per image at most), and not
/// one about a blob; the same tag
/// again costs one request per image. Counts, not time.
#[test]
fn a_warm_repush_to_a_new_tag_makes_two_requests_per_image_and_none_about_blobs() {
    let sc = Scenario::plain();
    assert_eq!(sc.push(&["all"], &["--tag", "one"]).code, 0);
    let images = sc.ws.images.len();

    for (tag, per_image) in [("two", 2), ("two", 1)] {
        let before = sc.registry.requests().len();
        let run = sc.push(&["all"], &["--tag", tag]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let new = requests_after(&sc.registry, before);
        let blobs: Vec<_> = new.iter().filter(|r| r.uri.contains("/blobs/")).collect();
        assert!(blobs.is_empty(), "no blob request: {blobs:?}");
        let manifests = new.iter().filter(|r| r.uri.contains("/manifests/")).count();
        assert_eq!(manifests, per_image * images, "{new:?}");
        // Beside the images, the API check only: the probe's `GET /v2/`,
        // sent on as many connections as there are images, so that each
        // image's first request finds one open.
        let others: Vec<_> = new
            .iter()
            .filter(|r| !r.uri.contains("/manifests/"))
            .collect();
        assert!(
            others.len() <= images && others.iter().all(|r| r.method == "GET" && r.uri == "/v2/"),
            "beside the images, the API check at most: {new:?}"
        );
    }
    for name in ["virt-api", "cirros-container-disk-demo"] {
        assert_eq!(sc.verify(name, "one"), sc.verify(name, "two"));
    }
}

#[test]
fn a_cached_digest_pushed_to_an_empty_registry_is_compressed_again_and_verifies() {
    let fx = Fixture::small();
    let first = Registry::start(RegistryKind::Plain);
    let run = fx.kvpush(&[
        "virt-handler",
        "--registry",
        &format!("{}/kv", first.addr()),
    ]);
    assert_eq!(run.code, 0);

    // Same cache, a registry that has nothing: the blobs must be made again.
    let second = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kv", second.addr());
    let run = fx.kvpush(&["virt-handler", "--registry", &prefix, "--tag", "t"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        compressed_count(&run.stderr),
        fx.image("virt-handler").diff_ids.len()
    );
    verify_with_skopeo(
        &second,
        &format!("{prefix}/virt-handler:t"),
        fx.image("virt-handler"),
    );
}

/// Make the cache entry of `diff_id` name a digest of `fill` characters
/// that the layer does not compress to (as an entry of a kvpush whose
/// compressor changed its output would); returns the entry and what it
/// held.
fn lie_in_cache_entry(fx: &Fixture, diff_id: &str, fill: char) -> (std::path::PathBuf, Vec<u8>) {
    let hex = diff_id.trim_start_matches("sha256:");
    let entry = walk(&fx.home().join(".cache/kvpush/layers"))
        .into_iter()
        .find(|p| p.ends_with(hex))
        .expect("an entry for the layer");
    let right = std::fs::read(&entry).unwrap();
    let lie = fill.to_string().repeat(64);
    std::fs::write(&entry, format!(r#"{{"digest":"sha256:{lie}","size":3}}"#)).unwrap();
    (entry, right)
}

#[test]
fn a_wrong_cache_entry_is_put_right_and_the_image_pushed_with_the_real_digest() {
    let fx = Fixture::small();
    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kv", registry.addr());
    let image = fx.image("virt-controller");
    let entries: Vec<_> = walk(&fx.home().join(".cache/kvpush/layers"));
    assert!(entries.is_empty());

    let run = fx.kvpush(&["virt-controller", "--registry", &prefix]);
    assert_eq!(run.code, 0);
    let (entry, right) = lie_in_cache_entry(&fx, image.diff_ids.last().unwrap(), '0');
    let other = Registry::start(RegistryKind::Plain);
    let other_prefix = format!("{}/kv", other.addr());
    let run = fx.kvpush(&["virt-controller", "--registry", &other_prefix]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("the digest cache said layer"),
        "{}",
        run.stderr
    );
    verify_with_skopeo(
        &other,
        &format!("{other_prefix}/virt-controller:latest"),
        image,
    );
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        right,
        "the entry was put right"
    );

    // A shared base layer: every image that has it is put right.
    lie_in_cache_entry(&fx, &image.diff_ids[0], '1');
    let third = Registry::start(RegistryKind::Plain);
    let third_prefix = format!("{}/kv", third.addr());
    let run = fx.kvpush(&["all", "--registry", &third_prefix]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("sha256:{}", "1".repeat(64))),
        "{}",
        run.stderr
    );
    for name in ["virt-controller", "virt-handler", "virt-api"] {
        verify_with_skopeo(
            &third,
            &format!("{third_prefix}/{name}:latest"),
            fx.image(name),
        );
    }

    // Garbage in an entry is ignored, not trusted.
    std::fs::write(&entry, b"{garbage").unwrap();
    let run = fx.kvpush(&["virt-controller", "--registry", &prefix, "--tag", "g"]);
    assert_eq!(run.code, 0);
    assert_eq!(compressed_count(&run.stderr), 1);
}

#[test]
fn extra_prefixes_and_later_runs_mount_instead_of_uploading() {
    let sc = Scenario::plain();
    let prefix = &sc.prefix;
    let image = sc.image("virt-api");
    let run = sc.push(
        &["virt-api"],
        &[
            "--image-prefix",
            "",
            "--image-prefix",
            "alt-",
            "--tag",
            "a",
            "--tag",
            "b",
        ],
    );
    assert_eq!(run.code, 0);
    assert_eq!(
        blob_uploads(&sc.registry),
        image.diff_ids.len() + 1,
        "every blob uploaded once"
    );
    assert_eq!(
        sc.registry.count_requests("POST", "mount="),
        image.diff_ids.len() + 1,
        "and mounted into the second prefix"
    );
    for reference in [
        "virt-api:a",
        "virt-api:b",
        "alt-virt-api:a",
        "alt-virt-api:b",
    ] {
        verify_with_skopeo(&sc.registry, &format!("{prefix}/{reference}"), image);
    }

    // A later run with a third prefix mounts from where the cache saw them.
    let run = sc.push(&["virt-api"], &["--image-prefix", "third-", "--tag", "a"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        blob_uploads(&sc.registry),
        image.diff_ids.len() + 1,
        "no blob uploaded again"
    );
    verify_with_skopeo(&sc.registry, &format!("{prefix}/third-virt-api:a"), image);
}

#[test]
fn a_rebuilt_layer_goes_up_while_it_is_compressed_and_only_when_new() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let fx = Fixture::small();
    let rebuilt = Fixture::new(WorkspaceSpec {
        scale_bytes: 6 << 20,
        changed_layers: vec!["virt-handler".into()],
        ..WorkspaceSpec::default()
    });
    let registry = Registry::start(RegistryKind::Plain);
    let prefix = format!("{}/kubevirt", registry.addr());
    let patches = || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        registry.count_requests("PATCH", "/blobs/uploads/")
    };
    let push = |fx: &Fixture, tag: &str, cache: &[&str]| {
        let mut args = vec!["all", "--registry", &prefix, "--tag", tag];
        args.extend_from_slice(cache);
        let run = fx.kvpush(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run
    };
    push(&fx, "one", &["--cache-dir", cache_dir]);
    assert!(patches() > 0, "layers of one image only are streamed");
    let (streamed, uploads) = (patches(), blob_uploads(&registry));

    // virt-handler rebuilt: its new layer goes up in one PATCH while it is
    // compressed, then the PUT that names its digest; its config after.
    let run = push(&rebuilt, "two", &["--cache-dir", cache_dir]);
    assert_eq!(compressed_count(&run.stderr), 1);
    assert_eq!(patches() - streamed, 1);
    assert_eq!(
        blob_uploads(&registry) - uploads,
        2,
        "the new layer and config"
    );
    let image = rebuilt.image("virt-handler");
    verify_with_skopeo(&registry, &format!("{prefix}/virt-handler:two"), image);

    // A runner without a cache pushing the same build under another tag:
    // every config is in the registry, so nothing is uploaded blind.
    let run = push(&rebuilt, "three", &["--no-cache"]);
    assert!(compressed_count(&run.stderr) > 0, "digests are learnt");
    assert_eq!(patches() - streamed, 1, "nothing streamed");
    assert_eq!(blob_uploads(&registry) - uploads, 2, "nor uploaded");
    verify_with_skopeo(&registry, &format!("{prefix}/virt-handler:three"), image);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
