//! rules_docker push-target parts, read as data: what `bazel build
//! //:push-X` leaves in bazel-bin for `bazel run` (rules_docker v0.16).
//!
//! - `push-X`: a bash script whose pusher line carries `--config=<config>`,
//!   one `--layer=<layer.tar.gz>,<layer.tar>,<digest file>,<diff_id file>`
//!   per layer, optionally `--manifest=<base manifest>`, `--format=Docker`
//!   and `--dst=<registry>/<repository>:<tag>`, paths under `${RUNFILES}`,
//!   i.e. `push-X.runfiles/` (a tree of symlinks into bazel-out and external
//!   repositories; external files appear as `<workspace>/../<repo>/...`).
//! - `push-X.digest`: the manifest digest rules_docker's digester computed.
//! - A bundle's `push-B` script runs one `push-B.<i>.push` script per image,
//!   each like the above, all resolving `${RUNFILES}` to `push-B.runfiles`.
//!
//! The scripts are never run. Digest files hold the bare hex of the gzip
//! blob (digest) and of the plain tar (diff_id), as Bazel's hash tool
//! writes them. Layers are matched to the config's `diff_ids` by diff_id,
//! as the pusher did, so the manifest lists them in the config's order.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::docker_archive::config_diff_ids;
use super::{ExpectedDigest, Image, Layer};
use crate::blob::{is_sha256_digest, sha256_digest, FileRange};

/// Where `${RUNFILES}` points for a script, with the runfiles manifest as a
/// fallback when Bazel did not build the symlink tree
/// (`--nobuild_runfile_links`).
#[derive(Debug)]
pub struct Runfiles {
    pub dir: PathBuf,
    manifest: Option<HashMap<String, PathBuf>>,
}

impl Runfiles {
    /// The runfiles of the script at `script`: `<script>.runfiles`.
    pub fn of_script(script: &Path) -> Runfiles {
        let mut dir = script.as_os_str().to_owned();
        dir.push(".runfiles");
        let dir = PathBuf::from(dir);
        let mut manifest_path = dir.as_os_str().to_owned();
        manifest_path.push("_manifest");
        let manifest = [dir.join("MANIFEST"), PathBuf::from(manifest_path)]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|text| {
                text.lines()
                    .filter_map(|l| l.split_once(' '))
                    .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
                    .collect()
            });
        Runfiles { dir, manifest }
    }

    /// Resolve a script argument: `${RUNFILES}/a/../b` → `<dir>/b`, or the
    /// runfiles manifest's entry when the tree has no such file.
    pub fn resolve(&self, arg: &str) -> PathBuf {
        let rel = ["${RUNFILES}/", "$RUNFILES/"]
            .iter()
            .find_map(|p| arg.strip_prefix(p));
        let Some(rel) = rel else {
            return PathBuf::from(arg);
        };
        let rel = normalize(rel);
        let path = self.dir.join(&rel);
        if std::fs::symlink_metadata(&path).is_err() {
            if let Some(found) = self
                .manifest
                .as_ref()
                .and_then(|m| m.get(rel.to_string_lossy().as_ref()))
            {
                return found.clone();
            }
        }
        path
    }
}

/// Lexically remove `.` and `..` (`kubevirt/../fedora/x` → `fedora/x`), as
/// the runfiles tree lays external repositories beside the workspace's.
fn normalize(rel: &str) -> PathBuf {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
            _ => {}
        }
    }
    out.iter().collect()
}

/// Split a shell line into words: quotes and backslashes as bash does for
/// the plain words rules_docker writes; `$...` is left as it is.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                if !matches!(n, '"' | '\\' | '$' | '`') {
                                    word.push('\\');
                                }
                                word.push(n);
                            }
                        }
                        _ => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The four files of one `--layer` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerParts {
    pub compressed: PathBuf,
    pub uncompressed: PathBuf,
    pub digest_file: PathBuf,
    pub diff_id_file: PathBuf,
}

/// What a rules_docker push script would push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushScript {
    pub path: PathBuf,
    /// `--dst` as Bazel expanded it (`index.docker.io/kubevirt/virt-api:latest`).
    pub dst: String,
    pub format: String,
    pub config: PathBuf,
    pub base_manifest: Option<PathBuf>,
    /// `--tarball`: a base image given as a tarball (not supported).
    pub tarball: Option<PathBuf>,
    pub layers: Vec<LayerParts>,
}

/// Flags of rules_docker's pusher that take a value.
const VALUE_FLAGS: [&str; 8] = [
    "config",
    "manifest",
    "tarball",
    "layer",
    "dst",
    "format",
    "stamp-info-file",
    "client-config-dir",
];

fn read_text(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

impl PushScript {
    /// Read the script at `path`, resolving `${RUNFILES}` with `runfiles`.
    pub fn read(path: &Path, runfiles: &Runfiles) -> Result<PushScript, String> {
        Self::parse(path, &read_text(path, "push script")?, runfiles)
    }

    /// Parse a script's text: the pusher line is the last one with `--dst`.
    pub fn parse(path: &Path, text: &str, runfiles: &Runfiles) -> Result<PushScript, String> {
        let not_pusher = || {
            format!(
                "{} is not a rules_docker push script (no pusher line with --dst and --config): is it a push target built by rules_docker?",
                path.display()
            )
        };
        let words = text
            .lines()
            .rev()
            .map(shell_words)
            .find(|w| w.iter().any(|x| is_flag(x, "dst")))
            .ok_or_else(not_pusher)?;
        let mut flags: Vec<(String, String)> = Vec::new();
        let mut rest = words.into_iter().skip(1);
        while let Some(word) = rest.next() {
            let Some(flag) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) else {
                // Go's flag package stops at the first non-flag ("$@").
                break;
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None if VALUE_FLAGS.contains(&flag) => {
                    (flag.to_string(), rest.next().unwrap_or_default())
                }
                None => (flag.to_string(), "true".to_string()),
            };
            flags.push((name, value));
        }
        let one = |name: &str| {
            flags
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let dst = one("dst").ok_or_else(not_pusher)?;
        let config = one("config").ok_or_else(not_pusher)?;
        if dst.contains("$(") || dst.contains('{') {
            return Err(format!(
                "{}: the destination {dst:?} is computed when the script runs (a tag or repository file, or stamping); kvpush cannot read it: use --source tarball",
                path.display()
            ));
        }
        let mut layers = Vec::new();
        for (_, value) in flags.iter().filter(|(n, _)| n == "layer") {
            let parts: Vec<&str> = value.split(',').collect();
            let [compressed, uncompressed, digest_file, diff_id_file] = parts[..] else {
                return Err(format!(
                    "{}: --layer={value} does not have the 4 comma-separated parts rules_docker writes (layer.tar.gz,layer.tar,digest file,diff_id file)",
                    path.display()
                ));
            };
            layers.push(LayerParts {
                compressed: runfiles.resolve(compressed),
                uncompressed: runfiles.resolve(uncompressed),
                digest_file: runfiles.resolve(digest_file),
                diff_id_file: runfiles.resolve(diff_id_file),
            });
        }
        Ok(PushScript {
            path: path.to_path_buf(),
            dst,
            format: one("format").unwrap_or_else(|| "Docker".into()),
            config: runfiles.resolve(&config),
            base_manifest: one("manifest").map(|m| runfiles.resolve(&m)),
            tarball: one("tarball").map(|t| runfiles.resolve(&t)),
            layers,
        })
    }

    /// The last path component of `--dst`'s repository: the image name as
    /// built (with any build-time `$(image_prefix)`).
    pub fn dst_name(&self) -> &str {
        super::docker_archive::repo_tag_name(&self.dst)
    }

    /// Read the config and digest files into an image whose layers are the
    /// existing `.tar.gz` files. `expected` is the target's `.digest` file.
    pub fn image(&self, expected: Option<ExpectedDigest>) -> Result<Image, String> {
        let script = self.path.display();
        if self.format != "Docker" {
            return Err(format!(
                "{script} pushes in format {:?}; kvpush pushes Docker schema 2 only (format = \"Docker\", as KubeVirt uses)",
                self.format
            ));
        }
        if let Some(t) = &self.tarball {
            return Err(format!(
                "{script} takes its base image from the tarball {} (--tarball), which kvpush does not read as parts: use --source tarball",
                t.display()
            ));
        }
        let config = std::fs::read(&self.config).map_err(|e| {
            format!(
                "cannot read the image config {} named by {script}: {e}",
                self.config.display()
            )
        })?;
        let diff_ids = config_diff_ids(&config).map_err(|e| {
            format!(
                "{} (the config of {script}) is not a valid image config: {e}",
                self.config.display()
            )
        })?;
        if let Some(m) = &self.base_manifest {
            check_base_manifest(m, &self.path)?;
        }
        let mut by_diff_id: HashMap<String, (String, &LayerParts)> = HashMap::new();
        for parts in &self.layers {
            let digest = read_hash_file(&parts.digest_file, "layer digest")?;
            let diff_id = read_hash_file(&parts.diff_id_file, "layer diff_id")?;
            by_diff_id.insert(diff_id, (digest, parts));
        }
        let layers = diff_ids
            .iter()
            .enumerate()
            .map(|(i, diff_id)| {
                let (digest, parts) = by_diff_id.get(diff_id).ok_or_else(|| {
                    format!(
                        "{}: diff_ids[{i}] {diff_id} of config {} has no --layer whose diff_id file names it; the push target's parts are inconsistent",
                        script,
                        self.config.display()
                    )
                })?;
                let len = std::fs::metadata(&parts.compressed)
                    .map_err(|e| {
                        format!(
                            "layer {} of {script} cannot be read: {e}",
                            parts.compressed.display()
                        )
                    })?
                    .len();
                Ok(Layer::Compressed {
                    range: FileRange {
                        path: parts.compressed.clone(),
                        offset: 0,
                        len,
                    },
                    digest: digest.clone(),
                    diff_id: diff_id.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Image {
            source: self.path.clone(),
            config_digest: sha256_digest(&config),
            config,
            diff_ids,
            layers,
            expected_digest: expected,
        })
    }
}

fn is_flag(word: &str, name: &str) -> bool {
    let flag = word
        .strip_prefix("--")
        .or_else(|| word.strip_prefix('-'))
        .unwrap_or("");
    flag == name || flag.strip_prefix(name).is_some_and(|r| r.starts_with('='))
}

/// Read a Bazel hash file: bare lowercase hex (or `sha256:<hex>`).
pub fn read_hash_file(path: &Path, what: &str) -> Result<String, String> {
    let text = read_text(path, what)?;
    let text = text.trim();
    let digest = if text.starts_with("sha256:") {
        text.to_string()
    } else {
        format!("sha256:{text}")
    };
    if is_sha256_digest(&digest) {
        Ok(digest)
    } else {
        Err(format!(
            "{what} file {} does not hold a sha256 digest (found {:?})",
            path.display(),
            text.chars().take(80).collect::<String>()
        ))
    }
}

/// The base image manifest rules_docker passes along: it only matters for
/// foreign (non-distributable) layers, which kvpush does not push.
fn check_base_manifest(path: &Path, script: &Path) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Desc {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(default)]
        layers: Option<Vec<Desc>>,
    }
    let text = read_text(path, "base image manifest")?;
    let parsed: Manifest = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} (the base manifest of {}) is not valid JSON: {e}",
            path.display(),
            script.display()
        )
    })?;
    let foreign = parsed
        .layers
        .iter()
        .flatten()
        .any(|l| l.media_type.contains("foreign") || l.media_type.contains("nondistributable"));
    if foreign {
        return Err(format!(
            "{}: its base image has foreign layers (see {}), which kvpush does not push",
            script.display(),
            path.display()
        ));
    }
    Ok(())
}

/// The per-image scripts a bundle's push script runs, in order
/// (`async "${RUNFILES}/kubevirt/push-other-images.0.push"` lines; the
/// template lists them twice, for its parallel and sequential branches).
pub fn bundle_scripts(path: &Path, runfiles: &Runfiles) -> Result<Vec<PathBuf>, String> {
    let text = read_text(path, "bundle push script")?;
    let mut scripts: Vec<PathBuf> = Vec::new();
    for word in text.lines().flat_map(shell_words) {
        if !word.ends_with(".push") {
            continue;
        }
        let mut resolved = runfiles.resolve(&word);
        if !resolved.exists() {
            // Without runfiles, Bazel still leaves each one beside the script.
            if let (Some(dir), Some(name)) = (path.parent(), resolved.file_name()) {
                resolved = dir.join(name);
            }
        }
        if !scripts.contains(&resolved) {
            scripts.push(resolved);
        }
    }
    if scripts.is_empty() {
        return Err(format!(
            "{} runs no per-image .push script: is it a rules_docker docker_push(bundle = ...) script?",
            path.display()
        ));
    }
    Ok(scripts)
}

/// `push-X.digest` beside a push script, when Bazel wrote one.
pub fn expected_digest(script: &Path) -> Result<Option<ExpectedDigest>, String> {
    let mut file = script.as_os_str().to_owned();
    file.push(".digest");
    let file = PathBuf::from(file);
    if !file.exists() {
        return Ok(None);
    }
    Ok(Some(ExpectedDigest {
        digest: read_hash_file(&file, "image digest")?,
        file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_follow_bash_quoting() {
        assert_eq!(
            shell_words(r#"  a "b c" 'd e' f\ g "$@" # comment"#),
            vec!["a", "b c", "d e", "f g", "$@"]
        );
        assert_eq!(shell_words(r#"x="\$y\n""#), vec![r"x=$y\n"]);
    }

    #[test]
    fn runfiles_paths_are_normalised_and_manifest_backed() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("push-x");
        let rf = Runfiles::of_script(&script);
        assert_eq!(
            rf.resolve("${RUNFILES}/kubevirt/../fedora/image/000.tar.gz"),
            dir.path().join("push-x.runfiles/fedora/image/000.tar.gz")
        );
        assert_eq!(rf.resolve("/abs/path"), PathBuf::from("/abs/path"));
        std::fs::write(
            dir.path().join("push-x.runfiles_manifest"),
            "kubevirt/a.config /real/a.config\n",
        )
        .unwrap();
        let rf = Runfiles::of_script(&script);
        assert_eq!(
            rf.resolve("${RUNFILES}/kubevirt/a.config"),
            PathBuf::from("/real/a.config")
        );
    }

    #[test]
    fn pusher_line_is_parsed_as_go_flags() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("push-virt-api");
        let rf = Runfiles::of_script(&script);
        let text = "#!/usr/bin/env bash\nset -eu\nRUNFILES=\"${PYTHON_RUNFILES:-$(guess_runfiles)}\"\n\n\
            ${RUNFILES}/io_bazel_rules_docker/container/go/cmd/pusher/linux_amd64_stripped/pusher \
            -stamp-info-file ${RUNFILES}/kubevirt/stable-status.txt \
            --config=${RUNFILES}/kubevirt/cmd/virt-api/virt-api-image.0.config \
            --layer=${RUNFILES}/kubevirt/../fedora/image/000.tar.gz,${RUNFILES}/kubevirt/../fedora/image/000.tar.gz.nogz,${RUNFILES}/kubevirt/../fedora/image/000.tar.gz.sha256,${RUNFILES}/kubevirt/../fedora/image/000.tar.gz.nogz.sha256 \
            --manifest=${RUNFILES}/kubevirt/cmd/virt-api/virt-api-image.0.manifest \
            --format=Docker --dst=index.docker.io/kubevirt/virt-api:latest -skip-unchanged-digest \"$@\"\n";
        let p = PushScript::parse(&script, text, &rf).unwrap();
        let r = dir.path().join("push-virt-api.runfiles");
        assert_eq!(p.dst, "index.docker.io/kubevirt/virt-api:latest");
        assert_eq!(p.dst_name(), "virt-api");
        assert_eq!(p.format, "Docker");
        assert_eq!(
            p.config,
            r.join("kubevirt/cmd/virt-api/virt-api-image.0.config")
        );
        assert_eq!(p.layers.len(), 1);
        assert_eq!(
            p.layers[0].diff_id_file,
            r.join("fedora/image/000.tar.gz.nogz.sha256")
        );
        assert!(p.base_manifest.is_some() && p.tarball.is_none());

        let err = PushScript::parse(&script, "#!/bin/sh\necho hi\n", &rf).unwrap_err();
        assert!(err.contains("not a rules_docker push script"), "{err}");
        let err = PushScript::parse(
            &script,
            "pusher --config=c --dst=reg/$(cat ${RUNFILES}/repo.txt):t\n",
            &rf,
        )
        .unwrap_err();
        assert!(err.contains("--source tarball"), "{err}");
        let err = PushScript::parse(&script, "pusher --config=c --layer=a,b --dst=r/x:t\n", &rf)
            .unwrap_err();
        assert!(err.contains("4 comma-separated parts"), "{err}");
    }

    #[test]
    fn hash_files_hold_bare_hex_or_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        let f = dir.path().join("x.sha256");
        std::fs::write(&f, &hex).unwrap();
        assert_eq!(
            read_hash_file(&f, "layer digest").unwrap(),
            format!("sha256:{hex}")
        );
        std::fs::write(&f, format!("sha256:{hex}\n")).unwrap();
        assert_eq!(
            read_hash_file(&f, "layer digest").unwrap(),
            format!("sha256:{hex}")
        );
        std::fs::write(&f, "nope").unwrap();
        assert!(read_hash_file(&f, "layer digest")
            .unwrap_err()
            .contains("does not hold a sha256 digest"));
    }
}
