//! rules_docker push-target parts: what `bazel build //:push-X` leaves in
//! bazel-bin for `bazel run` (rules_docker v0.16), written from the same
//! layers and configs as the tarballs.
//!
//! * `push-<t>`: push-tag.sh.tpl with the pusher line
//!   `${RUNFILES}/kubevirt/../io_bazel_rules_docker/.../pusher --config=...
//!   --layer=<gz>,<tar>,<digest file>,<diff_id file>... --manifest=...
//!   --format=Docker --dst=<registry>/<repository>:<tag> "$@"`, and
//!   `push-<t>.digest` (`sha256:<hex>`, no newline) from the digester.
//! * `push-other-images`: push-all.sh.tpl running `push-other-images.<i>.push`
//!   per bundle key (BUILD order; `--dst=<key expanded>` then `--format`);
//!   no digest file (docker_push writes none).
//! * `push-<t>.runfiles/`: absolute symlinks into bazel-out and the external
//!   repositories (the base layer comes from `@fedora`, so its paths read
//!   `${RUNFILES}/kubevirt/../fedora/image/000.tar.gz`), a `MANIFEST`, and
//!   `push-<t>.runfiles_manifest` beside it.
//! * Layers: `<name>-layer.tar`, `<name>-layer.tar.gz` (GNU `gzip -n`),
//!   `<name>-layer.tar.gz.sha256` (digest) and `<name>-layer.tar.sha256`
//!   (diff_id), bare hex without newline, as Bazel's hash tool writes them.
//!
//! The manifest digest is computed here with Go's `encoding/json` rules for
//! go-containerregistry's `v1.Manifest`, independently of kvpush.

use super::{BuiltLayer, Defs, ImageBuilt, WorkspaceSpec, SINGLE_IMAGES};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const WORKSPACE: &str = "kubevirt";
const PUSHER: &str = "io_bazel_rules_docker/container/go/cmd/pusher/linux_amd64_stripped/pusher";
const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// What was written, for [`super::GeneratedImage`].
pub(super) struct PartsOut {
    /// Per layer def: its `.tar.gz` (the real file, not a runfiles link).
    pub layer_gz: Vec<PathBuf>,
    /// Per image def: the manifest digest rules_docker computes.
    pub image_digest: Vec<String>,
    /// Per single target suffix (`virt-api`): its push script.
    pub single_scripts: BTreeMap<String, PathBuf>,
    /// Per bundle key, in BUILD order: its `.push` script.
    pub bundle_scripts: Vec<PathBuf>,
}

/// A file as a push script names it.
#[derive(Clone)]
struct Runfile {
    /// Where it really is.
    real: PathBuf,
    /// Its path inside a runfiles tree (`kubevirt/cmd/x`, `fedora/image/x`).
    rel: String,
    /// How the script writes it (`${RUNFILES}/kubevirt/../fedora/...`).
    arg: String,
}

impl Runfile {
    fn in_workspace(real: PathBuf, rel_to_bin: &str) -> Runfile {
        Runfile {
            real,
            rel: format!("{WORKSPACE}/{rel_to_bin}"),
            arg: format!("${{RUNFILES}}/{WORKSPACE}/{rel_to_bin}"),
        }
    }

    fn external(real: PathBuf, repo_path: &str) -> Runfile {
        Runfile {
            real,
            rel: repo_path.to_string(),
            arg: format!("${{RUNFILES}}/{WORKSPACE}/../{repo_path}"),
        }
    }
}

/// The four files of a layer.
struct LayerFiles {
    gz: Runfile,
    tar: Runfile,
    digest: Runfile,
    diff_id: Runfile,
}

impl LayerFiles {
    fn all(&self) -> [&Runfile; 4] {
        [&self.gz, &self.tar, &self.digest, &self.diff_id]
    }

    fn arg(&self) -> String {
        format!(
            "--layer={},{},{},{}",
            self.gz.arg, self.tar.arg, self.digest.arg, self.diff_id.arg
        )
    }
}

/// `//pkg:name` → (`pkg`, `name`).
fn split_label(label: &str) -> (&str, &str) {
    let l = label.trim_start_matches("//");
    l.split_once(':').unwrap_or((l, l))
}

fn in_pkg(pkg: &str, file: &str) -> String {
    if pkg.is_empty() {
        file.to_string()
    } else {
        format!("{pkg}/{file}")
    }
}

/// Replace `dst` with a hard link to (or copy of) `src`, read-only as Bazel
/// leaves its outputs.
fn place(src: &Path, dst: &Path) -> io::Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(dst).is_ok() {
        fs::remove_file(dst)?;
    }
    if fs::hard_link(src, dst).is_err() {
        fs::copy(src, dst)?;
    }
    read_only(dst)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(path).is_ok() {
        fs::remove_file(path)?;
    }
    fs::write(path, data)?;
    let mut perm = fs::metadata(path)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, mode);
    fs::set_permissions(path, perm)
}

fn read_only(path: &Path) -> io::Result<()> {
    let mut perm = fs::metadata(path)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    fs::set_permissions(path, perm)
}

/// Go's `json.Marshal` of a `v1.Manifest` with Docker media types, written
/// out by hand (compact; keys in struct order; nil layers as `null`).
pub fn go_manifest_json(config_digest: &str, config_size: u64, layers: &[(String, u64)]) -> String {
    let layers = if layers.is_empty() {
        "null".to_string()
    } else {
        let items: Vec<String> = layers
            .iter()
            .map(|(digest, size)| {
                format!(
                    "{{\"mediaType\":\"{LAYER_TYPE}\",\"size\":{size},\"digest\":\"{digest}\"}}"
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    };
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST_TYPE}\",\"config\":{{\"mediaType\":\"{CONFIG_TYPE}\",\"size\":{config_size},\"digest\":\"{config_digest}\"}},\"layers\":{layers}}}"
    )
}

const SCRIPT_HEAD: &str = r#"#!/usr/bin/env bash
# Copyright 2017 The Bazel Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# (generated by kvpush-fixtures in the shape of rules_docker's template)

set -eu

function guess_runfiles() {
    if [ -d ${BASH_SOURCE[0]}.runfiles ]; then
        # Runfiles are adjacent to the current script.
        echo "$( cd ${BASH_SOURCE[0]}.runfiles && pwd )"
    else
        # The current script is within some other script's runfiles.
        mydir="$( cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )"
        echo $mydir | sed -e 's|\(.*\.runfiles\)/.*|\1|'
    fi
}

RUNFILES="${PYTHON_RUNFILES:-$(guess_runfiles)}"
"#;

fn push_all_script(scripts: &[String]) -> String {
    let asyncs: Vec<String> = scripts.iter().map(|s| format!("async \"{s}\"")).collect();
    let seqs: Vec<String> = scripts.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "{SCRIPT_HEAD}\nPIDS=()\nfunction async() {{\n    # Launch the command asynchronously and track its process id.\n    PYTHON_RUNFILES=${{RUNFILES}} \"$@\" &\n    PIDS+=($!)\n}}\n\n\
         SEQUENTIAL=\"\"\nif [ -z \"${{SEQUENTIAL}}\" ]; then\n  {}\n  # Wait for all of the subprocesses, failing the script if any of them failed.\n  \
         if [ \"${{#PIDS[@]}}\" != 0 ]; then\n    for pid in ${{PIDS[@]}}; do\n      wait ${{pid}}\n    done\n  fi\nelse\n  {}\nfi\n",
        asyncs.join("\n"),
        seqs.join("\n")
    )
}

/// A runfiles tree: the symlinks, `MANIFEST` inside and `<dir>_manifest`
/// beside it.
fn write_runfiles(dir: &Path, files: &[&Runfile]) -> io::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    let mut seen = HashSet::new();
    let mut manifest = String::new();
    let mut sorted: Vec<&&Runfile> = files.iter().collect();
    sorted.sort_by(|a, b| a.rel.cmp(&b.rel));
    for f in sorted {
        if !seen.insert(f.rel.clone()) {
            continue;
        }
        let link = dir.join(&f.rel);
        fs::create_dir_all(link.parent().expect("runfile has a parent"))?;
        std::os::unix::fs::symlink(&f.real, &link)?;
        manifest.push_str(&format!("{} {}\n", f.rel, f.real.display()));
    }
    fs::write(dir.join("MANIFEST"), &manifest)?;
    let mut beside = dir.as_os_str().to_owned();
    beside.push("_manifest");
    write_file(Path::new(&beside), manifest.as_bytes(), 0o444)
}

/// What the parts are made of.
pub(super) struct Inputs<'a> {
    pub root: &'a Path,
    pub bin: &'a Path,
    pub spec: &'a WorkspaceSpec,
    pub defs: &'a Defs,
    pub built: &'a [BuiltLayer],
    pub images: &'a [ImageBuilt],
    /// Image def of each single target, in [`SINGLE_IMAGES`] order.
    pub singles: &'a [usize],
    /// `(NAME, label, image def)` per bundle key, in BUILD order.
    pub bundle: &'a [(String, String, usize)],
}

/// Write the push-target parts of every single target and of the bundle.
pub(super) fn write(inputs: &Inputs) -> io::Result<PartsOut> {
    let Inputs {
        root,
        bin,
        spec,
        defs,
        built,
        images,
        singles,
        bundle,
    } = *inputs;
    let external = root.join(".bazel-output-base").join("external");

    // The stub pusher, so the runfiles hold what rules_docker's do.
    let pusher_real = bin.join("external").join(PUSHER);
    write_file(
        &pusher_real,
        b"#!/bin/sh\necho 'kvpush-fixtures: stub of rules_docker pusher' >&2\nexit 1\n",
        0o555,
    )?;
    let pusher = Runfile::external(pusher_real, PUSHER);

    // Layers: placed once each, under the package of the rule that built it.
    let mut layer_files = Vec::new();
    let mut layer_gz = Vec::new();
    let mut used = HashSet::new();
    let mut external_index = 0;
    for (l, def) in defs.layers.iter().enumerate() {
        let parts = built[l]
            .parts
            .as_ref()
            .expect("push_parts layers are built with their parts");
        let label = def
            .created_by
            .strip_prefix("bazel build ")
            .unwrap_or(&def.created_by);
        let files = if let Some(rest) = label.strip_prefix('@') {
            // container_pull: <output_base>/external/<repo>/image/NNN.tar.gz,
            // with the gunzipped copy and hashes generated in bazel-out.
            let repo = rest.split("//").next().unwrap_or(rest);
            let stem = format!("{repo}/image/{external_index:03}.tar.gz");
            external_index += 1;
            let gz = external.join(&stem);
            let gen = bin.join("external");
            LayerFiles {
                gz: Runfile::external(gz, &stem),
                tar: Runfile::external(gen.join(format!("{stem}.nogz")), &format!("{stem}.nogz")),
                digest: Runfile::external(
                    gen.join(format!("{stem}.sha256")),
                    &format!("{stem}.sha256"),
                ),
                diff_id: Runfile::external(
                    gen.join(format!("{stem}.nogz.sha256")),
                    &format!("{stem}.nogz.sha256"),
                ),
            }
        } else {
            let (pkg, name) = split_label(label);
            let f = |suffix: &str| {
                let rel = in_pkg(pkg, &format!("{name}-layer{suffix}"));
                Runfile::in_workspace(bin.join(&rel), &rel)
            };
            LayerFiles {
                gz: f(".tar.gz"),
                tar: f(".tar"),
                digest: f(".tar.gz.sha256"),
                diff_id: f(".tar.sha256"),
            }
        };
        assert!(
            used.insert(files.gz.real.clone()),
            "two layers of the fixture would share {}",
            files.gz.real.display()
        );
        place(&parts.gz, &files.gz.real)?;
        place(&parts.tar, &files.tar.real)?;
        write_file(&files.digest.real, parts.gz_hex.as_bytes(), 0o444)?;
        write_file(&files.diff_id.real, built[l].diff_hex.as_bytes(), 0o444)?;
        layer_gz.push(files.gz.real.clone());
        layer_files.push(files);
    }

    // The base image's manifest, which rules_docker passes as --manifest.
    let base_layer = &built[defs.images[0].layers[0]];
    let base_parts = base_layer.parts.as_ref().expect("parts");
    let base_manifest = go_manifest_json(
        &format!(
            "sha256:{}",
            super::docker::sha256_hex(b"fedora base config")
        ),
        18,
        &[(format!("sha256:{}", base_parts.gz_hex), base_parts.gz_size)],
    );

    // Per image def: config, manifest and the digest rules_docker computes.
    let mut image_files: Vec<(Runfile, Runfile)> = Vec::new();
    let mut image_digest = Vec::new();
    for (i, def) in defs.images.iter().enumerate() {
        let (pkg, name) = split_label(&def.label);
        let config_rel = in_pkg(pkg, &format!("{name}.0.config"));
        let manifest_rel = in_pkg(pkg, &format!("{name}.0.manifest"));
        let config = Runfile::in_workspace(bin.join(&config_rel), &config_rel);
        let manifest = Runfile::in_workspace(bin.join(&manifest_rel), &manifest_rel);
        write_file(&config.real, &images[i].config, 0o444)?;
        write_file(&manifest.real, base_manifest.as_bytes(), 0o444)?;
        let layers: Vec<(String, u64)> = def
            .layers
            .iter()
            .map(|&l| {
                let p = built[l].parts.as_ref().expect("parts");
                (format!("sha256:{}", p.gz_hex), p.gz_size)
            })
            .collect();
        let json = go_manifest_json(
            &format!("sha256:{}", images[i].config_hex),
            images[i].config.len() as u64,
            &layers,
        );
        image_digest.push(format!(
            "sha256:{}",
            super::docker::sha256_hex(json.as_bytes())
        ));
        image_files.push((config, manifest));
    }

    // The files a script names for image def `i`, and its image arguments.
    let image_args = |i: usize| -> (Vec<&Runfile>, String) {
        let (config, manifest) = &image_files[i];
        let mut files = vec![config, manifest];
        let mut args = vec![format!("--config={}", config.arg)];
        for &l in &defs.images[i].layers {
            files.extend(layer_files[l].all());
            args.push(layer_files[l].arg());
        }
        args.push(format!("--manifest={}", manifest.arg));
        (files, args.join(" "))
    };

    let mut single_scripts = BTreeMap::new();
    for (&i, (target, name, _)) in singles.iter().zip(SINGLE_IMAGES) {
        let push = format!("push-{target}");
        let script = bin.join(&push);
        let (mut files, args) = image_args(i);
        let dst = format!(
            "{}/{}{name}:{}",
            spec.build_container_prefix, spec.build_image_prefix, spec.build_container_tag
        );
        let text = format!(
            "{SCRIPT_HEAD}\n{} {args} --format=Docker --dst={dst} \"$@\"\n",
            pusher.arg
        );
        write_file(&script, text.as_bytes(), 0o555)?;
        write_file(
            &bin.join(format!("{push}.digest")),
            image_digest[i].as_bytes(),
            0o444,
        )?;
        let me = Runfile::in_workspace(script.clone(), &push);
        files.push(&me);
        files.push(&pusher);
        write_runfiles(&bin.join(format!("{push}.runfiles")), &files)?;
        single_scripts.insert(target.to_string(), script);
    }

    // The bundle: one .push script per key, all sharing one runfiles tree.
    let push = "push-other-images";
    let mut bundle_scripts = Vec::new();
    let mut subs: Vec<Runfile> = Vec::new();
    let mut files: Vec<&Runfile> = vec![&pusher];
    for (index, (name, _label, i)) in bundle.iter().enumerate() {
        let (img_files, args) = image_args(*i);
        files.extend(img_files);
        let key = format!(
            "{}/{}{name}:{}",
            spec.build_container_prefix, spec.build_image_prefix, spec.build_container_tag
        );
        let file = format!("{push}.{index}.push");
        let script = bin.join(&file);
        let text = format!(
            "{SCRIPT_HEAD}\n{} {args} --dst={key} --format=Docker \"$@\"\n",
            pusher.arg
        );
        write_file(&script, text.as_bytes(), 0o555)?;
        subs.push(Runfile::in_workspace(script.clone(), &file));
        bundle_scripts.push(script);
    }
    let top = bin.join(push);
    let sub_args: Vec<String> = subs.iter().map(|s| s.arg.clone()).collect();
    write_file(&top, push_all_script(&sub_args).as_bytes(), 0o555)?;
    let me = Runfile::in_workspace(top.clone(), push);
    files.extend(subs.iter());
    files.push(&me);
    write_runfiles(&bin.join(format!("{push}.runfiles")), &files)?;

    Ok(PartsOut {
        layer_gz,
        image_digest,
        single_scripts,
        bundle_scripts,
    })
}
