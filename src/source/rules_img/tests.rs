//! rules_img reader against workspaces from kvpush-fixtures' generator:
//! every layout, both runfiles forms, shallow layers, an index, refusals.

use super::*;
use kvpush_fixtures::workspace::rules_img::{
    base_images, image_on, index_of, write_push_target, RulesImgLayout,
};
use kvpush_fixtures::{generate_rules_img_workspace, RulesImgSpec};
use std::fs;

fn spec() -> RulesImgSpec {
    RulesImgSpec {
        scale_bytes: 48 << 10,
        ..RulesImgSpec::default()
    }
}

#[test]
fn every_target_of_every_layout_reads_with_its_root_digest() {
    let dir = tempfile::tempdir().unwrap();
    let ws = generate_rules_img_workspace(dir.path(), &spec()).unwrap();
    let bin = dir.path().join("bazel-bin");
    let mut seen = std::collections::HashSet::new();
    for t in &ws.targets {
        seen.insert((t.layout, t.manifest_runfiles));
        let deploy = read(&bin, &format!("push-{}", t.name)).unwrap();
        let Artifact::Layout(root) = deploy.artifact().unwrap() else {
            panic!("a layout")
        };
        assert_eq!(root.manifest().digest, t.root_digest, "{}", t.name);
        let image = &root.images()[0];
        let parts = &t.images[0];
        assert_eq!(image.manifest.bytes, parts.manifest.bytes);
        assert_eq!(image.config.range.read_all().unwrap(), parts.config.bytes);
        assert_eq!(image.layers.len(), parts.layers.len());
        for (l, (got, want)) in image.layers.iter().zip(&parts.layers).enumerate() {
            assert_eq!(got.digest, want.digest);
            assert_eq!(got.media_type, want.media_type);
            if l < parts.base_layers {
                let remote = got.remote.as_ref().expect("a shallow base layer");
                assert_eq!(
                    remote.describe_origins(),
                    format!("127.0.0.1:5001/{}", ws.bases[t.base].repository)
                );
                assert!(got.local_range().is_none());
            } else {
                assert_eq!(got.local_range().unwrap().read_all().unwrap(), want.bytes);
                assert_eq!(got.media_type, "application/vnd.oci.image.layer.v1.tar");
            }
        }
        let hint = image.layers[0].remote.as_ref().unwrap().cross_mount.clone();
        assert_eq!(hint.is_some(), t.name == "virt-template-apiserver");
    }
    assert_eq!(seen.len(), 6, "three layouts, tree and manifest runfiles");
    let no_own = ws
        .targets
        .iter()
        .find(|t| t.images[0].layers.len() == t.images[0].base_layers);
    assert!(no_own.is_some());
}

#[test]
fn an_index_target_reads_children_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let bases = base_images(&spec);
    for (n, layout) in [RulesImgLayout::Manifests, RulesImgLayout::SparseSources]
        .into_iter()
        .enumerate()
    {
        let name = format!("multi{n}");
        let images = vec![
            image_on(&spec, &bases[0], &format!("{name}-amd"), 1, 100),
            image_on(&spec, &bases[0], &format!("{name}-arm"), 1, 100),
        ];
        let index = index_of(&images, &["amd64", "arm64"]);
        let t = write_push_target(
            dir.path(),
            &spec,
            &bases[0],
            0,
            &name,
            layout,
            n == 1,
            images,
            Some(index),
        )
        .unwrap();
        let deploy = read(dir.path(), &format!("push-{name}")).unwrap();
        let root = &deploy.pushes[0].root;
        assert!(matches!(root, LayoutRoot::Index(_)));
        assert_eq!(root.manifest().digest, t.root_digest);
        assert_eq!(root.images().len(), 2);
        assert_eq!(
            root.images()[1].platform.as_ref().unwrap().to_string(),
            "linux/arm64"
        );
        assert!(root.images()[1].layers[0].remote.is_some());
    }
}

fn one_target(dir: &Path, layout: RulesImgLayout) -> kvpush_fixtures::RulesImgTarget {
    let spec = spec();
    let bases = base_images(&spec);
    let image = image_on(&spec, &bases[0], "x", 1, 100);
    write_push_target(
        dir,
        &spec,
        &bases[0],
        0,
        "x",
        layout,
        false,
        vec![image],
        None,
    )
    .unwrap()
}

#[test]
fn missing_files_and_changed_layers_are_errors_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = read(dir.path(), "push-x").unwrap_err();
    assert!(err.contains("run `bazel build //:push-x` first"), "{err}");

    let t = one_target(dir.path(), RulesImgLayout::Manifests);
    let layer = dir.path().join("cmd/x/x-layer-0-2.tar");
    fs::write(&layer, b"changed").unwrap();
    let err = read(dir.path(), "push-x").unwrap_err();
    assert!(
        err.contains("is 7 bytes but its descriptor says") && err.contains("x-layer-0-2.tar"),
        "{err}"
    );

    // A layer gone that the deploy manifest does not call missing.
    fs::remove_file(&layer).unwrap();
    let err = read(dir.path(), "push-x").unwrap_err();
    assert!(
        err.contains("is not in the runfiles") && err.contains("manifests/0/layer/2"),
        "{err}"
    );

    // A config that changed after the build.
    one_target(dir.path(), RulesImgLayout::Manifests);
    fs::write(dir.path().join("cmd/x/x-image.0.config.json"), b"{}").unwrap();
    let err = read(dir.path(), "push-x").unwrap_err();
    assert!(
        err.contains("hashes to") && err.contains(&t.images[0].config.digest),
        "{err}"
    );

    // No runfiles at all.
    one_target(dir.path(), RulesImgLayout::Sparse);
    fs::remove_dir_all(dir.path().join("push-x.exe.runfiles")).unwrap();
    let err = read(dir.path(), "push-x").unwrap_err();
    assert!(err.contains("neither push-x.exe.runfiles/"), "{err}");
}

#[test]
fn refusals_name_the_target() {
    let dir = tempfile::tempdir().unwrap();
    one_target(dir.path(), RulesImgLayout::Sparse);
    let path = dir.path().join("push-x.json");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("\"eager\"", "\"lazy\"")).unwrap();
    let err = read(dir.path(), "push-x").unwrap_err();
    assert!(
        err.starts_with("push-x:") && err.contains("push_strategy=eager"),
        "{err}"
    );

    // v0.3.16 sources without missing_blobs: a layer with no source and no file.
    one_target(dir.path(), RulesImgLayout::SparseSources);
    let text = fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["operations"][0]["manifests"][0]["layer_blobs"][0]
        .as_object_mut()
        .unwrap()
        .remove("sources");
    v["operations"][0]["manifests"][0]["layer_blobs"][0]["compact_stream"] =
        serde_json::json!({"digest": "sha256:00", "size": 1});
    fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = read(dir.path(), "push-x").unwrap_err();
    assert!(err.contains("compact-stream"), "{err}");
}
