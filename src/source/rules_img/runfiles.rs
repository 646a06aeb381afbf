//! The runfiles of a rules_img push target (`push-X.exe`): either the
//! `push-X.exe.runfiles/` tree of symlinks, or, when Bazel runs with
//! `--nobuild_runfile_links`, only `push-X.exe.runfiles_manifest` (lines
//! `runfile-path real-path`). Both answer the same question: where is the
//! file the deploy tool would find at a runfiles path. Knows nothing of
//! images or registries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Where the runfiles of one executable are.
#[derive(Debug)]
pub enum Runfiles {
    /// The runfiles tree.
    Dir(PathBuf),
    /// The runfiles manifest read into memory: runfiles path (with `//`
    /// collapsed) -> real path.
    Manifest {
        path: PathBuf,
        entries: HashMap<String, PathBuf>,
    },
}

/// `a//b/` -> `a/b/`: the root package leaves an empty segment in rules_img's
/// prefix, which a file system collapses and a manifest may keep.
fn collapse(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Undo the escapes of a runfiles manifest line that starts with a space
/// (Bazel 7.4+ writes `\s` for a space, `\n` for a newline, `\b` for `\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('b') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Parse a runfiles manifest; entries without a real path (empty files
/// Bazel makes up) are left out.
pub fn parse_manifest(text: &str) -> HashMap<String, PathBuf> {
    let mut entries = HashMap::new();
    for line in text.lines() {
        let (escaped, line) = match line.strip_prefix(' ') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((link, real)) = line.split_once(' ') else {
            continue;
        };
        let (link, real) = if escaped {
            (unescape(link), unescape(real))
        } else {
            (link.to_string(), real.to_string())
        };
        if !real.is_empty() {
            entries.insert(collapse(&link), PathBuf::from(real));
        }
    }
    entries
}

impl Runfiles {
    /// The runfiles of `bazel_bin/<exe>`: the tree when there is one, else
    /// the manifest beside it; `None` when Bazel left neither.
    pub fn open(bazel_bin: &Path, exe: &str) -> Result<Option<Runfiles>, String> {
        let dir = bazel_bin.join(format!("{exe}.runfiles"));
        if dir.is_dir() {
            return Ok(Some(Runfiles::Dir(dir)));
        }
        let path = bazel_bin.join(format!("{exe}.runfiles_manifest"));
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Some(Runfiles::Manifest {
            entries: parse_manifest(&text),
            path,
        }))
    }

    /// What to name in messages.
    pub fn location(&self) -> &Path {
        match self {
            Runfiles::Dir(p) => p,
            Runfiles::Manifest { path, .. } => path,
        }
    }

    /// The file at runfiles path `rel`, if it is there. A manifest may list
    /// a tree artifact (rules_img's `sparse_oci_layout`) as one directory
    /// entry: a path inside it is resolved under that directory.
    pub fn file(&self, rel: &str) -> Option<PathBuf> {
        let rel = collapse(rel);
        let found = match self {
            Runfiles::Dir(dir) => dir.join(&rel),
            Runfiles::Manifest { entries, .. } => match entries.get(&rel) {
                Some(real) => real.clone(),
                None => {
                    let mut cut = rel.len();
                    loop {
                        cut = rel[..cut].rfind('/')?;
                        if let Some(real) = entries.get(&rel[..cut]) {
                            break real.join(&rel[cut + 1..]);
                        }
                    }
                }
            },
        };
        found.is_file().then_some(found)
    }
}

/// The runfiles prefixes rules_img may have put target `//<pkg>:<name>`'s
/// files under, most likely first: `++rules_img_private++/_main/<pkg>/<name>/`
/// (v0.3.0 to v0.3.19; for the root package `_main//<name>/`, collapsed
/// here) and the hashed form of later versions.
pub fn prefixes(pkg: &str, name: &str) -> Vec<String> {
    let label = format!("_main//{pkg}:{name}");
    vec![
        collapse(&format!("++rules_img_private++/_main/{pkg}/{name}/")),
        format!(
            "++rules_img_private++/{}/",
            hex::encode(Sha256::digest(label.as_bytes()))
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_tree_and_a_manifest_find_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir_all(real.join("layout/blobs")).unwrap();
        fs::write(real.join("layer"), b"tar").unwrap();
        fs::write(real.join("layout/blobs/x"), b"blob").unwrap();

        let tree = dir.path().join("push-a.exe.runfiles");
        let p = tree.join("++rules_img_private++/_main/push-a/0");
        fs::create_dir_all(p.join("manifests/0/layer")).unwrap();
        std::os::unix::fs::symlink(real.join("layer"), p.join("manifests/0/layer/0")).unwrap();
        std::os::unix::fs::symlink(real.join("layout"), p.join("sparse_oci_layout")).unwrap();

        let manifest = format!(
            "_main/push-a.exe {}\n++rules_img_private++/_main//push-a/0/manifests/0/layer/0 {}\n++rules_img_private++/_main//push-a/0/sparse_oci_layout {}\n _main/with\\sspace {}\n_main/empty \n",
            real.join("exe").display(),
            real.join("layer").display(),
            real.join("layout").display(),
            real.join("layer").display(),
        );
        fs::write(dir.path().join("push-b.exe.runfiles_manifest"), manifest).unwrap();

        let from_tree = Runfiles::open(dir.path(), "push-a.exe").unwrap().unwrap();
        let from_manifest = Runfiles::open(dir.path(), "push-b.exe").unwrap().unwrap();
        assert!(matches!(from_manifest, Runfiles::Manifest { .. }));
        let prefix = &prefixes("", "push-a")[0];
        assert_eq!(prefix, "++rules_img_private++/_main/push-a/");
        for r in [&from_tree, &from_manifest] {
            let layer = r.file(&format!("{prefix}0/manifests/0/layer/0")).unwrap();
            assert_eq!(fs::read(layer).unwrap(), b"tar");
            let blob = r
                .file(&format!("{prefix}0/sparse_oci_layout/blobs/x"))
                .unwrap();
            assert_eq!(fs::read(blob).unwrap(), b"blob");
            assert_eq!(r.file(&format!("{prefix}0/manifests/0/layer/1")), None);
        }
        assert!(from_manifest.file("_main/with space").is_some());
        assert!(Runfiles::open(dir.path(), "push-c.exe").unwrap().is_none());
    }

    #[test]
    fn prefixes_of_a_package_and_the_hashed_form() {
        let p = prefixes("cmd/virt-api", "push-virt-api");
        assert_eq!(
            p[0],
            "++rules_img_private++/_main/cmd/virt-api/push-virt-api/"
        );
        assert!(p[1].starts_with("++rules_img_private++/") && p[1].len() == 22 + 65);
    }
}
